#!/usr/bin/env bash
# A real OpenAI-compatible server for `bench serve`: llama.cpp's llama-server
# on SmolLM2-135M Q4_K_M (made by llmtool), a reference load generator
# (GuideLLM) run against it, and llama-server's own per-request timings.
#
#   scripts/bench-llama-server.sh [OUTDIR]        (default: $cache/bench-llama-server)
#
# Or source it and call the steps (see the end of the file):
#   build_llama_server; make_model; start_server; run_reference OUTDIR;
#   capture_timings OUTDIR; stop_server
# (run_reference_aiperf OUTDIR is the other reference client.)
#
# Environment:
#   LLAMA_CPP   a llama.cpp tree whose build/ is configured (libllama built):
#               llama-server and llama-bench are built there; otherwise
#               tests/oracle/build_llama_cpp.sh builds the pinned tree.
#   LLMTOOL_BIN an llmtool binary (default: `cargo build --release`).
#   PORT        llama-server's port (default 8089).
#   REFERENCE   guidellm (default) or aiperf.
#   REQUESTS, CONCURRENCY, PROMPT_TOKENS, OUTPUT_TOKENS   the reference run
#               (default 16 requests, 4 streams, 128 and 64 tokens).
#
# llama-server reports its own timings (prompt_ms, prompt_per_token_ms,
# predicted_ms, predicted_per_token_ms, cache_n, …) in a `timings` object:
# in a streamed chat, on the last chunk before `data: [DONE]` (the
# `"choices":[]` usage chunk with include_usage, else the finish chunk with
# an empty delta); in a streamed completion, on the finish chunk (text "",
# which also carries the usage, include_usage or not); top level in an
# answer that is not streamed. capture_timings saves one of each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LLMTOOL_CACHE:-$root/target/llmtool-cache}"
port="${PORT:-8089}"
url="http://127.0.0.1:$port"
guidellm_version=0.8.1
aiperf_version=0.13.0

# Sets $llama_bin: the directory with llama-server and llama-bench. The build
# competes with everything else for the CPUs, so it runs niced.
build_llama_server() {
  if [ -n "${LLAMA_CPP:-}" ]; then
    nice -n 10 cmake --build "$LLAMA_CPP/build" --target llama-server llama-bench -j2 >&2
    llama_bin="$LLAMA_CPP/build/bin"
  else
    llama_bin="$("$root/tests/oracle/build_llama_cpp.sh")/build/bin"
  fi
}

# Sets $model (the Q4_K_M GGUF) and $hf (its HF form, also the tokenizer the
# reference client counts tokens with), made once by llmtool as in the README.
make_model() {
  local bin="${LLMTOOL_BIN:-}"
  if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --quiet --bin llmtool)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/llmtool"
  fi
  local gguf
  gguf="$("$root/scripts/smollm2.sh")"
  hf="$cache/smollm2-hf-llmtool"
  model="$cache/smollm2-Q4_K_M.gguf"
  [ -f "$hf/model.safetensors" ] || "$bin" convert "$gguf" --out "$hf" --dtype bf16 --json >/dev/null
  [ -s "$model" ] || "$bin" quantize q4_k_m "$hf" --out "$model" --tokenizer-from "$gguf" --json >/dev/null
}

# Starts llama-server (4 slots, 2048 context) and waits for /health.
start_server() {
  local log="$cache/llama-server.log"
  "$llama_bin/llama-server" -m "$model" --host 127.0.0.1 --port "$port" -c 2048 -np 4 >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 240); do
    if curl -fsS "$url/health" >/dev/null 2>&1; then
      echo "llama-server up at $url (pid $server_pid)" >&2
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "llama-server exited" >&2; return 1; }
    sleep 0.5
  done
  echo "llama-server not healthy after 120 s; log: $log" >&2
  return 1
}

stop_server() {
  if [ -n "${server_pid:-}" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}

# GuideLLM (pinned; a venv made once, about 9 minutes and 5.9 GB: it brings
# torch and transformers) against the running server: concurrent streams,
# synthetic prompts tokenized with the model's own tokenizer. Writes
# OUTDIR/guidellm.json (and its console log).
run_reference() {
  local out="$1" py
  py="$(reference_venv guidellm "$guidellm_version")"
  mkdir -p "$out"
  # `python -m`: a console script's #! line names the venv's temporary path.
  HF_HUB_OFFLINE=1 "$py" -m guidellm run \
    --backend "kind=openai_http,target=$url,model=$model,request_format=/v1/chat/completions" \
    --profile "kind=concurrent,streams=${CONCURRENCY:-4}" \
    --constraint "kind=max_requests,count=${REQUESTS:-16}" \
    --data "kind=synthetic_text,prompt_tokens=${PROMPT_TOKENS:-128},output_tokens=${OUTPUT_TOKENS:-64}" \
    --tokenizer "kind=hf_auto,model=$hf" \
    --output "kind=json,path=$out/guidellm.json" \
    --disable-console-interactive >"$out/guidellm.log" 2>&1
  echo "guidellm: $out/guidellm.json" >&2
}

# A pinned venv under the cache with PACKAGE==VERSION, made once; prints its python.
reference_venv() {
  local venv="$cache/venv-$1"
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv.tmp"
    python3 -m venv "$venv.tmp"
    "$venv.tmp/bin/pip" install --quiet --disable-pip-version-check "$1==$2" >&2
    mv "$venv.tmp" "$venv"
  fi
  echo "$venv/bin/python"
}

# AIPerf (pinned; about 3 minutes and 1.2 GB to install, no torch) with the
# same load as run_reference. It starts a dozen worker processes, so on two
# cores it slows the server it measures. Writes
# OUTDIR/aiperf/profile_export_aiperf.json (and .csv, per-request .jsonl).
# Not under HF_HUB_OFFLINE: aiperf 0.13.0 then takes a local tokenizer path
# for a Hub id and fails; a local path makes no Hub call either way.
run_reference_aiperf() {
  local out="$1" py
  py="$(reference_venv aiperf "$aiperf_version")"
  mkdir -p "$out"
  "$py" -m aiperf profile --model "$model" --url "$url" --endpoint-type chat --streaming \
    --concurrency "${CONCURRENCY:-4}" --request-count "${REQUESTS:-16}" \
    --isl "${PROMPT_TOKENS:-128}" --osl "${OUTPUT_TOKENS:-64}" --tokenizer "$hf" \
    --artifact-dir "$out/aiperf" --ui none >"$out/aiperf.log" 2>&1
  echo "aiperf: $out/aiperf/profile_export_aiperf.json" >&2
}

# llama-server's own per-request timings: a streamed chat (include_usage), a
# streamed completion and a chat not streamed, saved raw to OUTDIR.
capture_timings() {
  local out="$1"
  mkdir -p "$out"
  local chat='"messages":[{"role":"user","content":"Name three colors."}],"max_tokens":16'
  curl -fsSN "$url/v1/chat/completions" \
    -d "{$chat,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$out/llama-server-chat-stream.txt"
  curl -fsSN "$url/v1/completions" \
    -d '{"prompt":"Once upon a time","max_tokens":16,"stream":true}' >"$out/llama-server-completion-stream.txt"
  curl -fsS "$url/v1/chat/completions" -d "{$chat}" >"$out/llama-server-chat.json"
  echo "llama-server timings: $out/llama-server-*" >&2
}

# llmtool bench serve against the running server: a sequential run checked
# request by request against llama-server's own timings (check_llmtool),
# and the reference client's load for the side-by-side table.
run_llmtool() {
  local out="$1" bin="${LLMTOOL_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/llmtool}"
  "$bin" bench serve --url "$url" --model "$model" --concurrency 1 --num-prompts "${REQUESTS:-16}" \
    --input-len "${PROMPT_TOKENS:-128}" --output-len "${OUTPUT_TOKENS:-64}" --ignore-eos \
    --tokenizer "$hf" --save "$out/llmtool-c1" >"$out/llmtool-c1.txt"
  "$bin" bench serve --url "$url" --model "$model" --concurrency "${CONCURRENCY:-4}" \
    --num-prompts "${REQUESTS:-16}" --input-len "${PROMPT_TOKENS:-128}" \
    --output-len "${OUTPUT_TOKENS:-64}" --ignore-eos --tokenizer "$hf" --seed 1 \
    --save "$out/llmtool" >"$out/llmtool.txt"
  echo "llmtool: $out/llmtool-c1/result.json, $out/llmtool/result.json" >&2
}

# Per request of the sequential run: every request completed, our output
# count equals the server's predicted_n, our TTFT is not below the server's
# prompt_ms (and by how much it exceeds it), our TPOT is within 10 % of
# predicted_per_token_ms. Prints the figures; exits non-zero on a miss.
check_llmtool() {
  python3 - "$1/llmtool-c1/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["failed"] == 0 and r["completed"] == r["num_prompts"], (r["failed"], r["errors"])
gaps, tpot_err = [], []
for i, t in enumerate(r["llmtool"]["server_timings"]):
    assert t, f"request {i}: no timings from llama-server"
    assert r["output_lens"][i] == t["predicted_n"], (i, r["output_lens"][i], t["predicted_n"])
    ttft_ms = r["ttfts"][i] * 1000
    assert ttft_ms >= t["prompt_ms"], (i, ttft_ms, t["prompt_ms"])
    gaps.append(ttft_ms - t["prompt_ms"])
    n = r["output_lens"][i]
    tpot = (r["latencies"][i] - r["ttfts"][i]) / (n - 1) * 1000
    tpot_err.append(abs(tpot / t["predicted_per_token_ms"] - 1) * 100)
    assert tpot_err[-1] <= 10, (i, tpot, t["predicted_per_token_ms"])
print(json.dumps({
    "requests": len(gaps),
    "ttft_minus_prompt_ms": {"min": min(gaps), "mean": sum(gaps) / len(gaps), "max": max(gaps)},
    "tpot_vs_predicted_per_token_pct": {"mean": sum(tpot_err) / len(tpot_err), "max": max(tpot_err)},
}, indent=1))
PY
}

# llmtool and GuideLLM, same server, same load, side by side (markdown).
side_by_side() {
  python3 - "$1/llmtool/result.json" "$1/guidellm.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
g = json.load(open(sys.argv[2]))["benchmarks"][0]["metrics"]
def gm(key, stat="mean"):
    s = g[key]["successful"]
    return s["percentiles"][stat] if stat.startswith("p") else s[stat]
rows = [
    ("requests completed", ours["completed"], g["request_totals"]["successful"]),
    ("output tokens", ours["total_output_tokens"], gm("output_token_count", "total_sum")),
    ("mean TTFT (ms)", ours["mean_ttft_ms"], gm("time_to_first_token_ms")),
    ("median TTFT (ms)", ours["median_ttft_ms"], gm("time_to_first_token_ms", "median")),
    ("p95 TTFT (ms)", ours["p95_ttft_ms"], gm("time_to_first_token_ms", "p95")),
    ("mean ITL (ms)", ours["mean_itl_ms"], gm("inter_token_latency_ms")),
    ("mean TPOT (ms)", ours["mean_tpot_ms"], gm("time_per_output_token_ms")),
    ("mean E2E (ms)", ours["mean_e2el_ms"], gm("request_latency") * 1000),
]
print("| metric | llmtool bench serve | GuideLLM |\n|---|---|---|")
for name, a, b in rows:
    print(f"| {name} | {a:.2f} | {b:.2f} |" if isinstance(a, float) else f"| {name} | {a} | {b} |")
PY
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  out="${1:-$cache/bench-llama-server}"
  build_llama_server
  make_model
  trap stop_server EXIT
  start_server
  if [ "${REFERENCE:-guidellm}" = aiperf ]; then run_reference_aiperf "$out"; else run_reference "$out"; fi
  run_llmtool "$out"
  check_llmtool "$out"
  python3 "$root/tests/oracle/raw_ttft.py" "$port"
  [ "${REFERENCE:-guidellm}" = aiperf ] || side_by_side "$out"
  capture_timings "$out"
fi
