//! Progress bars on stderr for long jobs (indicatif), one style for all
//! commands; hidden when not asked for (`--json`, tests, pipes).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` bytes labelled `verb` ("merging", "quantizing"…), with
/// the current tensor as its message.
pub fn bytes_bar(show: bool, total: u64, verb: &str) -> ProgressBar {
    bar(show, total, verb, "{bytes}/{total_bytes} {bytes_per_sec}")
}

/// A bar over `total` items of `unit` ("chunk"), labelled `verb`.
pub fn count_bar(show: bool, total: u64, verb: &str, unit: &str) -> ProgressBar {
    bar(show, total, verb, &format!("{unit} {{pos}}/{{len}}"))
}

fn bar(show: bool, total: u64, verb: &str, counter: &str) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {verb} [{{bar:30}}] {counter} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}
