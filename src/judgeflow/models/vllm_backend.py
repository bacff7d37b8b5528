"""In-process vLLM backend (GPU): the HFModel interface, with vLLM's continuous batching and prefix caching.

    models:
      policy: {backend: vllm, path: results/demo/dpo/multi_feedback/model}   # any transformers directory

`VLLMModel(name, path, ...)` loads the directory with `vllm.LLM` (a transformers `save_pretrained`
directory with its tokenizer: the converted GGUF of the embedded default, a DPO-trained `model/`)
and answers `generate(requests)` in request order, like `HFModel`.

Prompts: the tokenizer's chat template with the generation prompt, then `GenRequest.prefix`
(`supports_prefix`: a partial assistant turn is continued), tokenized here without special tokens
and sent as token ids (`{"prompt_token_ids": ...}`), so the engine sees exactly what the hf backend
feeds its model.

Draws and seeds. Every request is sent as its own engine request, `SamplingParams(n=1,
seed=<the request's seed>)`; temperature 0 is greedy (no seed: the draw does not depend on one).
vLLM samples a seeded request from its own random stream (vllm 0.32.0, the pin of envs/vllm.yaml:
a `torch.Generator` seeded with the request's seed in `vllm/v1/worker/gpu_model_runner.py`, or in
the v2 model runner Gumbel noise hashed from the seed, the token's position and the token id,
`vllm/v1/worker/gpu/sample/gumbel.py`; 0.34 the same), so a draw is a function of (prompt,
sampling, seed) and not of the other requests in the batch, up to floating-point differences of
batched kernels (bitwise only with `VLLM_BATCH_INVARIANT=1`). The same draw as the hf backend's
is not promised: the random streams differ.
Requests that differ only in their seed (n samples of one prompt) are NOT merged into one
`SamplingParams(n=k, seed=s)`: vLLM expands that into k child requests with seeds s, s+1, ...,
s+k-1 (`vllm/v1/engine/parallel_sampling.py`), i.e. exactly k separate seeded requests, so merging
would save nothing and would tie a draw to its position among its siblings. They are sent next
to each other instead (grouped by prompt, sorted by seed), and prefix caching computes the
prompt's KV once for all of them (`stats()["shared_prefix_requests"]`,
`["cached_prompt_tokens"]` as vLLM reports it). Identical requests (same prompt, sampling and
seed; or same prompt and greedy sampling) are sent once (`stats()["deduplicated"]`).

Verdicts from log-probabilities: a request with `score_after` ("Verdict:") asks for the top 20
logprobs of every generated token (`SamplingParams(logprobs=20)`, vLLM's default `max_logprobs`;
raw logprobs: before temperature and top-p). The answer token is the first non-blank token after
the first line-start keyword of prefix + generated text (where the prefix already ends with the
keyword, the first generated one); where the keyword is absent, only in the prefix before its
end, or ends inside a token, there is no reading (None). At the answer token the probabilities of
the request's choices are read as the openai backend reads them (`openai_api.choice_probs`: a top
token counts for the one choice it is a prefix of), normalised: `Generation.choice_probs`, and
`p_yes` for choices ("YES", "NO").

Everything but the engine calls is plain functions on plain data (tested without vLLM and
without a GPU): `sampling_kwargs`, `plan_requests`, `logprob_content`, `answer_token_index`,
`read_choice_probs`, `to_generation`, `default_tensor_parallel_size`, `engine_kwargs`.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from judgeflow.errors import ConfigError
from judgeflow.models.base import Generation, GenRequest
from judgeflow.models.openai_api import choice_probs

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20       # vLLM's default max_logprobs (the OpenAI limit)
SEED_MODULUS = 2**63    # vLLM keeps seeds as int64; the hf backend reduces seeds the same way
_BLANK = " *_`"         # what may stand between the keyword and the answer (as choice_probs skips)


# ------------------------------------------------------------------------------ configuration


def visible_gpus(cuda_count: int, environ=None) -> int:
    """GPUs this job may use: torch's count (which honours CUDA_VISIBLE_DEVICES), capped by what
    SLURM gave the job (SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES, SLURM_GPUS; judgeflow.workflow.launch)."""
    from judgeflow.workflow.launch import gpus_from_environment

    granted = gpus_from_environment(environ)
    return min(cuda_count, granted) if granted and cuda_count else cuda_count


def default_tensor_parallel_size(gpus: int, model_config: dict) -> int:
    """The most visible GPUs the model's attention heads split over: vLLM needs the heads to
    divide by the tensor-parallel size (and the KV heads to divide it, or by it). SmolLM2-135M has
    9 heads and 3 KV heads: 1 on 1-2 GPUs, 3 on 3-8."""
    heads = int(model_config.get("num_attention_heads") or 1)
    kv = int(model_config.get("num_key_value_heads") or heads)
    for tp in range(max(1, gpus), 0, -1):
        if heads % tp == 0 and (kv % tp == 0 or tp % kv == 0):
            return tp
    return 1


def engine_kwargs(path: str, *, tensor_parallel_size: int, max_model_len: int | None,
                  gpu_memory_utilization: float, dtype: str, enable_prefix_caching: bool, seed: int) -> dict:
    """Keyword arguments of `vllm.LLM` (checked against the EngineArgs of vllm 0.32.0 and 0.34.0)."""
    kw = {"model": str(path), "tokenizer": str(path), "tensor_parallel_size": int(tensor_parallel_size),
          "dtype": dtype, "gpu_memory_utilization": float(gpu_memory_utilization),
          "enable_prefix_caching": bool(enable_prefix_caching), "seed": int(seed),
          "max_logprobs": TOP_LOGPROBS}
    if max_model_len:
        kw["max_model_len"] = int(max_model_len)
    return kw


# ------------------------------------------------------------------------------- the requests


def wants_logprobs(req: GenRequest) -> bool:
    return bool(req.score_after) and bool(req.choices)


def sampling_kwargs(req: GenRequest) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for one request: its own seed, one sample
    (n=1), greedy at temperature 0 (seed None, top_p 1), logprobs only for a verdict request."""
    s = req.sampling
    greedy = s.temperature <= 0
    return {"n": 1, "max_tokens": int(s.max_new_tokens),
            "temperature": 0.0 if greedy else float(s.temperature),
            "top_p": 1.0 if greedy else float(s.top_p),
            "seed": None if greedy else int(req.seed) % SEED_MODULUS,
            "logprobs": TOP_LOGPROBS if wants_logprobs(req) else None,
            "skip_special_tokens": True}


def _freeze(kw: dict) -> tuple:
    return tuple(sorted(kw.items()))


@dataclass
class EnginePlan:
    """What goes to the engine for one `generate` call: `prompts[j]` with `params[j]`
    (`sampling_kwargs`); request i is answered by engine request `source[i]`."""

    prompts: list[list[int]] = field(default_factory=list)
    params: list[dict] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    deduplicated: int = 0             # requests answered by an identical engine request
    shared_prefix_requests: int = 0   # engine requests whose prompt an earlier one of the call has


def plan_requests(requests: Sequence[GenRequest], prompt_ids: Sequence[Sequence[int]]) -> EnginePlan:
    """One engine request per distinct (prompt tokens, sampling kwargs) -- the seed is part of the
    kwargs, except for greedy requests -- grouped by prompt (in the order prompts first appear)
    and sorted by seed within a prompt, so the samples of one prompt run side by side and share
    its cached KV. A request's engine request is the same whatever else is in the batch."""
    keys = [(tuple(ids), _freeze(sampling_kwargs(r))) for r, ids in zip(requests, prompt_ids)]
    first_seen: dict[tuple, int] = {}
    for k in keys:
        first_seen.setdefault(k[0], len(first_seen))
    distinct = sorted(set(keys), key=lambda k: (first_seen[k[0]], dict(k[1])["seed"] or 0,
                                                json.dumps(dict(k[1]), sort_keys=True)))
    index = {k: j for j, k in enumerate(distinct)}
    plan = EnginePlan(prompts=[list(k[0]) for k in distinct], params=[dict(k[1]) for k in distinct],
                      source=[index[k] for k in keys])
    plan.deduplicated = len(requests) - len(distinct)
    plan.shared_prefix_requests = len(distinct) - len(first_seen)
    return plan


# --------------------------------------------------------------------------------- the outputs


def _field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def logprob_content(token_ids: Sequence[int], logprobs, decode: Callable[[list[int]], str] | None = None
                    ) -> list[dict]:
    """vLLM's per-token logprobs (a list -- or FlatLogprobs -- of {token_id: Logprob(logprob, rank,
    decoded_token)}, one per generated token) in the OpenAI shape `choice_probs` reads:
    [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}], the top tokens by rank
    (the sampled token included: vLLM always returns it). A missing decoded_token is decoded with
    `decode` where given."""
    def text(tid, lp) -> str:
        t = _field(lp, "decoded_token")
        if t is None and decode is not None:
            t = decode([int(tid)])
        return t or ""

    content = []
    for tid, pos in zip(token_ids, logprobs):
        pos = pos or {}
        items = sorted(pos.items(), key=lambda kv: (_field(kv[1], "rank") or 10**9, -(_field(kv[1], "logprob") or 0)))
        chosen = pos.get(tid)
        content.append({
            "token": text(tid, chosen) if chosen is not None else (decode([int(tid)]) if decode else ""),
            "logprob": _field(chosen, "logprob") if chosen is not None else None,
            "top_logprobs": [{"token": text(t, lp), "logprob": _field(lp, "logprob")} for t, lp in items],
        })
    return content


def _keyword_patterns(score_after: str):
    """The hf backend's patterns: a line-start keyword, markdown and any case allowed."""
    word = re.escape(score_after.rstrip().rstrip(":"))
    at_end = re.compile(rf"(?im)^[\s*_`>#-]*{word}[\s*_`]*:[*_` ]*\Z")
    anywhere = re.compile(rf"(?im)^[\s*_`>#-]*{word}[\s*_`]*:")
    return at_end, anywhere


def answer_token_index(prefix: str, token_texts: Sequence[str], score_after: str) -> int | None:
    """Index of the generated token that answers the first line-start `score_after` of prefix +
    generated text: the first non-blank token after it. None where there is none: the keyword is
    absent, stands in the prefix but not at its end (answered before this generation), ends
    inside a token, or nothing but blanks follows it."""
    if not score_after:
        return None
    at_end, anywhere = _keyword_patterns(score_after)
    starts, pos = [], len(prefix)
    for t in token_texts:
        starts.append(pos)
        pos += len(t)
    if at_end.search(prefix):
        after = len(prefix)
    elif anywhere.search(prefix):
        return None
    else:
        full = prefix + "".join(token_texts)
        m = anywhere.search(full)
        if not m:
            return None
        after = m.end()
    for i, (s, t) in enumerate(zip(starts, token_texts)):
        if s < after:
            if s + len(t) > after and t[after - s:].strip(_BLANK):
                return None  # the keyword ends inside a token that carries the answer
            continue
        if t.strip(_BLANK):
            return i
    return None


def read_choice_probs(prefix: str, content: list[dict], score_after: str,
                      choices: Sequence[str]) -> tuple[dict[str, float] | None, str]:
    """(the choices' probabilities at the answer token, how it went: "read", "no_choice" -- none
    of the choices among its top tokens --, "no_answer_token")."""
    at = answer_token_index(prefix, [c["token"] for c in content], score_after)
    if at is None:
        return None, "no_answer_token"
    probs = choice_probs(content[at:at + 1], "", tuple(choices))
    return probs, "read" if probs else "no_choice"


def to_generation(req: GenRequest, prompt_tokens: int, text: str, token_ids: Sequence[int],
                  finish_reason: str | None, logprobs=None,
                  decode: Callable[[list[int]], str] | None = None) -> tuple[Generation, str | None]:
    """(the Generation of one request from its engine output, the logprob reading's status or
    None where the request asked for none)."""
    toks = list(token_ids or [])
    finish = finish_reason or ("length" if len(toks) >= req.sampling.max_new_tokens else "stop")
    probs, status = None, None
    if wants_logprobs(req):
        if logprobs:
            probs, status = read_choice_probs(req.prefix, logprob_content(toks, logprobs, decode),
                                              req.score_after, req.choices)
        else:
            status = "none"
    p_yes = probs.get("YES") if probs and tuple(req.choices) == ("YES", "NO") else None
    return Generation(text=text or "", prompt_tokens=int(prompt_tokens), completion_tokens=len(toks),
                      finish_reason=str(finish), p_yes=p_yes, choice_probs=probs), status


# ---------------------------------------------------------------------------------- the model


def _import_vllm(name: str):
    try:
        import vllm
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "vllm":
            raise ConfigError(f"models.{name}.backend: vllm is not installed "
                              "(pip install -e .[vllm], or conda env envs/vllm.yaml)") from None
        raise ConfigError(f"models.{name}.backend: vllm cannot be imported ({e}); "
                          "pip install -e .[vllm], or conda env envs/vllm.yaml") from None
    except ImportError as e:
        raise ConfigError(f"models.{name}.backend: vllm cannot be imported ({e}); "
                          "pip install -e .[vllm], or conda env envs/vllm.yaml") from None
    return vllm


def _sampling_params_factory(vllm_module=None):
    """vllm.SamplingParams, or (an injected engine without vLLM installed) a namespace of the kwargs."""
    if vllm_module is None:
        try:
            import vllm
        except ImportError:
            return lambda **kw: SimpleNamespace(**kw)
        vllm_module = vllm
    return vllm_module.SamplingParams


class VLLMModel:
    supports_prefix = True  # prompts are token ids: a partial assistant turn is continued

    def __init__(self, name: str, path: str, *, tensor_parallel_size: int | None = None,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, dtype: str = "auto",
                 enable_prefix_caching: bool = True, seed: int = 0, engine=None):
        """`engine`: an object with vLLM's `LLM.generate(prompts, sampling_params, use_tqdm=)` and
        `get_tokenizer()` (tests inject one); None = load `path` with `vllm.LLM` on the GPUs."""
        self.name, self.path = name, str(path)
        self.tensor_parallel_size: int | None  # None: an injected engine, left unsaid
        t0 = time.time()
        if engine is None:
            if not Path(path, "config.json").exists():
                raise ConfigError(
                    f"models.{name}.path: no model at '{path}' (expected a transformers directory with "
                    "config.json; run the prepare_model rule or fix the path)")
            vllm = _import_vllm(name)
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"models.{name}.backend: vllm needs a GPU and this job has none "
                                  "(run it on a GPU partition, e.g. the SLURM profile's gpu resource, "
                                  "or use backend: hf)")
            gpus = visible_gpus(torch.cuda.device_count())
            with open(Path(path, "config.json")) as fh:
                model_config = json.load(fh)
            tp = tensor_parallel_size or default_tensor_parallel_size(gpus, model_config)
            if tp > gpus:
                raise ConfigError(f"models.{name}.tensor_parallel_size: {tp} GPUs asked for, "
                                  f"this job sees {gpus}")
            self.tensor_parallel_size = tp
            engine = vllm.LLM(**engine_kwargs(
                path, tensor_parallel_size=tp, max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                enable_prefix_caching=enable_prefix_caching, seed=seed))
            self._params = _sampling_params_factory(vllm)
            log.info("loaded %s from %s with vLLM %s (tensor_parallel_size=%d) in %.1fs", name, path,
                     getattr(vllm, "__version__", "?"), tp, time.time() - t0)
        else:
            self.tensor_parallel_size = tensor_parallel_size
            self._params = _sampling_params_factory()
        self.engine = engine
        self.tokenizer = engine.get_tokenizer()
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.engine_requests = 0
        self.engine_completion_tokens = 0
        self.deduplicated = 0
        self.shared_prefix_requests = 0
        self.cached_prompt_tokens: int | None = None
        self.logprob_stats: Counter = Counter()
        self.generate_seconds = 0.0

    def prompt_text(self, req: GenRequest) -> str:
        text = self.tokenizer.apply_chat_template(req.message_dicts(), tokenize=False, add_generation_prompt=True)
        return text + req.prefix

    def prompt_ids(self, req: GenRequest) -> list[int]:
        return list(self.tokenizer.encode(self.prompt_text(req), add_special_tokens=False))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]:
        if not requests:
            return []
        t0 = time.time()
        ids_of: dict[tuple, list[int]] = {}  # each distinct prompt tokenized once
        for r in requests:
            if (r.messages, r.prefix) not in ids_of:
                ids_of[(r.messages, r.prefix)] = self.prompt_ids(r)
        prompt_ids = [ids_of[(r.messages, r.prefix)] for r in requests]
        plan = plan_requests(requests, prompt_ids)
        outputs = self.engine.generate([{"prompt_token_ids": p} for p in plan.prompts],
                                       [self._params(**kw) for kw in plan.params], use_tqdm=False)
        if len(outputs) != len(plan.prompts):
            raise RuntimeError(f"models.{self.name}: vLLM returned {len(outputs)} outputs "
                               f"for {len(plan.prompts)} prompts")
        for o in outputs:
            self.engine_completion_tokens += sum(len(c.token_ids or []) for c in o.outputs)
            cached = getattr(o, "num_cached_tokens", None)
            if cached is not None:
                self.cached_prompt_tokens = (self.cached_prompt_tokens or 0) + int(cached)
        out = []
        for req, ids, j in zip(requests, prompt_ids, plan.source):
            c = outputs[j].outputs[0]
            g, status = to_generation(req, len(ids), c.text, c.token_ids, c.finish_reason,
                                      getattr(c, "logprobs", None), self._decode)
            if status:
                self.logprob_stats[status] += 1
            self.prompt_tokens += g.prompt_tokens
            self.completion_tokens += g.completion_tokens
            out.append(g)
        self.calls += len(requests)
        self.engine_requests += len(plan.prompts)
        self.deduplicated += plan.deduplicated
        self.shared_prefix_requests += plan.shared_prefix_requests
        dt = time.time() - t0
        self.generate_seconds += dt
        log.info("%s: %s: %d requests (%d to the engine, %d sharing a prompt) in %.1fs", self.name, desc,
                 len(requests), len(plan.prompts), plan.shared_prefix_requests, dt)
        return out

    def stats(self) -> dict:
        return {"backend": "vllm", "model": self.name, "calls": self.calls,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "engine_requests": self.engine_requests, "engine_completion_tokens": self.engine_completion_tokens,
                "deduplicated": self.deduplicated, "shared_prefix_requests": self.shared_prefix_requests,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "logprobs": dict(sorted(self.logprob_stats.items())),
                "tensor_parallel_size": self.tensor_parallel_size,
                "generate_seconds": round(self.generate_seconds, 3)}
