//! Tables for people: one row per GPU setup × format, the engine command
//! lines below, and the `--recommend` verdict.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

use super::{ModelSpec, PlanRow, Recommendation, GIB};

/// Bytes as GiB with two decimals.
pub fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / GIB as f64)
}

fn signed_gib(b: i64) -> String {
    format!("{:+.2} GiB", b as f64 / GIB as f64)
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// The one-line description of the model being planned.
pub fn model_line(m: &ModelSpec) -> String {
    let s = &m.shape;
    format!(
        "{} ({}; {} layers, hidden {}, {} heads / {} KV heads × {}, FFN {}, vocab {}{}; {:.2} B parameters)",
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
        m.params() as f64 / 1e9
    )
}

/// The comparison table and the command line of each row.
pub fn render_rows(m: &ModelSpec, rows: &[PlanRow]) -> String {
    let mut t = table();
    t.set_header(vec![
        "GPU",
        "format",
        "engine",
        "weights",
        "KV",
        "compute",
        "overhead",
        "total",
        "usable",
        "fits",
        "headroom",
        "max ctx",
        "max users",
        "offload",
        "$/h",
    ]);
    for r in rows {
        let offload = match (r.fits, r.ngl) {
            (true, _) => "-".to_string(),
            (false, Some(n)) => format!("-ngl {n}, host {}", gib(r.host_ram)),
            (false, None) => "does not fit".to_string(),
        };
        let gpus = if r.gpus > 1 {
            format!("{}x{}", r.gpus, r.gpu)
        } else {
            r.gpu.clone()
        };
        t.add_row(vec![
            gpus,
            r.format.name().to_string(),
            r.engine.name().to_string(),
            gib(r.need.weights),
            gib(r.need.kv),
            gib(r.need.compute),
            gib(r.need.overhead),
            gib(r.need.vram()),
            gib(r.capacity),
            if r.fits { "yes" } else { "NO" }.to_string(),
            signed_gib(r.headroom),
            r.max_ctx.to_string(),
            r.max_users.to_string(),
            offload,
            if r.price_per_hour > 0.0 {
                format!("{:.2}", r.price_per_hour)
            } else {
                "?".into()
            },
        ]);
    }
    for i in 3..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut s = format!(
        "{}\n{} token(s) of context × {} user(s)\n{t}\n",
        model_line(m),
        rows.first().map_or(0, |r| r.ctx),
        rows.first().map_or(0, |r| r.users)
    );
    for r in rows {
        let split = if r.split.len() > 1 {
            format!(" (layers per GPU: {:?})", r.split)
        } else {
            String::new()
        };
        s += &format!(
            "{} {} on {}{split}:\n  {}\n",
            r.format.name(),
            r.engine.name(),
            r.gpu,
            r.flags
        );
    }
    s
}

/// The `--recommend` verdict.
pub fn render_recommendation(m: &ModelSpec, rec: &Recommendation) -> String {
    let mut s = String::new();
    for r in &rec.rejected {
        s += &format!(
            "  {} ({}): {}\n",
            r.format.name(),
            r.engine.name(),
            r.reason
        );
    }
    match &rec.chosen {
        Some(row) => format!(
            "{}\nrecommended: {} on {} ({} of {} used, {} free, {:.0}% margin asked)\n{}{}\n  {}\n",
            model_line(m),
            row.format.name(),
            row.engine.name(),
            gib(row.need.vram()),
            gib(row.capacity),
            gib(row.headroom.max(0) as u64),
            rec.margin * 100.0,
            if rec.rejected.is_empty() {
                String::new()
            } else {
                format!("better formats passed over:\n{s}")
            },
            "command:",
            row.flags
        ),
        None => format!(
            "{}\nno format fits with a {:.0}% margin:\n{s}",
            model_line(m),
            rec.margin * 100.0
        ),
    }
}
