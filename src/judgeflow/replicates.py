"""Replicates of a whole study (`replicates`: one seed each): the headlines of each seed's run, and each
headline's mean with an interval across the seeds.

Guarantee: the seeds are independent replicates of the whole study (every request's seed is a hash of
the run's seed and the request), so the headline values of R seeds are R independent draws of the
study's outcome given its questions, models and judges. The interval is the two-sided t-interval of
their mean (scipy.stats.t, R - 1 degrees of freedom): exact for normally distributed headlines,
approximate otherwise, and wide with few seeds. It describes run-to-run variation (what another seed
would give), not the uncertainty within one run, which each run's own report states. With fewer than
two seeds that have a value there is no interval.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

SHARE, DIFFERENCE, COUNT = (0.0, 1.0), (-1.0, 1.0), (0.0, None)


@dataclass(frozen=True)
class Headline:
    """One number of one seed's run: `name` (what it is, with its unit or population), `group` (its card),
    `bounds` (the values it can take: a share, a difference of shares, a count)."""
    group: str
    name: str
    value: float | None
    bounds: tuple[float | None, float | None] = (None, None)


def _json(path: str | None) -> dict | None:
    if not path or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def headlines(files: dict[str, str]) -> list[Headline]:
    """The headline numbers of one run, from its summary files (the report's headline files, and the TP(N)
    curve): a file not given gives none of its numbers, a number a run could not estimate is None."""
    import pandas as pd

    out: list[Headline] = []

    def add(group: str, name: str, value, bounds: tuple[float | None, float | None]) -> None:
        out.append(Headline(group, name, _num(value), bounds))

    c = _json(files.get("cleaning"))
    if c is not None:
        add("questions", "questions kept by the cleaning", c.get("kept"), COUNT)
    p = _json(files.get("pairs"))
    if p is not None:
        add("pairs", "multi-feedback pairs", p.get("multi_feedback_pairs"), COUNT)
        add("pairs", "full-feedback pairs", p.get("full_feedback_pairs"), COUNT)
    t = _json(files.get("tree_search"))
    if t is not None:
        rows = t.get("gates") or []
        last = max((r["round"] for r in rows), default=1)
        for r in t.get("gate_pairs") or []:
            if r["round"] != last:
                continue
            pair = f"{r['gate_b']} - {r['gate_a']}"
            add("tree search: gates paired", f"{pair}: difference in the share of roots whose final the oracle "
                                             f"prefers (round {last})", r["diff"], DIFFERENCE)
            add("tree search: gates paired", f"{pair}: roots whose outcomes differ (share, round {last})",
                r["discordance"], SHARE)
        for r in rows:
            if r["round"] != last:
                continue
            add("tree search: each gate", f"gate {r['gate']}: oracle's preference of final over original, on its "
                                          f"decided solved roots (round {last})", r["win_rate"], SHARE)
            add("tree search: each gate", f"gate {r['gate']}: share of roots solved (round {last})", r["solve_rate"],
                SHARE)
    n = _json(files.get("nstar"))
    if n is not None:
        add("N*", "certified N*", n.get("nstar"), COUNT)
        add("N*", "oracle calls to certify N*", n.get("calls"), COUNT)
        tr = n.get("tp_trend") or {}
        add("TP(N)", "TP(N) slope per extra draw (OLS over the labelled draws)", tr.get("slope"), DIFFERENCE)
    curve = files.get("curve")
    if curve and Path(curve).exists():
        df = pd.read_csv(curve)
        for _, r in df.iterrows():
            if r.get("labelled", 0) and r["labelled"] > 0:
                add("TP(N)", f"TP({int(r['n'])}) on the labelled accepted draws", r["tp"], SHARE)
    ev = _json(files.get("evaluation"))
    if ev is not None:
        for pol, r in ((ev.get("oracle") or {}).get("per_policy") or {}).items():
            add("evaluation", f"{pol} vs base: oracle's win rate on decided held-out comparisons", r["win_rate"],
                SHARE)
        for r in ev.get("table") or []:
            if r.get("criterion_id") == "(all)":
                add("evaluation", f"{r['policy']}: verifier pass rate on held-out answers", r.get("verifier_pass_rate"),
                    SHARE)
    j = _json(files.get("judges"))
    if j is not None:
        m = j.get("measured") or {}
        add("judges", "p1 = P(accept | X=1) on the draws the judges accepted (selected: biased)", m.get("p1"), SHARE)
        add("judges", "p0 = P(accept | X=0) on the draws the judges accepted (selected: biased)", m.get("p0"), SHARE)
    return out


@dataclass
class Aggregate:
    """One headline across the seeds: the values (None where a seed has none), and their mean's interval."""
    group: str
    name: str
    values: dict[int, float | None] = field(default_factory=dict)
    confidence: float = 0.95
    bounds: tuple[float | None, float | None] = (None, None)

    @property
    def present(self) -> list[float]:
        return [v for v in self.values.values() if v is not None]

    def row(self) -> dict:
        xs = self.present
        n = len(xs)
        mean = sum(xs) / n if n else None
        sd = float(stats.tstd(xs)) if n >= 2 else None
        lo = hi = None
        if n < 2 or mean is None or sd is None:
            how = "none: fewer than 2 seeds with a value"
        elif sd == 0:  # a zero-width interval would read as certainty; it is only the same value R times
            how = "none: every seed gave the same value"
        else:
            lo, hi = (float(x) for x in stats.t.interval(self.confidence, n - 1, loc=mean, scale=sd / math.sqrt(n)))
            how = "t-interval of the mean across seeds"
            b_lo, b_hi = self.bounds  # the mean lies in the headline's range: clipping loses no coverage
            if (b_lo is not None and lo < b_lo) or (b_hi is not None and hi > b_hi):
                lo = lo if b_lo is None else max(lo, b_lo)
                hi = hi if b_hi is None else min(hi, b_hi)
                how += ", clipped to the headline's range"
        return {"group": self.group, "headline": self.name, "seeds": len(self.values), "seeds_with_value": n,
                "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi, "confidence": self.confidence, "interval": how,
                "values": " ".join("n/a" if v is None else f"{v:.4g}" for v in self.values.values())}


def aggregate(per_seed: dict[int, list[Headline]], confidence: float = 0.95) -> list[Aggregate]:
    """Each headline across the seeds, in the order the headlines first appear; a seed without it: None."""
    out: dict[tuple[str, str], Aggregate] = {}
    for hs in per_seed.values():
        for h in hs:
            out.setdefault((h.group, h.name), Aggregate(h.group, h.name, confidence=confidence, bounds=h.bounds))
    for seed, hs in per_seed.items():
        got = {(h.group, h.name): h.value for h in hs}
        for key, agg in out.items():
            agg.values[seed] = got.get(key)
    return list(out.values())


def long_rows(per_seed: dict[int, list[Headline]]) -> list[dict]:
    return [{"seed": seed, "group": h.group, "headline": h.name, "value": h.value}
            for seed, hs in per_seed.items() for h in hs]


def plot(aggs: Iterable[Aggregate], output: str, title: str) -> None:
    """A panel per headline: each seed's value (dots) and the mean with its interval (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from judgeflow.workflow.io import atomic_path

    aggs = [a for a in aggs if a.present]
    cols = 3
    rows = max(1, math.ceil(len(aggs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat[len(aggs):]:
        ax.axis("off")
    for ax, a in zip(axes.flat, aggs):
        r = a.row()
        seeds = [s for s, v in a.values.items() if v is not None]
        ax.plot(a.present, [0] * len(seeds), "o", alpha=0.7, label="seeds")
        if r["ci_low"] is not None:
            ax.errorbar([r["mean"]], [0.3], xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                        fmt="s", color="black", capsize=4, label=f"mean, {a.confidence:.0%} t-interval")
        else:
            ax.plot([r["mean"]], [0.3], "s", color="black", label="mean")
        ax.set_ylim(-0.5, 0.8)
        ax.set_yticks([])
        name = a.name if len(a.name) <= 60 else a.name[:57] + "..."
        ax.set_title(name, fontsize=7)
    if aggs:
        axes.flat[0].legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def card_html(aggs: Iterable[Aggregate], seeds: list[int]) -> str:
    """The replicates' headline panel: a card per group, its first headline's mean and interval big, then a
    line per headline (mean, interval, each seed's value)."""
    import html

    from judgeflow.report import _card, _fmt, _interval

    groups: dict[str, list[tuple[str, str]]] = {}
    for a in aggs:
        r = a.row()
        big = _interval(r["mean"], r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else _fmt(r["mean"])
        how = (f"{r['confidence']:.0%} t-interval over {r['seeds_with_value']} seeds" if r["ci_low"] is not None
               else r["interval"])
        groups.setdefault(a.group, []).append((big, f"{a.name}: {big} ({how}); per seed {r['values']}"))
    cards = [_card(f"{g} (mean across {len(seeds)} seeds)", html.escape(lines[0][0]),
                   *(html.escape(line) for _, line in lines)) for g, lines in groups.items()]
    return '<section id=headline><div class=cards>' + "".join(cards) + "</div></section>"
