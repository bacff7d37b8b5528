"""Oracle labelling strategies: which accepted draws (by their N) the oracle labels, under a budget.

One interface, driven in batches by the workflow (a batch is sent to the oracle concurrently)::

    s = make_strategy("fixed_sequence", n_max=15, threshold=0.8, delta=0.05, budget=100_000, seed=0,
                      batch_size=32)
    while (batch := s.propose(available)):   # available: {n: unlabelled accepted items left at N=n}
        for n, label in zip(batch, oracle(batch)):
            s.update(n, label)                # 1, 0, or None (abstain: a call, never a label)
    s.result()                                # JSON-able: nstar, calls, abstains, per_n bounds, ...

The goal is N* = the largest n with TP(n') >= T for every n' <= n, certified with probability
>= 1 - delta of not overshooting. A strategy never asks for an n with nothing available (an
exhausted n is undecided and ends the certification there); running out of budget ends it too;
nothing certified is the result nstar = 0, not an error.

Every strategy only asks, in one batch, for labels up to the next point where it could decide
something, so the outcome is the same whether labels come back one at a time or as a batch
(``update_counts``), and no label is bought after a decision could have been made.

* ``uniform`` (baseline): every n in 1..n_max gets the same number of labels, on a geometric
  schedule of looks; a Hoeffding lower bound at delta / n_max (Bonferroni over n) / (j (j+1)) at
  look j certifies (a union bound over the looks, since re-checking a fixed-n interval is not valid
  otherwise); the matching upper bound below T decides that n fails.
* ``bisection`` (the seed's scheme): assumes TP(n) decreasing; binary search for the crossing of
  T, one n at a time, Hoeffding bounds with the same union bound over looks and over the at most
  ceil(log2(n_max + 1)) tests. Valid only under the monotonicity assumption.
* ``fixed_sequence`` (Learn-then-Test): tests H0_n: TP(n) <= T for n = 1, 2, ... in order, each at
  level delta, and stops at the first test not rejected; no monotonicity assumed. Each test is a
  test martingale (a portfolio of constant-bet bettors, ``intervals.log_mixture_wealth``), so it
  is checked after every label and labelling n stops as soon as the wealth reaches 1/delta. A
  futility rule gives up on n once an anytime-valid upper bound at the loose level
  ``futility_level`` falls below T (or after ``max_labels_per_n``); giving up never rejects a
  null, so it cannot raise the error rate — it only trades power for calls.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import ClassVar

import numpy as np

from judgeflow.oracle.tp.intervals import betting, gap_grid, hoeffding, log_mixture_wealth

__all__ = ["STRATEGIES", "Bisection", "FixedSequence", "PredictionPowered", "Strategy", "Uniform", "make_strategy"]

UNTESTED, TESTING, CERTIFIED, FAILED, EXHAUSTED, UNDECIDED = (
    "untested", "testing", "certified", "failed", "exhausted", "undecided")


def _number(name, v, lo, hi, lo_open=True, hi_open=True):
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {v!r}")
    return float(v)


def _int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


class Strategy:
    """Shared bookkeeping: calls, abstains, budget, per-n counts, pending requests, result()."""

    name = "base"
    needs_proxy = False      # True: driven by select() / update_draws() with a proxy score per draw
    defaults: ClassVar[dict] = {}

    def __init__(self, n_max: int, threshold: float, delta: float, budget: int = 100_000, seed: int = 0,
                 batch_size: int | None = None, **options):
        self.n_max = _int("n_max", n_max, 1)
        self.threshold = _number("threshold", threshold, 0, 1)
        self.delta = _number("delta", delta, 0, 1)
        self.budget = _int("budget", budget, 0)
        self.seed = seed
        self.batch_size = None if batch_size is None else _int("batch_size", batch_size, 1)
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"strategy {self.name}: unknown option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(self.defaults)) or 'none'})")
        self.options = {**self.defaults, **options}
        self.calls = 0
        self.abstains = 0
        self.budget_exhausted = False
        self.done = False
        self.labels = [0] * (self.n_max + 1)       # index n; abstains excluded
        self.positives = [0] * (self.n_max + 1)
        self.abstained = [0] * (self.n_max + 1)
        self.status = [UNTESTED] * (self.n_max + 1)
        self.pending: Counter = Counter()
        self.stop_reason: str | None = None

    # --- the driver's side ---------------------------------------------------------------
    def propose_counts(self, available) -> dict[int, int]:
        """{n: how many labels to ask for at n} for the next batch; {} when finished."""
        if self.pending:
            raise RuntimeError(f"strategy {self.name}: {sum(self.pending.values())} proposed label(s) were "
                               "never returned through update(); return every label (None for an abstain)")
        if self.done:
            return {}
        avail = {n: int(available.get(n, 0)) for n in range(1, self.n_max + 1)}
        plan = self._plan(avail)
        plan = {n: k for n, k in plan.items() if k > 0}
        if not plan:
            self.done = True
            return {}
        for n, k in plan.items():
            assert 0 < k <= avail[n], (n, k, avail[n])
        left = self.budget - self.calls
        assert sum(plan.values()) <= left
        self.pending.update(plan)
        return plan

    def propose(self, available) -> list[int]:
        """The next batch as a list of n (repeats allowed, at most batch_size long); [] when finished."""
        plan = self.propose_counts(available)
        return [n for n in sorted(plan) for _ in range(plan[n])]

    def update(self, n: int, label) -> None:
        """One oracle answer for a proposed n: 1, 0 (True/False too) or None (abstained)."""
        self._take(n, 1)
        if label is None:
            self.abstains += 1
            self.abstained[n] += 1
        elif isinstance(label, (int, float, np.integer, np.floating)) and label in (0, 1):
            self.labels[n] += 1
            self.positives[n] += int(label)
        else:
            self.pending[n] += 1
            self.calls -= 1
            raise ValueError(f"label must be 1, 0 or None (abstain), got {label!r}")
        self._after(n)

    def update_counts(self, n: int, positives: int, negatives: int, abstains: int = 0) -> None:
        """All answers of a proposed batch at n at once (what a simulator uses)."""
        k = positives + negatives + abstains
        self._take(n, k)
        self.abstains += abstains
        self.abstained[n] += abstains
        self.labels[n] += positives + negatives
        self.positives[n] += positives
        self._after(n)

    def _take(self, n, k):
        if self.pending.get(n, 0) < k or k < 0:
            raise ValueError(f"strategy {self.name}: got {k} answer(s) at n={n} but only "
                             f"{self.pending.get(n, 0)} proposed and outstanding")
        self.pending[n] -= k
        if not self.pending[n]:
            del self.pending[n]
        self.calls += k

    # --- helpers for subclasses ------------------------------------------------------------
    def _cap(self, k: int, n: int, avail: dict, used: int = 0) -> int:
        """k limited by what is available at n, the budget left and the batch size."""
        k = min(k, avail[n], self.budget - self.calls - used)
        if self.batch_size is not None:
            k = min(k, self.batch_size - used)
        return max(k, 0)

    def _out_of_budget(self, used: int = 0) -> bool:
        if self.calls + used >= self.budget:
            self.budget_exhausted = True
            self.stop_reason = self.stop_reason or "budget"
            return True
        return False

    # --- to implement ----------------------------------------------------------------------
    def _plan(self, avail: dict) -> dict[int, int]:
        raise NotImplementedError

    def _after(self, n: int) -> None:
        raise NotImplementedError

    def nstar(self) -> int:
        raise NotImplementedError

    def bounds(self, n: int) -> tuple[float | None, float | None]:
        raise NotImplementedError

    def result(self, with_bounds: bool = True) -> dict:
        """JSON-able summary: certified nstar, calls spent, and per n the labels and bounds
        (lower/upper None where n has no labels, or with_bounds=False)."""
        per_n = {}
        for n in range(1, self.n_max + 1):
            lo, hi = self.bounds(n) if self.labels[n] and with_bounds else (None, None)
            per_n[n] = {"labels": self.labels[n], "positives": self.positives[n], "abstains": self.abstained[n],
                        "lower": lo, "upper": hi, "status": self.status[n],
                        "decided": self.status[n] in (CERTIFIED, FAILED)}
        return {"nstar": self.nstar(), "threshold": self.threshold, "delta": self.delta, "strategy": self.name,
                "calls": self.calls, "abstains": self.abstains, "budget": self.budget,
                "budget_exhausted": self.budget_exhausted, "stop_reason": self.stop_reason,
                "options": dict(self.options), "bounds": self.bounds_note, "per_n": per_n}

    bounds_note = ""


# ---------------------------------------------------------------------------------------------

class _HoeffdingLooks:
    """Geometric look schedule m_j = ceil(first * ratio^(j-1)) labels, level delta_test / (j (j+1))."""

    def __init__(self, first: int, ratio: float, delta_test: float):
        self.first, self.ratio, self.delta_test = first, ratio, delta_test

    @classmethod
    def from_options(cls, options: dict, delta_test: float) -> _HoeffdingLooks:
        """From a strategy's checked `first_look` and `look_ratio` options."""
        return cls(_int("first_look", options["first_look"], 1),
                   _number("look_ratio", options["look_ratio"], 1, math.inf), delta_test)

    def size(self, j: int) -> int:
        return int(math.ceil(self.first * self.ratio ** (j - 1)))

    def level(self, j: int) -> float:
        return self.delta_test / (j * (j + 1))

    def look(self, successes: int, m: int, j: int) -> tuple[float, float]:
        """One-sided lower and upper Hoeffding bounds, each at level(j). Only the lower bound can
        certify (wrongly with probability <= level(j)); the upper one only gives up on n, which costs
        power, never validity, so it needs no share of delta."""
        lo, _ = hoeffding(successes, m, self.level(j), "lower")
        _, hi = hoeffding(successes, m, self.level(j), "upper")
        return lo, hi


class Uniform(Strategy):
    """Same labels for every n, geometric looks, Hoeffding with Bonferroni over n and over looks."""

    name = "uniform"
    defaults: ClassVar[dict] = {"first_look": 100, "look_ratio": 2.0}
    bounds_note = "one-sided Hoeffding lower and upper at the last look j, each at level delta/n_max/(j(j+1))"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.looks = _HoeffdingLooks.from_options(self.options, self.delta / self.n_max)
        self.j = 1                       # the look being filled
        self.look_of = [0] * (self.n_max + 1)
        self.bound = [(0.0, 1.0)] * (self.n_max + 1)
        self.active = list(range(1, self.n_max + 1))   # n still labelled at this look

    def _plan(self, avail):
        while True:
            target = self.looks.size(self.j)
            plan: dict[int, int] = {}
            used = 0
            for n in self.active:
                need = target - self.labels[n]
                if need <= 0:
                    continue
                if avail[n] == 0:
                    if self.status[n] != CERTIFIED:
                        self.status[n] = EXHAUSTED
                    continue
                if self._out_of_budget(used):
                    return plan
                k = self._cap(need, n, avail, used)
                if k:
                    plan[n] = k
                    used += k
                if self.batch_size is not None and used >= self.batch_size:
                    return plan
            if plan:
                return plan
            self._close_look()
            if self.done:
                return {}

    def _after(self, n):
        pass  # decisions only when a look is complete (_close_look)

    def _close_look(self):
        """Every active n has its look-j labels (or is exhausted): decide, then move to look j+1."""
        target = self.looks.size(self.j)
        for n in self.active:
            if self.labels[n] >= target or self.status[n] == EXHAUSTED:
                m = self.labels[n]
                if m == 0:
                    continue
                lo, hi = self.looks.look(self.positives[n], m, self.j)
                self.bound[n], self.look_of[n] = (lo, hi), self.j
                if self.status[n] in (UNTESTED, TESTING):
                    self.status[n] = CERTIFIED if lo > self.threshold else FAILED if hi < self.threshold else TESTING
        # the answer is settled once the first non-certified n is decided (failed) or all are certified
        first = next((n for n in range(1, self.n_max + 1) if self.status[n] != CERTIFIED), None)
        if first is None or self.status[first] in (FAILED, EXHAUSTED):
            if first is not None and self.status[first] == EXHAUSTED:
                self.stop_reason = "exhausted"
            self.done = True
            return
        # labelling above a failed n is pointless: N* is below it
        failed = [n for n in range(1, self.n_max + 1) if self.status[n] == FAILED]
        top = failed[0] if failed else self.n_max
        self.active = [n for n in range(1, top + 1) if self.status[n] != EXHAUSTED]
        self.j += 1

    def nstar(self):
        k = 0
        while k < self.n_max and self.status[k + 1] == CERTIFIED:
            k += 1
        return k

    def bounds(self, n):
        if self.look_of[n]:
            return self.bound[n]
        return self.looks.look(self.positives[n], self.labels[n], max(self.j, 1))


class Bisection(Strategy):
    """Binary search for the crossing of T assuming TP decreasing; Hoeffding tests with looks."""

    name = "bisection"
    defaults: ClassVar[dict] = {"first_look": 100, "look_ratio": 1.5}
    bounds_note = "one-sided Hoeffding lower and upper at the last look j, each at level delta/tests/(j(j+1))"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.max_tests = max(1, math.ceil(math.log2(self.n_max + 1)))
        self.looks = _HoeffdingLooks.from_options(self.options, self.delta / self.max_tests)
        self.lo, self.hi = 0, self.n_max + 1
        self.mid = (self.lo + self.hi + 1) // 2
        self.j = 1
        self.bound = {}
        self.status[self.mid] = TESTING

    def _plan(self, avail):
        if self.hi - self.lo <= 1:
            return {}
        n = self.mid
        need = self.looks.size(self.j) - self.labels[n]
        if avail[n] == 0:
            self.status[n] = EXHAUSTED
            self.stop_reason = "exhausted"
            return {}
        if self._out_of_budget():
            return {}
        return {n: self._cap(need, n, avail)}

    def _after(self, n):
        if n != self.mid or self.labels[n] < self.looks.size(self.j):
            return
        lo, hi = self.looks.look(self.positives[n], self.labels[n], self.j)
        self.bound[n] = (lo, hi)
        if lo > self.threshold:
            self.status[n], self.lo = CERTIFIED, n
        elif hi < self.threshold:
            self.status[n], self.hi = FAILED, n
        else:
            self.j += 1
            return
        if self.hi - self.lo > 1:
            self.mid, self.j = (self.lo + self.hi + 1) // 2, 1
            self.status[self.mid] = TESTING
        else:
            self.done = True

    def nstar(self):
        return self.lo  # under monotonicity every n <= lo is certified by the test at lo

    def bounds(self, n):
        if n in self.bound:
            return self.bound[n]
        return self.looks.look(self.positives[n], self.labels[n], self.j)


class _CountBoundary:
    """For binary labels, the test martingale log_mixture_wealth(s, t) >= level is a boundary in s.

    side "upper" (certify): c[t] = the fewest ones in t labels with wealth >= exp(level) (t+1: none).
    side "lower" (futility): c[t] = the most ones in t labels with wealth >= exp(level) (-1: none).
    Both are non-decreasing in t with steps of at most 1. Computed lazily in chunks (vectorised
    bisection on s), shared by every strategy with the same parameters.
    """

    CHUNK = 4096

    def __init__(self, m, level, side, min_gap, max_gap, k, power):
        self.m, self.level, self.side = m, level, side
        self.grid = gap_grid(min_gap, max_gap, k, power)
        self.c = np.array([1 if side == "upper" else -1], dtype=np.int64)  # t = 0: nothing decided

    def _logk(self, s, t):
        return log_mixture_wealth(s, t, self.m, self.side, *self.grid)

    def _extend(self):
        t0 = self.c.size
        t = np.arange(t0, t0 + self.CHUNK)
        prev = int(self.c[-1])
        if self.side == "upper":   # smallest s in [max(prev,0), min(prev+C, t)] with logk >= level, else t+1
            lo = np.full(t.shape, max(prev, 0))
            hi = np.minimum(prev + (t - t0) + 1, t + 1)   # hi = t+1 stands for "impossible"
            while np.any(lo < hi):
                mid = (lo + hi) // 2
                ok = (mid <= t) & (self._logk(np.minimum(mid, t), t) >= self.level)
                act = lo < hi
                hi = np.where(act & ok, mid, hi)
                lo = np.where(act & ~ok, mid + 1, lo)
            new = lo
        else:                      # largest s in [prev, prev+C] with logk >= level, else -1
            lo = np.full(t.shape, prev)
            hi = np.minimum(prev + (t - t0) + 1, t)
            while np.any(lo < hi):
                mid = (lo + hi + 1) // 2
                ok = self._logk(mid, t) >= self.level
                act = lo < hi
                lo = np.where(act & ok, mid, lo)
                hi = np.where(act & ~ok, mid - 1, hi)
            new = lo
        self.c = np.concatenate([self.c, new.astype(np.int64)])

    def upto(self, t):
        while self.c.size <= t:
            self._extend()
        return self.c

    def at(self, t):
        return int(self.upto(t)[t])


class _NoBoundary:
    """Futility switched off: c[t] = -1 (never)."""

    def upto(self, t):
        return np.full(t + 1, -1, dtype=np.int64)

    def at(self, t):
        return -1


_BOUNDARIES: dict = {}


def _count_boundary(m, level, side, min_gap, max_gap, k, power) -> _CountBoundary:
    key = (m, level, side, min_gap, max_gap, k, power)
    if key not in _BOUNDARIES:
        _BOUNDARIES[key] = _CountBoundary(*key)
    return _BOUNDARIES[key]


class FixedSequence(Strategy):
    """Learn-then-Test fixed sequence with a betting test martingale per n and futility stopping.

    H0_n: TP(n) <= T is tested for n = 1, 2, ... in order, each at level delta; labels for n+1 are
    asked only once n is certified, and the first n not certified ends the run (N* = n - 1). The
    family-wise error (certifying some n with TP(n) < T) is <= delta without any monotonicity: the
    first such n in the sequence must be rejected, which its own test does with probability <= delta.

    Test of H0_n: the wealth of a portfolio of constant-bet bettors, bettor g betting as if TP were
    T + g (Kelly bet lambda = g / (T (1-T)) on 1 + lambda (x - T)), gaps g on a geometric grid from
    ``min_gap`` to 1 (``grid`` points) with prior weight ∝ g^-``power``. For binary labels the wealth
    is sum_g w_g (theta_g/T)^s ((1-theta_g)/(1-T))^(t-s), a function of the counts (s ones in t
    labels), so the rejection rule is a precomputed boundary in s; H0_n is rejected as soon as the
    wealth reaches 1/delta (Ville: P(ever) <= delta under H0_n). Weight on small gaps is what buys
    the hard tests (TP just above T) that dominate the cost; a mixture (rather than one plug-in bet)
    makes the wealth order-free and costs about 0.5 log(t) nats of regret.

    Futility: n is given up once a second portfolio, betting TP below T (gaps ``futility_gaps``), has
    wealth >= 1/``futility_level`` (an anytime upper bound at that loose level fell below T), or after
    ``max_labels_per_n`` labels. Futility never rejects a null, so it cannot raise the error rate;
    a looser level stops a false n sooner and gives up a true one more often. The defaults
    (futility_level 0.6, min_gap 0.01, power 1.5) were chosen on the issue's curve
    (benchmarks/oracle_budget.py: median ~5,700-5,800 calls, N* = 5 in ~95% of runs, error 0).
    ``futility_level=None`` switches futility off.

    Indifference margin ``min_effect`` (eps, default 0.01): a third portfolio bets TP(n) < T + eps,
    at level delta. When it reaches 1/delta (an anytime upper bound at level delta fell below
    T + eps), n is given up as *undecided* (status "undecided", stop_reason "indifference"). Near
    the threshold this bounds the cost by about 2 T(1-T) log(1/delta) / eps^2 labels instead of
    the budget; it never rejects a null, so validity is untouched, and it gives up an n with
    TP(n) >= T + eps with probability <= delta. ``min_effect=None`` (or 0) switches it off.
    benchmarks/oracle_margin.py measures eps on curves other than the issue's.
    """

    name = "fixed_sequence"
    defaults: ClassVar[dict] = {"min_gap": 0.01, "grid": 48, "power": 1.5, "futility_level": 0.6,
                                "futility_gaps": (0.002, 0.1), "max_labels_per_n": None, "lookahead": 256,
                                "min_effect": 0.01}
    bounds_note = ("anytime-valid mixture-of-bets bounds per n, one-sided at level delta each "
                   "(lower > T exactly when the test martingale reached 1/delta)")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.options
        min_gap = _number("min_gap", o["min_gap"], 0, 1)
        # futility_level None: no futility rule (only max_labels_per_n, the budget or the pool stop n)
        self.gamma = None if o["futility_level"] is None else _number("futility_level", o["futility_level"], 0, 1)
        fg = o["futility_gaps"]
        if not (isinstance(fg, (list, tuple)) and len(fg) == 2 and 0 < fg[0] <= fg[1] <= 1):
            raise ValueError(f"futility_gaps must be [min, max] with 0 < min <= max <= 1, got {fg!r}")
        k = _int("grid", o["grid"], 1)
        self.cap = None if o["max_labels_per_n"] is None else _int("max_labels_per_n", o["max_labels_per_n"], 1)
        self.lookahead = _int("lookahead", o["lookahead"], 1)
        power = _number("power", o["power"], 0, 10, lo_open=False)
        self.grid_args = (min_gap, k, tuple(fg), power)
        self.bounds_up = _count_boundary(self.threshold, math.log(1.0 / self.delta), "upper", min_gap, 1.0, k,
                                         power)
        self.bounds_down = _NoBoundary() if self.gamma is None else _count_boundary(
            self.threshold, math.log(1.0 / self.gamma), "lower", float(fg[0]), float(fg[1]), k, 1.0)
        # indifference margin: give n up as undecided once an upper bound at level delta is below T + eps
        eps = o["min_effect"]
        self.min_effect = None if eps in (None, 0) else _number("min_effect", eps, 0, 1 - self.threshold)
        self.bounds_margin = _NoBoundary() if self.min_effect is None else _count_boundary(
            self.threshold + self.min_effect, math.log(1.0 / self.delta), "lower", float(fg[0]), float(fg[1]),
            k, 1.0)
        self.n = 1
        self.status[1] = TESTING

    def _steps_to_decision(self, s, t, horizon):
        """Fewest further labels after which a decision is possible (<= horizon): all ones reach
        1/delta, or all zeros reach the futility level, or the cap. No decision is possible earlier,
        so a batch of this size loses nothing against labelling one at a time."""
        up, down = self.bounds_up.upto(t + horizon), self.bounds_down.upto(t + horizon)
        margin = self.bounds_margin.upto(t + horizon)
        j = np.arange(1, horizon + 1)
        hit = (s + j >= up[t + 1:t + horizon + 1]) | (down[t + 1:t + horizon + 1] >= s) \
            | (margin[t + 1:t + horizon + 1] >= s)
        if self.cap is not None:
            hit |= (t + j) >= self.cap
        idx = np.flatnonzero(hit)
        return int(j[idx[0]]) if idx.size else horizon

    def _plan(self, avail):
        n = self.n
        if avail[n] == 0:
            self.status[n] = EXHAUSTED
            self.stop_reason = "exhausted"
            return {}
        if self._out_of_budget():
            self.status[n] = UNDECIDED
            return {}
        return {n: self._cap(self._next_size(n, avail), n, avail)}

    def _next_size(self, n, avail) -> int:
        """How many labels to ask for at n next: up to the first point where a decision is possible."""
        horizon = self.lookahead if self.batch_size is None else min(self.batch_size, self.lookahead)
        return self._steps_to_decision(self.positives[n], self.labels[n], horizon)

    def _after(self, n):
        if n != self.n or self.status[n] != TESTING:
            return  # answers beyond a decision (cannot happen with the proposed batch sizes)
        s, t = self.positives[n], self.labels[n]
        if t == 0:
            return
        if s >= self.bounds_up.at(t):
            self.status[n] = CERTIFIED
            if n == self.n_max:
                self.done = True
            else:
                self.n = n + 1
                self.status[self.n] = TESTING
        elif s <= self.bounds_down.at(t) or (self.cap is not None and t >= self.cap):
            self.status[n] = FAILED
            self.stop_reason = "futility"
            self.done = True
        elif s <= self.bounds_margin.at(t):
            self.status[n] = UNDECIDED
            self.stop_reason = "indifference"
            self.done = True

    def nstar(self):
        k = 0
        while k < self.n_max and self.status[k + 1] == CERTIFIED:
            k += 1
        return k

    def bounds(self, n):
        min_gap, k, fg, power = self.grid_args
        lo, _ = betting(self.positives[n], self.labels[n], self.delta, "lower", min_gap=min_gap, k=k, power=power)
        _, hi = betting(self.positives[n], self.labels[n], self.delta, "upper", min_gap=fg[0], k=k)
        return lo, hi


_NEEDS_PROXY = "prediction_powered needs proxy scores: drive it with select() and update_draws()"


class PredictionPowered(FixedSequence):
    """Fixed sequence with prediction-powered (active, inverse-probability-weighted) betting tests.

    Each accepted draw i at n comes with a proxy score f_i in [0, 1] (the judges' P(YES), another
    model's P(YES), a probe's prediction; ``proxy`` module). The draws at n are taken in a random
    order; draw i is sent to the oracle with probability pi_i = pi(f_i), chosen from the past only,
    and the strategy scores it

        Z_i = h(f_i) + xi_i / pi_i * (X_i - h(f_i)),      xi_i ~ Bernoulli(pi_i),

    where h is a calibration of f (a logistic regression of the oracle's labels so far on
    logit f), also fitted on the past only. Whatever f and h are, E[Z_i | past] = E[X_i] = TP(n):
    the draws are i.i.d. from the population of accepted draws at n and xi_i is independent of
    X_i given f_i. So every product prod_i (1 + lambda_i (Z_i - T)) with predictable lambda_i >= 0
    that keeps each factor >= 0 is a nonnegative supermartingale under H0_n: TP(n) <= T, and
    Ville's inequality gives P(ever >= 1/delta) <= delta. The test of H0_n is the mixture of such
    bettors over the same gap grid as ``fixed_sequence``; futility and the indifference margin are
    the same mixtures betting the other way. The level comes from the oracle's labels through the
    exact identity above, never from f: a useless or miscalibrated proxy only costs power.

    The unlabelled set is the pool of accepted draws at n itself (draws considered and not sent
    to the oracle); a finite pool is consumed faster than without a proxy (1 / mean pi draws per
    label), so pi is raised towards 1 once labelling as many again as n has used so far would use
    up the draws left at n. Labelling probability: pi = 1 for the first ``warmup`` labels (then Z_i = X_i and the
    test is exactly ``fixed_sequence``'s), after that pi(f) = clip(c sqrt(h(f)(1 - h(f))),
    ``min_label_prob``, 1) (Neyman allocation: label where the proxy is unsure) with c minimising
    the estimated labels needed, and pi = 1 unless that estimate is below 0.9 times the labels
    needed without the proxy. With a useless proxy h is flat, no c wins and the strategy labels
    every draw, as ``fixed_sequence`` does. Abstained draws cost a call and are dropped (as
    everywhere, abstaining is assumed independent of X).
    """

    name = "prediction_powered"
    needs_proxy = True
    defaults: ClassVar[dict] = {**FixedSequence.defaults, "warmup": 200, "min_label_prob": 0.1, "chunk": 256,
                                "refit_every": 100}
    bounds_note = ("label-only mixture-of-bets bounds (the prediction-powered test decides; these ignore "
                   "the proxy and are wider)")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.options
        self.warmup = _int("warmup", o["warmup"], 0)
        self.pi_min = _number("min_label_prob", o["min_label_prob"], 0, 1, hi_open=False)
        self.chunk = _int("chunk", o["chunk"], 1)
        self.refit_every = _int("refit_every", o["refit_every"], 1)
        self.rng = np.random.default_rng([int(self.seed) % (2**32), 7919])
        min_gap, k, fg, power = self.grid_args
        self.up_g, self.up_w = self._bettors(min_gap, 1.0, k, power, self.threshold, "upper")
        self.down_g: np.ndarray | None      # futility and indifference bettors: None when not asked for
        self.down_w: np.ndarray | None
        self.margin_g: np.ndarray | None
        self.margin_w: np.ndarray | None
        self.down_g, self.down_w = (None, None) if self.gamma is None else self._bettors(
            fg[0], fg[1], k, 1.0, self.threshold, "lower")
        self.margin_g, self.margin_w = (None, None) if self.min_effect is None else self._bettors(
            fg[0], fg[1], k, 1.0, self.threshold + self.min_effect, "lower")
        self.log_up = np.zeros(self.up_g.size)
        self.log_down = np.zeros(0 if self.down_g is None else self.down_g.size)
        self.log_margin = np.zeros(0 if self.margin_g is None else self.margin_g.size)
        self.considered = [0] * (self.n_max + 1)     # draws taken from the pool at n (labelled or not)
        self.z_sum = [0.0] * (self.n_max + 1)
        self.seen_f: list[np.ndarray] = []            # recent proxy scores (the allocation's sample)
        self.lab_f, self.lab_x = [], []               # every (f, X) the oracle gave, for the calibration
        self.calib = None                             # (intercept, slope) on logit f
        self.c = None                                 # allocation scale; None: label every draw
        self.extra = 0.0                              # E[(1 - pi)/pi h(1 - h)]: Z's extra variance
        self.fitted_at = 0
        self.pool_left = 0
        self._sel = None

    @staticmethod
    def _bettors(lo, hi, k, power, m, side) -> tuple[np.ndarray, np.ndarray]:
        g, lw = gap_grid(lo, hi, k, power)
        theta = m + g if side == "upper" else m - g
        ok = (theta > 0) & (theta < 1)
        return np.asarray(g[ok]), np.asarray(lw[ok])

    # --- the allocation ---------------------------------------------------------------------
    @staticmethod
    def _logit(f):
        f = np.clip(np.asarray(f, float), 1e-4, 1 - 1e-4)
        return np.log(f / (1 - f))

    def _h(self, f):
        if self.calib is None:
            return np.clip(np.asarray(f, float), 0.0, 1.0)
        a, b = self.calib
        return 1.0 / (1.0 + np.exp(-(a + b * self._logit(f))))

    def _pi(self, f):
        if self.c is None:
            return np.ones(len(f))
        h = self._h(f)
        return np.clip(self.c * np.sqrt(h * (1 - h)), self.pi_min, 1.0)

    def _refit(self):
        """Calibration h and allocation scale c from the labels and scores seen so far (the past)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(self.lab_x)
        self.fitted_at = x.size
        if x.size < max(self.warmup, 2) or x.min() == x.max():
            return
        lr = LogisticRegression(C=10.0).fit(self._logit(self.lab_f)[:, None], x)
        self.calib = (float(lr.intercept_[0]), float(lr.coef_[0, 0]))
        f = np.concatenate(self.seen_f[-8:])
        h = self._h(f)
        r = h * (1 - h)
        theta = x.mean()
        v = theta * (1 - theta)
        best, best_c, best_extra = 0.9 * v, None, 0.0
        for c in np.geomspace(0.05, 20, 40):
            pi = np.clip(c * np.sqrt(r), self.pi_min, 1.0)
            extra = float(np.mean((1 - pi) / pi * r))
            cost = (v + extra) * np.mean(pi)   # Var(Z) x labels per draw
            if cost < best:
                best, best_c, best_extra = cost, float(c), extra
        self.c, self.extra = best_c, best_extra   # both from the past only: the bets stay predictable

    def _lambdas(self, g, m, side, pi_lo):
        """Bets of the gap-g bettors against mean m; with pi < 1 scaled by the variance of Z, and
        capped so that no factor 1 +- lambda (Z - m) can fall below 1/2."""
        lam = g / (m * (1 - m))
        if pi_lo >= 1.0:
            return lam
        lam = g / (m * (1 - m) + self.extra)
        reach = (m - (1 - 1 / pi_lo)) if side == "upper" else (1 / pi_lo - m)
        return np.minimum(lam, 0.5 / reach)

    # --- the driver's side ------------------------------------------------------------------
    def update(self, n: int, label) -> None:
        raise TypeError(_NEEDS_PROXY)

    def update_counts(self, n: int, positives: int, negatives: int, abstains: int = 0) -> None:
        raise TypeError(_NEEDS_PROXY)

    def _next_size(self, n, avail) -> int:
        """Draws to consider at n next (a chunk: the decision point is found inside it)."""
        self.pool_left = avail[n]
        return self.chunk if self.batch_size is None else min(self.chunk, self.batch_size)

    def select(self, n: int, proxies) -> np.ndarray:
        """Which of these draws at n (in the order given) go to the oracle: a boolean mask.
        ValueError names the draw (by position) whose proxy is not a number in [0, 1]."""
        f = np.asarray(proxies, float)
        if self.pending.get(n, 0) < f.size:
            raise ValueError(f"strategy {self.name}: {f.size} draw(s) at n={n} but only "
                             f"{self.pending.get(n, 0)} proposed")
        bad = np.flatnonzero(~np.isfinite(f) | (f < 0) | (f > 1))
        if bad.size:
            raise ValueError(f"proxy score of draw {int(bad[0])} at n={n} is {proxies[int(bad[0])]!r}, "
                             "not a number in [0, 1]")
        if len(self.lab_x) - self.fitted_at >= self.refit_every or (self.calib is None
                                                                   and len(self.lab_x) >= self.warmup):
            self._refit()
        self.seen_f.append(f)
        pi = self._pi(f)
        # a finite pool: labelling as many again as n has used so far must not use up its draws,
        # so pi rises towards 1 as the pool left shrinks (past counts only: still predictable)
        need = max(self.labels[n], 100)
        if pi.mean() < 1 and need / pi.mean() > self.pool_left:
            pi = np.maximum(pi, min(1.0, need / max(self.pool_left, 1)))
        ask = self.rng.random(f.size) < pi
        self._sel = (n, f, pi, ask)
        return ask

    def update_draws(self, n: int, proxies, asked, labels, sequential: bool = True) -> int:
        """The oracle's answers for the draws of the last select() (labels[i]: 1, 0 or None; ignored
        where not asked). Returns how many of them were used: with ``sequential`` the draws after a
        decision are left in the pool and their labels neither used nor charged (a simulator, or a
        driver labelling one at a time); without it every asked draw is charged (labels bought as a
        batch), and the decision is still made at the first draw that allows it."""
        if self._sel is None or self._sel[0] != n or len(self._sel[1]) != len(asked):
            raise ValueError(f"strategy {self.name}: update_draws at n={n} does not match the last select()")
        _, f, pi, ask = self._sel
        self._sel = None
        if not np.array_equal(np.asarray(asked, bool), ask):
            raise ValueError(f"strategy {self.name}: update_draws got a different asked mask than select() gave")
        k = f.size
        lab = np.full(k, np.nan)
        for i in np.flatnonzero(ask):
            v = labels[i]
            if v is None:
                continue
            if v not in (0, 1):
                raise ValueError(f"label must be 1, 0 or None (abstain), got {v!r}")
            lab[i] = float(v)
        absn = ask & np.isnan(lab)
        h = self._h(f)
        z = np.where(ask & ~absn, h + (np.nan_to_num(lab) - h) / pi, h)
        live = ~absn                               # abstained draws are dropped
        pi_lo = 1.0 if self.c is None else self.pi_min   # fixed before this chunk's scores were seen
        T = self.threshold
        inc_up = np.where(live[:, None], np.log1p(self._lambdas(self.up_g, T, "upper", pi_lo)[None, :]
                                                  * (z - T)[:, None]), 0.0)
        cum_up = np.cumsum(inc_up, axis=0)
        up = logsumexp_rows(self.log_up + cum_up + self.up_w)
        L = math.log(1.0 / self.delta)
        events = [(np.flatnonzero(up >= L), CERTIFIED)]
        if self.down_g is not None:
            assert self.gamma is not None  # the futility bettors exist only with futility_level
            inc = np.where(live[:, None], np.log1p(-self._lambdas(self.down_g, T, "lower", pi_lo)[None, :]
                                                   * (z - T)[:, None]), 0.0)
            cum_down = np.cumsum(inc, axis=0)
            events.append((np.flatnonzero(logsumexp_rows(self.log_down + cum_down + self.down_w)
                                          >= math.log(1.0 / self.gamma)), FAILED))
        if self.margin_g is not None:
            m = T + self.min_effect
            inc = np.where(live[:, None], np.log1p(-self._lambdas(self.margin_g, m, "lower", pi_lo)[None, :]
                                                   * (z - m)[:, None]), 0.0)
            cum_margin = np.cumsum(inc, axis=0)
            events.append((np.flatnonzero(logsumexp_rows(self.log_margin + cum_margin + self.margin_w) >= L),
                           UNDECIDED))
        labelled = np.cumsum(ask & ~absn)
        if self.cap is not None:
            events.append((np.flatnonzero(self.labels[n] + labelled >= self.cap), FAILED))
        first = min(((int(ix[0]), st) for ix, st in events if ix.size), default=None)
        used = k if first is None else first[0] + 1
        charge = used if sequential else k
        self.pending[n] -= k
        if self.pending[n] <= 0:
            del self.pending[n]
        self.calls += int(ask[:charge].sum())
        self.abstains += int(absn[:charge].sum())
        self.abstained[n] += int(absn[:charge].sum())
        got = ask[:charge] & ~absn[:charge]
        self.labels[n] += int(got.sum())
        self.positives[n] += int(np.nansum(lab[:charge][got]))
        self.lab_f.extend(f[:charge][got].tolist())
        self.lab_x.extend(lab[:charge][got].astype(int).tolist())
        self.considered[n] += used
        self.z_sum[n] += float(z[:used][live[:used]].sum())
        self.log_up += cum_up[used - 1]
        if self.down_g is not None:
            self.log_down += cum_down[used - 1]
        if self.margin_g is not None:
            self.log_margin += cum_margin[used - 1]
        if first is not None:
            st = first[1]
            self.status[n] = st
            if st == CERTIFIED:
                if n == self.n_max:
                    self.done = True
                else:
                    self.n = n + 1
                    self.status[self.n] = TESTING
                    self.log_up[:] = 0.0
                    self.log_down[:] = 0.0
                    self.log_margin[:] = 0.0
            else:
                self.stop_reason = "indifference" if st == UNDECIDED else "futility"
                self.done = True
        return used

    def result(self, with_bounds: bool = True) -> dict:
        out = super().result(with_bounds)
        for n in range(1, self.n_max + 1):
            c = self.considered[n]
            out["per_n"][n].update({"considered": c, "pp_mean": self.z_sum[n] / c if c else None})
        out["calibration"] = None if self.calib is None else {"intercept": self.calib[0], "slope": self.calib[1]}
        out["label_scale"] = self.c
        return out


def logsumexp_rows(a):
    """logsumexp over the last axis of a 2-d array (rows: draws; columns: bettors)."""
    mx = a.max(axis=1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    return (mx[:, 0] + np.log(np.exp(a - mx).sum(axis=1)))


STRATEGIES = {"uniform": Uniform, "bisection": Bisection, "fixed_sequence": FixedSequence,
              "prediction_powered": PredictionPowered}


def make_strategy(name: str, n_max: int = 15, threshold: float = 0.8, delta: float = 0.05,
                  budget: int = 100_000, seed: int = 0, **options) -> Strategy:
    """A fresh strategy; options: batch_size (labels per propose, None = as many as useful) and
    the strategy's own (see each class's ``defaults``). ValueError names a bad argument."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](n_max, threshold, delta, budget, seed, **options)
