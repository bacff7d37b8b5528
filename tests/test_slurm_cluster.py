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

from judgeflow.questions.sources import ifbench_file

from conftest import PROMPT_JUDGES, ROOT

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


def _profile_run(tmp_path: Path, cfg: dict, target: str, *extra: str) -> tuple[list[str], dict, Path]:
    """The command, environment and SLURM log folder of `snakemake --profile profiles/slurm` with the
    test site file, the demo's config changed by `cfg`, and `target` (status checks every 2 s instead
    of the plugin's 40 s)."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    slurm_logs = tmp_path / "slurm_logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEFLOW_SLURM_") or k == "JUDGEFLOW_SLURM_STATE"}
    env.update(JUDGEFLOW_SLURM_SITE=str(SITE), PYTHONUNBUFFERED="1")
    cmd = [SNAKEMAKE, target, "--profile", str(ROOT / "profiles/slurm"), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(ROOT), "--configfile", str(ROOT / "config" / "config.yaml"), str(cfg_path),
           "--nolock", "--jobs", "4",
           "--slurm-logdir", str(slurm_logs), "--slurm-init-seconds-before-status-checks", "2",
           "--seconds-between-status-checks", "2", "--latency-wait", "5", *extra]  # extra last: nargs="+" options
    return cmd, env, slurm_logs


def _sacct(*args: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", *args], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.strip().splitlines()]


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
        # clean_questions (named by cluster.api_rules; always: whether its model is hosted or not) runs here
        "cluster": {"api_rules_local": "always", "api_rules": {"clean_questions": "cleaning.model"}},
        "sampling": {"n_samples": 1, "shards": 1, "max_new_tokens": 8},
        "judging": {**PROMPT_JUDGES, "generic_criteria": []},  # no calibration split to label and train on
        "resources": {"default": {"threads": 1}},
    }
    target = f"{tmp_path}/results/slurm/verdicts/responses/shard-0.aggregate.jsonl"
    cmd, env, slurm_logs = _profile_run(tmp_path, cfg, target)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n" + "\n".join(
        f"--- {f}\n{f.read_text()[-2000:]}" for f in slurm_logs.rglob("*.log"))
    assert Path(target).exists()

    # jobid -> rule, from the plugin's submission lines
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", out))
    assert set(submitted.values()) == {"prepare_model", "sample_responses", "judge_responses"}, out[-4000:]
    sacct = _sacct("-j", ",".join(submitted), "--format=JobID,Partition,ReqTRES,State,Account,Comment")
    seen = {}
    for line in sacct:
        jobid, partition, tres, state, account, comment = line
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


def test_job_killed_for_time_is_retried_and_resumes_without_paying_twice(slurm_cluster, tmp_path):
    """clean_questions as a SLURM job with a 1-minute limit against an oracle stand-in that stops
    answering after GATE paid calls: SLURM kills the job for time (state TIMEOUT), the profile's
    `retries: 1` submits it again, and the second job takes the answers already paid from the cache
    and asks only for the rest: every question gets a verdict and no call is paid twice."""
    import threading

    from fault_server import FaultServer

    n, gate = 40, 12
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"question_id": f"q{i:02d}", "prompt": f"Name {i % 5 + 1} rivers.",
                                       "criteria": [f"Exactly {i % 5 + 1} rivers."]}) + "\n" for i in range(n)))
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def clean_jobs() -> list[list[str]]:  # (job id, state, comment) of this test's clean_questions jobs
        return [r for r in _sacct("-S", started, "--format=JobID,State,Comment")
                if r[2].startswith("rule_clean_questions")]
    with FaultServer() as fs:
        fs.gate = gate   # after `gate` paid calls, requests hang until the test releases them
        cfg = {
            "run": "timeout", "results_dir": str(tmp_path / "results"), "logs_dir": str(tmp_path / "logs"),
            "benchmarks_dir": str(tmp_path / "bench"), "cache_dir": str(tmp_path / "cache"),
            "resources_dir": str(tmp_path / "resources"),
            "questions": {"source": "jsonl", "path": str(src), "limit": None, "heldout": 0},
            "models": {"standin": {"backend": "openai", "base_url": fs.url, "model": "standin",
                                   "max_concurrency": 2, "timeout": 600}},
            "cleaning": {"model": "standin", "max_new_tokens": 32, "answer_first": False, "template": "clean"},
            "judging": PROMPT_JUDGES,                   # no calibration split
            "cluster": {"api_rules_local": "never"},   # the API rule is a SLURM job here
        }
        target = f"{tmp_path}/results/timeout/questions/kept.jsonl"
        cmd, env, slurm_logs = _profile_run(tmp_path, cfg, target, "--set-resources", "clean_questions:runtime=1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        paid_before_kill: list[int] = []

        def release_after_timeout():  # once SLURM has killed the first job, the stand-in answers again
            while proc.poll() is None:
                if any(state == "TIMEOUT" for _, state, _ in clean_jobs()):
                    paid_before_kill.append(fs.upstream_calls())
                    fs.release_gate()
                    return
                time.sleep(2)

        watcher = threading.Thread(target=release_after_timeout, daemon=True)
        watcher.start()
        try:
            out, _ = proc.communicate(timeout=420)
        finally:
            if proc.poll() is None:
                proc.kill()
            fs.release_gate()
        watcher.join(timeout=10)
        assert proc.returncode == 0, f"snakemake on SLURM failed:\n{out[-6000:]}\n" + "\n".join(
            f"--- {f}\n{f.read_text()[-2000:]}" for f in slurm_logs.rglob("*.log"))
        summary = fs.summary()

    jobs = clean_jobs()
    assert [state for _, state, _ in jobs] == ["TIMEOUT", "COMPLETED"], jobs
    assert paid_before_kill and gate <= paid_before_kill[0] < n and fs.held >= 1
    # every question has its verdict; each distinct request was paid once, across the two jobs
    res = tmp_path / "results" / "timeout" / "questions"
    kept = (res / "kept.jsonl").read_text().splitlines()
    rejected = (res / "rejected.jsonl").read_text().splitlines()
    assert len(kept) + len(rejected) == n
    assert summary["upstream_calls"] == summary["distinct_requests"] == n and summary["paid_twice"] == 0
    stats = json.loads((res / "cleaning.json").read_text())["models"]["standin"]
    assert stats["cache_hits"] == paid_before_kill[0] and stats["calls"] == n - paid_before_kill[0]
    print(f"\nSLURM time limit: job states {[s for _, s, _ in jobs]}, {paid_before_kill[0]} calls paid before "
          f"the kill, {stats['calls']} after, {summary['paid_twice']} paid twice")
