//! Text in and out of the engine: the `tokenizers` crate over an HF
//! `tokenizer.json`, and the model's chat template rendered with minijinja
//! the way transformers' `apply_chat_template` renders it (a Jinja template
//! over `messages`, `add_generation_prompt`, `bos_token`, `eos_token`).
//!
//! Templates run with Python's string methods (`.strip()`, `.split()`,
//! `.startswith()`…, minijinja-contrib's pycompat) as transformers' Jinja
//! has them, and with a bounded budget of steps ([`TEMPLATE_FUEL`]) so that
//! a template that never finishes fails instead of spinning.
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
    #[error("chat template in {origin}: {msg}")]
    Template { origin: String, msg: String },
}

/// Steps (minijinja fuel: about one per instruction and per 64 bytes of
/// data) one render of a chat template may take. Real templates render a
/// conversation of a thousand turns in a fraction of it (see the tests); a
/// template that loops without end stops here within a second.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// A chat template and where it was read from (for errors).
struct ChatTemplate {
    origin: String,
    text: String,
}

/// A tokenizer and the chat template that goes with it.
pub struct Text {
    pub tokenizer: Tokenizer,
    /// Where tokenizer.json was read from.
    pub dir: PathBuf,
    chat_template: Option<ChatTemplate>,
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
            chat_template: meta
                .str("tokenizer.chat_template")
                .map(|t| ChatTemplate::gguf(model, t)),
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
        let config_file = dir.join("tokenizer_config.json");
        let config = crate::store::read_json(&config_file).ok();
        let jinja_file = dir.join("chat_template.jinja");
        // A FIFO or device under that name would block the read: regular files only.
        let jinja = jinja_file
            .is_file()
            .then(|| std::fs::read_to_string(&jinja_file).ok())
            .flatten()
            .map(|text| ChatTemplate {
                origin: jinja_file.display().to_string(),
                text,
            });
        let from_config = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str())
            .map(|text| ChatTemplate {
                origin: format!("{} (chat_template)", config_file.display()),
                text: text.to_string(),
            });
        let from_gguf = model
            .gguf
            .as_ref()
            .and_then(|m| m.str("tokenizer.chat_template"))
            .map(|t| ChatTemplate::gguf(model, t));
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
        let tpl = self.chat_template.as_ref().ok_or_else(|| {
            TextError::Missing(format!(
                "{}: the model has no chat template (chat_template.jinja, tokenizer_config.json or GGUF tokenizer.chat_template); drop --chat",
                self.dir.display()
            ))
        })?;
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": user}));
        self.render(tpl, &messages, true)
    }

    /// Renders a whole conversation (`[{role, content}, …]`) with the chat
    /// template, without a generation prompt: a training example as the
    /// model saw it in fine-tuning.
    pub fn chat_conversation(&self, messages: &[serde_json::Value]) -> Result<String, TextError> {
        let tpl = self.chat_template.as_ref().ok_or_else(|| {
            TextError::Missing(format!(
                "{}: the model has no chat template (chat_template.jinja, tokenizer_config.json or GGUF tokenizer.chat_template) to render `messages` with; give plain text instead",
                self.dir.display()
            ))
        })?;
        self.render(tpl, messages, false)
    }

    fn render(
        &self,
        tpl: &ChatTemplate,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        tpl.render(
            messages,
            add_generation_prompt,
            self.bos_token.as_deref().unwrap_or_default(),
            self.eos_token.as_deref().unwrap_or_default(),
        )
    }
}

impl ChatTemplate {
    fn gguf(model: &Model, text: &str) -> ChatTemplate {
        ChatTemplate {
            origin: format!("{} (tokenizer.chat_template)", model.root.display()),
            text: text.to_string(),
        }
    }

    /// Renders `messages` as transformers' `apply_chat_template(...,
    /// add_generation_prompt=...)` does.
    fn render(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, TextError> {
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let fail = |e: minijinja::Error| TextError::Template {
            origin: self.origin.clone(),
            msg: if e.kind() == minijinja::ErrorKind::OutOfFuel {
                format!(
                    "the template did not finish within {TEMPLATE_FUEL} steps (an endless loop?); fix the template or drop --chat"
                )
            } else {
                e.to_string()
            },
        };
        env.add_template("chat", &self.text).map_err(fail)?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => bos_token,
                    eos_token => eos_token,
                })
            })
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> ChatTemplate {
        ChatTemplate {
            origin: "test.jinja".into(),
            text: text.into(),
        }
    }

    /// `turns` alternating user/assistant messages after a system one.
    fn conversation(turns: usize) -> Vec<serde_json::Value> {
        let mut m = vec![serde_json::json!({"role": "system", "content": "  Be brief.  "})];
        m.extend((0..turns).map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            serde_json::json!({"role": role, "content": format!("message {i}: {}", "word ".repeat(100))})
        }));
        m
    }

    #[test]
    fn a_template_that_never_ends_fails_quickly_and_says_why() {
        // range() is capped at 100 000 items, so nesting makes 10¹⁰ steps.
        let t = template(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        );
        let t0 = std::time::Instant::now();
        let e = t
            .render(&conversation(1), true, "", "")
            .unwrap_err()
            .to_string();
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t0.elapsed()
        );
        assert!(
            e.contains("test.jinja")
                && e.contains("did not finish within")
                && e.contains("drop --chat"),
            "{e}"
        );
    }

    #[test]
    fn templates_may_use_python_string_methods() {
        let t = template(
            "{% for m in messages %}{% if m.content.startswith('  Be') %}[{{ m.content.strip() }}]{% endif %}\
             {{ m.role.upper() }}:{{ m.content.split(':')[0] }};{% endfor %}",
        );
        assert_eq!(
            t.render(&conversation(2), true, "", "").unwrap(),
            "[Be brief.]SYSTEM:  Be brief.  ;USER:message 0;ASSISTANT:message 1;"
        );
    }

    /// SmolLM2's template (from its GGUF, fixtures/smollm2/expected.json),
    /// and the non-tool paths of Llama-3-Instruct's and Qwen2.5-Instruct's,
    /// render a thousand-turn conversation within the fuel.
    #[test]
    fn real_templates_render_long_conversations_within_the_fuel() {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2/expected.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let smollm2 = expected["metadata"]["tokenizer.chat_template"]["value"]
            .as_str()
            .unwrap();
        let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}\
            {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}\
            {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}\
            {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
        let qwen25 = "{%- if messages[0]['role'] == 'system' %}\
                {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}\
            {%- else %}\
                {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}\
            {%- endif %}\
            {%- for message in messages %}\
                {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\
                    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}\
                {%- endif %}\
            {%- endfor %}\
            {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}";
        let messages = conversation(1000);
        for (name, text) in [
            ("smollm2", smollm2),
            ("llama3", llama3),
            ("qwen2.5", qwen25),
        ] {
            let out = template(text)
                .render(&messages, true, "<s>", "</s>")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(out.contains("message 999: word"), "{name}");
        }
    }
}
