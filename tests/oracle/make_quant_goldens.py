"""Golden dequantization vectors from gguf-py (the reference for llmtool's
`quant` module).

For each block type llmtool dequantizes, writes
  fixtures/quant/<TYPE>.blocks  raw blocks (random bytes with finite, modest
                                f16 scale fields; for the 32-element types
                                also blocks made by gguf.quants.quantize)
  fixtures/quant/<TYPE>.f32     gguf.quants.dequantize(blocks) as
                                little-endian float32
Run with the pinned light environment (tests/oracle/requirements-gguf.txt:
gguf==0.19.0, numpy==2.2.6):  python tests/oracle/make_quant_goldens.py
Deterministic: fixed seed.
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "quant")
N_BLOCKS = 64

# Byte offsets of f16 scale fields inside each block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(rng, qtype):
    bs, ts = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(N_BLOCKS, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = (rng.standard_normal(N_BLOCKS) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(N_BLOCKS, 2)
    return raw


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261124)
    for qtype in [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]:
        bs, ts = GGML_QUANT_SIZES[qtype]
        if qtype in (T.F16, T.BF16):
            x = (rng.standard_normal((4, 64)) * 3).astype(np.float32)
            x[0, :4] = [0.0, -0.0, 65504.0, 1e-8]
            raw = quantize(x, qtype).view(np.uint8).reshape(-1)
        else:
            raw = random_blocks(rng, qtype)
            if bs == 32:
                x = (rng.standard_normal((8, 32)) * 0.1).astype(np.float32)
                x[0] = 0.0  # an all-zero block
                raw = np.concatenate([raw, quantize(x, qtype).reshape(-1, ts)])
            raw = raw.reshape(-1)
        deq = dequantize(raw, qtype).astype("<f4", copy=False).reshape(-1)
        assert np.isfinite(deq).all()
        with open(os.path.join(OUT, f"{qtype.name}.blocks"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(OUT, f"{qtype.name}.f32"), "wb") as f:
            f.write(deq.tobytes())
        print(f"{qtype.name}: {raw.size} bytes -> {deq.size} floats")


if __name__ == "__main__":
    main()
