#!/usr/bin/env bash
# Every calibrated 4-bit method llmtool makes, measured the way `quantize`
# measures for the model card (docs/PERFORMANCE.md, "held-out windows"):
# the same 16 × 256 calibration windows of the bundled corpus for each row,
# and the same 32 further windows of it, which no row calibrates on, to
# compare each checkpoint with the f32 base (perplexity of both on the
# second half of each window, mean KL divergence, top-1 agreement), plus
# wall time and peak RSS of the whole command.
#
#   scripts/bench-held-out.sh SMOL_HF [GROUP]
#   REF_PYTHON="env PYTHONPATH=T5DIR:DIR VENV/bin/python" scripts/bench-held-out.sh SMOL_HF
#
# SMOL_HF: SmolLM2 in HF float32 form (`llmtool convert` of the PyPI GGUF).
# With REF_PYTHON (the oracle environment of fixtures/README.md), the
# reference's rows follow: llm-compressor's RTN, GPTQ (natural order and
# act-order) and AWQ, calibrated on the same windows (the first row saves
# them with --save-windows) and measured by `eval kld --ids` on the same
# held-out windows; their wall time is the reference script's whole run,
# which does not include the measurement.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hf="$1"; group="${2:-64}"
out="${BENCH_OUT:-$root/target/bench-held-out}"
mkdir -p "$out"
cargo build --release --quiet --bin llmtool
llmtool="$root/target/release/llmtool"
windows="$out/windows.json"
line() { # label, report JSON with ppl_base/ppl_other/kld_mean/top1_agreement, time file
  python3 - "$@" <<'PY'
import json, sys
label, report, timing = sys.argv[1:]
r = json.load(open(report))
h = r.get("held_out", r)
wall, rss = open(timing).read().split()
print(f"| {label} | {h['ppl_base']:.3f} | {h['ppl_other']:.3f} "
      f"({(h['ppl_other'] / h['ppl_base'] - 1) * 100:+.1f} %) | {h['kld_mean']:.4f} "
      f"| {h['top1_agreement'] * 100:.1f} % | {float(wall):.0f} s | {int(rss) // 1024} MiB |")
PY
}
row() { # name, method, flags...
  local name="$1" method="$2"; shift 2
  rm -rf "${out:?}/$name"
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$llmtool" quantize "$method" "$hf" \
    --out "$out/$name" --group-size "$group" --calib-samples 16 --calib-seqlen 256 \
    --held-out-samples 32 --json "$@" > "$out/$name.json"
  line "$method $*" "$out/$name.json" "$out/$name.time"
}
echo "| method | base PPL | PPL | KLD | top-1 | wall | peak RSS |"
echo "|---|---|---|---|---|---|---|"
row rtn gptq --rtn --save-windows "$windows"
row gptq gptq
row gptq-plain gptq --no-group-aware
row gptq-static gptq --no-group-aware --static-groups
row gptq-act gptq --desc-act
row gptq-damp05 gptq --damp 0.05
row awq awq
[ -n "${REF_PYTHON:-}" ] || exit 0
reference() { # name, label, script, args...
  local name="$1" label="$2" script="$3"; shift 3
  rm -rf "${out:?}/$name"
  /usr/bin/time -f '%e %M' -o "$out/$name.time" $REF_PYTHON "$root/tests/oracle/$script" \
    reference "$hf" "$windows" "$out/$name" --group "$group" "$@" > "$out/$name.log" 2>&1
  "$llmtool" eval kld "$hf" "$out/$name" --ids "$windows" --json > "$out/$name.json"
  line "$label" "$out/$name.json" "$out/$name.time"
}
reference ref-rtn "llm-compressor RTN" gptq_model_goldens.py --method rtn
reference ref-gptq "llm-compressor GPTQ" gptq_model_goldens.py --method gptq
reference ref-gptq-act "llm-compressor GPTQ act-order" gptq_model_goldens.py --method gptq --actorder weight
reference ref-awq "llm-compressor AWQ" awq_model_goldens.py
# llmtool with the reference's choices (one capture per layer, natural
# order or plain act-order, scales from the original weights): like for like.
row gptq-like gptq --no-true-sequential --no-group-aware --static-groups
row gptq-act-like gptq --no-true-sequential --desc-act
