//! `llmtool fragment split|merge|verify`: arguments → [`fragment`]'s
//! operations; tables of the pieces and of the files checked.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::{self, JsonArg, WriteArgs};
use super::output::{self, align_right, Render};
use crate::ops::fragment::{self, FileStatus, MergeReport, SplitMode, SplitOptions, SplitReport};
use crate::ops::fragment::{plan, VerifyReport, MANIFEST_FILE};
use crate::units::human_bytes;

/// Plan a model over several hosts, split it, merge GGUF shards, verify copies.
#[derive(clap::Subcommand)]
pub enum Command {
    Plan(super::fragment_plan::Args),
    Split(SplitArgs),
    Merge(MergeArgs),
    Verify(VerifyArgs),
}

/// Split a model into GGUF shards (as llama-gguf-split writes them) or
/// per-stage Hugging Face directories, with a fragments.json manifest.
///
/// A GGUF model (or the first shard of a split one) becomes
/// DIR/PREFIX-00001-of-0000N.gguf …: metadata in the first shard,
/// split.no / split.count / split.tensors.count in each, byte-identical to
/// `llama-gguf-split --split` with the same limit (--max-size 2GB here is
/// its --split-max-size 2G: its M and G are decimal). llama.cpp loads the
/// first shard as it is.
///
/// --by-layer COUNTS cuts at decoder-layer boundaries instead: consecutive
/// layer counts per piece (they must add up to the model's layers), the
/// token embedding with the first piece, the final norm and output head
/// with the last. A Hugging Face safetensors model is cut this way only:
/// DIR/stage-K-of-N/ holds its layers, an index, config.json and the
/// tokenizer files (a tied head: the last stage holds the embedding too).
///
/// Everything is streamed tensor by tensor and appears only when complete.
/// DIR/fragments.json lists every file's size and sha256
/// (`llmtool fragment verify DIR`).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool fragment split qwen2.5-14b-Q4_K_M.gguf --out ./shards --max-size 2GB\n  \
    llmtool fragment split model.gguf --out ./shards --max-tensors 128\n  \
    llmtool fragment split SmolLM2-135M-Instruct.Q4_1.gguf --out ./hosts --by-layer 10,10,10\n  \
    llmtool fragment plan model.gguf --host a=T4 --host b=T4 --json > plan.json\n  \
    llmtool fragment split model.gguf --out ./hosts --plan plan.json\n  \
    llmtool fragment split model.gguf --out ./shards --max-size 4GB --dry-run\n  \
    llmtool fragment split ./Qwen2.5-14B-Instruct --out ./stages --by-layer 24,24 --json")]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(false)))]
pub struct SplitArgs {
    /// The GGUF file (or first shard), or a Hugging Face safetensors directory (with --by-layer).
    model: String,
    /// Output directory (must not exist or be empty).
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// Largest shard's tensor bytes, each tensor padded to 32 (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
    #[arg(long, value_parser = args::parse_shard_size, group = "mode")]
    max_size: Option<u64>,
    /// Most tensors per shard.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), group = "mode")]
    max_tensors: Option<u64>,
    /// Decoder layers per piece, in order: 10,10,10.
    #[arg(long, value_delimiter = ',', value_name = "COUNTS", group = "mode")]
    by_layer: Option<Vec<u64>>,
    /// A placement from `fragment plan --json`: one piece per host with its
    /// layers; the plan is recorded in fragments.json.
    #[arg(long, group = "mode")]
    plan: Option<PathBuf>,
    #[command(flatten)]
    write: WriteArgs,
}

/// Merge GGUF shards into one file, byte-identical to `llama-gguf-split --merge`.
///
/// Reads every shard named after the first (PREFIX-0000i-of-0000N.gguf);
/// the output keeps the first shard's metadata with split.count = 0, as
/// llama.cpp writes it.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    llmtool fragment merge ./shards/model-00001-of-00004.gguf --out model.gguf")]
pub struct MergeArgs {
    /// The first shard.
    first: String,
    /// Output GGUF file (must not exist).
    #[arg(short = 'o', long)]
    out: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

/// Check every file of a fragments.json against its size and sha256.
///
/// Hashes the files in parallel; exits 1 naming each missing or changed
/// file, to copy again from the source.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    llmtool fragment verify ./shards")]
pub struct VerifyArgs {
    /// The directory holding fragments.json.
    dir: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Plan(a) => super::fragment_plan::run(a),
        Command::Split(a) => {
            let plan = match &a.plan {
                Some(p) => Some(plan::read_plan(p)?),
                None => None,
            };
            let mode = match (a.max_size, a.max_tensors, a.by_layer, &plan) {
                (Some(b), ..) => SplitMode::MaxSize(b),
                (_, Some(n), ..) => SplitMode::MaxTensors(n),
                (_, _, Some(c), _) => SplitMode::ByLayer(c),
                (.., Some((counts, _))) => SplitMode::ByLayer(counts.clone()),
                // The "mode" group is required.
                _ => bail!("pass --max-size, --max-tensors, --by-layer or --plan"),
            };
            let m = super::remote::open(&a.model)?;
            let opts = SplitOptions {
                out: a.out,
                mode,
                progress: !a.write.json,
                dry_run: a.write.dry_run,
                plan: plan.map(|(_, v)| v),
            };
            let report = fragment::split(&m, &opts)?;
            output::warn(&report.warnings);
            output::emit(&report, a.write.json)
        }
        Command::Merge(a) => {
            let m = super::remote::open(&a.first)?;
            let report = fragment::merge(&m, &a.out, !a.json.json)?;
            output::emit(&report, a.json.json)
        }
        Command::Verify(a) => {
            let report = fragment::verify(&a.dir, !a.json.json)?;
            output::emit(&report, a.json.json)?;
            let bad: Vec<String> = report
                .bad()
                .map(|f| format!("{} ({})", f.path, status(f.status)))
                .collect();
            if !bad.is_empty() {
                bail!(
                    "{}: {} of {} files do not match {MANIFEST_FILE}: {}; copy them again from the source",
                    a.dir.display(),
                    bad.len(),
                    report.files.len(),
                    bad.join(", ")
                );
            }
            Ok(())
        }
    }
}

fn status(s: FileStatus) -> &'static str {
    match s {
        FileStatus::Ok => "ok",
        FileStatus::Mismatch => "mismatch",
        FileStatus::Missing => "missing",
    }
}

impl Render for SplitReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let m = &self.manifest;
        let mut t = output::table();
        t.set_header(vec!["piece", "layers", "tensors", "size"]);
        for p in &m.parts {
            let layers = p
                .layers
                .map_or("-".to_string(), |r| match r.last - r.first {
                    0 => r.first.to_string(),
                    _ => format!("{}–{}", r.first, r.last),
                });
            t.add_row(vec![
                p.path.clone(),
                layers,
                p.tensors.to_string(),
                human_bytes(p.bytes),
            ]);
        }
        align_right(&mut t, &[2, 3]);
        if self.dry_run {
            return format!(
                "{t}\nwould write {}: {} pieces and {MANIFEST_FILE}\n",
                self.out.display(),
                m.parts.len()
            );
        }
        format!(
            "{t}\nwrote {}: {} pieces, {} files; manifest {}\n",
            self.out.display(),
            m.parts.len(),
            m.files.len(),
            self.out.join(MANIFEST_FILE).display()
        )
    }
}

impl Render for MergeReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        format!(
            "wrote {}: {} tensors, {} from {} shards\n",
            self.out.display(),
            self.tensors,
            human_bytes(self.bytes),
            self.shards.len()
        )
    }
}

impl Render for VerifyReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut t = output::table();
        t.set_header(vec!["file", "status", "size"]);
        for f in &self.files {
            t.add_row(vec![
                f.path.clone(),
                status(f.status).to_string(),
                human_bytes(f.size),
            ]);
        }
        align_right(&mut t, &[2]);
        let ok = self.files.len() - self.bad().count();
        format!("{t}\n{ok} of {} files ok\n", self.files.len())
    }
}
