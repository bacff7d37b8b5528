"""sample_responses: the policy samples n_samples responses per kept question of one shard."""
from __future__ import annotations

from judgeflow.generation.sampling import sample_responses, shard_of
from judgeflow.models import log_stats
from judgeflow.workflow.io import read_jsonl


def run(inp, out, settings, job) -> None:
    scfg = settings["sampling"]
    questions = shard_of(read_jsonl(inp.kept), int(job.wildcards["shard"]), scfg["shards"])
    with job.models() as models:
        sample_responses(questions, settings, models[scfg["model"]], out.responses)
        log_stats(models)
