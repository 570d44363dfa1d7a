#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md: inspect-arch peak RSS and wall time on
# the real SmolLM2 GGUF and on a synthetic 7B-shaped bf16 model (13 GB,
# written once by our own writer), each next to the tool a user would
# otherwise reach for, measured in the same run:
#   GGUF:        gguf-py's gguf-dump (gguf==0.19.0)
#   safetensors: Python safetensors.safe_open listing names/dtypes/shapes
# Prints a markdown table. Needs ~14 GB free disk under target/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"
smol="$(scripts/smollm2.sh)"

measure() { # label, command...
  local label="$1"; shift
  # Warm the page cache so both tools are measured on the same footing.
  "$@" >/dev/null 2>&1 || true
  /usr/bin/time -v "$@" >/dev/null 2>"$cache/time.txt"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$cache/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/{printf "%.1f MB", $2/1024}' "$cache/time.txt")
  printf '| %s | `%s` | %s | %s |\n' "$label" "$(echo "$*" | sed "s|$root/||g; s|$cache|CACHE|g")" "$wall" "$rss"
}

echo "| what | command | wall (m:ss) | peak RSS |"
echo "|---|---|---|---|"
measure "llmtool, SmolLM2 Q4_1 GGUF (94 MB)" "$bin" inspect-arch "$smol" --json --tensors
measure "anchor: gguf-dump, same file" "$venv/bin/gguf-dump" --json "$smol"
measure "llmtool, synthetic 7B bf16 (13 GB, 3 shards)" "$bin" inspect-arch "$synth" --json --tensors
measure "anchor: safetensors.safe_open, same shards" "$py" "$root/scripts/list_safetensors.py" "$synth"
