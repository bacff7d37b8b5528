"""LLM verdicts from log-probabilities over the openai backend: P(YES) vs P(NO) (or A/B/TIE) at the
answer token, the text where the endpoint gives none, and a count of answers without the choices."""
import pytest

from judgeflow.judging.verdicts import label_with_probs
from judgeflow.models import GenRequest, Sampling
from judgeflow.models.openai_api import OpenAIModel, choice_probs

from fault_server import FaultServer, _u


def _tok(token, tops):
    return {"token": token, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in tops]}


def test_the_answer_token_after_verdict_gives_the_choices():
    import math

    content = [_tok("Reason", [("Reason", -0.1)]), _tok(": ok", [(": ok", -0.1)]), _tok("\n", [("\n", 0.0)]),
               _tok("Verdict", [("Verdict", 0.0)]), _tok(":", [(":", 0.0)]),
               _tok(" Y", [(" Y", math.log(0.6)), (" NO", math.log(0.2)), (" maybe", math.log(0.1))]),
               _tok("ES", [("ES", 0.0)])]
    probs = choice_probs(content, "Verdict:", ("YES", "NO"))
    assert probs == {"YES": 0.75, "NO": 0.25}
    # no "Verdict:" in the answer: its first token
    first = [_tok(" A", [(" A", math.log(0.5)), ("B", math.log(0.3)), ("T", math.log(0.2))])]
    assert choice_probs(first, "Verdict:", ("A", "B", "TIE")) == {"A": 0.5, "B": 0.3, "TIE": 0.2}
    # none of the choices among the top tokens
    assert choice_probs([_tok("Hmm", [("Hmm", -0.1), ("Well", -2.0)])], "Verdict:", ("YES", "NO")) is None


def test_a_format_slip_is_read_from_the_probabilities_not_an_abstain():
    assert label_with_probs("abstain", {"YES": 0.7, "NO": 0.3}) == ("yes", "logprobs")
    assert label_with_probs("abstain", {"A": 0.2, "B": 0.5, "TIE": 0.3}) == ("B", "logprobs")
    assert label_with_probs("no", {"YES": 0.9, "NO": 0.1}) == ("no", "text")  # the line wins where there is one
    assert label_with_probs("abstain", None) == ("abstain", "none")


def _verdict_reqs(n, tag=""):
    return [GenRequest.chat(f"Is {i} even?{tag} Answer Verdict: YES or NO.", sampling=Sampling(16), seed=i,
                            score_after="Verdict:") for i in range(n)]


def test_p_yes_from_an_endpoint_that_returns_logprobs_and_its_cache(tmp_path):
    reqs = _verdict_reqs(30)
    with FaultServer() as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path))
        got = m.generate(reqs)
        again = OpenAIModel("m", fs.url, "standin", str(tmp_path)).generate(reqs)
    with_verdict = [(r, g) for r, g in zip(reqs, got) if "Verdict:" in g.text]
    assert len(with_verdict) > 15
    for r, g in with_verdict:  # the stand-in's own P(YES) for that request, read back
        prompt = "\n".join(c for _, c in r.messages)
        assert g.p_yes == pytest.approx(0.05 + 0.9 * _u("p_yes", prompt, r.seed), abs=1e-5)
    assert m.stats()["logprobs"]["read"] == len(with_verdict) and not m.stats()["logprobs"]["refused"]
    assert [g.p_yes for g in again] == [g.p_yes for g in got]  # the same from the cache, no call paid


def test_logprobs_without_the_verdict_tokens_fall_back_to_the_text_and_are_counted(tmp_path):
    reqs = _verdict_reqs(20, tag=" [no-choice]")
    with FaultServer() as fs:
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path))
        got = m.generate(reqs)
    with_verdict = [g for g in got if "Verdict:" in g.text]
    assert with_verdict and all(g.p_yes is None and g.choice_probs is None for g in got)
    assert m.stats()["logprobs"]["no_choice"] == len(got)  # every answer came with logprobs, none with the choices


def test_an_endpoint_without_logprobs_is_read_from_the_text_and_said_once(tmp_path, caplog):
    import logging

    class NoLogprobs(FaultServer):  # an endpoint that ignores the field, as `transformers serve` does
        def _upstream(self, body, auth):
            status, answer = super()._upstream({k: v for k, v in body.items() if k != "logprobs"}, auth)
            return status, answer

    with NoLogprobs() as fs, caplog.at_level(logging.WARNING):
        m = OpenAIModel("m", fs.url, "standin", str(tmp_path))
        got = m.generate(_verdict_reqs(10))
    assert all(g.p_yes is None for g in got) and m.stats()["logprobs"]["none"] == 10
    said = [r for r in caplog.records if "returns no logprobs" in r.getMessage()]
    assert len(said) == 1


def test_logprobs_false_never_asks(tmp_path):
    seen = []

    class Recording(FaultServer):
        def _upstream(self, body, auth):
            seen.append(body)
            return super()._upstream(body, auth)

    with Recording() as fs:
        OpenAIModel("m", fs.url, "standin", str(tmp_path), logprobs=False).generate(_verdict_reqs(3))
    assert seen and not any("logprobs" in b for b in seen)


def test_judges_over_the_openai_backend_record_p_yes_and_where_each_label_came_from(tmp_path):
    from judgeflow.judging import judges as judging

    q = {"question_id": "q", "prompt": "Name a river.",
         "criteria": [{"criterion_id": "c0", "description": "One river."}]}
    items = [{"item_id": f"q/r{i}", "response_id": f"q/r{i}", "refinement_id": None, "question_id": "q",
              "text": f"The river {i}."} for i in range(12)]
    from judgeflow.workflow.settings import Judging

    config = {"judging": Judging.model_validate({"k": 1, "force_verdict": True, "generic_criteria": [], "judges": [
        {"id": "j1", "model": "api", "template": "judge", "seed": 1, "max_new_tokens": 32, "temperature": 0.7,
         "top_p": 0.95, "answer_first": False, "threshold": None, "kind": "prompt"}]})}
    with FaultServer() as fs:
        m = OpenAIModel("api", fs.url, "standin", str(tmp_path / "cache"))
        verdicts = judging.judge_items(items, {"q": q}, config["judging"], {"api": m}, str(tmp_path / "v.jsonl"))
    assert {v["label_from"] for v in verdicts} <= {"text", "logprobs", "none"}
    assert all(v["p_yes"] is not None for v in verdicts if v["label_from"] == "text")
