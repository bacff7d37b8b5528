"""Oracle labelling strategies: error rate <= delta where TP(N*+1) is just below T, abstains,
exhausted items, budgets, batching, and the interface's contract."""
import json
import math

import numpy as np
import pytest

from judgeflow.oracle.tp.simulate import check_curve, simulate, true_nstar
from judgeflow.oracle.tp.strategies import STRATEGIES, make_strategy

NAMES = [n for n in STRATEGIES if not STRATEGIES[n].needs_proxy]  # prediction_powered: test_tp_proxy.py


def drive(s, streams, available=None, per_label=True):
    """Run strategy s on fixed label streams {n: [labels]}; per_label: update() one by one, else
    update_counts() per proposed batch. Returns the result and the largest batch seen."""
    pos = dict.fromkeys(streams, 0)
    avail = dict(available) if available else {n: len(v) for n, v in streams.items()}
    biggest = 0
    while batch := s.propose(avail):
        biggest = max(biggest, len(batch))
        counts = {}
        for n in batch:
            counts[n] = counts.get(n, 0) + 1
            assert avail.get(n, 0) > 0, "asked for an n with nothing available"
            avail[n] -= 1
        for n, k in counts.items():
            labels = streams[n][pos[n]:pos[n] + k]
            pos[n] += k
            if per_label:
                for lab in labels:
                    s.update(n, lab)
            else:
                ones = sum(1 for v in labels if v == 1)
                abst = sum(1 for v in labels if v is None)
                s.update_counts(n, ones, k - ones - abst, abst)
    return s.result(), biggest


@pytest.mark.parametrize("name,runs", [("uniform", 300), ("bisection", 300), ("fixed_sequence", 150)])
def test_error_rate_at_most_delta_when_next_tp_is_just_below_threshold(name, runs):
    curve = [0.95, 0.9, 0.79, 0.75, 0.7]          # true N* = 2, TP(3) = 0.79 just below T = 0.8
    r = simulate(curve, 0.8, 0.1, name, runs=runs, seed=4, budget=200_000)
    assert r["true_nstar"] == 2
    assert r["error_rate"] <= 0.1 + 2.5 * math.sqrt(0.1 * 0.9 / runs)
    assert r["exact_rate"] >= 0.5                  # and it is not trivially conservative


@pytest.mark.parametrize("name", NAMES)
def test_null_at_the_boundary_is_certified_at_most_delta(name):
    """TP(1) = 0.799 just below T = 0.8: certifying N = 1 is an error; P(error) <= delta."""
    # fixed_sequence: without the indifference margin, which would give most runs up as undecided
    opts = {"min_effect": None} if name == "fixed_sequence" else {"first_look": 10, "look_ratio": 1.2}
    r = simulate([0.799], 0.8, 0.2, name, runs=400, seed=9, budget=3000, **opts)
    assert r["true_nstar"] == 0
    assert r["error_rate"] <= 0.2 + 2.5 * math.sqrt(0.2 * 0.8 / 400)
    if name == "fixed_sequence":
        assert r["error_rate"] > 0.05    # the test martingale spends its level: not vacuously safe
        r = simulate([0.799], 0.8, 0.2, name, runs=400, seed=9, budget=3000, futility_level=None, min_effect=None)
        assert 0.05 < r["error_rate"] <= 0.2 + 2.5 * math.sqrt(0.2 * 0.8 / 400)


def test_issue_curve_quick_figures():
    curve = [0.965 - 0.03 * n for n in range(1, 16)]
    fs = simulate(curve, 0.8, 0.05, "fixed_sequence", runs=40, seed=1)
    assert fs["true_nstar"] == 5 and fs["error_rate"] <= 0.05
    assert fs["nstar_counts"].get(5, 0) >= 30
    assert fs["median_calls"] < 8000
    uni = simulate(curve, 0.8, 0.05, "uniform", runs=20, seed=1)
    assert uni["median_calls"] > 10 * fs["median_calls"]


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_does_not_change_the_outcome(name):
    """A batch never spans a possible decision, so one-by-one, batches of 7 and unbounded batches
    fed as counts give the same calls and N* on the same label stream."""
    rng = np.random.default_rng(0)
    curve = [0.97, 0.93, 0.88, 0.8, 0.6]
    streams = {n: [int(v) for v in rng.random(60_000) < p] for n, p in enumerate(curve, 1)}
    out = []
    for bs, per_label in [(1, True), (7, True), (None, False), (None, True)]:
        if name == "uniform" and bs == 1:
            continue  # same code path as 7, just slow
        s = make_strategy(name, n_max=5, threshold=0.85, delta=0.1, budget=200_000, batch_size=bs)
        res, biggest = drive(s, streams, per_label=per_label)
        assert bs is None or biggest <= bs
        out.append((res["nstar"], res["calls"]))
    assert len(set(out)) == 1, out
    assert out[0][0] == 3


@pytest.mark.parametrize("name", NAMES)
def test_abstains_are_counted_not_used_as_labels(name):
    curve = [0.98, 0.95, 0.6]
    r = simulate(curve, 0.8, 0.05, name, runs=20, seed=2, abstain_rate=0.3)
    assert r["mean_abstains"] > 0
    assert r["nstar_counts"] == {2: 20}
    s = make_strategy(name, n_max=3, threshold=0.8, delta=0.05, budget=50_000, batch_size=5)
    rng = np.random.default_rng(1)
    streams = {n: [None if u < 0.3 else int(v < p) for u, v in zip(rng.random(40_000), rng.random(40_000))]
               for n, p in enumerate(curve, 1)}
    res, _ = drive(s, streams)
    assert res["abstains"] > 0
    assert res["calls"] == res["abstains"] + sum(v["labels"] for v in res["per_n"].values())
    assert sum(v["abstains"] for v in res["per_n"].values()) == res["abstains"]
    assert res["nstar"] == 2


@pytest.mark.parametrize("name", NAMES)
def test_exhausted_n_is_undecided_and_never_over_asked(name):
    rng = np.random.default_rng(3)
    streams = {n: [int(v) for v in rng.random(50_000) < 0.97] for n in (1, 2, 3)}
    s = make_strategy(name, n_max=3, threshold=0.8, delta=0.05, budget=100_000, batch_size=16)
    res, _ = drive(s, streams, available={1: 50_000, 2: 3, 3: 50_000})   # drive() asserts avail > 0
    assert res["per_n"][2]["labels"] <= 3
    assert res["per_n"][2]["status"] in ("exhausted", "untested")
    assert res["nstar"] <= 1


@pytest.mark.parametrize("name", NAMES)
def test_budget_too_small_reports_nstar_zero(name):
    s = make_strategy(name, n_max=5, threshold=0.8, delta=0.05, budget=7, batch_size=4)
    res, _ = drive(s, {n: [1] * 100 for n in range(1, 6)})
    assert res["nstar"] == 0 and res["calls"] <= 7 and res["budget_exhausted"] is True
    s = make_strategy(name, n_max=5, threshold=0.8, delta=0.05, budget=0)
    assert s.propose(dict.fromkeys(range(1, 6), 10)) == []
    assert s.result()["nstar"] == 0 and s.result()["calls"] == 0


def test_result_is_json_and_fixed_sequence_bounds_agree_with_decisions():
    rng = np.random.default_rng(8)
    curve = [0.95, 0.9, 0.7]
    streams = {n: [int(v) for v in rng.random(20_000) < p] for n, p in enumerate(curve, 1)}
    s = make_strategy("fixed_sequence", n_max=3, threshold=0.8, delta=0.05, budget=10_000, batch_size=32)
    res, _ = drive(s, streams)
    back = json.loads(json.dumps(res))
    assert set(back) >= {"nstar", "threshold", "delta", "strategy", "calls", "abstains", "budget",
                         "budget_exhausted", "per_n"}
    assert back["nstar"] == 2 and back["strategy"] == "fixed_sequence"
    for v in res["per_n"].values():
        assert set(v) >= {"labels", "positives", "lower", "upper", "decided"}
        if v["status"] == "certified":
            assert v["decided"] and v["lower"] >= 0.8 - 1e-9
        if v["status"] == "failed":
            assert v["decided"] and v["lower"] < 0.8


def test_interface_errors():
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("thompson")
    with pytest.raises(ValueError, match="unknown option"):
        make_strategy("fixed_sequence", fancy=1)
    with pytest.raises(ValueError, match="threshold"):
        make_strategy("uniform", threshold=1.0)
    with pytest.raises(ValueError, match="delta"):
        make_strategy("bisection", delta=0)
    with pytest.raises(ValueError, match="budget"):
        make_strategy("uniform", budget=-1)
    s = make_strategy("fixed_sequence", n_max=2, batch_size=4)
    batch = s.propose({1: 10, 2: 10})
    assert batch and set(batch) == {1} and len(batch) <= 4
    with pytest.raises(ValueError, match="proposed"):
        s.update(2, 1)
    with pytest.raises(ValueError, match="label must be"):
        s.update(1, 2)
    s.update(1, 1)
    with pytest.raises(RuntimeError, match="never returned"):
        s.propose({1: 10, 2: 10})


def test_curve_helpers():
    assert true_nstar([0.9, 0.85, 0.7, 0.9], 0.8) == 2
    assert true_nstar([0.7], 0.8) == 0
    with pytest.raises(ValueError, match="curve value 2"):
        check_curve([0.5, 1.2])
    with pytest.raises(ValueError, match="not a number"):
        check_curve([0.5, "x"])
