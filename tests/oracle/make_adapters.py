"""PEFT as the judge of `llmtool lora merge`.

    python tests/oracle/make_adapters.py [CASE...]   # env: tests/oracle/requirements.txt

With CASE names, only those cases are (re)made, over the committed bases.

For each case, on a tiny transformers base it makes (fixed seeds): a PEFT
LoRA adapter with random non-zero A/B (fixtures/lora/<case>/adapter/), then
PEFT's own merge (merge_and_unload; for two adapters add_weighted_adapter
with combination_type="cat" first) and writes the merged tensors that differ
from the base to fixtures/lora/<case>/merged.safetensors, the merged model's
config.json fields that matter (expected.json), and its logits on a fixed
input. Bases: fixtures/lora/bases/{micro-llama (f32), micro-qwen2 (bf16,
biases, tied embeddings)}.
"""
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "lora")
INPUT_IDS = [[1, 5, 9, 42, 7, 3, 100, 20]]


def make_bases():
    bases = os.path.join(OUT, "bases")
    shutil.rmtree(bases, ignore_errors=True)
    torch.manual_seed(10)
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                         max_position_embeddings=256, tie_word_embeddings=False))
    torch.manual_seed(11)
    qwen = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                        max_position_embeddings=256, tie_word_embeddings=True))
    for name, m, dtype in [("micro-llama", llama, torch.float32), ("micro-qwen2", qwen, torch.bfloat16)]:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        m.to(dtype).save_pretrained(os.path.join(bases, name))


def randomize(peft_model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "magnitude" in n else 0.0) * p)
            elif "modules_to_save" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def load_base(name):
    d = os.path.join(OUT, "bases", name)
    return AutoModelForCausalLM.from_pretrained(d, dtype="auto").eval()


def write_case(case, base_name, merged, adapters):
    d = os.path.join(OUT, case)
    base = load_base(base_name).state_dict()
    sd = merged.state_dict()
    tied_in_memory = merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    changed = {}
    for k, v in sd.items():
        if k == "lm_head.weight" and tied_in_memory:
            continue
        if k not in base or not torch.equal(base[k], v):
            changed[k] = v.detach().contiguous().clone()
    save_file(changed, os.path.join(d, "merged.safetensors"), metadata={"format": "pt"})
    with torch.no_grad():
        logits = merged(torch.tensor(INPUT_IDS)).logits.float()
    with open(os.path.join(d, "expected.json"), "w") as fh:
        json.dump({
            "base": base_name,
            "adapters": adapters,
            "changed": sorted(changed),
            "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in changed.items()},
            "lm_head_tied_in_memory": tied_in_memory,
            "input_ids": INPUT_IDS,
            "last_logits": logits[0, -1].tolist(),
        }, fh, indent=1)
        fh.write("\n")
    print(case, len(changed), "changed tensors")


def single(case, base_name, seed, **cfg):
    d = os.path.join(OUT, case)
    shutil.rmtree(d, ignore_errors=True)
    model = load_base(base_name)
    p = get_peft_model(model, LoraConfig(**cfg))
    randomize(p, seed)
    p.save_pretrained(os.path.join(d, "adapter"))
    write_case(case, base_name, p.merge_and_unload(), [{"path": "adapter", "weight": 1.0}])


def weighted(case, base_name):
    d = os.path.join(OUT, case)
    shutil.rmtree(d, ignore_errors=True)
    specs = [("a", 0.7, 21, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])),
             ("b", 0.3, 22, dict(r=8, lora_alpha=4, target_modules=["q_proj", "k_proj", "up_proj"]))]
    for name, _, seed, cfg in specs:
        p = get_peft_model(load_base(base_name), LoraConfig(**cfg))
        randomize(p, seed)
        p.save_pretrained(os.path.join(d, name))
    pm = PeftModel.from_pretrained(load_base(base_name), os.path.join(d, "a"), adapter_name="a")
    pm.load_adapter(os.path.join(d, "b"), adapter_name="b")
    pm.add_weighted_adapter(["a", "b"], [0.7, 0.3], "blend", combination_type="cat")
    pm.set_adapter("blend")
    write_case(case, base_name, pm.merge_and_unload(adapter_names=["blend"]),
               [{"path": n, "weight": w} for n, w, _, _ in specs])


def cases():
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "f32-basic": lambda c: single(c, "micro-llama", 1, r=8, lora_alpha=16, target_modules=linear),
        "bf16-all-linear": lambda c: single(c, "micro-qwen2", 2, r=4, lora_alpha=8, target_modules="all-linear"),
        "rslora-patterns": lambda c: single(c, "micro-llama", 3, r=8, lora_alpha=16, use_rslora=True,
                                            target_modules=linear, rank_pattern={"q_proj": 4, "layers.1.mlp.down_proj": 2},
                                            alpha_pattern={"down_proj": 32}),
        "dora": lambda c: single(c, "micro-llama", 4, r=4, lora_alpha=8, use_dora=True,
                                 target_modules=["q_proj", "v_proj", "gate_proj"]),
        "qwen2-layers-tied-embed": lambda c: single(c, "micro-qwen2", 5, r=4, lora_alpha=8,
                                                    target_modules=["q_proj", "k_proj", "v_proj", "embed_tokens"],
                                                    layers_to_transform=[1]),
        "embedding": lambda c: single(c, "micro-llama", 6, r=4, lora_alpha=4, target_modules=["embed_tokens", "q_proj"]),
        "modules-to-save": lambda c: single(c, "micro-llama", 7, r=4, lora_alpha=8, target_modules=["v_proj"],
                                            modules_to_save=["lm_head"]),
        "tied-modules-to-save": lambda c: single(c, "micro-qwen2", 9, r=4, lora_alpha=8, target_modules=["q_proj"],
                                                 modules_to_save=["lm_head"]),
        "lora-bias": lambda c: single(c, "micro-qwen2", 8, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                      lora_bias=True),
        "two-weighted": lambda c: weighted(c, "micro-llama"),
        # DoRA on an Embedding normalises columns (embedding dimensions), not rows.
        "dora-embedding": lambda c: single(c, "micro-llama", 10, r=4, lora_alpha=8, use_dora=True,
                                           target_modules=["embed_tokens", "o_proj"]),
        "dora-bf16": lambda c: single(c, "micro-qwen2", 11, r=4, lora_alpha=8, use_dora=True,
                                      target_modules=["q_proj", "embed_tokens", "down_proj"]),
        # PEFT resets fan_in_fan_out for torch Linear layers: a plain merge.
        "fan-in-fan-out": lambda c: single(c, "micro-llama", 12, r=4, lora_alpha=8, fan_in_fan_out=True,
                                           target_modules=["q_proj", "down_proj"]),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    todo = cases()
    wanted = sys.argv[1:] or list(todo)
    unknown = [c for c in wanted if c not in todo]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; known: {list(todo)}")
    if not sys.argv[1:]:
        make_bases()
    for c in wanted:
        todo[c](c)


if __name__ == "__main__":
    main()
