"""The refiner's rejection-sampling fine-tuning (SPaR's refiner and judge training) with TRL's SFTTrainer,
run under `accelerate launch -m judgeflow.training.sft` (one process per GPU, or one on CPU) by the
train_refiner stage (judgeflow.stages.train_refiner), as train_dpo runs judgeflow.training.worker.

The examples (judgeflow.refining.self_play) are TRL's conversational prompt-completion format: SFTTrainer
applies the chat template and trains on the completion alone. An example longer than
`refiner_training.max_length` tokens is dropped and counted here, never truncated (a cut refinement would
teach the refiner to stop mid-text). With fewer usable examples than `min_examples`, `on_too_few` decides:
an error naming the file, or a skipped training whose summary names the model the next round keeps
(`training.lineage.actor_of` reads it). Checkpoints, their resume, the model's atomic save (a LoRA adapter
merged) and the training logs (report_to) are DPO's (judgeflow.training.dpo).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judgeflow.errors import ConfigError, InputError
from judgeflow.workflow.io import file_digest, iter_jsonl, write_csv, write_json
from judgeflow.workflow.settings import Lora, RefinerTraining

log = logging.getLogger(__name__)
SKIPPED_MARKER = "SKIPPED"
LOG_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "entropy", "num_tokens", "mean_token_accuracy"]


class TooFewExamples(InputError):
    """An examples file with fewer usable examples than `refiner_training.min_examples`."""


@dataclass(frozen=True)
class SFTSettings:
    """A train_refiner worker's settings, typed once: refining.tree_search.refiner_training, the cluster's
    training settings it shares with DPO (training.*), the seed, the refiner's models key."""

    refiner_training: RefinerTraining
    lora: Lora
    bf16: bool | None
    gradient_checkpointing: bool
    save_steps: int
    report_to: str
    keep_checkpoints: bool
    seed: int
    refiner: str

    @classmethod
    def from_json(cls, data: dict) -> SFTSettings:
        return cls(RefinerTraining.model_validate(data["refiner_training"]), Lora.model_validate(data["lora"]),
                   data["bf16"], bool(data["gradient_checkpointing"]), int(data["save_steps"]), str(data["report_to"]),
                   bool(data["keep_checkpoints"]), int(data["seed"]), str(data["refiner"]))

    def as_json(self) -> dict:
        return {"refiner_training": self.refiner_training.model_dump(mode="json"),
                "lora": self.lora.model_dump(mode="json"), "bf16": self.bf16,
                "gradient_checkpointing": self.gradient_checkpointing, "save_steps": self.save_steps,
                "report_to": self.report_to, "keep_checkpoints": self.keep_checkpoints, "seed": self.seed,
                "refiner": self.refiner}


# ------------------------------------------------------------------------------------ examples


def read_examples(path: str | os.PathLike) -> list[dict]:
    """The examples of a train_refiner examples file, checked (an InputError names file:line)."""
    from judgeflow.training.dpo import _check_messages

    out, seen = [], set()
    for lineno, rec in iter_jsonl(path, required=("example_id", "prompt", "completion")):
        where = f"{path}:{lineno}"
        _check_messages(rec["prompt"], "user", where, "prompt")
        _check_messages(rec["completion"], "assistant", where, "completion")
        if rec["example_id"] in seen:
            raise InputError(f"{where}: duplicate example_id '{rec['example_id']}'")
        seen.add(rec["example_id"])
        out.append(rec)
    return out


def filter_by_length(examples: list[dict], tokenizer, max_length: int) -> tuple[list[dict], dict]:
    """Drop examples whose prompt + completion (chat template applied, as SFTTrainer tokenizes them) exceed
    max_length tokens; count them by kind."""
    from judgeflow.training.dpo import sequence_token_count

    kept: list[dict] = []
    dropped: list[dict] = []
    for e in examples:
        n = sequence_token_count(tokenizer, e["prompt"] + e["completion"])
        if n <= max_length:
            kept.append(e)
        else:
            dropped.append({"example_id": e["example_id"], "tokens": n})
    kinds = sorted({e.get("kind", "") for e in examples})
    stats = {"examples_read": len(examples), "examples_used": len(kept), "dropped_too_long": len(dropped),
             "dropped_examples": dropped, "max_length": max_length,
             "used_by_kind": {k: sum(e.get("kind", "") == k for e in kept) for k in kinds}}
    if dropped:
        log.warning("dropped %d example(s) longer than refiner_training.max_length=%d tokens", len(dropped), max_length)
    return kept, stats


def check_example_count(n_used: int, n_read: int, path, rt: RefinerTraining) -> str | None:
    """None if there are enough examples; else a skip reason (`on_too_few: skip`) or TooFewExamples."""
    if n_used >= rt.min_examples:
        return None
    why = (f"{path}: {n_used} usable example(s) ({n_read} read, {n_read - n_used} too long), fewer than "
           f"refining.tree_search.refiner_training.min_examples={rt.min_examples}")
    if rt.on_too_few == "skip":
        return why + "; the refiner is not retrained this round (refiner_training.on_too_few: skip)"
    raise TooFewExamples(why + " (set refining.tree_search.refiner_training.on_too_few: skip to keep the refiner "
                               "instead)")


# ------------------------------------------------------------------------------- configuration


def sft_config_kwargs(ss: SFTSettings, output_dir: str, use_cpu: bool, bf16: bool) -> dict:
    """Keyword arguments of trl.SFTConfig: SPaR's SFT (configs/sft.yaml) from refiner_training, the cluster's
    settings from training. Completion-only loss on the prompt-completion examples; no packing; the length
    is filtered before (max_length None: SFTTrainer truncates nothing)."""
    rt = ss.refiner_training
    kw: dict[str, Any] = {
        "output_dir": output_dir, "seed": ss.seed, "data_seed": ss.seed, "learning_rate": rt.learning_rate,
        "lr_scheduler_type": rt.lr_scheduler_type, "warmup_steps": rt.warmup_steps,
        "per_device_train_batch_size": rt.per_device_train_batch_size,
        "gradient_accumulation_steps": rt.gradient_accumulation_steps, "max_length": None,
        "completion_only_loss": True, "packing": False,
        "gradient_checkpointing": ss.gradient_checkpointing, "bf16": bf16, "use_cpu": use_cpu,
        "logging_steps": 1, "logging_first_step": True, "save_strategy": "steps", "save_steps": ss.save_steps,
        "save_total_limit": 1, "report_to": ["wandb"] if ss.report_to == "wandb" else [],
        "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    if rt.max_steps is not None:
        kw["max_steps"] = rt.max_steps
    else:
        kw["num_train_epochs"] = rt.num_train_epochs
    return kw


def fingerprint(ss: SFTSettings, examples_path: str, model_dir: str, job: str | None = None) -> str:
    """Identifies a training job: a checkpoint is resumed only by the job that wrote it."""
    job = os.environ.get("JUDGEFLOW_JOB_FINGERPRINT", "") if job is None else job
    h = hashlib.sha256(json.dumps(ss.as_json(), sort_keys=True).encode())
    h.update(Path(examples_path).read_bytes())
    h.update(file_digest(model_dir).encode())
    h.update(job.encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ the job


def write_skipped(out, stats: dict, reason: str, name: str) -> None:
    out.model.mkdir(parents=True, exist_ok=True)
    out.logs.mkdir(parents=True, exist_ok=True)
    (out.model / SKIPPED_MARKER).write_text(reason + "\n")
    write_csv(out.train_log, [], LOG_COLUMNS)
    write_json(out.summary, {"training": name, "skipped": True, "reason": reason, **stats})
    log.warning("%s", reason)


def train(ss: SFTSettings, name: str, examples_path: str, model_dir: str, out_dir: str,
          accelerate_config: str | None = None, threads: int | None = None) -> dict:
    """Fine-tune the refiner on the examples; write model/, train_log.csv and summary.json in out_dir."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from judgeflow.training import dpo

    out = dpo.OutputPaths.of(out_dir)
    state = PartialState()
    if threads:
        torch.set_num_threads(max(1, threads))
    t_start = time.time()
    if accelerate_config:
        dpo.check_devices(dpo.read_accelerate_config(accelerate_config), accelerate_config, state.num_processes,
                          torch.cuda.device_count())
    if not Path(model_dir, "config.json").exists():
        raise ConfigError(f"models.{ss.refiner}.path: no model at '{model_dir}'")
    tokenizer = dpo.load_tokenizer(model_dir)
    examples, stats = filter_by_length(read_examples(examples_path), tokenizer, ss.refiner_training.max_length)
    reason = check_example_count(len(examples), stats["examples_read"], examples_path, ss.refiner_training)
    if reason:
        if state.is_main_process:
            write_skipped(out, stats, reason, name)
        state.wait_for_everyone()
        return {"skipped": True, "reason": reason}

    resume = dpo.prepare_checkpoints(state, out.checkpoints, fingerprint(ss, examples_path, model_dir))
    use_cpu = not torch.cuda.is_available()
    bf16 = ss.bf16 if ss.bf16 is not None else (not use_cpu and torch.cuda.is_bf16_supported())
    args = SFTConfig(**sft_config_kwargs(ss, str(out.checkpoints), use_cpu, bf16))
    args.model_init_kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    trainer = SFTTrainer(model=model_dir, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=dpo.lora_config(ss.lora))
    dpo.watch(trainer, ss.report_to, out.logs, name)
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - t_train
    dpo.save_model(trainer, tokenizer, out, state, lora=ss.lora.enabled, model_dir=model_dir)
    if not state.is_main_process:
        return {}
    rows = [{c: e.get(c) for c in LOG_COLUMNS} | {"step": e.get("step")}
            for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    write_csv(out.train_log, rows, LOG_COLUMNS)
    summary = {"training": name, "skipped": False, **stats, "start": model_dir,
               "optimizer_steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0), 3),
               "examples_per_step": (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                     * state.num_processes),
               "resumed_from": resume, "num_processes": state.num_processes, "accelerate_config": accelerate_config,
               "bf16": bf16, "lora": ss.lora.enabled, "train_loss_logged_mean": round(float(result.training_loss), 6),
               "first_loss": rows[0]["loss"] if rows else None, "last_loss": rows[-1]["loss"] if rows else None,
               "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t_start, 1),
               "logs": {"tensorboard": "logs/tensorboard", "wandb": "logs/wandb", "none": None}[ss.report_to]}
    write_json(out.summary, summary)
    if not ss.keep_checkpoints:
        shutil.rmtree(out.checkpoints, ignore_errors=True)
    log.info("trained %s: %s", name, {k: v for k, v in summary.items() if k != "dropped_examples"})
    return summary


def main(argv=None) -> int:
    from judgeflow.training.worker import run_reported, worker_logging  # (sets the offline environment)

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="the training's name (round-<r>[-chain-<gate>]-refiner)")
    p.add_argument("--examples", required=True, help="train_refiner's examples.jsonl")
    p.add_argument("--model", required=True, help="the refiner's transformers directory to start from")
    p.add_argument("--out-dir", required=True, help="tree_search/round-<r>[/chain-<gate>]/refiner")
    p.add_argument("--accelerate-config", default=None)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    worker_logging()
    return run_reported("train_refiner", lambda: train(
        SFTSettings.from_json(json.loads(os.environ["JUDGEFLOW_TRAIN_SETTINGS"])), a.name, a.examples, a.model,
        a.out_dir, accelerate_config=a.accelerate_config, threads=a.threads))


if __name__ == "__main__":
    sys.exit(main())
