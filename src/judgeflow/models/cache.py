"""Persistent on-disk cache of API calls, shared across runs and across parallel jobs.

Layout: `<cache_dir>/<namespace>/<host>-<pid>-<start_ms>[.n].jsonl` (a *segment*) and beside
each segment `<same name>.idx` (its *index*). Entries hold the request body and the answer:
never headers, never the API key. An answer that is paid for but unusable (empty, cut at
max_tokens) is cached too, marked `"unusable"` in its response: the same seeded request would
only pay again for the same answer; the backend counts it each time it is returned.

Segment: one JSON entry a line, `{"key", "request", "response", "time", "sum"}`. `sum` is the
line's own checksum: the first 16 bytes, in hex (32 digits), of the sha256 of the canonical JSON
of the entry's other fields (`json.dumps(fields, sort_keys=True, ensure_ascii=False,
separators=(",", ":"))`, UTF-8), computed by `put` over the entry exactly as a reader parses it
back; `get` returns those fields (without `sum`), so what is returned is exactly what was
checksummed (key, request and answer). `put` writes the line as that canonical JSON with
`,"sum":"<32 hex digits>"` appended as its last member, so a reader checks it by hashing the
line's bytes before `,"sum"` (one sha256 of the line, no re-serialising); a line laid out
otherwise (rewritten by another tool) is checked by serialising its parsed fields canonically.

Index: a 16-byte header (magic `JFCACHEI`, version u32, record size u32) then one 32-byte
little-endian record per complete segment line, in file order: `key` (first 8 bytes of
sha256(entry key)), `offset` u64 and `length` u32 of the line (with its newline), `crc` u32
(zlib.crc32 of the line), `flags` u32 (1: an entry, 0: a line that is not one: garbage left by a
corruption, a damaged line, an unverifiable legacy line) and `check` u32 (a multiply-xor mix of
the other fields, so a damaged record is found with vectorised numpy). The index only locates
lines; it never vouches for a line that carries a checksum.

Checking: every line is checked when it is read (`get`) and when a segment is scanned (an index
built or rebuilt, lines after the last indexed one): a line whose `sum` does not match (damaged
or edited, whatever its length) is never returned and never indexed as an entry; it is a miss,
logged with its segment's path and byte offset. Intact lines stay hits.

Legacy lines (`{"key", "request", "response", "time"}`, no `sum`: in users' caches, and written
by older judgeflow versions still running beside this one) cannot check themselves. One is
returned only while an index record vouches for it: an entry record with the same key prefix,
length and crc32 of the whole line, i.e. the record its writer wrote, or the one an earlier
judgeflow's one-time migration wrote for a segment from before the index. A line edited since is
a miss, logged. A scan never makes an entry of a legacy line from its bytes alone: a rebuild
keeps the legacy lines that a surviving record (valid check value) vouches for, and the others
(a segment from before the index that no judgeflow has indexed yet, an index deleted or
truncated before their records) are misses, logged once per scan with their count and offsets,
and stay so: each such call is paid once more and cached again, with a checksum, in the paying
process's own segment. (Older judgeflow versions indexed lines from their bytes alone, so a
legacy line edited *before* its record was written cannot be told apart; every edit after that
is caught.)

Writing (`put`): each process appends only to its own segment and index, created on the first
put with O_EXCL (index first, so a segment of this format always has one). The line is written,
fsync'd, then its index record is appended and fsync'd. No locks of any kind (no flock, no
SQLite), so it is safe on a cluster's shared file system (NFS, Lustre, GPFS); index files
written by a reader (migration, repair) go to a private tmp file and are published with
os.replace, so nobody ever sees half of one. A segment write that fails (disk full, quota,
read-only file system, permissions) raises `CacheWriteError` (an OSError with the same errno)
naming the segment and the setting `cache_dir` it lives under; a partly written line is cut off
again. An index record that cannot be appended is only a warning: readers scan what it lacks.

Opening: for each segment, its index is read with numpy (a partial last record, from a writer
killed mid-record, is ignored) and validated vectorised: header, check values, flags, lines
tiling the segment contiguously from 0, last end <= the segment's size. A missing index (a
segment from an older judgeflow) is built once by scanning the segment and written atomically;
an invalid one is rebuilt the same way, with a warning naming the file. An empty segment (maybe
a writer's between creating its files and writing them) is skipped, its index left alone, and an
index shorter than its header is read once more before it is called corrupt (a writer writes its
index's header before its segment's first line). Complete lines after the last indexed end (a
live writer, or one killed between line and index record) are scanned into the lookup each
open; the index is only extended on disk when that writer is known to be gone (same host, pid
not running), never under a possibly live writer. A torn last line is ignored. All entries' key
prefixes go into one sorted numpy uint64 array with parallel arrays (segment, offset, length,
crc): about 28 bytes an entry, no Python object per entry. The lookup sees the entries on disk
at open plus this process's own puts (visible at once); entries other jobs put after this open
are not seen (as before).

Reading (`get`): searchsorted on the prefix, then each candidate's line is pread from its
segment, checked (length, newline, parse, key prefix, checksum; crc for a legacy line) and its
"key" compared with the asked key. If an indexed line does not match the index (short,
unparsable, another key's line: the index or the segment was damaged or rewritten), that
segment's index is rebuilt from the segment, with a warning, and the lookup retried: a damaged
index never turns into a silent miss that pays again. A line that is still the record's key but
fails its checksum (or, legacy, its crc) is never returned; it is logged and treated as absent.
Complete entries whose lines are intact are always found; only damaged lines are lost.

Not thread-safe beyond a lock around each call; one instance per process is the intended use.
The number of segments grows by one per process that pays for a call; opening costs one small
file read per segment.
"""
from __future__ import annotations

import array
import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"JFCACHEI"
VERSION = 1
REC = np.dtype([("key", "<u8"), ("offset", "<u8"), ("length", "<u4"), ("crc", "<u4"),
                ("flags", "<u4"), ("check", "<u4")])
HEADER = MAGIC + struct.pack("<II", VERSION, REC.itemsize)
ENTRY, SKIP = 1, 0
SUM = "sum"  # the field of a segment line that holds its checksum
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_SUM_HEX = 32  # hex digits of a checksum: the first 16 bytes of a sha256
_SUM_OPEN, _SUM_CLOSE = b',"sum":"', b'"}\n'  # how `put` ends a line, around the checksum
_SUM_TAIL = len(_SUM_OPEN) + _SUM_HEX + len(_SUM_CLOSE)
_C = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                             0xBF58476D1CE4E5B9, 0x94D049BB133111EB)]
_S = [np.uint64(s) for s in (29, 31, 32)]
_SEG_NAME = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-(?P<ms>\d+)(?:\.\d+)?$")
_MAX_FDS = 128
_SHOWN_OFFSETS = 10


class CacheWriteError(OSError):
    """Writing the API-call cache failed (disk full, quota, read-only, permissions); the message
    names the file and the setting `cache_dir` it lives under, `errno` is the failure's."""


class Line(enum.IntEnum):
    """What a segment line is, read on its own."""
    VERIFIED = 1  # an entry whose checksum matches
    LEGACY = 2    # an entry without a checksum (older judgeflow): only an index record can vouch for it
    DAMAGED = 3   # an entry whose checksum does not match: damaged or edited, never returned
    GARBAGE = 4   # not an entry at all


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


def key_prefix(key: str) -> int:
    """The index's 64-bit key: the first 8 bytes of sha256(key), little-endian."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def _digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()[:_SUM_HEX]


def entry_sum(entry: dict) -> str:
    """The checksum of an entry's fields other than `sum`: the first 16 bytes of the sha256 of
    their canonical JSON (sorted keys, no spaces, UTF-8), in hex."""
    fields = {k: v for k, v in entry.items() if k != SUM}
    return _digest(_CANONICAL.encode(fields).encode("utf-8", "surrogatepass"))


def entry_line(entry: dict) -> bytes:
    """The segment line of `entry` ({"key", "request", "response", "time"}): its canonical JSON
    with its checksum appended as the last member, both computed over the entry as a reader
    parses it back (e.g. a dict's int keys become strings)."""
    fields = json.loads(json.dumps(entry, ensure_ascii=False))
    body = _CANONICAL.encode(fields).encode("utf-8")  # a lone surrogate cannot be cached: UnicodeEncodeError
    return body[:-1] + _SUM_OPEN + _digest(body).encode("ascii") + _SUM_CLOSE


def _sum_matches(line: bytes, stored: object, entry: dict) -> bool:
    """Whether `stored` is the checksum of `entry`, the fields parsed from `line`: from the
    line's own bytes where it is laid out as `put` writes it (its bytes before `,"sum"` are the
    canonical JSON that was summed), else by serialising the fields canonically again."""
    tail = line[-_SUM_TAIL:]
    if (isinstance(stored, str) and tail.startswith(_SUM_OPEN) and tail.endswith(_SUM_CLOSE)
            and _digest(line[:-_SUM_TAIL] + b"}") == stored):
        return True
    return stored == entry_sum(entry)


def parse_line(line: bytes) -> tuple[Line, dict | None]:
    """What a segment line is, and its entry without `sum` (None for garbage). A damaged entry's
    fields are not to be trusted: its key only tells where an index pointed."""
    try:
        e = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return Line.GARBAGE, None
    if not (isinstance(e, dict) and isinstance(e.get("key"), str) and "response" in e):
        return Line.GARBAGE, None
    if SUM not in e:
        return Line.LEGACY, e
    stored = e.pop(SUM)
    return (Line.VERIFIED if _sum_matches(line, stored, e) else Line.DAMAGED), e


def record_check(rec: np.ndarray) -> np.ndarray:
    """The check value of index records (uint32 array): a multiply-xor mix of their fields."""
    with np.errstate(over="ignore"):
        x = rec["key"] ^ (rec["offset"] * _C[0])
        x ^= (rec["length"].astype(np.uint64) | (rec["crc"].astype(np.uint64) << _S[2])) * _C[1]
        x ^= (rec["flags"].astype(np.uint64) + _C[2]) * _C[2]
        x ^= x >> _S[1]
        x *= _C[3]
        x ^= x >> _S[0]
        x *= _C[4]
        x ^= x >> _S[2]
    return (x & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def make_records(keys, offsets, lengths, crcs, flags) -> np.ndarray:
    """Index records (check values filled in) from parallel sequences of their fields."""
    n = len(offsets)
    rec = np.zeros(n, REC)
    if n:
        rec["key"] = np.asarray(keys, dtype=np.uint64)
        rec["offset"] = np.asarray(offsets, dtype=np.uint64)
        rec["length"] = np.asarray(lengths, dtype=np.uint32)
        rec["crc"] = np.asarray(crcs, dtype=np.uint32)
        rec["flags"] = np.asarray(flags, dtype=np.uint32)
        rec["check"] = record_check(rec)
    return rec


def index_path(segment: str | os.PathLike) -> Path:
    return Path(segment).with_suffix(".idx")


def _line_ids(rec: np.ndarray) -> np.ndarray:
    """(key prefix, length, crc) of each record: what identifies the line it describes."""
    fields = [("key", "<u8"), ("length", "<u4"), ("crc", "<u4")]
    ids = np.empty(len(rec), dtype=fields)
    for field, _ in fields:
        ids[field] = rec[field]
    return ids


def vouched(rec: np.ndarray, trusted: np.ndarray | None) -> np.ndarray:
    """Which of `rec` (scanned lines) an entry record of `trusted` vouches for: one with the same
    key prefix, length and crc of the whole line (wherever it is: an edit that moves the lines
    after it moves them intact)."""
    if trusted is None or not len(rec):
        return np.zeros(len(rec), dtype=bool)
    return np.isin(_line_ids(rec), _line_ids(trusted[trusted["flags"] == ENTRY]))


def _at_offsets(offsets: np.ndarray) -> str:
    shown = ", ".join(str(int(o)) for o in offsets[:_SHOWN_OFFSETS])
    more = f" and {len(offsets) - _SHOWN_OFFSETS} more" if len(offsets) > _SHOWN_OFFSETS else ""
    return f"at byte offset{'s' if len(offsets) > 1 else ''} {shown}{more}"


def _report_unused(segment: str | os.PathLike, rec: np.ndarray, kinds: np.ndarray, unverified: np.ndarray) -> None:
    """One warning per kind of line a scan did not index as an entry, with their offsets."""
    found = [
        (kinds == Line.DAMAGED, "fail their checksum (damaged or edited) and are not used"),
        (kinds == Line.GARBAGE, "are not cache entries (damaged) and are not used"),
        (unverified, "were written by an older judgeflow without a checksum and no index record vouches for "
                     "them: they are not used (each such call is paid once more, then cached with a checksum)"),
    ]
    for mask, what in found:
        if mask.any():
            log.warning("cache segment %s: %d line(s) %s; %s", segment, int(mask.sum()), what,
                        _at_offsets(rec["offset"][mask]))


def scan_segment(segment: str | os.PathLike, start: int = 0,
                 trusted: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Index records of the complete lines of `segment` from byte `start` (a line boundary), and
    the end of the last complete line. A last line without its newline (torn) is left out. A
    line is an entry if its checksum matches, or (a legacy line) if a record of `trusted` vouches
    for it; the others are logged with their offsets."""
    keys, offs, lens, crcs, kinds = (array.array("Q"), array.array("Q"), array.array("I"),
                                     array.array("I"), array.array("B"))
    pos = start
    with open(segment, "rb", buffering=1 << 20) as fh:
        fh.seek(start)
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn write from a killed job (or a line being written right now)
            kind, e = parse_line(line)
            keys.append(key_prefix(e["key"]) if e is not None else 0)
            offs.append(pos)
            lens.append(len(line))
            crcs.append(zlib.crc32(line))
            kinds.append(kind)
            pos += len(line)
    kind_of = np.frombuffer(kinds, dtype=np.uint8) if len(kinds) else np.zeros(0, np.uint8)
    rec = make_records(keys, offs, lens, crcs, np.where(kind_of == Line.VERIFIED, ENTRY, SKIP))
    unverified = kind_of == Line.LEGACY
    if unverified.any():
        unverified[unverified] = ~vouched(rec[unverified], trusted)
        rec["flags"][(kind_of == Line.LEGACY) & ~unverified] = ENTRY
        rec["check"] = record_check(rec)
    _report_unused(segment, rec, kind_of, unverified)
    return rec, pos


def read_index(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """(records, None) for a readable index, (None, None) if there is none, (None, why) if its
    header is bad. A partial last record is ignored."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, None
    if len(data) < len(HEADER) or data[:len(HEADER)] != HEADER:
        return None, "bad header" if len(data) >= len(HEADER) else f"only {len(data)} bytes"
    n = (len(data) - len(HEADER)) // REC.itemsize
    return np.frombuffer(data, dtype=REC, count=n, offset=len(HEADER)), None


def validate_index(rec: np.ndarray, size: int) -> str | None:
    """Why the records cannot be the index of a segment of `size` bytes, or None if they can."""
    if not len(rec):
        return None
    if not (rec["flags"] <= 1).all():
        return "bad flags"
    if not (rec["check"] == record_check(rec)).all():
        return f"{int((rec['check'] != record_check(rec)).sum())} records fail their check value"
    off = rec["offset"]
    end = off + rec["length"].astype(np.uint64)
    if off[0] != 0 or not (off[1:] == end[:-1]).all() or not (rec["length"] > 0).all():
        return "records do not tile the segment"
    if int(end[-1]) > size:
        return f"indexes {int(end[-1])} bytes of a {size}-byte segment"
    return None


def write_index(path: str | os.PathLike, rec: np.ndarray) -> bool:
    """Write an index atomically (private tmp file, fsync, os.replace). False if it cannot be."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(HEADER)
            fh.write(rec.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write the cache index %s (%s): it is kept in memory only", path, e)
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
    _fsync_dir(path.parent)
    return True


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _writer_gone(segment: Path) -> bool:
    """True only when the process that wrote `segment` is known to have exited."""
    m = _SEG_NAME.match(segment.stem)
    if m is None or m["host"] != socket.gethostname() or int(m["pid"]) == os.getpid():
        return False
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return False


# why a line read for a lookup is not returned (the _read statuses that are not "ok" or "stale")
_REJECTED = {
    "damaged": "fails its checksum (damaged or edited)",
    "changed": "was written by an older judgeflow without a checksum and no longer matches its index "
               "record's crc (damaged or edited)",
    "stale": "still does not match its segment's freshly rebuilt index",
}


class CallCache:
    # the sorted lookup, parallel arrays set by _set_lookup (one row per entry)
    _key: np.ndarray
    _seg: np.ndarray
    _offset: np.ndarray
    _length: np.ndarray
    _crc: np.ndarray

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._write_error(e, f"create the API-call cache folder {self.dir}") from e
        self.hits = 0
        self.misses = 0
        self._lock = threading.RLock()
        self._segments: list[Path] = sorted(self.dir.glob("*.jsonl"))
        self._fds: dict[int, int] = {}
        self._bad: set[tuple[int, int]] = set()  # (segment, offset) of lines found corrupted
        self._own: dict[str, tuple[int, int, int]] = {}  # key -> (offset, length, crc) in own segment
        self._segment: Path | None = None
        self._seg_fd: int | None = None
        self._idx_fd: int | None = None
        self._end = 0
        self._set_lookup((i, self._load(i)) for i in range(len(self._segments)))  # one at a time

    # -- opening ---------------------------------------------------------------------------
    def _load(self, i: int) -> np.ndarray:
        """Records of segment i (index + scanned tail), building or repairing its index."""
        seg = self._segments[i]
        idx = index_path(seg)
        rec, why = read_index(idx)  # read before the segment's size: a record follows its line
        try:
            size = seg.stat().st_size
        except FileNotFoundError:
            return np.zeros(0, REC)
        if size == 0:  # nothing to index, and maybe a writer between creating its files and their first bytes
            return np.zeros(0, REC)
        if why:  # its writer wrote the index's header before the segment's first line: look again once
            rec, why = read_index(idx)
        if rec is not None:
            why = validate_index(rec, size)
            if why and "-byte segment" in why:  # maybe a stale size: look again once
                size = seg.stat().st_size
                why = validate_index(rec, size)
        if rec is None or why:
            if why:
                log.warning("cache index %s is corrupt (%s): rebuilding it from %s", idx, why, seg.name)
            else:
                log.warning("cache segment %s has no index (written by an older judgeflow, or the "
                            "index was lost): building %s", seg, idx.name)
            return self._rebuild(i, None if rec is None else rec[rec["check"] == record_check(rec)])
        end = int(rec["offset"][-1]) + int(rec["length"][-1]) if len(rec) else 0
        if end < size:
            tail, _ = scan_segment(seg, end)
            if len(tail):
                rec = np.concatenate([rec, tail])
                if _writer_gone(seg):
                    log.info("cache index %s: adding %d lines its dead writer did not index", idx, len(tail))
                    write_index(idx, rec)
        return rec

    def _rebuild(self, i: int, trusted: np.ndarray | None = None) -> np.ndarray:
        """Segment i's index from its lines, written atomically. `trusted`: records known good
        (valid check value), the only ones that can vouch for a legacy line (no checksum)."""
        seg = self._segments[i]
        try:
            rec, _ = scan_segment(seg, 0, trusted)
        except FileNotFoundError:
            return np.zeros(0, REC)
        write_index(index_path(seg), rec)
        return rec

    def _set_lookup(self, parts: Iterable[tuple[int, np.ndarray]], keep: np.ndarray | None = None) -> None:
        """Sorted lookup arrays from the entry records of `parts` ((segment, records) pairs),
        plus the current lookup's rows where `keep` is true."""
        cols: dict[str, list[np.ndarray]] = {"key": [], "seg": [], "offset": [], "length": [], "crc": []}
        if keep is not None:
            for c in cols:
                cols[c].append(getattr(self, "_" + c)[keep])
        for i, rec in parts:
            m = rec["flags"] == ENTRY
            for c in ("key", "offset", "length", "crc"):
                cols[c].append(rec[c][m])
            cols["seg"].append(np.full(int(m.sum()), i, dtype=np.uint32))
        dtypes = {"key": np.uint64, "seg": np.uint32, "offset": np.uint64, "length": np.uint32, "crc": np.uint32}
        joined = {c: np.concatenate(v).astype(dtypes[c], copy=False) if v else np.zeros(0, dtypes[c])
                  for c, v in cols.items()}
        del cols
        order = np.argsort(joined["key"], kind="stable")
        for c in list(joined):
            setattr(self, "_" + c, joined.pop(c)[order])

    # -- reading ---------------------------------------------------------------------------
    def _fd(self, i: int) -> int:
        fd = self._fds.pop(i, None)
        if fd is None:
            if len(self._fds) >= _MAX_FDS:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(self._segments[i], os.O_RDONLY)
        self._fds[i] = fd  # most recently used last
        return fd

    def _read(self, fd: int, offset: int, length: int, crc: int, prefix: int) -> tuple[str, dict | None]:
        """("ok", entry) for an intact line of the record's key; ("damaged", None): the line is
        still the record's key but fails its checksum; ("changed", None): a legacy line (no
        checksum) of the record's key whose crc is no longer the record's; ("stale", None): the
        index does not describe this segment (short, unparsable, another key's line)."""
        line = os.pread(fd, length, offset)
        if len(line) != length or not line.endswith(b"\n"):
            return "stale", None
        kind, e = parse_line(line)
        if e is None or key_prefix(e["key"]) != prefix:
            return "stale", None
        if kind is Line.DAMAGED:
            return "damaged", None
        if zlib.crc32(line) != crc:
            return ("changed" if kind is Line.LEGACY else "stale"), None
        return "ok", e

    def _lookup(self, key: str) -> dict | None:
        prefix = key_prefix(key)
        own = self._own.get(key)
        if own is not None:
            seg_fd = self._seg_fd if self._seg_fd is not None else self._open_own()  # after close()
            status, e = self._read(seg_fd, *own, prefix)
            if status == "ok":
                return e
            log.warning("cache segment %s: this process's entry at byte offset %d is corrupt (%s)",
                        self._segment, own[0], status)
        rebuilt: set[int] = set()
        while True:
            i = int(np.searchsorted(self._key, np.uint64(prefix)))
            stale = None
            while i < len(self._key) and int(self._key[i]) == prefix:
                s, off = int(self._seg[i]), int(self._offset[i])
                if (s, off) not in self._bad:
                    try:
                        status, e = self._read(self._fd(s), off, int(self._length[i]), int(self._crc[i]), prefix)
                    except OSError:
                        status, e = "stale", None
                    if status == "ok" and e is not None and e["key"] == key:
                        return e
                    if status in ("damaged", "changed") or (status == "stale" and s in rebuilt):
                        log.warning("cache segment %s: the line at byte offset %d %s: not used",
                                    self._segments[s], off, _REJECTED[status])
                        self._bad.add((s, off))
                    elif status == "stale":
                        stale = s
                        break
                i += 1
            if stale is None:
                return None
            seg = self._segments[stale]
            log.warning("cache index %s does not match its segment at byte offset %d: rebuilding it from %s",
                        index_path(seg), off, seg.name)
            fd = self._fds.pop(stale, None)
            if fd is not None:
                os.close(fd)
            rebuilt.add(stale)
            self._bad = {b for b in self._bad if b[0] != stale}
            mine = self._seg == stale
            trusted = make_records(self._key[mine], self._offset[mine], self._length[mine], self._crc[mine],
                                   np.full(int(mine.sum()), ENTRY))
            self._set_lookup([(stale, self._rebuild(stale, trusted))], keep=~mine)

    def get(self, key: str) -> dict | None:
        """The cached entry of `key` ({"key", "request", "response", "time"}, checked), or None."""
        with self._lock:
            e = self._lookup(key)
            if e is None:
                self.misses += 1
            else:
                self.hits += 1
            return e

    # -- writing ---------------------------------------------------------------------------
    def _write_error(self, err: OSError, what: str) -> CacheWriteError:
        """The error for a failed write: what could not be done, why, and the setting to look at."""
        msg = (f"cannot {what} ({err.strerror or err}): it lives under the setting `cache_dir` (this cache: "
               f"{self.dir}); free space or quota there, make it writable, or set `cache_dir` to a folder "
               f"that every job can write")
        return CacheWriteError(err.errno, msg) if err.errno is not None else CacheWriteError(msg)

    def _create(self, seg: Path) -> tuple[int, int] | None:
        """(segment fd, index fd) of a new segment and its index (created first, its header
        written and fsync'd), or None if the name is taken. A failure leaves neither file."""
        idx = index_path(seg)
        made: list[tuple[Path, int]] = []
        try:
            for path, mode in ((idx, os.O_WRONLY), (seg, os.O_RDWR)):
                made.append((path, os.open(path, mode | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)))
            _write_all(made[0][1], HEADER)
            os.fsync(made[0][1])
        except BaseException as e:
            for path, fd in reversed(made):
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(e, FileExistsError):
                return None
            if isinstance(e, OSError):
                raise self._write_error(e, f"create the API-call cache segment {seg} and its index {idx.name}") from e
            raise
        return made[1][1], made[0][1]

    def _open_own(self) -> int:
        """Open this process's own segment and index (new ones, or reopened after close()); the segment's fd."""
        if self._segment is not None:  # reopened after close()
            try:
                self._seg_fd = seg_fd = os.open(self._segment, os.O_RDWR | os.O_APPEND)
            except OSError as e:
                raise self._write_error(e, f"reopen the API-call cache segment {self._segment}") from e
            self._end = os.fstat(seg_fd).st_size
            try:
                self._idx_fd = os.open(index_path(self._segment), os.O_WRONLY | os.O_APPEND)
            except OSError:
                self._idx_fd = None
            return seg_fd
        base = f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"
        for n in range(10_000):
            seg = self.dir / (f"{base}.jsonl" if n == 0 else f"{base}.{n}.jsonl")
            fds = self._create(seg)
            if fds is not None:
                _fsync_dir(self.dir)
                self._segment, (self._seg_fd, self._idx_fd), self._end = seg, fds, 0
                return fds[0]
        raise OSError(f"no free segment name for {base} in {self.dir}")

    def put(self, key: str, request: dict, response: dict) -> None:
        """Cache an answer: its line (with its checksum) written and fsync'd, then its index record.
        A failed write raises CacheWriteError, naming the segment and `cache_dir`."""
        line = entry_line({"key": key, "request": request, "response": response, "time": time.time()})
        with self._lock:
            seg_fd = self._seg_fd if self._seg_fd is not None else self._open_own()
            segment = self._segment
            assert segment is not None  # set with the segment's fd
            off = self._end
            try:
                _write_all(seg_fd, line)
                os.fsync(seg_fd)
            except BaseException as e:
                with contextlib.suppress(OSError):  # a half-written line would swallow the next one
                    os.ftruncate(seg_fd, off)
                if isinstance(e, OSError):
                    raise self._write_error(e, f"write the API-call cache segment {segment}") from e
                raise
            self._end = off + len(line)
            crc = zlib.crc32(line)
            self._own[key] = (off, len(line), crc)
            if self._idx_fd is not None:
                rec = make_records([key_prefix(key)], [off], [len(line)], [crc], [ENTRY])
                try:
                    _write_all(self._idx_fd, rec.tobytes())
                    os.fsync(self._idx_fd)
                except OSError as e:  # the line is safe: readers scan what the index lacks
                    log.warning("cache index %s: cannot append (%s); later readers scan the segment",
                                index_path(segment), e)
                    os.close(self._idx_fd)
                    self._idx_fd = None

    def close(self) -> None:
        with self._lock:
            for fd in (self._seg_fd, self._idx_fd, *self._fds.values()):
                if fd is not None:
                    os.close(fd)
            self._seg_fd = self._idx_fd = None
            self._fds.clear()
