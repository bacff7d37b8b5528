"""The policy samples `n_samples` responses per kept question, one shard of questions per job."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.generation.prompting import stable_seed
from judgeflow.generation.resumable import generate_resumable
from judgeflow.models import GenRequest, Sampling

if TYPE_CHECKING:
    from judgeflow.workflow.settings import SamplingSection


def shard_of(questions: list[dict], shard: int, n_shards: int) -> list[dict]:
    """Questions of one shard: every n_shards-th, in file order (stable under reruns)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1} (sampling.shards={n_shards})")
    return questions[shard::n_shards]


def sample_responses(questions: list[dict], sampling: SamplingSection, seed: int, model, output: str,
                     label: str | None = None, n_samples: int | None = None) -> list[dict]:
    """The `sampling` section's draws, seeded from `seed` (the run's). `label`: the model name the records
    carry (default: sampling.model; a self-play round: its actor); `n_samples`: per question (default:
    sampling.n_samples)."""
    params = Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p)
    work = []
    for q in questions:
        for i in range(sampling.n_samples if n_samples is None else n_samples):
            rid = f"{q['question_id']}/r{i}"
            req = GenRequest.chat(q["prompt"], system=sampling.system_prompt, sampling=params,
                                  seed=stable_seed(seed, "sample", q["question_id"], i))
            work.append((rid, req, {"response_id": rid, "question_id": q["question_id"], "sample_index": i,
                                    "model": label or sampling.model}))
    return generate_resumable(model, work, output, key="response_id", desc="sample",
                              chunk=sampling.checkpoint_every)
