"""Exact verdicts from the IFBench checkers (if-verifiable), on a real IFBench instruction."""
from judgeflow.judging.verifier import is_verifiable, verify

KW = {"keyword1": "kaleidoscope", "keyword2": "nebula", "keyword3": "whisper", "keyword4": "labyrinth",
      "keyword5": "paradox"}
Q = {"question_id": "q", "prompt": "Write about space.",
     "criteria": [{"criterion_id": "count:keywords_multiple", "kind": "instruction",
                   "instruction_id": "count:keywords_multiple", "kwargs": KW, "description": "..."}]}


def _text(counts):
    return " ".join(" ".join([w] * n) for w, n in zip(KW.values(), counts)) + "."


def test_a_response_that_follows_the_instruction_passes_and_one_that_does_not_fails():
    assert verify(Q, _text([1, 2, 3, 5, 7])) == {"criteria": {"count:keywords_multiple": True}, "all": True}
    assert verify(Q, _text([1, 2, 3, 5, 6]))["all"] is False  # one paradox short
    assert verify(Q, "   ")["all"] is False  # empty response fails (IFBench strict)


def test_questions_with_free_text_criteria_are_not_verifiable():
    q = {"question_id": "r", "prompt": "Name three rivers.",
         "criteria": [{"criterion_id": "c0", "kind": "given", "description": "Names three rivers."}]}
    assert not is_verifiable(q) and verify(q, "Rhine, Danube, Loire") is None
    assert verify({"question_id": "e", "prompt": "x", "criteria": []}, "y") is None


def test_checkers_that_need_nltk_data_run_offline():
    """punkt_tab, stopwords and the POS tagger come from PyPI wheels (make install), not a download."""
    def q(iid, kwargs):
        return {"question_id": iid, "prompt": "Write something.",
                "criteria": [{"criterion_id": iid, "kind": "instruction", "instruction_id": iid, "kwargs": kwargs}]}

    stop = q("ratio:stop_words", {"percentage": 30})  # at most 30% stop words
    assert verify(stop, "Quantum chromodynamics describes strong interactions between quarks gluons.")["all"] is True
    assert verify(stop, "The cat is on the mat and it is in the house with the dog.")["all"] is False
    verb = q("words:start_verb", {})
    res = verify(verb, "The report is done.")
    assert "error" not in res and res["all"] is False  # the tagger ran: "The" is not a verb
