//! `llmtool quantize FORMAT MODEL --out OUT`: one entry point for every
//! quantized artifact. GGUF formats go through [`crate::ops::quantize::gguf_layout`]
//! (HF safetensors or a float GGUF in, one streaming pass out) with
//! `llama-quantize`'s per-tensor type choices.

use std::path::{Path, PathBuf};

use crate::ops::quantize::gguf_layout::{self, GgufReport};
use crate::ops::Error;
use crate::quant::ftype::{tensor_types, FileType, ModelFacts, TensorDesc};
use crate::quant::GgmlType;
use crate::store::Model;

/// Options of a GGUF quantization.
#[derive(Debug, Clone)]
pub struct GgufOptions {
    pub out: PathBuf,
    /// `general.name` (default: the model directory's name).
    pub name: Option<String>,
    pub progress: bool,
}

/// The `tokenizer.*` metadata for an HF model's GGUF, as llama.cpp's
/// converter writes it ([`crate::model::tokenizer::gguf_metadata_from_hf`]); `pre`
/// overrides the detected pre-tokenizer. A GGUF input keeps its own (none
/// returned here).
pub fn tokenizer_metadata(
    model: &Model,
    pre: Option<&str>,
) -> Result<Vec<(String, crate::store::gguf::Value)>, Error> {
    if model.container != crate::store::Container::Safetensors {
        return Ok(Vec::new());
    }
    crate::model::tokenizer::gguf_metadata_from_hf(&crate::store::hfdir::source_dir(model), pre)
        .map_err(|e| Error::Refused(format!("tokenizer: {e}")))
}

/// The `tokenizer.*` entries of another GGUF (`--tokenizer-from`), e.g. the
/// original file a model was converted from, so that a GGUF → HF → GGUF
/// round trip keeps llama.cpp's own tokenizer. The vocabulary must have as
/// many tokens as `model` has embedding rows.
pub fn tokenizer_from_gguf(
    model: &Model,
    gguf: &Model,
) -> Result<Vec<(String, crate::store::gguf::Value)>, Error> {
    let file = gguf.root.display().to_string();
    let Some(meta) = gguf.gguf.as_ref() else {
        return Err(Error::Refused(format!(
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
        Some(crate::store::gguf::Value::Array(a)) => a.len() as u64,
        _ => return Err(Error::Refused(format!("{file}: no tokenizer.ggml.tokens"))),
    };
    let rows = crate::model::arch::detect(model).vocab.unwrap_or(tokens);
    if rows != tokens {
        return Err(Error::Refused(format!(
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
) -> Result<GgufReport, Error> {
    if opts.out.exists() {
        return Err(Error::Refused(format!(
            "{}: output file exists; choose another --out or remove it",
            opts.out.display()
        )));
    }
    let float = match ftype {
        FileType::F32 => GgmlType::F32,
        FileType::BF16 => GgmlType::BF16,
        _ => GgmlType::F16,
    };
    let mut layout = gguf_layout::layout(model, float, opts.name.as_deref(), tokenizer)?;
    choose_types(&mut layout, ftype)?;
    if dry_run {
        return Ok(gguf_layout::report(&layout, ftype.id(), &opts.out));
    }
    gguf_layout::write(
        model,
        &layout,
        ftype.id(),
        Path::new(&opts.out),
        opts.progress,
    )
}

/// Applies `llama-quantize`'s per-tensor type choice for `ftype` to a layout
/// whose tensors hold the converter's types (F32 for 1-D/norms, `float`
/// for the rest).
fn choose_types(layout: &mut gguf_layout::GgufLayout, ftype: FileType) -> Result<(), Error> {
    let facts = ModelFacts {
        arch: layout.arch.name().to_string(),
        n_layer: layout.n_layer as u32,
        n_expert: 0,
        n_head: layout.n_head as u32,
        n_head_kv: layout.n_head_kv as u32,
    };
    let ne: Vec<Vec<u64>> = layout
        .tensors
        .iter()
        .map(|t| t.shape.iter().rev().copied().collect())
        .collect();
    let descs: Vec<TensorDesc> = layout
        .tensors
        .iter()
        .zip(&ne)
        .map(|(t, ne)| TensorDesc {
            name: &t.name,
            ne,
            ty: t.ty,
        })
        .collect();
    let choices = tensor_types(ftype, &facts, &descs)
        .map_err(|e| Error::Refused(format!("choosing tensor types: {e}")))?;
    let mut fallbacks = 0;
    for (t, c) in layout.tensors.iter_mut().zip(choices) {
        t.ty = c.ty;
        // Only block types are made by llama-quantize from the converter's
        // 16-bit file; float types are written as the converter does.
        if matches!(c.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            t.via = None;
        }
        fallbacks += c.fallback as usize;
    }
    if fallbacks > 0 {
        layout.warnings.push(format!(
            "{fallbacks} of {} tensors use a fallback type: their rows are not a multiple of the {} block size (as llama-quantize does)",
            layout.tensors.len(),
            ftype.default_type()
        ));
    }
    Ok(())
}
