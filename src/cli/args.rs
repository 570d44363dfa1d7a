//! Argument groups shared by several commands, defined once and flattened
//! into each command's arguments, with the conversion to the library's
//! options.

use anyhow::{Context, Result};

use crate::model::engine::Activations;
use crate::ops::EngineOptions;
use crate::store::DType;

/// `--json`: the report as JSON on stdout instead of tables.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct JsonArg {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--dry-run` and `--json` of the commands that write.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WriteArgs {
    /// Check everything and print the plan without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Floating-point dtypes of written safetensors.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

/// The output of the commands that write a Hugging Face directory.
#[derive(clap::Args, Debug, Clone)]
pub struct HfOutArgs {
    /// Output directory (must not exist or be empty).
    #[arg(short = 'o', long)]
    pub out: std::path::PathBuf,
    /// Output dtype (default: the input's float type; f32 for a quantized GGUF, which keeps the dequantized values exactly).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    #[command(flatten)]
    pub shard: ShardArg,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// `--max-shard-size` of safetensors writers.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ShardArg {
    /// Largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
    #[arg(long, default_value = "5GB", value_parser = parse_shard_size)]
    pub max_shard_size: u64,
}

/// A shard size flag's value (`units::parse_size`), with the forms in the error.
pub fn parse_shard_size(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s)
        .ok_or_else(|| format!("'{s}' is not a size like 5GB, 500MB or 2GiB"))
}

/// Options of every command that runs the engine.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Hugging Face directory (or tokenizer.json) holding the tokenizer; default: the model's directory.
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Multiply quantized GGUF weights exactly in f32 (transformers' numbers
    /// for the dequantized model) instead of rounding activations to 8 bits
    /// for integer dot products as llama.cpp does (the default: llama.cpp's
    /// numbers, faster).
    #[arg(long)]
    pub exact: bool,
}

impl EngineArgs {
    /// Sizes the thread pool and returns the engine options.
    pub fn options(&self) -> Result<EngineOptions> {
        self.threads.apply()?;
        Ok(EngineOptions {
            tokenizer: self.tokenizer.clone(),
            activations: if self.exact {
                Activations::Exact
            } else {
                Activations::Q8
            },
        })
    }
}

/// `--threads`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ThreadsArg {
    /// Worker threads (default: one per core).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl ThreadsArg {
    /// Sizes rayon's pool; called once, before any parallel work.
    pub fn apply(&self) -> Result<()> {
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.into())
                .build_global()
                .context("cannot start the thread pool")?;
        }
        Ok(())
    }
}

/// The command line as typed, for model cards; arguments that are not
/// UTF-8 are rendered lossily rather than refused.
pub fn command_line() -> String {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--catalog FILE` of `vram-plan` and `fragment plan`: (label, TOML text).
pub fn read_catalog(path: Option<&std::path::Path>) -> Result<Option<(String, String)>> {
    path.map(|p| {
        Ok((
            p.display().to_string(),
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read --catalog {}", p.display()))?,
        ))
    })
    .transpose()
}

/// The serving setup `vram-plan` and `fragment plan` size memory for.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Context length per sequence (tokens).
    #[arg(short = 'c', long, default_value_t = 4096)]
    pub ctx: u64,
    /// Concurrent sequences.
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    /// Tokens per forward pass (llama.cpp -ub, default 512; vLLM
    /// --max-num-batched-tokens; transformers: prompt tokens, default --ctx).
    #[arg(long)]
    pub ubatch: Option<u64>,
    /// KV cache type: f16, bf16, q8_0, q4_0 (llama.cpp), fp8 (vLLM).
    #[arg(long)]
    pub kv_cache: Option<String>,
    /// vLLM --gpu-memory-utilization.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_util: f64,
    /// llama.cpp without flash attention (bigger compute buffer, no quantized V cache).
    #[arg(long)]
    pub no_flash_attn: bool,
    /// vLLM --enforce-eager (no CUDA graph memory).
    #[arg(long)]
    pub enforce_eager: bool,
}

impl MemoryArgs {
    pub fn options(&self) -> Result<crate::ops::vram::Options> {
        Ok(crate::ops::vram::Options {
            ctx: self.ctx,
            users: self.users,
            ubatch: self.ubatch,
            kv: self
                .kv_cache
                .as_deref()
                .map(crate::ops::vram::KvType::parse)
                .transpose()?,
            flash_attn: !self.no_flash_attn,
            gpu_util: self.gpu_util,
            cuda_graphs: !self.enforce_eager,
        })
    }
}
