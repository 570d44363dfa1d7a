//! `llmtool eval ppl|kld`: arguments → [`EvalRequest`] → [`eval::ppl`] /
//! [`eval::kld`].

use anyhow::Result;

use super::args::{EngineArgs, JsonArg};
use super::output::{self, table, Render};
use crate::ops::eval::{self, EvalOptions, EvalRequest, Input, KldReport, PplReport};
use crate::store::Model;

/// Measure a model's quality on a text: perplexity, KL divergence.
#[derive(clap::Subcommand)]
pub enum Command {
    Ppl(PplArgs),
    Kld(KldArgs),
}

/// What to evaluate on, and the chunking, shared by the evaluations.
#[derive(clap::Args)]
#[group(id = "input", required = true, multiple = false, args = ["text", "ids"])]
pub struct TextArgs {
    /// Text file to evaluate on.
    #[arg(short = 'f', long)]
    text: Option<std::path::PathBuf>,
    /// Windows of token ids to evaluate on, one chunk each: {"ids": [[…], …]}, or the held-out windows of a file `quantize gptq|awq --save-windows` wrote (what its model card measured).
    #[arg(long, value_name = "FILE")]
    ids: Option<std::path::PathBuf>,
    /// Tokens per chunk (llama-perplexity's -c); with --ids, the windows' length.
    #[arg(short = 'c', long, default_value_t = 512, conflicts_with = "ids")]
    ctx: usize,
    /// Evaluate only the first N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    #[command(flatten)]
    json: JsonArg,
}

/// Perplexity on a text, computed the way llama-perplexity does.
///
/// Tokenizes the whole text (with BOS when the tokenizer adds it), cuts it
/// into chunks of --ctx tokens, starts each chunk with BOS, and scores the
/// second half of every chunk. Numbers are comparable with llama.cpp's.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool eval ppl ./smollm2-hf --text wiki.test.raw\n  \
    llmtool eval ppl model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --ctx 512 --json\n  \
    llmtool eval ppl ./other-gptq --ids windows.json   # held-out windows of quantize --save-windows")]
pub struct PplArgs {
    /// Model directory, file, Hub repo id (org/name[@rev][:QUANT], downloaded into the HF cache) or catalog name.
    model: String,
    #[command(flatten)]
    text: TextArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// KL divergence of OTHER's token distributions from BASE's, and top-1 agreement.
///
/// Both models see the same chunks as `eval ppl`; per scored position the
/// KL divergence KL(BASE || OTHER) is computed over the whole vocabulary.
/// The two may be in any formats (e.g. an HF directory and a Q4_K_M GGUF)
/// but must share the tokenizer, which is BASE's (or --tokenizer).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool eval kld ./smollm2-hf model.Q4_K_M.gguf --text corpus.txt\n  \
    llmtool eval kld model-f16.gguf model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --json\n  \
    llmtool eval kld ./smollm2 ./smollm2-gptq --ids windows.json")]
pub struct KldArgs {
    /// The reference model.
    base: String,
    /// The model compared against it.
    other: String,
    #[command(flatten)]
    text: TextArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

fn request(t: TextArgs, e: &EngineArgs) -> Result<EvalRequest> {
    Ok(EvalRequest {
        options: EvalOptions {
            ctx: t.ctx,
            max_chunks: t.chunks,
            progress: !t.json.json,
        },
        input: match (t.text, t.ids) {
            (Some(text), _) => Input::Text(text),
            (None, Some(ids)) => Input::Ids(ids),
            (None, None) => anyhow::bail!("give --text FILE or --ids FILE"),
        },
        engine: e.options()?,
    })
}

fn open(spec: &str) -> Result<Model> {
    super::remote::open(spec)
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Ppl(a) => {
            let json = a.text.json.json;
            let req = request(a.text, &a.engine)?;
            let m = open(&a.model)?;
            output::emit(&eval::ppl(&m, &req)?, json)
        }
        Command::Kld(a) => {
            let json = a.text.json.json;
            let req = request(a.text, &a.engine)?;
            let (mb, mo) = (open(&a.base)?, open(&a.other)?);
            output::emit(&eval::kld(&mb, &mo, &req)?, json)
        }
    }
}

impl Render for PplReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        format!(
            "PPL = {:.4} +/- {:.5}  ({} chunks of {} tokens, {} scored, {:.0} tokens/s)\n",
            self.ppl, self.ppl_error, self.chunks, self.ctx, self.scored, self.tokens_per_second
        )
    }
}

impl Render for KldReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let r = self;
        let mut t = table();
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
        format!("{t}\n")
    }
}
