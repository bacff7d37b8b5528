"""The composed question source, the exact pairwise oracle and the judges' quality against it."""
import json

import pytest

from judgeflow.errors import ConfigError
from judgeflow.questions.composed import compose, constraint_sets, expand, instruction_ids
from judgeflow.workflow import settings as st

from conftest import ROOT

CFG = ROOT / "config" / "config.yaml"


def _ccfg(**kw) -> st.Composed:
    base = {"count": 20, "instructions": ["punctuation:no_comma", "detectable_format:title"], "per_question": 1,
            "kwargs": {}, "tasks": None, "seed": 0}
    return st.Composed(**{**base, **kw})


def test_the_registry_is_read_without_importing_the_checkers():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    assert set(instruction_ids()) == set(INSTRUCTION_DICT)


def test_families_expand_to_their_instructions_and_ids_stay_as_given():
    got = expand(["punctuation", "startend:quotation", "change_case"])
    assert got[0] == "punctuation:no_comma" and "startend:quotation" in got
    assert {"change_case:english_lowercase", "change_case:english_capital"} <= set(got)
    assert "language:response_language" not in expand(["language"]) and expand(["language:response_language"])


def test_composed_questions_are_seeded_spread_over_instructions_and_checked_exactly():
    rows = compose(_ccfg())
    assert len(rows) == 20 and rows == compose(_ccfg())  # the same every time
    assert rows != compose(_ccfg(seed=1))
    per = {}
    for r in rows:
        per[r["instruction_id_list"][0]] = per.get(r["instruction_id_list"][0], 0) + 1
        assert r["registry"] == "ifeval" and r["prompt"].count(".") >= 1
    assert per == {"punctuation:no_comma": 10, "detectable_format:title": 10}
    assert len({r["question_id"] for r in rows}) == 20


def test_two_constraints_per_question_never_conflict():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    sets = constraint_sets(expand(["change_case", "punctuation", "detectable_format"]), 2)
    for a, b in sets:
        assert b not in INSTRUCTION_CONFLICTS.get(a, set()) and a not in INSTRUCTION_CONFLICTS.get(b, set())
    rows = compose(_ccfg(instructions=["change_case", "punctuation"], per_question=2, count=8))
    assert all(len(r["instruction_id_list"]) == 2 for r in rows)


def test_a_list_of_sizes_splits_the_count_and_one_size_composes_as_before():
    mixed = compose(_ccfg(instructions=["change_case", "punctuation"], per_question=[1, 2], count=9))
    sizes = [len(r["instruction_id_list"]) for r in mixed]
    assert sizes.count(1) == 5 and sizes.count(2) == 4 and len({r["question_id"] for r in mixed}) == 9
    assert mixed == compose(_ccfg(instructions=["change_case", "punctuation"], per_question=[1, 2], count=9))
    assert compose(_ccfg(per_question=[1])) == compose(_ccfg(per_question=1))
    with pytest.raises(ValueError, match="per_question: \\[2, 2\\] must be distinct sizes"):
        st.Composed(per_question=[2, 2])


def test_fixed_kwargs_are_used_and_kwargs_a_checker_rejects_name_the_key():
    rows = compose(_ccfg(instructions=["length_constraints:number_words"], count=3,
                         kwargs={"length_constraints:number_words": {"num_words": 30, "relation": "less than"}}))
    assert all(r["kwargs"] == [{"num_words": 30, "relation": "less than"}] for r in rows)
    assert all("less than 30 words" in r["prompt"] for r in rows)
    with pytest.raises(ConfigError, match=r"questions\.composed\.kwargs\.length_constraints:number_words: the "
                                          r"checker of 'length_constraints:number_words' refuses these kwargs"):
        compose(_ccfg(instructions=["length_constraints:number_words"], count=3,
                      kwargs={"length_constraints:number_words": {"words": 30}}))


def test_more_questions_than_the_source_can_compose_says_how_many_it_can():
    with pytest.raises(ConfigError, match=r"questions\.composed\.count: 500 questions of 1 instruction\(s\) asked "
                                          r"for, but this source "
                                          r"can compose at most 120 \(60 tasks x 2 sets"):
        compose(_ccfg(count=500))


def test_an_unknown_instruction_or_family_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"config key questions\.composed\.instructions\[1\]: unknown instruction "
                                          r"or family 'punctuaton' \(did you mean 'punctuation'\?\)"):
        st.load(CFG, overrides={"questions": {"composed": {"instructions": ["detectable_format:title",
                                                                              "punctuaton"]}}})


def test_prepared_composed_questions_carry_their_checkers_and_verify(tmp_path):
    from judgeflow.judging.verifier import verify
    from judgeflow.questions.sources import prepare_questions

    out = tmp_path / "q.jsonl"
    n = prepare_questions(st.Questions(source="composed", limit=None, composed=_ccfg(count=4)), str(out))
    qs = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == 4 and all(c["registry"] == "ifeval" and c["kind"] == "instruction" for q in qs for c in q["criteria"])
    comma = next(q for q in qs if q["instruction_id_list"] == ["punctuation:no_comma"])
    assert verify(comma, "no commas here at all")["all"] is True
    assert verify(comma, "one, two")["all"] is False


def test_the_exact_pairwise_oracle_prefers_more_satisfied_instructions():
    from judgeflow.judging.verifier import compare

    q = {"question_id": "q", "prompt": "Write. No commas. A title.", "criteria": [
        {"criterion_id": "punctuation:no_comma", "kind": "instruction", "instruction_id": "punctuation:no_comma",
         "kwargs": {}, "registry": "ifeval"},
        {"criterion_id": "detectable_format:title", "kind": "instruction", "instruction_id": "detectable_format:title",
         "kwargs": {}, "registry": "ifeval"}]}
    assert compare(q, "<<Title>> no commas", "<<Title>> one, two")[0] == "A"
    assert compare(q, "one, two", "<<T>> a, b")[0] == "B"
    assert compare(q, "a, b", "c, d")[0] == "TIE"
    assert compare({"question_id": "g", "prompt": "x", "criteria": [{"criterion_id": "c", "kind": "given"}]},
                   "a", "b")[0] is None


def test_judge_quality_confusion_rates_and_agreement():
    from judgeflow.judging.quality import AGGREGATE, quality

    draws, labels = [], {}
    # j1 is right every time, j2 says YES always, j3 says YES on even draws; the aggregate is 2-of-3
    for i in range(40):
        x = int(i % 4 != 0)
        votes = {"j1": bool(x), "j2": True, "j3": i % 2 == 0}
        draws.append({"draw_id": f"q{i}/d1", "judge_accepts": votes, "accepted": sum(votes.values()) >= 2})
        labels[f"q{i}/d1"] = {"label": x}
    labels["q0/d1"] = {"label": None}  # an abstain is not a label
    rows, pairs, summary = quality(draws, labels, ["j1", "j2", "j3"], 0.05, {"ok": True, "p0": 0.3, "p1": 0.9})
    by = {r["judge"]: r for r in rows}
    assert by["j1"]["p1"] == 1.0 and by["j1"]["p0"] == 0.0 and by["j1"]["kappa_vs_oracle"] == 1.0
    assert by["j2"]["p1"] == 1.0 and by["j2"]["p0"] == 1.0 and by["j2"]["kappa_vs_oracle"] == 0.0
    assert by["j1"]["labelled"] == 39 and by["j1"]["n11"] + by["j1"]["n00"] == 39
    assert by[AGGREGATE]["p1_low"] <= by[AGGREGATE]["p1"] <= by[AGGREGATE]["p1_high"]
    j2j3 = next(p for p in pairs if (p["judge_a"], p["judge_b"]) == ("j2", "j3"))
    assert j2j3["both_yes"] == 20 and j2j3["correlation"] is None  # j2 never varies
    assert summary["fitted"] == {"p0": 0.3, "p1": 0.9} and summary["labelled"] == 39
