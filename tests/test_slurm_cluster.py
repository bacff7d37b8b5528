"""profiles/slurm against a real SLURM cluster (tests/slurm/start.sh: one node on localhost).

Runs `snakemake --profile profiles/slurm` with the test site file on a tiny config and checks with
sacct that every rule's job ran in the partition the profile maps it to and asked for its GPUs,
and that the rule calling an API (clean_questions, forced local here) ran no SLURM job.

On by default in .ci/run (which installs and starts the cluster); JUDGEFLOW_SLURM_TEST=0 skips it.
Elsewhere it runs when SLURM is installed here and this user may start it (root), or the test
cluster is already up; JUDGEFLOW_SLURM_TEST=1 also installs SLURM (apt-get) when it is missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from judgeflow.questions import ifbench_file

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_DIR = ROOT / "tests" / "slurm"
SITE = SLURM_DIR / "site.yaml"
FLAG = os.environ.get("JUDGEFLOW_SLURM_TEST", "")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(FLAG == "0", reason="JUDGEFLOW_SLURM_TEST=0")]


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    return p.returncode == 0 and "jf_gpu" in p.stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    """The test cluster: reused when up, else started here (and stopped afterwards)."""
    if _cluster_up():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster not running and not root (run tests/slurm/start.sh)")
    if not shutil.which("slurmctld"):
        if FLAG != "1":
            pytest.skip("SLURM not installed (tests/slurm/install.sh; JUDGEFLOW_SLURM_TEST=1 installs it)")
        subprocess.run([str(SLURM_DIR / "install.sh")], check=True, timeout=600)
    subprocess.run([str(SLURM_DIR / "start.sh")], check=True, timeout=240)
    try:
        yield
    finally:
        subprocess.run([str(SLURM_DIR / "stop.sh")], timeout=120)


def _expected(site: dict) -> dict[str, tuple[str, int]]:
    """rule -> (partition, GPUs) that profiles/slurm maps it to, with this site file."""
    prof = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    out = {}
    for rule in ("prepare_model", "sample_responses", "judge_responses"):
        res = prof["set-resources"].get(rule, {})
        if "gpu" in res:
            out[rule] = (site["gpu_partition"], int(res["gpu"]))
        else:
            out[rule] = (site["cpu_partition"], 0)
    return out


def test_profile_runs_each_rule_in_its_partition(slurm_cluster, tmp_path):
    t0 = time.time()
    rows = [json.loads(l) for l in ifbench_file().read_text().splitlines()[:40]]
    short = min(rows, key=lambda r: len(r["prompt"]))
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"question_id": "rivers", "prompt": "Name three rivers in Europe.",
                               "criteria": ["The response names exactly three rivers."]}) + "\n"
                   + json.dumps({"question_id": f"ifbench-{short['key']}", "prompt": short["prompt"],
                                 "instruction_id_list": short["instruction_id_list"],
                                 "kwargs": short["kwargs"]}) + "\n")
    res_dir = tmp_path / "resources"   # empty: prepare_model runs as a CPU job
    mdir = str(res_dir / "models" / "SmolLM2-135M-Instruct")
    cfg = {
        "run": "slurm", "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
        "benchmarks_dir": str(tmp_path / "bench"), "cache_dir": str(tmp_path / "cache"),
        "resources_dir": str(res_dir),
        "questions": {"source": "jsonl", "path": str(src), "limit": None, "heldout": 0},
        "models": {"smollm2": {"path": mdir}, "oracle": {"model": mdir, "serve": {"path": mdir}}},
        "cleaning": {"enabled": False},
        "cluster": {"api_rules_local": "always"},     # clean_questions runs here, not in SLURM
        "sampling": {"n_samples": 1, "shards": 1, "max_new_tokens": 8},
        "judging": {"generic_criteria": []},
        "resources": {"default": {"threads": 1}},
    }
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    slurm_logs = tmp_path / "slurm_logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEFLOW_SLURM_") or k == "JUDGEFLOW_SLURM_STATE"}
    env.update(JUDGEFLOW_SLURM_SITE=str(SITE), PYTHONUNBUFFERED="1")
    target = f"{tmp_path}/results/slurm/verdicts/responses/shard-0.aggregate.jsonl"
    cmd = [SNAKEMAKE, "--profile", str(ROOT / "profiles/slurm"), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(ROOT), "--configfile", str(cfg_path), "--nolock", "--jobs", "4",
           "--slurm-logdir", str(slurm_logs), "--slurm-init-seconds-before-status-checks", "2",
           "--seconds-between-status-checks", "2", "--latency-wait", "5", target]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n" + "\n".join(
        f"--- {f}\n{f.read_text()[-2000:]}" for f in slurm_logs.rglob("*.log"))
    assert Path(target).exists()

    # jobid -> rule, from the plugin's submission lines
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", out))
    assert set(submitted.values()) == {"prepare_model", "sample_responses", "judge_responses"}, out[-4000:]
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(submitted),
                            "--format=JobID,Partition,ReqTRES,State,Account,Comment"],
                           capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in sacct.strip().splitlines():
        jobid, partition, tres, state, account, comment = line.split("|")
        rule = submitted[jobid]
        assert comment.startswith(f"rule_{rule}")
        gpus = int(m.group(1)) if (m := re.search(r"gres/gpu=(\d+)", tres)) else 0
        seen[rule] = (partition, gpus)
        assert state == "COMPLETED", line
        assert account == "judgeflow", line
    assert seen == _expected(yaml.safe_load(SITE.read_text())), sacct
    for jobid, rule in submitted.items():  # each job's SLURM log is kept (slurm-keep-successful-logs)
        assert list(slurm_logs.glob(f"rule_{rule}/*/{jobid}.log")), (rule, jobid)
    print(f"\nreal SLURM: {len(seen)} sacct rows {seen}; {time.time() - t0:.0f}s")
