#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: HF → Q4_K_M GGUF with llmtool (one
# streaming step) against llama.cpp's pipeline (convert_hf_to_gguf.py to an
# f16 GGUF, then llama-quantize), on SmolLM2-135M in HF form, same threads,
# one run; then f16 GGUF → Q4_K_M with both quantizers.
#
#   ORACLE_PYTHON=/path/to/venv/bin/python scripts/bench-quantize.sh
#
# ORACLE_PYTHON runs llama.cpp's converter (tests/oracle/requirements.txt);
# without it the HF rows are skipped and the f16 GGUF is made by llmtool
# (byte-identical to the converter's, tests/quantize_gguf.rs). llama.cpp
# itself is built once by tests/oracle/build_llama_cpp.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
oracle="${ORACLE_PYTHON:-}"
threads="${THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
llama="$(tests/oracle/build_llama_cpp.sh)"
hf="$cache/smollm2-hf-llmtool"
# The HF form, made by our own convert (bit-identical to transformers' import).
[ -f "$hf/model.safetensors" ] || "$bin" convert "$(scripts/smollm2.sh)" --out "$hf" --dtype bf16 --json >/dev/null
work="$cache/bench-quantize"
rm -rf "$work" && mkdir -p "$work"

echo "threads: $threads"
echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
if [ -n "$oracle" ]; then
  /usr/bin/time -v "$bin" quantize q4_k_m "$hf" --out "$work/llmtool-q4km.gguf" --json >/dev/null 2>"$work/t1.txt"
  row "llmtool: HF → Q4_K_M" "$work/t1.txt" "llmtool quantize q4_k_m CACHE/smollm2-hf-llmtool --out q4km.gguf"
  /usr/bin/time -v "$oracle" "$llama/convert_hf_to_gguf.py" "$hf" --outtype f16 --outfile "$work/f16.gguf" >/dev/null 2>"$work/t2.txt"
  row "anchor 1/2: convert_hf_to_gguf.py → f16" "$work/t2.txt" "python convert_hf_to_gguf.py CACHE/smollm2-hf-llmtool --outtype f16"
else
  "$bin" quantize f16 "$hf" --out "$work/f16.gguf" --json >/dev/null
fi
# f16 GGUF → Q4_K_M, the two quantizers alternately, three times each.
for i in 1 2 3; do
  /usr/bin/time -v "$llama/build/bin/llama-quantize" "$work/f16.gguf" "$work/llama-q4km-$i.gguf" Q4_K_M "$threads" >/dev/null 2>"$work/t3.txt"
  row "anchor: llama-quantize f16 → Q4_K_M ($i)" "$work/t3.txt" "llama-quantize f16.gguf q4km.gguf Q4_K_M $threads"
  rm -f "$work/llmtool-from-f16.gguf"
  /usr/bin/time -v "$bin" quantize q4_k_m "$work/f16.gguf" --out "$work/llmtool-from-f16.gguf" --json >/dev/null 2>"$work/t4.txt"
  row "llmtool: f16 GGUF → Q4_K_M ($i)" "$work/t4.txt" "llmtool quantize q4_k_m f16.gguf --out q4km.gguf"
done
echo
cmp -s "$work/llmtool-from-f16.gguf" "$work/llama-q4km-1.gguf" && echo "f16 → Q4_K_M: llmtool's file is byte-identical to llama-quantize's" \
  || echo "f16 → Q4_K_M: files differ (compare tensors with tests/oracle/check_gguf.py)"
