"""sample_until_accept: per question, draws until the k-of-J judges accept (N) or draws.n_max."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.generation.sampling import shard_of
from judgeflow.judging.judges import learned_judges
from judgeflow.models import log_stats
from judgeflow.oracle.draws import sample_until_accept
from judgeflow.workflow.io import read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    questions = shard_of(read_jsonl(inp.kept), int(job.wildcards["shard"]), settings.sampling.shards)
    with job.models() as models:
        models = learned_judges(settings.judging, models, inp.judges)
        sample_until_accept(questions, settings.draws, settings.sampling, settings.judging, settings.seed, models,
                            out.draws, out.verdicts)
        log_stats(models)
