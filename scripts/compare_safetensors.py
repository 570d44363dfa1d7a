"""Compares two checkpoints tensor by tensor (names, dtypes, shapes, bytes):
prints one summary line to stderr, exit 1 on a difference.

    python scripts/compare_safetensors.py DIR_A DIR_B
"""
import glob
import hashlib
import sys

from safetensors import safe_open


def digest(d):
    out = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        with safe_open(f, framework="pt") as h:
            for k in h.keys():
                t = h.get_tensor(k)
                out[k] = (str(t.dtype), tuple(t.shape), hashlib.sha256(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes()).hexdigest() if t.numel() else "")
    return out


a, b = digest(sys.argv[1]), digest(sys.argv[2])
diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
print(f"{sys.argv[1]} vs {sys.argv[2]}: {len(a)} / {len(b)} tensors, {len(diff)} differ {diff[:5]}", file=sys.stderr)
sys.exit(1 if diff else 0)
