"""Interval coverage: exact binomial coverage of the fixed-n bounds, time-uniform coverage of the
betting confidence sequences, and why re-checking a fixed-n interval after every label is not valid."""
import math

import numpy as np
import pytest
from scipy import stats

from judgeflow.oracle.tp.intervals import KINDS, SIDES, BettingCS, gap_grid, hoeffding, interval, log_mixture_wealth

DELTA = 0.1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [15, 120])
def test_fixed_n_coverage_is_at_least_one_minus_delta(kind, n):
    """Exact coverage: sum over s of Binom(n, p) pmf(s) * [p inside the interval for s]."""
    bounds = {side: np.array([interval(kind, s, n, DELTA, side) for s in range(n + 1)]) for side in SIDES}
    pmf_s = np.arange(n + 1)
    for p in np.linspace(0.02, 0.98, 25):
        pmf = stats.binom.pmf(pmf_s, n, p)
        for side, b in bounds.items():
            covered = (b[:, 0] <= p) & (p <= b[:, 1])
            assert pmf @ covered >= 1 - DELTA - 1e-9, (kind, side, n, p, pmf @ covered)


def test_interval_values_and_shapes():
    lo, hi = interval("clopper_pearson", 8, 10, 0.05)
    assert (lo, hi) == pytest.approx((stats.beta.ppf(0.025, 8, 3), stats.beta.ppf(0.975, 9, 2)))
    assert interval("hoeffding", 8, 10, 0.05, "lower") == pytest.approx((0.8 - math.sqrt(math.log(20) / 20), 1.0))
    assert interval("betting", 0, 0, 0.05) == (0.0, 1.0)
    for kind in KINDS:
        lo, hi = interval(kind, 815, 1000, 0.05)
        assert 0.7 < lo < 0.815 < hi < 0.9
        assert interval(kind, 815, 1000, 0.05, "lower")[1] == 1.0
        assert interval(kind, 815, 1000, 0.05, "upper")[0] == 0.0


@pytest.mark.parametrize("args,match", [(("wilson", 1, 2, 0.05), "interval kind"),
                                        (("hoeffding", 3, 2, 0.05), "successes"),
                                        (("hoeffding", 1, 2, 1.0), "delta"),
                                        (("hoeffding", 1, -2, 0.05), "^n must"),
                                        (("clopper_pearson", 1, 2, 0.05, "both"), "side")])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        interval(*args)


def _paths(R, T, p, seed):
    x = np.random.default_rng(seed).random((R, T)) < p
    return np.cumsum(x, axis=1), np.arange(1, T + 1)


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_mixture_betting_cs_is_time_uniform(p):
    """Count-based betting CS: the true mean is excluded at some t <= T on at most delta of paths.
    Exclusion at t means the bettors against the true mean reached 1/delta (vectorised over t)."""
    R, T = 250, 800
    S, t = _paths(R, T, p, seed=11)
    g, lw = gap_grid(0.005, 1.0, 48, 1.0)
    L = math.log(1 / DELTA)
    up = log_mixture_wealth(S, t[None, :], p, "upper", g, lw) >= L      # lower bound crossed p
    down = log_mixture_wealth(S, t[None, :], p, "lower", g, lw) >= L    # upper bound crossed p
    miss = (up.any(axis=1) | down.any(axis=1)).mean()
    assert miss <= DELTA * 2 + 3 * math.sqrt(DELTA * 2 / R)  # each side at DELTA here
    assert up.any(axis=1).mean() <= DELTA + 3 * math.sqrt(DELTA / R)


def test_rechecking_a_fixed_n_interval_every_label_is_not_valid():
    """The reason sequential strategies need anytime-valid tests or a union bound over looks."""
    R, T, p = 300, 1500, 0.5
    S, t = _paths(R, T, p, seed=3)
    lo = S / t - np.sqrt(math.log(1 / DELTA) / (2 * t))               # one-sided Hoeffding at DELTA
    assert (lo > p).any(axis=1).mean() > 1.5 * DELTA      # 0.19 here, against 0.1 claimed


@pytest.mark.parametrize("data", ["bernoulli", "beta"])
def test_hedged_capital_cs_time_uniform_coverage(data):
    R, T, delta = 120, 300, 0.1
    rng = np.random.default_rng(5)
    misses, widths = 0, []
    for _ in range(R):
        if data == "bernoulli":
            mu, xs = 0.7, (rng.random(T) < 0.7).astype(float)
        else:
            mu, xs = 2 / 7, rng.beta(2, 5, T)
        cs = BettingCS(delta, "two-sided", grid=400)
        missed = False
        for x in xs:
            cs.update(x)
            lo, hi = cs.bounds()
            missed |= not (lo <= mu <= hi)
        misses += missed
        widths.append(hi - lo)
    assert misses / R <= delta + 3 * math.sqrt(delta / R)
    assert np.median(widths) < 0.3          # and it does learn something


def test_betting_cs_one_sided_and_running():
    cs = BettingCS(0.05, "lower")
    los = []
    for x in [1, 1, 0, 1, 1, 1, 1, 0, 1, 1] * 20:
        cs.update(x)
        los.append(cs.lower)
    assert cs.upper == 1.0
    assert all(a <= b for a, b in zip(los, los[1:]))    # running intersection only tightens
    assert 0.5 < los[-1] < 0.8
    with pytest.raises(ValueError, match="observation"):
        cs.update(1.5)
    with pytest.raises(ValueError, match="delta"):
        BettingCS(0.0)


def test_hoeffding_matches_formula():
    assert hoeffding(30, 100, 0.05, "two-sided") == pytest.approx((0.3 - math.sqrt(math.log(40) / 200),
                                                                   0.3 + math.sqrt(math.log(40) / 200)))
