"""The real consumers of a GPTQ checkpoint as judges: transformers and llama.cpp's converter.

    # transformers (compressed-tensors installed), CPU, float32: logits for given ids
    python tests/oracle/check_gptq_consumers.py logits DIR IDS.json --record OUT.json
    python tests/oracle/check_gptq_consumers.py logits DIR LOGITS.json [--tol 1e-3]

    # the float weights transformers' loader dequantizes DIR to, as a reference
    python tests/oracle/check_gptq_consumers.py dequant DIR OUT.safetensors

    # llama.cpp's convert_hf_to_gguf.py --outtype f32 on DIR (GPTQ v1/v2 or
    # compressed-tensors pack-quantized), every tensor compared with REF.safetensors
    LLAMA_CPP=/path/to/llama.cpp python tests/oracle/check_gptq_consumers.py gguf DIR REF.safetensors

    # GPTQ v1 (AutoGPTQ's packing) from a compressed-tensors pack-quantized DIR, and
    # the float weights its f16 scales give (the reference for `gguf` on it)
    python tests/oracle/check_gptq_consumers.py to-v1 DIR OUT_DIR --ref OUT.safetensors

IDS.json / LOGITS.json: {"ids": [[id, …], …]} (sequences, no BOS added) and, in
LOGITS.json, "logits": [sequence][position][vocab] float32 — what `--record` writes
and what the Rust side writes from our engine for the same checkpoint.

`logits` and `dequant` load through transformers' compressed-tensors integration
(`transformers` 5.17.0 + compressed-tensors 0.19.0, the GPTQ model goldens'
environment; see tests/oracle/requirements-gptq-model.txt); `gguf` runs the converter in the
same Python with gguf-py from $LLAMA_CPP. Exit 1 on any difference over tolerance.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

# Progress bars would bury the results in the logs.
os.environ.setdefault("TQDM_DISABLE", "1")

LLAMA_CPP = os.environ.get("LLAMA_CPP", "/work/llama.cpp")


def load(d):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()


def logits_of(model, ids):
    out = []
    with torch.no_grad():
        for seq in ids:
            out.append(model(torch.tensor([seq])).logits[0].float())
    return out


def cmd_logits(a):
    with open(a.json) as f:
        spec = json.load(f)
    model = load(a.dir)
    got = logits_of(model, spec["ids"])
    if a.record:
        with open(a.record, "w") as f:
            json.dump({"ids": spec["ids"], "logits": [g.tolist() for g in got]}, f)
        print(f"recorded logits of {len(got)} sequences to {a.record}")
        return 0
    worst = 0.0
    for i, (g, want) in enumerate(zip(got, spec["logits"])):
        want = torch.tensor(want)
        assert want.shape == g.shape, f"sequence {i}: logits {tuple(want.shape)} vs {tuple(g.shape)}"
        # Relative to the largest logit, as the engine tests judge logits.
        err = ((g - want).abs().max() / want.abs().max()).item()
        worst = max(worst, err)
        print(f"sequence {i}: max |diff| / max |logit| = {err:.3e}, argmax equal {bool((g.argmax(-1) == want.argmax(-1)).all())}")
    print(f"worst {worst:.3e} (tolerance {a.tol})")
    return 0 if worst <= a.tol else 1


def float_weights(model):
    """Every parameter as transformers computes with it (decompressed)."""
    from compressed_tensors.compressors import ModelCompressor

    # transformers 5 decompresses pack-quantized weights on load; older loaders may not.
    if any(k.endswith("weight_packed") for k in model.state_dict()):
        ModelCompressor.from_pretrained_model(model).decompress_model(model)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(("weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape")):
            continue
        sd[k] = v.detach().float().clone()  # clone: tied lm_head shares the embedding
    return sd


def cmd_dequant(a):
    from safetensors.torch import save_file

    sd = float_weights(load(a.dir))
    save_file(sd, a.out)
    print(f"wrote {len(sd)} tensors to {a.out}")
    return 0


def permute(w, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute: Q/K rows in GGUF's rotary order."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def cmd_gguf(a):
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    import gguf
    from safetensors.numpy import load_file

    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    ref = load_file(a.ref)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model-f32.gguf")
        env = dict(os.environ, PYTHONPATH=os.path.join(LLAMA_CPP, "gguf-py") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        run = subprocess.run(
            [sys.executable, os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py"), a.dir, "--outtype", "f32", "--outfile", out],
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-6000:])
            print(f"convert_hf_to_gguf.py failed on {a.dir} (exit {run.returncode})")
            return 1
        reader = gguf.GGUFReader(out)
        tensors = {t.name: np.array(t.data) for t in reader.tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    worst, missing, checked = 0.0, [], 0
    for hf_name, want in ref.items():
        gg = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gg is None:
            missing.append(hf_name)
            continue
        if hf_name.endswith("q_proj.weight"):
            want = permute(want, cfg["num_attention_heads"], cfg["num_attention_heads"])
        elif hf_name.endswith("k_proj.weight"):
            want = permute(want, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        if gg not in tensors:
            if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                continue  # tied: the converter writes token_embd only
            missing.append(hf_name)
            continue
        got = tensors[gg].reshape(want.shape)
        err = float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))
        worst = max(worst, err)
        checked += 1
        if err > a.tol:
            print(f"{hf_name} ({gg}): max |diff| / max |w| = {err:.3e}")
    print(f"{checked} tensors compared, worst relative difference {worst:.3e} (tolerance {a.tol}); missing: {missing or 'none'}")
    return 0 if worst <= a.tol and not missing else 1


def cmd_to_v1(a):
    """compressed-tensors pack-quantized (sym int4, group G) -> AutoGPTQ v1.

    AutoGPTQ's packing (qlinear_cuda_old/exllama `pack`): qweight int32 [in/8, out],
    eight consecutive input rows per word, nibble j = row 8r+j, unsigned codes
    (signed + 8); qzeros int32 [groups, out/8] holding zero − 1 = 7 in every nibble
    (0x77777777); scales float16 [groups, out]; g_idx int32 [in] = i // G."""
    import shutil

    from safetensors.torch import load_file, save_file

    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized", qc.get("format")
    weights = next(iter(qc["config_groups"].values()))["weights"]
    assert weights["num_bits"] == 4 and weights["symmetric"] and weights["strategy"] == "group"
    group = weights["group_size"]
    files = sorted(f for f in os.listdir(a.dir) if f.endswith(".safetensors"))
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(a.dir, f)))
    out, ref = {}, {}
    for k, v in sd.items():
        if not k.endswith(".weight_packed"):
            if not k.endswith(("weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx")):
                out[k] = v
                ref[k] = v.float()
            continue
        base = k.removesuffix(".weight_packed")
        rows, cols = sd[base + ".weight_shape"].tolist()
        # compressed-tensors packs eight signed+8 codes per int32 along the input dim.
        shifts = torch.arange(0, 32, 4, dtype=torch.int32)
        codes = ((v.unsqueeze(-1) >> shifts) & 0xF).reshape(rows, -1)[:, :cols]  # [out, in], unsigned
        q = codes.t().contiguous().to(torch.int64)  # [in, out]
        qweight = torch.zeros(cols // 8, rows, dtype=torch.int64)
        for j in range(8):
            qweight |= q[j::8] << (4 * j)
        groups = cols // group
        word = sum(7 << (4 * j) for j in range(8))  # zero 8 stored as 8 − 1
        out[base + ".qweight"] = qweight.to(torch.int32)  # wraps: the bit pattern is kept
        out[base + ".qzeros"] = torch.full((groups, rows // 8), word, dtype=torch.int64).to(torch.int32)
        out[base + ".scales"] = sd[base + ".weight_scale"].t().contiguous().to(torch.float16)
        out[base + ".g_idx"] = torch.arange(cols, dtype=torch.int32) // group
        # What a v1 reader must compute: the f16 scales times (code − 8).
        g_idx = torch.arange(cols) // group
        ref[base + ".weight"] = (out[base + ".scales"].float()[g_idx].t() * (codes - 8).float()).contiguous()
    os.makedirs(a.out, exist_ok=True)
    save_file(out, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    qconf = {
        "bits": 4,
        "group_size": group,
        "damp_percent": 0.01,
        "desc_act": False,
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
    }
    cfg["quantization_config"] = qconf
    cfg["torch_dtype"] = "float16"
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "quantize_config.json"), "w") as f:
        json.dump(qconf, f, indent=2)
    for f in os.listdir(a.dir):
        if f.startswith(("tokenizer", "special_tokens", "generation_config", "chat_template")):
            shutil.copy(os.path.join(a.dir, f), a.out)
    if a.ref:
        save_file(ref, a.ref)
    print(f"wrote GPTQ v1 {a.out}" + (f" and its dequantization {a.ref}" if a.ref else ""))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("logits")
    l.add_argument("dir")
    l.add_argument("json")
    l.add_argument("--record")
    l.add_argument("--tol", type=float, default=1e-3)
    d = sub.add_parser("dequant")
    d.add_argument("dir")
    d.add_argument("out")
    g = sub.add_parser("gguf")
    g.add_argument("dir")
    g.add_argument("ref")
    g.add_argument("--tol", type=float, default=1e-6)
    v = sub.add_parser("to-v1")
    v.add_argument("dir")
    v.add_argument("out")
    v.add_argument("--ref", help="also write the float weights a v1 reader must produce")
    a = p.parse_args()
    return {"logits": cmd_logits, "dequant": cmd_dequant, "gguf": cmd_gguf, "to-v1": cmd_to_v1}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
