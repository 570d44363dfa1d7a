"""Benchmark anchor: list every tensor's name, dtype and shape of a sharded
safetensors model the way a Python user would, with safetensors.safe_open."""
import glob
import sys

from safetensors import safe_open

n = 0
for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    with safe_open(f, framework="numpy") as h:
        for k in h.keys():
            s = h.get_slice(k)
            s.get_shape()
            s.get_dtype()
            n += 1
print(n)
