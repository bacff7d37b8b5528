"""dpo_diagnostics: per-pair implicit reward margins and sigmoid weights at the start and end of
training, per variant and criterion, and a plot comparing the variants."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.training.diagnostics import compare_variants

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    variants = settings.training.variants or []  # one diagnostics and one summary file each, in this order
    compare_variants(list(inp.diagnostics), list(inp.summaries), out.table, out.plot, out.training,
                     title=f"run {settings.run}: {' vs '.join(variants)}")
