"""report: every figure and table of the run on one self-contained page, plus per-job timings."""
from __future__ import annotations

from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.models.ledger import ledger_path
from judgeflow.report import benchmark_table, build_report

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    p = job.params
    seed = job.wildcards.get("seed")  # one replicate of the study (`replicates`): its own jobs and title
    each = f"/seed-{seed}" if seed is not None else ""
    bench = f"{settings.benchmarks_dir}/{settings.run}{each}"  # the timings of this run's jobs
    benchmark_table([f for f in glob(f"{bench}/*/*.tsv") if "/report/" not in f], out.timings)
    build_report([*p["sections"], ("Timings per job (benchmark: files)", [out.timings])], out.html,
                 title=f"judgeflow run '{settings.run}'" + (f", replicate seed {seed}" if seed is not None else ""),
                 root=str(Path(out.html).parent),
                 # the API spend: the run's cost ledger where there is one (not an input: none without a price)
                 headline_files={**p["headline"], "costs": ledger_path(settings.logs_dir, settings.run)})
