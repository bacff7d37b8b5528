"""SPaR's refiner and judge training data: rejection-sampling fine-tuning on one self-play round's own
successes (thu-coai/SPaR at 6497aba, src/process_data.py, `process_rft_data`).

* **Refinements.** Per root, the final node of its search for the gate: its exit, else -- no node passed --
  the highest-valued node the search made (SPaR's fallback, src/ToT/bfs.py lines 75-78), kept where its
  value exceeds `refiner_training.min_value` (SPaR's `final_node['value'] > 0.5`) and it lies below the root;
  the example is that node's own refinement step, as SPaR keeps it (`final_node.refine_cot`): the prompt the
  refiner was given for it (its parent, its targets, the critiques of the judges that said NO to the parent;
  `tree_search.refine_prompt`, the one rendering the search used) and the node's text. (The DPO pairs are the
  exits alone: the gate experiment's pairs.)
* **Judgments** (`refiner_training.judgments`), of the judges that run on the refiner's model, on the round's
  responses: per (response, criterion), where the verdicts have a strict majority and at least one dissent
  (SPaR's `good_res` and `bad_res` both present; a tie is left out), each judgment that agrees with the
  majority and states it in its text (read from the text, its first token or its forced continuation; a
  threshold's label is not the text's), its prompt (`judges.judge_prompt`) and the judge's whole answer
  (`raw`). A sampled judge's samples share a prompt: one example per prompt, the first in the verdicts' order
  (SPaR dedups by prompt).

Each example is TRL's conversational prompt-completion format, which SFTTrainer trains on the completion
alone: {"example_id", "kind": refinement | judgment, "question_id", "prompt": [user], "completion": [assistant]}.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from judgeflow.judging.judges import NO, YES, criteria_for, judge_prompt, judges_from_config
from judgeflow.refining.tree_search import ExitRule, exits, rank_key, refine_prompt, refine_templates

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Judging, Refining

# how a verdict's label was read: from the judge's own text (the example teaches that text); not a threshold
# on P(YES) (the text may say otherwise) nor an abstain
FROM_TEXT = ("text", "first_token", "forced")


def example(example_id: str, kind: str, question_id: str, prompt: str, completion: str) -> dict:
    return {"example_id": example_id, "kind": kind, "question_id": question_id,
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": completion}]}


def final_node(tree: list[dict], k: int, rule: ExitRule) -> dict | None:
    """The final node of a root's search for gate k (SPaR's): its exit, else the highest-valued usable node of
    that search below the root (value, then mean P(YES), then order); None where it made none."""
    hit = exits(tree, k, rule)
    if hit is not None:
        return hit
    made = [n for n in tree if n["depth"] > 0 and k in n["gates"] and n["usable"]]
    return min(made, key=rank_key) if made else None


def refinement_examples(trees: dict[str, list[dict]], questions: dict[str, dict], refining: Refining,
                        judging: Judging, k: int, rule: ExitRule, min_value: float = 0.5) -> list[dict]:
    """One example per root whose final node for gate k (`final_node`) lies below the root with a value above
    `min_value`: that node's refinement prompt (from its parent) and its text, in the trees' order."""
    templates = refine_templates(refining)
    out = []
    for tree in trees.values():
        hit = final_node(tree, k, rule)
        if hit is None or hit["depth"] == 0 or (hit["value"] or 0.0) <= min_value:
            continue
        parent = next(n for n in tree if n["node_id"] == hit["parent"])
        q = questions[hit["question_id"]]
        described = {c["criterion_id"]: c["description"] for c in criteria_for(q, judging)}
        prompt = refine_prompt(templates, refining.tree_search.feedback, q, parent, hit["criterion_ids"], described)
        out.append(example(f"refinement/{hit['node_id']}", "refinement", hit["question_id"], prompt, hit["text"]))
    return out


def judgment_examples(verdicts: list[dict], responses: list[dict], questions: dict[str, dict], judging: Judging,
                      model: str) -> list[dict]:
    """The majority-consistent judgments (module docstring) of the prompt judges on `model` among `verdicts`
    (a round's verdicts on its `responses`)."""
    judges = {j.judge_id: j for j in judges_from_config(judging) if j.kind == "prompt" and j.model == model}
    texts = {r["response_id"]: r["text"] for r in responses}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for v in verdicts:
        if (v.get("sample_of") or v["judge_id"]) in judges and v.get("refinement_id") is None:
            groups[(v["response_id"], v["criterion_id"])].append(v)
    out, seen = [], set()
    for (rid, cid), vs in groups.items():
        labels = [v["label"] for v in vs]
        yes, no = labels.count(YES), labels.count(NO)
        if yes == no or not yes or not no:
            continue  # a tie, or no dissent: nothing to learn from (SPaR)
        major = YES if yes > no else NO
        q = questions[vs[0]["question_id"]]
        crits = criteria_for(q, judging)
        for v in vs:
            if v["label"] != major or v.get("label_from") not in FROM_TEXT or not v.get("raw"):
                continue
            j = judges[v.get("sample_of") or v["judge_id"]]
            prompt = judge_prompt(j, q, texts[rid], crits if j.holistic else [c for c in crits
                                                                             if c["criterion_id"] == cid])
            if prompt in seen:
                continue
            seen.add(prompt)
            out.append(example(f"judgment/{rid}/{cid}/{v['judge_id']}", "judgment", v["question_id"], prompt,
                               v["raw"]))
    return out
