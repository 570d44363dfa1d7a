//! Text in and out of the engine: the `tokenizers` crate over an HF
//! `tokenizer.json`, and the model's chat template rendered with minijinja
//! the way transformers' `apply_chat_template` renders it (a Jinja template
//! over `messages`, `add_generation_prompt`, `bos_token`, `eos_token`).
//!
//! For an HF directory everything comes from the directory; for a GGUF
//! model the vocabulary in its metadata is used ([`crate::model::tokenizer`]), or an
//! HF directory named with `--tokenizer`.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::store::{Container, Model};

/// Why text could not be turned into tokens or back.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{0}")]
    Missing(String),
    #[error("{}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

/// A tokenizer and the chat template that goes with it.
pub struct Text {
    pub tokenizer: Tokenizer,
    /// Where tokenizer.json was read from.
    pub dir: PathBuf,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// A special token in tokenizer_config.json: a string or `{"content": …}`.
fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    let v = v?;
    v.as_str()
        .or_else(|| v.get("content").and_then(|c| c.as_str()))
        .map(str::to_string)
}

impl Text {
    /// The tokenizer built from a GGUF's own vocabulary
    /// ([`crate::model::tokenizer::from_gguf`], as transformers' GGUF import builds
    /// it), with the GGUF's chat template and special tokens.
    fn from_gguf(model: &Model) -> Result<Text, TextError> {
        let meta = model.gguf.as_ref().expect("GGUF models carry metadata");
        let tokenizer =
            crate::model::tokenizer::from_gguf(meta).map_err(|e| TextError::Invalid {
                path: model.root.clone(),
                msg: e.to_string(),
            })?;
        let token = |key: &str| {
            let id = meta.u64(key)?;
            tokenizer.id_to_token(u32::try_from(id).ok()?)
        };
        Ok(Text {
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
            chat_template: meta.str("tokenizer.chat_template").map(str::to_string),
            dir: model.root.clone(),
            tokenizer,
        })
    }

    /// Loads the tokenizer of `model`: from `explicit` (an HF directory or a
    /// tokenizer.json) when given, else from the model's own directory, or
    /// from a GGUF's vocabulary.
    pub fn load(model: &Model, explicit: Option<&Path>) -> Result<Text, TextError> {
        let dir = match explicit {
            Some(p) if p.is_file() => p.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(p) => p.to_path_buf(),
            None if model.container == Container::Gguf => return Text::from_gguf(model),
            None if model.root.is_dir() => model.root.clone(),
            None => model.root.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        let file = match explicit {
            Some(p) if p.is_file() => p.to_path_buf(),
            _ => dir.join("tokenizer.json"),
        };
        if !file.is_file() {
            return Err(TextError::Missing(format!(
                "{}: no tokenizer.json; pass --tokenizer DIR naming the model's Hugging Face directory",
                dir.display()
            )));
        }
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| TextError::Invalid {
            path: file.clone(),
            msg: e.to_string(),
        })?;
        let config = crate::store::read_json(&dir.join("tokenizer_config.json")).ok();
        let jinja = std::fs::read_to_string(dir.join("chat_template.jinja")).ok();
        let from_config = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let from_gguf = model
            .gguf
            .as_ref()
            .and_then(|m| m.str("tokenizer.chat_template"))
            .map(str::to_string);
        Ok(Text {
            tokenizer,
            dir,
            chat_template: jinja.or(from_config).or(from_gguf),
            bos_token: token_str(config.as_ref().and_then(|c| c.get("bos_token"))),
            eos_token: token_str(config.as_ref().and_then(|c| c.get("eos_token"))),
        })
    }

    /// Token ids of `text`; `special` adds what the tokenizer's
    /// post-processor adds (BOS for llama-style tokenizers), as
    /// transformers' `tokenizer(text)` does.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TextError> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// The BOS token to put in front of a text, if any, as llama.cpp
    /// decides (`llama_vocab_get_add_bos`): for a GGUF model its
    /// `tokenizer.ggml.add_bos_token` and `bos_token_id`; otherwise
    /// whatever the tokenizer's post-processor puts in front of a text.
    pub fn bos_for(&self, model: &Model) -> Result<Option<u32>, TextError> {
        if let Some(m) = &model.gguf {
            if let Some(add) = m.get("tokenizer.ggml.add_bos_token") {
                let add = matches!(add, crate::store::gguf::Value::Bool(true));
                return Ok(m
                    .u64("tokenizer.ggml.bos_token_id")
                    .filter(|_| add)
                    .map(|b| b as u32));
            }
        }
        Ok(self.encode("", true)?.first().copied())
    }

    /// Tokens of a whole evaluation text: `bos` (if any) then the text
    /// without special tokens, as llama.cpp's `common_tokenize(…, true)`.
    pub fn encode_with_bos(&self, text: &str, bos: Option<u32>) -> Result<Vec<u32>, TextError> {
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.extend(self.encode(text, false)?);
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TextError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// Renders a one-turn conversation with the chat template, ready for
    /// the assistant's answer.
    pub fn chat_prompt(&self, user: &str, system: Option<&str>) -> Result<String, TextError> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            TextError::Missing(format!(
                "{}: the model has no chat template (chat_template.jinja, tokenizer_config.json or GGUF tokenizer.chat_template); drop --chat",
                self.dir.display()
            ))
        })?;
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", tpl)
            .map_err(|e| TextError::Template(e.to_string()))?;
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": user}));
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
                    add_generation_prompt => true,
                    bos_token => self.bos_token.clone().unwrap_or_default(),
                    eos_token => self.eos_token.clone().unwrap_or_default(),
                })
            })
            .map_err(|e| TextError::Template(e.to_string()))
    }
}
