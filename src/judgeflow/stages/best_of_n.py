"""best_of_n: Best-of-N over a grid of N, J and k from labelled draws, per question as the unit,
with finite-sample bounds and the independent-judge model (acceptance: the workflow's k-of-J per
criterion, then all criteria); and Best-of-N as used in practice: of a question's first N draws keep
the one the judges score highest, with the oracle's pass rate and the judges' score of it per N."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from judgeflow.judging.verdicts import verdict_ids
from judgeflow.models import log_stats
from judgeflow.oracle import analysis as oa, labelling as oracle_mod
from judgeflow.oracle.draws import BON_FIELDS, DRAW_FIELDS
from judgeflow.oracle.tp.bon import bon_grid
from judgeflow.workflow.io import questions_by_id, read_jsonl_many, write_csv

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    ocfg = settings.oracle
    ns = sorted(set(ocfg.bon.n))
    draws = read_jsonl_many(inp.draws, required=(*DRAW_FIELDS, *BON_FIELDS))
    questions = questions_by_id(inp.kept)
    with job.models() as models:
        labels = oracle_mod.label_all(draws, questions, ocfg, models, out.labels, max_draw=max(ns))
        log_stats(models)
    judge_ids = verdict_ids(settings.judging)
    qs = oa.bon_questions(draws, {r["draw_id"]: r for r in labels}, judge_ids, max(ns))
    k = oa.workflow_k(draws)
    oa.check_acceptance(qs, draws, len(judge_ids), k)
    with open(inp.fit, encoding="utf-8") as fh:
        fit = json.load(fh)
    rows = bon_grid(qs, Ns=ns, Js=ocfg.bon.j or list(range(1, len(judge_ids) + 1)), delta=ocfg.delta,
                    model_params={"a": fit["a"], "b": fit["b"]} if fit.get("ok") else None)
    write_csv(out.grid, rows)
    oa.plot_bon(rows, out.plot, f"run {settings.run}: Best-of-N, {len(qs)} questions, oracle={ocfg.labeller}")
    kept = oa.bon_kept_rows(qs, ns, ocfg.delta, len(judge_ids), k)
    write_csv(out.kept, kept)
    oa.plot_bon_kept(kept, out.kept_plot, f"run {settings.run}: Best-of-N keeping the judges' top-scored draw, "
                                          f"{kept[0]['questions']} questions, oracle={ocfg.labeller}")
