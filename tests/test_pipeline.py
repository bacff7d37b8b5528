"""The stage declarations (judgeflow.workflow.pipeline): params and operational settings apart, a stage sees
only what it declares, code digests cover exactly the modules a stage imports."""
import shutil

import pytest

from judgeflow.workflow import pipeline, settings as st
from judgeflow.workflow.pipeline import STAGES, Declared, UndeclaredSetting

from conftest import PROMPT_JUDGES, ROOT

CFG = ROOT / "config" / "config.yaml"


@pytest.fixture(scope="module")
def demo():
    return st.load(CFG)


def test_every_declared_path_is_a_setting_of_the_demo(demo):
    for name, stage in STAGES.items():
        wildcards = {"model": "SmolLM2-135M-Instruct"} if name == "prepare_model" else None
        if (name == "score_proxy" and demo["oracle"]["proxy"] == "judges") or name == "label_calibration":
            # the judges' scores come from the draws' verdict files alone, the verifier's labels from the
            # calibration responses alone: no setting shapes them
            assert pipeline.declared_paths(stage, demo, wildcards) == []
            continue
        if name == "train_judge":  # one job per trained (or reward-model) judge: the demo's judges are prompts
            continue
        assert pipeline.declared_paths(stage, demo, wildcards), name


def test_train_judge_reads_exactly_its_own_judge_by_id():
    cfg = st.load(CFG, overrides={"judging": {"k": 1, "calibration": {"questions": 20}, "judges": [
        {"id": "t1", "kind": "trained", "model": "smollm2", "layers": [-1]},
        {"id": "t2", "kind": "trained", "model": "smollm2", "layers": [-2]},
        {"id": "p1", "model": "smollm2"}]}, "refining": {"tree_search": {"gates": [{"k": 1}]}}})
    stage = STAGES["train_judge"]
    params = pipeline.params(stage, cfg, {"judge": "t2"})
    assert params["judging"]["judges"][1]["layers"] == [-2] and params["judging"]["judges"][0] == {}
    assert params["judging"]["judges"][2] == {} and params["judging"]["calibration"] == {"folds": 5}
    assert pipeline.params(stage, cfg, {"judge": "t1"}) != params
    # the job's own view: the stage finds its judge at any index without reading another judge's id
    # (regression: the second judge's job read judging.judges[0].id and failed as undeclared)
    from judgeflow.stages.train_judge import own_judge

    for index, judge_id in enumerate(("t1", "t2")):
        wc = {"judge": judge_id}
        view = pipeline.view(stage, pipeline.params(stage, cfg, wc), pipeline.tunes(stage, cfg, wc),
                             pipeline.declared_roots(stage, cfg, wc))
        i, spec = own_judge(view, judge_id)
        assert (i, spec["id"], spec["layers"]) == (index, judge_id, [-1 - index])
    with pytest.raises(KeyError, match="no item with id 'nope'"):
        pipeline.params(stage, cfg, {"judge": "nope"})


def test_operational_settings_are_handed_over_but_are_no_params(demo):
    s = STAGES["sample_responses"]
    params, tunes = pipeline.params(s, demo), pipeline.tunes(s, demo)
    assert "checkpoint_every" not in params["sampling"] and tunes["sampling"] == {"checkpoint_every": 64}
    spec = demo["models"]["smollm2"]
    assert params["models"]["smollm2"] == {k: spec[k] for k in ("backend", "path", "device", "dtype")}
    assert tunes["models"]["smollm2"] == {"batch_size": spec["batch_size"]}
    clean = STAGES["clean_questions"]
    # the served oracle as cleaner (the demo's cleaner answers first, which needs an hf model)
    served = st.load(CFG, overrides={"cleaning": {"model": "oracle", "answer_first": False, "template": "clean",
                                                  "max_new_tokens": 64}})
    t = pipeline.tunes(clean, served)
    assert set(t["models"]["oracle"]) == {"api_key_env", "max_concurrency", "timeout", "max_retries", "serve",
                                           "price"}
    assert t["cache_dir"] == "cache" and "cache_dir" not in pipeline.params(clean, served)
    assert pipeline.params(clean, demo)["seed"] == 1234  # the seed shapes the held-out split


def test_a_stage_reading_an_undeclared_setting_fails_naming_it(demo, tmp_path, monkeypatch):
    from judgeflow.workflow.io import write_jsonl

    kept = tmp_path / "kept.jsonl"
    write_jsonl(kept, [{"question_id": "q", "prompt": "Hi?", "criteria": []}])
    narrowed = pipeline.Stage("build_pairs", "judgeflow.stages.build_pairs", reads=("run",))
    monkeypatch.setitem(STAGES, "build_pairs", narrowed)
    empty = tmp_path / "e.jsonl"
    write_jsonl(empty, [])
    inp = {"kept": str(kept), **{k: [str(empty)] for k in ("responses", "response_verdicts", "response_aggregates",
                                                          "refinements", "refinement_verdicts",
                                                          "refinement_aggregates")}}
    out = {k: str(tmp_path / f"{k}.out") for k in ("multi", "full", "summary", "overall")}
    with pytest.raises(UndeclaredSetting, match=r"stage build_pairs read the setting 'pairs'"):
        pipeline.run_stage("build_pairs", inp, out, demo)


def test_declared_view_refuses_undeclared_keys_even_with_get():
    v = Declared({"a": {"b": 1}, "l": [{"x": 2}]}, "s")
    assert v["a"]["b"] == 1 and v["l"][0]["x"] == 2 and "a" in v
    with pytest.raises(UndeclaredSetting, match=r"'a\.c'"):
        v["a"].get("c", 5)
    with pytest.raises(UndeclaredSetting, match=r"'l\[0\]\.y'"):
        v["l"][0]["y"]
    assert v.read == {"a.b", "l[0].x"} and v.to_dict() == {"a": {"b": 1}, "l": [{"x": 2}]}


def test_declared_view_reads_sections_as_attributes_like_the_typed_settings(demo):
    """A stage reads `settings.judging.judges[0].model` (typed as judgeflow.workflow.settings.Settings):
    the view answers like the pydantic section, counts the read, and refuses what is not declared."""
    stage = STAGES["judge_responses"]
    v = pipeline.view(stage, pipeline.params(stage, demo, {"shard": "0"}), {},
                      pipeline.declared_roots(stage, demo, {"shard": "0"}))
    typed = st.Settings.model_validate(demo)
    assert v.judging.judges[0].model == typed.judging.judges[0].model
    assert v.judging.k == typed.judging.k and "judging.k" in v.read
    with pytest.raises(UndeclaredSetting, match=r"stage judge_responses read the setting 'draws'"):
        _ = v.draws
    with pytest.raises(AttributeError):  # a missing key of a map declared whole: absent, as with getattr
        _ = Declared({"kwargs": {}}, "s", roots=frozenset({("kwargs",)})).kwargs.language
    assert not hasattr(v, "__deepcopy__")


def test_annotation_only_imports_are_no_stage_code(tmp_path, monkeypatch):
    """`if TYPE_CHECKING:` imports never run: a stage annotating its job as pipeline.Job does not digest
    the declarations (an edit there would rerun every stage)."""
    pkg = tmp_path / "judgeflow"
    (pkg / "stages").mkdir(parents=True)
    for f in (pkg / "__init__.py", pkg / "stages" / "__init__.py", pkg / "used.py", pkg / "typed.py"):
        f.write_text("")
    (pkg / "stages" / "s.py").write_text("from typing import TYPE_CHECKING\nimport judgeflow.used\n"
                                         "if TYPE_CHECKING:\n    from judgeflow.typed import X\n")
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", pkg)
    pipeline._imports.cache_clear()
    try:
        closure = pipeline.module_closure("judgeflow.stages.s")
    finally:
        pipeline._imports.cache_clear()
    assert "judgeflow.used" in closure and "judgeflow.typed" not in closure


def test_each_stage_digests_exactly_the_modules_it_imports():
    closure = {n: set(pipeline.module_closure(s.module)) for n, s in STAGES.items()}
    assert "judgeflow.judging.judges" in closure["judge_responses"]
    for name in ("sample_responses", "clean_questions", "prepare_questions", "prepare_model"):
        assert "judgeflow.judging.judges" not in closure[name], name
    assert "judgeflow.generation.sampling" not in closure["judge_responses"]
    assert {"judgeflow.training.dpo", "judgeflow.training.worker"} <= closure["train_dpo"]
    assert "judgeflow.workflow.pipeline" not in set().union(*closure.values())  # the declarations are no stage's code


def test_a_module_edit_changes_the_digests_of_the_stages_that_import_it(tmp_path, monkeypatch):
    pkg = tmp_path / "judgeflow"
    shutil.copytree(pipeline.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", pkg)
    pipeline._imports.cache_clear()
    before = {n: pipeline.code_digest(s) for n, s in STAGES.items()}
    (pkg / "judging" / "judges.py").write_text((pkg / "judging" / "judges.py").read_text() + "\n# edited\n")
    after = {n: pipeline.code_digest(s) for n, s in STAGES.items()}
    pipeline._imports.cache_clear()
    changed = {n for n in STAGES if before[n] != after[n]}
    assert {"judge_responses", "judge_refinements", "sample_until_accept", "evaluate_responses"} <= changed
    assert not changed & {"prepare_model", "prepare_questions", "clean_questions", "sample_responses"}


def test_templates_are_files_packaged_or_the_users(demo, tmp_path):
    assert pipeline.template_files(STAGES["judge_responses"], demo) == []  # trained judges load no template
    prompts = st.load(CFG, overrides={"judging": PROMPT_JUDGES})
    files = pipeline.template_files(STAGES["judge_responses"], prompts)
    # prompt judges: j1 and j2 share judge_brief, j3 is judge_brief_strict (each file once)
    assert files == ["src/judgeflow/prompts/judge_brief.txt", "src/judgeflow/prompts/judge_brief_strict.txt"]
    mine = tmp_path / "mine.txt"
    mine.write_text("{question}")
    c = st.load(CFG, overrides={"cleaning": {"template": str(mine)}})
    assert pipeline.template_files(STAGES["clean_questions"], c) == [str(mine)]


def test_the_prepared_question_file_is_keyed_by_what_shapes_it():
    from judgeflow.workflow.rulekit import Rules

    ifbench = {"questions": {"source": "ifbench", "limit": 8}}
    name = Rules(st.load(CFG, overrides=ifbench)).questions_file()
    assert name.startswith("resources/data/ifbench-first8-") and name.endswith(".jsonl")
    assert Rules(st.load(CFG, overrides={**ifbench, "run": "b", "seed": 5})).questions_file() == name
    assert Rules(st.load(CFG, overrides={"questions": {"source": "ifbench", "limit": 8, "heldout": 3}})
                 ).questions_file() == name
    assert Rules(st.load(CFG, overrides={"questions": {"source": "ifbench", "limit": 9}})).questions_file() != name
    composed = Rules(st.load(CFG)).questions_file()
    assert composed.startswith("resources/data/composed-")
    assert Rules(st.load(CFG, overrides={"questions": {"composed": {"count": 50}}})).questions_file() != composed


def test_a_job_opens_the_models_its_stage_declares_and_no_other(demo, monkeypatch):
    """job.models(): the models of the stage's declaration for this job (no list of them in the stage);
    naming another is an UndeclaredSetting; the backend gets only each model's own entry and the cache."""
    opened = {}

    def fake_open(specs, cache_dir, log_dir=None, threads=None):
        opened.update(specs=dict(specs), cache_dir=cache_dir, threads=threads)
        return "opened"

    monkeypatch.setattr("judgeflow.models.open_models", fake_open)
    models = pipeline.stage_models(STAGES["sample_responses"], demo, {"shard": "0"}, threads=3)
    assert models() == "opened"
    assert opened == {"specs": {"smollm2": demo.typed().models["smollm2"]}, "cache_dir": demo["cache_dir"],
                      "threads": 3}
    with pytest.raises(UndeclaredSetting, match=r"stage sample_responses opened model\(s\) judge-x, which its "
                                                r"declaration does not name \(it names: smollm2\)"):
        models("judge-x")
    # cleaning's model is one of its stage's only while cleaning is on
    off = st.load(CFG, overrides={"cleaning": {"enabled": False}})
    assert pipeline.stage_models(STAGES["clean_questions"], off, {})() == "opened" and opened["specs"] == {}


def test_the_settings_classes_are_in_no_code_digest():
    """The DPO worker reads its settings typed (judgeflow.workflow.settings.Training): an edit of settings.py
    (a description, another stage's declaration in pipeline.py) reruns no stage by its code; the values that
    reach a stage are in its settings param."""
    closures = {n: pipeline.module_closure(s.module) for n, s in STAGES.items()}
    assert "judgeflow.training.dpo" in closures["train_dpo"]
    assert not any("judgeflow.workflow.settings" in c or "judgeflow.workflow.pipeline" in c for c in closures.values())
