"""transformers as the judge of `llmtool quantize nf4|fp4|int8` outputs.

    cargo build --release && python tests/oracle/check_bnb_load.py

For every case of fixtures/bnb/expected.json (made by bnb_goldens.py), runs
`target/release/llmtool quantize` (or $LLMTOOL_BIN) into a temporary
directory, loads it with AutoModelForCausalLM on CPU as a pre-quantized
bitsandbytes checkpoint, checks that every Linear but the head became a
bitsandbytes layer, and compares its last-position logits with those of the
same model quantized on the fly by transformers + bitsandbytes (the golden):
they must be identical. Writes fixtures/bnb/transformers-check.json with
the sha256 of the model.safetensors and config.json llmtool wrote, so that
tests/bnb_quantize.rs can prove the verdict still holds for the code in the
tree. Exit 1 on any failure. Environment: tests/oracle/requirements.txt.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import bitsandbytes as bnb
import torch
import transformers
from transformers import AutoModelForCausalLM

from bnb_goldens import without_fused_cpu_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BNB = os.path.join(ROOT, "fixtures", "bnb")
BIN = os.environ.get("LLMTOOL_BIN", os.path.join(ROOT, "target", "release", "llmtool"))


def sha_file(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def main():
    exp = json.load(open(os.path.join(BNB, "expected.json")))
    verdicts, failed = {}, False
    for key, case in exp["cases"].items():
        fmt = case["format"]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "q")
            cmd = [BIN, "quantize", fmt.split("-")[0], os.path.join(ROOT, "fixtures", case["model"]), "--out", out, "--json"]
            if fmt.endswith("-nodq"):
                cmd.append("--no-double-quant")
            subprocess.run(cmd, check=True, capture_output=True)
            dtype = getattr(torch, case["dtype"])
            m = AutoModelForCausalLM.from_pretrained(out, dtype=dtype, device_map="cpu").eval()
            without_fused_cpu_kernel(m)
            layer = bnb.nn.Linear8bitLt if fmt == "int8" else bnb.nn.Linear4bit
            quantized = sorted(n for n, mod in m.named_modules() if isinstance(mod, layer))
            plain = sorted(n for n, mod in m.named_modules() if type(mod) is torch.nn.Linear)
            with torch.no_grad():
                logits = m(torch.tensor(exp["input_ids"])).logits[0, -1].float()
            diff = (logits - torch.tensor(case["last_logits"])).abs().max().item()
            ok = diff == 0.0 and len(quantized) > 0 and all(p.endswith("lm_head") for p in plain)
            failed |= not ok
            verdicts[key] = {
                "ok": ok,
                "max_abs_logit_diff": diff,
                "quantized_layers": len(quantized),
                "unquantized_linear": plain,
                "model.safetensors": sha_file(os.path.join(out, "model.safetensors")),
                "config.json": sha_file(os.path.join(out, "config.json")),
            }
            print(f"{'OK  ' if ok else 'FAIL'} {key}: {len(quantized)} bnb layers, max |logit diff| {diff:.3g}")
    with open(os.path.join(BNB, "transformers-check.json"), "w") as fh:
        json.dump({"transformers": transformers.__version__, "bitsandbytes": bnb.__version__,
                   "torch": torch.__version__, "cases": verdicts}, fh, indent=1)
        fh.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
