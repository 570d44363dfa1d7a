//! `inspect-arch`: renders an [`Arch`] for people (comfy-table) and the
//! per-tensor listing. The JSON manifest lives in [`crate::arch::manifest`].

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

use crate::arch::{Arch, Family};
use crate::store::Model;

/// Formats a byte count with binary units (as llama.cpp prints MiB).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Formats a parameter count (135.0M, 14.77B).
pub fn human_count(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}K", v / 1e3)
    } else {
        n.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// The human summary: architecture, parameters, storage.
pub fn render_summary(model: &Model, a: &Arch) -> String {
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
                serde_json::to_value(model.format)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                model.files.len(),
                if model.files.len() == 1 { "" } else { "s" }
            ),
        ),
        ("family", family),
        ("hyperparameters from", a.hparams_source.to_string()),
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

fn align_right(t: &mut Table, cols: &[usize]) {
    for &c in cols {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The per-tensor table (`--tensors`).
pub fn render_tensors(model: &Model) -> String {
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

/// The per-tensor listing for `--json --tensors`.
pub fn tensors_json(model: &Model) -> serde_json::Value {
    model
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "dtype": t.dtype,
                "shape": t.shape,
                "bytes": t.len,
                "file": model.files[t.file].path.display().to_string(),
                "offset": t.offset,
            })
        })
        .collect()
}

/// A two-column table of a flat JSON object (for summaries such as `lora inspect`).
pub fn render_json_table(v: &serde_json::Value) -> String {
    let mut t = table();
    t.set_header(vec!["property", "value"]);
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let text = match val {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            t.add_row(vec![k.replace('_', " "), text]);
        }
    }
    format!("{t}\n")
}
