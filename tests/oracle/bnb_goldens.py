"""bitsandbytes as the reference for `llmtool quantize nf4|fp4|int8`.
Deterministic, CPU only.

    python tests/oracle/bnb_goldens.py      # env: tests/oracle/requirements.txt

Writes fixtures/bnb/:
  models/tiny-odd/   a bf16 llama (hidden 100, FFN 150, 5 heads, 1 KV head) whose
                     Linear sizes are not multiples of 64: partial last blocks
  expected.json      per case (model × format): the checkpoint transformers +
                     bitsandbytes write when quantizing on the fly
                     (from_pretrained(quantization_config=...) in the model's
                     own dtype, then save_pretrained): every tensor's dtype,
                     shape and sha256, config.json's quantization_config, and
                     the quantized model's last-position logits for a fixed
                     input; plus "functional": bitsandbytes.functional
                     .quantize_4bit of every Linear weight at other block
                     sizes (transformers always uses 64), sha256 of each
                     serialized tensor
  torch-mean.json    torch's CPU mean of float32 vectors (made by a counter
                     hash, see vector()) with one thread under torch's
                     AVX-512 and AVX2 kernels, and with 2 and 3 threads:
                     the double-quant offset
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

import bitsandbytes
import bitsandbytes.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "bnb")
MODELS = os.path.join(ROOT, "fixtures", "models")
INPUT_IDS = [[1, 5, 9, 42, 7, 3, 100, 200]]
BNB_VERSION = "0.50.2"

# (model dir relative to fixtures/, formats)
CASES = [
    ("models/tiny-llama", ["nf4", "fp4", "int8"]),
    ("models/tiny-qwen2", ["nf4", "int8"]),
    ("models/tiny-llama-hd", ["nf4", "fp4-nodq", "int8"]),
    ("bnb/models/tiny-odd", ["nf4", "fp4", "int8"]),
]
FUNCTIONAL = [
    ("bnb/models/tiny-odd", "nf4", 32, True),
    ("bnb/models/tiny-odd", "fp4", 128, False),
    ("bnb/models/tiny-odd", "nf4", 4096, False),
    ("models/tiny-llama-hd", "fp4", 256, True),
]
MEAN_LENGTHS = [1, 3, 4, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 255, 256, 257, 1000, 1023,
                1024, 1025, 4095, 4097, 16383, 16385, 32767, 100003, 2100001]
MEAN_BIG = 40000003  # level_power > 4 in torch's cascade (single thread, AVX-512 only)
# From torch's GRAIN_SIZE (32768) on, the sum is split across threads.
MEAN_THREADED = [1000, 32767, 32768, 32769, 65536, 65537, 100003, 262144, 2100001]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def make_tiny_odd():
    path = os.path.join(OUT, "models", "tiny-odd")
    cfg = LlamaConfig(hidden_size=100, intermediate_size=150, num_hidden_layers=2,
                      num_attention_heads=5, num_key_value_heads=1, head_dim=20, vocab_size=256,
                      tie_word_embeddings=False, max_position_embeddings=128)
    torch.manual_seed(7)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    m = m.to(torch.bfloat16)
    m.save_pretrained(path, safe_serialization=True)
    return path


def bnb_config(fmt, dtype):
    if fmt == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    kind = fmt.split("-")[0]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind,
                              bnb_4bit_use_double_quant=not fmt.endswith("-nodq"),
                              bnb_4bit_compute_dtype=dtype)


def without_fused_cpu_kernel(model):
    """Turns off bitsandbytes' AVX512-BF16 CPU path (0.49+) in every Linear4bit.

    On a CPU with AVX512-BF16 the first forward repacks the weight for a fused
    bf16 kernel (asserting out_features % 32 == 0, which tiny-odd breaks) and
    replaces the double-quant statistics by their dequantized values; saving
    afterwards re-quantizes those, so the checkpoint and the logits would
    depend on the machine. Off, every CPU dequantizes and multiplies.
    """
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
    return model


def tensors_of(path):
    out = {}
    with safe_open(os.path.join(path, "model.safetensors"), framework="pt") as h:
        for k in h.keys():
            t = h.get_tensor(k)
            b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
            out[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "sha256": sha(b)}
    return out


def on_the_fly(model_dir, fmt):
    src = os.path.join(ROOT, "fixtures", model_dir)
    cfg = json.load(open(os.path.join(src, "config.json")))
    dtype = getattr(torch, cfg.get("dtype") or cfg["torch_dtype"])
    m = AutoModelForCausalLM.from_pretrained(src, quantization_config=bnb_config(fmt, dtype),
                                             dtype=dtype, device_map="cpu").eval()
    without_fused_cpu_kernel(m)
    with torch.no_grad():
        logits = m(torch.tensor(INPUT_IDS)).logits[0, -1].float()
    with tempfile.TemporaryDirectory() as tmp:
        m.save_pretrained(tmp)
        saved_cfg = json.load(open(os.path.join(tmp, "config.json")))
        tensors = tensors_of(tmp)
    return {"model": model_dir, "format": fmt, "dtype": str(dtype).replace("torch.", ""),
            "quantization_config": saved_cfg["quantization_config"], "tensors": tensors,
            "last_logits": logits.tolist()}


def functional(model_dir, kind, blocksize, dq):
    src = os.path.join(ROOT, "fixtures", model_dir)
    out = {}
    with safe_open(os.path.join(src, "model.safetensors"), framework="pt") as h:
        for k in sorted(h.keys()):
            if not k.endswith("_proj.weight"):
                continue
            w = h.get_tensor(k)
            packed, state = F.quantize_4bit(w, blocksize=blocksize, compress_statistics=dq, quant_type=kind)
            out[k] = sha(packed.numpy().tobytes())
            for sk, v in state.as_dict(packed=True).items():
                out[f"{k}.{sk}"] = sha(v.contiguous().view(torch.uint8).numpy().tobytes())
    return {"model": model_dir, "quant_type": kind, "blocksize": blocksize, "double_quant": dq, "sha256": out}


def vector(n):
    """n float32 values in [0, 4): splitmix64 of 0..n-1, top 24 bits."""
    x = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)) * np.float32(4.0)


def means_here(lengths, threads=1):
    torch.set_num_threads(threads)
    return {str(n): int(torch.from_numpy(vector(n)).mean().view(torch.int32).item()) & 0xFFFFFFFF
            for n in lengths}


def torch_means():
    res = {"note": "float32 bits of torch.mean(vector(n)); key: ATEN_CPU_CAPABILITY[-threadsN] (default 1 thread)"}
    runs = [("avx512", "avx512", 1, MEAN_LENGTHS + [MEAN_BIG]), ("avx2", "avx2", 1, MEAN_LENGTHS),
            ("avx512-threads2", "avx512", 2, MEAN_THREADED), ("avx512-threads3", "avx512", 3, MEAN_THREADED)]
    for key, cap, threads, lengths in runs:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        code = ("import json,sys; sys.path.insert(0, %r); import bnb_goldens as g; "
                "import torch; print(torch.backends.cpu.get_cpu_capability()); "
                "print(json.dumps(g.means_here(%r, %d)))") % (os.path.dirname(os.path.abspath(__file__)), lengths, threads)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        got_cap, values = r.stdout.strip().split("\n")
        assert got_cap.lower() == cap, (got_cap, cap)
        res[key] = json.loads(values)
    return res


def main():
    assert bitsandbytes.__version__ == BNB_VERSION, bitsandbytes.__version__
    os.makedirs(OUT, exist_ok=True)
    make_tiny_odd()
    cases = {}
    for model_dir, fmts in CASES:
        for fmt in fmts:
            key = f"{model_dir.split('/')[-1]}/{fmt}"
            cases[key] = on_the_fly(model_dir, fmt)
            print("made", key)
    doc = {"bitsandbytes": bitsandbytes.__version__, "transformers": transformers.__version__,
           "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "input_ids": INPUT_IDS, "cases": cases,
           "functional": [functional(*f) for f in FUNCTIONAL]}
    with open(os.path.join(OUT, "expected.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(OUT, "torch-mean.json"), "w") as fh:
        json.dump(torch_means(), fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
