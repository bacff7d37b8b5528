import json

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
