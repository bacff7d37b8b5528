"""`judgeflow estimate` (judgeflow.workflow.estimate): each API stage's calls, tokens and cost before
anything is paid, against what the tiny workflow's real run paid (its ledger, logs/tiny/costs.jsonl: the
served 135M oracle at a price), and its bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from judgeflow.models import ledger as jl
from judgeflow.workflow import settings as st
from judgeflow.workflow.estimate import estimate, table

from project import ROOT, tiny_config, write_tiny_project

JUDGEFLOW = str(Path(sys.executable).with_name("judgeflow"))


def _by_rule(rows):
    return {r.rule: r for r in rows}


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    proj = write_tiny_project(tmp_path / "project")
    (proj / "resources").symlink_to(ROOT / "resources")  # the tokenizer of the served model's local copy
    monkeypatch.chdir(proj)
    return proj


def test_the_calls_follow_the_stages_arithmetic(tiny_project):
    cfg = tiny_config()
    rows = _by_rule(estimate(st.validate(cfg)))
    # tiny_questions(): 4 questions, one with an empty prompt (rejected without asking); 1 held out;
    # two DPO variants, each compared in two orders on the held-out question's one answer
    assert rows["clean_questions"].calls == 3 and rows["clean_questions"].model == "oracle"
    assert rows["evaluate_policies"].calls == 2 * 1 * 1 * 2
    # the policy and the judges are in-process (hf): no API stage for them; verifiers label and compare
    assert set(rows) == {"clean_questions", "evaluate_policies"}
    # completions at their limits; the served oracle's own tokenizer counts the prompts
    assert rows["clean_questions"].completion_tokens == 3 * cfg["cleaning"]["max_new_tokens"]
    assert rows["evaluate_policies"].completion_tokens == 4 * cfg["evaluation"]["oracle_max_new_tokens"]
    p = rows["clean_questions"]  # the served oracle priced as GPT-4.1 (2 and 8 per million tokens)
    assert p.cost == pytest.approx((p.prompt_tokens * 2 + p.completion_tokens * 8) / 1e6)
    assert p.cost_at_most > p.cost  # the cap's worst case: every prompt byte a token
    del cfg["models"]["oracle"]["price"]
    assert _by_rule(estimate(st.validate(cfg)))["clean_questions"].cost is None  # no price, no money
    more = st.deep_merge(cfg, {"evaluation": {"n_samples": 3}, "questions": {"heldout": 2}})
    assert _by_rule(estimate(st.validate(more)))["evaluate_policies"].calls == 2 * 2 * 3 * 2


def test_stages_whose_calls_hang_on_verdicts_are_named_not_counted(tiny_project):
    # a hosted refiner (no weights on disk: no refiner training)
    cfg = st.deep_merge(tiny_config(), {"refining": {"model": "api", "tree_search": {
                                            "oracle": "oracle", "refiner_training": {"enabled": False}}},
                                        "oracle": {"labeller": "oracle", "budget": 3, "label_all_accepted": False,
                                                   "replay_runs": 0, "strategy": "uniform"},
                                        "sampling": {"model": "api"}, "draws": {"model": "api"},
                                        "training": {"model": "smollm2"},
                                        "models": {"api": {"backend": "openai", "model": "x",
                                                           "base_url": "http://127.0.0.1:9/v1"}}})
    cfg["judging"]["judges"][0].update(model="api", answer_first=False)
    rows = estimate(st.validate(cfg))
    by = _by_rule(rows)
    assert by["label_oracle"].calls == 3  # oracle.budget: the strategy's labels (of at most 2 x 2 draws)
    pool = 2  # 4 questions, 1 empty, 1 held out
    # SPaR's root choice, one rejected response per question: at most pool roots, 2 gates, 2 orders, 2 rounds
    assert by["tree_search_gate"].calls == pool * 2 * 2 * 2
    every = st.deep_merge(cfg, {"refining": {"tree_search": {"root_choice": "all", "roots": 0.5, "rounds": 1}}})
    assert _by_rule(estimate(st.validate(every)))["tree_search_gate"].calls == round(0.5 * pool * 2) * 2 * 2
    assert by["sample_responses"].calls == pool * 2
    unknown = {r.rule for r in rows if r.calls is None}
    assert {"judge_responses", "refine_responses", "tree_search", "sample_until_accept"} <= unknown
    assert "?" in table(rows) and "not estimated" in table(rows)


def test_a_pilot_ledger_gives_the_tokens_per_call(tiny_project, tmp_path):
    pilot = tmp_path / "costs.jsonl"
    pilot.write_text("".join(json.dumps({"rule": "clean_questions", "model": "oracle", "prompt_tokens": p,
                                         "completion_tokens": c, "cost": 0.0}) + "\n" for p, c in [(100, 3), (120, 5)]))
    [clean] = [r for r in estimate(st.validate(tiny_config()), pilot=str(pilot)) if r.rule == "clean_questions"]
    assert (clean.prompt_tokens, clean.completion_tokens) == (3 * 110, 3 * 4) and "pilot (2 calls)" in clean.basis


@pytest.mark.slow
def test_the_estimate_is_within_10_percent_of_what_the_tiny_run_paid(tiny_run):
    """The tiny workflow ran with its served oracle priced (tests/project.py): its ledger holds every
    call it paid. The estimate, from its config alone, is within 10% in calls, tokens and money."""
    lines = [r for r in jl.read(tiny_run / "logs" / "tiny" / "costs.jsonl") if r.get("kind") != "saved"]
    assert lines, "the tiny run paid nothing: its oracle has no price?"
    cwd = os.getcwd()
    try:
        os.chdir(tiny_run)
        rows = estimate(st.validate(tiny_config()))
    finally:
        os.chdir(cwd)
    for rule in {r["rule"] for r in lines}:
        paid = [r for r in lines if r["rule"] == rule]
        [est] = [r for r in rows if r.rule == rule]
        assert est.calls == pytest.approx(len(paid), rel=0.10), rule
        assert est.prompt_tokens == pytest.approx(sum(r["prompt_tokens"] for r in paid), rel=0.10), rule
        assert est.cost == pytest.approx(sum(r["cost"] for r in paid), rel=0.10), rule
        assert est.cost_at_most >= sum(r["cost"] for r in paid), rule
    assert sum(r.cost or 0 for r in rows) == pytest.approx(jl.totals(lines)["cost"], rel=0.10)
    # and the report's headline shows what was paid, by rule
    report = (tiny_run / "results" / "tiny" / "report.html").read_text()
    assert "API spend" in report and f"{jl.totals(lines)['cost']:.4f}" in report and "evaluate_policies: " in report


def test_the_command_and_its_bad_input(tiny_project):
    cfg = tiny_project / "config" / "tiny.yaml"
    ok = subprocess.run([JUDGEFLOW, "estimate", "--configfile", str(cfg), "--json",
                         "--config", 'models.oracle.price={"input": 2, "output": 8}'],
                        capture_output=True, text=True, check=True)
    rows = json.loads(ok.stdout)
    assert {r["rule"] for r in rows} == {"clean_questions", "evaluate_policies"} and all(r["cost"] > 0 for r in rows)
    bad = subprocess.run([JUDGEFLOW, "estimate", "--configfile", str(cfg), "--config", "sampling.n_samples=0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "sampling.n_samples" in bad.stderr
    bad = subprocess.run([JUDGEFLOW, "estimate", "--configfile", str(cfg), "--pilot", "nowhere.jsonl"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--pilot" in bad.stderr and "nowhere.jsonl" in bad.stderr
    default = subprocess.run([JUDGEFLOW, "estimate", "--configfile", str(ROOT / "config" / "config.yaml")],
                             capture_output=True, text=True, check=True)
    assert "nothing to pay" in default.stdout  # the demo's oracle is the exact verifier
