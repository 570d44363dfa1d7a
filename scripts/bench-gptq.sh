#!/usr/bin/env bash
# `quantize gptq` against llm-compressor on SmolLM2-135M (docs/PERFORMANCE.md,
# "GPTQ"): wall time and peak RSS of the same calibration (32 × 512 ids,
# group 64, one capture per layer as llm-compressor does), then perplexity
# of every variant on the same text with the same harness (`eval ppl`,
# ctx 512, first CHUNKS chunks of the Debian license texts).
#
#   scripts/bench-gptq.sh SMOL_HF CALIB_IDS.json [REF_DIR] [CHUNKS]
#
# SMOL_HF: SmolLM2 in HF float32 form (`llmtool convert` of the PyPI GGUF);
# CALIB_IDS.json: {"ids": [[…]]} (tests/oracle/gptq_model_goldens.py ids);
# REF_DIR: where llm-compressor's outputs are (smollm2-rtn-g64,
# smollm2-gptq-g64-none, smollm2-gptq-g64-weight, made and timed by
# tests/oracle/gptq_model_goldens.py reference, see fixtures/README.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hf="$(realpath "$1")"; ids="$(realpath "$2")"; ref="${3:-}"; chunks="${4:-12}"
out="${BENCH_OUT:-$root/target/bench-gptq}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cargo build --release --quiet --bin llmtool
llmtool="$root/target/release/llmtool"
text="$out/licenses.txt"
[ -s "$text" ] || cat /usr/share/common-licenses/{GPL-3,Apache-2.0,LGPL-3,MPL-2.0,Artistic,GFDL-1.3} > "$text"
run() { # name, extra flags
  local name="$1"; shift
  rm -rf "${out:?}/$name"
  /usr/bin/time -v "$llmtool" quantize gptq "$hf" --out "$out/$name" --group-size 64 \
    --calib "$ids" "$@" > "$out/$name.log" 2> "$out/$name.time"
  echo "$name: $(grep -E 'Elapsed' "$out/$name.time" | awk '{print $NF}') wall, $(grep -E 'Maximum resident' "$out/$name.time" | awk '{print $NF}') KB peak RSS"
}
# The references first, timed the same way, when their Python is given:
#   REF_PYTHON="env PYTHONPATH=T5DIR:DIR python"        llm-compressor's GPTQ
#   GPTQMODEL_PYTHON="env PYTHONPATH=GMDIR:T5DIR python" GPTQModel's (its defaults)
# (environments: tests/oracle/gptq_model_goldens.py, gptqmodel_goldens.py).
reference() { # name, script, args...
  local name="$1" script="$2"; shift 2
  rm -rf "${out:?}/$name"
  # From $out: GPTQModel writes its logs/ into the working directory.
  (cd "$out" && /usr/bin/time -v -o "$out/$name.time" $python "$root/tests/oracle/$script" "$@" \
    > "$out/$name.log" 2>&1)
  echo "$name: $(grep -E 'Elapsed' "$out/$name.time" | awk '{print $NF}') wall, $(grep -E 'Maximum resident' "$out/$name.time" | awk '{print $NF}') KB peak RSS"
}
if [ -n "${REF_PYTHON:-}" ]; then
  python="$REF_PYTHON" reference ref-gptq gptq_model_goldens.py reference "$hf" "$ids" "$out/ref-gptq" --group 64
fi
if [ -n "${GPTQMODEL_PYTHON:-}" ]; then
  python="$GPTQMODEL_PYTHON" reference ref-gptqmodel gptqmodel_goldens.py run "$hf" "$ids" "$out/ref-gptqmodel"
fi
# Like for like with llm-compressor (natural column order, scales from the
# original weights):
run gptq-g64 --no-true-sequential --static-groups --no-group-aware
run gptq-g64-act --no-true-sequential --desc-act
run gptq-g64-ts --static-groups --no-group-aware
# llmtool's default (GPTQModel's): group-aware order, scales from the
# updated weights.
run gptq-g64-dyn
ppl() { # label, model
  printf '%s: ' "$1"
  "$llmtool" eval ppl "$2" --tokenizer "$hf" --text "$text" --ctx 512 --chunks "$chunks" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ppl"], "±", r.get("ppl_error"))'
}
ppl "f32" "$hf"
[ -n "$ref" ] && ppl "llm-compressor RTN g64" "$ref/smollm2-rtn-g64"
ppl "llmtool GPTQ g64" "$out/gptq-g64"
ppl "llmtool GPTQ g64 act-order" "$out/gptq-g64-act"
ppl "llmtool GPTQ g64 true-sequential" "$out/gptq-g64-ts"
ppl "llmtool GPTQ g64 (default: true-sequential, group-aware order, scales from the updated weights)" "$out/gptq-g64-dyn"
if [ -n "$ref" ]; then
  ppl "llm-compressor GPTQ g64" "$ref/smollm2-gptq-g64-none"
  ppl "llm-compressor GPTQ g64 act-order" "$ref/smollm2-gptq-g64-weight"
fi
