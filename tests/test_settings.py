"""The typed settings (judgeflow.settings): defaults once, every key checked, errors that name
the key (and the closest valid one), secrets refused, the generated schema and docs current."""
import json

import pytest
import yaml

from judgeflow import settings as st
from judgeflow.models import ConfigError

from conftest import ROOT

CFG = ROOT / "config" / "config.yaml"


def test_shipped_config_validates_and_fills_defaults():
    c = st.load(CFG)
    assert c["run"] == "demo" and c["judging"]["k"] == 2 and len(c["judging"]["judges"]) == 3
    assert c["refining"]["modes"] == ["multi_feedback", "full_feedback"]  # default filled
    assert c["judging"]["judges"][0]["top_p"] == 0.95  # default inside list items
    assert c["cache_dir"] == "cache"
    # one place per default: the model entry's batch size, the judges' sampling
    assert c["models"]["oracle"]["max_concurrency"] == 2 and c["models"]["smollm2"]["batch_size"] == 64
    assert st.HFModel.model_fields["batch_size"].default == 16
    assert (st.Judge.model_fields["temperature"].default, st.Judge.model_fields["top_p"].default) == (0.7, 0.95)


def test_null_means_another_key_is_resolved_once_and_recorded():
    c = st.load(CFG, overrides={"sampling": {"max_new_tokens": 77}, "draws": {"max_new_tokens": None}})
    assert c["draws"]["model"] == c["training"]["model"] == c["sampling"]["model"] == "smollm2"
    assert c["draws"]["max_new_tokens"] == 77 and c["evaluation"]["max_new_tokens"] == 32
    assert c.derived == {"draws.model": "sampling.model", "training.model": "sampling.model",
                         "draws.max_new_tokens": "sampling.max_new_tokens",
                         "refining.tree_search.oracle": "evaluation.oracle",
                         "refining.tree_search.train_gate": "refining.tree_search.gates",
                         "training.variants": "refining.strategy"}
    assert c["training"]["variants"] == ["tree_search_2of3", "tree_search_3of3"]  # the demo's gates
    assert c["refining"]["tree_search"]["oracle"] == "verifier" and c["refining"]["tree_search"]["train_gate"] == 2
    assert c["refining"]["strategy"] == ["tree_search"]  # one strategy or a list: always a list once validated


@pytest.mark.parametrize("override,message", [
    ({"models": {"smollm2": {"backend": "tgi"}}}, r"models\.smollm2\.backend: unknown backend 'tgi'"),
    ({"sampling": {"model": "gpt5"}}, r"sampling\.model: unknown model 'gpt5'"),
    ({"sampling": {"model": "smolm2"}}, r"sampling\.model: unknown model 'smolm2' \(did you mean 'smollm2'\?\)"),
    ({"judging": {"k": 4}}, r"config key judging\.k: 4 exceeds the number of judges J=3"),
    ({"models": {"hosted": {"backend": "openai", "model": "x"}}}, r"models\.hosted\.base_url: required"),
    ({"models": {"oracle": {"serve": "yes"}}}, r"config key models\.oracle\.serve: .*got 'yes'"),
    ({"judging": {"judges": [{"id": "j1"}]}}, r"config key judging\.judges\[0\]: 'model' is a required key"),
    ({"sampling": {"n_samples": 0}}, r"config key sampling\.n_samples: Input should be greater than or equal to 1 "
                                     r"\(got 0\)"),
    ({"pairs": {"require": "some"}}, r"config key pairs\.require: Input should be 'targeted' or 'all' \(got 'some'\)"),
    ({"run": "bad run/name"}, r"config key run: String should match pattern"),
    ({"judging": {"generic_criteria": [{"criterion_id": "on_topic", "description": "x"}]}},
     r"judging\.generic_criteria\[0\]\.criterion_id: String should match pattern '\^generic:"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        st.load(CFG, overrides=override)


@pytest.mark.parametrize("override,message", [
    ({"oracle": {"proxy": "gpt-4.1-mini"}}, r"oracle\.proxy: unknown model 'gpt-4\.1-mini'"),
    ({"oracle": {"proxy": "none"}}, r"oracle\.proxy: strategy prediction_powered needs a proxy score"),
    ({"oracle": {"proxy": "probe"}}, r"oracle\.proxy: 'probe' cannot steer this run's labelling"),
    ({"oracle": {"label_all_accepted": False}}, r"oracle\.replay_runs: the replay needs an oracle label on every"),
    ({"probe": {"folds": 1}}, r"config key probe\.folds: Input should be greater than or equal to 2"),
    ({"draws": {"enabled": False}}, r"probe\.enabled: the probe learns from the draws"),
])
def test_bad_proxy_and_probe_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        st.load(CFG, overrides=override)


@pytest.mark.parametrize("override,message", [
    ({"samplin": {}}, r"config key samplin: unknown key \(did you mean 'sampling'\?\)"),
    ({"judging": {"judgs": []}}, r"config key judging\.judgs: unknown key \(did you mean 'judges'\?\)"),
    # inside a model entry: the typos that used to pass silently, the defaults applying
    ({"models": {"oracle": {"timout": 5}}},
     r"config key models\.oracle\.timout: unknown key \(did you mean 'timeout'\?\)"),
    ({"models": {"oracle": {"max_retires": 2}}},
     r"models\.oracle\.max_retires: unknown key \(did you mean 'max_retries'"),
    ({"models": {"smollm2": {"batchsize": 2}}}, r"models\.smollm2\.batchsize: unknown key \(did you mean 'batch_size'"),
    ({"models": {"oracle": {"serve": {"prot": 1}}}}, r"models\.oracle\.serve\.prot: unknown key \(did you mean 'port'"),
    ({"judging": {"judges": [{"id": "j1", "model": "smollm2", "temprature": 0.1}]}},
     r"config key judging\.judges\[0\]\.temprature: unknown key \(did you mean 'temperature'"),
    # a rule name under resources.rules / cluster.api_rules
    ({"resources": {"rules": {"judge_response": {"threads": 2}}}},
     r"resources\.rules\.judge_response: no rule 'judge_response' \(did you mean 'judge_responses'\?\)"),
    ({"cluster": {"api_rules": {"clean_question": "cleaning.model"}}},
     r"cluster\.api_rules\.clean_question: no rule 'clean_question' \(did you mean 'clean_questions'"),
    ({"resources": {"rules": {"sample_responses": {"thread": 2}}}},
     r"resources\.rules\.sample_responses\.thread: unknown key \(did you mean 'threads'"),
])
def test_unknown_key_anywhere_names_it_and_the_closest_valid_one(override, message):
    with pytest.raises(ConfigError, match=message):
        st.load(CFG, overrides=override)


@pytest.mark.parametrize("key", ["api_key", "key", "token", "API_KEY", "secret"])
def test_a_secret_in_a_model_entry_is_refused_without_echoing_it(key):
    value = "sk-live-DO-NOT-ECHO-1234567890"
    with pytest.raises(ConfigError) as e:
        st.load(CFG, overrides={"models": {"gpt41": {"backend": "openai", "base_url": "https://api.openai.com/v1",
                                                     "model": "gpt-4.1", key: value}}})
    msg = str(e.value)
    assert f"models.gpt41.{key}" in msg and "api_key_env" in msg and value not in msg


def test_3_of_5_and_5_of_5_are_expressible():
    judges = [{"id": f"j{i}", "model": "smollm2", "seed": i} for i in range(5)]
    for k in (3, 5):
        c = st.load(CFG, overrides={"judging": {"k": k, "judges": judges}})
        assert (c["judging"]["k"], len(c["judging"]["judges"])) == (k, 5)


def test_missing_model_path_is_a_config_error_naming_the_key(tmp_path):
    from judgeflow.models import open_models

    c = st.load(CFG, overrides={"models": {"smollm2": {"path": str(tmp_path / "nope")}}})
    with pytest.raises(ConfigError, match=r"models\.smollm2\.path: no model at"):
        with open_models(c, {"sampling.model": "smollm2"}):
            pass


def test_api_key_env_unset_names_variable_not_value(monkeypatch):
    from judgeflow.models import open_models

    monkeypatch.delenv("JF_TEST_KEY", raising=False)
    c = st.load(CFG, overrides={"models": {"hosted": {
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "JF_TEST_KEY"}}})
    with pytest.raises(ConfigError, match=r"models\.hosted\.api_key_env: environment variable JF_TEST_KEY is not set"):
        with open_models(c, {"cleaning.model": "hosted"}):
            pass


def test_every_example_config_is_complete_on_its_own():
    """A config file given on the command line replaces the demo's: each shipped one must validate alone."""
    for path in sorted((ROOT / "config" / "examples").glob("*.yaml")):
        st.load(path)


def test_generated_schema_and_docs_are_current():
    """config/schema.json and docs/config.md come from the classes (python -m judgeflow.settings --write)."""
    assert json.loads((ROOT / "config" / "schema.json").read_text()) == st.json_schema()
    assert (ROOT / "docs" / "config.md").read_text() == st.docs_markdown()


def test_schema_validates_the_shipped_config_too():
    """The generated JSON schema is a real one: jsonschema accepts the demo and refuses a typo."""
    import jsonschema

    schema = st.json_schema()
    raw = yaml.safe_load(CFG.read_text())
    jsonschema.validate(raw, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**raw, "samplin": {}}, schema)
