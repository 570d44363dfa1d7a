//! `llmtool generate`: arguments → [`GenerateOptions`] →
//! [`generate::generate`], text streamed to stdout as it decodes.

use anyhow::Result;

use super::args::{EngineArgs, JsonArg};
use super::output::{self, Render};
use crate::model::engine::generate::Sampling;
use crate::ops::generate::{self, GenerateOptions, GenerateReport};

/// Generate text with the built-in CPU engine, streamed to stdout.
///
/// Runs llama, mistral and qwen2 models in f32 straight over their stored
/// weights (f32, f16, bf16, GGUF Q4_0…Q8_0 and k-quants) without
/// dequantizing the whole model. Prints prefill and decode tokens/s on
/// stderr at the end. A GGUF model's tokenizer is built from its own
/// vocabulary unless --tokenizer names a Hugging Face directory.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool generate ./smollm2-hf --prompt 'The capital of France is' --max-tokens 32\n  \
    llmtool generate ./smollm2-hf --chat --prompt 'Write a haiku about Rust' --temp 0.7 --top-p 0.9 --seed 1\n  \
    llmtool generate model.Q4_K_M.gguf --tokenizer ./hf --prompt 'Hello' --threads 2")]
pub struct Args {
    /// Model directory, file, Hub repo id (org/name[@rev][:QUANT], downloaded into the HF cache) or catalog name.
    model: String,
    /// The prompt text.
    #[arg(short = 'p', long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template as one user turn.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Tokens to generate at most (stops earlier at end-of-sequence).
    #[arg(short = 'n', long, default_value_t = 128)]
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
    engine: EngineArgs,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(a: Args) -> Result<()> {
    let engine = a.engine.options()?;
    let m = super::remote::open(&a.model)?;
    let opts = GenerateOptions {
        prompt: a.prompt,
        chat: a.chat,
        system: a.system,
        sampling: Sampling {
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed,
        },
        engine,
    };
    let json = a.json.json;
    let mut printed = Ok(());
    let report = generate::generate(&m, &opts, |piece| {
        if !json && printed.is_ok() {
            printed = output::print(piece);
        }
    })?;
    printed?;
    if json {
        return output::emit(&report, true);
    }
    output::print("\n")?;
    eprintln!("{}", report.text());
    Ok(())
}

impl Render for GenerateReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    /// The speeds line (the text itself was streamed).
    fn text(&self) -> String {
        let g = &self.generation;
        format!(
            "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s (stopped at {})",
            g.prompt_tokens,
            g.prefill_tokens_per_second,
            g.tokens.len(),
            g.decode_tokens_per_second,
            g.stop
        )
    }
}
