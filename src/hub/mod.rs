//! The Hugging Face Hub over HTTP: who we are ([`auth`]), one retried
//! exchange ([`Hub::send`]), the repo API ([`repo`]), uploads ([`upload`]:
//! preupload, LFS batch, basic and multipart PUT, the NDJSON commit) and
//! downloads into the standard cache ([`download`]).
//!
//! Upstream it must agree with: huggingface_hub 0.36 `hf_api.py`,
//! `_commit_api.py`, `lfs.py`, `file_download.py`, `_snapshot_download.py`
//! and `utils/_http.py` (retries, `X-Error-Code`); the cache layout of
//! `store::hf_cache`.
//!
//! Why not the `hf-hub` crate: its 0.4 line only downloads, without
//! checking sha256 and without `HF_HUB_OFFLINE`; its 1.x line uploads only
//! through Xet (no basic or multipart LFS, which private hubs, mirrors and
//! our test server speak) and since 1.1 reads no environment at all. The
//! protocol is a dozen JSON endpoints, so we speak it ourselves over `ureq`
//! (blocking, rustls, no async runtime), stream file bodies from disk, and
//! keep retry, resume and checksum rules in one place.
//!
//! A token is never printed: [`auth::Token`]'s `Debug` is redacted, it is
//! sent only to the configured endpoint (never to LFS upload URLs or
//! redirects), and errors carry URLs and the Hub's message, never headers.

pub mod auth;
pub mod download;
pub mod repo;
pub mod upload;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cancel;

pub use auth::Token;

/// The public Hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What went wrong talking to the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub answered with an error status.
    #[error("{url}: HTTP {status}{}: {message}{}", code_suffix(.code), hint_suffix(.hint))]
    Http {
        status: u16,
        /// The Hub's `X-Error-Code` (`RepoNotFound`, `GatedRepo`, …).
        code: Option<String>,
        message: String,
        url: String,
        hint: Option<String>,
    },
    /// No answer: connection refused or dropped, timeout, DNS.
    #[error("{url}: {msg} (after {tries} tries; check the network and HF_ENDPOINT)")]
    Transport {
        url: String,
        msg: String,
        tries: u32,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The Hub answered something we cannot use.
    #[error("{url}: {msg}")]
    Protocol { url: String, msg: String },
    /// A downloaded file is not what the Hub says it is.
    #[error("{path}: downloaded sha256 {got} but the Hub lists {want}; the file was discarded, run again to retry")]
    Checksum {
        path: String,
        got: String,
        want: String,
    },
    /// Bad user input (a repo id, a glob, a file selector…).
    #[error("{0}")]
    Invalid(String),
    /// `HF_HUB_OFFLINE` is set and the cache lacks what is needed.
    #[error("{0}")]
    Offline(String),
    #[error("{0}")]
    Interrupted(#[from] cancel::Interrupted),
    /// A local file could not be read or hashed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How often and how long to retry (huggingface_hub's `http_backoff`: 5
/// retries, waits doubling from 1 s to at most 8 s).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            retries: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        }
    }
}

/// A request body that can be sent again on a retry.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `path` from `offset`, read as they are sent; `sent`
    /// counts them (a progress bar), and is rewound when a try fails.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        sent: &'a indicatif::ProgressBar,
    },
}

/// A client for one endpoint, with or without a token.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    token: Option<Token>,
    agent: ureq::Agent,
    retry: Retry,
}

impl Hub {
    /// A client for `endpoint` (no trailing slash needed).
    pub fn new(endpoint: &str, token: Option<Token>) -> Hub {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .user_agent(concat!("llmtool/", env!("CARGO_PKG_VERSION")))
            .build();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            agent,
            retry: Retry::default(),
        }
    }

    /// The endpoint from `HF_ENDPOINT`, else the public Hub, with the token
    /// [`auth::token`] finds (`explicit` first). `LLMTOOL_HUB_RETRIES`
    /// changes how often a failed call is retried (default 5).
    pub fn from_env(explicit: Option<&str>) -> Result<Hub> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(HubError::Invalid(format!(
                "HF_ENDPOINT={endpoint} is not an http(s) URL"
            )));
        }
        let mut retry = Retry::default();
        if let Ok(n) = std::env::var("LLMTOOL_HUB_RETRIES") {
            retry.retries = n.trim().parse().map_err(|_| {
                HubError::Invalid(format!("LLMTOOL_HUB_RETRIES={n} is not a whole number"))
            })?;
        }
        Ok(Hub::new(&endpoint, auth::token(explicit)?).with_retry(retry))
    }

    pub fn with_retry(mut self, retry: Retry) -> Hub {
        self.retry = retry;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `endpoint` + `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// One exchange, retried on 408/429/5xx and on connection errors (with
    /// `Retry-After` honoured) when `retry` is set. The token goes only to
    /// URLs under the endpoint, and not at all without `auth` (LFS upload
    /// URLs carry their own authorization). An error status becomes
    /// [`HubError::Http`] with the Hub's message.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
        retry: bool,
        auth: bool,
    ) -> Result<ureq::Response> {
        let mut attempt = 0;
        loop {
            cancel::check()?;
            let mut req = self.agent.request(method, url);
            if let Some(t) = self.token.as_ref().filter(|_| auth && self.owns(url)) {
                req = req.set("authorization", &format!("Bearer {}", t.secret()));
            }
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let (result, rewind) = match &body {
                Body::Empty => (req.call(), 0),
                Body::Bytes(b) => (req.send_bytes(b), 0),
                Body::File {
                    path,
                    offset,
                    len,
                    sent,
                } => {
                    let start = sent.position();
                    let file = open_range(path, *offset, *len)?;
                    let r = req.set("content-length", &len.to_string()).send(Counted {
                        inner: file,
                        bar: sent,
                    });
                    (r, sent.position() - start)
                }
            };
            let wait = match result {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(status, resp)) => {
                    if !(retry && attempt < self.retry.retries && retryable(status)) {
                        return Err(http_error(status, resp, url));
                    }
                    retry_after(&resp)
                }
                Err(ureq::Error::Transport(t)) => {
                    if let Some(i) = interrupted(&t) {
                        return Err(i.into());
                    }
                    // A name that does not resolve will not resolve in a second.
                    let dns = t.kind() == ureq::ErrorKind::Dns;
                    if !(retry && attempt < self.retry.retries) || dns {
                        return Err(HubError::Transport {
                            url: url.to_string(),
                            msg: transport_msg(&t),
                            tries: attempt + 1,
                        });
                    }
                    None
                }
            };
            if let Body::File { sent, .. } = &body {
                sent.set_position(sent.position().saturating_sub(rewind));
            }
            let backoff = self.retry.base * 2u32.saturating_pow(attempt);
            sleep(wait.unwrap_or(backoff.min(self.retry.max)))?;
            attempt += 1;
        }
    }

    /// GET or POST returning JSON.
    pub(crate) fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = self.url(path);
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let resp = match &bytes {
            Some(b) => self.send(
                method,
                &url,
                &[("content-type", "application/json")],
                Body::Bytes(b),
                true,
                true,
            )?,
            None => self.send(method, &url, &[], Body::Empty, true, true)?,
        };
        read_json(resp, &url)
    }

    fn owns(&self, url: &str) -> bool {
        url.strip_prefix(&self.endpoint)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

pub(crate) fn read_json(resp: ureq::Response, url: &str) -> Result<serde_json::Value> {
    let mut text = String::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| HubError::Transport {
            url: url.to_string(),
            msg: e.to_string(),
            tries: 1,
        })?;
    serde_json::from_str(&text).map_err(|e| HubError::Protocol {
        url: url.to_string(),
        msg: format!("answer is not JSON ({e}): {}", clip(&text)),
    })
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait a 429/503 asks for (`Retry-After` in seconds), capped at a
/// minute so a confused server cannot park us.
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    let secs: u64 = resp.header("retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn sleep(d: Duration) -> Result<()> {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        cancel::check()?;
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    Ok(())
}

fn transport_msg(t: &ureq::Transport) -> String {
    let mut msg = t.kind().to_string();
    if let Some(m) = t.message() {
        msg = format!("{msg}: {m}");
    }
    if let Some(src) = std::error::Error::source(t) {
        msg = format!("{msg}: {src}");
    }
    msg
}

/// A body read stopped by Ctrl-C surfaces as a transport error; find it.
fn interrupted(t: &ureq::Transport) -> Option<cancel::Interrupted> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(err) = e {
        if err.to_string() == cancel::Interrupted.to_string() {
            return Some(cancel::Interrupted);
        }
        e = err.source();
    }
    cancel::check().err()
}

/// The Hub's own words for an error status (`X-Error-Message`, else the
/// JSON `error`, else the body), and a hint for the usual causes.
fn http_error(status: u16, resp: ureq::Response, url: &str) -> HubError {
    let code = resp.header("x-error-code").map(str::to_string);
    let header_msg = resp.header("x-error-message").map(str::to_string);
    let mut text = String::new();
    let _ = resp.into_reader().take(1 << 16).read_to_string(&mut text);
    let message = header_msg.unwrap_or_else(|| {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| {
                let t = clip(text.trim());
                if t.is_empty() {
                    "no message".into()
                } else {
                    t
                }
            })
    });
    let hint = match (status, code.as_deref()) {
        (_, Some("GatedRepo")) => Some(
            "this repo is gated: accept its conditions on the repo's page with the account whose token you use (HF_TOKEN or --token)".into(),
        ),
        (_, Some("RepoNotFound")) | (404, None) if !url.contains("/resolve/") => Some(
            "check the repo id; a private repo needs a token with access (HF_TOKEN or --token)".into(),
        ),
        (_, Some("RevisionNotFound")) => Some("check the branch, tag or commit after '@'".into()),
        (_, Some("EntryNotFound")) => Some("the file is not in this revision of the repo".into()),
        (401, _) => Some(
            "set HF_TOKEN (or pass --token, or run `hf auth login`); pushing needs a write token".into(),
        ),
        (403, _) => Some("the token lacks permission for this repo (a write token is needed to push)".into()),
        (429, _) => Some("rate limited by the Hub; wait and run again".into()),
        _ => None,
    };
    HubError::Http {
        status,
        code,
        message,
        url: url.to_string(),
        hint,
    }
}

fn open_range(path: &Path, offset: u64, len: u64) -> Result<std::io::Take<std::fs::File>> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(io_err(path))?;
    Ok(f.take(len))
}

/// A reader that advances a progress bar and stops at Ctrl-C.
struct Counted<'a, R> {
    inner: R,
    bar: &'a indicatif::ProgressBar,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if cancel::requested() {
            return Err(std::io::Error::other(cancel::Interrupted));
        }
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Percent-encodes a revision for a URL path segment (`refs/pr/1` →
/// `refs%2Fpr%2F1`), as huggingface_hub's `quote(revision, safe="")`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a file path in a URL, keeping its `/`.
pub(crate) fn quote_path(s: &str) -> String {
    s.split('/').map(quote).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_huggingface_hub() {
        assert_eq!(quote("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(quote("main"), "main");
        assert_eq!(quote_path("a b/c+d.txt"), "a%20b/c%2Bd.txt");
    }

    #[test]
    fn the_token_goes_only_to_the_endpoint() {
        let h = Hub::new("http://127.0.0.1:9/", Some(Token::new("hf_secret")));
        assert!(h.owns("http://127.0.0.1:9/api/x"));
        assert!(!h.owns("http://127.0.0.1:99/api/x"));
        assert!(!h.owns("https://cdn.example/obj"));
        assert!(!format!("{h:?}").contains("hf_secret"));
    }
}
