"""The model fit recovers parameters from data simulated by the model; Best-of-N empirical values,
bounds and the independent-judge model (which correlated judges break)."""
import math

import numpy as np
import pytest

from judgeflow.oracle.tp import model
from judgeflow.oracle.tp.bon import bon_grid, judge_rates, model_bon, question_values
from judgeflow.oracle.tp.fit import check_records, fit_model, log_likelihood, simulate_records

TRUE = {"a": 2.0, "b": 2.0, "p0": 0.15, "p1": 0.85}


def test_fit_recovers_parameters_from_model_data():
    recs = simulate_records(4000, 10, **TRUE, label_fraction=0.8, seed=3)
    f = fit_model(recs)
    assert f["ok"] and f["records"] == 4000 and 0 < f["labelled"] < 4000
    assert 0 < f["p0"] < f["p1"] < 1 and f["a"] > 0 and f["b"] > 0
    assert f["p0"] == pytest.approx(TRUE["p0"], abs=0.04)
    assert f["p1"] == pytest.approx(TRUE["p1"], abs=0.15)          # p1 trades off against the prior
    assert f["a"] / (f["a"] + f["b"]) == pytest.approx(0.5, abs=0.07)
    true_curve = model.tp_curve(6, **TRUE)
    fit_curve = model.tp_curve(6, a=f["a"], b=f["b"], p0=f["p0"], p1=f["p1"])
    assert np.max(np.abs(np.subtract(true_curve, fit_curve))) < 0.03
    # it is a maximum: no worse than the truth, better than a wrong judge
    assert f["loglik"] >= log_likelihood(recs, **TRUE) - 1e-6
    assert f["loglik"] > log_likelihood(recs, a=2.0, b=2.0, p0=0.3, p1=0.85) + 10


def test_the_fit_says_when_the_constraint_p0_below_p1_binds():
    """Judges that accept wrong draws more often than right ones (p0 > p1): the constrained fit sits on its
    boundary, and the fit says so instead of silently reporting p0 < p1 (issue 23)."""
    worse = simulate_records(3000, 8, a=2.0, b=2.0, p0=0.8, p1=0.4, seed=5)
    f = fit_model(worse)
    assert f["ok"] and f["p0"] < f["p1"]  # the constrained estimates
    assert f["constraint_binds"] and f["p0_free"] > f["p1_free"] and f["loglik_free"] > f["loglik"]
    assert f["p0_free"] == pytest.approx(0.8, abs=0.08)
    good = fit_model(simulate_records(3000, 8, **TRUE, seed=5))
    assert not good["constraint_binds"] and good["loglik_free"] == pytest.approx(good["loglik"], abs=0.05)


def test_fit_without_labels_or_records_says_why():
    assert fit_model([])["ok"] is False
    recs = [{"n_accept": 2, "n_max": 4, "oracle": None}, {"n_accept": None, "n_max": 4, "oracle": None}]
    out = fit_model(recs)
    assert out["ok"] is False and "not identified" in out["message"] and out["censored"] == 1


@pytest.mark.parametrize("rec,match", [({"n_accept": 5, "n_max": 4, "oracle": 1}, "record 0: n_accept"),
                                       ({"n_accept": 1, "n_max": 0, "oracle": 1}, "record 0: n_max"),
                                       ({"n_accept": 1, "n_max": 4, "oracle": "yes"}, "record 0: oracle")])
def test_bad_records_are_named(rec, match):
    with pytest.raises(ValueError, match=match):
        check_records([rec])


def test_censored_and_unlabelled_likelihood_terms():
    a, b, p0, p1 = 1.5, 2.5, 0.2, 0.7
    recs = [{"n_accept": None, "n_max": 3, "oracle": None}, {"n_accept": 2, "n_max": 3, "oracle": None},
            {"n_accept": 1, "n_max": 3, "oracle": 0}]
    expect = (model.log_no_accept(3, a, b, p0, p1) + math.log(model.p_first_accept(2, a, b, p0, p1))
              + model.log_joint(1, 0, a, b, p0, p1))
    assert log_likelihood(recs, a, b, p0, p1) == pytest.approx(expect, rel=1e-12)


def _sim_bon(Q, D, J, a, b, p0, p1, correlated, seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, Q)
    x = (rng.random((Q, D)) < p[:, None]).astype(int)
    if correlated:   # every judge copies one verdict: perfectly correlated given X
        y = np.repeat((rng.random((Q, D)) < np.where(x == 1, p1, p0))[:, :, None], J, axis=2)
    else:
        y = rng.random((Q, D, J)) < np.where(x == 1, p1, p0)[:, :, None]
    return [[{"judges": [int(v) for v in y[q, d]], "oracle": int(x[q, d])} for d in range(D)] for q in range(Q)]


def test_question_values_by_hand():
    qs = [[{"judges": [1, 0, None], "oracle": 0}, {"judges": [1, 1, 1], "oracle": 1}],
          [{"judges": [0, 0, 0], "oracle": 1}, {"judges": [None, 1, 0], "oracle": 0}],
          [{"judges": [1, 1, 0], "oracle": 1}]]                        # one draw only: left out of N = 2
    any_, tp = question_values(qs, N=2, J=3, k=1)
    assert any_.tolist() == [1.0, 1.0] and tp.tolist() == [0.5, 0.0]
    any_, tp = question_values(qs, N=2, J=3, k=2)
    assert any_.tolist() == [1.0, 0.0] and tp[0] == 1.0 and math.isnan(tp[1])
    any_, tp = question_values(qs, N=1, J=1, k=1)
    assert any_.tolist() == [1.0, 0.0, 1.0] and tp[0] == 0.0 and tp[2] == 1.0
    rates = judge_rates(qs, J=3)
    assert rates["p1"] == pytest.approx(5 / 9) and rates["p0"] == pytest.approx(2 / 4)   # abstains left out


def test_acceptance_is_k_of_j_per_criterion_then_all_criteria():
    """The workflow's rule (judging.aggregate), not k-of-J over the judges' draw-level verdicts: judge A
    says YES on c1 only and B on c2 only; 1-of-2 per criterion accepts, though no judge accepts the
    draw whole. A question with fewer criteria: the ones it lacks always pass."""
    split = {"judges": [[1, 0], [0, 1]], "oracle": 1}
    both_c1 = {"judges": [[1, 1], [1, 0]], "oracle": 0}
    one_criterion = {"judges": [[1, 0]], "oracle": 1}
    qs = [[split], [both_c1], [one_criterion]]
    any_, _ = question_values(qs, N=1, J=2, k=1)
    assert any_.tolist() == [1.0, 1.0, 1.0]
    any_, _ = question_values(qs, N=1, J=2, k=2)
    assert any_.tolist() == [0.0, 0.0, 0.0]          # c2 of both_c1 has one YES; one_criterion has one
    any_, _ = question_values(qs, N=1, J=1, k=1)     # judge A alone: NO on c2 of split
    assert any_.tolist() == [0.0, 1.0, 1.0]
    # judge_rates read each judge's draw-level verdict (YES on every criterion): A and B accept `split` never
    assert judge_rates([[split]], J=2)["p1"] == 0.0
    # a flat list is one criterion: the same values as [[...]]
    flat = [[{"judges": [1, 0, None], "oracle": 0}], [{"judges": [1, 1, 1], "oracle": 1}]]
    nested = [[{"judges": [d["judges"]], "oracle": d["oracle"]} for d in q] for q in flat]
    for k in (1, 2, 3):
        assert question_values(flat, 1, 3, k)[0].tolist() == question_values(nested, 1, 3, k)[0].tolist()


def test_independent_judges_agree_with_the_model_and_bounds_cover():
    qs = _sim_bon(2500, 4, 3, 2.0, 2.0, 0.3, 0.8, correlated=False, seed=1)
    rows = bon_grid(qs, model_params={"a": 2.0, "b": 2.0}, delta=0.05)
    assert len(rows) == 4 * (1 + 2 + 3)
    inside = 0
    for r in rows:
        truth = model_bon(r["N"], r["J"], r["k"], 2.0, 2.0, 0.3, 0.8)
        assert abs(r["tp"] - r["model_tp"]) < 0.03 and abs(r["p_any"] - r["model_p_any"]) < 0.03
        inside += (r["tp_lower"] <= truth["tp"] <= r["tp_upper"]) + \
            (r["p_any_lower"] <= truth["p_any"] <= r["p_any_upper"])
        assert r["bound"] == "hoeffding" and r["questions"] == 2500
    assert inside == 2 * len(rows)


def test_correlated_judges_break_the_independent_judge_model():
    qs = _sim_bon(2500, 4, 3, 2.0, 2.0, 0.3, 0.8, correlated=True, seed=2)
    rows = {(r["N"], r["J"], r["k"]): r for r in bon_grid(qs, Js=[1, 3], model_params={"a": 2.0, "b": 2.0})}
    one, unanimous = rows[(1, 1, 1)], rows[(1, 3, 3)]
    assert abs(one["tp"] - one["model_tp"]) < 0.03                     # a single judge: fine
    # 3-of-3 copies of one verdict is still one judge; the model believes the errors multiply
    assert unanimous["tp"] == pytest.approx(one["tp"], abs=1e-12)
    assert unanimous["model_tp"] - unanimous["tp"] > 0.15
    assert not unanimous["tp_lower"] <= unanimous["model_tp"] <= unanimous["tp_upper"]
    assert rows[(4, 3, 1)]["model_p_any"] - rows[(4, 3, 1)]["p_any"] > 0.03


def test_betting_bounds_and_bad_input():
    qs = _sim_bon(300, 2, 2, 2.0, 2.0, 0.3, 0.8, correlated=False, seed=4)
    hb = bon_grid(qs, Ns=[2], Js=[2], ks=[1], bound="hoeffding")[0]
    bb = bon_grid(qs, Ns=[2], Js=[2], ks=[1], bound="betting")[0]
    assert bb["bound"] == "betting" and bb["tp"] == hb["tp"]
    assert bb["tp_lower"] < bb["tp"] < bb["tp_upper"]
    with pytest.raises(ValueError, match="bound must be"):
        bon_grid(qs, bound="wilson")
    with pytest.raises(ValueError, match="question 0, draw 0, criterion 0, judge 1"):
        bon_grid([[{"judges": [1, 2], "oracle": 1}]])
    with pytest.raises(ValueError, match="question 0, draw 0, criterion 1: 1 judge verdicts, expected 2"):
        bon_grid([[{"judges": [[1, 0], [1]], "oracle": 1}]])
    with pytest.raises(ValueError, match="k <= J"):
        model_bon(1, 2, 3, 1.0, 1.0, 0.2, 0.8)
