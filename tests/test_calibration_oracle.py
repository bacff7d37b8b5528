"""The calibration split labelled by an LLM oracle (label_calibration, issue 23): one call per (response,
criterion) with the question narrowed to that criterion, generic criteria included, at most
judging.calibration.budget calls (whole responses of a seeded random subset past it), through the API
cache (a rerun pays nothing twice); an abstention gives no label. The oracle is a real OpenAI-compatible
server on 127.0.0.1 (tests/fault_server.py, no faults: a deterministic stand-in answer per request body),
the stage runs as the workflow runs it (judgeflow.workflow.pipeline.run_stage: only its declared settings)."""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict

import pytest

from judgeflow.errors import ConfigError, InputError
from judgeflow.judging.verdicts import ABSTAIN, parse_verdict
from judgeflow.workflow import pipeline, settings as st
from judgeflow.workflow.io import read_jsonl
from judgeflow.workflow.pipeline import STAGES, run_stage

from conftest import ROOT
from fault_server import FaultServer, standin_answer

CFG = ROOT / "config" / "config.yaml"
GENERIC = {"criterion_id": "generic:polite", "description": "[crit:generic:polite] The response is polite."}
N_CRITERIA = (1, 2, 3, 1, 2, 3)          # each question's own criteria
N_SAMPLES = 2                            # responses per question
PAIRS = N_SAMPLES * (sum(N_CRITERIA) + len(N_CRITERIA))  # own criteria + the generic one: 36


class RecordingServer(FaultServer):
    """The fault server without faults, keeping every request body its stand-in upstream answers."""

    def __init__(self, **kw):
        super().__init__(rate=0.0, **kw)
        self.bodies: list[dict] = []

    def _upstream(self, body, auth):
        with self.lock:
            self.bodies.append(body)
        return super()._upstream(body, auth)


def _prompt(body: dict) -> str:
    return "\n".join(str(m.get("content", "")) for m in body["messages"])


def asked(fs: RecordingServer) -> list[tuple[str, str]]:
    """(response_id, criterion_id) of each paid call, from its prompt."""
    out = []
    for body in fs.bodies:
        p = _prompt(body)
        crits = re.findall(r"\[crit:([^\]]+)\]", p)
        assert len(crits) == 1, p  # one criterion per call
        [resp] = re.findall(r"\[resp:([^\]]+)\]", p)
        out.append((resp, crits[0].split("/")[-1]))
    return out


def write_split(d) -> tuple[str, str, dict]:
    """calibration.jsonl and responses.jsonl as clean_questions and sample_calibration write them."""
    questions, responses, criteria = [], [], {}
    for i, n in enumerate(N_CRITERIA):
        qid = f"q{i}"
        crits = [{"criterion_id": f"c{k}", "description": f"[crit:{qid}/c{k}] Mention the number {k}.",
                  "kind": "given", "instruction_id": f"demo:c{k}"} for k in range(n)]
        questions.append({"question_id": qid, "prompt": f"Question {i}: list {n} numbers.", "source": "jsonl",
                          "criteria": crits})
        for s in range(N_SAMPLES):
            rid = f"{qid}-r{s}"
            responses.append({"response_id": rid, "question_id": qid, "sample": s,
                              "text": f"Response {s} to {qid}: {', '.join(map(str, range(s + i)))} [resp:{rid}]"})
            criteria[rid] = [c["criterion_id"] for c in crits] + [GENERIC["criterion_id"]]
    d.mkdir(parents=True, exist_ok=True)
    (d / "calibration.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (d / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in responses))
    return str(d / "calibration.jsonl"), str(d / "responses.jsonl"), criteria


def config(root, url: str | None = None, *, budget: int = 1000, seed: int | None = None, labeller: str = "llm",
           cache=None, **judging) -> dict:
    over = {"results_dir": str(root / "results"), "logs_dir": str(root / "logs"),
            "benchmarks_dir": str(root / "benchmarks"), "cache_dir": str(cache or root / "cache"),
            "oracle": {"labeller": labeller, "max_new_tokens": 32},
            "judging": {"generic_criteria": [GENERIC], "calibration": {"budget": budget}, **judging}}
    if url:
        over["models"] = {"llm": {"backend": "openai", "base_url": url, "model": "standin", "timeout": 5.0,
                                  "max_retries": 2, "max_concurrency": 4}}
    if seed is not None:
        over["seed"] = seed
    return st.load(CFG, overrides=over)


def label(cfg: dict, cal: str, resp: str, out) -> list[dict]:
    run_stage("label_calibration", {"calibration": cal, "responses": resp}, {"labels": str(out)}, cfg,
              log_dir=str(out.parent / "logs"))
    return read_jsonl(out)


def expected_label(body: dict) -> int | None:
    v = parse_verdict(standin_answer(body)["choices"][0]["message"]["content"])
    return None if v == ABSTAIN else int(v == "yes")


def test_each_pair_is_one_call_about_that_criterion_and_an_abstention_gives_no_record(tmp_path, caplog):
    cal, resp, criteria = write_split(tmp_path / "split")
    with RecordingServer() as fs:
        with caplog.at_level(logging.INFO, logger="judgeflow.judging.calibration"):
            labels = label(config(tmp_path, fs.url), cal, resp, tmp_path / "labels.jsonl")
        pairs = asked(fs)
        assert fs.upstream_calls() == len(pairs) == PAIRS and fs.paid_twice() == 0
    # every (response, criterion) asked once, the generic criterion too (the verifier cannot label it)
    assert sorted(pairs) == sorted((r, c) for r, cs in criteria.items() for c in cs)
    # a record per pair the oracle answered with a verdict, x that verdict; none where it abstained
    want = {p: expected_label(b) for p, b in zip(pairs, fs.bodies)}
    got = {(r["response_id"], r["criterion_id"]): r for r in labels}
    assert {p: x for p, x in want.items() if x is not None} == {p: r["x"] for p, r in got.items()}
    abstained = sum(x is None for x in want.values())
    assert 0 < abstained < PAIRS  # the stand-in abstains on some: they are counted, not labelled
    assert f"abstained (no verdict) on {abstained} of {PAIRS}" in caplog.text
    assert any(c.startswith("generic:") for _, c in got)
    for (rid, cid), r in got.items():
        assert r["question_id"] == rid.split("-")[0] and r["oracle"] == "llm" and r["reason"]
        assert r["instruction_id"] == (None if cid.startswith("generic:") else f"demo:{cid}")
    assert all(set(r) == {"response_id", "question_id", "criterion_id", "instruction_id", "criterion", "x", "oracle",
                                 "reason"}
               for r in labels)


def test_budget_labels_whole_responses_of_a_seeded_subset(tmp_path, caplog):
    cal, resp, criteria = write_split(tmp_path / "split")
    budget, widest = 15, max(len(c) for c in criteria.values())
    chosen = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        with RecordingServer() as fs:  # a fresh cache each: every call is paid
            with caplog.at_level(logging.WARNING, logger="judgeflow.judging.calibration"):
                caplog.clear()
                labels = label(config(tmp_path / name, fs.url, budget=budget, seed=seed), cal, resp,
                               tmp_path / name / "labels.jsonl")
            pairs = asked(fs)
        assert len(pairs) == fs.upstream_calls() == len(set(pairs))
        assert budget - widest < len(pairs) <= budget  # filled up to the budget, never past it
        by_response = defaultdict(set)
        for r, c in pairs:
            by_response[r].add(c)
        assert all(cs == set(criteria[r]) for r, cs in by_response.items())  # whole responses
        assert {r["response_id"] for r in labels} <= set(by_response)
        left = len(criteria) - len(by_response)
        assert f"{left} responses ({PAIRS - len(pairs)} pairs) are left unlabelled" in caplog.text
        chosen[name] = set(by_response)
    assert chosen["a"] == chosen["b"] != chosen["c"]  # seeded by the run's seed


def test_a_rerun_pays_nothing_and_a_larger_budget_pays_only_the_new_pairs(tmp_path):
    cal, resp, _ = write_split(tmp_path / "split")
    out = tmp_path / "labels.jsonl"
    with RecordingServer() as fs:
        label(config(tmp_path, fs.url, budget=15), cal, resp, out)
        first, text = fs.upstream_calls(), out.read_text()
        assert 0 < first <= 15
        label(config(tmp_path, fs.url, budget=15), cal, resp, out)  # the same cache
        assert fs.upstream_calls() == first and out.read_text() == text
        label(config(tmp_path, fs.url, budget=1000), cal, resp, out)  # a superset of the same responses
        assert fs.upstream_calls() == PAIRS and fs.paid_twice() == 0


def test_a_budget_below_one_response_is_an_input_error_naming_the_file(tmp_path):
    cal, resp, _ = write_split(tmp_path / "split")
    with RecordingServer() as fs:
        with pytest.raises(InputError, match=re.escape(resp) + ".*judging.calibration.budget=1"):
            label(config(tmp_path, fs.url, budget=1), cal, resp, tmp_path / "labels.jsonl")
        assert fs.upstream_calls() == 0


def test_the_verifier_labels_instruction_criteria_and_reads_no_setting(tmp_path):
    crits = [{"criterion_id": iid, "description": iid, "kind": "instruction", "instruction_id": iid, "kwargs": {},
              "registry": "ifeval"} for iid in ("punctuation:no_comma", "change_case:english_lowercase")]
    (tmp_path / "calibration.jsonl").write_text(json.dumps({"question_id": "q", "prompt": "Say hi.",
                                                            "criteria": crits}) + "\n")
    (tmp_path / "responses.jsonl").write_text("".join(
        json.dumps({"response_id": f"r{i}", "question_id": "q", "text": t}) + "\n"
        for i, t in enumerate(("hi there", "Hi, there"))))
    cfg = config(tmp_path, labeller="verifier", budget=0)
    view = run_stage("label_calibration", {"calibration": str(tmp_path / "calibration.jsonl"),
                                           "responses": str(tmp_path / "responses.jsonl")},
                     {"labels": str(tmp_path / "labels.jsonl")}, cfg)
    labels = read_jsonl(tmp_path / "labels.jsonl")
    assert view.read == set() and len(labels) == 4 and {r["oracle"] for r in labels} == {"verifier"}
    assert [r["x"] for r in labels] == [1, 1, 0, 0]


# ------------------------------------------------------------------------------ settings, declarations


def test_an_llm_oracle_with_a_calibration_split_needs_a_budget(tmp_path):
    with pytest.raises(ConfigError, match=r"^judging\.calibration\.budget: .*oracle 'oracle' \(oracle\.labeller\)"
                                          r".*budget is 0 calls.*Set budget"):
        config(tmp_path, labeller="oracle", budget=0)
    assert config(tmp_path, labeller="oracle", budget=50)["judging"]["calibration"]["budget"] == 50
    for budget in (0, 7):  # the verifier is free: the budget is unused
        assert config(tmp_path, labeller="verifier", budget=budget)["judging"]["calibration"]["questions"] == 100
    # no calibration split: nothing to label, no budget needed (prompt judges only)
    config(tmp_path, labeller="oracle", budget=0, calibration={"questions": 0, "budget": 0},
           judges=[{"id": f"p{i}", "model": "smollm2"} for i in range(3)])
    with pytest.raises(ConfigError, match=r"judging\.calibration\.budget"):
        config(tmp_path, labeller="verifier", budget=-1)


def test_the_stage_declares_the_llm_oracle_and_nothing_with_the_verifier(tmp_path):
    from judgeflow.workflow.rulekit import Rules

    stage = STAGES["label_calibration"]
    verifier = config(tmp_path, labeller="verifier")
    assert pipeline.declared_paths(stage, verifier) == [] and pipeline.template_files(stage, verifier) == []
    assert pipeline.params(stage, verifier) == pipeline.params(stage, config(tmp_path, labeller="verifier", budget=9))
    llm = config(tmp_path, "http://127.0.0.1:9/v1", budget=20)
    paths = set(pipeline.declared_paths(stage, llm))
    assert {"seed", "judging.calibration.budget", "judging.generic_criteria", "oracle.labeller",
            "oracle.template", "oracle.max_new_tokens", "models.llm.base_url", "cache_dir"} <= paths
    assert not {p for p in paths if p.startswith(("judging.judges", "judging.calibration.questions", "sampling"))}
    assert pipeline.model_names(stage, llm) == ["llm"]
    assert [f.endswith("oracle_label.txt") for f in pipeline.template_files(stage, llm)] == [True]
    # every setting that shapes the labels reruns the stage
    for change in ({"budget": 21}, {"seed": 1}, {"generic_criteria": []}):
        other = config(tmp_path, "http://127.0.0.1:9/v1", **{"budget": 20, **change})
        assert pipeline.params(stage, other) != pipeline.params(stage, llm), change
    assert Rules(llm).inputs("label_calibration")(None)["templates"] == pipeline.template_files(stage, llm)


def test_a_judge_learns_from_a_generic_criterion_s_label_with_its_text():
    """An LLM oracle labels generic criteria too; they are not among the question's own criteria, so the
    label record carries the criterion's text (train_judge reads no judging.generic_criteria)."""
    from judgeflow.judging.calibration import learning_rows

    q = {"question_id": "q1", "prompt": "Say hi.", "criteria": [{"criterion_id": "c1", "description": "Be brief."}]}
    labels = [{"response_id": "r1", "question_id": "q1", "criterion_id": "c1", "x": 1},
              {"response_id": "r1", "question_id": "q1", "criterion_id": "generic:on_topic",
               "criterion": "The response answers the question.", "x": 0}]
    rows = learning_rows(labels, [{"response_id": "r1", "text": "hi"}], {"q1": q}, "judging.judges[0]", "labels")
    assert [(r.criterion_id, r.criterion, r.x) for r in rows] == [
        ("c1", "Be brief.", 1), ("generic:on_topic", "The response answers the question.", 0)]
