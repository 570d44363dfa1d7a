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
    let dir = crate::store::hfdir::source_dir(model);
    let entries = crate::model::tokenizer::gguf_metadata_from_hf(&dir, pre)
        .map_err(|e| Error::Refused(format!("tokenizer: {e}")))?;
    refuse_spm_over_byte_level(&dir, &entries)?;
    Ok(entries)
}

/// llama.cpp's converter (and ours, which follows it) takes a BPE
/// tokenizer.json with byte fallback for SentencePiece. transformers' GGUF
/// import saves byte-level vocabularies (SmolLM2, Llama-3) in exactly that
/// shape, so such a directory would become `tokenizer.ggml.model` llama over
/// a byte-level vocabulary: a GGUF that loads and writes `ĊĊTheĠ…`.
fn refuse_spm_over_byte_level(
    dir: &Path,
    entries: &[(String, crate::store::gguf::Value)],
) -> Result<(), Error> {
    use crate::model::tokenizer::keys;
    let spm = entries
        .iter()
        .any(|(k, v)| k == keys::MODEL && v.as_str() == Some("llama"));
    if !spm || dir.join("tokenizer.model").is_file() {
        return Ok(());
    }
    let path = dir.join("tokenizer.json");
    let Ok(text) = std::fs::read(&path) else {
        return Ok(());
    };
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let byte_level = |v: &serde_json::Value| v.to_string().contains("\"ByteLevel\"");
    if byte_level(&json["pre_tokenizer"]) || byte_level(&json["decoder"]) {
        return Err(Error::Refused(format!(
            "{}: a byte-level BPE vocabulary saved as a Llama tokenizer with byte fallback (the \
             form transformers' GGUF import writes); llama.cpp would read it as SentencePiece and \
             the GGUF would detokenize wrongly. Pass --tokenizer-from ORIGINAL.gguf, or write the \
             directory again with `llmtool convert`, which keeps the original tokenizer form",
            path.display()
        )));
    }
    Ok(())
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
    // Checked here too so that the message names this file; without an
    // embedding to count rows, the model's own check refuses later.
    let rows = model
        .tensors()
        .iter()
        .find(|t| crate::model::arch::role(&t.name) == crate::model::arch::Role::Embed)
        .and_then(|t| t.shape.first().copied());
    if let Some(rows) = rows {
        crate::model::tokenizer::check_gguf_entries(&entries, rows)
            .map_err(|e| Error::Refused(format!("{file}: {e}")))?;
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
    let a = crate::model::check::weights(model, "quantize")?;
    let mut layout = gguf_layout::layout(model, &a, float, opts.name.as_deref(), tokenizer)?;
    check_vocabulary(model, &layout)?;
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

/// Refuses to write a GGUF whose tokenizer llama.cpp could not load or
/// would load wrong (see [`crate::model::tokenizer::check_gguf_entries`]).
fn check_vocabulary(model: &Model, layout: &gguf_layout::GgufLayout) -> Result<(), Error> {
    let rows = layout
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| {
            Error::Refused(format!(
                "{}: the model has no token embedding (token_embd.weight)",
                model.root.display()
            ))
        })?;
    crate::model::tokenizer::check_gguf_entries(&layout.metadata, rows)
        .map_err(|e| Error::Refused(format!("{}: {e}", model.root.display())))
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
