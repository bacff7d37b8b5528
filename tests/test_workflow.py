"""The real DAG: dry-run, --dag, and a run on the real model with a tiny config."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from judgeflow.questions import ifbench_file

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
STAGES = ["prepare_model", "prepare_questions", "clean_questions", "sample_responses", "judge_responses",
          "refine_responses", "judge_refinements", "build_pairs", "sample_until_accept", "label_oracle",
          "best_of_n", "report"]


def smk(*args, configfile=None, check=True, timeout=900):
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT), "--nolock"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from a dry-run's 'Job stats' table."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def nothing_to_do(output: str) -> bool:
    """A dry-run with --until plans no job: Snakemake says so, or prints a job table of total 0 (what
    9.27 does when jobs past the --until rule are outdated but left out)."""
    return "Nothing to be done" in output or re.search(r"^total\s+0$", output, re.M) is not None


def test_dry_run_lists_every_stage(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "r"), "resources_dir": str(tmp_path / "res"),
                                   "models": {"smollm2": {"path": str(tmp_path / "res/models/SmolLM2-135M-Instruct")},
                                              "oracle": {"model": "x", "serve": {
                                                  "path": str(tmp_path / "res/models/SmolLM2-135M-Instruct")}}}}))
    out = smk("-n", "--quiet", "rules", configfile=cfg).stdout
    jobs = planned_jobs(out)
    for stage in STAGES:
        assert jobs.get(stage), f"{stage} missing from the dry-run:\n{out}"
    assert jobs["sample_responses"] == jobs["judge_refinements"] == 2  # one job per shard


def test_dag_renders():
    out = smk("--dag").stdout
    assert out.lstrip().startswith("digraph") and "judge_refinements" in out


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"judging": {"k": 9}}))
    p = smk("-n", configfile=cfg, check=False)
    assert p.returncode != 0 and "judging.k: 9 exceeds the number of judges J=3" in p.stdout + p.stderr


@pytest.mark.slow
def test_tiny_run_end_to_end_then_rerun_only_what_changed(tmp_path, model_dir):
    mdir = str(model_dir)
    # A JSONL source of our own: the shortest of the first IFBench prompts (verifiable
    # instructions), a question with its own criterion, and an empty prompt.
    rows = [json.loads(l) for l in ifbench_file().read_text().splitlines()[:40]]
    short = min(rows, key=lambda r: len(r["prompt"]))
    src = tmp_path / "questions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": f"ifbench-{short['key']}", "prompt": short["prompt"],
         "instruction_id_list": short["instruction_id_list"], "kwargs": short["kwargs"]},
        {"question_id": "rivers", "prompt": "Name three rivers in Europe.",
         "criteria": ["The response names exactly three rivers."]},
        {"question_id": "blank", "prompt": ""},
    ]))
    cfg = {
        "run": "tiny", "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
        "benchmarks_dir": str(tmp_path / "bench"), "cache_dir": str(tmp_path / "cache"),
        "resources_dir": str(tmp_path / "resources"),
        "questions": {"source": "jsonl", "path": str(src), "heldout": 0},
        "models": {"smollm2": {"path": mdir}, "oracle": {"model": mdir, "serve": {"path": mdir}}},
        "sampling": {"n_samples": 2, "shards": 1, "max_new_tokens": 32},
        "refining": {"max_new_tokens": 32},
        "cleaning": {"max_new_tokens": 24},
        "draws": {"n_max": 2, "min_draws": 1, "max_new_tokens": 32},
        "oracle": {"labeller": "verifier", "budget": 40, "batch_size": 4, "label_all_accepted": True,
                   "bon": {"n": [1], "j": [1, 3]}},
        "training": {"max_steps": 1, "per_device_train_batch_size": 1, "max_length": 256, "min_pairs": 1,
                     "on_too_few": "skip", "save_steps": 1, "gradient_checkpointing": False},
        "resources": {"default": {"threads": 2}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    smk("--cores", "2", configfile=path)
    res = tmp_path / "results" / "tiny"

    kept = [json.loads(l) for l in (res / "questions/kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(l) for l in (res / "questions/rejected.jsonl").read_text().splitlines()]
    assert len(kept) + len(rejected) == 3
    blank = next(q for q in rejected if q["question_id"] == "blank")
    assert blank["cleaning"]["reason"] == "empty prompt"  # rejected with a reason; the run went on
    responses = [json.loads(l) for l in (res / "responses/shard-0.jsonl").read_text().splitlines()]
    assert len(responses) == 2 * len(kept)
    verdicts = [json.loads(l) for l in (res / "verdicts/responses/shard-0.jsonl").read_text().splitlines()]
    n_criteria = sum(len(q["criteria"]) + 1 for q in kept)  # + the generic criterion
    assert len(verdicts) == 2 * n_criteria * 3
    assert {v["label"] for v in verdicts} <= {"yes", "no", "abstain"}
    assert all(0 <= v["p_yes"] <= 1 for v in verdicts)  # hf judges give P(yes)
    aggs = [json.loads(l) for l in (res / "verdicts/responses/shard-0.aggregate.jsonl").read_text().splitlines()]
    refinements = [json.loads(l) for l in (res / "refinements/shard-0.jsonl").read_text().splitlines()]
    expected = sum(len(a["failed"]) + 1 for a in aggs if not a["accepted"])  # K multi + 1 full per failing
    assert len(refinements) == expected
    summary = json.loads((res / "pairs/summary.json").read_text())
    multi = (res / "pairs/multi_feedback.jsonl").read_text().splitlines()
    assert summary["multi_feedback_pairs"] == len(multi)
    for line in multi:
        p = json.loads(line)
        assert p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == "assistant"
    for rule in ("clean_questions", "sample_responses", "judge_responses", "build_pairs"):
        assert list((tmp_path / "bench" / "tiny" / rule).glob("*.tsv")), f"no benchmark for {rule}"
    cleaning = json.loads((res / "questions/cleaning.json").read_text())
    assert cleaning["models"]["oracle"]["calls"] == cleaning["asked_oracle"] > 0

    # sample until accept: every kept question drawn until its first accept or n_max=2
    draws = [json.loads(l) for l in (res / "draws/shard-0.jsonl").read_text().splitlines()]
    for q in kept:
        mine = [d for d in draws if d["question_id"] == q["question_id"]]
        first = [d["draw"] for d in mine if d["first_accept"]]
        assert len(first) <= 1 and [d["draw"] for d in mine] == list(range(1, len(mine) + 1))
        assert mine[0]["n_accept"] == (first[0] if first else None)
        assert len(mine) == (2 if not first or first[0] == 2 else 1)  # min_draws=1: stop at the first accept
    # the oracle (exact IFBench checkers) labelled accepted draws; the free-text question abstains
    nstar = json.loads((res / "oracle/nstar.json").read_text())
    labels = [json.loads(l) for l in (res / "oracle/labels.jsonl").read_text().splitlines()]
    # the strategy's calls (at most the budget), then (label_all_accepted) the rest for the curve
    certify = [l for l in labels if l.get("for") != "curve"]
    assert nstar["calls"] == len(certify) <= 40 and nstar["strategy"] == "fixed_sequence"
    assert nstar["calls"] + nstar["curve_calls"] == len(labels) == sum(nstar["accepted_per_n"].values())
    assert nstar["abstains"] == sum(1 for l in certify if l["label"] is None)
    assert all(l["label"] is None for l in labels if l["question_id"] == "rivers")
    assert 0 <= nstar["nstar"] <= 2
    curve = (res / "oracle/tp_curve.csv").read_text().splitlines()
    assert curve[0].startswith("n,") and len(curve) == 1 + 2
    assert (res / "oracle/tp_curve.png").stat().st_size > 1000 and (res / "oracle/bon_grid.png").exists()
    assert "tp_curve.png" in (res / "report.html").read_text()

    # finished: a rerun has nothing to do
    assert "Nothing to be done" in smk("-n", configfile=path).stdout

    # a judge parameter changes: only the judge stage and what follows reruns
    cfg["judging"] = {"judges": [{"id": "j1", "model": "smollm2", "seed": 1, "max_new_tokens": 24},
                                 {"id": "j2", "model": "smollm2", "seed": 2},
                                 {"id": "j3", "model": "smollm2", "template": "judge_strict", "seed": 3}]}
    path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("-n", configfile=path).stdout)
    # judging and everything downstream of it; nothing upstream (no sampling, no oracle cleaning)
    assert {"judge_responses", "refine_responses", "judge_refinements", "build_pairs", "sample_until_accept",
            "label_oracle", "best_of_n", "report", "all"} <= set(jobs), jobs
    assert not set(jobs) & {"prepare_model", "prepare_questions", "clean_questions", "sample_responses"}, jobs
    # the rerun itself, as far as the pairs (training and the oracle stages ran above already)
    smk("--cores", "2", "--until", "build_pairs", configfile=path)
    assert nothing_to_do(smk("-n", "--until", "build_pairs", configfile=path).stdout)

    # and the oracle is not paid again: a forced rerun of cleaning is served from the cache
    smk("--cores", "2", "--forcerun", "clean_questions", "--until", "clean_questions", configfile=path)
    again = json.loads((res / "questions/cleaning.json").read_text())
    assert again["models"]["oracle"]["calls"] == 0
    assert again["models"]["oracle"]["cache_hits"] == cleaning["asked_oracle"]
    kept_again = [json.loads(l) for l in (res / "questions/kept.jsonl").read_text().splitlines()]
    assert [(q["question_id"], q["cleaning"]["raw"]) for q in kept_again] == \
        [(q["question_id"], q["cleaning"]["raw"]) for q in kept]
    assert all(q["cleaning"]["cached"] for q in kept_again)
