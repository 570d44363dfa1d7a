//! `llmtool lora merge|inspect`: arguments → [`MergeOptions`] and the
//! adapters → [`lora::merge`]; an adapter's summary.

use anyhow::{Context, Result};

use super::args::{self, HfOutArgs, JsonArg};
use super::output::{self, JsonSummary, WrittenLine};
use crate::hub::download::Need;
use crate::model::adapter::Adapter;
use crate::ops::lora::{self, MergeOptions, MergeReport, WeightedAdapter};
use crate::store::card;
use crate::units::human_bytes;

/// LoRA adapters: inspect them, merge them into their base.
#[derive(clap::Subcommand)]
pub enum Command {
    Merge(MergeArgs),
    Inspect(InspectArgs),
}

/// Merge one or more PEFT LoRA adapters into a base model (W + Σ wᵢ·ΔWᵢ).
///
/// Streams tensor by tensor: memory stays around one row chunk whatever
/// the model size. The output is a Hugging Face directory (sharded
/// safetensors, index, config, tokenizer files, a model card recording
/// provenance), written under a temporary name and renamed when complete.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool lora merge --base Qwen/Qwen2.5-14B-Instruct --adapter ./spinoza --out ./spinoza-merged\n  \
    llmtool lora merge --base ./base --adapter ./kant:0.7 --adapter ./hume:0.3 --out ./blend --dtype bf16\n  \
    llmtool lora merge --base ./base --adapter ./bergson --out ./m --dry-run --json")]
pub struct MergeArgs {
    /// Base model: HF directory, index, Hub repo id (downloaded into the HF cache) or catalog name (qwen2.5-14b).
    #[arg(long)]
    base: String,
    /// PEFT adapter directory or Hub repo id, optionally with a weight: PATH[:WEIGHT] (repeatable).
    #[arg(long = "adapter", required = true)]
    adapters: Vec<String>,
    #[command(flatten)]
    output: HfOutArgs,
}

/// Rank, alpha, scaling, targets, layers and size of a PEFT LoRA adapter.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  llmtool lora inspect ./spinoza --json")]
pub struct InspectArgs {
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    adapter: std::path::PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Merge(a) => merge(a),
        Command::Inspect(a) => {
            let dir = super::remote::local(&a.adapter.to_string_lossy(), Need::Weights)?;
            let adapter = Adapter::open(std::path::Path::new(&dir))
                .with_context(|| format!("cannot read adapter {}", a.adapter.display()))?;
            output::emit(&JsonSummary(adapter.summary()), a.json.json)
        }
    }
}

fn merge(a: MergeArgs) -> Result<()> {
    let model = super::remote::open(&a.base).context("cannot open the base")?;
    let mut list = Vec::new();
    for spec in &a.adapters {
        let (path, weight) = adapter_spec(spec)?;
        if !weight.is_finite() {
            anyhow::bail!("--adapter {spec}: the weight must be a finite number");
        }
        let path = std::path::PathBuf::from(super::remote::local(
            &path.to_string_lossy(),
            Need::Weights,
        )?);
        let adapter = Adapter::open(&path)
            .with_context(|| format!("cannot read adapter {}", path.display()))?;
        list.push(WeightedAdapter { adapter, weight });
    }
    let opts = MergeOptions {
        out: a.output.out,
        dtype: a.output.dtype.map(Into::into),
        max_shard_size: a.output.shard.max_shard_size,
        command: args::command_line(),
        base_label: card::base_model_id(&a.base, &model.root),
        progress: !a.output.write.json,
    };
    let report = lora::merge(&model, &list, &opts, a.output.write.dry_run)?;
    output::emit_written(report, a.output.write)
}

/// Splits `PATH[:WEIGHT]`. A suffix that is not a number stays in the path
/// when the whole spec names something (a directory may contain ':'); when
/// only the part before it does, the weight is what is wrong.
fn adapter_spec(s: &str) -> Result<(std::path::PathBuf, f64)> {
    match s.rsplit_once(':') {
        Some((p, w)) if !p.is_empty() => match w.parse::<f64>() {
            Ok(w) => Ok((p.into(), w)),
            Err(_) if !std::path::Path::new(s).exists() && std::path::Path::new(p).exists() => {
                anyhow::bail!(
                    "--adapter {s}: '{w}' is not a weight; write PATH or PATH:WEIGHT with a \
                     number (e.g. {p}:0.5)"
                )
            }
            Err(_) => Ok((s.into(), 1.0)),
        },
        _ => Ok((s.into(), 1.0)),
    }
}

impl WrittenLine for MergeReport {
    fn warnings(&self) -> &[String] {
        &self.warnings
    }
    fn line(&self, verb: &str) -> String {
        let r = self;
        format!(
            "{} {}: {} tensors ({}), {} modules merged, {} replaced{}; files: {}\n",
            verb,
            r.out.display(),
            r.tensors,
            human_bytes(r.bytes),
            r.merged_modules,
            r.replaced_tensors.len(),
            if r.untied_embeddings {
                ", embeddings untied"
            } else {
                ""
            },
            r.files.join(", ")
        )
    }
}
