"""transformers as the judge of `llmtool lora merge` outputs.

    cargo build --release && python tests/oracle/check_merge_logits.py

For every case of fixtures/lora (made by make_adapters.py), runs
`target/release/llmtool lora merge` into a temporary directory, loads the
result with AutoModelForCausalLM on CPU and compares its logits on the fixed
input with those of PEFT's merged model (expected.json, `last_logits`):
max |difference| must be <= 1e-4 for f32 bases and <= 2e-2 for bf16 ones
(PEFT and llmtool may round a few bf16 weights 1 ulp apart). Writes the
verdicts to fixtures/lora/transformers-check.json; exit 1 on any failure.
Environment: tests/oracle/requirements.txt.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LORA = os.path.join(ROOT, "fixtures", "lora")
BIN = os.path.join(ROOT, "target", "release", "llmtool")


def main():
    verdicts, failed = {}, False
    for case in sorted(os.listdir(LORA)):
        exp_path = os.path.join(LORA, case, "expected.json")
        if not os.path.isfile(exp_path):
            continue
        exp = json.load(open(exp_path))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "merged")
            cmd = [BIN, "lora", "merge", "--base", os.path.join(LORA, "bases", exp["base"]), "--out", out]
            for a in exp["adapters"]:
                cmd += ["--adapter", f"{os.path.join(LORA, case, a['path'])}:{a['weight']}"]
            subprocess.run(cmd, check=True, capture_output=True)
            m = AutoModelForCausalLM.from_pretrained(out, dtype="auto").eval()
            with torch.no_grad():
                logits = m(torch.tensor(exp["input_ids"])).logits[0, -1].float()
            diff = (logits - torch.tensor(exp["last_logits"])).abs().max().item()
            tol = 1e-4 if m.dtype == torch.float32 else 2e-2
            ok = diff <= tol
            failed |= not ok
            verdicts[case] = {"ok": ok, "max_abs_logit_diff": diff, "tolerance": tol, "dtype": str(m.dtype)}
            print(f"{'OK  ' if ok else 'FAIL'} {case}: max |logit diff| {diff:.3g} (tolerance {tol})")
    with open(os.path.join(LORA, "transformers-check.json"), "w") as fh:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "cases": verdicts}, fh, indent=1)
        fh.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
