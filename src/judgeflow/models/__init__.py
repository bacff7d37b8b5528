"""Model backends behind one interface (`generate` returning `Generation`s), chosen per model in the config.

    models:
      smollm2: {backend: hf, path: resources/models/SmolLM2-135M-Instruct}
      gpt41:   {backend: openai, base_url: https://api.openai.com/v1, model: gpt-4.1,
                api_key_env: OPENAI_API_KEY}
      llama70: {backend: vllm, path: resources/models/Llama-3.3-70B-Instruct}   # GPU jobs only
      rm:      {backend: reward_model, path: resources/models/Skywork-Reward-V2}  # scores only (judges)
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeflow.errors import ConfigError
from judgeflow.models.base import Generation, GenRequest, Model, Sampling
from judgeflow.models.cache import namespace

if TYPE_CHECKING:  # imported where used: the backends import torch, transformers, openai
    from judgeflow.models.reward_model import RewardModel
    from judgeflow.workflow.settings import HFModelSpec, ModelSpec, OpenAIModelSpec, RewardModelSpec, VLLMModelSpec

__all__ = [
    "BACKENDS",
    "GenRequest",
    "Generation",
    "Model",
    "Sampling",
    "log_stats",
    "open_models",
]


@dataclass(frozen=True)
class Opening:
    """What a backend's opener gets besides the model's name and spec: where servers log, the job's CPU
    threads, the API cache folder, and the ExitStack that closes what it opened."""

    stack: contextlib.ExitStack
    cache_dir: str
    log_dir: str | None
    threads: int | None


def _open_hf(name: str, spec: HFModelSpec, o: Opening) -> Model:
    from judgeflow.models.hf import HFModel

    return HFModel(name, spec.path, device=spec.device, dtype=spec.dtype, batch_size=spec.batch_size,
                   threads=o.threads)


def _open_vllm(name: str, spec: VLLMModelSpec, o: Opening) -> Model:
    from judgeflow.models.vllm_backend import VLLMModel

    return VLLMModel(name, spec.path, tensor_parallel_size=spec.tensor_parallel_size,
                     max_model_len=spec.max_model_len, dtype=spec.dtype,
                     gpu_memory_utilization=spec.gpu_memory_utilization,
                     enable_prefix_caching=spec.enable_prefix_caching)


def _open_reward_model(name: str, spec: RewardModelSpec, o: Opening) -> RewardModel:
    from judgeflow.models.reward_model import RewardModel

    m = RewardModel(name, spec.path, device=spec.device, dtype=spec.dtype, batch_size=spec.batch_size,
                    threads=o.threads, key=f"models.{name}.path")
    o.stack.callback(m.close)
    return m


def _open_openai(name: str, spec: OpenAIModelSpec, o: Opening) -> Model:
    from judgeflow.models.openai_api import OpenAIModel

    base_url, cache_ns = spec.base_url, None
    serve = spec.serve
    if serve:
        from judgeflow.models.serve import transformers_server

        log_path = Path(o.log_dir or "logs", f"serve-{name}.log")
        base_url = o.stack.enter_context(transformers_server(
            name, serve.path, log_path, port=serve.port, device=serve.device,
            startup_timeout=serve.startup_timeout, threads=o.threads))
        cache_ns = namespace("local-serve", spec.model)  # the port changes, the model does not
    if base_url is None:
        raise ConfigError(f"models.{name}.base_url: required for the openai backend (or a serve: block)")
    m = OpenAIModel(name, base_url, spec.model, o.cache_dir, api_key_env=spec.api_key_env,
                    max_concurrency=spec.max_concurrency, timeout=spec.timeout,
                    max_retries=spec.max_retries, send_seed=spec.send_seed,
                    cache_namespace=cache_ns, logprobs=spec.logprobs)
    o.stack.callback(m.close)
    return m


# the one backend registry: `models.<name>.backend` -> its opener (judgeflow.workflow.settings validates the
# backend's own settings; a new backend is one opener here and one spec class there)
BACKENDS: dict[str, Callable[[str, Any, Opening], Model | RewardModel]] = {
    "hf": _open_hf, "openai": _open_openai, "vllm": _open_vllm, "reward_model": _open_reward_model}


def log_stats(models: dict) -> dict:
    """{model name: its stats()}, each logged (calls, cache hits, retries, tokens)."""
    import logging

    stats = {name: m.stats() for name, m in models.items()}
    for s in stats.values():
        logging.getLogger(__name__).info("model stats: %s", s)
    return stats


@contextlib.contextmanager
def open_models(specs: Mapping[str, ModelSpec], cache_dir: str, log_dir: str | None = None,
                threads: int | None = None) -> Iterator[dict[str, Model | RewardModel]]:
    """Open each model of `specs` ({model name: its typed `models.<name>` entry}) with its backend's
    opener (BACKENDS). Yields {model name: Model} (a reward_model backend: a RewardModel, which scores
    instead of generating); local servers (`serve:`) are started first, and all is closed on exit. A
    stage gets its models from its declaration (judgeflow.workflow.pipeline: `job.models()`)."""
    with contextlib.ExitStack() as stack:
        opening = Opening(stack, cache_dir, log_dir, threads)
        opened: dict[str, Model | RewardModel] = {}
        for name, spec in specs.items():
            opener = BACKENDS.get(spec.backend)
            if opener is None:
                raise ConfigError(f"models.{name}.backend: unknown backend '{spec.backend}' "
                                  f"(expected one of {', '.join(BACKENDS)})")
            opened[name] = opener(name, spec, opening)
        yield opened
