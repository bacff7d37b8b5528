"""judge_quality: each judge and the k-of-J aggregate against the oracle (confusion matrix, p1 =
P(Y=1 | X=1), p0 = P(Y=1 | X=0) with Clopper-Pearson intervals), and the judges against each other
(Cohen's kappa, correlation of their YES); the measured p0/p1 beside the TP(N) model's fit."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from judgeflow.judging.quality import AGREEMENT_COLUMNS, QUALITY_COLUMNS, quality
from judgeflow.judging.verdicts import verdict_ids
from judgeflow.oracle.draws import DRAW_FIELDS
from judgeflow.workflow.io import read_jsonl, read_jsonl_many, write_csv, write_json

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


def run(inp, out, settings: Settings, job: Job) -> None:
    draws = read_jsonl_many(inp.draws, required=(*DRAW_FIELDS, "judge_accepts", "accepted"))
    labels: dict[str, dict] = {}
    for path in inp.labels:  # the strategy's and the curve's labels, then Best-of-N's: one per draw
        for rec in read_jsonl(path, required=("draw_id", "label")):
            labels.setdefault(rec["draw_id"], rec)
    with open(inp.fit, encoding="utf-8") as fh:
        fit = json.load(fh)
    judge_ids = verdict_ids(settings.judging)
    rows, pairs, summary = quality(draws, labels, judge_ids, settings.oracle.delta, fit)
    summary["k"], summary["J"] = settings.judging.k, len(judge_ids)
    write_csv(out.quality, rows, QUALITY_COLUMNS)
    write_csv(out.agreement, pairs, AGREEMENT_COLUMNS)
    write_json(out.summary, {**summary, "judges": rows, "agreement": pairs})
    log.info("judge quality: %s", summary)
