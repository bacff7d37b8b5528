"""Benchmark: batched vs one-prompt-at-a-time generation with the hf backend.

Same prompts, same per-draw seeds, same sampling; prints tokens/s of both and the ratio.
    .venv/bin/python benchmarks/hf_batching.py [--prompts 32] [--batch-size 32] [--max-new-tokens 48]
Needs resources/models/SmolLM2-135M-Instruct (make demo, or the prepare_model rule).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from judgeflow.models import GenRequest, Sampling  # noqa: E402
from judgeflow.models.hf import HFModel  # noqa: E402


def run(model: HFModel, reqs: list[GenRequest], batch_size: int) -> tuple[int, float, list[str]]:
    model.batch_size = batch_size
    t0 = time.perf_counter()
    gens = model.generate(reqs, desc=f"batch {batch_size}")
    dt = time.perf_counter() - t0
    return sum(g.completion_tokens for g in gens), dt, [g.text for g in gens]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    model = HFModel("policy", args.model, device="cpu", dtype="float32", threads=args.threads)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95)
    topics = ["rivers", "bread", "chess", "volcanoes", "tea", "bridges", "owls", "glass"]
    reqs = [GenRequest.chat(f"Write two sentences about {topics[i % len(topics)]} (variant {i}).",
                            sampling=sampling, seed=1000 + i) for i in range(args.prompts)]
    run(model, reqs[:2], 2)  # warm-up
    tok_b, dt_b, texts_b = run(model, reqs, args.batch_size)
    tok_1, dt_1, texts_1 = run(model, reqs, 1)
    result = {
        "prompts": args.prompts, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "batched": {"tokens": tok_b, "seconds": round(dt_b, 2), "tokens_per_s": round(tok_b / dt_b, 1)},
        "one_at_a_time": {"tokens": tok_1, "seconds": round(dt_1, 2), "tokens_per_s": round(tok_1 / dt_1, 1)},
        "ratio": round((tok_b / dt_b) / (tok_1 / dt_1), 2),
        "same_draws": texts_b == texts_1,  # per-draw seeds: batching does not change a draw
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
