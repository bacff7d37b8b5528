"""Tables and figures of the oracle stage: TP(N) empirical vs model, N*, TP per extra draw, Best-of-N
over (N, J, k) and Best-of-N keeping the judges' top-scored draw.

The statistics live in `judgeflow.oracle.tp`, but for TP per extra draw (a regression, statsmodels); this
module turns the workflow's records (draws, oracle labels) into their inputs and writes CSV/PNG
files. The TP(N) curve's interval is chosen for how the labels were chosen (`curve_interval`).
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict

from judgeflow.workflow.io import atomic_path, write_csv

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


INTERVAL_NAMES = {"clopper_pearson": "Clopper-Pearson", "hoeffding": "Hoeffding", "betting": "betting"}
EVERY_ACCEPTED = "every accepted draw"
STRATEGY_LABELS = "the strategy's labels: chosen sequentially by N, not a random sample"
MIN_TREND_LABELS, MIN_TREND_NS = 10, 3


def curve_interval(label_all_accepted: bool, interval_kind: str) -> str:
    """The TP(N) curve's interval, valid for how its labels were chosen. Every accepted draw labelled
    (label_all_accepted): a fixed sample per N, so the pointwise `oracle.interval` holds. Otherwise
    the strategy chose how many to label at each N from the labels it had seen (optional stopping),
    which a fixed-n interval does not survive: the anytime-valid betting interval does."""
    return interval_kind if label_all_accepted else "betting"


def labels_used(label_all_accepted: bool) -> str:
    return EVERY_ACCEPTED if label_all_accepted else STRATEGY_LABELS


def interval_note(kind: str, delta: float, label_all_accepted: bool, strategy: str) -> str:
    """What the curve's intervals are and why they hold, e.g. "pointwise 95% Clopper-Pearson; every
    accepted draw labelled"."""
    what = f"{'anytime-valid' if kind == 'betting' else 'pointwise'} {1 - delta:.0%} {INTERVAL_NAMES[kind]}"
    if label_all_accepted:
        return f"{what}; every accepted draw labelled"
    note = f"{what}; labels chosen sequentially by the strategy ({strategy})"
    if strategy == "prediction_powered":  # the draws sent to the oracle depend on their proxy score
        note += ", sent to the oracle by proxy score: the raw rate is not a random sample's"
    return note


def tp_curve_rows(draws: list[dict], labels: dict[str, dict], n_max: int, interval_kind: str, delta: float,
                  model_curve: list[float] | None, strategy_result: dict, note: str | None = None) -> list[dict]:
    """One row per N: accepted draws, labels, positives, TP with its interval (`interval_kind`; `note`
    says what holds it), the model curve, certified or not, the strategy's labels."""
    from judgeflow.oracle.tp.intervals import interval

    accepted: defaultdict[int, int] = defaultdict(int)
    for d in draws:
        if d.get("first_accept"):
            accepted[d["draw"]] += 1
    pos: defaultdict[int, int] = defaultdict(int)
    lab: defaultdict[int, int] = defaultdict(int)
    abst: defaultdict[int, int] = defaultdict(int)
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
                     "interval_note": note, "confidence": 1 - delta,
                     "model_tp": model_curve[n - 1] if model_curve else None,
                     "certified": n <= strategy_result.get("nstar", 0),
                     "strategy_labels": per_n.get(n, {}).get("labels", 0)})
    return rows


def tp_trend(labels: dict[str, dict], delta: float, used: str) -> dict:
    """TP per extra draw: OLS of X on N over the labelled first-accepted draws (one per question,
    independent), heteroskedasticity-robust (HC3) standard errors, a (1 - delta) t interval; and a
    logistic regression's odds ratio per draw. Slope null, with the reason, on too few labels or N."""
    pts = [(lbl["n"], lbl["label"]) for lbl in labels.values() if lbl["label"] is not None]
    ns, xs = [p[0] for p in pts], [p[1] for p in pts]
    out = {"labels": used, "n": len(pts), "distinct_n": len(set(ns)), "confidence": 1 - delta,
           "method": "OLS of X on N, HC3 standard errors (statsmodels)", **dict.fromkeys(
               ("slope", "lower", "upper", "p_value", "se", "intercept", "odds_ratio", "odds_ratio_lower",
                "odds_ratio_upper", "logit_p_value")), "logit_note": None, "reason": None}
    if len(pts) < MIN_TREND_LABELS:
        return {**out, "reason": f"{len(pts)} oracle labels, fewer than {MIN_TREND_LABELS}"}
    if len(set(ns)) < MIN_TREND_NS:
        return {**out, "reason": f"labels at {len(set(ns))} distinct N, fewer than {MIN_TREND_NS}"}
    if len(set(xs)) == 1:
        return {**out, "reason": f"every label is X = {xs[0]}: nothing varies with N"}
    return {**out, **_ols_slope(ns, xs, delta), **_logit_slope(ns, xs, delta)}


def _ols_slope(ns: list[int], xs: list[int], delta: float) -> dict:
    import numpy as np
    import statsmodels.api as sm

    fit = sm.OLS(np.asarray(xs, float), sm.add_constant(np.asarray(ns, float))).fit(cov_type="HC3", use_t=True)
    lo, hi = fit.conf_int(alpha=delta)[1].tolist()
    return {"slope": float(fit.params[1]), "lower": lo, "upper": hi, "p_value": float(fit.pvalues[1]),
            "se": float(fit.bse[1]), "intercept": float(fit.params[0])}


def _logit_slope(ns: list[int], xs: list[int], delta: float) -> dict:
    """The odds ratio of X = 1 per extra draw (Wald interval); None with a note where the fit fails."""
    import warnings

    import numpy as np
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.Logit(np.asarray(xs, float), sm.add_constant(np.asarray(ns, float))).fit(disp=0)
        except (PerfectSeparationError, np.linalg.LinAlgError, ValueError) as e:
            return {"logit_note": f"logistic fit failed: {e}"}
    bad = [str(w.message) for w in caught if "converge" in str(w.message).lower()
           or "separation" in str(w.message).lower()]
    if bad or not fit.mle_retvals.get("converged", False):
        return {"logit_note": "logistic fit did not converge" + (f": {bad[0]}" if bad else "")}
    lo, hi = fit.conf_int(alpha=delta)[1]
    return {"odds_ratio": math.exp(fit.params[1]), "odds_ratio_lower": math.exp(lo), "odds_ratio_upper": math.exp(hi),
            "logit_p_value": float(fit.pvalues[1])}


def trend_text(t: dict | None) -> str:
    """One line for a legend, a title or the report: the slope with its interval, or why there is none."""
    if not t:
        return "TP per extra draw: not fitted"
    if t.get("slope") is None:
        return f"TP per extra draw: none ({t.get('reason')})"
    text = (f"TP per extra draw {t['slope']:+.3f} [{t['lower']:+.3f}, {t['upper']:+.3f}] (OLS, HC3, "
            f"{t['confidence']:.0%}; p = {t['p_value']:.2g}; {t['n']} labels)")
    if t.get("odds_ratio") is not None:
        text += (f"; odds ratio per draw {t['odds_ratio']:.2f} [{t['odds_ratio_lower']:.2f}, "
                 f"{t['odds_ratio_upper']:.2f}]")
    return text


def _wrap(title: str, width: int = 75) -> str:
    """A plot title on as many lines as it needs (on one line, a long title runs off the figure)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width))


def plot_tp_curve(rows: list[dict], threshold: float, nstar: int, output: str, title: str,
                  trend: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    emp = [r for r in rows if r["tp"] is not None]
    if emp:
        how = emp[0].get("interval_note") or f"{emp[0]['interval']}, {emp[0]['confidence']:.0%}"
        ax.errorbar([r["n"] for r in emp], [r["tp"] for r in emp],
                    yerr=[[r["tp"] - r["lower"] for r in emp], [r["upper"] - r["tp"] for r in emp]],
                    fmt="o", capsize=3, label=_wrap(f"oracle-labelled ({how})", 60))
        for r in emp:
            ax.annotate(f"{r['labelled']}", (r["n"], r["tp"]), textcoords="offset points", xytext=(5, 5),
                        fontsize=7, color="gray")
    mod = [r for r in rows if r["model_tp"] is not None]
    if mod:
        ax.plot([r["n"] for r in mod], [r["model_tp"] for r in mod], "-", color="C1", label="Beta-judge model (fit)")
    if trend and trend.get("slope") is not None:
        ns = [r["n"] for r in rows]
        ax.plot(ns, [trend["intercept"] + trend["slope"] * n for n in ns], "--", color="C4", lw=1,
                label=_wrap(f"linear fit: {trend_text(trend)}", 60))
    ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"T = {threshold}")
    if nstar:
        ax.axvline(nstar, ls=":", color="C2", label=f"N* = {nstar}")
    ax.set_xlabel("N (draw of the first accept)")
    ax.set_ylabel("TP(N) = P(X=1 | first accepted at N)")
    if trend is not None and trend.get("slope") is None:
        title = f"{title}; {trend_text(trend)}"
    _save_rate_figure(fig, ax, [r["n"] for r in rows], title, output)


def _save_rate_figure(fig, ax, xticks: list, title: str, output: str) -> None:
    """A figure of rates against N, finished (0..1 axis, N ticks, wrapped title, legend) and written."""
    import matplotlib.pyplot as plt

    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(xticks)
    ax.set_title(_wrap(title), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_curve(rows: list[dict], output: str) -> None:
    write_csv(output, rows)


def bon_questions(draws: list[dict], labels: dict[str, dict], judge_ids: list[str], max_draw: int) -> list[list[dict]]:
    """Per question its first `max_draw` draws as {"judges": [[0/1/None per judge] per criterion],
    "oracle": X or None, "score", "tiebreak", "draw_id"} (`judgeflow.oracle.tp.bon`'s input).

    The judges' verdicts stay per criterion, so Best-of-N's acceptance is the workflow's own rule:
    k-of-J on every criterion, then all criteria.
    """
    by_q: dict[str, list[dict]] = {}
    for d in draws:
        if d["draw"] <= max_draw:
            by_q.setdefault(d["question_id"], []).append(d)
    out = []
    for ds in by_q.values():
        ds.sort(key=lambda d: d["draw"])
        out.append([_bon_draw(d, labels, judge_ids) for d in ds])
    return out


def _bon_draw(d: dict, labels: dict[str, dict], judge_ids: list[str]) -> dict:
    if "verdicts" not in d:
        raise ValueError(f"draw {d['draw_id']} has no per-criterion 'verdicts' (a draws file from before they "
                         "were written: rerun sample_until_accept)")
    rows = list(d["verdicts"].values())
    if any(len(r) != len(judge_ids) for r in rows):
        raise ValueError(f"draw {d['draw_id']}: verdicts of {sorted({len(r) for r in rows})} judges per criterion, "
                         f"the config has {len(judge_ids)} ({', '.join(judge_ids)})")
    return {"judges": rows, "oracle": labels[d["draw_id"]]["label"], "score": d.get("score"),
            "tiebreak": d.get("tiebreak"), "draw_id": d["draw_id"]}


def workflow_k(draws: list[dict]) -> int:
    """The k of k-of-J the draws were accepted with (judging.k of the run that drew them)."""
    ks = {d["k"] for d in draws}
    if len(ks) != 1:
        raise ValueError(f"the draws were accepted with different k: {sorted(ks)}")
    return ks.pop()


def check_acceptance(questions: list[list[dict]], draws: list[dict], J: int, k: int) -> None:
    """Best-of-N's rule at the workflow's J and k must give each draw the acceptance the workflow gave it."""
    from judgeflow.oracle.tp.bon import accepted_draws

    was = {d["draw_id"]: d["accepted"] for d in draws}
    for q, acc in zip(questions, accepted_draws(questions, J, k)):
        for d, a in zip(q, acc):
            if a != was[d["draw_id"]]:
                raise ValueError(f"draw {d['draw_id']}: the workflow's accepted is {was[d['draw_id']]}, but k-of-J "
                                 f"(k={k}, J={J}) on every criterion of its verdicts says {a}")


def bon_kept_rows(questions: list[list[dict]], ns: list[int], delta: float, J: int, k: int) -> list[dict]:
    """Per N: the kept draw (the judges' highest score) with the oracle's pass rate and the judges'
    score, beside the TP of a random accepted draw at the workflow's k-of-J."""
    from judgeflow.oracle.tp.bon import bon_grid, kept_grid

    rand = {r["N"]: r for r in bon_grid(questions, Ns=ns, Js=[J], ks=[k], delta=delta)}
    rows = []
    for r in kept_grid(questions, ns, delta):
        a = rand[r["N"]]
        rows.append({**r, "random_accepted_tp": a["tp"], "random_accepted_lower": a["tp_lower"],
                     "random_accepted_upper": a["tp_upper"], "random_accepted_questions": a["tp_questions"],
                     "random_accepted_bound": a["bound"], "J": J, "k": k})
    return rows


def plot_bon_kept(rows: list[dict], output: str, title: str) -> None:
    """x = N: the oracle's pass rate of the kept response (intervals), the judges' score of it and the
    TP of a random accepted draw, on one 0..1 axis: does the oracle's rate fall while the proxy rises?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = [r for r in rows if r["oracle_pass"] is not None]
    if pts:
        ax.errorbar([r["N"] for r in pts], [r["oracle_pass"] for r in pts],
                    yerr=[[r["oracle_pass"] - r["lower"] for r in pts], [r["upper"] - r["oracle_pass"] for r in pts]],
                    fmt="o-", capsize=3, color="C0",
                    label=f"oracle pass rate of the kept response (pointwise {pts[0]['confidence']:.0%} "
                          "Clopper-Pearson)")
        ax.plot([r["N"] for r in pts], [r["judge_score"] for r in pts], "s--", color="C1",
                label="judges' mean P(YES) of the kept response (the proxy)")
    rnd = [r for r in rows if _finite(r["random_accepted_tp"])]
    if rnd:
        ax.plot([r["N"] for r in rnd], [r["random_accepted_tp"] for r in rnd], "^:", color="C2",
                label=f"TP of a random accepted draw ({rnd[0]['k']}-of-{rnd[0]['J']} per criterion)")
    ax.set_xlabel("N (draws; keep the one the judges score highest)")
    ax.set_ylabel("rate / score")
    _save_rate_figure(fig, ax, [r["N"] for r in rows], title, output)


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


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
