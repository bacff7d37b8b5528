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

from .intervals import betting, gap_grid, hoeffding, log_mixture_wealth

__all__ = ["STRATEGIES", "Bisection", "FixedSequence", "Strategy", "Uniform", "make_strategy"]

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
        self.stop_reason = None

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
            plan, used = {}, 0
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
    """

    name = "fixed_sequence"
    defaults: ClassVar[dict] = {"min_gap": 0.01, "grid": 48, "power": 1.5, "futility_level": 0.6,
                                "futility_gaps": (0.002, 0.1), "max_labels_per_n": None, "lookahead": 256}
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
        self.n = 1
        self.status[1] = TESTING

    def _steps_to_decision(self, s, t, horizon):
        """Fewest further labels after which a decision is possible (<= horizon): all ones reach
        1/delta, or all zeros reach the futility level, or the cap. No decision is possible earlier,
        so a batch of this size loses nothing against labelling one at a time."""
        up, down = self.bounds_up.upto(t + horizon), self.bounds_down.upto(t + horizon)
        j = np.arange(1, horizon + 1)
        hit = (s + j >= up[t + 1:t + horizon + 1]) | (down[t + 1:t + horizon + 1] >= s)
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
        horizon = self.lookahead if self.batch_size is None else min(self.batch_size, self.lookahead)
        k = self._steps_to_decision(self.positives[n], self.labels[n], horizon)
        return {n: self._cap(k, n, avail)}

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


STRATEGIES = {"uniform": Uniform, "bisection": Bisection, "fixed_sequence": FixedSequence}


def make_strategy(name: str, n_max: int = 15, threshold: float = 0.8, delta: float = 0.05,
                  budget: int = 100_000, seed: int = 0, **options) -> Strategy:
    """A fresh strategy; options: batch_size (labels per propose, None = as many as useful) and
    the strategy's own (see each class's ``defaults``). ValueError names a bad argument."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](n_max, threshold, delta, budget, seed, **options)
