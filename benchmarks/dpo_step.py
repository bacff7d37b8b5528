"""Seconds per DPO optimizer step and peak memory on this machine (the embedded default's model).

    .venv/bin/python benchmarks/dpo_step.py                      # full fine-tuning and LoRA, batch 1 and 2
    .venv/bin/python benchmarks/dpo_step.py --configs full:2 --steps 4 --threads 2

Each configuration runs judgeflow.training.dpo.train (what train_dpo runs under accelerate launch) in its
own process on the demo's pair file (results/demo/pairs/multi_feedback.jsonl, else a few
synthetic pairs), without checkpoints, and prints one row: median seconds per optimizer step
(the first step excluded: it carries the reference pass of the diagnostics), pairs per step,
tokens per pair, peak RSS (MB) and the final DPO loss on the training pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def synthetic_pairs(path: Path, n: int = 6) -> None:
    rows = []
    for i in range(n):
        rows.append({"prompt": [{"role": "user", "content": f"Write two sentences about the number {i}. "
                                                             "Use the word 'blue' exactly twice."}],
                     "chosen": [{"role": "assistant", "content": f"The number {i} is blue. It is also blue."}],
                     "rejected": [{"role": "assistant", "content": f"The number {i} is a number."}],
                     "question_id": f"q{i}", "response_id": f"q{i}/r0", "refinement_id": f"q{i}/r0/ff",
                     "criterion_ids": ["blue"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def one(args) -> None:
    import logging

    from judgeflow.training import dpo
    from judgeflow.workflow import settings as jf_settings

    logging.basicConfig(level=logging.WARNING)
    kind, batch = args.one.split(":")
    cfg = jf_settings.load(ROOT / "config" / "config.yaml", overrides={"training": {
        "max_steps": args.steps, "per_device_train_batch_size": int(batch), "save_steps": 10_000,
        "lora": {"enabled": kind == "lora"}, "min_pairs": 1, "max_length": args.max_length,
        "learning_rate": 1e-5 if kind == "full" else 1e-4, "bf16": args.bf16}})
    s = dpo.worker_settings(cfg)
    s["policy_path"] = str(ROOT / s["policy_path"])
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(args.pairs) if args.pairs else None
        if pairs is None or not pairs.exists():
            pairs = Path(tmp, "pairs.jsonl")
            synthetic_pairs(pairs)
        out = dpo.train(s, "bench", str(pairs), s["policy_path"], str(Path(tmp, "out")), threads=args.threads)
        import csv

        with open(Path(tmp, "out", "train_log.csv")) as fh:
            rows = list(csv.DictReader(fh))
        tokens = float(rows[-1]["num_tokens"]) / max(1, len(rows)) / int(batch) if rows else None
    print(json.dumps({"config": args.one, **{k: out.get(k) for k in (
        "optimizer_steps", "pairs_per_step", "seconds_per_step_median", "seconds_per_step_mean", "peak_rss_mb",
        "final_dpo_loss_on_training_pairs", "train_seconds", "total_seconds")},
        "tokens_per_pair": round(tokens, 1) if tokens else None, "threads": args.threads}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="full:1,full:2,lora:1,lora:2", help="kind:batch, kind = full | lora")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--bf16", action="store_true", help="training.bf16: bfloat16 weights and autocast (CPUs with AVX512-BF16)")
    p.add_argument("--pairs", default=str(ROOT / "results" / "demo" / "pairs" / "multi_feedback.jsonl"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)
    print(f"{'config':10} {'s/step':>8} {'pairs/step':>10} {'tok/pair':>9} {'peak RSS MB':>12} {'end loss':>9}")
    for c in args.configs.split(","):
        r = subprocess.run([sys.executable, __file__, "--one", c, "--steps", str(args.steps), "--threads",
                            str(args.threads), "--max-length", str(args.max_length), "--pairs", args.pairs, *(["--bf16"] if args.bf16 else [])],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        line = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if r.returncode or not line:
            print(f"{c:10} failed:\n{r.stderr[-2000:]}")
            continue
        d = json.loads(line[-1])
        print(f"{c:10} {d['seconds_per_step_median']:>8} {d['pairs_per_step']:>10} {d['tokens_per_pair']:>9} "
              f"{d['peak_rss_mb']:>12} {d['final_dpo_loss_on_training_pairs']:>9}")


if __name__ == "__main__":
    main()
