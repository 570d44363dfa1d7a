#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: `llmtool quantize nf4|int8` next to
# transformers + bitsandbytes (from_pretrained(quantization_config=...) on
# CPU, then save_pretrained; scripts/bnb_anchor.py) in the same run, on
# SmolLM2-135M in HF bf16 form (tests/oracle/smollm2_hf.py) and on the synthetic
# 1B-shaped bf16 model. The anchor needs tests/oracle/requirements.txt:
# ORACLE_PYTHON=/path/to/venv/bin/python.
set -euo pipefail
export SYNTH_SIZE=1b
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
opy="${ORACLE_PYTHON:-python3}"
smol="$cache/smollm2-hf"
[ -f "$smol/model.safetensors" ] || "$opy" tests/oracle/smollm2_hf.py "$(scripts/smollm2.sh)" "$smol" >/dev/null 2>&1

echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
for model in smollm2-hf "synth-1b"; do
  for fmt in nf4 int8; do
    out="$cache/q-$model-$fmt"
    rm -rf "$out" "$out-anchor"
    /usr/bin/time -v "$bin" quantize "$fmt" "$cache/$model" --out "$out" --json >/dev/null 2>"$cache/t-q.txt"
    row "llmtool, $model, $fmt" "$cache/t-q.txt" "llmtool quantize $fmt CACHE/$model --out CACHE/q"
    /usr/bin/time -v "$opy" scripts/bnb_anchor.py "$cache/$model" "$out-anchor" "$fmt" >/dev/null 2>"$cache/t-a.txt"
    row "anchor: transformers + bitsandbytes, $model, $fmt" "$cache/t-a.txt" "python scripts/bnb_anchor.py CACHE/$model CACHE/q-anchor $fmt"
    # Same bytes? (tensor by tensor; file layouts differ)
    "$opy" scripts/compare_safetensors.py "$out" "$out-anchor" >&2
    rm -rf "$out" "$out-anchor"
  done
done
