"""sample_responses: the policy samples n_samples responses per kept question of one shard."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.generation.sampling import sample_responses, shard_of
from judgeflow.models import log_stats
from judgeflow.workflow.io import read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    sampling = settings.sampling
    questions = shard_of(read_jsonl(inp.kept), int(job.wildcards["shard"]), sampling.shards)
    with job.models() as models:
        sample_responses(questions, sampling, settings.seed, models[sampling.model], out.responses)
        log_stats(models)
