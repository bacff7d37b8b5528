"""train_refiner: SPaR's refiner (and judge) training after self-play round r of a chain: the examples of
the round's successes (judgeflow.refining.self_play: the final refinements of the chain's gate's searches, with
refiner_training.judgments the majority-consistent judgments of the judges on the refiner's model), then
rejection-sampling fine-tuning of the refiner -- round r's own (the refining model in round 1) -- under
`accelerate launch -m judgeflow.training.sft`, launched as train_dpo launches DPO. Round r+1's tree search
refines with the result, and its judges on the refiner's model judge with it (rulekit: Rules.refiner)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from judgeflow.errors import ConfigError
from judgeflow.refining.gates import chain_of, parse_gate, training_name
from judgeflow.refining.self_play import judgment_examples, refinement_examples
from judgeflow.refining.tree_search import read_trees
from judgeflow.stages.train_dpo import launch_command
from judgeflow.training import sft
from judgeflow.training.lineage import actor_of
from judgeflow.workflow.io import current_fingerprint, questions_by_id, read_jsonl, write_json, write_jsonl
from judgeflow.workflow.settings import plain

if TYPE_CHECKING:
    from judgeflow.workflow.pipeline import Job
    from judgeflow.workflow.settings import Settings


def worker_settings(settings: Settings) -> dict:
    """What the SFT worker reads (sft.SFTSettings, as JSON): refiner_training and the cluster's training
    settings."""
    t, rt = settings.training, settings.refining.tree_search.refiner_training
    return sft.SFTSettings.from_json({
        "refiner_training": plain(rt), "lora": plain(t.lora),
        "bf16": t.bf16, "gradient_checkpointing": t.gradient_checkpointing, "save_steps": t.save_steps,
        "report_to": t.report_to, "keep_checkpoints": t.keep_checkpoints, "seed": settings.seed,
        "refiner": settings.refining.model}).as_json()


def run(inp, out, settings: Settings, job: Job) -> None:
    refining, judging = settings.refining, settings.judging
    ts = refining.tree_search
    rnd = job.wildcards["round"]
    chain = chain_of(rnd)
    k = parse_gate(chain)[0] if chain else ts.train_gate  # the chain's gate, or train_gate's (chains: shared)
    assert k is not None  # validated: null = the first gate
    questions = questions_by_id(inp.kept)
    examples = refinement_examples(read_trees(inp.trees), questions, refining, judging, k, ts.exit,
                                   ts.refiner_training.min_value)
    if ts.refiner_training.judgments:
        verdicts = [v for f in inp.verdicts for v in read_jsonl(f)]
        responses = [r for f in inp.responses for r in read_jsonl(f)]
        examples += judgment_examples(verdicts, responses, questions, judging, refining.model)
    write_jsonl(out.examples, examples)
    spec = settings.models[refining.model]
    if spec.backend not in ("hf", "vllm"):  # validation refuses any other (and this narrows the spec's type)
        raise ConfigError(f"refining.model: training the refiner needs its weights; models.{refining.model} is "
                          f"backend {spec.backend}")
    start = actor_of(inp.init) if getattr(inp, "init", None) else spec.path
    name = training_name(rnd, "refiner")  # round-1-chain-3of3-refiner
    args = ["-m", sft.__name__, "--name", name, "--examples", out.examples, "--model", start,
            "--out-dir", str(Path(out.summary).parent), "--accelerate-config", inp.accelerate_config,
            "--threads", str(job.threads)]
    cmd, nproc = launch_command(args, job.resources, inp.accelerate_config)
    package_root = str(Path(sft.__file__).resolve().parents[2])  # src/
    env = dict(os.environ, JUDGEFLOW_TRAIN_SETTINGS=json.dumps(worker_settings(settings), sort_keys=True),
               JUDGEFLOW_JOB_FINGERPRINT=current_fingerprint() or "",
               OMP_NUM_THREADS=str(max(1, job.threads // nproc)),
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    subprocess.run(cmd, shell=True, check=True, env=env)
    with open(out.summary) as fh:
        summary = json.load(fh)
    if summary.get("skipped"):  # the next round keeps the refiner this training would have started from
        write_json(out.summary, {**summary, "start": start})
