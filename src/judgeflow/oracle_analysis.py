"""Tables and figures of the oracle stage: TP(N) empirical vs model, N*, Best-of-N.

The statistics live in `judgeflow.tp`; this module turns the workflow's records (draws, oracle
labels) into their inputs and writes CSV/PNG files.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict

from .io import atomic_path, write_csv

log = logging.getLogger(__name__)


def per_question_records(draws: list[dict], labels: dict[str, dict]) -> list[dict]:
    """One record per question for the model fit: N of the first accept (None: censored) and the
    oracle label of the accepted draw (None: not labelled, or the oracle abstained)."""
    out = {}
    for d in draws:
        q = d["question_id"]
        if q not in out:
            out[q] = {"question_id": q, "n_accept": d.get("n_accept"), "n_max": d["n_max"], "oracle": None}
        if d.get("first_accept") and d["draw_id"] in labels:
            out[q]["oracle"] = labels[d["draw_id"]]["label"]
    return list(out.values())


def tp_curve_rows(draws: list[dict], labels: dict[str, dict], n_max: int, interval_kind: str, delta: float,
                  model_curve: list[float] | None, strategy_result: dict) -> list[dict]:
    from .tp.intervals import interval

    accepted = defaultdict(int)
    for d in draws:
        if d.get("first_accept"):
            accepted[d["draw"]] += 1
    pos, lab, abst = defaultdict(int), defaultdict(int), defaultdict(int)
    for lbl in labels.values():
        if lbl["label"] is None:
            abst[lbl["n"]] += 1
        else:
            lab[lbl["n"]] += 1
            pos[lbl["n"]] += lbl["label"]
    per_n = {int(k): v for k, v in (strategy_result.get("per_n") or {}).items()}
    rows = []
    for n in range(1, n_max + 1):
        m, s = lab[n], pos[n]
        lo, hi = interval(interval_kind, s, m, delta, "two-sided") if m else (None, None)
        rows.append({"n": n, "accepted": accepted[n], "labelled": m, "positives": s, "abstained": abst[n],
                     "tp": s / m if m else None, "lower": lo, "upper": hi, "interval": interval_kind,
                     "confidence": 1 - delta, "model_tp": model_curve[n - 1] if model_curve else None,
                     "certified": n <= strategy_result.get("nstar", 0),
                     "strategy_labels": per_n.get(n, {}).get("labels", 0)})
    return rows


def _wrap(title: str, width: int = 75) -> str:
    """A plot title on as many lines as it needs (on one line, a long title runs off the figure)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width))


def plot_tp_curve(rows: list[dict], threshold: float, nstar: int, output: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    emp = [r for r in rows if r["tp"] is not None]
    if emp:
        ax.errorbar([r["n"] for r in emp], [r["tp"] for r in emp],
                    yerr=[[r["tp"] - r["lower"] for r in emp], [r["upper"] - r["tp"] for r in emp]],
                    fmt="o", capsize=3, label=f"oracle-labelled ({emp[0]['interval']}, {emp[0]['confidence']:.0%})")
        for r in emp:
            ax.annotate(f"{r['labelled']}", (r["n"], r["tp"]), textcoords="offset points", xytext=(5, 5),
                        fontsize=7, color="gray")
    mod = [r for r in rows if r["model_tp"] is not None]
    if mod:
        ax.plot([r["n"] for r in mod], [r["model_tp"] for r in mod], "-", color="C1", label="Beta-judge model (fit)")
    ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"T = {threshold}")
    if nstar:
        ax.axvline(nstar, ls=":", color="C2", label=f"N* = {nstar}")
    ax.set_xlabel("N (draw of the first accept)")
    ax.set_ylabel("TP(N) = P(X=1 | first accepted at N)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks([r["n"] for r in rows])
    ax.set_title(_wrap(title), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_curve(rows: list[dict], output: str) -> None:
    write_csv(output, rows)


def bon_questions(draws: list[dict], labels: dict[str, dict], judge_ids: list[str], max_draw: int) -> list[list[dict]]:
    """Per question its first `max_draw` draws as {"judges": [0/1 per judge], "oracle": X or None}.

    A judge's draw-level verdict is YES when it said YES on every criterion of the draw (its own
    verdicts, before k-of-J); k-of-J over these is the Best-of-N acceptance.
    """
    by_q: dict[str, list[dict]] = {}
    for d in draws:
        if d["draw"] <= max_draw:
            by_q.setdefault(d["question_id"], []).append(d)
    out = []
    for ds in by_q.values():
        ds.sort(key=lambda d: d["draw"])
        out.append([{"judges": [int(d["judge_accepts"][j]) for j in judge_ids],
                     "oracle": labels[d["draw_id"]]["label"]} for d in ds])
    return out


def plot_bon(rows: list[dict], output: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    combos = sorted({(r["J"], r["k"]) for r in rows})
    for i, (J, k) in enumerate(combos):
        rs = sorted((r for r in rows if r["J"] == J and r["k"] == k), key=lambda r: r["N"])
        color = f"C{i % 10}"
        for ax, key in zip(axes, ("tp", "p_any")):
            pts = [r for r in rs if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
            if pts:
                ax.errorbar([r["N"] for r in pts], [r[key] for r in pts],
                            yerr=[[r[key] - r[f"{key}_lower"] for r in pts], [r[f"{key}_upper"] - r[key] for r in pts]],
                            fmt="o-", capsize=2, color=color, label=f"{k}-of-{J}")
            mk = f"model_{key}"
            mpts = [r for r in rs if r.get(mk) is not None and math.isfinite(r[mk])]
            if mpts:
                ax.plot([r["N"] for r in mpts], [r[mk] for r in mpts], "--", color=color, alpha=0.7)
    axes[0].set_ylabel("TP of a random accepted response")
    axes[1].set_ylabel("P(at least one accepted)")
    for ax in axes:
        ax.set_xlabel("N (draws)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(sorted({r["N"] for r in rows}))
    axes[1].legend(fontsize=7, title="judges (dashed: independent-judge model)", title_fontsize=7)
    fig.suptitle(_wrap(title, 110), fontsize=9)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
