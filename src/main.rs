//! The `llmtool` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use llmtool::bnb::{self, BnbFormat, BnbOptions};
use llmtool::convert::to_hf;
use llmtool::lora::Adapter;
use llmtool::merge::{self, MergeOptions, WeightedAdapter};
use llmtool::plan::{self, catalog, Engine, Format, ModelSpec};
use llmtool::quant::ftype::FileType;
use llmtool::store::safetensors::parse_size;
use llmtool::{arch, engine, eval, inspect, interrupt, quantize, store};

/// From fine-tuned adapter to deployed artifact.
#[derive(Parser)]
#[command(name = "llmtool", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What a model really is, derived from its tensor shapes.
    ///
    /// MODEL is a Hugging Face model directory (config.json + model.safetensors
    /// or shards + model.safetensors.index.json), a single .safetensors, a
    /// .gguf (the first shard of a split GGUF names the whole model), or a
    /// Hub repo id (org/name[@revision]) already in the local Hugging Face
    /// cache ($HF_HUB_CACHE, else $HF_HOME/hub). Only headers are read.
    #[command(after_help = "Examples:\n  \
        llmtool inspect-arch ./Qwen2.5-14B-Instruct\n  \
        llmtool inspect-arch Qwen/Qwen2.5-14B-Instruct --json > arch.json\n  \
        llmtool inspect-arch SmolLM2-135M-Instruct.Q4_1.gguf --tensors")]
    InspectArch {
        /// Model directory, file, or cached repo id.
        model: String,
        /// Print the versioned architecture manifest as JSON (schema in docs/ARCH-MANIFEST.md).
        #[arg(long)]
        json: bool,
        /// Also list every tensor (name, dtype, shape, bytes, file).
        #[arg(long)]
        tensors: bool,
    },
    /// Convert a GGUF model to a Hugging Face safetensors directory.
    ///
    /// Dequantizes every tensor exactly as gguf-py does, puts the Q/K rows
    /// llama.cpp permutes back in Hugging Face order, and writes config.json,
    /// generation_config.json and the tokenizer (tokenizer.json,
    /// tokenizer_config.json with the chat template) rebuilt from the GGUF
    /// metadata. Supports llama (and Mistral) and qwen2 GGUFs.
    #[command(after_help = "Examples:\n  \
        llmtool convert SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf\n  \
        llmtool convert model-f16.gguf --out ./hf --dtype bf16 --max-shard-size 2GB\n  \
        llmtool convert model.gguf --out ./hf --dry-run --json")]
    Convert {
        /// The GGUF file (the first shard of a split GGUF).
        model: String,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Output dtype (default: the GGUF's float type, or f32 for quantized files, which keeps the dequantized values exactly).
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        dtype: Option<String>,
        /// Largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
        #[arg(long, default_value = "5GB")]
        max_shard_size: String,
        /// Check everything and print the plan without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a model into a deployable artifact, without a GPU.
    ///
    /// nf4, fp4, int8: a bitsandbytes checkpoint (Hugging Face directory)
    /// that transformers and vLLM load pre-quantized, bit-identical to what
    /// bitsandbytes produces on CPU. Every Linear layer but the output head
    /// (and --skip patterns) is quantized; other tensors are copied.
    ///
    /// GGUF formats (q4_k_m, q5_k_m, q6_k, q8_0, q4_0, f16, bf16, f32) read a Hugging Face model (llama,
    /// mistral, qwen2) or an F32/F16/BF16 GGUF and write a llama.cpp-ready
    /// GGUF in one streaming pass: tensor names, Q/K permutation, metadata
    /// and tokenizer as llama.cpp's converter writes them, and llama-quantize's
    /// per-tensor type choices. The file appears only when complete.
    #[command(after_help = "Examples:\n  \
        llmtool quantize q4_k_m ./spinoza-merged --out spinoza-Q4_K_M.gguf\n  \
        llmtool quantize q8_0 model-f16.gguf --out model-Q8_0.gguf\n  \
        llmtool quantize f16 ./Qwen2.5-7B-Instruct --out qwen2.5-7b-f16.gguf\n  \
        llmtool quantize bf16 ./spinoza-merged --out spinoza-bf16.gguf --dry-run --json\n  \
        llmtool quantize nf4 Qwen/Qwen2.5-14B-Instruct --out ./qwen14b-nf4\n  \
        llmtool quantize int8 ./merged --out ./merged-int8 --skip mlp.down_proj")]
    Quantize {
        /// Output format.
        format: QuantFormat,
        /// HF model directory, cached repo id, or a float GGUF.
        model: String,
        /// Output: a .gguf file for GGUF formats, a directory for bitsandbytes ones.
        #[arg(long)]
        out: std::path::PathBuf,
        /// GGUF: general.name in the GGUF (default: the model directory's name).
        #[arg(long)]
        name: Option<String>,
        /// GGUF: tokenizer.ggml.pre for a byte-level BPE tokenizer whose pre-tokenizer llama.cpp's table does not know (e.g. llama-bpe, qwen2, smollm).
        #[arg(long)]
        pre: Option<String>,
        /// GGUF: take the tokenizer.* metadata from this GGUF instead of the model's tokenizer files (e.g. the file a model was converted from).
        #[arg(long, conflicts_with = "pre")]
        tokenizer_from: Option<String>,
        /// bitsandbytes: modules to keep unquantized besides lm_head, as
        /// transformers matches llm_int8_skip_modules: a last name component
        /// (down_proj), a full module name, or a prefix path (model.layers.0). Repeatable.
        #[arg(long)]
        skip: Vec<String>,
        /// nf4/fp4: block size (32, 64, …, 4096).
        #[arg(long, default_value_t = bnb::DEFAULT_BLOCKSIZE)]
        blocksize: usize,
        /// nf4/fp4: keep the block maxima in float32 instead of quantizing them to 8 bits.
        #[arg(long)]
        no_double_quant: bool,
        /// nf4/fp4: dtype of the matmuls at inference (bnb_4bit_compute_dtype); default: the weights' dtype.
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        compute_dtype: Option<String>,
        /// nf4/fp4 double quant: torch thread count whose mean of the block maxima
        /// to reproduce for layers of 32768+ blocks (bitsandbytes' offset depends
        /// on it); default: this machine's cores, torch's default.
        #[arg(long)]
        torch_threads: Option<usize>,
        /// bitsandbytes: largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
        #[arg(long, default_value = "5GB")]
        max_shard_size: String,
        /// Check everything and print the plan (types per tensor) without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// LoRA adapters: inspect them, merge them into their base.
    #[command(subcommand)]
    Lora(LoraCommand),
    /// Will this model fit this GPU, for how many users, at what cost.
    ///
    /// Sums weights (per tensor, for each format's real layout), KV cache,
    /// the engine's activations or compute buffers and its runtime overhead
    /// (formulas and sources in docs/VRAM.md), for every GPU × format asked.
    /// Prints whether it fits, the headroom, the largest context at --users,
    /// the most users at --ctx, llama.cpp's -ngl and host RAM when it does
    /// not fit, the hourly price and the engine command line.
    ///
    /// MODEL is anything inspect-arch reads (directory, .safetensors,
    /// .gguf, cached repo id), a bare config.json, or a built-in catalog
    /// name (Qwen2.5-0.5B…72B, Llama-3-8B, Llama-3.1-8B/70B, Llama-3.2-1B/3B,
    /// Mistral-7B, Mistral-Small-24B, SmolLM2-135M/360M/1.7B, or their Hub
    /// repo ids); --list prints the catalogs.
    #[command(after_help = "Examples:\n  \
        llmtool vram-plan Qwen2.5-14B --gpu T4,A10G --quant bf16,int8,nf4\n  \
        llmtool vram-plan Qwen2.5-14B --gpu T4 --users 8 --ctx 8192 --recommend\n  \
        llmtool vram-plan model-Q4_K_M.gguf --gpus 2xT4 --ctx 32768 --kv-cache q8_0\n  \
        llmtool vram-plan ./config.json --engine vllm --vram 24GiB --quant awq --json\n  \
        llmtool vram-plan Llama-3.1-8B --detect --quant q4_k_m,q8_0")]
    VramPlan {
        /// Model: path, cached repo id, config.json, or catalog name.
        #[arg(required_unless_present = "list")]
        model: Option<String>,
        /// Formats to compare, comma-separated: bf16, f16, int8, nf4, awq, gptq,
        /// gptq-int8, q4_k_m, q5_k_m, q6_k, q8_0, native (the model's own tensors).
        #[arg(long, value_delimiter = ',')]
        quant: Vec<String>,
        /// transformers, vllm or llama.cpp (default: llama.cpp for GGUF formats,
        /// transformers for the others).
        #[arg(long)]
        engine: Option<String>,
        /// Context length per sequence (tokens).
        #[arg(long, default_value_t = 4096)]
        ctx: u64,
        /// Concurrent sequences.
        #[arg(long, default_value_t = 1)]
        users: u64,
        /// Tokens per forward pass (llama.cpp -ub, default 512; vLLM
        /// --max-num-batched-tokens; transformers: prompt tokens, default --ctx).
        #[arg(long)]
        ubatch: Option<u64>,
        /// KV cache type: f16, bf16, q8_0, q4_0 (llama.cpp), fp8 (vLLM).
        #[arg(long)]
        kv_cache: Option<String>,
        /// GPUs to compare, comma-separated catalog names or sizes (T4,A10G,16GiB);
        /// default T4,A10G,L4,A100-40GB.
        #[arg(long, conflicts_with_all = ["vram", "gpus", "detect"])]
        gpu: Option<String>,
        /// A GPU of this much memory (16GiB, 24GB, 15360MiB).
        #[arg(long, conflicts_with_all = ["gpus", "detect"])]
        vram: Option<String>,
        /// Several GPUs used together: 2xT4, 4xA10G (comma-separated to compare).
        #[arg(long, conflicts_with = "detect")]
        gpus: Option<String>,
        /// Read this machine's GPUs with nvidia-smi.
        #[arg(long)]
        detect: bool,
        /// GPU catalog TOML replacing the built-in one (format: data/gpus.toml).
        #[arg(long)]
        catalog: Option<std::path::PathBuf>,
        /// vLLM --gpu-memory-utilization.
        #[arg(long, default_value_t = 0.9)]
        gpu_util: f64,
        /// llama.cpp without flash attention (bigger compute buffer, no quantized V cache).
        #[arg(long)]
        no_flash_attn: bool,
        /// vLLM --enforce-eager (no CUDA graph memory).
        #[arg(long)]
        enforce_eager: bool,
        /// Pick the best-quality format that fits with --margin to spare.
        #[arg(long)]
        recommend: bool,
        /// Fraction of each GPU --recommend keeps free.
        #[arg(long, default_value_t = 0.05)]
        margin: f64,
        /// Print the model and GPU catalogs.
        #[arg(long)]
        list: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate text with the built-in CPU engine, streamed to stdout.
    ///
    /// Runs llama, mistral and qwen2 models in f32 straight over their stored
    /// weights (f32, f16, bf16, GGUF Q4_0…Q8_0 and k-quants) without
    /// dequantizing the whole model. Prints prefill and decode tokens/s on
    /// stderr at the end. A GGUF model's tokenizer is built from its own
    /// vocabulary unless --tokenizer names a Hugging Face directory.
    #[command(after_help = "Examples:\n  \
        llmtool generate ./smollm2-hf --prompt 'The capital of France is' --max-tokens 32\n  \
        llmtool generate ./smollm2-hf --chat --prompt 'Write a haiku about Rust' --temp 0.7 --top-p 0.9 --seed 1\n  \
        llmtool generate model.Q4_K_M.gguf --tokenizer ./hf --prompt 'Hello' --threads 2")]
    Generate {
        /// Model directory, file, or cached repo id.
        model: String,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the model's chat template as one user turn.
        #[arg(long)]
        chat: bool,
        /// System message for --chat.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Tokens to generate at most (stops earlier at end-of-sequence).
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Sampling temperature; 0 is greedy.
        #[arg(long = "temp", default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus sampling: keep the most likely tokens up to this probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        run: RunArgs,
        /// Print the generation (tokens, text, speeds) as JSON instead of streaming.
        #[arg(long)]
        json: bool,
    },
    /// Measure a model's quality on a text: perplexity, KL divergence.
    #[command(subcommand)]
    Eval(EvalCommand),
}

/// Options shared by every command that runs the engine.
#[derive(clap::Args)]
struct RunArgs {
    /// Hugging Face directory (or tokenizer.json) holding the tokenizer; default: the model's directory.
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Multiply quantized GGUF weights exactly in f32 (transformers' numbers
    /// for the dequantized model) instead of rounding activations to 8 bits
    /// for integer dot products as llama.cpp does (the default: llama.cpp's
    /// numbers, faster).
    #[arg(long)]
    exact: bool,
}

impl RunArgs {
    fn engine<'m>(&self, m: &'m llmtool::store::Model) -> Result<engine::Engine<'m>> {
        let acts = if self.exact {
            engine::Activations::Exact
        } else {
            engine::Activations::Q8
        };
        Ok(engine::Engine::new(m)?.with_activations(acts))
    }
}

/// Chunking options shared by the evaluations.
#[derive(clap::Args)]
struct EvalArgs {
    /// Text file to evaluate on.
    #[arg(long)]
    text: std::path::PathBuf,
    /// Tokens per chunk (llama-perplexity's -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Perplexity on a text, computed the way llama-perplexity does.
    ///
    /// Tokenizes the whole text (with BOS when the tokenizer adds it), cuts it
    /// into chunks of --ctx tokens, starts each chunk with BOS, and scores the
    /// second half of every chunk. Numbers are comparable with llama.cpp's.
    #[command(after_help = "Examples:\n  \
        llmtool eval ppl ./smollm2-hf --text wiki.test.raw\n  \
        llmtool eval ppl model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --ctx 512 --json")]
    Ppl {
        /// Model directory, file, or cached repo id.
        model: String,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// KL divergence of OTHER's token distributions from BASE's, and top-1 agreement.
    ///
    /// Both models see the same chunks as `eval ppl`; per scored position the
    /// KL divergence KL(BASE || OTHER) is computed over the whole vocabulary.
    /// The two may be in any formats (e.g. an HF directory and a Q4_K_M GGUF)
    /// but must share the tokenizer, which is BASE's (or --tokenizer).
    #[command(after_help = "Examples:\n  \
        llmtool eval kld ./smollm2-hf model.Q4_K_M.gguf --text corpus.txt\n  \
        llmtool eval kld model-f16.gguf model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --json")]
    Kld {
        /// The reference model.
        base: String,
        /// The model compared against it.
        other: String,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Subcommand)]
enum LoraCommand {
    /// Merge one or more PEFT LoRA adapters into a base model (W + Σ wᵢ·ΔWᵢ).
    ///
    /// Streams tensor by tensor: memory stays around one row chunk whatever
    /// the model size. The output is a Hugging Face directory (sharded
    /// safetensors, index, config, tokenizer files, a model card recording
    /// provenance), written under a temporary name and renamed when complete.
    #[command(after_help = "Examples:\n  \
        llmtool lora merge --base Qwen/Qwen2.5-14B-Instruct --adapter ./spinoza --out ./spinoza-merged\n  \
        llmtool lora merge --base ./base --adapter ./kant:0.7 --adapter ./hume:0.3 --out ./blend --dtype bf16\n  \
        llmtool lora merge --base ./base --adapter ./bergson --out ./m --dry-run --json")]
    Merge {
        /// Base model: HF directory, index, or cached repo id.
        #[arg(long)]
        base: String,
        /// PEFT adapter directory, optionally with a weight: PATH[:WEIGHT] (repeatable).
        #[arg(long = "adapter", required = true)]
        adapters: Vec<String>,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Output dtype (default: the base's).
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        dtype: Option<String>,
        /// Largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
        #[arg(long, default_value = "5GB")]
        max_shard_size: String,
        /// Check everything and print the plan without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rank, alpha, scaling, targets, layers and size of a PEFT LoRA adapter.
    #[command(after_help = "Example:\n  llmtool lora inspect ./spinoza --json")]
    Inspect {
        /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
        adapter: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Formats `quantize` writes.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, clap::ValueEnum)]
enum QuantFormat {
    /// GGUF Q4_K_M: Q4_K, with Q6_K for the output and some attn_v/ffn_down layers (llama-quantize's mix).
    #[value(name = "q4_k_m", alias = "Q4_K_M")]
    Q4_k_m,
    /// GGUF Q5_K_M: Q5_K with Q6_K where llama-quantize puts it.
    #[value(name = "q5_k_m", alias = "Q5_K_M")]
    Q5_k_m,
    /// GGUF Q6_K.
    #[value(name = "q6_k", alias = "Q6_K")]
    Q6_k,
    /// GGUF Q8_0.
    #[value(name = "q8_0", alias = "Q8_0")]
    Q8_0,
    /// GGUF Q4_0 (output tensor Q6_K).
    #[value(name = "q4_0", alias = "Q4_0")]
    Q4_0,
    /// GGUF, 2-D weights in IEEE half.
    F16,
    /// GGUF, 2-D weights in bfloat16.
    Bf16,
    /// GGUF, everything in f32.
    F32,
    /// bitsandbytes 4-bit NormalFloat (QLoRA's format).
    Nf4,
    /// bitsandbytes 4-bit float.
    Fp4,
    /// bitsandbytes LLM.int8 (8-bit rows with per-row scales).
    Int8,
}

impl QuantFormat {
    /// The GGUF file type, or the bitsandbytes format.
    fn target(self) -> Result<FileType, BnbFormat> {
        Ok(match self {
            QuantFormat::Q4_k_m => FileType::Q4_K_M,
            QuantFormat::Q5_k_m => FileType::Q5_K_M,
            QuantFormat::Q6_k => FileType::Q6_K,
            QuantFormat::Q8_0 => FileType::Q8_0,
            QuantFormat::Q4_0 => FileType::Q4_0,
            QuantFormat::F16 => FileType::F16,
            QuantFormat::Bf16 => FileType::BF16,
            QuantFormat::F32 => FileType::F32,
            QuantFormat::Nf4 => return Err(BnbFormat::Nf4),
            QuantFormat::Fp4 => return Err(BnbFormat::Fp4),
            QuantFormat::Int8 => return Err(BnbFormat::Int8),
        })
    }
}

/// Splits `PATH[:WEIGHT]`; a suffix that is not a number stays in the path.
fn adapter_spec(s: &str) -> (std::path::PathBuf, f64) {
    match s.rsplit_once(':') {
        Some((p, w)) if !p.is_empty() => match w.parse::<f64>() {
            Ok(w) => (p.into(), w),
            Err(_) => (s.into(), 1.0),
        },
        _ => (s.into(), 1.0),
    }
}

fn parse_dtype(d: Option<String>) -> Option<store::DType> {
    d.map(|d| match d.as_str() {
        "f32" => store::DType::F32,
        "f16" => store::DType::F16,
        _ => store::DType::BF16,
    })
}

/// `--max-shard-size` as transformers reads it.
fn shard_size(s: &str) -> Result<u64> {
    parse_size(s)
        .with_context(|| format!("--max-shard-size '{s}' is not a size like 5GB, 500MB or 2GiB"))
}

/// Sizes rayon's pool; called once, before any parallel work.
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    Ok(())
}

fn open_model(spec: &str) -> Result<store::Model> {
    store::Model::open(spec).with_context(|| format!("cannot open model '{spec}'"))
}

/// Opens the text file of an evaluation and tokenizes it, BOS in front when
/// llama.cpp would put it there for `model`.
fn eval_tokens(
    text: &engine::text::Text,
    model: &store::Model,
    e: &EvalArgs,
) -> Result<(Vec<u32>, Option<u32>)> {
    let raw = std::fs::read_to_string(&e.text)
        .with_context(|| format!("cannot read text file {}", e.text.display()))?;
    let bos = text.bos_for(model)?;
    Ok((text.encode_with_bos(&raw, bos)?, bos))
}

fn eval_options(e: &EvalArgs) -> eval::EvalOptions {
    eval::EvalOptions {
        ctx: e.ctx,
        max_chunks: e.chunks,
        progress: !e.json,
    }
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Quantize {
            format,
            model,
            out,
            name,
            pre,
            tokenizer_from,
            skip,
            blocksize,
            no_double_quant,
            compute_dtype,
            torch_threads,
            max_shard_size,
            dry_run,
            json,
        } => {
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            match format.target() {
                Ok(ftype) => {
                    let opts = quantize::GgufOptions {
                        out,
                        name,
                        progress: !json,
                    };
                    let tokenizer = match &tokenizer_from {
                        Some(t) => {
                            let g = store::Model::open(t)
                                .with_context(|| format!("cannot open --tokenizer-from '{t}'"))?;
                            quantize::tokenizer_from_gguf(&m, &g)?
                        }
                        None => quantize::tokenizer_metadata(&m, pre.as_deref())?,
                    };
                    let report = quantize::to_gguf(&m, ftype, tokenizer, &opts, dry_run)?;
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        let types: Vec<String> = report
                            .types
                            .iter()
                            .map(|(k, n)| format!("{n} {k}"))
                            .collect();
                        println!(
                            "{} {}: {} tensors ({}), {}",
                            if dry_run { "would write" } else { "wrote" },
                            report.out.display(),
                            report.tensors,
                            types.join(", "),
                            inspect::human_bytes(report.bytes),
                        );
                    }
                }
                Err(bformat) => {
                    let max_shard_size = shard_size(&max_shard_size)?;
                    let defaults = BnbOptions::new(out);
                    let opts = BnbOptions {
                        torch_threads: torch_threads.unwrap_or(defaults.torch_threads),
                        blocksize,
                        double_quant: !no_double_quant,
                        compute_dtype: parse_dtype(compute_dtype),
                        skip,
                        max_shard_size,
                        command: command_line(),
                        model_label: model.clone(),
                        progress: !json,
                        ..defaults
                    };
                    let report = bnb::quantize(&m, bformat, &opts, dry_run)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        println!(
                            "{} {}: {} Linear layers quantized, {} kept ({}), {} → {}; files: {}",
                            if dry_run { "would write" } else { "wrote" },
                            report.out.display(),
                            report.quantized,
                            report.kept.len(),
                            report.kept.join(", "),
                            inspect::human_bytes(report.source_bytes),
                            inspect::human_bytes(report.bytes),
                            report.files.join(", ")
                        );
                    }
                }
            }
        }
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            run,
            json,
        } => {
            set_threads(run.threads)?;
            let valid = top_p > 0.0 && top_p <= 1.0 && temperature >= 0.0;
            if !valid {
                anyhow::bail!("--top-p must be in (0, 1] and --temp at least 0");
            }
            let m = open_model(&model)?;
            let text = engine::text::Text::load(&m, run.tokenizer.as_deref())?;
            let eng = run.engine(&m)?;
            let ids = if chat {
                text.encode(&text.chat_prompt(&prompt, system.as_deref())?, false)?
            } else {
                text.encode(&prompt, true)?
            };
            let sampling = engine::generate::Sampling {
                max_tokens,
                temperature,
                top_p,
                seed,
            };
            // Stream: print the text of all tokens so far minus what was
            // printed, holding back an incomplete UTF-8 sequence.
            let mut printed = 0usize;
            let mut so_far = Vec::new();
            let mut stdout = std::io::stdout();
            let g = engine::generate::generate(&eng, &ids, &sampling, |tok| {
                if json {
                    return;
                }
                so_far.push(tok);
                if let Ok(s) = text.decode(&so_far) {
                    if s.len() > printed && !s.ends_with('\u{FFFD}') {
                        use std::io::Write;
                        let _ = write!(stdout, "{}", &s[printed..]);
                        let _ = stdout.flush();
                        printed = s.len();
                    }
                }
            })?;
            let out = text.decode(&g.tokens)?;
            if json {
                let mut v = serde_json::to_value(&g)?;
                v["text"] = out.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if out.len() > printed {
                    print!("{}", &out[printed..]);
                }
                println!();
                eprintln!(
                    "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s (stopped at {})",
                    g.prompt_tokens,
                    g.prefill_tokens_per_second,
                    g.tokens.len(),
                    g.decode_tokens_per_second,
                    g.stop
                );
            }
        }
        Command::Eval(EvalCommand::Ppl {
            model,
            eval: e,
            run,
        }) => {
            set_threads(run.threads)?;
            let m = open_model(&model)?;
            let text = engine::text::Text::load(&m, run.tokenizer.as_deref())?;
            let eng = run.engine(&m)?;
            let (tokens, bos) = eval_tokens(&text, &m, &e)?;
            let r = eval::perplexity(&eng, &tokens, bos, &eval_options(&e))?;
            if e.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "PPL = {:.4} +/- {:.5}  ({} chunks of {} tokens, {} scored, {:.0} tokens/s)",
                    r.ppl, r.ppl_error, r.chunks, r.ctx, r.scored, r.tokens_per_second
                );
            }
        }
        Command::Eval(EvalCommand::Kld {
            base,
            other,
            eval: e,
            run,
        }) => {
            set_threads(run.threads)?;
            let mb = open_model(&base)?;
            let mo = open_model(&other)?;
            let text = engine::text::Text::load(&mb, run.tokenizer.as_deref())?;
            let eb = run.engine(&mb)?;
            let eo = run.engine(&mo)?;
            let (tokens, bos) = eval_tokens(&text, &mb, &e)?;
            let r = eval::kl_divergence(&eb, &eo, &tokens, bos, &eval_options(&e))?;
            if e.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                t.set_header(vec!["statistic", "value"]);
                t.add_row(vec![
                    "chunks × ctx".into(),
                    format!("{} × {}", r.chunks, r.ctx),
                ]);
                t.add_row(vec!["scored positions".into(), r.scored.to_string()]);
                t.add_row(vec!["PPL(base)".into(), format!("{:.4}", r.ppl_base)]);
                t.add_row(vec!["PPL(other)".into(), format!("{:.4}", r.ppl_other)]);
                t.add_row(vec![
                    "mean KLD".into(),
                    format!("{:.6} ± {:.6}", r.kld_mean, r.kld_error),
                ]);
                t.add_row(vec!["max KLD".into(), format!("{:.6}", r.kld_max)]);
                for (p, v) in &r.kld_percentiles {
                    t.add_row(vec![format!("KLD {p}%"), format!("{v:.6}")]);
                }
                t.add_row(vec![
                    "same top-1".into(),
                    format!("{:.3} %", 100.0 * r.top1_agreement),
                ]);
                println!("{t}");
            }
        }
        Command::Convert {
            model,
            out,
            dtype,
            max_shard_size,
            dry_run,
            json,
        } => {
            let max_shard_size = shard_size(&max_shard_size)?;
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let opts = to_hf::HfOptions {
                out,
                dtype: parse_dtype(dtype),
                max_shard_size,
                progress: !json,
                command: command_line(),
            };
            let report = to_hf::convert(&m, &opts, dry_run)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} {}: {} tensors, {} {}; files: {}",
                    if dry_run { "would write" } else { "wrote" },
                    report.out.display(),
                    report.tensors,
                    inspect::human_bytes(report.bytes),
                    report.dtype,
                    report.files.join(", ")
                );
            }
        }
        Command::InspectArch {
            model,
            json,
            tensors,
        } => {
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let a = arch::detect(&m);
            if json {
                let mut v = arch::manifest(&m, &a);
                if tensors {
                    v["tensors"] = inspect::tensors_json(&m);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", inspect::render_summary(&m, &a));
                if tensors {
                    print!("{}", inspect::render_tensors(&m));
                }
            }
        }
        Command::Lora(LoraCommand::Inspect { adapter, json }) => {
            let a = Adapter::open(&adapter)
                .with_context(|| format!("cannot read adapter {}", adapter.display()))?;
            let v = a.summary();
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", inspect::render_json_table(&v));
            }
        }
        Command::Lora(LoraCommand::Merge {
            base,
            adapters,
            out,
            dtype,
            max_shard_size,
            dry_run,
            json,
        }) => {
            let max_shard_size = shard_size(&max_shard_size)?;
            let model =
                store::Model::open(&base).with_context(|| format!("cannot open base '{base}'"))?;
            let mut list = Vec::new();
            for spec in &adapters {
                let (path, weight) = adapter_spec(spec);
                if !weight.is_finite() {
                    anyhow::bail!("--adapter {spec}: the weight must be a finite number");
                }
                let adapter = Adapter::open(&path)
                    .with_context(|| format!("cannot read adapter {}", path.display()))?;
                list.push(WeightedAdapter { adapter, weight });
            }
            let opts = MergeOptions {
                out,
                dtype: parse_dtype(dtype),
                max_shard_size,
                command: command_line(),
                base_label: base.clone(),
                progress: !json,
            };
            let report = merge::merge(&model, &list, &opts, dry_run)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} {}: {} tensors ({}), {} modules merged, {} replaced{}; files: {}",
                    if dry_run { "would write" } else { "wrote" },
                    report.out.display(),
                    report.tensors,
                    inspect::human_bytes(report.bytes),
                    report.merged_modules,
                    report.replaced_tensors.len(),
                    if report.untied_embeddings {
                        ", embeddings untied"
                    } else {
                        ""
                    },
                    report.files.join(", ")
                );
            }
        }
        Command::VramPlan {
            model,
            quant,
            engine,
            ctx,
            users,
            ubatch,
            kv_cache,
            gpu,
            vram,
            gpus,
            detect,
            catalog: catalog_file,
            gpu_util,
            no_flash_attn,
            enforce_eager,
            recommend,
            margin,
            list,
            json,
        } => {
            let text = match &catalog_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read --catalog {}", p.display()))?,
                ),
                None => None,
            };
            let label = catalog_file.as_ref().map(|p| p.display().to_string());
            let gpu_catalog = catalog::gpus(label.as_deref().zip(text.as_deref()))?;
            if list {
                return print_catalogs(&gpu_catalog, json);
            }
            let spec = model.unwrap_or_default();
            let m = open_plan_model(&spec)?;
            let setups = if detect {
                catalog::detect(&gpu_catalog)?
            } else if let Some(v) = vram {
                vec![plan::GpuSetup {
                    gpu: catalog::custom_gpu(catalog::parse_vram(&v)?),
                    count: 1,
                }]
            } else {
                let s = gpus
                    .or(gpu)
                    .unwrap_or_else(|| "T4,A10G,L4,A100-40GB".into());
                catalog::parse_setups(&s, &gpu_catalog)?
            };
            let asked_engine = engine.as_deref().map(Engine::parse).transpose()?;
            let opts = plan::Options {
                ctx,
                users,
                ubatch,
                kv: kv_cache.as_deref().map(plan::KvType::parse).transpose()?,
                flash_attn: !no_flash_attn,
                gpu_util,
                cuda_graphs: !enforce_eager,
            };
            let engine = default_engine(&m, asked_engine, opts.kv);
            if recommend {
                if !(0.0..0.9).contains(&margin) {
                    anyhow::bail!(
                        "--margin must be a fraction between 0 and 0.9 (0.1 = keep 10% free)"
                    );
                }
                let mut out = Vec::new();
                for s in &setups {
                    out.push((s, plan::recommend(&m, engine, &opts, s, margin)?));
                }
                if json {
                    let v: Vec<_> = out
                        .iter()
                        .map(|(s, r)| serde_json::json!({"gpu": s.label(), "recommendation": r}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for (s, r) in &out {
                        println!("== {} ==", s.label());
                        print!("{}", plan::render::render_recommendation(&m, r));
                    }
                }
                return Ok(());
            }
            let formats: Vec<Format> = if quant.is_empty() {
                default_formats(&m, engine)
            } else {
                quant
                    .iter()
                    .map(|q| Format::parse(q))
                    .collect::<Result<_, _>>()?
            };
            let mut rows = Vec::new();
            for s in &setups {
                for &f in &formats {
                    let e = engine.unwrap_or_else(|| Engine::natural(f, &m));
                    rows.push(plan::plan(&m, f, e, &opts, s)?);
                }
            }
            if json {
                let v = serde_json::json!({
                    "model": m.shape,
                    "source": m.source,
                    "parameters": m.params(),
                    "options": opts,
                    "plans": rows,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", plan::render::render_rows(&m, &rows));
            }
        }
    }
    Ok(())
}

/// Resolves a `vram-plan` MODEL: an existing path (model or config.json),
/// a catalog name, or a cached Hub repo id.
fn open_plan_model(spec: &str) -> Result<ModelSpec> {
    let path = std::path::Path::new(spec);
    if path.is_file()
        && path.extension().is_some_and(|e| e == "json")
        && !spec.ends_with(".index.json")
    {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {spec}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{spec} is not valid JSON"))?;
        return Ok(ModelSpec::from_config(&v, spec)?);
    }
    if !path.exists() {
        if let Some(c) = catalog::find_model(spec) {
            let repo = c.repo.clone();
            return Ok(ModelSpec::from_shape(c.shape, repo)?);
        }
    }
    let m = store::Model::open(spec).with_context(|| {
        format!("cannot open model '{spec}' (and it is not in the built-in catalog: see --list)")
    })?;
    Ok(ModelSpec::from_model(&m, spec)?)
}

/// The engine when --engine is not given: llama.cpp for a GGUF model or a
/// quantized KV cache, vLLM for an fp8 KV cache, else each format's own.
fn default_engine(
    m: &ModelSpec,
    engine: Option<Engine>,
    kv: Option<plan::KvType>,
) -> Option<Engine> {
    use plan::KvType;
    engine.or(match kv {
        Some(KvType::Q8_0 | KvType::Q4_0) => Some(Engine::LlamaCpp),
        Some(KvType::Fp8) => Some(Engine::Vllm),
        _ if m.is_gguf => Some(Engine::LlamaCpp),
        _ => None,
    })
}

/// Formats compared when --quant is not given: the model's own tensors (a
/// real model), then a spread of formats the engine loads.
fn default_formats(m: &ModelSpec, engine: Option<Engine>) -> Vec<Format> {
    let mut v = Vec::new();
    if m.has_stored && engine.is_none_or(|e| m.is_gguf == (e == Engine::LlamaCpp)) {
        v.push(Format::Native);
    }
    v.extend_from_slice(match engine {
        Some(Engine::LlamaCpp) => &[
            Format::F16,
            Format::Q8_0,
            Format::Q6K,
            Format::Q5KM,
            Format::Q4KM,
        ],
        Some(Engine::Vllm) => &[Format::Bf16, Format::Gptq8, Format::Awq, Format::Gptq],
        Some(Engine::Transformers) => &[Format::Bf16, Format::Int8, Format::Awq, Format::Nf4],
        None => &[
            Format::Bf16,
            Format::Int8,
            Format::Nf4,
            Format::Q8_0,
            Format::Q4KM,
        ],
    });
    v
}

fn print_catalogs(gpus: &[plan::Gpu], json: bool) -> Result<()> {
    let models = catalog::models();
    if json {
        let v = serde_json::json!({
            "models": models.iter().map(|m| serde_json::json!({"repo": m.repo, "aliases": m.aliases, "shape": m.shape})).collect::<Vec<_>>(),
            "gpus": gpus,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("models (data/models.toml):");
    for m in &models {
        println!("  {:<20} {}", m.shape.name, m.repo);
    }
    println!("GPUs (data/gpus.toml or --catalog):");
    for g in gpus {
        println!(
            "  {:<10} {:>6} MiB {:>6} GB/s  ${:.2}/h  ({})",
            g.name, g.vram_mib, g.bandwidth_gbs, g.price_per_hour, g.price_source
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = interrupt::install() {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain()
                .any(|c| matches!(c.downcast_ref(), Some(store::StoreError::Interrupted)))
            {
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}
