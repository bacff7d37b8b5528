"""evaluate_policies: exact verifier pass rates, the oracle's preference of each trained policy
over the base (both orders, agreement required) with win-rate intervals, and the table."""
from __future__ import annotations

from pathlib import Path

from judgeflow.training.evaluation import evaluate


def run(inp, out, settings, job) -> None:
    summaries = list(inp.summaries)  # results/<run>/dpo/<variant>/summary.json, beside its model/
    evaluate(settings, inp.heldout, settings["training"]["variants"], summaries,
             [str(Path(s).with_name("model")) for s in summaries], list(inp.generations), list(inp.verdicts),
             list(inp.aggregates), out.comparisons, out.table, out.summary, models=job.models)
