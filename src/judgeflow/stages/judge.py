"""judge_responses and judge_refinements: J judges label every (item, criterion); k-of-J
aggregation per criterion and overall."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.judging.judges import aggregate, judge_items, learned_judges
from judgeflow.models import log_stats
from judgeflow.workflow.io import questions_by_id, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    if job.rule == "judge_refinements":
        items = [{**r, "item_id": r["refinement_id"]} for r in read_jsonl(inp.refinements)]
    else:
        items = [{**r, "item_id": r["response_id"], "refinement_id": None} for r in read_jsonl(inp.responses)]
    questions = questions_by_id(inp.kept)
    with job.models() as models:
        models = learned_judges(settings.judging, models, inp.judges)
        verdicts = judge_items(items, questions, settings.judging, models, out.verdicts)
        log_stats(models)
    write_jsonl(out.aggregate, aggregate(verdicts, items, questions, settings.judging))
