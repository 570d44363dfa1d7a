//! `llmtool generate`: a prompt (optionally through the model's chat
//! template) → tokens → the engine's sampling loop
//! ([`crate::model::engine::generate`]) → text, streamed as it is decoded.

use serde::Serialize;

use crate::model::engine::generate::{self as sampler, Generation, Sampling};
use crate::model::engine::text::Text;
use crate::ops::{EngineOptions, Error, Result};
use crate::store::Model;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    /// Wrap the prompt in the chat template as one user turn.
    pub chat: bool,
    /// System message for `chat`.
    pub system: Option<String>,
    pub sampling: Sampling,
    pub engine: EngineOptions,
}

/// The generation, its speeds and its text.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    #[serde(flatten)]
    pub generation: Generation,
    pub text: String,
}

/// Generates on `model`, calling `on_text` with each new piece of text as
/// soon as it decodes to whole characters.
pub fn generate(
    model: &Model,
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<GenerateReport> {
    let s = &opts.sampling;
    if !(s.top_p > 0.0 && s.top_p <= 1.0 && s.temperature >= 0.0) {
        return Err(Error::Refused(
            "--top-p must be in (0, 1] and --temp at least 0".into(),
        ));
    }
    let text = Text::load(model, opts.engine.tokenizer.as_deref())?;
    let engine = opts.engine.engine(model)?;
    let ids = if opts.chat {
        text.encode(
            &text.chat_prompt(&opts.prompt, opts.system.as_deref())?,
            false,
        )?
    } else {
        text.encode(&opts.prompt, true)?
    };
    let mut stream = Stream::default();
    let generation = sampler::generate(&engine, &ids, s, |tok| {
        stream.tokens.push(tok);
        if let Ok(decoded) = text.decode(&stream.tokens) {
            if let Some(piece) = stream.advance(&decoded) {
                on_text(piece);
            }
        }
    })?;
    let out = text.decode(&generation.tokens)?;
    if let Some(rest) = stream.advance(&out) {
        on_text(rest);
    }
    Ok(GenerateReport {
        generation,
        text: out,
    })
}

/// What has been streamed so far.
#[derive(Default)]
struct Stream {
    tokens: Vec<u32>,
    printed: String,
}

impl Stream {
    /// The new text at the end of `decoded`, unless it ends in an incomplete
    /// character (U+FFFD) or rewrote what was already printed (a byte-level
    /// tokenizer can change earlier text when one more token arrives; then
    /// nothing is printed until the text extends the printed part again).
    fn advance<'a>(&mut self, decoded: &'a str) -> Option<&'a str> {
        if decoded.ends_with('\u{FFFD}') || !decoded.starts_with(self.printed.as_str()) {
            return None;
        }
        let piece = &decoded[self.printed.len()..];
        self.printed.push_str(piece);
        (!piece.is_empty()).then_some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    #[test]
    fn streaming_never_splits_a_character() {
        let mut s = Stream::default();
        assert_eq!(s.advance("caf"), Some("caf"));
        assert_eq!(s.advance("caf\u{FFFD}"), None);
        assert_eq!(s.advance("café"), Some("é"));
        // An earlier byte rewritten: nothing until the text extends again.
        assert_eq!(s.advance("cafe"), None);
        assert_eq!(s.advance("café!"), Some("!"));
    }
}
