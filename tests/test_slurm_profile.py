"""profiles/slurm without SLURM: the profile parses, rules map to partitions and GPUs, the
full-scale dry-run builds its DAG with no SLURM binary on PATH, missing site values fail
before any job, plus judgeflow.workflow.cluster and judgeflow.workflow.launch."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from judgeflow.workflow import cluster as jc
from judgeflow.workflow.launch import accelerate_command, gpus_from_environment, gpus_per_node

from conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = ROOT / "profiles" / "slurm"
FULL = ROOT / "config" / "examples" / "full-scale.yaml"
GPU_RULES = ["sample_responses", "judge_responses", "refine_responses", "judge_refinements",
             "sample_until_accept", "evaluate_responses"]
CPU_RULES = ["prepare_model", "clean_questions", "label_oracle", "best_of_n", "evaluate_policies"]
SLURM_TOOLS = {"sbatch", "srun", "salloc", "sacct", "sacctmgr", "squeue", "sinfo", "scontrol",
               "scancel", "sshare", "sstat", "sprio", "sreport", "sattach", "sbcast", "sdiag"}
SITE = {"account": "acct", "cpu_partition": "cpuq", "gpu_partition": "gpuq", "gpu_account": "acct@a100",
        "gpu_constraint": "a100", "gpu_qos": "qos_gpu-t3", "gpu_extra": "--hint=nomultithread",
        "cpus_per_gpu": 8, "gpu_mem_mb": 0, "train_partition": "trainq", "train_gpus": 4}


def make_no_slurm_path(d: Path) -> str:
    """PATH with the venv and every system tool except SLURM's (links in the empty folder `d`)."""
    for src in ("/usr/local/bin", "/usr/bin", "/bin"):
        for f in Path(src).glob("*") if Path(src).is_dir() else []:
            if f.name not in SLURM_TOOLS and not (d / f.name).exists():
                (d / f.name).symlink_to(f)
    path = f"{Path(sys.executable).parent}:{d}"
    assert not any(Path(p, t).exists() for p in path.split(":") for t in SLURM_TOOLS)
    return path


@pytest.fixture(scope="module")
def no_slurm_path(tmp_path_factory) -> str:
    return make_no_slurm_path(tmp_path_factory.mktemp("bin"))


def _env(path, site_file=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEFLOW_SLURM_")}
    env.update(PATH=path, HF_HUB_OFFLINE="1", **extra)
    env.setdefault("OPENAI_API_KEY", "sk-placeholder-dry-run")  # the full-scale config's GPT-4.1 (checked at parse)
    if site_file:
        env["JUDGEFLOW_SLURM_SITE"] = str(site_file)
    return env


def _dry_run(tmp_path, path, *args, site=SITE, profile=PROFILE, configfile=FULL, **env):
    site_file = None
    if site is not None:
        site_file = tmp_path / "site.yaml"
        site_file.write_text(yaml.safe_dump(site))
    over = tmp_path / "paths.yaml"
    over.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "r"), "logs_dir": str(tmp_path / "l"),
                                    "benchmarks_dir": str(tmp_path / "b")}))
    cmd = [SNAKEMAKE, "-n", "--profile", str(profile), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(ROOT), "--nolock", "--configfile", str(configfile), str(over), *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(path, site_file, **env), timeout=300)
    return p, time.perf_counter() - t0


def _job_resources(output: str) -> dict[str, list[dict]]:
    """rule -> the resources of each of its jobs, from a dry-run's job listing."""
    out: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=\[.*\]\n(?:local)?rule )", output):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        r = re.search(r"^\s+resources: (.*)$", block, re.M)
        if m and r:
            out.setdefault(m.group(1), []).append(dict(kv.split("=", 1) for kv in r.group(1).split(", ")))
    return out


def test_profile_parses_and_never_sets_tasks_on_gpu_rules():
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["retries"] >= 1 and prof["rerun-incomplete"] is True
    sr = prof["set-resources"]
    for rule in GPU_RULES + ["train_dpo"]:
        assert "gpu" in sr[rule], rule
        # tasks -> --ntasks-per-gpu, unless tasks_per_gpu is set (train_dpo over several nodes: tasks_per_gpu 0)
        assert "tasks" not in sr[rule] if rule in GPU_RULES else "tasks_per_gpu" in sr[rule], rule
        assert "GPU_PARTITION" in sr[rule]["slurm_partition"] or "TRAIN_PARTITION" in sr[rule]["slurm_partition"]
    for rule in CPU_RULES:
        assert rule in sr and "gpu" not in sr[rule]
    refs = jc.referenced_variables(str(v) for d in [prof["default-resources"], *sr.values(), prof["set-threads"]]
                                   for v in (d.values() if isinstance(d, dict) else [d]))
    assert refs == {jc.env_name(k) for k in jc.SITE_KEYS}  # every site key is used, nothing else


def test_profile_resources_follow_each_stage_node_class():
    """profiles/slurm agrees with the stages' declarations (pipeline.Stage.node): a gpu stage gets one GPU
    on the GPU partition and the CPUs per GPU, a train stage the training GPUs, a cpu stage no GPU, and a
    stage that always runs where Snakemake runs no SLURM resources at all; nothing else is mapped."""
    from judgeflow.workflow.pipeline import STAGES

    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    sr, threads = prof["set-resources"], prof["set-threads"]
    assert set(sr) <= set(STAGES) and set(threads) <= set(STAGES)
    for name, stage in STAGES.items():
        if stage.local:
            assert name not in sr and name not in threads, name
        elif stage.node == "gpu":
            assert sr[name]["gpu"] == 1 and "GPU_PARTITION" in sr[name]["slurm_partition"], name
            assert "CPUS_PER_GPU" in threads[name], name
        elif stage.node == "train":
            assert "TRAIN_GPUS" in str(sr[name]["gpu"]) and "TRAIN_PARTITION" in sr[name]["slurm_partition"], name
            assert "TRAIN_GPUS" in threads[name], name
        else:
            assert name in sr and "gpu" not in sr[name] and name not in threads, name


def test_full_scale_dry_run_maps_rules_without_slurm_binaries(tmp_path, no_slurm_path):
    p, _ = _dry_run(tmp_path, no_slurm_path)   # its time: benchmarks/dry_run.py
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = _job_resources(p.stdout + p.stderr)
    assert len(jobs["sample_responses"]) == len(jobs["judge_refinements"]) == 32
    for rule in ["sample_responses", "judge_responses", "refine_responses", "judge_refinements",
                 "sample_until_accept", "evaluate_responses"]:
        assert jobs[rule], rule
        for res in jobs[rule]:
            assert res["slurm_partition"] == "gpuq" and res["gpu"] == "1", (rule, res)
            assert res["slurm_account"] == "acct@a100" and res["constraint"] == "a100"
            assert res["qos"] == "qos_gpu-t3" and res["slurm_extra"] == "--hint=nomultithread"
            assert res["cpus_per_task"] == "8" and res["mem_mb"] == "0"   # 0: no --mem
            assert "tasks" not in res
    for rule in ["clean_questions", "label_oracle", "best_of_n"]:
        for res in jobs[rule]:
            assert res["slurm_partition"] == "cpuq" and res["slurm_account"] == "acct", (rule, res)
            assert "gpu" not in res and "qos" not in res and "constraint" not in res
    # GPT-4.1 over api.openai.com: cleaning and the pairwise evaluation run on the login node
    assert "run on this node (localrules): clean_questions, evaluate_policies\n" in p.stdout + p.stderr
    assert len(jobs["train_dpo"]) == 2 and all(r["gpu"] == "4" for r in jobs["train_dpo"])


def test_missing_site_values_fail_before_any_job(tmp_path, no_slurm_path):
    p, _ = _dry_run(tmp_path, no_slurm_path, site={"cpu_partition": "cpuq"})
    err = p.stdout + p.stderr
    assert p.returncode != 0
    assert "JUDGEFLOW_SLURM_ACCOUNT is not set" in err and "JUDGEFLOW_SLURM_GPU_PARTITION is not set" in err
    assert "JUDGEFLOW_SLURM_CPU_PARTITION is not set" not in err
    assert "no job was submitted" in err and "Building DAG" not in err  # stopped while parsing


def test_environment_wins_over_site_file_and_unmapped_rules_are_named(tmp_path, no_slurm_path):
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    del prof["set-resources"]["judge_responses"]
    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "config.yaml").write_text(yaml.safe_dump(prof))
    p, _ = _dry_run(tmp_path, no_slurm_path, profile=tmp_path / "prof",
                    JUDGEFLOW_SLURM_GPU_PARTITION="fromenv")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert re.search(r"no per-rule resources for judge_responses;", out)
    jobs = _job_resources(out)
    assert all(r["slurm_partition"] == "fromenv" for r in jobs["sample_responses"])
    assert all(r["slurm_partition"] == "cpuq" and "gpu" not in r for r in jobs["judge_responses"])


def test_local_profile_is_untouched(tmp_path, no_slurm_path):
    p, _ = _dry_run(tmp_path, no_slurm_path, site=None, profile=ROOT / "profiles" / "local",
                    configfile=ROOT / "config" / "config.yaml")
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "SLURM" not in out and "slurm_partition" not in out, out[-2000:]


# --- judgeflow.workflow.cluster ---------------------------------------------------------------------

def test_resolve_site_defaults_and_errors(tmp_path):
    v = jc.resolve_site({}, {"account": "p@cpu", "cpu_partition": "c", "gpu_partition": "g"})
    assert v["JUDGEFLOW_SLURM_GPU_ACCOUNT"] == "p@cpu" and v["JUDGEFLOW_SLURM_TRAIN_PARTITION"] == "g"
    assert v["JUDGEFLOW_SLURM_CPUS_PER_GPU"] == "8" and v["JUDGEFLOW_SLURM_GPU_QOS"] == ""
    v = jc.resolve_site({"JUDGEFLOW_SLURM_ACCOUNT": "env"}, {"account": "site", "cpu_partition": "c",
                                                              "gpu_partition": "g"})
    assert v["JUDGEFLOW_SLURM_ACCOUNT"] == "env"
    with pytest.raises(jc.ClusterConfigError, match="JUDGEFLOW_SLURM_CPUS_PER_GPU='eight'"):
        jc.resolve_site({}, {"account": "a", "cpu_partition": "c", "gpu_partition": "g", "cpus_per_gpu": "eight"})
    with pytest.raises(jc.ClusterConfigError, match="unexpanded variable"):
        jc.resolve_site({}, {"account": "$IDRPROJ@cpu", "cpu_partition": "c", "gpu_partition": "g"})
    bad = tmp_path / "s.yaml"
    bad.write_text("acount: x\n")
    with pytest.raises(jc.ClusterConfigError, match="unknown key 'acount'"):
        jc.load_site(bad)


def test_jean_zay_preset_resolves(monkeypatch):
    monkeypatch.setenv("IDRPROJ", "abc")
    site = jc.load_site(ROOT / "profiles/slurm/sites/jean-zay.yaml")
    v = jc.resolve_site({}, site)
    assert v["JUDGEFLOW_SLURM_ACCOUNT"] == "abc@cpu" and v["JUDGEFLOW_SLURM_GPU_ACCOUNT"] == "abc@a100"
    assert v["JUDGEFLOW_SLURM_GPU_PARTITION"] == "gpu_p5" and v["JUDGEFLOW_SLURM_GPU_CONSTRAINT"] == "a100"
    assert v["JUDGEFLOW_SLURM_TRAIN_PARTITION"] == "gpu_p6" and v["JUDGEFLOW_SLURM_TRAIN_ACCOUNT"] == "abc@h100"
    assert v["JUDGEFLOW_SLURM_GPU_MEM_MB"] == "0" and v["JUDGEFLOW_SLURM_GPU_EXTRA"] == "--hint=nomultithread"


def test_prepare_environment_sets_site_and_offline_flags(tmp_path):
    env = {"JUDGEFLOW_SLURM_ACCOUNT": "a", "JUDGEFLOW_SLURM_CPU_PARTITION": "c",
           "JUDGEFLOW_SLURM_GPU_PARTITION": "g", "HF_HUB_OFFLINE": "0"}
    assert jc.prepare_environment(["8", "'$OTHER'"], dict(env), tmp_path) is None  # not our profile
    jc.prepare_environment(["'$JUDGEFLOW_SLURM_ACCOUNT'"], env, tmp_path)
    assert env["HF_HUB_OFFLINE"] == "1" and env["JUDGEFLOW_SLURM_TRAIN_GPUS"] == "4"


@pytest.mark.parametrize("spec,hosted", [
    ({"backend": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4.1"}, True),
    ({"backend": "openai", "model": "gpt-4.1", "base_url": None}, True),
    ({"backend": "openai", "base_url": "https://api.deepseek.com/v1", "model": "m"}, True),
    ({"backend": "openai", "base_url": "http://gpu-node:8000/v1", "model": "m"}, False),
    ({"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}, False),
    ({"backend": "openai", "base_url": "http://10.1.2.3:8000/v1", "model": "m"}, False),
    ({"backend": "openai", "base_url": "http://vllm.jean-zay.idris.fr/v1", "model": "m"}, False),
    ({"backend": "openai", "model": "m", "serve": {"path": "x"}}, False),
    ({"backend": "hf", "path": "x"}, False),
])
def test_model_is_hosted(spec, hosted):
    assert jc.model_is_hosted(spec, ["*.idris.fr"]) is hosted


HOSTED = {"backend": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4.1"}


def test_every_stage_that_calls_a_hosted_model_runs_on_the_login_node():
    """Login-node rules come from each stage's declared models, whatever the role: a hosted judge makes
    every stage that runs the judges one (regression: cluster.api_rules named six rules, and a hosted
    judge's stages went to compute nodes without internet); a hosted oracle and comparer theirs; local
    models none."""
    from judgeflow.workflow import settings as st

    cfg = ROOT / "config" / "config.yaml"
    assert jc.api_local_rules(st.load(cfg, overrides={"models": {"gpt": HOSTED}})) == []
    judge = st.load(cfg, overrides={"models": {"gpt": HOSTED}, "oracle": {"bon": {"j": [1]}},
                                    "judging": {"k": 1, "calibration": {"questions": 0},
                                                "judges": [{"id": "h", "model": "gpt"}]},
                                    "refining": {"tree_search": {"gates": [{"k": 1}]}}})
    assert jc.api_local_rules(judge) == ["evaluate_responses", "judge_refinements", "judge_responses",
                                         "sample_until_accept", "tree_search"]
    oracle = st.load(cfg, overrides={"models": {"gpt": HOSTED}, "oracle": {"labeller": "gpt"},
                                     "judging": {"calibration": {"budget": 500}}, "evaluation": {"oracle": "gpt"}})
    assert jc.api_local_rules(oracle) == ["best_of_n", "evaluate_policies", "label_calibration", "label_oracle",
                                          "tree_search_gate"]
    oracle["cluster"]["api_rules_local"] = "never"
    assert jc.api_local_rules(oracle) == []


def test_api_local_rules_modes():
    """auto: the stages calling a hosted model; always: besides them, every rule of cluster.api_rules
    whether its models are hosted or not; never: none."""
    from judgeflow.workflow import settings as st

    config = st.load(ROOT / "config" / "config.yaml", overrides={
        "models": {"gpt": HOSTED},
        "cleaning": {"model": "gpt", "answer_first": False, "template": "clean", "max_new_tokens": 64}})
    assert jc.api_local_rules(config) == ["clean_questions"]
    config["cluster"]["api_rules"] = {"label_oracle": "oracle.labeller"}  # the verifier: nothing hosted
    assert jc.api_local_rules(config) == ["clean_questions"]
    config["cluster"]["api_rules_local"] = "always"
    assert jc.api_local_rules(config) == ["clean_questions", "label_oracle"]
    config["cluster"]["api_rules_local"] = "never"
    assert jc.api_local_rules(config) == []


def test_cluster_api_rules_add_to_the_derived_rules():
    """A user's cluster.api_rules adds rules to those derived from the stages' models (regression: the map
    replaced the defaults, so naming one rule took the oracle's other rules off the login node)."""
    from judgeflow.workflow import settings as st

    config = st.load(ROOT / "config" / "config.yaml", overrides={
        "models": {"gpt": HOSTED}, "oracle": {"labeller": "gpt"}, "judging": {"calibration": {"budget": 500}},
        "cluster": {"api_rules": {"judge_quality": "oracle.labeller"}}})
    assert jc.api_local_rules(config) == ["best_of_n", "judge_quality", "label_calibration", "label_oracle"]


def _login_node_rules(output: str) -> set[str]:
    """The rules Snakemake itself runs on this node (its Workflow.is_local, as the dry-run reports it), less
    those that run there whatever the models (the workflow's own bookkeeping stages)."""
    from judgeflow.workflow.pipeline import STAGES

    line = re.search(r"^SLURM: rules run on this node, not as jobs: (.*)$", output, re.M)
    assert line, output[-3000:]
    return set(line.group(1).split(", ")) - {name for name, stage in STAGES.items() if stage.local} - {""}


@pytest.mark.parametrize("hosted", [True, False])
def test_dry_run_sends_exactly_the_stages_calling_a_hosted_model_to_the_login_node(tmp_path, no_slurm_path, hosted):
    """The SLURM profile's dry-run of the full-scale config with a hosted judge, a hosted oracle labeller and a
    hosted pairwise comparer (GPT-4.1 over api.openai.com): exactly the stages that call them run on the login
    node; with the same models served inside the cluster (http://gpu-node:8000), none does."""
    url = "https://api.openai.com/v1" if hosted else "http://gpu-node:8000/v1"
    over = tmp_path / "models.yaml"
    over.write_text(yaml.safe_dump({
        "models": {"gpt41": {"backend": "openai", "base_url": url, "model": "gpt-4.1",
                             "api_key_env": "OPENAI_API_KEY", "max_concurrency": 16}},
        "cleaning": {"model": "policy"},
        "judging": {"k": 1, "judges": [{"id": "j1", "model": "judge", "template": "judge"},
                                       {"id": "j2", "model": "gpt41", "template": "judge"}]},
        "oracle": {"labeller": "gpt41", "bon": {"n": [1, 2, 4], "j": [1, 2]}},
        "evaluation": {"oracle": "gpt41"}}))
    p, _ = _dry_run(tmp_path, no_slurm_path, str(over))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    judge = {"judge_responses", "judge_refinements", "evaluate_responses", "sample_until_accept"}
    labeller = {"label_oracle", "best_of_n"}
    comparer = {"evaluate_policies"}
    if hosted:
        assert _login_node_rules(out) == judge | labeller | comparer
        assert "run on this node (localrules): " + ", ".join(sorted(judge | labeller | comparer)) + "\n" in out
        # a judge stage that also runs the local judge model (a GPU rule) is named: the login node has no GPU
        assert ("SLURM: rule judge_responses runs on this node (it calls a hosted API) and also runs judge, which "
                "the profile gives a GPU for") in out
    else:
        assert _login_node_rules(out) == set()
        assert "calling a hosted API" not in out and "runs on this node" not in out
    # jobs of the other stages still go to SLURM
    assert re.search(r"^rule sample_responses:", out, re.M) and re.search(r"^rule train_dpo:", out, re.M)


def test_never_says_once_which_rules_call_a_hosted_api_from_compute_nodes(tmp_path, no_slurm_path):
    """cluster.api_rules_local: never (compute nodes reach the internet): the dry-run names, once, the rules
    that call a hosted API from them, and runs none of them here."""
    over = tmp_path / "never.yaml"
    over.write_text(yaml.safe_dump({"cluster": {"api_rules_local": "never"}}))
    p, _ = _dry_run(tmp_path, no_slurm_path, str(over))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    line = ("cluster.api_rules_local is never: 2 rule(s) will call a hosted API from compute nodes, which must "
            "reach the internet: clean_questions, evaluate_policies")
    assert out.count(line) == 1
    assert _login_node_rules(out) == set() and "run on this node (localrules)" not in out


def test_stage_rule_problems_name_a_rule_with_another_stage_s_declarations():
    """cluster.stage_rule_problems (run by after_parse on every parse): a stage rule's `settings` param must
    come from JF.stage(<the rule's own name>); another stage's, or none, is named; other rules are skipped."""
    from types import SimpleNamespace

    from judgeflow.workflow.rulekit import Rules
    from judgeflow.workflow.settings import load

    jf = Rules(load(ROOT / "config" / "config.yaml"))

    def rule(params):
        return SimpleNamespace(params=SimpleNamespace(**params))

    proxies = SimpleNamespace(judge_responses=rule(jf.stage("judge_responses").params),
                              judge_round=rule(jf.stage("judge_responses").params),
                              report=rule({"settings": lambda wildcards: {}}), all=rule({}))
    assert jc.stage_rule_problems(["judge_responses", "all"], proxies) == []
    assert jc.stage_rule_problems(["judge_round", "report", "all"], proxies) == [
        'rule judge_round takes its declarations from JF.stage("judge_responses"), the stage of another rule: '
        'write S = JF.stage("judge_round") just above the rule',
        'rule report: its settings param does not come from its stage: write S = JF.stage("report") just above '
        'the rule, and params: **S.params']


def test_unmapped_rules():
    assert jc.unmapped_rules({"a", "b", "all", "c"}, {"all", "c"}, {"a"}) == ["b"]


# --- judgeflow.workflow.launch ----------------------------------------------------------------------

def test_accelerate_single_node():
    assert accelerate_command(["train.py", "--lr", "1e-6"], gpus=4) == (
        "accelerate launch --multi_gpu --num_machines 1 --num_processes 4 train.py --lr 1e-6")
    assert accelerate_command(["-m", "judgeflow.train", "{input.cfg}"], gpus="{resources.gpu}") == (
        "accelerate launch --num_machines 1 --num_processes {resources.gpu} -m judgeflow.train {input.cfg}")
    assert "--num_processes 2 " in accelerate_command(["t.py"], resources={"gpu": 2})
    assert "--num_processes 3 " in accelerate_command(["t.py"], environ={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    with pytest.raises(ValueError):
        accelerate_command(["t.py"], gpus=0)


def test_accelerate_multi_node_one_srun_task_per_node():
    cmd = accelerate_command(["train.py", "a b"], resources={"nodes": 2, "gres": "gpu:4", "gpu": 0, "mpi": "srun",
                                                          "tasks": 2, "tasks_per_gpu": 0, "cpus_per_task": 32})
    assert cmd.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=32 ")
    for part in ["--num_machines $SLURM_NNODES", "--machine_rank $SLURM_NODEID", "--num_processes 8",
                 "--rdzv_backend static", 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1']:
        assert part in cmd
    # the inner command survives one round of shell quoting intact
    inner = subprocess.run(["bash", "-c", f"printf %s {cmd.split('bash -c ', 1)[1]}"],
                           capture_output=True, text=True).stdout
    assert inner.endswith("train.py 'a b'")


def test_gpus_from_resources_and_environment():
    assert gpus_per_node({"gres": "gpu:a100:4", "nodes": 2}) == (4, 2)
    assert gpus_per_node({"gpu": 8, "nodes": 2}) == (4, 2)
    assert gpus_from_environment({"SLURM_GPUS_ON_NODE": "2"}) == 2
    assert gpus_from_environment({}) == 0


def test_a_vllm_model_that_cannot_run_stops_the_dry_run_naming_its_key(tmp_path, no_slurm_path):
    """Before any job: vllm not installed (it is not, here), or a rule that gets no GPU (the cleaning
    rule is a CPU rule of the profile; without the SLURM profile, this machine has no GPU)."""
    over = tmp_path / "vllm.yaml"
    over.write_text(yaml.safe_dump({"models": {"policy_vllm": {"backend": "vllm",
                                                               "path": "resources/models/Qwen2.5-7B-Instruct"}},
                                    "sampling": {"model": "policy_vllm"}, "training": {"model": "policy"}}))
    configs = ["--configfile", str(FULL), str(tmp_path / "paths.yaml"), str(over)]
    p, _ = _dry_run(tmp_path, no_slurm_path, *configs)
    err = p.stdout + p.stderr
    assert p.returncode != 0 and "Job stats" not in err
    assert "models.policy_vllm.backend: vllm is not installed (rule sample_responses runs it): " \
           "pip install -e .[vllm]" in err, err[-3000:]
    assert "gets none from the SLURM profile" not in err          # sample_responses is a GPU rule
    over.write_text(yaml.safe_dump({"models": {"policy_vllm": {"backend": "vllm", "path": "resources/models/x"}},
                                    "cleaning": {"model": "policy_vllm"}}))
    p, _ = _dry_run(tmp_path, no_slurm_path, *configs)
    err = p.stdout + p.stderr
    assert p.returncode != 0
    assert "models.policy_vllm.backend: vllm needs a GPU, and rule clean_questions gets none from the SLURM " \
           "profile" in err, err[-3000:]
    p, _ = _dry_run(tmp_path, no_slurm_path, *configs, site=None, profile=ROOT / "profiles" / "local")
    err = p.stdout + p.stderr
    assert p.returncode != 0
    assert "models.policy_vllm.backend: vllm needs a GPU, and this machine has none (rule clean_questions)" in err


def test_a_vllm_model_swaps_in_the_vllm_env_for_its_rules_only():
    from judgeflow.workflow.rulekit import Rules
    from judgeflow.workflow.settings import load

    cfg = load(FULL, overrides={"models": {"pv": {"backend": "vllm", "path": "resources/models/x"}},
                                "sampling": {"model": "pv"}, "training": {"model": "policy"},
                                "judging": {"judges": [{"id": f"j{i}", "model": "pv", "seed": i} for i in range(5)]}})
    rules = Rules(cfg)
    assert rules.conda("sample_responses") == "../envs/vllm.yaml"
    assert rules.conda("judge_responses") == "../envs/vllm.yaml"
    assert rules.conda("sample_until_accept") == "../envs/vllm.yaml"  # its judges
    assert rules.conda("train_dpo") == "../envs/training.yaml"
    assert Rules(load(FULL)).conda("sample_responses") == "../envs/models-gpu.yaml"
    ok = jc.vllm_problems(rules, uses_conda=True, on_slurm=True, vllm_installed=False, local_gpu=None,
                          gpu_rules_={"sample_responses", "judge_responses", "judge_refinements",
                                      "sample_until_accept", "evaluate_responses", "tree_search", "judge_round"})
    assert ok == []   # with --sdm conda, envs/vllm.yaml brings vllm; every rule running pv has a GPU


SPAR = ROOT / "config" / "examples" / "spar-gates.yaml"


def test_spar_gates_example_dry_runs_through_the_slurm_profile(tmp_path, no_slurm_path):
    """config/examples/spar-gates.yaml, SPaR's gate experiment ready for a cluster: SPaR's search, judging and
    DPO settings; generation with vLLM, which passes the vllm checks against the profile's GPU rules with
    --sdm conda (envs/vllm.yaml for the rules that run it); then the whole DAG through the SLURM profile:
    the GPU rules on the GPU partition, the trainings on the training partition, the hosted-API rules on the
    login node. The dry-run swaps the vllm model for hf: this machine has neither vLLM nor conda (a dry-run
    with --sdm conda calls `conda info`), and no rule changes partition with a model's backend."""
    from judgeflow.workflow.rulekit import Rules
    from judgeflow.workflow.settings import load

    cfg = yaml.safe_load(SPAR.read_text())
    ts, training = cfg["refining"]["tree_search"], cfg["training"]
    assert (ts["branch"], ts["select"], ts["depth"], ts["rounds"], ts["exit"]) == (3, 2, 3, 3, "best_at_level")
    assert [g["k"] for g in ts["gates"]] == [3, 5] and ts["root_choice"] == "one_per_question"
    [judge] = cfg["judging"]["judges"]
    assert judge["samples"] == 5 and judge["holistic"] and judge["temperature"] == 0.7
    assert training["loss_type"] == ["sigmoid", "sft"] and training["loss_weights"] == [1.0, 0.1]
    assert training["beta"] == 0.1 and cfg["models"][ts["oracle"]]["model"] == "deepseek-chat"
    rft = ts["refiner_training"]  # SPaR's configs/sft.yaml
    assert rft["enabled"] and rft["judgments"] and (rft["learning_rate"], rft["num_train_epochs"]) == (2.0e-6, 5)
    assert cfg["models"][cfg["cleaning"]["model"]]["model"] == "gpt-4.1"
    assert cfg["evolution"]["enabled"] and cfg["evolution"]["model"] == cfg["cleaning"]["model"]  # SPaR's evolution
    rules = Rules(load(SPAR))
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    gpu = {r for r, res in prof["set-resources"].items() if str(res.get("gpu", 0)).strip() != "0"}
    assert jc.vllm_problems(rules, uses_conda=True, on_slurm=True, vllm_installed=False, local_gpu=None,
                            gpu_rules_=gpu) == []
    for rule in ("sample_responses", "judge_responses", "tree_search", "judge_round"):
        assert rules.conda(rule) == "../envs/vllm.yaml", rule
    assert rules.conda("train_dpo") == rules.conda("train_round") == rules.conda("train_refiner") == \
        "../envs/training.yaml"

    hf = tmp_path / "hf.yaml"
    hf.write_text(yaml.safe_dump({"models": {"actor_vllm": {"backend": "hf"}}}))
    p, _ = _dry_run(tmp_path, no_slurm_path, str(hf), configfile=SPAR, DEEPSEEK_API_KEY="sk-placeholder-dry-run")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    jobs = _job_resources(out)
    # per-gate chains (SPaR run once per gate): round 1 searched once for both gates (16 shards), rounds 2 and 3
    # once per gate's chain, each chain's search exiting by its own gate only
    assert len(jobs["tree_search"]) == 16 + 2 * 2 * 16 and len(jobs["tree_search_gate"]) == 2 + 2 * 2
    assert len(jobs["sample_round"]) == len(jobs["judge_round"]) == 2 * 2 * 16  # rounds 2-3 x chains x shards
    assert len(jobs["train_round"]) == 2 * 2  # after rounds 1 and 2, each chain's actor
    assert len(jobs["train_refiner"]) == 2 * 2  # and its refiner (SPaR's, which also judges)
    for rule in ("sample_responses", "judge_responses", "tree_search", "sample_round", "judge_round",
                 "evaluate_responses"):
        assert all(r["slurm_partition"] == "gpuq" and r["gpu"] == "1" for r in jobs[rule]), rule
    for rule in ("train_round", "train_refiner", "train_dpo"):
        assert all(r["slurm_partition"] == "trainq" and r["gpu"] == "4" for r in jobs[rule]), rule
    assert "run on this node (localrules): clean_questions, evaluate_policies, evolve_questions, tree_search_gate\n" \
        in out
