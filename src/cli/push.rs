//! `llmtool push`: arguments → [`crate::ops::push`] → a table of the files
//! (sent, unchanged, LFS or regular) or JSON.

use anyhow::{Context, Result};

use super::output::{self, align_right, table, Render};
use crate::hub::repo::RepoId;
use crate::hub::upload::Mode;
use crate::hub::Hub;
use crate::ops::push::{self, CardAction, PushOptions, PushReport};
use crate::units::human_bytes;

/// Upload a model directory (or one GGUF file) to a Hugging Face Hub repo
/// as one commit.
///
/// Creates the repo if needed, sends large files through LFS (sha256 in
/// parallel, multipart when the Hub asks), skips files the Hub already has
/// (a rerun after a failure sends only what is missing; a rerun with
/// nothing changed makes no commit), and writes a model card when the
/// directory has none. The token comes from --token, HF_TOKEN,
/// HF_TOKEN_PATH or $HF_HOME/token; HF_ENDPOINT selects a mirror or a
/// private hub. The token is never printed.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool push ./spinoza-awq --repo my-org/spinoza-qwen2.5-14b-awq\n  \
    llmtool push ./spinoza-Q4_K_M.gguf --repo my-org/spinoza-qwen2.5-14b-Q4_K_M-GGUF --private\n  \
    llmtool push ./spinoza-awq --repo my-org/spinoza-awq --dry-run --json\n  \
    llmtool push ./kant-gptq --repo my-org/kant-gptq --revision nightly --exclude '*.json.bak'\n  \
    llmtool push ./kant-gptq --repo my-org/kant-gptq --card-only")]
pub struct Args {
    /// Model directory, or one file (a GGUF file pushes alone).
    path: std::path::PathBuf,
    /// Target repo, ORG/NAME (created if missing).
    #[arg(long)]
    repo: String,
    /// Branch to commit to (created from the default branch if missing).
    #[arg(long, default_value = "main")]
    revision: String,
    /// Create the repo private (an existing repo keeps its visibility).
    #[arg(long)]
    private: bool,
    /// Open a pull request instead of committing to the branch.
    #[arg(long)]
    create_pr: bool,
    /// Commit message (default: "Upload NAME with llmtool").
    #[arg(long, short)]
    message: Option<String>,
    /// Push only paths matching this fnmatch pattern (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Leave out paths matching this fnmatch pattern (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Regenerate README.md (replacing the one there) and push only it.
    #[arg(long)]
    card_only: bool,
    /// List what would be uploaded (sizes, LFS or regular, unchanged) and upload nothing.
    #[arg(long)]
    dry_run: bool,
    /// Hub token (default: HF_TOKEN, HF_TOKEN_PATH, $HF_HOME/token).
    #[arg(long, hide_env_values = true)]
    token: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let repo = RepoId::parse(&a.repo)?;
    let hub = Hub::from_env(a.token.as_deref())?;
    if crate::hub::download::offline() && !a.dry_run {
        anyhow::bail!("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run)");
    }
    if !a.dry_run && !hub.has_token() {
        anyhow::bail!(
            "pushing needs a Hub token with write access: set HF_TOKEN, pass --token, or log in with `hf auth login`"
        );
    }
    let opts = PushOptions {
        path: a.path.clone(),
        repo,
        revision: a.revision,
        private: a.private,
        create_pr: a.create_pr,
        message: a.message,
        include: a.include,
        exclude: a.exclude,
        card_only: a.card_only,
        dry_run: a.dry_run,
        progress: !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = push::push(&hub, &opts)
        .with_context(|| format!("cannot push {} to {}", a.path.display(), a.repo))?;
    output::emit(&report, a.json)
}

impl Render for PushReport {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn text(&self) -> String {
        let mut t = table();
        t.set_header(["file", "size", "storage", "status"]);
        for f in &self.files {
            let status = match (f.ignored, f.unchanged, self.dry_run) {
                (true, _, _) => "ignored by the repo",
                (_, true, _) => "unchanged",
                (_, false, true) => "would upload",
                (_, false, false) => "uploaded",
            };
            let mode = match f.mode {
                Mode::Lfs => "LFS",
                Mode::Regular => "regular",
            };
            t.add_row([
                f.path.clone(),
                human_bytes(f.size),
                mode.into(),
                status.into(),
            ]);
        }
        align_right(&mut t, &[1]);
        let card = match self.card {
            CardAction::Kept => "README.md kept",
            CardAction::Written => "README.md written (model card)",
            CardAction::Generated => "model card generated for the upload",
            CardAction::WouldWrite => "a model card would be written",
        };
        let head = format!(
            "{} {}@{} ({}): {} files, {}, {} new or changed; {card}\n",
            if self.dry_run {
                "dry run for"
            } else {
                "pushed to"
            },
            self.repo,
            self.revision,
            self.endpoint,
            self.files.len(),
            human_bytes(self.total_bytes),
            human_bytes(self.changed_bytes),
        );
        let tail = match &self.pushed {
            None => String::new(),
            Some(p) => match (&p.commit_url, &p.pull_request_url) {
                (_, Some(pr)) => format!("pull request: {pr}\n"),
                (Some(c), None) => format!(
                    "commit: {c} ({} LFS objects uploaded, {} already on the Hub)\n",
                    p.lfs_uploaded, p.lfs_already_there
                ),
                (None, None) => "nothing changed: no commit made\n".into(),
            },
        };
        format!("{head}{t}\n{tail}")
    }
}
