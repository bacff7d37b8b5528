"""The oracle stage's Best-of-N and TP(N) outputs (issue 23, items 4 and 5): Best-of-N accepts by the
workflow's own rule (k-of-J per criterion, then all criteria), keeps the judges' top-scored draw with
seeded random tie-breaks, TP per extra draw is fitted with its interval, the TP(N) curve's interval
holds for how its labels were chosen, and the figures are PNGs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from judgeflow.judging.judges import aggregate
from judgeflow.oracle import analysis as oa
from judgeflow.oracle.draws import criterion_verdicts, draw_tiebreak, judge_accepts, judges_score
from judgeflow.oracle.tp.bon import kept_by_score, kept_grid, question_values
from judgeflow.oracle.tp.intervals import betting, clopper_pearson
from judgeflow.workflow.settings import Judging

PNG = b"\x89PNG\r\n\x1a\n"
JUDGING = Judging.model_validate({"k": 1, "judges": [{"id": "A", "model": "m"}, {"id": "B", "model": "m"}],
                                  "generic_criteria": []})
QUESTION = {"question_id": "q", "prompt": "?", "criteria": [{"criterion_id": "c1", "description": "one"},
                                                            {"criterion_id": "c2", "description": "two"}]}


def _verdict(criterion, judge, label, p_yes=None):
    return {"response_id": "q/d1", "refinement_id": None, "criterion_id": criterion, "judge_id": judge,
            "label": label, "p_yes": p_yes}


def _draw(question_id, index, score, oracle, tiebreak=None, seed=0):
    return {"draw_id": f"{question_id}/d{index}", "question_id": question_id, "draw": index, "score": score,
            "oracle": oracle, "judges": [[1]],
            "tiebreak": draw_tiebreak(seed, question_id, index) if tiebreak is None else tiebreak}


# ---------------------------------------------------------------- acceptance: the workflow's rule


def test_best_of_n_accepts_a_draw_by_k_of_j_per_criterion_as_the_workflow_does():
    """Judge A says YES on c1 only, judge B on c2 only. The workflow (judging.aggregate, k = 1 of 2)
    accepts: each criterion has one YES. The old Best-of-N rule (each judge's draw-level verdict, then
    k-of-J over judges) rejected it: neither judge says YES on every criterion."""
    verdicts = [_verdict("c1", "A", "yes", 0.9), _verdict("c2", "A", "no", 0.2),
                _verdict("c1", "B", "no", 0.3), _verdict("c2", "B", "yes", 0.8)]
    item = {"item_id": "q/d1", "question_id": "q", "response_id": "q/d1", "refinement_id": None}
    [workflow] = aggregate(verdicts, [item], {"q": QUESTION}, JUDGING)
    per_judge = judge_accepts(verdicts, QUESTION, JUDGING)
    assert workflow["accepted"] and not any(per_judge.values())     # the two rules differ here
    record = {"draw_id": "q/d1", "question_id": "q", "draw": 1, "accepted": workflow["accepted"], "k": 1,
              "verdicts": criterion_verdicts(verdicts, QUESTION, JUDGING), "score": judges_score(verdicts),
              "tiebreak": 0.5}
    assert record["verdicts"] == {"c1": [1, 0], "c2": [0, 1]} and record["score"] == pytest.approx(0.55)
    qs = oa.bon_questions([record], {"q/d1": {"label": 1}}, ["A", "B"], max_draw=1)
    p_any, tp = question_values(qs, N=1, J=2, k=1)
    assert p_any.tolist() == [1.0] and tp.tolist() == [1.0]           # the workflow's: accepted
    oa.check_acceptance(qs, [record], J=2, k=1)                      # agrees with the draw's `accepted`
    with pytest.raises(ValueError, match="q/d1: the workflow's accepted is False"):
        oa.check_acceptance(qs, [{**record, "accepted": False}], J=2, k=1)


def test_criteria_counts_may_differ_and_missing_verdicts_are_not_yes():
    one = {**QUESTION, "question_id": "r", "criteria": QUESTION["criteria"][:1]}
    verdicts = [_verdict("c1", "A", "yes", 0.9), _verdict("c1", "B", "abstain")]
    assert criterion_verdicts(verdicts, one, JUDGING) == {"c1": [1, None]}
    assert criterion_verdicts(verdicts, QUESTION, JUDGING) == {"c1": [1, None], "c2": [None, None]}
    assert judges_score(verdicts) is None                            # a verdict without P(YES)
    records = [{"draw_id": "q/d1", "question_id": "q", "draw": 1, "verdicts": {"c1": [1, 1], "c2": [1, 0]}},
               {"draw_id": "r/d1", "question_id": "r", "draw": 1, "verdicts": {"c1": [1, 1]}}]
    qs = oa.bon_questions(records, {"q/d1": {"label": 0}, "r/d1": {"label": 1}}, ["A", "B"], 1)
    assert question_values(qs, 1, 2, 2)[0].tolist() == [0.0, 1.0]   # r's missing c2 always passes
    with pytest.raises(ValueError, match="draw q/d1 has no per-criterion 'verdicts'"):
        oa.bon_questions([{"draw_id": "q/d1", "question_id": "q", "draw": 1}], {}, ["A", "B"], 1)
    with pytest.raises(ValueError, match="the config has 3"):
        oa.bon_questions(records, {}, ["A", "B", "C"], 1)


# ------------------------------------------------------------------------------ kept by score


def test_kept_by_score_takes_the_top_score_of_the_first_n():
    q = [_draw("q", 1, 0.2, 0), _draw("q", 2, 0.9, 1), _draw("q", 3, 0.95, 0)]
    assert kept_by_score(q, 1)["draw"] == 1
    assert kept_by_score(q, 2)["draw"] == 2
    assert kept_by_score(q, 3)["draw"] == 3
    with pytest.raises(ValueError, match="fewer than N=4"):
        kept_by_score(q, 4)


def test_ties_are_broken_at_random_reproducibly_by_seed_and_question():
    picks = set()
    for seed in range(40):
        q = [_draw("q", 1, 0.1, 0, seed=seed), _draw("q", 2, 0.8, 1, seed=seed), _draw("q", 3, 0.8, 0, seed=seed)]
        pick = kept_by_score(q, 3)["draw"]
        assert pick in (2, 3)                                            # never the lower score
        q_again = [_draw("q", i + 1, d["score"], d["oracle"], seed=seed) for i, d in enumerate(q)]
        assert kept_by_score(q_again, 3)["draw"] == pick                 # the same seed: the same pick
        picks.add(pick)
    assert picks == {2, 3}                                               # both tied draws get kept
    by_question = {kept_by_score([_draw(f"q{i}", 1, 0.5, 0), _draw(f"q{i}", 2, 0.5, 1)], 2)["draw"]
                   for i in range(40)}
    assert by_question == {1, 2}
    assert draw_tiebreak(7, "q", 2) == draw_tiebreak(7, "q", 2) != draw_tiebreak(8, "q", 2)


def test_kept_grid_clopper_pearson_over_questions_and_the_judges_score():
    qs = []
    for i in range(30):   # the later draw scores higher and fails the oracle on 2 of 3 questions
        qs.append([_draw(f"q{i}", 1, 0.5, 1), _draw(f"q{i}", 2, 0.9, int(i % 3 == 0))])
    qs.append([_draw("unscored", 1, None, 1), _draw("unscored", 2, 0.9, 1)])   # left out of every N
    qs.append([_draw("abstain", 1, 0.1, 1), _draw("abstain", 2, 0.2, None)])   # out of N = 2 only
    rows = {r["N"]: r for r in kept_grid(qs, [1, 2], delta=0.05)}
    assert rows[1]["questions"] == 31 and rows[1]["oracle_pass"] == 1.0 and rows[1]["left_out"] == 1
    assert rows[2]["questions"] == 30 and rows[2]["oracle_abstained"] == 1
    assert rows[2]["oracle_pass"] == pytest.approx(10 / 30)
    assert (rows[2]["lower"], rows[2]["upper"]) == pytest.approx(clopper_pearson(10, 30, 0.05))
    assert rows[1]["judge_score"] == pytest.approx((30 * 0.5 + 0.1) / 31)
    assert rows[2]["judge_score"] == pytest.approx(0.9)


def test_bon_kept_rows_carry_the_random_accepted_draw_at_the_workflow_k(tmp_path):
    qs = [[{**_draw(f"q{i}", 1, 0.4, 1), "judges": [[1, 0]]}, {**_draw(f"q{i}", 2, 0.7, 0), "judges": [[1, 1]]}]
          for i in range(12)]
    rows = oa.bon_kept_rows(qs, [1, 2], 0.05, J=2, k=2)
    assert [r["oracle_pass"] for r in rows] == [1.0, 0.0]              # the oracle falls as the score rises
    assert [r["judge_score"] for r in rows] == pytest.approx([0.4, 0.7])
    assert rows[0]["random_accepted_tp"] is None and rows[1]["random_accepted_tp"] == 0.0  # 2-of-2: draw 2 only
    assert rows[1]["random_accepted_questions"] == 12 and rows[1]["k"] == 2
    out = tmp_path / "bon_kept.png"
    oa.plot_bon_kept(rows, str(out), "Best-of-N kept")
    assert out.read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- TP per extra draw


def _decreasing(n_questions=600, seed=0):
    """One label per question at its N in 1..5, TP(N) = 0.9 - 0.1 N (slope -0.1)."""
    rng = np.random.default_rng(seed)
    ns = rng.integers(1, 6, n_questions)
    return {f"q{i}/d{n}": {"n": int(n), "label": int(rng.random() < 0.9 - 0.1 * n)} for i, n in enumerate(ns)}


def test_the_slope_of_a_decreasing_tp_is_negative_and_its_interval_covers_the_truth():
    t = oa.tp_trend(_decreasing(), 0.05, oa.labels_used(True))
    assert t["reason"] is None and t["n"] == 600 and t["distinct_n"] == 5 and t["confidence"] == 0.95
    assert t["lower"] < -0.1 < t["upper"] < 0 and t["slope"] < 0 and t["p_value"] < 0.001
    assert t["odds_ratio"] < t["odds_ratio_upper"] < 1 and t["labels"] == "every accepted draw"
    assert "HC3" in t["method"] and "TP per extra draw -0." in oa.trend_text(t)
    # HC3 by hand: (X'X)^-1 X' diag(e^2 / (1-h)^2) X (X'X)^-1
    pts = [(v["n"], v["label"]) for v in _decreasing().values()]
    X = np.column_stack([np.ones(len(pts)), [p[0] for p in pts]])
    y = np.array([p[1] for p in pts], float)
    inv = np.linalg.inv(X.T @ X)
    e = y - X @ (inv @ X.T @ y)
    h = np.einsum("ij,jk,ik->i", X, inv, X)
    cov = inv @ (X.T * (e / (1 - h)) ** 2) @ X @ inv
    assert t["se"] == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)


def test_the_slope_is_null_with_its_reason_on_too_few_labels_or_n():
    labels = _decreasing(9)
    assert "fewer than 10" in oa.tp_trend(labels, 0.05, oa.STRATEGY_LABELS)["reason"]
    two_n = {k: {**v, "n": 1 + v["n"] % 2} for k, v in _decreasing(50).items()}
    t = oa.tp_trend(two_n, 0.05, oa.STRATEGY_LABELS)
    assert t["slope"] is None and "2 distinct N, fewer than 3" in t["reason"]
    assert t["labels"] == "the strategy's labels: chosen sequentially by N, not a random sample"
    with_abstains = {**_decreasing(9), "x": {"n": 3, "label": None}}  # an abstain is no label
    assert oa.tp_trend(with_abstains, 0.05, "x")["n"] == 9
    assert "none (" in oa.trend_text(t)


# --------------------------------------------------------------- the TP(N) curve's interval


def test_the_curve_interval_holds_for_how_the_labels_were_chosen(tmp_path):
    assert oa.curve_interval(True, "clopper_pearson") == "clopper_pearson"
    assert oa.curve_interval(False, "clopper_pearson") == "betting"
    assert oa.interval_note("clopper_pearson", 0.05, True, "fixed_sequence") == \
        "pointwise 95% Clopper-Pearson; every accepted draw labelled"
    note = oa.interval_note("betting", 0.05, False, "fixed_sequence")
    assert note.startswith("anytime-valid 95% betting; labels chosen sequentially by the strategy")
    assert "proxy" in oa.interval_note("betting", 0.05, False, "prediction_powered")
    draws = [{"draw_id": f"q{i}/d1", "draw": 1, "first_accept": True} for i in range(20)]
    labels = {d["draw_id"]: {"n": 1, "label": int(i < 15)} for i, d in enumerate(draws)}
    rows = oa.tp_curve_rows(draws, labels, 2, "betting", 0.05, None, {"nstar": 1}, note)
    assert rows[0]["interval"] == "betting" and rows[0]["interval_note"] == note
    assert (rows[0]["lower"], rows[0]["upper"]) == pytest.approx(betting(15, 20, 0.05))
    assert (rows[0]["lower"], rows[0]["upper"]) != pytest.approx(clopper_pearson(15, 20, 0.05))
    out = tmp_path / "tp_curve.png"
    oa.plot_tp_curve(rows, 0.8, 1, str(out), "TP(N)", oa.tp_trend(_decreasing(), 0.05, oa.STRATEGY_LABELS))
    assert out.read_bytes()[:8] == PNG
    oa.plot_tp_curve(rows, 0.8, 0, str(out), "TP(N)", oa.tp_trend({}, 0.05, oa.STRATEGY_LABELS))  # no slope
    assert out.read_bytes()[:8] == PNG


# --------------------------------------------------------------------- the stages, as the workflow runs them


def _stage_inputs(tmp_path, config):
    """40 verifiable questions ("no commas"), 4 draws each with per-criterion verdicts of the config's
    judges, accepted by the workflow's k-of-J; a response with a comma fails the verifier."""
    import json

    from judgeflow.oracle.draws import draw_id
    from judgeflow.workflow.io import write_jsonl

    judges, k = [j["id"] for j in config["judging"]["judges"]], config["judging"]["k"]
    crit = {"criterion_id": "punctuation:no_comma", "description": "no commas", "kind": "instruction",
            "instruction_id": "punctuation:no_comma", "kwargs": {}, "registry": "ifeval"}
    rng = np.random.default_rng(3)
    questions, draws = [], []
    for i in range(40):
        qid = f"q{i}"
        questions.append({"question_id": qid, "prompt": "Answer without commas.", "criteria": [crit]})
        first = None
        for r in range(1, 5):
            x = int(rng.random() < 0.8 - 0.1 * r)
            votes = [int(rng.random() < (0.8 if x else 0.4)) for _ in judges]
            accepted = sum(votes) >= k
            first = first or (r if accepted else None)
            draws.append({"draw_id": draw_id(qid, r), "question_id": qid, "draw": r, "model": "m",
                          "text": "fine answer" if x else "one, two", "accepted": accepted, "failed": [], "k": k,
                          "verdicts": {crit["criterion_id"]: votes},
                          "judge_accepts": dict(zip(judges, map(bool, votes))),
                          "score": round(float(np.mean(votes)) * 0.8 + 0.1 * rng.random(), 6),
                          "tiebreak": draw_tiebreak(config["seed"], qid, r), "first_accept": first == r})
        for d in draws[-4:]:
            d.update(n_accept=first, n_max=config["draws"]["n_max"])
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "kept.jsonl", questions)
    write_jsonl(tmp_path / "in" / "draws.jsonl", draws)
    (tmp_path / "in" / "fit.json").write_text(json.dumps({"ok": False}))
    return {"kept": str(tmp_path / "in" / "kept.jsonl"), "draws": [str(tmp_path / "in" / "draws.jsonl")]}


def test_the_stages_write_bon_kept_and_the_tp_trend_reading_only_what_they_declare(tmp_path):
    import csv
    import json

    from judgeflow.workflow import settings as st
    from judgeflow.workflow.pipeline import run_stage

    from conftest import ROOT

    def config(label_all):
        c = st.load(ROOT / "config" / "config.yaml", overrides={
            "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
            "benchmarks_dir": str(tmp_path / "benchmarks"), "cache_dir": str(tmp_path / "cache"),
            "oracle": {"labeller": "verifier", "label_all_accepted": label_all, "interval": "clopper_pearson",
                       "strategy": "fixed_sequence", "replay_runs": 0}})
        c["oracle"]["strategy_options"] = {}  # the demo's are prediction_powered's
        return c

    inp = _stage_inputs(tmp_path, config(True))
    out = tmp_path / "out"
    run_stage("best_of_n", {**inp, "fit": str(tmp_path / "in" / "fit.json")},
              {"labels": str(out / "bon_labels.jsonl"), "grid": str(out / "bon_grid.csv"),
               "plot": str(out / "bon_grid.png"), "kept": str(out / "bon_kept.csv"),
               "kept_plot": str(out / "bon_kept.png")}, config(True))
    kept = list(csv.DictReader((out / "bon_kept.csv").open()))
    assert [r["N"] for r in kept] == ["1", "2", "3", "4"] and all(r["questions"] == "40" for r in kept)
    assert all(float(r["judge_score"]) > 0 and r["random_accepted_tp"] != "" for r in kept)
    assert (out / "bon_kept.png").read_bytes()[:8] == PNG
    for label_all, kind in ((True, "clopper_pearson"), (False, "betting")):
        o = tmp_path / f"label-{label_all}"
        run_stage("label_oracle", inp, {"labels": str(o / "labels.jsonl"), "nstar": str(o / "nstar.json"),
                                        "curve": str(o / "tp.csv"), "plot": str(o / "tp.png"),
                                        "fit": str(o / "fit.json")}, config(label_all))
        rows = list(csv.DictReader((o / "tp.csv").open()))
        assert {r["interval"] for r in rows} == {kind}
        trend = json.loads((o / "nstar.json").read_text())["tp_trend"]
        assert trend["labels"] == oa.labels_used(label_all) and trend["n"] > 0
        assert (o / "tp.png").read_bytes()[:8] == PNG
    assert rows[0]["interval_note"].startswith("anytime-valid 95% betting; labels chosen sequentially")


def test_the_kept_draw_at_n_is_compared_with_n_1_on_the_same_questions():
    """Best-of-N's kept draw at each N against the smallest N, paired by question: the mean change,
    its question-bootstrap interval and McNemar's exact p-value from the discordant questions."""
    from judgeflow.oracle.tp.bon import paired_change

    before = [1] * 30 + [0] * 30 + [1] * 5 + [None]
    after = [1] * 30 + [0] * 30 + [0] * 5 + [1]  # 5 lost, none gained; the unlabelled question left out
    out = paired_change(before, after, 0.05)
    assert (out["gained"], out["lost"]) == (0, 5) and out["change"] == -5 / 65
    assert out["change_lower"] < out["change"] < out["change_upper"] <= 0
    assert abs(out["mcnemar_p"] - 2 * 0.5 ** 5) < 1e-12  # exact binomial on the 5 discordant questions
    same = paired_change([1, 0, 1], [1, 0, 1], 0.05)
    assert same["change"] == 0 and same["mcnemar_p"] == 1.0 and same["gained"] == same["lost"] == 0
