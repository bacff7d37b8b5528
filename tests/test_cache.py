import gc
import json
import logging
import os
import socket
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from judgeflow.models import cache as cache_mod
from judgeflow.models.cache import CallCache, cache_key, namespace

MSG = [{"role": "user", "content": "hi"}]
SAMP = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0}


def test_key_depends_on_model_messages_sampling_and_sample_index():
    k = cache_key("m", MSG, SAMP, 0)
    assert k == cache_key("m", [dict(MSG[0])], dict(SAMP), 0)  # same call, same key
    assert k != cache_key("m2", MSG, SAMP, 0)
    assert k != cache_key("m", [{"role": "user", "content": "hi!"}], SAMP, 0)
    assert k != cache_key("m", MSG, {**SAMP, "temperature": 0.5}, 0)
    assert k != cache_key("m", MSG, SAMP, 1)


def test_entries_persist_across_processes_and_torn_lines_are_skipped(tmp_path):
    c = CallCache(tmp_path)
    c.put("k1", {"model": "m"}, {"text": "a"})
    c.close()
    seg = next(tmp_path.glob("*.jsonl"))
    with open(seg, "a") as fh:
        fh.write('{"key": "k2", "resp')  # killed mid-write
    c2 = CallCache(tmp_path)
    assert c2.get("k1")["response"]["text"] == "a"
    assert c2.get("k2") is None
    assert (c2.hits, c2.misses) == (1, 1)
    json.loads(seg.read_text().splitlines()[0])  # complete lines stay valid JSON


def test_namespace_is_a_safe_folder_name():
    ns = namespace("https://api.deepseek.com/v1", "deepseek-chat")
    assert "/" not in ns and ":" not in ns and ns.startswith("api.deepseek.com_v1_deepseek-chat")
    assert ns != namespace("https://api.openai.com/v1", "deepseek-chat")


# -- helpers ---------------------------------------------------------------------------------

def key(i) -> str:
    return cache_key("m", [{"role": "user", "content": f"question {i}"}], SAMP, 0)


def fill(d, keys, text="answer"):
    """One process's puts (a CallCache closed afterwards); its segment."""
    c = CallCache(d)
    for k in keys:
        c.put(k, {"model": "m", "k": k}, {"text": f"{text} {k}"})
    c.close()
    return c._segment


def write_legacy(seg, keys):
    """A segment as judgeflow wrote it before the index existed: JSON lines, no .idx."""
    with open(seg, "a", encoding="utf-8") as fh:
        for k in keys:
            fh.write(json.dumps({"key": k, "request": {"k": k}, "response": {"text": f"answer {k}"},
                                 "time": 0.0}, ensure_ascii=False) + "\n")


def assert_all_hit(d, keys, text="answer"):
    c = CallCache(d)
    for k in keys:
        e = c.get(k)
        assert e is not None, k
        assert e["key"] == k and e["response"]["text"] == f"{text} {k}"
    assert (c.hits, c.misses) == (len(keys), 0)
    c.close()


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def stamp(p):
    st = os.stat(p)
    return st.st_ino, st.st_mtime_ns, st.st_size


# -- persistence -----------------------------------------------------------------------------

def test_entries_persist_across_instances_and_segments_and_own_puts_show_at_once(tmp_path, caplog):
    a = [key(i) for i in range(5)] + ["k1", "ключ ✓"]  # any string is a key
    fill(tmp_path, a)
    c = CallCache(tmp_path)
    assert c.get("k1")["response"] == {"text": "answer k1"}
    assert c.get(key(99)) is None
    b = [key(i) for i in range(5, 10)]
    for k in b:
        c.put(k, {"model": "m", "k": k}, {"text": f"answer {k}"})
        assert c.get(k)["response"]["text"] == f"answer {k}"  # own put, at once
    c2 = CallCache(tmp_path)  # another instance of the same process: its own segment
    c2.put("k-second", {}, {"text": "answer k-second"})
    assert c2.get("k-second") is not None and c.get("k-second") is None  # seen at open, not later
    c2.close()
    c.close()
    assert c.get(b[0])["response"]["text"] == f"answer {b[0]}"  # still readable after close()
    c.put("k-after-close", {}, {"text": "answer k-after-close"})  # and writable
    c.close()
    segs = sorted(tmp_path.glob("*.jsonl"))
    assert len(segs) == 3 and all(s.with_suffix(".idx").exists() for s in segs)
    assert_all_hit(tmp_path, a + b + ["k-second", "k-after-close"])
    assert not warnings(caplog)


def test_torn_segment_line_and_torn_index_record_are_ignored(tmp_path, caplog):
    keys = [key(i) for i in range(4)]
    seg = fill(tmp_path, keys)
    idx = seg.with_suffix(".idx")
    with open(seg, "ab") as fh:
        fh.write(b'{"key": "' + key(4).encode() + b'", "resp')  # killed mid-line
    os.truncate(idx, idx.stat().st_size - 5)  # killed mid-record: the last entry is unindexed
    assert_all_hit(tmp_path, keys)
    c = CallCache(tmp_path)
    assert c.get(key(4)) is None
    assert not warnings(caplog)  # expected after a kill, nothing to warn about


# -- legacy segments -------------------------------------------------------------------------

def test_legacy_segment_gets_its_index_built_once(tmp_path, caplog):
    keys = [key(i) for i in range(20)]
    seg = tmp_path / "oldhost-123-1700000000000.jsonl"
    write_legacy(seg, keys)
    with open(seg, "a") as fh:
        fh.write('{"key": "torn')
    with caplog.at_level(logging.WARNING):
        assert_all_hit(tmp_path, keys)
    idx = seg.with_suffix(".idx")
    assert idx.exists() and any(seg.name in m for m in warnings(caplog))
    before = stamp(idx)
    caplog.clear()
    assert_all_hit(tmp_path, keys)
    assert stamp(idx) == before and not warnings(caplog)  # not rebuilt on the second open
    # the migrated index is exactly the one this version's writer writes for the same lines
    seg2 = fill(tmp_path / "new", keys)
    lines = seg2.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines))
    idx.unlink()
    CallCache(tmp_path)
    assert idx.read_bytes() == seg2.with_suffix(".idx").read_bytes()


# -- corruption ------------------------------------------------------------------------------

def _rewrite_records(idx, change):
    """The index with its records changed by `change(rec)` and their check values redone."""
    data = idx.read_bytes()
    rec = np.frombuffer(data[16:], dtype=cache_mod.REC).copy()
    change(rec)
    rec["check"] = cache_mod.record_check(rec)
    idx.write_bytes(data[:16] + rec.tobytes())


def _swap_keys(idx):
    """Two records swap keys: a valid-looking index pointing at wrong lines."""
    def swap(rec):
        rec["key"][[1, 2]] = rec["key"][[2, 1]]
    _rewrite_records(idx, swap)


def _shift_offsets(idx):
    """No longer tiles the segment, even with good check values."""
    def shift(rec):
        rec["offset"][1:] += np.uint64(3)
    _rewrite_records(idx, shift)


def _overwrite_middle(idx):
    data = bytearray(idx.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = b"\xff" * 8
    idx.write_bytes(bytes(data))


CORRUPTIONS = {
    "overwritten in the middle": _overwrite_middle,
    "truncated into its header": lambda idx: os.truncate(idx, 10),
    "deleted": lambda idx: idx.unlink(),
    "zeroed": lambda idx: idx.write_bytes(b"\0" * idx.stat().st_size),
    "offsets shifted": _shift_offsets,
    "records pointing at other entries' lines": _swap_keys,
}


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_index_is_rebuilt_and_every_entry_still_hits(tmp_path, caplog, how):
    keys = [key(i) for i in range(8)]
    fill(tmp_path, keys[:3])
    seg = fill(tmp_path, keys[3:])
    idx = seg.with_suffix(".idx")
    good = idx.read_bytes()
    CORRUPTIONS[how](idx)
    with caplog.at_level(logging.WARNING):
        assert_all_hit(tmp_path, keys)
    assert any(idx.name in m for m in warnings(caplog)), warnings(caplog)
    assert idx.read_bytes() == good  # repaired on disk, as the writer wrote it
    caplog.clear()
    assert_all_hit(tmp_path, keys)
    assert not warnings(caplog)


def test_corrupt_segment_line_loses_only_that_entry(tmp_path, caplog):
    keys = [key(i) for i in range(6)]
    seg = fill(tmp_path, keys)
    data = bytearray(seg.read_bytes())
    lines = data.splitlines(keepends=True)
    at = sum(map(len, lines[:2]))
    data[at + 20:at + 30] = b"#" * 10  # line 2 no longer parses
    text = data.index(b'"answer ' + keys[4].encode())  # line 4 parses, but its answer changed
    data[text + 1:text + 7] = b"ANSWER"
    seg.write_bytes(bytes(data))
    c = CallCache(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert c.get(keys[4]) is None  # a damaged answer is never returned
        for i in (0, 1, 3, 5):
            assert c.get(keys[i])["response"]["text"] == f"answer {keys[i]}"
        assert c.get(keys[2]) is None
        assert c.get(keys[4]) is None  # nor after line 2 had its segment's index rebuilt
    assert (c.hits, c.misses) == (4, 3)
    assert any(seg.name in m for m in warnings(caplog))
    # bytes cut out of the middle: offsets after the cut are off, the index is rebuilt
    cut = bytes(data[:at + 20]) + bytes(data[at + 30:])
    seg.write_bytes(cut)
    c = CallCache(tmp_path)
    for i in (0, 1, 3, 5):
        assert c.get(keys[i])["response"]["text"] == f"answer {keys[i]}"


def test_lines_after_the_index_are_found(tmp_path, caplog):
    keys = [key(i) for i in range(6)]
    seg = fill(tmp_path, keys[:3])
    idx = seg.with_suffix(".idx")
    write_legacy(seg, keys[3:])  # its writer died (or is still writing) between line and index
    before = stamp(idx)
    assert_all_hit(tmp_path, keys)
    assert stamp(idx) == before  # this process's pid: a possibly live writer, index left alone
    # the same segment of a writer that is known to be gone: its index is completed, once
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{socket.gethostname()}-{int(p.stdout)}-1.jsonl"
    seg.rename(dead)
    idx.rename(dead.with_suffix(".idx"))
    assert_all_hit(tmp_path, keys)
    assert stamp(dead.with_suffix(".idx"))[2] == 16 + 6 * 32
    before = stamp(dead.with_suffix(".idx"))
    assert_all_hit(tmp_path, keys)
    assert stamp(dead.with_suffix(".idx")) == before
    assert not warnings(caplog)


def test_a_live_writers_new_lines_show_up_in_a_later_open(tmp_path):
    w = CallCache(tmp_path)
    w.put("a", {}, {"text": "answer a"})
    r = CallCache(tmp_path)
    w.put("b", {}, {"text": "answer b"})
    assert r.get("a") is not None
    assert_all_hit(tmp_path, ["a", "b"])
    w.close()


# -- memory ----------------------------------------------------------------------------------

def test_opening_holds_no_python_object_per_entry(tmp_path):
    n = 50_000
    keys = [f"{i:064x}" for i in range(n)]
    seg = tmp_path / "h-1-1.jsonl"
    with open(seg, "w") as fh:
        fh.writelines(f'{{"key": "{k}", "request": {{}}, "response": {{"text": "x"}}, "time": 0}}\n' for k in keys)
    CallCache(tmp_path).close()  # migration
    gc.collect()
    objects = len(gc.get_objects())
    tracemalloc.start()
    c = CallCache(tmp_path)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    assert len(gc.get_objects()) - objects < 1000
    assert held < 40 * n  # ~28 bytes an entry in numpy arrays (a dict of entries: ~1 KB each)
    assert not [v for v in vars(c).values() if isinstance(v, (dict, list, set)) and len(v) > 100]
    assert all(c.get(keys[i])["response"]["text"] == "x" for i in range(0, n, 997))
    assert c.get("f" * 64) is None


# -- the benchmark (benchmarks/api_cache.py) runs, and measures the worker's own memory --------

def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "api_cache.py"
    spec = importlib.util.spec_from_file_location("api_cache_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cache_benchmark_small_run_and_worker_rss_is_its_own(tmp_path):
    """The worker's peak RSS is its own address space's (VmHWM), not ru_maxrss, which Linux carries
    over fork and exec: a parent holding 400 MB made every worker report >= 400 MB."""
    bench = _bench()
    bench.write_dataset(tmp_path, entries=2000, segments=4)
    held = bytearray(400 * 2**20)  # the parent's memory, touched page by page
    held[::4096] = b"\1" * len(held[::4096])

    class Args:
        entries, lookups, seed = 2000, 200, 0

    first = bench.measure("new", tmp_path, Args)  # builds the indexes, then looks up (hits checked inside)
    assert sorted(p.name for p in tmp_path.glob("*.idx")) == sorted(
        p.with_suffix(".idx").name for p in tmp_path.glob("*.jsonl"))
    old = bench.measure("old", tmp_path, Args)
    del held
    for r in (first, old):
        assert 5 < r["peak_rss_mb"] < 300, r  # an interpreter with numpy, not the parent's 400 MB
        assert r["total_s"] >= r["open_s"] >= 0


WRITER = """
import sys
from judgeflow.models.cache import CallCache
d, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = CallCache(d)
for i in range(n):
    k = f"w{w}-{i}"
    c.put(k, {"k": k}, {"text": "answer " + k})
c.close()
"""


def test_concurrent_writer_processes_and_a_reader_opening_meanwhile(tmp_path, caplog):
    """Four processes append at once while this one keeps opening the cache: no open ever warns or
    rebuilds an index under a live writer, each open finds a consistent prefix, and every entry hits."""
    n, writers = 400, 4
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(n)]) for w in range(writers)]
    opens = 0
    with caplog.at_level(logging.WARNING):
        while any(p.poll() is None for p in procs) or opens == 0:
            c = CallCache(tmp_path)
            for w in range(writers):
                seen = [c.get(f"w{w}-{i}") is not None for i in range(0, n, 37)]
                assert seen == sorted(seen, reverse=True)  # what one writer put before this open, in order
            c.close()
            opens += 1
    assert all(p.wait() == 0 for p in procs)
    assert not warnings(caplog), warnings(caplog)
    assert len(list(tmp_path.glob("*.jsonl"))) == writers
    assert_all_hit(tmp_path, [f"w{w}-{i}" for w in range(writers) for i in range(n)])
    assert opens > 1
