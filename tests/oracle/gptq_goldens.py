"""llm-compressor's GPTQ as the reference for `quant::gptq`. Deterministic, CPU only.

    PYTHONPATH=/path/to/ct-and-llmcompressor python tests/oracle/gptq_goldens.py

Environment: tests/oracle/requirements.txt (torch, transformers) plus the GPTQ block
listed there (llmcompressor, compressed-tensors). llmcompressor 0.14 declares
torch>=2.10 and transformers>=5.15; the two modules used here need neither, so they
are installed with `pip install --no-deps` and imported by file (see load_reference),
which skips llmcompressor's package __init__ (it imports transformers 5 APIs).

The reference is `quantize_weight` of llmcompressor/modifiers/gptq/gptq_quantize.py
(eager torch block update; Triton needs CUDA) with scales and zero points from
compressed-tensors' `calculate_qparams` over each group's min/max of the original
weight, as llm-compressor's memoryless min-max weight observer gives them.

Writes fixtures/gptq/:
  w.f32       W [96, 256] float32 little-endian, row-major
  h.f32       H [256, 256]: (2/N) Σ xxᵀ over 512 tokens (N = 4 samples of 128),
              columns of x scaled unevenly (act-order has work to do) and three
              columns zero (dead columns)
  <case>.u8   codes [96, 256], unsigned: reference signed code + 2^(bits-1)
  <case>.json scales [groups][96] and zeros [groups][96] (unsigned, as the codes),
              g_idx [256], loss (the reference's summed loss), and the options
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "gptq")
ROWS, COLS, TOKENS, SAMPLES = 96, 256, 512, 4
DEAD = [5, 77, 200]

CASES = {
    # name: (bits, group_size, symmetric, actorder)
    "g128_sym": (4, 128, True, None),
    "g128_act": (4, 128, True, "weight"),
    "g64_asym": (4, 64, False, None),
    "g32_asym_act": (4, 32, False, "weight"),
    "channel_sym": (4, -1, True, None),
    "g128_sym_8bit": (8, 128, True, None),
}


def load_reference():
    """gptq_quantize.py and its helpers.py, by file, without llmcompressor/__init__."""
    spec = importlib.util.find_spec("compressed_tensors")
    assert spec is not None, "compressed-tensors is not importable"
    base = None
    for p in sys.path:
        cand = os.path.join(p, "llmcompressor", "modifiers", "gptq")
        if os.path.isdir(cand):
            base = cand
            break
    assert base is not None, "llmcompressor is not on sys.path"
    mods = {}
    for name in ("helpers", "gptq_quantize"):
        full = f"llmcompressor.modifiers.gptq.{name}"
        s = importlib.util.spec_from_file_location(full, os.path.join(base, f"{name}.py"))
        m = importlib.util.module_from_spec(s)
        sys.modules[full] = m
        s.loader.exec_module(m)
        mods[name] = m
    return mods["gptq_quantize"].quantize_weight


def inputs():
    g = torch.Generator().manual_seed(16)
    w = torch.randn(ROWS, COLS, generator=g) * 0.05
    # A few large weights so some groups have an outlier, as real layers do.
    w[torch.randint(0, ROWS, (12,), generator=g), torch.randint(0, COLS, (12,), generator=g)] *= 8
    x = torch.randn(SAMPLES, TOKENS // SAMPLES, COLS, generator=g)
    x *= torch.exp(torch.randn(COLS, generator=g))  # uneven column scales
    x[..., DEAD] = 0
    # llm-compressor's accumulate_hessian, then prepare_batch's division.
    from llmcompressor.modifiers.gptq.helpers import accumulate_hessian

    lin = torch.nn.Linear(COLS, ROWS, bias=False)
    h = torch.zeros(COLS, COLS)
    n = torch.zeros((), dtype=torch.int64)
    for s in range(SAMPLES):
        h, n = accumulate_hessian(x[s : s + 1], lin, h, n)
    return w, h / n


def qparams(w, args):
    from compressed_tensors.quantization.utils import calculate_qparams

    gs = args.group_size if args.group_size and args.group_size > 0 else COLS
    grouped = w.reshape(ROWS, COLS // gs, gs)
    return calculate_qparams(grouped.amin(dim=-1), grouped.amax(dim=-1), args)


def main():
    from compressed_tensors.quantization import QuantizationArgs

    quantize_weight = load_reference()
    torch.set_num_threads(1)
    w, h = inputs()
    os.makedirs(OUT, exist_ok=True)
    w.numpy().astype("<f4").tofile(os.path.join(OUT, "w.f32"))
    h.numpy().astype("<f4").tofile(os.path.join(OUT, "h.f32"))
    for name, (bits, gs, sym, act) in CASES.items():
        strategy = "channel" if gs == -1 else "group"
        args = QuantizationArgs(
            num_bits=bits,
            type="int",
            symmetric=sym,
            strategy=strategy,
            group_size=None if gs == -1 else gs,
            actorder=act,
        )
        scale, zp = qparams(w, args)  # [rows, groups]
        q, loss, fallback = quantize_weight(
            w.clone().unsqueeze(0),
            h.clone().unsqueeze(0),
            scale.unsqueeze(0),
            zp.unsqueeze(0),
            None,
            args,
            blocksize=128,
            percdamp=0.01,
        )
        assert not fallback.any(), "the reference fell back to round-to-nearest"
        q = q[0]
        gsz = COLS if gs == -1 else gs
        g_idx = torch.arange(COLS) // gsz  # `weight` act-order keeps each column's group
        s_col = scale[:, g_idx]
        z_col = zp.to(torch.float32)[:, g_idx]
        # The reference returns fake-quantized weights (q - zp) * s; recover q.
        signed = torch.round(q / s_col + z_col)
        assert torch.equal((signed - z_col) * s_col, q), f"{name}: codes do not round-trip"
        half = 2 ** (bits - 1)
        codes = (signed + half).to(torch.uint8)
        codes.numpy().tofile(os.path.join(OUT, f"{name}.u8"))
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(
                {
                    "bits": bits,
                    "group_size": gs,
                    "sym": sym,
                    "act_order": act is not None,
                    "damp": 0.01,
                    "block": 128,
                    "loss": float(loss[0]),
                    "scales": scale.t().tolist(),
                    "zeros": (zp.to(torch.int64) + half).t().tolist(),
                    "g_idx": g_idx.tolist(),
                },
                f,
            )
        print(name, "loss", float(loss[0]))


if __name__ == "__main__":
    main()
