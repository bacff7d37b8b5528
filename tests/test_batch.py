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

from judgeflow.errors import BackendError, ConfigError
from judgeflow.models import GenRequest, Sampling
from judgeflow.models.batch import BatchedModel
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.workflow.settings import validate

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

    from judgeflow.workflow.settings import deep_merge

    shipped = yaml.safe_load(Path(HERE).parent.joinpath("config", "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"oracle.batch: cleaning.model is model '\w+', backend hf"):
        validate(deep_merge(shipped, {"oracle": {"batch": True}}))  # the demo cleans in-process
    served = {"models": {"oracle": {"backend": "openai", "model": "m", "serve": {"path": "resources/models/x"}}},
              "cleaning": {"model": "oracle", "answer_first": False}, "oracle": {"batch": True}}
    with pytest.raises(ConfigError, match=r"oracle.batch: cleaning.model is model 'oracle', a local server"):
        validate(deep_merge(shipped, served))
    with pytest.raises(ConfigError, match=r"oracle.batch: the Batch API needs a model with backend openai"):
        BatchedModel(object())


# --- an idempotent batches.create (issue 22) ----------------------------------------------------
def _state_files(cache) -> list[Path]:
    return sorted(Path(cache).glob("openai/*/batches/*.json"))


@pytest.mark.parametrize("faults", [["close_after"], ["500_after"], ["500", "close_after"]],
                         ids=["dropped", "500-after-create", "500-then-dropped"])
def test_a_lost_create_answer_bills_one_batch(tmp_path, faults):
    """The server creates the batch, then the answer is lost (connection dropped, or HTTP 500): the
    intent is looked up and its batch adopted; no second batch is created, one is billed."""
    reqs = _requests(6)
    with FaultServer() as fs:
        fs.batch_create_faults = list(faults)
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        got = b.generate(reqs)
        assert all(g.text for g in got)
        assert fs.batches_created() == 1 and fs.batches_billed() == 1 and fs.requests_billed() == 6
        assert fs.batch_create_calls == len(faults)          # the SDK did not re-send a create on its own
        assert fs.upstream_calls() == 6 and fs.paid_twice() == 0
        assert b.stats()["batch"]["adopted"] == 1 and b.stats()["batch"]["submitted"] == 1
        state = json.loads(_state_files(tmp_path)[0].read_text())
        assert state["batch_id"] == "batch_0001" and state["done"]
        assert fs.batches["batch_0001"]["metadata"]["judgeflow_intent"] == state["intent"]


def test_a_create_that_never_gets_through_stops_and_a_rerun_looks_it_up_first(tmp_path):
    reqs = _requests(4)
    with FaultServer() as fs:
        fs.batch_create_faults = ["500", "close", "500"]          # nothing created, three times
        with pytest.raises(BackendError, match=r"failed 3 times without a clear answer \(HTTP 500, connection lost"):
            BatchedModel(_model(fs.url, tmp_path), poll_s=0.01).generate(reqs)
        assert fs.batches_created() == 0 and fs.batch_create_calls == 3
        state = json.loads(_state_files(tmp_path)[0].read_text())
        assert state["intent"] and state["batch_id"] is None and not state["done"]
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        assert all(g.text for g in b.generate(reqs))
        assert fs.batches_created() == 1 and fs.batches_billed() == 1 and fs.upstream_calls() == 4
        assert json.loads(_state_files(tmp_path)[0].read_text())["status"] == "never created"


def _other_batch(fs, tag: str, metadata: dict | None = None, input_file_id: str | None = None) -> str:
    """A batch created by someone else through the SDK (another job, another tool)."""
    import openai

    client = openai.OpenAI(base_url=fs.url, api_key="x", max_retries=0)
    if input_file_id is None:
        line = {"custom_id": tag, "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "standin", "messages": [{"role": "user", "content": tag}]}}
        input_file_id = client.files.create(file=(f"{tag}.jsonl", json.dumps(line).encode() + b"\n"),
                                            purpose="batch").id
    return client.batches.create(input_file_id=input_file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata=metadata or {"other": tag}).id


def test_a_job_killed_during_the_create_call_resumes_its_intent_without_a_second_batch(tmp_path):
    """Killed while batches.create was in flight (the server had created the batch, the answer never
    came): the state holds the intent and no batch id; the rerun finds the batch by its intent in
    batches.list (paginated: one batch a page, a newer batch of someone else in front of it)."""
    src = os.path.join(os.path.dirname(HERE), "src")
    with FaultServer(stall_s=60) as fs:
        fs.batch_create_faults = ["stall_after"]
        proc = subprocess.Popen([sys.executable, "-c", KILLED.format(src=src, n=6, url=fs.url, cache=str(tmp_path))])
        try:
            deadline = time.time() + 60
            while time.time() < deadline and fs.batches_created() < 1:
                time.sleep(0.02)
            assert fs.batches_created() == 1, "no batch was created"
        finally:
            proc.kill()
            proc.wait()
        state = json.loads(_state_files(tmp_path)[0].read_text())
        assert state["batch_id"] is None and state["intent"]
        assert fs.batches["batch_0001"]["metadata"]["judgeflow_intent"] == state["intent"]
        other = _other_batch(fs, "someone-else")
        fs.batch_list_cap = 1
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        assert all(g.text for g in b.generate(_requests(6)))
        assert fs.batches_created() == 2 and fs.batch_create_calls == 2   # ours, and the other one
        assert fs.batches["batch_0001"]["status"] == "completed" and fs.batches[other]["status"] == "validating"
        assert b.stats()["batch"]["resumed"] == 1 and "submitted" not in b.stats()["batch"]
        assert fs.upstream_calls() == 6 and fs.paid_twice() == 0
        assert json.loads(_state_files(tmp_path)[0].read_text())["batch_id"] == "batch_0001"


def test_two_batches_of_one_intent_one_is_adopted_the_other_cancelled(tmp_path, caplog):
    reqs = _requests(5)
    with FaultServer() as fs:
        fs.batch_hold.set()
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        m = b.model
        by_key = {m._key(r): r for r in reqs}
        with b._client() as client:
            state = b._submit(client, list(by_key), by_key, "clean")
        path = _state_files(tmp_path)[0]
        on_disk = json.loads(path.read_text())
        on_disk["batch_id"] = None                      # killed before the batch id was written ...
        path.write_text(json.dumps(on_disk))
        twin = _other_batch(fs, "twin", {"judgeflow_intent": state["intent"]}, state["input_file_id"])
        assert twin == "batch_0002" and fs.batches_billed() == 2   # ... and a second batch of its intent
        fs.batch_hold.clear()
        with caplog.at_level("INFO", logger="judgeflow.models.batch"):
            b2 = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
            assert all(g.text for g in b2.generate(reqs))
        assert f"2 batches carry intent {state['intent']}: batch_0001 is kept, batch_0002 is cancelled" in caplog.text
        assert fs.batches["batch_0002"]["status"] == "cancelled" and fs.batches["batch_0001"]["status"] == "completed"
        assert fs.batches_billed() == 1 and fs.batches_cancelled() == 1 and fs.upstream_calls() == 5
        assert b2.stats()["batch"]["cancelled"] == 1 and "submitted" not in b2.stats()["batch"]


def test_a_state_whose_requests_differ_is_not_resumed_and_the_log_says_so(tmp_path, caplog):
    """A batch submitted with other settings (here send_seed: the same cache keys, other bodies):
    the rerun does not take its answers as this job's; it cancels it (still in flight), logs it,
    and submits its own requests; the answers cached are those of the bodies sent now."""
    reqs = _requests(6)
    with FaultServer() as fs:
        fs.batch_hold.set()
        old = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        by_key = {old.model._key(r): r for r in reqs}
        with old._client() as client:
            old._submit(client, list(by_key), by_key, "clean")
        fs.batch_hold.clear()
        fs.batch_polls = 3                                # still in progress when the rerun looks at it
        with caplog.at_level("INFO", logger="judgeflow.models.batch"):
            new = BatchedModel(_model(fs.url, tmp_path, send_seed=False), poll_s=0.01)
            got = new.generate(reqs)
        assert "6 of the 6 requests this job wants from it differ from the requests it sends now" in caplog.text
        assert "batch batch_0001 (state" in caplog.text and "not resumed, starting over" in caplog.text
        assert fs.batches["batch_0001"]["status"] == "cancelled"
        assert fs.batches_created() == 2 and fs.batches_billed() == 1 and fs.requests_billed() == 6
        assert all("seed" not in line["body"] for line in fs.batches["batch_0002"]["lines"])
        assert new.stats()["batch"]["superseded"] == 1 and "resumed" not in new.stats()["batch"]
        sync = _model(fs.url, tmp_path / "sync", send_seed=False).generate(reqs)
        assert [g.text for g in got] == [g.text for g in sync]      # the answers to what is sent now
        states = [json.loads(p.read_text()) for p in _state_files(tmp_path)]
        assert [s.get("status") for s in states] == ["superseded", "completed"]
        assert states[0]["fingerprint"] != states[1]["fingerprint"]


def test_a_resume_takes_only_the_requests_sent_as_now(tmp_path, caplog):
    """One request of a resumed batch differs (its recorded body digest): the others are taken from
    the batch, that one is sent again in a batch of its own, its old answer is not cached."""
    reqs = _requests(5)
    with FaultServer() as fs:
        fs.batch_hold.set()
        b = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
        by_key = {b.model._key(r): r for r in reqs}
        with b._client() as client:
            b._submit(client, list(by_key), by_key, "clean")
        path = _state_files(tmp_path)[0]
        on_disk = json.loads(path.read_text())
        on_disk["digests"][2] = "0" * 16                  # as if sent with another body
        path.write_text(json.dumps(on_disk))
        fs.batch_hold.clear()
        with caplog.at_level("WARNING", logger="judgeflow.models.batch"):
            b2 = BatchedModel(_model(fs.url, tmp_path), poll_s=0.01)
            assert all(g.text for g in b2.generate(reqs))
        assert "1 of the 5 requests this job wants from it differ" in caplog.text
        assert [x["custom_id"] for x in fs.batches["batch_0002"]["lines"]] == [on_disk["keys"][2]]
        assert b2.stats()["batch"] == {"batch_answers": 5, "batch_errors": 0, "resumed": 1, "submitted": 1}
