//! `llmtool convert`: arguments → [`HfOptions`] → [`convert::convert`].

use anyhow::{Context, Result};

use super::args::{self, DTypeArg, DryRunArg, JsonArg, ShardArg};
use super::output::{self, Render, Written};
use crate::ops::convert::{self, HfOptions, HfReport};
use crate::store::Model;
use crate::units::human_bytes;

/// Convert a GGUF model to a Hugging Face safetensors directory.
///
/// Dequantizes every tensor exactly as gguf-py does, puts the Q/K rows
/// llama.cpp permutes back in Hugging Face order, and writes config.json,
/// generation_config.json and the tokenizer (tokenizer.json,
/// tokenizer_config.json with the chat template) rebuilt from the GGUF
/// metadata. Supports llama (and Mistral) and qwen2 GGUFs.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool convert SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf\n  \
    llmtool convert model-f16.gguf --out ./hf --dtype bf16 --max-shard-size 2GB\n  \
    llmtool convert model.gguf --out ./hf --dry-run --json")]
pub struct Args {
    /// The GGUF file (the first shard of a split GGUF).
    model: String,
    /// Output directory (must not exist or be empty).
    #[arg(short = 'o', long)]
    out: std::path::PathBuf,
    /// Output dtype (default: the GGUF's float type, or f32 for quantized files, which keeps the dequantized values exactly).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    #[command(flatten)]
    shard: ShardArg,
    #[command(flatten)]
    dry_run: DryRunArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(a: Args) -> Result<()> {
    let m = Model::open(&a.model).with_context(|| format!("cannot open model '{}'", a.model))?;
    let opts = HfOptions {
        out: a.out,
        dtype: a.dtype.map(Into::into),
        max_shard_size: a.shard.max_shard_size,
        progress: !a.json.json,
        command: args::command_line(),
    };
    let report = convert::convert(&m, &opts, a.dry_run.dry_run)?;
    output::warn(&report.warnings);
    let w = Written {
        report,
        dry_run: a.dry_run.dry_run,
    };
    output::emit(&w, a.json.json)
}

impl Render for Written<HfReport> {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.report)
    }
    fn text(&self) -> String {
        let r = &self.report;
        format!(
            "{} {}: {} tensors, {} {}; files: {}\n",
            self.verb(),
            r.out.display(),
            r.tensors,
            human_bytes(r.bytes),
            r.dtype,
            r.files.join(", ")
        )
    }
}
