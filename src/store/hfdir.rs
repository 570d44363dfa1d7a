//! The parts of a Hugging Face model directory that every writer of one
//! (`lora merge`, `quantize nf4/fp4/int8`) shares: `config.json` as
//! transformers writes it, and the tokenizer/generation files copied from
//! the source model beside the new weights.

use std::path::{Path, PathBuf};

use crate::store::{atomic, Model, StoreError};

/// Files copied from the source directory beside the weights.
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// The directory holding a model's files (the model spec may name a file).
pub fn source_dir(model: &Model) -> PathBuf {
    if model.root.is_dir() {
        model.root.clone()
    } else {
        model
            .root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Copies the [`SIDE_FILES`] that exist beside `model` into `dir`.
pub fn copy_side_files(model: &Model, dir: &Path) -> Result<(), StoreError> {
    let src_dir = source_dir(model);
    for f in SIDE_FILES {
        let src = src_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, dir.join(f)).map_err(|e| StoreError::Io {
                path: src.clone(),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// Writes `config.json` into `dir`: pretty-printed with a final newline.
pub fn write_config(dir: &Path, config: &serde_json::Value) -> Result<PathBuf, StoreError> {
    let text = serde_json::to_string_pretty(config).expect("a JSON value serializes") + "\n";
    atomic::write_file(&dir.join("config.json"), text.as_bytes())
}

/// A JSON value with every object's keys sorted, as transformers writes
/// `config.json` (`json.dumps(..., sort_keys=True)`).
pub fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}
