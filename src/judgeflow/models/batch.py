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
   (`files.create(purpose="batch")`), the state file is written with the file id *before*
   `batches.create` (a job killed between the two finds its batch again by that file id in
   `batches.list`), then with the batch id. Batches are polled every `poll_s` seconds.
4. Each result line that came back with HTTP 200 goes through the same code as a synchronous
   answer (`OpenAIModel.result_of`) and into the same cache, fsync'd, as soon as it is read.
5. A batch that ends failed, expired or cancelled, or results that came back with an error:
   what came back is cached; the rest is sent synchronously (`on_failure: sync`) or the stage
   stops with a `BackendError` naming the batch id and the counts (`on_failure: stop`); a rerun
   then resumes from the cache and submits only what is missing.

State files and uploaded files hold request bodies only: never the API key.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from .base import BackendError, ConfigError, Generation, GenRequest

log = logging.getLogger(__name__)

MAX_REQUESTS = 50_000           # the Batch API's limit per batch
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")


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
        from .openai_api import OpenAIModel

        if not isinstance(model, OpenAIModel):
            raise ConfigError(f"{key}: the Batch API needs a model with backend openai; "
                              f"model '{getattr(model, 'name', model)}' is not")
        if on_failure not in ("sync", "stop"):
            raise ConfigError(f"{key}_on_failure: expected 'sync' or 'stop', got {on_failure!r}")
        self.model, self.name = model, model.name
        self.poll_s, self.on_failure = poll_s, on_failure
        self.state_dir = Path(model.cache.dir) / "batches"
        self.counts = Counter()   # submitted, resumed, batch_answers, batch_errors, sync_fallback

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
        by_key = {k: r for k, r in zip(keys, requests)}
        missing = [k for k in by_key if k not in results]
        if missing:
            with self._client() as client:
                self._resume(client, set(missing), by_key, results)
                todo = [k for k in missing if k not in results]
                for start in range(0, len(todo), MAX_REQUESTS):
                    part = todo[start:start + MAX_REQUESTS]
                    state = self._submit(client, part, by_key, desc)
                    self._finish(client, state, by_key, results)
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
        """Finish the batches of earlier runs that hold requests still missing."""
        for path, state in self._states():
            if state.get("done") or not missing.intersection(state.get("keys", ())):
                continue
            state["path"] = str(path)
            if not state.get("batch_id"):  # killed between upload and batches.create
                state["batch_id"] = self._find_batch(client, state["input_file_id"])
                if state["batch_id"] is None:
                    # never created: nothing was paid; this run submits its requests again
                    state["done"] = True
                    _write_atomic(path, {k: v for k, v in state.items() if k != "path"})
                    continue
            log.info("%s: resuming batch %s (%d requests) of an earlier run", self.name, state["batch_id"],
                     len(state["keys"]))
            self.counts["resumed"] += 1
            self._finish(client, state, by_key, results)
            missing.difference_update(results)

    def _find_batch(self, client, input_file_id: str) -> str | None:
        for b in client.batches.list(limit=100):
            if b.input_file_id == input_file_id:
                return b.id
        return None

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
        state = {"keys": keys, "input_file_id": f.id, "batch_id": None, "desc": desc, "model": m.model,
                 "base_url": m.base_url, "created": time.time(), "done": False, "inputs": inputs.name,
                 "scoring": scoring}
        _write_atomic(path, state)
        b = client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h",
                                  metadata={"judgeflow": desc[:64]})
        state["batch_id"] = b.id
        _write_atomic(path, state)
        self.counts["submitted"] += 1
        log.info("%s: batch %s submitted (%d requests, %s)", self.name, b.id, len(keys), desc)
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
        path = Path(state["path"])
        kept = {k: v for k, v in state.items() if k not in ("path", "keys_set", "bodies")}
        _write_atomic(path, {**kept, "done": True, "status": b.status, "answered": got, "errors": errors})
        left = [k for k in state["keys"] if k in by_key and k not in results]
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
        if key not in state["keys_set"]:
            return None
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
        results[key] = result
        return True

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


def batched(models: dict, name: str, ocfg: dict, key: str) -> dict:
    """`models` with `name` wrapped in a BatchedModel when `oracle.batch` is on (for the bulk stages)."""
    if not ocfg.get("batch") or name not in models:
        return models
    return {**models, name: BatchedModel(models[name], poll_s=ocfg["batch_poll_s"],
                                         on_failure=ocfg["batch_on_failure"], key=key)}
