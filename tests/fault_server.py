"""A real HTTP server on 127.0.0.1 that injects faults in front of an OpenAI-compatible endpoint.

It either stands in for the endpoint itself (a deterministic answer per request: the same
body always gets the same completion) or proxies to a real one (`upstream=`, e.g. the URL of
`transformers serve`). Before a request reaches the upstream, a seeded schedule decides
whether this *attempt* is faulted; a faulted attempt never reaches the upstream, so it is
never paid for:

    429     HTTP 429 with `Retry-After: <retry_after>` (seconds)
    500     HTTP 500 with an error body
    503     HTTP 503 with an error body
    close   the connection is closed without a response
    partial headers and half of a body, then the connection is closed
    stall   nothing for `stall_s` seconds (past the client's timeout), then closed
    badjson HTTP 200, application/json, and a body that is not JSON
    null    HTTP 200, a chat completion whose content is null (a transient glitch)

The schedule is a function of (seed, sha256 of the request body, how many times this body
arrived before), so it does not depend on the order in which concurrent requests arrive.
At most `max_in_a_row` consecutive attempts of one body are faulted (so a client with that
many retries always gets through). Counters: attempts, faults by kind, upstream calls per
distinct body (`paid`), and the arrival times of every attempt (to check Retry-After).

It also serves a Batch API (`/v1/files`, `/v1/batches`): an uploaded JSONL of chat requests
is answered by the same upstream (each answer counted in `paid`, as a synchronous call would be)
once the batch has been polled `batch_polls` times. `batch_outcome` makes it end completed, expired
or failed, `batch_answered` is the share of requests answered by an expired or failed batch, and
`batch_hold` (an Event, set = hold) keeps every batch in progress (kill tests).

Faults of `batches.create` (`batch_create_faults`, a list: each create call takes the first one
left, then the list is empty and creates succeed):

    close_after  the batch is created, then the connection is closed without a response
    500_after    the batch is created, then the answer is HTTP 500
    stall_after  the batch is created, then nothing for `stall_s` seconds, then closed
    close, 500   the connection is closed / HTTP 500, and no batch is created

A batch keeps the `metadata` it was created with; `GET /v1/batches` lists them newest first with
`after`/`limit` pagination (`has_more`; `batch_list_cap` caps a page, to exercise pagination);
`POST /v1/batches/<id>/cancel` cancels one that has not ended (HTTP 409 for one that has).
Billing, as a provider bills: a batch that is not cancelled is billed for its requests whether or
not anyone polls it (the stand-in answers them only at the poll that ends it); a batch cancelled
before it ended is billed nothing (`batches_billed`, `requests_billed`, `batches_cancelled`).

Run alone (`python tests/fault_server.py --rate 0.3`) it serves until interrupted.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("429", "500", "503", "close", "partial", "stall", "badjson", "null")


def _u(*parts) -> float:
    """A uniform number in [0, 1) from a hash of the parts (seeded, order-free)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def standin_answer(body: dict) -> dict:
    """The stand-in upstream: a deterministic chat completion for a request body.

    Mostly "Verdict: YES" / "Verdict: NO" with a reason; about 1 in 12 answers has no verdict
    line and 1 in 12 stops at max_tokens (finish_reason "length"), so the client's handling of
    unusable answers is exercised too. (An empty answer is a fault of the schedule, `null`: the
    client retries it, as it would a hosted API's glitch.)
    """
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    u = _u("answer", json.dumps(body.get("messages"), sort_keys=True), body.get("seed"))
    finish = "stop"
    if u < 0.08:
        text, finish = "The question is about", "length"
    elif u < 0.16:
        text = "I am not sure what to make of this."
    else:
        verdict = "YES" if _u("verdict", prompt, body.get("seed")) < 0.7 else "NO"
        text = f"Reason: stand-in decision for a prompt of {len(prompt)} characters.\nVerdict: {verdict}"
    n_prompt = max(1, len(prompt) // 4)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": standin_logprobs(text, prompt, body.get("seed"))}
    return {"id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:12], "object": "chat.completion",
            "created": 0, "model": body.get("model", "standin"), "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(text.split()),
                      "total_tokens": n_prompt + len(text.split())}}


def standin_logprobs(text: str, prompt: str, seed) -> list[dict]:
    """Token log-probabilities for a stand-in answer: its words as tokens; the word after "Verdict:"
    has YES and NO among its top tokens, P(YES) from a hash (a prompt with "[no-choice]" in it gets
    top tokens without them, as an endpoint can)."""
    import math

    out = []
    for i, word in enumerate(re.findall(r"\S+|\s+", text)):
        tops = [{"token": word, "logprob": -0.1}]
        if i > 0 and out[-2:] and "Verdict:" in "".join(t["token"] for t in out[-2:]) and word.strip():
            p_yes = 0.05 + 0.9 * _u("p_yes", prompt, seed)
            tops = ([{"token": "maybe", "logprob": -0.1}, {"token": "sure", "logprob": -2.0}]
                    if "[no-choice]" in prompt else
                    [{"token": "YES", "logprob": math.log(p_yes)}, {"token": "NO", "logprob": math.log(1 - p_yes)}])
        out.append({"token": word, "logprob": tops[0]["logprob"], "top_logprobs": tops})
    return out


class FaultServer:
    """`with FaultServer(rate=0.3, seed=1) as fs: fs.url` -> "http://127.0.0.1:<port>/v1"."""

    def __init__(self, rate: float = 0.0, seed: int = 0, kinds=KINDS, upstream: str | None = None,
                 api_key: str | None = None, retry_after: int = 1, stall_s: float = 3.0,
                 max_in_a_row: int = 3, delay_s: float = 0.0, port: int = 0):
        self.rate, self.seed, self.kinds = rate, seed, tuple(kinds)
        self.upstream = upstream.rstrip("/") if upstream else None
        self.api_key, self.retry_after, self.stall_s = api_key, retry_after, stall_s
        self.max_in_a_row, self.delay_s = max_in_a_row, delay_s
        self.lock = threading.Lock()
        self.attempts = 0
        self.faults: Counter = Counter()
        self.paid: Counter = Counter()          # upstream calls answered, per body digest
        self.billed: Counter = Counter()        # the tokens of the answers paid: prompt_tokens, completion_tokens
        self.arrivals: dict[str, list[tuple[float, str]]] = defaultdict(list)  # digest -> [(time, outcome)]
        self.auth_seen: Counter = Counter()     # Authorization headers seen (for the secrets test)
        self.gate: int | None = None            # hold requests once this many upstream calls were paid
        self.gate_open = threading.Event()
        self.gate_open.set()
        self.held = 0
        # the Batch API
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls, self.batch_outcome, self.batch_answered = 1, "completed", 0.5
        self.batch_hold = threading.Event()
        self.batch_create_faults: list[str] = []   # faults of the next batches.create calls, in order
        self.batch_create_calls = 0                 # POST /v1/batches received (faulted ones included)
        self.batch_list_cap: int | None = None      # at most this many batches per list page
        self._stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive sockets

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})
                elif path.startswith("/v1/files/") and path.endswith("/content"):
                    data = outer.files.get(path.split("/")[3])
                    if data is None:
                        return self._json(404, {"error": {"message": f"no file {path}"}})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif path == "/v1/batches":
                    self._json(200, outer._list_batches(self.path))
                elif path.startswith("/v1/batches/"):
                    b = outer.batches.get(path.split("/")[3])
                    if b is None:
                        return self._json(404, {"error": {"message": f"no batch {path}"}})
                    self._json(200, outer._poll(b, self.headers.get("Authorization", "")))
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                path = self.path.rstrip("/")
                if path == "/v1/files":
                    return self._json(200, outer._upload(self.headers.get("Content-Type", ""), raw))
                if path == "/v1/batches":
                    return outer._create_batch_faulted(self, json.loads(raw))
                if path.startswith("/v1/batches/") and path.endswith("/cancel"):
                    return self._json(*outer._cancel_batch(path.split("/")[3]))
                if path != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                outer._handle(self, raw)

            def _json(self, status: int, obj, extra: dict | None = None):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    # --- the schedule -------------------------------------------------------------------
    def _fault_for(self, digest: str, index: int, in_a_row: int) -> str | None:
        if not self.rate or in_a_row >= self.max_in_a_row or _u(self.seed, "fault?", digest, index) >= self.rate:
            return None
        return self.kinds[int(_u(self.seed, "kind", digest, index) * len(self.kinds))]

    def _handle(self, h, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            return h._json(400, {"error": {"message": "request body is not JSON"}})
        auth = h.headers.get("Authorization", "")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.lock:
            self.attempts += 1
            self.auth_seen[auth] += 1
            past = self.arrivals[digest]
            in_a_row = 0
            for _, o in reversed(past):
                if o == "ok" or o == "held":
                    break
                in_a_row += 1
            kind = self._fault_for(digest, len(past), in_a_row)
            past.append((time.monotonic(), kind or "ok"))
            if kind:
                self.faults[kind] += 1
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            # like a hosted API, the error echoes (part of) the key it was given
            return h._json(401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}",
                                           "type": "invalid_request_error"}})
        if kind == "429":
            return h._json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                           {"Retry-After": str(self.retry_after)})
        if kind in ("500", "503"):
            return h._json(int(kind), {"error": {"message": f"injected {kind}", "type": "server_error"}})
        if kind == "close":
            return self._drop(h)
        if kind == "partial":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "400")
            h.end_headers()
            h.wfile.write(b'{"id": "chatcmpl-x", "choices": [{"index": 0, "mess')
            h.wfile.flush()
            return self._drop(h)
        if kind == "stall":
            time.sleep(self.stall_s)
            return self._drop(h)
        if kind == "null":
            return h._json(200, {"id": "chatcmpl-null", "object": "chat.completion", "created": 0,
                                 "model": body.get("model", "standin"),
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                              "finish_reason": "stop"}]})
        if kind == "badjson":
            data = b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0, "message": '
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        # not faulted: wait at the gate (kill tests), then the upstream answers (and is paid)
        if not self.gate_open.is_set():
            with self.lock:
                self.held += 1
                past[-1] = (past[-1][0], "held")
            self.gate_open.wait()
            return self._drop(h)  # the client that sent it is gone; never forwarded, never paid
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            status, answer = self._upstream(body, auth)
        except Exception as e:  # noqa: BLE001 - the proxy reports upstream trouble as a 502
            return h._json(502, {"error": {"message": f"upstream failed: {type(e).__name__}"}})
        if status == 200:
            with self.lock:
                self.paid[digest] += 1
                self._bill(answer, batch=False)
                if self.gate is not None and sum(self.paid.values()) >= self.gate:
                    self.gate_open.clear()
        h._json(status, answer)

    def _bill(self, answer: dict, batch: bool) -> None:
        """Count the tokens of a paid answer, as a provider bills them (under the lock)."""
        usage = answer.get("usage") or {}
        for k in ("prompt_tokens", "completion_tokens"):
            self.billed[("batch_" if batch else "") + k] += int(usage.get(k) or 0)

    def _upstream(self, body: dict, auth: str) -> tuple[int, dict]:
        if self.upstream is None:
            return 200, standin_answer(body)
        req = urllib.request.Request(self.upstream + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": auth or "Bearer x"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    # --- the Batch API ----------------------------------------------------------------------
    def _upload(self, content_type: str, raw: bytes) -> dict:
        from email.parser import BytesParser
        from email.policy import HTTP

        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        data, purpose = b"", ""
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                data = part.get_payload(decode=True)
            elif name == "purpose":
                purpose = part.get_content().strip()
        with self.lock:
            fid = f"file-{len(self.files) + 1:04d}"
            self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "batch.jsonl", "purpose": purpose or "batch", "status": "processed"}

    def _create_batch(self, body: dict) -> dict:
        with self.lock:
            bid = f"batch_{len(self.batches) + 1:04d}"
            lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
            self.batches[bid] = {"id": bid, "input_file_id": body["input_file_id"], "lines": lines, "polls": 0,
                                 "status": "validating", "output_file_id": None, "error_file_id": None,
                                 "completed": 0, "failed": 0, "metadata": body.get("metadata"),
                                 "created_at": int(time.time()), "cancelled_before_end": False}
            return self._batch_view(self.batches[bid])

    def _create_batch_faulted(self, h, body: dict) -> None:
        with self.lock:
            self.batch_create_calls += 1
            fault = self.batch_create_faults.pop(0) if self.batch_create_faults else None
        if fault == "close":
            return self._drop(h)
        if fault == "500":
            return h._json(500, {"error": {"message": "injected 500", "type": "server_error"}})
        view = self._create_batch(body)
        if fault == "close_after":
            return self._drop(h)
        if fault == "500_after":
            return h._json(500, {"error": {"message": "injected 500 after create", "type": "server_error"}})
        if fault == "stall_after":
            self._stopping.wait(self.stall_s)
            return self._drop(h)
        h._json(200, view)

    def _list_batches(self, raw_path: str) -> dict:
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(raw_path).query)
        limit = max(1, min(100, int(q.get("limit", ["20"])[0])))
        if self.batch_list_cap:
            limit = min(limit, self.batch_list_cap)
        with self.lock:
            ordered = [self._batch_view(b) for b in reversed(list(self.batches.values()))]  # newest first
        after = q.get("after", [None])[0]
        if after is not None:
            ids = [b["id"] for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = ordered[:limit]
        return {"object": "list", "data": page, "has_more": len(ordered) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    def _cancel_batch(self, bid: str) -> tuple[int, dict]:
        with self.lock:
            b = self.batches.get(bid)
            if b is None:
                return 404, {"error": {"message": f"no batch {bid}"}}
            if b["status"] in ("completed", "failed", "expired", "cancelled", "finalizing"):
                return 409, {"error": {"message": f"Cannot cancel a batch with status '{b['status']}'.",
                                       "type": "invalid_request_error"}}
            b["status"], b["cancelled_before_end"] = "cancelled", True
            return 200, self._batch_view(b)

    def _poll(self, b: dict, auth: str) -> dict:
        with self.lock:
            b["polls"] += 1
            if b["status"] in ("completed", "failed", "expired", "cancelled", "finalizing") or self.batch_hold.is_set():
                return self._batch_view(b)
            if b["polls"] < self.batch_polls:
                b["status"] = "in_progress"
                return self._batch_view(b)
            outcome, share = self.batch_outcome, self.batch_answered
            b["status"] = "finalizing"   # ends at this poll: no longer cancellable
        n = len(b["lines"]) if outcome == "completed" else int(len(b["lines"]) * share)
        out = []
        for rec in b["lines"][:n]:
            status, answer = self._upstream(rec["body"], auth)
            if status == 200:
                digest = hashlib.sha256(json.dumps(rec["body"], sort_keys=True).encode()).hexdigest()
                with self.lock:
                    self.paid[digest] += 1
                    self._bill(answer, batch=True)
            out.append({"id": f"req-{len(out)}", "custom_id": rec["custom_id"], "error": None,
                        "response": {"status_code": status, "request_id": f"r{len(out)}", "body": answer}})
        with self.lock:
            if out:
                fid = f"file-{len(self.files) + 1:04d}"
                self.files[fid] = "".join(json.dumps(o) + "\n" for o in out).encode()
                b["output_file_id"] = fid
            b["completed"] = sum(1 for o in out if o["response"]["status_code"] == 200)
            b["failed"] = len(b["lines"]) - b["completed"] if outcome == "completed" else len(out) - b["completed"]
            b["status"] = outcome
            return self._batch_view(b)

    @staticmethod
    def _batch_view(b: dict) -> dict:
        return {"id": b["id"], "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                "input_file_id": b["input_file_id"], "completion_window": "24h", "status": b["status"],
                "output_file_id": b["output_file_id"], "error_file_id": b["error_file_id"],
                "created_at": b.get("created_at", 0),
                "metadata": b["metadata"],
                "request_counts": {"total": len(b["lines"]), "completed": b["completed"], "failed": b["failed"]}}

    def batches_created(self) -> int:
        return len(self.batches)

    def batches_billed(self) -> int:
        """Batches a provider bills: every one not cancelled before it ended, polled or not."""
        with self.lock:
            return sum(1 for b in self.batches.values() if not b["cancelled_before_end"])

    def batches_cancelled(self) -> int:
        with self.lock:
            return sum(1 for b in self.batches.values() if b["cancelled_before_end"])

    def requests_billed(self) -> int:
        """Requests a provider bills: those answered by an ended batch, and all of those of a batch
        still under way (it will answer them, whether or not anyone polls it)."""
        with self.lock:
            return sum(b["completed"] if b["status"] in ("completed", "failed", "expired") else len(b["lines"])
                       for b in self.batches.values() if not b["cancelled_before_end"])

    @staticmethod
    def _drop(h) -> None:
        try:
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        h.close_connection = True

    # --- results --------------------------------------------------------------------------
    def distinct(self) -> int:
        return len(self.paid)

    def paid_twice(self) -> int:
        return sum(c - 1 for c in self.paid.values() if c > 1)

    def upstream_calls(self) -> int:
        return sum(self.paid.values())

    def summary(self) -> dict:
        with self.lock:
            return {"attempts": self.attempts, "faulted": sum(self.faults.values()),
                    "faults": dict(sorted(self.faults.items())), "upstream_calls": sum(self.paid.values()),
                    "distinct_requests": len(self.paid), "paid_twice": self.paid_twice()}

    def release_gate(self) -> None:
        self.gate = None
        self.gate_open.set()

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate_open.set()
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", help="proxy to this OpenAI-compatible base URL instead of standing in")
    args = ap.parse_args()
    fs = FaultServer(rate=args.rate, seed=args.seed, upstream=args.upstream, port=args.port).start()
    print(fs.url, flush=True)
    try:
        while True:
            time.sleep(5)
            print(json.dumps(fs.summary()), flush=True)
    except KeyboardInterrupt:
        fs.stop()


# --- driving the oracle stages against a FaultServer (tests and benchmarks/faults.py) -------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
VOLATILE = {"cached", "models", "asked_this_run", "from_checkpoint"}  # differ between runs, by design


def stage_config(root, url: str, *, timeout: float = 2.0, max_retries: int = 5, max_concurrency: int = 8,
                 api_key_env: str | None = None, batch_size: int = 8, model: str = "standin", **overrides) -> dict:
    """The shipped config with the oracle roles on model `flaky` (openai backend at `url`),
    results/logs/cache under `root`."""
    import yaml

    from judgeflow.workflow import settings as jf_settings

    from conftest import PROMPT_JUDGES

    flaky = {"backend": "openai", "base_url": url, "model": model, "timeout": timeout,
             "max_retries": max_retries, "max_concurrency": max_concurrency}
    if api_key_env:
        flaky["api_key_env"] = api_key_env
    merged = {"results_dir": str(root / "results"), "logs_dir": str(root / "logs"),
              "benchmarks_dir": str(root / "benchmarks"), "cache_dir": str(root / "cache"),
              "models": {"flaky": flaky},
              # the demo cleans answer-first in-process; a served cleaner writes its verdict line
              "cleaning": {"model": "flaky", "max_new_tokens": 32, "answer_first": False, "template": "clean"},
              "questions": {"heldout": 2},
              "judging": PROMPT_JUDGES,  # no calibration split: these runs have a few dozen questions
              "oracle": {"labeller": "flaky", "max_new_tokens": 32, "batch_size": batch_size, "budget": 400,
                         "label_all_accepted": True}}
    merged = jf_settings.deep_merge(merged, overrides)
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    # the label stage as these tests drive it: the fixed sequence, no proxy scores to read
    raw["oracle"].pop("strategy_options", None)
    raw["oracle"].update(strategy="fixed_sequence", proxy="none", replay_runs=0)
    return jf_settings.validate(jf_settings.deep_merge(raw, merged))


def write_questions(path, n: int, bad: bool = True) -> list[dict]:
    """n prepared questions (with criteria); with `bad`, one empty and one huge prompt more."""
    qs = [{"question_id": f"q{i:03d}", "prompt": f"Question {i}: name {i % 7 + 1} things about topic {i}.",
           "source": "jsonl", "criteria": [{"criterion_id": "c0", "description": f"Exactly {i % 7 + 1} items.",
                                            "kind": "given"}]} for i in range(n)]
    if bad:
        qs += [{"question_id": "empty", "prompt": "  ", "source": "jsonl", "criteria": []},
               {"question_id": "huge", "prompt": "x" * 25000, "source": "jsonl", "criteria": []}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(q) + "\n" for q in qs))
    return qs


def write_draws(path, questions: list[dict], n_max: int = 4, seed: int = 0) -> list[dict]:
    """Draw records as sample_until_accept writes them: a seeded first accept per question (or none)."""
    out = []
    for q in questions:
        qid = q["question_id"]
        u = _u(seed, "accept", qid)
        n_accept = None if u > 0.85 else 1 + int(u / 0.85 * n_max)
        for r in range(1, (n_accept or n_max) + 1):
            acc = r == n_accept
            out.append({"draw_id": f"{qid}/d{r}", "question_id": qid, "draw": r, "model": "policy",
                        "text": f"Answer {r} to {qid}: " + ", ".join(f"item{k}" for k in range(r + 1)),
                        "accepted": acc, "failed": [] if acc else ["c0"], "first_accept": acc,
                        "n_accept": n_accept, "n_max": n_max})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in out))
    return out


def paths(root) -> dict:
    r = root / "results" / "run"
    return {"questions": root / "data" / "questions.jsonl", "draws": root / "data" / "draws.jsonl",
            "kept": r / "questions" / "kept.jsonl", "rejected": r / "questions" / "rejected.jsonl",
            "heldout": r / "questions" / "heldout.jsonl", "cleaning": r / "questions" / "cleaning.json",
            "calibration": r / "questions" / "calibration.jsonl",
            "labels": r / "oracle" / "labels.jsonl", "nstar": r / "oracle" / "nstar.json",
            "curve_csv": r / "oracle" / "tp_curve.csv", "curve_png": r / "oracle" / "tp_curve.png",
            "fit": r / "oracle" / "fit.json", "log_dir": root / "logs" / "run"}


def run_clean(config: dict, p: dict) -> None:
    """clean_questions as the workflow runs it (exactly its declared settings)."""
    from judgeflow.workflow.pipeline import run_stage

    run_stage("clean_questions", {"questions": str(p["questions"])},
              {k: str(p[k]) for k in ("kept", "rejected", "heldout", "calibration")} | {"summary": str(p["cleaning"])},
              config, log_dir=str(p["log_dir"]))


def run_label(config: dict, p: dict) -> None:
    """label_oracle as the workflow runs it."""
    from judgeflow.workflow.pipeline import run_stage

    run_stage("label_oracle", {"kept": str(p["kept"]), "draws": [str(p["draws"])]},
              {"labels": str(p["labels"]), "nstar": str(p["nstar"]), "curve": str(p["curve_csv"]),
               "plot": str(p["curve_png"]), "fit": str(p["fit"])}, config, log_dir=str(p["log_dir"]))


def fingerprint(p: dict) -> dict:
    """Every output of the two stages, minus what differs between runs by design (cache hits,
    call statistics): {name: text}."""
    out = {}
    for name in ("kept", "rejected", "heldout", "labels"):
        recs = [json.loads(l) for l in p[name].read_text().splitlines()]
        out[name] = "\n".join(json.dumps(_strip(r)) for r in recs)
    for name in ("cleaning", "nstar", "fit"):
        out[name] = json.dumps(_strip(json.loads(p[name].read_text())), sort_keys=True)
    out["curve_csv"] = p["curve_csv"].read_text()
    return out


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    return obj
