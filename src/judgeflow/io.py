"""JSONL and table I/O: line-numbered errors, atomic writes, append-and-resume.

Every stage writes its outputs whole or not at all (`atomic_path`), and long stages append
finished records to a checkpoint beside the output (`Checkpoint`) so a killed job resumes
where it stopped instead of starting over.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input data: the message names the file, the line and what was expected."""


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


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    fieldnames = fieldnames or (list(rows[0]) if rows else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class Checkpoint:
    """Append-only record log beside an output, for resuming a killed job.

    Each finished record is appended, flushed and fsync'd before the next is computed.
    A torn last line (a crash mid-write) is dropped on reload. `key` names the record field
    that identifies a unit of work, or a tuple of fields (the key is then the tuple of their values:
    structured, so no two different units can share it).
    """

    def __init__(self, output: str | os.PathLike, key: str | tuple[str, ...]):
        output = Path(output)
        self.path = output.with_name(f".{output.name}.checkpoint")
        self.key = key
        self.done: dict = {}
        if self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # torn write from a killed job
                self.done[self.key_of(rec)] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def key_of(self, record: dict):
        return tuple(record[f] for f in self.key) if isinstance(self.key, tuple) else record[self.key]

    def __contains__(self, key) -> bool:
        return key in self.done

    def add_many(self, records: Iterable[dict]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
            if self._fh.tell() and not _ends_with_newline(self.path):
                self._fh.write("\n")  # end a torn last line, so the next record is not glued to it
        for r in records:
            self._fh.write(_dumps(r) + "\n")
            self.done[self.key_of(r)] = r
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self, output: str | os.PathLike, order: Iterable) -> int:
        """Write the output atomically in `order` of keys, then drop the checkpoint."""
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
        n = write_jsonl(output, (self.done[k] for k in order))
        self.close()
        self.path.unlink(missing_ok=True)
        return n

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
