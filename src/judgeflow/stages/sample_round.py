"""sample_round: in self-play round r >= 2 the actor -- the policy DPO-trained on round r-1's pairs --
samples n_samples responses per kept question of one shard (the same seeds as round 1). Where
round r-1 trained on too few pairs (skipped), its actor stays on."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.generation.sampling import sample_responses, shard_of
from judgeflow.models.hf import HFModel
from judgeflow.training.lineage import actor_of
from judgeflow.workflow.io import read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    policy = settings.training.model or settings.sampling.model  # resolved when validated: never null here
    spec = settings.models[policy]
    if spec.backend != "hf":  # validation refuses any other (and this narrows the spec's type)
        raise ConfigError(f"training.model: the actor of a self-play round is an hf model; models.{policy} is "
                          f"backend {spec.backend}")
    questions = shard_of(read_jsonl(inp.kept), int(job.wildcards["shard"]), settings.sampling.shards)
    name = f"actor:round-{job.wildcards['round']}"
    actor = HFModel(name, actor_of(inp.actor), device=spec.device, dtype=spec.dtype,
                    batch_size=spec.batch_size, threads=job.threads)
    sample_responses(questions, settings.sampling, settings.seed, actor, out.responses, label=name)
