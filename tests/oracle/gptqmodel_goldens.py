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
    a = p.parse_args()
    if a.cmd == "run":
        run(a.model_dir, a.ids, a.out, a.gar)
    else:
        goldens(a.out, a.fixture)


if __name__ == "__main__":
    sys.exit(main())
