"""Prediction-powered certification, the indifference margin, finite pools and the planner."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from judgeflow.oracle.tp.plan import plan
from judgeflow.oracle.tp.simulate import pool_sizes, simulate, synthetic_proxy, true_nstar
from judgeflow.oracle.tp.strategies import make_strategy

S1 = [round(0.965 - 0.03 * n, 10) for n in range(1, 16)]


def _drive(s, labels, proxies=None):
    """Feed fixed per-n label sequences (and proxy scores) to a strategy until it stops."""
    pos = dict.fromkeys(labels, 0)
    while plan_ := s.propose_counts(dict.fromkeys(labels, 10 ** 6)):
        for n, k in plan_.items():
            xs = labels[n][pos[n]:pos[n] + k]
            if s.needs_proxy:
                f = proxies[n][pos[n]:pos[n] + k]
                ask = s.select(n, f)
                pos[n] += s.update_draws(n, f, ask, [int(v) for v in xs])
            else:
                s.update_counts(n, int(xs.sum()), int(k - xs.sum()))
                pos[n] += k
    return s


@pytest.mark.parametrize("seed", range(4))
def test_prediction_powered_without_proxy_use_is_exactly_fixed_sequence(seed):
    """While it labels every draw (pi = 1, here: warmup never ends) Z = X, and its mixture wealth is the
    fixed sequence's: the same labels give the same decisions at the same label."""
    rng = np.random.default_rng(seed)
    tp = [0.935, 0.905, 0.875, 0.845, 0.815, 0.785]
    labels = {n: (rng.random(100_000) < tp[n - 1]).astype(int) for n in range(1, 7)}
    a = _drive(make_strategy("fixed_sequence", n_max=6, threshold=0.8, delta=0.05, budget=10**7), labels)
    b = _drive(make_strategy("prediction_powered", n_max=6, threshold=0.8, delta=0.05, budget=10**7,
                             warmup=10**9), labels, {n: np.full(100_000, 0.5) for n in labels})
    assert (a.nstar(), a.calls, a.stop_reason, a.labels) == (b.nstar(), b.calls, b.stop_reason, b.labels)


@pytest.mark.parametrize("auc,shift", [(0.9, 0.0), (0.9, 1.5), (0.5, 0.0)])
def test_prediction_powered_error_at_the_boundary_is_at_most_delta(auc, shift):
    """TP(1) = T exactly (a null): certifying it is an error, whatever the proxy. No futility and no
    margin, so the test spends its whole level within the budget."""
    r = simulate([0.8], 0.8, 0.2, "prediction_powered", runs=200, seed=5, budget=1500, proxy_auc=auc,
                 proxy_shift=shift, futility_level=None, min_effect=None, warmup=100)
    assert r["true_nstar"] == 0
    assert r["error_rate"] <= 0.2 + 2.5 * math.sqrt(0.2 * 0.8 / 200), r


def test_a_good_proxy_saves_calls_and_a_useless_one_costs_little():
    curve = [0.84]
    fs = simulate(curve, 0.8, 0.05, "fixed_sequence", runs=60, seed=2)
    good = simulate(curve, 0.8, 0.05, "prediction_powered", runs=60, seed=2, proxy_auc=0.95)
    bad = simulate(curve, 0.8, 0.05, "prediction_powered", runs=60, seed=2, proxy_auc=0.5)
    assert fs["true_nstar"] == 1 and good["error_rate"] == 0 and bad["error_rate"] == 0
    assert good["median_calls"] < 0.8 * fs["median_calls"], (good["median_calls"], fs["median_calls"])
    assert bad["median_calls"] < 1.25 * fs["median_calls"], (bad["median_calls"], fs["median_calls"])


def test_bad_proxy_scores_name_the_draw():
    s = make_strategy("prediction_powered", n_max=2, threshold=0.8, delta=0.05)
    s.propose_counts({1: 10, 2: 10})
    for bad in (1.2, float("nan"), -0.1):
        with pytest.raises(ValueError, match=r"draw 3 at n=1 is .*not a number in \[0, 1\]"):
            s.select(1, [0.5, 0.5, 0.5, bad])
    with pytest.raises(TypeError, match="needs proxy scores"):
        s.update(1, 1)


def test_synthetic_proxy_has_the_asked_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = (rng.random(40_000) < 0.7).astype(int)
    for auc in (0.5, 0.7, 0.9):
        assert abs(roc_auc_score(x, synthetic_proxy(x, auc, 0.0, rng)) - auc) < 0.01
    shifted = synthetic_proxy(x, 0.9, 1.5, rng)
    assert shifted.mean() > 0.85 and abs(roc_auc_score(x, shifted) - 0.9) < 0.01  # miscalibrated, same AUC


def test_true_nstar_counts_tp_equal_to_t_as_failing():
    """Regression: the null is TP(n) <= T, so TP(n) = T ends the true N* (it used to pass)."""
    assert true_nstar([0.9, 0.8, 0.9], 0.8) == 1
    assert true_nstar([round(0.95 - 0.03 * n, 10) for n in range(1, 16)], 0.8) == 4


def test_indifference_margin_bounds_the_cost_at_the_boundary():
    """TP(1) = T: without the margin a run can spend the whole budget; with it every run stops well before."""
    off = simulate([0.8], 0.8, 0.05, "fixed_sequence", runs=100, seed=3, budget=200_000, min_effect=None)
    on = simulate([0.8], 0.8, 0.05, "fixed_sequence", runs=100, seed=3, budget=200_000)
    assert off["budget_exhausted_rate"] > 0.1
    assert on["budget_exhausted_rate"] == 0 and on["undecided_rate"] > 0.3 and on["max_calls"] < 60_000
    assert on["error_rate"] <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / 100)
    with pytest.raises(ValueError, match="min_effect"):
        make_strategy("fixed_sequence", n_max=1, threshold=0.8, delta=0.05, min_effect=0.3)


def test_finite_pools_exhaust_and_say_so():
    r = simulate(S1[:5], 0.8, 0.05, "fixed_sequence", runs=30, seed=0, pool=300)
    assert r["exhausted_rate"] > 0.9 and r["stop_reasons"].get("exhausted", 0) == round(30 * r["exhausted_rate"])
    rng = np.random.default_rng(0)
    sizes = pool_sizes(3, rng, questions=10_000, accept_probs=[0.5, 0.25, 0.125])
    assert sum(sizes.values()) <= 10_000 and sizes[1] > sizes[2] > sizes[3] > 0
    with pytest.raises(ValueError, match="one size per n"):
        pool_sizes(3, rng, pool=[1, 2])


def test_plan_finds_enough_questions_and_refuses_an_impossible_target():
    out = plan(2.0, 0.3, 0.2, 0.9, threshold=0.8, delta=0.05, n_max=4, target=2, runs=10, seed=0)
    row = out["plans"][0]
    assert out["true_nstar"] == 3 and row["questions"] and row["certify_rate"] >= 0.8 and row["median_calls"] > 0
    fewer = simulate(out["curve"][:2], 0.8, 0.05, "fixed_sequence", runs=10, seed=0, questions=row["questions"] // 8,
                     accept_probs=out["accept_probs"])
    assert np.mean(np.asarray(fewer["nstar"]) >= 2) < 0.8    # an eighth of the questions is not enough
    with pytest.raises(ValueError, match="N\\* is 3 < target 5"):
        plan(2.0, 0.3, 0.2, 0.9, threshold=0.8, delta=0.05, n_max=6, target=5)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "judgeflow.workflow.cli", *args], capture_output=True, text=True)


def test_cli_proxy_side_by_side_pools_and_bad_input():
    p = _cli("oracle-budget", "--curve", "0.9,0.86", "--threshold", "0.8", "--delta", "0.05", "--runs", "8",
             "--proxy-auc", "0.9", "--no-runs", "--questions", "20000", "--accept-probs", "0.5,0.3")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc["strategies"]) == {"fixed_sequence", "prediction_powered (proxy AUC 0.9)"}
    assert "median calls" in p.stderr and doc["proxy_vs_no_proxy"]["median_calls_ratio"] > 0
    for bad, msg in ((["--proxy-auc", "1.2"], "--proxy-auc must be a number in [0.5, 1)"),
                     (["--pool-sizes", "10"], "needs 2 sizes"),
                     (["--questions", "10"], "needs --accept-probs or the model"),
                     (["--strategy", "prediction_powered"], "needs proxy scores")):
        q = _cli("oracle-budget", "--curve", "0.9,0.86", "--threshold", "0.8", "--delta", "0.05", *bad)
        assert q.returncode == 2 and msg in q.stderr, (bad, q.stderr)
    q = _cli("plan", "--a", "2", "--b", "0.3", "--p0", "0.2", "--p1", "0.9", "--threshold", "0.8", "--delta",
             "0.05", "--n-max", "6", "--target", "5")
    assert q.returncode == 2 and "target 5" in q.stderr


def test_prediction_powered_counts_abstains_respects_budget_and_pools():
    r = simulate([0.9, 0.85], 0.8, 0.05, "prediction_powered", runs=5, seed=1, proxy_auc=0.9, abstain_rate=0.2,
                 keep_runs=True)
    assert r["mean_abstains"] > 0 and r["error_rate"] == 0
    s = make_strategy("prediction_powered", n_max=2, threshold=0.8, delta=0.05, budget=10, batch_size=4)
    rng = np.random.default_rng(0)
    while plan_ := s.propose_counts({1: 1000, 2: 1000}):
        for n, k in plan_.items():
            x = (rng.random(k) < 0.9).astype(int)
            f = synthetic_proxy(x, 0.9, 0.0, rng)
            ask = s.select(n, f)
            s.update_draws(n, f, ask, [None if i % 5 == 0 else int(v) for i, v in enumerate(x)])
    res = s.result()
    assert res["nstar"] == 0 and res["calls"] <= 10 and res["budget_exhausted"]
    assert res["calls"] == sum(v["labels"] + v["abstains"] for v in res["per_n"].values())
    small = simulate([0.9, 0.85], 0.8, 0.05, "prediction_powered", runs=5, seed=1, proxy_auc=0.9, pool=50)
    assert small["exhausted_rate"] == 1.0 and small["error_rate"] == 0


def test_proxy_sources_and_the_replay():
    from judgeflow.oracle.proxy import check_proxy, judges_proxy
    from judgeflow.oracle.replay import replay_table

    draws = [{"draw_id": "q1/d1", "question_id": "q1", "draw": 1, "first_accept": True},
             {"draw_id": "q2/d1", "question_id": "q2", "draw": 1, "first_accept": False}]
    verdicts = [{"response_id": "q1/d1", "label": "yes", "p_yes": 0.9}, {"response_id": "q1/d1", "label": "no",
                                                                        "p_yes": None},
                {"response_id": "q2/d1", "label": "no", "p_yes": 0.1}]
    [rec] = judges_proxy(draws, verdicts)    # only the first-accepted draw; a verdict without P(YES) is its label
    assert rec["draw_id"] == "q1/d1" and rec["proxy"] == pytest.approx(0.45) and rec["source"] == "judges"
    for bad in (1.5, float("nan"), None, "0.5"):
        with pytest.raises(ValueError, match=r"draw q9/d3 from source 'judges' is .*never clipped"):
            check_proxy(bad, "q9/d3", "judges")
    rng = np.random.default_rng(0)
    pool = {}
    for n, tp in ((1, 0.86), (2, 0.85)):
        x = (rng.random(3000) < tp).astype(int)
        f = synthetic_proxy(x, 0.95, 0.0, rng)
        pool[n] = [{"draw_id": f"{n}-{i}", "label": int(v), "proxies": {"good": float(g)}} for i, (v, g) in
                   enumerate(zip(x, f))]
    rows = replay_table(pool, ["good"], 2, 0.8, 0.05, 10_000, 0, 8, {"warmup": 100})
    assert [(r["strategy"], r["proxy"]) for r in rows] == [("fixed_sequence", "none"), ("prediction_powered", "good")]
    assert rows[1]["proxy_auc"] > 0.9 and rows[1]["median_calls"] < rows[0]["median_calls"]
    assert all(r["pool"] == 6000 and r["runs"] == 8 for r in rows)
