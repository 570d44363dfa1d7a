#!/usr/bin/env bash
# `llmtool bench local` beside `llama-bench` on SmolLM2-135M-Instruct f16 and
# Q4_K_M, same settings, same run, one table (docs/PERFORMANCE.md).
#
#   scripts/bench-local.sh [THREADS] [REPS] [PP] [TG]   # default: 2 3 512 128
#
# Needs: llama-bench ($LLAMA_BIN, default /work/llama.cpp/build/bin; built by
# `cmake --build build --target llama-bench`) and python3 (for
# scripts/smollm2.sh and to join the two JSON outputs). Makes once, under
# target/llmtool-cache/smollm2/bench-local/, both GGUFs with llmtool itself
# from the PyPI Q4_1 GGUF: convert to f32 safetensors, then quantize f16 and
# q4_k_m (so both tools read the very same files).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${1:-2}"
reps="${2:-3}"
pp="${3:-512}"
tg="${4:-128}"
bin_dir="${LLAMA_BIN:-/work/llama.cpp/build/bin}"
dir="${LLMTOOL_CACHE:-$root/target/llmtool-cache}/smollm2/bench-local"
export LD_LIBRARY_PATH="$bin_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo build --release --quiet --bin llmtool
llmtool="${CARGO_TARGET_DIR:-$root/target}/release/llmtool"
mkdir -p "$dir"
hf="$dir/hf-f32"
f16="$dir/smollm2-f16.gguf"
q4="$dir/smollm2-Q4_K_M.gguf"
[ -d "$hf" ] || "$llmtool" convert "$(scripts/smollm2.sh)" --out "$hf" --dtype f32 >&2
[ -s "$f16" ] || "$llmtool" quantize f16 "$hf" --out "$f16" >&2
[ -s "$q4" ] || "$llmtool" quantize q4_k_m "$hf" --out "$q4" >&2

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for m in "$f16" "$q4"; do
  name="$(basename "$m" .gguf)"
  echo "== $name: llama-bench -p $pp -n $tg -r $reps -t $threads" >&2
  "$bin_dir/llama-bench" -m "$m" -p "$pp" -n "$tg" -r "$reps" -t "$threads" -o json \
    2>/dev/null > "$out/$name.llama.json"
  echo "== $name: llmtool bench local -p $pp -n $tg -r $reps --threads $threads" >&2
  "$llmtool" bench local "$m" -p "$pp" -n "$tg" -r "$reps" --threads "$threads" --json \
    > "$out/$name.llmtool.json"
done

python3 - "$out" "$(basename "$f16" .gguf)" "$(basename "$q4" .gguf)" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
print("| model | test | llama-bench t/s | llmtool t/s | llmtool / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
for name in names:
    ref = json.load(open(os.path.join(out, name + ".llama.json")))
    ours = json.load(open(os.path.join(out, name + ".llmtool.json")))
    for r in ref:
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        (o,) = [o for o in ours if o["test"] == test]
        print(f"| {name} | {test} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} "
              f"| {o['avg_ts']:.2f} ± {o['stddev_ts']:.2f} | {o['avg_ts'] / r['avg_ts']:.2f} |")
PY
