"""Maximum-likelihood fit of the Beta-judge model (p0, p1, a, b) from per-question records.

A record is one question: ``{"n_accept": N or None, "n_max": M, "oracle": 1, 0 or None}`` — the
draw of the first accept (None: no accept within M draws, censored) and the oracle label of that
accepted draw (None: not labelled, or the oracle abstained). Its likelihood under the model
(``judgeflow.oracle.tp.model``):

    labelled x:   P(N = n, X_N = x) = E[q^{n-1} (p p1 if x = 1 else (1-p) p0)]
    unlabelled:   P(N = n) = sum over x of the above
    censored:     P(N > M) = E[q^M]

Unlabelled accepted records are missing at random given N (a labelling strategy picks items by
their N only), so summing over x is the right likelihood for them. The fit maximises the sum of
log-likelihoods over 0 < p0 < p1 < 1, a, b > 0, reparametrised as p1 = expit(u), p0 = p1 expit(v),
a = exp(alpha), b = exp(beta), with scipy.optimize from a few starting points.

The constraint p0 < p1 (the judges accept a right draw more often than a wrong one) is an assumption,
and judges without signal break it. So the model is also fitted without it (p0 = expit(v) on its own):
`constraint_binds` is true when that fit is better (log-likelihood higher by more than 1e-6 per
record) with p0 >= p1, and its estimates are reported beside the constrained ones (`p0_free`,
`p1_free`, `loglik_free`). A report must then say that the constrained fit sits on its boundary.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import optimize
from scipy.special import expit, logit

from judgeflow.oracle.tp import model

__all__ = ["check_records", "fit_model", "log_likelihood", "simulate_records"]


def check_records(records) -> Counter:
    """Counts of (kind, n, x) with kind 'label' (x = 0/1), 'accept' (unlabelled) or 'censored' (n = n_max).
    ValueError names the record (0-based position) and the field that is wrong."""
    counts: Counter = Counter()
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"record {i}: expected an object with n_accept, n_max, oracle, got {type(r).__name__}")
        m = r.get("n_max")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"record {i}: n_max must be an integer >= 1, got {m!r}")
        n = r.get("n_accept")
        x = r.get("oracle")
        if n is None:
            counts[("censored", int(m), None)] += 1
            continue
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= m:
            raise ValueError(f"record {i}: n_accept must be None or an integer in [1, n_max={m}], got {n!r}")
        if x is None:
            counts[("accept", int(n), None)] += 1
        elif x in (0, 1) and not isinstance(x, str):
            counts[("label", int(n), int(x))] += 1
        else:
            raise ValueError(f"record {i}: oracle must be 1, 0 or None, got {x!r}")
    return counts


def _ll_counts(counts: Counter, a, b, p0, p1) -> float:
    top = max(n for (_, n, _) in counts)
    x1, x0, none = model.log_tables(top, a, b, p0, p1)
    total = 0.0
    for (kind, n, x), c in counts.items():
        if kind == "label":
            v = x1[n - 1] if x == 1 else x0[n - 1]
        elif kind == "accept":
            v = np.logaddexp(x1[n - 1], x0[n - 1])
        else:
            v = none[n - 1]
        if v == -math.inf:
            return -math.inf
        total += c * v
    return float(total)


def log_likelihood(records, a: float, b: float, p0: float, p1: float) -> float:
    """Sum of the records' log-likelihoods under the model (validated parameters)."""
    model.check_params(a, b, p0, p1)
    return _ll_counts(check_records(records), a, b, p0, p1)


def _unpack(z, constrained: bool = True):
    u, v, la, lb = z
    p1 = float(expit(u))
    p0 = p1 * float(expit(v)) if constrained else float(expit(v))
    return float(np.exp(np.clip(la, -12, 12))), float(np.exp(np.clip(lb, -12, 12))), p0, p1


def fit_model(records, starts: int = 4, seed: int = 0) -> dict:
    """MLE of (a, b, p0, p1) under p0 < p1, and of the model without that constraint. Returns {"ok", "a",
    "b", "p0", "p1", "loglik", "constraint_binds", "p0_free", "p1_free", "loglik_free", "records",
    "labelled", "censored", "message"}; ok is False (with the reason in message) when there is nothing to fit:
    no records, or no oracle label (X is then unobserved and p0, p1, a, b are not identified)."""
    counts = check_records(records)
    n_rec = sum(counts.values())
    labelled = sum(c for (k, _, _), c in counts.items() if k == "label")
    censored = sum(c for (k, _, _), c in counts.items() if k == "censored")
    base = {"records": n_rec, "labelled": labelled, "censored": censored}
    if n_rec == 0:
        return {"ok": False, "message": "no records", **base}
    if labelled == 0:
        return {"ok": False, "message": "no oracle-labelled record: p0, p1, a, b are not identified", **base}

    # starting points: the labelled accepts' positive rate suggests p; a spread of judge qualities
    lab_pos = sum(c for (k, _, x), c in counts.items() if k == "label" and x == 1)
    pbar = min(max(lab_pos / labelled, 0.05), 0.95)
    rng = np.random.default_rng(seed)
    inits = [(0.85, 0.3, pbar, 1.0), (0.7, 0.5, 0.5, 1.0), (0.95, 0.1, pbar, 3.0), (0.6, 0.2, 0.5, 0.5)]
    while len(inits) < starts:
        inits.append((rng.uniform(0.55, 0.99), rng.uniform(0.05, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.3, 5)))
    inits = inits[:max(starts, 1)]
    best = _maximise(counts, n_rec, inits, constrained=True)
    free = _maximise(counts, n_rec, inits, constrained=False)
    a, b, p0, p1 = _unpack(best.x)
    _, _, p0_free, p1_free = _unpack(free.x, constrained=False)
    ok = bool(np.isfinite(best.fun) and best.fun < 1e299)
    binds = bool(ok and np.isfinite(free.fun) and free.fun < best.fun - 1e-6 and p0_free >= p1_free)
    return {"ok": ok, "a": a, "b": b, "p0": p0, "p1": p1, "loglik": float(-best.fun * n_rec),
            "constraint_binds": binds, "p0_free": p0_free, "p1_free": p1_free,
            "loglik_free": float(-free.fun * n_rec), "message": str(best.message), **base}


def _maximise(counts: Counter, n_rec: int, inits: list[tuple], constrained: bool):
    """The best of a Nelder-Mead then L-BFGS-B minimisation of the mean negative log-likelihood per start."""
    def nll(z):
        a, b, p0, p1 = _unpack(z, constrained)
        if not (0 < p0 < 1 and 0 < p1 < 1) or (constrained and not p0 < p1):
            return 1e300
        v = _ll_counts(counts, a, b, p0, p1)
        return -v / n_rec if math.isfinite(v) else 1e300

    best = None
    for p1, ratio, mean, conc in inits:
        second = logit(ratio) if constrained else logit(p1 * ratio)
        z0 = np.array([logit(p1), second, math.log(mean * conc * 2), math.log((1 - mean) * conc * 2)])
        res = optimize.minimize(nll, z0, method="Nelder-Mead",
                                options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 4000, "maxfev": 8000})
        res = optimize.minimize(nll, res.x, method="L-BFGS-B") if np.isfinite(res.fun) else res
        if best is None or res.fun < best.fun:
            best = res
    return best


def simulate_records(n_questions: int, n_max: int, a: float, b: float, p0: float, p1: float,
                     label_fraction: float = 1.0, seed: int = 0) -> list[dict]:
    """Records drawn from the model itself, draw by draw (for tests and planning)."""
    model.check_params(a, b, p0, p1)
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, n_questions)
    x = rng.random((n_questions, n_max)) < p[:, None]
    y = rng.random((n_questions, n_max)) < np.where(x, p1, p0)
    any_y = y.any(axis=1)
    assert isinstance(any_y, np.ndarray)  # one per question (numpy's stubs also allow a scalar)
    first = y.argmax(axis=1)
    out = []
    for i in range(n_questions):
        if not any_y[i]:
            out.append({"n_accept": None, "n_max": n_max, "oracle": None})
            continue
        lab = int(x[i, first[i]]) if rng.random() < label_fraction else None
        out.append({"n_accept": int(first[i]) + 1, "n_max": n_max, "oracle": lab})
    return out
