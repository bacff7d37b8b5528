"""score_proxy: a proxy score f in [0, 1] for every first-accepted draw, from one source (the
`source` wildcard): the judges' mean P(YES), or a model's P(YES) (oracle.proxy names it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.oracle.draws import DRAW_FIELDS
from judgeflow.oracle.proxy import judges_proxy, model_proxy
from judgeflow.workflow.io import questions_by_id, read_jsonl_many, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    source = job.wildcards["source"]
    draws = read_jsonl_many(inp.draws, required=(*DRAW_FIELDS, "first_accept"))
    if source == "judges":
        recs = judges_proxy(draws, read_jsonl_many(inp.verdicts, required=("response_id", "label")))
    else:
        with job.models(source) as models:
            recs = model_proxy(draws, questions_by_id(inp.kept), settings.oracle, models[source], source)
            log_stats(models)
    write_jsonl(out.proxy, recs)
