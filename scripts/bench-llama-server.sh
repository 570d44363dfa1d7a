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

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  out="${1:-$cache/bench-llama-server}"
  build_llama_server
  make_model
  trap stop_server EXIT
  start_server
  if [ "${REFERENCE:-guidellm}" = aiperf ]; then run_reference_aiperf "$out"; else run_reference "$out"; fi
  capture_timings "$out"
fi
