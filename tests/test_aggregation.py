import pytest

from judgeflow.judging.judges import aggregate
from judgeflow.workflow.settings import Judging


def _judging(k, J):
    return Judging.model_validate({"k": k, "judges": [{"id": f"j{i}", "model": "m"} for i in range(J)],
                                   "generic_criteria": [{"criterion_id": "generic:g", "description": "on topic"}]})


def _verdicts(item, crit, labels):
    return [{"response_id": item, "refinement_id": None, "criterion_id": crit, "judge_id": f"j{i}",
             "label": l} for i, l in enumerate(labels)]


QUESTIONS = {"q": {"question_id": "q", "prompt": "p", "criteria": [{"criterion_id": "c1", "description": "d"}]}}
ITEMS = [{"item_id": "q/r0", "question_id": "q", "response_id": "q/r0"}]


@pytest.mark.parametrize("k,labels,accepted", [
    (3, ["yes", "yes", "yes", "no", "no"], True),     # 3/5
    (3, ["yes", "yes", "abstain", "no", "abstain"], False),  # abstain is not YES
    (5, ["yes", "yes", "yes", "yes", "no"], False),   # 5/5 needs unanimity
    (5, ["yes"] * 5, True),
])
def test_k_of_j_per_criterion(k, labels, accepted):
    v = _verdicts("q/r0", "c1", labels) + _verdicts("q/r0", "generic:g", ["yes"] * 5)
    (agg,) = aggregate(v, ITEMS, QUESTIONS, _judging(k, 5))
    assert agg["criteria"]["c1"]["accepted"] is accepted
    assert agg["criteria"]["c1"]["abstain"] == labels.count("abstain")
    assert agg["accepted"] is accepted  # the generic criterion passes, so overall follows c1
    assert agg["failed"] == ([] if accepted else ["c1"])
    assert (agg["k"], agg["J"]) == (k, 5)


def test_overall_needs_every_criterion():
    v = _verdicts("q/r0", "c1", ["yes"] * 3) + _verdicts("q/r0", "generic:g", ["no", "no", "yes"])
    (agg,) = aggregate(v, ITEMS, QUESTIONS, _judging(2, 3))
    assert agg["criteria"]["c1"]["accepted"] and not agg["criteria"]["generic:g"]["accepted"]
    assert agg["accepted"] is False and agg["failed"] == ["generic:g"]


def test_missing_verdicts_count_as_not_accepted():
    (agg,) = aggregate([], ITEMS, QUESTIONS, _judging(1, 3))
    assert agg["failed"] == ["c1", "generic:g"]


@pytest.mark.parametrize("abstain,value", [("no", 2 / 5), ("drop", 2 / 3)])
def test_the_value_counts_an_abstain_as_no_or_leaves_it_out_and_acceptance_is_the_same(abstain, value):
    j = Judging.model_validate({**_judging(2, 5).model_dump(), "abstain": abstain})
    v = _verdicts("q/r0", "c1", ["yes", "yes", "no", "abstain", "abstain"]) + \
        _verdicts("q/r0", "generic:g", ["yes"] * 5)
    (agg,) = aggregate(v, ITEMS, QUESTIONS, j)
    assert agg["criteria"]["c1"]["value"] == pytest.approx(value)
    assert agg["criteria"]["generic:g"]["value"] == 1.0
    assert agg["value"] == pytest.approx((2 + 5) / (10 if abstain == "no" else 8))
    assert agg["accepted"] is True  # 2 YES of 5 passes 2-of-5 with either


def test_a_sampled_judge_s_samples_are_the_J_of_k_of_J():
    j = Judging.model_validate({"k": 3, "judges": [{"id": "s", "model": "m", "samples": 4}]})
    v = [{"response_id": "q/r0", "refinement_id": None, "criterion_id": c, "judge_id": f"s#{n}", "label": lab}
         for c in ("c1",) for n, lab in zip(range(1, 5), ["yes", "yes", "yes", "abstain"])]
    (agg,) = aggregate(v, ITEMS, QUESTIONS, j)
    assert (agg["k"], agg["J"]) == (3, 4) and agg["criteria"]["c1"]["accepted"]
    assert agg["criteria"]["c1"]["value"] == 1.0  # abstain: drop, the default with samples
    with pytest.raises(Exception, match="two verdicts of judge 's#1'"):
        aggregate(v + v[:1], ITEMS, QUESTIONS, j)
