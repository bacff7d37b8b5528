"""Fault injection: the openai backend and the oracle stages against a real HTTP server on 127.0.0.1
(tests/fault_server.py) that answers 429 + Retry-After, 500, 503, drops connections, cuts bodies,
stalls past the timeout or sends malformed JSON on a seeded schedule, in front of a stand-in
upstream that answers deterministically. Nothing is lost, nothing is paid twice, and the outputs
are those of a fault-free run."""
from __future__ import annotations

import json

import pytest

from judgeflow.errors import BackendError
from judgeflow.models import GenRequest, Sampling
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.workflow.io import read_jsonl

from fault_server import (
    KINDS,
    FaultServer,
    fingerprint,
    paths,
    run_clean,
    run_label,
    stage_config,
    write_draws,
    write_questions,
)

S = Sampling(max_new_tokens=16)
RATE = 0.3


def _reqs(n):
    return [GenRequest.chat(f"Is question {i} answerable?", sampling=S, seed=i) for i in range(n)]


@pytest.mark.slow
def test_backend_retries_every_fault_kind_and_pays_each_call_once(tmp_path):
    reqs = _reqs(120)
    with FaultServer(rate=0.0) as clean:
        ref = OpenAIModel("m", clean.url, "standin", str(tmp_path / "c0")).generate(reqs)
    with FaultServer(rate=RATE, seed=7, stall_s=2.5) as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path / "c1"), timeout=2.0, max_concurrency=8)
        got = m.generate(reqs)
        s, st = fs.summary(), m.stats()
    assert [g.text for g in got] == [g.text for g in ref]  # the same answers as without faults
    assert all(not g.cached for g in got)
    assert set(s["faults"]) == set(KINDS)  # every kind was injected
    assert 0.2 < s["faulted"] / s["attempts"] < 0.4
    # no call paid twice: one upstream answer per distinct request, and each one kept
    assert s["upstream_calls"] == s["distinct_requests"] == len(reqs) == st["calls"] and s["paid_twice"] == 0
    # every faulted attempt was retried once, and the client counted what it sent
    assert st["retries"] == s["faulted"] and st["attempts"] == s["attempts"]
    f = st["failed_attempts"]
    assert f.get("http_429", 0) == s["faults"]["429"] and f.get("http_503", 0) == s["faults"]["503"]
    assert f.get("malformed", 0) == s["faults"]["badjson"] and f.get("empty", 0) == s["faults"]["null"]
    assert f.get("transport", 0) == s["faults"]["close"] + s["faults"]["partial"] + s["faults"]["stall"]
    # unusable answers (empty, cut at max_tokens) are marked and counted, not hidden
    marks = [g.unusable for g in got]
    assert st["unusable"] == {k: marks.count(k) for k in ("empty", "truncated") if k in marks}
    assert all((g.unusable == "empty") == (g.text == "") for g in got)
    assert all((g.unusable == "truncated") == (g.finish_reason == "length") for g in got)
    # Retry-After honoured after a 429; otherwise exponential backoff with jitter: at least 75 % of
    # 0.5 s * 2^k, k counting the SDK's retries (which start again after a malformed answer, retried here)
    ratios = []
    for arrivals in fs.arrivals.values():
        sdk_start = 0
        for i, ((t0, o0), (t1, _)) in enumerate(zip(arrivals, arrivals[1:])):
            wait = t1 - t0 - (2.0 if o0 == "stall" else 0.0)  # a stall costs the client its timeout first
            k = i if o0 in ("badjson", "null") else i - sdk_start
            if o0 == "429":
                assert wait >= fs.retry_after - 0.02, arrivals
            else:
                ratios.append(wait / (0.5 * 2 ** k))
                assert wait >= 0.75 * 0.5 * 2 ** k - 0.02, arrivals
            if o0 in ("badjson", "null"):
                sdk_start = i + 1
    assert ratios and max(ratios) - min(ratios) > 0.01  # jittered, not a fixed delay
    m.close()
    # a rerun (a new process would do the same) is free: everything comes from the cache
    again = OpenAIModel("m", fs.url, "standin", str(tmp_path / "c1"))
    assert [g.text for g in again.generate(reqs)] == [g.text for g in ref]
    assert again.stats()["attempts"] == 0 and again.stats()["cache_hits"] == len(reqs)
    assert again.stats()["unusable"] == st["unusable"]  # still counted when they come from the cache


@pytest.mark.slow
def test_oracle_stages_with_30_percent_faults_match_a_fault_free_run(tmp_path):
    results = {}
    for name, rate in (("clean", 0.0), ("faulted", RATE)):
        root = tmp_path / name
        p = paths(root)
        qs = write_questions(p["questions"], 60)
        with FaultServer(rate=rate, seed=3, stall_s=2.5) as fs:
            config = stage_config(root, fs.url, batch_size=16)
            run_clean(config, p)
            kept = read_jsonl(p["kept"])
            write_draws(p["draws"], kept)
            run_label(config, p)
            results[name] = (fingerprint(p), fs.summary(), read_jsonl(p["labels"]), p)
            stats = {f: json.loads(p[f].read_text()) for f in ("nstar", "cleaning")}
            if rate:  # a forced rerun of both stages pays for nothing and writes the same outputs
                attempts = fs.summary()["attempts"]
                run_clean(config, p)
                run_label(config, p)
                assert fs.summary()["attempts"] == attempts and fingerprint(p) == results[name][0]
    (ref, s0, _, _), (got, s, labels, p) = results["clean"], results["faulted"]
    assert s0["faulted"] == 0 and s["faulted"] >= 0.2 * s["attempts"]
    assert got == ref  # byte-for-byte the same outputs (cache/retry statistics aside)
    # every item labelled: each question kept, held out or rejected; each accepted draw has a label record
    ids = {q["question_id"] for f in ("kept", "heldout", "rejected") for q in read_jsonl(p[f])}
    assert ids == {q["question_id"] for q in qs}
    accepted = {d["draw_id"] for d in read_jsonl(p["draws"]) if d["first_accept"]}
    assert sorted(r["draw_id"] for r in labels) == sorted(accepted)
    # no call paid twice; the same calls as the fault-free run (the empty and the huge prompt never sent)
    assert s["paid_twice"] == 0 and s["upstream_calls"] == s["distinct_requests"] == s0["upstream_calls"]
    assert s["upstream_calls"] == len(qs) - 2 + len(accepted)
    # unusable answers are abstains, counted, never labels
    nstar, cleaning = stats["nstar"], stats["cleaning"]
    # each stage reports its retries: together, one per faulted attempt
    assert nstar["models"]["flaky"]["retries"] + cleaning["models"]["flaky"]["retries"] == s["faulted"]
    unusable = [r for r in labels if r["raw"] == "The question is about"]  # cut at max_tokens
    assert unusable and all(r["label"] is None for r in unusable)
    assert sum(r["label"] is None for r in labels if r.get("for") != "curve") == nstar["abstains"]
    assert cleaning["abstained"] > 0 and sum(cleaning["models"]["flaky"]["unusable"].values()) > 0


@pytest.mark.parametrize("kind,match", [
    ("503", r"HTTP 503 from model standin after 2 retries: .*injected 503"),
    ("500", r"HTTP 500 from model standin after 2 retries"),
    ("badjson", r"malformed answer from model standin after 2 retries \(JSONDecodeError"),
    ("close", r"cannot connect after 2 retries"),
    ("stall", r"request timed out after 0.3s and 2 retries"),
])
def test_final_error_names_the_endpoint_and_the_failure(tmp_path, kind, match):
    with FaultServer(rate=1.0, kinds=(kind,), max_in_a_row=99, stall_s=0.6) as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path), max_retries=2, timeout=0.3)
        with pytest.raises(BackendError, match=rf"^{fs.url}: {match}"):
            m.generate(_reqs(1))
        assert fs.summary()["attempts"] == 3 and fs.summary()["upstream_calls"] == 0
    assert not any(p.stat().st_size for p in tmp_path.rglob("*.jsonl"))  # nothing cached


def test_retry_after_beyond_two_minutes_is_not_waited_for(tmp_path):
    # the SDK honours Retry-After up to 120 s; a longer one fails at once with a clear error
    with FaultServer(rate=1.0, kinds=("429",), retry_after=600, max_in_a_row=99) as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path), max_retries=3)
        with pytest.raises(BackendError, match=rf"^{fs.url}: HTTP 429 from model standin not retried"):
            m.generate(_reqs(1))
        assert fs.summary()["attempts"] == 1


def test_identical_requests_in_one_batch_are_sent_once(tmp_path):
    reqs = _reqs(5)
    with FaultServer() as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path), max_concurrency=4)
        got = m.generate(reqs + reqs[:3])
        assert fs.summary()["upstream_calls"] == 5 and m.stats()["deduplicated"] == 3
    assert [g.text for g in got[5:]] == [g.text for g in got[:3]]
    assert [g.cached for g in got] == [False] * 5 + [True] * 3


def test_checkpoint_append_after_a_torn_line_survives_a_second_kill(tmp_path):
    from judgeflow.workflow.io import Checkpoint

    out = tmp_path / "labels.jsonl"
    ck = Checkpoint(out, key="id")
    ck.add_many([{"id": "a"}])
    ck.close()
    with open(ck.path, "a") as fh:
        fh.write('{"id": "b", "la')  # killed mid-write
    ck2 = Checkpoint(out, key="id")
    ck2.add_many([{"id": "b"}])
    ck2.close()  # killed again, before finish()
    assert set(Checkpoint(out, key="id").done) == {"a", "b"}  # "b" was not glued to the torn line
