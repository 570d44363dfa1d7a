#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md ("bench serve: client overhead"): how
# many streamed chunks per second `llmtool bench serve` reads, and its TTFT
# error, against the fake OpenAI server (examples/openai_server.rs) that
# streams one token per SSE chunk as fast as it can, on this machine; beside
# the official `openai` Python client reading the same streams in the same
# run (tests/oracle/openai_client.py stream-bench). Prints a markdown table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${LLMTOOL_CACHE:-$root/target/llmtool-cache}"
tokens="${TOKENS:-20000}"
requests="${REQUESTS:-10}"
ttft_ms="${TTFT_MS:-50}"
cargo build --release --quiet --bin llmtool --example openai_server
bin="$root/target/release/llmtool"
work="$cache/bench-client"
rm -rf "$work" && mkdir -p "$work"
for i in $(seq "$requests"); do echo "{\"prompt\": \"request $i\"}"; done >"$work/prompts.jsonl"
# taskset pins each side to its own core: the client's figure is one core's.
taskset -c 1 "$root/target/release/examples/openai_server" --ttft-ms "$ttft_ms" --tokens "$tokens" \
  >"$work/url" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
url="$(head -1 "$work/url")"

taskset -c 0 /usr/bin/time -v "$bin" bench serve --url "$url" --concurrency 1 --num-prompts "$requests" \
  --dataset jsonl --dataset-path "$work/prompts.jsonl" --output-len "$tokens" --ignore-eos --json \
  >"$work/ours.json" 2>"$work/t-ours"
read -r chunks dur ttft <<<"$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
chunks = sum(len(i) + 1 for i, e in zip(r["itls"], r["errors"]) if not e)
busy = sum(l for l, e in zip(r["latencies"], r["errors"]) if not e)
print(chunks, busy, r["mean_ttft_ms"])' "$work/ours.json")"
cpu() { awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.2f", u+s}' "$1"; }

hubpy="${LLMTOOL_BENCH_PYTHON:-$cache/venv-bench/bin/python}"
py_row="| anchor: \`openai\` Python client, same streams | (venv missing: $hubpy) | | |"
if [ -x "$hubpy" ]; then
  taskset -c 0 /usr/bin/time -v "$hubpy" tests/oracle/openai_client.py stream-bench --url "$url" \
    --requests "$requests" --max-tokens "$tokens" >"$work/py.json" 2>"$work/t-py"
  py_row="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("| anchor: `openai` %s Python client, same streams (one core) | %.0f | %.2f | %s |" % (
    r.get("openai_version", "?"), r["chunks"] / r["seconds"], r["mean_ttft_ms"] - float(sys.argv[2]), sys.argv[3]))
' "$work/py.json" "$ttft_ms" "$(cpu "$work/t-py") s")"
fi
echo "| client | chunks/s while streaming | mean TTFT − server's ${ttft_ms} ms delay (ms) | CPU (user+sys) |"
echo "|---|---|---|---|"
python3 -c '
import sys
chunks, busy, ttft, delay, cpu = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
print("| `llmtool bench serve`, %d × %d-token streams (one core) | %.0f | %.2f | %s s |" % (int(sys.argv[6]), int(sys.argv[7]), chunks / busy, ttft - delay, cpu))
' "$chunks" "$dur" "$ttft" "$ttft_ms" "$(cpu "$work/t-ours")" "$requests" "$tokens"
echo "$py_row"
