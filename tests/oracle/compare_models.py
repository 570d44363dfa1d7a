"""Compares two HF model directories tensor by tensor (names, shapes, dtypes,
values), e.g. llmtool's merge against PEFT's on the same base and adapter.

    python tests/oracle/compare_models.py A B [--max-ulp 1] [--rel 1e-6]

16-bit tensors may differ by at most --max-ulp units in the last place;
f32 tensors by a relative error of at most --rel (of the tensor's max |x|).
Prints one summary line; exit 1 on any difference beyond that.
"""
import argparse
import glob
import os
import sys

import torch
from safetensors import safe_open


def tensors(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                out[k] = (f, k)
    return out


def load(ref):
    with safe_open(ref[0], "pt") as s:
        return s.get_tensor(ref[1])


def ulp_distance(a, b):
    """Distance in representable steps between same-dtype 16-bit tensors."""
    ia = a.view(torch.int16).to(torch.int32)
    ib = b.view(torch.int16).to(torch.int32)
    # Map sign-magnitude bit patterns onto a monotonic integer line.
    ia = torch.where(ia < 0, -(ia & 0x7FFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFF), ib)
    return (ia - ib).abs()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max-ulp", type=int, default=1)
    ap.add_argument("--rel", type=float, default=1e-6)
    a = ap.parse_args()
    ta, tb = tensors(a.a), tensors(a.b)
    problems = []
    if ta.keys() != tb.keys():
        problems.append(f"names differ: only in A {sorted(ta.keys() - tb.keys())[:5]}, "
                        f"only in B {sorted(tb.keys() - ta.keys())[:5]}")
    worst_ulp, ulp_elems, n = 0, 0, 0
    for k in sorted(ta.keys() & tb.keys()):
        x, y = load(ta[k]), load(tb[k])
        n += x.numel()
        if x.shape != y.shape or x.dtype != y.dtype:
            problems.append(f"{k}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            continue
        if x.dtype in (torch.bfloat16, torch.float16):
            d = ulp_distance(x, y)
            worst_ulp = max(worst_ulp, int(d.max()))
            ulp_elems += int((d > 0).sum())
            if int(d.max()) > a.max_ulp:
                problems.append(f"{k}: {int(d.max())} ulp apart")
        else:
            scale = max(float(x.abs().max()), 1e-30)
            rel = float((x.double() - y.double()).abs().max()) / scale
            if rel > a.rel:
                problems.append(f"{k}: relative difference {rel:.3g}")
    print(f"{len(ta.keys() & tb.keys())} tensors, {n} values; 16-bit values that differ: {ulp_elems} "
          f"(worst {worst_ulp} ulp); problems: {len(problems)}")
    for p in problems[:20]:
        print("  " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
