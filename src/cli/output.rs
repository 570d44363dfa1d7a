//! How reports reach the user: every command's report is [`Render`]ed as a
//! table for people or, with `--json`, as JSON for scripts, and printed
//! with [`emit`]. Standard output closing early (`| head`) ends the command
//! quietly ([`BrokenPipe`]), as Unix tools do.

use std::io::{IsTerminal, Write};

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// A report for people and for scripts.
pub trait Render {
    /// The JSON form (`--json`).
    fn json(&self) -> serde_json::Result<serde_json::Value>;
    /// The text form: tables and lines, ending in a newline.
    fn text(&self) -> String;
}

/// Standard output was closed by its reader; not an error for the user.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct BrokenPipe;

/// Prints `report` as JSON or text.
pub fn emit(report: &dyn Render, json: bool) -> anyhow::Result<()> {
    if json {
        let mut s = serde_json::to_string_pretty(&report.json()?)?;
        s.push('\n');
        print(&s)
    } else {
        print(&report.text())
    }
}

/// Writes `s` to standard output.
pub fn print(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        r => Ok(r?),
    }
}

/// Prints the warnings of a report on standard error.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// The one table style: box drawing on a terminal, plain ASCII otherwise
/// (files, pipes, logs), fitted to [`width`] when it is known.
pub fn table() -> Table {
    let mut t = Table::new();
    let tty = std::io::stdout().is_terminal();
    t.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_FULL_CONDENSED
    })
    .set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width() {
        t.set_width(w.min(u16::MAX as usize) as u16);
    }
    t
}

/// The width text should fit: `COLUMNS` when set (as shells export it),
/// else the terminal's when standard output is one, else unknown.
pub fn width() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(|| Table::new().width().map(usize::from))
}

/// `text` broken at spaces into lines of at most `width` characters (a
/// longer word keeps its own line), each after `indent`, continued lines
/// after `indent` and two more spaces, each but the last ending in `join`
/// (`" \\"` continues a shell command).
pub fn wrap(text: &str, width: usize, indent: &str, join: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = indent.to_string();
    let mut fresh = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let room = width.saturating_sub(join.len());
        if !fresh && line.chars().count() + 1 + word.chars().count() > room {
            lines.push(std::mem::replace(&mut line, format!("{indent}  ")));
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    lines.push(line);
    lines.join(&format!("{join}\n"))
}

/// Right-aligns the given columns (numbers).
pub fn align_right(t: &mut Table, cols: &[usize]) {
    for &c in cols {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// A two-column table of a flat JSON object (summaries such as `lora inspect`).
pub fn json_table(v: &serde_json::Value) -> String {
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

/// A JSON value that renders as a two-column table.
pub struct JsonSummary(pub serde_json::Value);

impl Render for JsonSummary {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        Ok(self.0.clone())
    }
    fn text(&self) -> String {
        json_table(&self.0)
    }
}

/// Prints the warnings, then the report of a command that writes.
pub fn emit_written<R>(report: R, w: super::args::WriteArgs) -> anyhow::Result<()>
where
    R: WrittenLine,
    Written<R>: Render,
{
    warn(report.warnings());
    emit(
        &Written {
            report,
            dry_run: w.dry_run,
        },
        w.json,
    )
}

/// The one line a writing command prints about its report, given "wrote"
/// or "would write".
pub trait WrittenLine {
    fn line(&self, verb: &str) -> String;
    /// What the command warns about, printed on stderr before the report.
    fn warnings(&self) -> &[String];
}

impl<R: serde::Serialize + WrittenLine> Render for Written<R> {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.report)
    }
    fn text(&self) -> String {
        self.report.line(self.verb())
    }
}

/// The report of a command that writes, and whether it only planned.
pub struct Written<R> {
    pub report: R,
    pub dry_run: bool,
}

impl<R> Written<R> {
    /// "wrote" or "would write".
    pub fn verb(&self) -> &'static str {
        if self.dry_run {
            "would write"
        } else {
            "wrote"
        }
    }
}
