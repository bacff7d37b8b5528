import json

import pytest

from judgeflow.errors import InputError
from judgeflow.questions.sources import clean_questions, ifbench_file, prepare_questions
from judgeflow.workflow.io import read_jsonl
from judgeflow.workflow.settings import Cleaning, JudgeCalibration, Questions


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ifbench_source_with_limit_and_stable_ids(tmp_path):
    out = tmp_path / "q.jsonl"
    assert prepare_questions(Questions(source="ifbench", limit=5), out) == 5
    qs = read_jsonl(out)
    raw = [json.loads(l) for l in ifbench_file().read_text().splitlines()[:5]]
    assert [q["question_id"] for q in qs] == [f"ifbench-{r['key']}" for r in raw]
    for q, r in zip(qs, raw):
        assert q["prompt"] == r["prompt"]
        assert [c["criterion_id"] for c in q["criteria"]] == r["instruction_id_list"]
        assert all(c["description"] and c["kind"] == "instruction" for c in q["criteria"])
    # descriptions are the checkers' own, filled from kwargs, identical on every run
    out2 = tmp_path / "q2.jsonl"
    prepare_questions(Questions(source="ifbench", limit=5), out2)
    assert out.read_text() == out2.read_text()


def test_full_ifbench_has_294_questions(tmp_path):
    assert prepare_questions(Questions(source="ifbench", limit=None), tmp_path / "all.jsonl") == 294


def test_jsonl_source_with_own_criteria(tmp_path):
    src = _write(tmp_path / "mine.jsonl", [
        {"question_id": "a", "prompt": "Name three rivers.", "criteria": ["Exactly three rivers are named."]},
        {"question_id": "b", "prompt": "Say hi.",
         "criteria": [{"criterion_id": "short", "description": "At most five words."}]},
        {"question_id": "c", "prompt": "Plain question, generic criteria only."},
    ])
    prepare_questions(Questions(source="jsonl", path=str(src), limit=None), tmp_path / "q.jsonl")
    qs = read_jsonl(tmp_path / "q.jsonl")
    assert [c["criterion_id"] for q in qs for c in q["criteria"]] == ["c0", "short"]


def test_datasets_source(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"question_id": "x1", "prompt": "What is 2+2?"},
                                {"question_id": "x2", "prompt": "Spell 'cat'."}]).save_to_disk(tmp_path / "ds")
    n = prepare_questions(Questions(source="hf_dataset", path=str(tmp_path / "ds"), limit=None), tmp_path / "q.jsonl")
    assert n == 2 and read_jsonl(tmp_path / "q.jsonl")[1]["prompt"] == "Spell 'cat'."


@pytest.mark.parametrize("rows,message", [
    ([{"question_id": "a", "prompt": "x"}, {"question_id": "a", "prompt": "y"}],
     r"mine\.jsonl:2: duplicate question_id 'a' \(first seen at .*mine\.jsonl:1\)"),
    ([{"question_id": 7, "prompt": "x"}], r"mine\.jsonl:1: 'question_id' must be a non-empty string"),
    ([{"question_id": "a", "prompt": ["x"]}], r"mine\.jsonl:1: 'prompt' must be a string, got list"),
    ([{"question_id": "a", "prompt": "x", "instruction_id_list": ["no:such"], "kwargs": [{}]}],
     r"mine\.jsonl:1: unknown instruction id 'no:such'"),
    ([{"question_id": "a", "prompt": "x", "criteria": [{"criterion_id": "c"}]}],
     r"mine\.jsonl:1: criteria\[0\] needs a non-empty 'description'"),
    ([{"prompt": "x"}], r"mine\.jsonl:1: 'question_id' must be a non-empty string, got None"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    src = _write(tmp_path / "mine.jsonl", rows)
    out = tmp_path / "q.jsonl"
    with pytest.raises(InputError, match=message):
        prepare_questions(Questions(source="jsonl", path=str(src), limit=None), out)
    assert not out.exists()  # nothing half-written


def test_empty_and_huge_prompts_are_rejected_with_a_reason_without_the_oracle(tmp_path):
    src = _write(tmp_path / "q.jsonl", [{"question_id": "e", "prompt": "   ", "criteria": []},
                                        {"question_id": "h", "prompt": "x" * 50, "criteria": []},
                                        {"question_id": "ok", "prompt": "Fine?", "criteria": []}])
    summary = clean_questions(src, tmp_path / "kept.jsonl", tmp_path / "rej.jsonl",
                              Cleaning(enabled=False, model="oracle", on_abstain="keep"),
                              Questions(max_prompt_chars=20, heldout=0), JudgeCalibration(questions=0), seed=0,
                              models={})
    rejected = {q["question_id"]: q["cleaning"]["reason"] for q in read_jsonl(tmp_path / "rej.jsonl")}
    assert rejected["e"] == "empty prompt"
    assert "50 characters, over questions.max_prompt_chars=20" in rejected["h"]
    assert [q["question_id"] for q in read_jsonl(tmp_path / "kept.jsonl")] == ["ok"]
    assert summary == {"questions": 3, "kept": 1, "heldout": 0, "calibration": 0, "rejected": 2, "asked_oracle": 0,
                       "abstained": 0}


def test_heldout_split_is_stable_and_disjoint():
    from judgeflow.questions.sources import split_heldout

    qs = [{"question_id": f"q{i}"} for i in range(20)]
    train, held = split_heldout(qs, 5, seed=7)
    assert len(held) == 5 and len(train) == 15
    assert not {q["question_id"] for q in train} & {q["question_id"] for q in held}
    # a question's fate does not depend on the others present: drop a training question, same held-out set
    _, held2 = split_heldout([q for q in qs if q is not train[0]], 5, seed=7)
    assert held2 == held
    assert split_heldout(qs, 5, seed=8)[1] != held  # the seed picks the split
    assert split_heldout(qs, 0, seed=7) == (qs, [])


def test_limit_reads_only_the_lines_it_keeps(tmp_path):
    """Regression (issue 22): with questions.limit: 2, a broken line 3 stopped the run."""
    src = tmp_path / "src.jsonl"
    src.write_text('{"question_id": "a", "prompt": "Hi?"}\n'
                   '{"question_id": "b", "prompt": "Yo?"}\n'
                   '{"question_id": "c", \n')
    assert prepare_questions(Questions(source="jsonl", path=str(src), limit=2), tmp_path / "q.jsonl") == 2
    assert [q["question_id"] for q in read_jsonl(tmp_path / "q.jsonl")] == ["a", "b"]
    with pytest.raises(InputError, match=r"src\.jsonl:3: malformed JSON"):
        prepare_questions(Questions(source="jsonl", path=str(src), limit=3), tmp_path / "q3.jsonl")


def test_calibration_heldout_and_kept_are_disjoint_and_a_split_too_large_names_its_key(tmp_path):
    """A judge never trains on a question that any other stage uses (issue 23)."""
    src = _write(tmp_path / "q.jsonl", [{"question_id": f"q{i}", "prompt": f"Say {i}.", "criteria": []}
                                        for i in range(30)])
    cleaning = Cleaning(enabled=False, model="oracle", on_abstain="keep")
    questions = Questions(max_prompt_chars=None, heldout=5)  # null: no prompt is too long
    paths = {n: tmp_path / f"{n}.jsonl" for n in ("kept", "rejected", "heldout", "calibration")}

    def clean(calibration_questions):
        return clean_questions(src, paths["kept"], paths["rejected"], cleaning, questions,
                               JudgeCalibration(questions=calibration_questions), 3, {}, paths["heldout"],
                               paths["calibration"])

    summary = clean(8)
    ids = {n: {q["question_id"] for q in read_jsonl(p)} for n, p in paths.items()}
    assert (len(ids["kept"]), len(ids["heldout"]), len(ids["calibration"])) == (17, 5, 8)
    assert summary["calibration"] == 8
    assert not ids["kept"] & ids["heldout"] and not ids["kept"] & ids["calibration"]
    assert not ids["heldout"] & ids["calibration"]
    assert ids["kept"] | ids["heldout"] | ids["calibration"] == {f"q{i}" for i in range(30)}
    summary = clean(0.2)  # a fraction of the 25 kept besides the held-out ones
    assert (summary["kept"], summary["calibration"]) == (20, 5)
    with pytest.raises(InputError, match=r"judging.calibration.questions: 25 calibration questions asked for, "
                                         r"but only 25 questions"):
        clean(25)
