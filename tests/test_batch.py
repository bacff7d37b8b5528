"""oracle.batch: the Batch API for cleaning and comparisons, against a real local HTTP server that
serves the Batch API (tests/fault_server.py: files, batches, polling, results), driven through
the openai SDK exactly as a hosted API would be."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from judgeflow.models import BackendError, ConfigError, GenRequest, Sampling
from judgeflow.models.batch import BatchedModel
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.settings import validate

from fault_server import FaultServer, paths, run_clean, stage_config, write_questions

HERE = os.path.dirname(os.path.abspath(__file__))


def _requests(n: int) -> list[GenRequest]:
    return [GenRequest.chat(f"Is question {i} answerable?", sampling=Sampling(32, 0.0, 1.0), score_after="Verdict:",
                            seed=100 + i) for i in range(n)]


def _model(url: str, cache, **kw) -> OpenAIModel:
    return OpenAIModel("oracle", url, "standin", str(cache), timeout=5, max_retries=2, **kw)


def test_batch_gives_the_synchronous_answers_and_caches_them(tmp_path):
    reqs = _requests(12)
    with FaultServer() as fs:
        sync = _model(fs.url, tmp_path / "sync").generate(reqs)
        paid_sync = fs.upstream_calls()
        b = BatchedModel(_model(fs.url, tmp_path / "batch"), poll_s=0.01)
        got = b.generate(reqs)
        assert fs.batches_created() == 1
        assert [g.text for g in got] == [g.text for g in sync]
        assert [g.p_yes for g in got] == [g.p_yes for g in sync]  # logprobs asked for and read the same way
        assert not any(g.cached for g in got)
        assert fs.upstream_calls() == 2 * paid_sync
        assert b.stats()["batch"] == {"batch_answers": 12, "batch_errors": 0, "submitted": 1}
        # a rerun: everything from the cache, nothing submitted, nothing paid
        again = BatchedModel(_model(fs.url, tmp_path / "batch"), poll_s=0.01).generate(reqs)
        assert all(g.cached for g in again) and [g.text for g in again] == [g.text for g in got]
        assert fs.batches_created() == 1 and fs.upstream_calls() == 2 * paid_sync


def test_expired_batch_caches_what_came_back_and_sends_the_rest_synchronously(tmp_path):
    reqs = _requests(10)
    with FaultServer() as fs:
        fs.batch_outcome, fs.batch_answered = "expired", 0.5
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01, on_failure="sync")
        got = b.generate(reqs)
        assert all(g.text for g in got)
        assert b.stats()["batch"]["sync_fallback"] == 5
        assert fs.paid_twice() == 0 and fs.distinct() == 10   # each request paid once, batch or sync


def test_failed_batch_with_stop_names_the_batch_and_a_rerun_pays_only_for_the_rest(tmp_path):
    reqs = _requests(10)
    with FaultServer() as fs:
        fs.batch_outcome, fs.batch_answered = "failed", 0.4
        with pytest.raises(BackendError, match=r"batch batch_0001 ended failed: 4 of 10 requests came back"):
            BatchedModel(_model(fs.url, tmp_path), poll_s=0.01, on_failure="stop").generate(reqs)
        assert fs.upstream_calls() == 4
        fs.batch_outcome = "completed"
        got = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01, on_failure="stop").generate(reqs)
        assert sum(g.cached for g in got) == 4               # what came back was cached
        assert fs.batches_created() == 2 and fs.upstream_calls() == 10 and fs.paid_twice() == 0
        assert len(fs.batches["batch_0002"]["lines"]) == 6   # the second batch holds only the missing ones


KILLED = """
import sys
sys.path.insert(0, {src!r})
from judgeflow.models.batch import BatchedModel
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.models import GenRequest, Sampling
reqs = [GenRequest.chat(f"Is question {{i}} answerable?", sampling=Sampling(32, 0.0, 1.0), score_after="Verdict:",
                        seed=100 + i) for i in range({n})]
BatchedModel(OpenAIModel("oracle", {url!r}, "standin", {cache!r}, timeout=5, max_retries=2),
             poll_s=0.05).generate(reqs)
"""


def test_a_killed_job_resumes_its_batch_instead_of_paying_again(tmp_path):
    src = os.path.join(os.path.dirname(HERE), "src")
    with FaultServer() as fs:
        fs.batch_hold.set()   # the provider is slow: the batch stays in progress
        proc = subprocess.Popen([sys.executable, "-c", KILLED.format(src=src, n=8, url=fs.url, cache=str(tmp_path))])
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                states = list((tmp_path / "openai").glob("*/batches/*.json"))
                if states and json.loads(states[0].read_text()).get("batch_id"):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("no batch was submitted")
        finally:
            proc.kill()
            proc.wait()
        assert fs.batches_created() == 1 and fs.upstream_calls() == 0
        fs.batch_hold.clear()
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        got = b.generate(_requests(8))
        assert all(g.text for g in got)
        assert fs.batches_created() == 1               # the same batch, polled to its end
        assert b.stats()["batch"]["resumed"] == 1 and "submitted" not in b.stats()["batch"]
        assert fs.upstream_calls() == 8 and fs.paid_twice() == 0


def test_killed_between_upload_and_create_finds_the_batch_by_its_file(tmp_path):
    """The state file is written with the uploaded file's id before batches.create: a job killed
    right after the create finds its batch in batches.list."""
    reqs = _requests(5)
    with FaultServer() as fs:
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        m = b.model
        by_key = {m._key(r): r for r in reqs}
        with b._client() as client:
            state = b._submit(client, list(by_key), by_key, "clean")
        path = tmp_path / "openai" / os.listdir(tmp_path / "openai")[0] / "batches"
        state_file = next(path.glob("*.json"))
        on_disk = json.loads(state_file.read_text())
        on_disk["batch_id"] = None                   # as if killed before the batch id was written
        state_file.write_text(json.dumps(on_disk))
        got = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01).generate(reqs)
        assert state["batch_id"] == "batch_0001" and fs.batches_created() == 1
        assert all(g.text for g in got) and fs.upstream_calls() == 5


def test_the_api_key_reaches_no_state_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JF_TEST_BATCH_KEY", "sk-batch-secret-123456")
    with FaultServer(api_key="sk-batch-secret-123456") as fs:
        m = OpenAIModel("oracle", fs.url, "standin", str(tmp_path), api_key_env="JF_TEST_BATCH_KEY", timeout=5)
        BatchedModel(m, poll_s=0.01).generate(_requests(3))
        assert fs.batches_created() == 1
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"sk-batch-secret" not in f.read_bytes(), f


def test_clean_questions_through_the_batch_api_keeps_the_same_questions(tmp_path):
    """The stage as the workflow runs it, with oracle.batch on: the same kept and rejected
    questions as the synchronous run, one batch, each question paid once."""
    kept = {}
    with FaultServer() as fs:
        for mode in (False, True):
            root = tmp_path / f"batch-{mode}"
            cfg = stage_config(root, fs.url, oracle={"batch": mode, "batch_poll_s": 0.01})
            p = paths(root)
            write_questions(p["questions"], 12)
            run_clean(cfg, p)
            kept[mode] = [json.loads(x)["question_id"] for x in p["kept"].read_text().splitlines()]
            stats = json.loads(p["cleaning"].read_text())["models"]["flaky"]
            assert ("batch" in stats) == mode
        assert fs.batches_created() == 1
    assert kept[True] == kept[False] and kept[True]


def test_batch_needs_an_openai_backend_naming_the_key():
    import yaml

    from judgeflow.settings import deep_merge

    shipped = yaml.safe_load(Path(HERE).parent.joinpath("config", "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"oracle.batch: cleaning.model is model '\w+', backend hf"):
        validate(deep_merge(shipped, {"oracle": {"batch": True}}))  # the demo cleans in-process
    served = {"models": {"oracle": {"backend": "openai", "model": "m", "serve": {"path": "resources/models/x"}}},
              "cleaning": {"model": "oracle", "answer_first": False}, "oracle": {"batch": True}}
    with pytest.raises(ConfigError, match=r"oracle.batch: cleaning.model is model 'oracle', a local server"):
        validate(deep_merge(shipped, served))
    with pytest.raises(ConfigError, match=r"oracle.batch: the Batch API needs a model with backend openai"):
        BatchedModel(object())
