"""The `accelerate launch` command of a training job (train_dpo, train_round), single- or multi-node.

Single node (the profile's default): `--num_processes` = the GPUs the job got, from the rule's
`gpu` resource (what sbatch was asked for), else from the SLURM/CUDA environment of the job.

Multi-node (JUDGEFLOW_SLURM_TRAIN_NODES > 1; docs/cluster.md, "Several nodes for DPO"): the
profile gives the job snakemake-executor-plugin-slurm's `mpi` resource, so the plugin (2.x,
snakemake_executor_plugin_slurm_jobstep) runs the rule's command once in the batch allocation,
without an srun of its own and with every SLURM_* variable but SLURM_JOB_ID stripped, and the
command starts one task per node itself:

    srun --nodes=N --ntasks=N --ntasks-per-node=1 --cpus-per-task=C --kill-on-bad-exit=1 bash -c '
        main=<first host of $SLURM_JOB_NODELIST>
        exec accelerate launch --num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID
            --num_processes N*G --main_process_ip $main --main_process_port <from $SLURM_JOB_ID>
            --rdzv_backend static --same_network --config_file <zero3.yaml> <script>'

The `$SLURM_*` of that inner command are expanded by each task's bash on its own node (srun sets
them for every task). The first host comes from `scontrol show hostnames`, else (no scontrol on
PATH, or it printed nothing) from `python -m judgeflow.workflow.launch first-host`, this module's
own expansion of SLURM's host-list syntax (expand_hostlist). Rendezvous is torch's static one:
node `machine_rank` 0 hosts it on the first host (the first node of the step is the one with
SLURM_NODEID 0); the c10d backend would ignore the machine rank and, with --same_network, look for
its endpoint on localhost. The port is derived from SLURM_JOB_ID (the same on every node, and two
jobs sharing a first node do not collide) unless `port` is given.

With a `--config_file` among `accelerate_args`, a multi-node launch passes no `--multi_gpu`: on the
command line it overrides the config's distributed_type (accelerate 1.15, _validate_launch_command),
so a DeepSpeed (ZeRO-3) config would silently run as plain DDP. Which configs can run on several
nodes: multinode_config_problem.

Resources for N nodes of G GPUs (profiles/slurm, set-resources of train_dpo): nodes=N,
gres="gpu:G" (per node), gpu=0 (--gpus counts the whole job's GPUs, placed anyhow), mpi="srun",
tasks=N with tasks_per_gpu=0 (so the plugin adds --ntasks=N and no --ntasks-per-gpu),
cpus_per_task = CPUs per node.

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
import sys
from collections.abc import Mapping, Sequence

DEFAULT_PORT = 29500
# multi-node rendezvous port when none is given: PORT_BASE + SLURM_JOB_ID % PORT_SPAN, below Linux's
# ephemeral range (32768-60999), the same on every node of a job
PORT_BASE = 20000
PORT_SPAN = 10000
# accelerate distributed types that can span nodes with one `accelerate launch` per node
MULTINODE_TYPES = ("DEEPSPEED", "MULTI_GPU", "FSDP")


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
            raise ValueError(f"resources gpu={total} (GPUs of the whole job) do not split evenly over "
                             f"nodes={nodes}: give the GPUs of each node as gres=gpu:<G> and gpu=0 "
                             "(JUDGEFLOW_SLURM_TRAIN_GPUS is per node)")
        return total // nodes, nodes
    return gpus_from_environment(environ), nodes


def multinode_config_problem(acc_cfg: Mapping, nodes: int) -> str | None:
    """Why an accelerate config cannot train over `nodes` > 1 nodes with one `accelerate launch` per
    node, or None: a CPU config (use_cpu, or distributed_type NO: one process), a type that is not
    DeepSpeed, multi-GPU DDP or FSDP, or a DeepSpeed config whose deepspeed_multinode_launcher is
    not `standard` (any other launcher, pdsh by default, starts the other nodes itself over ssh)."""
    if nodes <= 1:
        return None
    kind = str(acc_cfg.get("distributed_type", "NO")).upper()
    if acc_cfg.get("use_cpu") or kind == "NO":
        return (f"trains on one CPU process (use_cpu: {bool(acc_cfg.get('use_cpu'))}, distributed_type: {kind}) "
                f"and cannot span {nodes} nodes: use config/accelerate/zero3.yaml (DeepSpeed ZeRO-3)")
    if kind not in MULTINODE_TYPES:
        return (f"distributed_type {kind} cannot span {nodes} nodes with one accelerate launch per node "
                "(DEEPSPEED, MULTI_GPU or FSDP can): use config/accelerate/zero3.yaml (DeepSpeed ZeRO-3)")
    launcher = (acc_cfg.get("deepspeed_config") or {}).get("deepspeed_multinode_launcher") or "pdsh"
    if kind == "DEEPSPEED" and launcher != "standard":
        return (f"deepspeed_config.deepspeed_multinode_launcher is {launcher!r}: over {nodes} nodes each node "
                "runs its own accelerate launch (one srun task per node), which needs `standard` (torchrun)")
    return None


# --- SLURM host lists -----------------------------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """`text` split at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    return out + [cur]


def _range(spec: str, text: str) -> list[str]:
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise ValueError(f"bad range {part!r} in host list {text!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"bad range {part!r} in host list {text!r}")
        width = len(lo) if lo.startswith("0") else 0   # n[08-11]: n08 n09 n10 n11, as scontrol
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def expand_hostlist(nodelist: str) -> list[str]:
    """SLURM's compressed host list (SLURM_JOB_NODELIST) as host names, in scontrol's order:
    "jz[101-102]" -> ["jz101", "jz102"]; "r1i[0-1]n[7-8],solo" -> r1i0n7 r1i0n8 r1i1n7 r1i1n8 solo;
    zero-padded ranges keep their width. The fallback of `scontrol show hostnames`."""
    hosts: list[str] = []
    for item in _split_top(nodelist.strip()):
        item = item.strip()
        if not item:
            continue
        names = [""]
        for literal, spec in re.findall(r"([^\[\]]*)(?:\[([^\[\]]*)\])?", item):
            if not literal and not spec:
                continue
            choices = _range(spec, nodelist) if spec else [""]
            names = [n + literal + c for n in names for c in choices]
        hosts += names
    if not hosts:
        raise ValueError(f"empty host list {nodelist!r}")
    return hosts


def first_host(nodelist: str) -> str:
    return expand_hostlist(nodelist)[0]


# --- the command ---------------------------------------------------------------------------------

def accelerate_command(
    script_args: Sequence[str],
    *,
    gpus: int | str | None = None,
    nodes: int = 1,
    resources: Mapping | None = None,
    launcher: str = "srun",
    port: int | None = None,
    accelerate: str = "accelerate",
    accelerate_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    cpus_per_task: int | None = None,
    python: str | None = None,
) -> str:
    """A shell command line that runs `accelerate launch <accelerate_args> <script_args>`.

    gpus: GPUs per node (an int, or a string such as "{resources.gpu}" that Snakemake fills in);
      None = from `resources` (see gpus_per_node), else from the job's environment.
    nodes: 1 = single node, every process on this node. >1 = one `launcher` task per node with
      torch's static rendezvous on the first node's host (`resources.nodes` wins when given).
    script_args: the training script and its arguments (e.g. ["-m", "judgeflow.train", ...] or
      ["train.py", "--lr", "1e-6"]); quoted here, so pass {placeholders} without quotes.
    port: multi-node only, the rendezvous port; None = PORT_BASE + $SLURM_JOB_ID % PORT_SPAN.
    cpus_per_task: multi-node only, the CPUs of each node's task (default `resources.cpus_per_task`):
      a step started inside the job gets 1 CPU per task unless told otherwise.
    python: multi-node only, the interpreter of the first-host fallback (default: this one).
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
    # a config file decides the distributed type (DeepSpeed, DDP, FSDP); --multi_gpu would override it
    # (accelerate 1.15 then runs plain DDP: ZeRO would be lost), on one node as on several
    with_config = any(str(a) == "--config_file" or str(a).startswith("--config_file=") for a in accelerate_args)
    if nodes == 1:
        n = _count(gpus)
        # with a {placeholder} count, accelerate picks multi-GPU itself from the visible GPUs
        multi = "--multi_gpu " if isinstance(n, int) and n > 1 and not with_config else ""
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
    multi = "" if with_config else "--multi_gpu "
    main_port = str(int(port)) if port is not None else f"$(( {PORT_BASE} + ${{SLURM_JOB_ID:-0}} % {PORT_SPAN} ))"
    py = shlex.quote(python or sys.executable)
    inner = (
        'main=$(command -v scontrol >/dev/null && scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
        f'[ -n "$main" ] || main=$({py} -m judgeflow.workflow.launch first-host "$SLURM_JOB_NODELIST") || exit 1; '
        f"exec {accelerate} launch {multi}--num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID "
        f"--num_processes {total} --main_process_ip \"$main\" --main_process_port {main_port} "
        f"--rdzv_backend static --same_network {extra + ' ' if extra else ''}{script}"
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m judgeflow.workflow.launch first-host NODELIST`: the first host of a SLURM host list
    (each node's task of a multi-node launch runs it where `scontrol` is not there)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "first-host":
        print("usage: python -m judgeflow.workflow.launch first-host NODELIST", file=sys.stderr)
        return 2
    try:
        print(first_host(args[1]))
    except ValueError as e:
        print(f"SLURM_JOB_NODELIST: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
