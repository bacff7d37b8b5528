"""evolve_questions: SPaR's instruction evolution. The oracle adds constraints to each prepared question
(judgeflow.questions.evolve); clean_questions then reads the evolved questions instead of the prepared ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.models.batch import batched
from judgeflow.questions.evolve import evolve_questions
from judgeflow.workflow.io import write_json

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    evolution = settings.evolution
    with job.models() as models:
        models = batched(models, evolution.model, settings.oracle, "oracle.batch")  # oracle.batch: the Batch API
        # one Batch API batch for every question (it resumes its own batches), else checkpointed batches
        chunk = None if settings.oracle.batch else evolution.checkpoint_every
        result = evolve_questions(inp.questions, out.evolved, out.failed, evolution, models, chunk=chunk)
        result["models"] = log_stats(models)
    write_json(out.summary, result)
