# Sourced by the bench scripts: paths, the release build, the synthetic 7B
# model (written once by our own writer) and a small Python venv for anchors.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${LLMTOOL_CACHE:-$root/target/llmtool-cache}"
cargo build --release --quiet --bin llmtool --example synth_model
bin="$root/target/release/llmtool"
# SYNTH_SIZE (7b, 1b) picks the synthetic model; 7b by default.
synth_size="${SYNTH_SIZE:-7b}"
synth="$cache/synth-$synth_size"
[ -f "$synth/config.json" ] || "$root/target/release/examples/synth_model" "$synth" "$synth_size" >/dev/null
venv="$cache/venv-bench"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/oracle/requirements-gguf.txt safetensors==0.6.2
fi
py="$venv/bin/python"

# One markdown table row from a `/usr/bin/time -v` report: label, time file, command text.
row() { # label, time file, command text
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$2")
  rss=$(awk -F': ' '/Maximum resident set size/{printf "%.1f MB", $2/1024}' "$2")
  printf '| %s | `%s` | %s | %s |\n' "$1" "$3" "$wall" "$rss"
}
