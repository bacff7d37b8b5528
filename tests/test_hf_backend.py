"""The hf backend on the real embedded model."""
from judgeflow.models import GenRequest, Sampling

SAMPLED = Sampling(max_new_tokens=12, temperature=0.9, top_p=0.95)


def _reqs(n, seed0=0):
    return [GenRequest.chat(f"Name a fruit that starts with the letter {chr(65 + i)}.", sampling=SAMPLED,
                            seed=seed0 + i) for i in range(n)]


def test_a_draw_does_not_depend_on_its_batch(hf_model):
    reqs = _reqs(5)
    hf_model.batch_size = 5
    together = [g.text for g in hf_model.generate(reqs)]
    hf_model.batch_size = 1
    alone = [g.text for g in hf_model.generate(reqs)]
    hf_model.batch_size = 8
    assert together == alone
    assert all(together)


def test_seed_selects_the_draw(hf_model):
    same = [GenRequest.chat("Say something about cats.", sampling=SAMPLED, seed=s) for s in (7, 7, 8, 9, 10)]
    texts = [g.text for g in hf_model.generate(same)]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1  # other seeds give other draws


def test_generation_reports_tokens_and_finish_reason(hf_model):
    (g,) = hf_model.generate([GenRequest.chat("Count from one to fifty in words.",
                                              sampling=Sampling(max_new_tokens=5))])
    assert g.completion_tokens == 5 and g.finish_reason == "length" and g.prompt_tokens > 5


def test_p_yes_follows_the_context(hf_model):
    sure_yes = GenRequest.chat("Is the sky blue on a clear day? Answer 'Verdict: YES' or 'Verdict: NO'.",
                               prefix="The sky is blue on a clear day.\nVerdict: YES\n\nRepeat your verdict.\nVerdict:")
    sure_no = GenRequest.chat("Is the sky blue on a clear day? Answer 'Verdict: YES' or 'Verdict: NO'.",
                              prefix="The sky is not blue.\nVerdict: NO\n\nRepeat your verdict.\nVerdict:")
    yes, no = hf_model.score_yes_no([sure_yes, sure_no])
    assert 0.0 <= no.p_yes < yes.p_yes <= 1.0
    assert yes.top in ("yes", "no", None)
