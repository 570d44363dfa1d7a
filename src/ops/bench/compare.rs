//! `bench compare`: result files side by side (AWQ against GPTQ, with and
//! without a draft model), and the regression gate nightly CI runs:
//! against a baseline, p95 TTFT and p95 TPOT must not grow, output
//! throughput must not shrink, by more than the bound, and no requests may
//! fail where the baseline had none. Reads `vllm bench serve` result files
//! too (same keys).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::ops::{Error, Result};

/// One result file.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub json: Value,
}

impl Run {
    pub fn load(path: &Path) -> Result<Run> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            Error::Refused(format!(
                "{}: not a bench result (JSON: {e}); make one with `llmtool bench serve --json > FILE` or --save",
                path.display()
            ))
        })?;
        if json.get("completed").is_none() {
            return Err(Error::Refused(format!(
                "{}: no \"completed\" key: not a `bench serve` (or `vllm bench serve`) result",
                path.display()
            )));
        }
        // `--save DIR` writes DIR/result.json: the directory names the run.
        let name = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned());
        let label = match path.file_stem().map(|s| s.to_string_lossy().into_owned()) {
            Some(s) if s == "result" => path.parent().and_then(name).unwrap_or(s),
            Some(s) => s,
            None => path.display().to_string(),
        };
        Ok(Run { label, json })
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.json.get(key).and_then(|v| v.as_f64())
    }
}

/// The compared metrics: label, result key, whether higher is better.
pub const ROWS: &[(&str, &str, bool)] = &[
    ("completed", "completed", true),
    ("failed", "failed", false),
    ("request throughput (req/s)", "request_throughput", true),
    ("goodput (req/s)", "request_goodput", true),
    ("output throughput (tok/s)", "output_throughput", true),
    ("total throughput (tok/s)", "total_token_throughput", true),
    ("peak output (tok/s)", "max_output_tokens_per_s", true),
    ("peak concurrency", "max_concurrent_requests", true),
    ("mean TTFT (ms)", "mean_ttft_ms", false),
    ("median TTFT (ms)", "median_ttft_ms", false),
    ("p95 TTFT (ms)", "p95_ttft_ms", false),
    ("p99 TTFT (ms)", "p99_ttft_ms", false),
    ("mean TPOT (ms)", "mean_tpot_ms", false),
    ("p95 TPOT (ms)", "p95_tpot_ms", false),
    ("p99 TPOT (ms)", "p99_tpot_ms", false),
    ("mean ITL (ms)", "mean_itl_ms", false),
    ("p95 ITL (ms)", "p95_itl_ms", false),
    ("mean E2E (ms)", "mean_e2el_ms", false),
    ("p95 E2E (ms)", "p95_e2el_ms", false),
];

/// What the CI gate checks: key, higher is better.
pub const GATED: &[(&str, bool)] = &[
    ("p95_ttft_ms", false),
    ("p95_tpot_ms", false),
    ("output_throughput", true),
];

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: &'static str,
    pub key: &'static str,
    pub values: Vec<Option<f64>>,
}

/// A gated metric worse than the baseline by more than the bound.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    pub run: String,
    pub key: String,
    pub baseline: f64,
    pub value: f64,
    /// Signed change, percent of the baseline (worse is positive).
    pub worse_by_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub runs: Vec<String>,
    pub rows: Vec<Row>,
    pub baseline: Option<String>,
    pub max_regression_pct: f64,
    pub regressions: Vec<Regression>,
    /// Gated keys a file lacks (e.g. no p95: rerun with --percentiles 95).
    pub missing: Vec<String>,
}

/// Compares `runs` (the baseline first when there is one).
pub fn compare(runs: &[Run], baseline: Option<&Run>, max_regression_pct: f64) -> Comparison {
    let all: Vec<&Run> = baseline.into_iter().chain(runs).collect();
    let rows = ROWS
        .iter()
        .map(|(metric, key, _)| Row {
            metric,
            key,
            values: all.iter().map(|r| r.get(key)).collect(),
        })
        .collect();
    let mut regressions = Vec::new();
    let mut missing = Vec::new();
    if let Some(b) = baseline {
        for r in runs {
            for (key, higher_better) in GATED {
                let (Some(bv), Some(v)) = (b.get(key), r.get(key)) else {
                    missing.push(format!("{}: {key}", r.label));
                    continue;
                };
                let worse = if *higher_better { bv - v } else { v - bv };
                let pct = if bv.abs() > 0.0 {
                    worse / bv.abs() * 100.0
                } else {
                    0.0
                };
                if pct > max_regression_pct {
                    regressions.push(Regression {
                        run: r.label.clone(),
                        key: key.to_string(),
                        baseline: bv,
                        value: v,
                        worse_by_pct: pct,
                    });
                }
            }
            let (bf, f) = (
                b.get("failed").unwrap_or(0.0),
                r.get("failed").unwrap_or(0.0),
            );
            if f > bf {
                regressions.push(Regression {
                    run: r.label.clone(),
                    key: "failed".into(),
                    baseline: bf,
                    value: f,
                    worse_by_pct: if bf > 0.0 {
                        (f - bf) / bf * 100.0
                    } else {
                        100.0
                    },
                });
            }
        }
    }
    Comparison {
        runs: all.iter().map(|r| r.label.clone()).collect(),
        rows,
        baseline: baseline.map(|b| b.label.clone()),
        max_regression_pct,
        regressions,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, ttft: f64, tput: f64, failed: u64) -> Run {
        Run {
            label: label.into(),
            json: json!({"completed": 10, "failed": failed, "p95_ttft_ms": ttft,
                         "p95_tpot_ms": 20.0, "output_throughput": tput}),
        }
    }

    #[test]
    fn the_gate_flags_only_what_is_worse_beyond_the_bound() {
        let base = run("base", 100.0, 50.0, 0);
        let ok = run("ok", 109.0, 46.0, 0);
        let slow = run("slow", 120.0, 50.0, 0);
        let thin = run("thin", 100.0, 40.0, 1);
        let c = compare(&[ok, slow, thin], Some(&base), 10.0);
        let got: Vec<(String, String)> = c
            .regressions
            .iter()
            .map(|r| (r.run.clone(), r.key.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("slow".into(), "p95_ttft_ms".into()),
                ("thin".into(), "output_throughput".into()),
                ("thin".into(), "failed".into())
            ]
        );
        assert_eq!(c.runs, ["base", "ok", "slow", "thin"]);
    }
}
