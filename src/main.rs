//! The `llmtool` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use llmtool::convert::to_hf;
use llmtool::lora::Adapter;
use llmtool::merge::{self, MergeOptions, WeightedAdapter};
use llmtool::store::safetensors::parse_size;
use llmtool::{arch, inspect, interrupt, quantize, store};

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
    /// Quantize a model into a deployable artifact.
    ///
    /// GGUF formats (f16, bf16, f32, …) read a Hugging Face model (llama,
    /// mistral, qwen2) or an F32/F16/BF16 GGUF and write a llama.cpp-ready
    /// GGUF in one streaming pass: tensor names, Q/K permutation, metadata
    /// and tokenizer as llama.cpp's converter writes them, and llama-quantize's
    /// per-tensor type choices. The file appears only when complete.
    #[command(after_help = "Examples:\n  \
        llmtool quantize f16 ./Qwen2.5-7B-Instruct --out qwen2.5-7b-f16.gguf\n  \
        llmtool quantize bf16 ./spinoza-merged --out spinoza-bf16.gguf --dry-run --json")]
    Quantize {
        /// Output format.
        format: QuantFormat,
        /// HF model directory, cached repo id, or a float GGUF.
        model: String,
        /// Output file.
        #[arg(long)]
        out: std::path::PathBuf,
        /// general.name in the GGUF (default: the model directory's name).
        #[arg(long)]
        name: Option<String>,
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
#[derive(Clone, Copy, clap::ValueEnum)]
enum QuantFormat {
    /// GGUF, 2-D weights in IEEE half.
    F16,
    /// GGUF, 2-D weights in bfloat16.
    Bf16,
    /// GGUF, everything in f32.
    F32,
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
            dry_run,
            json,
        } => {
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let gformat = match format {
                QuantFormat::F16 => quantize::GgufFormat::F16,
                QuantFormat::Bf16 => quantize::GgufFormat::BF16,
                QuantFormat::F32 => quantize::GgufFormat::F32,
            };
            let opts = quantize::GgufOptions {
                out,
                name,
                progress: !json,
            };
            // WIRE-TOKENIZER
            let report = quantize::to_gguf(&m, gformat, Vec::new(), &opts, dry_run)?;
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
        Command::Convert {
            model,
            out,
            dtype,
            max_shard_size,
            dry_run,
            json,
        } => {
            let max_shard_size = parse_size(&max_shard_size).with_context(|| {
                format!("--max-shard-size '{max_shard_size}' is not a size like 5GB, 500MB or 2GiB")
            })?;
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
