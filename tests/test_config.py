import pytest

from judgeflow import config as jf_config
from judgeflow.models import ConfigError

from conftest import ROOT

CFG = ROOT / "config" / "config.yaml"


def test_shipped_config_validates_and_fills_defaults():
    c = jf_config.load(CFG)
    assert c["run"] == "demo" and c["judging"]["k"] == 2 and len(c["judging"]["judges"]) == 3
    assert c["refining"]["modes"] == ["multi_feedback", "full_feedback"]  # default filled
    assert c["judging"]["judges"][0]["max_new_tokens"] == 40  # default inside list items
    assert c["cache_dir"] == "cache"


@pytest.mark.parametrize("override,message", [
    ({"models": {"smollm2": {"backend": "vllm"}}}, r"models\.smollm2\.backend: unknown backend 'vllm'"),
    ({"sampling": {"model": "gpt5"}}, r"sampling\.model: unknown model 'gpt5'"),
    ({"judging": {"k": 4}}, r"judging\.k: 4 exceeds the number of judges J=3"),
    ({"models": {"hosted": {"backend": "openai", "model": "x"}}}, r"models\.hosted\.base_url: required"),
    ({"models": {"oracle": {"serve": None}}}, r"config key models\.oracle\.serve: None is not of type 'object'"),
    ({"judging": {"judges": [{"id": "j1"}]}}, r"config key judging\.judges\[0\]: 'model' is a required property"),
    ({"sampling": {"n_samples": 0}}, r"config key sampling\.n_samples: 0 is less than the minimum of 1"),
    ({"pairs": {"require": "some"}}, r"require"),
    ({"run": "bad run/name"}, r"run"),
    ({"samplin": {}}, r"samplin"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        jf_config.load(CFG, overrides=override)


def test_3_of_5_and_5_of_5_are_expressible():
    judges = [{"id": f"j{i}", "model": "smollm2", "seed": i} for i in range(5)]
    for k in (3, 5):
        c = jf_config.load(CFG, overrides={"judging": {"k": k, "judges": judges}})
        assert (c["judging"]["k"], len(c["judging"]["judges"])) == (k, 5)


def test_missing_model_path_is_a_config_error_naming_the_key(tmp_path):
    from judgeflow.models import open_models

    c = jf_config.load(CFG, overrides={"models": {"smollm2": {"path": str(tmp_path / "nope")}}})
    with pytest.raises(ConfigError, match=r"models\.smollm2\.path: no model at"):
        with open_models(c, {"sampling.model": "smollm2"}):
            pass


def test_api_key_env_unset_names_variable_not_value(monkeypatch):
    from judgeflow.models import open_models

    monkeypatch.delenv("JF_TEST_KEY", raising=False)
    c = jf_config.load(CFG, overrides={"models": {"hosted": {
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "JF_TEST_KEY"}}})
    with pytest.raises(ConfigError, match=r"models\.hosted\.api_key_env: environment variable JF_TEST_KEY is not set"):
        with open_models(c, {"cleaning.model": "hosted"}):
            pass
