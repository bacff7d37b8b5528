import pytest

from judgeflow.judging.judges import ABSTAIN, NO, YES, critique_of, parse_verdict, prefix_for_score


@pytest.mark.parametrize("text,label", [
    ("The response lists three items.\nVerdict: YES", YES),
    ("Missing the keyword.\nVerdict: NO", NO),
    ("Verdict: no", NO),
    ("**Verdict:** YES", YES),
    ("**Verdict: NO**", NO),
    ("Reason here.\n  Verdict:   YES.  ", YES),
    # no answer line: never guessed
    ("Note: the response is fine.", ABSTAIN),
    ("No verdict given", ABSTAIN),
    ("Not sure.", ABSTAIN),
    ("Yes, it satisfies the criterion.", ABSTAIN),
    ("", ABSTAIN),
    # the answer must be a line of its own, not a quotation inside a sentence
    ('The answer to this question is "Verdict: YES"', ABSTAIN),
    ("I would say Verdict: NO here", ABSTAIN),
    ("Verdict: YES, mostly", ABSTAIN),
    ("Verdict: Nope", ABSTAIN),
    ("Verdict: Noted", ABSTAIN),
    # conflicting lines
    ("Verdict: YES\nVerdict: NO", ABSTAIN),
    # agreeing repeated lines are fine
    ("Verdict: YES\nVerdict: yes", YES),
])
def test_parse_verdict(text, label):
    assert parse_verdict(text) == label


def test_critique_strips_answer_line():
    assert critique_of("Good list.\nVerdict: YES") == "Good list."


def test_prefix_for_score_cuts_after_the_answer_keyword():
    assert prefix_for_score("Fine.\nVerdict: YES") == "Fine.\nVerdict:"
    # no answer line: the keyword is appended so the next token can be scored
    assert prefix_for_score("Fine, I think") == "Fine, I think\nVerdict:"
    # a mention inside a sentence is not the answer line
    assert prefix_for_score('He said "Verdict: YES"') == 'He said "Verdict: YES"\nVerdict:'
