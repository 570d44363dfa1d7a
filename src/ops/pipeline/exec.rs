//! Runs a [`Graph`]: `jobs` worker threads take the next step whose
//! dependencies finished, as long as the estimates of the steps running
//! together stay within the memory budget (a step larger than the whole
//! budget runs alone). A step whose dependency failed is skipped; the
//! others go on. Ctrl-C stops taking steps; the operations in flight stop
//! at their next check and leave nothing behind. Each step calls the
//! operation directly ([`crate::ops`]), writes its output atomically, then
//! its stamp.
//!
//! Upstream anchor: a CI matrix's independent jobs (one failing cell does
//! not cancel the others unless asked), `make -j`'s job slots.

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::graph::{eval_file, gguf_name, read_stamp, Action, Graph, Layout, Stamp};
use crate::model::adapter::Adapter;
use crate::ops::convert::HfOptions;
use crate::ops::eval::{EvalOptions, EvalRequest, Input};
use crate::ops::lora::{MergeOptions, WeightedAdapter};
use crate::ops::quantize::awq::AwqOptions;
use crate::ops::quantize::bnb::BnbOptions;
use crate::ops::quantize::gguf::GgufOptions;
use crate::ops::quantize::gptq::GptqOptions;
use crate::ops::quantize::{self, GgufTokenizer, Job, Target};
use crate::ops::vram::{self, request};
use crate::ops::{EngineOptions, Error, Result};
use crate::store::atomic::{self, AtomicDir};
use crate::store::Model;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its stamp matched: nothing to do.
    UpToDate,
    Done,
    Failed,
    /// A step it depends on failed.
    Skipped,
    /// Ctrl-C came first.
    Interrupted,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    /// Seconds it took (when it was made, for an up-to-date step).
    pub seconds: f64,
    pub result: serde_json::Value,
    pub error: Option<String>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One indicatif view: a bar per running step, a line per finished one.
    Bars,
    /// A line per finished step on stderr (logs, CI).
    Lines,
    Quiet,
}

struct State {
    outcomes: Vec<Option<Outcome>>,
    started: Vec<bool>,
    running: usize,
    memory: u64,
}

/// Runs every step of `graph`; one outcome per step.
pub fn execute(graph: &Graph, view: View) -> Vec<Outcome> {
    let n = graph.steps.len();
    let state = Mutex::new(State {
        outcomes: vec![None; n],
        started: vec![false; n],
        running: 0,
        memory: 0,
    });
    let wake = Condvar::new();
    let budget = graph.recipe.resources.memory_budget;
    let jobs = graph.recipe.resources.jobs.min(n.max(1));
    let bars = view == View::Bars;
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let i = loop {
                    if let Some(i) = next(graph, &mut st, budget) {
                        break i;
                    }
                    // `next` may have settled the last steps: then the
                    // others must wake to see it.
                    if st.outcomes.iter().all(Option::is_some) {
                        wake.notify_all();
                        return;
                    }
                    st = wake.wait(st).unwrap_or_else(|e| e.into_inner());
                };
                let step = &graph.steps[i];
                st.started[i] = true;
                st.running += 1;
                st.memory += step.memory;
                drop(st);
                let bar = spinner(bars, &step.id);
                let t = Instant::now();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    perform(graph, i, bars)
                }));
                let seconds = t.elapsed().as_secs_f64();
                bar.finish_and_clear();
                let outcome = match run {
                    Ok(Ok(result)) => match write_stamp(graph, i, seconds, &result) {
                        Ok(()) => Outcome {
                            status: Status::Done,
                            seconds,
                            result,
                            error: None,
                        },
                        Err(e) => failed(seconds, &e),
                    },
                    Ok(Err(e)) => failed(seconds, &e),
                    Err(panic) => Outcome {
                        status: Status::Failed,
                        seconds,
                        result: serde_json::Value::Null,
                        error: Some(format!(
                            "internal error (a bug; please report it): {}",
                            panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        )),
                    },
                };
                finished_line(view, &step.id, &outcome);
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.outcomes[i] = Some(outcome);
                st.running -= 1;
                st.memory -= step.memory;
                drop(st);
                wake.notify_all();
            });
        }
    });
    state
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .outcomes
        .into_iter()
        .map(|o| o.expect("every step has an outcome"))
        .collect()
}

/// Settles what needs no work (up-to-date steps, steps after a failure,
/// everything once interrupted) and returns a step to start, if one may
/// start now.
fn next(graph: &Graph, st: &mut State, budget: u64) -> Option<usize> {
    loop {
        let mut settled = false;
        let mut candidate = None;
        for (i, step) in graph.steps.iter().enumerate() {
            if st.started[i] || st.outcomes[i].is_some() {
                continue;
            }
            if crate::cancel::requested() {
                st.outcomes[i] = Some(settled_outcome(Status::Interrupted, None));
                settled = true;
                continue;
            }
            let deps: Vec<Option<Status>> = step
                .deps
                .iter()
                .map(|&d| st.outcomes[d].as_ref().map(|o| o.status))
                .collect();
            if deps.iter().any(|d| d.is_none()) {
                continue;
            }
            let bad = deps
                .iter()
                .flatten()
                .find(|d| !matches!(d, Status::Done | Status::UpToDate));
            if let Some(&d) = bad {
                let status = if d == Status::Interrupted {
                    Status::Interrupted
                } else {
                    Status::Skipped
                };
                st.outcomes[i] = Some(settled_outcome(status, None));
                settled = true;
                continue;
            }
            // Up to date only if nothing it reads was remade.
            let deps_fresh = step
                .deps
                .iter()
                .all(|&d| st.outcomes[d].as_ref().map(|o| o.status) == Some(Status::UpToDate));
            if step.up_to_date && deps_fresh {
                let stamp = read_stamp(&Layout(&graph.recipe.out).stamp(&step.id));
                st.outcomes[i] = Some(settled_outcome(Status::UpToDate, stamp));
                settled = true;
                continue;
            }
            let fits = st.running == 0 || st.memory + step.memory <= budget;
            if candidate.is_none() && fits {
                candidate = Some(i);
            }
        }
        if !settled {
            return candidate;
        }
    }
}

fn settled_outcome(status: Status, stamp: Option<Stamp>) -> Outcome {
    Outcome {
        status,
        seconds: stamp.as_ref().map_or(0.0, |s| s.seconds),
        result: stamp.map_or(serde_json::Value::Null, |s| s.result),
        error: None,
    }
}

fn failed(seconds: f64, e: &Error) -> Outcome {
    let interrupted = {
        let mut c: Option<&dyn std::error::Error> = Some(e);
        let mut found = false;
        while let Some(x) = c {
            found |= x.is::<crate::cancel::Interrupted>();
            c = x.source();
        }
        found
    };
    Outcome {
        status: if interrupted {
            Status::Interrupted
        } else {
            Status::Failed
        },
        seconds,
        result: serde_json::Value::Null,
        error: Some(e.to_string()),
    }
}

fn spinner(show: bool, id: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = crate::progress::share().add(indicatif::ProgressBar::new_spinner());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(id.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn finished_line(view: View, id: &str, o: &Outcome) {
    let line = match o.status {
        Status::Done => format!("done    {id} ({:.1} s)", o.seconds),
        Status::Failed => format!(
            "FAILED  {id} ({:.1} s): {}",
            o.seconds,
            o.error.as_deref().unwrap_or("")
        ),
        Status::Interrupted => format!("stopped {id}"),
        Status::UpToDate | Status::Skipped => return,
    };
    match view {
        View::Bars => crate::progress::share().suspend(|| eprintln!("{line}")),
        View::Lines => eprintln!("{line}"),
        View::Quiet => {}
    }
}

/// The stamp goes last: an output without its stamp is remade, never
/// trusted.
fn write_stamp(graph: &Graph, i: usize, seconds: f64, result: &serde_json::Value) -> Result<()> {
    let step = &graph.steps[i];
    let stamp = Stamp {
        step: step.id.clone(),
        key: step.key.clone(),
        llmtool: env!("CARGO_PKG_VERSION").into(),
        seconds,
        result: result.clone(),
    };
    let path = Layout(&graph.recipe.out).stamp(&step.id);
    atomic::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
    let text = serde_json::to_vec_pretty(&stamp).expect("a stamp serializes");
    atomic::replace_file(&path, &text)?;
    Ok(())
}

/// Removes an output left by an earlier run (remade, or made without its
/// stamp by a run that stopped between the two).
fn clear(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    r.map_err(|e| {
        Error::Refused(format!(
            "cannot remove the old output {}: {e}",
            path.display()
        ))
    })
}

/// The model files of an artifact (what its size counts): everything but
/// the eval results and the card the later steps add.
fn model_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !(n.starts_with("eval") && n.ends_with(".json")) && n != "README.md"
                })
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn open(path: &Path) -> Result<Model> {
    Ok(Model::open(&path.to_string_lossy())?)
}

/// Runs step `i`'s operation; its result for the stamp and the report.
fn perform(graph: &Graph, i: usize, progress: bool) -> Result<serde_json::Value> {
    let step = &graph.steps[i];
    let r = &graph.recipe;
    let layout = Layout(&r.out);
    // The old stamp goes first: from here on the output may change.
    clear(&layout.stamp(&step.id))?;
    let command = format!("llmtool run {}", r.file.display());
    let merged_base = || {
        if r.base.is_gguf {
            layout.base_hf()
        } else {
            r.base.path.clone()
        }
    };
    match step.action {
        Action::Convert => {
            let out = layout.base_hf();
            clear(&out)?;
            let model = open(&r.base.path)?;
            let opts = HfOptions {
                out: out.clone(),
                dtype: Some(r.base.dtype),
                max_shard_size: crate::store::safetensors::DEFAULT_MAX_SHARD_SIZE,
                progress,
                command,
            };
            let rep = crate::ops::convert::convert(&model, &opts, false)?;
            Ok(serde_json::json!({"bytes": rep.bytes}))
        }
        Action::Merge { adapter } => {
            let a = &r.adapters[adapter];
            let out = layout.merged(a);
            clear(&out)?;
            let base = open(&merged_base())?;
            let mut list = Vec::new();
            for (p, w) in &a.parts {
                list.push(WeightedAdapter {
                    adapter: Adapter::open(p)?,
                    weight: *w,
                });
            }
            let opts = MergeOptions {
                out: out.clone(),
                dtype: Some(r.base.dtype),
                max_shard_size: crate::store::safetensors::DEFAULT_MAX_SHARD_SIZE,
                command,
                base_label: r.base.label.clone(),
                progress,
            };
            let rep = crate::ops::lora::merge(&base, &list, &opts, false)?;
            Ok(serde_json::json!({"bytes": rep.bytes, "warnings": rep.warnings}))
        }
        Action::Quantize { adapter, format } => {
            let (a, f) = (&r.adapters[adapter], &r.formats[format]);
            let out = layout.artifact(a, f);
            clear(&out)?;
            let merged = open(&layout.merged(a))?;
            let label = format!("{} + {}", r.base.label, a.name);
            let o = &f.options;
            match f.format.target {
                Target::Gguf(ftype) => {
                    // A directory holding the one GGUF, so that the eval
                    // results and the card can sit beside it.
                    let dir = AtomicDir::create(&out)?;
                    let tokenizer = match &r.base.tokenizer_from {
                        Some(t) => GgufTokenizer::FromGguf(Box::new(open(t)?)),
                        None => GgufTokenizer::FromModel { pre: None },
                    };
                    let job = Job::Gguf {
                        ftype,
                        tokenizer,
                        options: GgufOptions {
                            out: dir.path().join(gguf_name(r, a, f)),
                            name: Some(format!("{}-{}", a.name, r.base.name)),
                            progress,
                        },
                    };
                    quantize::run(&merged, &job, false)?;
                    dir.commit()?;
                }
                Target::Bnb(bnb) => {
                    let d = BnbOptions::new(out.clone());
                    let job = Job::Bnb {
                        format: bnb,
                        options: Box::new(BnbOptions {
                            blocksize: o.blocksize.unwrap_or(d.blocksize),
                            double_quant: o.double_quant.unwrap_or(d.double_quant),
                            skip: o.skip.clone(),
                            command,
                            model_label: label,
                            progress,
                            ..d
                        }),
                    };
                    quantize::run(&merged, &job, false)?;
                }
                Target::Gptq => {
                    let mut g = GptqOptions::new(out.clone());
                    calibrated(&mut g.output, o, command, label, progress);
                    g.algorithm.bits = o.bits.unwrap_or(g.algorithm.bits);
                    if let Some(gs) = o.group_size {
                        g.algorithm.group_size = (gs > 0).then_some(gs as usize);
                    }
                    quantize::run(&merged, &Job::Gptq(Box::new(g)), false)?;
                }
                Target::Awq => {
                    let mut w = AwqOptions::new(out.clone());
                    calibrated(&mut w.output, o, command, label, progress);
                    w.algorithm.bits = o.bits.unwrap_or(w.algorithm.bits);
                    match o.group_size {
                        Some(gs) if gs > 0 => w.algorithm.group_size = gs as usize,
                        Some(_) => {
                            return Err(Error::Refused(
                                "awq needs groups: group_size 32, 64 or 128, not -1".into(),
                            ))
                        }
                        None => {}
                    }
                    quantize::run(&merged, &Job::Awq(Box::new(w)), false)?;
                }
            }
            Ok(serde_json::json!({"bytes": model_bytes(&out)}))
        }
        Action::Eval { adapter, format } => {
            let e = r.eval.as_ref().expect("eval steps exist only with [eval]");
            let (a, f) = (&r.adapters[adapter], &r.formats[format]);
            let dir = layout.artifact(a, f);
            let model = open(&dir)?;
            let req = EvalRequest {
                input: Input::Text(e.text.clone()),
                options: EvalOptions {
                    ctx: e.ctx,
                    max_chunks: e.max_chunks,
                    progress,
                },
                engine: EngineOptions::default(),
            };
            let result = if e.kld {
                // Against the merged model before quantization: what the
                // format loses.
                let merged = open(&layout.merged(a))?;
                serde_json::to_value(crate::ops::eval::kld(&merged, &model, &req)?)
            } else {
                serde_json::to_value(crate::ops::eval::ppl(&model, &req)?)
            }
            .expect("reports serialize");
            let text = serde_json::to_vec_pretty(&result).expect("reports serialize");
            atomic::replace_file(&dir.join(eval_file(e.kld)), &text)?;
            Ok(result)
        }
        Action::Vram { adapter, format } => {
            let (a, f) = (&r.adapters[adapter], &r.formats[format]);
            let req = request::Request {
                model: layout.artifact(a, f).to_string_lossy().into_owned(),
                formats: vec![vram::DeployFormat::Native],
                runtime: None,
                gpus: request::Gpus::Named(r.vram.gpus.join(",")),
                catalog: None,
                options: vram::Options {
                    ctx: r.vram.ctx,
                    ..vram::Options::default()
                },
                recommend: None,
            };
            let report = request::run(&req)?;
            let request::Answer::Plans { plans, .. } = report.answer else {
                return Err(Error::Refused("vram-plan gave no plan rows".into()));
            };
            let rows: Vec<serde_json::Value> = plans
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "gpu": p.gpu,
                        "engine": p.engine.name(),
                        "ctx": p.ctx,
                        "fits": p.fits,
                        "max_users": p.max_users,
                        "max_ctx": p.max_ctx,
                        "headroom": p.headroom,
                    })
                })
                .collect();
            Ok(serde_json::json!({"plans": rows}))
        }
        Action::Card { adapter, format } => {
            let (a, f) = (&r.adapters[adapter], &r.formats[format]);
            let dir = layout.artifact(a, f);
            let readme = dir.join("README.md");
            let old = std::fs::read_to_string(&readme).ok();
            let title = match &r.hub {
                Some(h) => h.repo(&a.name, &r.base.name, f.format.name),
                None => format!("{}-{}-{}", a.name, r.base.name, f.format.name),
            };
            let plan = crate::ops::push::CardPlan {
                gpus: r.vram.gpus.join(","),
                ctx: r.vram.ctx,
            };
            let text = crate::ops::push::model_card(&dir, &title, old.as_deref(), &plan)?;
            atomic::replace_file(&readme, text.as_bytes())?;
            Ok(serde_json::json!({"bytes": text.len()}))
        }
        Action::Push { adapter, format } => {
            let h = r.hub.as_ref().expect("push steps exist only with [hub]");
            let (a, f) = (&r.adapters[adapter], &r.formats[format]);
            let repo =
                crate::hub::repo::RepoId::parse(&h.repo(&a.name, &r.base.name, f.format.name))?;
            let hub = crate::hub::Hub::from_env(None)?;
            let opts = crate::ops::push::PushOptions {
                path: layout.artifact(a, f),
                repo: repo.clone(),
                revision: h.revision.clone(),
                private: h.private,
                create_pr: false,
                message: Some(format!("{} {} with llmtool run", a.name, f.format.name)),
                include: vec![],
                exclude: vec![],
                card_only: false,
                dry_run: false,
                progress,
            };
            let rep = crate::ops::push::push(&hub, &opts)?;
            Ok(serde_json::json!({
                "url": format!("{}/{repo}", hub.endpoint().trim_end_matches('/')),
                "commit": rep.pushed.and_then(|p| p.commit_url),
                "changed_bytes": rep.changed_bytes,
            }))
        }
    }
}

/// The options GPTQ and AWQ share.
fn calibrated(
    out: &mut crate::ops::quantize::int_checkpoint::Output,
    o: &super::recipe::FormatOptions,
    command: String,
    label: String,
    progress: bool,
) {
    if let Some(c) = &o.calib {
        out.calibration.source = crate::ops::calibration::Source::File(c.clone());
    }
    out.calibration.samples = o.calib_samples.unwrap_or(out.calibration.samples);
    out.calibration.seqlen = o.calib_seqlen.unwrap_or(out.calibration.seqlen);
    // The recipe's eval steps measure every artifact on the recipe's text,
    // and the card step writes those numbers: no second measurement here.
    out.calibration.held_out = 0;
    out.command = command;
    out.model_label = label;
    out.progress = progress;
}
