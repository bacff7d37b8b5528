"""Start a local OpenAI-compatible server (`transformers serve`) for the rules that need it.

Used when a model's config has a `serve:` block (the embedded demo's oracle): the server is
started on 127.0.0.1 before the stage's calls and stopped after, inside the same job, so it
works the same on a laptop and on a compute node.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from judgeflow.errors import BackendError, ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def transformers_server(name: str, model_path: str, log_path: str | os.PathLike, port: int | None = None,
                        device: str = "cpu", startup_timeout: float = 180.0,
                        threads: int | None = None) -> Iterator[str]:
    """Run `transformers serve MODEL` on 127.0.0.1; yield its base URL (`http://127.0.0.1:P/v1`)."""
    if not Path(model_path, "config.json").exists():
        raise ConfigError(f"models.{name}.serve.path: no model at '{model_path}' "
                          "(expected a transformers directory with config.json)")
    exe = shutil.which("transformers", path=os.path.dirname(sys.executable)) or shutil.which("transformers")
    if exe is None:
        raise BackendError("the `transformers` command is not installed (pip install 'transformers[serving]')")
    port = port or free_port()
    host = f"http://127.0.0.1:{port}"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [exe, "serve", str(model_path), "--device", device, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as logfh:
        proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(f"{host}/health"):
            if proc.poll() is not None:
                raise BackendError(f"model {name}: `transformers serve` exited with code {proc.returncode} "
                                   f"before answering on {host}; last lines of {log_path}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise BackendError(f"model {name}: `transformers serve` did not come up on {host} within "
                                   f"{startup_timeout:.0f}s; last lines of {log_path}:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield f"{host}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
