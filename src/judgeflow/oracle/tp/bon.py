"""Best-of-N over a grid of N (draws), J (judges) and k (k-of-J): empirical with bounds, and the model;
and Best-of-N as used in practice: keep the draw the judges score highest.

Input: one list of draws per question, in draw order; a draw is
``{"judges": [[1, 0, None, ...], ...], "oracle": 1 or 0}``: per criterion of its question, the
verdict of each of the J_max judges (None: abstained, which is not a YES), and the oracle label X
(None: unlabelled). A flat list ``[1, 0, None]`` is one criterion. Questions may have different
numbers of criteria (the missing ones always pass). For each (N, J, k) a draw is accepted by the
workflow's own rule (``judging.aggregate``): every criterion has at least k YES among the first J
judges. Per question:

* ``p_any``: 1 if at least one of its first N draws is accepted;
* ``tp``: the expected X of one accepted draw picked uniformly among its first N (the fraction of
  its accepted draws with X = 1); undefined when none is accepted (or one of them is unlabelled).

The question is the independent unit: the rates are means over questions of these per-question
values in [0, 1], and the bounds are finite-sample two-sided bounds for a mean of i.i.d. [0, 1]
values — Hoeffding by default (``bound="hoeffding"``), or the anytime-valid betting confidence
sequence (``bound="betting"``, ``intervals.BettingCS``). A question with fewer than N draws is left
out of that N (``questions`` says how many count): pass complete draws to avoid the selection.

Kept by score (``kept_grid``): a draw may also carry ``"score"`` (the judges' mean P(YES), None:
none) and ``"tiebreak"`` (a seeded uniform number). Of a question's first N draws Best-of-N keeps
the highest score, ties to the highest tiebreak (a seeded random pick, the same draw for every N
that holds the tied ones). Over the questions with at least max(N) draws, all of them scored (a
fixed set for every N), the oracle's pass rate of the kept draw has a Clopper-Pearson interval: the
questions are independent and every kept draw is labelled, a fixed sample, so the pointwise
interval is valid (a kept draw the oracle abstained on is left out of its N and counted).

The independent-judge model beside them: each judge's draw-level verdict (YES on every criterion)
is YES with p1 = P(Y=1|X=1), p0 = P(Y=1|X=0), independently given X, so k-of-J accepts with
P1 = P(Binom(J, p1) >= k) (P0 alike); a draw is accepted with a(p) = p P1 + (1-p) P0, and with
p ~ Beta(a, b):

    P(at least one accepted in N) = E[1 - (1 - a(p))^N]
    TP(N, J, k) = E[(1 - (1 - a(p))^N) p P1 / a(p)] / E[1 - (1 - a(p))^N]

(Gauss-Jacobi quadrature against the Beta density). With one criterion this is the workflow's
rule; with several, k-of-J per criterion accepts draws that no k judges accept whole (judge A YES
on c1 only, B on c2 only: 1-of-2 per criterion accepts), which the model does not describe.

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

from judgeflow.oracle.tp.intervals import BettingCS, clopper_pearson, hoeffding
from judgeflow.oracle.tp.model import check_params

__all__ = ["BOUNDS", "accepted", "accepted_draws", "bon_grid", "judge_rates", "kept_by_score", "kept_grid", "model_bon",
           "question_values"]

BOUNDS = ("hoeffding", "betting")
PASS = 1  # a criterion a question does not have: every judge's YES (it always passes)


def _criteria(d, qi, di) -> list[list]:
    """The draw's verdicts as rows per criterion (a flat list is one criterion)."""
    if not isinstance(d, dict) or "judges" not in d or "oracle" not in d:
        raise ValueError(f"question {qi}, draw {di}: expected {{'judges': [...], 'oracle': x}}")
    rows = d["judges"]
    if not isinstance(rows, list):
        raise ValueError(f"question {qi}, draw {di}: judges must be a list, got {type(rows).__name__}")
    return rows if rows and all(isinstance(r, list) for r in rows) else ([rows] if rows else [])


def _shape(questions) -> tuple[int, int, int]:
    """(draws, criteria, judges) at most over the questions; every criterion row has J judges."""
    jmax, cmax = None, 0
    for qi, q in enumerate(questions):
        for di, d in enumerate(q):
            rows = _criteria(d, qi, di)
            cmax = max(cmax, len(rows))
            for ci, r in enumerate(rows):
                if jmax is None:
                    jmax = len(r)
                if len(r) != jmax:
                    raise ValueError(f"question {qi}, draw {di}, criterion {ci}: {len(r)} judge verdicts, "
                                     f"expected {jmax}")
    if not jmax:
        raise ValueError("no judge verdicts")
    return max(len(q) for q in questions), cmax, jmax


def _arrays(questions):
    """Y (Q, D, C, J) in {1, 0, -1 (abstain)} (criteria a question lacks: 1), X (Q, D) in {1, 0, -1
    (unlabelled)}, draws per question."""
    if not questions:
        raise ValueError("no questions")
    dmax, cmax, jmax = _shape(questions)
    Y = np.full((len(questions), dmax, cmax, jmax), -1, np.int8)
    X = np.full((len(questions), dmax), -1, np.int8)
    nd = np.zeros(len(questions), int)
    for qi, q in enumerate(questions):
        nd[qi] = len(q)
        for di, d in enumerate(q):
            rows = _criteria(d, qi, di)
            Y[qi, di, len(rows):, :] = PASS
            for ci, r in enumerate(rows):
                for ji, v in enumerate(r):
                    if v not in (0, 1, None):
                        raise ValueError(f"question {qi}, draw {di}, criterion {ci}, judge {ji}: verdict must be "
                                         f"1, 0 or None, got {v!r}")
                    Y[qi, di, ci, ji] = -1 if v is None else int(v)
            x = d["oracle"]
            if x not in (0, 1, None):
                raise ValueError(f"question {qi}, draw {di}: oracle must be 1, 0 or None, got {x!r}")
            X[qi, di] = -1 if x is None else int(x)
    return Y, X, nd


def accepted(Y, J: int, k: int):
    """The workflow's rule on verdicts Y (..., C, J_max): every criterion has >= k YES among the first J."""
    return ((Y[..., :J] == 1).sum(axis=-1) >= k).all(axis=-1)


def accepted_draws(questions, J: int, k: int) -> list[list[bool]]:
    """Per question, per draw: accepted by k of the first J judges on every criterion?"""
    Y, _, nd = _arrays(questions)
    acc = accepted(Y, J, k)
    return [acc[qi, :n].tolist() for qi, n in enumerate(nd)]


def question_values(questions, N: int, J: int, k: int):
    """Per question (those with >= N draws): (p_any in {0,1}, tp in [0,1] or nan)."""
    Y, X, nd = _arrays(questions)
    return _values(Y, X, nd, N, J, k)


def _values(Y, X, nd, N, J, k):
    keep = nd >= N
    acc = accepted(Y[keep, :N], J, k)
    x = X[keep, :N]
    n_acc = acc.sum(axis=1)
    unl = (acc & (x < 0)).any(axis=1)
    pos = (acc & (x == 1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.where((n_acc > 0) & ~unl, pos / np.maximum(n_acc, 1), np.nan)
    return (n_acc > 0).astype(float), tp


def _draw_verdicts(Y):
    """Each judge's draw-level verdict from Y (Q, D, C, J): 0 if it said NO on a criterion, else -1 if
    it abstained on one, else 1 (YES on every criterion)."""
    return np.where((Y == 0).any(axis=2), 0, np.where((Y < 0).any(axis=2), -1, 1))


def judge_rates(questions, J: int | None = None) -> dict:
    """Pooled p1 = P(Y=1 | X=1) and p0 = P(Y=1 | X=0) of the first J judges' draw-level verdicts (YES
    on every criterion; abstains left out)."""
    Y, X, _ = _arrays(questions)
    J = Y.shape[3] if J is None else J
    y = _draw_verdicts(Y[..., :J])
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
    Js = list(range(1, Y.shape[3] + 1)) if Js is None else list(Js)
    rows = []
    for J in Js:
        if not 1 <= J <= Y.shape[3]:
            raise ValueError(f"J={J} outside 1..{Y.shape[3]} (judges in the data)")
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
                    assert rates is not None  # computed above whenever model_params is given
                    p0 = model_params.get("p0_judge", rates["p0"])
                    p1 = model_params.get("p1_judge", rates["p1"])
                    if all(math.isfinite(v) for v in (p0, p1)):
                        m = model_bon(N, J, k, model_params["a"], model_params["b"], p0, p1)
                        row.update({"model_tp": m["tp"], "model_p_any": m["p_any"], "judge_p1": p1, "judge_p0": p0})
                rows.append(row)
    return rows


def kept_by_score(question: list[dict], N: int) -> dict:
    """The draw Best-of-N keeps of the question's first N: the highest score, ties to the highest
    tiebreak (a seeded uniform number, so a tie is a random pick that every N agrees on)."""
    first = question[:N]
    if len(first) < N:
        raise ValueError(f"{len(first)} draws, fewer than N={N}")
    for di, d in enumerate(first):
        if d.get("score") is None or "tiebreak" not in d:
            raise ValueError(f"draw {di}: keeping by score needs its 'score' and 'tiebreak', got {d.get('score')!r}, "
                             f"{d.get('tiebreak')!r}")
    return max(first, key=lambda d: (d["score"], d["tiebreak"]))


def _scored(question: list[dict], n: int) -> bool:
    return len(question) >= n and all(d.get("score") is not None for d in question[:n])


def kept_grid(questions, Ns, delta: float = 0.05) -> list[dict]:
    """Per N: the oracle's pass rate of the kept draw over the questions with a (1 - delta) two-sided
    Clopper-Pearson interval, and the mean judges' score of the kept draw. The questions counted are
    those with at least max(Ns) draws, each scored (the same questions for every N); a kept draw the
    oracle did not label is left out of its N (``oracle_abstained``), from both means."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    Ns = sorted(set(Ns))
    use = [q for q in questions if _scored(q, Ns[-1])]
    rows = []
    first = [kept_by_score(q, Ns[0])["oracle"] for q in use]
    for N in Ns:
        kept = [kept_by_score(q, N) for q in use]
        labelled = [d for d in kept if d["oracle"] is not None]
        s, m = sum(d["oracle"] for d in labelled), len(labelled)
        lo, hi = clopper_pearson(s, m, delta, "two-sided") if m else (None, None)
        rows.append({"N": N, "questions": m, "oracle_pass": s / m if m else None, "lower": lo, "upper": hi,
                     "judge_score": float(np.mean([d["score"] for d in labelled])) if m else None,
                     "oracle_abstained": len(kept) - m, "left_out": len(questions) - len(use),
                     "interval": "clopper_pearson", "confidence": 1 - delta,
                     **paired_change(first, [d["oracle"] for d in kept], delta)})
    return rows


def paired_change(before: list, after: list, delta: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """The oracle's pass rate of the kept draw at N against the smallest N, on the same questions (a
    paired design): the mean per-question difference with a (1 - delta) percentile bootstrap interval
    over questions, and the exact McNemar p-value (a binomial test on the discordant questions: kept
    passing at N only, or at the smallest N only). Questions unlabelled at either N are left out."""
    from scipy.stats import binomtest

    pairs = np.array([(a, b) for a, b in zip(before, after) if a is not None and b is not None], dtype=float)
    if not len(pairs):
        return {"change": None, "change_lower": None, "change_upper": None, "mcnemar_p": None,
                "gained": 0, "lost": 0}
    d = pairs[:, 1] - pairs[:, 0]
    gained, lost = int((d > 0).sum()), int((d < 0).sum())
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot, [100 * delta / 2, 100 * (1 - delta / 2)])
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return {"change": float(d.mean()), "change_lower": float(lo), "change_upper": float(hi),
            "mcnemar_p": float(p), "gained": gained, "lost": lost}
