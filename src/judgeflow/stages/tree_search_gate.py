"""tree_search_gate: for one round and gate, each root's exit node (under refining.tree_search.exit),
its pairs (final > original, TRL's format) and the oracle's preference of final over original."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.models import log_stats
from judgeflow.models.batch import batched
from judgeflow.refining.gates import chain_of, parse_gate
from judgeflow.refining.tree_search import compare_finals, finals, pairs_of, read_trees, verify_finals
from judgeflow.workflow.io import questions_by_id, write_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    k, n_judges = parse_gate(job.wildcards["gate"])
    questions = questions_by_id(inp.kept)
    records = finals(read_trees(list(inp.trees)), k, n_judges, settings.refining.tree_search.exit)
    chain = chain_of(job.wildcards["round"])  # a per-gate chain's round: its roots are its own actor's
    for r in records:
        r["chain"] = chain
    verify_finals(records, questions)
    write_jsonl(out.final, records)
    write_jsonl(out.pairs, pairs_of(records, questions, settings.sampling.system_prompt))
    oracle = settings.refining.tree_search.oracle
    if oracle is None or oracle == "verifier":  # the verifier reads no evaluation setting (none declared)
        comparisons = compare_finals(records, questions, None, settings.seed, "verifier") if oracle else []
    else:
        with job.models() as models:
            models = batched(models, oracle, settings.oracle, "oracle.batch")
            comparisons = compare_finals(records, questions, settings.evaluation, settings.seed, models[oracle])
            log_stats(models)
    write_jsonl(out.comparisons, comparisons)
