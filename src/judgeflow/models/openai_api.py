"""OpenAI-compatible backend (OpenAI, DeepSeek, vLLM, `transformers serve`, ...).

Async requests under a concurrency cap; the SDK's retries (exponential backoff with jitter,
`Retry-After` honoured); a persistent cache so a rerun never pays twice for the same call.
The API key is read from the environment variable *named* in the config and is never
written anywhere.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys

from tqdm.auto import tqdm

from .base import BackendError, ConfigError, GenRequest, Generation
from .cache import CallCache, cache_key, namespace

log = logging.getLogger(__name__)


class OpenAIModel:
    supports_prefix = False  # chat endpoints cannot be made to continue a partial assistant turn

    def __init__(self, name: str, base_url: str, model: str, cache_dir: str,
                 api_key_env: str | None = None, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 5, send_seed: bool = True,
                 cache_namespace: str | None = None):
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"models.{name}.api_key_env: environment variable {api_key_env} is not set "
                    f"(it must hold the API key for {base_url})")
        else:
            key = "EMPTY"  # local servers take any key
        self._api_key = key
        self.name, self.base_url, self.model = name, base_url, model
        self.max_concurrency, self.timeout, self.max_retries = max_concurrency, timeout, max_retries
        self.send_seed = send_seed
        self.cache = CallCache(os.path.join(cache_dir, "openai", cache_namespace or namespace(base_url, model)))
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIModel(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def _body(self, req: GenRequest) -> dict:
        if req.prefix:
            raise ConfigError(f"models.{self.name}: the openai backend cannot continue an assistant prefix")
        body = {"model": self.model, "messages": req.message_dicts(),
                "max_tokens": req.sampling.max_new_tokens, "temperature": req.sampling.temperature,
                "top_p": req.sampling.top_p}
        if self.send_seed:
            body["seed"] = req.seed
        return body

    def _key(self, req: GenRequest) -> str:
        return cache_key(self.model, req.message_dicts(), req.sampling.as_dict(), req.seed)

    async def _one(self, client, sem, req: GenRequest, bar) -> dict:
        key = self._key(req)
        hit = self.cache.get(key)
        if hit is not None:
            bar.update(1)
            return {**hit["response"], "cached": True}
        import openai

        body = self._body(req)
        async with sem:
            try:
                resp = await client.chat.completions.create(**body)
            except openai.APIStatusError as e:
                raise BackendError(f"{self.base_url}: HTTP {e.status_code} from model {self.model} "
                                   f"after {self.max_retries} retries: {_short(e.message)}") from None
            except openai.APITimeoutError:
                raise BackendError(f"{self.base_url}: request timed out after {self.timeout}s "
                                   f"and {self.max_retries} retries") from None
            except openai.APIConnectionError as e:
                raise BackendError(f"{self.base_url}: cannot connect after {self.max_retries} retries "
                                   f"({_short(str(e.__cause__ or e))})") from None
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        result = {
            "text": (choice.message.content if choice and choice.message else None) or "",
            "finish_reason": (choice.finish_reason if choice else None) or "empty",
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
        self.calls += 1
        self.prompt_tokens += result["prompt_tokens"]
        self.completion_tokens += result["completion_tokens"]
        self.cache.put(key, body, result)
        bar.update(1)
        return {**result, "cached": False}

    async def _run(self, requests: list[GenRequest], desc: str) -> list[dict]:
        import openai

        sem = asyncio.Semaphore(self.max_concurrency)
        bar = tqdm(total=len(requests), desc=f"{self.name}: {desc}", mininterval=5, file=sys.stderr)
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key,
                                      timeout=self.timeout, max_retries=self.max_retries) as client:
            tasks = [asyncio.ensure_future(self._one(client, sem, r, bar)) for r in requests]
            try:
                return await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)  # let finished calls reach the cache
                raise
            finally:
                bar.close()

    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]:
        results = asyncio.run(self._run(requests, desc))
        return [Generation(text=r["text"], prompt_tokens=r["prompt_tokens"],
                           completion_tokens=r["completion_tokens"], finish_reason=r["finish_reason"],
                           cached=r["cached"]) for r in results]

    def stats(self) -> dict:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url,
                "calls": self.calls, "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def close(self) -> None:
        self.cache.close()


def _short(s: str, n: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."
