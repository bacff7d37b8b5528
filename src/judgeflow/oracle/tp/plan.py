"""`judgeflow plan`: how many questions to draw, and how many oracle calls to expect, to certify N*.

Under the Beta-judge model (``model``), Q questions give a multinomial pool of first accepts:
about Q P(N = n) accepted draws at n, which falls fast with n. Certifying N* >= target needs
enough accepted draws at every n <= target for its test to decide; with too few, the strategy
exhausts the pool at some n and stops there. The planner simulates the labelling (the same
strategy code as the workflow, ``simulate``) on such pools for a growing Q (doubling, then a
bisection on log Q) and reports the fewest Q with which a share ``power`` of the runs certifies
N* >= target, and the median and 90th-percentile oracle calls there, without a proxy
(``fixed_sequence``) and with a synthetic proxy of each given AUC (``prediction_powered``).
The answer is a simulation with ``runs`` runs per Q: a plan, not a guarantee.
"""
from __future__ import annotations

import math

import numpy as np

from judgeflow.oracle.tp.model import check_params, p_first_accept, tp_curve
from judgeflow.oracle.tp.simulate import simulate, true_nstar

__all__ = ["plan"]


def _evaluate(curve, threshold, delta, q, probs, auc, runs, seed, budget):
    name = "fixed_sequence" if auc is None else "prediction_powered"
    r = simulate(curve, threshold, delta, name, runs=runs, seed=seed, budget=budget, questions=q,
                 accept_probs=probs, proxy_auc=auc, keep_runs=True)
    target = len(curve)
    rate = float(np.mean(np.asarray(r["nstar"]) >= target))
    return rate, r


def plan(a: float, b: float, p0: float, p1: float, threshold: float, delta: float, n_max: int = 15,
         target: int | None = None, proxy_aucs=(), power: float = 0.8, runs: int = 40, seed: int = 0,
         max_questions: int = 10_000_000, budget: int = 10_000_000) -> dict:
    """The plan as a JSON-able dict; ValueError when the target cannot be certified at all."""
    check_params(a, b, p0, p1)
    curve = tp_curve(n_max, a=a, b=b, p0=p0, p1=p1)
    truth = true_nstar(curve, threshold)
    if target is None:
        target = truth
    if target < 1:
        raise ValueError(f"TP(1) = {curve[0]:.4f} <= T = {threshold}: the model's N* is 0, nothing to certify")
    if target > truth:
        raise ValueError(f"the model's TP({truth + 1}) = {curve[truth]:.4f} <= T = {threshold}, so its N* is "
                         f"{truth} < target {target}: no number of questions certifies it")
    probs = [p_first_accept(n, a, b, p0, p1) for n in range(1, target + 1)]
    head = curve[:target]
    settings = []
    for auc in [None, *proxy_aucs]:
        lo, hi, best = None, 64, None
        while hi <= max_questions:                  # doubling: the first Q that reaches the power
            rate, r = _evaluate(head, threshold, delta, hi, probs, auc, runs, seed, budget)
            if rate >= power:
                best = (hi, rate, r)
                break
            lo, hi = hi, hi * 2
        if best is not None and lo is not None:     # bisection on log Q between lo (fails) and hi
            for _ in range(3):
                mid = int(round(math.sqrt(lo * best[0])))
                if mid in (lo, best[0]):
                    break
                rate, r = _evaluate(head, threshold, delta, mid, probs, auc, runs, seed, budget)
                if rate >= power:
                    best = (mid, rate, r)
                else:
                    lo = mid
        row = {"proxy_auc": auc, "strategy": "fixed_sequence" if auc is None else "prediction_powered"}
        if best is None:
            row.update({"questions": None, "message": f"N* >= {target} is not certified in {power:.0%} of runs "
                                                      f"with up to {max_questions:,} questions"})
        else:
            q, rate, r = best
            row.update({"questions": q, "certify_rate": rate, "median_calls": r["median_calls"],
                        "p90_calls": r["p90_calls"], "exhausted_rate": r["exhausted_rate"],
                        "accepted_at_target": q * probs[-1]})
        settings.append(row)
    return {"model": {"a": a, "b": b, "p0": p0, "p1": p1}, "threshold": threshold, "delta": delta,
            "curve": curve, "true_nstar": truth, "target": target, "power": power, "runs": runs,
            "accept_probs": probs, "plans": settings}
