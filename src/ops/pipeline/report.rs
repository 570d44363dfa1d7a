//! The run's summary: one row per adapter × format (size, PPL, KLD
//! against the merged model, top-1 agreement, whether it fits each GPU at
//! the recipe's context and for how many users, the Hub URL, the time of
//! each step) and every step's outcome; written as `OUT/report.md` and
//! `OUT/report.json` (docs/PIPELINE.md lists the JSON fields), from the
//! outcomes of this run and the stamps of the steps that were up to date.

use std::collections::BTreeMap;

use serde::Serialize;

use super::exec::{Outcome, Status};
use super::graph::{Action, Graph};
use crate::ops::Result;
use crate::store::atomic;
use crate::units::human_bytes;

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub recipe: String,
    pub out: String,
    /// Every step ran or was up to date.
    pub ok: bool,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
    pub counts: Counts,
    pub rows: Vec<Row>,
    pub steps: Vec<StepReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub done: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
}

/// One adapter × format.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub adapter: String,
    pub format: String,
    /// Every step of the row succeeded (or was up to date).
    pub ok: bool,
    /// Bytes of the model files.
    pub size: Option<u64>,
    pub ppl: Option<f64>,
    /// Perplexity of the merged model before quantization (with `kld`).
    pub ppl_merged: Option<f64>,
    /// Mean KL divergence from the merged model.
    pub kld: Option<f64>,
    pub top1_agreement: Option<f64>,
    /// Per GPU: whether it fits at the recipe's context, and for how many users.
    pub gpus: Vec<GpuFit>,
    pub hub_url: Option<String>,
    /// Seconds per step kind (merge, quantize, eval, vram, card, push).
    pub seconds: BTreeMap<String, f64>,
    /// `kind: message` of the steps that failed.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuFit {
    pub gpu: String,
    pub ctx: u64,
    pub fits: bool,
    pub max_users: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub kind: &'static str,
    pub status: Status,
    pub seconds: f64,
    /// Estimated peak memory the scheduler counted, bytes.
    pub memory_estimate: u64,
    pub error: Option<String>,
}

/// Builds the report of `graph` after `outcomes`.
pub fn build(graph: &Graph, outcomes: &[Outcome]) -> Report {
    let mut counts = Counts::default();
    for o in outcomes {
        match o.status {
            Status::Done => counts.done += 1,
            Status::UpToDate => counts.up_to_date += 1,
            Status::Failed => counts.failed += 1,
            Status::Skipped => counts.skipped += 1,
            Status::Interrupted => counts.interrupted += 1,
        }
    }
    let r = &graph.recipe;
    let mut rows: Vec<Row> = Vec::new();
    for (step, o) in graph.steps.iter().zip(outcomes) {
        let (Some(ai), Some(fi)) = step.action.row() else {
            continue;
        };
        let (adapter, format) = (&r.adapters[ai].name, r.formats[fi].format.name);
        if matches!(step.action, Action::Quantize { .. }) {
            rows.push(Row {
                adapter: adapter.clone(),
                format: format.to_string(),
                ok: true,
                size: None,
                ppl: None,
                ppl_merged: None,
                kld: None,
                top1_agreement: None,
                gpus: vec![],
                hub_url: None,
                seconds: BTreeMap::new(),
                errors: vec![],
            });
        }
        let Some(row) = rows
            .iter_mut()
            .find(|x| &x.adapter == adapter && x.format == format)
        else {
            continue;
        };
        row.ok &= matches!(o.status, Status::Done | Status::UpToDate);
        if let Some(e) = &o.error {
            row.errors.push(format!("{}: {e}", step.action.kind()));
        }
        if o.status != Status::Skipped && o.status != Status::Interrupted {
            row.seconds.insert(step.action.kind().into(), o.seconds);
        }
        let v = &o.result;
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        match step.action {
            Action::Quantize { .. } => row.size = v.get("bytes").and_then(|b| b.as_u64()),
            Action::Eval { .. } => {
                row.ppl = f("ppl_other").or_else(|| f("ppl"));
                row.ppl_merged = f("ppl_base");
                row.kld = f("kld_mean");
                row.top1_agreement = f("top1_agreement");
            }
            Action::Vram { .. } => {
                row.gpus = v
                    .get("plans")
                    .and_then(|p| p.as_array())
                    .map(|plans| {
                        plans
                            .iter()
                            .map(|p| GpuFit {
                                gpu: p["gpu"].as_str().unwrap_or("").to_string(),
                                ctx: p["ctx"].as_u64().unwrap_or(0),
                                fits: p["fits"].as_bool().unwrap_or(false),
                                max_users: p["max_users"].as_u64().unwrap_or(0),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Action::Push { .. } => {
                row.hub_url = v.get("url").and_then(|u| u.as_str()).map(Into::into)
            }
            _ => {}
        }
    }
    // The merge's time belongs to each of its adapter's rows.
    for (step, o) in graph.steps.iter().zip(outcomes) {
        if let Action::Merge { adapter } = step.action {
            for row in rows
                .iter_mut()
                .filter(|x| x.adapter == r.adapters[adapter].name)
            {
                row.seconds.insert("merge".into(), o.seconds);
                if let Some(e) = &o.error {
                    row.ok = false;
                    row.errors.push(format!("merge: {e}"));
                }
            }
        }
    }
    let steps = graph
        .steps
        .iter()
        .zip(outcomes)
        .map(|(s, o)| StepReport {
            id: s.id.clone(),
            kind: s.action.kind(),
            status: o.status,
            seconds: o.seconds,
            memory_estimate: s.memory,
            error: o.error.clone(),
        })
        .collect();
    Report {
        recipe: r.file.display().to_string(),
        out: r.out.display().to_string(),
        ok: counts.failed + counts.skipped + counts.interrupted == 0,
        interrupted: counts.interrupted > 0,
        counts,
        rows,
        steps,
    }
}

impl Report {
    /// The Markdown table (also what the command prints).
    pub fn markdown(&self) -> String {
        let gpus: Vec<(String, u64)> = self
            .rows
            .iter()
            .flat_map(|r| r.gpus.iter().map(|g| (g.gpu.clone(), g.ctx)))
            .fold(Vec::new(), |mut v, g| {
                if !v.contains(&g) {
                    v.push(g);
                }
                v
            });
        let mut head = vec![
            "adapter".to_string(),
            "format".into(),
            "size".into(),
            "PPL".into(),
            "KLD vs merged".into(),
            "top-1".into(),
        ];
        head.extend(gpus.iter().map(|(g, c)| format!("{g} @ {c}")));
        head.extend(["Hub".into(), "time".into(), "status".into()]);
        let mut t = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        let num = |x: Option<f64>, p: usize| x.map_or("–".to_string(), |v| format!("{v:.p$}"));
        for r in &self.rows {
            let mut cells = vec![
                r.adapter.clone(),
                r.format.clone(),
                r.size.map_or("–".into(), human_bytes),
                num(r.ppl, 3),
                num(r.kld, 5),
                r.top1_agreement
                    .map_or("–".into(), |t| format!("{:.1} %", t * 100.0)),
            ];
            for (g, c) in &gpus {
                cells.push(match r.gpus.iter().find(|x| &x.gpu == g && x.ctx == *c) {
                    Some(x) if x.fits => format!("yes, {} users", x.max_users),
                    Some(_) => "no".into(),
                    None => "–".into(),
                });
            }
            cells.push(r.hub_url.clone().unwrap_or_else(|| "–".into()));
            cells.push(format!("{:.1} s", r.seconds.values().sum::<f64>()));
            cells.push(if r.ok {
                "ok".into()
            } else {
                r.errors.first().map_or("incomplete".into(), |e| {
                    format!("failed: {}", e.replace('|', "/").replace('\n', " "))
                })
            });
            t += &format!("| {} |\n", cells.join(" | "));
        }
        t += &format!(
            "\n{} steps: {} done, {} up to date, {} failed, {} skipped, {} interrupted.\n",
            self.steps.len(),
            self.counts.done,
            self.counts.up_to_date,
            self.counts.failed,
            self.counts.skipped,
            self.counts.interrupted
        );
        for s in self.steps.iter().filter(|s| s.status == Status::Failed) {
            t += &format!(
                "\n- `{}` failed: {}",
                s.id,
                s.error.as_deref().unwrap_or("")
            );
        }
        if self.counts.failed > 0 {
            t += "\n";
        }
        t
    }

    /// Writes `report.md` and `report.json` into the output directory.
    pub fn write(&self, out: &std::path::Path) -> Result<()> {
        atomic::ensure_dir(out)?;
        let md = format!("# llmtool run {}\n\n{}", self.recipe, self.markdown());
        atomic::replace_file(&out.join("report.md"), md.as_bytes())?;
        let json = serde_json::to_vec_pretty(self).expect("the report serializes");
        atomic::replace_file(&out.join("report.json"), &json)?;
        Ok(())
    }
}
