"""Secrets masked in every string judgeflow writes, whatever the path.

The API key of a model comes from the environment variable its `api_key_env` names. Once
registered here (`register_env`: the openai backend does it when it reads the key;
`register_config`: each Snakemake job, and the Snakemake process itself, for every model of the
config), the key is replaced by `[masked:<VARIABLE>]` (e.g. `[masked:OPENAI_API_KEY]`):

* in the answers of an API (text, before they reach the cache, a record or a log: an endpoint
  that echoes the key in a 200 answer gets it masked), the request bodies the cache stores and
  the backend's error messages (`judgeflow.models.openai_api`);
* in every log record of the process (a log-record factory: whatever the logger or handler,
  the message and its traceback), in Python warnings, and in the traceback of an uncaught
  exception (`sys.excepthook`, `threading.excepthook`; a Snakemake job prints its failure's
  traceback masked itself, `judgeflow.workflow.smk.run`).

A run of at least `PARTIAL_LEN` consecutive characters of a key is masked too, since hosted
APIs echo keys partly ("Incorrect API key provided: sk-...abcd1234"). A value shorter than
`MIN_SECRET_LEN` characters is never registered: masking it would mask ordinary words (a local
server's "EMPTY" key, say), and a key that short is no secret anyway.

Not masked: output written by child processes at the file-descriptor level (a served model's
`transformers serve`, `accelerate launch`): they never receive a key.

Also here: `looks_like_key` (a value of `api_key_env` that is a key, not a variable's name) and
`url_credentials` (a `base_url` with a user name, password or key in it), which the settings
refuse with an error that does not echo the value.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
import warnings
from urllib.parse import parse_qsl, urlsplit

MIN_SECRET_LEN = 8
PARTIAL_LEN = 16

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # the secret -> the name it is masked as
# (the pattern of every piece to mask, {piece: the name}), replaced whole (readers take no lock)
_state: tuple[re.Pattern, dict[str, str]] | None = None
_installed = False


def mask_text(name: str) -> str:
    return f"[masked:{name}]"


def register(secret: str | None, name: str) -> bool:
    """Mask `secret` as `[masked:<name>]` from now on in this process. False (and nothing
    registered) for a value shorter than MIN_SECRET_LEN."""
    global _state
    if not secret or len(secret) < MIN_SECRET_LEN:
        return False
    with _lock:
        if _secrets.get(secret) == name:
            return True
        _secrets[secret] = name
        pieces: dict[str, str] = {}
        for s, n in _secrets.items():
            if len(s) > PARTIAL_LEN:  # every run of PARTIAL_LEN characters of it
                for i in range(len(s) - PARTIAL_LEN + 1):
                    pieces.setdefault(s[i:i + PARTIAL_LEN], n)
            else:
                pieces.setdefault(s, n)
        # longest first; a lookahead finds overlapping occurrences
        alts = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
        _state = (re.compile(f"(?=({alts}))"), pieces)
    install()
    return True


def register_env(variable: str | None, environ=None) -> bool:
    """Register the value of the environment variable `variable` (if set), masked by its name."""
    if not variable:
        return False
    return register((os.environ if environ is None else environ).get(variable), variable)


def register_config(config) -> list[str]:
    """Register the key of every model of a config whose `api_key_env` variable is set (a
    Snakemake job for its stage, the Snakemake process for its own log); the variables' names."""
    names = []
    for spec in ((config or {}).get("models") or {}).values():
        env = spec.get("api_key_env") if isinstance(spec, dict) else None
        if isinstance(env, str) and ENV_NAME.match(env) and register_env(env):
            names.append(env)
    return names


def clear() -> None:
    """Forget every registered secret (tests)."""
    global _state
    with _lock:
        _secrets.clear()
        _state = None


def active() -> bool:
    return _state is not None


def mask(text):
    """`text` with every registered secret (and every long enough run of one) masked; anything
    that is not a string comes back as it is."""
    state = _state
    if state is None or not isinstance(text, str) or not text:
        return text
    pattern, owner = state
    spans: list[list] = []
    for m in pattern.finditer(text):
        start, end = m.start(), m.start() + len(m.group(1))
        if spans and start <= spans[-1][1]:  # overlapping or adjacent: one masked run
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end, owner.get(m.group(1), "secret")])
    if not spans:
        return text
    out, at = [], 0
    for start, end, name in spans:
        out += [text[at:start], mask_text(name)]
        at = end
    out.append(text[at:])
    return "".join(out)


def mask_obj(obj):
    """A copy of a JSON-like value (dicts, lists, strings) with every string masked."""
    if _state is None:
        return obj
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, dict):
        return {mask(k): mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(mask_obj(v) for v in obj)
    return obj


def format_exception(e: BaseException) -> str:
    """The traceback of `e` (causes and contexts included) as Python prints it, masked."""
    return mask("".join(traceback.format_exception(type(e), e, e.__traceback__)))


# ------------------------------------------------------------------- the process's own output


def install() -> None:
    """Mask every log record (message and traceback), warning and uncaught exception's traceback
    of this process. Idempotent; does nothing visible while no secret is registered."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if _state is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it itself later
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if mask(text) != text:
                record.exc_text = mask(text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)

    def excepthook(tp, value, tb):
        sys.stderr.write(mask("".join(traceback.format_exception(tp, value, tb))))
        sys.stderr.flush()

    def thread_excepthook(a):
        if a.exc_type is SystemExit:
            return
        where = getattr(a.thread, "name", "?")
        sys.stderr.write(f"Exception in thread {where}:\n"
                         + mask("".join(traceback.format_exception(a.exc_type, a.exc_value, a.exc_traceback))))
        sys.stderr.flush()

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda *a, **k: mask(formatwarning(*a, **k))


# ------------------------------------------------------------------ secrets where they do not belong

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# prefixes of API keys and tokens (OpenAI-style sk-, Hugging Face hf_, Groq gsk_, GitHub ghp_, ...)
KEY_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "hf_", "gsk_", "ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "xai-",
                "pplx-", "r8_", "nvapi-", "AIza", "xox")


def looks_like_key(value: str) -> bool:
    """True when a value given as an environment variable's NAME is no such name, or looks like a
    key or token itself: a known key prefix, or a long random-looking run (a name is words and
    underscores: OPENAI_API_KEY, DEEPSEEK_API_KEY)."""
    if not ENV_NAME.match(value):
        return True
    if len(value) >= 20 and value.startswith(KEY_PREFIXES):
        return True
    if any(len(part) >= 20 and re.search(r"\d", part) for part in value.split("_")):
        return True  # a long run with digits and no word breaks: hex, base62
    return len(value) >= 24 and bool(re.search(r"[a-z]", value) and re.search(r"[A-Z]", value)
                                     and re.search(r"\d", value))


# a query parameter whose name says it carries a credential: api-key, key, token, access_token, sig, ...
_SECRET_PARAM = re.compile(r"(key|token|secret|passw(or)?d|pwd|auth|credential|signature|^sig$|^code$)")


def url_credentials(url: str) -> str | None:
    """What credential a URL holds ("a user name and password (user:password@host)", "the query
    parameter 'api-key'"), or None. Never the credential itself."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc:
        return ("a user name and password (user:password@host)" if ":" in parts.netloc.rsplit("@", 1)[0]
                else "a user name or token (user@host)")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if not value and (len(name) >= 20 or name.startswith(KEY_PREFIXES)):
            return "a query string that looks like a key"
        if _SECRET_PARAM.search(name.lower().replace("-", "_")):
            return f"the query parameter '{name}'" if len(name) <= 32 else "a query parameter named like a key"
    if parts.fragment and "=" in parts.fragment:
        for name, _ in parse_qsl(parts.fragment, keep_blank_values=True):
            if _SECRET_PARAM.search(name.lower().replace("-", "_")):
                return f"the fragment parameter '{name}'"
    return None
