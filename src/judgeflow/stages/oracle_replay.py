"""oracle_replay: the strategies replayed on the fully labelled pool of accepted draws, without a
proxy and with each proxy source (the judges', a model's, the probe's): oracle calls and N*."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from judgeflow.oracle.probe import predicted_tp
from judgeflow.oracle.proxy import PROXY_FIELDS, check_proxy
from judgeflow.oracle.replay import REPLAY_COLUMNS, replay_table
from judgeflow.workflow.io import read_jsonl, write_csv, write_json

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


def run(inp, out, settings: Settings, job: Job) -> None:
    ocfg = settings.oracle
    labels = [r for r in read_jsonl(inp.labels, required=("draw_id", "n", "label"))]
    proxies: dict[str, dict[str, float]] = defaultdict(dict)
    for path in inp.proxies:
        for r in read_jsonl(path, required=PROXY_FIELDS):
            proxies[r["draw_id"]][r["source"]] = check_proxy(r["proxy"], r["draw_id"], r["source"])
    sources = sorted({s for v in proxies.values() for s in v})
    if settings.probe.enabled:
        [path] = inp.probe  # results/<run>/probe/predictions.jsonl
        pred = {r["question_id"]: r for r in read_jsonl(path, required=("question_id", "p", "p0", "p1"))}
        for r in labels:
            q = pred[r["question_id"]]
            proxies[r["draw_id"]]["probe"] = check_proxy(predicted_tp(q["p"], q["p0"], q["p1"]), r["draw_id"],
                                                         "probe")
        sources.append("probe")
    pool = defaultdict(list)
    for r in labels:
        if all(s in proxies[r["draw_id"]] for s in sources):
            pool[r["n"]].append({"draw_id": r["draw_id"], "label": r["label"], "proxies": proxies[r["draw_id"]]})
    rows = replay_table(dict(pool), sources, settings.draws.n_max, ocfg.threshold, ocfg.delta,
                        ocfg.budget, settings.seed, ocfg.replay_runs, ocfg.strategy_options)
    write_csv(out.table, rows, REPLAY_COLUMNS)
    write_json(out.summary, {"rows": rows, "threshold": ocfg.threshold, "delta": ocfg.delta,
                             "budget": ocfg.budget, "note": "labels from file (an exact oracle labelled every "
                                                               "accepted draw); each replay is a new order"})
    for r in rows:
        log.info("replay %s proxy=%s: median %s calls, N* %s", r["strategy"], r["proxy"], r["median_calls"],
                 r["nstar_counts"])
