"""transformers' own reading of a compressed-tensors pack-quantized checkpoint, for
`tests/packed_models.rs`. Deterministic, CPU only.

    PYTHONPATH=/path/to/compressed-tensors python tests/oracle/pack_hf_check.py

Environment: tests/oracle/requirements.txt (torch 2.9.1, transformers 4.57.1) plus
compressed-tensors 0.19.0 (`pip install --no-deps --target DIR`).

Makes fixtures/pack/micro-llama-ct/ from fixtures/lora/bases/micro-llama: every
q/k/v/o/gate/up/down weight (in bfloat16) quantized round-to-nearest, 4-bit
symmetric, group 32, with compressed-tensors' `calculate_qparams` and packed by
`PackedQuantizationCompressor.compress` (bf16 weight_scale, no zero point),
config.json's quantization_config as compressed-tensors writes it. Then
transformers loads the directory (its CompressedTensorsHfQuantizer decompresses
every layer) and writes logits.json: the float32 logits [8][vocab] of INPUT_IDS.

Symmetric only: with these versions transformers cannot load an asymmetric
pack-quantized checkpoint, since the compressor's meta-device path (which
transformers uses to shape the modules) leaves weight_zero_point unpacked
[out, groups] while `compress` writes it packed [out/8, groups] (load_state_dict
size mismatch); vLLM reads the packed form.
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "fixtures", "lora", "bases", "micro-llama")
OUT = os.path.join(ROOT, "fixtures", "pack", "micro-llama-ct")
G = 32
INPUT_IDS = [1, 17, 100, 3, 45, 99, 12, 127]


def main():
    os.makedirs(OUT, exist_ok=True)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=G)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    tensors = {}
    for k, v in sorted(load_file(os.path.join(SRC, "model.safetensors")).items()):
        if not k.endswith("_proj.weight"):
            tensors[k] = v.contiguous()
            continue
        module = k[: -len(".weight")]
        w = v.to(torch.bfloat16)
        rows, cols = w.shape
        groups = w.reshape(rows, cols // G, G).float()
        scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        c = PackedQuantizationCompressor.compress(
            {"weight": w, "weight_scale": scale.to(torch.bfloat16), "weight_zero_point": zp},
            scheme,
        )
        for name, t in c.items():
            tensors[f"{module}.{name}"] = t.contiguous()
    save_file(tensors, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(SRC, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": args.model_dump(),
                "input_activations": None,
                "output_activations": None,
            }
        },
        "ignore": ["lm_head"],
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    model = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([INPUT_IDS])).logits[0]
    # Decompressed on the first forward: a plain Linear with a float32 weight.
    q = model.model.layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight.dtype == torch.float32, "not decompressed"
    assert not hasattr(q, "weight_packed"), "still compressed"
    with open(os.path.join(OUT, "logits.json"), "w") as f:
        json.dump({"input_ids": INPUT_IDS, "logits": [[float(x) for x in r] for r in logits]}, f)
        f.write("\n")
    print("logits", list(logits.shape))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
