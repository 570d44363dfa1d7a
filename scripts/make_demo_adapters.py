"""Writes the two demo adapters of examples/demo/ (committed; rerun only to
remake them): PEFT LoRA, rank 4, alpha 8, on q_proj and v_proj of every
layer of SmolLM2-135M-Instruct (hidden 576, 30 layers, 3 KV heads of 64),
bfloat16. The values are seeded random numbers (uniform in ±0.02), NOT
trained: they change the model a little so that the demo has something to
merge, quantize and measure. Python standard library only.

    python3 scripts/make_demo_adapters.py examples/demo/adapters
"""
import json
import os
import random
import struct
import sys

HIDDEN, LAYERS, KV_OUT, RANK = 576, 30, 3 * 64, 4


def bf16(values):
    """float → bfloat16 bytes, round to nearest even (as torch rounds)."""
    out = bytearray()
    for v in values:
        (bits,) = struct.unpack("<I", struct.pack("<f", v))
        bits += 0x7FFF + ((bits >> 16) & 1)
        out += struct.pack("<H", (bits >> 16) & 0xFFFF)
    return bytes(out)


def save(path, tensors):
    header, data = {}, bytearray()
    for name, (shape, raw) in sorted(tensors.items()):
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def adapter(out, seed):
    rng = random.Random(seed)
    tensors = {}
    for layer in range(LAYERS):
        for mod, rows in (("q_proj", HIDDEN), ("v_proj", KV_OUT)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            a = [rng.uniform(-0.02, 0.02) for _ in range(RANK * HIDDEN)]
            b = [rng.uniform(-0.02, 0.02) for _ in range(rows * RANK)]
            tensors[f"{key}.lora_A.weight"] = ([RANK, HIDDEN], bf16(a))
            tensors[f"{key}.lora_B.weight"] = ([rows, RANK], bf16(b))
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, "adapter_model.safetensors"), tensors)
    config = {
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 2 * RANK,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
    }
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


root = sys.argv[1]
for name, seed in (("kant", 1724), ("hume", 1711)):
    adapter(os.path.join(root, name), seed)
    print(os.path.join(root, name))
