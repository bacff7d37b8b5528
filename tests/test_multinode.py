"""DPO over several SLURM nodes without a multi-node cluster (issue 27, item 3).

- Each node's `accelerate launch` argument list, from recorded SLURM task environments of a 2-node and a
  4-node job: the job's srun line is split as srun does, its inner command run through real bash once per
  node (with `accelerate` a stand-in that prints its argv as JSON), with the first host from
  `scontrol show hostnames` and from the Python fallback; the argv then goes through accelerate's own
  parser and DeepSpeed launcher set-up (torchrun's nnodes, node_rank, master address, ZeRO-3).
- Two "nodes" on this machine meet through the real launch: accelerate, DeepSpeed's launcher, torch's
  static rendezvous, a gloo all-reduce.
- A SLURM dry-run of a 2-node train_dpo through profiles/slurm: its resources, the sbatch arguments the
  plugin builds from them, and every other rule's resources unchanged.
- Bad input: the node count, GPUs per node, resources that cannot place one task per node, an accelerate
  config that cannot span nodes: errors naming the key, before any job.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from judgeflow.errors import ConfigError
from judgeflow.stages import train_dpo
from judgeflow.workflow import cluster as jc, launch

from conftest import ROOT
from test_slurm_profile import PROFILE, SITE, _dry_run, _job_resources, make_no_slurm_path

ZERO3 = "config/accelerate/zero3.yaml"
CPU = "config/accelerate/cpu.yaml"
WORKER_ARGS = ["-m", "judgeflow.training.worker", "--variant", "multi_feedback", "--pairs", "results/x/pairs.jsonl",
               "--model", "resources/models/Qwen2.5-7B-Instruct", "--out-dir", "results/x/dpo/multi_feedback",
               "--accelerate-config", ZERO3, "--threads", "32"]
SCONTROL = shutil.which("scontrol")
BASH = shutil.which("bash") or "/bin/bash"

# Recorded SLURM environments of each task of the job's `srun --nodes=N --ntasks=N --ntasks-per-node=1
# --cpus-per-task=32` (sbatch --nodes=N --ntasks=N --gres=gpu:4 --cpus-per-task=32; SLURM 22.05), less the
# variables nothing here reads. The job-wide part, then each node's own.
JOB_2 = {"SLURM_JOB_ID": "4711", "SLURM_JOBID": "4711", "SLURM_JOB_NODELIST": "jz[101-102]",
         "SLURM_NODELIST": "jz[101-102]", "SLURM_STEP_NODELIST": "jz[101-102]", "SLURM_NNODES": "2",
         "SLURM_JOB_NUM_NODES": "2", "SLURM_STEP_NUM_NODES": "2", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
         "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_CPUS_PER_TASK": "32",
         "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
         "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0", "SLURM_JOB_PARTITION": "trainq"}
NODES_2 = [
    {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURMD_NODENAME": "jz101", "SLURM_TOPOLOGY_ADDR": "jz101"},
    {"SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURMD_NODENAME": "jz102", "SLURM_TOPOLOGY_ADDR": "jz102"},
]
JOB_4 = {"SLURM_JOB_ID": "4712", "SLURM_JOBID": "4712", "SLURM_JOB_NODELIST": "jz[101-104]",
         "SLURM_NODELIST": "jz[101-104]", "SLURM_STEP_NODELIST": "jz[101-104]", "SLURM_NNODES": "4",
         "SLURM_JOB_NUM_NODES": "4", "SLURM_STEP_NUM_NODES": "4", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4",
         "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1(x4)", "SLURM_CPUS_PER_TASK": "32",
         "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
         "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0", "SLURM_JOB_PARTITION": "trainq"}
NODES_4 = [
    {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURMD_NODENAME": "jz101", "SLURM_TOPOLOGY_ADDR": "jz101"},
    {"SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURMD_NODENAME": "jz102", "SLURM_TOPOLOGY_ADDR": "jz102"},
    {"SLURM_NODEID": "2", "SLURM_PROCID": "2", "SLURMD_NODENAME": "jz103", "SLURM_TOPOLOGY_ADDR": "jz103"},
    {"SLURM_NODEID": "3", "SLURM_PROCID": "3", "SLURMD_NODENAME": "jz104", "SLURM_TOPOLOGY_ADDR": "jz104"},
]
RECORDED = {2: (JOB_2, NODES_2), 4: (JOB_4, NODES_4)}
MULTINODE_KEYS = ("nodes", "gres", "mpi", "tasks", "tasks_per_gpu")


def train_resources(nodes: int, site: dict | None = None, rule: str = "train_dpo") -> dict:
    """The profile's resources of a training rule as Snakemake evaluates them (None: left out) with the site
    values of `site` (SITE by default) and `nodes` training nodes."""
    values = jc.resolve_site({}, {**(site or SITE), "train_nodes": nodes})
    raw = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"][rule]
    evaluated = {k: jc.evaluate_expression(v, values) for k, v in raw.items()}
    return {k: v for k, v in evaluated.items() if v is not None}


def _stub(tmp_path: Path) -> Path:
    """A stand-in for `accelerate`: prints its arguments as JSON."""
    stub = tmp_path / "accelerate-argv"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    return stub


def _split_srun(cmd: str, nodes: int) -> str:
    """The srun line's inner command, after checking srun's own options: one task on each of the nodes."""
    words = shlex.split(cmd)
    assert words[:4] == ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"], words[:6]
    assert "--cpus-per-task=32" in words and "--kill-on-bad-exit=1" in words
    assert words[-3:-1] == ["bash", "-c"]
    return words[-1]


def _run_on_node(inner: str, env: dict, path: str) -> list[str]:
    """What one node's task runs: the inner command through real bash, with that node's environment."""
    full = {**env, "PATH": path, "PYTHONPATH": str(ROOT / "src"), "HOME": os.environ.get("HOME", "/tmp")}
    p = subprocess.run([BASH, "-c", inner], env=full, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _accelerate_view(argv: list[str]):
    """The argv as `accelerate launch` reads it (accelerate 1.15's parser and checks), and what its DeepSpeed
    launcher hands torchrun on this node."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    assert argv[0] == "launch"
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv[1:]))
    assert args.use_deepspeed and not args.multi_gpu   # the config's DeepSpeed, not plain DDP
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
    cmd, env = prepare_deepspeed_cmd_env(args)
    assert cmd is None                                   # standard launcher: torchrun on this node, no pdsh
    return args, env


@pytest.fixture(scope="module")
def no_slurm_path(tmp_path_factory) -> str:
    return make_no_slurm_path(tmp_path_factory.mktemp("bin"))


# --- (a) each node's accelerate launch ------------------------------------------------------------------

@pytest.mark.parametrize("hosts", ["scontrol", "python"])
@pytest.mark.parametrize("nodes", [2, 4])
def test_each_node_gets_its_machine_rank_and_the_same_main_process(tmp_path, monkeypatch, nodes, hosts):
    """The launch of a train_dpo job with the profile's resources for `nodes` nodes of 4 GPUs, run by each
    node's bash from its recorded SLURM environment: num_machines N, machine ranks 0..N-1 (one per node, its
    SLURM_NODEID), the same main process (the first host of SLURM_JOB_NODELIST) and port (from SLURM_JOB_ID)
    everywhere, N x 4 processes; DeepSpeed ZeRO-3 from the config file, torchrun with node_rank = machine
    rank. The first host comes from scontrol, or, with no scontrol on PATH, from launch.py's own expansion."""
    import accelerate.utils.launch

    monkeypatch.setattr(accelerate.utils.launch, "is_port_in_use", lambda port: False)
    job, per_node = RECORDED[nodes]
    res = train_resources(nodes)
    assert res["nodes"] == nodes and res["gres"] == "gpu:4" and res["mpi"] == "srun"
    cmd, nproc = train_dpo.launch_command(WORKER_ARGS, res, ZERO3, accelerate=str(_stub(tmp_path)))
    assert nproc == 4
    inner = _split_srun(cmd, nodes)
    # the job's real command differs only in the accelerate it runs
    real, _ = train_dpo.launch_command(WORKER_ARGS, res, ZERO3)
    assert real == cmd.replace(str(_stub(tmp_path)), train_dpo.ACCELERATE)
    assert f"{sys.executable} -m accelerate.commands.accelerate_cli launch --num_machines" in real

    if hosts == "scontrol":
        if SCONTROL is None:
            pytest.skip("no scontrol on this machine")
        wrap = tmp_path / "wrap"
        wrap.mkdir()
        (wrap / "scontrol").write_text(f'#!{BASH}\necho "$@" >> {tmp_path}/scontrol.log\nexec {SCONTROL} "$@"\n')
        (wrap / "scontrol").chmod(0o755)
        path = f"{wrap}:{Path(SCONTROL).parent}:/usr/bin:/bin"
    else:
        path = str(tmp_path / "empty")   # no scontrol, no head: the fallback alone
        Path(path).mkdir()

    port = launch.PORT_BASE + int(job["SLURM_JOB_ID"]) % launch.PORT_SPAN
    seen = []
    for node in per_node:
        argv = _run_on_node(inner, {**job, **node}, path)
        assert argv[-len(WORKER_ARGS) + 1:] == WORKER_ARGS[1:]      # the worker and its arguments, intact
        args, env = _accelerate_view(argv)
        assert args.num_machines == nodes and args.num_processes == nodes * 4
        assert args.machine_rank == int(node["SLURM_NODEID"])
        assert args.main_process_ip == "jz101" and args.main_process_port == port
        assert args.rdzv_backend == "static" and args.same_network
        assert args.config_file == ZERO3 and args.module and args.training_script == "judgeflow.training.worker"
        # what torchrun gets on this node, and DeepSpeed ZeRO-3 for the workers
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == (str(nodes), args.machine_rank, "4")
        assert (args.master_addr, args.master_port) == ("jz101", str(port))
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
        seen.append(args.machine_rank)
    assert sorted(seen) == list(range(nodes))
    if hosts == "scontrol":
        assert (tmp_path / "scontrol.log").read_text().splitlines() == [f"show hostnames {job['SLURM_JOB_NODELIST']}"
                                                                        ] * nodes


def test_multi_gpu_on_the_command_line_would_drop_the_deepspeed_config():
    """Why the multi-node launch passes no --multi_gpu with a config file: accelerate then ignores the
    config's distributed_type and runs DDP (so ZeRO-3 would be lost)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    argv = ["--num_machines", "2", "--machine_rank", "0", "--num_processes", "8", "--config_file", ZERO3, "t.py"]
    with_flag, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--multi_gpu", *argv]))
    without, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert not with_flag.use_deepspeed and without.use_deepspeed
    cmd = launch.accelerate_command(["t.py"], resources=train_resources(2), accelerate_args=["--config_file", ZERO3])
    assert "--multi_gpu" not in cmd
    assert "--multi_gpu" in launch.accelerate_command(["t.py"], resources=train_resources(2))  # no config file


@pytest.mark.parametrize("nodelist,hosts", [
    ("jz[101-102]", ["jz101", "jz102"]),
    ("jz[101-104]", ["jz101", "jz102", "jz103", "jz104"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("r1i[0-1]n[7-8],solo", ["r1i0n7", "r1i0n8", "r1i1n7", "r1i1n8", "solo"]),
    ("x[1,3-4],y[001-002]", ["x1", "x3", "x4", "y001", "y002"]),
    ("node1,node2", ["node1", "node2"]),
    ("jz101", ["jz101"]),
])
def test_host_list_expansion_matches_scontrol(nodelist, hosts):
    assert launch.expand_hostlist(nodelist) == hosts
    assert launch.first_host(nodelist) == hosts[0]
    if SCONTROL:
        out = subprocess.run([SCONTROL, "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        assert out.stdout.split() == hosts


def test_host_list_errors_and_the_command_line_fallback():
    for bad in ("", "n[3-1]", "n[1-2", "n[a-b]"):
        with pytest.raises(ValueError):
            launch.expand_hostlist(bad)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ok = subprocess.run([sys.executable, "-m", "judgeflow.workflow.launch", "first-host", "jz[101-104]"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and ok.stdout == "jz101\n"
    empty = subprocess.run([sys.executable, "-m", "judgeflow.workflow.launch", "first-host", ""],
                           capture_output=True, text=True, env=env, timeout=60)
    assert empty.returncode == 1 and "SLURM_JOB_NODELIST: empty host list" in empty.stderr


def _free_job_id() -> int:
    """A job id whose derived rendezvous port is free on this machine."""
    for job_id in range(4242, 4242 + launch.PORT_SPAN, 97):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", launch.PORT_BASE + job_id % launch.PORT_SPAN))
            except OSError:
                continue
        return job_id
    pytest.skip("no free port in the rendezvous range")


def test_two_nodes_meet_through_the_real_launch(tmp_path):
    """The job's own launch line for 2 nodes of 1 GPU, each node's inner command run at once on this machine
    (both "nodes" are localhost): accelerate with the ZeRO-3 config starts DeepSpeed's launcher, torch's
    static rendezvous on the first host joins them, and a gloo all-reduce sees world size 2 with rank 0
    on machine rank 0."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, os\nimport torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank() + 1]); dist.all_reduce(t)\n"
        "print(json.dumps({'rank': dist.get_rank(), 'world': dist.get_world_size(), 'sum': int(t.item()),\n"
        "                  'node': os.environ['SLURM_NODEID'],\n"
        "                  'deepspeed': os.environ.get('ACCELERATE_USE_DEEPSPEED'),\n"
        "                  'zero': os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE')}), flush=True)\n"
        "dist.destroy_process_group()\n")
    res = {**train_resources(2, {**SITE, "train_gpus": 1, "cpus_per_gpu": 1}), "cpus_per_task": 1}
    cmd, _ = train_dpo.launch_command([str(worker)], res, ZERO3)
    inner = _split_srun(cmd.replace("--cpus-per-task=1 ", "--cpus-per-task=32 "), 2)
    job = {"SLURM_JOB_ID": str(_free_job_id()), "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "2"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    procs = [subprocess.Popen([BASH, "-c", inner], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**base, **job, "SLURM_NODEID": str(i), "CUDA_VISIBLE_DEVICES": "",
                                   "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")})
             for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert sorted((r["node"], r["rank"]) for r in results) == [("0", 0), ("1", 1)]
    assert all(r["world"] == 2 and r["sum"] == 3 and r["deepspeed"] == "true" and r["zero"] == "3" for r in results)


# --- (b) the SLURM dry-run of a 2-node train_dpo --------------------------------------------------------

def _sbatch(res: dict) -> str:
    """The sbatch arguments snakemake-executor-plugin-slurm builds from a job's resources (as a dry-run
    lists them), by the plugin's own functions."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    typed = Resources({k: int(v) if v.lstrip("-").isdigit() else v for k, v in res.items()})
    job = SimpleNamespace(resources=typed, threads=int(res["cpus_per_task"]))
    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "workdir": None,
              "account": f"-A {res['slurm_account']}", "partition": f"-p {res['slurm_partition']}"}
    return get_submit_command(job, params) + set_gres_string(job)


def test_dry_run_of_a_two_node_train_dpo(tmp_path, no_slurm_path):
    """JUDGEFLOW_SLURM_TRAIN_NODES=2 (train_nodes: 2): each train_dpo job asks for 2 nodes with 4 GPUs on each
    (--gres, not --gpus), one task per node (--ntasks=2, no --ntasks-per-gpu), the CPUs and memory of a node
    per task, and the plugin's mpi resource (the job's command starts its own srun); with one node the same
    job's submission is today's (--gpus=4); every other rule's resources are the same either way."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, _ = _dry_run(tmp_path / "one", no_slurm_path)
    two, _ = _dry_run(tmp_path / "two", no_slurm_path, site={**SITE, "train_nodes": 2})
    assert one.returncode == 0, (one.stdout + one.stderr)[-3000:]
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    jobs1, jobs2 = _job_resources(one.stdout + one.stderr), _job_resources(two.stdout + two.stderr)
    assert set(jobs1) == set(jobs2) and len(jobs2["train_dpo"]) == 2
    for res in jobs2["train_dpo"]:
        assert (res["nodes"], res["gres"], res["gpu"], res["mpi"], res["tasks"], res["tasks_per_gpu"]) == (
            "2", "gpu:4", "0", "srun", "2", "0"), res
        assert res["cpus_per_task"] == "32" and res["slurm_partition"] == "trainq" and res["runtime"] == "1200"
        # the resources the launch test builds its command from are the dry-run's
        assert {k: str(v) for k, v in train_resources(2).items()} == {k: res[k] for k in train_resources(2)}
        sbatch = _sbatch(res).split()
        assert {"--nodes=2", "--ntasks=2", "--cpus-per-task=32", "--gres=gpu:4", "-p", "trainq"} <= set(sbatch)
        assert not [a for a in sbatch if a.startswith(("--gpus", "--ntasks-per-gpu", "--ntasks-per-node", "--mem"))]
    for res in jobs1["train_dpo"]:
        assert res["gpu"] == "4" and not set(MULTINODE_KEYS) & set(res), res
        sbatch = _sbatch(res).split()
        assert "--gpus=4" in sbatch and "--cpus-per-task=32" in sbatch
        assert not [a for a in sbatch if a.startswith(("--nodes", "--ntasks", "--gres"))]
    for rule in jobs1:
        if rule != "train_dpo":
            assert jobs1[rule] == jobs2[rule], rule


# --- (c) bad input ----------------------------------------------------------------------------------------

MINIMAL = {"account": "a", "cpu_partition": "c", "gpu_partition": "g"}


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5", ""])
def test_a_node_count_that_is_not_a_whole_number_from_one_is_refused_naming_the_key(value):
    with pytest.raises(jc.ClusterConfigError) as e:
        jc.resolve_site({}, {**MINIMAL, "train_nodes": value})
    assert f"JUDGEFLOW_SLURM_TRAIN_NODES={value!r} (site key train_nodes): must be a whole number >= 1" in str(e.value)
    with pytest.raises(jc.ClusterConfigError, match="JUDGEFLOW_SLURM_TRAIN_NODES="):
        jc.resolve_site({"JUDGEFLOW_SLURM_TRAIN_NODES": value}, MINIMAL)


def test_node_count_defaults_to_one_and_is_read_as_a_number():
    assert jc.resolve_site({}, MINIMAL)["JUDGEFLOW_SLURM_TRAIN_NODES"] == "1"
    assert jc.resolve_site({"JUDGEFLOW_SLURM_TRAIN_NODES": "02"}, MINIMAL)["JUDGEFLOW_SLURM_TRAIN_NODES"] == "2"
    assert not set(MULTINODE_KEYS) & set(train_resources(1)) and train_resources(1)["gpu"] == 4


def test_several_nodes_without_gpus_on_each_is_refused_naming_the_key():
    with pytest.raises(jc.ClusterConfigError) as e:
        jc.resolve_site({}, {**MINIMAL, "train_nodes": 2, "train_gpus": 0})
    assert ("JUDGEFLOW_SLURM_TRAIN_GPUS='0' (site key train_gpus): a training job over "
            "JUDGEFLOW_SLURM_TRAIN_NODES=2 nodes needs at least one GPU on each node") in str(e.value)
    jc.resolve_site({}, {**MINIMAL, "train_nodes": 1, "train_gpus": 0})   # one node: a CPU training job


def _settings(rule_resources: dict) -> SimpleNamespace:
    return SimpleNamespace(overwrite_resources=rule_resources)


def test_multinode_resources_that_cannot_place_one_task_per_node_are_named():
    """--set-resources over the profile: GPUs given for the whole job that do not split over the nodes (or
    that SLURM may place unevenly), no mpi resource, tasks that are not one per node."""
    env = {"JUDGEFLOW_SLURM_TRAIN_NODES": "4"}
    good = {k: str(v) for k, v in train_resources(4).items()}
    assert jc.multinode_problems(_settings({"train_dpo": good}), env) == []
    split = {**good, "gres": "None", "gpu": "6"}
    [msg] = jc.multinode_problems(_settings({"train_dpo": split}), env)
    assert msg.startswith("set-resources train_dpo (JUDGEFLOW_SLURM_TRAIN_NODES=4): resources gpu=6 (GPUs of the "
                          "whole job) do not split evenly over nodes=4")
    [msg] = jc.multinode_problems(_settings({"train_dpo": {**good, "gres": "None", "gpu": "8"}}), env)
    assert "gpu=8 counts the GPUs of the whole job, which SLURM may place unevenly over nodes=4: give gres=gpu:2" in msg
    no_mpi = {k: v for k, v in good.items() if k != "mpi"}
    [msg] = jc.multinode_problems(_settings({"train_round": no_mpi}), env)
    assert "set-resources train_round (JUDGEFLOW_SLURM_TRAIN_NODES=4): nodes=4 without the mpi resource" in msg
    [msg] = jc.multinode_problems(_settings({"train_dpo": {**good, "tasks_per_gpu": "None"}}), env)
    assert "one task per node needs tasks=4 and tasks_per_gpu=0, got tasks=4, tasks_per_gpu=None" in msg
    [msg] = jc.multinode_problems(_settings({"train_dpo": {**good, "nodes": "'two'"}}), env)
    assert "nodes='two' must be a whole number >= 1" in msg
    assert jc.multinode_problems(_settings({"train_dpo": {**good, "nodes": "None"}}), env) == []


@pytest.mark.parametrize("config,problem", [
    ({"distributed_type": "NO", "use_cpu": True}, "trains on one CPU process (use_cpu: True, distributed_type: NO)"),
    ({"distributed_type": "XLA"}, "distributed_type XLA cannot span 2 nodes"),
    ({"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 3}},
     "deepspeed_multinode_launcher is 'pdsh'"),
    ({"distributed_type": "DEEPSPEED",
      "deepspeed_config": {"zero_stage": 3, "deepspeed_multinode_launcher": "standard"}}, None),
    ({"distributed_type": "MULTI_GPU"}, None),
])
def test_which_accelerate_configs_can_span_nodes(config, problem):
    got = launch.multinode_config_problem(config, 2)
    assert (got is None) if problem is None else (problem in got)
    assert launch.multinode_config_problem(config, 1) is None
    for name, ok in (("cpu.yaml", False), ("zero2.yaml", True), ("zero3.yaml", True)):
        cfg = yaml.safe_load((ROOT / "config" / "accelerate" / name).read_text())
        assert (launch.multinode_config_problem(cfg, 2) is None) is ok, name


def test_a_cpu_accelerate_config_over_two_nodes_stops_the_dry_run_naming_the_key(tmp_path, no_slurm_path):
    over = tmp_path / "cpu.yaml"
    over.write_text(yaml.safe_dump({"training": {"accelerate_config": CPU}}))
    p, _ = _dry_run(tmp_path, no_slurm_path, str(over), site={**SITE, "train_nodes": 2})
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert (f"training.accelerate_config: '{CPU}' trains on one CPU process (use_cpu: True, distributed_type: NO) "
            "and cannot span 2 nodes: use config/accelerate/zero3.yaml (DeepSpeed ZeRO-3) "
            "(JUDGEFLOW_SLURM_TRAIN_NODES=2; rules train_dpo)") in out, out[-3000:]
    assert "no job was submitted" in out and "Building DAG" not in out   # stopped while parsing
    p, _ = _dry_run(tmp_path, no_slurm_path, site={**SITE, "train_nodes": 0})
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Building DAG" not in out
    assert "JUDGEFLOW_SLURM_TRAIN_NODES='0' (site key train_nodes): must be a whole number >= 1" in out


def test_the_job_itself_refuses_what_cannot_run_on_several_nodes():
    """The same checks where the job runs (resources set around the profile)."""
    res = train_resources(2)
    with pytest.raises(ConfigError, match="resources nodes=2 without the mpi resource"):
        train_dpo.launch_command(WORKER_ARGS, {k: v for k, v in res.items() if k != "mpi"}, ZERO3)
    with pytest.raises(ConfigError, match=f"training.accelerate_config: '{CPU}' trains on one CPU process"):
        train_dpo.launch_command(WORKER_ARGS, res, CPU)
    with pytest.raises(ValueError, match=r"gpu=6 .* do not split evenly over nodes=4"):
        train_dpo.launch_command(WORKER_ARGS, {"nodes": 4, "gpu": 6, "mpi": "srun"}, ZERO3)


def test_one_node_launch_keeps_the_configs_deepspeed(monkeypatch):
    """One node: accelerate launch where the job runs (no srun), and no --multi_gpu beside the config file:
    with it accelerate ran the 4 GPUs as plain DDP and ZeRO-3 was lost (regression: the command had it)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    for var in ("SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES", "SLURM_GPUS"):
        monkeypatch.delenv(var, raising=False)
    cmd, nproc = train_dpo.launch_command(WORKER_ARGS, {"gpu": 4, "cpus_per_task": 32}, ZERO3)
    assert nproc == 4
    assert cmd == (f"{train_dpo.ACCELERATE} launch --num_machines 1 --num_processes 4 --config_file "
                   f"{ZERO3} " + " ".join(shlex.quote(a) for a in WORKER_ARGS))
    argv = shlex.split(cmd)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv[argv.index("launch") + 1:]))
    assert args.use_deepspeed and not args.multi_gpu and args.num_processes == 4
    cmd, nproc = train_dpo.launch_command(WORKER_ARGS, {"gpu": 0}, CPU)
    assert nproc == 1 and cmd.startswith(f"{train_dpo.ACCELERATE} launch --num_machines 1 --num_processes 1 ")
