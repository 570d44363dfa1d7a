#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: `lora merge` of a rank-16 all-linear
# adapter into the synthetic 7B bf16 model (13 GB), next to `cp -r` of the
# same model (the time to read and write the bytes; once more with `sync`,
# since our output is fsynced), in the same run.
# Needs ~30 GB free disk under target/. COLD=1 (root) empties the page cache
# before each row, so every row reads its 13 GB from disk.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
[ -f "$cache/synth-7b-lora/adapter_model.safetensors" ] || "$py" scripts/make_synth_adapter.py "$synth" "$cache/synth-7b-lora" >/dev/null

cold() { sync; if [ "${COLD:-0}" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }

echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
rm -rf "$cache/m7b" "$cache/cp7b"
cold
/usr/bin/time -v "$bin" lora merge --base "$synth" --adapter "$cache/synth-7b-lora" --out "$cache/m7b" --json >/dev/null 2>"$cache/t-merge.txt"
row "llmtool lora merge, synthetic 7B bf16 + r16 all-linear" "$cache/t-merge.txt" "llmtool lora merge --base CACHE/synth-7b --adapter CACHE/synth-7b-lora --out CACHE/m7b"
rm -rf "$cache/m7b"
cold
/usr/bin/time -v cp -r "$synth" "$cache/cp7b" 2>"$cache/t-cp.txt"
row "anchor: cp -r of the same 13 GB" "$cache/t-cp.txt" "cp -r CACHE/synth-7b CACHE/cp7b"
rm -rf "$cache/cp7b"
cold
# Our output is fsynced before the rename; this anchor is the same durability.
/usr/bin/time -v sh -c 'cp -r "$1" "$2" && sync' sh "$synth" "$cache/cp7b" 2>"$cache/t-cp.txt"
row "anchor: cp -r, then sync" "$cache/t-cp.txt" "sh -c 'cp -r CACHE/synth-7b CACHE/cp7b && sync'"
rm -rf "$cache/cp7b"
