"""llm-compressor's GPTQ over whole models, layer by layer: goldens and reference runs.

The reference is llm-compressor's real `oneshot` with a `GPTQModifier` and the
`sequential` pipeline (each decoder layer is calibrated on the original weights,
its seven linears are quantized, then the layer is re-run with the fake-quantized
weights to give the next layer its inputs: `propagate_error`), on CPU, float32, on
calibration token ids fixed in advance (no padding, no BOS added, fed verbatim).
Scheme: int4, symmetric, group G, actorder None or "weight", ignore lm_head,
dampening_frac 0.01, block 128.

Environment (tests/oracle/requirements-gptq-model.txt):
llmcompressor 0.14.0.1 imports transformers 5 APIs and `datasets`, so these runs use
transformers 5.17.0 + datasets 5.2.0 (and their pure-Python deps) installed
`--no-deps --target T5DIR`, in front of the GPTQ block's DIR, over the oracle venv's
torch 2.9.1:

    PYTHONPATH=T5DIR:DIR python tests/oracle/gptq_model_goldens.py goldens tiny-llama [--no-propagate]
    PYTHONPATH=T5DIR:DIR python tests/oracle/gptq_model_goldens.py goldens smollm2 SMOLLM2_HF_DIR
    PYTHONPATH=T5DIR:DIR python tests/oracle/gptq_model_goldens.py crosscheck tiny-llama [--no-propagate]
    PYTHONPATH=T5DIR:DIR python tests/oracle/gptq_model_goldens.py ids SMOLLM2_HF_DIR 32 512 OUT.json
    PYTHONPATH=T5DIR:DIR python tests/oracle/gptq_model_goldens.py reference \
        SMOLLM2_HF_DIR IDS.json --group 64 --method gptq|rtn [--actorder weight] OUT_DIR

SMOLLM2_HF_DIR is `llmtool convert SmolLM2-135M-Instruct.Q4_1.gguf --out DIR`.
`goldens` writes fixtures/gptq_model/<model>/ (format in fixtures/README.md);
`reference` saves the quantized model with `save_compressed=True` (compressed-tensors
pack-quantized), for the quality table and the consumer checks.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

# Progress bars would bury the results in the logs.
os.environ.setdefault("TQDM_DISABLE", "1")
from torch.utils.data import DataLoader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "gptq_model")
TINY = os.path.join(ROOT, "fixtures", "models", "tiny-llama")
SEED = 16
# The commit whose README.md + docs/*.md are the calibration text (an ancestor of
# the goldens' commit, so the text never changes under them).
CORPUS_COMMIT = "02b5d5a4e6018421cddcf6110a38511b83faaab3"
BITS = 4
DAMP = 0.01
BLOCK = 128
# model: (group size, calibration sequences, tokens per sequence, rows kept per linear)
GOLDENS = {
    "tiny-llama": (128, 16, 128, None),  # None: every row
    "smollm2": (64, 16, 256, [0, 1, 2, 3, -1]),
}
ACTORDERS = [None, "weight"]
# Rows kept by the no-propagation variants (a strict check of every layer):
# every row of tiny-llama (one flipped code can cascade along its row, so a
# sample is too noisy for a 99.9 % bar); a sample of SmolLM2's (size).
NOPROP_ROWS = {"tiny-llama": None, "smollm2": [0, 1, 2, 3, -1]}


def corpus():
    """Calibration text: README.md and docs/*.md (our own text) as of a fixed commit."""
    commit = CORPUS_COMMIT
    names = ["README.md"] + sorted(
        p
        for p in subprocess.check_output(
            ["git", "-C", ROOT, "ls-tree", "--name-only", commit, "docs/"], text=True
        ).split()
        if p.endswith(".md")
    )
    text = "\n\n".join(
        subprocess.check_output(["git", "-C", ROOT, "show", f"{commit}:{n}"], text=True)
        for n in names
    )
    return text, {"commit": commit, "files": names}


def calibration_ids(model_dir, samples, seqlen):
    """`samples` windows of `seqlen` ids at seeded random starts in the tokenized corpus.

    tiny-llama has no tokenizer (vocab 256): its ids are the text's UTF-8 bytes."""
    text, source = corpus()
    if model_dir == TINY:
        ids = list(text.encode("utf-8"))
        source["tokenizer"] = "utf-8 bytes"
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        source["tokenizer"] = "the model's own (transformers AutoTokenizer, add_special_tokens=False)"
    rng = np.random.default_rng(SEED)
    starts = rng.choice(len(ids) - seqlen + 1, size=samples, replace=False)
    source.update(seed=SEED, corpus_tokens=len(ids), starts=[int(s) for s in starts])
    return [ids[s : s + seqlen] for s in starts], source


def byte_tokenizer():
    """A stand-in for tiny-llama's missing tokenizer: oneshot insists on a processor
    when given data, though with a DataLoader it never tokenizes anything."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i:02x}>": i for i in range(256)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<00>")))


def recipe(method, group, actorder):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=BITS, type="int", symmetric=True, strategy="group", group_size=group
    )
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    if method == "rtn":
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return QuantizationModifier(config_groups=groups, ignore=["lm_head"])
    from llmcompressor.modifiers.gptq import GPTQModifier

    # actorder given explicitly: the modifier's default is "static", not None.
    return GPTQModifier(
        config_groups=groups,
        ignore=["lm_head"],
        dampening_frac=DAMP,
        block_size=BLOCK,
        actorder=actorder,
    )


def run_oneshot(model_dir, ids, method, group, actorder, propagate=True):
    """oneshot over `ids`; returns (model, {module name: GPTQ loss}).

    propagate=False feeds each layer the ORIGINAL model's hidden states, so every
    layer's Hessians are independent of how the previous layers were quantized."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import base as gptq_base
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    modifier = recipe(method, group, actorder)
    losses = {}
    names = {m: n for n, m in model.named_modules()}

    class Recorder(gptq_base.CompressionLogger):
        # The modifier logs each module's loss; keep it for the goldens.
        def set_results(self, name, loss):
            losses[names[self.module]] = loss
            super().set_results(name=name, loss=loss)

    logger_class, gptq_base.CompressionLogger = gptq_base.CompressionLogger, Recorder
    kwargs = dict(model=model, recipe=modifier)
    if method == "gptq":
        # A DataLoader is used as given (no tokenization, sampling or truncation):
        # one sequence per batch, in order, exactly these ids.
        rows = [
            {"input_ids": torch.tensor(s), "attention_mask": torch.ones(len(s), dtype=torch.int64)}
            for s in ids
        ]
        kwargs.update(
            dataset=DataLoader(rows, batch_size=1), pipeline="sequential", propagate_error=propagate
        )
        if model_dir == TINY:
            kwargs["processor"] = byte_tokenizer()
    try:
        oneshot(**kwargs)
    finally:
        gptq_base.CompressionLogger = logger_class
    if method == "gptq":
        fallback = modifier._rtn_fallback_module_names
        assert not fallback, f"the reference fell back to round-to-nearest: {fallback}"
    return model, losses


def quantized_linears(model, group):
    """(name, codes unsigned [out, in], scales [out, groups]) per quantized linear."""
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or not hasattr(mod, "weight_scale"):
            continue
        w = mod.weight.detach()
        scale = mod.weight_scale.detach().to(torch.float32)
        zp = mod.weight_zero_point.detach().to(torch.float32)
        assert torch.all(zp == 0), f"{name}: symmetric scheme with a non-zero zero point"
        # actorder None and "weight" keep each column in its natural group and
        # store no g_idx; the goldens rely on that rather than storing i // G.
        g_idx = torch.arange(w.shape[1]) // group
        stored = getattr(mod, "weight_g_idx", None)
        assert stored is None or torch.equal(stored.to(torch.int64), g_idx), f"{name}: g_idx is not i // G"
        s_col = scale[:, g_idx]
        signed = torch.round(w / s_col)
        assert torch.equal(signed * s_col, w), f"{name}: codes do not round-trip"
        half = 2 ** (BITS - 1)
        assert signed.min() >= -half and signed.max() <= half - 1, f"{name}: codes out of range"
        yield name, (signed + half).to(torch.uint8), scale


def variant_name(group, actorder, propagate):
    return f"g{group}-{actorder or 'none'}" + ("" if propagate else "-noprop")


def write_meta(path, meta):
    """meta.json with one module per line: readable, and diffs stay small."""
    head = json.dumps({k: v for k, v in meta.items() if k != "modules"}, indent=1)
    body = ",\n".join(json.dumps(m) for m in meta["modules"])
    with open(path, "w") as f:
        f.write(head[:-2] + ',\n "modules": [\n' + body + "\n ]\n}\n")


def write_goldens(model_key, model_dir, propagate):
    group, samples, seqlen, rows = GOLDENS[model_key]
    if not propagate:
        rows = NOPROP_ROWS[model_key]
    out = os.path.join(OUT, model_key)
    os.makedirs(out, exist_ok=True)
    ids, source = calibration_ids(model_dir, samples, seqlen)
    with open(os.path.join(out, "ids.json"), "w") as f:
        json.dump({"source": source, "ids": ids}, f)
    for actorder in ACTORDERS:
        variant = variant_name(group, actorder, propagate)
        vdir = os.path.join(out, variant)
        os.makedirs(vdir, exist_ok=True)
        t0 = time.time()
        model, losses = run_oneshot(model_dir, ids, "gptq", group, actorder, propagate)
        seconds = time.time() - t0
        modules = []
        with (
            open(os.path.join(vdir, "codes.u8"), "wb") as fc,
            open(os.path.join(vdir, "scales.f32"), "wb") as fs,
        ):
            for name, codes, scale in quantized_linears(model, group):
                out_f, in_f = codes.shape
                kept = list(range(out_f)) if rows is None else [r % out_f for r in rows]
                entry = {
                    "name": name,
                    "out_features": out_f,
                    "in_features": in_f,
                    "groups": scale.shape[1],
                    "rows": kept,
                    "codes_offset": fc.tell(),
                    "scales_offset": fs.tell(),
                    "loss": losses[name],
                }
                fc.write(codes[kept].numpy().tobytes())
                # [groups, rows]: the Rust side's scales are [groups, out].
                fs.write(scale[kept].t().contiguous().numpy().astype("<f4").tobytes())
                modules.append(entry)
        meta = {
            "model": model_key,
            "model_dir": os.path.relpath(TINY, ROOT)
            if model_dir == TINY
            else "llmtool convert of SmolLM2-135M-Instruct.Q4_1.gguf",
            "bits": BITS,
            "sym": True,
            "group_size": group,
            "g_idx": "column // group_size",
            "actorder": actorder,
            "damp": DAMP,
            "block": BLOCK,
            "samples": samples,
            "seqlen": seqlen,
            "dtype": "float32",
            "pipeline": "sequential, propagate_error " + str(propagate).lower(),
            "versions": versions(),
            "modules": modules,
        }
        write_meta(os.path.join(vdir, "meta.json"), meta)
        print(variant, f"{seconds:.1f}s", len(modules), "linears")


def read_golden(model_key, variant):
    vdir = os.path.join(OUT, model_key, variant)
    with open(os.path.join(vdir, "meta.json")) as f:
        meta = json.load(f)
    codes = np.fromfile(os.path.join(vdir, "codes.u8"), dtype=np.uint8)
    scales = np.fromfile(os.path.join(vdir, "scales.f32"), dtype="<f4")
    out = {}
    for m in meta["modules"]:
        r, c, g = len(m["rows"]), m["in_features"], m["groups"]
        out[m["name"]] = (
            m["rows"],
            codes[m["codes_offset"] : m["codes_offset"] + r * c].reshape(r, c),
            scales[m["scales_offset"] // 4 : m["scales_offset"] // 4 + g * r].reshape(g, r),
        )
    return meta, out


def crosscheck(model_key, model_dir, propagate, layers, actorders):
    """The pipeline the goldens claim, written out by hand, against the goldens.

    transformers' decoder layers run one sequence at a time (no mask: causal); each
    layer's linears see its input under the ORIGINAL weights, H = (2/N)·Σ xxᵀ by
    llm-compressor's own accumulate_hessian, scales from each group's min/max of the
    original weight, `quantize_weight` per linear, then the layer re-runs with the
    fake-quantized weights to give the next layer its input (with propagate=False:
    the original layer's output). Agreement shows the
    goldens follow exactly these semantics (the Rust pipeline's), not oneshot's
    incidental details."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    from llmcompressor.modifiers.gptq.helpers import accumulate_hessian
    from transformers import AutoModelForCausalLM

    with open(os.path.join(OUT, model_key, "ids.json")) as f:
        ids = torch.tensor(json.load(f)["ids"])
    group = GOLDENS[model_key][0]
    for actorder in actorders:
        meta, golden = read_golden(model_key, variant_name(group, actorder, propagate))
        args = QuantizationArgs(
            num_bits=BITS, type="int", symmetric=True, strategy="group", group_size=group, actorder=actorder
        )
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        names = {m: n for n, m in model.named_modules()}
        with torch.no_grad():
            hidden = [model.model.embed_tokens(s[None]) for s in ids]
            pos = torch.arange(ids.shape[1])[None]
            rope = model.model.rotary_emb(hidden[0], pos)
            worst = 1.0
            for layer in model.model.layers[:layers]:
                linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
                hess = {m: torch.zeros(m.in_features, m.in_features) for m in linears}
                count = {m: torch.zeros((), dtype=torch.int64) for m in linears}

                def capture(mod, inp, _out):
                    hess[mod], count[mod] = accumulate_hessian(inp[0], mod, hess[mod], count[mod])

                def run(h):
                    out = layer(h, position_embeddings=rope, position_ids=pos)
                    return out[0] if isinstance(out, tuple) else out

                hooks = [m.register_forward_hook(capture) for m in linears]
                original = [run(h) for h in hidden]
                for h in hooks:
                    h.remove()
                for m in linears:
                    w = m.weight.detach()
                    grouped = w.reshape(w.shape[0], -1, group)
                    scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
                    q, _, _ = quantize_weight(
                        w[None].clone(), (hess[m] / count[m])[None], scale[None], zp[None],
                        None, args, blocksize=BLOCK, percdamp=DAMP,
                    )
                    m.weight.copy_(q[0])
                    rows, codes, scales = golden[names[m]]
                    g_idx = torch.arange(w.shape[1]) // group
                    mine = torch.round(q[0][rows] / scale[rows][:, g_idx]) + 2 ** (BITS - 1)
                    same = float((mine.numpy() == codes).mean())
                    rel = np.abs(scale[rows].t().numpy() - scales) / np.abs(scales)
                    worst = min(worst, same)
                    print(f"{names[m]}: codes equal {same:.6f}, scales max rel diff {rel.max():.2e}")
                hidden = [run(h) for h in hidden] if propagate else original
        print(f"{model_key} {actorder}: lowest per-linear code agreement {worst:.6f}")


def versions():
    import compressed_tensors
    import llmcompressor
    import transformers

    return {
        "llmcompressor": llmcompressor.__version__,
        "compressed-tensors": compressed_tensors.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("goldens")
    g.add_argument("model", choices=list(GOLDENS))
    g.add_argument("model_dir", nargs="?", default=TINY)
    i = sub.add_parser("ids")
    i.add_argument("model_dir")
    i.add_argument("samples", type=int)
    i.add_argument("seqlen", type=int)
    i.add_argument("out")
    r = sub.add_parser("reference")
    r.add_argument("model_dir")
    r.add_argument("ids", help="JSON from `ids` (or a golden's ids.json); unused by rtn")
    r.add_argument("out")
    r.add_argument("--group", type=int, default=64)
    r.add_argument("--method", choices=["gptq", "rtn"], default="gptq")
    r.add_argument("--actorder", choices=["weight"], default=None)
    c = sub.add_parser("crosscheck")
    c.add_argument("model", choices=list(GOLDENS))
    c.add_argument("model_dir", nargs="?", default=TINY)
    c.add_argument("--layers", type=int, default=None, help="stop after this many layers")
    c.add_argument("--actorder", choices=["none", "weight"], help="only this variant")
    for q in (g, c):
        q.add_argument("--no-propagate", dest="propagate", action="store_false",
                       help="the -noprop variants: each layer fed the original model's hidden states")
    a = p.parse_args()
    if a.cmd == "crosscheck":
        actorders = ACTORDERS if a.actorder is None else [None if a.actorder == "none" else "weight"]
        crosscheck(a.model, a.model_dir, a.propagate, a.layers, actorders)
    elif a.cmd == "goldens":
        assert (a.model == "tiny-llama") == (a.model_dir == TINY), "smollm2 needs its HF dir"
        write_goldens(a.model, a.model_dir, a.propagate)
    elif a.cmd == "ids":
        ids, source = calibration_ids(a.model_dir, a.samples, a.seqlen)
        with open(a.out, "w") as f:
            json.dump({"source": source, "ids": ids}, f)
    else:
        with open(a.ids) as f:
            ids = json.load(f)["ids"]
        t0 = time.time()
        model, _ = run_oneshot(a.model_dir, ids, a.method, a.group, a.actorder)
        print(f"oneshot {a.method}: {time.time() - t0:.1f}s", file=sys.stderr)
        model.save_pretrained(a.out, save_compressed=True)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(a.model_dir).save_pretrained(a.out)


if __name__ == "__main__":
    main()
