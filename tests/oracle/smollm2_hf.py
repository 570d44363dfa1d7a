"""Makes the Hugging Face form of the real small model with transformers itself.

    python tests/oracle/smollm2_hf.py GGUF OUT_DIR [--dtype bfloat16|float32]

transformers' GGUF import (`from_pretrained(..., gguf_file=...)`) dequantizes
SmolLM2-135M-Instruct.Q4_1.gguf, undoes llama.cpp's Q/K permutation and builds
the tokenizer; `save_pretrained` then writes the directory every HF-side
benchmark and oracle starts from. This is the "converted to HF bf16 with
transformers" model of shared/docs/README.md's reference figures.
"""
import argparse
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    a = ap.parse_args()
    d, f = os.path.split(os.path.abspath(a.gguf))
    dtype = getattr(torch, a.dtype)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
