"""The typed settings (judgeflow.workflow.settings): defaults once, every key checked, errors that name
the key (and the closest valid one), secrets refused, the generated schema and docs current."""
import json

import pytest
import yaml

from judgeflow.errors import ConfigError
from judgeflow.workflow import settings as st

from conftest import ROOT

CFG = ROOT / "config" / "config.yaml"


def test_shipped_config_validates_and_fills_defaults():
    c = st.load(CFG)
    assert c["run"] == "demo" and c["judging"]["k"] == 1 and len(c["judging"]["judges"]) == 3
    assert c["refining"]["modes"] == ["multi_feedback", "full_feedback"]  # default filled
    assert c["judging"]["judges"][0]["top_p"] == 0.95  # default inside list items
    assert c["cache_dir"] == "cache"
    # one place per default: the model entry's batch size, the judges' sampling
    assert c["models"]["oracle"]["max_concurrency"] == 2 and c["models"]["smollm2"]["batch_size"] == 64
    assert st.HFModelSpec.model_fields["batch_size"].default == 16
    assert (st.JudgeSpec.model_fields["temperature"].default, st.JudgeSpec.model_fields["top_p"].default) == (0.7, 0.95)


def test_null_means_another_key_is_resolved_once_and_recorded():
    c = st.load(CFG, overrides={"sampling": {"max_new_tokens": 77}, "draws": {"max_new_tokens": None},
                                "training": {"variants": None}})
    assert c["draws"]["model"] == c["training"]["model"] == c["sampling"]["model"] == "smollm2"
    assert c["draws"]["max_new_tokens"] == 77 and c["evaluation"]["max_new_tokens"] == 32
    assert c.derived == {"draws.model": "sampling.model", "training.model": "sampling.model",
                         "draws.max_new_tokens": "sampling.max_new_tokens",
                         "refining.tree_search.oracle": "evaluation.oracle",
                         "training.variants": "refining.strategy"}
    # both of the demo's strategies: multi- and full-feedback, and the tree search's gates
    assert c["training"]["variants"] == ["multi_feedback", "full_feedback", "tree_search_2of3", "tree_search_3of3"]
    assert c["refining"]["tree_search"]["oracle"] == "verifier" and c["refining"]["tree_search"]["train_gate"] is None
    shared = st.load(CFG, overrides={"refining": {"tree_search": {"chains": "shared"}}})
    assert shared["refining"]["tree_search"]["train_gate"] == 2  # per_gate chains need none: each gate trains its own
    assert shared.derived["refining.tree_search.train_gate"] == "refining.tree_search.gates"
    assert c["refining"]["strategy"] == ["single", "tree_search"]
    assert st.load(CFG, overrides={"refining": {"strategy": "single"}})["refining"]["strategy"] == ["single"]


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
    # cluster.api_rules: a role key that is no setting, or whose value names no model
    ({"cluster": {"api_rules": {"label_oracle": "oracle.labeler"}}},
     r"cluster\.api_rules\.label_oracle: 'oracle\.labeler' is no setting"),
    ({"cluster": {"api_rules": {"sample_responses": ["sampling.model", "sampling.temperature"]}}},
     r"cluster\.api_rules\.sample_responses: 'sampling\.temperature' names no model \(its value 0\.8"),
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
        with open_models({"smollm2": c.typed().models["smollm2"]}, c["cache_dir"]):
            pass


def test_api_key_env_unset_names_variable_not_value(monkeypatch):
    from judgeflow.models import open_models

    monkeypatch.delenv("JF_TEST_KEY", raising=False)
    c = st.load(CFG, overrides={"models": {"hosted": {
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "JF_TEST_KEY"}}})
    with pytest.raises(ConfigError, match=r"models\.hosted\.api_key_env: environment variable JF_TEST_KEY is not set"):
        with open_models({"hosted": c.typed().models["hosted"]}, c["cache_dir"]):
            pass


def test_every_example_config_is_complete_on_its_own():
    """A config file given on the command line replaces the demo's: each shipped one must validate alone."""
    for path in sorted((ROOT / "config" / "examples").glob("*.yaml")):
        st.load(path)


def test_generated_schema_and_docs_are_current():
    """config/schema.json and docs/config.md come from the classes (python -m judgeflow.workflow.settings --write)."""
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


# ------------------------------------------------------------------ literal settings: did you mean

@pytest.mark.parametrize("override,message", [
    # one value or a list of them: the wrong value itself, never "(got list)"
    ({"refining": {"strategy": "tree_serach"}},
     r"^config key refining\.strategy: Input should be 'single' or 'tree_search' \(got 'tree_serach'\); "
     r"did you mean 'tree_search'\?$"),
    ({"refining": {"strategy": ["single", "tree_serach"]}},
     r"^config key refining\.strategy\[1\]: .* \(got 'tree_serach'\); did you mean 'tree_search'\?$"),
    ({"oracle": {"interval": "betings"}},
     r"^config key oracle\.interval: Input should be 'hoeffding', 'clopper_pearson' or 'betting' \(got 'betings'\); "
     r"did you mean 'betting'\?$"),
    ({"oracle": {"strategy": "bisecton"}}, r"oracle\.strategy: .* \(got 'bisecton'\); did you mean 'bisection'\?$"),
    ({"refining": {"modes": ["multi_feedbak"]}}, r"refining\.modes\[0\]: .*did you mean 'multi_feedback'\?$"),
    ({"models": {"smollm2": {"dtype": "bfloat61"}}}, r"models\.smollm2\.dtype: .*did you mean 'bfloat16'\?$"),
    # a boolean or a word: both listed
    ({"models": {"oracle": {"logprobs": "aut"}}},
     r"^config key models\.oracle\.logprobs: Input should be true, false or 'auto' \(got 'aut'\); "
     r"did you mean 'auto'\?$"),
    # nothing close: the allowed values alone
    ({"pairs": {"require": "some"}},
     r"^config key pairs\.require: Input should be 'targeted' or 'all' \(got 'some'\)$"),
])
def test_a_wrong_literal_value_lists_the_allowed_ones_and_the_closest(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        st.load(CFG, overrides=override)
    assert "got list" not in str(e.value) and "literal[" not in str(e.value)


# --------------------------------------------------- secrets: api_key_env holding a key, base_url credentials

KEYS = ["sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ3lN5pR7tV9xZ", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz12345678", "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "3f9a" * 10, "gsk_" + "Wq8Zr3Lp0Xv5Ty2Nb7Mk4Hj1Gf6Ds9Ac"]


@pytest.mark.parametrize("value", KEYS, ids=["openai", "stripe-like", "huggingface", "google", "hex", "groq"])
def test_a_key_pasted_as_api_key_env_is_refused_without_echoing_it(value):
    with pytest.raises(ConfigError, match=r"^models\.gpt41\.api_key_env: expected the NAME of the environment "
                                          r"variable") as e:
        st.load(CFG, overrides={"models": {"gpt41": {"backend": "openai", "base_url": "https://api.openai.com/v1",
                                                     "model": "gpt-4.1", "api_key_env": value}}})
    assert value not in str(e.value) and value[-12:] not in str(e.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "DEEPSEEK_API_KEY", "HF_TOKEN", "AZURE_OPENAI_API_KEY_2",
                                  "JF_FAULT_TEST_API_KEY", "my_key"])
def test_an_environment_variable_name_is_a_valid_api_key_env(name):
    c = st.load(CFG, overrides={"models": {"gpt41": {"backend": "openai", "base_url": "https://api.openai.com/v1",
                                                     "model": "gpt-4.1", "api_key_env": name}}})
    assert c["models"]["gpt41"]["api_key_env"] == name


SECRET = "s3cr3t-DO-NOT-ECHO-0123456789"


@pytest.mark.parametrize("url,what", [
    (f"https://user:{SECRET}@api.example.com/v1", r"a user name and password"),
    (f"https://{SECRET}@api.example.com/v1", r"a user name or token"),
    (f"https://api.example.com/v1?api-key={SECRET}", r"the query parameter 'api-key'"),
    (f"https://api.example.com/v1?key={SECRET}", r"the query parameter 'key'"),
    (f"https://api.example.com/v1?token={SECRET}", r"the query parameter 'token'"),
    (f"https://api.example.com/v1?api_key={SECRET}&x=1", r"the query parameter 'api_key'"),
    (f"https://api.example.com/v1?access_token={SECRET}", r"the query parameter 'access_token'"),
])
def test_a_credential_in_base_url_is_refused_without_echoing_it(url, what):
    with pytest.raises(ConfigError, match=rf"^models\.gpt41\.base_url: the URL holds a credential \({what}") as e:
        st.load(CFG, overrides={"models": {"gpt41": {"backend": "openai", "base_url": url, "model": "gpt-4.1"}}})
    assert SECRET not in str(e.value) and "0123456789" not in str(e.value)


def test_a_base_url_without_credentials_passes():
    url = "https://myres.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-02-01"
    c = st.load(CFG, overrides={"models": {"gpt41": {"backend": "openai", "base_url": url, "model": "gpt-4.1"}}})
    assert c["models"]["gpt41"]["base_url"] == url


# ------------------------------------------- before any job: templates and API key variables

HOSTED = {"backend": "openai", "base_url": "https://api.example.com/v1", "model": "x", "api_key_env": "JF_TEST_KEY"}


def _rules(**overrides):
    from judgeflow.workflow.rulekit import Rules

    return Rules(st.load(CFG, overrides=overrides))


def test_every_template_setting_and_every_stage_fills_the_table_s_placeholders():
    """One table (judgeflow.generation.prompting.TEMPLATE_FIELDS) of the placeholders per template setting: the
    stages' declarations name only its keys, and each load_template call in the package fills
    exactly its set (the stage code and the parse-time check cannot drift apart)."""
    import ast

    from judgeflow.generation import prompting
    from judgeflow.workflow import pipeline

    everything = st.load(CFG, overrides={"refining": {"strategy": ["single", "tree_search"],
                                                      "tree_search": {"oracle": "oracle"}},
                                         "oracle": {"labeller": "oracle", "proxy": "oracle",
                                                    "strategy": "prediction_powered"},
                                         "judging": {"calibration": {"budget": 1000}},
                                         "cleaning": {"model": "oracle", "template": "clean", "answer_first": False,
                                                      "enabled": True},
                                         "evolution": {"enabled": True, "model": "oracle"}})
    declared = {d for s in pipeline.STAGES.values() for d in s.decl("templates", everything)}
    assert declared == set(prompting.TEMPLATE_FIELDS)
    calls = 0
    for path in (ROOT / "src" / "judgeflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_template" and \
                    isinstance(node.args[1], ast.Set):
                key = node.args[2]
                key = key.value if isinstance(key, ast.Constant) else "".join(
                    v.value if isinstance(v, ast.Constant) else "0" for v in key.values)  # f"...[{i}]..."
                assert {e.value for e in node.args[1].elts} == prompting.template_fields(key), (path, key)
                calls += 1
    assert calls >= 6


def test_a_template_with_the_wrong_placeholders_is_an_error_naming_its_key(tmp_path):
    bad = tmp_path / "judge.txt"
    bad.write_text("Question: {question}\nAnswer: {answer}\nVerdict:")
    judges = [{"id": f"j{i}", "model": "smollm2", **({"template": str(bad)} if i == 1 else {})} for i in range(3)]
    with pytest.raises(ConfigError, match=r"^judging\.judges\[1\]\.template: template '.*judge\.txt' uses "
                                          r"fields \['answer', 'question'\], expected \['criterion', 'question', "
                                          r"'response'\]"):
        _rules(judging={"k": 1, "judges": judges}).check_before_jobs()
    broken = tmp_path / "clean.txt"
    broken.write_text("Is {question answerable?")
    with pytest.raises(ConfigError, match=r"^cleaning\.template: template '.*clean\.txt' is not a valid format"):
        _rules(cleaning={"template": str(broken)}).check_before_jobs()
    # a template of a stage this config does not run is not loaded: the pairwise oracle with the verifier
    _rules(evaluation={"oracle": "verifier", "oracle_template": str(bad)}).check_before_jobs()
    with pytest.raises(ConfigError, match=r"^evaluation\.oracle_template: .* expected \['question', 'response_a', "
                                          r"'response_b'\]"):
        _rules(evaluation={"oracle": "oracle", "oracle_template": str(bad)}).check_before_jobs()


def test_an_unset_api_key_variable_of_a_model_a_stage_calls_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"^models\.hosted\.api_key_env: environment variable JF_TEST_KEY is not "
                                          r"set \(it must hold the API key of model 'hosted', named by "
                                          r"cleaning\.model, refining\.tree_search\.oracle and evaluation\.oracle; "
                                          r"set it before running the workflow: export JF_TEST_KEY=\.\.\.\)$"):
        _rules(models={"hosted": HOSTED}, cleaning={"model": "hosted", "template": "clean", "answer_first": False},
               evaluation={"oracle": "hosted"}).check_before_jobs(environ={})
    _rules(models={"hosted": HOSTED}, cleaning={"model": "hosted", "template": "clean", "answer_first": False},
           evaluation={"oracle": "hosted"}).check_before_jobs(environ={"JF_TEST_KEY": "sk-x"})
    # a cluster job re-reads the workflow without the check (environ None)
    _rules(models={"hosted": HOSTED}, evaluation={"oracle": "hosted"}).check_before_jobs(environ=None)


@pytest.mark.parametrize("overrides", [
    {},                                                                  # defined, used by no role
    {"cleaning": {"enabled": False, "model": "hosted"}},                 # the cleaning stage asks no oracle
    {"draws": {"enabled": False}, "probe": {"enabled": False},           # no draws: no labels, no proxy,
     "oracle": {"labeller": "hosted", "proxy": "hosted", "replay_runs": 0, "strategy": "fixed_sequence"},
     "judging": {"k": 1, "calibration": {"questions": 0},               # and no calibration split to label
                 "judges": [{"id": "p", "model": "smollm2"}]}, "refining": {"tree_search": {"gates": [{"k": 1}]}}},
    {"refining": {"strategy": "single", "tree_search": {"oracle": "hosted"}}},  # no tree search
])
def test_a_model_no_stage_of_the_config_calls_needs_no_key(overrides):
    _rules(**st.deep_merge({"models": {"hosted": HOSTED}}, overrides)).check_before_jobs(environ={})


@pytest.mark.slow  # runs Snakemake
def test_a_wrong_template_or_an_unset_key_stops_the_dry_run_before_any_job(tmp_path, monkeypatch):
    """What failed only when the stage ran, after the jobs upstream of it, now stops `snakemake -n`."""
    from project import smk, tiny_config, write_tiny_project

    monkeypatch.delenv("JF_TEST_KEY", raising=False)
    cfg = tiny_config()
    cfg["models"]["hosted"] = HOSTED  # defined, used by no stage: no key needed
    proj = write_tiny_project(tmp_path / "p", cfg)
    path = proj / "config" / "tiny.yaml"
    ok = smk(proj, "-n", "--quiet", "rules", configfile=path)
    assert "clean_questions" in ok.stdout
    cfg["cleaning"]["model"] = "hosted"
    path.write_text(yaml.safe_dump(cfg))
    p = smk(proj, "-n", configfile=path, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Job stats" not in out, out[-3000:]
    assert "models.hosted.api_key_env: environment variable JF_TEST_KEY is not set" in out and "cleaning.model" in out
    assert "Job stats" in smk(proj, "-n", configfile=path, env={"JF_TEST_KEY": "sk-jf-test-0123456789"}).stdout
    cfg = tiny_config()
    (proj / "data" / "judge.txt").write_text("Question: {question}\nAnswer: {answer}\nVerdict:")
    cfg["judging"]["judges"][2]["template"] = "data/judge.txt"
    path.write_text(yaml.safe_dump(cfg))
    p = smk(proj, "-n", configfile=path, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Job stats" not in out, out[-3000:]
    assert ("judging.judges[2].template: template 'data/judge.txt' uses fields ['answer', 'question'], expected "
            "['criterion', 'question', 'response']") in out


def test_every_backend_validated_is_one_the_registry_opens():
    """The backends' spec classes (validation) and judgeflow.models.BACKENDS (their openers) name the same
    backends, in the order the docs list them."""
    from judgeflow.models import BACKENDS

    assert st.BACKENDS == ("hf", "openai", "vllm", "reward_model") == tuple(BACKENDS)
