"""The PEFT workflow `lora merge` replaces, for benchmarks: load the base,
attach the adapter, merge_and_unload, save_pretrained.

    python tests/oracle/peft_merge_workflow.py BASE ADAPTER OUT

With `--make-adapter R` instead, writes a rank-R all-linear LoRA adapter for
BASE to ADAPTER (non-zero A and B, fixed seed) and exits; OUT is ignored.
"""
import argparse

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--make-adapter", type=int, metavar="R")
    a = ap.parse_args()
    base = AutoModelForCausalLM.from_pretrained(a.base, dtype="auto")
    if a.make_adapter:
        torch.manual_seed(0)
        cfg = LoraConfig(r=a.make_adapter, lora_alpha=2 * a.make_adapter, target_modules="all-linear",
                         init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(base, cfg).save_pretrained(a.adapter)
        return
    merged = PeftModel.from_pretrained(base, a.adapter).merge_and_unload()
    merged.save_pretrained(a.out)


if __name__ == "__main__":
    main()
