"""Evaluation of trained policies: preference parsing, both-orders agreement, win-rate intervals,
pass-rate tables, and (slow) the stage end to end on the real model."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from judgeflow.training import evaluation as ev
from judgeflow.workflow.pipeline import STAGES, stage_models

from conftest import PROMPT_JUDGES, base_config


def _respond_and_judge(cfg, *args, **kw):
    """evaluate_responses' domain function, given the sections it reads from a validated config."""
    s = cfg.typed()
    spec = s.models[s.training.model]
    assert spec.backend == "hf"
    return ev.respond_and_judge(s.evaluation, s.judging, spec, s.sampling.system_prompt, s.seed, *args, **kw)


def _evaluate(cfg, *args, **kw):
    """evaluate_policies' domain function, given the sections it reads from a validated config."""
    s = cfg.typed()
    return ev.evaluate(s.evaluation, s.judging, s.training.model, s.seed, *args, batch=s.oracle, **kw)


def test_parse_preference_only_answer_lines():
    assert ev.parse_preference("A is shorter.\nVerdict: A") == "A"
    assert ev.parse_preference("**Verdict:** b") == "B"
    assert ev.parse_preference("Both fine.\nVerdict: TIE.") == "TIE"
    for text in ("", "I prefer A.", 'I would say "Verdict: A" here', "Verdict: A\nVerdict: B", "Verdict: C"):
        assert ev.parse_preference(text) == ev.ABSTAIN


def test_order_outcomes_and_agreement_of_both_orders():
    # order 1: trained policy shown as A; order 2: trained policy shown as B
    assert ev.order_outcome("A", policy_is_a=True) == ev.WIN
    assert ev.order_outcome("A", policy_is_a=False) == ev.LOSS
    assert ev.order_outcome("B", policy_is_a=False) == ev.WIN
    assert ev.order_outcome("TIE", policy_is_a=True) == ev.TIE
    assert ev.order_outcome(ev.ABSTAIN, policy_is_a=True) == ev.ABSTAIN
    assert ev.combine_orders(ev.WIN, ev.WIN) == ev.WIN
    assert ev.combine_orders(ev.LOSS, ev.LOSS) == ev.LOSS
    assert ev.combine_orders(ev.TIE, ev.TIE) == ev.TIE
    # position bias: the oracle says "A" both times -> the orders disagree
    assert ev.combine_orders(ev.order_outcome("A", True), ev.order_outcome("A", False)) == ev.INCONSISTENT
    assert ev.combine_orders(ev.WIN, ev.TIE) == ev.INCONSISTENT
    assert ev.combine_orders(ev.WIN, ev.ABSTAIN) == ev.ABSTAIN


def test_win_rate_with_clopper_pearson_interval():
    from scipy.stats import beta

    r = ev.win_rate(Counter({ev.WIN: 8, ev.LOSS: 2, ev.TIE: 3, ev.INCONSISTENT: 4, ev.ABSTAIN: 1}), 0.95)
    assert (r["wins"], r["losses"], r["ties"], r["inconsistent"], r["abstain"], r["comparisons"]) == (8, 2, 3, 4, 1, 18)
    assert r["win_rate"] == 0.8
    assert r["win_rate_ci_low"] == pytest.approx(beta.ppf(0.025, 8, 3), abs=1e-4)
    assert r["win_rate_ci_high"] == pytest.approx(beta.ppf(0.975, 9, 2), abs=1e-4)
    none = ev.win_rate(Counter({ev.TIE: 2, ev.INCONSISTENT: 1}))
    assert none["win_rate"] is None and none["win_rate_ci_low"] is None and none["comparisons"] == 3
    all_wins = ev.win_rate(Counter({ev.WIN: 5}))
    assert all_wins["win_rate"] == 1.0 and all_wins["win_rate_ci_high"] == 1.0 and all_wins["win_rate_ci_low"] < 1


def test_pass_rates_per_policy_and_criterion():
    gens = [{"policy": p, "item_id": f"{p}/q{i}/s0", "question_id": f"q{i}"} for p in ("base", "mf") for i in (0, 1)]
    agg = {
        "base/q0/s0": {"accepted": False, "criteria": {"c1": {"accepted": True}, "g": {"accepted": False}}},
        "base/q1/s0": {"accepted": False, "criteria": {"c1": {"accepted": False}, "g": {"accepted": False}}},
        "mf/q0/s0": {"accepted": True, "criteria": {"c1": {"accepted": True}, "g": {"accepted": True}}},
        "mf/q1/s0": {"accepted": False, "criteria": {"c1": {"accepted": True}, "g": {"accepted": False}}},
    }
    ver = {"base/q0/s0": {"criteria": {"c1": False}, "all": False}, "base/q1/s0": None,
           "mf/q0/s0": {"criteria": {"c1": True}, "all": True}, "mf/q1/s0": {"criteria": {"c1": False}, "all": False}}
    rows = {(r["policy"], r["criterion_id"]): r for r in ev.pass_rates(gens, agg, ver)}
    assert rows[("base", ev.ALL)]["judge_pass_rate"] == 0.0 and rows[("base", "c1")]["judge_pass_rate"] == 0.5
    assert rows[("base", "c1")]["verifier_pass_rate"] == 0.0 and rows[("base", "c1")]["verifier_n"] == 1
    assert rows[("mf", ev.ALL)]["judge_pass_rate"] == 0.5 and rows[("mf", "c1")]["judge_pass_rate"] == 1.0
    assert rows[("mf", ev.ALL)]["verifier_pass_rate"] == 0.5 and rows[("mf", "g")]["verifier_pass_rate"] is None
    assert list(rows)[0] == ("base", ev.ALL)


def test_skipped_variants_are_left_out_and_noted(tmp_path):
    s1, s2 = tmp_path / "a.json", tmp_path / "b.json"
    s1.write_text(json.dumps({"skipped": False}))
    s2.write_text(json.dumps({"skipped": True, "reason": "p.jsonl: 0 usable pair(s)"}))
    trained, skipped = ev.trained_policies(["multi_feedback", "full_feedback"], [str(s1), str(s2)], ["m1", "m2"])
    assert trained == {"multi_feedback": "m1"} and skipped == {"full_feedback": "p.jsonl: 0 usable pair(s)"}


class FakeOracle:
    """Prefers the longer response, or always says "A" (position bias)."""

    def __init__(self, mode):
        self.mode, self.calls = mode, 0

    def generate(self, reqs, desc=""):
        from judgeflow.models import Generation

        out = []
        for r in reqs:
            self.calls += 1
            text = r.messages[-1][1]
            a = text.split('Response A:\n"""\n')[1].split('\n"""')[0]
            b = text.split('Response B:\n"""\n')[1].split('\n"""')[0]
            v = "A" if self.mode == "A" else ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "TIE")
            out.append(Generation(f"Reason.\nVerdict: {v}", 10, 5, "stop"))
        return out

    def stats(self):
        return {"calls": self.calls}


def test_compare_with_oracle_asks_both_orders(tmp_path, model_dir):
    cfg = base_config(tmp_path, model_dir)
    qs = {"q0": {"question_id": "q0", "prompt": "P0"}, "q1": {"question_id": "q1", "prompt": "P1"}}
    gens = [{"policy": "base", "question_id": "q0", "sample_index": 0, "text": "short"},
            {"policy": "base", "question_id": "q1", "sample_index": 0, "text": "same"},
            {"policy": "mf", "question_id": "q0", "sample_index": 0, "text": "much longer answer"},
            {"policy": "mf", "question_id": "q1", "sample_index": 0, "text": "same"}]
    oracle = FakeOracle("longer")
    s = cfg.typed()
    comps = {c["question_id"]: c for c in ev.compare_with_oracle(gens, qs, s.evaluation, s.seed, oracle)}
    assert oracle.calls == 4  # two orders per comparison
    assert comps["q0"]["outcome"] == ev.WIN and comps["q1"]["outcome"] == ev.TIE
    assert comps["q0"]["policy_first"]["label"] == "A" and comps["q0"]["base_first"]["label"] == "B"
    biased = ev.compare_with_oracle(gens, qs, s.evaluation, s.seed, FakeOracle("A"))
    assert {c["outcome"] for c in biased} == {ev.INCONSISTENT}


@pytest.mark.slow
def test_evaluate_end_to_end_on_the_real_model(tmp_path, model_dir):
    """Base + one 'trained' policy (the base weights again) on one held-out question; judges on,
    the real model as an in-process (hf) oracle; a skipped variant is noted."""
    judging = {**PROMPT_JUDGES, "k": 1, "judges": [{**j, "max_new_tokens": 6} for j in PROMPT_JUDGES["judges"][:2]]}
    cfg = base_config(tmp_path, model_dir, evaluation={"oracle": "smollm2", "max_new_tokens": 12, "n_samples": 1,
                                                       "oracle_max_new_tokens": 8}, judging=judging,
                      refining={"tree_search": {"gates": [{"k": 1}, {"k": 2}]}}, oracle={"bon": {"j": [1, 2]}})
    q = {"question_id": "ifbench-x", "prompt": "Write a sentence about the sea. Use the word blue twice.",
         "criteria": [{"criterion_id": "generic:blue", "description": "Uses the word blue twice.", "kind": "generic"}]}
    held = tmp_path / "heldout.jsonl"
    held.write_text(json.dumps(q) + "\n")
    s1, s2 = tmp_path / "mf.json", tmp_path / "ff.json"
    s1.write_text(json.dumps({"skipped": False}))
    s2.write_text(json.dumps({"skipped": True, "reason": "ff.jsonl: 0 usable pair(s)"}))
    out = tmp_path / "evaluation"
    files = {}
    for pol, path, summ in [("base", str(model_dir), None), ("multi_feedback", str(model_dir), str(s1)),
                            ("full_feedback", "missing", str(s2))]:
        files[pol] = [str(out / f"{kind}-{pol}.jsonl") for kind in ("g", "v", "a")]
        _respond_and_judge(cfg, str(held), pol, path, summ, *files[pol], threads=2,
                           models=stage_models(STAGES["evaluate_responses"], cfg, {"policy": pol}, threads=2))
    assert (out / "g-full_feedback.jsonl").read_text() == ""  # skipped variant: empty outputs
    summary = _evaluate(cfg, str(held), ["multi_feedback", "full_feedback"], [str(s1), str(s2)],
                        [str(model_dir), "missing"], *[[f[k] for f in files.values()] for k in range(3)],
                        str(out / "c.jsonl"), str(out / "table.csv"), str(out / "evaluation.json"),
                        models=stage_models(STAGES["evaluate_policies"], cfg, threads=2))
    assert set(summary["policies"]) == {"base", "multi_feedback"} and "full_feedback" in summary["skipped"]
    assert any("full_feedback: not evaluated" in n for n in summary["notes"])
    gens = [json.loads(l) for p in ("base", "multi_feedback") for l in (out / f"g-{p}.jsonl").read_text().splitlines()]
    assert len(gens) == 2
    # the same weights and the same seed give the same draw: a paired design
    assert gens[0]["text"] == gens[1]["text"]
    # one criterion (the question's; the demo has no generic criteria) x two judges
    assert len((out / "v-base.jsonl").read_text().splitlines()) == 1 * 2
    comps = [json.loads(l) for l in (out / "c.jsonl").read_text().splitlines()]
    assert len(comps) == 1 and comps[0]["outcome"] in {ev.WIN, ev.LOSS, ev.TIE, ev.INCONSISTENT, ev.ABSTAIN}
    o = summary["oracle"]["per_policy"]["multi_feedback"]
    assert o["comparisons"] == 1
    table = (out / "table.csv").read_text().splitlines()
    assert table[0].startswith("policy,criterion_id,responses,judge_pass_rate")
    assert any(l.startswith("multi_feedback,(all),1,") for l in table)


def test_no_heldout_questions_and_all_variants_skipped_still_write_outputs(tmp_path, model_dir):
    cfg = base_config(tmp_path, model_dir, judging=PROMPT_JUDGES)
    held = tmp_path / "heldout.jsonl"
    held.write_text("")
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"skipped": True, "reason": "mf.jsonl: 0 usable pair(s)"}))
    out = tmp_path / "e"
    files = [str(out / f) for f in ("g.jsonl", "v.jsonl", "a.jsonl")]
    _respond_and_judge(cfg, str(held), "base", str(model_dir), None, *files,
                       models=stage_models(STAGES["evaluate_responses"], cfg, {"policy": "base"}))
    summary = _evaluate(cfg, str(held), ["multi_feedback"], [str(s)], ["m"], *[[f] for f in files],
                        str(out / "c.jsonl"), str(out / "t.csv"), str(out / "e.json"),
                        models=stage_models(STAGES["evaluate_policies"], cfg))
    assert summary["heldout_questions"] == 0 and summary["skipped"] == {"multi_feedback": "mf.jsonl: 0 usable pair(s)"}
    assert any("no held-out questions" in n for n in summary["notes"])
    assert (out / "t.csv").read_text().startswith("policy,criterion_id,responses")
    assert all((out / f).read_text() == "" for f in ("g.jsonl", "v.jsonl", "a.jsonl", "c.jsonl"))
