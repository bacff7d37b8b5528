"""build_pairs: preference pairs (refined > original) the aggregated judges accept, in TRL's
conversational format, and a per-criterion summary."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from judgeflow.refining.pairs import build_pairs
from judgeflow.refining.refine import FULL, MULTI
from judgeflow.workflow.io import questions_by_id, read_jsonl_many, write_csv, write_json, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


def run(inp, out, settings: Settings, job: Job) -> None:
    made, rows, overall = build_pairs(
        questions_by_id(inp.kept), read_jsonl_many(inp.responses), read_jsonl_many(inp.refinements),
        read_jsonl_many(inp.refinement_aggregates), read_jsonl_many(inp.response_aggregates),
        read_jsonl_many(inp.response_verdicts) + read_jsonl_many(inp.refinement_verdicts),
        settings.pairs)
    write_jsonl(out.multi, made[MULTI])
    write_jsonl(out.full, made[FULL])
    write_csv(out.summary, rows)
    write_json(out.overall, overall)
    log.info("pairs: %s", overall)
