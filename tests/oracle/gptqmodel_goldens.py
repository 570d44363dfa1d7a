"""GPTQModel's GPTQ on SmolLM2, on CPU: the reference for llmtool's defaults.

llmtool's GPTQ defaults follow GPTQModel (true-sequential groups, group-aware
act-order, group scales from the weights as GPTQ has updated them), where the
other goldens (gptq_model_goldens.py) follow llm-compressor. This script runs
GPTQModel 7.6.0 itself on CPU and keeps layer 0's q/k/v codes and scales as a
golden: their inputs are the embeddings of the same ids in both tools, so
they must agree (tests/gptq_model.rs).

    run     MODEL_DIR IDS.json OUT_DIR [--no-gar]   quantize (bits 4, group 64, sym,
            desc_act off, act_group_aware on unless --no-gar, every other setting
            GPTQModel's default: damp 0.05, true_sequential) and save (GPTQ v1)
    goldens OUT_DIR FIXTURE_DIR                     layer 0 q/k/v of a `run` output
    replay  CHECKPOINT MODEL_DIR IDS.json            is each layer-0 linear of a GPTQ v1
            checkpoint (GPTQModel's or llmtool's, natural column order) what GPTQ
            gives on the inputs that the checkpoint's OWN quantized predecessors
            produce? Needs torch and transformers only.

Environment: the oracle venv's torch 2.9.1 with transformers 5.17.0 in front
(requirements-gptq-model.txt, T5DIR) and GPTQModel (requirements-gptqmodel.txt,
installed `--no-deps --target GMDIR`):

    PYTHONPATH=GMDIR:T5DIR CUDA_VISIBLE_DEVICES= python tests/oracle/gptqmodel_goldens.py run ...

Only one thing is changed from the library's defaults, and it is not code:
GPTQMODEL_CPU_WORKERS=2, since on a 2-core machine GPTQModel sizes its CPU
worker pool at 1 but asks 2 for model loading and stops with a ValueError.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")

PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]


def run(model_dir, ids_path, out, gar):
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    torch.set_num_threads(2)
    with open(ids_path) as f:
        ids = json.load(f)["ids"]
    # Fed verbatim: no BOS, no padding, one window per batch.
    rows = [{"input_ids": [int(t) for t in w], "attention_mask": [1] * len(w)} for w in ids]
    kw = dict(bits=4, group_size=64, sym=True, desc_act=False, device="cpu")
    if not gar:
        kw["act_group_aware"] = False
    cfg = QuantizeConfig(**kw)
    print(f"act_group_aware={cfg.act_group_aware} damp={cfg.damp_percent} "
          f"true_sequential={cfg.true_sequential}", flush=True)
    model = GPTQModel.load(model_dir, cfg, dtype=torch.float32)
    t0 = time.time()
    model.quantize(rows, batch_size=1)
    print(f"quantize: {time.time() - t0:.1f} s", flush=True)
    model.save(out)


def goldens(out, fixture):
    """Every row of layer 0's q/k/v: codes (u8, original column order) and
    scales (f32, [group][row]), in gptq_model_goldens.py's format."""
    import numpy as np
    from safetensors.numpy import load_file

    t = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".safetensors"):
            t.update(load_file(os.path.join(out, name)))
    qc = json.load(open(os.path.join(out, "quantize_config.json")))
    group = qc["group_size"]
    codes, scales, modules = bytearray(), bytearray(), []
    for p in PROJECTIONS:
        name = f"model.layers.0.{p}"
        q = t[name + ".qweight"].astype(np.uint32)  # [in/8, out], 8 nibbles per int32
        c = np.stack([(q >> (4 * i)) & 15 for i in range(8)], 1).reshape(-1, q.shape[1])  # [in, out]
        s = t[name + ".scales"].astype(np.float32)  # [groups, out]
        assert (t[name + ".g_idx"] == np.arange(c.shape[0]) // group).all(), "g_idx is not trivial"
        modules.append(dict(name=name, in_features=int(c.shape[0]), groups=int(s.shape[0]),
                            rows=list(range(c.shape[1])), codes_offset=len(codes),
                            scales_offset=len(scales), loss=0.0))
        codes += c.T.astype(np.uint8).tobytes()
        scales += s.astype("<f4").tobytes()
    os.makedirs(fixture, exist_ok=True)
    with open(os.path.join(fixture, "codes.u8"), "wb") as f:
        f.write(codes)
    with open(os.path.join(fixture, "scales.f32"), "wb") as f:
        f.write(scales)
    meta = dict(group_size=group, actorder=None, reference=qc.get("meta", {}).get("quantizer"),
                damp=qc.get("meta", {}).get("damp_percent"),
                act_group_aware=qc.get("meta", {}).get("act_group_aware"), modules=modules)
    with open(os.path.join(fixture, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def _v1_codes(t, name):
    """[out, in] integer codes of a GPTQ v1 linear (int4, 8 per int32 along in)."""
    import numpy as np
    import torch

    q = t[name + ".qweight"].astype(np.uint32)
    c = np.stack([(q >> (4 * i)) & 15 for i in range(8)], 1).reshape(-1, q.shape[1])
    return torch.from_numpy(c.astype(np.int64)).T


def _gptq_natural(W, H, group, damp, block=128):
    """GPTQ as GPTQModel 7.6 runs it without act-order or GAR, sym int4, in
    float32: lazy blocks of 128, a group's scale from W as its block starts."""
    import torch

    W, H, cols = W.clone().float(), H.clone().float(), W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    C = torch.zeros(W.shape, dtype=torch.int64)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, E, H1 = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                x = W[:, i1 + i:i1 + i + group]
                xmax = torch.maximum(x.max(1).values.clamp(min=0), -x.min(1).values.clamp(max=0))
                xmax[xmax == 0] = 1
                s = 2 * xmax / 15
            c = torch.clamp(torch.round(W1[:, i] / s) + 8, 0, 15)
            C[:, i1 + i] = c.long()
            e = (W1[:, i] - s * (c - 8)) / H1[i, i]
            W1[:, i:] -= e.unsqueeze(1) @ H1[i, i:].unsqueeze(0)
            E[:, i] = e
        W[:, i2:] -= E @ Hinv[i1:i2, i2:]
    return C


def replay(checkpoint, model_dir, ids_path):
    """Re-derive layer 0's o/gate/up/down from the checkpoint's own earlier
    true-sequential groups. Two GPTQ implementations that agree this way
    differ on later linears only through the codes of earlier ones."""
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    t = {}
    for name in sorted(os.listdir(checkpoint)):
        if name.endswith(".safetensors"):
            t.update(load_file(os.path.join(checkpoint, name)))
    qc = json.load(open(os.path.join(checkpoint, "quantize_config.json")))
    assert qc["bits"] == 4 and qc["sym"] and not qc["desc_act"], "sym int4, natural order only"
    assert not qc.get("act_group_aware") and not qc.get("meta", {}).get("act_group_aware"), \
        "natural column order only (quantize with --no-gar / --no-group-aware)"
    group, damp = qc["group_size"], qc.get("damp_percent", qc.get("meta", {}).get("damp_percent"))
    ids = torch.tensor(json.load(open(ids_path))["ids"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.model.layers = model.model.layers[:1]
    layer = model.model.layers[0]
    original = {n: p.detach().clone() for n, p in layer.named_parameters()}

    def dequantized(p):
        name = f"model.layers.0.{p}"
        c = _v1_codes(t, name)
        s = torch.from_numpy(t[name + ".scales"].astype(np.float32)).T
        return (c - 8).float() * s.repeat_interleave(group, 1)

    def hessian(target, quantized):
        acc = {}

        def hook(_m, inp, _o):
            x = inp[0].reshape(-1, inp[0].shape[-1]).double()
            acc["h"] = acc.get("h", 0) + x.T @ x

        module = layer.get_submodule(target)
        with torch.no_grad():
            for p in quantized:
                layer.get_submodule(p).weight.copy_(dequantized(p))
            handle = module.register_forward_hook(hook)
            model(ids)
            handle.remove()
            for n, p in layer.named_parameters():
                p.copy_(original[n])
        return (acc["h"] * 2 / ids.numel()).float()

    steps = [("self_attn.o_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
             ("mlp.up_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]),
             ("mlp.down_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj", "mlp.up_proj"])]
    for target, quantized in steps:
        codes = _v1_codes(t, f"model.layers.0.{target}")
        W = original[target + ".weight"]
        own = _gptq_natural(W, hessian(target, quantized), group, damp)
        line = f"{target}: {100 * (own == codes).float().mean():.2f} % of codes from its own predecessors"
        if target == "mlp.down_proj":
            unq = _gptq_natural(W, hessian(target, quantized[:4]), group, damp)
            line += f", {100 * (unq == codes).float().mean():.2f} % if gate/up were left unquantized"
        print(line, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model_dir")
    r.add_argument("ids")
    r.add_argument("out")
    r.add_argument("--no-gar", dest="gar", action="store_false")
    g = sub.add_parser("goldens")
    g.add_argument("out")
    g.add_argument("fixture")
    x = sub.add_parser("replay")
    x.add_argument("checkpoint")
    x.add_argument("model_dir")
    x.add_argument("ids")
    a = p.parse_args()
    if a.cmd == "run":
        run(a.model_dir, a.ids, a.out, a.gar)
    elif a.cmd == "goldens":
        goldens(a.out, a.fixture)
    else:
        replay(a.checkpoint, a.model_dir, a.ids)


if __name__ == "__main__":
    sys.exit(main())
