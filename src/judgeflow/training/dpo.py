"""DPO training of the policy on one pair dataset (multi_feedback or full_feedback) with TRL.

`workflow/scripts/train_dpo.py` runs under `accelerate launch` (one process per GPU, or one CPU
process) and calls `train()`. Everything that does not need a model (pair loading and checks,
the DPOConfig arguments, the accelerate-config checks, the launch command) is here and
unit-tested without one. `train` is the job, in steps: `check_job`, `prepare_data` (tokenizer,
pairs, length filter, too-few check), `prepare_checkpoints` (resume or start over), DPOTrainer with
the `TrainingHooks` callback (diagnostics phases, step timing), `save_model`,
`write_logs_and_diagnostics` and `training_summary`. TRL and transformers: public API only.

Traps avoided:
- The reference model is never a copy of the policy: TRL loads it with `from_pretrained` from the
  policy's directory (the only way that works under ZeRO-3, where a copy would hold shards).
- `precompute_ref_log_probs` is refused with a DeepSpeed accelerate config (broken in released TRL).
- A pair whose prompt alone reaches `max_length` is dropped and counted here, before TRL (which
  would drop it silently); a pair whose prompt fits but a completion does not is kept, its
  completion truncated by TRL (keep_start), and counted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from judgeflow.errors import ConfigError, InputError
from judgeflow.training import diagnostics as diag
from judgeflow.workflow.io import file_digest, honour_umask, iter_jsonl, write_csv, write_json, write_jsonl
from judgeflow.workflow.settings import Lora, Settings, Training, plain

log = logging.getLogger(__name__)

VARIANTS = ("multi_feedback", "full_feedback")  # and tree_search_<k>of<J>: one gate's tree-search pairs
VARIANT_PATTERN = "|".join(VARIANTS) + r"|tree_search_\d+of\d+"  # the rules' wildcard constraint
SKIPPED_MARKER = "SKIPPED"
LOG_COLUMNS = ["step", "epoch", "loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
               "rewards/accuracies", "logps/chosen", "logps/rejected", "learning_rate", "grad_norm",
               "entropy", "num_tokens"]


class TooFewPairs(InputError):
    """A pair dataset with fewer usable pairs than `training.min_pairs`."""


# --------------------------------------------------------------------------------------- pairs


def _check_messages(value, role: str | None, where: str, field: str) -> None:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: '{field}' must be a non-empty list of chat messages "
                         "(TRL conversational format)")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: '{field}' holds a message without string 'role' and 'content'")
    if role and value[-1]["role"] != role:
        raise InputError(f"{where}: '{field}' must end with a '{role}' message, got '{value[-1]['role']}'")


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Pair records of a build_pairs file, checked: prompt/chosen/rejected in TRL's conversational
    format, a `question_id`, and a `pair_id` added (the refinement id, else file:line)."""
    out, seen = [], set()
    for lineno, rec in iter_jsonl(path, required=("prompt", "chosen", "rejected", "question_id")):
        where = f"{path}:{lineno}"
        _check_messages(rec["prompt"], "user", where, "prompt")
        _check_messages(rec["chosen"], "assistant", where, "chosen")
        _check_messages(rec["rejected"], "assistant", where, "rejected")
        pid = rec.get("refinement_id") or f"{Path(path).name}:{lineno}"
        if pid in seen:
            raise InputError(f"{where}: duplicate pair (refinement_id '{pid}')")
        seen.add(pid)
        cids = rec.get("criterion_ids") or []
        if not isinstance(cids, list):
            raise InputError(f"{where}: 'criterion_ids' must be a list")
        out.append({**rec, "pair_id": pid, "criterion_ids": cids})
    return out


def chat_token_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation as TRL's DPOTrainer tokenizes a conversational example: the chat
    template applied and tokenized in one call (`apply_chat_template(tokenize=True, return_dict=True)`,
    what TRL's dataset preparation calls; no `tools` here, as build_pairs writes none)."""
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=add_generation_prompt)
    return list(enc["input_ids"])


def prompt_token_count(tokenizer, prompt: list[dict]) -> int:
    """Tokens of the prompt as TRL's DPOTrainer tokenizes it (chat template + generation prompt)."""
    return len(chat_token_ids(tokenizer, prompt, add_generation_prompt=True))


def sequence_token_count(tokenizer, messages: list[dict]) -> int:
    """Tokens of prompt + completion as TRL's DPOTrainer tokenizes it (chat template, no generation prompt)."""
    return len(chat_token_ids(tokenizer, messages))


def filter_by_length(pairs: list[dict], tokenizer, max_length: int | None) -> tuple[list[dict], dict]:
    """Drop pairs whose prompt alone has >= max_length tokens (no completion token would be left:
    TRL would drop them silently); count pairs whose prompt + completion will be truncated."""
    kept, dropped, truncated = [], [], 0
    for p in pairs:
        if max_length is None:
            kept.append(p)
            continue
        n_prompt = prompt_token_count(tokenizer, p["prompt"])
        if n_prompt >= max_length:
            dropped.append({"pair_id": p["pair_id"], "prompt_tokens": n_prompt})
            continue
        longest = max(sequence_token_count(tokenizer, p["prompt"] + p["chosen"]),
                      sequence_token_count(tokenizer, p["prompt"] + p["rejected"]))
        truncated += longest > max_length
        kept.append(p)
    stats = {"pairs_read": len(pairs), "dropped_prompt_too_long": len(dropped),
             "dropped_pairs": dropped, "truncated_completions": truncated, "pairs_used": len(kept),
             "max_length": max_length}
    if dropped:
        log.warning("dropped %d pair(s) whose prompt alone has >= max_length=%s tokens: %s",
                    len(dropped), max_length, ", ".join(d["pair_id"] for d in dropped))
    if truncated:
        log.warning("%d pair(s) have a completion truncated to max_length=%s tokens", truncated, max_length)
    return kept, stats


def check_pair_count(n_used: int, n_read: int, path, tcfg: Training) -> str | None:
    """None if there are enough pairs; else a skip reason (`on_too_few: skip`) or TooFewPairs."""
    need = tcfg.min_pairs
    if n_used >= need:
        return None
    why = (f"{path}: {n_used} usable pair(s) ({n_read} read, {n_read - n_used} dropped for length), "
           f"fewer than training.min_pairs={need}")
    if tcfg.on_too_few == "skip":
        return why + "; variant skipped (training.on_too_few: skip)"
    raise TooFewPairs(why + " (set training.on_too_few: skip to skip the variant instead)")


# ------------------------------------------------------------------------------ configuration


def accelerate_config_path(value: str | None, workflow_dir: str | os.PathLike = ".") -> Path:
    """The accelerate config file that `training.accelerate_config` names: a relative path is taken
    from the working directory where it exists there, else from `workflow_dir` (the shipped
    config/accelerate/*.yaml from any directory). A ConfigError naming the key where there is none."""
    if not value:
        raise ConfigError("training.accelerate_config: no accelerate config given "
                          "(e.g. config/accelerate/cpu.yaml, zero2.yaml, zero3.yaml)")
    path = Path(value)
    if not path.is_absolute() and not path.exists():
        path = Path(workflow_dir, value)
    if not path.is_file():
        raise ConfigError(f"training.accelerate_config: accelerate config '{value}' not found "
                          f"(shipped: config/accelerate/cpu.yaml, zero2.yaml, zero3.yaml)")
    return path


def read_accelerate_config(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    if not isinstance(cfg, dict) or "distributed_type" not in cfg:
        raise ConfigError(f"training.accelerate_config: '{path}' is not an accelerate config "
                          "(no distributed_type)")
    return cfg


def deepspeed_stage(acc_cfg: dict) -> int | None:
    if str(acc_cfg.get("distributed_type", "")).upper() != "DEEPSPEED":
        return None
    return int((acc_cfg.get("deepspeed_config") or {}).get("zero_stage", 0))


def check_training_config(tcfg: Training, acc_cfg: dict) -> None:
    """Cross-field checks of `training` against the accelerate config, errors naming the key (run by
    judgeflow.workflow.settings' validation, before any job)."""
    stage = deepspeed_stage(acc_cfg)
    if tcfg.precompute_ref_log_probs and stage is not None:
        raise ConfigError("training.precompute_ref_log_probs: not supported with a DeepSpeed accelerate config "
                          f"(ZeRO-{stage}): broken in released TRL; leave it false")
    if tcfg.lora.enabled and tcfg.lora.target_modules in ("lm_head", ["lm_head"]):
        raise ConfigError("training.lora.target_modules: TRL's DPOTrainer cannot train an adapter on lm_head")


def check_devices(acc_cfg: dict, path, num_processes: int, cuda_devices: int) -> None:
    """A CPU accelerate config on a GPU job (or with several processes) is a configuration error."""
    if acc_cfg.get("use_cpu") and (cuda_devices > 0 or num_processes > 1):
        raise ConfigError(f"training.accelerate_config: '{path}' trains on one CPU process (use_cpu: true), but "
                          f"this job has {cuda_devices} GPU(s) and {num_processes} process(es); use "
                          "config/accelerate/zero2.yaml or zero3.yaml (or a config with use_cpu: false)")


def worker_settings(settings: Settings) -> dict:
    """What a train_dpo worker needs, as JSON (the stage hands it over in $JUDGEFLOW_TRAIN_SETTINGS), from
    validated settings (training.model resolved): the training section, the seed, the policy's name and
    directory. The worker reads it back typed: WorkerSettings.from_json."""
    training, policy = settings.training, settings.training.model
    spec = settings.models[policy] if policy is not None else None
    if spec is None or spec.backend != "hf":
        raise ConfigError(f"training.model: {policy!r} is no hf model (DPO trains a local transformers model)")
    return {"training": plain(training), "seed": settings.seed, "policy": policy, "policy_path": spec.path}


@dataclass(frozen=True)
class WorkerSettings:
    """A train_dpo worker's settings, typed once (like TRL's scripts: a typed config, then attributes all
    the way down): the training section, the seed, the policy's name and directory."""

    training: Training
    seed: int
    policy: str
    policy_path: str

    @classmethod
    def from_json(cls, data: dict) -> WorkerSettings:
        return cls(Training.model_validate(data["training"]), int(data["seed"]), str(data["policy"]),
                   str(data["policy_path"]))

    def as_json(self) -> dict:
        return {"training": self.training.model_dump(mode="json"), "seed": self.seed, "policy": self.policy,
                "policy_path": self.policy_path}


def dpo_config_kwargs(tcfg: Training, output_dir: str, seed: int, use_cpu: bool, bf16: bool) -> dict:
    """Keyword arguments of trl.DPOConfig from `training` (same optimizer-step budget for every variant)."""
    kw = {
        "output_dir": output_dir, "seed": seed, "data_seed": seed, "beta": tcfg.beta,
        "loss_type": [tcfg.loss_type] if isinstance(tcfg.loss_type, str) else tcfg.loss_type,
        "learning_rate": tcfg.learning_rate, "lr_scheduler_type": tcfg.lr_scheduler_type,
        "warmup_steps": tcfg.warmup_steps, "weight_decay": tcfg.weight_decay,
        "per_device_train_batch_size": tcfg.per_device_train_batch_size,
        "gradient_accumulation_steps": tcfg.gradient_accumulation_steps,
        "max_length": tcfg.max_length, "gradient_checkpointing": tcfg.gradient_checkpointing,
        "bf16": bf16, "use_cpu": use_cpu, "precompute_ref_log_probs": tcfg.precompute_ref_log_probs,
        "logging_steps": 1, "logging_first_step": True, "save_strategy": "steps", "save_steps": tcfg.save_steps,
        "save_total_limit": 1, "report_to": ["wandb"] if tcfg.report_to == "wandb" else [],  # tensorboard: train()
        "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    if tcfg.loss_weights is not None:
        kw["loss_weights"] = tcfg.loss_weights
    if tcfg.max_steps is not None:
        kw["max_steps"] = tcfg.max_steps
    else:
        kw["num_train_epochs"] = tcfg.num_train_epochs
    overlap = set(tcfg.extra) & set(kw)
    if overlap:
        raise ConfigError(f"training.extra: {sorted(overlap)} are set by their own training.* keys")
    kw.update(tcfg.extra)
    return kw


def lora_config(lcfg: Lora):
    """peft's LoraConfig of `training.lora` (DPO's and the refiner's SFT), None without an adapter."""
    if not lcfg.enabled:
        return None
    from peft import LoraConfig

    # peft annotates lora_alpha as int; training.lora.alpha may be any positive number and scales the same
    return LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,  # type: ignore[arg-type]
                      target_modules=lcfg.target_modules, task_type="CAUSAL_LM")


def fingerprint(ws: WorkerSettings, pairs_path: str, model_dir: str, job: str | None = None) -> str:
    """Identifies a training job: a checkpoint is resumed only by the job that wrote it. `job`: the
    workflow job's fingerprint (its settings, code digest and inputs; judgeflow.workflow.io.job_fingerprint),
    by default from JUDGEFLOW_JOB_FINGERPRINT, which the train_dpo stage sets for its workers."""
    job = os.environ.get("JUDGEFLOW_JOB_FINGERPRINT", "") if job is None else job
    h = hashlib.sha256(json.dumps(ws.as_json(), sort_keys=True).encode())
    h.update(Path(pairs_path).read_bytes())
    h.update(file_digest(model_dir).encode())  # the start model (weights: by size and mtime)
    h.update(job.encode())
    return h.hexdigest()[:16]


def resumable_checkpoint(ckpt_dir: Path, fp: str) -> tuple[str | None, bool]:
    """(the last `checkpoint-*` of this very job (same fingerprint) or None, whether ckpt_dir holds
    stale checkpoints of another configuration or data). Read-only: every rank can call it."""
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.exists():
        return None, False
    stamp = ckpt_dir / "fingerprint.txt"
    if not stamp.exists() or stamp.read_text().strip() != fp:
        return None, True
    return get_last_checkpoint(str(ckpt_dir)), False


def prepare_checkpoints(state, ckpt_dir: Path, fp: str) -> str | None:
    """The checkpoint this job resumes from (None: it starts over), with ckpt_dir made and stamped.

    `state`: accelerate's PartialState (its barrier and main-rank flag). Every rank decides from
    the directory as it is (read-only) before the main rank removes stale checkpoints or stamps
    it; the second barrier keeps the other ranks from training before the directory is ready.
    """
    resume, stale = resumable_checkpoint(ckpt_dir, fp)
    state.wait_for_everyone()  # every rank has decided before the main one touches the directory
    if state.is_main_process:
        if stale:
            log.info("checkpoints in %s are from another configuration or data: starting over", ckpt_dir)
            shutil.rmtree(ckpt_dir)
        elif resume:
            log.info("resuming from %s", resume)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "fingerprint.txt").write_text(fp + "\n")
    state.wait_for_everyone()
    return resume


# ---------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class OutputPaths:
    """What `train` writes in a variant's out_dir (checkpoints/ only while it trains, unless kept)."""

    root: Path
    model: Path
    train_log: Path
    diagnostics: Path
    summary: Path
    checkpoints: Path
    logs: Path  # training.report_to's logs while it trains: tensorboard/ (event files) or wandb/ (offline runs)

    @classmethod
    def of(cls, out_dir: str | os.PathLike) -> OutputPaths:
        root = Path(out_dir)
        return cls(root, root / "model", root / "train_log.csv", root / "diagnostics.jsonl", root / "summary.json",
                   root / "checkpoints", root / "logs")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_gpu_mem_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def log_rows(log_history: list[dict]) -> list[dict]:
    """Per-step rows of the Trainer's log history (training steps only, not the final summary)."""
    rows = []
    for e in log_history:
        if "loss" not in e or "train_runtime" in e:
            continue
        rows.append({c: e.get(c) for c in LOG_COLUMNS} | {"step": e.get("step")})
    return rows


def write_skipped(out: OutputPaths, stats: dict, reason: str, variant: str) -> None:
    """Outputs of a skipped variant: empty tables, a marker in model/, the reason in the summary."""
    out.model.mkdir(parents=True, exist_ok=True)
    out.logs.mkdir(parents=True, exist_ok=True)  # nothing trained, nothing logged
    (out.model / SKIPPED_MARKER).write_text(reason + "\n")
    write_csv(out.train_log, [], LOG_COLUMNS)
    write_jsonl(out.diagnostics, [])
    write_json(out.summary, {"variant": variant, "skipped": True, "reason": reason, **stats})
    log.warning("%s", reason)


def check_job(ws: WorkerSettings, model_dir: str, accelerate_config: str | None, num_processes: int) -> None:
    """What only the running job can check: the accelerate config against its devices, the model directory."""
    import torch

    if accelerate_config:
        check_devices(read_accelerate_config(accelerate_config), accelerate_config, num_processes,
                      torch.cuda.device_count())
    if not Path(model_dir, "config.json").exists():
        raise ConfigError(f"models.{ws.policy}.path: no model at '{model_dir}'")


# ------------------------------------------------------------------------- data preparation


@dataclass
class TrainingData:
    """A job's pairs after the length filter, their stats, the tokenizer, and why the variant is
    skipped (None: it trains)."""

    tokenizer: Any
    pairs: list[dict]
    stats: dict
    skip_reason: str | None

    def meta(self) -> dict[str, dict]:
        """pair_id -> pair record (question, response and criterion ids, for the diagnostics)."""
        return {p["pair_id"]: p for p in self.pairs}

    def dataset(self):
        """The datasets.Dataset DPOTrainer trains on: TRL's conversational preference format + pair_id."""
        from datasets import Dataset

        return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
                                   "pair_id": p["pair_id"]} for p in self.pairs])


def load_tokenizer(model_dir: str):
    """The policy's tokenizer, with the EOS token as pad token where it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_data(pairs_path: str, model_dir: str, tcfg: Training) -> TrainingData:
    """The tokenizer, the checked pairs, the length filter and the too-few check (TooFewPairs is
    raised, or the skip reason returned with `on_too_few: skip`)."""
    tokenizer = load_tokenizer(model_dir)
    pairs, stats = filter_by_length(read_pairs(pairs_path), tokenizer, tcfg.max_length)
    reason = check_pair_count(len(pairs), stats["pairs_read"], pairs_path, tcfg)
    return TrainingData(tokenizer, pairs, stats, reason)


def dpo_args(ws: WorkerSettings, ckpt_dir: Path) -> tuple[Any, bool]:
    """(the job's trl.DPOConfig, bf16): bf16 is training.bf16, else on where the GPU supports it; the
    policy and the reference are loaded in that dtype (model_init_kwargs)."""
    import torch
    from trl import DPOConfig

    tcfg = ws.training
    use_cpu = not torch.cuda.is_available()
    bf16 = tcfg.bf16 if tcfg.bf16 is not None else (not use_cpu and torch.cuda.is_bf16_supported())
    args = DPOConfig(**dpo_config_kwargs(tcfg, str(ckpt_dir), ws.seed, use_cpu, bf16))
    args.model_init_kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    return args, bf16


# ------------------------------------------------------------------------------ the callback


def _ignore_event(*args, **kwargs) -> None:
    return None


class TrainingHooks:
    """The job's Trainer callback: the diagnostics phases (reference and start once, then every
    `every_steps` optimizer steps), the time of each optimizer step, no checkpoint at the last step
    (the model is saved whole right after) unless checkpoints are kept, and a log line per step.

    It follows transformers' TrainerCallback protocol without subclassing TrainerCallback, so that
    importing this module (the Snakefile does) does not import transformers: the Trainer calls
    `getattr(callback, event)(args, state, control, **kwargs)` for every event, and each `on_*`
    event not handled here is a no-op returning None, as in TrainerCallback. Add it with
    `trainer.add_callback`.
    """

    def __init__(self, trainer, store: diag.PhaseStore, *, batch_size: int, every_steps: int | None,
                 keep_checkpoints: bool, is_main: bool):
        self.trainer = trainer
        self.store = store
        self.batch_size = batch_size
        self.every_steps = every_steps
        self.keep_checkpoints = keep_checkpoints
        self.is_main = is_main
        self.step_seconds: list[float] = []
        self.step_started: float | None = None

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return _ignore_event
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def record(self, phase: str, step: int, ref: bool = False) -> None:
        """The log-probabilities of every training pair now (every rank computes, the main one writes)."""
        self.store.add(phase, step, diag.pair_logps(self.trainer, self.batch_size, ref=ref), self.is_main)

    def on_train_begin(self, args, state, control, **kwargs):
        # The reference log-probabilities, once. At step 0 the policy *is* the reference (same
        # weights from the same directory, dropout off; a LoRA adapter starts at zero), so the
        # start margins are 0 and the weights 1/2 by construction: recorded, not recomputed.
        if "ref" not in self.store:
            self.record("ref", 0, ref=True)
        if "start" not in self.store and state.global_step == 0:
            self.store.add("start", 0, self.store.ref(), self.is_main)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_started is not None:
            self.step_seconds.append(time.perf_counter() - self.step_started)
        step = state.global_step
        if step >= state.max_steps and not self.keep_checkpoints:
            control.should_save = False  # the final model is saved whole right after
        if (self.every_steps and step % self.every_steps == 0 and step < state.max_steps
                and f"step{step}" not in self.store):
            self.record(f"step{step}", step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.is_main and logs and "loss" in logs:
            log.info("step %d: %s", state.global_step,
                     ", ".join(f"{k}={logs[k]:.4g}" for k in LOG_COLUMNS[2:8] if isinstance(logs.get(k), float)))


# ---------------------------------------------------------------------------- save and summary


def save_model(trainer, tokenizer, out: OutputPaths, state, *, lora: bool, model_dir: str) -> None:
    """The trained model, whole, in out/model (replaced atomically by the main rank): the full model
    (ZeRO-3: 16-bit weights gathered by save_model), or the LoRA adapter merged into the base model,
    so the sampling stage loads a plain transformers directory. Every rank calls it (gathers, barrier)."""
    tmp = out.root / ".model.tmp"
    is_main = state.is_main_process
    if is_main and tmp.exists():
        shutil.rmtree(tmp)
    if lora and not trainer.is_deepspeed_enabled and state.num_processes == 1:
        # one process holding the whole model: merge in place
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    elif lora:
        # sharded or replicated: save the adapter (gathered), merge into a fresh copy of the base
        adapter_dir = out.root / ".adapter.tmp"
        trainer.save_model(str(adapter_dir))
        if is_main:
            merge_lora(model_dir, str(adapter_dir), str(tmp), trainer.args.model_init_kwargs["dtype"])
            tokenizer.save_pretrained(str(tmp))
            shutil.rmtree(adapter_dir, ignore_errors=True)
    else:
        trainer.save_model(str(tmp))
        if is_main:
            tokenizer.save_pretrained(str(tmp))
    state.wait_for_everyone()
    if is_main:
        honour_umask(tmp)  # safetensors writes its files 0600: teammates could not load the policy
        if out.model.exists():
            shutil.rmtree(out.model)
        os.replace(tmp, out.model)


def merge_lora(base_dir: str, adapter_dir: str, out_dir: str, dtype) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)


def write_logs_and_diagnostics(out: OutputPaths, log_history: list[dict], store: diag.PhaseStore,
                               meta: dict[str, dict], beta: float, variant: str) -> float | None:
    """train_log.csv (a row per step) and diagnostics.jsonl (a record per phase and pair); returns the
    mean DPO loss on the training pairs at the end (None without end records)."""
    write_csv(out.train_log, log_rows(log_history), LOG_COLUMNS)
    records = diag.pair_records(store.phases(), store.ref(), meta, beta, variant)
    write_jsonl(out.diagnostics, records)
    return diag.dpo_loss([r for r in records if r["phase"] == "end"])


def training_summary(variant: str, stats: dict, *, optimizer_steps: int, epoch: float | None,
                     pairs_per_step: int, resumed_from: str | None, num_processes: int,
                     accelerate_config: str | None, bf16: bool, lora: bool, train_loss: float,
                     end_loss: float | None, step_seconds: list[float], train_seconds: float,
                     total_seconds: float, peak_rss_mb: float, peak_gpu_mem_mb: float | None) -> dict:
    """summary.json of a trained variant: the length-filter stats, the training run, its timing and memory."""
    steps = step_seconds
    return {
        "variant": variant, "skipped": False, **stats,
        "optimizer_steps": optimizer_steps, "pairs_per_step": pairs_per_step,
        "epochs": round(float(epoch or 0), 3),
        "resumed_from": resumed_from, "num_processes": num_processes,
        "accelerate_config": accelerate_config, "bf16": bf16, "lora": lora,
        "train_loss_logged_mean": round(float(train_loss), 6),
        "final_dpo_loss_on_training_pairs": None if end_loss is None else round(end_loss, 6),
        "seconds_per_step_median": round(sorted(steps)[len(steps) // 2], 3) if steps else None,
        "seconds_per_step_mean": round(sum(steps) / len(steps), 3) if steps else None,
        "train_seconds": round(train_seconds, 1), "total_seconds": round(total_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_gpu_mem_mb": None if peak_gpu_mem_mb is None else round(peak_gpu_mem_mb, 1),
    }


# --------------------------------------------------------------------------------- the job


def train(ws: WorkerSettings, variant: str, pairs_path: str, model_dir: str, out_dir: str,
          accelerate_config: str | None = None, threads: int | None = None) -> dict:
    """Train one variant; write model/, train_log.csv, diagnostics.jsonl and summary.json in out_dir."""
    import torch
    from accelerate import PartialState
    from trl import DPOTrainer

    tcfg = ws.training
    out = OutputPaths.of(out_dir)
    state = PartialState()
    if threads:
        torch.set_num_threads(max(1, threads))
    t_start = time.time()
    check_job(ws, model_dir, accelerate_config, state.num_processes)
    data = prepare_data(pairs_path, model_dir, tcfg)
    if data.skip_reason:
        if state.is_main_process:
            write_skipped(out, data.stats, data.skip_reason, variant)
        state.wait_for_everyone()
        return {"skipped": True, "reason": data.skip_reason}

    resume = prepare_checkpoints(state, out.checkpoints, fingerprint(ws, pairs_path, model_dir))
    args, bf16 = dpo_args(ws, out.checkpoints)
    # The policy is given as its directory: TRL loads it (model_init_kwargs) and the reference model
    # with from_pretrained from the same directory (never a deepcopy; ZeRO-3 safe).
    trainer = DPOTrainer(model=model_dir, ref_model=None, args=args, train_dataset=data.dataset(),
                         processing_class=data.tokenizer, peft_config=lora_config(tcfg.lora))
    hooks = TrainingHooks(trainer, diag.PhaseStore(out.checkpoints / "diagnostics_phases.jsonl"),
                          batch_size=tcfg.diagnostics.batch_size,
                          every_steps=tcfg.diagnostics.every_steps,
                          keep_checkpoints=tcfg.keep_checkpoints, is_main=state.is_main_process)
    # TrainingHooks follows TrainerCallback's protocol by duck typing (no transformers import at module
    # load, see its docstring); add_callback's annotation asks for the class itself
    trainer.add_callback(hooks)  # type: ignore[arg-type]
    watch(trainer, tcfg.report_to, out.logs, variant)
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - t_train
    hooks.record("end", trainer.state.global_step)
    save_model(trainer, data.tokenizer, out, state, lora=tcfg.lora.enabled, model_dir=model_dir)
    if not state.is_main_process:
        return {}

    end_loss = write_logs_and_diagnostics(out, trainer.state.log_history, hooks.store, data.meta(),
                                          tcfg.beta, variant)
    summary = training_summary(
        variant, data.stats, optimizer_steps=trainer.state.global_step, epoch=trainer.state.epoch,
        pairs_per_step=args.per_device_train_batch_size * args.gradient_accumulation_steps * state.num_processes,
        resumed_from=resume, num_processes=state.num_processes, accelerate_config=accelerate_config,
        bf16=bf16, lora=tcfg.lora.enabled, train_loss=result.training_loss, end_loss=end_loss,
        step_seconds=hooks.step_seconds, train_seconds=train_seconds, total_seconds=time.time() - t_start,
        peak_rss_mb=_peak_rss_mb(), peak_gpu_mem_mb=_peak_gpu_mem_mb())
    # where to watch it (relative to the variant's folder): tensorboard --logdir, or wandb sync
    summary["logs"] = {"tensorboard": "logs/tensorboard", "wandb": "logs/wandb", "none": None}[tcfg.report_to]
    write_json(out.summary, summary)
    if not tcfg.keep_checkpoints:
        shutil.rmtree(out.checkpoints, ignore_errors=True)
    elif state.is_main_process and out.checkpoints.exists():
        honour_umask(out.checkpoints)  # kept checkpoints are outputs too
    log.info("trained %s: %s", variant, {k: v for k, v in summary.items() if k != "dropped_pairs"})
    return summary


def watch(trainer, report_to: str, logs: Path, variant: str) -> None:
    """training.report_to: the trainer's per-step logs in `logs` while it trains. tensorboard: event files in
    logs/tensorboard/ (transformers' TensorBoardCallback; the main process writes them). wandb: an offline
    run in logs/wandb/ (compute nodes have no internet; `wandb sync` it from the login node); the callback
    comes with report_to ["wandb"] in the DPOConfig (dpo_config_kwargs). none: nothing."""
    logs.mkdir(parents=True, exist_ok=True)
    if report_to == "wandb":  # read when the run starts (WandbCallback.setup)
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_DIR"] = str(logs)
        os.environ.setdefault("WANDB_PROJECT", "judgeflow")
        os.environ.setdefault("WANDB_NAME", variant)
    elif report_to == "tensorboard":
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(logs / "tensorboard")
        trainer.add_callback(board)
