"""SPaR tree-search refinement with k-of-J exit gates (refining.strategy: tree_search).

Each response the aggregated judges reject (judging.k) is the **root** of a breadth-first tree:

* every expanded node gets `branch` children, refinements of its text by the refiner; a child's id is its
  parent's, its index and its targets (`<parent>.1[c2]`; `[c1+c3]` with full feedback) and it is seeded
  from its id (`stable_seed(seed, "tree", round, node_id)`), so a node's text depends on its path only;
* a child targets the criteria its parent fails at the gate searched for (fewer than k YES), weakest
  first: `feedback: multi`: child i the i-th of them (in turn); `full`: all of them; the critiques of
  the judges that said NO at the parent are in the prompt;
* every usable child is judged by the J judges on every criterion; its **value** is the share of YES
  verdicts over judges and criteria, the mean P(YES) (where known) breaking ties. An abstain counts by
  `judging.abstain`: `no` (a panel's default), as a NO (YES / all verdicts); `drop` (the default in SPaR's
  judging mode, where one judge is sampled J times: judgeflow.judging.judges), left out, YES / (YES + NO),
  SPaR's value (src/models/get_response.py:127); a node with abstains alone then has no value (ranked as 0);
* the `select` best nodes of a level (value, then mean P(YES), then level order) are expanded next;
* a child that is empty or cut at the token limit is **unusable**: never judged, never passing,
  never expanded.

**Gates and exits.** A node passes gate k when, on every criterion, at least k of the J judges say YES (an
abstain is never a YES, with either `judging.abstain`; J counts a sampled judge's samples, `n_verdicts`).
The search for gate k stops after the first level holding a node that passes it; its exit in that
level is (`refining.tree_search.exit`):

* `best_at_level` (the default, SPaR's): the passing node with the highest value (mean P(YES), then
  level order, breaking ties). thu-coai/SPaR, src/ToT/bfs.py (commit 6497aba), `BFS`, lines 53-57:

      ranked_candidates = sorted(candidates, key=lambda item: item.V, reverse=True)
      if ranked_candidates[0].V > tot_task.end_gate:
          print('已找到最终解!\\n')
          ranked_candidates[0].final_ans_flag = 1
          return ranked_candidates[0].response, root, ranked_candidates[0]

  SPaR ranks ALL the nodes of the level and returns the top one if it passes. Its gate is a threshold
  on that same value (`V > end_gate`; V is the share of YES among the sampled judgments,
  src/models/get_response.py, `get_value`, line 127), so its top node passes exactly when some node of
  the level does, and is then the highest-valued passing node. Here the gate is per criterion (a
  minimum) and the value a mean, so a level's top node can fail the gate while another passes: the
  exit is the best of the PASSING nodes, the one reading in which, as in SPaR, the search stops at the
  first level holding a passing node and the exit passes its gate. (Where no node passes, SPaR falls
  back to the tree's highest-valued node, bfs.py lines 75-78; here the root is unsolved: no exit.)
* `first`: the first passing node in breadth-first order (depth, then level order).

Both rules stop at the same level and pick within it, so the rule shapes no tree: it is read by
`exits` and `finals` alone.

**Several gates in one search, exactly.** `refining.tree_search.gates` are searched together and each
gate's tree is the one a search to that gate alone grows. Targets depend on the gate (a parent failing
gate 5 on c1, c2 and c3 may fail gate 3 on c3 alone), so each gate keeps its own frontier; a child that
several gates' searches make with the same parent, index and targets is the same node (same id, prompt
and seed) and is generated once, a child whose targets differ is generated for each. A node's `gates`
lists the gates whose search holds it. A level's order runs over the union (parents ranked together,
then child index), so it orders each gate's nodes as its own search would. `exits`/`finals` read a
gate's nodes only, `nodes_alone` counts them (what the search to that gate alone generates) and
`sharing` sets that against the generations made.

Resumable: each level's generations and verdicts are checkpointed before the next level starts; a
rerun after a kill regenerates no node and gives the same trees.
"""
from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from judgeflow.errors import ConfigError
from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.generation.resumable import generate_resumable
from judgeflow.judging.judges import NO, YES, criteria_for, judge_items
from judgeflow.judging.verdicts import abstain_mode, n_verdicts, yes_share
from judgeflow.models import GenRequest, Sampling
from judgeflow.refining.gates import gate_name, previous_lineage, round_number, training_name
from judgeflow.workflow.io import Checkpoint, read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Evaluation, Judging, Refining, TreeSearch

log = logging.getLogger(__name__)
EMPTY, TRUNCATED = "empty", "truncated"
T = TypeVar("T")
ExitRule = Literal["best_at_level", "first"]  # refining.tree_search.exit
EXIT_RULES: tuple[str, ...] = get_args(ExitRule)


def _resolved(value: T | None, key: str) -> T:
    """A setting whose null means "the same as another key": validation (judgeflow.workflow.settings)
    resolves it, so a null here is a config that was never validated."""
    if value is None:
        raise ConfigError(f"{key}: null, unresolved (the config was not validated: "
                          "judgeflow.workflow.settings.validate gives it the value of the key it follows)")
    return value


def gate_ks(tree: TreeSearch) -> list[int]:
    """The gates' k, ascending (refining.tree_search.gates; null is resolved to judging.k and J)."""
    return sorted(g.k for g in _resolved(tree.gates, "refining.tree_search.gates"))


def yes_counts(verdicts: list[dict], criterion_ids: list[str]) -> dict[str, int]:
    """{criterion: YES verdicts} (abstain and NO are not YES)."""
    out = dict.fromkeys(criterion_ids, 0)
    for v in verdicts:
        out[v["criterion_id"]] += v["label"] == YES
    return out


def passes(node: dict, k: int) -> bool:
    """Gate k: at least k YES on every criterion; an unusable node never passes."""
    return bool(node["usable"]) and all(n >= k for n in node["yes"].values())


def value_of(verdicts: list[dict], abstain: str = "no") -> tuple[float | None, float | None]:
    """(share of YES verdicts, mean P(YES) over the verdicts that have one). `abstain` (judging.abstain):
    `no`, YES / all verdicts; `drop`, YES / (YES + NO) (judgeflow.judging.verdicts.yes_share, the value of
    aggregate records too), None where every verdict abstained."""
    if not verdicts:
        return None, None
    probs = [v["p_yes"] for v in verdicts if v.get("p_yes") is not None]
    return (yes_share([v["label"] for v in verdicts], abstain),
            round(sum(probs) / len(probs), 6) if probs else None)


def rank_key(node: dict) -> tuple:
    return (-(node["value"] or 0.0), -(node["p_yes_mean"] or 0.0), node["order"])


def unusable_reason(text: str, finish_reason: str) -> str | None:
    if not text.strip():
        return EMPTY
    if finish_reason == "length":
        return TRUNCATED
    return None


def _critiques(verdicts: list[dict], cid: str) -> list[str]:
    return [v["critique"] for v in verdicts if v["criterion_id"] == cid and v["label"] == NO and v.get("critique")]


def _bullets(texts: list[str]) -> str:
    return "\n".join(f"- {t}" for t in texts) if texts else "- (no critique given)"


def _slim(v: dict) -> dict:
    return {k: v.get(k) for k in ("criterion_id", "judge_id", "label", "label_from", "p_yes", "critique")}


def _node(base: dict, verdicts: list[dict], criterion_ids: list[str], gates: list[int], abstain: str = "no") -> dict:
    value, p_mean = value_of(verdicts, abstain)
    node = {**base, "verdicts": [_slim(v) for v in verdicts], "yes": yes_counts(verdicts, criterion_ids),
            "value": value if base["usable"] else None, "p_yes_mean": p_mean if base["usable"] else None}
    node["passes"] = [k for k in gates if passes(node, k)]
    return node


def refine_templates(refining: Refining) -> tuple[str, str]:
    """(template_one, template_all), loaded and checked (a ConfigError names the key)."""
    return (load_template(refining.template_one, {"question", "response", "criterion", "critiques"},
                          "refining.template_one"),
            load_template(refining.template_all, {"question", "response", "criteria"}, "refining.template_all"))


def refine_prompt(templates: tuple[str, str], feedback: str, question: dict, parent: dict, targets: list[str],
                  described: dict[str, str]) -> str:
    """The refiner's prompt for a child of `parent` targeting `targets` (multi: one criterion and the critiques
    of the judges that said NO to it; full: each target with its critiques). `described`: criterion id ->
    description. The one rendering: the search and the refiner's training examples
    (judgeflow.refining.self_play) share it."""
    one, full = templates
    if feedback == "multi":
        return one.format(question=question["prompt"], response=parent["text"], criterion=described[targets[0]],
                          critiques=_bullets(_critiques(parent["verdicts"], targets[0])))
    listed = "\n".join(f"{n}. {described[c]}\n{_bullets(_critiques(parent['verdicts'], c))}"
                       for n, c in enumerate(targets, start=1))
    return full.format(question=question["prompt"], response=parent["text"], criteria=listed)


def searched(seed, response_id: str, share: float) -> bool:
    """Is this rejected response a root (refining.tree_search.roots = share)? A uniform number seeded by
    the run's seed and the response id, below `share`: a random subset, independent of the shard."""
    return share >= 1 or random.Random(stable_seed(seed, "tree-root", response_id)).random() < share


def failed_at(node: dict, k: int) -> list[str]:
    """The criteria a node fails at gate k (fewer than k YES), weakest first (ties: the question's order)."""
    return sorted((c for c, n in node["yes"].items() if n < k), key=lambda c: node["yes"][c])


def child_targets(parent: dict, i: int, k: int, feedback: str) -> list[str]:
    """What child i of `parent` targets in the search for gate k: multi, one failed criterion (the children
    take them in turn); full, all of them."""
    failed = failed_at(parent, k)
    return [failed[i % len(failed)]] if feedback == "multi" else failed


def child_id(parent_id: str, i: int, targets: list[str]) -> str:
    """A child's id: its parent's, its index and its targets; the same path gives the same id (and seed)."""
    return f"{parent_id}.{i}[{'+'.join(targets)}]"


def search_trees(roots: list[dict], root_verdicts: list[dict], questions: dict[str, dict], refining: Refining,
                 judging: Judging, seed: int, refiner, judge_models: dict, output: str,
                 round_: int = 1, only_gate: int | None = None) -> list[dict]:
    """Search a tree per root (a rejected response) for every gate at once; write every node.

    Each gate's nodes are those of a search to that gate alone (module docstring): each gate keeps its
    own frontier; a child shared by several gates (same parent, index and targets) is generated once.
    `roots`: response records (response_id, question_id, text); `root_verdicts`: the judges' verdicts
    on them (judge_responses). `refining`: the refiner's templates and sampling, and its `tree_search`
    (the tree's shape and gates); `judging`: the judges; `seed`: the run's (each node's own from it).
    `only_gate`: k of the one gate searched (a per-gate chain's round r >= 2: its own gate only).
    Returns the node records in tree order (root, then level by level)."""
    ts = refining.tree_search
    n_judges = n_verdicts(judging)
    abstain = abstain_mode(judging)
    gates = gate_ks(ts) if only_gate is None else [only_gate]
    strict = gates[-1]
    templates = refine_templates(refining)
    sampling = Sampling(_resolved(ts.max_new_tokens, "refining.tree_search.max_new_tokens"), refining.temperature,
                        refining.top_p)
    out = Path(output)
    work_dir = out.with_name(f".{out.name}.levels")
    nodes = Checkpoint(output, key="node_id")  # finished (judged) nodes

    by_root = defaultdict(list)
    for v in root_verdicts:
        by_root[v["response_id"]].append(v)
    trees: dict[str, list[dict]] = {}  # root id -> its nodes in breadth-first order
    # root id -> gate -> that gate's frontier (its search's `select` best of the last level), ranked
    frontier: dict[str, dict[int, list[dict]]] = {}
    for r in roots:
        q = questions[r["question_id"]]
        cids = [c["criterion_id"] for c in criteria_for(q, judging)]
        root = _node({"node_id": f"{r['response_id']}/t", "root_id": r["response_id"],
                      "question_id": r["question_id"], "round": round_, "parent": None, "depth": 0, "order": 0,
                      "criterion_ids": [], "gates": list(gates), "text": r["text"],
                      "finish_reason": r.get("finish_reason"), "usable": True, "unusable": None, "seed": r.get("seed")},
                     by_root[r["response_id"]], cids, gates, abstain)
        root["searched"] = strict not in root["passes"]
        trees[r["response_id"]] = [root]
        if root["searched"]:
            frontier[r["response_id"]] = {k: [root] for k in gates if k not in root["passes"]}
    log.info("tree search (round %d): %d roots, %d searched (%d pass every gate already), gates %s", round_,
             len(roots), len(frontier), len(roots) - len(frontier), [gate_name(k, n_judges) for k in gates])

    for depth in range(1, ts.depth + 1):
        if not frontier:
            break
        work = []
        level_ids: dict[str, list[str]] = {}  # root id -> its level's node ids, in level order
        for rid, fronts in frontier.items():
            q = questions[next(iter(fronts.values()))[0]["question_id"]]
            described = {c["criterion_id"]: c["description"] for c in criteria_for(q, judging)}
            # the parents of every gate, ranked together: restricted to one gate's, its own frontier's order
            parents = sorted({p["node_id"]: p for f in fronts.values() for p in f}.values(), key=rank_key)
            held = {k: {p["node_id"] for p in f} for k, f in fronts.items()}
            serves = {p["node_id"]: [k for k in sorted(fronts) if p["node_id"] in held[k]] for p in parents}
            specs: dict[str, dict] = {}  # node id -> its record so far (gates filled in), in level order
            for parent in parents:
                for i in range(ts.branch):
                    for k in serves[parent["node_id"]]:
                        targets = child_targets(parent, i, k, ts.feedback)
                        nid = child_id(parent["node_id"], i, targets)
                        if nid in specs:  # another gate's search makes the same child: the same node
                            specs[nid]["gates"].append(k)
                            continue
                        prompt = refine_prompt(templates, ts.feedback, q, parent, targets, described)
                        req = GenRequest.chat(prompt, sampling=sampling, seed=stable_seed(seed, "tree", round_, nid))
                        specs[nid] = {"node_id": nid, "root_id": rid, "question_id": parent["question_id"],
                                      "round": round_, "parent": parent["node_id"], "depth": depth,
                                      "order": len(specs), "criterion_ids": targets, "gates": [k]}
                        work.append((nid, req, specs[nid]))
            level_ids[rid] = list(specs)
        todo = [w for w in work if w[0] not in nodes]
        if todo:
            level = f"{work_dir}/depth-{depth}"
            # a level's generations and verdicts stay in their checkpoints until the trees are written:
            # a job killed while judging a level finds its generations done
            gens = generate_resumable(refiner, todo, f"{level}.generations.jsonl", key="node_id",
                                      desc=f"tree depth {depth}", chunk=ts.checkpoint_every, finish=False)
            for g in gens:
                g["unusable"] = unusable_reason(g["text"], g["finish_reason"])
                g["usable"] = g["unusable"] is None
            items = [{**g, "item_id": g["node_id"], "response_id": g["root_id"], "refinement_id": g["node_id"]}
                     for g in gens if g["usable"]]
            verdicts = judge_items(items, questions, judging, judge_models, f"{level}.verdicts.jsonl",
                                   chunk=ts.checkpoint_every, finish=False) if items else []
            per_node = defaultdict(list)
            for v in verdicts:
                per_node[v["refinement_id"]].append(v)
            records = []
            for g in gens:
                q = questions[g["question_id"]]
                cids = [c["criterion_id"] for c in criteria_for(q, judging)]
                base = {k: g[k] for k in ("node_id", "root_id", "question_id", "round", "parent", "depth", "order",
                                          "criterion_ids", "gates", "text", "finish_reason", "usable", "unusable",
                                          "seed", "completion_tokens")}
                records.append(_node(base, per_node[g["node_id"]], cids, gates, abstain))
            nodes.add_many(records)
        nxt: dict[str, dict[int, list[dict]]] = {}
        for rid, ids in level_ids.items():
            kids = [nodes.done[nid] for nid in ids]
            trees[rid] += kids
            fronts = {}
            for k in frontier[rid]:
                mine = [n for n in kids if k in n["gates"]]
                if any(k in n["passes"] for n in mine):
                    continue  # gate k's search stops at this level: its exit is here
                best = sorted((n for n in mine if n["usable"]), key=rank_key)[:ts.select]
                if best:
                    fronts[k] = best
            if fronts:
                nxt[rid] = fronts
        frontier = nxt
    records = [n for r in roots for n in trees[r["response_id"]]]
    nodes.add_many(n for n in records if n["depth"] == 0)
    nodes.finish(output, [n["node_id"] for n in records])
    for f in sorted(work_dir.glob("*")) if work_dir.exists() else []:
        f.unlink()
    if work_dir.exists():
        work_dir.rmdir()
    return records


# ------------------------------------------------------------------------ per gate, from the trees


def exits(tree: list[dict], k: int, rule: ExitRule) -> dict | None:
    """Gate k's exit among the nodes of its search (`gates` holds k), or None: in the first level holding
    a node that passes k, the passing node of the highest value (`best_at_level`: SPaR's, mean P(YES) then
    level order breaking ties) or the first in level order (`first`)."""
    if rule not in EXIT_RULES:
        raise ConfigError(f"refining.tree_search.exit: {rule!r} is not one of {list(EXIT_RULES)}")
    hits = [n for n in tree if k in n["gates"] and k in n["passes"]]
    if not hits:
        return None
    level = [n for n in hits if n["depth"] == min(n["depth"] for n in hits)]
    return min(level, key=rank_key if rule == "best_at_level" else lambda n: n["order"])


def nodes_alone(tree: list[dict], k: int) -> int:
    """Refinements a search to gate k alone generates: the nodes of its search (`gates` holds k), every
    level up to its exit (all levels if none); the same with either exit rule, which stop at one level."""
    return sum(1 for n in tree if n["depth"] > 0 and k in n["gates"])


def read_trees(paths: list[str]) -> dict[str, list[dict]]:
    trees = defaultdict(list)
    for p in paths:
        for n in read_jsonl(p):
            trees[n["root_id"]].append(n)
    return dict(trees)


def finals(trees: dict[str, list[dict]], k: int, n_judges: int, rule: ExitRule) -> list[dict]:
    """One record per root: root -> its exit at gate k under `rule` (refining.tree_search.exit; `exits`),
    exit_node_id None: no node passes.

    A root that already passes the gate has exit depth 0 (`passed_at_root`): no refinement, no pair."""
    out = []
    for rid, tree in trees.items():
        root = next(n for n in tree if n["depth"] == 0)
        hit = exits(tree, k, rule)
        out.append({"root_id": rid, "question_id": root["question_id"], "round": root["round"],
                    "gate": gate_name(k, n_judges), "k": k, "exit": rule, "solved": hit is not None,
                    "passed_at_root": hit is not None and hit["depth"] == 0,
                    "exit_node_id": hit["node_id"] if hit else None, "exit_depth": hit["depth"] if hit else None,
                    "nodes_generated": nodes_alone(tree, k),
                    "root_failed": [c for c, n in root["yes"].items() if n < k], "root_text": root["text"],
                    "final_text": hit["text"] if hit else None})
    return out


def pairs_of(finals_: list[dict], questions: dict[str, dict], system_prompt: str | None = None) -> list[dict]:
    """final > root in TRL's conversational prompt/chosen/rejected format (exits at depth >= 1)."""
    out = []
    for f in finals_:
        if not f["solved"] or f["passed_at_root"]:
            continue
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": questions[f["question_id"]]["prompt"]}]
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": f["final_text"]}],
                    "rejected": [{"role": "assistant", "content": f["root_text"]}],
                    "question_id": f["question_id"], "response_id": f["root_id"],
                    "refinement_id": f["exit_node_id"], "criterion_ids": f["root_failed"],
                    "exit_depth": f["exit_depth"], "gate": f["gate"]})
    return out


def compare_finals(finals_: list[dict], questions: dict[str, dict], evaluation: Evaluation | None, seed: int,
                   oracle) -> list[dict]:
    """The oracle's preference of the final response over the original, asked in both orders (the
    evaluation's comparer: evaluation.compare_with_oracle, its template and token limit: `evaluation`,
    None with the verifier, which reads none of it); one record per refined root. `outcome` is from
    the final's side: win = the oracle prefers the final."""
    from judgeflow.training.evaluation import BASE, compare_with_oracle

    refined = [f for f in finals_ if f["solved"] and not f["passed_at_root"]]
    gens = []
    for f in refined:
        common = {"question_id": f["question_id"], "sample_index": f["root_id"]}
        gens.append({**common, "policy": "final", "item_id": f["exit_node_id"], "text": f["final_text"]})
        gens.append({**common, "policy": BASE, "item_id": f["root_id"], "text": f["root_text"]})
    if not gens:
        return []
    by_root = {f["root_id"]: f for f in refined}
    out = []
    for c in compare_with_oracle(gens, questions, evaluation, seed, oracle):
        f = by_root[c["sample_index"]]
        out.append({"comparison_id": f"{f['gate']}/{f['root_id']}", "gate": f["gate"], "root_id": f["root_id"],
                    "question_id": f["question_id"], "exit_node_id": f["exit_node_id"],
                    "exit_depth": f["exit_depth"], "outcome": c["outcome"], "final_first": c["policy_first"],
                    "original_first": c["base_first"]})
    return out


def verify_finals(finals_: list[dict], questions: dict[str, dict]) -> None:
    """`oracle_pass` of each final (and `root_pass` of its root): the exact verifier's all-instructions
    verdict, None where the question has no checker (or it failed)."""
    from judgeflow.judging.verifier import verify

    def one(q, text):
        if text is None:
            return None
        try:
            v = verify(q, text)
        except Exception:  # noqa: BLE001 - a checker that cannot run: no exact verdict
            return None
        return None if v is None else v["all"]

    for f in finals_:
        q = questions[f["question_id"]]
        f["root_pass"] = one(q, f["root_text"])
        f["oracle_pass"] = one(q, f["final_text"])


def _ci(k: int, n: int, confidence: float) -> tuple[float | None, float | None]:
    if not n:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return round(float(ci.low), 4), round(float(ci.high), 4)


GATE_COLUMNS = ["round", "gate", "roots", "solved", "solve_rate", "mean_exit_depth", "nodes_generated",
                "oracle_wins", "oracle_losses", "oracle_ties", "oracle_inconsistent", "oracle_abstain", "win_rate",
                "win_rate_ci_low", "win_rate_ci_high", "passed_at_root", "final_pass_rate", "root_pass_rate"]


def gate_row(round_: int, gate: str, finals_: list[dict], comparisons: list[dict], confidence: float) -> dict:
    """One row of gates.csv: solved roots, exit depth, generation, the oracle's preference (win rate over
    the comparisons both orders agree on, Clopper-Pearson), the exact pass rates of finals and roots."""
    from collections import Counter

    from judgeflow.training.evaluation import win_rate

    solved = [f for f in finals_ if f["solved"]]
    depths = [f["exit_depth"] for f in solved]
    w = win_rate(Counter(c["outcome"] for c in comparisons), confidence)
    verified = [f for f in solved if f.get("oracle_pass") is not None]
    roots_v = [f for f in finals_ if f.get("root_pass") is not None]
    return {"round": round_, "gate": gate, "roots": len(finals_), "solved": len(solved),
            "solve_rate": round(len(solved) / len(finals_), 4) if finals_ else None,
            "mean_exit_depth": round(sum(depths) / len(depths), 4) if depths else None,
            "nodes_generated": sum(f["nodes_generated"] for f in finals_),
            "oracle_wins": w["wins"], "oracle_losses": w["losses"], "oracle_ties": w["ties"],
            "oracle_inconsistent": w["inconsistent"], "oracle_abstain": w["abstain"], "win_rate": w["win_rate"],
            "win_rate_ci_low": w["win_rate_ci_low"], "win_rate_ci_high": w["win_rate_ci_high"],
            "passed_at_root": sum(f["passed_at_root"] for f in finals_),
            "final_pass_rate": round(sum(f["oracle_pass"] for f in verified) / len(verified), 4) if verified else None,
            "root_pass_rate": round(sum(f["root_pass"] for f in roots_v) / len(roots_v), 4) if roots_v else None}


def depth_rows(round_: int, gate: str, finals_: list[dict], confidence: float) -> list[dict]:
    """The oracle's pass rate of final responses by exit depth, with intervals (TP(N)'s analogue)."""
    by_depth = defaultdict(list)
    for f in finals_:
        if f["solved"] and f.get("oracle_pass") is not None:
            by_depth[f["exit_depth"]].append(f["oracle_pass"])
    rows = []
    for d in sorted(by_depth):
        n, k = len(by_depth[d]), sum(by_depth[d])
        lo, hi = _ci(k, n, confidence)
        rows.append({"round": round_, "gate": gate, "exit_depth": d, "finals": n, "oracle_pass": k,
                     "pass_rate": round(k / n, 4), "pass_rate_ci_low": lo, "pass_rate_ci_high": hi})
    return rows


def sharing(trees: dict[str, list[dict]], gates: list[int]) -> dict:
    """Generation of the shared search (all gates in one) against a search per gate alone: the nodes
    generated, what each gate's search alone generates (`nodes_alone`), and the nodes by the gates they
    serve ("3,5": made once for both; "5": where gate 5's targets differed, or gate 3 had stopped)."""
    shared = sum(1 for t in trees.values() for n in t if n["depth"] > 0)
    alone = {k: sum(nodes_alone(t, k) for t in trees.values()) for k in gates}
    strict = alone[max(gates)] if gates else 0
    separate = sum(alone.values())
    by_gates: dict[str, int] = defaultdict(int)
    for t in trees.values():
        for n in t:
            if n["depth"] > 0:
                by_gates[",".join(str(k) for k in sorted(n["gates"]))] += 1
    return {"shared_nodes": shared, "alone_nodes": {str(k): v for k, v in alone.items()},
            "strictest_alone_nodes": strict, "separate_searches_nodes": separate,
            "shared_over_strictest": round(shared / strict, 4) if strict else None,
            "saved_nodes": separate - shared,
            "saved_share": round((separate - shared) / separate, 4) if separate else None,
            "nodes_by_gates": dict(sorted(by_gates.items()))}


DEPTH_COLUMNS = ["round", "gate", "exit_depth", "finals", "oracle_pass", "pass_rate", "pass_rate_ci_low",
                 "pass_rate_ci_high"]


def summarize(ts: TreeSearch, n_judges: int, seed: int, final_paths: list[str], comparison_paths: list[str],
              tree_paths: list[str], aggregate_paths: list[str], gates_out: str, depth_out: str, plot_out: str,
              summary_out: str, outcomes_out: str, pairs_out: str, training_paths: Sequence[str] = ()) -> dict:
    """gates.csv, depth.csv, the figure and summary.json over every round and gate (`n_judges`: J), and
    the gates compared on the same roots (judgeflow.refining.gate_study): each root's outcome under
    each gate (gate_outcomes.jsonl) and every pair of gates of a round (gate_pairs.csv, and
    summary.json's `gate_pairs`, first): the paired difference in how often the oracle prefers the
    final, its question-clustered bootstrap interval (`seed`), the exact McNemar test, Holm's
    correction; with `effect` set, the power the run had to detect it (`achieved_power`: n roots, the
    observed share of discordant roots, at least the effect, alpha = 1 - confidence). Without a tree
    oracle (`oracle: null` and no evaluation oracle) there is nothing to compare: both are empty.
    `training_paths`: the summaries of the self-play trainings; each search of round r >= 2 gets `trained`,
    what its actor and refiner were (`trained_brief`)."""
    from judgeflow.refining.gate_study import COMPARE_COLUMNS, achieved_power, compare_gates, root_outcomes
    from judgeflow.workflow.io import read_jsonl_many, write_csv, write_json, write_jsonl

    gates = gate_ks(ts)
    listed = [g.k for g in _resolved(ts.gates, "refining.tree_search.gates")]  # in the config's order
    conf = ts.confidence
    by_gate = defaultdict(list)  # (round, gate) -> finals
    for f in read_jsonl_many(final_paths):
        by_gate[(f["round"], f["gate"])].append(f)
    comps = defaultdict(list)
    for p in comparison_paths:
        for c in read_jsonl(p):
            comps[(_round_of(p), c["gate"])].append({**c, "round": _round_of(p)})
    order = [(r, gate_name(k, n_judges)) for r in range(1, ts.rounds + 1) for k in gates]
    rows = [gate_row(r, g, by_gate[(r, g)], comps[(r, g)], conf) for r, g in order]
    depth = [d for r, g in order for d in depth_rows(r, g, by_gate[(r, g)], conf)]
    write_csv(gates_out, rows, GATE_COLUMNS)
    write_csv(depth_out, depth, DEPTH_COLUMNS)
    compared = ts.oracle is not None
    outcomes = root_outcomes([f for fs in by_gate.values() for f in fs],
                             [c for cs in comps.values() for c in cs]) if compared else []
    pairs = compare_gates(outcomes, conf, ts.bootstrap, seed) if compared else []
    for row in pairs:  # the power this run had for the effect it looked for (refining.tree_search.effect)
        row["effect"] = ts.effect
        row["achieved_power"] = (None if ts.effect is None or not row["n_roots"] else round(achieved_power(
            row["n_roots"], ts.effect, max(row["discordance"], ts.effect), row["alpha"]), 4))
    write_jsonl(outcomes_out, outcomes)
    write_csv(pairs_out, pairs, [*COMPARE_COLUMNS, "effect", "achieved_power"])
    trainings = {}  # training name -> its summary (train_round: "variant"; train_refiner: "training")
    for p in training_paths:
        with open(p) as fh:
            t = json.load(fh)
        trainings[t.get("training") or t["variant"]] = t
    rounds = {}  # per search: round 1, round r (shared chain) or round r of a gate's chain ("2/chain-3of3")
    for lineage in sorted({_lineage_of(p) for p in tree_paths}, key=lambda x: (int(x.split("/")[0]), x)):
        trees = read_trees([p for p in tree_paths if _lineage_of(p) == lineage])
        aggs = read_jsonl_many([p for p in aggregate_paths if _lineage_of(p) == lineage])
        rounds[lineage] = {"responses": len(aggs), "accepted_by_judges": sum(a["accepted"] for a in aggs),
                          "roots": len(trees),
                          "not_searched": sum(1 for t in trees.values() for n in t if n["depth"] == 0
                                              and not n.get("searched", True)),
                          "unusable_nodes": sum(1 for t in trees.values() for n in t if not n["usable"]),
                          "sharing": sharing(trees, listed)}
        if round_number(lineage) > 1:
            before = previous_lineage(lineage)
            rounds[lineage]["trained"] = {m: trained_brief(trainings[training_name(before, m)])
                                          for m in ("actor", "refiner") if training_name(before, m) in trainings}
    summary = {"gate_pairs": pairs, "gates": rows, "rounds": rounds, "branch": ts.branch, "select": ts.select,
               "depth": ts.depth, "feedback": ts.feedback, "exit": ts.exit, "oracle": ts.oracle, "confidence": conf,
               "chains": ts.chains}
    write_json(summary_out, summary)
    plot_gates(rows, depth, plot_out)
    return summary


def trained_brief(summary: dict) -> dict:
    """What a self-play training gave the next round: trained (pairs or examples used, by kind, optimizer
    steps) or skipped (the reason; the next round kept the model it would have started from)."""
    used = summary.get("pairs_used", summary.get("examples_used"))
    out = {"training": summary.get("training") or summary.get("variant"), "skipped": bool(summary.get("skipped")),
           "used": used, "optimizer_steps": summary.get("optimizer_steps")}
    if "used_by_kind" in summary:
        out["used_by_kind"] = summary["used_by_kind"]
    if out["skipped"]:
        out |= {"reason": summary.get("reason"), "kept": summary.get("start")}
    return out


def _round_of(path: str) -> int:
    return round_number(_lineage_of(path))


def _lineage_of(path: str) -> str:
    """The search a file belongs to: "1" (round 1, or no round in its path), "2" (a shared chain's round)
    or "2/chain-3of3" (round 2 of gate 3of3's chain)."""
    import re

    m = re.search(r"round-(\d+)(/chain-\d+of\d+)?", str(path))
    return m.group(1) + (m.group(2) or "") if m else "1"


def plot_gates(rows: list[dict], depth: list[dict], path: str) -> None:
    """Win rate of final over original per gate (left) and the oracle's pass rate by exit depth (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from judgeflow.workflow.io import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [f"r{r['round']} {r['gate']}" for r in rows]
    for i, r in enumerate(rows):
        if r["win_rate"] is not None:
            ax1.errorbar([i], [r["win_rate"]], yerr=[[r["win_rate"] - r["win_rate_ci_low"]],
                                                     [r["win_rate_ci_high"] - r["win_rate"]]], fmt="o", capsize=4)
        ax1.annotate(f"n={r['oracle_wins'] + r['oracle_losses']}", (i, 0.02), ha="center", fontsize=8)
    ax1.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax1.set_xticks(range(len(rows)), labels)
    ax1.set_xlim(-0.5, max(len(rows) - 0.5, 0.5))
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("oracle prefers final over original")
    ax1.set_title("win rate by gate (ties excluded)")
    for gate in dict.fromkeys(f"r{d['round']} {d['gate']}" for d in depth):
        ds = [d for d in depth if f"r{d['round']} {d['gate']}" == gate]
        x = [d["exit_depth"] for d in ds]
        y = [d["pass_rate"] for d in ds]
        err = [[d["pass_rate"] - d["pass_rate_ci_low"] for d in ds],
               [d["pass_rate_ci_high"] - d["pass_rate"] for d in ds]]
        ax2.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label=gate)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("exit depth (0 = the original passed the gate)")
    ax2.set_ylabel("oracle pass rate of the final")
    ax2.set_title("pass rate by exit depth")
    if depth:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
