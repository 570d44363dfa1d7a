"""bitsandbytes as the reference for reading its checkpoints back
(llmtool's `model::packed` bitsandbytes path: eval, generate, convert).
Deterministic, CPU only.

    python tests/oracle/bnb_dequant_goldens.py    # env: tests/oracle/requirements.txt

For every case of bnb_goldens.py (a fixture model quantized on the fly by
transformers + bitsandbytes and saved, the checkpoint `llmtool quantize`
reproduces byte for byte, which this script re-checks against
fixtures/bnb/expected.json), and for bitsandbytes.functional.quantize_4bit
at other block sizes, each quantized weight is dequantized by bitsandbytes
itself from the saved tensors, the way a loader does:
QuantState.from_dict + functional.dequantize_4bit (4-bit, in the quant
state's dtype), functional.int8_vectorwise_dequant (LLM.int8, float32).
The golden is bitsandbytes' pure-torch path (`backends/default/ops.py`).
The wheel's CPU kernel must agree with it as numbers (it writes FP4's
pattern 8 as -0.0 on some of its paths) except at block sizes 256-1024,
where it reads the wrong block maximum (recorded per weight as
cpu_kernel_agrees).

Writes fixtures/bnb/dequant.json: per case and weight the dtype, shape and
sha256 of the dequantized tensor's bytes, and its first values.
"""
import json
import os
import sys
import tempfile

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from bitsandbytes.backends.utils import _get_4bit_code

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bnb_goldens as g  # noqa: E402


def record(t):
    b = t.contiguous().view(torch.uint8).numpy().tobytes()
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "sha256": g.sha(b),
            "first": t.reshape(-1)[:4].float().tolist()}


# Eager: the torch.compile'd wrapper gives wrong results once it has hit its
# recompilation limit over this script's many shapes.
_eager_4bit = _dequantize_4bit_compute
while hasattr(_eager_4bit, "__wrapped__"):
    _eager_4bit = _eager_4bit.__wrapped__


def absmax_of(qs):
    if not qs.nested:
        return qs.absmax.float()
    return (F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset).float()


def reference_4bit(weight, qs):
    """bitsandbytes' pure-torch dequantization of the same state (eager)."""
    code = _get_4bit_code(qs.quant_type, torch.device("cpu"))
    return _eager_4bit(weight.reshape(-1).view(torch.uint8), absmax_of(qs), code, qs.blocksize, qs.shape,
                       qs.dtype)


def dequantize_saved(tensors):
    """Every quantized weight of a saved state dict, dequantized."""
    out = {}
    for k in sorted(tensors):
        if ".quant_state.bitsandbytes__" in k:
            w = k.split(".quant_state.")[0]
            parts = {n: v for n, v in tensors.items() if n.startswith(w + ".")}
            qs = F.QuantState.from_dict({n[len(w) + 1:]: v for n, v in parts.items()}, torch.device("cpu"))
            got = F.dequantize_4bit(tensors[w], qs)
            ref = reference_4bit(tensors[w], qs)
            # As numbers: the CPU kernel gives FP4's pattern 8 as -0.0 on
            # some paths, +0.0 on others; the torch path always +0.0. And it
            # takes the wrong block maximum at block sizes 256-1024
            # (bitsandbytes 0.50.2); elsewhere it is the reference.
            agrees = torch.equal(got, ref)
            assert agrees or 256 <= qs.blocksize <= 1024, (w, qs.quant_type, qs.blocksize)
            out[w] = dict(record(ref), cpu_kernel_agrees=agrees)
        elif k.endswith(".SCB"):
            w = k[: -len(".SCB")] + ".weight"
            out[w] = record(F.int8_vectorwise_dequant(tensors[w], tensors[k]))
    return out


def load(path):
    with safe_open(os.path.join(path, "model.safetensors"), framework="pt") as h:
        return {k: h.get_tensor(k) for k in h.keys()}


def case(model_dir, fmt, expected):
    src = os.path.join(g.ROOT, "fixtures", model_dir)
    cfg = json.load(open(os.path.join(src, "config.json")))
    dtype = getattr(torch, cfg.get("dtype") or cfg["torch_dtype"])
    m = AutoModelForCausalLM.from_pretrained(src, quantization_config=g.bnb_config(fmt, dtype),
                                             dtype=dtype, device_map="cpu").eval()
    g.without_fused_cpu_kernel(m)
    with tempfile.TemporaryDirectory() as tmp:
        m.save_pretrained(tmp)
        assert g.tensors_of(tmp) == expected["tensors"], f"{model_dir}/{fmt}: not the checkpoint of expected.json"
        return {"model": model_dir, "format": fmt, "weights": dequantize_saved(load(tmp))}


def functional(model_dir, kind, blocksize, dq):
    src = os.path.join(g.ROOT, "fixtures", model_dir)
    tensors = {}
    with safe_open(os.path.join(src, "model.safetensors"), framework="pt") as h:
        for k in sorted(h.keys()):
            if k.endswith("_proj.weight"):
                packed, state = F.quantize_4bit(h.get_tensor(k), blocksize=blocksize, compress_statistics=dq,
                                                quant_type=kind)
                tensors[k] = packed
                tensors.update({f"{k}.{sk}": v for sk, v in state.as_dict(packed=True).items()})
    return {"model": model_dir, "quant_type": kind, "blocksize": blocksize, "double_quant": dq,
            "weights": dequantize_saved(tensors)}


def main():
    assert bitsandbytes.__version__ == g.BNB_VERSION, bitsandbytes.__version__
    torch.set_num_threads(1)
    expected = json.load(open(os.path.join(g.OUT, "expected.json")))
    cases = {}
    for model_dir, fmts in g.CASES:
        for fmt in fmts:
            key = f"{model_dir.split('/')[-1]}/{fmt}"
            cases[key] = case(model_dir, fmt, expected["cases"][key])
            print("dequantized", key)
    doc = {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cases": cases,
           "functional": [functional(*f) for f in g.FUNCTIONAL]}
    with open(os.path.join(g.OUT, "dequant.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
