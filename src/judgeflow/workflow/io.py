"""JSONL and table I/O: line-numbered errors, atomic writes, append-and-resume.

Every stage writes its outputs whole or not at all (`atomic_path`), and long stages append
finished records to a checkpoint beside the output (`Checkpoint`) so a killed job resumes
where it stopped instead of starting over.

A checkpoint is bound to what made it: its first line holds the *fingerprint* of the job that wrote
it (`job_fingerprint`: the stage, its settings, its code digest, its wildcards and the content of
its inputs), and a job with another fingerprint starts over (and logs it) instead of mixing records
made under other settings, code or inputs. The workflow sets the fingerprint for the duration of a
job (`bound_to`); every `Checkpoint` opened meanwhile takes it.

Outputs honour the umask: `atomic_path` creates files as `open()` would, and `honour_umask` gives
files that libraries write with their own restrictive modes (safetensors writes 0600) the mode
that `open()` would have given them, so a team sharing a project space can read every output.
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from judgeflow.errors import InputError

log = logging.getLogger(__name__)


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, object) for each non-blank line of a JSONL file.

    Each line must be a JSON object holding the `required` keys; errors name file and line.
    """
    path = Path(path)
    required = tuple(required)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        if b"\\ud" in line.lower():  # a \uD800-\uDFFF escape: a lone one cannot be written back
            _check_surrogates(obj, f"{path}:{lineno}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise InputError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        yield lineno, obj


def _check_surrogates(obj: Any, where: str) -> None:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where}: holds a lone surrogate escape ({e.object[e.start:e.end]!r}), which is no "
                         "character: not valid Unicode text") from None


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """All records of a JSONL file (see `iter_jsonl`)."""
    return [obj for _, obj in iter_jsonl(path, required)]


def questions_by_id(path: str | os.PathLike) -> dict[str, dict]:
    """{question_id: question} of a question file (kept.jsonl, heldout.jsonl)."""
    return {q["question_id"]: q for q in read_jsonl(path, required=("question_id", "prompt"))}


def read_jsonl_many(paths: Iterable[str | os.PathLike], required: Iterable[str] = ()) -> list[dict]:
    out: list[dict] = []
    for p in paths:
        out.extend(read_jsonl(p, required))
    return out


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # created like open() creates a file (0666 less the umask), so the team can read the outputs
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give `path` (a file, or a directory and everything below it) the mode `open()` and `mkdir()`
    would have given it under the umask: 0666 (0777 for directories and executables) less the umask.

    For outputs that a library writes with its own mode (safetensors: 0600), so that teammates on a
    shared project space can load them."""
    mask = _umask()
    path = Path(path)
    todo = [path]
    if path.is_dir():
        todo += sorted(path.rglob("*"))
    for p in todo:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        full = 0o777 if p.is_dir() or mode & 0o111 else 0o666
        os.chmod(p, full & ~mask)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records atomically; returns the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(_dumps(r) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: Sequence[str] | None = None) -> None:
    fieldnames = fieldnames or (list(rows[0]) if rows else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


# ------------------------------------------------------------------------------ fingerprints

_FINGERPRINT: contextvars.ContextVar[str | None] = contextvars.ContextVar("judgeflow_fingerprint", default=None)
HASHED_BYTES = 64 * 2**20  # input files up to this size are hashed; larger ones (model weights) by size + mtime


def file_digest(path: str | os.PathLike) -> str:
    """A digest of a file's content, or of a directory's files (relative names and contents).

    Files over HASHED_BYTES (model weights, 100s of GB on a cluster) stand in by their size and
    modification time in ns: rewriting one (a new prepare_model, a retrained policy) changes it."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        try:
            st = f.stat()
        except FileNotFoundError:
            h.update(b"missing\0")
            continue
        if st.st_size > HASHED_BYTES:
            h.update(f"size={st.st_size} mtime_ns={st.st_mtime_ns}\0".encode())
        else:
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def job_fingerprint(identity: dict, inputs: dict[str, str | list[str]]) -> str:
    """What a job's checkpoints are bound to: `identity` (the stage, its settings param, its code
    digest, its wildcards: JSON) and the content of every input file or directory."""
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        paths = inputs[name]
        for p in [paths] if isinstance(paths, str) else paths:
            h.update(f"{name}\0{file_digest(p)}\0".encode())
    return h.hexdigest()[:32]


@contextlib.contextmanager
def bound_to(fingerprint: str | None) -> Iterator[None]:
    """Every Checkpoint opened inside the block is bound to `fingerprint` (the job's)."""
    token = _FINGERPRINT.set(fingerprint)
    try:
        yield
    finally:
        _FINGERPRINT.reset(token)


def current_fingerprint() -> str | None:
    """The fingerprint of the job running now (None outside a workflow job)."""
    return _FINGERPRINT.get()


_HEADER = "judgeflow_checkpoint"
_UNSET: Any = object()


class Checkpoint:
    """Append-only record log beside an output, for resuming a killed job.

    Each finished record is appended, flushed and fsync'd before the next is computed.
    A torn last line (a crash mid-write) is dropped on reload. `key` names the record field
    that identifies a unit of work, or a tuple of fields (the key is then the tuple of their values:
    structured, so no two different units can share it).

    The first line is a header holding the fingerprint of the job that wrote it (default: the
    current job's, `bound_to`). A checkpoint with another fingerprint, or none (an older judgeflow's),
    is removed with a warning and the work starts over: records made under other settings, code or
    inputs are never mixed with this job's.
    """

    def __init__(self, output: str | os.PathLike, key: str | tuple[str, ...], fingerprint: str | None = _UNSET):
        output = Path(output)
        self.path = output.with_name(f".{output.name}.checkpoint")
        self.key = key
        self.fingerprint = current_fingerprint() if fingerprint is _UNSET else fingerprint
        self.done: dict = {}
        if self.path.exists():
            lines = self.path.read_bytes().splitlines()
            found = _header_of(lines[0]) if lines else _UNSET
            if lines and found != self.fingerprint:
                what = "no fingerprint (torn, or an older judgeflow's)" if found is _UNSET else f"fingerprint {found}"
                log.warning("%s: made by another job (%s; this job's is %s): other settings, code or inputs. "
                            "Starting over, its %d record(s) unused", self.path, what, self.fingerprint,
                            max(len(lines) - 1, 0))
                self.path.unlink()
            else:
                for line in lines[1:]:
                    try:
                        rec = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue  # torn write from a killed job
                    self.done[self.key_of(rec)] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = None

    def key_of(self, record: dict):
        return tuple(record[f] for f in self.key) if isinstance(self.key, tuple) else record[self.key]

    def __contains__(self, key) -> bool:
        return key in self.done

    def add_many(self, records: Iterable[dict]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
            if not self._fh.tell():
                self._fh.write(_dumps({_HEADER: 1, "fingerprint": self.fingerprint}) + "\n")
            elif not _ends_with_newline(self.path):
                self._fh.write("\n")  # end a torn last line, so the next record is not glued to it
        for r in records:
            self._fh.write(_dumps(r) + "\n")
            self.done[self.key_of(r)] = r
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self, output: str | os.PathLike, order: Iterable, write: bool = True) -> list[dict]:
        """The records in `order` of keys. `write`: written atomically to `output`, then the checkpoint
        dropped; else the checkpoint stays, as the step's finished record (its caller removes it)."""
        order = list(order)
        if len(set(order)) != len(order):
            seen, dup = set(), None
            for k in order:
                if k in seen:
                    dup = k
                    break
                seen.add(k)
            raise InputError(f"{output}: two units of work share the key {dup!r}; their records would "
                             "overwrite each other")
        records = [self.done[k] for k in order]
        self.close()
        if write:
            write_jsonl(output, records)
            self.path.unlink(missing_ok=True)
        return records

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _header_of(line: bytes) -> Any:
    """The fingerprint a checkpoint's first line holds, or _UNSET if it is no (whole) header."""
    try:
        head = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _UNSET
    if not isinstance(head, dict) or head.get(_HEADER) != 1:
        return _UNSET
    return head.get("fingerprint")
