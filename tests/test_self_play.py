"""SPaR's refiner and judge training data (judgeflow.refining.self_play), the SFT worker's checks
(judgeflow.training.sft) and the refiner training's config errors. The training itself, on the real
model, and round 2 reading round 1's refiner: the tiny workflow (test_workflow)."""
from __future__ import annotations

import json
import re

import pytest
from test_tree_search import QUESTIONS, Judge, Refiner, config, judges, root_verdicts, roots, search_trees

from judgeflow.errors import ConfigError, InputError
from judgeflow.refining import self_play, tree_search as ts
from judgeflow.workflow import settings as jf_settings


class RecordingRefiner(Refiner):
    """The fake refiner, keeping the prompt of every generation by its seed (a node's seed is its own)."""

    def __init__(self):
        super().__init__()
        self.prompts: dict[int, str] = {}

    def generate(self, reqs, desc=""):
        for r in reqs:
            self.prompts[r.seed] = r.messages[-1][1]
        return super().generate(reqs, desc)


@pytest.mark.parametrize("feedback", ["multi", "full"])
def test_a_refinement_example_is_the_exit_node_with_the_prompt_the_search_gave_it(tmp_path, feedback):
    cfg = config(feedback=feedback)
    refiner = RecordingRefiner()
    search_trees(roots(), root_verdicts(), cfg, refiner, judges(), tmp_path / "t.jsonl")
    s = cfg.typed()
    trees = ts.read_trees([str(tmp_path / "t.jsonl")])
    for k in (2, 3):
        examples = self_play.refinement_examples(trees, QUESTIONS, s.refining, s.judging, k, "best_at_level")
        exits = [ts.exits(t, k, "best_at_level") for t in trees.values()]
        solved = [e for e in exits if e is not None and e["depth"] > 0]
        assert solved and len(examples) == len(solved)  # one per root solved below the root
        for e, hit in zip(examples, solved):
            assert e["example_id"] == f"refinement/{hit['node_id']}" and e["kind"] == "refinement"
            assert e["prompt"] == [{"role": "user", "content": refiner.prompts[hit["seed"]]}]
            assert e["completion"] == [{"role": "assistant", "content": hit["text"]}]


def test_an_unsolved_search_teaches_its_best_node_where_its_value_is_above_min_value(tmp_path):
    """SPaR's final node where no node passes (bfs.py: the highest-valued one), kept where value > 0.5."""
    cfg = config()
    refiner = RecordingRefiner()
    # j3 never says YES: gate 3of3 is never passed; a node with a refinement gets 2 of 3 YES (value 2/3)
    search_trees(roots(), root_verdicts(), cfg, refiner, {"m1": Judge(1), "m2": Judge(1), "m3": Judge(99)},
                 tmp_path / "t.jsonl")
    s = cfg.typed()
    trees = ts.read_trees([str(tmp_path / "t.jsonl")])
    assert all(ts.exits(t, 3, "best_at_level") is None for t in trees.values())
    examples = self_play.refinement_examples(trees, QUESTIONS, s.refining, s.judging, 3, "best_at_level")
    assert len(examples) == len(trees)
    for e, tree in zip(examples, trees.values()):
        made = [n for n in tree if n["depth"] > 0 and 3 in n["gates"] and n["usable"]]
        best = max(made, key=lambda n: (n["value"], n["p_yes_mean"] or 0, -n["order"]))
        assert best["value"] == pytest.approx(2 / 3) and e["example_id"] == f"refinement/{best['node_id']}"
        assert e["prompt"][0]["content"] == refiner.prompts[best["seed"]]
    # a stricter min_value (SPaR's is 0.5) drops them
    assert self_play.refinement_examples(trees, QUESTIONS, s.refining, s.judging, 3, "best_at_level", 0.7) == []


def test_no_example_for_a_root_that_passes_or_is_never_solved(tmp_path):
    cfg = config()
    # judges that never say YES: no gate is ever passed, no exit, nothing to learn from
    never = {f"m{i}": Judge(99) for i in (1, 2, 3)}
    search_trees(roots(), root_verdicts(), cfg, Refiner(), never, tmp_path / "t.jsonl")
    s = cfg.typed()
    trees = ts.read_trees([str(tmp_path / "t.jsonl")])
    assert self_play.refinement_examples(trees, QUESTIONS, s.refining, s.judging, 2, "first") == []


def _verdict(rid, cid, judge, label, raw, frm="text", sample_of=None):
    return {"question_id": "q0", "response_id": rid, "refinement_id": None, "criterion_id": cid,
            "judge_id": judge, "model": "m1", "label": label, "label_from": frm, "raw": raw,
            **({"sample_of": sample_of} if sample_of else {})}


def judged_config(samples=1, **judge):
    raw = {"models": {"m1": {"backend": "hf", "path": "unused"}, "m2": {"backend": "hf", "path": "unused"}},
           "judging": {"k": 1, "judges": [{"id": "j1", "model": "m1", "samples": samples, **judge},
                                          {"id": "j2", "model": "m2"}]},
           "refining": {"model": "m1", "strategy": "tree_search"},
           "sampling": {"model": "m1"}, "cleaning": {"enabled": False}, "draws": {"enabled": False},
           "evaluation": {"oracle": "verifier"}}
    return jf_settings.validate(raw).typed()


def test_judgment_examples_keep_the_majority_where_a_sampled_judge_disagrees_with_itself():
    s = judged_config(samples=3)
    responses = [{"response_id": "q0/r0", "question_id": "q0", "text": "answer"},
                 {"response_id": "q0/r1", "question_id": "q0", "text": "another"}]
    verdicts = [
        # q0/r0 c1: 2 YES, 1 NO -> the first YES (one prompt for the samples: one example)
        _verdict("q0/r0", "c1", "j1#1", "yes", "ok\nVerdict: YES", sample_of="j1"),
        _verdict("q0/r0", "c1", "j1#2", "no", "bad\nVerdict: NO", sample_of="j1"),
        _verdict("q0/r0", "c1", "j1#3", "yes", "fine\nVerdict: YES", sample_of="j1"),
        # q0/r0 c2: unanimous -> nothing (SPaR keeps a judgment only where a dissent exists)
        *[_verdict("q0/r0", "c2", f"j1#{i}", "no", "Verdict: NO", sample_of="j1") for i in (1, 2, 3)],
        # q0/r1 c1: a tie once the abstain is left out -> nothing
        _verdict("q0/r1", "c1", "j1#1", "yes", "Verdict: YES", sample_of="j1"),
        _verdict("q0/r1", "c1", "j1#2", "no", "Verdict: NO", sample_of="j1"),
        _verdict("q0/r1", "c1", "j1#3", "abstain", "hmm", frm="none", sample_of="j1"),
        # q0/r1 c2: the majority NO, its first voice labelled by a threshold (not its text) -> the second one
        _verdict("q0/r1", "c2", "j1#1", "no", "Verdict: YES", frm="threshold", sample_of="j1"),
        _verdict("q0/r1", "c2", "j1#2", "no", "nope\nVerdict: NO", sample_of="j1"),
        _verdict("q0/r1", "c2", "j1#3", "yes", "Verdict: YES", sample_of="j1"),
        # a judge on another model never teaches the refiner
        {**_verdict("q0/r0", "c1", "j2", "no", "Verdict: NO"), "model": "m2"},
    ]
    q = {"q0": {"question_id": "q0", "prompt": "Question?",
                "criteria": [{"criterion_id": "c1", "description": "one"},
                             {"criterion_id": "c2", "description": "two"}]}}
    out = self_play.judgment_examples(verdicts, responses, q, s.judging, "m1")
    assert [(e["example_id"], e["completion"][0]["content"]) for e in out] == [
        ("judgment/q0/r0/c1/j1#1", "ok\nVerdict: YES"), ("judgment/q0/r1/c2/j1#2", "nope\nVerdict: NO")]
    from judgeflow.judging.judges import judge_prompt, judges_from_config

    j1 = judges_from_config(s.judging)[0]
    assert out[0]["prompt"][0]["content"] == judge_prompt(j1, q["q0"], "answer", [q["q0"]["criteria"][0]])
    assert out[1]["prompt"][0]["content"] == judge_prompt(j1, q["q0"], "another", [q["q0"]["criteria"][1]])


@pytest.mark.parametrize("change, key", [
    ({"refining": {"tree_search": {"rounds": 1}}}, "refining.tree_search.refiner_training.enabled"),
    ({"models": {"api": {"backend": "openai", "model": "x", "base_url": "http://localhost:1/v1"}},
      "refining": {"model": "api"}}, "refining.tree_search.refiner_training.enabled"),
    ({"judging": {"judges": [{"id": "j1", "model": "m1", "kind": "trained"}],
                  "calibration": {"questions": 4}}}, "judging.judges[0].model"),
])
def test_refiner_training_that_cannot_run_is_a_config_error_naming_the_key(change, key):
    raw = {"models": {"m1": {"backend": "hf", "path": "unused"}},
           "judging": {"k": 1, "judges": [{"id": "j1", "model": "m1"}]},
           "refining": {"model": "m1", "strategy": "tree_search",
                        "tree_search": {"rounds": 2, "refiner_training": {"enabled": True}}},
           "sampling": {"model": "m1"}, "cleaning": {"enabled": False}, "draws": {"enabled": False},
           "training": {"model": "m1"}, "evaluation": {"oracle": "verifier"}}
    with pytest.raises(ConfigError, match="^" + re.escape(key)):
        jf_settings.validate(jf_settings.deep_merge(raw, change))


def test_the_sft_worker_refuses_bad_examples_naming_the_line_and_counts_the_too_long(tmp_path, model_dir):
    from transformers import AutoTokenizer

    from judgeflow.training import sft

    bad = tmp_path / "examples.jsonl"
    good = {"example_id": "a", "kind": "refinement", "prompt": [{"role": "user", "content": "Fix it."}],
            "completion": [{"role": "assistant", "content": "Fixed."}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "example_id": "b", "completion": []}) + "\n")
    with pytest.raises(InputError, match=r"examples.jsonl:2: 'completion' must be a non-empty list"):
        sft.read_examples(bad)
    tok = AutoTokenizer.from_pretrained(model_dir)  # the real model's chat template
    long = {**good, "example_id": "c", "kind": "judgment",
            "completion": [{"role": "assistant", "content": "word " * 400}]}
    kept, stats = sft.filter_by_length([good, long], tok, 128)
    assert [e["example_id"] for e in kept] == ["a"]
    assert stats["dropped_too_long"] == 1 and stats["used_by_kind"] == {"judgment": 0, "refinement": 1}
    rt = jf_settings.RefinerTraining(min_examples=2)
    with pytest.raises(InputError, match=r"refiner_training\.min_examples=2"):
        sft.check_example_count(1, 2, "x.jsonl", rt)
    assert "not retrained" in sft.check_example_count(1, 2, "x.jsonl", rt.model_copy(update={"on_too_few": "skip"}))


def test_the_summary_and_report_say_what_each_round_ran_with_a_skipped_training_and_why():
    from judgeflow.refining.tree_search import trained_brief
    from judgeflow.report import _trained_line

    skipped = trained_brief({"training": "round-1-chain-3of3-refiner", "skipped": True, "examples_used": 0,
                             "reason": "examples.jsonl: 0 usable example(s)", "start": "resources/models/M"})
    assert skipped == {"training": "round-1-chain-3of3-refiner", "skipped": True, "used": 0, "optimizer_steps": None,
                       "reason": "examples.jsonl: 0 usable example(s)", "kept": "resources/models/M"}
    actor = trained_brief({"variant": "round-1-chain-3of3", "skipped": False, "pairs_used": 4, "optimizer_steps": 2})
    assert _trained_line("2/chain-3of3", {"actor": actor, "refiner": skipped}) == (
        "search 2/chain-3of3: actor trained on 4 pair(s), 2 optimizer step(s); the previous refiner, not retrained "
        "(examples.jsonl: 0 usable example(s))")
    both = trained_brief({"training": "round-1-refiner", "skipped": False, "examples_used": 3, "optimizer_steps": 1,
                          "used_by_kind": {"judgment": 1, "refinement": 2}})
    assert _trained_line("2", {"actor": actor, "refiner": both}).endswith(
        "refiner trained on 3 example(s) (1 judgment, 2 refinement), 1 optimizer step(s)")
    assert _trained_line("2", {"actor": actor}).endswith("; the original refiner")


def test_the_sft_worker_stops_with_too_few_examples_naming_the_file_and_the_key(tmp_path, model_dir, monkeypatch,
                                                                                 capsys):
    from judgeflow.training import sft

    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"example_id": "a", "kind": "refinement", "prompt": [{"role": "user",
                                    "content": "Fix it."}], "completion": [{"role": "assistant", "content": "Done."}]})
                        + "\n")
    ss = sft.SFTSettings(jf_settings.RefinerTraining(min_examples=2), jf_settings.Lora(), None, False, 50, "none",
                         False, 7, "smollm2")
    monkeypatch.setenv("JUDGEFLOW_TRAIN_SETTINGS", json.dumps(ss.as_json()))
    code = sft.main(["--name", "round-1-refiner", "--examples", str(examples), "--model", str(model_dir),
                     "--out-dir", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"train_refiner: {examples}: 1 usable example(s)" in err and "refiner_training.min_examples=2" in err
    assert not (tmp_path / "out" / "summary.json").exists()  # nothing written: the job failed
