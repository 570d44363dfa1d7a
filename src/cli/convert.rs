//! `llmtool convert`: arguments → [`HfOptions`] → [`convert::convert`].

use anyhow::Result;

use super::args::{self, HfOutArgs};
use super::output::{self, WrittenLine};
use crate::ops::convert::{self, HfOptions, HfReport};
use crate::units::human_bytes;

/// Convert a GGUF model or a GPTQ/AWQ checkpoint to Hugging Face safetensors.
///
/// GGUF: dequantizes every tensor exactly as gguf-py does, puts the Q/K
/// rows llama.cpp permutes back in Hugging Face order, and writes
/// config.json, generation_config.json and the tokenizer (tokenizer.json,
/// tokenizer_config.json with the chat template) rebuilt from the GGUF
/// metadata. Supports llama (and Mistral) and qwen2 GGUFs.
///
/// GPTQ (v1, v2), AWQ GEMM or compressed-tensors pack-quantized
/// checkpoint: writes the model its codes stand for, every packed layer
/// dequantized to (q − z)·s (in the scales' dtype when the rest of the
/// model shares it, else f32), config.json without quantization_config,
/// tokenizer files copied.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool convert SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf\n  \
    llmtool convert model-f16.gguf --out ./hf --dtype bf16 --max-shard-size 2GB\n  \
    llmtool convert model.gguf --out ./hf --dry-run --json\n  \
    llmtool convert ./Qwen2.5-7B-Instruct-GPTQ-Int4 --out ./qwen-dequantized")]
pub struct Args {
    /// The GGUF file (the first shard of a split GGUF), or a GPTQ / AWQ /
    /// compressed-tensors checkpoint directory.
    model: String,
    #[command(flatten)]
    output: HfOutArgs,
}

pub fn run(a: Args) -> Result<()> {
    let m = super::remote::open(&a.model)?;
    let opts = HfOptions {
        out: a.output.out,
        dtype: a.output.dtype.map(Into::into),
        max_shard_size: a.output.shard.max_shard_size,
        progress: !a.output.write.json,
        command: args::command_line(),
    };
    let report = convert::convert(&m, &opts, a.output.write.dry_run)?;
    output::emit_written(report, a.output.write)
}

impl WrittenLine for HfReport {
    fn warnings(&self) -> &[String] {
        &self.warnings
    }
    fn line(&self, verb: &str) -> String {
        let r = self;
        format!(
            "{} {}: {} tensors, {} {}; files: {}\n",
            verb,
            r.out.display(),
            r.tensors,
            human_bytes(r.bytes),
            r.dtype,
            r.files.join(", ")
        )
    }
}
