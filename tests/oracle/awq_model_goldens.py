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
        SMOLLM2_HF_DIR IDS.json --group 64 [--no-duo-scaling] OUT_DIR
    PYTHONPATH=T5DIR:DIR python tests/oracle/awq_model_goldens.py crosscheck tiny-llama \
        [--no-duo-scaling]
    PYTHONPATH=T5DIR:DIR python tests/oracle/awq_model_goldens.py crosscheck smollm2 \
        SMOLLM2_HF_DIR [--layers N]

`goldens` writes fixtures/awq_model/<model>/<variant>/ (format in fixtures/README.md);
`--save-compressed` and `reference` save the quantized model with
`save_compressed=True` (compressed-tensors pack-quantized, asymmetric: zero points
stored), for the quality table and the consumer checks. Each prints the wall time
of the oneshot call. `crosscheck` re-runs the algorithm written out by hand and
compares it with the committed goldens (see its docstring).
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
        json.loads(text + "\n}\n")  # still valid JSON
        with open(meta_path, "w") as f:
            f.write(text + "\n}\n")
        print(variant_name(group, duo), f"{seconds:.1f}s", len(mappings), "mappings", len(modules), "linears")
        if save_compressed and duo:
            save(model, model_dir, save_compressed)


def save(model, model_dir, out):
    model.save_pretrained(out, save_compressed=True)
    if model_dir != TINY:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    print(f"saved compressed-tensors checkpoint to {out}", file=sys.stderr)


def read_mappings(model_key, variant):
    vdir = os.path.join(OUT, model_key, variant)
    with open(os.path.join(vdir, "meta.json")) as f:
        meta = json.load(f)
    scales = np.fromfile(os.path.join(vdir, "awq_scales.f32"), dtype="<f4")
    return meta, {
        m["smooth"]: (m, scales[m["scales_offset"] // 4 : m["scales_offset"] // 4 + m["channels"]])
        for m in meta["mappings"]
    }


def read_codes(model_key, variant):
    """{linear name: (rows, codes u8 [rows, in], scales [groups, rows], zeros u8 [groups, rows])}."""
    vdir = os.path.join(OUT, model_key, variant)
    with open(os.path.join(vdir, "meta.json")) as f:
        meta = json.load(f)
    codes = np.fromfile(os.path.join(vdir, "codes.u8"), dtype=np.uint8)
    scales = np.fromfile(os.path.join(vdir, "scales.f32"), dtype="<f4")
    zeros = np.fromfile(os.path.join(vdir, "zeros.u8"), dtype=np.uint8)
    out = {}
    for m in meta["modules"]:
        r, c, g = len(m["rows"]), m["in_features"], m["groups"]
        out[m["name"]] = (
            m["rows"],
            codes[m["codes_offset"] : m["codes_offset"] + r * c].reshape(r, c),
            scales[m["scales_offset"] // 4 : m["scales_offset"] // 4 + g * r].reshape(g, r),
            zeros[m["zeros_offset"] : m["zeros_offset"] + g * r].reshape(g, r),
        )
    return out


def crosscheck(model_key, model_dir, duo, layers):
    """The algorithm the goldens claim, written out by hand, against the goldens.

    Per decoder layer: run it with its current (smoothed, unquantized) weights on the
    previous layer's outputs, capturing the inputs of self_attn, mlp and down_proj; per
    mapping x_mean = mean |x| per input channel over all tokens, w_mean = mean over the
    balance layers' rows of |W| / (max |W| of its group + 1e-6), for each grid point
    s = x_mean^r / (w_mean^(1-r) + 1e-4) (duo) or x_mean^r, clamped to >= 1e-4 and
    divided by sqrt(max·min); the balance layers get Q(W·s)/s (min-max asymmetric
    qparams per group of W·s, compressed-tensors' fake_quantize), the parent module
    (self_attn, mlp, or down_proj itself) re-runs on its captured inputs with every
    other linear in float, loss = mean squared error against its float output; the
    first minimum wins; then W·s in the balance layers, the smooth layer (norm weight,
    or up_proj's rows) divided by s. The next layer sees this layer's output with the
    smoothed float weights: nothing is quantized while calibrating."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize, quantize
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    group = GOLDENS[model_key][0]
    meta, golden = read_mappings(model_key, variant_name(group, duo))
    with open(os.path.join(ROOT, meta["ids"])) as f:
        ids = torch.tensor(json.load(f)["ids"])
    args = QuantizationArgs(num_bits=BITS, type="int", symmetric=False, strategy="group", group_size=group)
    grid = [(g["ratio"], g["duo"]) for g in meta["grid"]]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config._attn_implementation = "eager"  # as oneshot calibrates

    def q_over_s(w, s):
        ws = w * s.view(1, -1)
        grouped = ws.reshape(ws.shape[0], -1, group)
        scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
        return fake_quantize(ws, scale, zp, args) / s.view(1, -1)

    def w_mean_of(linears):
        total, count = 0, 0
        for m in linears:
            w = m.weight.detach().clone().reshape(-1, group).abs()
            w = (w / (w.amax(dim=1, keepdim=True) + 1e-6)).reshape(m.weight.shape)
            total, count = total + w.sum(0, dtype=torch.float64), count + w.shape[0]
        return total / count

    golden_codes = read_codes(model_key, variant_name(group, duo))
    worst_idx, compared, agree, lowest_codes = 0.0, 0, 0, 1.0
    with torch.no_grad():
        hidden = [model.model.embed_tokens(s[None]) for s in ids]
        pos = torch.arange(ids.shape[1])[None]
        rope = model.model.rotary_emb(hidden[0], pos)
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
        for li, layer in enumerate(model.model.layers[:layers]):
            attn, mlp = layer.self_attn, layer.mlp
            caught = {attn: [], mlp: [], mlp.down_proj: []}

            def keep(mod, a, kw):
                caught[mod].append((a, kw))

            hooks = [m.register_forward_pre_hook(keep, with_kwargs=True) for m in caught]

            def run(h):
                out = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
                return out[0] if isinstance(out, tuple) else out

            for h in hidden:
                run(h)
            for h in hooks:
                h.remove()

            def outputs(mod):
                res = [mod(*a, **kw) for a, kw in caught[mod]]
                return [r[0] if isinstance(r, tuple) else r for r in res]

            def x_of(mod):
                # Every token of the parent's input, which is also the balance
                # layers' (self_attn's and mlp's: the norm's output).
                xs = [a[0] if a else kw["hidden_states"] for a, kw in caught[mod]]
                return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])

            mappings = [
                (layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], attn),
                (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], mlp),
                (mlp.up_proj, [mlp.down_proj], mlp.down_proj),
            ]
            names = {m: n for n, m in model.named_modules()}
            for smooth, balance, parent in mappings:
                g, want_scales = golden[names[smooth]]
                x = x_of(parent)
                x_mean = x.abs().sum(0) / x.shape[0]
                w_mean = w_mean_of(balance) if duo else None
                want = outputs(parent)
                orig = [m.weight.detach().clone() for m in balance]
                losses, best, best_s = [], None, None
                for ratio, use_duo in grid:
                    if use_duo:
                        s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
                    else:
                        s = x_mean.pow(ratio).clamp(min=1e-4).view(-1)
                    s = s / (s.max() * s.min()).sqrt()
                    for m, w in zip(balance, orig):
                        m.weight.copy_(q_over_s(w, s))
                    got = outputs(parent)
                    loss = sum(torch.nn.functional.mse_loss(a, b, reduction="sum") for a, b in zip(want, got))
                    losses.append((loss / sum(a.numel() for a in want)).item())
                    if best is None or losses[-1] < losses[best]:
                        best, best_s = len(losses) - 1, s.clone()
                rel = max(abs(a - b) / abs(b) for a, b in zip(losses, g["losses"]))
                compared += 1
                agree += best == g["best"]
                srel = float((best_s.float() - torch.tensor(want_scales)).abs().max() / torch.tensor(want_scales).abs().max())
                print(f"{names[smooth]}: best {best} (golden {g['best']}), losses max rel diff {rel:.2e}, scales max rel diff {srel:.2e}")
                worst_idx = max(worst_idx, rel)
                for m, w in zip(balance, orig):
                    m.weight.copy_(w * best_s.view(1, -1))
                if smooth.weight.ndim == 1:
                    smooth.weight.div_(best_s)
                else:
                    smooth.weight.div_(best_s.view(-1, 1))
            for m in [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]:
                # The final codes: min-max qparams of the smoothed weight, quantized.
                rows, codes, scales, zeros = golden_codes[names[m]]
                w = m.weight.detach()[rows]
                grouped = w.reshape(w.shape[0], -1, group)
                scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
                q = quantize(w, scale, zp, args) + 2 ** (BITS - 1)
                same = float((q.to(torch.uint8).numpy() == codes).mean())
                lowest_codes = min(lowest_codes, same)
                rel = float(np.abs(scale.t().numpy() - scales).max() / np.abs(scales).max())
                zsame = float(((zp.to(torch.int64) + 2 ** (BITS - 1)).t().numpy() == zeros).mean())
                print(f"  {names[m]}: codes equal {same:.6f}, zeros equal {zsame:.6f}, scales max rel diff {rel:.1e}")
            hidden = [run(h) for h in hidden]
    print(f"{model_key} duo_scaling={duo}: chosen grid index equal in {agree} of {compared} mappings; "
          f"largest relative loss difference {worst_idx:.2e}; lowest per-linear code agreement {lowest_codes:.6f}")


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
    c = sub.add_parser("crosscheck")
    c.add_argument("model", choices=list(GOLDENS))
    c.add_argument("model_dir", nargs="?", default=TINY)
    c.add_argument("--no-duo-scaling", dest="duo", action="store_false")
    c.add_argument("--layers", type=int, default=None, help="stop after this many layers")
    a = p.parse_args()
    if a.cmd == "crosscheck":
        crosscheck(a.model, a.model_dir, a.duo, a.layers)
    elif a.cmd == "goldens":
        assert (a.model == "tiny-llama") == (a.model_dir == TINY), "smollm2 needs its HF dir"
        write_goldens(a.model, a.model_dir, a.save_compressed)
    else:
        with open(a.ids) as f:
            ids = json.load(f)["ids"]
        model, _, _, _ = run_oneshot(a.model_dir, ids, a.group, a.duo)
        save(model, a.model_dir, a.out)


if __name__ == "__main__":
    main()
