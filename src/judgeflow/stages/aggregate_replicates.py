"""aggregate_replicates: each headline of the study per seed (`replicates`), and its mean with a
t-interval across the seeds (judgeflow.replicates), on one page."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from judgeflow import replicates as rep
from judgeflow.report import build_report
from judgeflow.workflow.io import atomic_path, write_json
from judgeflow.workflow.settings import replicate_seeds

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    seeds = replicate_seeds(settings)
    files = vars(inp)
    per_seed = {s: rep.headlines({name: paths[i] for name, paths in files.items()}) for i, s in enumerate(seeds)}
    aggs = rep.aggregate(per_seed)
    table = [a.row() for a in aggs]
    with atomic_path(out.headlines) as tmp:
        pd.DataFrame(rep.long_rows(per_seed), columns=["seed", "group", "headline", "value"]).to_csv(tmp, index=False)
    with atomic_path(out.aggregate) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)
    title = f"run '{settings.run}': {len(seeds)} replicates (seeds {', '.join(map(str, seeds))})"
    rep.plot(aggs, out.plot, title)
    write_json(out.summary, {"run": settings.run, "seeds": seeds, "confidence": aggs[0].confidence if aggs else 0.95,
                             "interval": "two-sided t-interval of the mean across seeds (scipy.stats.t, R - 1 df): "
                                         "run-to-run variation, not the uncertainty within one run",
                             "headlines": table})
    build_report([("Each headline across the seeds: mean and t-interval", [out.plot, out.aggregate]),
                  ("Each headline per seed", [out.headlines])], out.html, title=f"judgeflow {title}",
                 root=str(Path(out.html).parent), headline_html=rep.card_html(aggs, seeds))
