"""transformers as the judge of a model directory written by llmtool.

    python tests/oracle/check_hf_load.py DIR REF_DIR [--record OUT.json]

Loads DIR and REF_DIR with AutoModelForCausalLM.from_pretrained(dtype=
"auto") on CPU and checks that every state-dict tensor is identical (dtype,
shape, bits) and that the logits for a fixed input are identical. Exit 0 on
success, 1 with a message on any difference. With --record, also writes the
verdict (versions, files, tensor count) as JSON, committed next to the
golden so Rust tests can rely on it without torch.
Environment: tests/oracle/requirements.txt.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

INPUT_IDS = [[1, 5, 9, 42, 7, 3, 100, 200]]


def load(d):
    m = AutoModelForCausalLM.from_pretrained(d, dtype="auto").eval()
    with torch.no_grad():
        logits = m(torch.tensor(INPUT_IDS)).logits
    return m.state_dict(), logits


def compare(dir_, ref):
    sd, logits = load(dir_)
    rsd, rlogits = load(ref)
    problems = []
    if sd.keys() != rsd.keys():
        problems.append(f"tensor names differ: only in {dir_}: {sorted(sd.keys() - rsd.keys())}, "
                        f"only in {ref}: {sorted(rsd.keys() - sd.keys())}")
    for k in sorted(sd.keys() & rsd.keys()):
        a, b = sd[k], rsd[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{k}: {a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}")
        elif not torch.equal(a.view(torch.uint8) if a.dtype == torch.bool else a, b):
            problems.append(f"{k}: values differ")
    if logits.shape != rlogits.shape or not torch.equal(logits, rlogits):
        problems.append("logits differ")
    return sd, problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("ref")
    ap.add_argument("--record")
    a = ap.parse_args()
    sd, problems = compare(a.dir, a.ref)
    if problems:
        print(f"FAIL: {a.dir} vs {a.ref}:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: transformers loads {a.dir}: {len(sd)} tensors and logits identical to {a.ref}")
    if a.record:
        with open(a.record, "w") as fh:
            json.dump({
                "ok": True,
                "checked": os.path.basename(os.path.normpath(a.dir)),
                "reference": os.path.basename(os.path.normpath(a.ref)),
                "tensors": len(sd),
                "files": sorted(os.listdir(a.dir)),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            }, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
