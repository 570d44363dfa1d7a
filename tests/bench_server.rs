//! The OpenAI-compatible test server (tests/openai_server.rs) checked on the
//! wire with a raw HTTP/1.1 client, and with the official `openai` Python
//! client: the SSE it speaks, its token and usage arithmetic, its timings,
//! `split_frames` and every injectable fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use crate::openai_server::{
    output_text, Config, Fault, FaultKind, OpenAiServer, SPLIT_SIZES, WORDS,
};

/// A response as read off the wire.
struct Raw {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    /// The HTTP chunks of a chunked body (one piece for a Content-Length
    /// body), each with when it was read.
    chunks: Vec<(Instant, Vec<u8>)>,
    /// The body ended properly (last chunk, or Content-Length reached).
    complete: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(_, c)| c.clone()).collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body()).unwrap()
    }

    /// The SSE events: `data:` payloads, and comments as `:…`.
    fn events(&self) -> Vec<String> {
        let body = String::from_utf8(self.body()).unwrap();
        assert!(
            !self.complete || body.is_empty() || body.ends_with("\n\n"),
            "a finished stream ends with a blank line: {body:?}"
        );
        body.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                assert!(!e.contains('\n'), "one line per event: {e:?}");
                e.strip_prefix("data: ").unwrap_or(e).to_string()
            })
            .collect()
    }

    /// The JSON `data:` payloads (not `[DONE]`, not comments).
    fn chunks_json(&self) -> Vec<Value> {
        self.events()
            .iter()
            .filter(|e| !e.starts_with(':') && *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
            .collect()
    }
}

/// One keep-alive connection.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(server: &OpenAiServer) -> Conn {
        let s = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Raw {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let w = self.r.get_mut();
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(body).unwrap();
        self.read_response()
    }

    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(n) if n > 0 => Some(l.trim_end_matches(['\r', '\n']).to_string()),
            _ => None,
        }
    }

    fn read_response(&mut self) -> Raw {
        let status_line = self.line().expect("a status line");
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        while let Some(h) = self.line().filter(|h| !h.is_empty()) {
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut raw = Raw {
            status,
            headers,
            chunks: Vec::new(),
            complete: false,
        };
        if raw.header("transfer-encoding") == Some("chunked") {
            while let Some(size) = self.line() {
                let size = usize::from_str_radix(&size, 16).unwrap();
                if size == 0 {
                    assert_eq!(self.line().as_deref(), Some(""));
                    raw.complete = true;
                    break;
                }
                let mut data = vec![0; size + 2];
                if self.r.read_exact(&mut data).is_err() {
                    break;
                }
                assert_eq!(&data[size..], b"\r\n");
                data.truncate(size);
                raw.chunks.push((Instant::now(), data));
            }
        } else {
            let len: usize = raw.header("content-length").unwrap().parse().unwrap();
            let mut data = vec![0; len];
            self.r.read_exact(&mut data).unwrap();
            raw.chunks.push((Instant::now(), data));
            raw.complete = true;
        }
        raw
    }

    /// The server closed the connection (a read gets end of file).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }
}

fn post(server: &OpenAiServer, path: &str, body: Value) -> Raw {
    Conn::open(server).send("POST", path, body.to_string().as_bytes())
}

fn chat(max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": "test-model",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hello there world"}]}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn completion(prompt: Value, max_tokens: u64, stream: bool) -> Value {
    json!({"model": "test-model", "prompt": prompt, "max_tokens": max_tokens, "stream": stream})
}

/// The text a stream's chunks carry in `key` (`content`, `reasoning_content`; `text`).
fn streamed(chunks: &[Value], key: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["delta"][key].as_str().or(c[key].as_str()))
        .collect()
}

#[test]
fn chat_stream_is_shaped_as_vllm_sends_it() {
    let server = OpenAiServer::start();
    let r = post(&server, "/v1/chat/completions", chat(5, true));
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = r.chunks_json();
    assert_eq!(
        chunks.len(),
        1 + 5 + 1,
        "role, five tokens, usage: {events:#?}"
    );
    // The role-only opening chunk.
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    for c in &chunks[..6] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "test-model");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["usage"], Value::Null);
        assert!(c.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(streamed(&chunks, "content"), output_text(5));
    assert_eq!(output_text(5), " the quick brown fox jumps");
    let finishes: Vec<&Value> = chunks[..6]
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(finishes[5], "length");
    assert!(finishes[..5].iter().all(|f| f.is_null()));
    // The usage chunk: no choices; prompt_tokens = words of all messages.
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(
        chunks[6]["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    let log = server.requests();
    assert_eq!(log.len(), 1);
    let l = &log[0];
    assert_eq!(
        (l.method.as_str(), l.path.as_str(), l.status),
        ("POST", "/v1/chat/completions", 200)
    );
    assert_eq!(l.body.as_ref().unwrap()["max_tokens"], 5);
    assert_eq!((l.completion_tokens, l.data_lines), (5, 8));
    let (first, last) = (l.first_token.unwrap(), l.last_token.unwrap());
    assert!(l.arrival <= first && first <= last);
}

#[test]
fn completions_stream_and_whole_answers() {
    let server = OpenAiServer::start();
    // Without include_usage: no usage key and no usage chunk.
    let r = post(
        &server,
        "/v1/completions",
        completion(json!("once upon a time"), 3, true),
    );
    let chunks = r.chunks_json();
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(streamed(&chunks, "text"), output_text(3));
    assert_eq!(r.events().last().unwrap(), "[DONE]");

    // Not streamed; a token-id prompt counts its ids.
    let r = post(
        &server,
        "/v1/completions",
        completion(json!([1, 2, 3, 4, 5, 6, 7]), 4, false),
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], output_text(4));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11})
    );
    let v = post(&server, "/v1/chat/completions", chat(2, false)).json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": " the quick"})
    );
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    let models = Conn::open(&server).send("GET", "/v1/models", b"").json();
    assert_eq!(models["data"][0]["id"], "test-model");
}

#[test]
fn end_of_sequence_max_tokens_and_ignore_eos() {
    let server = OpenAiServer::start_with(Config {
        eos_after: Some(3),
        default_max_tokens: 2,
        ..Config::default()
    });
    let run = |body: Value| {
        let v = post(&server, "/v1/completions", body).json();
        (
            v["usage"]["completion_tokens"].as_u64().unwrap(),
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(run(completion(json!("a"), 10, false)), (3, "stop".into()));
    assert_eq!(run(completion(json!("a"), 2, false)), (2, "length".into()));
    let mut ignore = completion(json!("a"), 10, false);
    ignore["ignore_eos"] = json!(true);
    assert_eq!(run(ignore), (10, "length".into()));
    // No max_tokens: the server's default.
    let body = json!({"model": "test-model", "prompt": "a"});
    assert_eq!(run(body), (2, "length".into()));
    // A stream that ends by end-of-sequence marks its last token "stop".
    let mut long = chat(40, true);
    long["max_completion_tokens"] = json!(40);
    let chunks = post(&server, "/v1/chat/completions", long).chunks_json();
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
}

#[test]
fn reasoning_deltas_and_pings() {
    let server = OpenAiServer::start_with(Config {
        reasoning_tokens: 2,
        pings: true,
        ..Config::default()
    });
    let r = post(&server, "/v1/chat/completions", chat(4, true));
    let events = r.events();
    assert_eq!(events[0], ": ping");
    assert_eq!(events.iter().filter(|e| *e == ": ping").count(), 1 + 4);
    let chunks = r.chunks_json();
    assert_eq!(streamed(&chunks, "reasoning_content"), " the quick");
    assert_eq!(streamed(&chunks, "content"), " brown fox");
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 4);
    let v = post(&server, "/v1/chat/completions", chat(3, false)).json();
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        " the quick"
    );
    assert_eq!(v["choices"][0]["message"]["content"], " brown");
}

#[test]
fn delays_and_the_server_side_timings() {
    let server = OpenAiServer::start_with(Config {
        ttft_ms: 600,
        token_delay_ms: 50,
        ..Config::default()
    });
    let sent = Instant::now();
    let r = post(&server, "/v1/chat/completions", chat(4, true));
    // One HTTP chunk per frame when tokens are paced (the last also holds
    // the usage and [DONE]).
    assert_eq!(r.chunks.len(), 5);
    let at = |i: usize| r.chunks[i].0;
    // The role chunk comes at once, the first token after the TTFT delay.
    assert!(
        at(0) - sent < Duration::from_millis(400),
        "{:?}",
        at(0) - sent
    );
    assert!(at(1) - sent >= Duration::from_millis(600));
    assert!(at(4) - sent >= Duration::from_millis(600 + 3 * 50));
    let l = &server.requests()[0];
    let (first, last) = (l.first_token.unwrap(), l.last_token.unwrap());
    assert!(first - l.arrival >= Duration::from_millis(600));
    assert!(last - first >= Duration::from_millis(3 * 50));
    // What a client measures is never earlier than what the server wrote.
    assert!(at(1) >= first && at(4) >= last);
    assert!(at(1) - first < Duration::from_millis(300));
}

#[test]
fn split_frames_splits_mid_line_and_coalesces() {
    let plain = OpenAiServer::start();
    let split = OpenAiServer::start_with(Config {
        split_frames: true,
        ..Config::default()
    });
    let a = post(&plain, "/v1/chat/completions", chat(12, true));
    let b = post(&split, "/v1/chat/completions", chat(12, true));
    let sizes: Vec<usize> = b.chunks.iter().map(|(_, c)| c.len()).collect();
    let n = sizes.len();
    assert_eq!(
        sizes[..n - 1],
        SPLIT_SIZES
            .iter()
            .cycle()
            .take(n - 1)
            .copied()
            .collect::<Vec<_>>()[..],
        "piece sizes"
    );
    let ends_mid_line = b.chunks.iter().any(|(_, c)| !c.ends_with(b"\n\n"));
    let coalesced = b
        .chunks
        .iter()
        .any(|(_, c)| String::from_utf8_lossy(c).matches("data: ").count() >= 2);
    assert!(ends_mid_line && coalesced, "{sizes:?}");
    // The same events as unsplit, bar the id.
    let strip = |r: &Raw| -> Vec<Value> {
        r.chunks_json()
            .into_iter()
            .map(|mut c| {
                c["id"] = Value::Null;
                c
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.events().len(), b.events().len());
}

#[test]
fn as_fast_as_possible_streams_in_big_writes() {
    let server = OpenAiServer::start();
    let started = Instant::now();
    let r = post(
        &server,
        "/v1/completions",
        completion(json!("a"), 50_000, true),
    );
    let chunks = r.chunks_json();
    assert_eq!(chunks.len(), 50_000);
    assert_eq!(chunks[49_999]["choices"][0]["text"], WORDS[49_999 % 16]);
    // 50 000 frames of ~150 bytes in 64 KiB writes, not one write each.
    assert!(r.chunks.len() < 200, "{} writes", r.chunks.len());
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn keep_alive_and_request_errors() {
    let server = OpenAiServer::start();
    let mut conn = Conn::open(&server);
    let body = |v: Value| v.to_string().into_bytes();
    let r = conn.send("POST", "/v1/chat/completions", &body(chat(2, true)));
    assert!(r.complete);
    let mut other = chat(2, false);
    other["model"] = json!("nope");
    let r = conn.send("POST", "/v1/chat/completions", &body(other));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "The model `nope` does not exist."
    );
    let r = conn.send("POST", "/v1/completions", b"{not json");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    let r = conn.send(
        "POST",
        "/v1/completions",
        &body(completion(json!("a"), 0, false)),
    );
    assert_eq!(r.status, 400);
    let r = conn.send("POST", "/v1/embeddings", b"{}");
    assert_eq!(r.status, 404);
    let r = conn.send(
        "POST",
        "/v1/completions",
        &body(completion(json!("a"), 1, false)),
    );
    assert_eq!(r.status, 200);
    let statuses: Vec<u16> = server.requests().iter().map(|l| l.status).collect();
    assert_eq!(statuses, [200, 404, 400, 400, 404, 200]);
}

#[test]
fn status_and_rate_limit_faults_hit_the_next_matching_requests() {
    let server = OpenAiServer::start();
    server.fail(Fault::new("/v1/chat/", FaultKind::Status(503)).times(2));
    server.fail(Fault::new("/v1/completions", FaultKind::RateLimited(7)));
    server.fail(Fault::new("/v1/models", FaultKind::Status(500)));
    let r = post(&server, "/v1/completions", completion(json!("a"), 1, true));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.json()["error"]["type"], "RateLimitError");
    for _ in 0..2 {
        let r = post(&server, "/v1/chat/completions", chat(1, true));
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["code"], 503);
    }
    assert_eq!(
        post(&server, "/v1/chat/completions", chat(1, true)).status,
        200
    );
    assert_eq!(
        post(&server, "/v1/completions", completion(json!("a"), 1, true)).status,
        200
    );
    assert_eq!(
        Conn::open(&server).send("GET", "/v1/models", b"").status,
        500
    );
    let faults: Vec<Option<FaultKind>> = server.requests().into_iter().map(|l| l.fault).collect();
    assert_eq!(
        faults,
        [
            Some(FaultKind::RateLimited(7)),
            Some(FaultKind::Status(503)),
            Some(FaultKind::Status(503)),
            None,
            None,
            Some(FaultKind::Status(500)),
        ]
    );
}

#[test]
fn stream_faults() {
    let server = OpenAiServer::start();
    let path = "/v1/chat/completions";

    server.fail(Fault::new(path, FaultKind::CloseMidStream(3)));
    let mut conn = Conn::open(&server);
    let r = conn.send("POST", path, chat(6, true).to_string().as_bytes());
    assert!(!r.complete, "the body is cut");
    assert_eq!(r.chunks_json().len(), 3);
    assert!(conn.closed());

    server.fail(Fault::new(path, FaultKind::MalformedSse));
    let r = post(&server, path, chat(3, true));
    let events = r.events();
    assert_eq!(events[1], "{\"id\": truncated");
    assert!(serde_json::from_str::<Value>(&events[1]).is_err());
    assert_eq!(events.last().unwrap(), "[DONE]");

    server.fail(Fault::new(path, FaultKind::NoDone));
    let mut conn = Conn::open(&server);
    let r = conn.send("POST", path, chat(3, true).to_string().as_bytes());
    assert!(r.complete, "the body ends properly");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the close is announced"
    );
    assert!(!r.events().contains(&"[DONE]".to_string()));
    assert_eq!(
        r.chunks_json().last().unwrap()["usage"]["completion_tokens"],
        3
    );
    assert!(conn.closed());

    server.fail(Fault::new(path, FaultKind::Stall(1)));
    let r = post(&server, path, chat(3, true));
    // Read times, not write times: the first chunk may be read late under
    // load, so the gap seen here can fall a little short of the 1 s stall.
    let gap = r.chunks[1].0 - r.chunks[0].0;
    assert!(gap >= Duration::from_millis(800), "stalled {gap:?}");
    assert_eq!(r.chunks_json().len(), 5);

    server.fail(Fault::new(path, FaultKind::EmptyContent));
    let chunks = post(&server, path, chat(3, true)).chunks_json();
    assert_eq!(chunks.len(), 5);
    assert!(chunks[1..4]
        .iter()
        .all(|c| c["choices"][0]["delta"]["content"] == ""));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);

    // Not streamed: a cut connection, a body that is not JSON.
    server.fail(Fault::new(path, FaultKind::CloseMidStream(1)));
    let mut conn = Conn::open(&server);
    conn.r
        .get_mut()
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                chat(1, false).to_string().len(),
                chat(1, false)
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(conn.closed());
    server.fail(Fault::new(path, FaultKind::MalformedSse));
    let r = post(&server, path, chat(1, false));
    assert!(serde_json::from_slice::<Value>(&r.body()).is_err());

    let statuses: Vec<u16> = server.requests().iter().map(|l| l.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 0, 200]);
}

#[test]
fn openai_python_client_streams_from_the_test_server() {
    let Some(py) = common::bench_python() else {
        return;
    };
    let server = OpenAiServer::start_with(Config {
        split_frames: true,
        pings: true,
        ..Config::default()
    });
    let out = std::process::Command::new(&py)
        .arg(common::repo().join("tests/oracle/openai_client.py"))
        .args([&server.url(), "test-model", "6"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai_client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["openai"], "1.109.1");
    assert_eq!(v["models"], json!(["test-model"]));
    for (kind, prompt_words) in [("chat", 5), ("completion", 4)] {
        let r = &v[kind];
        assert_eq!(r["text"], output_text(6), "{kind}");
        assert_eq!(r["finish_reason"], "length", "{kind}");
        assert_eq!(
            r["usage"],
            json!({"prompt_tokens": prompt_words, "completion_tokens": 6, "total_tokens": prompt_words + 6}),
            "{kind}"
        );
    }
    assert_eq!(v["chat"]["roles"], json!(["assistant"]));
    // Role, six tokens and usage for chat; six tokens and usage otherwise.
    assert_eq!(v["chat"]["chunks"], 8);
    assert_eq!(v["completion"]["chunks"], 7);
    let bodies: Vec<Value> = server
        .requests()
        .into_iter()
        .filter_map(|l| l.body)
        .collect();
    assert!(bodies
        .iter()
        .all(|b| b["stream_options"]["include_usage"] == true));
}
