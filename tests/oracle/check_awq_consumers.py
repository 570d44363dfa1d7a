"""Independent readers of AWQ checkpoints as judges of llmtool's dequantization.

    # AutoAWQ GEMM dir (quant_method awq, version gemm, zero_point true): every
    # qweight/qzeros/scales unpacked by AutoAWQ's own `dequantize_gemm`, and every
    # other tensor, equal bit for bit to what `llmtool convert DIR --out F32DIR` writes
    python tests/oracle/check_awq_consumers.py gemm DIR

    # compressed-tensors AWQ dir (pack-quantized, asymmetric: zero points) vs
    # `llmtool convert`: transformers' decompressed weights (bit for bit), transformers'
    # CPU logits on the checkpoint vs on llmtool's float weights (1e-3 of the largest
    # logit), llama.cpp's convert_hf_to_gguf.py tensors vs llmtool's (exact)
    python tests/oracle/check_awq_consumers.py ct DIR IDS.json

    # compressed-tensors AWQ dir -> AutoAWQ GEMM, packed by AutoAWQ's own
    # WQLinear_GEMM.from_linear (scales rounded to f16 as AutoAWQ stores them; the
    # codes and zeros unchanged); --f16: the other tensors in f16 too, as AutoAWQ saves
    python tests/oracle/check_awq_consumers.py to-gemm DIR OUT_DIR [--f16]

    # all of the above on one compressed-tensors AWQ dir (e.g. the reference's)
    python tests/oracle/check_awq_consumers.py self-test DIR IDS.json

$LLMTOOL is the llmtool binary (default `llmtool` on PATH); $LLAMA_CPP the llama.cpp
checkout for `ct`. IDS.json: {"ids": [[id, …], …]} (sequences, no BOS added).

Environment: the AWQ/GPTQ model goldens' (tests/oracle/requirements-gptq-model.txt:
transformers 5.17.0, compressed-tensors 0.19.0, torch 2.9.1) plus AutoAWQ from
tests/oracle/requirements-awq.txt installed `--no-deps --target AWQDIR` in front:

    PYTHONPATH=AWQDIR:T5DIR:DIR python tests/oracle/check_awq_consumers.py …

AutoAWQ 0.2.9 (the last release; deprecated) imports on CPU with transformers 5 for
what is used here: `awq.utils.packing_utils` and `awq.modules.linear.gemm`, pure
torch; its CUDA kernels are not needed. `dequantize_gemm` is called with the scales
as stored for the linears' own dtype: f16 scales give f16 weights (its product
rounded to f16, as a f16 model computes), and `gemm` converts them to float32
scales first when llmtool writes f32 (the rest of the model is not f16), so the
product is exact in both. Exit 1 on any difference over tolerance.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

# Progress bars would bury the results in the logs.
os.environ.setdefault("TQDM_DISABLE", "1")

import check_gptq_consumers as gptq

LLMTOOL = os.environ.get("LLMTOOL", "llmtool")
SIDE_FILES = ("tokenizer", "special_tokens", "generation_config", "chat_template")


def load_dir(d):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(d, f)))
    return sd


def llmtool_convert(d, tmp):
    out = os.path.join(tmp, "llmtool-f32")
    run = subprocess.run([LLMTOOL, "convert", d, "--out", out], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"llmtool convert {d} failed (exit {run.returncode}): {run.stderr[-3000:]}")
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip().splitlines()[-1])
    return out


def compare_exact(ours, theirs, what):
    """Bit-for-bit equality of every tensor both sides hold; names only one side holds."""
    bad, only_ours, only_theirs = [], sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    for k in sorted(set(ours) & set(theirs)):
        a, b = ours[k], theirs[k]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a.view(-1), b.view(-1)):
            diff = (a.double() - b.double()).abs().max().item() if a.shape == b.shape else float("nan")
            bad.append(f"{k}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}, max |diff| {diff:.3e}")
    print(
        f"{what}: {len(set(ours) & set(theirs)) - len(bad)} of {len(set(ours) & set(theirs))} tensors equal bit for bit"
        + (f"; only llmtool: {only_ours}" if only_ours else "")
        + (f"; only the reader: {only_theirs}" if only_theirs else "")
    )
    for b in bad[:20]:
        print("  DIFFERENT", b)
    return not bad and not only_theirs


def awq_config(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    q = cfg.get("quantization_config", {})
    assert q.get("quant_method") == "awq" and str(q.get("version", "gemm")).lower() == "gemm", q
    assert q.get("zero_point", True) and q.get("bits", q.get("w_bit", 4)) == 4, q
    return cfg, q.get("group_size", q.get("q_group_size"))


def cmd_gemm(a):
    """AutoAWQ's dequantize_gemm against `llmtool convert`."""
    from awq.utils.packing_utils import dequantize_gemm

    _, group = awq_config(a.dir)
    sd = load_dir(a.dir)
    with tempfile.TemporaryDirectory() as tmp:
        ours = load_dir(llmtool_convert(a.dir, tmp))
    linear_dtypes = {ours[k[: -len("qweight")] + "weight"].dtype for k in sd if k.endswith(".qweight")}
    theirs = {}
    for k, v in sd.items():
        if k.endswith((".qzeros", ".scales")):
            continue
        if not k.endswith(".qweight"):
            theirs[k] = v
            continue
        base = k[: -len("qweight")]
        scales = sd[base + "scales"]
        assert scales.dtype == torch.float16, f"{base}scales is {scales.dtype}"
        # f16 scales and an f16 product when llmtool writes f16; f32 otherwise (exact).
        dtype = ours.get(base + "weight", torch.empty(0, dtype=torch.float32)).dtype
        w = dequantize_gemm(v, sd[base + "qzeros"], scales.to(dtype), 4, group)  # [in, out]
        theirs[base + "weight"] = w.t().contiguous()
    print(f"{a.dir}: group {group}, linears written by llmtool as {sorted(map(str, linear_dtypes))}")
    return 0 if compare_exact(ours, theirs, "GEMM: AutoAWQ dequantize_gemm vs llmtool convert") else 1


def ct_codes(sd, base, weights):
    """(signed codes [out, in], f32 scales [out, groups], signed zeros [out, groups]) of
    one compressed-tensors pack-quantized linear, by compressed-tensors' own unpacker."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    rows, cols = sd[base + "weight_shape"].tolist()
    scale = sd[base + "weight_scale"]
    codes = unpack_from_int32(sd[base + "weight_packed"], weights["num_bits"], torch.Size([rows, cols]))
    zeros = unpack_from_int32(sd[base + "weight_zero_point"], weights["num_bits"], scale.shape, packed_dim=0)
    return codes, scale, zeros


def cmd_to_gemm(a):
    """compressed-tensors pack-quantized (asymmetric int4, group G) -> AutoAWQ GEMM.

    AutoAWQ's WQLinear_GEMM.from_linear packs what it is given by rounding
    (W + z·s) / s with s = scales.half(); fed W = (q − z)·s16 (exact in f32) and the
    unsigned zeros, it gives back exactly the codes q (unsigned, code + 8) and z."""
    from awq.modules.linear.gemm import WQLinear_GEMM
    from safetensors.torch import save_file

    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized", qc.get("format")
    weights = next(iter(qc["config_groups"].values()))["weights"]
    assert weights["num_bits"] == 4 and not weights["symmetric"] and weights["strategy"] == "group", weights
    group = weights["group_size"]
    sd = load_dir(a.dir)
    out = {}
    half = 8
    for k, v in sd.items():
        if k.endswith(("weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx")):
            continue
        if not k.endswith(".weight_packed"):
            out[k] = v.to(torch.float16) if a.f16 and v.is_floating_point() else v
            continue
        base = k.removesuffix("weight_packed")
        codes, scale, zeros = ct_codes(sd, base, weights)
        s16 = scale.to(torch.float16).float()  # [out, groups]
        q = codes.to(torch.int64) + half  # unsigned
        z = zeros.to(torch.int64) + half
        g_idx = torch.arange(q.shape[1]) // group
        linear = torch.nn.Linear(q.shape[1], q.shape[0], bias=False)
        linear.weight.data = ((q - z[:, g_idx]).float() * s16[:, g_idx]).contiguous()
        packed = WQLinear_GEMM.from_linear(
            linear, 4, group, scales=s16.t().contiguous(), zeros=z.t().contiguous().float()
        )
        out[base + "qweight"] = packed.qweight.cpu()
        out[base + "qzeros"] = packed.qzeros.cpu()
        out[base + "scales"] = packed.scales.cpu()
    os.makedirs(a.out, exist_ok=True)
    save_file(out, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg["quantization_config"] = {
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
        "bits": 4,
        "group_size": group,
        "modules_to_not_convert": qc.get("ignore") or None,
    }
    cfg["torch_dtype"] = "float16" if a.f16 else cfg.get("torch_dtype", "float32")
    cfg.pop("dtype", None)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for f in os.listdir(a.dir):
        if f.startswith(SIDE_FILES):
            shutil.copy(os.path.join(a.dir, f), a.out)
    print(f"wrote AutoAWQ GEMM {a.out} (group {group}, {'f16' if a.f16 else 'float32'} non-quantized tensors)")
    return 0


def cmd_ct(a):
    """transformers and llama.cpp's converter on a compressed-tensors AWQ dir vs llmtool."""
    from safetensors.torch import save_file

    with open(os.path.join(a.dir, "config.json")) as f:
        weights = next(iter(json.load(f)["quantization_config"]["config_groups"].values()))["weights"]
    assert not weights["symmetric"], "not an asymmetric (AWQ) checkpoint"
    with open(a.ids) as f:
        ids = json.load(f)["ids"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        f32 = llmtool_convert(a.dir, tmp)
        ours = load_dir(f32)
        model = gptq.load(a.dir)
        theirs = gptq.float_weights(model)
        if "lm_head.weight" in theirs and "lm_head.weight" not in ours:
            theirs.pop("lm_head.weight")  # tied: llmtool writes the embedding only
        ok &= compare_exact(ours, theirs, "compressed-tensors: transformers' decompression vs llmtool convert")
        want = gptq.logits_of(model, ids)
        got = gptq.logits_of(gptq.load(f32), ids)
        worst = max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want))
        same = all(bool((g.argmax(-1) == w.argmax(-1)).all()) for g, w in zip(got, want))
        print(f"logits, transformers on the checkpoint vs on llmtool's weights: worst max |diff| / max |logit| "
              f"{worst:.3e} (tolerance {a.tol}), argmax equal {same}")
        ok &= worst <= a.tol
        ref = os.path.join(tmp, "llmtool.safetensors")
        save_file({k: v.float().contiguous() for k, v in ours.items()}, ref)
        if not os.path.exists(os.path.join(a.dir, "tokenizer.json")):
            # The converter writes the vocabulary and cannot run without one.
            print("llama.cpp convert_hf_to_gguf.py: SKIPPED, the checkpoint has no tokenizer")
        else:
            print("llama.cpp convert_hf_to_gguf.py on the checkpoint vs llmtool's weights:")
            ok &= gptq.cmd_gguf(argparse.Namespace(dir=a.dir, ref=ref, tol=0.0)) == 0
    return 0 if ok else 1


def cmd_self_test(a):
    ok = cmd_ct(a) == 0
    with tempfile.TemporaryDirectory() as tmp:
        for f16 in (False, True):
            gemm = os.path.join(tmp, "gemm-f16" if f16 else "gemm")
            cmd_to_gemm(argparse.Namespace(dir=a.dir, out=gemm, f16=f16))
            ok &= cmd_gemm(argparse.Namespace(dir=gemm)) == 0
        ok &= codes_survive(a.dir, os.path.join(tmp, "gemm"))
    print("self-test", "passed" if ok else "FAILED")
    return 0 if ok else 1


def codes_survive(ct_dir, gemm_dir):
    """The GEMM repack holds the compressed-tensors codes and zeros unchanged
    (AutoAWQ's unpack_awq + reverse_awq_order), its scales are theirs rounded to f16."""
    from awq.utils.packing_utils import reverse_awq_order, unpack_awq

    with open(os.path.join(ct_dir, "config.json")) as f:
        weights = next(iter(json.load(f)["quantization_config"]["config_groups"].values()))["weights"]
    ct, gemm = load_dir(ct_dir), load_dir(gemm_dir)
    bad = 0
    for k in ct:
        if not k.endswith(".weight_packed"):
            continue
        base = k.removesuffix("weight_packed")
        codes, scale, zeros = ct_codes(ct, base, weights)
        iw, iz = reverse_awq_order(*unpack_awq(gemm[base + "qweight"], gemm[base + "qzeros"], 4), 4)
        iw, iz = iw & 0xF, iz & 0xF
        same = (
            torch.equal(iw.t().to(torch.int64), codes.to(torch.int64) + 8)
            and torch.equal(iz.t().to(torch.int64), zeros.to(torch.int64) + 8)
            and torch.equal(gemm[base + "scales"], scale.t().to(torch.float16))
        )
        bad += not same
        if not same:
            print("  codes, zeros or scales changed by the GEMM repack:", base)
    print(f"GEMM repack: codes, zeros and f16 scales of every linear as in {ct_dir}: {bad == 0}")
    return bad == 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gemm")
    g.add_argument("dir")
    c = sub.add_parser("ct")
    s = sub.add_parser("self-test")
    for q in (c, s):
        q.add_argument("dir")
        q.add_argument("ids")
        q.add_argument("--tol", type=float, default=1e-3)
    t = sub.add_parser("to-gemm")
    t.add_argument("dir")
    t.add_argument("out")
    t.add_argument("--f16", action="store_true", help="store the non-quantized tensors in f16")
    a = p.parse_args()
    return {"gemm": cmd_gemm, "ct": cmd_ct, "to-gemm": cmd_to_gemm, "self-test": cmd_self_test}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
