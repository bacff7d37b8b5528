"""The API key comes from the environment variable named in the config and is written nowhere:
not in the cache, the outputs, the logs (even at DEBUG, the SDK's and httpx's included), the
captured stderr, nor in error messages, even when the server echoes it back (judgeflow.workflow.redact
masks it as [masked:<variable>]). The three ways a key used to reach the disk, each through the
real workflow, then every file of the project searched for the key: an endpoint that echoes the
key in its 200 answers, a key pasted as the value of `api_key_env`, a key inside `base_url`."""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from echo_server import EchoServer

from judgeflow.errors import BackendError, ConfigError
from judgeflow.models import GenRequest, Sampling
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.workflow import redact
from judgeflow.workflow.io import read_jsonl

from conftest import ROOT
from fault_server import FaultServer, paths, run_clean, run_label, stage_config, write_draws, write_questions
from project import smk, tiny_config, write_tiny_project

ENV = "JF_FAULT_TEST_API_KEY"
MASK = f"[masked:{ENV}]"


def _needles(key: str) -> list[bytes]:
    # the key, and its distinctive part alone (hosted APIs echo keys partly masked)
    return [key.encode(), key[-20:].encode()]


@pytest.mark.slow
def test_key_is_used_but_never_written(tmp_path, monkeypatch, capfd):
    key = "sk-jf-" + secrets.token_hex(16)
    monkeypatch.setenv(ENV, key)
    root = tmp_path / "run"
    p = paths(root)
    write_questions(p["questions"], 20)
    p["log_dir"].mkdir(parents=True)
    handler = logging.FileHandler(p["log_dir"] / "debug.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    rootlog = logging.getLogger()
    old_level = rootlog.level
    rootlog.addHandler(handler)
    rootlog.setLevel(logging.DEBUG)
    try:
        # faults too, so that retries and error paths are logged (no stalls or 429s: they only take time)
        with FaultServer(rate=0.3, seed=5, api_key=key, kinds=("500", "503", "close", "partial", "badjson")) as fs:
            config = stage_config(root, fs.url, api_key_env=ENV)
            assert key not in repr(config)  # the config holds the variable's name only
            run_clean(config, p)
            write_draws(p["draws"], read_jsonl(p["kept"]))
            run_label(config, p)
            assert set(fs.auth_seen) == {f"Bearer {key}"}  # every request carried the key
            assert fs.summary()["faulted"] > 0 and fs.summary()["paid_twice"] == 0
    finally:
        rootlog.removeHandler(handler)
        rootlog.setLevel(old_level)
        handler.close()
    out, err = capfd.readouterr()
    (root / "captured.txt").write_text(out + err)
    files = [f for f in root.rglob("*") if f.is_file()]
    assert {f.name for f in files} >= {"labels.jsonl", "nstar.json", "cleaning.json", "debug.log", "captured.txt"}
    assert any(f.suffix == ".jsonl" and "cache" in f.parts for f in files)
    assert (p["log_dir"] / "debug.log").stat().st_size > 0
    leaks = [str(f) for f in files for n in _needles(key) if n in f.read_bytes()]
    assert not leaks, leaks


def test_error_from_a_server_that_echoes_the_key_does_not_show_it(tmp_path, monkeypatch):
    key = "sk-jf-" + secrets.token_hex(16)
    monkeypatch.setenv(ENV, key)
    with FaultServer(api_key="the-right-key") as fs:  # our key is refused, and echoed in the error
        m = OpenAIModel("hosted", fs.url, "standin", str(tmp_path), api_key_env=ENV)
        with pytest.raises(BackendError, match=rf"^{fs.url}: HTTP 401 from model standin not retried") as e:
            m.generate([GenRequest.chat("hi", sampling=Sampling(max_new_tokens=4))])
        assert fs.auth_seen == {f"Bearer {key}": 1}
    text = "".join(traceback.format_exception(e.value)) + repr(m) + str(m.stats())
    assert MASK in str(e.value)
    assert not [n for n in _needles(key) if n.decode() in text]


def _leaks(root: Path, needles, besides: tuple[Path, ...] = ()) -> list[str]:
    """Every file under `root` that holds one of the needles (the project: results, cache, logs,
    .snakemake), but `besides` (the config file the user wrote it into)."""
    return [str(f) for f in root.rglob("*") if f.is_file() and not f.is_symlink() and f not in besides
            for n in needles if (n if isinstance(n, bytes) else n.encode()) in f.read_bytes()]


# ------------------------------------------------------------------------------ the mask itself


def test_mask_hides_a_key_whole_and_in_part_and_nothing_else():
    key = "sk-jf-" + secrets.token_hex(16)
    assert redact.register(key, "JF_MASK_TEST_KEY")
    m = "[masked:JF_MASK_TEST_KEY]"
    assert redact.mask(f"Incorrect API key provided: {key}.") == f"Incorrect API key provided: {m}."
    assert redact.mask(f"key sk-...{key[-20:]} and {key[3:19]}!") == f"key sk-...{m} and {m}!"  # partly echoed
    assert redact.mask(f"a{key}{key}b") == f"a{m}b"
    assert redact.mask("ordinary text, key[-4:] " + key[-4:]) == "ordinary text, key[-4:] " + key[-4:]
    assert redact.mask_obj({"a": [key, 1, None], key: "x"}) == {"a": [m, 1, None], m: "x"}
    # too short to be told from ordinary words: never registered (a local server's "EMPTY")
    assert not redact.register("EMPTY", "X") and not redact.register("1234567", "X")
    assert redact.mask("EMPTY 1234567") == "EMPTY 1234567"


def test_log_records_and_tracebacks_are_masked_whatever_the_logger(tmp_path):
    key = "sk-jf-" + secrets.token_hex(16)
    redact.register(key, "JF_LOG_TEST_KEY")
    handler = logging.FileHandler(tmp_path / "debug.log")
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger("some.library")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("header Authorization: Bearer %s", key)
        try:
            raise RuntimeError(f"the server said {key}")
        except RuntimeError:
            logger.exception("failed with %r", {"api_key": key})
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "debug.log").read_text()
    assert "Bearer [masked:JF_LOG_TEST_KEY]" in text
    assert "RuntimeError: the server said [masked:JF_LOG_TEST_KEY]" in text
    assert key not in text and key[-20:] not in text


@pytest.mark.parametrize("how", ["smk.fail", "uncaught", "thread", "warning"])
def test_a_failing_job_prints_its_traceback_masked_and_exits_non_zero(tmp_path, how):
    """What a Snakemake job writes to its log when its stage fails (judgeflow.workflow.smk.run catches the
    exception and prints it masked); uncaught exceptions, a thread's and warnings are masked too."""
    key = "sk-jf-" + secrets.token_hex(16)
    body = {"smk.fail": "try:\n    boom()\nexcept Exception as e:\n    smk.fail(e)",
            "uncaught": "boom()",
            "thread": "t = threading.Thread(target=boom); t.start(); t.join(); sys.exit(3)",
            "warning": "warnings.warn('deprecated for ' + os.environ['JF_JOB_KEY']); sys.exit(3)"}[how]
    code = textwrap.dedent("""
        import os, sys, threading, warnings
        from judgeflow.workflow import redact, smk
        redact.register_config({"models": {"m": {"backend": "openai", "api_key_env": "JF_JOB_KEY"}}})
        def boom():
            raise ValueError("HTTP 401: Incorrect API key provided: " + os.environ["JF_JOB_KEY"])
    """) + body + "\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JF_JOB_KEY=key, PYTHONPATH=str(ROOT / "src")))
    out = p.stdout + p.stderr
    assert p.returncode == {"smk.fail": 1, "uncaught": 1, "thread": 3, "warning": 3}[how], out
    assert "[masked:JF_JOB_KEY]" in out and key not in out and key[-20:] not in out, out
    if how != "warning":
        assert "Traceback (most recent call last)" in out and "ValueError: HTTP 401" in out


def test_an_answer_that_echoes_the_key_is_masked_before_the_cache_and_the_caller(tmp_path, monkeypatch):
    key = "sk-jf-" + secrets.token_hex(16)
    monkeypatch.setenv(ENV, key)
    with EchoServer() as es:
        m = OpenAIModel("hosted", es.url, "echo", str(tmp_path / "cache"), api_key_env=ENV, logprobs=False)
        got = m.generate([GenRequest.chat(f"Question {i}?", sampling=Sampling(max_new_tokens=8), seed=i)
                          for i in range(3)])
        m.close()
        assert es.auth_seen == {f"Bearer {key}": 3}
    assert all(MASK in g.text and key[-20:] not in g.text for g in got)
    again = OpenAIModel("hosted", es.url, "echo", str(tmp_path / "cache"), api_key_env=ENV, logprobs=False)
    assert [g.text for g in again.generate([GenRequest.chat(f"Question {i}?", sampling=Sampling(max_new_tokens=8),
                                                            seed=i) for i in range(3)])] == [g.text for g in got]
    again.close()
    assert list((tmp_path / "cache").rglob("*.jsonl")) and not _leaks(tmp_path, _needles(key))


@pytest.mark.parametrize("url", ["https://user:pa55word-secret@api.example.com/v1",
                                 "https://tok-secret@api.example.com/v1", "https://api.example.com/v1?api-key=tok-secret"])
def test_the_backend_refuses_a_credential_in_base_url_without_showing_it(tmp_path, url):
    with pytest.raises(ConfigError, match=r"^models\.hosted\.base_url: the URL holds a credential") as e:
        OpenAIModel("hosted", url, "x", str(tmp_path))
    assert "secret" not in str(e.value) and "pa55word" not in str(e.value)


# ------------------------------------------------------------------- the three paths, end to end


def _echo_config(url: str, api_key_env: str | None = ENV) -> dict:
    """The tiny project's config with the cleaning oracle on an OpenAI-compatible endpoint at `url`."""
    cfg = tiny_config()
    cfg["models"]["echo"] = {"backend": "openai", "base_url": url, "model": "echo", "max_retries": 1, "timeout": 30,
                             **({"api_key_env": api_key_env} if api_key_env else {})}
    cfg["cleaning"] = {"model": "echo", "max_new_tokens": 24}
    return cfg


def _clean(proj: Path, **env) -> subprocess.CompletedProcess:
    """The real workflow up to clean_questions (prepare_questions, then the cleaning oracle's calls)."""
    return smk(proj, "--cores", "1", "--until", "clean_questions", configfile=proj / "config" / "tiny.yaml",
               check=False, env=env)


@pytest.mark.slow  # runs Snakemake
def test_a_key_the_endpoint_echoes_in_its_answers_is_in_no_file_of_the_project(tmp_path, monkeypatch):
    """(a) An endpoint that echoes the key in every 200 answer (and in its refusal of logprobs):
    answers, reasons, cache, job log, Snakemake's log and metadata hold the mask, never the key."""
    key = "sk-jf-" + secrets.token_hex(20)
    monkeypatch.delenv(ENV, raising=False)
    with EchoServer() as es:
        proj = write_tiny_project(tmp_path / "p", _echo_config(es.url))
        p = _clean(proj, **{ENV: key})
        seen = dict(es.auth_seen)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert seen and set(seen) == {f"Bearer {key}"}  # the key was used (and echoed) on every call
    q = proj / "results" / "tiny" / "questions"
    records = [r for f in ("kept", "rejected", "heldout") for r in read_jsonl(q / f"{f}.jsonl")]
    asked = [r["cleaning"] for r in records if r["cleaning"].get("raw")]
    assert len(asked) == 3 and all(MASK in c["raw"] for c in asked)
    assert any(not c["kept"] and MASK in c["reason"] for c in asked)  # the rivers question: rejected, its reason
    assert json.loads((q / "cleaning.json").read_text())["asked_oracle"] == 3
    log = (proj / "logs" / "tiny" / "clean_questions" / "clean_questions.log").read_text()
    assert "refuses logprobs" in log and MASK in log
    assert list((proj / "cache").rglob("*.jsonl")) and list((proj / ".snakemake").rglob("*"))
    assert key not in out and key[-20:] not in out
    leaks = _leaks(proj, _needles(key))
    assert not leaks, leaks


@pytest.mark.slow  # runs Snakemake
def test_a_key_pasted_as_api_key_env_stops_the_run_and_is_in_no_file(tmp_path):
    """(b) The key itself as the value of api_key_env: a config error naming the key, not echoing
    the value, before any job (nothing written that could hold it)."""
    key = "sk-jf-" + secrets.token_hex(20)
    with EchoServer() as es:
        proj = write_tiny_project(tmp_path / "p", _echo_config(es.url, api_key_env=key))
        p = _clean(proj)
        assert not es.auth_seen
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "models.echo.api_key_env: expected the NAME of the environment variable" in out, \
        out[-3000:]
    assert key not in out and key[-20:] not in out
    assert not (proj / "results").exists()  # stopped while parsing: no job ran
    leaks = _leaks(proj, [key.encode(), key[-20:].encode()], besides=(proj / "config" / "tiny.yaml",))
    assert not leaks, leaks


@pytest.mark.slow  # runs Snakemake
@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_a_credential_inside_base_url_stops_the_run_and_is_in_no_file(tmp_path, where):
    """(c) https://user:KEY@host or ?api-key=KEY: refused before any job, the error without the
    secret; no cache folder, output, metadata or log holds it."""
    secret = "jfsecret" + secrets.token_hex(16)
    with EchoServer() as es:
        url = {"userinfo": es.url.replace("http://", f"http://user:{secret}@"),
               "query": f"{es.url}?api-key={secret}"}[where]
        proj = write_tiny_project(tmp_path / "p", _echo_config(url, api_key_env=None))
        p = _clean(proj)
    out = p.stdout + p.stderr
    what = {"userinfo": "a user name and password", "query": "the query parameter 'api-key'"}[where]
    assert p.returncode != 0 and f"models.echo.base_url: the URL holds a credential ({what}" in out, out[-3000:]
    assert secret not in out
    assert not (proj / "results").exists() and not (proj / "cache").exists()
    leaks = _leaks(proj, [secret], besides=(proj / "config" / "tiny.yaml",))
    assert not leaks, leaks
