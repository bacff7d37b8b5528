"""tree_search: one shard's rejected responses (one per question: refining.tree_search.root_choice),
each the root of a breadth-first tree of refinements searched for every exit gate at once, each gate's
nodes those of its own search (judgeflow.refining.tree_search); in round r >= 2 of a per-gate chain,
for that chain's gate alone; with refiner training, round r >= 2 refines (and judges on the refiner's
model) with the refiner trained after round r-1 (train_refiner)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from judgeflow.judging.judges import learned_judges
from judgeflow.models import log_stats
from judgeflow.refining.gate_study import select_roots
from judgeflow.refining.gates import chain_of, parse_gate, round_number
from judgeflow.refining.tree_search import search_trees, searched
from judgeflow.training.lineage import actor_of
from judgeflow.workflow.io import questions_by_id, read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def run(inp, out, settings: Settings, job: Job) -> None:
    refining = settings.refining
    accepted = {a["response_id"] for a in read_jsonl(inp.aggregate) if a["accepted"]}
    rejected = [r for r in read_jsonl(inp.responses) if r["response_id"] not in accepted]
    # SPaR's roots: one failing response per question (a shard holds whole questions), then `roots`' share
    chosen = select_roots(rejected, refining.tree_search.root_choice, settings.seed)
    roots = [dict(r) for r in chosen if searched(settings.seed, r["response_id"], refining.tree_search.roots)]
    chain = chain_of(job.wildcards["round"])  # a per-gate chain's round r >= 2: its own gate alone
    only_gate = parse_gate(chain)[0] if chain else None
    # round r >= 2 with refiner training: the refiner trained after round r-1 of its chain refines, and judges
    # where a judge runs on the refiner's model (SPaR: the refiner is the judge)
    refiner = getattr(inp, "refiner", None)
    with job.models(weights={refining.model: actor_of(refiner)} if refiner else None) as models:
        models = learned_judges(settings.judging, models, inp.judges)
        search_trees(roots, read_jsonl(inp.verdicts), questions_by_id(inp.kept), refining, settings.judging,
                     settings.seed, models[refining.model], models, out.trees,
                     round_=round_number(job.wildcards["round"]), only_gate=only_gate)
        log_stats(models)
