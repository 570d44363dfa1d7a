#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md ("llmtool run"): peak RSS and wall time
# of the demo recipe (SmolLM2-135M, 2 adapters × 3 formats = convert, 2
# merges, 6 quantizations, 6 evals, 6 VRAM plans, 6 cards) with jobs = 2,
# from scratch, then the rerun that finds every step up to date; the peak
# is compared with the recipe's memory_budget.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release --quiet --bin llmtool
bin="${CARGO_TARGET_DIR:-$root/target}/release/llmtool"
base="$(scripts/smollm2.sh)"
recipe=examples/demo/recipe.toml
out=target/demo-run
budget=$(awk -F'"' '/^memory_budget/{print $2}' "$recipe")
rm -rf "$out"
t="$(mktemp)"
trap 'rm -f "$t"' EXIT
echo "| run | command | wall (m:ss) | peak RSS | memory_budget |"
echo "|---|---|---|---|---|"
for label in "from scratch (27 steps)" "rerun"; do
  status=0
  /usr/bin/time -v "$bin" run "$recipe" --base "$base" --json >/dev/null 2>"$t" || status=$?
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$t")
  rss=$(awk -F': ' '/Maximum resident set size/{printf "%.1f MiB", $2/1024}' "$t")
  printf '| %s | `llmtool run %s` (exit %s) | %s | %s | %s |\n' "$label" "$recipe" "$status" "$wall" "$rss" "$budget"
done
