"""llm-compressor's AWQ over whole models, layer by layer: goldens and reference runs.

The reference is llm-compressor 0.14's real `oneshot` with the recipe the
deprecated `llmcompressor.modifiers.awq.AWQModifier(...)` shim expands to:

    [transform.awq.AWQModifier(duo_scaling=True | False, n_grid=20),
     QuantizationModifier(scheme="W4A16_ASYM" with group_size G, targets=["Linear"],
                          ignore=["lm_head"])]

with the `sequential` pipeline, on CPU, float32, on the GPTQ model goldens'
calibration token ids (fixtures/gptq_model/<model>/ids.json, fed verbatim: no
padding, no BOS added, one sequence per batch). No clip search: llm-compressor's
AWQ has none (AutoAWQ's `apply_clip` is not part of it).

What it records, per resolved mapping (smooth layer -> balance layers), by wrapping
`AWQModifier._compute_best_scale` and `AWQModifier._compute_loss` (both called by
the real modifier; the wrappers only log): the grid losses in order, the chosen grid
index (the first minimum: the modifier keeps a point only when `loss < best`), and
the returned best scales (float32). After the run: every quantized linear's codes,
scales and zero points (compressed-tensors' own `quantize` on the smoothed weight
with the observed qparams, i.e. what `save_compressed` packs) and the smoothed norm
weights.

CPU-only patch: `AWQModifier._apply_smoothing` pins the cached parent inputs
(`IntermediatesCache.pin_memory`, for faster host-to-device copies), which raises
without CUDA; `torch.Tensor.pin_memory` is replaced by the identity for the run.
Nothing else is patched.

Environment: that of tests/oracle/gptq_model_goldens.py (llmcompressor 0.14.0.1,
compressed-tensors 0.19.0, transformers 5.17.0, torch 2.9.1 CPU):

    PYTHONPATH=T5DIR:DIR python tests/oracle/awq_model_goldens.py goldens tiny-llama
    PYTHONPATH=T5DIR:DIR python tests/oracle/awq_model_goldens.py goldens smollm2 SMOLLM2_HF_DIR \
        [--save-compressed OUT_DIR]
    PYTHONPATH=T5DIR:DIR python tests/oracle/awq_model_goldens.py reference \
        SMOLLM2_HF_DIR IDS.json --group 64 OUT_DIR

`goldens` writes fixtures/awq_model/<model>/<variant>/ (format in fixtures/README.md);
`--save-compressed` and `reference` save the quantized model with
`save_compressed=True` (compressed-tensors pack-quantized, asymmetric: zero points
stored), for the quality table and the consumer checks. Each prints the wall time
of the oneshot call.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

# Progress bars would bury the results in the logs.
os.environ.setdefault("TQDM_DISABLE", "1")
from torch.utils.data import DataLoader

from gptq_model_goldens import ROOT, TINY, byte_tokenizer, versions, write_meta

OUT = os.path.join(ROOT, "fixtures", "awq_model")
IDS = os.path.join(ROOT, "fixtures", "gptq_model")
BITS = 4
N_GRID = 20
# model: (group size, rows kept per linear, duo_scaling variants)
GOLDENS = {
    "tiny-llama": (128, None, [True, False]),  # None: every row
    "smollm2": (64, [0, 1, 2, 3, -1], [True]),
}


def recipe(group, duo):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    # W4A16_ASYM spelled out, so the group size is ours (the preset says 128).
    weights = QuantizationArgs(
        num_bits=BITS, type="int", symmetric=False, strategy="group", group_size=group
    )
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    return [
        AWQModifier(duo_scaling=duo, n_grid=N_GRID),
        QuantizationModifier(config_groups=groups, ignore=["lm_head"]),
    ]


def run_oneshot(model_dir, ids, group, duo):
    """oneshot over `ids`; returns (model, mapping records, grid, seconds)."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    modifiers = recipe(group, duo)
    records, current, grid = [], [], modifiers[0]._get_grid_search_params()
    best_scale, compute_loss, pin = (
        AWQModifier._compute_best_scale,
        AWQModifier._compute_loss,
        torch.Tensor.pin_memory,
    )

    def logged_best_scale(self, mapping, fp16_outputs, orig_layer_weights):
        current.clear()
        scales = best_scale(self, mapping, fp16_outputs, orig_layer_weights)
        assert len(current) == len(grid), f"{mapping.smooth_name}: {len(current)} losses"
        records.append(
            {
                "smooth": mapping.smooth_name,
                "balance": list(mapping.balance_names),
                "parent": mapping.parent_name,
                "losses": list(current),
                # The modifier keeps a grid point only when its loss is strictly lower.
                "best": int(np.argmin(current)),
                "scales": scales.to(torch.float32).numpy().copy(),
            }
        )
        return scales

    def logged_loss(self, fp16_outputs, int_w_outputs):
        loss = compute_loss(self, fp16_outputs, int_w_outputs)
        current.append(loss)
        return loss

    rows = [
        {"input_ids": torch.tensor(s), "attention_mask": torch.ones(len(s), dtype=torch.int64)}
        for s in ids
    ]
    kwargs = dict(
        model=model, recipe=modifiers, dataset=DataLoader(rows, batch_size=1), pipeline="sequential"
    )
    if model_dir == TINY:
        kwargs["processor"] = byte_tokenizer()
    AWQModifier._compute_best_scale = logged_best_scale
    AWQModifier._compute_loss = logged_loss
    # No CUDA: pinning host memory raises; it only speeds up device copies.
    torch.Tensor.pin_memory = lambda self, *a, **k: self
    t0 = time.time()
    try:
        oneshot(**kwargs)
    finally:
        AWQModifier._compute_best_scale = best_scale
        AWQModifier._compute_loss = compute_loss
        torch.Tensor.pin_memory = pin
    seconds = time.time() - t0
    print(f"oneshot awq (duo_scaling={duo}, group {group}): {seconds:.1f}s", file=sys.stderr)
    return model, records, grid, seconds


def quantized_linears(model):
    """(name, unsigned codes [out, in], scales [out, groups], unsigned zeros [out, groups])."""
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize

    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or not hasattr(mod, "weight_scale"):
            continue
        args = mod.quantization_scheme.weights
        w = mod.weight.detach()
        scale = mod.weight_scale.detach().to(torch.float32)
        zp = mod.weight_zero_point.detach()
        # What the pack-quantized compressor stores: signed codes in [-8, 7].
        q = quantize(w, scale, zp, args)
        back = dequantize(q, scale, zp, args)
        assert torch.isfinite(back).all(), name
        half = 2 ** (BITS - 1)
        assert q.min() >= -half and q.max() <= half - 1, f"{name}: codes out of range"
        assert zp.min() >= -half and zp.max() <= half - 1, f"{name}: zero points out of range"
        assert torch.equal(zp.to(torch.float32), zp.to(torch.float32).round()), f"{name}: zero point not integral"
        yield name, (q + half).to(torch.uint8), scale, (zp.to(torch.int64) + half).to(torch.uint8)


def variant_name(group, duo):
    return f"g{group}-" + ("duo" if duo else "noduo")


def write_goldens(model_key, model_dir, save_compressed=None):
    group, rows, duos = GOLDENS[model_key]
    ids_file = os.path.join(IDS, model_key, "ids.json")
    with open(ids_file) as f:
        ids = json.load(f)["ids"]
    for duo in duos:
        vdir = os.path.join(OUT, model_key, variant_name(group, duo))
        os.makedirs(vdir, exist_ok=True)
        model, records, grid, seconds = run_oneshot(model_dir, ids, group, duo)
        mappings, modules, norms = [], [], []
        with open(os.path.join(vdir, "awq_scales.f32"), "wb") as fa:
            for r in records:
                layer = int(r["smooth"].split(".layers.")[1].split(".")[0])
                mappings.append(
                    {
                        "layer": layer,
                        "smooth": r["smooth"],
                        "balance": r["balance"],
                        "parent": r["parent"],
                        "best": r["best"],
                        "channels": int(r["scales"].size),
                        "scales_offset": fa.tell(),
                        "losses": r["losses"],
                    }
                )
                fa.write(r["scales"].astype("<f4").tobytes())
        with (
            open(os.path.join(vdir, "codes.u8"), "wb") as fc,
            open(os.path.join(vdir, "scales.f32"), "wb") as fs,
            open(os.path.join(vdir, "zeros.u8"), "wb") as fz,
        ):
            for name, codes, scale, zeros in quantized_linears(model):
                out_f, in_f = codes.shape
                kept = list(range(out_f)) if rows is None else [r % out_f for r in rows]
                modules.append(
                    {
                        "name": name,
                        "out_features": out_f,
                        "in_features": in_f,
                        "groups": scale.shape[1],
                        "rows": kept,
                        "codes_offset": fc.tell(),
                        "scales_offset": fs.tell(),
                        "zeros_offset": fz.tell(),
                    }
                )
                fc.write(codes[kept].numpy().tobytes())
                # [groups, rows]: the Rust side's scales and zeros are [groups, out].
                fs.write(scale[kept].t().contiguous().numpy().astype("<f4").tobytes())
                fz.write(zeros[kept].t().contiguous().numpy().tobytes())
        with open(os.path.join(vdir, "norms.f32"), "wb") as fn:
            for name, mod in model.named_modules():
                if name.endswith(("input_layernorm", "post_attention_layernorm")):
                    w = mod.weight.detach().to(torch.float32).numpy()
                    norms.append({"name": name, "len": int(w.size), "offset": fn.tell()})
                    fn.write(w.astype("<f4").tobytes())
        meta = {
            "model": model_key,
            "model_dir": os.path.relpath(TINY, ROOT)
            if model_dir == TINY
            else "llmtool convert of SmolLM2-135M-Instruct.Q4_1.gguf",
            "ids": os.path.relpath(ids_file, ROOT),
            "bits": BITS,
            "sym": False,
            "group_size": group,
            "scheme": "W4A16_ASYM (int4, asymmetric, group), targets Linear, ignore lm_head",
            "duo_scaling": duo,
            "n_grid": N_GRID,
            "grid": [{"ratio": ratio, "duo": d} for ratio, d in grid],
            "dtype": "float32",
            "pipeline": "sequential (propagate_error true)",
            "oneshot_seconds": round(seconds, 1),
            "versions": versions(),
            "modules": modules,
        }
        meta_path = os.path.join(vdir, "meta.json")
        write_meta(meta_path, meta)
        # Mappings and norms, one per line too, after the modules.
        with open(meta_path) as f:
            text = f.read().rstrip()[:-1].rstrip()
        for key, items in (("mappings", mappings), ("norms", norms)):
            text += f',\n "{key}": [\n' + ",\n".join(json.dumps(m) for m in items) + "\n ]"
        with open(meta_path, "w") as f:
            f.write(text + "\n}\n")
        json.load(open(meta_path))  # still valid JSON
        print(variant_name(group, duo), f"{seconds:.1f}s", len(mappings), "mappings", len(modules), "linears")
        if save_compressed and duo:
            save(model, model_dir, save_compressed)


def save(model, model_dir, out):
    model.save_pretrained(out, save_compressed=True)
    if model_dir != TINY:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    print(f"saved compressed-tensors checkpoint to {out}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("goldens")
    g.add_argument("model", choices=list(GOLDENS))
    g.add_argument("model_dir", nargs="?", default=TINY)
    g.add_argument("--save-compressed", metavar="OUT_DIR", help="also save the duo_scaling=True checkpoint")
    r = sub.add_parser("reference")
    r.add_argument("model_dir")
    r.add_argument("ids", help="JSON with an \"ids\" list of sequences (e.g. a golden's ids.json)")
    r.add_argument("out")
    r.add_argument("--group", type=int, default=64)
    r.add_argument("--no-duo-scaling", dest="duo", action="store_false")
    a = p.parse_args()
    if a.cmd == "goldens":
        assert (a.model == "tiny-llama") == (a.model_dir == TINY), "smollm2 needs its HF dir"
        write_goldens(a.model, a.model_dir, a.save_compressed)
    else:
        with open(a.ids) as f:
            ids = json.load(f)["ids"]
        model, _, _, _ = run_oneshot(a.model_dir, ids, a.group, a.duo)
        save(model, a.model_dir, a.out)


if __name__ == "__main__":
    main()
