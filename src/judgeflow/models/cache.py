"""Persistent on-disk cache of API calls, shared across runs and across parallel jobs.

Layout: `<cache_dir>/<namespace>/<host>-<pid>-<start>.jsonl`. Each process appends to its own
segment (no locks, safe on a cluster's shared file system) and reads every segment at start.
Each entry is flushed and fsync'd as soon as its call returns, so a killed job keeps what it
paid for. A torn last line is ignored. Entries hold the request body and the answer: never
headers, never the API key. An answer that is paid for but unusable (empty, cut at max_tokens)
is cached too, marked `"unusable"` in its response: the same seeded request would only pay
again for the same answer; the backend counts it each time it is returned.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path


def cache_key(model: str, messages: list[dict], sampling: dict, sample_index: int) -> str:
    """Key of one call: model, messages, sampling parameters and the draw's index."""
    blob = json.dumps({"model": model, "messages": messages, "sampling": sampling,
                       "sample_index": sample_index}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def namespace(base_url: str, model: str) -> str:
    """A readable folder name for one endpoint+model."""
    raw = f"{base_url}|{model}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"^https?://", "", raw)).strip("_")[-80:]
    return f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


class CallCache:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        for seg in sorted(self.dir.glob("*.jsonl")):
            for line in seg.read_bytes().splitlines():
                try:
                    e = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # torn write from a killed job
                if isinstance(e, dict) and "key" in e and "response" in e:
                    self.entries[e["key"]] = e
        self.hits = 0
        self.misses = 0
        self._fh = None
        self._segment = self.dir / f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.jsonl"

    def get(self, key: str) -> dict | None:
        e = self.entries.get(key)
        if e is None:
            self.misses += 1
        else:
            self.hits += 1
        return e

    def put(self, key: str, request: dict, response: dict) -> None:
        entry = {"key": key, "request": request, "response": response, "time": time.time()}
        if self._fh is None:
            self._fh = open(self._segment, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.entries[key] = entry

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
