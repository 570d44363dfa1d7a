//! `llmtool bench serve | compare` against the fake OpenAI-compatible server
//! (tests/openai_server.rs): metrics against the server's own timings, SSE
//! framing, reasoning chunks, every fault kind, sweeps, the saved files,
//! Ctrl-C and the regression gate.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{llmtool, s};
use crate::openai_server::{Config, Fault, FaultKind, OpenAiServer};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A JSONL dataset of `n` short prompts.
fn prompts(dir: &Path, n: usize) -> std::path::PathBuf {
    let p = dir.join("prompts.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"prompt": "question number {i} about Spinoza"}}"#))
        .collect();
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn bench(srv: &OpenAiServer, data: &Path, extra: &[&str]) -> (Value, String) {
    let mut c = llmtool();
    c.args(["bench", "serve", "--url", &srv.url(), "--dataset", "jsonl"])
        .args(["--dataset-path", s(data), "--json"])
        .args(extra);
    let o = c.output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    (
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {t}")),
        t,
    )
}

#[test]
fn metrics_agree_with_the_servers_own_timings() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start_with(Config {
        ttft_ms: 40,
        token_delay_ms: 3,
        split_frames: true,
        pings: true,
        ..Config::default()
    });
    let data = prompts(tmp.path(), 6);
    let (r, _) = bench(
        &srv,
        &data,
        &[
            "--concurrency",
            "1",
            "--num-prompts",
            "6",
            "--output-len",
            "12",
        ],
    );
    assert_eq!(r["completed"], 6, "{r}");
    assert_eq!(r["failed"], 0);
    // Token counts are the server's usage.
    assert_eq!(r["total_output_tokens"], 72);
    assert_eq!(r["llmtool"]["output_len_from"][0][0], "usage");
    let log: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|l| l.path.contains("chat/completions"))
        .collect();
    assert_eq!(log.len(), 6);
    for (i, l) in log.iter().enumerate() {
        let server_ttft = (l.first_token.unwrap() - l.arrival).as_secs_f64();
        let ours = r["ttfts"][i].as_f64().unwrap();
        // Never before the server wrote the first token (the role-only chunk
        // does not count), and close to it on localhost.
        assert!(ours >= server_ttft, "request {i}: {ours} < {server_ttft}");
        assert!(
            ours - server_ttft < 0.03,
            "request {i}: {ours} vs {server_ttft}"
        );
        assert_eq!(r["itls"][i].as_array().unwrap().len(), 11);
        assert_eq!(
            l.body.as_ref().unwrap()["stream_options"]["include_usage"],
            true
        );
    }
    let tpot = r["mean_tpot_ms"].as_f64().unwrap();
    // Split frames arrive in bursts, so only roughly the 3 ms the server waits.
    assert!((1.0..15.0).contains(&tpot), "{tpot}");
}

#[test]
fn reasoning_counts_for_ttft_and_completions_work_too() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start_with(Config {
        ttft_ms: 30,
        reasoning_tokens: 3,
        ..Config::default()
    });
    let data = prompts(tmp.path(), 2);
    let (r, _) = bench(&srv, &data, &["--num-prompts", "2", "--output-len", "5"]);
    assert_eq!(r["completed"], 2, "{r}");
    let ttft = r["ttfts"][0].as_f64().unwrap();
    assert!((0.03..0.2).contains(&ttft), "{ttft}");
    let (r, _) = bench(
        &srv,
        &data,
        &[
            "--api",
            "completions",
            "--num-prompts",
            "2",
            "--output-len",
            "5",
        ],
    );
    assert_eq!(r["completed"], 2, "{r}");
    assert!(r["endpoint"].as_str().unwrap().ends_with("/v1/completions"));
    assert!(srv
        .requests()
        .iter()
        .any(|l| l.path.ends_with("/v1/completions")
            && l.body.as_ref().is_some_and(|b| b["prompt"].is_string())));
}

#[test]
fn every_fault_is_counted_with_its_reason_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start();
    for kind in [
        FaultKind::Status(500),
        FaultKind::RateLimited(1),
        FaultKind::CloseMidStream(2),
        FaultKind::MalformedSse,
        FaultKind::NoDone,
        FaultKind::Stall(3),
        FaultKind::EmptyContent,
    ] {
        srv.fail(Fault::new("/v1/chat/completions", kind));
    }
    let data = prompts(tmp.path(), 10);
    let t0 = Instant::now();
    let (r, _) = bench(
        &srv,
        &data,
        &[
            "--concurrency",
            "1",
            "--num-prompts",
            "10",
            "--output-len",
            "6",
            "--timeout",
            "1",
        ],
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(r["completed"], 3, "{r}");
    assert_eq!(r["failed"], 7);
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    for want in [
        "HTTP 500",
        "HTTP 429",
        "without data: [DONE]",
        "malformed SSE",
        "stalled",
        "empty response",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want}: {errors:?}"
        );
    }
    // The table for people says so too.
    let o = llmtool()
        .args(["bench", "serve", "--url", &srv.url(), "--dataset", "jsonl"])
        .args([
            "--dataset-path",
            s(&data),
            "--num-prompts",
            "2",
            "--output-len",
            "3",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sweeps_save_results_and_plots_and_the_gate_fails_on_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start_with(Config {
        ttft_ms: 20,
        token_delay_ms: 1,
        ..Config::default()
    });
    let data = prompts(tmp.path(), 8);
    let out = tmp.path().join("runs");
    let (r, _) = bench(
        &srv,
        &data,
        &[
            "--concurrency",
            "1,4",
            "--num-prompts",
            "8",
            "--output-len",
            "4",
            "--slo",
            "ttft:2000ms",
            "--save",
            s(&out),
        ],
    );
    assert_eq!(r["levels"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["max_concurrency_within_slo"], 4);
    for level in ["concurrency-1", "concurrency-4"] {
        let d = out.join(level);
        let res: Value =
            serde_json::from_slice(&std::fs::read(d.join("result.json")).unwrap()).unwrap();
        assert_eq!(res["completed"], 8);
        for svg in ["latency-cdf.svg", "throughput.svg", "itl-histogram.svg"] {
            let t = std::fs::read_to_string(d.join(svg)).unwrap();
            assert!(
                t.starts_with("<svg") && t.trim_end().ends_with("</svg>"),
                "{svg}"
            );
        }
    }
    // The gate: the same run passes; a worse one fails with exit 4.
    let a = out.join("concurrency-1/result.json");
    let o = llmtool()
        .args(["bench", "compare", s(&a), "--baseline", s(&a)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut worse: Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
    worse["p95_ttft_ms"] = Value::from(worse["p95_ttft_ms"].as_f64().unwrap() * 2.0 + 1.0);
    let b = tmp.path().join("worse.json");
    std::fs::write(&b, serde_json::to_vec(&worse).unwrap()).unwrap();
    let o = llmtool()
        .args([
            "bench",
            "compare",
            s(&b),
            "--baseline",
            s(&a),
            "--max-regression",
            "10%",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("REGRESSION worse: p95_ttft_ms"),
        "{}",
        text(&o)
    );
    // Not a result file: a clear error.
    let o = llmtool()
        .args(["bench", "compare", s(&data)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not a bench result"), "{}", text(&o));
}

#[test]
fn ctrl_c_prints_the_partial_summary_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start_with(Config {
        token_delay_ms: 20,
        ..Config::default()
    });
    let data = prompts(tmp.path(), 4);
    let child = Command::new(env!("CARGO_BIN_EXE_llmtool"))
        .args(["bench", "serve", "--url", &srv.url(), "--dataset", "jsonl"])
        .args(["--dataset-path", s(&data), "--concurrency", "1"])
        .args(["--num-prompts", "200", "--output-len", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    assert!(t.contains("successful / failed"), "{t}");
}

#[test]
fn random_prompts_have_the_asked_length_in_the_models_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(gguf) = crate::common::smollm2() else {
        return;
    };
    let srv = OpenAiServer::start();
    let mut c = llmtool();
    c.args(["bench", "serve", "--url", &srv.url(), "--num-prompts", "3"])
        .args([
            "--input-len",
            "40",
            "--output-len",
            "2",
            "--json",
            "--tokenizer",
            s(&gguf),
        ]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m = llmtool::store::Model::open(s(&gguf)).unwrap();
    let tok = llmtool::model::tokenizer::from_gguf(m.gguf.as_ref().unwrap()).unwrap();
    let sent: Vec<_> = srv.requests().into_iter().filter_map(|l| l.body).collect();
    assert_eq!(sent.len(), 3);
    for b in sent {
        let prompt = b["messages"][0]["content"].as_str().unwrap().to_string();
        let n = tok.encode(prompt.as_str(), false).unwrap().len();
        assert_eq!(n, 40, "{prompt:?}");
    }
    let _ = tmp;
}

#[test]
fn sharegpt_prompts_under_a_ramp() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = OpenAiServer::start();
    let data = tmp.path().join("sharegpt.json");
    std::fs::write(
        &data,
        r#"[{"conversations": [{"from": "human", "value": "What is substance?"}, {"from": "gpt", "value": "That which is in itself."}]},
            {"conversations": [{"from": "human", "value": "And duration?"}, {"from": "gpt", "value": "Lived time."}]}]"#,
    )
    .unwrap();
    let mut c = llmtool();
    c.args([
        "bench",
        "serve",
        "--url",
        &srv.url(),
        "--dataset",
        "sharegpt",
    ])
    .args([
        "--dataset-path",
        s(&data),
        "--num-prompts",
        "6",
        "--output-len",
        "3",
    ])
    .args([
        "--ramp-up",
        "linear",
        "--ramp-up-start-rps",
        "5",
        "--ramp-up-end-rps",
        "20",
    ])
    .arg("--json");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["completed"], 6, "{r}");
    assert_eq!(r["request_rate"], "ramp linear 5→20");
    let starts: Vec<f64> = r["start_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    // Six arrivals at 5 → 20 req/s take a noticeable while, not all at once.
    assert!(starts[5] > 0.1, "{starts:?}");
    let asked: Vec<String> = srv
        .requests()
        .iter()
        .filter_map(|l| {
            l.body.as_ref()?["messages"][0]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        asked
            .iter()
            .all(|q| q == "What is substance?" || q == "And duration?"),
        "{asked:?}"
    );
}
