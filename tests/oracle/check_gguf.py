"""gguf-py as the judge of a GGUF file written by llmtool.

    python tests/oracle/check_gguf.py FILE.gguf EXPECT.json

EXPECT.json: {"alignment": n,
              "metadata": {key: {"type": GGUFValueType name, "value": v,
                                 "item_type": name (arrays only)}},
              "tensors": [{"name", "type": GGMLQuantizationType name,
                           "shape": ne (GGUF order, innermost first),
                           "sha256": of the raw tensor bytes}]}
Reads FILE with gguf.GGUFReader and checks: the metadata keys (in order, after
the reader's synthetic GGUF.* fields), each value's type and value, the
alignment, the tensors (names in order, types, ne, raw bytes). Floats compare
exactly after rounding the expectation to the stored width. Exit 0 if all
match, 1 with every mismatch listed.
Environment: tests/oracle/requirements-gguf.txt (gguf==0.19.0, numpy==2.2.6).
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType


def norm(value, type_name):
    if type_name == "FLOAT32":
        return float(np.float32(value))
    if type_name == "FLOAT64":
        return float(value)
    return value


def main(path, expect_path):
    with open(expect_path) as fh:
        exp = json.load(fh)
    r = GGUFReader(path)
    problems = []
    fields = [(k, f) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    if [k for k, _ in fields] != list(exp["metadata"]):
        problems.append(f"metadata keys {[k for k, _ in fields]} != expected {list(exp['metadata'])}")
    for k, f in fields:
        e = exp["metadata"].get(k)
        if e is None:
            continue
        t = f.types[0]
        if t.name != e["type"]:
            problems.append(f"{k}: type {t.name} != {e['type']}")
            continue
        got = f.contents()
        if t == GGUFValueType.ARRAY:
            it = f.types[1] if len(f.types) > 1 else None
            if e.get("item_type") and (it is None or it.name != e["item_type"]) and got:
                problems.append(f"{k}: item type {it.name if it is not None else None} != {e['item_type']}")
            want = [norm(v, e.get("item_type")) for v in e["value"]]
        else:
            want = norm(e["value"], e["type"])
        if got != want:
            problems.append(f"{k}: value {got!r} != {want!r}")
    if r.alignment != exp["alignment"]:
        problems.append(f"alignment {r.alignment} != {exp['alignment']}")
    names = [t.name for t in r.tensors]
    if names != [t["name"] for t in exp["tensors"]]:
        problems.append(f"tensor names {names} != {[t['name'] for t in exp['tensors']]}")
    for t, e in zip(r.tensors, exp["tensors"]):
        if t.tensor_type.name != e["type"]:
            problems.append(f"{t.name}: type {t.tensor_type.name} != {e['type']}")
        if [int(x) for x in t.shape] != e["shape"]:
            problems.append(f"{t.name}: ne {[int(n) for n in t.shape]} != {e['shape']}")
        raw = np.asarray(t.data).view(np.uint8).tobytes()
        if hashlib.sha256(raw).hexdigest() != e["sha256"]:
            problems.append(f"{t.name}: raw bytes differ")
    if problems:
        print(f"FAIL: {path}:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: gguf-py reads {path}: {len(fields)} keys, {len(names)} tensors as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
