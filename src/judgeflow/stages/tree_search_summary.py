"""tree_search_summary: gates.csv (one row per round and gate), the oracle's pass rate of finals by
exit depth, the figure, and what sharing one search across the gates saved."""
from __future__ import annotations

from judgeflow.refining.tree_search import summarize


def run(inp, out, settings, job) -> None:
    summarize(settings, list(inp.finals), list(inp.comparisons), list(inp.trees), list(inp.aggregates),
              out.gates, out.depth, out.plot, out.summary)
