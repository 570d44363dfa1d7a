#!/usr/bin/env bash
# Benchmark for docs/PERFORMANCE.md ("push"): hashing and uploading a
# 2 GiB model folder (4 safetensors-named files of random bytes) to the
# test Hub (examples/hub_server.rs) on this machine, beside `sha256sum` of
# the same files in the same run. The page cache is warmed first so both
# read from memory; the server writes what it receives to disk under
# target/. Prints a markdown table with MB/s (MiB/s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${LLMTOOL_CACHE:-$root/target/llmtool-cache}"
mib="${SIZE_MIB:-2048}"
cargo build --release --quiet --bin llmtool --example hub_server
bin="$root/target/release/llmtool"
work="$cache/bench-push"
[ -n "${KEEP:-}" ] || rm -rf "$work"
mkdir -p "$work/model" "$work/hub" "$work/hub-py"
for i in 1 2 3 4; do
  head -c $((mib / 4 * 1024 * 1024)) /dev/urandom >"$work/model/model-0000$i-of-00004.safetensors"
done
echo '{"architectures":["LlamaForCausalLM"]}' >"$work/model/config.json"
echo '# bench' >"$work/model/README.md"
# Two fresh servers: one for llmtool, one for the anchor client (a server
# that already holds the objects would let the second client skip them).
"$root/target/release/examples/hub_server" --root "$work/hub" --token hf_bench >"$work/endpoint" 2>/dev/null &
server=$!
"$root/target/release/examples/hub_server" --root "$work/hub-py" --token hf_bench >"$work/endpoint-py" 2>/dev/null &
server_py=$!
trap 'kill $server $server_py 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$work/endpoint" ] && [ -s "$work/endpoint-py" ] && break; sleep 0.1; done
endpoint="$(head -1 "$work/endpoint")"
endpoint_py="$(head -1 "$work/endpoint-py")"
cat "$work"/model/* >/dev/null

speed() { # time file → "m:ss (N MiB/s)"
  awk -F': ' -v mib="$mib" '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%s (%.0f MiB/s)", $2, mib/s}' "$1"
}
rss() { awk -F': ' '/Maximum resident set size/{printf "%.1f MB", $2/1024}' "$1"; }
cpu() { awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.1f s", u+s}' "$1"; }

/usr/bin/time -v sha256sum "$work"/model/*.safetensors >/dev/null 2>"$work/t-sha"
HF_ENDPOINT="$endpoint" HF_TOKEN=hf_bench /usr/bin/time -v "$bin" push "$work/model" --repo bench/model \
  >/dev/null 2>"$work/t-push"
HF_ENDPOINT="$endpoint" HF_TOKEN=hf_bench /usr/bin/time -v "$bin" push "$work/model" --repo bench/model \
  >/dev/null 2>"$work/t-rerun"
# The client users would otherwise run: huggingface_hub's upload_folder
# (pinned venv of tests/oracle/requirements-hub.txt, Xet off), same server.
hubpy="${LLMTOOL_HUB_PYTHON:-$cache/venv-hub/bin/python}"
if [ ! -x "$hubpy" ]; then
  python3 -m venv "$cache/venv-hub"
  "$cache/venv-hub/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/oracle/requirements-hub.txt
  hubpy="$cache/venv-hub/bin/python"
fi
HF_HUB_DISABLE_XET=1 /usr/bin/time -v "$hubpy" tests/oracle/hub_client.py upload --endpoint "$endpoint_py" \
  --token hf_bench --folder "$work/model" --repo bench/by-python >/dev/null 2>"$work/t-py"
echo "| what | wall (throughput) | CPU of the process (user+sys) | peak RSS |"
echo "|---|---|---|---|"
echo "| anchor: \`sha256sum\` of the 4 files (one core) | $(speed "$work/t-sha") | $(cpu "$work/t-sha") | $(rss "$work/t-sha") |"
echo "| \`llmtool push\` ${mib} MiB to the local test Hub (hash + upload + commit) | $(speed "$work/t-push") | $(cpu "$work/t-push") | $(rss "$work/t-push") |"
echo "| anchor: huggingface_hub 0.36.2 \`upload_folder\`, same folder, its own fresh server | $(speed "$work/t-py") | $(cpu "$work/t-py") | $(rss "$work/t-py") |"
echo "| the same push again (hash only, nothing uploaded, no commit) | $(speed "$work/t-rerun") | $(cpu "$work/t-rerun") | $(rss "$work/t-rerun") |"
[ -n "${KEEP:-}" ] || rm -rf "$work"
