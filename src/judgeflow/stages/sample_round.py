"""sample_round: in self-play round r >= 2 the actor -- the policy DPO-trained on round r-1's pairs --
samples n_samples responses per kept question of one shard (the same seeds as round 1). Where
round r-1 trained on too few pairs (skipped), its actor stays on."""
from __future__ import annotations

from judgeflow.generation.sampling import sample_responses, shard_of
from judgeflow.models.hf import HFModel
from judgeflow.training.dpo import actor_of
from judgeflow.workflow.io import read_jsonl


def run(inp, out, settings, job) -> None:
    scfg = settings["sampling"]
    spec = settings["models"][settings["training"]["model"]]
    questions = shard_of(read_jsonl(inp.kept), int(job.wildcards["shard"]), scfg["shards"])
    name = f"actor:round-{job.wildcards['round']}"
    actor = HFModel(name, actor_of(inp.actor), device=spec["device"], dtype=spec["dtype"],
                    batch_size=spec["batch_size"], threads=job.threads)
    sample_responses(questions, settings, actor, out.responses, label=name)
