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

/// What a format name makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gguf(FileType),
    Bnb(BnbFormat),
    Gptq,
    Awq,
}

/// One format `quantize` makes: its name (as typed on the command line and
/// in recipes), a help line, and what it makes.
#[derive(Debug)]
pub struct FormatName {
    pub name: &'static str,
    /// llama.cpp's spelling, accepted too (`Q4_K_M`).
    pub alias: Option<&'static str>,
    pub help: &'static str,
    pub target: Target,
}

/// Every format this build makes, in `--help` order: the one list that
/// `quantize`'s argument and `run`'s recipe validation read.
pub const FORMATS: &[FormatName] = &[
    FormatName {
        name: "q4_k_m",
        alias: Some("Q4_K_M"),
        help: "GGUF Q4_K_M: Q4_K, with Q6_K for the output and some attn_v/ffn_down layers (llama-quantize's mix).",
        target: Target::Gguf(FileType::Q4_K_M),
    },
    FormatName {
        name: "q5_k_m",
        alias: Some("Q5_K_M"),
        help: "GGUF Q5_K_M: Q5_K with Q6_K where llama-quantize puts it.",
        target: Target::Gguf(FileType::Q5_K_M),
    },
    FormatName {
        name: "q6_k",
        alias: Some("Q6_K"),
        help: "GGUF Q6_K.",
        target: Target::Gguf(FileType::Q6_K),
    },
    FormatName {
        name: "q8_0",
        alias: Some("Q8_0"),
        help: "GGUF Q8_0.",
        target: Target::Gguf(FileType::Q8_0),
    },
    FormatName {
        name: "q4_0",
        alias: Some("Q4_0"),
        help: "GGUF Q4_0 (output tensor Q6_K).",
        target: Target::Gguf(FileType::Q4_0),
    },
    FormatName {
        name: "f16",
        alias: None,
        help: "GGUF, 2-D weights in IEEE half.",
        target: Target::Gguf(FileType::F16),
    },
    FormatName {
        name: "bf16",
        alias: None,
        help: "GGUF, 2-D weights in bfloat16.",
        target: Target::Gguf(FileType::BF16),
    },
    FormatName {
        name: "f32",
        alias: None,
        help: "GGUF, everything in f32.",
        target: Target::Gguf(FileType::F32),
    },
    FormatName {
        name: "nf4",
        alias: None,
        help: "bitsandbytes 4-bit NormalFloat (QLoRA's format).",
        target: Target::Bnb(BnbFormat::Nf4),
    },
    FormatName {
        name: "fp4",
        alias: None,
        help: "bitsandbytes 4-bit float.",
        target: Target::Bnb(BnbFormat::Fp4),
    },
    FormatName {
        name: "int8",
        alias: None,
        help: "bitsandbytes LLM.int8 (8-bit rows with per-row scales).",
        target: Target::Bnb(BnbFormat::Int8),
    },
    FormatName {
        name: "gptq",
        alias: None,
        help: "GPTQ int4/int8, calibrated layer by layer (checkpoint for vLLM, transformers).",
        target: Target::Gptq,
    },
    FormatName {
        name: "awq",
        alias: None,
        help: "AWQ int4, activation-aware scales searched layer by layer (checkpoint for vLLM, transformers).",
        target: Target::Awq,
    },
];

/// The format called `name` or its alias.
pub fn format(name: &str) -> Option<&'static FormatName> {
    FORMATS
        .iter()
        .find(|f| f.name == name || f.alias == Some(name))
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
