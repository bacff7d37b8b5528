"""refine_responses: each failing response refined once per failed criterion (multi-feedback)
and once on all of them (full-feedback), with the judges' critiques in the prompt."""
from __future__ import annotations

from judgeflow.models import log_stats
from judgeflow.refining.refine import refine_responses
from judgeflow.workflow.io import questions_by_id, read_jsonl


def run(inp, out, settings, job) -> None:
    name = settings["refining"]["model"]
    with job.models() as models:
        refine_responses(read_jsonl(inp.responses), read_jsonl(inp.aggregate), read_jsonl(inp.verdicts),
                         questions_by_id(inp.kept), settings, models[name], out.refinements)
        log_stats(models)
