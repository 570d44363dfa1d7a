#!/usr/bin/env python3
"""transformers on the union of `llmtool fragment split --by-layer` stages:
fixtures/fragment/transformers-stages.json.

    python tests/oracle/check_fragment_stages.py LLMTOOL WORKDIR NAME=HF_DIR:COUNTS ...

For each model: `llmtool fragment split HF_DIR --out WORKDIR/NAME --by-layer COUNTS`; then a
directory of symbolic links to every stage's safetensors files (renamed stage-K-FILE) with one
model.safetensors.index.json whose weight_map is the union of the stages' weight_maps (a tensor two
stages hold, the tied embedding, maps to the first), config.json and the tokenizer files of stage 1.
transformers loads it (AutoModelForCausalLM.from_pretrained, float32, CPU) and the original; the
logits of three fixed token sequences must agree within 1e-5. Needs torch and transformers (the
recorded run: torch 2.9.1, transformers 4.57.1, /work/bnb-venv).
"""
import json
import os
import shutil
import subprocess
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def union(stages, dest):
    os.makedirs(dest)
    weight_map, seen = {}, set()
    names = sorted(d for d in os.listdir(stages) if d.startswith("stage-"))
    for k, stage in enumerate(names, 1):
        sdir = os.path.join(stages, stage)
        with open(os.path.join(sdir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        files = set(index["weight_map"].values())
        for f in files:
            os.symlink(os.path.join(sdir, f), os.path.join(dest, f"stage-{k}-{f}"))
        for name, f in sorted(index["weight_map"].items()):
            if name in seen:
                continue
            seen.add(name)
            weight_map[name] = f"stage-{k}-{f}"
    for f in os.listdir(os.path.join(stages, names[0])):
        if not f.startswith("model") and f.endswith((".json", ".model", ".txt", ".jinja")):
            shutil.copy(os.path.join(stages, names[0], f), dest)
    with open(os.path.join(dest, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    return len(names), len(weight_map)


def logits(path, seqs):
    m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return [m(torch.tensor([s])).logits[0] for s in seqs]


def main():
    llmtool, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(work, exist_ok=True)
    results = []
    for spec in sys.argv[3:]:
        name, rest = spec.split("=", 1)
        src, counts = rest.rsplit(":", 1)
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([llmtool, "fragment", "split", src, "--out", out, "--by-layer", counts, "--json"],
                       check=True, capture_output=True)
        u = os.path.join(work, name + "-union")
        shutil.rmtree(u, ignore_errors=True)
        n_stages, n_tensors = union(out, u)
        with open(os.path.join(src, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        seqs = [[1, 5, 9, 2, 7], [3] * 12, [(i * 37) % vocab for i in range(24)]]
        got, want = logits(u, seqs), logits(src, seqs)
        diff = max(float((a - b).abs().max()) for a, b in zip(got, want))
        results.append({
            "model": name,
            "by_layer": counts,
            "stages": n_stages,
            "tensors_in_union": n_tensors,
            "max_abs_logit_diff": diff,
            "within_1e-5": diff <= 1e-5,
        })
        print(results[-1])
        shutil.rmtree(out)
        shutil.rmtree(u)
    record = {"transformers": transformers.__version__, "torch": torch.__version__, "models": results}
    path = os.path.join(ROOT, "fixtures", "fragment", "transformers-stages.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    if not all(r["within_1e-5"] for r in results):
        sys.exit("transformers' logits on the union of the stages differ from the original's")


if __name__ == "__main__":
    main()
