"""Replay the labelling strategies on a pool whose every accepted draw has an oracle label.

With an exact oracle (the verifier) every accepted draw can be labelled for free, so the oracle
calls a strategy would have spent are measured without paying for them: each replay takes the
accepted draws at each N in a new seeded order and answers the strategy's requests from the
labels on file. The same pool is replayed without a proxy (``fixed_sequence``) and with each
proxy source (``prediction_powered``): the table shows what each proxy saves on this run's pool.
"""
from __future__ import annotations

import random
from collections import Counter

import numpy as np

from judgeflow.oracle.tp.strategies import STRATEGIES, PredictionPowered, make_strategy

__all__ = ["REPLAY_COLUMNS", "replay", "replay_table"]

REPLAY_COLUMNS = ("strategy", "proxy", "proxy_auc", "runs", "median_calls", "mean_calls", "p90_calls",
                  "median_nstar", "nstar_counts", "stop_reasons", "pool")


def replay(pool: dict[int, list[dict]], strategy: str, n_max: int, threshold: float, delta: float, budget: int,
           seed: int, options: dict, proxy: str | None = None) -> dict:
    """One replay; pool: n -> [{"draw_id", "label", "proxies": {source: f}}]."""
    opts = {k: v for k, v in options.items() if k in STRATEGIES[strategy].defaults}
    s = make_strategy(strategy, n_max=n_max, threshold=threshold, delta=delta, budget=budget, seed=seed, **opts)
    rng = random.Random(seed)
    queue = {n: rng.sample(items, len(items)) for n, items in pool.items()}
    while True:
        plan = s.propose_counts({n: len(queue.get(n, [])) for n in range(1, n_max + 1)})
        if not plan:
            break
        for n, k in plan.items():
            if not s.needs_proxy:
                for _ in range(k):
                    s.update(n, queue[n].pop()["label"])
                continue
            assert isinstance(s, PredictionPowered)  # the one strategy driven by proxy scores
            items = queue[n][-k:][::-1]
            f = [d["proxies"][proxy] for d in items]
            ask = s.select(n, f)
            used = s.update_draws(n, f, ask, [d["label"] for d in items])
            del queue[n][len(queue[n]) - used:]
    return s.result(with_bounds=False)


def _auc(pool, proxy):
    from sklearn.metrics import roc_auc_score

    xs = [(d["label"], d["proxies"][proxy]) for items in pool.values() for d in items if d["label"] is not None]
    y = [x for x, _ in xs]
    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, [f for _, f in xs]))


def replay_table(pool: dict[int, list[dict]], proxies: list[str], n_max: int, threshold: float, delta: float,
                 budget: int, seed: int, runs: int, options: dict) -> list[dict]:
    """One row per setting: no proxy, then each proxy source; calls and N* over `runs` replays."""
    rows = []
    for strategy, proxy in [("fixed_sequence", None), *(("prediction_powered", p) for p in proxies)]:
        res = [replay(pool, strategy, n_max, threshold, delta, budget, seed + r, options, proxy) for r in range(runs)]
        calls = np.array([r["calls"] for r in res], float)
        ns = [r["nstar"] for r in res]
        rows.append({"strategy": strategy, "proxy": proxy or "none",
                     "proxy_auc": None if proxy is None else _auc(pool, proxy), "runs": runs,
                     "median_calls": float(np.median(calls)), "mean_calls": float(calls.mean()),
                     "p90_calls": float(np.percentile(calls, 90)), "median_nstar": float(np.median(ns)),
                     "nstar_counts": " ".join(f"{k}:{v}" for k, v in sorted(Counter(ns).items())),
                     "stop_reasons": " ".join(f"{k}:{v}" for k, v in sorted(Counter(r["stop_reason"] or "done"
                                                                                     for r in res).items())),
                     "pool": sum(len(v) for v in pool.values())})
    return rows
