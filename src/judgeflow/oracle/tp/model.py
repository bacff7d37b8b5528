"""The Beta-judge model of TP(N): closed forms for sampling until the judges accept.

A question's p = P(X=1) of one draw is ~ Beta(a, b); given p, draws are i.i.d.; the (aggregated)
judge says Y=1 with p1 = P(Y=1 | X=1) and p0 = P(Y=1 | X=0). One draw is rejected with
probability q(p) = (1-p)(1-p0) + p(1-p1). Sampling stops at the first accepted draw N:

    P(N=n, X_n=1) = E[q^{n-1} p p1],      P(N=n, X_n=0) = E[q^{n-1} (1-p) p0],
    TP(n) = P(X_n=1 | N=n) = P(N=n, X_n=1) / P(N=n),
    P(N > n) = E[q^n]   (no accept within n draws).

q^{n-1} is expanded binomially in its two non-negative terms,
q^{n-1} = sum_j C(n-1, j) (1-p1)^j (1-p0)^{n-1-j} p^j (1-p)^{n-1-j}, so every expectation is a sum
of Beta moments E[p^u (1-p)^v] = B(a+u, b+v) / B(a, b); all terms are positive and summed in log
space (betaln / logsumexp), which stays exact to rounding for n in the hundreds or thousands.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import betaln, gammaln, logsumexp

__all__ = [
    "beta_moment_log",
    "check_params",
    "curve_table",
    "log_joint",
    "log_no_accept",
    "p_accept_within",
    "p_first_accept",
    "tp",
    "tp_curve",
]


def check_params(a: float, b: float, p0: float, p1: float) -> None:
    """ValueError naming the parameter unless a, b > 0 (finite) and p0, p1 in [0, 1]."""
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0 (Beta({name}=...) prior), got {v!r}")
    for name, v in (("p0", p0), ("p1", p1)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or not (0.0 <= v <= 1.0):
            raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")


def _check_n(n: int, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def beta_moment_log(a: float, b: float, u, v):
    """log E[p^u (1-p)^v] for p ~ Beta(a, b) = betaln(a+u, b+v) - betaln(a, b)."""
    return betaln(a + np.asarray(u, float), b + np.asarray(v, float)) - betaln(a, b)


def _log_e_q_pow(m: int, a: float, b: float, p0: float, p1: float, du: int, dv: int) -> float:
    """log E[q^m p^du (1-p)^dv] by the binomial expansion of q^m."""
    j = np.arange(m + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1-p1)^j (1-p0)^(m-j) with 0^0 = 1
        l1 = np.where(j > 0, j * _log(1 - p1), 0.0) if p1 == 1 else j * _log(1 - p1)
        l0 = np.where(m - j > 0, (m - j) * _log(1 - p0), 0.0) if p0 == 1 else (m - j) * _log(1 - p0)
        terms = (gammaln(m + 1) - gammaln(j + 1) - gammaln(m - j + 1)) + l1 + l0 \
            + beta_moment_log(a, b, j + du, m - j + dv)
    if np.all(np.isneginf(terms)):
        return -math.inf
    return float(logsumexp(terms))


def log_joint(n: int, x: int, a: float, b: float, p0: float, p1: float) -> float:
    """log P(N = n, X_N = x): the first accept is draw n and its oracle label is x."""
    check_params(a, b, p0, p1)
    n = _check_n(n)
    if x == 1:
        return _log(p1) + _log_e_q_pow(n - 1, a, b, p0, p1, 1, 0)
    if x == 0:
        return _log(p0) + _log_e_q_pow(n - 1, a, b, p0, p1, 0, 1)
    raise ValueError(f"x must be 0 or 1, got {x!r}")


def log_no_accept(n: int, a: float, b: float, p0: float, p1: float) -> float:
    """log P(N > n) = log E[q^n]: no accept within n draws."""
    check_params(a, b, p0, p1)
    n = _check_n(n, minimum=0)
    return _log_e_q_pow(n, a, b, p0, p1, 0, 0)


def tp(n: int, a: float, b: float, p0: float, p1: float) -> float:
    """TP(n) = P(X_n = 1 | first accept at draw n); nan when an accept at n is impossible."""
    l1, l0 = log_joint(n, 1, a, b, p0, p1), log_joint(n, 0, a, b, p0, p1)
    if l1 == -math.inf and l0 == -math.inf:
        return math.nan
    return float(1.0 / (1.0 + math.exp(l0 - l1))) if l1 > -math.inf else 0.0


def tp_curve(n_max: int, *, a: float, b: float, p0: float, p1: float) -> list[float]:
    """[TP(1), ..., TP(n_max)]."""
    n_max = _check_n(n_max, "n_max")
    return [tp(n, a, b, p0, p1) for n in range(1, n_max + 1)]


def p_first_accept(n: int, a: float, b: float, p0: float, p1: float) -> float:
    """P(N = n): the first accepted draw is draw n."""
    return float(math.exp(log_joint(n, 1, a, b, p0, p1)) + math.exp(log_joint(n, 0, a, b, p0, p1)))


def p_accept_within(n: int, a: float, b: float, p0: float, p1: float) -> float:
    """P(N <= n) = 1 - E[q^n]."""
    return float(-math.expm1(log_no_accept(n, a, b, p0, p1)))


def curve_table(n_max: int, *, a: float, b: float, p0: float, p1: float) -> list[dict]:
    """Rows {n, tp, p_first_accept, p_accept_within} for n = 1..n_max."""
    n_max = _check_n(n_max, "n_max")
    check_params(a, b, p0, p1)
    return [{"n": n, "tp": tp(n, a, b, p0, p1), "p_first_accept": p_first_accept(n, a, b, p0, p1),
             "p_accept_within": p_accept_within(n, a, b, p0, p1)} for n in range(1, n_max + 1)]


def log_tables(n_max: int, a: float, b: float, p0: float, p1: float):
    """Vectorised (log P(N=n, X=1), log P(N=n, X=0), log P(N>n)) for n = 1..n_max (arrays).

    The same binomial expansion as ``log_joint``/``log_no_accept``, as one (n, j) table; used by
    the fit, where the likelihood is evaluated many times.
    """
    check_params(a, b, p0, p1)
    n_max = _check_n(n_max, "n_max")
    m = np.arange(n_max + 1)[:, None]          # exponent of q: 0..n_max
    j = np.arange(n_max + 1)[None, :]
    valid = j <= m
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = np.where(j > 0, j * _log(1 - p1), 0.0)
        l0 = np.where(m - j > 0, (m - j) * _log(1 - p0), 0.0)
        base = gammaln(m + 1) - gammaln(j + 1) - gammaln(np.maximum(m - j, 0) + 1) + l1 + l0
        base = np.where(valid, base, -np.inf)
        jj, mj = np.where(valid, j, 0), np.where(valid, m - j, 0)
        e10 = logsumexp(base + beta_moment_log(a, b, jj + 1, mj), axis=1)      # E[q^m p]
        e01 = logsumexp(base + beta_moment_log(a, b, jj, mj + 1), axis=1)      # E[q^m (1-p)]
        e00 = logsumexp(base + beta_moment_log(a, b, jj, mj), axis=1)          # E[q^m]
    x1 = _log(p1) + e10[:n_max]
    x0 = _log(p0) + e01[:n_max]
    return x1, x0, e00[1:]
