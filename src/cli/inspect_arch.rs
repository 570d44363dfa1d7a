//! `llmtool inspect-arch`: arguments, and the report as tables for people
//! (summary, parameters, storage, optionally every tensor) or as the JSON
//! manifest ([`crate::ops::inspect`]).

use anyhow::Result;

use super::output::{self, align_right, table, Render};
use crate::model::arch::{Arch, Family};
use crate::ops::inspect::{self, InspectReport};
use crate::store::Model;
use crate::units::{human_bytes, human_count};

/// What a model really is, derived from its tensor shapes.
///
/// MODEL is a Hugging Face model directory (config.json + model.safetensors
/// or shards + model.safetensors.index.json), a single .safetensors, a
/// .gguf (the first shard of a split GGUF names the whole model), or a
/// Hub repo id (org/name[@revision], org/name:Q4_K_M for one GGUF of a
/// repo), downloaded into the Hugging Face cache ($HF_HUB_CACHE, else
/// $HF_HOME/hub) unless already there; HF_HUB_OFFLINE=1 reads the cache
/// only. Only headers are read.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool inspect-arch ./Qwen2.5-14B-Instruct\n  \
    llmtool inspect-arch Qwen/Qwen2.5-14B-Instruct --json > arch.json\n  \
    llmtool inspect-arch SmolLM2-135M-Instruct.Q4_1.gguf --tensors")]
pub struct Args {
    /// Model directory, file, Hub repo id (org/name[@rev][:QUANT], downloaded into the HF cache) or catalog name.
    model: String,
    /// Print the versioned architecture manifest as JSON (schema in docs/ARCH-MANIFEST.md).
    #[arg(long)]
    json: bool,
    /// Also list every tensor (name, dtype, shape, bytes, file).
    #[arg(long)]
    tensors: bool,
}

pub fn run(a: Args) -> Result<()> {
    let m = super::remote::open(&a.model)?;
    output::emit(&inspect::inspect(m, a.tensors), a.json)
}

impl Render for InspectReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut s = render_summary(&self.model, &self.arch);
        if self.tensors {
            s += &render_tensors(&self.model);
        }
        s
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// The human summary: architecture, parameters, storage.
fn render_summary(model: &Model, a: &Arch) -> String {
    let mut t = table();
    t.set_header(vec!["property", "value"]);
    let family = match a.family {
        Family::Unknown => format!(
            "unknown ({})",
            a.declared_family.as_deref().unwrap_or("undeclared")
        ),
        f => serde_json::to_value(f)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("model", model.root.display().to_string()),
        (
            "format",
            format!(
                "{} ({} file{})",
                serde_json::to_value(model.container)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                model.files.len(),
                if model.files.len() == 1 { "" } else { "s" }
            ),
        ),
        ("family", family),
        ("hyperparameters from", a.hparams_source.to_string()),
        (
            "pre-quantized",
            a.quantization.clone().unwrap_or_else(|| "no".into()),
        ),
        ("layers", opt(a.layers)),
        ("hidden size", opt(a.hidden_size)),
        ("attention heads", opt(a.heads)),
        ("KV heads", opt(a.kv_heads)),
        ("head_dim", opt(a.head_dim)),
        ("GQA group", opt(a.gqa_group)),
        ("FFN size", opt(a.ffn_size)),
        ("vocab", opt(a.vocab)),
        ("tied embeddings", a.tied_embeddings.to_string()),
        ("attention bias", a.attention_bias.to_string()),
        ("rope theta", opt(a.rope.theta)),
        (
            "rope scaling",
            a.rope
                .scaling
                .as_ref()
                .map_or("none".into(), |s| s.to_string()),
        ),
        ("rms norm eps", opt(a.norm_eps)),
        ("context length", opt(a.context_length)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }

    let mut p = table();
    p.set_header(vec!["parameters", "count", "share"]);
    let total = a.params.total.max(1) as f64;
    for (k, n) in [
        ("embeddings", a.params.embeddings),
        ("attention", a.params.attention),
        ("mlp", a.params.mlp),
        ("norms", a.params.norms),
        ("other", a.params.other),
        ("total", a.params.total),
    ] {
        p.add_row(vec![
            k.to_string(),
            format!("{n} ({})", human_count(n)),
            format!("{:.1}%", n as f64 * 100.0 / total),
        ]);
    }
    align_right(&mut p, &[1, 2]);

    let mut d = table();
    d.set_header(vec!["dtype", "tensors", "params", "bytes"]);
    for s in &a.dtypes {
        d.add_row(vec![
            s.dtype.to_string(),
            s.tensors.to_string(),
            human_count(s.params),
            human_bytes(s.bytes),
        ]);
    }
    d.add_row(vec![
        "all".to_string(),
        a.tensor_count.to_string(),
        human_count(a.params.total),
        format!(
            "{} ({:.2} bits/weight)",
            human_bytes(a.tensor_bytes),
            a.bits_per_weight
        ),
    ]);
    d.add_row(vec![
        "on disk".to_string(),
        String::new(),
        String::new(),
        human_bytes(a.bytes_on_disk),
    ]);
    align_right(&mut d, &[1, 2, 3]);

    let mut out = format!("{t}\n{p}\n{d}\n");
    for w in &a.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// The per-tensor table (`--tensors`).
fn render_tensors(model: &Model) -> String {
    let mut t = table();
    t.set_header(vec!["tensor", "dtype", "shape", "bytes", "file"]);
    let multi = model.files.len() > 1;
    for ti in model.tensors() {
        let file = if multi {
            model.files[ti.file]
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        t.add_row(vec![
            ti.name.clone(),
            ti.dtype.to_string(),
            format!("{:?}", ti.shape),
            ti.len.to_string(),
            file,
        ]);
    }
    align_right(&mut t, &[3]);
    format!("{t}\n")
}
