"""Packed int4/int8 checkpoint layouts as the reference packers write them, for
`quant::int4pack`. Deterministic, CPU only.

    PYTHONPATH=/path/to/compressed-tensors python tests/oracle/pack_goldens.py

Environment: tests/oracle/requirements.txt (torch, transformers) plus compressed-tensors
0.19.0 (`pip install --no-deps --target DIR`, as for gptq_goldens.py).

References, per layout:
  * compressed-tensors pack-quantized: compressed-tensors' own `pack_to_int32`
    (compressors/pack_quantized/helpers.py) for weight_packed and the asymmetric
    weight_zero_point (packed_dim=0), and, for the cases without act-order, its
    `PackedQuantizationCompressor.compress` on a per-module state dict (weight, scale,
    zero point), whose output must equal pack_to_int32's. Codes and zero points go in
    signed (unsigned − 2^(bits−1)), as compressed-tensors keeps them.
  * GPTQ v1: AutoGPTQ's `QuantLinear.pack` of nn_modules/qlinear/qlinear_cuda_old.py
    (same loops in qlinear_exllama.py), reimplemented below from its integer weight
    on: numpy uint32 words, `qweight[row] |= intweight[j] << (bits * (j - i))` along
    the inputs, `zeros -= 1` then the same loop along the outputs for qzeros.
  * AWQ GEMM: AutoAWQ's `WQLinear_GEMM.from_linear` (awq/modules/linear/gemm.py),
    reimplemented below: order_map [0, 2, 4, 6, 1, 3, 5, 7] along the outputs, real
    zeros. The script checks that compressed-tensors' AutoAWQConverter
    (`unpack_awq` + `reverse_awq_order`, entrypoints/convert/converters/autoawq.py)
    reads the codes and zeros back.

Writes fixtures/pack/<case>.json: bits, rows, cols, the inputs (unsigned codes
[rows*cols] row-major, scales [groups*rows] as float32 values, unsigned zeros
[groups*rows], g_idx [cols]) and `tensors`: {suffix: {shape, values}} with int32
values (scales: float32 values) of every tensor the layout stores; for the
compressed-tensors cases without act-order also `dequant_bf16`, the weight
[rows*cols] that `PackedQuantizationCompressor.decompress` returns with the scales
in bfloat16.
"""
import json
import os

import numpy as np
import torch

from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
from compressed_tensors.entrypoints.convert.converters.autoawq import AutoAWQConverter
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "pack")
ROWS, COLS = 32, 64

CASES = {
    # name: (layout, bits, group_size, sym, act_order)
    "gptq_g32_sym": ("gptq", 4, 32, True, False),
    "gptq_g16_asym_act": ("gptq", 4, 16, False, True),
    "gptq_g32_sym_8bit": ("gptq", 8, 32, True, False),
    "ct_g32_sym": ("compressed", 4, 32, True, False),
    "ct_g16_asym": ("compressed", 4, 16, False, False),
    "ct_g16_asym_act": ("compressed", 4, 16, False, True),
    "ct_g32_asym_8bit": ("compressed", 8, 32, False, False),
    "awq_g32": ("awq", 4, 32, False, False),
}


def example(seed, bits, group, sym, act, zero_min):
    rng = np.random.default_rng(seed)
    groups = COLS // group
    codes = rng.integers(0, 1 << bits, size=(ROWS, COLS), dtype=np.int64)
    codes[0, :] = 0
    codes[1, :] = (1 << bits) - 1
    scales = (rng.random((groups, ROWS)) * 0.02 + 1e-3).astype(np.float32)
    if sym:
        zeros = np.full((groups, ROWS), 1 << (bits - 1), dtype=np.int64)
    else:
        zeros = rng.integers(zero_min, 1 << bits, size=(groups, ROWS), dtype=np.int64)
        zeros[0, 2] = zero_min
        zeros[-1, 3] = (1 << bits) - 1
    g_idx = np.arange(COLS) // group
    if act:
        g_idx = rng.permutation(g_idx)
    return codes, scales, zeros, g_idx


def gptq_v1(codes, zeros, bits):
    """AutoGPTQ qlinear_cuda_old.QuantLinear.pack, from intweight on."""
    intweight = codes.T.copy().astype(np.uint32)  # [in, out]
    i = 0
    row = 0
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    while row < qweight.shape[0]:
        for j in range(i, i + (32 // bits)):
            qweight[row] |= intweight[j] << (bits * (j - i))
        i += 32 // bits
        row += 1
    qweight = qweight.astype(np.int32)
    zeros = zeros.copy()
    zeros -= 1
    zeros = zeros.astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * bits), dtype=np.uint32)
    i = 0
    col = 0
    while col < qzeros.shape[1]:
        for j in range(i, i + (32 // bits)):
            qzeros[:, col] |= zeros[:, j] << (bits * (j - i))
        i += 32 // bits
        col += 1
    return qweight, qzeros.astype(np.int32)


def awq_gemm(codes, zeros, bits):
    """AutoAWQ WQLinear_GEMM.from_linear's packing of intweight and zeros."""
    intweight = torch.tensor(codes.T.copy(), dtype=torch.int32)  # [in, out]
    pack_num = 32 // bits
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    qweight = torch.zeros((intweight.shape[0], intweight.shape[1] // 32 * bits), dtype=torch.int32)
    for col in range(intweight.shape[1] // pack_num):
        for i in range(pack_num):
            qweight[:, col] |= intweight[:, col * pack_num + order_map[i]] << (i * bits)
    z = torch.tensor(zeros, dtype=torch.int32)
    qzeros = torch.zeros((z.shape[0], z.shape[1] // 32 * bits), dtype=torch.int32)
    for col in range(z.shape[1] // pack_num):
        for i in range(pack_num):
            qzeros[:, col] |= z[:, col * pack_num + order_map[i]] << (i * bits)
    return qweight.numpy(), qzeros.numpy()


def compressed(codes, scales, zeros, g_idx, bits, group, sym, act):
    mid = 1 << (bits - 1)
    signed = torch.tensor(codes - mid, dtype=torch.int8)
    packed = pack_to_int32(signed, bits)
    out = {"weight_packed": packed.numpy()}
    zp_signed = torch.tensor((zeros - mid).T.copy(), dtype=torch.int8)  # [out, groups]
    if not sym:
        out["weight_zero_point"] = pack_to_int32(zp_signed, bits, packed_dim=0).numpy()
    if not act:
        # The compressor quantizes a float weight with the given scale and zero
        # point: feed it W = (q − z)·s so that it recovers q exactly.
        scale_t = torch.tensor(scales.T.copy())  # [out, groups]
        s_full = scale_t.repeat_interleave(group, dim=1)
        z_full = zp_signed.to(torch.float32).repeat_interleave(group, dim=1)
        w = (signed.to(torch.float32) - z_full) * s_full
        args = QuantizationArgs(
            num_bits=bits, type="int", symmetric=sym, strategy="group", group_size=group
        )
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        sd = {"weight": w, "weight_scale": scale_t}
        if not sym:
            sd["weight_zero_point"] = zp_signed
        else:
            sd["weight_zero_point"] = torch.zeros_like(zp_signed)
        c = PackedQuantizationCompressor.compress(sd, scheme)
        assert torch.equal(c["weight_packed"], packed), "compressor != pack_to_int32"
        # And its decompression with bfloat16 scales: the reference dequantization
        # ((q − z) in the scale dtype, times the scale in that dtype).
        c16 = dict(c)
        c16["weight_scale"] = scale_t.to(torch.bfloat16)
        d = PackedQuantizationCompressor.decompress(c16, scheme)["weight"]
        assert d.dtype == torch.bfloat16
        out["dequant_bf16"] = d.to(torch.float32).numpy()
        assert c["weight_shape"].tolist() == [ROWS, COLS]
        if not sym:
            assert torch.equal(c["weight_zero_point"], torch.tensor(out["weight_zero_point"]))
        else:
            assert "weight_zero_point" not in c
    out["weight_scale"] = scales.T.copy()
    out["weight_shape"] = np.array([ROWS, COLS], dtype=np.int64)
    if act:
        out["weight_g_idx"] = g_idx.astype(np.int32)
    return out


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    for n, (name, (layout, bits, group, sym, act)) in enumerate(sorted(CASES.items())):
        # GPTQ v1 cannot store a zero of 0 (it stores zero − 1).
        zero_min = 1 if layout == "gptq" else 0
        codes, scales, zeros, g_idx = example(1000 + n, bits, group, sym, act, zero_min)
        if layout == "gptq":
            qweight, qzeros = gptq_v1(codes, zeros, bits)
            tensors = {
                "qweight": qweight,
                "qzeros": qzeros,
                "scales": scales,
                "g_idx": g_idx.astype(np.int32),
            }
        elif layout == "awq":
            qweight, qzeros = awq_gemm(codes, zeros, bits)
            iw, iz = AutoAWQConverter.unpack_awq(torch.tensor(qweight), torch.tensor(qzeros), bits)
            iw, iz = AutoAWQConverter.reverse_awq_order(iw, iz, bits)
            assert np.array_equal((iw & 15).numpy().T, codes), "AWQ codes do not read back"
            assert np.array_equal((iz & 15).numpy(), zeros), "AWQ zeros do not read back"
            tensors = {"qweight": qweight, "qzeros": qzeros, "scales": scales}
        else:
            tensors = compressed(codes, scales, zeros, g_idx, bits, group, sym, act)
        doc = {
            "layout": layout,
            "bits": bits,
            "sym": sym,
            "rows": ROWS,
            "cols": COLS,
            "codes": codes.reshape(-1).tolist(),
            "scales": [float(x) for x in scales.reshape(-1)],
            "zeros": zeros.reshape(-1).tolist(),
            "g_idx": g_idx.tolist(),
            "dequant_bf16": [float(x) for x in tensors.pop("dequant_bf16").reshape(-1)]
            if "dequant_bf16" in tensors
            else None,
            "tensors": {
                k: {
                    "shape": list(v.shape),
                    "values": [float(x) for x in v.reshape(-1)]
                    if v.dtype == np.float32
                    else [int(x) for x in v.reshape(-1)],
                }
                for k, v in tensors.items()
            },
        }
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(name, {k: list(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
