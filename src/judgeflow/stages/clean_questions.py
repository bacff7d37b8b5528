"""clean_questions: the oracle keeps meaningful, answerable questions and rejects the rest with a
reason; `questions.heldout` kept questions are set aside for evaluation, `judging.calibration.questions`
for the judges' calibration."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.models.batch import batched
from judgeflow.questions.sources import clean_questions
from judgeflow.workflow.io import write_json

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    cleaning = settings.cleaning
    with job.models() as models:
        if cleaning.enabled:  # oracle.batch: the Batch API
            models = batched(models, cleaning.model, settings.oracle, "oracle.batch")
        result = clean_questions(inp.questions, out.kept, out.rejected, cleaning, settings.questions,
                                 settings.judging.calibration, settings.seed, models, out.heldout, out.calibration)
        result["models"] = log_stats(models)
    write_json(out.summary, result)
