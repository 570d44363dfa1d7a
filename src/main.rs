//! The `llmtool` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use llmtool::bnb::{self, BnbFormat, BnbOptions};
use llmtool::lora::Adapter;
use llmtool::merge::{self, MergeOptions, WeightedAdapter};
use llmtool::store::safetensors::parse_size;
use llmtool::{arch, inspect, interrupt, store};

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
    /// LoRA adapters: inspect them, merge them into their base.
    #[command(subcommand)]
    Lora(LoraCommand),
    /// Quantize a model into a deployable format, without a GPU.
    ///
    /// nf4, fp4, int8: a bitsandbytes checkpoint (Hugging Face directory)
    /// that transformers and vLLM load pre-quantized, bit-identical to what
    /// bitsandbytes produces on CPU. Every Linear layer but the output head
    /// (and --skip patterns) is quantized; other tensors are copied. Streams
    /// tensor by tensor into a temporary directory renamed at the end.
    #[command(after_help = "Examples:\n  \
        llmtool quantize nf4 Qwen/Qwen2.5-14B-Instruct --out ./qwen14b-nf4\n  \
        llmtool quantize fp4 ./merged --out ./merged-fp4 --blocksize 128 --no-double-quant\n  \
        llmtool quantize int8 ./merged --out ./merged-int8 --skip mlp.down_proj\n  \
        llmtool quantize nf4 ./merged --out ./m --dry-run --json")]
    Quantize {
        /// Target format.
        #[arg(value_enum)]
        format: QuantFormat,
        /// Model: HF directory, index, or cached repo id.
        model: String,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Modules to keep unquantized besides lm_head, as transformers matches
        /// llm_int8_skip_modules: a last name component (down_proj), a full
        /// module name, or a prefix path (model.layers.0). Repeatable.
        #[arg(long)]
        skip: Vec<String>,
        /// 4-bit block size (32, 64, …, 4096).
        #[arg(long, default_value_t = bnb::DEFAULT_BLOCKSIZE)]
        blocksize: usize,
        /// 4-bit: keep the block maxima in float32 instead of quantizing them to 8 bits.
        #[arg(long)]
        no_double_quant: bool,
        /// 4-bit: dtype of the matmuls at inference (bnb_4bit_compute_dtype); default: the weights' dtype.
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        compute_dtype: Option<String>,
        /// 4-bit double quant: torch thread count whose mean of the block maxima
        /// to reproduce for layers of 32768+ blocks (bitsandbytes' offset depends
        /// on it); default: this machine's cores, torch's default.
        #[arg(long)]
        torch_threads: Option<usize>,
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
}

/// Formats `quantize` writes.
#[derive(Clone, Copy, ValueEnum)]
enum QuantFormat {
    /// bitsandbytes 4-bit NormalFloat (QLoRA's format).
    Nf4,
    /// bitsandbytes 4-bit float.
    Fp4,
    /// bitsandbytes LLM.int8 (8-bit rows with per-row scales).
    Int8,
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

fn dtype_arg(d: &str) -> store::DType {
    match d {
        "f32" => store::DType::F32,
        "f16" => store::DType::F16,
        _ => store::DType::BF16,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
            let max_shard_size = parse_size(&max_shard_size).with_context(|| {
                format!("--max-shard-size '{max_shard_size}' is not a size like 5GB, 500MB or 2GiB")
            })?;
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
                dtype: dtype.as_deref().map(dtype_arg),
                max_shard_size,
                command: std::env::args().collect::<Vec<_>>().join(" "),
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
        Command::Quantize {
            format,
            model,
            out,
            skip,
            blocksize,
            no_double_quant,
            compute_dtype,
            torch_threads,
            max_shard_size,
            dry_run,
            json,
        } => {
            let max_shard_size = parse_size(&max_shard_size).with_context(|| {
                format!("--max-shard-size '{max_shard_size}' is not a size like 5GB, 500MB or 2GiB")
            })?;
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let format = match format {
                QuantFormat::Nf4 => BnbFormat::Nf4,
                QuantFormat::Fp4 => BnbFormat::Fp4,
                QuantFormat::Int8 => BnbFormat::Int8,
            };
            let defaults = BnbOptions::new(out);
            let opts = BnbOptions {
                torch_threads: torch_threads.unwrap_or(defaults.torch_threads),
                blocksize,
                double_quant: !no_double_quant,
                compute_dtype: compute_dtype.as_deref().map(dtype_arg),
                skip,
                max_shard_size,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                model_label: model.clone(),
                progress: !json,
                ..defaults
            };
            let report = bnb::quantize(&m, format, &opts, dry_run)?;
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
