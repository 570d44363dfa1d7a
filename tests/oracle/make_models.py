"""Tiny random models made by transformers, the reference for llmtool's
store and arch detection. Deterministic (fixed seeds), CPU only.

    python tests/oracle/make_models.py      # env: tests/oracle/requirements.txt

Writes fixtures/models/<name>/ with save_pretrained(safe_serialization=True),
plus expected.json (architecture facts computed with torch, independently of
llmtool) and logits.json (last-position logits and greedy argmax for a fixed
input):
  tiny-llama          llama, every dim a multiple of 256, untied, float32
  tiny-qwen2          qwen2, attention biases, tied embeddings, bfloat16
  tiny-llama-hd       llama, head_dim 96 != hidden/heads 64, GQA 4:1, float16
  tiny-qwen2-sharded  tiny-qwen2 saved with a small max_shard_size (>= 3 shards)
"""
import json
import os
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "models")
INPUT_IDS = [[1, 5, 9, 42, 7, 3, 100, 200]]
DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def build(cls, config, dtype, seed):
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            # Perturb everything (norms and biases too) so no tensor is a constant.
            p.add_(torch.randn_like(p) * 0.02)
    return model.to(dtype)


def category(name):
    if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
        return "embeddings"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if "norm" in name:
        return "norms"
    return "other"


def expected(model, family, saved):
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q = saved["model.layers.0.self_attn.q_proj.weight"]
    assert q.shape[0] == c.num_attention_heads * head_dim, "config head_dim agrees with q_proj"
    params = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0, "other": 0}
    for n, t in saved.items():
        params[category(n)] += t.numel()
    assert params.pop("other") == 0
    params["total"] = sum(t.numel() for t in saved.values())
    assert params["total"] == model.num_parameters(), (params["total"], model.num_parameters())
    return {
        "family": family,
        "layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": head_dim,
        "ffn_size": c.intermediate_size,
        "vocab": c.vocab_size,
        "tied_embeddings": bool(c.tie_word_embeddings),
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in saved,
        "rope_theta": float(c.rope_theta),
        "rms_norm_eps": float(c.rms_norm_eps),
        "context_length": c.max_position_embeddings,
        "params": params,
        "tensors": {n: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape)} for n, t in saved.items()},
    }


def save(model, name, family, **kw):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True, **kw)
    from safetensors.torch import load_file

    saved = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            saved.update(load_file(os.path.join(d, f)))
    with open(os.path.join(d, "expected.json"), "w") as fh:
        json.dump(expected(model, family, saved), fh, indent=1)
        fh.write("\n")
    with torch.no_grad():
        logits = model(torch.tensor(INPUT_IDS)).logits.float()
    with open(os.path.join(d, "logits.json"), "w") as fh:
        json.dump({
            "input_ids": INPUT_IDS,
            "last_logits": logits[0, -1].tolist(),
            "argmax": logits[0].argmax(-1).tolist(),
        }, fh)
        fh.write("\n")
    print(name, sorted(os.listdir(d)))


def main():
    os.makedirs(OUT, exist_ok=True)
    llama_cfg = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=256, max_position_embeddings=2048, rope_theta=10000.0,
                     rms_norm_eps=1e-5, tie_word_embeddings=False)
    llama = build(LlamaForCausalLM, LlamaConfig(**llama_cfg), torch.float32, 1)
    save(llama, "tiny-llama", "llama")

    qwen = build(Qwen2ForCausalLM, Qwen2Config(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=384, max_position_embeddings=4096, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=True), torch.bfloat16, 2)
    save(qwen, "tiny-qwen2", "qwen2")
    save(qwen, "tiny-qwen2-sharded", "qwen2", max_shard_size="150KB")

    hd = build(LlamaForCausalLM, LlamaConfig(
        hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, head_dim=96,
        num_key_value_heads=1, vocab_size=256, max_position_embeddings=1024, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False), torch.float16, 3)
    save(hd, "tiny-llama-hd", "llama")


if __name__ == "__main__":
    main()
