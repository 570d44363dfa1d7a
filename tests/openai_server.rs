//! An in-process OpenAI-compatible completion server for tests and
//! benchmarks of `llmtool bench serve`: `GET /v1/models`,
//! `POST /v1/chat/completions` and `POST /v1/completions`, streamed
//! (server-sent events, `"stream": true`) or not, shaped as vLLM's
//! OpenAI server answers, with configurable latency, injectable faults and
//! a log of every request with the server's own timings.
//! tests/oracle/openai_client.py checks that the official `openai` Python
//! client reads it unchanged (tests/bench_server.rs).
//!
//! What it generates, deterministically:
//! - Output token `i` is the word `WORDS[i % 16]` with a leading space
//!   ([`output_text`]). A request gets `max_tokens` of them (chat:
//!   `max_completion_tokens` first; [`Config::default_max_tokens`] when
//!   neither is sent), fewer when [`Config::eos_after`] ends it first and
//!   the request has no `"ignore_eos": true`. `finish_reason` is "length"
//!   or "stop" accordingly.
//! - `usage.prompt_tokens` is the number of whitespace-separated words of
//!   the prompt (chat: of every message's text content; completions: of
//!   the prompt string(s), or the length of a token-id array);
//!   `completion_tokens` is the number of tokens generated (reasoning ones
//!   included, as vLLM counts them).
//!
//! A chat stream opens with a role chunk (`"delta":{"role":"assistant",
//! "content":""}`), sent at once, before the time-to-first-token delay, so
//! a client that counts it as the first token measures a TTFT near zero.
//! Then one chunk per token (the first [`Config::reasoning_tokens`] as
//! `reasoning_content` deltas); the last token's chunk carries the
//! `finish_reason`, as vLLM's does. With `stream_options.include_usage`
//! every chunk has `"usage":null` and a final chunk has `"choices":[]` and
//! the usage; then `data: [DONE]`.
//!
//! Plain `std::net`, one thread per connection, HTTP/1.1 keep-alive,
//! Content-Length request bodies, chunked-encoded streams. When tokens are
//! sent as fast as possible, the frames are batched into 64 KiB writes so
//! the server is not what limits a client benchmark.
// Shared by the test binary and examples/openai_server.rs, each using a part.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::http_accept::{reason, Accept};

/// The output vocabulary: token `i` is `WORDS[i % WORDS.len()]`. Plain ASCII,
/// so frames need no JSON escaping.
pub const WORDS: [&str; 16] = [
    " the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", " and", " runs",
    " far", " away", " from", " home", " again",
];

/// The text of `n` generated tokens.
pub fn output_text(n: usize) -> String {
    (0..n).map(|i| WORDS[i % WORDS.len()]).collect()
}

/// `usage.prompt_tokens` of a text: its whitespace-separated words.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// How a started server behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// 0: any free port.
    pub port: u16,
    /// The one model served; requests naming another get a 404.
    pub model: String,
    /// Delay between the request's arrival (after the role chunk of a chat
    /// stream) and the first token.
    pub ttft_ms: u64,
    /// Delay between tokens; 0: as fast as possible.
    pub token_delay_ms: u64,
    /// Where the model emits end-of-sequence: at most this many tokens
    /// unless the request says `ignore_eos`. None: it never does.
    pub eos_after: Option<usize>,
    /// The length limit when a request sends no `max_tokens`.
    pub default_max_tokens: usize,
    /// Chat only: this many of the tokens come first as `reasoning_content`.
    pub reasoning_tokens: usize,
    /// Write stream bytes in odd-sized pieces ([`SPLIT_SIZES`]), each its
    /// own HTTP chunk: frames split mid-line and several coalesced in one
    /// piece. A piece waits for enough bytes, so frames may go out late;
    /// the logged timings are those of the actual writes.
    pub split_frames: bool,
    /// An SSE comment line `: ping` before the first chunk and after each
    /// token chunk (as keep-alive pings of real servers).
    pub pings: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            model: "test-model".into(),
            ttft_ms: 0,
            token_delay_ms: 0,
            eos_after: None,
            default_max_tokens: 16,
            reasoning_tokens: 0,
            split_frames: false,
            pings: false,
        }
    }
}

/// The piece sizes of [`Config::split_frames`], cycled: some far shorter
/// than a frame (about 190 bytes), some spanning several.
pub const SPLIT_SIZES: [usize; 9] = [1, 5, 17, 2, 300, 9, 64, 3, 700];

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer this status with an OpenAI-style JSON error.
    Status(u16),
    /// Answer 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// Streams: close the connection after this many `data:` chunks (at
    /// least one; the role chunk counts), without ending the HTTP body. Not streamed:
    /// close without answering.
    CloseMidStream(usize),
    /// Streams: a `data:` line that is not JSON after the first chunk, then
    /// the rest as usual. Not streamed: a body that is not JSON.
    MalformedSse,
    /// Streams: everything up to the usage chunk, a clean end of the HTTP
    /// body and a closed connection (announced by `Connection: close`), but
    /// no `data: [DONE]`. Not streamed:
    /// close without answering.
    NoDone,
    /// Streams: nothing for this long after the first chunk. Not streamed:
    /// the answer this much later.
    Stall(u64),
    /// Every content (and reasoning) delta is an empty string; usage still
    /// counts the tokens.
    EmptyContent,
}

/// A fault for the next `times` requests whose path contains `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// A fault for the next matching request only.
    pub fn new(path_contains: &str, kind: FaultKind) -> Fault {
        Fault {
            path_contains: path_contains.into(),
            kind,
            times: 1,
        }
    }

    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }
}

/// One request as the server saw it, with its timings.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// The answer's status; 0 where the connection was closed without one.
    pub status: u16,
    /// The request body, where it was JSON.
    pub body: Option<Value>,
    pub fault: Option<FaultKind>,
    /// When its headers had been read.
    pub arrival: Instant,
    /// When the first token's chunk (content or reasoning) was handed to
    /// the socket (just before the write); for an answer that is not
    /// streamed, when the answer was.
    pub first_token: Option<Instant>,
    /// Likewise for the last token's chunk (or the whole answer).
    pub last_token: Option<Instant>,
    /// Tokens generated (what usage reports).
    pub completion_tokens: usize,
    /// `data:` lines written, `[DONE]` included.
    pub data_lines: usize,
}

#[derive(Default)]
struct Inner {
    faults: Vec<Fault>,
    log: Vec<Logged>,
    /// Requests being answered.
    active: usize,
}

struct State {
    url: String,
    config: Config,
    inner: Mutex<Inner>,
    idle: Condvar,
    shutdown: Arc<AtomicBool>,
    counter: AtomicU64,
}

/// A running server; stops accepting when dropped.
pub struct OpenAiServer {
    state: Arc<State>,
    _accept: Accept,
}

impl OpenAiServer {
    /// Serves [`Config::default`] on 127.0.0.1, a free port.
    pub fn start() -> OpenAiServer {
        Self::start_with(Config::default())
    }

    pub fn start_with(config: Config) -> OpenAiServer {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).expect("bind openai server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            url: format!("http://{addr}"),
            config,
            inner: Mutex::new(Inner::default()),
            idle: Condvar::new(),
            shutdown: Arc::new(AtomicBool::new(false)),
            counter: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = Accept::spawn(listener, state.shutdown.clone(), move |stream| {
            serve_connection(&st, stream)
        });
        OpenAiServer {
            state,
            _accept: accept,
        }
    }

    /// `http://127.0.0.1:PORT`, without `/v1`.
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// Injects a fault (see [`FaultKind`]); faults match in the order added.
    pub fn fail(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// The requests so far, in arrival order, once those being answered
    /// have finished (waiting at most 10 s for them, then as they are).
    pub fn requests(&self) -> Vec<Logged> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut inner = self.state.lock();
        while inner.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = match self.state.idle.wait_timeout(inner, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        inner.log.clone()
    }
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide the
        // state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_fault(&self, path: &str) -> Option<FaultKind> {
        let mut inner = self.lock();
        let i = inner
            .faults
            .iter()
            .position(|f| path.contains(&f.path_contains))?;
        let kind = inner.faults[i].kind.clone();
        inner.faults[i].times -= 1;
        if inner.faults[i].times == 0 {
            inner.faults.remove(i);
        }
        Some(kind)
    }

    /// Logs a request as begun; returns its index for [`State::finish`].
    fn begin(&self, entry: Logged) -> usize {
        let mut inner = self.lock();
        inner.active += 1;
        inner.log.push(entry);
        inner.log.len() - 1
    }

    fn finish(&self, index: usize, update: impl FnOnce(&mut Logged)) {
        let mut inner = self.lock();
        update(&mut inner.log[index]);
        inner.active -= 1;
        self.idle.notify_all();
    }
}

// ------------------------------------------------------------------ HTTP

struct Request {
    method: String,
    path: String,
    content_length: usize,
    chunked: bool,
    close: bool,
}

/// Reads a request line and headers; None at a clean end of connection.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "request line"));
    };
    let mut req = Request {
        method: method.into(),
        path: target.split('?').next().unwrap_or(target).into(),
        content_length: 0,
        chunked: false,
        close: false,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = line.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => req.content_length = value.parse().unwrap_or(0),
            "transfer-encoding" => req.chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => req.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Ok(Some(req))
}

fn write_whole(
    w: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    w.write_all(&all)
}

/// An error body as OpenAI and vLLM send it.
fn error_body(status: u16, message: &str) -> Vec<u8> {
    let kind = match status {
        400 => "BadRequestError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        _ => "InternalServerError",
    };
    serde_json::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": status}}),
    )
    .unwrap()
}

fn serve_connection(state: &State, stream: TcpStream) {
    // An idle keep-alive connection ends by itself.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    // Small frames must leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    while let Ok(Some(req)) = read_head(&mut reader) {
        if state.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let arrival = Instant::now();
        let mut body = vec![0u8; req.content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let fault = state.take_fault(&req.path);
        let index = state.begin(Logged {
            method: req.method.clone(),
            path: req.path.clone(),
            status: 0,
            body: serde_json::from_slice(&body).ok(),
            fault: fault.clone(),
            arrival,
            first_token: None,
            last_token: None,
            completion_tokens: 0,
            data_lines: 0,
        });
        let mut done = Done::default();
        let keep = answer(state, &req, &body, fault, &mut writer, &mut done);
        state.finish(index, |l| {
            l.status = done.status;
            l.first_token = done.first_token;
            l.last_token = done.last_token;
            l.completion_tokens = done.completion_tokens;
            l.data_lines = done.data_lines;
        });
        if !keep || req.close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// What answering a request did, for its log entry.
#[derive(Default)]
struct Done {
    status: u16,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    completion_tokens: usize,
    data_lines: usize,
}

/// Answers one request; false where the connection must close.
fn answer(
    state: &State,
    req: &Request,
    body: &[u8],
    fault: Option<FaultKind>,
    w: &mut TcpStream,
    done: &mut Done,
) -> bool {
    let mut reply = |status: u16, extra: &[(&str, String)], bytes: &[u8]| {
        done.status = status;
        write_whole(w, status, extra, bytes).is_ok()
    };
    if req.chunked {
        // No client of this server sends chunked bodies; say so plainly,
        // and announce the close as `stream` does for NoDone.
        reply(
            411,
            &[("Connection", "close".into())],
            &error_body(411, "send a Content-Length body"),
        );
        return false;
    }
    match fault {
        Some(FaultKind::Status(code)) => {
            return reply(
                code,
                &[],
                &error_body(code, &format!("injected status {code}")),
            )
        }
        Some(FaultKind::RateLimited(secs)) => {
            return reply(
                429,
                &[("Retry-After", secs.to_string())],
                &error_body(429, "rate limited (injected)"),
            )
        }
        _ => {}
    }
    let cfg = &state.config;
    let kind = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/models") => {
            let models = json!({"object": "list", "data": [{
                "id": cfg.model, "object": "model", "created": unix_now(),
                "owned_by": "llmtool-test", "max_model_len": 1 << 20,
            }]});
            return reply(200, &[], &serde_json::to_vec(&models).unwrap());
        }
        ("POST", "/v1/chat/completions") => Endpoint::Chat,
        ("POST", "/v1/completions") => Endpoint::Completion,
        _ => {
            let msg = format!("no route {} {}", req.method, req.path);
            return reply(404, &[], &error_body(404, &msg));
        }
    };
    let job = match Job::parse(cfg, kind, body) {
        Ok(job) => job,
        Err((status, msg)) => return reply(status, &[], &error_body(status, &msg)),
    };
    let id = state.counter.fetch_add(1, Ordering::SeqCst);
    done.completion_tokens = job.tokens;
    if job.stream {
        done.status = 200;
        stream(cfg, &job, id, fault, w, done).is_ok()
    } else {
        whole(cfg, &job, id, fault, w, done)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

// ------------------------------------------------------------- generation

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completion,
}

/// A parsed generation request.
struct Job {
    kind: Endpoint,
    stream: bool,
    include_usage: bool,
    prompt_tokens: usize,
    /// Tokens to generate.
    tokens: usize,
    /// "stop" (end of sequence) or "length".
    finish: &'static str,
}

impl Job {
    fn parse(cfg: &Config, kind: Endpoint, body: &[u8]) -> Result<Job, (u16, String)> {
        let bad = |m: String| (400, m);
        let v: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
        let model = v["model"].as_str().unwrap_or_default();
        if model != cfg.model {
            return Err((404, format!("The model `{model}` does not exist.")));
        }
        let prompt_tokens = match kind {
            Endpoint::Chat => {
                let msgs = v["messages"]
                    .as_array()
                    .ok_or_else(|| bad("\"messages\" must be an array".into()))?;
                msgs.iter().map(|m| content_words(&m["content"])).sum()
            }
            Endpoint::Completion => match &v["prompt"] {
                Value::String(s) => count_words(s),
                Value::Array(items) if items.iter().all(Value::is_u64) => items.len(),
                Value::Array(items) if items.iter().all(Value::is_string) => items
                    .iter()
                    .map(|s| count_words(s.as_str().unwrap_or_default()))
                    .sum(),
                _ => {
                    return Err(bad(
                        "\"prompt\" must be a string, strings or token ids".into()
                    ))
                }
            },
        };
        let limit = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| v.get(*k).filter(|x| !x.is_null()))
            .map(|x| {
                x.as_u64()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("max_tokens must be a positive integer, not {x}")))
            })
            .transpose()?
            .map_or(cfg.default_max_tokens, |n| n as usize);
        let eos = cfg.eos_after.filter(|_| v["ignore_eos"] != json!(true));
        let (tokens, finish) = match eos {
            Some(e) if e < limit => (e, "stop"),
            _ => (limit, "length"),
        };
        Ok(Job {
            kind,
            stream: v["stream"] == json!(true),
            include_usage: v["stream_options"]["include_usage"] == json!(true),
            prompt_tokens,
            tokens,
            finish,
        })
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.tokens,
            "completion_tokens": self.tokens,
        })
    }
}

/// Words of a chat message's content: a string or text parts.
fn content_words(content: &Value) -> usize {
    match content {
        Value::String(s) => count_words(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| count_words(p["text"].as_str().unwrap_or_default()))
            .sum(),
        _ => 0,
    }
}

/// The answer of a request that is not streamed.
fn whole(
    cfg: &Config,
    job: &Job,
    id: u64,
    fault: Option<FaultKind>,
    w: &mut TcpStream,
    done: &mut Done,
) -> bool {
    sleep_ms(cfg.ttft_ms + cfg.token_delay_ms * job.tokens.saturating_sub(1) as u64);
    let empty = fault == Some(FaultKind::EmptyContent);
    let text = |range: std::ops::Range<usize>| -> String {
        if empty {
            String::new()
        } else {
            range.map(|i| WORDS[i % WORDS.len()]).collect()
        }
    };
    let reasoning = match job.kind {
        Endpoint::Chat => cfg.reasoning_tokens.min(job.tokens),
        Endpoint::Completion => 0,
    };
    let (object, prefix, choice) = match job.kind {
        Endpoint::Chat => {
            let mut message = json!({"role": "assistant", "content": text(reasoning..job.tokens)});
            if reasoning > 0 {
                message["reasoning_content"] = json!(text(0..reasoning));
            }
            (
                "chat.completion",
                "chatcmpl",
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": job.finish}),
            )
        }
        Endpoint::Completion => (
            "text_completion",
            "cmpl",
            json!({"index": 0, "text": text(0..job.tokens), "logprobs": null, "finish_reason": job.finish}),
        ),
    };
    let answer = json!({
        "id": format!("{prefix}-{id}"), "object": object, "created": unix_now(),
        "model": cfg.model, "choices": [choice], "usage": job.usage(),
    });
    match fault {
        Some(FaultKind::CloseMidStream(_) | FaultKind::NoDone) => return false,
        Some(FaultKind::Stall(secs)) => std::thread::sleep(Duration::from_secs(secs)),
        _ => {}
    }
    let bytes = match fault {
        Some(FaultKind::MalformedSse) => b"{\"id\": truncated".to_vec(),
        _ => serde_json::to_vec(&answer).unwrap(),
    };
    done.status = 200;
    done.first_token = Some(Instant::now());
    done.last_token = done.first_token;
    write_whole(w, 200, &[], &bytes).is_ok()
}

/// Renders the `data:` frames of one stream.
struct Frames {
    /// `data: {"id":…,"model":…,"choices":[`
    head: String,
    /// `]}` or `],"usage":null}` and the blank line.
    tail: &'static str,
    chat: bool,
}

impl Frames {
    fn new(cfg: &Config, job: &Job, id: u64) -> Frames {
        let (prefix, object) = match job.kind {
            Endpoint::Chat => ("chatcmpl", "chat.completion.chunk"),
            Endpoint::Completion => ("cmpl", "text_completion"),
        };
        Frames {
            head: format!(
                "data: {{\"id\":\"{prefix}-{id}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[",
                unix_now(),
                serde_json::to_string(&cfg.model).unwrap()
            ),
            tail: if job.include_usage {
                "],\"usage\":null}\n\n"
            } else {
                "]}\n\n"
            },
            chat: job.kind == Endpoint::Chat,
        }
    }

    /// A token's chunk: `delta.{key}` (chat) or `text` (completions).
    fn token(&self, out: &mut Vec<u8>, key: &str, text: &str, finish: Option<&str>) {
        self.open(out);
        if self.chat {
            out.extend_from_slice(format!("\"delta\":{{\"{key}\":\"").as_bytes());
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\"}");
        } else {
            out.extend_from_slice(b"\"text\":\"");
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        self.close(out, finish);
    }

    /// The chat stream's opening chunk: the role and an empty content, as
    /// vLLM and OpenAI send it.
    fn role(&self, out: &mut Vec<u8>) {
        self.open(out);
        out.extend_from_slice(b"\"delta\":{\"role\":\"assistant\",\"content\":\"\"}");
        self.close(out, None);
    }

    /// A chunk with no text, only the finish reason.
    fn finish_only(&self, out: &mut Vec<u8>, finish: &str) {
        self.open(out);
        out.extend_from_slice(if self.chat {
            b"\"delta\":{}"
        } else {
            b"\"text\":\"\""
        });
        self.close(out, Some(finish));
    }

    fn open(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(b"{\"index\":0,");
    }

    fn close(&self, out: &mut Vec<u8>, finish: Option<&str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => out.extend_from_slice(format!("\"{f}\"").as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out.extend_from_slice(self.tail.as_bytes());
    }

    fn usage(&self, out: &mut Vec<u8>, usage: &Value) {
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(format!("],\"usage\":{usage}}}\n\n").as_bytes());
    }
}

/// Stream bytes on their way out as HTTP chunks: batched, or cut into
/// [`SPLIT_SIZES`] pieces, noting when marked offsets have been written.
struct Sink<'a> {
    w: &'a mut TcpStream,
    pending: Vec<u8>,
    /// Bytes appended so far (written and pending).
    appended: usize,
    written: usize,
    split: Option<usize>,
    /// Offsets whose write time is wanted, and those times.
    first_mark: Option<usize>,
    last_mark: Option<usize>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    scratch: Vec<u8>,
}

/// Pending bytes past this go out without waiting for a flush.
const BATCH: usize = 64 << 10;

impl Sink<'_> {
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        self.appended += bytes.len();
        if self.pending.len() >= BATCH {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes what is pending (in split mode, all but a remainder smaller
    /// than the next piece, unless `all`).
    fn flush(&mut self, all: bool) -> io::Result<()> {
        let data = std::mem::take(&mut self.pending);
        let mut at = 0;
        while at < data.len() {
            let n = match self.split {
                None => data.len(),
                Some(k) => {
                    let size = SPLIT_SIZES[k % SPLIT_SIZES.len()];
                    if data.len() - at < size && !all {
                        break;
                    }
                    self.split = Some(k + 1);
                    size.min(data.len() - at)
                }
            };
            self.chunk(&data[at..at + n])?;
            at += n;
        }
        self.pending = data;
        self.pending.drain(..at);
        self.w.flush()
    }

    /// One HTTP chunk.
    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        self.scratch.extend_from_slice(data);
        self.scratch.extend_from_slice(b"\r\n");
        // Taken before the write, so a client never reads a token earlier
        // than the server says it sent it.
        let now = Instant::now();
        self.w.write_all(&self.scratch)?;
        self.written += data.len();
        if self.first_mark.is_some_and(|m| self.written >= m) && self.first_at.is_none() {
            self.first_at = Some(now);
        }
        if self.last_mark.is_some_and(|m| self.written >= m) && self.last_at.is_none() {
            self.last_at = Some(now);
        }
        Ok(())
    }

    /// Flushes (keeping a split remainder), then waits.
    fn pause(&mut self, ms: u64) -> io::Result<()> {
        if ms > 0 {
            self.flush(false)?;
            sleep_ms(ms);
        }
        Ok(())
    }
}

/// Streams the answer as server-sent events.
fn stream(
    cfg: &Config,
    job: &Job,
    id: u64,
    fault: Option<FaultKind>,
    w: &mut TcpStream,
    done: &mut Done,
) -> io::Result<()> {
    // A server that closes after a clean end of the body says so in the
    // head, as HTTP/1.1 asks. Unannounced, the client may already have
    // pooled the connection and sent the next request on it when the close
    // lands: that request would fail (and a fault meant for it would go to
    // the one after), which made the fault test depend on thread timing.
    let close = if fault == Some(FaultKind::NoDone) {
        "Connection: close\r\n"
    } else {
        ""
    };
    w.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
             Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n{close}\r\n"
        )
        .as_bytes(),
    )?;
    let frames = Frames::new(cfg, job, id);
    let mut sink = Sink {
        w,
        pending: Vec::with_capacity(BATCH + 1024),
        appended: 0,
        written: 0,
        split: cfg.split_frames.then_some(0),
        first_mark: None,
        last_mark: None,
        first_at: None,
        last_at: None,
        scratch: Vec::new(),
    };
    let result = stream_frames(cfg, job, &frames, fault, &mut sink, done);
    done.first_token = sink.first_at;
    done.last_token = sink.last_at;
    result
}

fn stream_frames(
    cfg: &Config,
    job: &Job,
    frames: &Frames,
    fault: Option<FaultKind>,
    sink: &mut Sink,
    done: &mut Done,
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(512);
    // After each data frame: the faults that act on the frame count. Err
    // (after writing what is due) where the stream must end here.
    let after_frame = |sink: &mut Sink, done: &mut Done| -> io::Result<()> {
        done.data_lines += 1;
        match &fault {
            Some(FaultKind::CloseMidStream(n)) if done.data_lines >= *n => {
                sink.flush(true)?;
                Err(io::ErrorKind::ConnectionAborted.into())
            }
            Some(FaultKind::MalformedSse) if done.data_lines == 1 => {
                sink.push(b"data: {\"id\": truncated\n\n")?;
                done.data_lines += 1;
                Ok(())
            }
            Some(FaultKind::Stall(secs)) if done.data_lines == 1 => {
                sink.flush(true)?;
                std::thread::sleep(Duration::from_secs(*secs));
                Ok(())
            }
            _ => Ok(()),
        }
    };
    if cfg.pings {
        sink.push(b": ping\n\n")?;
    }
    if frames.chat {
        frames.role(&mut frame);
        sink.push(&frame)?;
        after_frame(sink, done)?;
    }
    sink.pause(cfg.ttft_ms)?;
    let reasoning = if frames.chat {
        cfg.reasoning_tokens.min(job.tokens)
    } else {
        0
    };
    let empty = fault == Some(FaultKind::EmptyContent);
    for i in 0..job.tokens {
        if i > 0 {
            sink.pause(cfg.token_delay_ms)?;
        }
        let key = if i < reasoning {
            "reasoning_content"
        } else {
            "content"
        };
        let text = if empty { "" } else { WORDS[i % WORDS.len()] };
        let finish = (i + 1 == job.tokens).then_some(job.finish);
        frame.clear();
        frames.token(&mut frame, key, text, finish);
        sink.push(&frame)?;
        if i == 0 {
            sink.first_mark = Some(sink.appended);
        }
        if i + 1 == job.tokens {
            sink.last_mark = Some(sink.appended);
        }
        after_frame(sink, done)?;
        if cfg.pings {
            sink.push(b": ping\n\n")?;
        }
    }
    if job.tokens == 0 {
        // Nothing generated: the finish reason alone.
        frame.clear();
        frames.finish_only(&mut frame, job.finish);
        sink.push(&frame)?;
        after_frame(sink, done)?;
    }
    if job.include_usage {
        frame.clear();
        frames.usage(&mut frame, &job.usage());
        sink.push(&frame)?;
        after_frame(sink, done)?;
    }
    if fault == Some(FaultKind::NoDone) {
        sink.flush(true)?;
        sink.w.write_all(b"0\r\n\r\n")?;
        // The connection closes after a clean end of the body.
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    sink.push(b"data: [DONE]\n\n")?;
    done.data_lines += 1;
    sink.flush(true)?;
    sink.w.write_all(b"0\r\n\r\n")?;
    sink.w.flush()
}
