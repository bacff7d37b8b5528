"""tree_search_summary: the gates compared on the same roots (gate_pairs.csv: paired difference,
question-clustered interval, exact McNemar test, Holm), gates.csv (one row per round and gate), the
oracle's pass rate of finals by exit depth, the figure, what sharing one search across the gates saved, and
what each self-play round's search ran with (its actor's and refiner's trainings)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.judging.verdicts import n_verdicts
from judgeflow.refining.tree_search import summarize

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    summarize(settings.refining.tree_search, n_verdicts(settings.judging), settings.seed, list(inp.finals),
              list(inp.comparisons), list(inp.trees), list(inp.aggregates), out.gates, out.depth, out.plot, out.summary,
              out.outcomes, out.gate_pairs, list(inp.trainings))
