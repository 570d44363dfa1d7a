"""transformers as the judge of `llmtool convert` (GGUF → HF).

    cargo build --release && python tests/oracle/check_convert.py GGUF

Runs `target/release/llmtool convert GGUF` into a temporary directory, then
with transformers on CPU: loads it, compares every weight with transformers'
own GGUF import of the same file (`from_pretrained(..., gguf_file=...)`,
float32) and the logits on a fixed input; loads our tokenizer with
AutoTokenizer and compares its encodings of sample strings with the
tokenizer of the repo the GGUF came from (for SmolLM2's byte-level
vocabulary the Hub form, `tokenizer_goldens.gpt2_form`; `convert` writes
that rather than transformers' import, which llama.cpp's converter would
read back as SentencePiece). Writes the verdict, with the sha256 of the files we
wrote, to fixtures/convert/transformers-check.json; exit 1 on any failure.
Environment: tests/oracle/requirements.txt.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from filehash import sha256
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LLMTOOL_BIN", os.path.join(ROOT, "target", "release", "llmtool"))
OUT = os.path.join(ROOT, "fixtures", "convert", "transformers-check.json")
SAMPLES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and\ttabs\nnewlines\n\n",
    "Numbers 12345 and 3.14159, dates 2026-11-24.",
    "Unicode: café, naïve, Ærøskøbing, Привет, 你好, こんにちは",
    "Emoji 🙂🚀 and symbols ©®™ ∑∫",
    "def f(x):\n    return x ** 2  # code",
    "<|im_start|>user\nWhat is Spinoza's Ethics?<|im_end|>\n<|im_start|>assistant\n",
]
INPUT_IDS = [[1, 504, 3458, 282, 260, 2063, 30, 216, 40, 4000]]


def main(gguf):
    gdir, gfile = os.path.split(os.path.abspath(gguf))
    verdict = {"gguf": gfile, "transformers": transformers.__version__, "torch": torch.__version__}
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hf")
        subprocess.run([BIN, "convert", gguf, "--out", out, "--json"], check=True, stdout=subprocess.DEVNULL)
        verdict["files"] = {f: sha256(os.path.join(out, f)) for f in sorted(os.listdir(out))
                            if f != "README.md"}
        ours = AutoModelForCausalLM.from_pretrained(out).eval()
        ref = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.float32).eval()
        so, sr = ours.state_dict(), ref.state_dict()
        differing = [k for k in sr if k not in so or not torch.equal(so[k], sr[k])]
        verdict["weights_compared"] = len(sr)
        verdict["weights_differing"] = differing
        if differing:
            problems.append(f"{len(differing)} weights differ, e.g. {differing[:3]}")
        with torch.no_grad():
            ids = torch.tensor(INPUT_IDS)
            diff = float((ours(ids).logits - ref(ids).logits).abs().max())
        verdict["max_logit_diff"] = diff
        if diff != 0.0:
            problems.append(f"logits differ by {diff}")
        tok_ours = AutoTokenizer.from_pretrained(out)
        from tokenizer_goldens import hub_reference
        tok_ref = hub_reference(gguf)
        verdict["tokenizer_reference"] = "Hub form (tokenizer_goldens.gpt2_form)"
        enc = {}
        for s in SAMPLES:
            a, b = tok_ours(s)["input_ids"], tok_ref(s)["input_ids"]
            enc[s] = {"ids": b, "same": a == b}
            if a != b:
                problems.append(f"tokenizer: {s!r}: ours {a[:12]} vs {b[:12]}")
        verdict["encodings"] = enc
    verdict["ok"] = not problems
    verdict["problems"] = problems
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(verdict, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    for p in problems:
        print("FAIL", p)
    print("ok" if not problems else "failed", "->", OUT)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1])
