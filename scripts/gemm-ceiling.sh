#!/usr/bin/env bash
# f32 GEMM throughput on this machine: the engine's matmul and torch's mm on
# SmolLM2's projection shapes, same threads (docs/PERFORMANCE.md, "The
# arithmetic floor"). REF_PYTHON: a Python with torch (the oracle venv of
# tests/oracle/requirements.txt); without it only llmtool's row is printed.
#
#   REF_PYTHON=… scripts/gemm-ceiling.sh [TOKENS] [THREADS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tokens="${1:-4096}"; threads="${2:-$(nproc)}"
cd "$root"
RAYON_NUM_THREADS="$threads" cargo run --release --quiet --example gemm_throughput -- "$tokens"
[ -n "${REF_PYTHON:-}" ] || exit 0
$REF_PYTHON - "$tokens" "$threads" <<'PY'
import sys, time, torch
n, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
print(f"torch {torch.__version__} mm, {threads} threads")
for cols, rows in [(576, 576), (576, 1536), (1536, 576), (576, 960)]:
    x, w = torch.randn(n, cols), torch.randn(rows, cols)
    x @ w.T
    start = time.perf_counter()
    for _ in range(10):
        x @ w.T
    secs = (time.perf_counter() - start) / 10
    print(f"{n} x {cols} -> {rows}   {2 * n * cols * rows / secs / 1e9:>10.1f}")
PY
