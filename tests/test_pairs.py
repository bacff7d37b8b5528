from judgeflow.refining.pairs import build_pairs
from judgeflow.workflow.settings import Pairs

Q = {"q": {"question_id": "q", "prompt": "Write a haiku in lowercase.", "criteria": []}}
RESP = [{"response_id": "q/r0", "question_id": "q", "text": "ORIGINAL"}]
RAGG = [{"item_id": "q/r0", "question_id": "q", "response_id": "q/r0", "refinement_id": None,
         "criteria": {"a": {"accepted": False}, "b": {"accepted": False}}, "failed": ["a", "b"], "accepted": False}]
REFS = [
    {"refinement_id": "q/r0/mf/a", "response_id": "q/r0", "question_id": "q", "mode": "multi_feedback",
     "criterion_ids": ["a"], "text": "FIXED A"},
    {"refinement_id": "q/r0/mf/b", "response_id": "q/r0", "question_id": "q", "mode": "multi_feedback",
     "criterion_ids": ["b"], "text": "FIXED B"},
    {"refinement_id": "q/r0/ff", "response_id": "q/r0", "question_id": "q", "mode": "full_feedback",
     "criterion_ids": ["a", "b"], "text": "FIXED BOTH?"},
]


def _agg(fid, a, b):
    return {"item_id": fid, "refinement_id": fid, "response_id": "q/r0", "question_id": "q",
            "criteria": {"a": {"accepted": a}, "b": {"accepted": b}}, "accepted": a and b}


FAGG = [_agg("q/r0/mf/a", True, False), _agg("q/r0/mf/b", False, False), _agg("q/r0/ff", True, False)]
VERDICTS = [{"refinement_id": None, "criterion_id": "a", "label": "abstain"},
            {"refinement_id": "q/r0/ff", "criterion_id": "a", "label": "yes", "forced": True}]


def test_targeted_keeps_refinements_that_fix_their_criteria():
    pairs, rows, overall = build_pairs(Q, RESP, REFS, FAGG, RAGG, VERDICTS, Pairs(require="targeted"))
    assert [p["refinement_id"] for p in pairs["multi_feedback"]] == ["q/r0/mf/a"]
    assert pairs["full_feedback"] == []  # fixed a but not b
    p = pairs["multi_feedback"][0]
    # TRL conversational preference format
    assert p["prompt"] == [{"role": "user", "content": "Write a haiku in lowercase."}]
    assert p["chosen"] == [{"role": "assistant", "content": "FIXED A"}]
    assert p["rejected"] == [{"role": "assistant", "content": "ORIGINAL"}]
    by = {r["criterion_id"]: r for r in rows}
    assert by["a"]["multi_feedback_refinements"] == 1 and by["a"]["multi_feedback_accepted"] == 1
    assert by["b"]["multi_feedback_acceptance_rate"] == 0.0
    assert by["a"]["full_feedback_refinements"] == 1 and by["a"]["full_feedback_accepted"] == 0
    assert by["a"]["response_abstain"] == 1
    assert overall["multi_feedback_pairs"] == 1 and overall["full_feedback_pairs"] == 0
    assert overall["abstain"] == 1 and overall["forced_verdicts"] == 1


def test_require_all_is_stricter():
    pairs, _, overall = build_pairs(Q, RESP, REFS, FAGG, RAGG, [], Pairs(require="all"))
    assert pairs["multi_feedback"] == [] and overall["require"] == "all"
    fagg = [_agg("q/r0/mf/a", True, True), _agg("q/r0/mf/b", False, False), _agg("q/r0/ff", True, True)]
    pairs, _, _ = build_pairs(Q, RESP, REFS, fagg, RAGG, [], Pairs(require="all"))
    assert [p["refinement_id"] for p in pairs["multi_feedback"]] == ["q/r0/mf/a"]
    assert [p["refinement_id"] for p in pairs["full_feedback"]] == ["q/r0/ff"]
