//! `llmtool quantize FORMAT MODEL --out OUT`: one entry point for every
//! quantized artifact. GGUF formats go through [`gguf`] (llama.cpp's
//! converter and `llama-quantize` in one streaming pass, laid out by
//! [`gguf_layout`]); bitsandbytes formats through [`bnb`]; GPTQ through [`gptq`] and AWQ through [`awq`]
//! (calibrated layer by layer, written by [`int_checkpoint`]). A GPTQ, AWQ or
//! compressed-tensors input to a GGUF format is dequantized first (exactly;
//! [`crate::ops::dequantize`]); to bitsandbytes it is refused as every
//! pre-quantized input is.

pub mod awq;
pub mod bnb;
pub mod gguf;
pub mod gguf_layout;
pub mod gptq;
pub mod int_checkpoint;

use serde::Serialize;

use crate::model::packed::{packed_format, PackedFormat};
use crate::ops::convert::HfOptions;
use crate::ops::Result;
use crate::quant::ftype::FileType;
use crate::store::atomic::AtomicDir;
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
    Gptq(Box<gptq::GptqOptions>),
    Awq(Box<awq::AwqOptions>),
}

/// What was written (or, on a dry run, would be).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Gguf(GgufReport),
    Bnb(BnbReport),
    Gptq(Box<gptq::GptqReport>),
    Awq(Box<awq::AwqReport>),
}

/// Runs `job` on `model` (only plans it when `dry_run`).
pub fn run(model: &Model, job: &Job, dry_run: bool) -> Result<Report> {
    if let (Job::Gguf { options, .. }, Some(f)) = (job, packed_format(model)?) {
        return gguf_from_packed(model, f, job, options, dry_run);
    }
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
        Job::Gptq(options) => Ok(Report::Gptq(Box::new(gptq::quantize(
            model, options, dry_run,
        )?))),
        Job::Awq(options) => Ok(Report::Awq(Box::new(awq::quantize(
            model, options, dry_run,
        )?))),
    }
}

/// A GGUF of a GPTQ / AWQ / compressed-tensors / bitsandbytes checkpoint: the checkpoint
/// is dequantized exactly ([`crate::ops::dequantize`]) into a scratch
/// directory beside the output, removed afterwards (and on Ctrl-C), and
/// that model is quantized as any other.
fn gguf_from_packed(
    model: &Model,
    f: PackedFormat,
    job: &Job,
    options: &GgufOptions,
    dry_run: bool,
) -> Result<Report> {
    let mut name = options.out.file_name().unwrap_or_default().to_os_string();
    name.push(".dequantized");
    let scratch = AtomicDir::create(&options.out.with_file_name(name))?;
    // Named as the input, since the GGUF's general.name comes from it.
    let dir_name = model.root.file_name().unwrap_or("model".as_ref());
    let hf = HfOptions {
        out: scratch.path().join(dir_name),
        dtype: None,
        max_shard_size: u64::MAX,
        progress: options.progress,
        command: String::new(),
    };
    crate::ops::dequantize::to_hf(model, f, &hf, false)?;
    let plain = Model::open(&hf.out.to_string_lossy())?;
    run(&plain, job, dry_run)
}
