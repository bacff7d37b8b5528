"""The API key comes from the environment variable named in the config and is written nowhere:
not in the cache, the outputs, the logs (even at DEBUG, the SDK's and httpx's included), the
captured stderr, nor in error messages, even when the server echoes it back."""
from __future__ import annotations

import logging
import secrets
import traceback

import pytest

from judgeflow.io import read_jsonl
from judgeflow.models import BackendError, GenRequest, Sampling
from judgeflow.models.openai_api import OpenAIModel

from fault_server import FaultServer, paths, run_clean, run_label, stage_config, write_draws, write_questions

ENV = "JF_FAULT_TEST_API_KEY"


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
    assert "***" in str(e.value)
    assert not [n for n in _needles(key) if n.decode() in text]
