"""One self-contained HTML page per run, read as a research summary.

First a headline panel (questions kept and rejected, pairs per variant, the certified N* with T,
delta and the oracle calls spent, TP per extra draw, Best-of-N keeping the judges' top-scored draw
in words, the win rates of the trained policies with their intervals, the judges' p0 and p1 against
the oracle, measured and fitted); then every figure; then the tables,
each in a box of its own that scrolls sideways; the raw JSON last, folded in `<details>`. Images
are embedded (base64) and each item names the file it shows, so the page can be mailed or opened
from a cluster's scratch without the files.
"""
from __future__ import annotations

import base64
import csv
import html
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from judgeflow.refining.gates import round_number
from judgeflow.workflow.io import atomic_path

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.2em;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.02em;margin:1.2em 0 .2em} .src{color:#777;font-size:.82em;font-family:monospace;overflow-wrap:anywhere}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{flex:1 1 220px;min-width:0;border:1px solid #ddd;border-radius:6px;padding:.6em .8em;background:#fafafa}
.card h3{margin:0 0 .3em;font-size:.95em;color:#555} .big{font-size:1.5em;font-weight:600}
.card p{margin:.2em 0;font-size:.9em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #eee;margin:.3em 0}
table{border-collapse:collapse;font-size:.82em;margin:0} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right;
white-space:nowrap} th{background:#f4f4f4;position:sticky;top:0}
figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee} figcaption{font-size:.9em;color:#444}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8em;max-height:30em;overflow-y:auto}
details{margin:.4em 0} summary{cursor:pointer;font-family:monospace;font-size:.9em}
nav a{margin-right:1em}
"""


def _read_json(path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _interval(v, lo, hi) -> str:
    return f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]" if v is not None else "n/a"


def _read_csv(path) -> list[dict] | None:
    """The rows of a CSV file, numbers as floats and empty cells as None (None: no readable file)."""
    def cell(v):
        try:
            return None if v in ("", None) else float(v)
        except ValueError:
            return v

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return [{k: cell(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    except OSError:
        return None


def _change(a: float, b: float) -> str:
    """'rises from 0.40 to 0.55', 'falls from ...' or 'stays at 0.40' (as shown, two decimals)."""
    if round(a, 2) == round(b, 2):
        return f"stays at {_fmt(a)}"
    return f"{'rises' if b > a else 'falls'} from {_fmt(a)} to {_fmt(b)}"


def bon_kept_words(rows: list[dict]) -> list[str]:
    """What the Best-of-N curve of the kept response shows, in words, from bon_kept.csv's rows."""
    rows = sorted((r for r in rows if r.get("oracle_pass") is not None), key=lambda r: r["N"])
    if not rows:
        return ["no kept response was labelled by the oracle"]
    first, last = rows[0], rows[-1]
    n1, n2 = int(first["N"]), int(last["N"])
    if n1 == n2:
        rate = _interval(first["oracle_pass"], first["lower"], first["upper"])
        out = [f"oracle pass rate of the kept response {rate} at N = {n1}; the judges' score of it "
               f"{_fmt(first['judge_score'])}"]
    else:
        out = [f"oracle pass rate of the kept response {_change(first['oracle_pass'], last['oracle_pass'])} as N goes "
               f"{n1} -> {n2}, while the judges' score of it {_change(first['judge_score'], last['judge_score'])}"]
        peak = max(rows, key=lambda r: r["oracle_pass"])
        if peak is not first and peak is not last and round(peak["oracle_pass"], 2) > round(last["oracle_pass"], 2):
            out.append(f"the oracle's rate peaks at N = {int(peak['N'])} ({_fmt(peak['oracle_pass'])}) and then falls")
        out.append(f"at N = {n1}: {_interval(first['oracle_pass'], first['lower'], first['upper'])}; at N = {n2}: "
                   f"{_interval(last['oracle_pass'], last['lower'], last['upper'])}")
    rnd = [r for r in rows if r.get("random_accepted_tp") is not None]
    if rnd:
        k, J = int(rnd[0]["k"]), int(rnd[0]["J"])
        tp = (_change(rnd[0]["random_accepted_tp"], rnd[-1]["random_accepted_tp"]) if len(rnd) > 1
              else f"is {_fmt(rnd[0]['random_accepted_tp'])}")
        out.append(f"a random accepted draw ({k}-of-{J} per criterion): TP {tp}")
    out.append(f"pointwise {last['confidence']:.0%} Clopper-Pearson over {int(last['questions'])} questions")
    if last.get("change") is not None and n1 != n2:
        out.append(f"paired on the same questions, N = {n1} -> {n2}: {last['change']:+.2f} "
                   f"[{last['change_lower']:+.2f}, {last['change_upper']:+.2f}] (question bootstrap), "
                   f"{int(last['gained'])} questions gained and {int(last['lost'])} lost, McNemar p = "
                   f"{last['mcnemar_p']:.2g}" + ("" if last["mcnemar_p"] < 1 - last["confidence"]
                                                 else ": no change detected"))
    return out


def _trained_line(search: str, trained: dict) -> str:
    """What a self-play round's search ran with: its actor (DPO on the previous round's pairs) and refiner
    (fine-tuned on the previous round's successes), each trained or kept."""
    def one(model: str, what: str) -> str:
        t = trained.get(model)
        if t is None:
            return f"the original {model}"
        if t["skipped"]:
            return f"the previous {model}, not retrained ({t.get('reason')})"
        kinds = t.get("used_by_kind") or {}
        detail = f" ({', '.join(f'{n} {k}' for k, n in kinds.items())})" if len(kinds) > 1 else ""
        return f"{model} trained on {t['used']} {what}{detail}, {t['optimizer_steps']} optimizer step(s)"

    return f"search {search}: " + "; ".join([one("actor", "pair(s)"), one("refiner", "example(s)")])


def _card(title: str, big: str, *lines: str) -> str:
    body = "".join(f"<p>{line}</p>" for line in lines if line)
    return f'<div class=card><h3>{html.escape(title)}</h3><div class=big>{big}</div>{body}</div>'


def headline(files: dict[str, str]) -> str:
    """The panel of headline figures, from the run's summary files (a missing one shows n/a)."""
    e = html.escape
    cards = []
    c = _read_json(files.get("cleaning", "")) or {}
    cards.append(_card("Questions", e(f"{c.get('kept', 'n/a')} kept"),
                       e(f"{c.get('questions', 'n/a')} in all, {c.get('heldout', 'n/a')} held out for the "
                         f"evaluation, {c.get('rejected', 'n/a')} rejected in cleaning")))
    p = (_read_json(files["pairs"]) or {}) if "pairs" in files else None
    if p is not None:
        cards.append(_card("Preference pairs", e(f"{p.get('multi_feedback_pairs', 'n/a')} / "
                                                 f"{p.get('full_feedback_pairs', 'n/a')}"),
                           "multi-feedback / full-feedback",
                           e(f"{p.get('responses_accepted', 'n/a')} of {p.get('responses', 'n/a')} responses accepted "
                             "by the judges")))
    t = _read_json(files.get("tree_search", ""))
    if t is not None:
        rows = t.get("gates") or []
        last = max((r["round"] for r in rows), default=1)
        paired = [r for r in t.get("gate_pairs") or [] if r["round"] == last]
        # per-gate chains after round 1: each gate's own actor and roots, compared per question
        by_question = any(r.get("paired_by") == "question" for r in paired)
        unit = "questions" if by_question else "roots"
        if paired:  # the study's question first: do the gates differ, on the same roots?
            cards.append(_card(
                f"Exit gates compared on the same {'questions, each gate its own chain' if by_question else 'roots'} "
                f"(paired, round {last})",
                e(" / ".join(f"{r['gate_b']} - {r['gate_a']}: {r['diff']:+.3f}" for r in paired)),
                *[e(f"{r['gate_b']} - {r['gate_a']}: oracle prefers the final on {r['prefer_a']:.1%} of {unit} under "
                    f"{r['gate_a']}, {r['prefer_b']:.1%} under {r['gate_b']}; difference "
                    f"{_interval(r['diff'], r['diff_ci_low'], r['diff_ci_high'])} at {r['confidence']:.0%} "
                    f"(bootstrap clustered by question, {r['n_roots']} {unit} of {r['n_questions']} questions); "
                    f"exact McNemar p = {r['mcnemar_p']:.3g} on {r['discordant_b'] + r['discordant_c']} discordant "
                    f"{unit}" + (f", Holm-adjusted over {r['holm_family']} pairs: {r['mcnemar_p_holm']:.3g}"
                                if r.get("mcnemar_p_holm") is not None else "")) for r in paired],
                *[e(r["verdict"]) for r in paired],
                *[e(f"power of this run to detect {r['gate_b']} - {r['gate_a']} = +/-{r['effect']:g} (refining."
                    f"tree_search.effect) at alpha = {r['alpha']:g}: {r['achieved_power']:.0%} ({r['n_roots']} {unit}, "
                    f"{r['discordance']:.0%} of them discordant; McNemar, normal approximation)"
                    + (" - too little to tell a null result from no effect" if r["achieved_power"] < 0.8 else ""))
                  for r in paired if r.get("achieved_power") is not None]))
        lines = [e(f"gate {r['gate']}: {_interval(r['win_rate'], r['win_rate_ci_low'], r['win_rate_ci_high'])} "
                   f"({r['oracle_wins']} wins, {r['oracle_losses']} losses, {r['oracle_ties']} ties); "
                   f"{r['solved']} of {r['roots']} roots solved, mean exit depth {_fmt(r['mean_exit_depth'])}")
                 for r in rows if r["round"] == last]
        share = ((t.get("rounds") or {}).get(str(last)) or {}).get("sharing") or {}
        searched = (f"round {last}: each gate's own chain, searched for its gate alone (per-gate chains)"
                    if t.get("chains") == "per_gate" and last > 1 else
                    f"one search for all gates: {share.get('shared_nodes', 'n/a')} refinements instead of "
                    f"{share.get('separate_searches_nodes', 'n/a')} (a search per gate)")
        cards.append(_card(f"Tree search: final vs original, each gate on its own solved roots (not paired; "
                           f"oracle: {t.get('oracle')}, round {last})",
                           e(" / ".join(_fmt(r["win_rate"]) for r in rows if r["round"] == last)), *lines,
                           e(searched), *[e(_trained_line(search, info["trained"]))
                                          for search, info in (t.get("rounds") or {}).items()
                                          if info.get("trained") and round_number(search) == last]))
    n = _read_json(files.get("nstar", ""))
    if n is not None:
        fit = _read_json(files.get("fit", "")) or {}
        labelled = sum(n.get("accepted_per_n", {}).values())
        cards.append(_card("Certified N*", e(f"N* = {n.get('nstar')}"),
                           e(f"TP(n) >= T = {n.get('threshold')} at confidence 1 - delta = "
                             f"{1 - n.get('delta', 0):.2f}"),
                           e(f"{n.get('calls')} oracle calls ({n.get('strategy')}), +{n.get('curve_calls', 0)} for "
                             f"the curve; {labelled} accepted draws"),
                           e("model fit: " + ("converged" if fit.get("ok") else f"not ok ({fit.get('message', '')})")),
                           *([e(f"the fit's constraint p0 < p1 binds: without it p0 {_fmt(fit.get('p0_free'))} >= "
                                f"p1 {_fmt(fit.get('p1_free'))} fits better (the judges accept wrong draws at least "
                                "as often as right ones); the constrained TP(N) model does not describe them")]
                             if fit.get("constraint_binds") else [])))
    tr = (n or {}).get("tp_trend")
    if tr is not None:
        big = "n/a" if tr.get("slope") is None else e(f"{tr['slope']:+.3f} per draw")
        lines = ([e(f"none: {tr.get('reason')}")] if tr.get("slope") is None else
                 [e(f"{_interval(tr['slope'], tr['lower'], tr['upper'])} at {tr['confidence']:.0%} (OLS of X on N, "
                    f"HC3 standard errors; p = {tr['p_value']:.2g})"),
                  e(f"odds ratio per draw {_interval(tr['odds_ratio'], tr['odds_ratio_lower'], tr['odds_ratio_upper'])}"
                    if tr.get("odds_ratio") is not None else (tr.get("logit_note") or "no logistic fit"))])
        cards.append(_card("TP(N) per extra draw", big, *lines,
                           e(f"{tr.get('n')} labels at {tr.get('distinct_n')} values of N: {tr.get('labels')}")))
    bk = _read_csv(files["bon_kept"]) if "bon_kept" in files else None
    if bk is not None:
        words = bon_kept_words(bk)
        pts = sorted((r for r in bk if r.get("oracle_pass") is not None), key=lambda r: r["N"])
        big = e(f"{_fmt(pts[0]['oracle_pass'])} -> {_fmt(pts[-1]['oracle_pass'])}") if pts else "n/a"
        cards.append(_card("Best-of-N: the judges' top-scored draw of N, by the oracle", big, *map(e, words)))
    ev = _read_json(files.get("evaluation", ""))
    if ev is not None:
        per = (ev.get("oracle") or {}).get("per_policy") or {}
        lines, big = [], "n/a"
        for pol, r in per.items():
            decided = r["comparisons"] - r["abstain"]
            share = f", {decided} of {r['comparisons']} decided" if r["comparisons"] else ""
            lines.append(e(f"{pol}: {_interval(r['win_rate'], r['win_rate_ci_low'], r['win_rate_ci_high'])} "
                           f"({r['wins']} wins, {r['losses']} losses, {r['ties']} ties{share})"))
            if big == "n/a" and r["win_rate"] is not None:
                big = e(_fmt(r["win_rate"]))
        cards.append(_card(f"Win rate vs the base (oracle: {ev['oracle'].get('model')})", big,
                           *lines, e(f"{ev.get('heldout_questions')} held-out questions")))
    j = _read_json(files.get("judges", ""))
    if j is not None:
        m, f = j.get("measured") or {}, j.get("fitted")
        lo0, hi0 = m.get("p0_interval") or (None, None)
        lo1, hi1 = m.get("p1_interval") or (None, None)
        cards.append(_card(f"Judges ({j.get('k')}-of-{j.get('J')}) against the oracle, on the draws they accepted",
                           e(f"p1 {_fmt(m.get('p1'))} / p0 {_fmt(m.get('p0'))}"),
                           e("selected by the judges' own accepts: p1 and p0 here are biased (the calibration "
                             "split's table, where there is one, is measured on random responses)"),
                           e(f"p1 = P(accept | X=1) {_interval(m.get('p1'), lo1, hi1)}"),
                           e(f"p0 = P(accept | X=0) {_interval(m.get('p0'), lo0, hi0)}"),
                           e(f"fitted by the TP(N) model: p1 {_fmt(f['p1'])}, p0 {_fmt(f['p0'])}" if f else
                             "no TP(N) model fit"),
                           e(f"mean kappa between judges {_fmt(j.get('mean_pairwise_kappa'))}, over "
                             f"{j.get('labelled')} labelled draws")))
    rp = _read_json(files.get("replay", ""))
    if rp is not None:
        rows = rp.get("rows") or []
        base = next((r for r in rows if r["proxy"] == "none"), None)
        lines = [e(f"{r['strategy']}, proxy {r['proxy']}" + (f" (AUC {_fmt(r['proxy_auc'])})" if r["proxy_auc"]
                                                              is not None else "")
                   + f": median {_fmt(r['median_calls'], 0)} calls, N* {r['nstar_counts']}") for r in rows]
        best = min(rows, key=lambda r: r["median_calls"], default=None)
        big = "n/a" if not (best and base) else e(f"{_fmt(best['median_calls'], 0)} vs {_fmt(base['median_calls'], 0)}")
        cards.append(_card("Oracle calls with a proxy (replayed)", big, *lines,
                           e(f"{rows[0]['runs'] if rows else 0} replays of {rows[0]['pool'] if rows else 0} labelled "
                             "accepted draws")))
    pr = _read_json(files.get("probe", ""))
    if pr is not None:
        ms = pr.get("metrics") or {}
        lines = [e(f"{t}: Brier {_fmt(m.get('brier'), 3)} vs baseline {_fmt(m.get('brier_baseline'), 3)}, difference "
                   f"{_interval(m.get('brier_diff'), *(m.get('brier_diff_ci') or (None, None)))}: "
                   + ("the probe helps" if m.get("helps") else "the baseline is as good"))
                 for t, m in ms.items()]
        helps = [t for t, m in ms.items() if m.get("helps")]
        cards.append(_card("Activation probe (out of fold)",
                           e(f"helps on {', '.join(helps)}" if helps else "no better than the baseline"), *lines,
                           e(f"{pr.get('n_questions')} questions, {pr.get('n_draws')} labelled draws, layer "
                             f"{pr.get('layer')}")))
    cost = costs_card(files.get("costs", ""))
    if cost:
        cards.append(cost)
    return '<section id=headline><div class=cards>' + "".join(cards) + "</div></section>"


def costs_card(path: str) -> str:
    """The run's API spend from its cost ledger (judgeflow.models.ledger): by rule and by model, and what
    the cache saved; empty where there is no ledger."""
    from judgeflow.models import ledger

    lines = ledger.read(path) if path else []
    if not lines:
        return ""
    e = html.escape
    t = ledger.totals(lines)
    rules = [e(f"{rule}: {cost:.4f}") for rule, cost in t["by_rule"].items()]
    models = [e(f"{m}: {r['calls']} calls, {r['prompt_tokens']} + {r['completion_tokens']} tokens, {r['cost']:.4f}; "
                f"{r['cache_hits']} cache hits saved {r['saved']:.4f}") for m, r in t["by_model"].items()]
    return _card("API spend (cost ledger, at each model's price)", e(f"{t['cost']:.4f}"),
                 e(f"the cache saved {t['saved']:.4f} (answers paid before, reused)"), *rules, *models,
                 e(f"ledger: {path}"))


def _table(path: Path, max_rows: int) -> str:
    if path.suffix == ".csv":
        df = pd.read_csv(path)
    elif path.suffix == ".tsv":
        df = pd.read_csv(path, sep="\t")
    else:
        df = pd.read_json(path, lines=True)
    more = f"<p class=src>{len(df) - max_rows} more rows in the file</p>" if len(df) > max_rows else ""
    table = df.head(max_rows).to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="", border=0)
    return f"<div class=scroll>{table}</div>{more}"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build_report(sections: list[tuple[str, list[str]]], output: str, title: str, max_rows: int = 60,
                 root: str | None = None, headline_files: dict[str, str] | None = None,
                 headline_html: str | None = None) -> None:
    """`sections`: [(heading, [file, ...])]: the headline first (`headline_html`, else the cards of
    `headline_files`), then every PNG (captioned with its section), then the CSV/TSV/JSONL tables, then the
    JSON files folded."""
    def shown(p: Path) -> str:
        return html.escape(str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p))

    figures, tables, raw = [], [], []
    for heading, files in sections:
        for f in files:
            p = Path(f)
            name = f"{heading}: {p.name}"
            if not p.exists():
                tables.append(f"<h3>{html.escape(name)}</h3><p>(missing)</p>")
            elif p.suffix == ".png":
                figures.append(_image(p, f"{heading} ({p.name})") + f"<p class=src>{shown(p)}</p>")
            elif p.suffix in (".csv", ".tsv", ".jsonl"):
                tables.append(f"<h3>{html.escape(name)}</h3><p class=src>{shown(p)}</p>" + _table(p, max_rows))
            else:
                text = html.escape(p.read_text(encoding="utf-8", errors="replace")[:50000])
                raw.append(f"<details><summary>{shown(p)}</summary><pre>{text}</pre></details>")
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p class=src>made {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
             '<nav><a href="#headline">Headline</a><a href="#figures">Figures</a><a href="#tables">Tables</a>'
             '<a href="#raw">Raw files</a></nav>',
             headline_html if headline_html is not None else headline(headline_files or {}),
             '<h2 id=figures>Figures</h2>', *figures, '<h2 id=tables>Tables</h2>', *tables,
             '<h2 id=raw>Raw files</h2>', *raw]
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")


def benchmark_table(tsv_files: list[str], output: str) -> None:
    """Per-rule benchmark files gathered into one CSV: rule, job, seconds, max RSS (MB)."""
    rows = []
    for f in sorted(tsv_files):
        p = Path(f)
        df = pd.read_csv(p, sep="\t")
        for _, r in df.iterrows():
            rows.append({"rule": p.parent.name, "job": p.stem, "s": r.get("s"), "max_rss_mb": r.get("max_rss"),
                         "mean_load": r.get("mean_load"), "cpu_time": r.get("cpu_time")})
    with atomic_path(output) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
