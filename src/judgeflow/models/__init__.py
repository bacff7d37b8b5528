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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.models.base import Generation, GenRequest, Model, Sampling
from judgeflow.models.cache import namespace

if TYPE_CHECKING:  # imported where used: the backends import torch, transformers, openai
    from judgeflow.models.reward_model import RewardModel

BACKENDS = ("hf", "openai", "vllm", "reward_model")

__all__ = [
    "GenRequest",
    "Generation",
    "Model",
    "Sampling",
    "log_stats",
    "model_spec",
    "open_models",
]


def model_spec(config: dict, name: str, key: str) -> dict:
    """The `models.<name>` entry referenced from config key `key`, or a ConfigError naming it."""
    models = config["models"]
    if name not in models:
        raise ConfigError(f"{key}: unknown model '{name}' (defined models: {', '.join(sorted(models)) or 'none'})")
    return models[name]


def log_stats(models: dict) -> dict:
    """{model name: its stats()}, each logged (calls, cache hits, retries, tokens)."""
    import logging

    stats = {name: m.stats() for name, m in models.items()}
    for s in stats.values():
        logging.getLogger(__name__).info("model stats: %s", s)
    return stats


@contextlib.contextmanager
def open_models(config: dict, names: dict[str, str], log_dir: str | None = None,
                threads: int | None = None) -> Iterator[dict[str, Model | RewardModel]]:
    """Open each distinct model once. `names` maps a role's config key to a model name.

    Yields {model name: Model} (a reward_model backend: a RewardModel, which scores instead of
    generating). Local servers (`serve:`) are started first and stopped on exit.
    `config` holds validated settings (every field present; judgeflow.workflow.settings).
    """
    opened: dict[str, Model | RewardModel] = {}
    with contextlib.ExitStack() as stack:
        for key, name in names.items():
            if name in opened:
                continue
            spec = model_spec(config, name, key)
            if spec["backend"] == "hf":
                from judgeflow.models.hf import HFModel

                opened[name] = HFModel(name, spec["path"], device=spec["device"], dtype=spec["dtype"],
                                       batch_size=spec["batch_size"], threads=threads)
            elif spec["backend"] == "vllm":
                from judgeflow.models.vllm_backend import VLLMModel

                opened[name] = VLLMModel(name, spec["path"], tensor_parallel_size=spec["tensor_parallel_size"],
                                         max_model_len=spec["max_model_len"], dtype=spec["dtype"],
                                         gpu_memory_utilization=spec["gpu_memory_utilization"],
                                         enable_prefix_caching=spec["enable_prefix_caching"])
            elif spec["backend"] == "reward_model":
                from judgeflow.models.reward_model import RewardModel

                rm = RewardModel(name, spec["path"], device=spec["device"], dtype=spec["dtype"],
                                 batch_size=spec["batch_size"], threads=threads, key=f"models.{name}.path")
                stack.callback(rm.close)
                opened[name] = rm
            elif spec["backend"] == "openai":
                from judgeflow.models.openai_api import OpenAIModel

                base_url, cache_ns = spec["base_url"], None
                serve = spec["serve"]
                if serve:
                    from judgeflow.models.serve import transformers_server

                    log_path = Path(log_dir or "logs", f"serve-{name}.log")
                    base_url = stack.enter_context(transformers_server(
                        name, serve["path"], log_path, port=serve["port"], device=serve["device"],
                        startup_timeout=serve["startup_timeout"], threads=threads))
                    cache_ns = namespace("local-serve", spec["model"])  # the port changes, the model does not
                m = OpenAIModel(name, base_url, spec["model"], config["cache_dir"], api_key_env=spec["api_key_env"],
                                max_concurrency=spec["max_concurrency"], timeout=spec["timeout"],
                                max_retries=spec["max_retries"], send_seed=spec["send_seed"],
                                cache_namespace=cache_ns, logprobs=spec["logprobs"])
                stack.callback(m.close)
                opened[name] = m
            else:
                raise ConfigError(f"models.{name}.backend: unknown backend '{spec['backend']}' "
                                  f"(expected one of {', '.join(BACKENDS)})")
        yield opened
