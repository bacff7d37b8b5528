"""Confidence bounds for a mean in [0, 1] (here: a TP rate from oracle labels).

* ``hoeffding``: fixed-n, valid for any [0, 1]-valued data.
* ``clopper_pearson``: fixed-n, exact for binomial counts (scipy beta quantiles).
* ``betting``: anytime-valid. From counts of binary labels it is the mixture-of-bets confidence
  sequence: for each candidate mean m, a portfolio of constant-bet bettors (bets that the mean is
  m + g, gaps g on a geometric grid) whose total wealth K_m(s, t) depends only on the counts;
  m is rejected once K_m >= 1/delta (Ville's inequality makes this valid at every t at once, so it
  may be re-checked after every label). ``BettingCS`` is the general sequential version for
  [0, 1]-valued observations (Waudby-Smith & Ramdas 2023: hedged capital with predictable
  plug-in bets), giving running lower/upper bounds that hold uniformly over time.

Fixed-n intervals (Hoeffding, Clopper-Pearson) are *not* valid when re-checked after every batch;
sequential strategies in ``judgeflow.oracle.tp.strategies`` pay for repeated looks with a union bound.

``side``: "two-sided" (each side at delta/2), "lower" (P(mean < lower) <= delta, upper = 1) or
"upper" (P(mean > upper) <= delta, lower = 0).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, stats
from scipy.special import logsumexp

__all__ = [
    "KINDS",
    "SIDES",
    "BettingCS",
    "betting",
    "clopper_pearson",
    "gap_grid",
    "hoeffding",
    "hoeffding_radius",
    "interval",
    "log_mixture_wealth",
]

KINDS = ("hoeffding", "clopper_pearson", "betting")
SIDES = ("two-sided", "lower", "upper")


def _check(successes, n, delta, side):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if not (isinstance(successes, (int, np.integer, float, np.floating)) and 0 <= successes <= n):
        raise ValueError(f"successes must be a number in [0, n={n}], got {successes!r}")
    if not (isinstance(delta, (int, float, np.floating)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")


def hoeffding_radius(n: int, delta: float, two_sided: bool = False) -> float:
    """sqrt(log(k/delta) / (2n)), k = 2 for two-sided: the Hoeffding half-width for [0,1] data."""
    if n <= 0:
        return math.inf
    return math.sqrt(math.log((2.0 if two_sided else 1.0) / delta) / (2.0 * n))


def hoeffding(successes: float, n: int, delta: float, side: str = "two-sided") -> tuple[float, float]:
    """Hoeffding bounds for the mean of n values in [0, 1] whose sum is `successes`."""
    _check(successes, n, delta, side)
    if n == 0:
        return 0.0, 1.0
    mean = successes / n
    r = hoeffding_radius(n, delta, two_sided=side == "two-sided")
    lo, hi = max(0.0, mean - r), min(1.0, mean + r)
    return (lo, 1.0) if side == "lower" else (0.0, hi) if side == "upper" else (lo, hi)


def clopper_pearson(successes: int, n: int, delta: float, side: str = "two-sided") -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson) bounds from scipy's beta quantiles."""
    _check(successes, n, delta, side)
    if n == 0:
        return 0.0, 1.0
    s = int(round(successes))
    d = delta / 2 if side == "two-sided" else delta
    lo = 0.0 if s == 0 else float(stats.beta.ppf(d, s, n - s + 1))
    hi = 1.0 if s == n else float(stats.beta.ppf(1 - d, s + 1, n - s))
    return (lo, 1.0) if side == "lower" else (0.0, hi) if side == "upper" else (lo, hi)


# ---- mixture of constant bets (binary data, counts only) ------------------------------------

@lru_cache(maxsize=64)
def gap_grid(min_gap: float = 0.01, max_gap: float = 1.0, k: int = 48, power: float = 1.0):
    """Gaps g on a geometric grid [min_gap, max_gap] and log prior weights ∝ g^-power (sum 1).

    The bettor for gap g bets as if the mean were m + g (Kelly bet lambda = g / (m (1 - m))). Most
    weight sits on small gaps: large gaps need few labels anyway, small ones dominate the cost.
    """
    if not 0 < min_gap <= max_gap:
        raise ValueError(f"need 0 < min_gap <= max_gap, got {min_gap}, {max_gap}")
    g = np.geomspace(min_gap, max_gap, k) if max_gap > min_gap else np.array([min_gap])
    lw = -power * np.log(g)
    lw = lw - logsumexp(lw)
    g.setflags(write=False)
    lw.setflags(write=False)
    return g, lw


def log_mixture_wealth(s, t, m, side: str, gaps, logw):
    """log wealth of the gap-grid bettors against the mean m after s ones in t binary labels.

    side "upper": bets the mean is above m (thetas m + g < 1), a test martingale when mean <= m.
    side "lower": bets the mean is below m (thetas m - g > 0), a test martingale when mean >= m.
    Each component is the likelihood ratio theta^s (1-theta)^(t-s) / (m^s (1-m)^(t-s)), which for
    binary labels is exactly the wealth of the constant bet lambda = (theta - m)/(m(1-m)) on
    1 + lambda (x - m). Components whose theta leaves (0, 1) are dropped (weight 0). Broadcasts
    over s, t, m.
    """
    s, t, m = np.broadcast_arrays(np.asarray(s, float), np.asarray(t, float), np.asarray(m, float))
    g = np.asarray(gaps)[(None,) * s.ndim]
    theta = m[..., None] + g if side == "upper" else m[..., None] - g
    ok = (theta > 0) & (theta < 1)
    th = np.where(ok, theta, 0.5)
    mm = m[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        comp = s[..., None] * np.log(th / mm) + (t - s)[..., None] * np.log((1 - th) / (1 - mm))
        comp = np.where(ok, comp + np.asarray(logw), -np.inf)
        out = logsumexp(comp, axis=-1)
    return out


def _mixture_bound(successes, n, delta, side, min_gap, k, power):
    """Lower (side "upper" wealth) or upper (side "lower") anytime-valid bound at level delta."""
    L = math.log(1.0 / delta)
    eps = 1e-12
    if side == "lower_bound":
        g, lw = gap_grid(min_gap, 1.0, k, power)
        def f_dec(m):  # decreasing in m
            return float(log_mixture_wealth(successes, n, m, "upper", g, lw)) - L
        if f_dec(eps) < 0:
            return 0.0
        hi = successes / n if n else 1.0
        if hi <= eps or f_dec(hi) >= 0:
            return hi
        return float(optimize.brentq(f_dec, eps, hi, xtol=1e-9))
    g, lw = gap_grid(min_gap, 1.0, k, power)
    def f_inc(m):  # increasing in m
        return float(log_mixture_wealth(successes, n, m, "lower", g, lw)) - L
    if f_inc(1 - eps) < 0:
        return 1.0
    lo = successes / n if n else 0.0
    if lo >= 1 - eps or f_inc(lo) >= 0:
        return lo
    return float(optimize.brentq(f_inc, lo, 1 - eps, xtol=1e-9))


def betting(successes: int, n: int, delta: float, side: str = "two-sided", *, min_gap: float = 0.005,
            k: int = 48, power: float = 1.0) -> tuple[float, float]:
    """Anytime-valid mixture-of-bets bounds from binary counts (valid under optional stopping)."""
    _check(successes, n, delta, side)
    if n == 0:
        return 0.0, 1.0
    d = delta / 2 if side == "two-sided" else delta
    lo = _mixture_bound(successes, n, d, "lower_bound", min_gap, k, power) if side != "upper" else 0.0
    hi = _mixture_bound(successes, n, d, "upper_bound", min_gap, k, power) if side != "lower" else 1.0
    return lo, hi


def interval(kind: str, successes, n: int, delta: float, side: str = "two-sided") -> tuple[float, float]:
    """(lower, upper) for the mean of n labels in [0, 1] with `successes` as their sum.

    kind: "hoeffding" | "clopper_pearson" | "betting"; side: "two-sided" | "lower" | "upper".
    n = 0 gives (0, 1).
    """
    if kind == "hoeffding":
        return hoeffding(successes, n, delta, side)
    if kind == "clopper_pearson":
        return clopper_pearson(successes, n, delta, side)
    if kind == "betting":
        return betting(successes, n, delta, side)
    raise ValueError(f"interval kind must be one of {', '.join(KINDS)}, got {kind!r}")


# ---- general sequential betting CS -----------------------------------------------------------

class BettingCS:
    """Anytime-valid confidence sequence for the mean of [0, 1]-valued observations.

    Waudby-Smith & Ramdas (2023), hedged capital process with predictable plug-in bets: for each
    m on a grid, K+_t(m) = prod (1 + l+_i (x_i - m)) and K-_t(m) = prod (1 - l-_i (x_i - m)) with
    l_i = min(c, sqrt(2 log(k/delta) / (sigma2_{i-1} i log(1+i)))) from past data only (truncated at
    c/m resp. c/(1-m)). Two-sided: m is rejected once the hedged capital (K+ + K-)/2 >= 1/delta
    (the average of two test martingales is one); one-sided "lower": K+ >= 1/delta; "upper":
    K- >= 1/delta (with log(1/delta) in the bet). A rejected m
    stays rejected (the running intersection), so `lower`/`upper` only tighten, and
    P(exists t: mean outside [lower_t, upper_t]) <= delta. The grid makes the bounds conservative
    by at most one grid step.
    """

    def __init__(self, delta: float, side: str = "two-sided", grid: int = 1000, c: float = 0.5):
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        if not 0 < c < 1:
            raise ValueError(f"c must be in (0, 1), got {c!r}")
        self.delta, self.side, self.c = delta, side, c
        self.m = np.linspace(0.0, 1.0, grid + 1)
        self.logk_plus = np.zeros_like(self.m)
        self.logk_minus = np.zeros_like(self.m)
        self.rejected = np.zeros(self.m.shape, bool)
        self.t, self.sum, self.mu_hat, self.sq = 0, 0.0, 0.5, 0.25
        self._log_thresh = math.log(1.0 / delta)
        self._k = 2.0 if side == "two-sided" else 1.0

    def _bet(self) -> float:
        t = self.t + 1
        sigma2 = self.sq / t  # regularised running variance from x_1..x_{t-1}
        return math.sqrt(2.0 * math.log(self._k / self.delta) / (sigma2 * t * math.log1p(t)))

    def update(self, x: float) -> None:
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"observation must be in [0, 1], got {x!r}")
        lam = self._bet()
        m = self.m
        with np.errstate(divide="ignore"):
            if self.side in ("two-sided", "lower"):
                lp = np.minimum(lam, self.c / np.maximum(m, 1e-12))
                self.logk_plus += np.log1p(lp * (x - m))
            if self.side in ("two-sided", "upper"):
                lm = np.minimum(lam, self.c / np.maximum(1 - m, 1e-12))
                self.logk_minus += np.log1p(-lm * (x - m))
        if self.side == "two-sided":
            logk = np.logaddexp(self.logk_plus, self.logk_minus) - math.log(2.0)
        elif self.side == "lower":
            logk = self.logk_plus
        else:
            logk = self.logk_minus
        self.rejected |= logk >= self._log_thresh
        # predictable statistics for the next bet
        self.t += 1
        self.sum += x
        self.sq += (x - self.mu_hat) ** 2
        self.mu_hat = (0.5 + self.sum) / (self.t + 1)

    def update_many(self, xs) -> None:
        for x in xs:
            self.update(float(x))

    @property
    def lower(self) -> float:
        if self.side == "upper":
            return 0.0
        keep = np.flatnonzero(~self.rejected)
        if keep.size == 0:  # everything rejected (only with probability <= delta)
            return float(self.sum / max(self.t, 1))
        i = keep[0]
        return float(self.m[i - 1]) if i > 0 else 0.0

    @property
    def upper(self) -> float:
        if self.side == "lower":
            return 1.0
        keep = np.flatnonzero(~self.rejected)
        if keep.size == 0:
            return float(self.sum / max(self.t, 1))
        i = keep[-1]
        return float(self.m[i + 1]) if i + 1 < self.m.size else 1.0

    def bounds(self) -> tuple[float, float]:
        return self.lower, self.upper
