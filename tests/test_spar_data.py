"""SPaR's data through a field mapping (issue 26): LLaMA-Factory's alpaca and sharegpt records, in a JSON
array file (as SPaR writes them: json.dump(..., indent=4), thu-coai/SPaR src/process_data.py) or JSONL,
read into judgeflow's questions (`questions.format`, `questions.fields`); a question left without any
criteria is an error, not a question silently judged on nothing."""
import json
import logging
from typing import Any

import pytest

from judgeflow.errors import ConfigError, InputError
from judgeflow.questions.sources import check_id, clean_questions, iter_records, prepare_questions
from judgeflow.workflow import pipeline, settings as st
from judgeflow.workflow.io import read_jsonl
from judgeflow.workflow.pipeline import STAGES, run_stage
from judgeflow.workflow.settings import Cleaning, JudgeCalibration, Questions

from conftest import ROOT

CFG = ROOT / "config" / "config.yaml"

# LLaMA-Factory alpaca records (instruction, input, output, optional system and history)
ALPACA: list[dict[str, Any]] = [
    {"instruction": "Write a haiku about autumn leaves. Do not use any commas.", "input": "",
     "output": "Red leaves drift and fall\nquiet paths beneath old oaks\nthe year breathes out slow"},
    {"instruction": "Summarize the following paragraph in exactly two sentences.",
     "input": "The city council met on Tuesday to discuss the new park. Residents asked for more trees, "
              "a playground and longer opening hours. The council promised a decision next month.",
     "output": "The council discussed the new park. A decision comes next month.",
     "system": "You are a concise assistant.",
     "history": [["Hi!", "Hello, how can I help?"]]},
]
# sharegpt as LLaMA-Factory's default tags write it (conversations, from/value), a system turn first
SHAREGPT: list[dict[str, Any]] = [
    {"conversations": [
        {"from": "system", "value": "You are a helpful assistant."},
        {"from": "human", "value": "List three fruits, all in lowercase letters."},
        {"from": "gpt", "value": "apple, pear, plum"},
        {"from": "human", "value": "Now three vegetables."},
        {"from": "gpt", "value": "carrot, leek, kale"}]},
    {"conversations": [
        {"from": "human", "value": "Write a title for a blog post about tea, wrapped in double angular brackets."},
        {"from": "gpt", "value": "<<a quiet cup>>"}]},
]
# SPaR's own files: OpenAI-style messages (role/content), e.g. its DPO data (process_dpo_data)
SPAR_DPO: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Describe a sunrise in fewer than 20 words, ending with the word "
                                              "'gold'."}],
     "chosen": {"role": "assistant", "content": "Light spills over hills, turning the quiet sky to gold."},
     "rejected": {"role": "assistant", "content": "The sun rises in the east every morning, slowly and warmly."}},
]
GENERIC = [{"criterion_id": "generic:follows", "description": "The response follows every instruction of the prompt."}]


def _json_array(path, records):
    path.write_text(json.dumps(records, indent=4, ensure_ascii=False), encoding="utf-8")
    return path


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _prepare(tmp_path, src, generic_criteria=True, **questions):
    out = tmp_path / "questions.jsonl"
    prepare_questions(Questions(source="jsonl", path=str(src), **questions), out, generic_criteria=generic_criteria)
    return read_jsonl(out)


# --- the formats ---------------------------------------------------------------------------------


def test_alpaca_in_a_json_array_file(tmp_path, caplog):
    src = _json_array(tmp_path / "spar_sft.json", ALPACA)
    with caplog.at_level(logging.WARNING, logger="judgeflow.questions.sources"):
        qs = _prepare(tmp_path, src, format="alpaca")
    # the instruction, and the input on a new line where it is non-empty (as LLaMA-Factory joins them)
    assert [q["prompt"] for q in qs] == [ALPACA[0]["instruction"], ALPACA[1]["instruction"] + "\n" + ALPACA[1]["input"]]
    # no id in the records: <file stem>-<record index>, a valid id, the same on every read
    assert [q["question_id"] for q in qs] == ["spar_sft-0", "spar_sft-1"]
    for q in qs:
        check_id(q["question_id"], "question_id", "test")
        assert q["criteria"] == [] and q["source"] == "jsonl"
        assert set(q) == {"question_id", "prompt", "source", "criteria"}  # no output, system or history
    # the system prompt and the history are not read, and the log says so
    assert "1 record(s) had a system prompt, not read" in caplog.text
    assert "1 record(s) had a history, not read" in caplog.text


def test_alpaca_jsonl_reads_the_same_as_the_json_array(tmp_path):
    a = _prepare(tmp_path, _json_array(tmp_path / "data.json", ALPACA), format="alpaca")
    b = _prepare(tmp_path, _jsonl(tmp_path / "data.jsonl", ALPACA), format="alpaca")
    assert a == b


def test_sharegpt_conversations_and_spar_messages(tmp_path):
    qs = _prepare(tmp_path, _json_array(tmp_path / "chat.json", SHAREGPT), format="sharegpt")
    # the first human turn: not the system turn, not the later turns
    assert [q["prompt"] for q in qs] == ["List three fruits, all in lowercase letters.",
                                         SHAREGPT[1]["conversations"][0]["value"]]
    assert [q["question_id"] for q in qs] == ["chat-0", "chat-1"]
    assert all("system" not in q for q in qs)  # judgeflow's questions have no system field
    dpo = _prepare(tmp_path, _json_array(tmp_path / "dpo.json", SPAR_DPO), format="sharegpt")
    assert [(q["question_id"], q["prompt"]) for q in dpo] == [("dpo-0", SPAR_DPO[0]["messages"][0]["content"])]


def test_a_datasets_directory_in_the_sharegpt_shape(tmp_path):
    import datasets

    datasets.Dataset.from_list(SHAREGPT).save_to_disk(tmp_path / "spar_ds")
    out = tmp_path / "q.jsonl"
    prepare_questions(Questions(source="hf_dataset", path=str(tmp_path / "spar_ds"), format="sharegpt"), out,
                      generic_criteria=True)
    assert [(q["question_id"], q["prompt"]) for q in read_jsonl(out)] == [
        ("spar_ds-0", "List three fruits, all in lowercase letters."),
        ("spar_ds-1", SHAREGPT[1]["conversations"][0]["value"])]


def test_the_mapping_names_the_record_fields(tmp_path):
    rows = [{"id": 101, "instr": "Name two rivers.", "ctx": "In Europe.", "rubric": ["Exactly two rivers."]},
            {"id": "r-2", "instr": "Name a mountain.", "ctx": "", "rubric": ["One mountain."]}]
    src = _json_array(tmp_path / "mine.json", rows)
    qs = _prepare(tmp_path, src, format="alpaca",
                  fields={"question_id": "id", "prompt": "instr", "query": "ctx", "criteria": "rubric"})
    assert [q["question_id"] for q in qs] == ["101", "r-2"]  # an integer id in decimal
    assert [q["prompt"] for q in qs] == ["Name two rivers.\nIn Europe.", "Name a mountain."]
    assert [[c["description"] for c in q["criteria"]] for q in qs] == [["Exactly two rivers."], ["One mountain."]]
    # judgeflow's own format with other field names: SPaR's prompt files ({"prompt_id": 3, "prompt": ...})
    spar = _jsonl(tmp_path / "prompts.jsonl", [{"prompt_id": 3, "prompt": "Say hi in French."}])
    assert _prepare(tmp_path, spar, fields={"question_id": "prompt_id"})[0]["question_id"] == "3"
    # sharegpt turns under another name
    turns = _jsonl(tmp_path / "turns.jsonl", [{"dialog": [{"role": "user", "content": "Count to three."}]}])
    assert _prepare(tmp_path, turns, format="sharegpt", fields={"messages": "dialog"})[0]["prompt"] == "Count to three."


def test_the_default_format_is_unchanged(tmp_path):
    """format judgeflow without fields (the default): the same question file as before, byte for byte; a
    JSON array of the same records gives the same file."""
    rows = [{"question_id": "a", "prompt": "Name three rivers.", "criteria": ["Exactly three rivers are named."]},
            {"question_id": "b", "prompt": "Write in lowercase.", "registry": "ifeval",
             "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
            {"question_id": "c", "prompt": "", "extra": "kept out"}]
    src = _jsonl(tmp_path / "mine.jsonl", rows)
    out = tmp_path / "q.jsonl"
    prepare_questions(Questions(source="jsonl", path=str(src)), out)
    expected = (
        '{"question_id": "a", "prompt": "Name three rivers.", "source": "jsonl", "criteria": [{"criterion_id": "c0", '
        '"description": "Exactly three rivers are named.", "kind": "given"}]}\n')
    text = out.read_text()
    assert text.startswith(expected) and len(text.splitlines()) == 3
    b = json.loads(text.splitlines()[1])
    assert b["instruction_id_list"] == ["change_case:english_lowercase"] and b["criteria"][0]["kind"] == "instruction"
    assert json.loads(text.splitlines()[2]) == {"question_id": "c", "prompt": "", "source": "jsonl", "criteria": []}
    explicit = tmp_path / "q2.jsonl"
    prepare_questions(Questions(source="jsonl", path=str(src), format="judgeflow"), explicit, generic_criteria=True)
    array = tmp_path / "q3.jsonl"
    prepare_questions(Questions(source="jsonl", path=str(_json_array(tmp_path / "mine.json", rows))), array)
    assert explicit.read_bytes() == out.read_bytes() == array.read_bytes()


def test_a_json_array_file_gives_each_record_its_line(tmp_path):
    src = _json_array(tmp_path / "x.json", ALPACA)
    lines = src.read_text().splitlines()
    got = list(iter_records(src))
    assert [r for _, r in got] == ALPACA
    assert [lines[n - 1].strip() for n, _ in got] == ["{", "{"] and got[0][0] == 2
    assert list(iter_records(_json_array(tmp_path / "empty.json", []))) == []


# --- bad input -----------------------------------------------------------------------------------


def test_a_mapped_field_missing_from_a_record_names_the_key_the_record_and_its_fields(tmp_path):
    src = _json_array(tmp_path / "x.json", ALPACA)
    with pytest.raises(InputError) as e:
        _prepare(tmp_path, src, format="alpaca", fields={"prompt": "instr"})
    assert str(e.value) == (f"questions.fields.prompt: field 'instr' is not in record 0 of {src}:2 "
                            "(it has: instruction, input, output)")
    # the format's own name, when a record lacks it, names the key to set too
    no_instruction = _jsonl(tmp_path / "y.jsonl", [ALPACA[0], {"question": "Why?", "output": "Because."}])
    with pytest.raises(InputError, match=r"^questions\.fields\.prompt: field 'instruction' is not in record 1 of "
                                         r".*y\.jsonl:2 \(it has: question, output\)$"):
        _prepare(tmp_path, no_instruction, format="alpaca")
    # a named input field is required; the default one ('input') is optional
    with pytest.raises(InputError, match=r"^questions\.fields\.query: field 'context' is not in record 0"):
        _prepare(tmp_path, src, format="alpaca", fields={"query": "context"})
    assert len(_prepare(tmp_path, _jsonl(tmp_path / "z.jsonl", [{"instruction": "Hi?"}]), format="alpaca")) == 1


def test_a_sharegpt_record_without_a_human_turn_names_file_and_line(tmp_path):
    rows = [SHAREGPT[1], {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "gpt", "value": "Hi"}]}]
    src = _jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(InputError, match=r"chat\.jsonl:2: record 1 has no human turn in 'conversations' \(its turns "
                                         r"are from: system, gpt\); the prompt is the first turn from 'human' or "
                                         r"'user'"):
        _prepare(tmp_path, src, format="sharegpt")
    with pytest.raises(InputError, match=r"^questions\.fields\.messages: record 0 of .*x\.jsonl:1 has neither "
                                         r"'conversations' nor 'messages' \(it has: instruction, input, output\)"):
        _prepare(tmp_path, _jsonl(tmp_path / "x.jsonl", ALPACA), format="sharegpt")
    bad_turn = _jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": [{"type": "text"}]}]}])
    with pytest.raises(InputError, match=r"t\.jsonl:1: 'messages\[0\] \(user\)' must be a string, got list"):
        _prepare(tmp_path, bad_turn, format="sharegpt")


def test_an_empty_prompt_after_mapping_is_rejected_by_cleaning_with_its_reason(tmp_path):
    """As the tiny project's blank prompt: prepared as it is, then rejected by clean_questions ("empty prompt"),
    never an error, and not a question without criteria either."""
    src = _json_array(tmp_path / "x.json", [{"instruction": "", "input": "", "output": "?", "rubric": None},
                                            dict(ALPACA[0], rubric=["Three lines."])])
    out = tmp_path / "prepared.jsonl"
    prepare_questions(Questions(source="jsonl", path=str(src), format="alpaca", fields={"criteria": "rubric"}), out,
                      generic_criteria=False)  # the empty prompt needs no criteria: cleaning rejects it
    assert [q["prompt"] for q in read_jsonl(out)] == ["", ALPACA[0]["instruction"]]
    clean_questions(out, tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl", Cleaning(enabled=False),
                    Questions(), JudgeCalibration(), seed=0, models={})
    assert {q["question_id"]: q["cleaning"]["reason"] for q in read_jsonl(tmp_path / "rejected.jsonl")} == {
        "x-0": "empty prompt"}
    assert [q["question_id"] for q in read_jsonl(tmp_path / "kept.jsonl")] == ["x-1"]


def test_malformed_json_arrays_name_file_and_line(tmp_path):
    def bad(text):
        p = tmp_path / "bad.json"
        p.write_text(text)
        return p

    cases = [('[\n  {"instruction": "a"},\n  {"instruction": "b",}\n]', r"bad\.json:3: malformed JSON"),
             ('[\n  {"instruction": "a"}\n  {"instruction": "b"}\n]', r"bad\.json:3: malformed JSON \(expected ',' "
                                                                      r"or '\]' after the record of line 2\)"),
             ('[\n  {"instruction": "a"},\n  "just a string"\n]', r"bad\.json:3: expected a JSON object in the "
                                                                  r"array, got str"),
             ('[{"instruction": "a"}]\n[]', r"bad\.json:2: malformed JSON \(more after the array's closing '\]'\)")]
    for text, message in cases:
        with pytest.raises(InputError, match=message):
            _prepare(tmp_path, bad(text), format="alpaca")
    # with a limit the records after it are never read (as for JSONL, issue 22)
    assert len(_prepare(tmp_path, bad(cases[0][0]), format="alpaca", limit=1)) == 1


@pytest.mark.parametrize("questions,message", [
    ({"format": "alpacca"}, r"^config key questions\.format: Input should be 'judgeflow', 'alpaca' or 'sharegpt' "
                            r"\(got 'alpacca'\); did you mean 'alpaca'\?"),
    ({"format": "alpaca", "fields": {"messages": "turns"}},
     r"^config key questions\.fields\.messages: not read with questions\.format 'alpaca' \(its fields: question_id, "
     r"prompt, query, criteria"),
    ({"format": "sharegpt", "fields": {"prompt": "instruction"}},
     r"^config key questions\.fields\.prompt: not read with questions\.format 'sharegpt'"),
    ({"fields": {"system": "system"}}, r"^config key questions\.fields\.system: unknown key"),
    ({"source": "ifbench", "format": "alpaca"},
     r"^config key questions\.format: only read with questions\.source jsonl or hf_dataset"),
])
def test_bad_settings_name_the_key(questions, message):
    with pytest.raises(ConfigError, match=message):
        st.load(CFG, overrides={"questions": {"source": "jsonl", "path": "data/x.json", **questions}})


# --- no question judged on nothing ---------------------------------------------------------------


def test_a_question_without_criteria_is_an_error_without_generic_criteria(tmp_path):
    src = _json_array(tmp_path / "spar.json", ALPACA + [{"instruction": "", "output": "blank: left to cleaning"}])
    with pytest.raises(InputError) as e:
        _prepare(tmp_path, src, format="alpaca", generic_criteria=False)
    msg = str(e.value)
    assert msg.startswith(f"{src}:2: question 'spar-0' has no criteria (neither 'criteria' nor 'instruction_id_list') "
                          "(and 1 more: 'spar-1') and judging.generic_criteria is empty")  # not the blank one
    assert "questions.fields.criteria" in msg and "set judging.generic_criteria" in msg
    assert "judging.judges[*].holistic" in msg
    assert not (tmp_path / "questions.jsonl").exists()
    # generic criteria judge every question; None (no judging settings known) checks nothing
    assert len(_prepare(tmp_path, src, format="alpaca", generic_criteria=True)) == 3
    assert len(_prepare(tmp_path, src, format="alpaca", generic_criteria=None)) == 3


def test_the_missing_criteria_error_comes_after_the_records_own_errors(tmp_path):
    src = _jsonl(tmp_path / "q.jsonl", [{"question_id": "a", "prompt": "x"}, {"question_id": "a", "prompt": "y"}])
    with pytest.raises(InputError, match=r"q\.jsonl:2: duplicate question_id 'a'"):
        _prepare(tmp_path, src, generic_criteria=False)


def _stage_config(tmp_path, src, judging=None, refining=None, **questions):
    over = {"questions": {"source": "jsonl", "path": str(src), "heldout": 0, **questions},
            "results_dir": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache")}
    over |= {k: v for k, v in (("judging", judging), ("refining", refining)) if v is not None}
    return st.load(CFG, overrides=over)


def _run(tmp_path, config):
    out = tmp_path / "out" / "questions.jsonl"
    run_stage("prepare_questions", {"source": config["questions"]["path"]}, {"questions": str(out)}, config)
    return read_jsonl(out)


def test_the_stage_reads_the_generic_criteria_and_the_record_shape(tmp_path):
    src = _json_array(tmp_path / "spar.json", SPAR_DPO)
    demo = _stage_config(tmp_path, src, format="sharegpt")  # the demo's judges, no generic criteria
    with pytest.raises(InputError, match=r"spar\.json:2: question 'spar-0' has no criteria"):
        _run(tmp_path, demo)
    generic = _stage_config(tmp_path, src, format="sharegpt", judging={"generic_criteria": GENERIC})
    assert [q["question_id"] for q in _run(tmp_path, generic)] == ["spar-0"]
    params = pipeline.params(STAGES["prepare_questions"], generic)
    assert params["judging"] == {"generic_criteria": GENERIC, "holistic_criterion": None}
    assert params["questions"]["format"] == "sharegpt"
    # a source whose questions always carry their instructions reads neither
    ifbench = st.load(CFG, overrides={"questions": {"source": "ifbench", "limit": 2}})
    assert set(pipeline.params(STAGES["prepare_questions"], ifbench)) == {"questions"}
    assert "format" not in pipeline.params(STAGES["prepare_questions"], ifbench)["questions"]


def test_a_holistic_judge_gives_a_question_without_criteria_its_holistic_criterion(tmp_path, hf_model):
    """SPaR's holistic judgment: one judgment of the response against the whole instruction, given to each
    criterion of the question. A question without criteria then gets the holistic criterion (issue 26),
    never zero verdicts: the real model judges it once per sample and the k-of-J gate reads that verdict."""
    from judgeflow.judging import judges
    from judgeflow.questions.sources import HOLISTIC_ID
    from judgeflow.workflow.settings import Judging

    follows = "The response follows every instruction and constraint of the question."
    holistic = {"k": 1, "calibration": {"questions": 0}, "holistic_criterion": follows,
                "judges": [{"id": "h", "model": "smollm2", "holistic": True, "samples": 3, "temperature": 0.7}]}
    src = _json_array(tmp_path / "spar.json", SPAR_DPO)
    config = _stage_config(tmp_path, src, format="sharegpt", judging=holistic,
                           refining={"tree_search": {"gates": [{"k": 1}]}})
    [q] = _run(tmp_path, config)
    assert q["criteria"] == [{"criterion_id": HOLISTIC_ID, "description": follows}] and q["holistic_criterion"]
    # the stage declares what it read: a change of the criterion reruns it, a change of the judges does not
    assert pipeline.params(STAGES["prepare_questions"], config)["judging"] == {"generic_criteria": [],
                                                                               "holistic_criterion": follows}
    item = {"item_id": f"{q['question_id']}/r0", "question_id": q["question_id"], "response_id": "r0",
            "refinement_id": None, "text": "Here is a short answer."}
    judging = Judging.model_validate(holistic)
    verdicts = judges.judge_items([item], {q["question_id"]: q}, judging, {"smollm2": hf_model},
                                  str(tmp_path / "v.jsonl"))
    assert [v["criterion_id"] for v in verdicts] == [HOLISTIC_ID] * 3  # one judgment per sample
    [agg] = judges.aggregate(verdicts, [item], {q["question_id"]: q}, judging)
    assert set(agg["criteria"]) == {HOLISTIC_ID} and agg["accepted"] == agg["criteria"][HOLISTIC_ID]["accepted"]
    # with generic criteria too, the question has both: the holistic judgment is given to each
    with_generic = _stage_config(tmp_path, src, format="sharegpt", judging={**holistic, "generic_criteria": GENERIC},
                                 refining={"tree_search": {"gates": [{"k": 1}]}})
    [q] = _run(tmp_path, with_generic)
    assert [c["criterion_id"] for c in q["criteria"]] == [HOLISTIC_ID]  # generic ones are added where judged
    # a holistic judge without the criterion: the question is still an error (its judgment needs a criterion)
    plain = _stage_config(tmp_path, src, format="sharegpt", judging={**holistic, "holistic_criterion": None},
                          refining={"tree_search": {"gates": [{"k": 1}]}})
    with pytest.raises(InputError, match=r"has no criteria .*set judging\.holistic_criterion"):
        _run(tmp_path, plain)
