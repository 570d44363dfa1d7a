"""Goldens for llmtool's inference engine, computed by transformers in float32.

    python tests/oracle/engine_goldens.py [SMOLLM2_GGUF]   # env: tests/oracle/requirements.txt

For every fixture model (fixtures/models/tiny-llama, tiny-qwen2, tiny-llama-hd,
fixtures/lora/bases/micro-llama, micro-qwen2) and for tiny-llama's weights
under two RoPE-scaling configs (llama3 and linear, configs written beside the
goldens), writes fixtures/engine/<case>.json:

  input_ids        a fixed prompt
  rows             {position: logits} for a few positions of one forward pass
                   over the prompt (the last one included)
  greedy           32 tokens chosen by argmax, one forward step at a time
                   with transformers' KV cache (no EOS stopping)
  margins          top-1 minus top-2 logit at every greedy step, so a test
                   failure can be told apart from a near tie

Models stored in bf16/f16 are loaded with torch_dtype=float32: the engine
computes in f32 over the stored values, and so does transformers then.

fixtures/engine/ppl-tiny-llama.json: tiny-llama's perplexity over 70 fixed
token ids with ctx 16 (4 chunks), with BOS (id 1) and without, computed in
torch by llama-perplexity's method (see `llama_perplexity`).

With SMOLLM2_GGUF (scripts/smollm2.sh prints it), also writes
fixtures/engine/smollm2.json (prompt text, its token ids from the tokenizer
transformers builds from the GGUF, greedy tokens, margins) and
fixtures/engine/smollm2-last.f32 (the last-position logits, little-endian
float32), with the model loaded by transformers' own GGUF import in float32.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "engine")
N_GREEDY = 32
PROMPT_IDS = [1, 5, 9, 42, 7, 3, 100, 20, 11, 64, 2, 33]
SMOL_PROMPT = "The capital of France is Paris. The capital of Germany is"

CASES = [
    ("tiny-llama", "fixtures/models/tiny-llama", None),
    ("tiny-qwen2", "fixtures/models/tiny-qwen2", None),
    ("tiny-llama-hd", "fixtures/models/tiny-llama-hd", None),
    ("micro-llama", "fixtures/lora/bases/micro-llama", None),
    ("micro-qwen2", "fixtures/lora/bases/micro-qwen2", None),
    # A small original context makes every frequency band of llama3 scaling
    # (kept, smoothed, divided by factor) occur with head_dim 64.
    (
        "tiny-llama-rope-llama3",
        "fixtures/models/tiny-llama",
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    ("tiny-llama-rope-linear", "fixtures/models/tiny-llama", {"rope_type": "linear", "factor": 4.0}),
]


def greedy(model, ids, n):
    out, margins = [], []
    with torch.no_grad():
        res = model(torch.tensor([ids]), use_cache=True)
        past = res.past_key_values
        logits = res.logits[0, -1]
        for _ in range(n):
            top = torch.topk(logits, 2)
            tok = int(top.indices[0])
            out.append(tok)
            margins.append(float(top.values[0] - top.values[1]))
            res = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[0, -1]
    return out, margins


def load(path, rope_scaling):
    if rope_scaling is None:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    config.rope_scaling = rope_scaling
    return AutoModelForCausalLM.from_pretrained(path, config=config, torch_dtype=torch.float32).eval()


def fixture_case(name, rel, rope_scaling):
    path = os.path.join(ROOT, rel)
    model = load(path, rope_scaling)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT_IDS])).logits[0]
    positions = [0, 5, len(PROMPT_IDS) - 1]
    g, margins = greedy(model, PROMPT_IDS, N_GREEDY)
    golden = {
        "model": rel,
        "rope_scaling": rope_scaling,
        "input_ids": PROMPT_IDS,
        "rows": {str(p): [float(x) for x in logits[p]] for p in positions},
        "greedy": g,
        "margins": margins,
    }
    if rope_scaling is not None:
        # The config the Rust test pairs with the fixture's weights.
        cdir = os.path.join(OUT, name)
        os.makedirs(cdir, exist_ok=True)
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        config["rope_scaling"] = rope_scaling
        with open(os.path.join(cdir, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(golden, f)
    print(name, "greedy", g[:8], "min margin", min(margins))


def llama_perplexity(model, tokens, ctx, bos):
    """llama-perplexity's method (tools/perplexity/perplexity.cpp), in torch:
    chunks of ctx tokens, first token replaced by BOS when given, second
    half scored, PPL = exp(mean NLL), error = PPL * sqrt(var / (n - 1))."""
    nlls = []
    first = ctx // 2
    for i in range(len(tokens) // ctx):
        chunk = list(tokens[i * ctx : (i + 1) * ctx])
        if bos is not None:
            chunk[0] = bos
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        for j in range(first, ctx - 1):
            nlls.append(-float(lp[j, chunk[j + 1]]))
    nll = np.array(nlls)
    mean = nll.mean()
    var = (nll**2).mean() - mean**2
    ppl = float(np.exp(mean))
    return {"ppl": ppl, "ppl_error": float(np.sqrt(var / (len(nll) - 1)) * ppl), "scored": len(nll)}


def ppl_case():
    """Perplexity of tiny-llama on a fixed token stream, with and without BOS."""
    model = load(os.path.join(ROOT, "fixtures/models/tiny-llama"), None)
    g = torch.Generator().manual_seed(7)
    tokens = [int(t) for t in torch.randint(2, 256, (70,), generator=g)]
    golden = {"model": "fixtures/models/tiny-llama", "tokens": tokens, "ctx": 16, "bos": 1}
    golden["with_bos"] = llama_perplexity(model, tokens, 16, 1)
    golden["without_bos"] = llama_perplexity(model, tokens, 16, None)
    with open(os.path.join(OUT, "ppl-tiny-llama.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print("ppl", golden["with_bos"], golden["without_bos"])


def smollm2(gguf):
    d, f = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    ids = tok(SMOL_PROMPT)["input_ids"]
    with torch.no_grad():
        last = model(torch.tensor([ids])).logits[0, -1]
    g, margins = greedy(model, ids, N_GREEDY)
    golden = {
        "model": os.path.basename(gguf),
        "prompt": SMOL_PROMPT,
        "input_ids": ids,
        "greedy": g,
        "greedy_text": tok.decode(g),
        "margins": margins,
    }
    with open(os.path.join(OUT, "smollm2.json"), "w") as fh:
        json.dump(golden, fh, indent=1)
    last.numpy().astype("<f4").tofile(os.path.join(OUT, "smollm2-last.f32"))
    print("smollm2", ids, repr(tok.decode(g)), "min margin", min(margins))


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    for case in CASES:
        fixture_case(*case)
    ppl_case()
    if len(sys.argv) > 1:
        smollm2(sys.argv[1])


if __name__ == "__main__":
    main()
