"""How well the cheap judges agree with the oracle, and with each other.

On every draw the oracle labelled (X = 1 or 0; with the exact verifier, every draw it was asked
about), for each judge (Y = it said YES on every criterion of the draw) and for the k-of-J
aggregate (Y = the draw was accepted):

* the confusion matrix (n11 = Y=1 and X=1, n10, n01, n00);
* p1 = P(Y=1 | X=1) and p0 = P(Y=1 | X=0), each with a Clopper-Pearson interval at 1 - delta;
* Cohen's kappa against the oracle.

Between every two judges, over all draws: Cohen's kappa and the correlation of their YES. The
Beta-judge model of TP(N) and the independent-judge Best-of-N formulas assume what these measure:
one (p0, p1) for the aggregate, and judges that err independently. The fitted p0 and p1
(oracle/fit.json) are set beside the measured ones.
"""
from __future__ import annotations

import itertools
import math

AGGREGATE = "k-of-J"
QUALITY_COLUMNS = ["judge", "labelled", "n11", "n10", "n01", "n00", "p1", "p1_low", "p1_high", "p0", "p0_low",
                   "p0_high", "accuracy", "kappa_vs_oracle"]
AGREEMENT_COLUMNS = ["judge_a", "judge_b", "draws", "both_yes", "kappa", "correlation"]


def _rate(k: int, n: int, delta: float) -> tuple[float | None, float | None, float | None]:
    """(k/n, Clopper-Pearson low, high) at confidence 1 - delta; Nones when n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return None, None, None
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - delta, method="exact")
    return round(k / n, 4), round(float(ci.low), 4), round(float(ci.high), 4)


def _kappa(a: list[int], b: list[int]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2 or (len(set(a)) == 1 and set(a) == set(b)):
        return None  # one class everywhere: agreement by construction, kappa undefined
    k = cohen_kappa_score(a, b)
    return None if math.isnan(k) else round(float(k), 4)


def _correlation(a: list[int], b: list[int]) -> float | None:
    import numpy as np

    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def judge_votes(draw: dict, judge_ids: list[str]) -> dict[str, int]:
    """{judge: 1 if it accepted the draw, else 0} plus the k-of-J aggregate."""
    votes = {j: int(bool(draw["judge_accepts"][j])) for j in judge_ids}
    votes[AGGREGATE] = int(bool(draw["accepted"]))
    return votes


def quality(draws: list[dict], labels: dict[str, dict], judge_ids: list[str], delta: float,
            fit: dict | None = None) -> tuple[list[dict], list[dict], dict]:
    """(per-judge rows, judge-pair rows, summary). `labels`: {draw_id: label record} of the oracle."""
    labelled = [(d, labels[d["draw_id"]]["label"]) for d in draws
                if d["draw_id"] in labels and labels[d["draw_id"]]["label"] in (0, 1)]
    x = [int(lab) for _, lab in labelled]
    rows = []
    for judge in [*judge_ids, AGGREGATE]:
        y = [judge_votes(d, judge_ids)[judge] for d, _ in labelled]
        n11 = sum(1 for a, b in zip(y, x) if a and b)
        n10 = sum(1 for a, b in zip(y, x) if a and not b)
        n01 = sum(1 for a, b in zip(y, x) if not a and b)
        n00 = len(x) - n11 - n10 - n01
        p1, p1_low, p1_high = _rate(n11, n11 + n01, delta)
        p0, p0_low, p0_high = _rate(n10, n10 + n00, delta)
        rows.append({"judge": judge, "labelled": len(x), "n11": n11, "n10": n10, "n01": n01, "n00": n00,
                     "p1": p1, "p1_low": p1_low, "p1_high": p1_high, "p0": p0, "p0_low": p0_low,
                     "p0_high": p0_high, "accuracy": round((n11 + n00) / len(x), 4) if x else None,
                     "kappa_vs_oracle": _kappa(y, x)})
    votes = [judge_votes(d, judge_ids) for d in draws]
    pairs = []
    for a, b in itertools.combinations(judge_ids, 2):
        ya, yb = [v[a] for v in votes], [v[b] for v in votes]
        pairs.append({"judge_a": a, "judge_b": b, "draws": len(votes),
                      "both_yes": sum(1 for u, w in zip(ya, yb) if u and w), "kappa": _kappa(ya, yb),
                      "correlation": _correlation(ya, yb)})
    agg = rows[-1]
    summary = {"draws": len(draws), "labelled": len(x), "oracle_positive": sum(x), "delta": delta,
               "measured": {"p0": agg["p0"], "p1": agg["p1"], "p0_interval": [agg["p0_low"], agg["p0_high"]],
                            "p1_interval": [agg["p1_low"], agg["p1_high"]]},
               "fitted": ({"p0": round(fit["p0"], 4), "p1": round(fit["p1"], 4)} if fit and fit.get("ok") else None),
               "mean_pairwise_kappa": _mean([p["kappa"] for p in pairs]),
               "mean_pairwise_correlation": _mean([p["correlation"] for p in pairs])}
    return rows, pairs, summary


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None
