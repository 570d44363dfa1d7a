#!/usr/bin/env bash
# `quantize awq` against llm-compressor on SmolLM2-135M (docs/PERFORMANCE.md,
# "AWQ"), and every 4-bit format llmtool makes in one quality table: wall
# time and peak RSS of our AWQ on the given calibration ids, then file size,
# perplexity and KL divergence from f32 of each artifact on the same text
# with the same harness (`eval ppl` / `eval kld`, ctx 512).
#
#   scripts/bench-awq.sh SMOL_HF CALIB_IDS.json TEXT [REF_DIR] [CHUNKS]
#
# SMOL_HF: SmolLM2 in HF float32 form (`llmtool convert` of the PyPI GGUF);
# CALIB_IDS.json: {"ids": [[…]]}, fed to both tools; TEXT: the evaluation
# text; REF_DIR: llm-compressor's outputs on the same ids (awq-g64 from
# `tests/oracle/awq_model_goldens.py reference`, rtn-g64 from
# `tests/oracle/gptq_model_goldens.py reference --method rtn`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hf="$1"; ids="$2"; text="$3"; ref="${4:-}"; chunks="${5:-24}"
out="${BENCH_OUT:-$root/target/bench-awq}"
mkdir -p "$out"
cargo build --release --quiet --bin llmtool
llmtool="$root/target/release/llmtool"
samples=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["ids"]; print(len(d), len(d[0]))' "$ids")
read -r n seqlen <<< "$samples"
calib=(--calib "$ids" --calib-samples "$n" --calib-seqlen "$seqlen")
run() { # name, command...
  local name="$1"; shift
  rm -rf "${out:?}/$name"
  /usr/bin/time -v "$llmtool" "$@" --out "$out/$name" > "$out/$name.log" 2> "$out/$name.time"
  echo "$name: $(grep -E 'Elapsed' "$out/$name.time" | awk '{print $NF}') wall, $(grep -E 'Maximum resident' "$out/$name.time" | awk '{print $NF}') KB peak RSS"
}
run awq-g64 quantize awq "$hf" --group-size 64 "${calib[@]}"
run awq-g64-noclip quantize awq "$hf" --group-size 64 --no-clip --format compressed-tensors "${calib[@]}"
run gptq-g64 quantize gptq "$hf" --group-size 64 "${calib[@]}"
run nf4 quantize nf4 "$hf"
run q4_k_m.gguf quantize q4_k_m "$hf"
row() { # label, model
  local size ppl kld
  size=$(du -sbL "$2" | awk '{printf "%.1f MB", $1/1e6}')
  ppl=$("$llmtool" eval ppl "$2" --tokenizer "$hf" --text "$text" --ctx 512 --chunks "$chunks" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.3f ± %.3f" % (r["ppl"], r["ppl_error"]))')
  kld=$("$llmtool" eval kld "$hf" "$2" --text "$text" --ctx 512 --chunks "$chunks" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.4f ± %.4f" % (r["kld_mean"], r["kld_error"]))')
  echo "| $1 | $size | $ppl | $kld |"
}
echo "| model | size | PPL | KLD vs f32 |"
echo "|---|---|---|---|"
row "f32" "$hf"
[ -n "$ref" ] && row "RTN int4 g64 (llm-compressor)" "$ref/rtn-g64"
row "llmtool AWQ g64 (GEMM)" "$out/awq-g64"
row "llmtool AWQ g64 --no-clip" "$out/awq-g64-noclip"
[ -n "$ref" ] && row "llm-compressor AWQ g64" "$ref/awq-g64"
row "llmtool GPTQ g64 (default: group-aware order)" "$out/gptq-g64"
row "llmtool NF4 (bitsandbytes)" "$out/nf4"
row "llmtool Q4_K_M" "$out/q4_k_m.gguf"
