"""evaluate_policies: exact verifier pass rates, the oracle's preference of each trained policy
over the base (both orders, agreement required) with win-rate intervals, and the table."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.training.evaluation import evaluate, uses_llm_oracle

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    summaries = list(inp.summaries)  # results/<run>/dpo/<variant>/summary.json, beside its model/
    evaluation, training = settings.evaluation, settings.training
    assert training.model is not None and training.variants is not None  # null = resolved by the settings
    evaluate(evaluation, settings.judging, training.model, settings.seed, inp.heldout, training.variants, summaries,
             [str(Path(s).with_name("model")) for s in summaries], list(inp.generations), list(inp.verdicts),
             list(inp.aggregates), out.comparisons, out.table, out.summary, models=job.models,
             batch=settings.oracle if uses_llm_oracle(evaluation) else None)
