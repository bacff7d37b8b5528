"""evaluate_responses: one policy (the base, or a trained variant) answers the held-out questions
with the same seeds as every other policy (paired); the judges label every (response, criterion)."""
from __future__ import annotations

from judgeflow.training.evaluation import respond_and_judge


def run(inp, out, settings, job) -> None:
    policy = job.wildcards["policy"]
    base = settings["models"][settings["training"]["model"]]["path"]
    respond_and_judge(settings, inp.heldout, policy, base if policy == "base" else inp.trained,
                      None if policy == "base" else inp.summary, out.generations, out.verdicts, out.aggregates,
                      models=job.models, judge_files=inp.judges, threads=job.threads)
