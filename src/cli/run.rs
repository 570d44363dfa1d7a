//! `llmtool run RECIPE`: arguments → [`pipeline::recipe::load`] →
//! [`pipeline::graph::expand`] → [`pipeline::run`] (or [`pipeline::plan`]
//! with `--dry-run`); the report printed as a table or JSON.

use std::io::IsTerminal;

use anyhow::Result;

use super::args::WriteArgs;
use super::output::{self, Render};
use crate::hub::download::Need;
use crate::ops::pipeline::{self, graph, PlanReport, Report, Resolve, Selection, View};
use crate::units::human_bytes;

/// Run a recipe: merge, quantize, evaluate, push every adapter; only what changed.
///
/// The recipe (TOML, docs/PIPELINE.md) names the base, the adapters, the
/// formats, the evaluation text, the GPUs, the Hub repo pattern and the
/// resource limits; it is checked whole before anything runs. Each step
/// records the hash of its inputs: a second run skips what is up to date,
/// and a run stopped by a crash or Ctrl-C resumes where it stopped.
/// Writes OUT/report.md and OUT/report.json. Exit status 0 when every step
/// succeeded, 1 when one failed (the others still ran), 130 on Ctrl-C.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool run examples/demo/recipe.toml --base \"$(scripts/smollm2.sh)\"\n  \
    llmtool run nightly.toml --dry-run\n  \
    llmtool run nightly.toml --only spinoza --format q4_k_m --no-push\n  \
    llmtool run nightly.toml --json > report.json")]
pub struct Args {
    /// The recipe file (TOML).
    recipe: std::path::PathBuf,
    /// Replace the recipe's base model: a path, Hub repo id or catalog name.
    #[arg(long)]
    base: Option<String>,
    /// Only this adapter (repeatable).
    #[arg(long = "only", value_name = "ADAPTER")]
    only: Vec<String>,
    /// Only this format (repeatable).
    #[arg(long = "format", value_name = "FORMAT")]
    formats: Vec<String>,
    /// Stop before the Hub: no push steps.
    #[arg(long)]
    no_push: bool,
    #[command(flatten)]
    write: WriteArgs,
}

/// Some steps failed; the report was printed and written.
#[derive(Debug, thiserror::Error)]
#[error("{failed} step(s) failed, {skipped} skipped after them; see {report}")]
pub struct StepsFailed {
    failed: usize,
    skipped: usize,
    report: String,
}

pub fn run(a: Args) -> Result<()> {
    let remote =
        |spec: &str| super::remote::local(spec, Need::Weights).map_err(|e| format!("{e:#}"));
    let resolve = Resolve {
        base: a.base.clone(),
        remote: &remote,
    };
    let recipe = pipeline::recipe::load(&a.recipe, &resolve)?;
    let sel = Selection {
        adapters: a.only,
        formats: a.formats,
        no_push: a.no_push,
    };
    let graph = graph::expand(recipe, &sel)?;
    if a.write.dry_run {
        return output::emit(&pipeline::plan(&graph), a.write.json);
    }
    let view = if a.write.json {
        View::Quiet
    } else if std::io::stderr().is_terminal() {
        View::Bars
    } else {
        View::Lines
    };
    let report = pipeline::run(&graph, view)?;
    output::emit(&report, a.write.json)?;
    if report.interrupted {
        return Err(crate::cancel::Interrupted.into());
    }
    if !report.ok {
        return Err(StepsFailed {
            failed: report.counts.failed,
            skipped: report.counts.skipped,
            report: graph.recipe.out.join("report.md").display().to_string(),
        }
        .into());
    }
    Ok(())
}

impl Render for Report {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        format!("\n{}\nreport: {}/report.md\n", self.markdown(), self.out)
    }
}

impl Render for PlanReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut t = output::table();
        t.set_header(["step", "after", "state", "memory (est.)"]);
        for s in &self.steps {
            t.add_row([
                s.id.clone(),
                s.after.join(", "),
                s.state.to_string(),
                human_bytes(s.memory_estimate),
            ]);
        }
        let run = self.steps.iter().filter(|s| s.state == "run").count();
        format!(
            "{t}\n{} steps, {run} to run, {} up to date; jobs {}, memory budget {}; outputs in {}\n",
            self.steps.len(),
            self.steps.len() - run,
            self.jobs,
            human_bytes(self.memory_budget),
            self.out
        )
    }
}
