#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): <= 6 minutes on one H100/H200, only torch,
# triton, transformers, accelerate, peft. Results: $OUT/gpu_check.json (partial on failure).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu_check_out}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 330 python benchmarks/gpu_check.py --out "$OUT" "$@" \
  2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
