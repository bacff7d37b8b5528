"""The run's cost ledger and its spending cap (`models.<name>.price`, `budget`).

Every API call a job pays for is one line of `logs/<run>/costs.jsonl` (appended with O_APPEND and
fsync'd, one write per line, so concurrent jobs of the run never interleave a line): the rule, the
job's wildcards, the model, the tokens the endpoint billed and their cost at the model's price (a
Batch API call at its `batch` share). When the job ends, one line per model says what its cache hits
saved (the cost those answers had when they were paid). The report sums the ledger by rule and model.

The cap: before a request is sent, its worst-case cost is reserved, `worst_cost`: prompt tokens at
most the UTF-8 bytes of its messages plus a per-message allowance (a byte-level BPE token is at least
one byte), and `max_tokens` completion tokens. A call is sent only if what the run has spent (the
ledger when the job started, plus this job's calls), the job's calls in flight and this reservation
stay within `budget.max_cost` (and the rule's own cap, `budget.stages`); else `BudgetReached`: the
stage stops, naming the cap, what was spent and how many requests were not sent. The answers paid
before are in the API cache, so a rerun with a higher cap pays only for the rest. Concurrent jobs of
one run see each other's spend only through the ledger read when they start: their calls in flight
together may pass the cap by at most one reservation each (docs/backends.md).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from judgeflow.errors import BudgetReached

MESSAGE_TOKENS = 8    # a chat message's role and separators, in tokens, at most
REQUEST_TOKENS = 16   # the chat template's tokens around the messages, at most


@dataclass(frozen=True)
class Rate:
    """A model's price per million tokens (`models.<name>.price`)."""
    input: float
    output: float
    batch: float = 0.5

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        c = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return c * self.batch if batch else c


def prompt_tokens_at_most(body: dict) -> int:
    """An upper bound of a chat request's prompt tokens: every message's UTF-8 bytes (a byte-level BPE
    token covers at least one byte) plus MESSAGE_TOKENS per message and REQUEST_TOKENS."""
    msgs = body.get("messages") or []
    size = sum(len(str(m.get("content") or "").encode("utf-8")) + MESSAGE_TOKENS for m in msgs)
    return size + REQUEST_TOKENS


def worst_cost(rate: Rate, body: dict, batch: bool = False) -> float:
    """The most a request can cost: prompt_tokens_at_most and all of its max_tokens."""
    return rate.cost(prompt_tokens_at_most(body), int(body.get("max_tokens") or 0), batch)


def read(path: str | os.PathLike) -> list[dict]:
    """The ledger's lines (none if there is no ledger yet); a torn last line (a killed writer) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def totals(lines: list[dict]) -> dict:
    """Spend by rule and by model, what the cache saved, calls and tokens: the report's and the job log's view."""
    by_rule: dict[str, float] = defaultdict(float)
    by_model: dict[str, dict] = defaultdict(lambda: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                     "cost": 0.0, "cache_hits": 0, "saved": 0.0})
    for r in lines:
        m = by_model[r["model"]]
        if r.get("kind") == "saved":
            m["cache_hits"] += r["calls"]
            m["saved"] += r["cost"]
            continue
        by_rule[r["rule"]] += r["cost"]
        m["calls"] += 1
        m["prompt_tokens"] += r["prompt_tokens"]
        m["completion_tokens"] += r["completion_tokens"]
        m["cost"] += r["cost"]
    return {"cost": sum(by_rule.values()), "saved": sum(m["saved"] for m in by_model.values()),
            "by_rule": dict(sorted(by_rule.items())), "by_model": dict(sorted(by_model.items()))}


@dataclass
class Ledger:
    """One job's view of the run's ledger: appends its paid calls, enforces the caps."""
    path: Path
    rule: str
    wildcards: dict
    rates: dict[str, Rate]
    max_cost: float | None = None
    rule_cap: float | None = None
    spent_before: float = 0.0          # the run's spend in the ledger when the job started
    rule_spent_before: float = 0.0     # of which this rule's
    spent: float = 0.0                 # this job's paid calls
    reserved: float = 0.0              # this job's calls in flight, at their worst case
    saved: dict[str, list] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: str | os.PathLike, rule: str, wildcards: dict, rates: dict[str, Rate],
             max_cost: float | None = None, rule_cap: float | None = None) -> Ledger:
        lines = [r for r in read(path) if r.get("kind") != "saved"]
        return cls(Path(path), rule, dict(wildcards), rates, max_cost, rule_cap,
                   spent_before=sum(r["cost"] for r in lines),
                   rule_spent_before=sum(r["cost"] for r in lines if r["rule"] == rule))

    def reserve(self, model: str, body: dict, batch: bool = False) -> float:
        """Reserve a request's worst-case cost before it is sent; BudgetReached (nothing reserved) if that
        could pass a cap. An unpriced model reserves nothing."""
        rate = self.rates.get(model)
        if rate is None:
            return 0.0
        worst = worst_cost(rate, body, batch)
        with self._lock:
            for cap, before, key in ((self.max_cost, self.spent_before, "budget.max_cost"),
                                     (self.rule_cap, self.rule_spent_before, f"budget.stages.{self.rule}")):
                if cap is None:
                    continue
                committed = before + self.spent + self.reserved
                if committed + worst > cap:
                    raise BudgetReached(
                        f"{key}: {cap:g} reached: {before + self.spent:.4f} spent ({before:.4f} before this job, "
                        f"{self.spent:.4f} by it), {self.reserved:.4f} in flight, and the next call to {model} "
                        f"could cost up to {worst:.4f}; it was not sent. Every answer paid is cached: raise {key} "
                        f"and rerun to pay only for the rest (ledger: {self.path})")
            self.reserved += worst
        return worst

    def release(self, worst: float) -> None:
        """A reserved call that was not answered (it failed): nothing paid."""
        with self._lock:
            self.reserved -= worst

    def settle(self, model: str, worst: float, prompt_tokens: int, completion_tokens: int,
               batch: bool = False) -> float:
        """A reserved call was answered: its real cost, appended to the ledger (one line, fsync'd)."""
        rate = self.rates.get(model)
        cost = rate.cost(prompt_tokens, completion_tokens, batch) if rate else 0.0
        line = {"time": round(time.time(), 3), "rule": self.rule, "wildcards": self.wildcards, "model": model,
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "batch": batch,
                "cost": cost}
        with self._lock:
            self.reserved -= worst
            self.spent += cost
            self._append(line)
        return cost

    def hit(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A cache hit: what it would have cost, summed per model and written when the job ends."""
        rate = self.rates.get(model)
        if rate is None:
            return
        with self._lock:
            s = self.saved[model]
            s[0] += 1
            s[1] += rate.cost(prompt_tokens, completion_tokens)

    def close(self) -> None:
        with self._lock:
            for model, (calls, cost) in sorted(self.saved.items()):
                if calls:
                    self._append({"time": round(time.time(), 3), "kind": "saved", "rule": self.rule,
                                  "wildcards": self.wildcards, "model": model, "calls": calls, "cost": cost})
            self.saved.clear()

    def _append(self, line: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(line, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


_current: Ledger | None = None


def current() -> Ledger | None:
    """The running job's ledger (None outside a job, or where nothing is priced and nothing capped)."""
    return _current


@contextlib.contextmanager
def keeping(ledger: Ledger | None) -> Iterator[Ledger | None]:
    """Make `ledger` the job's ledger while the stage runs; write what the cache saved at the end."""
    global _current
    previous, _current = _current, ledger
    try:
        yield ledger
    finally:
        _current = previous
        if ledger is not None:
            ledger.close()


def ledger_path(logs_dir: str, run: str) -> str:
    """logs/<run>/costs.jsonl: the run's ledger (its replicates' too), kept across reruns like its logs."""
    return f"{logs_dir}/{run}/costs.jsonl"


def for_job(config: dict, rule: str, wildcards: dict) -> Ledger | None:
    """The job's ledger from the validated config: logs/<run>/costs.jsonl, every priced model's rate and
    the caps; None where no model has a price and nothing is capped."""
    rates = {name: Rate(**spec["price"]) for name, spec in config["models"].items()
             if spec.get("backend") == "openai" and spec.get("price")}
    budget = config.get("budget") or {}
    if not rates and budget.get("max_cost") is None and not budget.get("stages"):
        return None
    path = ledger_path(config["logs_dir"], config["run"])
    return Ledger.open(path, rule, wildcards, rates, budget.get("max_cost"), (budget.get("stages") or {}).get(rule))
