//! `llmtool quantize FORMAT MODEL --out OUT`: one entry point for every
//! quantized artifact. GGUF formats go through [`crate::convert::to_gguf`]
//! (HF safetensors or a float GGUF in, one streaming pass out) with
//! `llama-quantize`'s per-tensor type choices.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::convert::to_gguf::{self, GgufReport, ToGgufError};
use crate::quant::ftype::{plan_types, FileType, ModelFacts, TensorDesc};
use crate::quant::GgmlType;
use crate::store::{Model, StoreError};

/// Options of a GGUF quantization.
#[derive(Debug, Clone)]
pub struct GgufOptions {
    pub out: PathBuf,
    /// `general.name` (default: the model directory's name).
    pub name: Option<String>,
    pub progress: bool,
}

/// Encodes rows of f32 values (`cols` per row) as `ty` into `out`: float
/// types directly, block types row by row in parallel with the bit-exact
/// quantizers of [`crate::quant`].
pub fn encode_rows(
    ty: GgmlType,
    values: &[f32],
    cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let cols = cols.max(1);
    let row_bytes = ty.bytes_for(cols as u64).unwrap_or(0) as usize;
    out.clear();
    out.resize(values.len() / cols * row_bytes, 0);
    values
        .par_chunks(cols)
        .zip(out.par_chunks_mut(row_bytes.max(1)))
        .try_for_each(|(src, dst)| crate::quant::quantize_row(ty, src, dst))
        .map_err(|e| StoreError::Write {
            path: PathBuf::new(),
            msg: e.to_string(),
        })
}

/// The `tokenizer.*` metadata for an HF model's GGUF, as llama.cpp's
/// converter writes it ([`crate::tokenizer::gguf_metadata_from_hf`]); `pre`
/// overrides the detected pre-tokenizer. A GGUF input keeps its own (none
/// returned here).
pub fn tokenizer_metadata(
    model: &Model,
    pre: Option<&str>,
) -> Result<Vec<(String, crate::store::gguf::Value)>, ToGgufError> {
    if model.format != crate::store::Format::Safetensors {
        return Ok(Vec::new());
    }
    crate::tokenizer::gguf_metadata_from_hf(&crate::hfdir::source_dir(model), pre)
        .map_err(|e| ToGgufError::Refused(format!("tokenizer: {e}")))
}

/// The `tokenizer.*` entries of another GGUF (`--tokenizer-from`), e.g. the
/// original file a model was converted from, so that a GGUF → HF → GGUF
/// round trip keeps llama.cpp's own tokenizer. The vocabulary must have as
/// many tokens as `model` has embedding rows.
pub fn tokenizer_from_gguf(
    model: &Model,
    gguf: &Model,
) -> Result<Vec<(String, crate::store::gguf::Value)>, ToGgufError> {
    let file = gguf.root.display().to_string();
    let Some(meta) = gguf.gguf.as_ref() else {
        return Err(ToGgufError::Refused(format!(
            "{file}: --tokenizer-from needs a GGUF file"
        )));
    };
    let entries: Vec<_> = meta
        .entries()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect();
    let tokens = match meta.get("tokenizer.ggml.tokens") {
        Some(crate::store::gguf::Value::Array(_, items)) => items.len() as u64,
        _ => {
            return Err(ToGgufError::Refused(format!(
                "{file}: no tokenizer.ggml.tokens"
            )))
        }
    };
    let rows = crate::arch::detect(model).vocab.unwrap_or(tokens);
    if rows != tokens {
        return Err(ToGgufError::Refused(format!(
            "{file}: its vocabulary has {tokens} tokens but the model's embedding has {rows} rows"
        )));
    }
    Ok(entries)
}

/// Writes `model` as a GGUF of `format` at `opts.out` (or only plans it).
pub fn to_gguf(
    model: &Model,
    ftype: FileType,
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
    let float = match ftype {
        FileType::F32 => GgmlType::F32,
        FileType::BF16 => GgmlType::BF16,
        _ => GgmlType::F16,
    };
    let mut plan = to_gguf::plan(model, float, opts.name.as_deref(), tokenizer)?;
    choose_types(&mut plan, ftype)?;
    if dry_run {
        return Ok(to_gguf::report(&plan, ftype.id(), &opts.out));
    }
    to_gguf::write(
        model,
        &plan,
        ftype.id(),
        Path::new(&opts.out),
        opts.progress,
        &encode_rows,
    )
}

/// Applies `llama-quantize`'s per-tensor type choice for `ftype` to a plan
/// whose tensors hold the converter's types (F32 for 1-D/norms, `float`
/// for the rest).
fn choose_types(plan: &mut to_gguf::GgufPlan, ftype: FileType) -> Result<(), ToGgufError> {
    let facts = ModelFacts {
        arch: plan.arch.name().to_string(),
        n_layer: plan.n_layer as u32,
        n_expert: 0,
        n_head: plan.n_head as u32,
        n_head_kv: plan.n_head_kv as u32,
    };
    let ne: Vec<Vec<u64>> = plan
        .tensors
        .iter()
        .map(|t| t.shape.iter().rev().copied().collect())
        .collect();
    let descs: Vec<TensorDesc> = plan
        .tensors
        .iter()
        .zip(&ne)
        .map(|(t, ne)| TensorDesc {
            name: &t.name,
            ne,
            ty: t.ty,
        })
        .collect();
    let choices = plan_types(ftype, &facts, &descs)
        .map_err(|e| ToGgufError::Refused(format!("choosing tensor types: {e}")))?;
    let mut fallbacks = 0;
    for (t, c) in plan.tensors.iter_mut().zip(choices) {
        t.ty = c.ty;
        // Only block types are made by llama-quantize from the converter's
        // 16-bit file; float types are written as the converter does.
        if matches!(c.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            t.via = None;
        }
        fallbacks += c.fallback as usize;
    }
    if fallbacks > 0 {
        plan.warnings.push(format!(
            "{fallbacks} of {} tensors use a fallback type: their rows are not a multiple of the {} block size (as llama-quantize does)",
            plan.tensors.len(),
            ftype.default_type()
        ));
    }
    Ok(())
}
