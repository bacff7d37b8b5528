"""judge_responses, judge_refinements and judge_round: J judges label every (item, criterion); k-of-J
aggregation per criterion and overall. In a self-play round r >= 2 with refiner training (judge_round), the
judges on the refiner's model judge with the refiner trained after round r-1 (SPaR: the refiner judges)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.judging.judges import aggregate, judge_items, learned_judges
from judgeflow.models import log_stats
from judgeflow.training.lineage import actor_of
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
    refiner = getattr(inp, "refiner", None)  # judge_round with refiner training: the judges on its model use it
    with job.models(weights={settings.refining.model: actor_of(refiner)} if refiner else None) as models:
        models = learned_judges(settings.judging, models, inp.judges)
        verdicts = judge_items(items, questions, settings.judging, models, out.verdicts)
        log_stats(models)
    write_jsonl(out.aggregate, aggregate(verdicts, items, questions, settings.judging))
