#!/usr/bin/env python3
"""llama.cpp's own split files as the judge of `llmtool fragment split|merge`:
fixtures/fragment/tiny-llama-split.json and fixtures/fragment/smollm2.json.

    python tests/oracle/gguf_split_goldens.py LLAMA_BIN_DIR LLMTOOL WORKDIR [SmolLM2-135M-Instruct.Q4_1.gguf]

LLAMA_BIN_DIR holds llama-gguf-split and llama-perplexity (with their shared libraries); LLMTOOL is a
built llmtool binary; the interpreter needs gguf-py (tests/oracle/requirements-gguf.txt). Steps:

  1. tiny: fixtures/models/tiny-llama with the tiny SentencePiece tokenizer (fixtures/tokenizer/tiny-sp)
     in WORKDIR/tiny-llama, made a GGUF by `llmtool quantize f32` (deterministic; its sha256 is
     recorded so the Rust test knows it rebuilt the same file). `llama-gguf-split --split` with
     --split-max-tensors 7 and with --split-max-size 1M, and `--merge` of the first: every output
     file's name, size and sha256.
  2. SmolLM2 (when given): `llmtool fragment split --max-size 40MB` and llama-gguf-split
     --split-max-size 40M (the same 4·10⁷ bytes) — the shards' digests; llama-gguf-split --merge of
     OUR shards against the input (the merge adds split.no, split.tensors.count and split.count = 0
     to the metadata, so it equals the input in tensors, not in bytes; splitting and merging that
     merged file again gives it back byte for byte); `llmtool fragment merge` of llama-gguf-split's
     shards against llama-gguf-split's merge; llama-perplexity -c 128 --chunks 4 -t 2 on
     fixtures/engine/ppl-text.txt for the unsplit file, the first shard of our --max-size split and
     the first shard of our --by-layer 10,10,10 split.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import gguf
import numpy as np

from filehash import sha256

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def files_of(d, suffix=".gguf"):
    return [
        {"name": f, "size": os.path.getsize(os.path.join(d, f)), "sha256": sha256(os.path.join(d, f))}
        for f in sorted(os.listdir(d))
        if f.endswith(suffix)
    ]


def entry(path):
    return {"size": os.path.getsize(path), "sha256": sha256(path)}


def fresh(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def tiny(bin_dir, llmtool, work, env):
    m = os.path.join(fresh(os.path.join(work, "tiny")), "tiny-llama")
    os.makedirs(m)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(ROOT, "fixtures/models/tiny-llama", f), m)
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        shutil.copy(os.path.join(ROOT, "fixtures/tokenizer/tiny-sp", f), m)
    src = os.path.join(work, "tiny", "tiny-llama-f32.gguf")
    run([llmtool, "quantize", "f32", m, "--out", src])
    split = os.path.join(bin_dir, "llama-gguf-split")
    splits = []
    for llama_args, ours in ((["--split-max-tensors", "7"], ["--max-tensors", "7"]),
                             (["--split-max-size", "1M"], ["--max-size", "1MB"])):
        d = fresh(os.path.join(work, "tiny", ours[0].strip("-")))
        run([split, "--split", *llama_args, src, os.path.join(d, "tiny-llama-f32")], env)
        splits.append({"llama_gguf_split": llama_args, "llmtool": ours, "files": files_of(d)})
    first = os.path.join(work, "tiny", "max-tensors", splits[0]["files"][0]["name"])
    merged = os.path.join(work, "tiny", "merged.gguf")
    run([split, "--merge", first, merged], env)
    version = run([split, "--version"], env).strip().splitlines()[0]
    return {
        "llama_cpp": version,
        "input": {"name": "tiny-llama-f32.gguf",
                  "made_by": "llmtool quantize f32 tiny-llama (fixtures/models/tiny-llama + fixtures/tokenizer/tiny-sp)",
                  **entry(src)},
        "splits": splits,
        "merge": {"of": splits[0]["llmtool"], "llama_gguf_split": ["--merge"], **entry(merged)},
    }


def same_tensors(a, b):
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    ta = {t.name: (int(t.tensor_type), [int(x) for x in t.shape], np.asarray(t.data).tobytes()) for t in ra.tensors}
    tb = {t.name: (int(t.tensor_type), [int(x) for x in t.shape], np.asarray(t.data).tobytes()) for t in rb.tensors}
    keys_a = [k for k in ra.fields if not k.startswith("GGUF.")]
    keys_b = [k for k in rb.fields if not k.startswith("GGUF.")]
    return ta == tb, [k for k in keys_b if k not in keys_a], [k for k in keys_a if k not in keys_b]


def perplexity(bin_dir, model, env):
    text = os.path.join(ROOT, "fixtures/engine/ppl-text.txt")
    cmd = [os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text,
           "-c", "128", "--chunks", "4", "-t", "2"]
    log = run(cmd, env)
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    if not final:
        sys.exit(f"could not parse llama-perplexity output:\n{log[-2000:]}")
    shown = ["llama-perplexity", "-m", os.path.basename(model), "-f", "fixtures/engine/ppl-text.txt"] + cmd[5:]
    return {"command": " ".join(shown), "ppl": float(final.group(1)), "ppl_error": float(final.group(2))}


def smollm2(bin_dir, llmtool, work, src, env):
    split = os.path.join(bin_dir, "llama-gguf-split")
    stem = os.path.basename(src)[: -len(".gguf")]
    ours = os.path.join(work, "smol", "ours")
    fresh(os.path.join(work, "smol"))
    run([llmtool, "fragment", "split", src, "--out", ours, "--max-size", "40MB", "--json"])
    theirs = fresh(os.path.join(work, "smol", "llama"))
    run([split, "--split", "--split-max-size", "40M", src, os.path.join(theirs, stem)], env)
    first_ours = os.path.join(ours, f"{stem}-00001-of-00003.gguf")
    merged = os.path.join(work, "smol", "llama-merge-of-ours.gguf")
    run([split, "--merge", first_ours, merged], env)
    tensors_equal, added, removed = same_tensors(src, merged)
    ours_merge = os.path.join(work, "smol", "llmtool-merge-of-llamas.gguf")
    run([llmtool, "fragment", "merge", os.path.join(theirs, f"{stem}-00001-of-00003.gguf"), "--out", ours_merge, "--json"])
    # The merged file is the fixed point: split (ours) and merge (llama.cpp) give it back.
    again = os.path.join(work, "smol", "again")
    run([llmtool, "fragment", "split", merged, "--out", again, "--max-tensors", "100", "--json"])
    twice = os.path.join(work, "smol", "merged-twice.gguf")
    run([split, "--merge", os.path.join(again, "llama-merge-of-ours-00001-of-00003.gguf"), twice], env)
    by_layer = os.path.join(work, "smol", "by-layer")
    run([llmtool, "fragment", "split", src, "--out", by_layer, "--by-layer", "10,10,10", "--json"])
    result = {
        "input": {"name": os.path.basename(src), **entry(src)},
        "split_max_size": {
            "llmtool": ["--max-size", "40MB"],
            "llama_gguf_split": ["--split-max-size", "40M"],
            "llama_files": files_of(theirs),
            "llmtool_files_equal": files_of(ours) == files_of(theirs),
        },
        "llama_merge_of_ours": {
            **entry(merged),
            "bytes_equal_input": sha256(merged) == sha256(src),
            "tensors_equal_input": tensors_equal,
            "keys_added": added,
            "keys_removed": removed,
            "split_and_merge_again_equal": sha256(twice) == sha256(merged),
        },
        "llmtool_merge_of_llamas": {
            **entry(ours_merge),
            "bytes_equal_llama_merge": sha256(ours_merge) == sha256(merged),
        },
        "by_layer_10_10_10": files_of(by_layer),
        "perplexity": {
            "unsplit": perplexity(bin_dir, src, env),
            "first_shard_max_size": perplexity(bin_dir, first_ours, env),
            "first_shard_by_layer": perplexity(bin_dir, os.path.join(by_layer, f"{stem}-00001-of-00003.gguf"), env),
        },
    }
    shutil.rmtree(os.path.join(work, "smol"))
    return result


def main():
    bin_dir, llmtool, work = (os.path.abspath(a) for a in sys.argv[1:4])
    env = dict(os.environ, LD_LIBRARY_PATH=bin_dir)
    out_dir = os.path.join(ROOT, "fixtures", "fragment")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    t = tiny(bin_dir, llmtool, work, env)
    with open(os.path.join(out_dir, "tiny-llama-split.json"), "w") as f:
        json.dump(t, f, indent=1)
        f.write("\n")
    if len(sys.argv) > 4:
        s = smollm2(bin_dir, llmtool, work, os.path.abspath(sys.argv[4]), env)
        s["llama_cpp"] = t["llama_cpp"]
        with open(os.path.join(out_dir, "smollm2.json"), "w") as f:
            json.dump(s, f, indent=1)
            f.write("\n")
    shutil.rmtree(os.path.join(work, "tiny"))


if __name__ == "__main__":
    main()
