//! `bench serve`: streamed requests against an OpenAI-compatible server
//! (vLLM, llama-server, TGI, SGLang…), measured with `vllm bench serve`'s
//! definitions so the numbers compare (vllm `benchmarks/serve.py`
//! `calculate_metrics`, `benchmarks/lib/endpoint_request_func.py`):
//!
//! - **TTFT**: send → the first chunk carrying *content* (`content`,
//!   `reasoning_content`/`reasoning` or `tool_calls` in a chat delta, `text`
//!   in a completion). vLLM counts the first chunk with `choices`, which on
//!   the chat endpoint is the role-only chunk and makes TTFT near zero
//!   (vllm#3759); we do not. **TTFB** (headers received) is reported
//!   separately.
//! - **ITL**: gaps between successive content chunks; **TPOT**:
//!   (E2E − TTFT)/(output tokens − 1), for outputs longer than one token;
//!   **E2E**: send → the last content chunk (the trailing usage chunk does
//!   not move it).
//! - **Output tokens**: the server's `usage.completion_tokens` (we send
//!   `stream_options.include_usage`), else the model's tokenizer on the
//!   text, else the number of content chunks (said in the report).
//! - Throughputs over the run's duration, goodput as DistServe defines it
//!   (requests meeting every `--slo`), the peak output tokens per second in
//!   1 s buckets and the peak concurrency.
//!
//! SSE is read line by line from a buffered reader, so frames split or
//! coalesced across reads parse the same. A failed request (status, closed
//! stream, malformed event, no `[DONE]`, stall past `--timeout`) is counted
//! with its reason and the run goes on.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::dataset::{Body, Prompt, Rng};
use super::stats::{summarize, Summary};
use crate::cancel;
use crate::ops::{Error, Result};

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/chat/completions` (the server applies the chat template).
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// How requests are sent.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// At most this many in flight; alone it is a closed loop (each
    /// finished request starts the next).
    pub concurrency: Option<usize>,
    /// Requests per second (open loop); `None`: all at once.
    pub request_rate: Option<f64>,
    /// 1: Poisson arrivals; other values: gamma gaps (vLLM's `--burstiness`).
    pub burstiness: f64,
    pub num_prompts: usize,
    /// Stop starting requests after this long.
    pub duration: Option<f64>,
    /// Unmeasured requests first.
    pub warmups: usize,
    pub seed: u64,
    /// A request rate that changes over the run instead of `request_rate`.
    pub ramp: Option<Ramp>,
}

/// vLLM's `--ramp-up-strategy`: the rate of request i of n goes from
/// `start` to `end` requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ramp {
    pub exponential: bool,
    pub start: f64,
    pub end: f64,
}

impl Ramp {
    /// The rate for request `i` of `n` (linear, or geometric as vLLM's
    /// exponential ramp).
    pub fn rate(&self, i: usize, n: usize) -> f64 {
        let f = if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            1.0
        };
        if self.exponential {
            self.start * (self.end / self.start).powf(f)
        } else {
            self.start + (self.end - self.start) * f
        }
    }
}

/// A service-level objective for goodput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    pub metric: SloMetric,
    pub ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SloMetric {
    Ttft,
    Tpot,
    E2el,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Base URL (`http://host:port`, with or without `/v1`).
    pub url: String,
    pub model: String,
    pub api: Api,
    pub api_key: Option<String>,
    pub load: Load,
    pub ignore_eos: bool,
    /// Longest silence within a response before it counts as stalled.
    pub timeout: Duration,
    pub percentiles: Vec<f64>,
    pub slos: Vec<Slo>,
    pub progress: bool,
}

/// One request as measured (seconds, as vLLM's arrays are).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub success: bool,
    pub error: String,
    /// Since the run started.
    pub start: f64,
    pub ttfb: f64,
    pub ttft: f64,
    pub itl: Vec<f64>,
    pub latency: f64,
    pub input_len: usize,
    pub output_len: usize,
    /// "usage", "tokenizer" or "chunks".
    pub output_len_from: &'static str,
    /// Content chunk times since the request started (throughput over time).
    #[serde(skip)]
    pub chunk_times: Vec<f64>,
    /// What the server said about its own timing (llama-server `timings`).
    pub server_timings: Option<Value>,
}

/// The endpoint URL for `api` under `base`.
pub fn endpoint(base: &str, api: Api) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    match api {
        Api::Chat => format!("{base}/v1/chat/completions"),
        Api::Completions => format!("{base}/v1/completions"),
    }
}

/// The model a server serves (`GET /v1/models`, the first id).
pub fn served_model(base: &str, api_key: Option<&str>, timeout: Duration) -> Result<String> {
    let base = base.trim_end_matches('/');
    let url = format!("{}/v1/models", base.strip_suffix("/v1").unwrap_or(base));
    let mut req = ureq::AgentBuilder::new().timeout(timeout).build().get(&url);
    if let Some(k) = api_key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    let v: Value = req
        .call()
        .map_err(|e| Error::Refused(format!("{url}: {e}; pass --model NAME")))?
        .into_string()
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    v.pointer("/data/0/id")
        .and_then(|i| i.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Refused(format!("{url} lists no model; pass --model NAME")))
}

fn request_body(o: &ServeOptions, p: &Prompt) -> Vec<u8> {
    let mut b = json!({
        "model": o.model,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    match (&p.body, o.api) {
        (Body::Messages(m), Api::Chat) => b["messages"] = json!(m),
        (Body::Text(t), Api::Chat) => b["messages"] = json!([{"role": "user", "content": t}]),
        (Body::Text(t), Api::Completions) => b["prompt"] = json!(t),
        (Body::Messages(m), Api::Completions) => {
            let all: Vec<&str> = m
                .iter()
                .filter_map(|x| x.get("content").and_then(|c| c.as_str()))
                .collect();
            b["prompt"] = json!(all.join("\n"));
        }
    }
    if let Some(n) = p.output_len {
        b["max_tokens"] = json!(n);
        if o.api == Api::Chat {
            b["max_completion_tokens"] = json!(n);
        }
    }
    if o.ignore_eos {
        b["ignore_eos"] = json!(true);
    }
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The text a chunk adds, if any (content, reasoning or a tool call).
fn chunk_text(v: &Value, api: Api) -> Option<String> {
    let c = v.get("choices")?.get(0)?;
    fn nonempty(x: Option<&Value>) -> Option<&str> {
        x.and_then(|s| s.as_str()).filter(|s| !s.is_empty())
    }
    match api {
        Api::Completions => nonempty(c.get("text")).map(str::to_string),
        Api::Chat => {
            let d = c.get("delta")?;
            nonempty(d.get("content"))
                .or_else(|| nonempty(d.get("reasoning_content")))
                .or_else(|| nonempty(d.get("reasoning")))
                .map(str::to_string)
                .or_else(|| {
                    d.get("tool_calls")
                        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                        .map(|t| t.to_string())
                })
        }
    }
}

/// Sends one request and reads its stream.
fn one(
    agent: &ureq::Agent,
    url: &str,
    o: &ServeOptions,
    p: &Prompt,
    run_start: Instant,
    tok: Option<&Tokenizer>,
) -> Outcome {
    let body = request_body(o, p);
    let mut out = Outcome {
        input_len: p.input_len.unwrap_or(0),
        ..Default::default()
    };
    let st = Instant::now();
    out.start = (st - run_start).as_secs_f64();
    let mut req = agent.post(url).set("content-type", "application/json");
    if let Some(k) = &o.api_key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    let resp = match req.send_bytes(&body) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            out.error = format!(
                "HTTP {code}: {}",
                text.chars().take(200).collect::<String>()
            );
            out.latency = st.elapsed().as_secs_f64();
            return out;
        }
        Err(e) => {
            out.error = format!("request failed: {e}");
            out.latency = st.elapsed().as_secs_f64();
            return out;
        }
    };
    out.ttfb = st.elapsed().as_secs_f64();
    let mut reader = BufReader::with_capacity(1 << 16, resp.into_reader());
    let mut line = String::new();
    let mut data = String::new();
    let mut generated = String::new();
    let mut last = None;
    let mut usage_out = None;
    let mut done = false;
    loop {
        if cancel::requested() {
            out.error = "interrupted".into();
            break;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                out.error = if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock
                {
                    format!("stalled: no data for {:?} (--timeout)", o.timeout)
                } else {
                    format!("connection broken mid-stream: {e}")
                };
                break;
            }
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if !l.is_empty() {
            if let Some(d) = l.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
            // `:` comments (pings), `event:`, `id:` and `retry:` carry nothing we use.
            continue;
        }
        if data.is_empty() {
            continue;
        }
        let event = std::mem::take(&mut data);
        if event == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = match serde_json::from_str(&event) {
            Ok(v) => v,
            Err(e) => {
                out.error = format!(
                    "malformed SSE event ({e}): {}",
                    event.chars().take(80).collect::<String>()
                );
                break;
            }
        };
        if let Some(err) = v.get("error") {
            out.error = format!("server error in stream: {err}");
            break;
        }
        if let Some(t) = chunk_text(&v, o.api) {
            let now = st.elapsed().as_secs_f64();
            match last {
                None => out.ttft = now,
                Some(prev) => out.itl.push(now - prev),
            }
            last = Some(now);
            out.chunk_times.push(now);
            generated.push_str(&t);
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage_out = u.get("completion_tokens").and_then(|x| x.as_u64());
            if let Some(pt) = u.get("prompt_tokens").and_then(|x| x.as_u64()) {
                out.input_len = pt as usize;
            }
        }
        if let Some(t) = v.get("timings") {
            out.server_timings = Some(t.clone());
        }
    }
    out.latency = last.unwrap_or_else(|| st.elapsed().as_secs_f64());
    (out.output_len, out.output_len_from) = match (usage_out, tok) {
        (Some(n), _) => (n as usize, "usage"),
        (None, Some(t)) => (
            t.encode(generated.as_str(), false)
                .map(|e| e.len())
                .unwrap_or(out.chunk_times.len()),
            "tokenizer",
        ),
        (None, None) => (out.chunk_times.len(), "chunks"),
    };
    if out.error.is_empty() {
        if !done {
            out.error = "the stream ended without data: [DONE]".into();
        } else if out.chunk_times.is_empty() {
            out.error = "empty response: no content in any chunk".into();
        } else {
            out.success = true;
        }
    }
    out
}

/// A counting semaphore for `--concurrency` in the open loop.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn take(&self) {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *f == 0 {
            f = self.cv.wait(f).unwrap_or_else(|e| e.into_inner());
        }
        *f -= 1;
    }
    fn give(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_one();
    }
}

/// Runs the load and returns each request's outcome (the warmups left out)
/// and the run's wall time.
pub fn run(
    o: &ServeOptions,
    prompts: &[Prompt],
    tok: Option<&Tokenizer>,
) -> Result<(Vec<Outcome>, f64, bool)> {
    let url = endpoint(&o.url, o.api);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(o.timeout)
        .max_idle_connections_per_host(o.load.concurrency.unwrap_or(256).max(1))
        .build();
    for p in prompts.iter().take(o.load.warmups) {
        cancel::check()?;
        let _ = one(&agent, &url, o, p, Instant::now(), tok);
    }
    let bar =
        crate::progress::count_bar(o.progress, prompts.len() as u64, "benchmarking", "request");
    let results = Mutex::new(Vec::with_capacity(prompts.len()));
    let start = Instant::now();
    let deadline = o.load.duration.map(|d| start + Duration::from_secs_f64(d));
    let stop = || cancel::requested() || deadline.is_some_and(|d| Instant::now() >= d);
    let record = |r: Outcome| {
        bar.inc(1);
        results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    };
    match (o.load.concurrency, o.load.request_rate) {
        (Some(n), None) if o.load.ramp.is_none() => {
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..n.max(1) {
                    s.spawn(|| loop {
                        if stop() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(p) = prompts.get(i) else { break };
                        record(one(&agent, &url, o, p, start, tok));
                    });
                }
            });
        }
        (limit, rate) => {
            let slots = Slots {
                free: Mutex::new(limit.unwrap_or(usize::MAX)),
                cv: Condvar::new(),
            };
            let mut rng = Rng::new(o.load.seed);
            let mut at = 0.0;
            let n = prompts.len();
            std::thread::scope(|s| {
                for (i, p) in prompts.iter().enumerate() {
                    let rate = o.load.ramp.map(|r| r.rate(i, n)).or(rate);
                    if let Some(r) = rate.filter(|r| r.is_finite() && *r > 0.0) {
                        let b = o.load.burstiness;
                        at += rng.gamma(b, 1.0 / (r * b));
                        let due = start + Duration::from_secs_f64(at);
                        while Instant::now() < due && !stop() {
                            std::thread::sleep(
                                (due - Instant::now()).min(Duration::from_millis(20)),
                            );
                        }
                    }
                    if stop() {
                        break;
                    }
                    slots.take();
                    let (slots, agent, url, record) = (&slots, &agent, &url, &record);
                    s.spawn(move || {
                        record(one(agent, url, o, p, start, tok));
                        slots.give();
                    });
                }
            });
        }
    }
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let mut v = results.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok((v, wall, cancel::requested()))
}

/// The result, with `vllm bench serve`'s keys (its result file) plus ours
/// under `llmtool`.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub backend: &'static str,
    pub model_id: String,
    pub endpoint: String,
    pub num_prompts: usize,
    pub request_rate: String,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub duration: f64,
    pub completed: usize,
    pub failed: usize,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    #[serde(flatten)]
    pub metrics: serde_json::Map<String, Value>,
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
    pub ttfts: Vec<f64>,
    pub itls: Vec<Vec<f64>>,
    pub latencies: Vec<f64>,
    pub start_times: Vec<f64>,
    pub errors: Vec<String>,
    pub llmtool: Extra,
}

/// What `vllm bench serve` does not report.
#[derive(Debug, Clone, Serialize)]
pub struct Extra {
    pub version: &'static str,
    pub api: Api,
    pub interrupted: bool,
    /// Summaries in ms: ttfb, ttft, tpot, itl, e2el.
    pub summaries: Vec<(String, Summary)>,
    /// Failure reasons and how many requests had each.
    pub failures: Vec<(String, usize)>,
    /// Where output token counts came from: (source, requests).
    pub output_len_from: Vec<(String, usize)>,
    pub slos: Vec<Slo>,
    /// Output tokens per 1 s bucket since the start (the throughput plot).
    pub output_tokens_per_s: Vec<f64>,
    /// Per request: llama-server's own `timings` when it sent them.
    pub server_timings: Vec<Option<Value>>,
}

fn pword(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// Metrics over `outcomes` as vLLM's `calculate_metrics` computes them.
pub fn report(o: &ServeOptions, outcomes: &[Outcome], wall: f64, interrupted: bool) -> ServeReport {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|r| r.success).collect();
    let ms = |v: Vec<f64>| v.into_iter().map(|x| x * 1000.0).collect::<Vec<f64>>();
    let ttfts = ms(ok.iter().map(|r| r.ttft).collect());
    let ttfbs = ms(ok.iter().map(|r| r.ttfb).collect());
    let tpots = ms(ok
        .iter()
        .filter(|r| r.output_len > 1)
        .map(|r| (r.latency - r.ttft) / (r.output_len - 1) as f64)
        .collect());
    let itls = ms(ok.iter().flat_map(|r| r.itl.iter().copied()).collect());
    let e2els = ms(ok.iter().map(|r| r.latency).collect());
    // vLLM: from the start to the last response (the run's wall time).
    let duration = wall;
    let total_in: usize = ok.iter().map(|r| r.input_len).sum();
    let total_out: usize = ok.iter().map(|r| r.output_len).sum();
    let per_s = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
    let good = ok
        .iter()
        .filter(|r| {
            o.slos.iter().all(|s| {
                let v = match s.metric {
                    SloMetric::Ttft => r.ttft,
                    SloMetric::Tpot if r.output_len > 1 => {
                        (r.latency - r.ttft) / (r.output_len - 1) as f64
                    }
                    SloMetric::Tpot => 0.0,
                    SloMetric::E2el => r.latency,
                } * 1000.0;
                v <= s.ms
            })
        })
        .count();
    // Output tokens per 1 s bucket: each content chunk carries its share.
    let buckets = duration.ceil().max(1.0) as usize;
    let mut per_sec = vec![0.0; buckets];
    for r in &ok {
        let share = r.output_len as f64 / r.chunk_times.len().max(1) as f64;
        for t in &r.chunk_times {
            let b = ((r.start + t) as usize).min(buckets - 1);
            per_sec[b] += share;
        }
    }
    // Peak concurrency: a sweep over starts and ends.
    let mut events: Vec<(f64, i32)> = outcomes
        .iter()
        .flat_map(|r| [(r.start, 1), (r.start + r.latency, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        peak = peak.max(cur);
    }
    let mut metrics = serde_json::Map::new();
    let mut summaries = Vec::new();
    for (name, values) in [
        ("ttft", &ttfts),
        ("tpot", &tpots),
        ("itl", &itls),
        ("e2el", &e2els),
        ("ttfb", &ttfbs),
    ] {
        let s = summarize(values, &o.percentiles);
        if name != "ttfb" {
            metrics.insert(format!("mean_{name}_ms"), json!(s.mean));
            metrics.insert(format!("median_{name}_ms"), json!(s.median));
            metrics.insert(format!("std_{name}_ms"), json!(s.std));
            for (p, v) in &s.percentiles {
                metrics.insert(format!("p{}_{name}_ms", pword(*p)), json!(v));
            }
        }
        summaries.push((name.to_string(), s));
    }
    let mut failures: Vec<(String, usize)> = Vec::new();
    for r in outcomes.iter().filter(|r| !r.success) {
        let reason = r.error.split(':').next().unwrap_or("").to_string();
        match failures.iter_mut().find(|(k, _)| *k == reason) {
            Some((_, n)) => *n += 1,
            None => failures.push((reason, 1)),
        }
    }
    let mut sources: Vec<(String, usize)> = Vec::new();
    for r in &ok {
        match sources.iter_mut().find(|(k, _)| k == r.output_len_from) {
            Some((_, n)) => *n += 1,
            None => sources.push((r.output_len_from.to_string(), 1)),
        }
    }
    ServeReport {
        backend: "openai-chat",
        model_id: o.model.clone(),
        endpoint: endpoint(&o.url, o.api),
        num_prompts: outcomes.len(),
        request_rate: match (o.load.ramp, o.load.request_rate) {
            (Some(r), _) => format!(
                "ramp {} {}→{}",
                if r.exponential {
                    "exponential"
                } else {
                    "linear"
                },
                r.start,
                r.end
            ),
            (None, rate) => rate.map_or("inf".into(), |r| r.to_string()),
        },
        burstiness: o.load.burstiness,
        max_concurrency: o.load.concurrency,
        duration,
        completed: ok.len(),
        failed: outcomes.len() - ok.len(),
        total_input_tokens: total_in,
        total_output_tokens: total_out,
        request_throughput: per_s(ok.len() as f64),
        request_goodput: (!o.slos.is_empty()).then(|| per_s(good as f64)),
        output_throughput: per_s(total_out as f64),
        total_token_throughput: per_s((total_in + total_out) as f64),
        max_output_tokens_per_s: per_sec.iter().copied().fold(0.0, f64::max),
        max_concurrent_requests: peak.max(0) as usize,
        metrics,
        input_lens: outcomes.iter().map(|r| r.input_len).collect(),
        output_lens: outcomes.iter().map(|r| r.output_len).collect(),
        ttfts: outcomes.iter().map(|r| r.ttft).collect(),
        itls: outcomes.iter().map(|r| r.itl.clone()).collect(),
        latencies: outcomes.iter().map(|r| r.latency).collect(),
        start_times: outcomes.iter().map(|r| r.start).collect(),
        errors: outcomes.iter().map(|r| r.error.clone()).collect(),
        llmtool: Extra {
            version: env!("CARGO_PKG_VERSION"),
            api: o.api,
            interrupted,
            summaries,
            failures,
            output_len_from: sources,
            slos: o.slos.clone(),
            output_tokens_per_s: per_sec,
            server_timings: outcomes.iter().map(|r| r.server_timings.clone()).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_only_and_empty_chunks_are_not_content() {
        let role = json!({"choices":[{"delta":{"role":"assistant"}}]});
        assert_eq!(chunk_text(&role, Api::Chat), None);
        let empty = json!({"choices":[{"delta":{"content":""}}]});
        assert_eq!(chunk_text(&empty, Api::Chat), None);
        let think = json!({"choices":[{"delta":{"reasoning_content":"hm"}}]});
        assert_eq!(chunk_text(&think, Api::Chat).as_deref(), Some("hm"));
        let usage = json!({"choices":[],"usage":{"completion_tokens":3}});
        assert_eq!(chunk_text(&usage, Api::Chat), None);
        let text = json!({"choices":[{"text":"a"}]});
        assert_eq!(chunk_text(&text, Api::Completions).as_deref(), Some("a"));
    }

    #[test]
    fn ramps_go_from_start_to_end() {
        let lin = Ramp {
            exponential: false,
            start: 1.0,
            end: 5.0,
        };
        assert_eq!(
            [lin.rate(0, 5), lin.rate(2, 5), lin.rate(4, 5)],
            [1.0, 3.0, 5.0]
        );
        let exp = Ramp {
            exponential: true,
            start: 1.0,
            end: 16.0,
        };
        assert!((exp.rate(2, 5) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn endpoints_take_a_base_with_or_without_v1() {
        assert_eq!(
            endpoint("http://h:1/v1/", Api::Chat),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://h:1", Api::Completions),
            "http://h:1/v1/completions"
        );
    }
}
