//! `llmtool run RECIPE`: the adapter → formats → eval → card → push
//! pipeline for many adapters and formats, idempotent and resumable.
//! [`recipe`] reads and validates the TOML recipe before anything runs,
//! [`graph`] expands it into steps keyed by the hash of their inputs,
//! [`exec`] runs them in parallel within a memory budget, and [`report`]
//! sums them up. Every step calls the same operation the single commands
//! call (`lora merge`, `quantize`, `eval`, `vram-plan`, `push`).
//!
//! Upstream anchors: mergekit's YAML recipes (one validated file that says
//! what to build), CI matrices (independent cells; a cache keyed by
//! content makes a rerun cheap). docs/PIPELINE.md has the schema.

pub mod exec;
pub mod graph;
pub mod recipe;
pub mod report;

use serde::Serialize;

pub use exec::View;
pub use graph::{Graph, Selection};
pub use recipe::{Recipe, RecipeError, Resolve};
pub use report::Report;

use crate::ops::Result;

/// What `--dry-run` shows: each step, whether it would run, its estimate.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub recipe: String,
    pub out: String,
    pub jobs: usize,
    pub memory_budget: u64,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub after: Vec<String>,
    /// `up to date` or `run`.
    pub state: &'static str,
    pub memory_estimate: u64,
}

/// The graph as `--dry-run` prints it. A step counts as up to date only
/// when every step it reads is too (otherwise it is remade after them).
pub fn plan(graph: &Graph) -> PlanReport {
    let mut fresh: Vec<bool> = Vec::with_capacity(graph.steps.len());
    let steps = graph
        .steps
        .iter()
        .map(|s| {
            let f = s.up_to_date && s.deps.iter().all(|&d| fresh[d]);
            fresh.push(f);
            PlannedStep {
                id: s.id.clone(),
                after: s.deps.iter().map(|&d| graph.steps[d].id.clone()).collect(),
                state: if f { "up to date" } else { "run" },
                memory_estimate: s.memory,
            }
        })
        .collect();
    PlanReport {
        recipe: graph.recipe.file.display().to_string(),
        out: graph.recipe.out.display().to_string(),
        jobs: graph.recipe.resources.jobs,
        memory_budget: graph.recipe.resources.memory_budget,
        steps,
    }
}

/// Runs `graph` and writes its report (also when steps failed or the run
/// was interrupted).
pub fn run(graph: &Graph, view: View) -> Result<Report> {
    if let Some(n) = graph.recipe.resources.threads {
        // The operations run on rayon's global pool; it can be sized once.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    sweep_stamp_temporaries(&graph::Layout(&graph.recipe.out).stamps());
    let outcomes = exec::execute(graph, view);
    let report = report::build(graph, &outcomes);
    report.write(&graph.recipe.out)?;
    Ok(report)
}

/// A run killed while writing a stamp leaves its hidden temporary; only
/// runs write there, so what is left at the start is stale.
fn sweep_stamp_temporaries(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') && n.ends_with(".partial") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
