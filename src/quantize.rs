//! `llmtool quantize FORMAT MODEL --out OUT`: one entry point for every
//! quantized artifact. GGUF formats go through [`crate::convert::to_gguf`]
//! (HF safetensors or a float GGUF in, one streaming pass out) with
//! `llama-quantize`'s per-tensor type choices.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::convert::to_gguf::{self, GgufReport, ToGgufError};
use crate::quant::GgmlType;
use crate::store::{DType, Model, StoreError};

/// GGUF output formats, with `general.file_type` ids of `enum llama_ftype`
/// (`include/llama.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufFormat {
    F32,
    F16,
    BF16,
}

impl GgufFormat {
    /// `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            GgufFormat::F32 => 0,
            GgufFormat::F16 => 1,
            GgufFormat::BF16 => 32,
        }
    }

    /// The type 2-D weights have before the type rules.
    fn float(self) -> GgmlType {
        match self {
            GgufFormat::F32 => GgmlType::F32,
            GgufFormat::F16 => GgmlType::F16,
            GgufFormat::BF16 => GgmlType::BF16,
        }
    }
}

/// Options of a GGUF quantization.
#[derive(Debug, Clone)]
pub struct GgufOptions {
    pub out: PathBuf,
    /// `general.name` (default: the model directory's name).
    pub name: Option<String>,
    pub progress: bool,
}

/// Encodes rows of f32 values as `ty` into `out`.
pub fn encode_rows(
    ty: GgmlType,
    values: &[f32],
    _cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let dtype = DType::from_ggml(ty);
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            // Large chunks encode in parallel; the order of bytes is kept.
            let parts: Vec<Vec<u8>> = values
                .par_chunks(1 << 16)
                .map(|c| {
                    let mut b = Vec::new();
                    dtype.encode_f32s(c, &mut b);
                    b
                })
                .collect();
            out.clear();
            for p in parts {
                out.extend_from_slice(&p);
            }
            Ok(())
        }
        other => Err(StoreError::Write {
            path: PathBuf::new(),
            msg: format!("encoding {other} is not supported"),
        }),
    }
}

/// Writes `model` as a GGUF of `format` at `opts.out` (or only plans it).
pub fn to_gguf(
    model: &Model,
    format: GgufFormat,
    tokenizer: Vec<(String, crate::store::gguf::Value)>,
    opts: &GgufOptions,
    dry_run: bool,
) -> Result<GgufReport, ToGgufError> {
    if opts.out.exists() {
        return Err(ToGgufError::Refused(format!(
            "{}: output file exists; choose another --out or remove it",
            opts.out.display()
        )));
    }
    let plan = to_gguf::plan(model, format.float(), opts.name.as_deref(), tokenizer)?;
    if dry_run {
        return Ok(to_gguf::report(&plan, format.file_type(), &opts.out));
    }
    to_gguf::write(
        model,
        &plan,
        format.file_type(),
        Path::new(&opts.out),
        opts.progress,
        &encode_rows,
    )
}
