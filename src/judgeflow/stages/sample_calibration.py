"""sample_calibration: the policy samples judging.calibration.n_samples responses per calibration question
(random draws of the policy, not selected by any judge: what the judges are calibrated and measured on)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.generation.sampling import sample_responses
from judgeflow.models import log_stats
from judgeflow.workflow.io import read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    sampling = settings.sampling
    questions = read_jsonl(inp.calibration, required=("question_id", "prompt"))
    with job.models() as models:
        sample_responses(questions, sampling, settings.seed, models[sampling.model], out.responses,
                         n_samples=settings.judging.calibration.n_samples)
        log_stats(models)
