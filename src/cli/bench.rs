//! `llmtool bench serve|compare|local`: arguments → [`crate::ops::bench`]
//! → a summary table (or JSON), result files and plots; the regression
//! gate's exit status; `local`'s rows printed as llama-bench prints them
//! (`-o md|json|jsonl`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use super::args::EngineArgs;
use super::output::{self, align_right, table, Render};
use crate::hub::download::Need;
use crate::ops::bench::compare::{self, Comparison, Run};
use crate::ops::bench::dataset::{self, Dataset};
use crate::ops::bench::local::{self, LocalOptions, LocalReport, LocalRow};
use crate::ops::bench::plot;
use crate::ops::bench::serve::{self, Api, Load, ServeOptions, ServeReport, Slo, SloMetric};
use crate::store::Model;

/// Benchmark a server as vllm bench serve does, or the engine as llama-bench does.
#[derive(clap::Subcommand)]
pub enum Command {
    Serve(Box<ServeArgs>),
    Compare(CompareArgs),
    Local(LocalArgs),
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum ApiArg {
    Chat,
    Completions,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum RampArg {
    Linear,
    Exponential,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum DatasetArg {
    Random,
    Jsonl,
    Sharegpt,
}

/// Load an OpenAI-compatible server (vLLM, llama-server, TGI…) with streamed
/// requests and report TTFT, TPOT, ITL and E2E latency (mean, median, std,
/// percentiles), throughput, goodput and failures, with vLLM's definitions
/// except that TTFT waits for the first chunk with content (not the
/// role-only chat chunk).
///
/// Closed loop with --concurrency N (N users, each sending the next request
/// when the last one finishes); open loop with --request-rate R (Poisson, or
/// gamma with --burstiness), optionally capped by --concurrency. A list
/// (--concurrency 1,2,4,8,16) sweeps the levels and, with --slo ttft:MS,
/// names the largest that keeps p95 TTFT within it.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    # 10 students at once, streaming, 100 chats of 512 tokens in / 256 out:\n  \
    llmtool bench serve --url http://gpu-box:8000 --concurrency 10 --num-prompts 100 \\\n      \
    --input-len 512 --output-len 256 --tokenizer Qwen/Qwen2.5-14B-Instruct --slo ttft:500ms,tpot:50ms\n  \
    # How many students fit under 1 s p95 TTFT:\n  \
    llmtool bench serve --url http://localhost:8080 --concurrency 1,2,4,8,16 --slo ttft:1000ms --tokenizer ./model\n  \
    # Open loop at 2 req/s from your own chats, saved with plots:\n  \
    llmtool bench serve --url http://localhost:8000 --request-rate 2 --dataset jsonl --dataset-path chats.jsonl \\\n      \
    --output-len 200 --save runs/awq")]
pub struct ServeArgs {
    /// Server base URL (http://host:port, with or without /v1).
    #[arg(long)]
    url: String,
    /// Model name to request (default: the first of GET /v1/models).
    #[arg(long)]
    model: Option<String>,
    /// Endpoint: chat (/v1/chat/completions, the server's chat template) or completions.
    #[arg(long, value_enum, default_value = "chat")]
    api: ApiArg,
    /// Bearer token for the server.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests in flight at most; a comma list sweeps (1,2,4,8,16).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Requests per second (open loop), "inf" for all at once; a comma list sweeps.
    #[arg(long, value_delimiter = ',')]
    request_rate: Vec<String>,
    /// Arrival burstiness: 1 is Poisson, lower is burstier (gamma), as vLLM.
    #[arg(long, default_value_t = 1.0)]
    burstiness: f64,
    /// Requests per run.
    #[arg(long, default_value_t = 100)]
    num_prompts: usize,
    /// Stop starting requests after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Ramp the request rate over the run instead of --request-rate (vLLM's --ramp-up-strategy).
    #[arg(long, value_enum, requires_all = ["ramp_up_start_rps", "ramp_up_end_rps"])]
    ramp_up: Option<RampArg>,
    /// Requests per second at the start of the ramp.
    #[arg(long)]
    ramp_up_start_rps: Option<f64>,
    /// Requests per second at the end of the ramp.
    #[arg(long)]
    ramp_up_end_rps: Option<f64>,
    /// Unmeasured requests sent first, one at a time.
    #[arg(long, default_value_t = 0)]
    warmups: usize,
    /// Where prompts come from.
    #[arg(long, value_enum, default_value = "random")]
    dataset: DatasetArg,
    /// The JSONL ({"prompt"} or {"messages"} per line) or ShareGPT file.
    #[arg(long)]
    dataset_path: Option<PathBuf>,
    /// Random dataset: prompt length in the model's tokens.
    #[arg(long, default_value_t = 1024)]
    input_len: usize,
    /// Tokens to generate (max_tokens); the file's own lengths when absent for jsonl/sharegpt.
    #[arg(long)]
    output_len: Option<usize>,
    /// Tokenizer for exact prompt lengths and output counts without usage: a model directory, tokenizer.json, GGUF or Hub repo id.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Ask the server to ignore EOS (vLLM, llama-server) so outputs have their full length.
    #[arg(long)]
    ignore_eos: bool,
    /// Seconds without data before a response counts as stalled.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Percentiles to report.
    #[arg(long, value_delimiter = ',', default_value = "50,90,95,99")]
    percentiles: Vec<f64>,
    /// Goodput objectives, e.g. ttft:500ms,tpot:50ms,e2el:10s.
    #[arg(long, value_delimiter = ',')]
    slo: Vec<String>,
    /// Seed of prompt sampling and arrivals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the result JSON and SVG plots into this directory.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print the result as JSON (vllm bench serve's keys, plus "llmtool").
    #[arg(long)]
    json: bool,
}

/// Compare bench results side by side; with --baseline, fail (exit 4) when
/// p95 TTFT, p95 TPOT or output throughput regress beyond --max-regression,
/// or when requests fail that did not before.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool bench compare runs/awq/result.json runs/gptq/result.json\n  \
    llmtool bench compare tonight.json --baseline main.json --max-regression 10%")]
pub struct CompareArgs {
    /// Result files (`bench serve --json` output, --save's result.json, or vllm bench serve's).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The reference run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Largest tolerated worsening of a gated metric, in percent.
    #[arg(long, default_value = "10%")]
    max_regression: String,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

/// A gated metric regressed: exit status [`super::EXIT_REGRESSION`].
#[derive(Debug, thiserror::Error)]
#[error("regression beyond the bound (see the report above)")]
pub struct Regressed;

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Serve(a) => serve(*a),
        Command::Compare(a) => compare(a),
        Command::Local(a) => run_local(a),
    }
}

fn parse_slo(s: &str) -> Result<Slo> {
    let (m, v) = s
        .split_once(':')
        .with_context(|| format!("--slo {s}: expected METRIC:VALUE, e.g. ttft:500ms"))?;
    let metric = match m.trim() {
        "ttft" => SloMetric::Ttft,
        "tpot" => SloMetric::Tpot,
        "e2el" | "e2e" => SloMetric::E2el,
        other => bail!("--slo {s}: unknown metric '{other}' (ttft, tpot, e2el)"),
    };
    let v = v.trim();
    let (num, scale) = if let Some(x) = v.strip_suffix("ms") {
        (x, 1.0)
    } else if let Some(x) = v.strip_suffix('s') {
        (x, 1000.0)
    } else {
        (v, 1.0)
    };
    let ms: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x > 0.0)
        .with_context(|| format!("--slo {s}: '{v}' is not a positive duration (500ms, 2s)"))?;
    Ok(Slo {
        metric,
        ms: ms * scale,
    })
}

/// A tokenizer from a model directory, tokenizer.json, GGUF or Hub repo id.
fn load_tokenizer(spec: &str) -> Result<Tokenizer> {
    let local = super::remote::local(spec, Need::Tokenizer)?;
    let p = Path::new(&local);
    if p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let m = Model::open(&local)?;
        let meta = m.gguf.as_ref().context("GGUF without metadata")?;
        return crate::model::tokenizer::from_gguf(meta)
            .map_err(|e| anyhow::anyhow!("{local}: {e}"));
    }
    let file = if p.is_dir() {
        p.join("tokenizer.json")
    } else {
        p.to_path_buf()
    };
    Tokenizer::from_file(&file)
        .map_err(|e| anyhow::anyhow!("--tokenizer {spec}: cannot read {}: {e}", file.display()))
}

/// One load level of a sweep.
struct Level {
    concurrency: Option<usize>,
    rate: Option<f64>,
}

fn levels(a: &ServeArgs) -> Result<Vec<Level>> {
    let rates: Vec<Option<f64>> = if a.request_rate.is_empty() {
        vec![None]
    } else {
        a.request_rate
            .iter()
            .map(|r| match r.trim() {
                "inf" => Ok(None),
                x => x
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .map(Some)
                    .with_context(|| format!("--request-rate {x}: a positive number or inf")),
            })
            .collect::<Result<_>>()?
    };
    if a.concurrency.contains(&0) {
        bail!("--concurrency must be at least 1");
    }
    if a.concurrency.len() > 1 && rates.len() > 1 {
        bail!("sweep either --concurrency or --request-rate, not both");
    }
    let conc: Vec<Option<usize>> = if a.concurrency.is_empty() {
        vec![None]
    } else {
        a.concurrency.iter().map(|&c| Some(c)).collect()
    };
    Ok(conc
        .iter()
        .flat_map(|&c| {
            rates.iter().map(move |&r| Level {
                concurrency: c,
                rate: r,
            })
        })
        .collect())
}

fn serve(a: ServeArgs) -> Result<()> {
    let timeout = Duration::from_secs_f64(a.timeout.max(0.001));
    if !(a.burstiness.is_finite() && a.burstiness > 0.0) {
        bail!("--burstiness must be a positive number");
    }
    if a.num_prompts == 0 {
        bail!("--num-prompts must be at least 1");
    }
    let slos = a
        .slo
        .iter()
        .map(|s| parse_slo(s))
        .collect::<Result<Vec<_>>>()?;
    let mut percentiles = a.percentiles.clone();
    if percentiles.iter().any(|p| !(0.0..=100.0).contains(p)) {
        bail!("--percentiles: each between 0 and 100");
    }
    if !percentiles.contains(&95.0) {
        percentiles.push(95.0);
    }
    let levels = levels(&a)?;
    let ramp = match (a.ramp_up, a.ramp_up_start_rps, a.ramp_up_end_rps) {
        (None, _, _) => None,
        (Some(kind), Some(start), Some(end)) => {
            if !(start > 0.0 && end > 0.0 && start.is_finite() && end.is_finite()) {
                bail!("--ramp-up-start-rps and --ramp-up-end-rps must be positive");
            }
            if !a.request_rate.is_empty() || levels.len() > 1 {
                bail!("--ramp-up replaces --request-rate and does not sweep");
            }
            Some(serve::Ramp {
                exponential: matches!(kind, RampArg::Exponential),
                start,
                end,
            })
        }
        _ => bail!("--ramp-up needs --ramp-up-start-rps and --ramp-up-end-rps"),
    };
    let tok = a.tokenizer.as_deref().map(load_tokenizer).transpose()?;
    let ds = match (a.dataset, &a.dataset_path) {
        (DatasetArg::Random, _) => Dataset::Random {
            input_len: a.input_len,
            output_len: a.output_len.unwrap_or(128),
        },
        (DatasetArg::Jsonl, Some(p)) => Dataset::Jsonl(p.clone()),
        (DatasetArg::Sharegpt, Some(p)) => Dataset::ShareGpt(p.clone()),
        (_, None) => bail!("--dataset jsonl|sharegpt needs --dataset-path FILE"),
    };
    let prompts = dataset::prompts(
        &ds,
        a.num_prompts + a.warmups,
        a.seed,
        tok.as_ref(),
        a.output_len,
    )?;
    let model = match &a.model {
        Some(m) => m.clone(),
        None => serve::served_model(&a.url, a.api_key.as_deref(), timeout)?,
    };
    let mut reports = Vec::new();
    let show = !a.json && std::io::stderr().is_terminal();
    for level in &levels {
        let o = ServeOptions {
            url: a.url.clone(),
            model: model.clone(),
            api: match a.api {
                ApiArg::Chat => Api::Chat,
                ApiArg::Completions => Api::Completions,
            },
            api_key: a.api_key.clone(),
            load: Load {
                concurrency: level.concurrency,
                request_rate: level.rate,
                burstiness: a.burstiness,
                num_prompts: a.num_prompts,
                duration: a.duration,
                warmups: a.warmups,
                seed: a.seed,
                ramp,
            },
            ignore_eos: a.ignore_eos,
            timeout,
            percentiles: percentiles.clone(),
            slos: slos.clone(),
            progress: show,
        };
        let (outcomes, wall, interrupted) = serve::run(&o, &prompts, tok.as_ref())?;
        let r = serve::report(&o, &outcomes, wall, interrupted);
        if let Some(dir) = &a.save {
            save(dir, &r, levels.len() > 1)?;
        }
        reports.push(r);
        if interrupted {
            break;
        }
    }
    let interrupted = reports.last().is_some_and(|r| r.llmtool.interrupted);
    let slo_ttft = slos
        .iter()
        .find(|s| s.metric == SloMetric::Ttft)
        .map(|s| s.ms);
    if reports.len() == 1 {
        output::emit(&reports[0], a.json)?;
    } else {
        output::emit(&Sweep { reports, slo_ttft }, a.json)?;
    }
    if interrupted {
        return Err(crate::cancel::Interrupted)
            .context("interrupted: the summary covers the requests made so far");
    }
    Ok(())
}

fn save(dir: &Path, r: &ServeReport, sweep: bool) -> Result<()> {
    let sub = if sweep {
        dir.join(match (r.max_concurrency, r.request_rate.as_str()) {
            (Some(c), "inf") => format!("concurrency-{c}"),
            (_, rate) => format!("rate-{rate}"),
        })
    } else {
        dir.to_path_buf()
    };
    std::fs::create_dir_all(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
    let json = serde_json::to_vec_pretty(r)?;
    crate::store::atomic::replace_file(&sub.join("result.json"), &json)?;
    for (name, svg) in plot::plots(r) {
        crate::store::atomic::replace_file(&sub.join(name), svg.as_bytes())?;
    }
    Ok(())
}

fn ms(v: Option<&serde_json::Value>) -> String {
    v.and_then(|x| x.as_f64())
        .map_or("-".into(), |x| format!("{x:.2}"))
}

impl Render for ServeReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut t = table();
        t.set_header(["serving benchmark", "value"]);
        let mut row = |k: &str, v: String| {
            t.add_row([k.to_string(), v]);
        };
        row("model", self.model_id.clone());
        row("endpoint", self.endpoint.clone());
        row(
            "load",
            format!(
                "{} requests, rate {}, concurrency {}",
                self.num_prompts,
                self.request_rate,
                self.max_concurrency
                    .map_or("unbounded".into(), |c| c.to_string())
            ),
        );
        row(
            "successful / failed",
            format!("{} / {}", self.completed, self.failed),
        );
        row("duration (s)", format!("{:.2}", self.duration));
        row(
            "input / output tokens",
            format!("{} / {}", self.total_input_tokens, self.total_output_tokens),
        );
        row(
            "request throughput (req/s)",
            format!("{:.2}", self.request_throughput),
        );
        if let Some(g) = self.request_goodput {
            row("goodput (req/s)", format!("{g:.2}"));
        }
        row(
            "output throughput (tok/s)",
            format!("{:.2}", self.output_throughput),
        );
        row(
            "total throughput (tok/s)",
            format!("{:.2}", self.total_token_throughput),
        );
        row(
            "peak output (tok/s)",
            format!("{:.2}", self.max_output_tokens_per_s),
        );
        row(
            "peak concurrent requests",
            self.max_concurrent_requests.to_string(),
        );
        align_right(&mut t, &[1]);
        let mut m = table();
        let ps: Vec<f64> = self
            .llmtool
            .summaries
            .first()
            .map(|(_, s)| s.percentiles.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        let mut header = vec![
            "ms".to_string(),
            "mean".into(),
            "median".into(),
            "std".into(),
        ];
        header.extend(ps.iter().map(|p| format!("p{p}")));
        m.set_header(header);
        for (name, s) in &self.llmtool.summaries {
            let mut r = vec![
                name.to_uppercase(),
                format!("{:.2}", s.mean),
                format!("{:.2}", s.median),
                format!("{:.2}", s.std),
            ];
            r.extend(s.percentiles.iter().map(|(_, v)| format!("{v:.2}")));
            m.add_row(r);
        }
        align_right(&mut m, &(1..4 + ps.len()).collect::<Vec<_>>());
        let mut out = format!("{t}\n{m}\n");
        let counted = self
            .llmtool
            .output_len_from
            .iter()
            .map(|(k, n)| format!("{n} from {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !counted.is_empty() {
            out += &format!("output tokens counted: {counted}\n");
        }
        if !self.llmtool.failures.is_empty() {
            out += "failures:\n";
            for (why, n) in &self.llmtool.failures {
                out += &format!("  {n} × {why}\n");
            }
        }
        if self.llmtool.interrupted {
            out += "interrupted: these figures cover the requests made before Ctrl-C\n";
        }
        out
    }
}

/// Several load levels.
struct Sweep {
    reports: Vec<ServeReport>,
    slo_ttft: Option<f64>,
}

impl Render for Sweep {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        Ok(serde_json::json!({
            "levels": serde_json::to_value(&self.reports)?,
            "slo_ttft_ms": self.slo_ttft,
            "max_concurrency_within_slo": self.within(),
        }))
    }
    fn text(&self) -> String {
        let mut t = table();
        t.set_header([
            "concurrency",
            "rate",
            "ok/failed",
            "req/s",
            "out tok/s",
            "p50 TTFT",
            "p95 TTFT",
            "p95 TPOT",
            "p95 E2E",
        ]);
        for r in &self.reports {
            t.add_row([
                r.max_concurrency.map_or("-".into(), |c| c.to_string()),
                r.request_rate.clone(),
                format!("{}/{}", r.completed, r.failed),
                format!("{:.2}", r.request_throughput),
                format!("{:.1}", r.output_throughput),
                ms(r.metrics.get("p50_ttft_ms")),
                ms(r.metrics.get("p95_ttft_ms")),
                ms(r.metrics.get("p95_tpot_ms")),
                ms(r.metrics.get("p95_e2el_ms")),
            ]);
        }
        align_right(&mut t, &[0, 2, 3, 4, 5, 6, 7, 8]);
        let mut out = format!("{t}\n");
        if let Some(slo) = self.slo_ttft {
            out += &match self.within() {
                Some(c) => format!("largest level with p95 TTFT ≤ {slo} ms: {c}\n"),
                None => format!("no level keeps p95 TTFT ≤ {slo} ms\n"),
            };
        }
        out
    }
}

impl Sweep {
    /// The largest concurrency whose p95 TTFT meets the SLO (and had no failures).
    fn within(&self) -> Option<usize> {
        let slo = self.slo_ttft?;
        self.reports
            .iter()
            .filter(|r| r.failed == 0)
            .filter(|r| {
                r.metrics
                    .get("p95_ttft_ms")
                    .and_then(|v| v.as_f64())
                    .is_some_and(|v| v <= slo)
            })
            .filter_map(|r| r.max_concurrency)
            .max()
    }
}

fn compare(a: CompareArgs) -> Result<()> {
    let bound: f64 = a
        .max_regression
        .trim()
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .with_context(|| {
            format!(
                "--max-regression {}: a percentage such as 10%",
                a.max_regression
            )
        })?;
    let runs = a
        .files
        .iter()
        .map(|f| Run::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let base = a.baseline.as_deref().map(Run::load).transpose()?;
    let c = compare::compare(&runs, base.as_ref(), bound);
    output::emit(&c, a.json)?;
    if !c.regressions.is_empty() {
        return Err(Regressed.into());
    }
    Ok(())
}

impl Render for Comparison {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut t = table();
        let mut header = vec!["metric".to_string()];
        header.extend(self.runs.iter().enumerate().map(|(i, r)| {
            if i == 0 && self.baseline.is_some() {
                format!("{r} (baseline)")
            } else {
                r.clone()
            }
        }));
        t.set_header(header);
        for row in &self.rows {
            if row.values.iter().all(Option::is_none) {
                continue;
            }
            let mut r = vec![row.metric.to_string()];
            r.extend(
                row.values
                    .iter()
                    .map(|v| v.map_or("-".into(), |x| format!("{x:.2}"))),
            );
            t.add_row(r);
        }
        align_right(&mut t, &(1..=self.runs.len()).collect::<Vec<_>>());
        let mut out = format!("{t}\n");
        for m in &self.missing {
            out += &format!("not gated (missing): {m}\n");
        }
        if self.baseline.is_some() {
            if self.regressions.is_empty() {
                out += &format!("no regression beyond {}%\n", self.max_regression_pct);
            }
            for r in &self.regressions {
                out += &format!(
                    "REGRESSION {}: {} {:.2} → {:.2} ({:+.1} % worse; bound {}%)\n",
                    r.run, r.key, r.baseline, r.value, r.worse_by_pct, self.max_regression_pct
                );
            }
        }
        out
    }
}

/// How the results are printed (llama-bench's -o).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// llama-bench's markdown table.
    Md,
    /// One JSON array of rows.
    Json,
    /// One JSON row per line.
    Jsonl,
}

/// Benchmark the built-in CPU engine the way llama-bench measures llama.cpp.
///
/// pp tests prefill -p random tokens, tg tests decode -n tokens one at a
/// time, --pg runs both in one sample; -d first fills that many tokens of
/// context (untimed). Each test runs once untimed (warmup), then -r times;
/// t/s is the mean ± sample std of the per-repetition speeds. JSON field
/// names are llama-bench's, so rows from both tools can be compared.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool bench local model.Q4_K_M.gguf\n  \
    llmtool bench local ./smollm2-hf -p 512 -n 128 -r 3 --threads 2\n  \
    llmtool bench local model.gguf -p 0 -n 128 -d 0,1024,4096 -o jsonl\n  \
    llmtool bench local model.gguf --pg 512,128 --json > run.json")]
pub struct LocalArgs {
    /// Model directory, file, Hub repo id (org/name[@rev][:QUANT], downloaded into the HF cache) or catalog name.
    model: String,
    /// Prompt lengths of the pp tests, comma-separated (0: none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generation lengths of the tg tests, comma-separated (0: none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// A combined prompt+generation test PP,TG; repeatable.
    #[arg(long = "pg", value_name = "PP,TG", value_parser = parse_pair)]
    pg: Vec<(usize, usize)>,
    /// Tokens of context filled (untimed) before each test, comma-separated.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    depth: Vec<usize>,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    repetitions: u32,
    /// Skip the untimed warmup run of each test.
    #[arg(long)]
    no_warmup: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "md")]
    output: Format,
    /// Same as -o json.
    #[arg(long, conflicts_with = "output")]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not PP,TG (two token counts, e.g. 512,128)");
    let (p, g) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        p.trim().parse().map_err(|_| bad())?,
        g.trim().parse().map_err(|_| bad())?,
    ))
}

fn run_local(a: LocalArgs) -> Result<()> {
    let engine = a.engine.options()?;
    let format = if a.json { Format::Json } else { a.output };
    let m = super::remote::open(&a.model)?;
    let opts = LocalOptions {
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        pg: a.pg,
        depth: a.depth,
        repetitions: a.repetitions as usize,
        warmup: !a.no_warmup,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        engine,
    };
    let report = local::bench_local(&m, &a.model, &opts)?;
    output::warn(&report.warnings);
    match format {
        Format::Md => output::emit(&report, false),
        Format::Json => output::emit(&report, true),
        Format::Jsonl => {
            let mut s = String::new();
            for r in &report.rows {
                s.push_str(&serde_json::to_string(r)?);
                s.push('\n');
            }
            output::print(&s)
        }
    }
}

impl Render for LocalReport {
    /// An array of rows, as `llama-bench -o json`.
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.rows)
    }
    /// llama-bench's markdown table.
    fn text(&self) -> String {
        // (header, width): negative widths left-align, as llama-bench's.
        const COLS: [(&str, i32); 7] = [
            ("model", -30),
            ("size", 10),
            ("params", 10),
            ("backend", -10),
            ("threads", 7),
            ("test", 15),
            ("t/s", 20),
        ];
        let mut out = String::from("|");
        for (h, w) in COLS {
            out.push_str(&pad(h, w));
        }
        out.push_str("\n|");
        for (_, w) in COLS {
            let dashes = "-".repeat(w.unsigned_abs() as usize - 1);
            out.push_str(&format!(" {dashes}{} |", if w > 0 { ':' } else { '-' }));
        }
        out.push('\n');
        for r in &self.rows {
            out.push('|');
            for (v, (_, w)) in md_values(r).iter().zip(COLS) {
                out.push_str(&pad(v, w));
            }
            out.push('\n');
        }
        out
    }
}

/// ` value |` padded to `w` characters, left-aligned when `w` < 0.
fn pad(v: &str, w: i32) -> String {
    let n = w.unsigned_abs() as usize;
    if w < 0 {
        format!(" {v:<n$} |")
    } else {
        format!(" {v:>n$} |")
    }
}

/// A row's cells as llama-bench formats them.
fn md_values(r: &LocalRow) -> [String; 7] {
    let size = if r.model_size < 1 << 30 {
        format!("{:.2} MiB", r.model_size as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", r.model_size as f64 / 1024.0 / 1024.0 / 1024.0)
    };
    let params = if r.model_n_params < 1_000_000_000 {
        format!("{:.2} M", r.model_n_params as f64 / 1e6)
    } else {
        format!("{:.2} B", r.model_n_params as f64 / 1e9)
    };
    [
        r.model_type.clone(),
        size,
        params,
        r.backends.to_string(),
        r.n_threads.to_string(),
        r.test.clone(),
        format!("{:.2} ± {:.2}", r.avg_ts, r.stddev_ts),
    ]
}
