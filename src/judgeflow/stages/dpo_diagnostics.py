"""dpo_diagnostics: per-pair implicit reward margins and sigmoid weights at the start and end of
training, per variant and criterion, and a plot comparing the variants."""
from __future__ import annotations

from judgeflow.training.diagnostics import compare_variants


def run(inp, out, settings, job) -> None:
    variants = settings["training"]["variants"]  # one diagnostics and one summary file each, in this order
    compare_variants(list(inp.diagnostics), list(inp.summaries), out.table, out.plot, out.training,
                     title=f"run {settings['run']}: {' vs '.join(variants)}")
