"""The hf backend on the real embedded model."""
import pytest

from judgeflow.models import GenRequest, Sampling

pytestmark = pytest.mark.slow  # the real model

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


def test_p_yes_only_where_asked_and_where_the_keyword_is(hf_model):
    q = "Is the sky blue on a clear day? Answer 'Verdict: YES' or 'Verdict: NO'."
    greedy = Sampling(max_new_tokens=3)
    at_prefix, not_asked, absent = hf_model.generate([
        GenRequest.chat(q, prefix="The sky is blue.\nVerdict:", sampling=greedy, score_after="Verdict:"),
        GenRequest.chat(q, prefix="The sky is blue.\nVerdict:", sampling=greedy),
        GenRequest.chat(q, prefix="Well,", sampling=greedy, score_after="Nonexistent keyword:"),
    ])
    assert 0.0 <= at_prefix.p_yes <= 1.0
    assert not_asked.p_yes is None and absent.p_yes is None


def test_p_yes_from_generation_equals_a_fresh_forward_pass(hf_model):
    """The reading taken during sampling is the model's next-token distribution at that point."""
    import torch

    q = "Does 'Paris is in France' state a fact? Start with 'Verdict: YES' or 'Verdict: NO'."
    (g,) = hf_model.generate([GenRequest.chat(q, prefix="Verdict:", score_after="Verdict:",
                                              sampling=Sampling(max_new_tokens=2, temperature=0.7), seed=3)])
    text = hf_model.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                  add_generation_prompt=True) + "Verdict:"
    ids = hf_model.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        p = torch.softmax(hf_model.model(**ids).logits[0, -1].float(), -1)
    y, n = p[hf_model.yes_ids].sum().item(), p[hf_model.no_ids].sum().item()
    assert abs(g.p_yes - y / (y + n)) < 1e-4


def test_p_yes_at_every_prefix_the_forced_verdict_uses(hf_model):
    """Each prefix `prefix_for_score` can build ends at the keyword, so P(YES) must be read there:
    markdown and lower case (as the parser allows), and an earlier non-answer "Verdict:" line."""
    from judgeflow.judging.judges import prefix_for_score

    q = "Is the sky blue on a clear day? Answer 'Verdict: YES' or 'Verdict: NO'."
    texts = ["Looks right.\n**verdict:** yes", "Verdict: maybe, hard to say", "Hmm.\n- Verdict: YES"]
    gens = hf_model.generate([GenRequest.chat(q, prefix=prefix_for_score(t), sampling=Sampling(max_new_tokens=2),
                                              score_after="Verdict:") for t in texts])
    assert all(g.p_yes is not None and 0.0 <= g.p_yes <= 1.0 for g in gens), [g.p_yes for g in gens]


def test_one_token_requests_take_one_forward_pass_per_distinct_prompt_and_match_generate(hf_model):
    """max_new_tokens=1 (a judge that answers first) skips generate(): the last position's logits of
    each distinct prompt, once, batched longest first. Its draw and P(YES) must be those of the
    generate() path, which a request of two tokens takes, and prompts of different lengths in one
    batch must not change them."""
    qs = ["Is 2 + 2 = 4? Answer 'Verdict: YES' or 'Verdict: NO'.",
          "Is the following sentence written in English, with no spelling mistakes and with a final period: "
          "'The quick brown fox jumps over the lazy dog.'? Answer 'Verdict: YES' or 'Verdict: NO'.",
          "Is snow hot? Answer 'Verdict: YES' or 'Verdict: NO'."]

    def reqs(max_new):
        return [GenRequest.chat(q, prefix="Verdict:", score_after="Verdict:", seed=seed,
                                sampling=Sampling(max_new_tokens=max_new, temperature=0.9))
                for q in qs for seed in (1, 2)]  # two judges (seeds) on each prompt

    before = hf_model.forward_passes
    one = hf_model.generate(reqs(1))
    assert hf_model.forward_passes - before == len(qs)  # one per distinct prompt, not per request
    two = hf_model.generate(reqs(2))
    hf_model.batch_size, saved = 1, hf_model.batch_size
    try:
        alone = hf_model.generate(reqs(1))
    finally:
        hf_model.batch_size = saved
    for a, b, c in zip(one, two, alone):
        assert a.completion_tokens == 1 and b.text.startswith(a.text), (a.text, b.text)
        assert abs(a.p_yes - b.p_yes) < 1e-4 and abs(a.p_yes - c.p_yes) < 1e-4, (a.p_yes, b.p_yes, c.p_yes)
        assert a.text == c.text


def test_the_nucleus_from_the_head_is_the_nucleus_of_a_full_sort():
    """nucleus() looks among each row's 256 most probable tokens first: the tokens it keeps, with their
    probabilities, are those a sort of the whole vocabulary keeps; a flat row (its nucleus wider than
    the head) is sorted whole."""
    import torch

    from judgeflow.models.hf import nucleus

    torch.manual_seed(0)
    peaked = torch.softmax(torch.randn(3, 49152) * 6, dim=-1)
    flat = torch.full((1, 49152), 1 / 49152)
    probs = torch.cat([peaked, flat])
    for top_p in (0.5, 0.95):
        for row, (p, ids) in zip(probs, nucleus(probs, top_p)):
            s, order = row.sort(descending=True)
            keep = s.cumsum(-1) - s < top_p
            want = dict(zip(order[keep].tolist(), s[keep].tolist()))
            got = {int(i): float(x) for i, x in zip(ids, p) if x > 0}
            assert got.keys() == want.keys() and all(abs(got[i] - want[i]) < 1e-12 for i in got)
    assert len(nucleus(flat, 0.95)[0][1]) == 49152 and len(nucleus(peaked, 0.95)[0][1]) == 256
