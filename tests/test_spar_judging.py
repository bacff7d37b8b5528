"""SPaR's judging mode (issue 25): one judge model sampled J times (`samples`), holistic or per criterion,
ties (and, asked for, abstains) drawn again up to `max_resamples`, the value YES / (YES + NO) with
`judging.abstain: drop` or YES / J with `no`; the panel of distinct judges exactly as before; config errors.
Deterministic fake models: each answer is scripted by the request's seed, so every draw is known."""
from __future__ import annotations

import hashlib
import json
import re
import zlib

import pytest

from judgeflow.errors import ConfigError
from judgeflow.generation.prompting import stable_seed
from judgeflow.judging import judges as jj
from judgeflow.judging.verdicts import n_verdicts, to_redraw, verdict_ids, yes_share
from judgeflow.models import Generation
from judgeflow.refining import tree_search as ts
from judgeflow.workflow import settings as st
from judgeflow.workflow.settings import Judging

QUESTIONS = {f"q{i}": {"question_id": f"q{i}", "prompt": f"Question {i}?",
                       "criteria": [{"criterion_id": "c1", "description": "criterion one"},
                                    {"criterion_id": "c2", "description": "criterion two"}]} for i in range(3)}


def items(n=1, per_question=1):
    return [{"item_id": f"q{i}/r{r}", "response_id": f"q{i}/r{r}", "refinement_id": None, "question_id": f"q{i}",
             "text": f"answer {i}.{r}"} for i in range(n) for r in range(per_question)]


def judging(**spar) -> Judging:
    """One judge `spar` of model m in SPaR's mode (`spar`: its settings), k = 1."""
    return Judging.model_validate({"k": spar.pop("k", 1), **({"abstain": spar.pop("abstain")} if "abstain" in spar
                                                              else {}),
                                   "judges": [{"id": "spar", "model": "m", **spar}]})


def seed_of(item_id, unit, sample, draw, judge_seed=0):
    """The seed of sample `sample`'s draw `draw` (0: the first) on `unit` (a criterion id or 'holistic')."""
    return stable_seed(judge_seed, item_id, unit, sample, draw)


class Scripted:
    """A judge model answering by the request's seed: `script[seed]` is "YES", "NO" or anything else (no verdict
    line: an abstain); unknown seeds answer `default`. Records every request it is sent."""

    supports_prefix = False

    def __init__(self, script=None, default="YES"):
        self.script, self.default, self.requests = dict(script or {}), default, []

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.requests.append(r)
            word = self.script.get(r.seed, self.default)
            text = f"checked {r.seed}\nVerdict: {word}" if word in ("YES", "NO") else f"checked {r.seed}\n{word}"
            g = Generation(text, 10, 3, "stop")
            g.p_yes = {"YES": 0.9, "NO": 0.1}.get(word)
            out.append(g)
        return out

    def stats(self):
        return {"calls": len(self.requests)}


def run(tmp_path, j: Judging, model, its=None, name="v.jsonl"):
    its = its or items()
    return jj.judge_items(its, QUESTIONS, j, {"m": model}, str(tmp_path / name))


def by_criterion(verdicts, cid):
    return sorted((v for v in verdicts if v["criterion_id"] == cid), key=lambda v: v["sample"])


# ------------------------------------------------------------------------------------- samples and seeds


def test_samples_of_one_model_are_J_verdicts_with_their_own_seeds(tmp_path):
    j = judging(samples=5)
    model = Scripted()
    verdicts = run(tmp_path, j, model)
    assert n_verdicts(j) == 5 and verdict_ids(j) == [f"spar#{s}" for s in range(1, 6)]
    for cid in ("c1", "c2"):
        mine = by_criterion(verdicts, cid)
        assert [v["judge_id"] for v in mine] == [f"spar#{s}" for s in range(1, 6)]
        assert [(v["sample_of"], v["sample"], v["resamples"], v["holistic"]) for v in mine] == \
            [("spar", s, 0, False) for s in range(1, 6)]
    # one draw per (criterion, sample), each seeded by the judge's seed, the item, the criterion and the sample
    seeds = [r.seed for r in model.requests]
    assert len(seeds) == 10 and len(set(seeds)) == 10
    assert set(seeds) == {seed_of("q0/r0", c, s, 0) for c in ("c1", "c2") for s in range(1, 6)}
    assert all(r.sampling.temperature == 0.7 for r in model.requests)
    (agg,) = jj.aggregate(verdicts, items(), QUESTIONS, j)
    assert agg["J"] == 5 and agg["criteria"]["c1"]["yes"] == 5 and agg["accepted"]


def test_k_of_J_counts_samples_and_the_panel_beside_them():
    assert n_verdicts(Judging.model_validate({"k": 6, "judges": [{"id": "a", "model": "m"},
                                                                 {"id": "s", "model": "m", "samples": 5}]})) == 6
    with pytest.raises(ValueError, match=r"k: 6 exceeds the number of judges J=5"):
        judging(k=6, samples=5)
    assert judging(k=5, samples=5).k == 5


def test_a_holistic_judge_judges_the_whole_response_once_per_sample(tmp_path):
    j = judging(samples=3, holistic=True)
    unit = "holistic"
    model = Scripted({seed_of("q0/r0", unit, 2, 0): "NO"})
    verdicts = run(tmp_path, j, model)
    assert len(model.requests) == 3  # one judgment per sample, not per criterion
    prompt = model.requests[0].messages[-1][1]
    assert "1. criterion one\n2. criterion two" in prompt and 'answer 0.0' in prompt
    # its label on every criterion: one record per (item, criterion, sample)
    for cid in ("c1", "c2"):
        assert [v["label"] for v in by_criterion(verdicts, cid)] == ["yes", "no", "yes"]
        assert all(v["holistic"] for v in by_criterion(verdicts, cid))
    (agg,) = jj.aggregate(verdicts, items(), QUESTIONS, judging(samples=3, holistic=True, k=3))
    assert agg["failed"] == ["c1", "c2"] and agg["value"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------- redraws


def test_a_parse_failure_is_drawn_again_up_to_the_limit_then_counted_by_judging_abstain(tmp_path):
    it = "q0/r0"
    script = {seed_of(it, "c1", 2, 0): "unsure", seed_of(it, "c1", 2, 1): "no idea",  # YES at its 3rd draw
              **{seed_of(it, "c1", 3, d): "hmm" for d in range(3)}}  # never a verdict
    model = Scripted(script)
    verdicts = run(tmp_path, judging(samples=3, resample=["abstain"], max_resamples=2), model)
    c1 = by_criterion(verdicts, "c1")
    assert [(v["label"], v["resamples"], v["exhausted"]) for v in c1] == \
        [("yes", 0, True), ("yes", 2, True), ("abstain", 2, True)]
    assert [(v["label"], v["resamples"], v["exhausted"]) for v in by_criterion(verdicts, "c2")] == \
        [("yes", 0, False)] * 3
    assert len(model.requests) == 6 + 2 + 2  # 3 samples x 2 criteria, then samples 2 and 3 of c1 twice
    assert {r.seed for r in model.requests} >= {seed_of(it, "c1", s, d) for s in (2, 3) for d in (1, 2)}
    # the abstain that stands: left out of the value with `drop` (yes / (yes + no)), a NO with `no` (yes / J)
    for mode, value in (("drop", 1.0), ("no", 2 / 3)):
        (agg,) = jj.aggregate(verdicts, items(), QUESTIONS, judging(samples=3, abstain=mode, k=2))
        assert agg["criteria"]["c1"]["value"] == pytest.approx(value)
        assert agg["criteria"]["c1"]["abstain"] == 1 and agg["criteria"]["c1"]["accepted"]  # 2 YES of 3: 2-of-3
    # a limit of 1: sample 2 stands as an abstain after one redraw
    fewer = run(tmp_path, judging(samples=3, resample=["abstain"], max_resamples=1), Scripted(script), name="w.jsonl")
    assert [(v["label"], v["resamples"]) for v in by_criterion(fewer, "c1")] == \
        [("yes", 0), ("abstain", 1), ("abstain", 1)]


def test_spar_s_default_redraws_ties_only_and_all_samples_of_them(tmp_path):
    it = "q0/r0"
    # c1: 2 YES, 2 NO: a tie, all 4 drawn again, then 3 YES 1 NO stands
    script = {seed_of(it, "c1", 3, 0): "NO", seed_of(it, "c1", 4, 0): "NO", seed_of(it, "c1", 1, 1): "NO"}
    # c2: 3 YES, 1 abstain: no tie, and SPaR leaves the abstain out: nothing drawn again
    script[seed_of(it, "c2", 4, 0)] = "garbled"
    model = Scripted(script)
    verdicts = run(tmp_path, judging(samples=4), model)
    assert [(v["label"], v["resamples"]) for v in by_criterion(verdicts, "c1")] == \
        [("no", 1), ("yes", 1), ("yes", 1), ("yes", 1)]
    assert [(v["label"], v["resamples"]) for v in by_criterion(verdicts, "c2")] == \
        [("yes", 0), ("yes", 0), ("yes", 0), ("abstain", 0)]
    assert len(model.requests) == 8 + 4


def test_a_tie_that_persists_stands_at_the_limit_and_all_abstain_is_a_tie(tmp_path):
    it = "q0/r0"
    always_tied = {seed_of(it, "c1", 2, d): "NO" for d in range(4)}
    no_verdict = {seed_of(it, "c2", s, 0): "?" for s in (1, 2)}  # 0 YES = 0 NO: drawn again, then YES
    model = Scripted({**always_tied, **no_verdict})
    verdicts = run(tmp_path, judging(samples=2, max_resamples=3), model)
    assert [(v["label"], v["resamples"], v["exhausted"]) for v in by_criterion(verdicts, "c1")] == \
        [("yes", 3, True), ("no", 3, True)]
    assert [(v["label"], v["resamples"], v["exhausted"]) for v in by_criterion(verdicts, "c2")] == \
        [("yes", 1, False), ("yes", 1, False)]
    assert len(model.requests) == 4 + 2 * 3 + 2


def test_which_samples_are_drawn_again():
    assert to_redraw(["yes", "no"], ["tie"]) == [0, 1]
    assert to_redraw(["abstain", "abstain", "yes"], ["tie"]) == []
    assert to_redraw(["abstain", "abstain"], ["tie"]) == [0, 1]
    assert to_redraw(["abstain", "yes", "yes"], ["abstain"]) == [0]
    assert to_redraw(["abstain", "yes", "no"], ["tie", "abstain"]) == [0, 1, 2]  # the tie wins
    assert to_redraw(["yes", "no"], []) == []


def test_a_killed_job_resumes_without_drawing_a_finished_group_again(tmp_path):
    j = judging(samples=2)
    out = str(tmp_path / "v.jsonl")
    first = jj.judge_items(items(2), QUESTIONS, j, {"m": Scripted()}, out, finish=False)  # left in its checkpoint
    again = Scripted()
    assert jj.judge_items(items(2), QUESTIONS, j, {"m": again}, out) == first and not again.requests
    assert len(first) == 2 * 2 * 2


# ----------------------------------------------------------------------------------------- the value


def test_the_value_is_yes_over_yes_and_no_with_drop_and_yes_over_J_with_no():
    labels = ["yes", "yes", "no", "abstain", "abstain"]
    assert yes_share(labels, "drop") == pytest.approx(2 / 3)
    assert yes_share(labels, "no") == pytest.approx(2 / 5)
    assert yes_share(["abstain"], "drop") is None and yes_share([], "no") is None
    verdicts = [{"criterion_id": "c1", "label": lab, "p_yes": None} for lab in labels]
    assert ts.value_of(verdicts, "drop")[0] == pytest.approx(2 / 3)
    assert ts.value_of(verdicts, "no")[0] == ts.value_of(verdicts)[0] == pytest.approx(2 / 5)
    # gates count YES alone, either way: 2 YES passes 2-of-5, not 3-of-5
    node = ts._node({"usable": True}, verdicts, ["c1"], [2, 3], "drop")
    assert node["passes"] == [2] and node["value"] == pytest.approx(2 / 3)


def test_judging_abstain_defaults_to_drop_in_spar_s_mode_only():
    assert Judging.model_validate({"judges": [{"id": "a", "model": "m"}]}).abstain == "no"
    assert judging(samples=3).abstain == "drop" and judging(holistic=True).abstain == "drop"
    assert judging(samples=3, abstain="no").abstain == "no"
    dumped = judging(samples=3).model_dump()
    assert dumped["abstain"] == "drop" and Judging.model_validate(dumped).abstain == "drop"


class SampledTreeJudge:
    """A holistic judge of the tree search: YES once the response has `1 + seed % 3` refinements ('+'), no
    verdict where the seed is divisible by 4."""

    supports_prefix = False

    def __init__(self):
        self.calls = 0

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.calls += 1
            text = re.search(r'Response:\n"""\n(.*?)\n"""', r.messages[-1][1], re.S).group(1)
            word = "hmm" if r.seed % 4 == 0 else ("YES" if text.count("+") >= 1 + r.seed % 3 else "NO")
            out.append(Generation(f"ok\nVerdict: {word}" if word != "hmm" else "ok", 10, 3, "stop"))
        return out

    def stats(self):
        return {"calls": self.calls}


def test_the_tree_search_values_a_node_by_judging_abstain_and_gates_count_yes(tmp_path):
    from test_tree_search import Refiner, config, roots

    s = config().typed()  # gates 2 and 3, of J = 3
    j = Judging.model_validate({"k": 2, "judges": [{"id": "spar", "model": "m1", "samples": 3, "holistic": True,
                                                    "resample": []}]})
    assert j.abstain == "drop"
    root_verdicts = [{"response_id": f"q{i}/r0", "refinement_id": None, "criterion_id": c, "judge_id": f"spar#{n}",
                      "label": "no", "p_yes": None, "critique": "short"} for i in range(4) for c in ("c1", "c2")
                     for n in (1, 2, 3)]
    questions = {q: {**QUESTIONS["q0"], "question_id": q, "prompt": f"Question {q}?"} for q in ("q0", "q1", "q2", "q3")}
    nodes = ts.search_trees(roots(), root_verdicts, questions, s.refining, j, s.seed, Refiner(),
                            {"m1": SampledTreeJudge()}, str(tmp_path / "trees.jsonl"))
    judged = [n for n in nodes if n["depth"] > 0 and n["usable"]]
    assert judged
    with_abstain = 0
    for n in judged:
        labels = [v["label"] for v in n["verdicts"]]
        assert sorted(v["judge_id"] for v in n["verdicts"]) == sorted(["spar#1", "spar#2", "spar#3"] * 2)
        assert n["value"] == yes_share(labels, "drop")
        assert n["passes"] == [k for k in (2, 3) if all(n["yes"][c] >= k for c in ("c1", "c2"))]
        with_abstain += "abstain" in labels and yes_share(labels, "drop") != yes_share(labels, "no")
    assert with_abstain  # the two modes differ on some node: the test sees which one was used
    assert {f["gate"] for f in ts.finals(ts.read_trees([str(tmp_path / "trees.jsonl")]), 2, n_verdicts(j),
                                         "best_at_level")} == {"2of3"}


# ----------------------------------------------------------------------------------- the panel as before


class Hashed:
    """A panel judge's model: YES, NO or no verdict by a hash of its name, the seed and the prompt."""

    supports_prefix = False

    def __init__(self, name):
        self.name, self.requests = name, []

    def generate(self, reqs, desc=""):
        out = []
        for r in reqs:
            self.requests.append(r)
            h = zlib.crc32(f"{self.name}|{r.seed}|{r.messages[-1][1]}".encode())
            g = Generation(f"seed {r.seed}\nVerdict: {('YES', 'NO', 'maybe')[h % 3]}", 10, 3, "stop")
            g.p_yes = round((h % 1000) / 1000, 3)
            out.append(g)
        return out

    def stats(self):
        return {"calls": len(self.requests)}


# sha256 of the verdict records of the panel below, written by judge_items before SPaR's mode existed
PANEL_RECORDS = "77b19bb555d86d96466fe262ee1bdf7473494bb81855b6ee4b638907c0dce480"


def test_a_panel_of_distinct_judges_judges_exactly_as_before(tmp_path):
    j = Judging.model_validate({"k": 2, "judges": [{"id": f"j{i}", "model": f"m{i}", "seed": i} for i in (1, 2, 3)],
                                "generic_criteria": [{"criterion_id": "generic:g", "description": "on topic"}]})
    assert j.abstain == "no" and n_verdicts(j) == 3 and verdict_ids(j) == ["j1", "j2", "j3"]
    models = {f"m{i}": Hashed(f"m{i}") for i in (1, 2, 3)}
    its = items(3, 2)
    verdicts = jj.judge_items(its, QUESTIONS, j, models, str(tmp_path / "v.jsonl"))
    assert hashlib.sha256(json.dumps(verdicts, sort_keys=True).encode()).hexdigest() == PANEL_RECORDS
    assert not any(k in v for v in verdicts for k in ("sample", "sample_of", "resamples"))
    assert {r.seed for m in models.values() for r in m.requests} == {
        stable_seed(i, it["item_id"], c) for i in (1, 2, 3) for it in its for c in ("c1", "c2", "generic:g")}
    assert sum(len(m.requests) for m in models.values()) == len(verdicts) == 3 * 6 * 3  # no redraws
    aggs = jj.aggregate(verdicts, its, QUESTIONS, j)
    for a in aggs:
        assert a["J"] == 3
        for n in a["criteria"].values():
            assert n["accepted"] == (n["yes"] >= 2)
            assert n["value"] == pytest.approx(n["yes"] / 3)  # `no`: an abstain is a NO, as before
    assert any(n["abstain"] for a in aggs for n in a["criteria"].values())


# ----------------------------------------------------------------------------------------- bad input


def raw_config(**judge) -> dict:
    return {"models": {m: {"backend": "hf", "path": "unused"} for m in ("policy", "m")},
            "judging": {"k": 1, "judges": [{"id": "spar", "model": "m", **judge}]},
            "sampling": {"model": "policy"}, "refining": {"model": "policy", "strategy": "single"},
            "cleaning": {"enabled": False}, "draws": {"enabled": False}, "evaluation": {"oracle": "verifier"}}


@pytest.mark.parametrize("judge,message", [
    ({"samples": 3, "max_resamples": 0}, r"config key judging\.judges\[0\]\.max_resamples: Input should be greater "
                                         r"than or equal to 1"),
    ({"samples": 0}, r"config key judging\.judges\[0\]\.samples: Input should be greater than or equal to 1"),
    ({"samples": 3, "resample": ["ties"]}, r"judging\.judges\[0\]\.resample\[0\]"),
    ({"samples": 3, "temperature": 0}, r"config key judging\.judges\[0\]\.temperature: 3 samples of one judge need "
                                       r"temperature > 0"),
    ({"samples": 2, "kind": "trained"}, r"config key judging\.judges\[0\]\.samples: SPaR's judging mode samples a "
                                        r"prompt judge"),
    ({"holistic": True, "kind": "trained"}, r"config key judging\.judges\[0\]\.holistic: SPaR's judging mode"),
    ({"holistic": True, "holistic_template": "judge"},
     r"^judging\.judges\[0\]\.holistic_template: template 'judge' uses fields \['criterion', 'question', "
     r"'response'\], expected \['criteria', 'question', 'response'\]"),
    ({"holistic": True, "holistic_template": "nowhere.txt"},
     r"^judging\.judges\[0\]\.holistic_template: template file 'nowhere\.txt' not found"),
])
def test_bad_spar_settings_are_config_errors_naming_the_key(judge, message):
    with pytest.raises(ConfigError, match=message):
        st.validate(raw_config(**judge))


def test_a_holistic_template_without_criteria_is_refused_before_any_job(tmp_path):
    bad = tmp_path / "holistic.txt"
    bad.write_text("Question: {question}\nResponse: {response}\nVerdict:")
    with pytest.raises(ConfigError, match=r"^judging\.judges\[0\]\.holistic_template: template '.*holistic\.txt' "
                                          r"uses fields \['question', 'response'\], expected \['criteria', "):
        st.validate(raw_config(holistic=True, holistic_template=str(bad)))
    good = tmp_path / "mine.txt"
    good.write_text("{question}\n{response}\n{criteria}\nVerdict:")
    assert st.validate(raw_config(holistic=True, holistic_template=str(good), samples=3))["judging"]["abstain"] == \
        "drop"


@pytest.mark.parametrize("more,what", [
    ({"judging": {"calibration": {"questions": 10}}}, "a calibration split"),
])
def test_samples_where_judges_are_still_counted_as_J_are_refused(more, what):
    raw = raw_config(samples=3)
    for section, values in more.items():
        raw[section] = {**raw[section], **values}
    with pytest.raises(ConfigError, match=rf"^judging\.judges\[0\]\.samples: 3 samples of one judge \(SPaR's judging "
                                          rf"mode\) do not work with {re.escape(what)}"):
        st.validate(raw)
    raw["judging"]["judges"][0]["samples"] = 1  # a holistic judge sampled once keeps its id: J is unchanged
    raw["judging"]["judges"][0]["holistic"] = True
    st.validate(raw)


def test_a_sampled_judge_is_J_verdict_columns_in_the_tree_search_and_the_draws():
    """SPaR's gate experiment with SPaR's judge: one model sampled 5 times is J = 5 for the gates' names
    (rules and stages alike), the tree search's k-of-J, the draws' per-judge accepts and k-of-J matrix."""
    from judgeflow.oracle.draws import criterion_verdicts, judge_accepts
    from judgeflow.workflow.rulekit import Rules

    raw = raw_config(samples=5, holistic=True)
    raw["refining"] = {"model": "policy", "strategy": "tree_search", "tree_search": {"gates": [{"k": 3}, {"k": 5}]}}
    raw["draws"] = {"enabled": True}
    raw["training"] = {"variants": ["tree_search_3of5"]}
    cfg = st.validate(raw)
    assert Rules(cfg).gates() == ["3of5", "5of5"] and cfg["training"]["variants"] == ["tree_search_3of5"]
    typed = cfg.typed().judging
    question = {"question_id": "q", "prompt": "p", "criteria": [{"criterion_id": "c1", "description": "d"}]}
    verdicts = [{"criterion_id": "c1", "judge_id": f"spar#{s}", "label": "yes" if s <= 3 else "no"}
                for s in range(1, 6)]
    assert judge_accepts(verdicts, question, typed) == {f"spar#{s}": s <= 3 for s in range(1, 6)}
    assert criterion_verdicts(verdicts, question, typed) == {"c1": [1, 1, 1, 0, 0]}


def test_a_holistic_judge_s_template_file_is_an_input_of_the_stages_that_judge(tmp_path):
    """Editing a holistic judge's template reruns the judging (it is a rule input, like every prompt
    template); a judge that is not holistic does not load one, so it is no input of that judge's stages."""
    from judgeflow.workflow import pipeline
    from judgeflow.workflow.pipeline import STAGES

    mine = tmp_path / "holistic.txt"
    mine.write_text("Q: {question}\nA: {response}\nCriteria:\n{criteria}\nVerdict: YES or NO\n")
    raw = raw_config(samples=3, holistic=True, holistic_template=str(mine))
    files = pipeline.template_files(STAGES["judge_responses"], st.validate(raw))
    assert str(mine) in files
    raw["judging"]["judges"][0].update(holistic=False)
    assert str(mine) not in pipeline.template_files(STAGES["judge_responses"], st.validate(raw))
