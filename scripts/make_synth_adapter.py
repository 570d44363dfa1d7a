"""Writes a rank-16 all-linear PEFT LoRA adapter (random A and B, f32) for
the synthetic 7B model of examples/synth_model.rs, with numpy and
safetensors only (the benchmark does not need torch).

    python scripts/make_synth_adapter.py SYNTH_DIR OUT_DIR
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

synth, out = sys.argv[1], sys.argv[2]
cfg = json.load(open(os.path.join(synth, "config.json")))
h, f, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
          "self_attn.o_proj": (h, h), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}
r = 16
rng = np.random.default_rng(0)
tensors = {}
for layer in range(n):
    for mod, (o, i) in shapes.items():
        key = f"base_model.model.model.layers.{layer}.{mod}"
        tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((r, i), dtype=np.float32) * 0.01)
        tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((o, r), dtype=np.float32) * 0.01)
os.makedirs(out, exist_ok=True)
save_file(tensors, os.path.join(out, "adapter_model.safetensors"))
json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 32, "target_modules": sorted(m.split(".")[1] for m in shapes),
           "base_model_name_or_path": "synth-7b"}, open(os.path.join(out, "adapter_config.json"), "w"))
print(out)
