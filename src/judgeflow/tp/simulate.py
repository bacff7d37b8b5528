"""Simulated oracle labelling on a known TP curve (Bernoulli labels): calls spent, N*, error rate.

Each run drives a real strategy object (``make_strategy``) through ``propose_counts`` /
``update_counts``: the labels of a proposed batch at n are drawn as one binomial count
(plus optional abstains), which is exact because a strategy's batch never spans a point where it
could decide (see ``strategies``). The pool of accepted items is unlimited unless ``pool`` is given.
"""
from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from .strategies import STRATEGIES, make_strategy

__all__ = ["check_curve", "simulate", "simulate_run", "true_nstar"]


def check_curve(curve) -> list[float]:
    """The curve as floats, ValueError naming the position of a value that is not in [0, 1]."""
    out = []
    try:
        items = list(curve)
    except TypeError:
        raise ValueError(f"curve must be a list of numbers in [0, 1], got {curve!r}") from None
    if not items:
        raise ValueError("curve must have at least one value")
    for i, v in enumerate(items, 1):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"curve value {i} ({v!r}) is not a number") from None
        if not (0.0 <= f <= 1.0) or math.isnan(f):
            raise ValueError(f"curve value {i} ({v!r}) is outside [0, 1]")
        out.append(f)
    return out


def true_nstar(curve, threshold: float) -> int:
    """The largest n with TP(n') >= threshold for every n' <= n (0 if TP(1) < threshold)."""
    k = 0
    for v in curve:
        if v < threshold:
            break
        k += 1
    return k


def simulate_run(strategy: str, curve, threshold: float, delta: float, budget: int, rng: np.random.Generator,
                 seed: int = 0, abstain_rate: float = 0.0, pool: int | None = None, **options) -> dict:
    """One labelling run on the true curve; returns the strategy's result()."""
    curve = np.asarray(curve, float)
    s = make_strategy(strategy, n_max=len(curve), threshold=threshold, delta=delta, budget=budget, seed=seed,
                      **options)
    left = dict.fromkeys(range(1, len(curve) + 1), pool if pool is not None else budget + 1)
    while plan := s.propose_counts(left):
        for n, k in plan.items():
            left[n] -= k
            ab = int(rng.binomial(k, abstain_rate)) if abstain_rate else 0
            pos = int(rng.binomial(k - ab, curve[n - 1]))
            s.update_counts(n, pos, k - ab - pos, ab)
    return s.result(with_bounds=False)


def simulate(curve, threshold: float, delta: float, strategy: str = "fixed_sequence", runs: int = 100,
             seed: int = 0, budget: int = 1_000_000, abstain_rate: float = 0.0, pool: int | None = None,
             keep_runs: bool = True, **options) -> dict:
    """Summary over `runs` independent runs: N* per run, median / p90 calls, error rate.

    error_rate: fraction of runs certifying an N beyond the true N* (some n <= N has TP(n) < T).
    """
    curve = check_curve(curve)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    truth = true_nstar(curve, threshold)
    t0 = time.perf_counter()
    nstars, calls, abst, exhausted = [], [], [], 0
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        res = simulate_run(strategy, curve, threshold, delta, budget, rng, seed=seed + r,
                           abstain_rate=abstain_rate, pool=pool, **options)
        nstars.append(res["nstar"])
        calls.append(res["calls"])
        abst.append(res["abstains"])
        exhausted += bool(res["budget_exhausted"])
    secs = time.perf_counter() - t0
    c = np.asarray(calls, float)
    ns = np.asarray(nstars)
    out = {"strategy": strategy, "runs": runs, "seed": seed, "threshold": threshold, "delta": delta,
           "budget": budget, "true_nstar": truth,
           "median_calls": float(np.median(c)), "p90_calls": float(np.percentile(c, 90)),
           "mean_calls": float(c.mean()), "max_calls": int(c.max()),
           "error_rate": float(np.mean(ns > truth)), "exact_rate": float(np.mean(ns == truth)),
           "nstar_counts": {int(k): int(v) for k, v in sorted(Counter(nstars).items())},
           "budget_exhausted_rate": exhausted / runs, "mean_abstains": float(np.mean(abst)),
           "seconds": round(secs, 3)}
    if keep_runs:
        out["nstar"] = [int(x) for x in nstars]
        out["calls"] = [int(x) for x in calls]
    return out
