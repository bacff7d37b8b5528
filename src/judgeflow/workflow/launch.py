"""The `accelerate launch` command of a training job (train_dpo), single- or multi-node.

Single node (the profile's default): `--num_processes` = the GPUs the job got, from the rule's
`gpu` resource (what sbatch was asked for), else from the SLURM/CUDA environment of the job.

Multi-node, through snakemake-executor-plugin-slurm's `mpi` resource: the plugin then runs the
rule's command once in the batch allocation (no srun of its own, SLURM_* variables stripped but
SLURM_JOB_ID), and the command starts one task per node itself:

    srun --nodes=N --ntasks=N --ntasks-per-node=1 bash -c 'accelerate launch --multi_gpu
        --num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID
        --main_process_ip <first host of $SLURM_JOB_NODELIST> --rdzv_backend c10d ...'

The `$SLURM_*` of that inner command are expanded by each task's bash on its own node. Resources
for N nodes of G GPUs (set-resources of train_dpo): nodes=N, gres="gpu:G", tasks=N,
tasks_per_gpu=0 (so the plugin adds no --ntasks-per-gpu), mpi="srun", and gpu=0 (--gpus counts
GPUs of the whole job, gres counts per node), cpus_per_task = CPUs per node. See docs/cluster.md.

Wiring into a shell rule:

    from judgeflow.workflow.launch import accelerate_command
    shell: accelerate_command(["-m", "judgeflow.train", "--config", "{input.cfg}"],
                              gpus="{resources.gpu}")          # single node
or, in a `run:`/params function, accelerate_command(args, resources=resources).
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence

DEFAULT_PORT = 29500


def gpus_from_environment(environ: Mapping[str, str] | None = None) -> int:
    """GPUs visible to this job: SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else SLURM_GPUS."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() not in ("", "-1", "NoDevFiles"):
        return len([d for d in cvd.split(",") if d.strip()])
    m = re.search(r"(\d+)$", env.get("SLURM_GPUS", ""))
    return int(m.group(1)) if m else 0


def gpus_per_node(resources: Mapping | None = None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(GPUs per node, nodes) of a job from its Snakemake resources (`gres: gpu[:type]:G` per node,
    or `gpu: total`), falling back to the job's environment."""
    res = dict(resources or {})
    nodes = int(res.get("nodes") or 1)
    gres = str(res.get("gres") or "")
    m = re.fullmatch(r"gpu(?::[\w.]+)?:(\d+)", gres.strip())
    if m:
        return int(m.group(1)), nodes
    if res.get("gpu"):
        total = int(res["gpu"])
        if total % nodes:
            raise ValueError(f"gpu={total} does not split evenly over nodes={nodes}")
        return total // nodes, nodes
    return gpus_from_environment(environ), nodes


def accelerate_command(
    script_args: Sequence[str],
    *,
    gpus: int | str | None = None,
    nodes: int = 1,
    resources: Mapping | None = None,
    launcher: str = "srun",
    port: int = DEFAULT_PORT,
    accelerate: str = "accelerate",
    accelerate_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    cpus_per_task: int | None = None,
) -> str:
    """A shell command line that runs `accelerate launch <accelerate_args> <script_args>`.

    gpus: GPUs per node (an int, or a string such as "{resources.gpu}" that Snakemake fills in);
      None = from `resources` (see gpus_per_node), else from the job's environment.
    nodes: 1 = single node, every process on this node. >1 = one `launcher` task per node with
      c10d rendezvous on the first node's host at `port` (`resources.nodes` wins when given).
    script_args: the training script and its arguments (e.g. ["-m", "judgeflow.train", ...] or
      ["train.py", "--lr", "1e-6"]); quoted here, so pass {placeholders} without quotes.
    cpus_per_task: multi-node only, the CPUs of each node's task (default `resources.cpus_per_task`):
      a step started inside the job gets 1 CPU per task unless told otherwise.
    """
    if resources is not None:
        cpus_per_task = cpus_per_task or resources.get("cpus_per_task")
        per_node, res_nodes = gpus_per_node(resources, environ)
        nodes = res_nodes if resources.get("nodes") else nodes
        gpus = per_node if gpus is None else gpus
    if gpus is None:
        gpus = gpus_from_environment(environ)
    nodes = int(nodes)
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    script = " ".join(_quote(a) for a in script_args)
    extra = " ".join(_quote(a) for a in accelerate_args)
    if nodes == 1:
        n = _count(gpus)
        # with a {placeholder} count, accelerate picks multi-GPU itself from the visible GPUs
        multi = "--multi_gpu " if isinstance(n, int) and n > 1 else ""
        return (f"{accelerate} launch {multi}--num_machines 1 --num_processes {n} "
                f"{extra + ' ' if extra else ''}{script}").strip()
    per: int | str
    if isinstance(gpus, str) and not gpus.isdigit():
        per = gpus  # a placeholder; multiplied by the shell
        total = f"$(( {gpus} * {nodes} ))"
    else:
        per = int(gpus)
        if per < 1:
            raise ValueError("a multi-node training job needs at least one GPU per node")
        total = str(per * nodes)
    inner = (
        f"{accelerate} launch --multi_gpu --num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID "
        f"--num_processes {total} "
        f"--main_process_ip $(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) "
        f"--main_process_port {int(port)} --rdzv_backend c10d --same_network "
        f"{extra + ' ' if extra else ''}{script}"
    ).strip()
    cpus = f"--cpus-per-task={int(cpus_per_task)} " if cpus_per_task else ""
    return (f"{launcher} --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 {cpus}--kill-on-bad-exit=1 "
            f"bash -c {shlex.quote(inner)}")


def _count(gpus) -> int | str:
    if isinstance(gpus, str) and not gpus.isdigit():
        return gpus  # "{resources.gpu}": filled in by Snakemake
    n = int(gpus)
    if n < 1:
        raise ValueError(f"accelerate launch needs at least one process, got gpus={gpus!r}")
    return n


def _quote(arg) -> str:
    s = str(arg)
    return s if re.fullmatch(r"\{[\w.\[\]'\"]+\}", s) else shlex.quote(s)
