//! `llmtool quantize FORMAT MODEL --out OUT`: one entry point for every
//! quantized artifact. GGUF formats go through [`gguf`] (llama.cpp's
//! converter and `llama-quantize` in one streaming pass, laid out by
//! [`gguf_layout`]); bitsandbytes formats through [`bnb`].

pub mod bnb;
pub mod gguf;
pub mod gguf_layout;
pub mod gptq;

use serde::Serialize;

use crate::ops::Result;
use crate::quant::ftype::FileType;
use crate::store::Model;
use bnb::{BnbFormat, BnbOptions, BnbReport};
use gguf::GgufOptions;
use gguf_layout::GgufReport;

/// Where a GGUF's `tokenizer.*` metadata comes from.
pub enum GgufTokenizer {
    /// The model's own tokenizer files, as llama.cpp's converter reads them
    /// (`pre` overrides the detected pre-tokenizer); a GGUF input keeps its own.
    FromModel { pre: Option<String> },
    /// The `tokenizer.*` entries of another GGUF (`--tokenizer-from`).
    FromGguf(Box<Model>),
}

/// One quantization job.
pub enum Job {
    Gguf {
        ftype: FileType,
        tokenizer: GgufTokenizer,
        options: GgufOptions,
    },
    Bnb {
        format: BnbFormat,
        options: Box<BnbOptions>,
    },
}

/// What was written (or, on a dry run, would be).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Gguf(GgufReport),
    Bnb(BnbReport),
}

/// Runs `job` on `model` (only plans it when `dry_run`).
pub fn run(model: &Model, job: &Job, dry_run: bool) -> Result<Report> {
    match job {
        Job::Gguf {
            ftype,
            tokenizer,
            options,
        } => {
            let meta = match tokenizer {
                GgufTokenizer::FromModel { pre } => {
                    gguf::tokenizer_metadata(model, pre.as_deref())?
                }
                GgufTokenizer::FromGguf(g) => gguf::tokenizer_from_gguf(model, g)?,
            };
            Ok(Report::Gguf(gguf::to_gguf(
                model, *ftype, meta, options, dry_run,
            )?))
        }
        Job::Bnb { format, options } => Ok(Report::Bnb(bnb::quantize(
            model, *format, options, dry_run,
        )?)),
    }
}
