//! Calibration data for the methods that quantize from activations (GPTQ,
//! AWQ): text in, a seeded set of equal-length token windows out.
//!
//! This module owns where the text comes from (a user's file, or the
//! bundled multi-domain corpus described in docs/CALIBRATION.md), how it
//! becomes token ids, and how the windows are drawn. It follows what the
//! references do with a text corpus (GPTQ's and AutoGPTQ's `get_wikitext2`,
//! GPTQModel's examples): the documents are tokenized without special
//! tokens and concatenated, and `samples` windows of `seqlen` tokens are
//! taken from it at seeded random positions. Here the windows never overlap
//! (the stream is cut into whole windows and a seeded shuffle picks some),
//! so no token is counted twice in a Hessian; a stream shorter than
//! `samples × seqlen` tokens is refused with the count that is needed.
//!
//! The shuffle goes on past the calibration windows to draw `held_out`
//! more (as many as the text has left, up to the number asked for): text
//! of the same kind that calibration never saw, on which `quantize`
//! measures the checkpoint against its base for the model card. Drawing
//! them leaves the calibration windows exactly as without them.
//!
//! A file is plain text (one document) or, when named `*.jsonl` /
//! `*.ndjson`, one JSON object per line with a `text` string or a chat
//! `messages` list rendered through the model's chat template (a user's
//! own fine-tuning data, seen as the model saw it). A `*.json` file
//! `{"ids": [[…], …]}` gives the windows' token ids verbatim (all of one
//! length), to calibrate on exactly what another tool was given.
//!
//! `save` writes the drawn windows in that form, the held-out ones under
//! `held_out` (`{"ids": …, "held_out": …}`): the same file calibrates
//! another tool on llmtool's windows, and [`read_eval_windows`] gives
//! `eval ppl|kld --ids` the held-out ones, so a checkpoint made elsewhere
//! is measured on exactly what the model card's line measured.

use std::path::{Path, PathBuf};

use crate::model::engine::text::Text;
use crate::ops::Error;
use crate::store::Model;

/// The text used when no `--calib` is given (see docs/CALIBRATION.md for
/// its sources and licenses).
pub const BUNDLED: &str = include_str!("corpus.txt");

/// Default number of windows (AutoAWQ's and GPTQModel's examples use 128).
pub const DEFAULT_SAMPLES: usize = 128;
/// Default window length in tokens (AutoAWQ's 512).
pub const DEFAULT_SEQLEN: usize = 512;
/// Default seed of the window draw.
pub const DEFAULT_SEED: u64 = 0;
/// Default number of held-out windows for the model card's quality line.
pub const DEFAULT_HELD_OUT: usize = 8;

/// Where the calibration text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The corpus compiled into llmtool.
    Bundled,
    /// A user's file: plain text, or JSONL (`*.jsonl`, `*.ndjson`).
    File(PathBuf),
}

/// How to draw the calibration windows.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    pub samples: usize,
    pub seqlen: usize,
    pub seed: u64,
    /// Windows to keep out of calibration and measure on (0: none).
    pub held_out: usize,
    /// Where to write the drawn windows as ids (`--save-windows`).
    pub save: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source: Source::Bundled,
            samples: DEFAULT_SAMPLES,
            seqlen: DEFAULT_SEQLEN,
            seed: DEFAULT_SEED,
            held_out: DEFAULT_HELD_OUT,
            save: None,
        }
    }
}

/// The drawn windows and where they came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// `samples` windows of `seqlen` token ids.
    #[serde(skip)]
    pub windows: Vec<Vec<u32>>,
    /// Windows of the same text that calibration does not see.
    #[serde(skip)]
    pub held_out_windows: Vec<Vec<u32>>,
    /// `bundled` or the file's path.
    pub source: String,
    /// Documents read (lines of a JSONL file).
    pub documents: usize,
    /// Tokens in the whole stream.
    pub tokens_available: usize,
    pub samples: usize,
    pub seqlen: usize,
    pub seed: u64,
    /// Held-out windows drawn (fewer than asked when the text ran out;
    /// none from an ids file, whose windows are all for calibration).
    pub held_out: usize,
}

impl Source {
    /// How the model card and reports name it.
    pub fn label(&self) -> String {
        match self {
            Source::Bundled => "bundled corpus (docs/CALIBRATION.md)".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// Reads `opts.source`, tokenizes it with `model`'s tokenizer and draws
/// the windows; ids files need no tokenizer, only ids below `vocab`.
pub fn load(model: &Model, vocab: usize, opts: &Options) -> Result<Calibration, Error> {
    let cal = draw_windows(model, vocab, opts)?;
    if let Some(p) = &opts.save {
        save(p, &cal)?;
    }
    Ok(cal)
}

fn draw_windows(model: &Model, vocab: usize, opts: &Options) -> Result<Calibration, Error> {
    if opts.samples == 0 || opts.seqlen == 0 {
        return Err(Error::Refused(
            "--calib-samples and --calib-seqlen must be at least 1".into(),
        ));
    }
    if let Source::File(p) = &opts.source {
        if p.extension().and_then(|e| e.to_str()) == Some("json") {
            return read_ids(p, vocab, opts.seed);
        }
    }
    let text = &Text::load(model, None)?;
    let docs = match &opts.source {
        Source::Bundled => vec![BUNDLED.to_string()],
        Source::File(p) => read_documents(p, text)?,
    };
    let mut stream = Vec::new();
    for d in &docs {
        stream.extend(text.encode(d, false)?);
    }
    let need = opts.samples * opts.seqlen;
    if stream.len() < need {
        return Err(Error::Refused(format!(
            "{}: the calibration text has {} tokens; {} samples of {} tokens need at least {need}; give more text or lower --calib-samples / --calib-seqlen",
            opts.source.label(),
            stream.len(),
            opts.samples,
            opts.seqlen
        )));
    }
    let whole = stream.len() / opts.seqlen;
    let mut windows: Vec<Vec<u32>> = draw(whole, opts.samples + opts.held_out, opts.seed)
        .into_iter()
        .map(|i| stream[i * opts.seqlen..(i + 1) * opts.seqlen].to_vec())
        .collect();
    let held_out_windows = windows.split_off(opts.samples);
    Ok(Calibration {
        windows,
        held_out: held_out_windows.len(),
        held_out_windows,
        source: opts.source.label(),
        documents: docs.len(),
        tokens_available: stream.len(),
        samples: opts.samples,
        seqlen: opts.seqlen,
        seed: opts.seed,
    })
}

/// `k` distinct indices below `n`, by a seeded partial Fisher–Yates
/// shuffle (splitmix64), in the order drawn.
fn draw(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + (next() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// Windows given as token ids (`{"ids": [[…], …]}`).
fn read_ids(path: &Path, vocab: usize, seed: u64) -> Result<Calibration, Error> {
    let windows = ids_under(path, &crate::store::read_json(path)?, "ids")?;
    if let Some(&t) = windows.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::Refused(format!(
            "{}: token id {t} is outside the tokenizer's vocabulary of {vocab}",
            path.display()
        )));
    }
    let seqlen = windows[0].len();
    Ok(Calibration {
        source: path.display().to_string(),
        documents: windows.len(),
        tokens_available: windows.len() * seqlen,
        samples: windows.len(),
        seqlen,
        seed,
        windows,
        held_out_windows: Vec::new(),
        held_out: 0,
    })
}

/// The windows `eval ppl|kld --ids FILE` scores: the `held_out` windows of
/// a file `--save-windows` wrote, else its `ids` (the engine checks them
/// against its vocabulary).
pub fn read_eval_windows(path: &Path) -> Result<Vec<Vec<u32>>, Error> {
    let v = crate::store::read_json(path)?;
    let key = if v
        .get("held_out")
        .is_some_and(|h| h.as_array().is_some_and(|a| !a.is_empty()))
    {
        "held_out"
    } else {
        "ids"
    };
    ids_under(path, &v, key)
}

/// `v[key]` as non-empty windows of one length.
fn ids_under(path: &Path, v: &serde_json::Value, key: &str) -> Result<Vec<Vec<u32>>, Error> {
    let shown = path.display();
    let windows: Vec<Vec<u32>> = v
        .get(key)
        .and_then(|ids| serde_json::from_value(ids.clone()).ok())
        .ok_or_else(|| {
            Error::Refused(format!(
                "{shown}: expected {{\"{key}\": [[token ids], …]}} (a JSON calibration file holds token ids; give text as .txt or .jsonl)"
            ))
        })?;
    let seqlen = windows.first().map_or(0, Vec::len);
    if seqlen == 0 || windows.iter().any(|w| w.len() != seqlen) {
        return Err(Error::Refused(format!(
            "{shown}: the id windows must be non-empty and all of one length"
        )));
    }
    Ok(windows)
}

/// Writes `cal`'s windows as `{"ids": …, "held_out": …}` plus where they
/// came from, atomically.
fn save(path: &Path, cal: &Calibration) -> Result<(), Error> {
    let body = serde_json::json!({
        "source": cal.source,
        "seed": cal.seed,
        "seqlen": cal.seqlen,
        "ids": cal.windows,
        "held_out": cal.held_out_windows,
    });
    crate::store::atomic::replace_file(path, body.to_string().as_bytes())?;
    Ok(())
}

/// The documents of a calibration file.
fn read_documents(path: &Path, text: &Text) -> Result<Vec<String>, Error> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Refused(format!("{shown}: cannot read the calibration file: {e}")))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!(
            "{shown}: the calibration file is not a regular file"
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Refused(format!("{shown}: cannot read the calibration file: {e}")))?;
    let body = String::from_utf8(bytes).map_err(|e| {
        Error::Refused(format!(
            "{shown}: the calibration file is not UTF-8 text (invalid byte at offset {}); give a plain text or JSONL file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson")
    );
    if !jsonl {
        return Ok(vec![body]);
    }
    let mut docs = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{shown}:{}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Refused(format!("{}: not a JSON object: {e}", at())))?;
        if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            docs.push(t.to_string());
        } else if let Some(m) = v.get("messages").and_then(|m| m.as_array()) {
            let ok = m.iter().all(|x| {
                x.get("role").is_some_and(|r| r.is_string())
                    && x.get("content").is_some_and(|c| c.is_string())
            });
            if !ok {
                return Err(Error::Refused(format!(
                    "{}: every message needs a string `role` and `content`",
                    at()
                )));
            }
            docs.push(text.chat_conversation(m)?);
        } else {
            return Err(Error::Refused(format!(
                "{}: expected a `text` string or a `messages` list",
                at()
            )));
        }
    }
    if docs.is_empty() {
        return Err(Error::Refused(format!(
            "{shown}: the calibration file has no documents"
        )));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_is_seeded_distinct_and_in_range() {
        let a = draw(100, 20, 7);
        assert_eq!(a, draw(100, 20, 7));
        assert_ne!(a, draw(100, 20, 8));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 20);
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(draw(5, 5, 1).len(), 5);
        // Drawing further (the held-out windows) keeps the first picks.
        assert_eq!(draw(100, 28, 7)[..20], a[..]);
        assert_eq!(draw(5, 9, 1).len(), 5);
    }
}
