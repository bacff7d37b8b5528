"""train_dpo: DPO (TRL DPOTrainer) of the policy on one pair dataset under `accelerate launch`,
the same optimizer-step budget for every variant; resumes from its last checkpoint when rerun.

The launch command is built here, at run time, from the job's resources (GPUs, nodes): the
rule's own text holds no path, so a project moved to another directory is still finished. Over
several nodes (JUDGEFLOW_SLURM_TRAIN_NODES > 1: the profile's nodes, gres and mpi resources) it is
one srun task per node, each running `accelerate launch` with its machine rank from SLURM
(judgeflow.workflow.launch.accelerate_command).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.refining.gates import training_name
from judgeflow.training import worker as train_worker
from judgeflow.training.dpo import read_accelerate_config, worker_settings as dpo_worker_settings
from judgeflow.training.lineage import actor_of
from judgeflow.workflow.io import current_fingerprint, write_json
from judgeflow.workflow.launch import accelerate_command, gpus_per_node, multinode_config_problem

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings

log = logging.getLogger(__name__)


ACCELERATE = f"{sys.executable} -m accelerate.commands.accelerate_cli"


def run(inp, out, settings: Settings, job: Job) -> None:
    worker_settings = dpo_worker_settings(settings)
    # train_dpo: one variant, from the policy (a tree-search variant after several rounds: from the
    # last round's actor); train_round: round r's pairs, from round r's actor (inp.init)
    # (round r of gate g's own chain: "round-r-chain-g")
    variant = job.wildcards.get("variant") or training_name(job.wildcards["round"])
    start = actor_of(inp.init) if getattr(inp, "init", None) else worker_settings["policy_path"]
    args = ["-m", train_worker.__name__, "--variant", variant, "--pairs", inp.pairs,
            "--model", start, "--out-dir", str(Path(out.summary).parent),
            "--accelerate-config", inp.accelerate_config, "--threads", str(job.threads)]
    cmd, nproc = launch_command(args, job.resources, inp.accelerate_config)
    package_root = str(Path(train_worker.__file__).resolve().parents[2])  # src/
    env = dict(os.environ, JUDGEFLOW_TRAIN_SETTINGS=json.dumps(worker_settings, sort_keys=True),
               JUDGEFLOW_JOB_FINGERPRINT=current_fingerprint() or "",
               OMP_NUM_THREADS=str(max(1, job.threads // nproc)),
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    log.info("%s", cmd)
    subprocess.run(cmd, shell=True, check=True, env=env)
    with open(out.summary) as fh:
        summary = json.load(fh)
    if summary.get("skipped"):  # a next round's actor is then the model this training would have started from
        write_json(out.summary, {**summary, "start": start})


def launch_command(args: list[str], resources, accelerate_config: str, accelerate: str = ACCELERATE) -> tuple[str, int]:
    """The job's `accelerate launch` command line (one node: run where the job runs; several: one srun task
    per node) and its processes per node, from the job's resources (GPUs per node, nodes)."""
    per_node, nodes = gpus_per_node(resources)
    nproc = max(1, per_node)
    if nodes > 1:
        check_multinode(resources, nodes, per_node, accelerate_config)
    cmd = accelerate_command(args, gpus=nproc, nodes=nodes, cpus_per_task=resources.get("cpus_per_task"),
                             accelerate=accelerate, accelerate_args=["--config_file", accelerate_config])
    return cmd, nproc


def check_multinode(resources, nodes: int, per_node: int, accelerate_config: str) -> None:
    """What a job over several nodes needs from the profile and the accelerate config (checked before any
    job by judgeflow.workflow.cluster.multinode_problems; again here, for resources set otherwise)."""
    if "mpi" not in resources:
        raise ConfigError(f"resources nodes={nodes} without the mpi resource: the SLURM plugin would start the job "
                          "in a one-node srun step; set JUDGEFLOW_SLURM_TRAIN_NODES (docs/cluster.md) instead of "
                          "nodes alone")
    if per_node < 1:
        raise ConfigError(f"JUDGEFLOW_SLURM_TRAIN_GPUS: a training job over {nodes} nodes needs at least one GPU "
                          "per node")
    problem = multinode_config_problem(read_accelerate_config(accelerate_config), nodes)
    if problem:
        raise ConfigError(f"training.accelerate_config: '{accelerate_config}' {problem}")
