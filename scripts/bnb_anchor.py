"""Benchmark anchor for `llmtool quantize nf4|int8`: what a user runs today,
transformers + bitsandbytes quantizing at load (on CPU here) then
save_pretrained.

    python scripts/bnb_anchor.py MODEL_DIR OUT_DIR nf4|int8
"""
import sys

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

src, out, fmt = sys.argv[1:4]
if fmt == "int8":
    q = BitsAndBytesConfig(load_in_8bit=True)
else:
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
m = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, dtype=torch.bfloat16, device_map="cpu")
m.save_pretrained(out)
