"""Best-of-N over a grid of N (draws), J (judges) and k (k-of-J): empirical with bounds, and the model.

Input: one list of draws per question, in draw order; a draw is
``{"judges": [1, 0, None, ...], "oracle": 1 or 0}`` — the verdict of each of the J_max judges
(None: abstained, which is not a YES) and the oracle label X (None: unlabelled). For each (N, J, k)
a draw is accepted when at least k of the first J judges say YES, and per question:

* ``p_any``: 1 if at least one of its first N draws is accepted;
* ``tp``: the expected X of one accepted draw picked uniformly among its first N (the fraction of
  its accepted draws with X = 1); undefined when none is accepted (or one of them is unlabelled).

The question is the independent unit: the rates are means over questions of these per-question
values in [0, 1], and the bounds are finite-sample two-sided bounds for a mean of i.i.d. [0, 1]
values — Hoeffding by default (``bound="hoeffding"``), or the anytime-valid betting confidence
sequence (``bound="betting"``, ``intervals.BettingCS``). A question with fewer than N draws is left
out of that N (``questions`` says how many count): pass complete draws to avoid the selection.

The independent-judge model beside them: each judge says YES with p1 = P(Y=1|X=1), p0 =
P(Y=1|X=0), independently given X, so k-of-J accepts with P1 = P(Binom(J, p1) >= k) (P0 alike);
a draw is accepted with a(p) = p P1 + (1-p) P0, and with p ~ Beta(a, b):

    P(at least one accepted in N) = E[1 - (1 - a(p))^N]
    TP(N, J, k) = E[(1 - (1 - a(p))^N) p P1 / a(p)] / E[1 - (1 - a(p))^N]

(Gauss-Jacobi quadrature against the Beta density).

**Correlated judges break these formulas.** The model multiplies the judges' error rates as if
they were independent given X; judges built on the same model, prompt or data make the same
mistakes on the same responses, so k-of-J voting removes far fewer false accepts than
P(Binom(J, p0) >= k) promises, and the model's TP for large J and k is optimistic. In the extreme of
perfectly correlated judges, k-of-J is just one judge whatever J and k are (see
``tests/test_tp_fit_bon.py``). Compare the empirical columns with the model's before trusting it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import roots_jacobi

from .intervals import BettingCS, hoeffding
from .model import check_params

__all__ = ["BOUNDS", "bon_grid", "judge_rates", "model_bon", "question_values"]

BOUNDS = ("hoeffding", "betting")


def _arrays(questions):
    """Y (Q, D, J) in {1, 0, -1 (abstain)}, X (Q, D) in {1, 0, -1 (unlabelled)}, draws per question."""
    if not questions:
        raise ValueError("no questions")
    jmax = None
    dmax = max(len(q) for q in questions)
    for qi, q in enumerate(questions):
        for di, d in enumerate(q):
            if not isinstance(d, dict) or "judges" not in d or "oracle" not in d:
                raise ValueError(f"question {qi}, draw {di}: expected {{'judges': [...], 'oracle': x}}")
            if jmax is None:
                jmax = len(d["judges"])
            if len(d["judges"]) != jmax:
                raise ValueError(f"question {qi}, draw {di}: {len(d['judges'])} judge verdicts, expected {jmax}")
    if not jmax:
        raise ValueError("no judge verdicts")
    Y = np.full((len(questions), dmax, jmax), -1, np.int8)
    X = np.full((len(questions), dmax), -1, np.int8)
    nd = np.zeros(len(questions), int)
    for qi, q in enumerate(questions):
        nd[qi] = len(q)
        for di, d in enumerate(q):
            for ji, v in enumerate(d["judges"]):
                if v not in (0, 1, None):
                    raise ValueError(f"question {qi}, draw {di}, judge {ji}: verdict must be 1, 0 or None, got {v!r}")
                Y[qi, di, ji] = -1 if v is None else int(v)
            x = d["oracle"]
            if x not in (0, 1, None):
                raise ValueError(f"question {qi}, draw {di}: oracle must be 1, 0 or None, got {x!r}")
            X[qi, di] = -1 if x is None else int(x)
    return Y, X, nd


def question_values(questions, N: int, J: int, k: int):
    """Per question (those with >= N draws): (p_any in {0,1}, tp in [0,1] or nan)."""
    Y, X, nd = _arrays(questions)
    return _values(Y, X, nd, N, J, k)


def _values(Y, X, nd, N, J, k):
    keep = nd >= N
    yes = (Y[keep, :N, :J] == 1).sum(axis=2)
    acc = yes >= k
    x = X[keep, :N]
    n_acc = acc.sum(axis=1)
    unl = (acc & (x < 0)).any(axis=1)
    pos = (acc & (x == 1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.where((n_acc > 0) & ~unl, pos / np.maximum(n_acc, 1), np.nan)
    return (n_acc > 0).astype(float), tp


def judge_rates(questions, J: int | None = None) -> dict:
    """Pooled p1 = P(Y=1 | X=1) and p0 = P(Y=1 | X=0) over the first J judges (abstains left out)."""
    Y, X, _ = _arrays(questions)
    J = Y.shape[2] if J is None else J
    y = Y[:, :, :J]
    x = np.repeat(X[:, :, None], J, axis=2)
    ok = y >= 0
    n1, n0 = (ok & (x == 1)).sum(), (ok & (x == 0)).sum()
    return {"p1": float(((y == 1) & (x == 1)).sum() / n1) if n1 else math.nan,
            "p0": float(((y == 1) & (x == 0)).sum() / n0) if n0 else math.nan,
            "n_pos": int(n1), "n_neg": int(n0)}


def model_bon(N: int, J: int, k: int, a: float, b: float, p0: float, p1: float, nodes: int = 96) -> dict:
    """Independent-judge model: {"p_any", "tp", "P1", "P0"} for k-of-J judges, N draws, p ~ Beta(a, b)."""
    check_params(a, b, p0, p1)
    if not (1 <= k <= J) or N < 1:
        raise ValueError(f"need N >= 1 and 1 <= k <= J, got N={N}, J={J}, k={k}")
    P1 = float(stats.binom.sf(k - 1, J, p1))
    P0 = float(stats.binom.sf(k - 1, J, p0))
    # E_Beta(a,b)[f(p)] by Gauss-Jacobi: weight (1-x)^(b-1) (1+x)^(a-1) on [-1, 1], p = (1+x)/2
    x, w = roots_jacobi(nodes, b - 1, a - 1)
    p = (1 + x) / 2
    w = w / w.sum()
    acc = p * P1 + (1 - p) * P0
    any_ = -np.expm1(N * np.log1p(-np.minimum(acc, 1.0))) if P1 < 1 or P0 < 1 else np.ones_like(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(acc > 0, p * P1 / acc, 0.0)
    p_any = float(w @ any_)
    tp = float(w @ (any_ * frac) / p_any) if p_any > 0 else math.nan
    return {"p_any": p_any, "tp": tp, "P1": P1, "P0": P0}


def _bound(values, delta, kind):
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None, None, None
    if kind == "hoeffding":
        lo, hi = hoeffding(float(v.sum()), int(v.size), delta, "two-sided")
    else:
        cs = BettingCS(delta, "two-sided", grid=500)
        cs.update_many(v)
        lo, hi = cs.bounds()
    return float(v.mean()), lo, hi


def bon_grid(questions, Ns=None, Js=None, ks=None, delta: float = 0.05, bound: str = "hoeffding",
             model_params: dict | None = None) -> list[dict]:
    """One row per (N, J, k <= J): empirical rates with (1 - delta) two-sided bounds per quantity,
    and, when model_params has a and b (p0/p1 default to the pooled judge_rates of the first J
    judges), the independent-judge model's values."""
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    Y, X, nd = _arrays(questions)
    Ns = list(range(1, int(nd.max()) + 1)) if Ns is None else list(Ns)
    Js = list(range(1, Y.shape[2] + 1)) if Js is None else list(Js)
    rows = []
    for J in Js:
        if not 1 <= J <= Y.shape[2]:
            raise ValueError(f"J={J} outside 1..{Y.shape[2]} (judges in the data)")
        rates = judge_rates(questions, J) if model_params else None
        for k in (range(1, J + 1) if ks is None else [k for k in ks if 1 <= k <= J]):
            for N in Ns:
                p_any, tp = _values(Y, X, nd, N, J, k)
                pa, pa_lo, pa_hi = _bound(p_any, delta, bound)
                t, t_lo, t_hi = _bound(tp, delta, bound)
                row = {"N": N, "J": J, "k": k, "questions": int(p_any.size),
                       "tp_questions": int((~np.isnan(tp)).sum()),
                       "tp": t, "tp_lower": t_lo, "tp_upper": t_hi,
                       "p_any": pa, "p_any_lower": pa_lo, "p_any_upper": pa_hi,
                       "bound": bound, "confidence": 1 - delta}
                if model_params:
                    p0 = model_params.get("p0_judge", rates["p0"])
                    p1 = model_params.get("p1_judge", rates["p1"])
                    if all(math.isfinite(v) for v in (p0, p1)):
                        m = model_bon(N, J, k, model_params["a"], model_params["b"], p0, p1)
                        row.update({"model_tp": m["tp"], "model_p_any": m["p_any"], "judge_p1": p1, "judge_p0": p0})
                rows.append(row)
    return rows
