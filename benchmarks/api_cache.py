"""The API call cache at judge size: opening it and looking calls up, with the on-disk index
(src/judgeflow/models/cache.py) beside the cache it replaced, which read every segment into a dict
(copied below as `LoadAllCache`).

    .venv/bin/python benchmarks/api_cache.py                      # 1,000,000 entries, 32 segments
    .venv/bin/python benchmarks/api_cache.py --entries 100000 --skip-old
    .venv/bin/python benchmarks/api_cache.py --dir /tmp/cache1m   # keep the data set, reuse it next time

Data set: `--entries` entries of judge size (request: a ~1.5 KB chat body; response: ~300 chars of
text and token counts, ~2.1 KB a line), spread round-robin over `--segments` segments as that many
parallel jobs would have written them, written in bulk as the lines the cache writes (canonical
JSON with each line's own checksum: `cache.entry_line`), without indexes. Then, each in a fresh
subprocess (peak RSS is that subprocess's VmHWM, interpreter and imports included; wall is
measured inside it, from before the cache is opened to after the last lookup):

  migration  the first CallCache open, which builds every segment's index (CallCache's own path)
  new        a later CallCache open + `--lookups` gets (half hits, half misses, hits checked)
  old        LoadAllCache open + the same gets

Figures on this machine (2 CPU cores, 24 GiB RAM, local disk, page cache warm, 1,000,000 entries,
32 segments, 2.05 GiB of segments, 30.5 MiB of indexes, 10,000 lookups; `benchmarks/api_cache.py`):

  variant     open s   lookups s   open+lookups s   peak RSS MB
  new          0.20      0.11          0.31             93
  old         28.4       0.01         28.4           5,164
  migration   10.3 s (once, single process)             94

The same data in 1,024 segments (as 1,024 jobs that each paid for calls would leave it;
`--segments 1024 --skip-old`): open 0.26 s, lookups 0.12 s, peak RSS 99 MB; migration 13.8 s.

With each line's checksum checked on every read and every index build (issue 22), measured back to
back with the version before it on the same machine, shared with other work at the time (so both
slower than above): new 0.24 s open + 0.17 s lookups = 0.41 s at 97 MB (before: 0.23 + 0.13 =
0.35 s, 97 MB); migration 17.5 s (before: 16.1 s). Lines are not longer: a line's canonical JSON
has no spaces, which about pays for its 43-byte checksum field (2,146.5 MiB of segments both).

The page cache was warm (the data had just been written); on a cold shared file system each hit
costs one random read of ~2 KB, and opening reads only the small index files, one per segment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class LoadAllCache:
    """judgeflow's CallCache before the index (reads every segment into a dict), for comparison."""

    def __init__(self, directory: str | os.PathLike):
        import socket

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


# -- the data set ----------------------------------------------------------------------------

WORDS = ["the", "answer", "model", "question", "judge", "correct", "because", "step", "therefore", "value",
         "function", "returns", "number", "proof", "claim", "reasoning", "final", "result", "check", "each",
         "case", "given", "so", "we", "have", "then", "note", "that", "is", "not", "equal", "sum", "of", "two",
         "and", "three", "first", "second", "last", "true", "false", "verdict", "score"]


def key_of(i: int) -> str:
    return hashlib.sha256(f"call {i}".encode()).hexdigest()


def _pool(rng: random.Random, n: int, chars: int) -> list[str]:
    out = []
    for _ in range(n):
        words: list[str] = []
        while sum(map(len, words)) + len(words) < chars:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words)[:chars])
    return out


def write_dataset(d: Path, entries: int, segments: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    system = _pool(rng, 8, 300)
    question = _pool(rng, 256, 600)
    answer = _pool(rng, 256, 500)
    reply = _pool(rng, 256, 300)
    from judgeflow.models.cache import entry_line

    d.mkdir(parents=True, exist_ok=True)
    fhs = [open(d / f"node{j % 4:02d}-{100000 + j}-1700000000{j:03d}.jsonl", "wb")  # noqa: SIM115
           for j in range(segments)]
    try:
        buf: list[list[bytes]] = [[] for _ in fhs]
        for i in range(entries):
            request = {"model": "judge-model", "messages": [
                {"role": "system", "content": system[i % 8]},
                {"role": "user", "content": f"Question {i}: {question[i % 256]}\n\nAnswer to judge: "
                                            f"{answer[(i * 7) % 256]}\n\nIs the answer correct? YES or NO."}],
                "max_tokens": 256, "temperature": 0.0, "seed": i % 8, "logprobs": True, "top_logprobs": 20}
            response = {"text": f"{reply[(i * 13) % 256]} Verdict: {'YES' if i % 3 else 'NO'}",
                        "finish_reason": "stop", "prompt_tokens": 400 + i % 97, "completion_tokens": 60 + i % 31,
                        "choice_probs": {"YES": 0.9, "NO": 0.1}, "logprobs": "read"}
            entry = {"key": key_of(i), "request": request, "response": response, "time": 1.7e9 + i}
            b = buf[i % segments]
            b.append(entry_line(entry))
            if len(b) >= 4096:
                fhs[i % segments].writelines(b)
                b.clear()
        for fh, b in zip(fhs, buf):
            fh.writelines(b)
    finally:
        for fh in fhs:
            fh.close()


# -- one measurement, in a fresh process -----------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own address space.
    Not ru_maxrss: Linux carries that across fork and exec, so a worker started by a parent that
    had just written the data set (hundreds of MB of buffered lines) would report the parent's."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, elsewhere a bound



def worker(variant: str, d: str, entries: int, lookups: int, seed: int) -> dict:
    rng = random.Random(seed)
    hits = [key_of(rng.randrange(entries)) for _ in range(lookups // 2)]
    misses = [key_of(entries + rng.randrange(entries)) for _ in range(lookups - lookups // 2)]
    asked = hits + misses
    rng.shuffle(asked)
    if variant == "old":
        cls = LoadAllCache
    else:
        from judgeflow.models.cache import CallCache as cls
    t0 = time.perf_counter()
    c = cls(d)
    t1 = time.perf_counter()
    found = sum(c.get(k) is not None for k in asked)
    t2 = time.perf_counter()
    assert found == len(hits) and (c.hits, c.misses) == (len(hits), len(misses)), (found, c.hits, c.misses)
    c.close()
    rss_mb = peak_rss_mb()
    return {"variant": variant, "open_s": round(t1 - t0, 3), "lookups_s": round(t2 - t1, 3),
            "total_s": round(t2 - t0, 3), "peak_rss_mb": round(rss_mb, 1)}


def measure(variant: str, d: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--dir", str(d), "--entries", str(args.entries),
           "--lookups", str(args.lookups), "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=32)
    ap.add_argument("--lookups", type=int, default=10_000)
    ap.add_argument("--dir", help="where the data set goes (kept, and reused if it holds segments); "
                                  "default a temp dir under /tmp, removed afterwards")
    ap.add_argument("--skip-old", action="store_true", help="do not measure the load-everything cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=("new", "old"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dir, args.entries, args.lookups, args.seed)))
        return
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="api_cache_bench-", dir="/tmp"))
    try:
        result: dict = {"entries": args.entries, "segments": args.segments, "lookups": args.lookups}
        if any(d.glob("*.jsonl")):
            print(f"reusing the data set in {d}", file=sys.stderr)
        else:
            t0 = time.perf_counter()
            write_dataset(d, args.entries, args.segments, args.seed)
            result["write_s"] = round(time.perf_counter() - t0, 1)
        result["segment_mb"] = round(sum(p.stat().st_size for p in d.glob("*.jsonl")) / 2**20, 1)
        rows = []
        if not any(d.glob("*.idx")):
            t0 = time.perf_counter()
            m = measure("new", d, args)  # the first open builds the indexes
            rows.append({**m, "variant": "migration", "process_s": round(time.perf_counter() - t0, 2)})
        result["index_mb"] = round(sum(p.stat().st_size for p in d.glob("*.idx")) / 2**20, 1)
        rows.append(measure("new", d, args))
        if not args.skip_old:
            rows.append(measure("old", d, args))
        result["runs"] = rows
        print(f"{args.entries:,} entries in {args.segments} segments ({result['segment_mb']:,} MiB; "
              f"indexes {result['index_mb']:,} MiB), {args.lookups:,} lookups (half hits)")
        print(f"{'variant':<11}{'open s':>9}{'lookups s':>11}{'open+lookups s':>16}{'peak RSS MB':>13}")
        for r in rows:
            print(f"{r['variant']:<11}{r['open_s']:>9.2f}{r['lookups_s']:>11.3f}{r['total_s']:>16.2f}"
                  f"{r['peak_rss_mb']:>13,.0f}")
        print(json.dumps(result))
    finally:
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
