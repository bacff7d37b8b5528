"""Gradient-weight diagnostics of DPO: per pair, the implicit reward margin and the sigmoid weight.

With r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x)) (log-probabilities summed over the completion's
tokens, as TRL's sigmoid loss uses them), a pair (x, y_w ≻ y_l) has

    margin m = r̂(x, y_w) − r̂(x, y_l),   loss = −log σ(m),   weight w = σ(−m),

and the gradient of its loss is −β w ∇(log π_θ(y_w|x) − log π_θ(y_l|x)): w is how hard the pair
still pulls. At the start π_θ = π_ref, so m = 0 and w = 1/2 for every pair. In the
multi-feedback variant each criterion i of a failing response y has its own pair (y_i ≻ y) and
its own weight σ(r̂(x,y) − r̂(x,y_i)); the full-feedback pair (y* ≻ y) has one shared weight.

`train_dpo` records the four log-probabilities of every training pair at the start, optionally
every `training.diagnostics.every_steps` steps, and at the end (diagnostics.jsonl); the
`dpo_diagnostics` rule compares the variants (table per variant, phase and criterion; a plot).
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from statistics import mean, median

ALL = "(all)"


def log_sigmoid(x: float) -> float:
    """log σ(x), stable for large |x|."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def implicit_rewards(policy_chosen: float, policy_rejected: float, ref_chosen: float, ref_rejected: float,
                     beta: float) -> dict:
    """r̂ of chosen and rejected, the margin, the sigmoid weight σ(−margin) and the DPO loss −log σ(margin)."""
    rc = beta * (policy_chosen - ref_chosen)
    rr = beta * (policy_rejected - ref_rejected)
    m = rc - rr
    return {"reward_chosen": rc, "reward_rejected": rr, "margin": m, "weight": sigmoid(-m), "loss": -log_sigmoid(m)}


class PhaseStore:
    """Per-pair log-probabilities (reference once, policy at named phases), appended to a file so a
    resumed job keeps what it had measured."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._phases: dict[str, tuple[int, dict]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn write of a killed job
                self._phases[rec["phase"]] = (rec["step"], rec["logps"])

    def __contains__(self, phase: str) -> bool:
        return phase in self._phases

    def add(self, phase: str, step: int, logps: dict, write: bool = True) -> None:
        """logps: {pair_id: [chosen, rejected]} of the policy at `phase` ("ref": the reference)."""
        self._phases[phase] = (step, logps)
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"phase": phase, "step": step, "logps": logps}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def ref(self) -> dict:
        return self._phases["ref"][1]

    def phases(self) -> list[tuple[str, int, dict]]:
        """(phase, step, {pair_id: [policy_chosen, policy_rejected]}) ordered by step, the reference left out."""
        items = [(k, v) for k, v in self._phases.items() if k != "ref"]
        order = sorted(items, key=lambda kv: (kv[1][0], kv[0] != "start", kv[0] == "end"))
        return [(name, step, logps) for name, (step, logps) in order]


def pair_records(phases: list[tuple[str, int, dict]], ref: dict, meta: dict[str, dict], beta: float,
                 variant: str) -> list[dict]:
    """One record per (phase, pair) with the rewards, margin, weight and loss."""
    out = []
    for phase, step, logps in phases:
        for pid, (pc, pr) in logps.items():
            rc, rr = ref[pid]
            p = meta.get(pid, {})
            out.append({
                "variant": variant, "phase": phase, "step": step, "pair_id": pid,
                "question_id": p.get("question_id"), "response_id": p.get("response_id"),
                "criterion_ids": p.get("criterion_ids", []),
                **{k: round(v, 6) for k, v in implicit_rewards(pc, pr, rc, rr, beta).items()},
                "logps": {"policy_chosen": pc, "policy_rejected": pr, "ref_chosen": rc, "ref_rejected": rr},
            })
    return out


def dpo_loss(records: list[dict]) -> float | None:
    """Mean sigmoid DPO loss −log σ(margin) over the records (None when there are none)."""
    return mean(r["loss"] for r in records) if records else None


def summary_rows(records: list[dict]) -> list[dict]:
    """Per (variant, phase, criterion) and per (variant, phase) overall ("(all)"):
    pairs, mean/median margin, mean/min/max weight, reward accuracy (margin > 0), mean loss, and
    (overall rows) the summed weight on each rejected response, averaged over responses: K pairs
    of one response each push it down in multi-feedback, one pair in full-feedback."""
    groups = defaultdict(list)
    for r in records:
        groups[(r["variant"], r["phase"], r["step"], ALL)].append(r)
        for cid in r["criterion_ids"] or ["(none)"]:
            groups[(r["variant"], r["phase"], r["step"], cid)].append(r)
    rows = []
    for (variant, phase, step, cid), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1],
                                                                                   kv[0][3] != ALL, kv[0][3])):
        margins = [r["margin"] for r in rs]
        weights = [r["weight"] for r in rs]
        row = {"variant": variant, "phase": phase, "step": step, "criterion_id": cid, "pairs": len(rs),
               "margin_mean": round(mean(margins), 6), "margin_median": round(median(margins), 6),
               "weight_mean": round(mean(weights), 6), "weight_min": round(min(weights), 6),
               "weight_max": round(max(weights), 6),
               "reward_accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
               "loss_mean": round(mean(r["loss"] for r in rs), 6), "rejected_weight_per_response": None}
        if cid == ALL:
            per_resp: defaultdict[str, float] = defaultdict(float)
            for r in rs:
                per_resp[r["response_id"] or r["pair_id"]] += r["weight"]
            row["rejected_weight_per_response"] = round(mean(per_resp.values()), 6)
        rows.append(row)
    return rows


def plot(records: list[dict], rows: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Left: every pair's weight σ(−margin) over training per variant (mean line). Right: mean weight
    per criterion at the end, variants side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({r["variant"] for r in records})
    colors = {v: c for v, c in zip(variants, ["tab:blue", "tab:orange", "tab:green", "tab:red"])}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for v in variants:
        rs = [r for r in records if r["variant"] == v]
        ax1.scatter([r["step"] for r in rs], [r["weight"] for r in rs], s=12, alpha=0.35, color=colors[v])
        overall = sorted((row["step"], row["weight_mean"]) for row in rows
                         if row["variant"] == v and row["criterion_id"] == ALL)
        ax1.plot([s for s, _ in overall], [w for _, w in overall], marker="o", color=colors[v],
                 label=f"{v} (mean of {len(rs) // max(1, len(overall))} pairs)")
    ax1.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("weight σ(−margin) per pair")
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize=8)
    ax1.set_title("DPO gradient weight per pair")
    end = [row for row in rows if row["phase"] == "end" and row["criterion_id"] != ALL]
    crits = sorted({row["criterion_id"] for row in end})
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        vals = {row["criterion_id"]: row["weight_mean"] for row in end if row["variant"] == v}
        xs = [j + i * width for j, c in enumerate(crits) if c in vals]
        ax2.bar(xs, [vals[c] for c in crits if c in vals], width=width, color=colors[v], label=v)
    ax2.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(crits))])
    ax2.set_xticklabels([c if len(c) <= 28 else c[:26] + "…" for c in crits], rotation=30, ha="right", fontsize=7)
    ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("mean weight at the end")
    ax2.set_title("per criterion, end of training")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- log-probabilities (in training)


def _sequence_logps(trainer, model, inputs: dict, ref: bool):
    """Summed completion log-probabilities of the [chosen; rejected] batch, as DPOTrainer computes them."""
    import contextlib

    import torch
    from accelerate.utils import is_peft_model
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    kw = {k: v for k, v in inputs.items() if k not in {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}}
    kw["use_cache"] = False
    completion_mask = inputs["completion_mask"]
    labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
    seq_len = completion_mask.size(1) - 1
    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if ref:
        if trainer.ref_model is not None:
            model = trainer.ref_model
        elif is_peft_model(trainer.model):
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            ctx = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        else:
            raise RuntimeError("no reference model to compute diagnostics with")
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs), \
            ctx, trainer.accelerator.autocast():
        out = model(**kw, labels=labels, fused_lm_head=True)
    logps = out.log_probs[:, -seq_len:].float().sum(dim=1)
    return logps.chunk(2, dim=0)


def pair_logps(trainer, batch_size: int = 8, ref: bool = False) -> dict[str, list[float]]:
    """{pair_id: [chosen, rejected]} summed log-probabilities of the policy (or the reference) over the
    whole training set, on every process (ZeRO-3 needs all ranks in each forward), in eval mode.
    Batches are collated by the trainer's collator and moved to the accelerator's device (the integer
    tensors the model takes need no dtype cast, also under DeepSpeed)."""
    from accelerate.utils import send_to_device

    ds = trainer.train_dataset
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    was_training = model.training
    model.eval()
    out = {}
    try:
        for start in range(0, len(ds), batch_size):
            rows = ds[start:start + batch_size]
            n = len(rows["pair_id"])
            if ref and "ref_chosen_logps" in rows:  # precomputed by TRL
                c, r = rows["ref_chosen_logps"], rows["ref_rejected_logps"]
            else:
                examples = [{"prompt_ids": rows["prompt_ids"][i], "chosen_ids": rows["chosen_ids"][i],
                             "rejected_ids": rows["rejected_ids"][i]} for i in range(n)]
                inputs = send_to_device(trainer.data_collator(examples), trainer.accelerator.device)
                c, r = (t.tolist() for t in _sequence_logps(trainer, model, inputs, ref=ref))
            for i, pid in enumerate(rows["pair_id"]):
                out[pid] = [float(c[i]), float(r[i])]
    finally:
        if was_training:
            model.train()
    return out


# ------------------------------------------------------------------------ the dpo_diagnostics rule

TRAINING_COLUMNS = ["variant", "skipped", "pairs_read", "dropped_prompt_too_long", "truncated_completions",
                    "pairs_used", "optimizer_steps", "pairs_per_step", "epochs", "num_processes", "lora", "bf16",
                    "final_dpo_loss_on_training_pairs", "seconds_per_step_median", "train_seconds",
                    "total_seconds", "peak_rss_mb", "peak_gpu_mem_mb", "resumed_from", "reason", "logs"]


def compare_variants(diagnostics: list[str], summaries: list[str], table_out: str, plot_out: str,
                     training_out: str, title: str = "") -> list[dict]:
    """diagnostics.csv (per variant, phase and criterion), diagnostics.png, training.csv (per variant)."""
    from judgeflow.workflow.io import read_jsonl, write_csv

    records = [r for path in diagnostics for r in read_jsonl(path)]
    rows = summary_rows(records)
    cols = ["variant", "phase", "step", "criterion_id", "pairs", "margin_mean", "margin_median", "weight_mean",
            "weight_min", "weight_max", "reward_accuracy", "loss_mean", "rejected_weight_per_response"]
    write_csv(table_out, rows, cols)
    training = []
    for path in summaries:
        with open(path) as fh:
            s = json.load(fh)
        row = {c: s.get(c) for c in TRAINING_COLUMNS}
        if s.get("logs"):  # the training logs (training.report_to), as a path: tensorboard --logdir <it>
            row["logs"] = str(Path(path).parent / s["logs"])
        training.append(row)
    write_csv(training_out, training, TRAINING_COLUMNS)
    skipped = [t["variant"] for t in training if t["skipped"]]
    note = f" (skipped: {', '.join(skipped)})" if skipped else ""
    plot(records, rows, plot_out, title=title + note)
    return rows
