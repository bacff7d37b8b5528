"""label_oracle: the allocation strategy picks which accepted draws the oracle labels (budget, T,
delta); the labels, the certified N*, the empirical and model TP(N) curves and the fit, and TP per
extra draw (nstar.json's `tp_trend`).

The curve's intervals hold for how its labels were chosen: every accepted draw labelled
(oracle.label_all_accepted), the pointwise oracle.interval; else the strategy's sequentially chosen
labels, the anytime-valid betting interval."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.oracle import analysis as oa, labelling as oracle_mod
from judgeflow.oracle.draws import DRAW_FIELDS
from judgeflow.oracle.proxy import PROXY_FIELDS, check_proxy
from judgeflow.oracle.tp import fit as tp_fit, model as tp_model
from judgeflow.workflow.io import questions_by_id, read_jsonl, read_jsonl_many, write_json

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    ocfg, n_max = settings.oracle, settings.draws.n_max
    draws = read_jsonl_many(inp.draws, required=DRAW_FIELDS)
    questions = questions_by_id(inp.kept)
    proxies = None
    if ocfg.strategy == "prediction_powered":
        [path] = inp.proxy  # results/<run>/oracle/proxy-<oracle.proxy>.jsonl
        proxies = {r["draw_id"]: check_proxy(r["proxy"], r["draw_id"], r["source"])
                   for r in read_jsonl(path, required=PROXY_FIELDS)}
    with job.models() as models:
        result = oracle_mod.label_accepted(draws, questions, ocfg, n_max, settings.seed, models, out.labels,
                                           proxies)
        result["models"] = log_stats(models)
    labels = {r["draw_id"]: r for r in read_jsonl(out.labels)}
    fit = tp_fit.fit_model(oa.per_question_records(draws, labels))
    write_json(out.fit, fit)
    curve = tp_model.tp_curve(n_max, a=fit["a"], b=fit["b"], p0=fit["p0"], p1=fit["p1"]) if fit["ok"] else None
    every = ocfg.label_all_accepted
    kind = oa.curve_interval(every, ocfg.interval)
    note = oa.interval_note(kind, ocfg.delta, every, ocfg.strategy)
    rows = oa.tp_curve_rows(draws, labels, n_max, kind, ocfg.delta, curve, result, note)
    oa.write_curve(rows, out.curve)
    result["tp_trend"] = oa.tp_trend(labels, ocfg.delta, oa.labels_used(every))
    nstar = result.get("nstar", 0)
    oa.plot_tp_curve(rows, ocfg.threshold, nstar, out.plot,
                     f"run {settings.run}: N*={nstar} by {result['strategy']} after {result['calls']} oracle "
                     f"calls (+{result['curve_calls']} for the curve), T={ocfg.threshold}, delta={ocfg.delta}",
                     result["tp_trend"])
    write_json(out.nstar, result)
