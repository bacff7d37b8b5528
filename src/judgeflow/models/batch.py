"""The OpenAI Batch API for the oracle's bulk, non-adaptive calls (cleaning, pairwise comparisons).

`oracle.batch: true` wraps the oracle's openai model of those stages in a `BatchedModel`: same
`generate(requests)`, same `Generation`s, same cache, about half the price, answers within the
provider's 24 h window. Adaptive labelling (the TP(N) strategies) stays synchronous: each round
depends on the labels of the last.

One `generate` call:

1. Requests already in the API cache are answered from it (nothing is sent).
2. Unfinished batches of earlier (killed) runs of this endpoint and model are resumed first: their
   state files under `<cache>/openai/<namespace>/batches/` list their request keys; any batch that
   holds a request still missing is polled to its end and its results are cached. A killed job
   therefore never pays twice for a request it had already submitted.
3. The rest goes out as new batches (at most `MAX_REQUESTS` each): a JSONL file is uploaded
   (`files.create(purpose="batch")`), the state file is written with the file id and a local
   *intent id* *before* `batches.create`, then with the batch id. Batches are polled every
   `poll_s` seconds. Creating a batch is idempotent (one intent, at most one batch billed):
   - the intent id travels as the batch's metadata (`{"judgeflow_intent": <id>}`);
   - `batches.create` is sent without the SDK's automatic retries (`max_retries=0`): after an
     unclear failure (connection dropped, timeout, HTTP 408/409/429/5xx: the batch may or may not
     exist) the batches are listed (`batches.list`, newest first, paginated) and the one carrying
     the intent id (or the uploaded file's id) is adopted; only when none is listed is the create
     sent again (at most `max_retries` more times, with a backoff). A clear refusal (400, 401,
     ...) stops with a `BackendError`;
   - when several batches carry one intent (a list that lagged behind, a concurrent job), one is
     adopted (completed first, else in flight, else the oldest) and the others are cancelled,
     their ids logged; an orphan is never left billing unseen;
   - a job killed with the intent recorded but no batch id looks the intent up on resume (step
     2) before anything is created again; a listed batch is adopted, none: nothing was created
     (nothing paid), the requests are submitted again.
4. Each result line that came back with HTTP 200 goes through the same code as a synchronous
   answer (`OpenAIModel.result_of`) and into the same cache, fsync'd, as soon as it is read.
5. A batch that ends failed, expired or cancelled, or results that came back with an error:
   what came back is cached; the rest is sent synchronously (`on_failure: sync`) or the stage
   stops with a `BackendError` naming the batch id and the counts (`on_failure: stop`); a rerun
   then resumes from the cache and submits only what is missing.

Fingerprint of a state file. It records, per request key, a digest of the exact request body it
sent (`digests`: endpoint, model, messages, sampling, seed, logprobs, as `OpenAIModel._body`
builds them), and a `fingerprint` of the whole (format, endpoint, base URL, model, keys and
digests). The keys are already digests of what a request means (`cache_key`), but the body sent
for a key can change with the settings or the code (`send_seed`, logprobs asked or refused,
their number...). A resume takes from a batch only the requests whose body digest equals that of
the body this job sends now; the others are not read from it (never cached under the key: the
answers of two different requests never mix) but submitted again, and the log says so. A state
none of whose wanted requests match is superseded: "starting over" is logged, its batch is
cancelled if it is still in flight, the state is marked done (`status: superseded`). A state of
another base URL or model (a shared `cache_namespace`) is not resumed. State files of the first
format (no digests) are checked against the bodies in their `inputs` JSONL.

State files and uploaded files hold request bodies only: never the API key.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import BackendError, ConfigError
from judgeflow.models import ledger
from judgeflow.models.base import Generation, GenRequest

if TYPE_CHECKING:
    from judgeflow.workflow.settings import OracleSection

log = logging.getLogger(__name__)

MAX_REQUESTS = 50_000           # the Batch API's limit per batch
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")
IN_FLIGHT = ("validating", "in_progress", "finalizing")
FORMAT = 2                      # of the state files (1: no intent id, no request digests)
INTENT = "judgeflow_intent"     # the batch metadata key that carries the local intent id
LOOKUP_SKEW_S = 24 * 3600       # a look-up stops at batches created this long before the intent


def body_digest(body: dict) -> str:
    """Digest of one request as sent to the Batch API (its endpoint and exact body)."""
    blob = json.dumps({"url": ENDPOINT, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def state_fingerprint(base_url: str, model: str, keys: list[str], digests: list[str]) -> str:
    """Fingerprint of a batch state: what produced it (format, endpoint, model) and what it asks."""
    blob = json.dumps({"format": FORMAT, "endpoint": ENDPOINT, "base_url": base_url, "model": model,
                       "requests": sorted(zip(keys, digests))}, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _unclear(e: Exception) -> str | None:
    """Why a failed create may still have created the batch (None: a clear refusal, it did not)."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return "timed out"
    if isinstance(e, openai.APIConnectionError):
        return "connection lost"
    if isinstance(e, openai.APIStatusError) and (e.status_code >= 500 or e.status_code in (408, 409, 429)):
        return f"HTTP {e.status_code}"
    return None


def _backoff(attempt: int, e: Exception) -> float:
    retry_after = None
    response = getattr(e, "response", None)
    if response is not None:
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except (TypeError, ValueError):
            retry_after = None
    return min(60.0, retry_after) if retry_after is not None else min(8.0, 0.5 * 2 ** attempt)


def _write_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class BatchedModel:
    """An `OpenAIModel` whose `generate` goes through the Batch API (see the module docstring)."""

    supports_prefix = False

    def __init__(self, model, poll_s: float = 30.0, on_failure: str = "sync", key: str = "oracle.batch"):
        from judgeflow.models.openai_api import OpenAIModel

        if not isinstance(model, OpenAIModel):
            raise ConfigError(f"{key}: the Batch API needs a model with backend openai; "
                              f"model '{getattr(model, 'name', model)}' is not")
        if on_failure not in ("sync", "stop"):
            raise ConfigError(f"{key}_on_failure: expected 'sync' or 'stop', got {on_failure!r}")
        self.model, self.name = model, model.name
        self.poll_s, self.on_failure = poll_s, on_failure
        self.state_dir = Path(model.cache.dir) / "batches"
        # submitted, resumed, batch_answers, batch_errors, sync_fallback, adopted (after an unclear
        # create), cancelled (extra or superseded batches), superseded (states not resumed)
        self.counts: Counter[str] = Counter()
        self._reserved: dict[str, float] = {}  # a batch's requests' worst-case costs (judgeflow.models.ledger)

    # --- the client ---------------------------------------------------------------------
    def _client(self):
        import openai

        m = self.model
        return openai.OpenAI(base_url=m.base_url, api_key=m._api_key, timeout=m.timeout, max_retries=m.max_retries)

    def _fail(self, what: str) -> BackendError:
        return self.model._fail(what)

    # --- one generate ---------------------------------------------------------------------
    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]:
        m = self.model
        keys = [m._key(r) for r in requests]
        results: dict[str, dict] = {}
        cached: set[str] = set()
        for k in dict.fromkeys(keys):
            r = m.cached_result(k)
            if r is not None:
                results[k] = r
                cached.add(k)
                spend = ledger.current()
                if spend is not None:
                    spend.hit(m.name, r["prompt_tokens"], r["completion_tokens"])
        by_key = {k: r for k, r in zip(keys, requests)}
        missing = [k for k in by_key if k not in results]
        if missing:
            with self._client() as client:
                self._resume(client, set(missing), by_key, results)
                todo = [k for k in missing if k not in results]
                for start in range(0, len(todo), MAX_REQUESTS):
                    part = todo[start:start + MAX_REQUESTS]
                    self._reserve(part, by_key)  # the cap, checked for the whole batch before it is sent
                    try:
                        state = self._submit(client, part, by_key, desc)
                        self._finish(client, state, by_key, results)
                    finally:
                        self._release()
        left = [k for k in by_key if k not in results]
        if left:  # only with on_failure: sync (stop has raised)
            self.counts["sync_fallback"] += len(left)
            for k, g in zip(left, m.generate([by_key[k] for k in left], desc=f"{desc} (sync after batch)")):
                results[k] = {"text": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                              "completion_tokens": g.completion_tokens, "unusable": g.unusable,
                              "choice_probs": g.choice_probs}
        return [m.to_generation(r, results[k], k in cached) for k, r in zip(keys, requests)]

    # --- batches --------------------------------------------------------------------------
    def _states(self) -> list[tuple[Path, dict]]:
        out = []
        for p in sorted(self.state_dir.glob("*.json")):
            try:
                out.append((p, json.loads(p.read_text())))
            except (OSError, ValueError):
                log.warning("%s: unreadable batch state file %s (ignored)", self.name, p)
        return out

    def _resume(self, client, missing: set[str], by_key: dict, results: dict) -> None:
        """Finish the batches of earlier runs that hold requests still missing (and sent as now)."""
        m = self.model
        for path, state in self._states():
            if state.get("done"):
                continue
            wanted = missing.intersection(state.get("keys", ()))
            if not wanted:
                continue
            state["path"] = str(path)
            if (state.get("base_url"), state.get("model")) != (m.base_url, m.model):
                log.warning("%s: batch state %s was made for model %s at %s, not %s at %s: not resumed",
                            self.name, path.name, state.get("model"), state.get("base_url"), m.model, m.base_url)
                continue
            theirs = self._digests(state)
            differ = {k for k in wanted if theirs.get(k) != body_digest(m._body(by_key[k]))}
            state["skip"] = differ
            label = state.get("batch_id") or f"of intent {state.get('intent') or state.get('input_file_id')}"
            if differ:
                log.warning("%s: batch %s (request fingerprint %s): %d of the %d requests this job wants from it "
                            "differ from the requests it sends now (other settings or code); they are not taken "
                            "from that batch but sent again", self.name, label, state.get("fingerprint", "none"),
                            len(differ), len(wanted))
            if differ == wanted:
                self._supersede(client, path, state)
                continue
            if not state.get("batch_id"):  # killed between recording the intent and learning the batch id
                state["batch_id"] = self._lookup(client, state)
                if state["batch_id"] is None:
                    # never created: nothing was paid; this run submits its requests again
                    log.info("%s: batch %s of an earlier run was never created; its requests are submitted again",
                             self.name, label)
                    self._save(path, {**state, "done": True, "status": "never created"})
                    continue
                log.info("%s: batch %s of intent %s (an earlier run) found in batches.list", self.name,
                         state["batch_id"], state.get("intent") or state.get("input_file_id"))
                self.counts["adopted"] += 1
                self._save(path, state)
            log.info("%s: resuming batch %s (%d requests) of an earlier run", self.name, state["batch_id"],
                     len(state["keys"]))
            self.counts["resumed"] += 1
            self._finish(client, state, by_key, results)
            missing.difference_update(results)

    def _digests(self, state: dict) -> dict[str, str]:
        """key -> digest of the body a state's batch sent for it (first-format states: from its inputs)."""
        keys, digests = state.get("keys", []), state.get("digests")
        if isinstance(digests, list) and len(digests) == len(keys):
            return dict(zip(keys, digests))
        out = {}
        path = self.state_dir / state.get("inputs", "")
        if state.get("inputs") and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    out[rec["custom_id"]] = body_digest(rec["body"])
                except (ValueError, KeyError, TypeError):
                    continue   # unreadable: that request counts as differing (sent again)
        return out

    def _supersede(self, client, path: Path, state: dict) -> None:
        """A state none of whose wanted requests are sent as it sent them: start over without it."""
        import openai

        bid = state.get("batch_id")
        try:
            if not bid:
                bid = self._lookup(client, state)
            if bid:
                self._cancel(client, client.batches.retrieve(bid), "its requests differ from this job's (superseded)")
        except (openai.APIError, BackendError) as e:
            log.warning("%s: superseded batch %s could not be checked or cancelled: %s", self.name, bid,
                        self.model._redact(str(e)))
        log.warning("%s: batch %s (state %s) was made for requests other than this job's: not resumed, "
                    "starting over", self.name, bid or "never created", path.name)
        self.counts["superseded"] += 1
        self._save(path, {**state, "batch_id": bid, "done": True, "status": "superseded"})

    # --- idempotent creation ----------------------------------------------------------------
    def _create(self, client, state: dict) -> str:
        """The batch of one recorded intent: created once; after an unclear failure, looked up first."""
        import openai

        m = self.model
        once = client.with_options(max_retries=0)   # the SDK must not re-send a create on its own
        meta = {"judgeflow": state["desc"][:64], INTENT: state["intent"]}
        unclear = []
        for attempt in range(m.max_retries + 1):
            try:
                b = once.batches.create(input_file_id=state["input_file_id"], endpoint=ENDPOINT,
                                        completion_window="24h", metadata=meta)
            except openai.APIError as e:   # sorted into clear and unclear failures
                why = _unclear(e)
                if why is None:
                    raise self._fail(f"batches.create for intent {state['intent']} refused: "
                                     f"{type(e).__name__}: {e}") from e
                unclear.append(why)
                log.warning("%s: batches.create for intent %s: %s; looking the intent up before creating "
                            "another", self.name, state["intent"], why)
                found = self._lookup(client, state)
                if found:
                    log.info("%s: batch %s of intent %s adopted (it was created)", self.name, found, state["intent"])
                    self.counts["adopted"] += 1
                    return found
                if attempt < m.max_retries:
                    time.sleep(_backoff(attempt, e))
                continue
            if unclear:  # an earlier try may have created one that the list did not show yet
                return self._lookup(client, state, prefer=b.id) or b.id
            return b.id
        raise self._fail(f"batches.create for intent {state['intent']} failed {len(unclear)} times without a "
                         f"clear answer ({', '.join(unclear)}) and no batch of that intent is listed; a rerun "
                         f"looks it up again before creating one")

    def _lookup(self, client, state: dict, prefer: str | None = None) -> str | None:
        """The batch of a state's intent, from `batches.list`: one adopted, any other cancelled."""
        import openai

        intent, file_id = state.get("intent"), state.get("input_file_id")
        since = float(state.get("created") or 0) - LOOKUP_SKEW_S
        found = []
        try:
            for b in client.batches.list(limit=100):   # newest first; the SDK follows the `after` pages
                if b.created_at and b.created_at < since:
                    break
                meta = b.metadata or {}
                if (intent and meta.get(INTENT) == intent) or (file_id and b.input_file_id == file_id):
                    found.append(b)
        except openai.APIError as e:
            raise self._fail(f"batches.list, looking up intent {intent}: {type(e).__name__}: {e}") from e
        if not found:
            return None
        rank = {"completed": 0, **dict.fromkeys(IN_FLIGHT, 1)}
        keep = min(found, key=lambda b: (b.id != prefer, rank.get(b.status, 2), b.created_at or 0, b.id))
        others = [b for b in found if b.id != keep.id]
        if others:
            log.warning("%s: %d batches carry intent %s: %s is kept, %s %s", self.name, len(found),
                        intent or file_id, keep.id, ", ".join(b.id for b in others),
                        "is cancelled" if len(others) == 1 else "are cancelled")
        for b in others:
            self._cancel(client, b, f"a second batch of intent {intent or file_id}; {keep.id} is kept")
        return keep.id

    def _cancel(self, client, b, why: str) -> None:
        import openai

        if b.status not in IN_FLIGHT:
            if b.status == "completed":
                log.warning("%s: batch %s (%s) had completed already: it was billed", self.name, b.id, why)
            return
        try:
            client.batches.cancel(b.id)
        except openai.APIError as e:
            log.warning("%s: batch %s could not be cancelled (%s): %s", self.name, b.id, why,
                        self.model._redact(str(e)))
            return
        self.counts["cancelled"] += 1
        log.warning("%s: batch %s cancelled: %s", self.name, b.id, why)

    @staticmethod
    def _save(path: Path, state: dict) -> None:
        _write_atomic(path, {k: v for k, v in state.items() if k not in ("path", "keys_set", "bodies", "skip")})

    def _submit(self, client, keys: list[str], by_key: dict, desc: str) -> dict:
        m = self.model
        lines = [json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT, "body": m._body(by_key[k])},
                            ensure_ascii=False) for k in keys]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()[:16]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{int(time.time())}-{digest}"
        inputs = self.state_dir / f"{stem}.jsonl"   # the bodies sent: a resumed batch caches every answer
        tmp = inputs.with_name(f".{inputs.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, inputs)
        path = self.state_dir / f"{stem}.json"
        f = client.files.create(file=(f"judgeflow-{digest}.jsonl", data), purpose="batch")
        scoring = {k: [by_key[k].score_after, list(by_key[k].choices)] for k in keys if by_key[k].score_after}
        digests = [body_digest(m._body(by_key[k])) for k in keys]
        state = {"format": FORMAT, "keys": keys, "digests": digests,
                 "fingerprint": state_fingerprint(m.base_url, m.model, keys, digests),
                 "intent": f"{stem}-{uuid.uuid4().hex[:8]}", "input_file_id": f.id, "batch_id": None, "desc": desc,
                 "model": m.model, "base_url": m.base_url, "created": time.time(), "done": False,
                 "inputs": inputs.name, "scoring": scoring}
        _write_atomic(path, state)   # the intent, on disk before the create
        state["batch_id"] = self._create(client, state)
        _write_atomic(path, state)
        self.counts["submitted"] += 1
        log.info("%s: batch %s submitted (%d requests, %s, intent %s)", self.name, state["batch_id"], len(keys),
                 desc, state["intent"])
        return {**state, "path": str(path)}

    def _finish(self, client, state: dict, by_key: dict, results: dict) -> None:
        """Poll one batch to its end, cache what came back, then apply on_failure to the rest."""
        bid = state["batch_id"]
        state["keys_set"] = set(state["keys"])
        while True:
            b = client.batches.retrieve(bid)
            if b.status in DONE:
                break
            log.info("%s: batch %s is %s (%s)", self.name, bid, b.status, _counts(b))
            time.sleep(self.poll_s)
        got = errors = 0
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            for line in client.files.content(file_id).text.splitlines():
                ok = self._take(line, state, by_key, results)
                got += ok is True
                errors += ok is False
        self.counts["batch_answers"] += got
        self.counts["batch_errors"] += errors
        self._save(Path(state["path"]), {**state, "done": True, "status": b.status, "answered": got,
                                         "errors": errors})
        skip = state.get("skip", ())
        left = [k for k in state["keys"] if k in by_key and k not in results and k not in skip]
        if not left:
            log.info("%s: batch %s %s: %d answers cached", self.name, bid, b.status, got)
            return
        what = (f"batch {bid} ended {b.status}: {got} of {len(state['keys'])} requests came back (cached), "
                f"{len(left)} did not ({errors} with an error)")
        if self.on_failure == "stop":
            raise self._fail(f"{what}; oracle.batch_on_failure is 'stop' (a rerun submits only the missing "
                             f"requests; 'sync' sends them synchronously)")
        log.warning("%s: %s; sending them synchronously (oracle.batch_on_failure: sync)", self.name, what)

    def _take(self, line: str, state: dict, by_key: dict, results: dict) -> bool | None:
        """Cache one result line; True: an answer, False: an error, None: not a request of this batch.
        Answers to requests of another run's generate (a resumed batch) are cached too: they are paid."""
        from openai.types.chat import ChatCompletion

        if not line.strip():
            return None
        try:
            rec = json.loads(line)
        except ValueError:
            return False
        key = rec.get("custom_id")
        if key not in state["keys_set"] or key in state.get("skip", ()):
            return None  # not of this batch, or sent there as this job no longer sends it
        resp = rec.get("response") or {}
        if rec.get("error") or resp.get("status_code") != 200:
            return False
        try:
            completion = ChatCompletion.model_validate(resp.get("body"))
        except ValueError:
            return False
        if not completion.choices:
            return False
        req = by_key.get(key)
        if req is None:  # another run's request: what result_of reads of it is in the state file
            score_after, choices = state.get("scoring", {}).get(key, ["", ["YES", "NO"]])
            req = GenRequest(messages=(), score_after=score_after, choices=tuple(choices))
        result = self.model.result_of(req, completion)
        if key not in results:
            self.model.record(key, self._body_of(key, state, by_key), result)
            spend = ledger.current()
            if spend is not None:  # billed at the Batch API's share (an earlier run's batch: reserved nothing)
                spend.settle(self.model.name, self._reserved.pop(key, 0.0), result["prompt_tokens"],
                             result["completion_tokens"], batch=True)
        results[key] = result
        return True

    def _reserve(self, keys: list[str], by_key: dict) -> None:
        """Reserve the worst case of every request of a batch (judgeflow.models.ledger); BudgetReached, with
        nothing reserved and nothing sent, if the batch could pass the cap."""
        spend = ledger.current()
        if spend is None:
            return
        try:
            for k in keys:
                self._reserved[k] = spend.reserve(self.model.name, self.model._body(by_key[k]), batch=True)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        """The reservations of requests a batch did not answer: nothing paid for them."""
        spend = ledger.current()
        if spend is not None:
            for w in self._reserved.values():
                spend.release(w)
        self._reserved.clear()

    def _body_of(self, key: str, state: dict, by_key: dict) -> dict:
        if key in by_key:
            return self.model._body(by_key[key])
        if "bodies" not in state:
            state["bodies"] = {}
            path = self.state_dir / state.get("inputs", "")
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    rec = json.loads(line)
                    state["bodies"][rec["custom_id"]] = rec["body"]
        return state["bodies"].get(key, {})

    def stats(self) -> dict:
        return {**self.model.stats(), "batch": dict(sorted(self.counts.items()))}

    def close(self) -> None:
        self.model.close()


def _counts(b) -> str:
    rc = getattr(b, "request_counts", None)
    return f"{rc.completed}/{rc.total} done, {rc.failed} failed" if rc else "no counts yet"


def batched(models: dict, name: str, ocfg: OracleSection, key: str) -> dict:
    """`models` with `name` wrapped in a BatchedModel when `oracle.batch` is on (for the bulk stages)."""
    if not ocfg.batch or name not in models:
        return models
    return {**models, name: BatchedModel(models[name], poll_s=ocfg.batch_poll_s,
                                         on_failure=ocfg.batch_on_failure, key=key)}
