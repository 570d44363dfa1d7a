//! Progress bars on stderr for long jobs (indicatif), one style for all
//! commands; hidden when not asked for (`--json`, tests, pipes). A run of
//! several operations at once (`llmtool run`) gathers every bar into one
//! view with [`share`].

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The one view every bar joins once set.
static VIEW: OnceLock<MultiProgress> = OnceLock::new();

/// Makes every bar drawn from now on part of one [`MultiProgress`] (the
/// operations of `llmtool run` draw theirs from worker threads), and
/// returns it.
pub fn share() -> &'static MultiProgress {
    VIEW.get_or_init(MultiProgress::new)
}

/// A bar shown (in the shared view when there is one) or hidden.
fn shown(show: bool, total: u64) -> ProgressBar {
    match (show, VIEW.get()) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(v)) => v.add(ProgressBar::new(total)),
        (true, None) => ProgressBar::new(total),
    }
}

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
    let bar = shown(show, total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {verb} [{{bar:30}}] {counter} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}
