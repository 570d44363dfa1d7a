//! The `llmtool` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

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
