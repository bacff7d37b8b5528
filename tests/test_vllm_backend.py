"""The vllm backend (judgeflow.models.vllm_backend) without vLLM and without a GPU.

Real vLLM is NOT run here: it is not installed in this environment (it needs a GPU and its own
torch). What is tested: the configuration errors, the pure functions (sampling kwargs, request
planning, logprob reading, output conversion) on data shaped like vLLM's, and `VLLMModel.generate`
against injected engines -- a scripted one, and one that answers like vLLM's `LLM.generate` from
the real embedded model through transformers (slow). benchmarks/gpu_check.sh runs the real engine
on a GPU machine.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from types import SimpleNamespace

import pytest

from judgeflow.errors import ConfigError
from judgeflow.models import GenRequest, Sampling, vllm_backend as vb

SAMPLED = Sampling(max_new_tokens=12, temperature=0.9, top_p=0.95)
GREEDY = Sampling(max_new_tokens=8)


def lp(logprob: float, rank: int, token: str):
    """vLLM's Logprob (vllm/logprobs.py): logprob, rank, decoded_token."""
    return SimpleNamespace(logprob=logprob, rank=rank, decoded_token=token)


def position(chosen_id: int, tops: list[tuple[int, str, float]]) -> dict:
    """One generated position as vLLM returns it: {token_id: Logprob} of the top tokens (ranks 1..k)."""
    return {tid: lp(math.log(p), r + 1, tok) for r, (tid, tok, p) in enumerate(tops)} | (
        {} if any(t[0] == chosen_id for t in tops) else {chosen_id: lp(math.log(1e-4), 99, "?")})


# ----------------------------------------------------------------------------- config errors


def _model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 9, "num_key_value_heads": 3}))
    return tmp_path


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_a_config_error_naming_the_model_and_the_install(tmp_path):
    with pytest.raises(ConfigError) as e:
        vb.VLLMModel("policy", str(_model_dir(tmp_path)))
    assert "models.policy.backend" in str(e.value)
    assert "pip install -e .[vllm]" in str(e.value)


def test_no_gpu_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    import torch

    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: pytest.fail("the engine must not be built without a GPU")
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        vb.VLLMModel("judge", str(_model_dir(tmp_path)))
    assert "models.judge.backend" in str(e.value) and "GPU" in str(e.value) and "backend: hf" in str(e.value)


def test_missing_model_dir_names_the_path_key(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.policy\.path"):
        vb.VLLMModel("policy", str(tmp_path / "nothing"))


def test_tensor_parallel_default_and_visible_gpus():
    smol = {"num_attention_heads": 9, "num_key_value_heads": 3}
    assert [vb.default_tensor_parallel_size(g, smol) for g in (0, 1, 2, 3, 4, 8, 9)] == [1, 1, 1, 3, 3, 3, 9]
    llama = {"num_attention_heads": 32, "num_key_value_heads": 8}
    assert [vb.default_tensor_parallel_size(g, llama) for g in (1, 2, 4, 6, 8)] == [1, 2, 4, 4, 8]
    assert vb.visible_gpus(8, {"SLURM_GPUS_ON_NODE": "2"}) == 2
    assert vb.visible_gpus(4, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}) == 4
    assert vb.visible_gpus(2, {}) == 2


def test_engine_kwargs():
    kw = vb.engine_kwargs("m", tensor_parallel_size=2, max_model_len=None, gpu_memory_utilization=0.8,
                          dtype="bfloat16", enable_prefix_caching=True, seed=3)
    assert kw == {"model": "m", "tokenizer": "m", "tensor_parallel_size": 2, "dtype": "bfloat16",
                  "gpu_memory_utilization": 0.8, "enable_prefix_caching": True, "seed": 3, "max_logprobs": 20}
    assert vb.engine_kwargs("m", tensor_parallel_size=1, max_model_len=4096, gpu_memory_utilization=0.9,
                            dtype="auto", enable_prefix_caching=False, seed=0)["max_model_len"] == 4096


# ------------------------------------------------------------------------- sampling and plan


def test_sampling_kwargs_seed_per_request_greedy_and_logprobs():
    kw = vb.sampling_kwargs(GenRequest.chat("q", sampling=SAMPLED, seed=7))
    assert kw == {"n": 1, "max_tokens": 12, "temperature": 0.9, "top_p": 0.95, "seed": 7, "logprobs": None,
                  "skip_special_tokens": True}
    assert vb.sampling_kwargs(GenRequest.chat("q", sampling=SAMPLED, seed=8))["seed"] == 8
    assert vb.sampling_kwargs(GenRequest.chat("q", sampling=SAMPLED, seed=2**64 + 5))["seed"] == (2**64 + 5) % 2**63
    greedy = vb.sampling_kwargs(GenRequest.chat("q", sampling=Sampling(max_new_tokens=5, top_p=0.5), seed=9))
    assert greedy["temperature"] == 0.0 and greedy["seed"] is None and greedy["top_p"] == 1.0
    assert greedy["max_tokens"] == 5
    judge = vb.sampling_kwargs(GenRequest.chat("q", sampling=GREEDY, score_after="Verdict:"))
    assert judge["logprobs"] == 20
    assert vb.sampling_kwargs(GenRequest.chat("q", sampling=GREEDY, score_after="Verdict:", choices=()))[
        "logprobs"] is None


def test_plan_one_engine_request_per_draw_grouped_by_prompt_and_sorted_by_seed():
    a = [GenRequest.chat("A", sampling=SAMPLED, seed=s) for s in (5, 3, 3, 4)]   # one duplicate
    b = [GenRequest.chat("B", sampling=GREEDY, seed=s) for s in (1, 2)]          # greedy: seed irrelevant
    reqs = [a[0], b[0], a[1], a[2], b[1], a[3]]
    ids = [[1, 2] if r.messages[0][1] == "A" else [1, 3] for r in reqs]
    plan = vb.plan_requests(reqs, ids)
    assert plan.prompts == [[1, 2], [1, 2], [1, 2], [1, 3]]
    assert [p["seed"] for p in plan.params] == [3, 4, 5, None]
    assert plan.source == [2, 3, 0, 0, 3, 1]
    assert plan.deduplicated == 2 and plan.shared_prefix_requests == 2
    assert all(p["n"] == 1 for p in plan.params)


def test_plan_of_a_request_does_not_depend_on_the_batch():
    target = GenRequest.chat("A", sampling=SAMPLED, seed=11)
    others = [GenRequest.chat("A", sampling=SAMPLED, seed=s) for s in (12, 10, 9)] + [
        GenRequest.chat("C", sampling=GREEDY)]
    alone = vb.plan_requests([target], [[1, 2]])
    mixed = vb.plan_requests(others[:2] + [target] + others[2:], [[1, 2]] * 4 + [[7]])
    j = mixed.source[2]
    assert (mixed.prompts[j], mixed.params[j]) == (alone.prompts[0], alone.params[0])
    again = vb.plan_requests(others[:2] + [target] + others[2:], [[1, 2]] * 4 + [[7]])
    assert (again.prompts, again.params, again.source) == (mixed.prompts, mixed.params, mixed.source)


# ------------------------------------------------------------------------------ logprobs


YES, NO, SP_YES, SP_NO, COLON, VERDICT, SPACE, NL = 100, 101, 102, 103, 104, 105, 106, 107


def _judge_output(p_yes: float):
    """Generated "\\nVerdict: YES" as tokens ["\\n", "Verdict", ":", " YES"] with vLLM logprobs."""
    toks = [NL, VERDICT, COLON, SP_YES]
    logprobs = [position(NL, [(NL, "\n", 0.9)]), position(VERDICT, [(VERDICT, "Verdict", 0.8)]),
                position(COLON, [(COLON, ":", 0.99)]),
                position(SP_YES, [(SP_YES, " YES", p_yes * 0.8), (SP_NO, " NO", (1 - p_yes) * 0.8),
                                  (SPACE, " ", 0.1)])]
    return toks, logprobs


def test_logprob_content_has_the_openai_shape():
    toks, lps = _judge_output(0.75)
    content = vb.logprob_content(toks, lps)
    assert [c["token"] for c in content] == ["\n", "Verdict", ":", " YES"]
    last = content[-1]
    assert [t["token"] for t in last["top_logprobs"]] == [" YES", " NO", " "]
    assert last["logprob"] == pytest.approx(math.log(0.6))


def test_p_yes_after_the_keyword_in_the_generated_text():
    toks, lps = _judge_output(0.75)
    g, status = vb.to_generation(GenRequest.chat("q", score_after="Verdict:", sampling=GREEDY), 10,
                                 "\nVerdict: YES", toks, "stop", lps)
    assert status == "read" and g.p_yes == pytest.approx(0.75) and g.choice_probs["NO"] == pytest.approx(0.25)
    assert g.completion_tokens == 4 and g.prompt_tokens == 10 and g.finish_reason == "stop"


def test_p_yes_where_the_prefix_ends_with_the_keyword():
    toks = [SP_NO, NL]
    lps = [position(SP_NO, [(SP_NO, " NO", 0.6), (YES, "YES", 0.2), (SPACE, " ", 0.1)]), position(NL, [(NL, "\n", 1)])]
    req = GenRequest.chat("q", prefix="Looks fine.\n**Verdict:**", score_after="Verdict:", sampling=GREEDY)
    g, status = vb.to_generation(req, 10, " NO\n", toks, "length", lps)
    assert status == "read" and g.p_yes == pytest.approx(0.25) and g.finish_reason == "length"
    # a blank first token is skipped: the answer is the next one
    lps2 = [position(SPACE, [(SPACE, " ", 0.5), (SP_YES, " YES", 0.4)]),
            position(YES, [(YES, "YES", 0.7), (NO, "NO", 0.3)])]
    g2, _ = vb.to_generation(GenRequest.chat("q", prefix="Verdict:", score_after="Verdict:", sampling=GREEDY),
                             3, " YES", [SPACE, YES], "stop", lps2)
    assert g2.p_yes == pytest.approx(0.7)


def test_no_reading_without_the_keyword_or_when_it_ends_inside_a_token():
    toks, lps = _judge_output(0.75)
    g, status = vb.to_generation(GenRequest.chat("q", score_after="Score:", sampling=GREEDY), 5, "x", toks, "stop", lps)
    assert g.p_yes is None and g.choice_probs is None and status == "no_answer_token"
    # already answered in the prefix (not at its end): nothing to read in this generation
    g, _ = vb.to_generation(GenRequest.chat("q", prefix="Verdict: YES\nBecause", score_after="Verdict:",
                                            sampling=GREEDY), 5, "x", toks, "stop", lps)
    assert g.p_yes is None
    # ":" and the answer in one token: no clean next-token reading (as the hf backend)
    assert vb.answer_token_index("", ["Verdict", ": YES", "\n"], "Verdict:") is None
    assert vb.answer_token_index("", ["Verdict", ":", "**", " YES"], "Verdict:") == 3
    assert vb.answer_token_index("", ["I think", " Verdict:", " YES"], "Verdict:") is None  # not at a line start
    assert vb.answer_token_index("", ["Verdict:", " ", " "], "Verdict:") is None
    # not asked: no reading at all, no status
    g, status = vb.to_generation(GenRequest.chat("q", sampling=GREEDY), 5, "x", toks, "stop", lps)
    assert g.p_yes is None and status is None
    # asked, but the engine gave no logprobs
    g, status = vb.to_generation(GenRequest.chat("q", score_after="Verdict:", sampling=GREEDY), 5, "x", toks, "stop")
    assert g.p_yes is None and status == "none"


def test_choice_probs_for_other_choices_and_none_among_the_top_tokens():
    A, B, T, Z = 1, 2, 3, 4
    lps = [position(A, [(A, " A", 0.5), (B, " B", 0.3), (T, " TIE", 0.2)])]
    req = GenRequest.chat("q", prefix="Verdict:", score_after="Verdict:", choices=("A", "B", "TIE"), sampling=GREEDY)
    g, _ = vb.to_generation(req, 3, " A", [A], "stop", lps)
    assert g.choice_probs == pytest.approx({"A": 0.5, "B": 0.3, "TIE": 0.2}) and g.p_yes is None
    lps = [position(Z, [(Z, " maybe", 0.9)])]
    g, status = vb.to_generation(GenRequest.chat("q", prefix="Verdict:", score_after="Verdict:", sampling=GREEDY),
                                 3, " maybe", [Z], "stop", lps)
    assert g.p_yes is None and status == "no_choice"


def test_finish_reason_when_the_engine_gives_none():
    req = GenRequest.chat("q", sampling=Sampling(max_new_tokens=2))
    assert vb.to_generation(req, 1, "ab", [1, 2], None)[0].finish_reason == "length"
    assert vb.to_generation(req, 1, "a", [1], None)[0].finish_reason == "stop"


# ------------------------------------------------------------------------- injected engines


class CharTokenizer:
    """A tokenizer of one token per character (ord), with a minimal chat template."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class ScriptedEngine:
    """Answers each prompt with "<seed>:<last prompt character>", as RequestOutput-shaped objects."""

    def __init__(self):
        self.batches = []

    def get_tokenizer(self):
        return CharTokenizer()

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.batches.append(list(zip(prompts, sampling_params)))
        outs = []
        for p, sp in zip(prompts, sampling_params):
            assert sp.n == 1 and use_tqdm is False
            text = f"{sp.seed}:{chr(p['prompt_token_ids'][-1])}"
            toks = [ord(c) for c in text]
            outs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], num_cached_tokens=0, outputs=[
                SimpleNamespace(index=0, text=text, token_ids=toks, finish_reason="stop", logprobs=None)]))
        return outs


def test_generate_keeps_request_order_and_sends_each_draw_once():
    engine = ScriptedEngine()
    m = vb.VLLMModel("policy", "unused", engine=engine)
    reqs = [GenRequest.chat("x", prefix="a", sampling=SAMPLED, seed=2),
            GenRequest.chat("y", prefix="b", sampling=SAMPLED, seed=1),
            GenRequest.chat("x", prefix="a", sampling=SAMPLED, seed=2),
            GenRequest.chat("x", prefix="a", sampling=SAMPLED, seed=1),
            GenRequest.chat("z", sampling=GREEDY, seed=5)]
    gens = m.generate(reqs)
    assert [g.text for g in gens] == ["2:a", "1:b", "2:a", "1:a", "None:>"]
    (batch,) = engine.batches
    assert len(batch) == 4  # the duplicate is sent once
    assert engine.get_tokenizer().decode(batch[0][0]["prompt_token_ids"]) == "<user>x<assistant>a"
    s = m.stats()
    assert s["backend"] == "vllm" and s["model"] == "policy" and s["calls"] == 5 and s["engine_requests"] == 4
    assert s["deduplicated"] == 1 and s["shared_prefix_requests"] == 1
    assert s["completion_tokens"] == sum(g.completion_tokens for g in gens)
    assert s["prompt_tokens"] == sum(g.prompt_tokens for g in gens) and m.supports_prefix
    assert m.generate([]) == []


class HFEngine:
    """An engine with vLLM's interface (`generate(prompts, sampling_params, use_tqdm=)`,
    `get_tokenizer()`) over the real embedded model through transformers: each prompt's token ids
    generated alone with the hf backend's own per-row sampler, seeded with the request's seed, and
    the top-20 logprobs of every step; the answers shaped like vLLM's RequestOutput /
    CompletionOutput. Not vLLM: a stand-in that makes VLLMModel's own code run end to end."""

    def __init__(self, hf):
        self.hf = hf
        self.requests = 0

    def get_tokenizer(self):
        return self.hf.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, sampling_params)]

    def _one(self, ids, sp):
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from judgeflow.models.hf import PerRowSampler

        hf, tok = self.hf, self.hf.tokenizer
        self.requests += 1
        steps = []

        def record(input_ids, scores):
            steps.append(torch.log_softmax(scores.float(), dim=-1)[0])
            return scores

        sampler = PerRowSampler([sp.seed or 0], sp.temperature, sp.top_p)
        cfg = GenerationConfig(max_new_tokens=sp.max_tokens, do_sample=False, eos_token_id=hf.eos_ids,
                               pad_token_id=tok.pad_token_id)
        x = torch.tensor([ids])
        with torch.inference_mode():
            seq = hf.model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=cfg,
                                    logits_processor=LogitsProcessorList([record, sampler]))[0, len(ids):].tolist()
        toks, finish = seq, "length"
        for j, t in enumerate(seq):
            if t in hf.eos_ids:
                toks, finish = seq[: j + 1], "stop"
                break
        logprobs = None
        if sp.logprobs:
            logprobs = []
            for t, step in zip(toks, steps):
                top = torch.topk(step, sp.logprobs)
                pos = {int(i): lp(float(v), r + 1, tok.decode([int(i)]))
                       for r, (v, i) in enumerate(zip(top.values, top.indices))}
                if t not in pos:
                    pos[t] = lp(float(step[t]), int((step > step[t]).sum()) + 1, tok.decode([t]))
                logprobs.append(pos)
        out = SimpleNamespace(index=0, text=tok.decode(toks, skip_special_tokens=True), token_ids=toks,
                              cumulative_logprob=None, logprobs=logprobs, finish_reason=finish)
        return SimpleNamespace(request_id=str(self.requests), prompt=None, prompt_token_ids=list(ids),
                               outputs=[out], finished=True, num_cached_tokens=None)


@pytest.mark.slow  # the real model
def test_generate_through_an_engine_over_the_real_model_matches_the_hf_backend(hf_model):
    qs = ["Name a fruit that starts with the letter B.", "Say something about cats."]
    reqs = [GenRequest.chat(q, sampling=SAMPLED, seed=s) for q in qs for s in (3, 4)]
    reqs += [GenRequest.chat("Count from one to ten.", sampling=Sampling(max_new_tokens=6)),
             GenRequest.chat("Write a haiku about rain.", prefix="Rain", sampling=SAMPLED, seed=9)]
    judge_q = "Is the sky blue on a clear day? Answer 'Verdict: YES' or 'Verdict: NO'."
    judge = GenRequest.chat(judge_q, prefix="The sky is blue.\nVerdict:", score_after="Verdict:",
                            sampling=Sampling(max_new_tokens=3))
    reqs.append(judge)
    engine = HFEngine(hf_model)
    m = vb.VLLMModel("smollm2", str(hf_model.path), engine=engine)
    got = m.generate(reqs)
    want = hf_model.generate(reqs)
    assert [g.text for g in got] == [g.text for g in want]
    assert [g.completion_tokens for g in got] == [g.completion_tokens for g in want]
    assert [g.prompt_tokens for g in got] == [g.prompt_tokens for g in want]
    assert [g.finish_reason for g in got] == [g.finish_reason for g in want]
    assert len({g.text for g in got[:2]}) == 2  # the seeds select different draws
    # request order: the same answers for the requests reversed
    assert [g.text for g in m.generate(reqs[::-1])] == [g.text for g in got][::-1]
    # the judge: P(YES) from the top logprobs at the answer token, close to the hf backend's reading
    j = got[-1]
    assert j.p_yes is not None and 0.0 <= j.p_yes <= 1.0
    assert abs(j.p_yes - want[-1].p_yes) < 0.05, (j.p_yes, want[-1].p_yes)
    assert set(j.choice_probs) == {"YES", "NO"}
    assert m.stats()["logprobs"] == {"read": 2}
