import json

import pytest

from judgeflow.errors import InputError
from judgeflow.workflow.io import Checkpoint, read_jsonl, write_jsonl


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"question_id": "a", "prompt": "x"}\n\n{"question_id": "b", "prompt": \n')
    with pytest.raises(InputError, match=r"q\.jsonl:3: malformed JSON"):
        read_jsonl(p)


def test_non_object_and_missing_field(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('[1, 2]\n')
    with pytest.raises(InputError, match=r"q\.jsonl:1: expected a JSON object, got list"):
        read_jsonl(p)
    p.write_text('{"question_id": "a"}\n')
    with pytest.raises(InputError, match=r"q\.jsonl:1: missing field\(s\) prompt"):
        read_jsonl(p, required=("question_id", "prompt"))


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"q\.jsonl:2: not valid UTF-8"):
        read_jsonl(p)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out.jsonl"

    def records():
        yield {"a": 1}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(out, records())
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_resumes_and_drops_torn_line(tmp_path):
    out = tmp_path / "shard-0.jsonl"
    ck = Checkpoint(out, key="id")
    ck.add_many([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    ck.close()
    with open(ck.path, "a") as fh:  # a job killed in the middle of a write
        fh.write('{"id": "c", "v"')
    ck2 = Checkpoint(out, key="id")
    assert set(ck2.done) == {"a", "b"} and "c" not in ck2
    ck2.add_many([{"id": "c", "v": 3}])
    assert len(ck2.finish(out, ["c", "a", "b"])) == 3
    assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == ["c", "a", "b"]
    assert not ck2.path.exists()
