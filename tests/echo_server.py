"""An OpenAI-compatible endpoint on 127.0.0.1 that echoes the API key it is sent, the worst a hosted
API could do (tests/test_secrets.py): every 200 answer carries the key of the request's
`Authorization: Bearer <key>` header in its text (whole, and its last 20 characters as a hosted API's
"sk-...abcd" would), and in its id and model; a request that asks for logprobs is refused with an
HTTP 400 naming logprobs and the key (the client logs that refusal, then asks again without).

    with EchoServer() as es:
        es.url            # http://127.0.0.1:<port>/v1
        es.auth_seen      # Counter of the Authorization headers received
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo_answer(body: dict, key: str) -> dict:
    """A chat completion whose text echoes `key`; the verdict is NO for a prompt about rivers, else YES."""
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    verdict = "NO" if "rivers" in prompt.lower() else "YES"
    text = (f"Reason: the request came with the API key {key} (in short: ...{key[-20:]}).\n"
            f"Verdict: {verdict}")
    return {"id": f"chatcmpl-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}-{key}", "object": "chat.completion",
            "created": 0, "model": f"echo-{key}", "system_fingerprint": key,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": len(text.split()),
                      "total_tokens": max(1, len(prompt) // 4) + len(text.split())}}


class EchoServer:
    def __init__(self, port: int = 0):
        self.auth_seen: Counter = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                if self.path.split("?")[0].rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
                self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ")
                with outer.lock:
                    outer.auth_seen[auth] += 1
                body = json.loads(raw)
                if body.get("logprobs"):
                    return self._json(400, {"error": {"message": f"logprobs are not supported for the key {key}",
                                                      "type": "invalid_request_error"}})
                self._json(200, echo_answer(body, key))

            def _json(self, status: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EchoServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
