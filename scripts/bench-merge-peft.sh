#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: `lora merge` against the PEFT workflow it
# replaces (load, merge_and_unload, save_pretrained) on the real SmolLM2-135M
# in HF form with a rank-16 all-linear adapter, in one run, then checks that
# both outputs hold the same tensors (bf16: at most 1 ulp apart).
#
#   ORACLE_PYTHON=/path/to/venv/bin/python scripts/bench-merge-peft.sh
#
# ORACLE_PYTHON is a venv with tests/oracle/requirements.txt (torch, PEFT,
# transformers); the HF base and the adapter are made with it once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
oracle="${ORACLE_PYTHON:?set ORACLE_PYTHON to a python with tests/oracle/requirements.txt}"
threads="${THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
hf="$cache/smollm2-hf"
adapter="$cache/smollm2-r16"
[ -f "$hf/model.safetensors" ] || "$oracle" tests/oracle/smollm2_hf.py "$(scripts/smollm2.sh)" "$hf" >/dev/null 2>&1
[ -f "$adapter/adapter_model.safetensors" ] || "$oracle" tests/oracle/peft_merge_workflow.py "$hf" "$adapter" --make-adapter 16 >/dev/null 2>&1

echo "threads: $threads"
echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
rm -rf "$cache/merged-llmtool" "$cache/merged-peft"
/usr/bin/time -v "$bin" lora merge --base "$hf" --adapter "$adapter" --out "$cache/merged-llmtool" --json >/dev/null 2>"$cache/t-merge-small.txt"
row "llmtool lora merge" "$cache/t-merge-small.txt" "llmtool lora merge --base CACHE/smollm2-hf --adapter CACHE/smollm2-r16 --out CACHE/merged-llmtool"
/usr/bin/time -v "$oracle" tests/oracle/peft_merge_workflow.py "$hf" "$adapter" "$cache/merged-peft" 2>"$cache/t-peft.txt" >/dev/null
row "anchor: PEFT load + merge_and_unload + save_pretrained" "$cache/t-peft.txt" "python tests/oracle/peft_merge_workflow.py CACHE/smollm2-hf CACHE/smollm2-r16 CACHE/merged-peft"
echo
"$oracle" tests/oracle/compare_models.py "$cache/merged-llmtool" "$cache/merged-peft" --max-ulp 1
