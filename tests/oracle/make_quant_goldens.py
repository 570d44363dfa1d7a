#!/usr/bin/env python3
"""Golden dequantization vectors from gguf-py, the reference for llmtool's
`quant` module (src/quant/, unit tests compare bit for bit).

Pinned versions: gguf==0.19.0, numpy==2.2.6 (tests/oracle/requirements-gguf.txt;
nothing else is imported, and the script refuses other versions). Run:

    python3 -m venv /tmp/gguf-venv
    /tmp/gguf-venv/bin/pip install gguf==0.19.0 numpy==2.2.6
    /tmp/gguf-venv/bin/python tests/oracle/make_quant_goldens.py

(or `just fixtures`). Output paths are relative to this file, not the cwd.

It (re)writes, for every type llmtool dequantizes:

    fixtures/quant/<TYPE>.blocks   raw input bytes (whole blocks)
    fixtures/quant/<TYPE>.f32      gguf.quants.dequantize(blocks, TYPE) as
                                   little-endian float32

Inputs (fixed seed, so reruns give identical files):
  * F16: every bit pattern 0x0000..0xffff in order (NaNs included).
  * F32, BF16: random bit patterns plus special values (NaN payloads, inf,
    -0, subnormals); their conversion is bit-preserving in gguf-py.
  * Block types: random bytes, with every f16 scale field replaced by a
    finite value (half of the blocks modest N(0, 0.05) values, half random
    finite bit patterns: subnormals, -0, up to +-65504), so no output is
    NaN or inf; then an all-zero block and an all-0xff block with extreme
    finite scales. Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 also get blocks made by
    gguf.quants.quantize of random floats (one of them all zeros).
"""
import os
import sys
from importlib.metadata import version

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "quant")
SEED = 0x51A7
N_RANDOM_BLOCKS = 64

# Byte offsets of the f16 fields in each block (ggml/src/ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def finite_f16_bits(rng, n):
    """n random finite f16 bit patterns (exponent field not all ones)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    bad = (bits & 0x7C00) == 0x7C00
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint16)
        bad = (bits & 0x7C00) == 0x7C00
    return bits


def scale_bits(rng, n):
    """Half modest N(0, 0.05) scales, half arbitrary finite ones."""
    modest = (rng.standard_normal(n) * 0.05).astype(np.float16).view(np.uint16)
    wild = finite_f16_bits(rng, n)
    return np.where(np.arange(n) % 2 == 0, modest, wild).astype(np.uint16)


def set_f16(raw, off, bits):
    raw[:, off:off + 2] = bits.astype("<u2").view(np.uint8).reshape(-1, 2)


def block_input(rng, qtype):
    _, ts = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(N_RANDOM_BLOCKS, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        set_f16(raw, off, scale_bits(rng, N_RANDOM_BLOCKS))
    edges = np.zeros((2, ts), dtype=np.uint8)
    edges[1, :] = 0xFF
    for i, off in enumerate(F16_FIELDS[qtype]):
        # 65504 for d, -65504 for a min/dmin field.
        set_f16(edges[1:], off, np.array([0x7BFF if i == 0 else 0xFBFF], dtype=np.uint16))
    parts = [raw, edges]
    if qtype in LEGACY:
        x = (rng.standard_normal((8, 32)) * rng.choice([1e-3, 0.1, 10.0], size=(8, 1))).astype(np.float32)
        x[0] = 0.0
        parts.append(quantize(x, qtype).reshape(-1, ts))
    return np.concatenate(parts).reshape(-1)


def plain_input(rng, qtype):
    if qtype == T.F16:
        return np.arange(1 << 16, dtype=np.uint32).astype("<u2").view(np.uint8)
    if qtype == T.BF16:
        special = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFBF, 0x0001, 0x807F, 0x3F80, 0x7F7F]
        bits = np.concatenate([np.array(special, dtype=np.uint16), rng.integers(0, 1 << 16, size=1013, dtype=np.uint16)])
        return bits.astype("<u2").view(np.uint8)
    special = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFBFFFFF, 0x00000001, 0x3F800000]
    bits = np.concatenate([np.array(special, dtype=np.uint32), rng.integers(0, 1 << 32, size=247, dtype=np.uint32)])
    return bits.astype("<u4").view(np.uint8)


def main():
    if version("gguf") != "0.19.0" or np.__version__ != "2.2.6":
        sys.exit(f"need gguf==0.19.0 numpy==2.2.6, have gguf=={version('gguf')} numpy=={np.__version__}")
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(SEED)
    total = 0
    for qtype in [T.F32, T.F16, T.BF16] + LEGACY + KQUANTS:
        raw = plain_input(rng, qtype) if qtype in (T.F32, T.F16, T.BF16) else block_input(rng, qtype)
        assert raw.dtype == np.uint8 and raw.ndim == 1
        deq = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(-1)
        bs, ts = GGML_QUANT_SIZES[qtype]
        assert deq.size == raw.size // ts * bs
        if qtype not in (T.F32, T.F16, T.BF16):
            assert np.isfinite(deq).all(), qtype.name
        out = deq.astype("<f4", copy=False)
        for ext, data in (("blocks", raw.tobytes()), ("f32", out.tobytes())):
            with open(os.path.join(OUT, f"{qtype.name}.{ext}"), "wb") as f:
                f.write(data)
            total += len(data)
        print(f"{qtype.name:5} {raw.size:7} bytes -> {deq.size:6} values")
    print(f"total {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
