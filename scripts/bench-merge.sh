#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: `lora merge` of a rank-16 all-linear
# adapter into the synthetic 7B bf16 model (13 GB), next to `cp -r` of the
# same model (the time to read and write the bytes), in the same run.
# Needs ~30 GB free disk under target/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
[ -f "$cache/synth-7b-lora/adapter_model.safetensors" ] || "$py" scripts/make_synth_adapter.py "$synth" "$cache/synth-7b-lora" >/dev/null

echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
rm -rf "$cache/m7b" "$cache/cp7b"
/usr/bin/time -v "$bin" lora merge --base "$synth" --adapter "$cache/synth-7b-lora" --out "$cache/m7b" --json >/dev/null 2>"$cache/t-merge.txt"
row "llmtool lora merge, synthetic 7B bf16 + r16 all-linear" "$cache/t-merge.txt" "llmtool lora merge --base CACHE/synth-7b --adapter CACHE/synth-7b-lora --out CACHE/m7b"
rm -rf "$cache/m7b"
/usr/bin/time -v cp -r "$synth" "$cache/cp7b" 2>"$cache/t-cp.txt"
row "anchor: cp -r of the same 13 GB" "$cache/t-cp.txt" "cp -r CACHE/synth-7b CACHE/cp7b"
rm -rf "$cache/cp7b"
