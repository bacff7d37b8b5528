"""evaluate_responses: one policy (the base, or a trained variant) answers the held-out questions
with the same seeds as every other policy (paired); the judges label every (response, criterion)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.training.evaluation import respond_and_judge

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    policy = job.wildcards["policy"]
    name = settings.training.model
    assert name is not None  # null = sampling.model, resolved by the settings
    spec = settings.models[name]
    if spec.backend != "hf":  # the settings refuse it too (DPO trains an hf model)
        raise ConfigError(f"training.model: the policies answer with transformers; models.{name} is backend "
                          f"{spec.backend}, not hf")
    respond_and_judge(settings.evaluation, settings.judging, spec, settings.sampling.system_prompt, settings.seed,
                      inp.heldout, policy, spec.path if policy == "base" else inp.trained,
                      None if policy == "base" else inp.summary, out.generations, out.verdicts, out.aggregates,
                      models=job.models, judge_files=inp.judges, threads=job.threads)
