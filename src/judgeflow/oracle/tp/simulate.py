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
from scipy import stats

from judgeflow.oracle.tp.strategies import STRATEGIES, PredictionPowered, make_strategy

__all__ = ["check_curve", "pool_sizes", "simulate", "simulate_run", "synthetic_proxy", "true_nstar"]


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
    """The largest n with TP(n') > threshold for every n' <= n (0 if TP(1) <= threshold).

    The same definition as the tests' null H0_n: TP(n) <= T. An n with TP(n) = T exactly is a
    null, so certifying it counts as an error."""
    k = 0
    for v in curve:
        if v <= threshold:
            break
        k += 1
    return k


def synthetic_proxy(x, auc: float, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Proxy scores Phi(z), z = mu (X - 1/2) + shift + N(0, 1), mu = sqrt(2) Phi^-1(auc): a score
    whose AUC against X is `auc` (0.5: useless), miscalibrated by `shift` on the probit scale."""
    mu = math.sqrt(2.0) * float(stats.norm.ppf(auc))
    z = mu * (np.asarray(x, float) - 0.5) + shift + rng.standard_normal(np.shape(x))
    return stats.norm.cdf(z)


def pool_sizes(n_max: int, rng: np.random.Generator, pool=None, questions: int | None = None,
               accept_probs=None) -> dict[int, int | None]:
    """Accepted draws available at each n for one run (None: unlimited).

    pool: None (unlimited), an int (the same at every n) or a list of per-n sizes; questions Q
    with accept_probs [P(N=1), ..., P(N=n_max)]: one multinomial draw of Q questions' first accepts
    (the rest are never accepted within n_max)."""
    if questions is not None:
        p = np.asarray(accept_probs, float)
        if p.size != n_max or np.any(p < 0) or p.sum() > 1 + 1e-9:
            raise ValueError(f"accept_probs must be {n_max} probabilities P(N=n) summing to at most 1")
        counts = rng.multinomial(int(questions), [*p.tolist(), max(0.0, 1.0 - float(p.sum()))])
        return {n: int(counts[n - 1]) for n in range(1, n_max + 1)}
    if pool is None:
        return dict.fromkeys(range(1, n_max + 1), None)
    if isinstance(pool, (int, np.integer)):
        return dict.fromkeys(range(1, n_max + 1), int(pool))
    sizes = list(pool)
    if len(sizes) != n_max:
        raise ValueError(f"pool must have one size per n (n_max = {n_max}), got {len(sizes)}")
    return {n: int(v) for n, v in enumerate(sizes, 1)}


def simulate_run(strategy: str, curve, threshold: float, delta: float, budget: int, rng: np.random.Generator,
                 seed: int = 0, abstain_rate: float = 0.0, pool=None, questions: int | None = None,
                 accept_probs=None, proxy_auc: float | None = None, proxy_shift: float = 0.0, **options) -> dict:
    """One labelling run on the true curve; returns the strategy's result() (plus the pool sizes)."""
    curve = np.asarray(curve, float)
    s = make_strategy(strategy, n_max=len(curve), threshold=threshold, delta=delta, budget=budget, seed=seed,
                      **options)
    sizes = pool_sizes(len(curve), rng, pool, questions, accept_probs)
    left = {n: (budget * 64 + 1 if v is None else v) for n, v in sizes.items()}
    if s.needs_proxy and proxy_auc is None:
        raise ValueError(f"strategy {strategy} needs proxy scores: give proxy_auc")
    while plan := s.propose_counts(left):
        for n, k in plan.items():
            if not s.needs_proxy:
                left[n] -= k
                ab = int(rng.binomial(k, abstain_rate)) if abstain_rate else 0
                pos = int(rng.binomial(k - ab, curve[n - 1]))
                s.update_counts(n, pos, k - ab - pos, ab)
                continue
            # the one strategy driven by proxy scores; proxy_auc was checked above
            assert isinstance(s, PredictionPowered) and proxy_auc is not None
            x = (rng.random(k) < curve[n - 1]).astype(int)
            f = synthetic_proxy(x, proxy_auc, proxy_shift, rng)
            ask = s.select(n, f)
            abst = rng.random(k) < abstain_rate if abstain_rate else np.zeros(k, bool)
            labels = [None if a else int(v) for v, a in zip(x, abst)]
            left[n] -= s.update_draws(n, f, ask, labels)
    out = s.result(with_bounds=False)
    out["pool"] = {n: v for n, v in sizes.items()}
    return out


def simulate(curve, threshold: float, delta: float, strategy: str = "fixed_sequence", runs: int = 100,
             seed: int = 0, budget: int = 1_000_000, abstain_rate: float = 0.0, pool=None,
             questions: int | None = None, accept_probs=None, proxy_auc: float | None = None,
             proxy_shift: float = 0.0, keep_runs: bool = True, **options) -> dict:
    """Summary over `runs` independent runs: N* per run, median / p90 calls, error rate.

    error_rate: fraction of runs certifying an N beyond the true N* (some n <= N has TP(n) <= T,
    the tests' own null). exhausted_rate: runs that stopped because the pool at some n ran out;
    undecided_rate: runs that gave an n up under the indifference margin.
    """
    curve = check_curve(curve)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    if proxy_auc is not None and not 0.5 <= proxy_auc < 1:
        raise ValueError(f"proxy_auc must be in [0.5, 1), got {proxy_auc!r}")
    truth = true_nstar(curve, threshold)
    t0 = time.perf_counter()
    nstars: list[int] = []
    calls: list[int] = []
    abst: list[int] = []
    exhausted = 0
    reasons: Counter[str] = Counter()
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        res = simulate_run(strategy, curve, threshold, delta, budget, rng, seed=seed + r,
                           abstain_rate=abstain_rate, pool=pool, questions=questions, accept_probs=accept_probs,
                           proxy_auc=proxy_auc, proxy_shift=proxy_shift, **options)
        nstars.append(res["nstar"])
        calls.append(res["calls"])
        abst.append(res["abstains"])
        exhausted += bool(res["budget_exhausted"])
        reasons[res["stop_reason"] or "done"] += 1
    secs = time.perf_counter() - t0
    c = np.asarray(calls, float)
    ns = np.asarray(nstars)
    out = {"strategy": strategy, "runs": runs, "seed": seed, "threshold": threshold, "delta": delta,
           "budget": budget, "true_nstar": truth, "proxy_auc": proxy_auc, "proxy_shift": proxy_shift,
           "median_calls": float(np.median(c)), "p90_calls": float(np.percentile(c, 90)),
           "mean_calls": float(c.mean()), "max_calls": int(c.max()),
           "error_rate": float(np.mean(ns > truth)), "exact_rate": float(np.mean(ns == truth)),
           "nstar_counts": {int(k): int(v) for k, v in sorted(Counter(nstars).items())},
           "budget_exhausted_rate": exhausted / runs, "exhausted_rate": reasons["exhausted"] / runs,
           "undecided_rate": reasons["indifference"] / runs,
           "stop_reasons": dict(sorted(reasons.items())), "mean_abstains": float(np.mean(abst)),
           "seconds": round(secs, 3)}
    if keep_runs:
        out["nstar"] = [int(x) for x in nstars]
        out["calls"] = [int(x) for x in calls]
    return out
