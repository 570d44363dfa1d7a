//! Which token to send, found as huggingface_hub's `get_token` finds it:
//! `--token`, then `HF_TOKEN`, then the file at `HF_TOKEN_PATH`, then
//! `$HF_HOME/token` (`HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface`,
//! then `~/.cache/huggingface`). Upstream: huggingface_hub
//! `utils/_auth.py`, `constants.py`.

use std::path::PathBuf;

use super::{HubError, Result};

/// A secret that prints as `hf_***` in `Debug` and never serializes.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: &str) -> Token {
        Token(s.trim().to_string())
    }

    /// The value, for the `authorization` header only.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hf_***)")
    }
}

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// `HF_HOME`, or its default.
pub fn hf_home() -> PathBuf {
    if let Some(h) = var("HF_HOME") {
        return PathBuf::from(h);
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
    cache.join("huggingface")
}

/// The token to use, if any. A token file that exists but cannot be read
/// is an error (naming the file, not its content).
pub fn token(explicit: Option<&str>) -> Result<Option<Token>> {
    if let Some(t) = explicit.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(Token::new(t)));
    }
    if let Some(t) = var("HF_TOKEN") {
        return Ok(Some(Token::new(&t)));
    }
    let path = var("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("token"));
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(Token::new(&s))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HubError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::new(" hf_abcdef\n");
        assert_eq!(t.secret(), "hf_abcdef");
        assert_eq!(format!("{t:?}"), "Token(hf_***)");
    }
}
