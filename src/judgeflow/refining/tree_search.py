"""SPaR tree-search refinement with k-of-J exit gates (refining.strategy: tree_search).

Each response the aggregated judges reject (judging.k) is the **root** of a breadth-first tree:

* every expanded node gets `branch` children, refinements of its text by the refiner, each seeded
  from its own node id (`stable_seed(seed, "tree", round, node_id)`), so a node's text depends on its
  ancestors only, never on how far the search went;
* `feedback: multi`: child i targets one failed criterion (the failed ones in turn); `full`: all of
  them; the critiques of the judges that said NO at the parent are in the prompt;
* every usable child is judged by the J judges on every criterion; its **value** is the share of
  YES verdicts over judges and criteria, the mean P(YES) (where known) breaking ties;
* the `select` best nodes of a level (value, then mean P(YES), then level order) are expanded next;
* a child that is empty or cut at the token limit is **unusable**: never judged, never passing,
  never expanded.

A node **passes gate k** when, on every criterion, at least k of the J judges say YES. The search
of a root runs to the strictest gate (the largest k) and stops after the first level holding a
node that passes it. Targets, selection and seeds do not depend on the gates, so the tree of a
looser gate is a prefix of this one: each gate's exit is the first node in breadth-first order that
passes it (`exits`), the comparison across gates is paired (same roots, same nodes), and the extra
gates cost no generation (`nodes_alone` counts what a search to one gate alone would generate).

Resumable: each level's generations and verdicts are checkpointed before the next level starts; a
rerun after a kill regenerates no node and gives the same trees.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from judgeflow.errors import ConfigError
from judgeflow.generation.prompting import load_template, stable_seed
from judgeflow.generation.resumable import generate_resumable
from judgeflow.judging.judges import NO, YES, criteria_for, judge_items
from judgeflow.models import GenRequest, Sampling
from judgeflow.refining.gates import gate_name
from judgeflow.workflow.io import Checkpoint, read_jsonl

if TYPE_CHECKING:
    from judgeflow.workflow.settings import Evaluation, Judging, Refining, TreeSearch

log = logging.getLogger(__name__)
EMPTY, TRUNCATED = "empty", "truncated"
T = TypeVar("T")


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


def value_of(verdicts: list[dict]) -> tuple[float | None, float | None]:
    """(share of YES verdicts, mean P(YES) over the verdicts that have one)."""
    if not verdicts:
        return None, None
    probs = [v["p_yes"] for v in verdicts if v.get("p_yes") is not None]
    return (round(sum(v["label"] == YES for v in verdicts) / len(verdicts), 6),
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


def _node(base: dict, verdicts: list[dict], criterion_ids: list[str], gates: list[int]) -> dict:
    value, p_mean = value_of(verdicts)
    node = {**base, "verdicts": [_slim(v) for v in verdicts], "yes": yes_counts(verdicts, criterion_ids),
            "value": value if base["usable"] else None, "p_yes_mean": p_mean if base["usable"] else None}
    node["passes"] = [k for k in gates if passes(node, k)]
    return node


def searched(seed, response_id: str, share: float) -> bool:
    """Is this rejected response a root (refining.tree_search.roots = share)? A uniform number seeded by
    the run's seed and the response id, below `share`: a random subset, independent of the shard."""
    return share >= 1 or random.Random(stable_seed(seed, "tree-root", response_id)).random() < share


def search_trees(roots: list[dict], root_verdicts: list[dict], questions: dict[str, dict], refining: Refining,
                 judging: Judging, seed: int, refiner, judge_models: dict, output: str,
                 round_: int = 1) -> list[dict]:
    """Search a tree per root (a rejected response), run to the strictest gate; write every node.

    `roots`: response records (response_id, question_id, text); `root_verdicts`: the judges' verdicts
    on them (judge_responses). `refining`: the refiner's templates and sampling, and its `tree_search`
    (the tree's shape and gates); `judging`: the judges; `seed`: the run's (each node's own from it).
    Returns the node records in tree order (root, then level by level)."""
    ts = refining.tree_search
    n_judges = len(judging.judges)
    gates = gate_ks(ts)
    strict = gates[-1]
    one = load_template(refining.template_one, {"question", "response", "criterion", "critiques"},
                        "refining.template_one")
    full = load_template(refining.template_all, {"question", "response", "criteria"}, "refining.template_all")
    sampling = Sampling(_resolved(ts.max_new_tokens, "refining.tree_search.max_new_tokens"), refining.temperature,
                        refining.top_p)
    out = Path(output)
    work_dir = out.with_name(f".{out.name}.levels")
    nodes = Checkpoint(output, key="node_id")  # finished (judged) nodes

    by_root = defaultdict(list)
    for v in root_verdicts:
        by_root[v["response_id"]].append(v)
    trees: dict[str, list[dict]] = {}  # root id -> its nodes in breadth-first order
    frontier: dict[str, list[dict]] = {}
    for r in roots:
        q = questions[r["question_id"]]
        cids = [c["criterion_id"] for c in criteria_for(q, judging)]
        root = _node({"node_id": f"{r['response_id']}/t", "root_id": r["response_id"],
                      "question_id": r["question_id"], "round": round_, "parent": None, "depth": 0, "order": 0,
                      "criterion_ids": [], "text": r["text"], "finish_reason": r.get("finish_reason"),
                      "usable": True, "unusable": None, "seed": r.get("seed")},
                     by_root[r["response_id"]], cids, gates)
        root["searched"] = strict not in root["passes"]
        trees[r["response_id"]] = [root]
        if root["searched"]:
            frontier[r["response_id"]] = [root]
    log.info("tree search (round %d): %d roots, %d searched (%d pass every gate already), gates %s", round_,
             len(roots), len(frontier), len(roots) - len(frontier), [gate_name(k, n_judges) for k in gates])

    for depth in range(1, ts.depth + 1):
        if not frontier:
            break
        work = []
        for rid, parents in frontier.items():
            q = questions[parents[0]["question_id"]]
            described = {c["criterion_id"]: c["description"] for c in criteria_for(q, judging)}
            order = 0
            for parent in parents:
                # the criteria failing the strictest gate, weakest first: the same whichever gate is searched for
                failed = sorted((c for c, n in parent["yes"].items() if n < strict), key=lambda c: parent["yes"][c])
                for i in range(ts.branch):
                    nid = f"{parent['node_id']}.{i}"
                    if ts.feedback == "multi":
                        targets = [failed[i % len(failed)]]
                        prompt = one.format(question=q["prompt"], response=parent["text"],
                                            criterion=described[targets[0]],
                                            critiques=_bullets(_critiques(parent["verdicts"], targets[0])))
                    else:
                        targets = list(failed)
                        listed = "\n".join(f"{n}. {described[c]}\n{_bullets(_critiques(parent['verdicts'], c))}"
                                           for n, c in enumerate(targets, start=1))
                        prompt = full.format(question=q["prompt"], response=parent["text"], criteria=listed)
                    req = GenRequest.chat(prompt, sampling=sampling,
                                          seed=stable_seed(seed, "tree", round_, nid))
                    work.append((nid, req, {"node_id": nid, "root_id": rid, "question_id": parent["question_id"],
                                            "round": round_, "parent": parent["node_id"], "depth": depth,
                                            "order": order, "criterion_ids": targets}))
                    order += 1
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
                                          "criterion_ids", "text", "finish_reason", "usable", "unusable", "seed",
                                          "completion_tokens")}
                records.append(_node(base, per_node[g["node_id"]], cids, gates))
            nodes.add_many(records)
        level_nodes = defaultdict(list)
        for nid, _, _ in work:
            node = nodes.done[nid]
            level_nodes[node["root_id"]].append(node)
        nxt = {}
        for rid, kids in level_nodes.items():
            trees[rid] += kids
            if any(strict in n["passes"] for n in kids):
                continue  # exits at the strictest gate: this root's search is over
            usable = sorted((n for n in kids if n["usable"]), key=rank_key)[:ts.select]
            if usable:
                nxt[rid] = usable
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


def exits(tree: list[dict], k: int) -> dict | None:
    """The first node in breadth-first order (depth, then level order) that passes gate k, or None."""
    for node in sorted(tree, key=lambda n: (n["depth"], n["order"])):
        if k in node["passes"]:
            return node
    return None


def nodes_alone(tree: list[dict], k: int) -> int:
    """Refinements a search to gate k alone generates: every level up to its exit (all levels if none)."""
    hit = exits(tree, k)
    last = hit["depth"] if hit is not None else max(n["depth"] for n in tree)
    return sum(1 for n in tree if 0 < n["depth"] <= last)


def read_trees(paths: list[str]) -> dict[str, list[dict]]:
    trees = defaultdict(list)
    for p in paths:
        for n in read_jsonl(p):
            trees[n["root_id"]].append(n)
    return dict(trees)


def finals(trees: dict[str, list[dict]], k: int, n_judges: int) -> list[dict]:
    """One record per root: root -> the first node that passes gate k (exit_node_id None: none did).

    A root that already passes the gate has exit depth 0 (`passed_at_root`): no refinement, no pair."""
    out = []
    for rid, tree in trees.items():
        root = next(n for n in tree if n["depth"] == 0)
        hit = exits(tree, k)
        out.append({"root_id": rid, "question_id": root["question_id"], "round": root["round"],
                    "gate": gate_name(k, n_judges), "k": k, "solved": hit is not None,
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
    """Generation of the shared search (all gates in one) against a search per gate alone."""
    shared = sum(1 for t in trees.values() for n in t if n["depth"] > 0)
    alone = {k: sum(nodes_alone(t, k) for t in trees.values()) for k in gates}
    strict = alone[max(gates)] if gates else 0
    separate = sum(alone.values())
    return {"shared_nodes": shared, "alone_nodes": {str(k): v for k, v in alone.items()},
            "strictest_alone_nodes": strict, "separate_searches_nodes": separate,
            "shared_over_strictest": round(shared / strict, 4) if strict else None,
            "saved_nodes": separate - shared,
            "saved_share": round((separate - shared) / separate, 4) if separate else None}


DEPTH_COLUMNS = ["round", "gate", "exit_depth", "finals", "oracle_pass", "pass_rate", "pass_rate_ci_low",
                 "pass_rate_ci_high"]


def summarize(ts: TreeSearch, n_judges: int, final_paths: list[str], comparison_paths: list[str],
              tree_paths: list[str], aggregate_paths: list[str], gates_out: str, depth_out: str, plot_out: str,
              summary_out: str) -> dict:
    """gates.csv, depth.csv, the figure and summary.json over every round and gate (`n_judges`: J)."""
    from judgeflow.workflow.io import read_jsonl_many, write_csv, write_json

    gates = gate_ks(ts)
    listed = [g.k for g in _resolved(ts.gates, "refining.tree_search.gates")]  # in the config's order
    conf = ts.confidence
    by_gate = defaultdict(list)  # (round, gate) -> finals
    for f in read_jsonl_many(final_paths):
        by_gate[(f["round"], f["gate"])].append(f)
    comps = defaultdict(list)
    for p in comparison_paths:
        for c in read_jsonl(p):
            comps[(_round_of(p), c["gate"])].append(c)
    order = [(r, gate_name(k, n_judges)) for r in range(1, ts.rounds + 1) for k in gates]
    rows = [gate_row(r, g, by_gate[(r, g)], comps[(r, g)], conf) for r, g in order]
    depth = [d for r, g in order for d in depth_rows(r, g, by_gate[(r, g)], conf)]
    write_csv(gates_out, rows, GATE_COLUMNS)
    write_csv(depth_out, depth, DEPTH_COLUMNS)
    rounds = {}
    for r in range(1, ts.rounds + 1):
        trees = read_trees([p for p in tree_paths if _round_of(p) == r])
        aggs = read_jsonl_many([p for p in aggregate_paths if _round_of(p) == r])
        rounds[str(r)] = {"responses": len(aggs), "accepted_by_judges": sum(a["accepted"] for a in aggs),
                          "roots": len(trees),
                          "not_searched": sum(1 for t in trees.values() for n in t if n["depth"] == 0
                                              and not n.get("searched", True)),
                          "unusable_nodes": sum(1 for t in trees.values() for n in t if not n["usable"]),
                          "sharing": sharing(trees, listed)}
    summary = {"gates": rows, "rounds": rounds, "branch": ts.branch, "select": ts.select, "depth": ts.depth,
               "feedback": ts.feedback, "oracle": ts.oracle, "confidence": conf}
    write_json(summary_out, summary)
    plot_gates(rows, depth, plot_out)
    return summary


def _round_of(path: str) -> int:
    import re

    m = re.search(r"round-(\d+)", str(path))
    return int(m.group(1)) if m else 1


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
