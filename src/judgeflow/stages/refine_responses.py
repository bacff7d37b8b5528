"""refine_responses: each failing response refined once per failed criterion (multi-feedback)
and once on all of them (full-feedback), with the judges' critiques in the prompt."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.refining.refine import refine_responses
from judgeflow.workflow.io import questions_by_id, read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    refining = settings.refining
    with job.models() as models:
        refine_responses(read_jsonl(inp.responses), read_jsonl(inp.aggregate), read_jsonl(inp.verdicts),
                         questions_by_id(inp.kept), refining, settings.judging, settings.seed,
                         models[refining.model], out.refinements)
        log_stats(models)
