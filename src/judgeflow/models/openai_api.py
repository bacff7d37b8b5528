"""OpenAI-compatible backend (OpenAI, DeepSeek, vLLM, `transformers serve`, ...).

Fault tolerance, in layers:

* Transient failures are retried by the openai SDK (`max_retries`): HTTP 408/409/429/5xx,
  timeouts, refused or dropped connections, with exponential backoff (0.5 s doubling, capped at
  8 s) and jitter (up to -25 %). A `Retry-After` / `retry-after-ms` header of up to 120 s is
  honoured instead of the backoff; a longer one is not waited for (the call fails at once,
  naming the endpoint). The SDK's retries of a request reuse its idempotency key.
* A `200` whose body is not a chat completion (malformed JSON, no choices), or whose content is
  null or empty (a transient glitch of some endpoints), is retried here with the same backoff and
  jitter. `max_retries` bounds all retries of one call together (after such an answer the SDK's
  own backoff starts again from 0.5 s). Only an answer still empty when the retries are spent is
  kept (and cached) as unusable.
* `timeout` is the per-attempt timeout (connect, each read, write): a stalled server costs one
  attempt, which is then retried.
* At most `max_concurrency` calls are in flight; identical requests within one `generate` are
  sent once.
* After the retries run out, a `BackendError` names the endpoint, the model, the failure and the
  number of retries actually made (never the API key).

Usable answers: an answer with empty content after every retry (`unusable: "empty"`) or cut at `max_tokens`
(finish_reason "length", `unusable: "truncated"`) is still a paid call: it is cached with that
mark (a rerun sends the same seeded request and would only pay again for the same answer),
returned with `Generation.unusable` set, and counted in `stats()["unusable"]`. Stages parse
verdicts from the text; an answer with no verdict line is an abstain, never a label.

Verdicts from log-probabilities: a request with `score_after` ("Verdict:") asks for the answer's
`top_logprobs` (`logprobs: auto`, the default, or `true`). The token right after the first
"Verdict:" of the answer (the first token where the answer has none) gives the probabilities of the
request's choices (YES/NO, or A/B/TIE), as AlpacaEval reads its preferences: `Generation.p_yes` and
`choice_probs`. An endpoint that returns no logprobs (`transformers serve` ignores the field) or
refuses them (HTTP 400/422 naming them: asked again without) gets its verdicts read from the text,
and the log says so once; answers without the choices among their top tokens are counted
(`stats()["logprobs"]`). The stages parse the text first and use the
probabilities where the text has no verdict line, so a format slip never makes an abstain.

Every answer is appended to a persistent cache (fsync'd) as soon as it arrives, so a killed job
never pays twice for what it already received. `stats()` reports attempts, retries, failed
attempts by kind, unusable answers and cache hits. The API key is read from the environment
variable *named* in the config and is never written anywhere: not in the cache (request bodies
only), not in `repr`, not in error messages. It is registered with `judgeflow.workflow.redact` when read,
and every answer is masked where it comes in (`result_of`, before the cache, a record or a log
sees it), so an endpoint that echoes the key, in a 200 answer or an error, gets
`[masked:<api_key_env>]` written instead. A `base_url` with a credential in it (user:password@,
`?api-key=`) is refused.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import random
import sys
from collections import Counter

from tqdm.auto import tqdm

from judgeflow.errors import BackendError, BudgetReached, ConfigError
from judgeflow.models import ledger
from judgeflow.models.base import Generation, GenRequest
from judgeflow.models.cache import CallCache, cache_key, namespace
from judgeflow.workflow import redact

log = logging.getLogger(__name__)

# the openai SDK's backoff (openai/_constants.py), reused for the retries made here
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# the attempts of the call running in this task (the HTTP hooks run in the caller's task)
_CALL_ATTEMPTS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("judgeflow_call_attempts")


class MalformedResponse(Exception):
    """A 200 answer that is not a usable chat completion (not JSON, no choices)."""


def backoff_delay(retry: int) -> float:
    """Seconds before retry number `retry` (0-based): the SDK's exponential backoff with jitter."""
    return min(INITIAL_RETRY_DELAY * 2.0 ** min(retry, 30), MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


def classify(text: str, finish_reason: str) -> str | None:
    """Why an answer is unusable ("empty", "truncated"), or None for a usable one."""
    if not text.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    return None


class OpenAIModel:
    supports_prefix = False  # chat endpoints cannot be made to continue a partial assistant turn

    def __init__(self, name: str, base_url: str, model: str, cache_dir: str,
                 api_key_env: str | None = None, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 5, send_seed: bool = True,
                 cache_namespace: str | None = None, logprobs: bool | str = "auto"):
        credential = redact.url_credentials(base_url)
        if credential:
            raise ConfigError(f"models.{name}.base_url: the URL holds a credential ({credential}; not shown); give "
                              f"the key through the environment variable named by models.{name}.api_key_env")
        if api_key_env:
            if redact.looks_like_key(api_key_env):
                raise ConfigError(f"models.{name}.api_key_env: expected the NAME of an environment variable; the "
                                  f"value given looks like a key itself and is not shown")
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"models.{name}.api_key_env: environment variable {api_key_env} is not set "
                    f"(it must hold the API key for {base_url})")
            redact.register(key, api_key_env)  # masked from here on, whatever writes it
        else:
            key = "EMPTY"  # local servers take any key
        self._api_key = key
        self.name, self.base_url, self.model = name, base_url, model
        self.max_concurrency, self.timeout, self.max_retries = max_concurrency, timeout, max_retries
        self.send_seed = send_seed
        self.logprobs = logprobs          # True, False or "auto" (asked for; dropped if refused)
        self.logprobs_refused = False
        self.said_no_logprobs = False
        # verdict requests: read from logprobs / without the choices / none
        self.logprob_stats: Counter[str] = Counter()
        self.cache = CallCache(os.path.join(cache_dir, "openai", cache_namespace or namespace(base_url, model)))
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.attempts = 0            # HTTP requests sent (first tries and retries)
        self.retries = 0             # of which retries (the SDK's and the malformed-answer ones)
        self.failed: Counter[str] = Counter()    # failed attempts by kind: "http_429", ..., "malformed"
        self.unusable: Counter[str] = Counter()  # answers returned this run that are unusable, by reason
        self.deduplicated = 0        # identical requests within one generate() sent once

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIModel(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def _wants_logprobs(self, req: GenRequest) -> bool:
        return bool(req.score_after) and self.logprobs is not False

    def _body(self, req: GenRequest) -> dict:
        if req.prefix:
            raise ConfigError(f"models.{self.name}: the openai backend cannot continue an assistant prefix")
        body = {"model": self.model, "messages": req.message_dicts(),
                "max_tokens": req.sampling.max_new_tokens, "temperature": req.sampling.temperature,
                "top_p": req.sampling.top_p}
        if self.send_seed:
            body["seed"] = req.seed
        if self._wants_logprobs(req) and not self.logprobs_refused:
            body["logprobs"], body["top_logprobs"] = True, TOP_LOGPROBS
        return body

    def _key(self, req: GenRequest) -> str:
        sampling = req.sampling.as_dict()
        if self._wants_logprobs(req):  # what was asked for, whether or not the endpoint gives it
            sampling = {**sampling, "logprobs": list(req.choices), "score_after": req.score_after}
        return cache_key(self.model, req.message_dicts(), sampling, req.seed)

    def _redact(self, s: str) -> str:
        s = redact.mask(s)
        key = self._api_key  # too short to be registered for masking everywhere: still not in an error
        if key and key != "EMPTY" and 4 <= len(key) < redact.MIN_SECRET_LEN:
            s = s.replace(key, "***")
        return s

    def _fail(self, what: str) -> BackendError:
        return BackendError(self._redact(f"{self.base_url}: {what}"))

    # --- HTTP event hooks: every attempt, whoever retries it -----------------------------
    async def _on_request(self, request) -> None:
        self.attempts += 1
        tried = _CALL_ATTEMPTS.get(None)
        if tried is not None:
            tried[0] += 1
        if request.headers.get("x-stainless-retry-count", "0") not in ("0", ""):
            self.retries += 1

    async def _on_response(self, response) -> None:
        if response.status_code >= 400:
            self.failed[f"http_{response.status_code}"] += 1

    async def _create(self, client, body: dict):
        """One call, within one retry budget: the SDK retries transport and HTTP errors, this loop
        retries malformed answers; `max_retries` bounds the retries of both together."""
        import openai

        tried = [0]  # attempts of this call, counted by _on_request
        _CALL_ATTEMPTS.set(tried)
        while True:
            left = max(0, self.max_retries - tried[0])
            try:
                resp = await client.with_options(max_retries=left).chat.completions.create(**body)
                if isinstance(resp, str) or not getattr(resp, "choices", None):
                    raise MalformedResponse("no choices in the answer")
                message = resp.choices[0].message
                if not ((message.content if message else None) or "").strip():
                    retries = tried[0] - 1
                    if retries >= self.max_retries:
                        return resp  # still empty with the retries spent: kept, marked unusable
                    self.failed["empty"] += 1
                    self.retries += 1
                    await asyncio.sleep(backoff_delay(retries))
                    continue
                return resp
            except (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError) as e:
                self.failed["malformed"] += 1
                retries = tried[0] - 1
                if retries >= self.max_retries:
                    raise self._fail(f"malformed answer from model {self.model} after {retries} retries "
                                     f"({_short(f'{type(e).__name__}: {e}')})") from None
                self.retries += 1
                await asyncio.sleep(backoff_delay(retries))
            except openai.APIStatusError as e:
                if body.get("logprobs") and e.status_code in (400, 422) and "logprob" in str(e.message).lower():
                    if not self.logprobs_refused:
                        log.warning("%s: the endpoint refuses logprobs (%s); verdicts are read from the text",
                                    self.name, self._redact(_short(e.message, 120)))
                    self.logprobs_refused = True
                    body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                    continue
                note = f"after {tried[0] - 1} retries" if tried[0] > 1 else "not retried"
                raise self._fail(f"HTTP {e.status_code} from model {self.model} {note}: "
                                 f"{_short(e.message)}") from None
            except openai.APITimeoutError:
                raise self._fail(f"request timed out after {self.timeout}s "
                                 f"and {tried[0] - 1} retries") from None
            except openai.APIConnectionError as e:
                raise self._fail(f"cannot connect after {tried[0] - 1} retries "
                                 f"({_short(str(e.__cause__ or e))})") from None

    def result_of(self, req: GenRequest, resp) -> dict:
        """What is cached and returned for one answered request: text, finish reason, token counts,
        whether it is usable and, for a verdict request, the choices' probabilities (the synchronous
        path and the Batch API's results both go through here)."""
        choice = resp.choices[0]
        usage = resp.usage
        # masked where it comes in: neither the cache, a record nor a log ever sees a key it echoes
        text = redact.mask((choice.message.content if choice.message else None) or "")
        finish = choice.finish_reason or "empty"
        result = {
            "text": text, "finish_reason": finish,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "unusable": classify(text, finish),
        }
        if self._wants_logprobs(req):
            content = getattr(getattr(choice, "logprobs", None), "content", None)
            result["choice_probs"] = choice_probs(content, req.score_after, req.choices) if content else None
            result["logprobs"] = "none" if not content else ("read" if result["choice_probs"] else "no_choice")
            if not content and not self.said_no_logprobs:
                log.warning("%s: the endpoint returns no logprobs; verdicts are read from the text", self.name)
                self.said_no_logprobs = True
        return result

    def record(self, key: str, body: dict, result: dict) -> None:
        """Count a paid answer and cache it (on disk, fsync'd, before anything else happens)."""
        self.calls += 1
        self.prompt_tokens += result["prompt_tokens"]
        self.completion_tokens += result["completion_tokens"]
        self.cache.put(key, redact.mask_obj(body), redact.mask_obj(result))
        self._count(result)

    def cached_result(self, key: str) -> dict | None:
        """The cached answer of a request key (counted as a hit or a miss), or None."""
        hit = self.cache.get(key)
        if hit is None:
            return None
        result = redact.mask_obj(dict(hit["response"]))  # an entry an older judgeflow wrote unmasked
        result.setdefault("unusable", classify(result.get("text") or "", result.get("finish_reason") or ""))
        self._count(result)
        return result

    def to_generation(self, req: GenRequest, r: dict, cached: bool) -> Generation:
        probs = r.get("choice_probs")
        p_yes = probs.get("YES") if probs and "YES" in req.choices else None
        return Generation(text=r["text"], prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"],
                          finish_reason=r["finish_reason"], cached=cached, unusable=r.get("unusable"), p_yes=p_yes,
                          choice_probs=probs)

    async def _one(self, client, sem, req: GenRequest, bar, inflight: dict, stop: list) -> dict | None:
        key = self._key(req)
        if key in inflight:  # the same request earlier in this batch: wait for its answer
            self.deduplicated += 1
            try:
                result = await asyncio.shield(inflight[key])
            except asyncio.CancelledError:
                if stop:  # that request was not sent: past the cap
                    return None
                raise
            self._count(result)
            bar.update(1)
            return {**result, "cached": True}
        result = self.cached_result(key)
        spend = ledger.current()
        if result is not None:
            if spend is not None:
                spend.hit(self.name, result["prompt_tokens"], result["completion_tokens"])
            bar.update(1)
            return {**result, "cached": True}
        fut = asyncio.get_running_loop().create_future()
        inflight[key] = fut
        worst = None
        try:
            body = self._body(req)
            async with sem:
                # the cap is checked when the call is about to go: past it, this call and every later one
                # are not sent, while the calls in flight finish and are cached (nothing paid is lost)
                if stop:
                    del inflight[key]
                    fut.cancel()
                    return None
                try:
                    worst = spend.reserve(self.name, body) if spend is not None else None
                except BudgetReached as e:
                    stop.append(e)
                    del inflight[key]
                    fut.cancel()
                    return None
                resp = await self._create(client, body)
            result = self.result_of(req, resp)
            self.record(key, body, result)
            if spend is not None and worst is not None:
                spend.settle(self.name, worst, result["prompt_tokens"], result["completion_tokens"])
                worst = None
        except BaseException as e:
            if spend is not None and worst is not None:
                spend.release(worst)
            del inflight[key]
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning when no copy waits on it
            raise
        fut.set_result(result)
        bar.update(1)
        return {**result, "cached": False}

    def _count(self, result: dict) -> None:
        if "logprobs" in result:
            self.logprob_stats[result["logprobs"]] += 1
        if result.get("unusable"):
            self.unusable[result["unusable"]] += 1
            log.debug("%s: unusable answer (%s)", self.name, result["unusable"])

    async def _run(self, requests: list[GenRequest], desc: str) -> list[dict]:
        import openai

        sem = asyncio.Semaphore(self.max_concurrency)
        bar = tqdm(total=len(requests), desc=f"{self.name}: {desc}", mininterval=5, file=sys.stderr)
        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._on_request],
                                                           "response": [self._on_response]})
        inflight: dict[str, asyncio.Future] = {}
        stop: list[BudgetReached] = []  # the cap was reached (judgeflow.models.ledger): send nothing more
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, http_client=http,
                                      timeout=self.timeout, max_retries=self.max_retries) as client:
            tasks = [asyncio.ensure_future(self._one(client, sem, r, bar, inflight, stop)) for r in requests]
            try:
                results = await asyncio.gather(*tasks)
                if stop:
                    unsent = sum(r is None for r in results)
                    raise BudgetReached(f"{stop[0]} ({unsent} of the {len(requests)} requests of this {desc} not "
                                        f"sent; {len(requests) - unsent} answered)")
                return [r for r in results if r is not None]  # all of them: None only past the cap
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)  # let finished calls reach the cache
                raise
            finally:
                bar.close()

    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]:
        results = asyncio.run(self._run(requests, desc))
        return [self.to_generation(req, r, r["cached"]) for req, r in zip(requests, results)]

    def stats(self) -> dict:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url,
                "calls": self.calls, "cache_hits": self.cache.hits, "cache_misses": self.cache.misses,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "attempts": self.attempts, "retries": self.retries,
                "failed_attempts": self.failed_attempts(),
                "unusable": dict(sorted(self.unusable.items())), "deduplicated": self.deduplicated,
                "logprobs": {**dict(sorted(self.logprob_stats.items())), "refused": self.logprobs_refused}}

    def failed_attempts(self) -> dict:
        """Attempts that brought no answer, by kind. "transport": timed out, refused, dropped or cut
        mid-body (no status to tell them apart); the rest are HTTP statuses and malformed answers."""
        out = dict(sorted(self.failed.items()))
        transport = self.attempts - self.calls - sum(out.values())
        if transport:
            out["transport"] = transport
        return out

    def close(self) -> None:
        self.cache.close()


TOP_LOGPROBS = 20  # the most OpenAI returns


def _norm(token: str) -> str:
    return token.strip().strip("*_`\"'").upper()


def choice_probs(content, score_after: str, choices: tuple[str, ...]) -> dict[str, float] | None:
    """The probabilities of `choices` at the answer token of a chat completion's logprobs `content`
    (a list of {token, logprob, top_logprobs}): the first token after the first `score_after` of the
    answer ("Verdict:"), else the first token. A top token counts for the choice it is a non-empty
    prefix of (" Y" for YES; "T" for TIE), and only when it is a prefix of no other choice.
    Normalised over the choices; None when none of them is among the top tokens."""
    import math
    import re

    tokens = [getattr(t, "token", None) if not isinstance(t, dict) else t.get("token") for t in content]
    text, starts = "", []
    for tok in tokens:
        starts.append(len(text))
        text += tok or ""
    at = 0
    if score_after:
        m = re.search(rf"(?im)^[\s*_`>#-]*{re.escape(score_after.rstrip(':'))}[\s*_`]*:", text)
        if m:
            after = [i for i, s in enumerate(starts) if s >= m.end() and (tokens[i] or "").strip(" *_`")]
            if not after:
                return None
            at = after[0]
    entry = content[at]
    tops = entry.get("top_logprobs") if isinstance(entry, dict) else getattr(entry, "top_logprobs", None)
    mass = dict.fromkeys(choices, 0.0)
    for t in tops or []:
        tok = t.get("token") if isinstance(t, dict) else t.token
        lp = t.get("logprob") if isinstance(t, dict) else t.logprob
        n = _norm(tok or "")
        hits = [c for c in choices if n and c.upper().startswith(n)]
        if len(hits) == 1 and lp is not None:
            mass[hits[0]] += math.exp(lp)
    total = sum(mass.values())
    return {c: round(v / total, 6) for c, v in mass.items()} if total > 0 else None


def _short(s: str, n: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."
