"""Benchmark input: SmolLM2-135M-Instruct as a Hugging Face bf16 directory,
made by transformers from the GGUF that scripts/smollm2.sh downloads
(transformers dequantizes the GGUF on import).

    python scripts/smollm2_hf.py "$(scripts/smollm2.sh)" OUT_DIR
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM

gguf, out = sys.argv[1], sys.argv[2]
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.bfloat16)
m.save_pretrained(out)
print(out)
