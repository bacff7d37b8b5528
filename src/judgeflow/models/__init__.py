"""Model backends behind one interface (`generate` returning `Generation`s), chosen per model in the config.

    models:
      smollm2: {backend: hf, path: resources/models/SmolLM2-135M-Instruct}
      gpt41:   {backend: openai, base_url: https://api.openai.com/v1, model: gpt-4.1,
                api_key_env: OPENAI_API_KEY}
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .base import BackendError, ConfigError, GenRequest, Generation, Model, Sampling
from .cache import namespace

BACKENDS = ("hf", "openai")

__all__ = ["BackendError", "ConfigError", "GenRequest", "Generation", "Model", "Sampling",
           "open_models", "model_spec"]


def model_spec(config: dict, name: str, key: str) -> dict:
    """The `models.<name>` entry referenced from config key `key`, or a ConfigError naming it."""
    models = config.get("models", {})
    if name not in models:
        raise ConfigError(f"{key}: unknown model '{name}' (defined models: {', '.join(sorted(models)) or 'none'})")
    spec = models[name]
    if spec.get("backend") not in BACKENDS:
        raise ConfigError(f"models.{name}.backend: unknown backend '{spec.get('backend')}' "
                          f"(expected one of {', '.join(BACKENDS)})")
    return spec


@contextlib.contextmanager
def open_models(config: dict, names: dict[str, str], log_dir: str | None = None,
                threads: int | None = None) -> Iterator[dict[str, Model]]:
    """Open each distinct model once. `names` maps a role's config key to a model name.

    Yields {model name: Model}. Local servers (`serve:`) are started first and stopped on exit.
    """
    opened: dict[str, Model] = {}
    with contextlib.ExitStack() as stack:
        for key, name in names.items():
            if name in opened:
                continue
            spec = model_spec(config, name, key)
            if spec["backend"] == "hf":
                from .hf import HFModel

                opened[name] = HFModel(name, spec["path"], device=spec.get("device", "auto"),
                                       dtype=spec.get("dtype", "auto"), batch_size=spec.get("batch_size", 8),
                                       threads=threads)
            else:
                from .openai_api import OpenAIModel

                base_url, cache_ns = spec.get("base_url"), None
                serve = spec.get("serve")
                if serve:
                    from .serve import transformers_server

                    log_path = Path(log_dir or "logs", f"serve-{name}.log")
                    base_url = stack.enter_context(transformers_server(
                        name, serve["path"], log_path, port=serve.get("port"),
                        device=serve.get("device", "cpu"), startup_timeout=serve.get("startup_timeout", 180),
                        threads=threads))
                    cache_ns = namespace("local-serve", spec["model"])  # the port changes, the model does not
                if not base_url:
                    raise ConfigError(f"models.{name}.base_url: required for the openai backend "
                                      "(or a serve: block to start a local server)")
                m = OpenAIModel(name, base_url, spec["model"], config["cache_dir"],
                                api_key_env=spec.get("api_key_env"),
                                max_concurrency=spec.get("max_concurrency", 8),
                                timeout=spec.get("timeout", 120), max_retries=spec.get("max_retries", 5),
                                send_seed=spec.get("send_seed", True), cache_namespace=cache_ns)
                stack.callback(m.close)
                opened[name] = m
        yield opened
