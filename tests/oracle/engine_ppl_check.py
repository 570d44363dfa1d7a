"""transformers' float32 perplexity of a GGUF by llama-perplexity's method.

    python tests/oracle/engine_ppl_check.py MODEL.gguf TOKENIZER_DIR TEXT [CTX]

Loads MODEL.gguf with transformers' own GGUF import (dequantized to float32),
tokenizes TEXT with TOKENIZER_DIR/tokenizer.json without special tokens (the
SmolLM2 GGUFs have add_bos_token = false) and scores it with
`engine_goldens.llama_perplexity`. The third column of the perplexity table
in docs/PERFORMANCE.md: what exact f32 arithmetic gives on the same weights.
"""
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_goldens import llama_perplexity  # noqa: E402

gguf, tok_dir, text = sys.argv[1:4]
ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
d, f = os.path.split(os.path.abspath(gguf))
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
with open(text) as fh:
    ids = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json")).encode(fh.read(), add_special_tokens=False).ids
print(f, ctx, llama_perplexity(model, ids, ctx, None))
