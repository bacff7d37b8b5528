"""judge_responses and judge_refinements: J judges label every (item, criterion); k-of-J
aggregation per criterion and overall."""
from __future__ import annotations

from judgeflow.judging.judges import aggregate, judge_items, learned_judges
from judgeflow.models import log_stats, open_models
from judgeflow.workflow.io import questions_by_id, read_jsonl, write_jsonl


def run(inp, out, settings, job) -> None:
    if job.rule == "judge_refinements":
        items = [{**r, "item_id": r["refinement_id"]} for r in read_jsonl(inp.refinements)]
    else:
        items = [{**r, "item_id": r["response_id"], "refinement_id": None} for r in read_jsonl(inp.responses)]
    questions = questions_by_id(inp.kept)
    names = {f"judging.judges[{i}].model": j["model"] for i, j in enumerate(settings["judging"]["judges"])}
    with open_models(settings, names, log_dir=job.log_dir, threads=job.threads) as models:
        models = learned_judges(settings, models, inp.judges)
        verdicts = judge_items(items, questions, settings, models, out.verdicts)
        log_stats(models)
    write_jsonl(out.aggregate, aggregate(verdicts, items, questions, settings))
