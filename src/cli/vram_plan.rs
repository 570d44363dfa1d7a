//! `llmtool vram-plan`: arguments → [`Request`], and the report as tables
//! for people (one row per GPU setup × format, the runtime command lines
//! below, the `--recommend` verdict) or JSON.

use anyhow::{Context, Result};

use super::args::MemoryArgs;
use super::output::{self, table, Render};
use crate::ops::vram::request::{self, Answer, Catalogs, Gpus, Report, Request};
use crate::ops::vram::{DeployFormat, ModelSpec, Options, PlanRow, Recommendation, Runtime, GIB};
use crate::units::gib;

/// Will this model fit this GPU, for how many users, at what cost.
///
/// Sums weights (per tensor, for each format's real layout), KV cache,
/// the runtime's activations or compute buffers and its overhead
/// (formulas and sources in docs/VRAM.md), for every GPU × format asked.
/// Prints whether it fits, the headroom, the largest context at --users,
/// the most users at --ctx, llama.cpp's -ngl and host RAM when it does
/// not fit, the hourly price and the runtime command line.
///
/// MODEL is anything inspect-arch reads (directory, .safetensors,
/// .gguf, Hub repo id), a bare config.json, or a built-in catalog
/// name (Qwen2.5-0.5B…72B, Llama-3-8B, Llama-3.1-8B/70B, Llama-3.2-1B/3B,
/// Mistral-7B, Mistral-Small-24B, SmolLM2-135M/360M/1.7B, or their Hub
/// repo ids); --list prints the catalogs.
///
/// Exit status: 0 when something fits, 3 when the report shows nothing
/// that fits (no row; with --recommend no GPU), 1 on error, 2 on usage.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool vram-plan Qwen2.5-14B --gpu T4,A10G --quant bf16,int8,nf4\n  \
    llmtool vram-plan Qwen2.5-14B --gpu T4 --users 8 --ctx 8192 --recommend\n  \
    llmtool vram-plan model-Q4_K_M.gguf --gpus 2xT4 --ctx 32768 --kv-cache q8_0\n  \
    llmtool vram-plan ./config.json --engine vllm --vram 24GiB --quant awq --json\n  \
    llmtool vram-plan Llama-3.1-8B --detect --quant q4_k_m,q8_0")]
pub struct Args {
    /// Model: path, Hub repo id (its config.json is fetched), config.json, or catalog name.
    #[arg(required_unless_present = "list")]
    model: Option<String>,
    /// Formats to compare, comma-separated: bf16, f16, int8, nf4, awq, gptq,
    /// gptq-int8, q4_k_m, q5_k_m, q6_k, q8_0, native (the model's own tensors).
    #[arg(long, value_delimiter = ',')]
    quant: Vec<String>,
    /// transformers, vllm or llama.cpp (default: llama.cpp for GGUF formats,
    /// transformers for the others).
    #[arg(long)]
    engine: Option<String>,
    #[command(flatten)]
    memory: MemoryArgs,
    /// GPUs to compare, comma-separated catalog names or sizes (T4,A10G,16GiB);
    /// default T4,A10G,L4,A100-40GB.
    #[arg(long, conflicts_with_all = ["vram", "gpus", "detect"])]
    gpu: Option<String>,
    /// A GPU of this much memory (16GiB, 24GB, 15360MiB).
    #[arg(long, conflicts_with_all = ["gpus", "detect"])]
    vram: Option<String>,
    /// Several GPUs used together: 2xT4, 4xA10G (comma-separated to compare).
    #[arg(long, conflicts_with = "detect")]
    gpus: Option<String>,
    /// Read this machine's GPUs with nvidia-smi.
    #[arg(long)]
    detect: bool,
    /// GPU catalog TOML replacing the built-in one (format: data/gpus.toml).
    #[arg(long)]
    catalog: Option<std::path::PathBuf>,
    /// Pick the best-quality format that fits with --margin to spare.
    #[arg(long)]
    recommend: bool,
    /// Fraction of each GPU --recommend keeps free.
    #[arg(long, default_value_t = 0.05)]
    margin: f64,
    /// Print the model and GPU catalogs.
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let catalog = super::args::read_catalog(a.catalog.as_deref())?;
    if a.list {
        return output::emit(&request::catalogs(catalog.as_ref())?, a.json);
    }
    let gpus = if a.detect {
        Gpus::Detect
    } else if let Some(v) = &a.vram {
        Gpus::Vram(crate::ops::vram::catalog::parse_vram(v)?)
    } else {
        Gpus::Named(
            a.gpus
                .or(a.gpu)
                .unwrap_or_else(|| request::DEFAULT_GPUS.into()),
        )
    };
    let req = Request {
        model: match a.model {
            Some(spec) => plannable(spec)?,
            None => String::new(),
        },
        formats: a
            .quant
            .iter()
            .map(|q| DeployFormat::parse(q))
            .collect::<Result<_, _>>()?,
        runtime: a.engine.as_deref().map(Runtime::parse).transpose()?,
        gpus,
        catalog,
        options: a.memory.options()?,
        recommend: a.recommend.then_some(a.margin),
    };
    let report = request::run(&req)?;
    output::emit(&report, a.json)?;
    if report.anything_fits() {
        Ok(())
    } else {
        Err(NothingFits.into())
    }
}

/// The plan was printed, but nothing in it fits: exit status
/// [`super::EXIT_NOTHING_FITS`], so that scripts can tell.
#[derive(Debug, thiserror::Error)]
#[error("nothing fits: no format fits any GPU asked (see the report above)")]
pub struct NothingFits;

impl Render for Report {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.answer)
    }
    fn text(&self) -> String {
        match &self.answer {
            Answer::Plans { plans, options, .. } => render_rows(&self.model, plans, options),
            Answer::Recommendations(v) => v
                .iter()
                .map(|r| {
                    format!(
                        "== {} ==\n{}",
                        r.gpu,
                        render_recommendation(&self.model, &r.recommendation)
                    )
                })
                .collect(),
        }
    }
}

impl Render for Catalogs {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        Ok(serde_json::json!({
            "models": self.models.iter().map(|m| serde_json::json!({"repo": m.repo, "aliases": m.aliases, "awq": m.awq, "gptq_int4": m.gptq_int4, "shape": m.shape})).collect::<Vec<_>>(),
            "gpus": self.gpus,
        }))
    }
    fn text(&self) -> String {
        let mut s = String::from("models (data/models.toml):\n");
        for m in &self.models {
            s += &format!("  {:<20} {}\n", m.shape.name, m.repo);
        }
        s += "GPUs (data/gpus.toml or --catalog):\n";
        for g in &self.gpus {
            s += &format!(
                "  {:<10} {:>6} MiB {:>6} GB/s  ${:.2}/h  ({})\n",
                g.name, g.vram_mib, g.bandwidth_gbs, g.price_per_hour, g.price_source
            );
        }
        s
    }
}

/// The one-line description of the model being planned.
fn model_line(m: &ModelSpec) -> String {
    let s = &m.shape;
    format!(
        "{} ({}; {} layers, hidden {}, {} heads / {} KV heads x {}, FFN {}, vocab {}{}; {:.2} B parameters{})",
        s.name,
        m.source,
        s.layers,
        s.hidden,
        s.heads,
        s.kv_heads,
        s.head_dim,
        s.ffn,
        s.vocab,
        if s.tied { ", tied" } else { "" },
        m.params() as f64 / 1e9,
        m.packing
            .map_or(String::new(), |p| format!(", pre-quantized: {}", p.label()))
    )
}

/// Width of the text report when neither `COLUMNS` nor a terminal says.
const DEFAULT_WIDTH: usize = 100;

/// Bytes as GiB with two decimals, the unit the tables name once.
fn g(b: u64) -> String {
    format!("{:.2}", b as f64 / GIB as f64)
}

/// The plan: one block per GPU setup, each a table of its formats (eight
/// narrow columns, sizes in GiB, fitted to the output width; "other" is
/// activations or compute buffers plus the engine's overhead) and then each
/// row's command, wrapped to the width.
fn render_rows(m: &ModelSpec, rows: &[PlanRow], o: &Options) -> String {
    let width = output::width().unwrap_or(DEFAULT_WIDTH);
    let mut s = format!(
        "{}\n{}\n",
        output::wrap(&model_line(m), width, "", ""),
        output::wrap(
            &format!(
                "{} token(s) of context x {} user(s); sizes in GiB",
                rows.first().map_or(0, |r| r.ctx),
                rows.first().map_or(0, |r| r.users)
            ),
            width,
            "",
            ""
        )
    );
    // `request::run` plans GPU setup by GPU setup.
    for setup in rows.chunk_by(|a, b| (&a.gpu, a.gpus) == (&b.gpu, b.gpus)) {
        let first = &setup[0];
        let price = if first.price_per_hour > 0.0 {
            format!(", ${:.2}/h", first.price_per_hour)
        } else {
            String::new()
        };
        // Usable memory is the GPU's, but vLLM's share of it.
        let vllm = setup.iter().any(|r| r.engine == Runtime::Vllm);
        let per_gpu = setup
            .iter()
            .find(|r| r.engine != Runtime::Vllm)
            .map_or(first.capacity as f64 / o.gpu_util, |r| r.capacity as f64)
            / first.gpus.max(1) as f64;
        s += &format!(
            "\n== {}: {:.2} GiB{}{price}{} ==\n",
            label(first),
            per_gpu / GIB as f64,
            if first.gpus > 1 { " each" } else { "" },
            if vllm {
                format!(", vLLM uses {}% of it", (o.gpu_util * 100.0).round())
            } else {
                String::new()
            }
        );
        let mut t = table();
        t.set_width(width.min(u16::MAX as usize) as u16);
        t.set_header(vec![
            "format, engine",
            "weights",
            "KV",
            "other",
            "total",
            "fits",
            "max\nctx",
            "max\nusers",
        ]);
        for r in setup {
            t.add_row(vec![
                format!("{}, {}", r.format.name(), r.engine.name()),
                g(r.need.weights),
                g(r.need.kv),
                g(r.need.compute + r.need.overhead),
                g(r.need.vram()),
                format!(
                    "{} {:+.2}",
                    if r.fits { "yes" } else { "NO" },
                    r.headroom as f64 / GIB as f64
                ),
                r.max_ctx.to_string(),
                r.max_users.to_string(),
            ]);
        }
        output::align_right(&mut t, &[1, 2, 3, 4, 5, 6, 7]);
        s += &format!("{t}\n");
        for r in setup {
            s += &format!("{} on {}:\n", r.format.name(), r.engine.name());
            if let (false, Some(ngl)) = (r.fits, r.ngl) {
                let text = format!(
                    "does not fit whole: -ngl {ngl} puts {ngl} of {} layers (output included) on the GPU, {} GiB stays in host RAM",
                    m.shape.layers + 1,
                    g(r.host_ram)
                );
                s += &format!("{}\n", output::wrap(&text, width, "  ", ""));
            }
            if r.split.len() > 1 {
                let text = format!("layers per GPU: {:?}", r.split);
                s += &format!("{}\n", output::wrap(&text, width, "  ", ""));
            }
            s += &prerequisite(r, width);
            s += &command(r, width);
        }
    }
    s
}

/// `2xT4` or `T4`.
fn label(r: &PlanRow) -> String {
    if r.gpus > 1 {
        format!("{}x{}", r.gpus, r.gpu)
    } else {
        r.gpu.clone()
    }
}

/// The `--recommend` verdict, wrapped to the output width.
fn render_recommendation(m: &ModelSpec, rec: &Recommendation) -> String {
    let width = output::width().unwrap_or(DEFAULT_WIDTH);
    let line = |text: &str, indent: &str| output::wrap(text, width, indent, "") + "\n";
    let mut passed = String::new();
    for r in &rec.rejected {
        passed += &line(
            &format!("{} ({}): {}", r.format.name(), r.engine.name(), r.reason),
            "  ",
        );
    }
    let mut s = line(&model_line(m), "");
    match &rec.chosen {
        Some(row) => {
            s += &line(
                &format!(
                    "recommended: {} on {} ({} of {} used, {} free, {:.0}% margin asked)",
                    row.format.name(),
                    row.engine.name(),
                    gib(row.need.vram()),
                    gib(row.capacity),
                    gib(row.headroom.max(0) as u64),
                    rec.margin * 100.0
                ),
                "",
            );
            if !passed.is_empty() {
                s += &format!("better formats passed over:\n{passed}");
            }
            s += "command:\n";
            s += &prerequisite(row, width);
            s += &command(row, width);
        }
        None => {
            s += &line(
                &format!("no format fits with a {:.0}% margin:", rec.margin * 100.0),
                "",
            );
            s += &passed;
        }
    }
    s
}

/// What a row needs made first, wrapped to `width`: for llama.cpp the
/// `llmtool quantize` command (continued with a backslash), else a sentence.
fn prerequisite(r: &PlanRow, width: usize) -> String {
    match &r.prerequisite {
        None => String::new(),
        Some(p) if r.engine == Runtime::LlamaCpp => {
            format!("  first:\n{}\n", output::wrap(p, width, "    ", " \\"))
        }
        Some(p) => output::wrap(&format!("first: {p}"), width, "  ", "") + "\n",
    }
}

/// A row's command wrapped to `width`: shell commands continue with a
/// backslash; the Python call is inside parentheses, where a line break is
/// allowed.
fn command(r: &PlanRow, width: usize) -> String {
    let join = if r.engine == Runtime::Transformers {
        ""
    } else {
        " \\"
    };
    output::wrap(&r.flags, width, "  ", join) + "\n"
}

/// A Hub repo that is not a catalog model and not cached whole is planned
/// from its `config.json` alone (fetched into the cache): the weights are
/// not needed to know the shapes.
pub(super) fn plannable(spec: String) -> Result<String> {
    let local = std::path::Path::new(&spec).exists()
        || crate::ops::vram::catalog::find_model(&spec).is_some()
        || crate::store::Model::open(&spec).is_ok();
    if local {
        return Ok(spec);
    }
    super::remote::local(&spec, crate::hub::download::Need::Config)
        .with_context(|| format!("'{spec}' is not in the built-in catalog either (see --list)"))
}
