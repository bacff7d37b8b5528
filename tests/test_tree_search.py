"""SPaR tree search on deterministic fake models: tree shapes, gate exits (both exit rules) and per-gate
records, the exact sharing across gates (a property test: each gate's finals are its search alone's),
unusable nodes, kill and resume, and the config errors."""
from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

import pytest

from judgeflow.errors import ConfigError
from judgeflow.models import Generation
from judgeflow.refining import tree_search as ts
from judgeflow.workflow import settings as jf_settings

QUESTIONS = {f"q{i}": {"question_id": f"q{i}", "prompt": f"Question {i}?",
                       "criteria": [{"criterion_id": "c1", "description": "criterion one", "kind": "own"},
                                    {"criterion_id": "c2", "description": "criterion two", "kind": "own"}]}
             for i in range(4)}


def config(**tree) -> dict:
    raw = {"models": {m: {"backend": "hf", "path": "unused"} for m in ("refiner", "m1", "m2", "m3")},
           "judging": {"k": 2, "judges": [{"id": f"j{i}", "model": f"m{i}"} for i in (1, 2, 3)]},
           "refining": {"model": "refiner", "strategy": "tree_search", "max_new_tokens": 50,
                        "tree_search": {"branch": 3, "select": 2, "depth": 3, "gates": [{"k": 2}, {"k": 3}],
                                        "oracle": None, **tree}},
           "sampling": {"model": "refiner"}, "cleaning": {"enabled": False}, "draws": {"enabled": False},
           "evaluation": {"oracle": "verifier"}}
    return jf_settings.validate(raw)


class Refiner:
    """Appends '+' to the response it refines (a node's depth is its count of '+'); children whose seed
    is divisible by `bad_every` come back empty or cut at the token limit. Counts the texts it generates."""

    supports_prefix = False

    def __init__(self, bad_every: int = 0):
        self.calls, self.bad_every, self.name = 0, bad_every, "refiner"

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            text = r.messages[-1][1]
            resp = re.search(r'Response:\n"""\n(.*?)\n"""', text, re.S)
            parent = resp.group(1) if resp else "x"
            bad = self.bad_every and r.seed % self.bad_every == 0
            out.append(Generation("" if bad and r.seed % 2 else parent + "+" + str(r.seed % 7), 10, 5,
                                  "length" if bad and not r.seed % 2 else "stop"))
        return out

    def stats(self):
        return {"calls": self.calls}


class Judge:
    """Says YES on a criterion once the response has `need` refinements ('+'), P(YES) growing with the seed
    digit (the tie-break)."""

    supports_prefix = False

    def __init__(self, need):
        self.need, self.calls = need, 0

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            resp = re.search(r'Response:\n"""\n(.*?)\n"""', r.messages[-1][1], re.S)
            text = resp.group(1) if resp else r.messages[-1][1]
            yes = text.count("+") >= self.need
            g = Generation(f"fine\nVerdict: {'YES' if yes else 'NO'}", 10, 3, "stop")
            g.p_yes = 0.9 if yes else 0.1 + 0.01 * int(text[-1]) if text[-1].isdigit() else 0.1
            out.append(g)
        return out

    def stats(self):
        return {"calls": self.calls}


def roots(n=4):
    return [{"response_id": f"q{i}/r0", "question_id": f"q{i}", "text": f"answer {i}", "finish_reason": "stop"}
            for i in range(n)]


def root_verdicts(n=4):
    return [{"response_id": f"q{i}/r0", "refinement_id": None, "criterion_id": c, "judge_id": f"j{j}",
             "label": "no", "p_yes": 0.1, "critique": "too short"} for i in range(n) for c in ("c1", "c2")
            for j in (1, 2, 3)]


def judges(needs=(1, 2, 3)):
    return {f"m{i}": Judge(n) for i, n in zip((1, 2, 3), needs)}


def search_trees(roots_, verdicts, cfg, refiner, js, out, questions=None):
    """ts.search_trees with the sections it takes, from the validated config."""
    s = cfg.typed()
    return ts.search_trees(roots_, verdicts, questions or QUESTIONS, s.refining, s.judging, s.seed, refiner, js,
                           str(out))


def exit_rule(cfg) -> str:
    """refining.tree_search.exit of a validated config (what the gate stage passes to finals)."""
    return cfg.typed().refining.tree_search.exit


def search(tmp_path, cfg, refiner=None, js=None, name="trees.jsonl", n=4):
    refiner = refiner or Refiner()
    out = tmp_path / name
    nodes = search_trees(roots(n), root_verdicts(n), cfg, refiner, js or judges(), out)
    return nodes, refiner, out


def test_tree_shape_gate_exits_and_per_gate_records(tmp_path):
    cfg = config()
    nodes, refiner, out = search(tmp_path, cfg)
    trees = ts.read_trees([str(out)])
    assert len(trees) == 4
    tree = trees["q0/r0"]
    by_depth = {d: [n for n in tree if n["depth"] == d] for d in range(4)}
    # the root, 3 children, then the 2 selected nodes expanded: 6, then 6 more (the 3-of-3 gate needs 3 refinements)
    assert [len(by_depth[d]) for d in range(4)] == [1, 3, 6, 6]
    assert all(n["parent"] in {p["node_id"] for p in by_depth[n["depth"] - 1]} for n in tree if n["depth"])
    # the selected nodes are the best valued at their level (the tie broken by mean P(YES))
    lvl1 = sorted(by_depth[1], key=ts.rank_key)
    assert {n["parent"] for n in by_depth[2]} == {n["node_id"] for n in lvl1[:2]}
    # multi feedback: the children take the failed criteria in turn
    assert [n["criterion_ids"] for n in sorted(by_depth[1], key=lambda n: n["order"])] == [["c1"], ["c2"], ["c1"]]
    # each gate's exit, in the first level holding a node that passes it: with `first`, the first node in
    # breadth-first order; with best_at_level (the default, SPaR's), the best-ranked of its passing nodes
    assert exit_rule(cfg) == "best_at_level"
    f2 = {f["root_id"]: f for f in ts.finals(trees, 2, 3, "first")}
    f3 = {f["root_id"]: f for f in ts.finals(trees, 3, 3, "first")}
    assert f2["q0/r0"]["exit_depth"] == 2 and f3["q0/r0"]["exit_depth"] == 3
    first2 = min((n for n in by_depth[2]), key=lambda n: n["order"])
    assert f2["q0/r0"]["exit_node_id"] == first2["node_id"]
    assert f2["q0/r0"]["nodes_generated"] == 9 and f3["q0/r0"]["nodes_generated"] == 15
    best2 = {f["root_id"]: f for f in ts.finals(trees, 2, 3, "best_at_level")}["q0/r0"]
    assert best2["exit_node_id"] == min(by_depth[2], key=ts.rank_key)["node_id"] != first2["node_id"]
    assert best2["exit_depth"] == 2 and best2["nodes_generated"] == 9  # the same level, the same search
    # every node here serves both gates up to depth 2 (the same targets), gate 3 alone below
    assert all(n["gates"] == ([2, 3] if n["depth"] <= 2 else [3]) for n in tree)
    assert all(n["value"] == pytest.approx((n["depth"] >= 1) / 3 + (n["depth"] >= 2) / 3 + (n["depth"] >= 3) / 3)
               for n in tree if n["depth"])
    pairs = ts.pairs_of(list(f3.values()), QUESTIONS)
    assert len(pairs) == 4 and pairs[0]["chosen"][0]["content"].count("+") == 3
    assert pairs[0]["rejected"][0]["content"] == "answer 0" and pairs[0]["prompt"][-1]["role"] == "user"
    assert refiner.calls == 4 * 15
    # the records are the trees' own: written in tree order, the same as returned
    assert [json.loads(line)["node_id"] for line in out.read_text().splitlines()] == [n["node_id"] for n in nodes]


def test_full_feedback_and_a_gate_no_node_reaches(tmp_path):
    cfg = config(feedback="full", branch=2, select=1, depth=2)
    _, _, out = search(tmp_path, cfg)
    trees = ts.read_trees([str(out)])
    tree = trees["q1/r0"]
    assert all(n["criterion_ids"] == ["c1", "c2"] for n in tree if n["depth"])
    assert [sum(n["depth"] == d for n in tree) for d in range(3)] == [1, 2, 2]
    f3 = ts.finals(trees, 3, 3, exit_rule(cfg))
    assert not any(f["solved"] for f in f3) and all(f["exit_node_id"] is None for f in f3)
    assert ts.pairs_of(f3, QUESTIONS) == []
    assert all(f["solved"] and f["exit_depth"] == 2 for f in ts.finals(trees, 2, 3, exit_rule(cfg)))


def test_sharing_one_search_gives_each_gate_what_its_own_search_would(tmp_path):
    _, r_all, out_all = search(tmp_path, config(), name="all.jsonl")
    _, r_strict, _ = search(tmp_path, config(gates=[{"k": 3}]), name="strict.jsonl")
    _, r_loose, out_loose = search(tmp_path, config(gates=[{"k": 2}]), name="loose.jsonl")
    assert r_all.calls == r_strict.calls  # the extra gate costs no generation
    assert r_all.calls <= 1.1 * r_strict.calls
    assert r_all.calls < r_strict.calls + r_loose.calls
    trees = ts.read_trees([str(out_all)])
    loose_alone = ts.read_trees([str(out_loose)])
    # the loose gate's exits in the shared search are the nodes its own search stops at, with the same texts
    rule = exit_rule(config())
    for f_shared, f_alone in zip(ts.finals(trees, 2, 3, rule), ts.finals(loose_alone, 2, 3, rule)):
        assert (f_shared["exit_node_id"], f_shared["final_text"]) == (f_alone["exit_node_id"], f_alone["final_text"])
        assert f_shared["nodes_generated"] == sum(1 for n in loose_alone[f_alone["root_id"]] if n["depth"])
    s = ts.sharing(trees, [2, 3])
    assert s["shared_nodes"] == r_all.calls and s["separate_searches_nodes"] == r_strict.calls + r_loose.calls
    assert s["shared_over_strictest"] == 1.0 and s["saved_nodes"] == r_loose.calls
    assert s["nodes_by_gates"] == {"2,3": r_loose.calls, "3": r_all.calls - r_loose.calls}


# ------------------------------------------------ exactness across gates: several criteria, targets that matter

CRITERIA4 = ("c1", "c2", "c3", "c4")
QUESTIONS4 = {f"q{i}": {"question_id": f"q{i}", "prompt": f"Question {i}?",
                        "criteria": [{"criterion_id": c, "description": f"rule <{c}>", "kind": "own"}
                                     for c in CRITERIA4]} for i in range(4)}


def config5(gates, **tree):
    """J = 5 judges (judging.k 3), the given gates' k."""
    raw = {"models": {m: {"backend": "hf", "path": "unused"} for m in ("refiner", *(f"m{i}" for i in range(1, 6)))},
           "judging": {"k": 3, "judges": [{"id": f"j{i}", "model": f"m{i}"} for i in range(1, 6)]},
           "refining": {"model": "refiner", "strategy": "tree_search", "max_new_tokens": 50,
                        "tree_search": {"gates": [{"k": k} for k in gates], "oracle": None, **tree}},
           "sampling": {"model": "refiner"}, "cleaning": {"enabled": False}, "draws": {"enabled": False},
           "evaluation": {"oracle": "verifier"}}
    return jf_settings.validate(raw)


def _hash(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


class TargetRefiner:
    """Appends to the response it refines the criteria its prompt targets and a digit of its seed:
    'answer 0 {c4}3 {c3,c2}8'. Counts the texts it generates."""

    supports_prefix = False

    def __init__(self):
        self.calls = 0

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            m = re.search(r'Response:\n"""\n(.*?)\n"""(.*)', r.messages[-1][1], re.S)
            targets = re.findall(r"<(c\d)>", m.group(2))  # the requirement(s) named after the response
            out.append(Generation(f"{m.group(1)} {{{','.join(targets)}}}{r.seed % 10}", 10, 5, "stop"))
        return out

    def stats(self):
        return {"calls": self.calls}


class TargetJudge:
    """Judge j of 5 says YES on criterion c when the response's strength on c reaches j: the root's YES count
    on c, +1 for every refinement on its path that targeted c, and -1, 0 or +1 from a hash of the text (so
    the nodes' values differ and ties happen). What a child targets decides how it is judged."""

    supports_prefix = False

    def __init__(self, j, root_yes):
        self.j, self.root_yes, self.calls = j, root_yes, 0

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            prompt = r.messages[-1][1]
            text = re.search(r'Response:\n"""\n(.*?)\n"""', prompt, re.S).group(1)
            c = re.search(r"Criterion: rule <(c\d)>", prompt).group(1)
            tags = re.findall(r"\{([c\d,]*)\}", text)
            strength = (self.root_yes[text.split(" {")[0]][c] + sum(c in t.split(",") for t in tags)
                        + _hash(text, c) % 3 - 1)
            yes = strength >= self.j
            g = Generation(f"fine\nVerdict: {'YES' if yes else 'NO'}", 10, 3, "stop")
            g.p_yes = (0.6 if yes else 0.1) + 0.03 * (_hash(text, c, self.j) % 10)
            out.append(g)
        return out

    def stats(self):
        return {"calls": self.calls}


GATE_SETS = ([3, 4, 5], [2, 3], [2, 4, 5], [3, 5], [1, 3, 5], [2, 3, 4, 5])


def target_case(case):
    """Four roots of four criteria: q0's YES counts c1 4, c2 3, c3 2, c4 0 (gate 2 fails c4, gate 3 c4 and c3,
    gate 5 all four: the gates' targets differ from the first level), the others random."""
    rng = random.Random(case)
    counts = {"answer 0": {"c1": 4, "c2": 3, "c3": 2, "c4": 0}}
    for i in range(1, 4):
        counts[f"answer {i}"] = {c: rng.randint(0, 4) for c in CRITERIA4}
    roots_ = [{"response_id": f"q{i}/r0", "question_id": f"q{i}", "text": f"answer {i}", "finish_reason": "stop"}
              for i in range(4)]
    verdicts = [{"response_id": f"q{i}/r0", "refinement_id": None, "criterion_id": c, "judge_id": f"j{j}",
                 "label": "yes" if counts[f"answer {i}"][c] >= j else "no", "p_yes": 0.5, "critique": "meh"}
                for i in range(4) for c in CRITERIA4 for j in range(1, 6)]
    return rng, counts, roots_, verdicts


def target_search(tmp_path, name, cfg, counts, roots_, verdicts):
    refiner = TargetRefiner()
    js = {f"m{j}": TargetJudge(j, counts) for j in range(1, 6)}
    out = tmp_path / name
    search_trees(roots_, verdicts, cfg, refiner, js, out, questions=QUESTIONS4)
    return ts.read_trees([str(out)]), refiner.calls


@pytest.mark.parametrize("rule", ["best_at_level", "first"])
@pytest.mark.parametrize("feedback", ["multi", "full"])
@pytest.mark.parametrize("case", range(len(GATE_SETS)))
def test_property_each_gate_of_the_shared_search_is_its_search_alone(tmp_path, case, feedback, rule):
    """Several criteria, several gates, judges that reward the targeted criterion: every gate's finals from
    the one shared search (exit node, its text and depth, solved, generation) are those of a search run
    with that gate alone, and the sharing stats count the generations really made. (Failed before the
    fix: children targeted the criteria failing the strictest gate, whichever gate read the tree.)"""
    rng, counts, roots_, verdicts = target_case(case)
    gates = GATE_SETS[case]
    shape = {"branch": 3, "select": rng.choice([1, 2, 3]), "depth": 3, "feedback": feedback, "exit": rule,
             "checkpoint_every": 1000}  # few checkpoint writes: fast
    cfg = config5(gates, **shape)
    shared, made = target_search(tmp_path, "shared.jsonl", cfg, counts, roots_, verdicts)
    # q0's gates target different criteria at its first level: the search branched there
    assert any(n["gates"] != gates for n in shared["q0/r0"] if n["depth"] == 1)
    alone_calls = {}
    for k in gates:
        alone, alone_calls[k] = target_search(tmp_path, f"alone-{k}.jsonl", config5([k], **shape), counts, roots_,
                                              verdicts)
        keys = ("root_id", "solved", "passed_at_root", "exit_node_id", "exit_depth", "final_text", "nodes_generated")
        got = [{x: f[x] for x in keys} for f in ts.finals(shared, k, 5, exit_rule(cfg))]
        assert got == [{x: f[x] for x in keys} for f in ts.finals(alone, k, 5, rule)], f"gate {k}"
        assert sum(f["nodes_generated"] for f in ts.finals(shared, k, 5, rule)) == alone_calls[k]
        # the nodes serving gate k are its search alone's, node for node
        assert sorted(n["node_id"] for t in shared.values() for n in t if k in n["gates"]) == \
            sorted(n["node_id"] for t in alone.values() for n in t)
    s = ts.sharing(shared, gates)
    assert s["shared_nodes"] == made and s["alone_nodes"] == {str(k): v for k, v in alone_calls.items()}
    assert s["separate_searches_nodes"] == sum(alone_calls.values()) and made <= s["separate_searches_nodes"]
    assert sum(s["nodes_by_gates"].values()) == made


def _level_node(order, yes, p_yes, depth=1, gates=(3,)):
    """A hand-made node of one tree (J = 5, criteria c1 and c2, gate 3 only unless told)."""
    verdicts = [{"criterion_id": c, "label": "yes" if j < n else "no", "p_yes": p_yes}
                for c, n in zip(("c1", "c2"), yes) for j in range(5)]
    value, p_mean = ts.value_of(verdicts)
    node = {"node_id": f"r/t.{depth}.{order}", "root_id": "r", "question_id": "q0", "round": 1, "depth": depth,
            "order": order, "usable": True, "gates": list(gates), "text": f"text {depth}.{order}",
            "yes": dict(zip(("c1", "c2"), yes)), "value": value, "p_yes_mean": p_mean}
    node["passes"] = [k for k in gates if ts.passes(node, k)]
    return node


def test_best_at_level_and_first_differ_where_a_better_passing_node_comes_later_and_agree_on_one():
    root = _level_node(0, (0, 0), 0.1, depth=0)
    low = _level_node(0, (3, 3), 0.5)  # passes gate 3, value 0.6
    high = _level_node(1, (4, 5), 0.5)  # passes gate 3, value 0.9: later in the level, higher valued
    deeper = _level_node(0, (5, 5), 0.9, depth=2)  # passes with the top value, but a level too deep
    tree = [root, low, high, deeper]
    assert ts.exits(tree, 3, "first") is low
    assert ts.exits(tree, 3, "best_at_level") is high
    f = {r: ts.finals({"r": tree}, 3, 5, r)[0] for r in ("first", "best_at_level")}
    assert (f["first"]["final_text"], f["best_at_level"]["final_text"]) == ("text 1.0", "text 1.1")
    assert f["first"]["exit_depth"] == f["best_at_level"]["exit_depth"] == 1
    # the same value: mean P(YES) breaks the tie, then level order
    tied = _level_node(2, (4, 5), 0.7)
    assert ts.exits([root, low, high, tied], 3, "best_at_level") is tied
    assert ts.exits([root, low, high, _level_node(2, (4, 5), 0.5)], 3, "best_at_level") is high
    # a level with a single passing node: both rules take it, even below a higher-valued failing node
    # (SPaR's gate is on the value itself, so there its top node passes whenever any does; here the exit
    # is the best of the passing nodes)
    failing = _level_node(0, (5, 2), 0.9)  # value 0.7, fails gate 3 on c2
    single = _level_node(1, (3, 3), 0.5)  # value 0.6, passes
    one = [root, failing, single, deeper]
    assert ts.exits(one, 3, "first") is ts.exits(one, 3, "best_at_level") is single
    # a node another gate's search made is not this gate's exit
    other = _level_node(0, (5, 5), 0.9, gates=(4,))
    assert ts.exits([root, other, single], 3, "best_at_level") is single
    with pytest.raises(ConfigError, match=re.escape("refining.tree_search.exit")):
        ts.exits(tree, 3, "last")


def test_unusable_nodes_are_never_judged_passing_or_expanded(tmp_path):
    cfg = config(branch=3, select=3, depth=2)
    js = judges(needs=(1, 1, 1))
    nodes, _, _ = search(tmp_path, cfg, refiner=Refiner(bad_every=3), js=js)
    bad = [n for n in nodes if not n["usable"]]
    assert bad and {n["unusable"] for n in bad} <= {ts.EMPTY, ts.TRUNCATED}
    assert all(n["verdicts"] == [] and n["passes"] == [] and n["value"] is None for n in bad)
    assert not {n["parent"] for n in nodes} & {n["node_id"] for n in bad}
    # every judged verdict is on a usable node
    judged = sum(j.calls for j in js.values())
    assert judged == 3 * 2 * sum(1 for n in nodes if n["depth"] and n["usable"])


def test_a_root_passing_every_gate_is_not_searched_and_counted(tmp_path):
    cfg = config()
    verdicts = root_verdicts(2)
    for v in verdicts:
        if v["response_id"] == "q1/r0":
            v["label"] = "yes"
    refiner = Refiner()
    nodes = search_trees(roots(2), verdicts, cfg, refiner, judges(), tmp_path / "t.jsonl")
    root = next(n for n in nodes if n["node_id"] == "q1/r0/t")
    assert root["searched"] is False and not [n for n in nodes if n["root_id"] == "q1/r0" and n["depth"]]
    f = {x["root_id"]: x for x in ts.finals(ts.read_trees([str(tmp_path / "t.jsonl")]), 3, 3, exit_rule(cfg))}
    assert f["q1/r0"]["passed_at_root"] and f["q1/r0"]["exit_depth"] == 0
    assert ts.pairs_of(list(f.values()), QUESTIONS)[0]["response_id"] == "q0/r0"  # no pair of a root with itself


class Killed(RuntimeError):
    pass


class DyingRefiner(Refiner):
    def __init__(self, die_after):
        super().__init__()
        self.die_after = die_after

    def generate(self, reqs, desc=""):
        if self.calls + len(reqs) > self.die_after:
            raise Killed("killed")
        return super().generate(reqs, desc)


def test_killed_mid_tree_resumes_without_generating_a_node_twice(tmp_path):
    cfg = config(checkpoint_every=4)
    whole, full_ref, _ = search(tmp_path, cfg, name="whole.jsonl")
    out = tmp_path / "killed.jsonl"
    dying = DyingRefiner(die_after=30)  # inside depth 2
    with pytest.raises(Killed):
        search_trees(roots(), root_verdicts(), cfg, dying, judges(), out)
    assert not out.exists()
    ckpts = sorted(tmp_path.glob(".killed.jsonl.levels/.depth-2.generations.jsonl.checkpoint"))
    assert ckpts and ckpts[0].read_text().count("\n") == 1 + 16  # its header, depth 2's finished chunks
    with ckpts[0].open("a") as fh:  # a kill in the middle of a write leaves a torn line
        fh.write('{"node_id": "q0/r0/t.0.0", "te')
    resumed = Refiner()
    again = search_trees(roots(), root_verdicts(), cfg, resumed, judges(), out)
    assert dying.calls + resumed.calls == full_ref.calls  # no node generated twice
    assert dying.calls > 0 and resumed.calls > 0
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()  # identical trees
    assert again == whole
    assert not list(tmp_path.glob(".killed.jsonl*"))  # the checkpoints are gone


class DyingJudge(Judge):
    """Dies when asked to judge at depth `die_at` (its responses hold that many '+')."""

    def __init__(self, need, die_at):
        super().__init__(need)
        self.die_at = die_at

    def generate(self, reqs, desc=""):
        if any(r.messages[-1][1].count("+") >= self.die_at for r in reqs):
            raise Killed("killed while judging")
        return super().generate(reqs, desc)


def test_a_level_killed_while_judging_resumes_with_its_generations_done(tmp_path):
    """Regression (issue 22): a level whose generations finished but whose judging was killed was
    generated again in full on resume (the resume read only the in-progress checkpoint)."""
    cfg = config(checkpoint_every=4)
    whole, full_ref, _ = search(tmp_path, cfg, name="whole.jsonl")
    out = tmp_path / "killed.jsonl"
    dying_ref = Refiner()
    dying = {f"m{i}": DyingJudge(need, die_at=1) for i, need in zip((1, 2, 3), (1, 2, 3))}
    with pytest.raises(Killed):
        search_trees(roots(), root_verdicts(), cfg, dying_ref, dying, out)
    generated_before = dying_ref.calls
    assert generated_before > 0  # depth 1's generations finished before the judges died
    resumed = Refiner()
    again = search_trees(roots(), root_verdicts(), cfg, resumed, judges(), out)
    assert generated_before + resumed.calls == full_ref.calls  # no node generated twice
    assert again == whole and out.read_text() == (tmp_path / "whole.jsonl").read_text()
    assert not list(tmp_path.glob(".killed.jsonl*"))


def test_a_level_checkpoint_of_other_settings_is_not_resumed(tmp_path, caplog):
    """A checkpoint is bound to the job that wrote it: another fingerprint starts over, never mixes."""
    from judgeflow.workflow.io import bound_to

    cfg = config(checkpoint_every=4)
    out = tmp_path / "killed.jsonl"
    with bound_to("job-a"), pytest.raises(Killed):
        search_trees(roots(), root_verdicts(), cfg, DyingRefiner(die_after=30), judges(), out)
    resumed = Refiner()
    with bound_to("job-b"):
        search_trees(roots(), root_verdicts(), cfg, resumed, judges(), out)
    _, full_ref, _ = search(tmp_path, cfg, name="whole.jsonl")
    assert resumed.calls == full_ref.calls  # everything generated again under the new fingerprint
    assert "made by another job (fingerprint job-a; this job's is job-b)" in caplog.text


@pytest.mark.parametrize("tree, key", [
    ({"gates": [{"k": 4}]}, "refining.tree_search.gates[0].k"),
    ({"gates": [{"k": 2}, {"k": 2}]}, "refining.tree_search.gates"),
    ({"branch": 0}, "refining.tree_search.branch"),
    ({"select": 0}, "refining.tree_search.select"),
    ({"select": 4, "branch": 3}, "refining.tree_search.select"),
    ({"depth": 0}, "refining.tree_search.depth"),
    ({"train_gate": 1, "chains": "shared"}, "refining.tree_search.train_gate"),
    ({"train_gate": 2}, "refining.tree_search.train_gate"),  # per_gate chains: each gate trains its own actor
    ({"rounds": 2, "root_choice": "all"}, "refining.tree_search.root_choice"),  # per_gate: one root per question
    ({"oracle": "nope"}, "refining.tree_search.oracle"),
    ({"exit": "last"}, "refining.tree_search.exit"),
    ({"exit": None}, "refining.tree_search.exit"),
])
def test_bad_tree_settings_are_config_errors_naming_the_key(tree, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        config(**tree)


def test_default_gates_are_judging_k_and_j_and_variants_follow_the_strategies():
    cfg = config(gates=None)
    assert [g["k"] for g in cfg["refining"]["tree_search"]["gates"]] == [2, 3]
    assert cfg["training"]["variants"] == ["tree_search_2of3", "tree_search_3of3"]
    ts = cfg["refining"]["tree_search"]
    assert ts["chains"] == "per_gate" and ts["train_gate"] is None
    assert config(gates=None, chains="shared")["refining"]["tree_search"]["train_gate"] == 2  # the loosest gate
    with pytest.raises(ConfigError, match=r"training\.variants\[0\]"):
        jf_settings.validate({**{k: v for k, v in cfg.items()}, "training": {"variants": ["multi_feedback"]}})


def test_a_hosted_tree_oracle_runs_its_gate_rule_where_snakemake_runs_only_with_the_tree_search():
    """cluster.api_rules: tree_search_gate calls refining.tree_search.oracle; a config without the tree
    search has no such rule, so it is not named among the login-node rules (a regression: it was)."""
    from judgeflow.workflow.cluster import api_local_rules

    hosted = {"backend": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4.1",
              "api_key_env": "OPENAI_API_KEY"}
    base = config()
    cfg = jf_settings.validate({**base, "models": {**base["models"], "gpt41": hosted},
                                "refining": {**base["refining"],
                                             "tree_search": {**base["refining"]["tree_search"], "oracle": "gpt41"}}})
    assert "tree_search_gate" in api_local_rules(cfg)
    single = jf_settings.validate({**cfg, "refining": {**cfg["refining"], "strategy": "single"},
                                   "training": {"variants": None}})
    assert "tree_search_gate" not in api_local_rules(single)


class PairwiseOracle:
    """An LLM-like pairwise oracle: prefers the longer response ("Verdict: A|B|TIE"), or always says A."""

    supports_prefix = False

    def __init__(self, always_a=False):
        self.always_a, self.calls = always_a, 0

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            text = r.messages[-1][1]
            a = text.split('Response A:\n"""\n')[1].split('\n"""')[0]
            b = text.split('Response B:\n"""\n')[1].split('\n"""')[0]
            v = "A" if self.always_a or len(a) > len(b) else "B" if len(b) > len(a) else "TIE"
            out.append(Generation(f"Because.\nVerdict: {v}", 10, 4, "stop"))
        return out


def test_an_llm_oracle_compares_final_and_original_in_both_orders(tmp_path):
    cfg = config()
    _, _, out = search(tmp_path, cfg)
    finals = ts.finals(ts.read_trees([str(out)]), 3, 3, exit_rule(cfg))
    oracle = PairwiseOracle()
    s = cfg.typed()
    comps = ts.compare_finals(finals, QUESTIONS, s.evaluation, s.seed, oracle)
    assert oracle.calls == 2 * len(comps) == 2 * 4  # both orders of each refined root
    assert all(c["outcome"] == "win" for c in comps)  # the final is longer: preferred in either order
    assert {c["final_first"]["label"] for c in comps} == {"A"}
    assert {c["original_first"]["label"] for c in comps} == {"B"}
    biased = ts.compare_finals(finals, QUESTIONS, s.evaluation, s.seed, PairwiseOracle(always_a=True))
    assert all(c["outcome"] == "inconsistent" for c in biased)  # the orders disagree: counted, not a win
    row = ts.gate_row(1, "3of3", finals, biased, 0.95)
    assert row["oracle_inconsistent"] == 4 and row["win_rate"] is None and row["solved"] == 4


def test_a_share_of_the_rejected_responses_are_roots_the_same_in_every_shard():
    from judgeflow.refining.tree_search import searched

    ids = [f"q{i}/r0" for i in range(2000)]
    half = [i for i in ids if searched(1234, i, 0.5)]
    assert 900 < len(half) < 1100 and half == [i for i in ids if searched(1234, i, 0.5)]
    assert half != [i for i in ids if searched(1, i, 0.5)]  # another run's seed, another subset
    assert {i for i in ids if searched(1234, i, 0.25)} <= set(half)  # a smaller share: a subset of it
    assert all(searched(1234, i, 1.0) for i in ids)


def test_a_gate_name_is_built_and_parsed_in_one_place():
    from judgeflow.refining.gates import TREE_VARIANT, gate_name, parse_gate, tree_variant

    assert parse_gate(gate_name(3, 5)) == (3, 5)
    assert TREE_VARIANT.match(tree_variant(2, 3))
    for bad in ("3of", "of5", "3-of-5", "tree_search_3of5"):
        with pytest.raises(ValueError, match="not a gate name"):
            parse_gate(bad)


def test_a_round_s_models_come_from_the_previous_round_of_its_chain_named_in_one_place():
    from judgeflow.refining.gates import previous_lineage, training_name

    assert previous_lineage("2/chain-3of3") == "1/chain-3of3" and previous_lineage("3") == "2"
    assert training_name("1/chain-3of3") == "round-1-chain-3of3"
    assert training_name("2", "refiner") == "round-2-refiner"
    with pytest.raises(ValueError, match="round 1 uses the workflow's own models"):
        previous_lineage("1")


def test_the_summary_compares_the_gates_on_the_same_roots_first(tmp_path):
    """tree_search_summary's gate_pairs.csv, gate_outcomes.jsonl and summary.json["gate_pairs"] (listed
    first): every root counts under every gate (an unsolved root or one that passed at its root is
    `no_change`), the difference is paired, and McNemar counts the roots whose outcomes differ."""
    import csv

    from judgeflow.refining import gate_study
    from judgeflow.workflow.io import write_jsonl

    cfg = config(oracle="verifier", effect=0.2)
    _, _, out = search(tmp_path, cfg, n=4)
    trees = ts.read_trees([str(out)])
    rule = exit_rule(cfg)
    paths = {}
    # the oracle: the looser gate's finals win on q0, q1, q2 and lose on q3; the stricter gate's win on q0 only
    wins = {"2of3": {"q0/r0", "q1/r0", "q2/r0"}, "3of3": {"q0/r0"}}
    for k, gate in ((2, "2of3"), (3, "3of3")):
        records = ts.finals(trees, k, 3, rule)
        d = tmp_path / "round-1" / f"gate-{gate}"
        d.mkdir(parents=True)
        paths[gate] = (d / "final.jsonl", d / "comparisons.jsonl")
        write_jsonl(paths[gate][0], records)
        write_jsonl(paths[gate][1], [{"gate": gate, "root_id": f["root_id"], "question_id": f["question_id"],
                                         "outcome": "win" if f["root_id"] in wins[gate] else "loss"}
                                        for f in records if f["solved"] and not f["passed_at_root"]])
    aggregates = tmp_path / "round-1" / "agg.jsonl"
    write_jsonl(aggregates, [])
    o = {n: str(tmp_path / n) for n in ("gates.csv", "depth.csv", "gates.png", "summary.json",
                                        "gate_outcomes.jsonl", "gate_pairs.csv")}
    summary = ts.summarize(cfg.typed().refining.tree_search, 3, 7, [str(p[0]) for p in paths.values()],
                           [str(p[1]) for p in paths.values()], [str(out)], [str(aggregates)], o["gates.csv"],
                           o["depth.csv"], o["gates.png"], o["summary.json"], o["gate_outcomes.jsonl"],
                           o["gate_pairs.csv"])
    assert next(iter(json.loads(Path(o["summary.json"]).read_text()))) == "gate_pairs"
    (row,) = summary["gate_pairs"]
    assert (row["gate_a"], row["gate_b"], row["n_roots"], row["n_questions"]) == ("2of3", "3of3", 4, 4)
    assert (row["prefer_a"], row["prefer_b"]) == (0.75, 0.25) and row["diff"] == -0.5
    assert (row["discordant_b"], row["discordant_c"]) == (2, 0)  # q1, q2 preferred under 2of3 only
    assert row["mcnemar_p"] == pytest.approx(0.5)  # exact: 2 discordant roots, both one way
    assert row["mcnemar_p"] == pytest.approx(gate_study.mcnemar_exact(2, 0))
    assert "no significant difference" in row["verdict"]  # 4 roots: a null result, said as one
    assert row["effect"] == 0.2 and row["achieved_power"] == pytest.approx(
        round(gate_study.achieved_power(4, 0.2, 0.5, row["alpha"]), 4)) and row["achieved_power"] < 0.5
    assert row["net_diff"] == pytest.approx((1 - 3) / 4 - (3 - 1) / 4)  # the loss on q3 and the lost wins
    with open(o["gate_pairs.csv"]) as fh:
        assert [r["gate_b"] for r in csv.DictReader(fh)] == ["3of3"]
    outcomes = [json.loads(line) for line in Path(o["gate_outcomes.jsonl"]).read_text().splitlines()]
    assert len(outcomes) == 8 and {x["gate"] for x in outcomes} == {"2of3", "3of3"}
    # without a tree oracle there is nothing to compare
    unjudged = cfg.typed().refining.tree_search.model_copy(update={"oracle": None})  # and no evaluation.oracle
    none = ts.summarize(unjudged, 3, 7, [str(p[0]) for p in paths.values()], [], [str(out)], [str(aggregates)],
                        o["gates.csv"], o["depth.csv"], o["gates.png"], o["summary.json"], o["gate_outcomes.jsonl"],
                        o["gate_pairs.csv"])
    assert none["gate_pairs"] == [] and Path(o["gate_outcomes.jsonl"]).read_text() == ""


@pytest.mark.parametrize("choice", ["one_per_question", "all"])
def test_the_search_stage_takes_one_failing_response_per_question_by_default(tmp_path, monkeypatch, choice):
    """refining.tree_search.root_choice: SPaR keeps one failing response per prompt (seeded), so the paired
    McNemar test between gates has independent roots; `all` searches every rejected response."""
    import contextlib

    from judgeflow.workflow import pipeline
    from judgeflow.workflow.io import write_jsonl

    cfg = config() if choice == "one_per_question" else config(root_choice="all")
    assert cfg["refining"]["tree_search"]["root_choice"] == choice

    @contextlib.contextmanager
    def fake_open(specs, cache_dir, log_dir=None, threads=None):
        yield {"refiner": Refiner(), **judges()}

    monkeypatch.setattr("judgeflow.models.open_models", fake_open)
    responses = [{"response_id": f"q{i}/r{j}", "question_id": f"q{i}", "text": f"answer {i}.{j}",
                  "finish_reason": "stop"} for i in range(3) for j in range(3)]
    accepted = {"q0/r2"}  # q0 has two failing responses, q1 and q2 three
    files = {n: str(tmp_path / f"{n}.jsonl") for n in ("responses", "aggregate", "verdicts", "kept")}
    write_jsonl(files["responses"], responses)
    write_jsonl(files["aggregate"], [{"response_id": r["response_id"], "accepted": r["response_id"] in accepted}
                                     for r in responses])
    write_jsonl(files["verdicts"], [{"response_id": r["response_id"], "refinement_id": None, "criterion_id": c,
                                     "judge_id": f"j{j}", "label": "no", "p_yes": 0.1, "critique": "short"}
                                    for r in responses for c in ("c1", "c2") for j in (1, 2, 3)])
    write_jsonl(files["kept"], [QUESTIONS[f"q{i}"] | {"prompt": f"Question {i}?"} for i in range(3)])
    trees = tmp_path / "trees.jsonl"
    pipeline.run_stage("tree_search", {**files, "judges": [], "models": [], "templates": []},
                       {"trees": str(trees)}, cfg, wildcards={"round": "1", "shard": "0"})
    roots = sorted(ts.read_trees([str(trees)]))
    by_question = {q: [r for r in roots if r.startswith(f"{q}/")] for q in ("q0", "q1", "q2")}
    if choice == "all":
        assert roots == sorted(r["response_id"] for r in responses if r["response_id"] not in accepted)
    else:
        assert all(len(rs) == 1 for rs in by_question.values()) and "q0/r2" not in roots
        again = tmp_path / "again.jsonl"  # seeded: the same roots on a rerun
        pipeline.run_stage("tree_search", {**files, "judges": [], "models": [], "templates": []},
                           {"trees": str(again)}, cfg, wildcards={"round": "1", "shard": "0"})
        assert sorted(ts.read_trees([str(again)])) == roots
