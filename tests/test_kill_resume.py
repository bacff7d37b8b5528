"""Kill -9 an oracle stage midway, rerun it: no row lost or duplicated, the outputs of an
uninterrupted run, and no upstream call that the killed run completed is paid again.

The stage runs in a subprocess against tests/fault_server.py (30 % of attempts faulted). The
server lets a set number of upstream calls through, then holds every further request (never
forwarding it, so never paid); once the killed run's cache holds every answer it was sent, the
process gets SIGKILL. A torn line is then appended to its cache segment and to the stage's
checkpoint, as a kill in the middle of a write would leave them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from judgeflow.workflow.io import read_jsonl

from fault_server import (
    FaultServer,
    fingerprint,
    paths,
    run_clean,
    run_label,
    stage_config,
    write_draws,
    write_questions,
)

TESTS = Path(__file__).resolve().parent
SCRIPT = ("import json, pathlib, sys; sys.path.insert(0, sys.argv[3]); import fault_server as f; "
          "getattr(f, sys.argv[4])(json.load(open(sys.argv[1])), f.paths(pathlib.Path(sys.argv[2])))")
N_QUESTIONS = 40

pytestmark = pytest.mark.slow  # real processes killed with SIGKILL mid-stage


def _cache_lines(root: Path) -> int:
    n = 0
    for seg in (root / "cache").rglob("*.jsonl"):
        for line in seg.read_bytes().splitlines():
            try:
                json.loads(line)
                n += 1
            except ValueError:
                pass
    return n


def _wait(cond, what: str, proc, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the stage exited ({proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _both_stages(root: Path, url: str) -> dict:
    p = paths(root)
    write_questions(p["questions"], N_QUESTIONS)
    config = stage_config(root, url, batch_size=8, max_concurrency=4)
    run_clean(config, p)
    write_draws(p["draws"], read_jsonl(p["kept"]))
    run_label(config, p)
    return p


@pytest.mark.parametrize("stage", ["run_clean", "run_label"])
def test_kill_9_midway_then_rerun_loses_nothing_and_pays_nothing_twice(tmp_path, stage):
    with FaultServer(rate=0.0) as ref_server:
        ref = fingerprint(_both_stages(tmp_path / "ref", ref_server.url))

    root = tmp_path / "killed"
    p = paths(root)
    write_questions(p["questions"], N_QUESTIONS)
    with FaultServer(rate=0.3, seed=11, stall_s=2.5, delay_s=0.01) as fs:
        config = stage_config(root, fs.url, batch_size=8, max_concurrency=4)
        total_clean = N_QUESTIONS  # the empty and the huge prompt are never sent
        if stage == "run_label":
            run_clean(config, p)
            write_draws(p["draws"], read_jsonl(p["kept"]))
            total = sum(1 for d in read_jsonl(p["draws"]) if d["first_accept"])
            fs.gate = total_clean + 8 * 2 + 3  # two batches labelled, the third one under way
        else:
            total = total_clean
            fs.gate = total // 2
        cfg_file = root / "config.json"
        cfg_file.write_text(json.dumps(config))
        log = open(root / "stage.log", "wb")  # noqa: SIM115 - the child writes it until it is killed
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg_file), str(root), str(TESTS), stage],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait(lambda: fs.held > 0, "the server held a request", proc)
            _wait(lambda: _cache_lines(root) == fs.upstream_calls(), "every answer sent reached the cache", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.close()
        assert proc.returncode == -signal.SIGKILL
        paid_before = fs.upstream_calls()
        assert 0 < paid_before - (total_clean if stage == "run_label" else 0) < total
        # outputs are only produced complete: the killed stage left none
        outs = ("kept", "rejected", "heldout", "cleaning") if stage == "run_clean" else ("labels", "nstar", "fit")
        assert not any(p[o].exists() for o in outs)
        ckpt = p["labels"].with_name(".labels.jsonl.checkpoint")
        if stage == "run_label":
            done = read_jsonl(ckpt)[1:]  # after its header (the job's fingerprint)
            assert 0 < len(done) < paid_before - total_clean  # whole batches; the cache holds more
            with open(ckpt, "a") as fh:
                fh.write('{"draw_id": "q0')  # torn by the kill
        seg = max((root / "cache").rglob("*.jsonl"), key=lambda s: s.stat().st_mtime)
        with open(seg, "a") as fh:
            fh.write('{"key": "0123')
        fs.release_gate()
        globals()[stage](config, p)  # the rerun
        s = fs.summary()
    assert s["paid_twice"] == 0 and s["upstream_calls"] == s["distinct_requests"]
    assert s["upstream_calls"] == total_clean + (total if stage == "run_label" else 0)
    if stage == "run_clean":  # finish the pipeline on the resumed cleaning, to compare everything
        with FaultServer(rate=0.0) as rest:
            config = stage_config(root, rest.url, batch_size=8, max_concurrency=4)
            write_draws(p["draws"], read_jsonl(p["kept"]))
            run_label(config, p)
    else:
        nstar = json.loads(p["nstar"].read_text())
        assert nstar["from_checkpoint"] > 0
        assert not ckpt.exists()
    got = fingerprint(p)
    if stage == "run_label":
        # nstar.json's curve_calls counts the curve labels asked *in this run* (oracle.py:
        # `curve_calls = len(new)`), so a resumed run reports fewer; everything else is identical
        g, r = json.loads(got["nstar"]), json.loads(ref["nstar"])
        assert 0 < g.pop("curve_calls") <= r.pop("curve_calls")
        got["nstar"], ref["nstar"] = g, r
    assert got == ref
    labels = [r["draw_id"] for r in read_jsonl(p["labels"])]
    assert len(labels) == len(set(labels))  # no duplicated rows
