"""judge_calibration: every judge on the calibration responses against the oracle's labels (prompt judges
judge them here; trained and reward-model judges give their out-of-fold P(YES) from train_judge), and the
k-of-J aggregate: judges/calibration.csv (judgeflow.judging.calibration)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.judging.calibration import calibration_table, write_calibration
from judgeflow.judging.judges import NO, YES, judge_items
from judgeflow.models import log_stats
from judgeflow.workflow.io import questions_by_id, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    judges = settings.judging.judges
    labels = read_jsonl(inp.labels)
    labelled = {lab["response_id"] for lab in labels}
    items = [{**r, "item_id": r["response_id"], "refinement_id": None} for r in read_jsonl(inp.responses)
             if r["response_id"] in labelled]
    prompt = [j.model for j in judges if j.kind == "prompt"]  # the others' verdicts are out of fold
    verdicts = []
    if prompt:
        with job.models(*prompt) as models:
            verdicts = judge_items(items, questions_by_id(inp.calibration), settings.judging, models, out.verdicts,
                                   only={j.id for j in judges if j.kind == "prompt"})
            log_stats(models)
    for path in inp.oof:  # judges/<id>/oof.jsonl
        judge_id = Path(path).parent.name
        verdicts += [{"question_id": o["question_id"], "response_id": o["response_id"], "refinement_id": None,
                      "criterion_id": o["criterion_id"], "judge_id": judge_id, "label": YES if o["yes"] else NO,
                      "label_from": "out_of_fold", "p_yes": o["p_yes"]} for o in read_jsonl(path)]
    write_jsonl(out.verdicts, verdicts)
    table, summary = calibration_table(labels, verdicts, judges, settings.judging.k, settings.seed)
    write_calibration(table, summary, out.table, out.summary)
