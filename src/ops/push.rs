//! `push`: a model directory (or one GGUF file) to a Hub repo as one
//! commit, with a model card when the directory has none. The protocol is
//! [`crate::hub::upload`]'s; this module decides which files go, writes
//! the card and reports what was (or, in a dry run, would be) sent.
//!
//! Files are chosen as huggingface_hub's `upload_folder` chooses them:
//! every file under the directory except `.git/` and `.cache/huggingface/`
//! (and llmtool's own unfinished `.partial` outputs), filtered by
//! `--include` / `--exclude` patterns matched fnmatch-style against the
//! path in the repo (`*` crosses `/`, as Python's `fnmatch` does).
//!
//! The card (when there is no README.md, or with `--card-only`) is built
//! from what the files say: the config's or GGUF's base model, its
//! quantization, the licence of the base when its card is cached, eval
//! results saved beside the model (`eval*.json`, the `--json` output of
//! `llmtool eval ppl|kld`), and a `vram-plan` table for the usual GPUs.
//! Upstream: the Hub's model card metadata (hub-docs `model-cards.md`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hub::repo::{self, RepoId};
use crate::hub::upload::{self, Addition, Planned, Pushed, Source, Target};
use crate::hub::Hub;
use crate::ops::vram::{self, request};
use crate::ops::{Error, Result};
use crate::store::card::{self, ModelCard};
use crate::store::{atomic, Model};

/// What to push where.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// A model directory, or one file (a GGUF pushes alone).
    pub path: PathBuf,
    pub repo: RepoId,
    /// Branch to commit to (created from the default branch if missing).
    pub revision: String,
    pub private: bool,
    pub create_pr: bool,
    pub message: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Regenerate README.md (replacing one that exists) and push only it.
    pub card_only: bool,
    pub dry_run: bool,
    pub progress: bool,
}

/// What happened to the model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardAction {
    /// The directory's README.md is pushed as it is.
    Kept,
    /// Written into the directory (none existed, or `--card-only`).
    Written,
    /// Made for the upload only (a single file was pushed).
    Generated,
    /// A dry run would write one.
    WouldWrite,
}

/// What `push` did or would do.
#[derive(Debug, Serialize)]
pub struct PushReport {
    pub repo: String,
    pub revision: String,
    pub endpoint: String,
    pub dry_run: bool,
    pub card: CardAction,
    /// The card llmtool made (absent when the directory's is kept).
    pub card_text: Option<String>,
    pub files: Vec<Planned>,
    pub total_bytes: u64,
    /// Bytes of files that are new or changed.
    pub changed_bytes: u64,
    /// Absent in a dry run.
    pub pushed: Option<Pushed>,
}

/// Patterns huggingface_hub's `upload_folder` always leaves out.
fn always_ignored(path: &str) -> bool {
    path.split('/').any(|c| c == ".git")
        || path == ".cache/huggingface"
        || path.starts_with(".cache/huggingface/")
        || path.contains("/.cache/huggingface/")
}

/// fnmatch without character classes: `*` any run (including `/`), `?`
/// one character.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf, u64)>) -> Result<()> {
    let io = |e: std::io::Error| Error::Refused(format!("{}: {e}", dir.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path_in_repo = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        let meta = std::fs::metadata(&p).map_err(io)?;
        if meta.is_dir() {
            if !always_ignored(&path_in_repo) {
                walk(&p, &path_in_repo, out)?;
            }
        } else if meta.is_file()
            && !always_ignored(&path_in_repo)
            && !(name.starts_with('.') && name.ends_with(".partial"))
        {
            out.push((path_in_repo, p, meta.len()));
        }
    }
    Ok(())
}

/// The files to push, before any card is added.
fn collect(o: &PushOptions) -> Result<Vec<Addition>> {
    let meta = std::fs::metadata(&o.path)
        .map_err(|e| Error::Refused(format!("{}: {e}", o.path.display())))?;
    let mut found = Vec::new();
    if meta.is_dir() {
        walk(&o.path, "", &mut found)?;
    } else {
        let name = o
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((name, o.path.clone(), meta.len()));
    }
    let kept = found.into_iter().filter(|(rel, _, _)| {
        (o.include.is_empty() || o.include.iter().any(|p| fnmatch(p, rel)))
            && !o.exclude.iter().any(|p| fnmatch(p, rel))
    });
    Ok(kept
        .map(|(path_in_repo, p, size)| Addition {
            path_in_repo,
            source: Source::File(p),
            size,
        })
        .collect())
}

/// Pushes (or plans) `o` with `hub`.
pub fn push(hub: &Hub, o: &PushOptions) -> Result<PushReport> {
    let is_dir = o.path.is_dir();
    let mut additions = collect(o)?;
    if additions.is_empty() {
        return Err(Error::Refused(format!(
            "{}: no files to push (check --include/--exclude)",
            o.path.display()
        )));
    }
    let readme = o.path.join("README.md");
    let has_card = is_dir && readme.is_file();
    let card_action = match (is_dir, has_card && !o.card_only, o.dry_run) {
        (true, true, _) => CardAction::Kept,
        (false, _, _) => CardAction::Generated,
        (true, false, true) => CardAction::WouldWrite,
        (true, false, false) => CardAction::Written,
    };
    let mut card_text = None;
    if card_action != CardAction::Kept {
        let old = has_card
            .then(|| std::fs::read_to_string(&readme).ok())
            .flatten();
        let text = model_card(
            &o.path,
            &o.repo.to_string(),
            old.as_deref(),
            &CardPlan::default(),
        )?;
        card_text = Some(text.clone());
        if card_action == CardAction::Written {
            atomic::replace_file(&readme, text.as_bytes())?;
        }
        additions.retain(|a| a.path_in_repo != "README.md");
        additions.push(Addition {
            path_in_repo: "README.md".into(),
            size: text.len() as u64,
            source: match card_action {
                CardAction::Written => Source::File(readme.clone()),
                _ => Source::Bytes(text.into_bytes()),
            },
        });
    }
    if o.card_only {
        additions.retain(|a| a.path_in_repo == "README.md");
    }
    additions.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
    let target = Target {
        repo: o.repo.clone(),
        revision: o.revision.clone(),
        create_pr: o.create_pr,
    };
    if !o.dry_run {
        repo::create(hub, &o.repo, o.private)?;
        if o.revision != "main" {
            repo::ensure_branch(hub, &o.repo, &o.revision)?;
        }
    }
    let bar = crate::progress::bytes_bar(o.progress, 0, "hashing");
    let files = upload::plan(hub, &target, additions, !o.dry_run, &bar)?;
    bar.finish_and_clear();
    let total_bytes = files.iter().map(|f| f.size).sum();
    let changed_bytes = files
        .iter()
        .filter(|f| !f.unchanged && !f.ignored)
        .map(|f| f.size)
        .sum();
    let pushed = if o.dry_run {
        None
    } else {
        let bar = crate::progress::bytes_bar(o.progress, 0, "uploading");
        let summary = o
            .message
            .clone()
            .unwrap_or_else(|| format!("Upload {} with llmtool", display_name(&o.path)));
        let description = format!("Pushed by llmtool {}", env!("CARGO_PKG_VERSION"));
        let p = upload::push(hub, &target, &files, &summary, &description, &bar)?;
        bar.finish_and_clear();
        Some(p)
    };
    Ok(PushReport {
        repo: o.repo.to_string(),
        revision: o.revision.clone(),
        endpoint: hub.endpoint().to_string(),
        dry_run: o.dry_run,
        card: card_action,
        card_text,
        files,
        total_bytes,
        changed_bytes,
        pushed,
    })
}

fn display_name(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A repo id inside a Hub URL or a config's `_name_or_path`, if any.
fn repo_id_in(s: &str) -> Option<String> {
    let s = s.trim_end_matches('/');
    let tail: Vec<&str> = s.rsplit('/').take(2).collect();
    let id = match tail.as_slice() {
        [name, org] => format!("{org}/{name}"),
        _ => return None,
    };
    (RepoId::parse(&id).is_ok() && !Path::new(s).exists()).then_some(id)
}

/// What the card says about the model, read from its files.
struct Facts {
    base_model: Option<String>,
    /// `quantized` when the weights are, else none (the Hub infers).
    relation: Option<&'static str>,
    library: &'static str,
    tags: Vec<String>,
    format: String,
    license: Option<String>,
}

fn facts(path: &Path, model: &Model) -> Facts {
    let mut tags = vec!["llmtool".to_string()];
    if let Some(meta) = &model.gguf {
        let base = meta
            .str("general.base_model.0.repo_url")
            .or_else(|| meta.str("general.source.repo_url"))
            .and_then(repo_id_in);
        let ftype = model
            .tensors()
            .iter()
            .filter(|t| t.name.ends_with("ffn_down.weight"))
            .map(|t| format!("{:?}", t.dtype))
            .next()
            .unwrap_or_default();
        tags.push("gguf".into());
        let quantized = !matches!(ftype.as_str(), "F32" | "F16" | "BF16" | "");
        if !ftype.is_empty() {
            tags.push(ftype.clone());
        }
        return Facts {
            base_model: base,
            relation: quantized.then_some("quantized"),
            library: "gguf",
            tags,
            format: format!("GGUF ({})", if ftype.is_empty() { "?" } else { &ftype }),
            license: meta.str("general.license").map(str::to_string),
        };
    }
    let config = model.config.clone().unwrap_or_default();
    let method = config
        .pointer("/quantization_config/quant_method")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    let base = config
        .get("_name_or_path")
        .and_then(|n| n.as_str())
        .and_then(repo_id_in)
        .or_else(|| {
            // A directory inside the cache names its repo.
            let b = card::base_model_id(&path.to_string_lossy(), path);
            RepoId::parse(&b).is_ok().then_some(b)
        });
    if let Some(m) = &method {
        tags.push(m.clone());
    }
    Facts {
        base_model: base,
        relation: method.is_some().then_some("quantized"),
        library: "transformers",
        tags,
        format: match &method {
            Some(m) => format!("safetensors ({m})"),
            None => "safetensors".into(),
        },
        license: None,
    }
}

/// The licence in a cached card of `base` (its front matter), if any.
fn cached_license(base: &str) -> Option<String> {
    let snap =
        crate::store::hf_cache::snapshot_dir(&crate::store::hf_cache::cache_dir(), base).ok()?;
    let text = std::fs::read_to_string(snap.join("README.md")).ok()?;
    front_matter_value(&text, "license")
}

/// `key: value` from a card's front matter.
fn front_matter_value(card: &str, key: &str) -> Option<String> {
    let front = card.strip_prefix("---\n")?.split("\n---").next()?;
    front.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?.trim();
        (!v.is_empty()).then(|| v.trim_matches('"').to_string())
    })
}

/// The vram-plan rows for `plan`'s GPUs and context.
fn vram_table(spec: &str, plan: &CardPlan) -> Option<String> {
    let req = request::Request {
        model: spec.to_string(),
        formats: vec![vram::DeployFormat::Native],
        runtime: None,
        gpus: request::Gpus::Named(plan.gpus.clone()),
        catalog: None,
        options: vram::Options {
            ctx: plan.ctx,
            ..vram::Options::default()
        },
        recommend: None,
    };
    let report = request::run(&req).ok()?;
    let request::Answer::Plans { plans, .. } = report.answer else {
        return None;
    };
    let ctx = if plan.ctx % 1024 == 0 {
        format!("{}k", plan.ctx / 1024)
    } else {
        plan.ctx.to_string()
    };
    let mut t = format!(
        "| GPU | engine | fits at {ctx} context | users at {ctx} | longest context (1 user) |\n|---|---|---|---|---|\n",
    );
    for p in &plans {
        t += &format!(
            "| {} | {:?} | {} | {} | {} |\n",
            p.gpu,
            p.engine,
            if p.fits { "yes" } else { "no" },
            p.max_users,
            p.max_ctx
        );
    }
    Some(t)
}

/// Eval results saved beside the model (`eval*.json`).
fn eval_lines(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("eval") && n.ends_with(".json")
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let Some(v) = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let ctx = v.get("ctx").and_then(|c| c.as_u64()).unwrap_or(0);
        let file = p.file_name().unwrap_or_default().to_string_lossy();
        if let (Some(kld), Some(base), Some(other)) = (f("kld_mean"), f("ppl_base"), f("ppl_other"))
        {
            let top1 = f("top1_agreement").map_or(String::new(), |t| format!("{:.2} %", t * 100.0));
            out.push(format!(
                "| {file} | {other:.4} | {base:.4} | {:+.2} % | {kld:.5} | {top1} | {ctx} |",
                (other / base - 1.0) * 100.0
            ));
        } else if let Some(ppl) = f("ppl") {
            out.push(format!("| {file} | {ppl:.4} | | | | | {ctx} |"));
        }
    }
    out
}

/// Where the sections `push` generates start; a regenerated card replaces
/// everything after it and keeps what an earlier writer put before it.
const GENERATED: &str = "<!-- llmtool push: generated below, replaced by --card-only -->";

/// A card's front matter as top-level entries (key, raw lines), and its body.
fn split_card(text: &str) -> (Vec<(String, String)>, String) {
    let Some(rest) = text.strip_prefix("---\n") else {
        return (vec![], text.to_string());
    };
    let Some(end) = rest.find("\n---") else {
        return (vec![], text.to_string());
    };
    let (front, body) = (&rest[..end + 1], &rest[end + 4..]);
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in front.lines() {
        let top = !line.starts_with([' ', '-', '\t']) && line.contains(':');
        match entries.last_mut() {
            Some((_, raw)) if !top => {
                raw.push_str(line);
                raw.push('\n');
            }
            _ => {
                let key = line.split(':').next().unwrap_or("").trim().to_string();
                entries.push((key, format!("{line}\n")));
            }
        }
    }
    (entries, body.trim_start_matches('\n').to_string())
}

/// The `- item` values of a list entry.
fn list_items(raw: &str) -> Vec<String> {
    raw.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect()
}

/// The GPUs and context of a card's VRAM table.
#[derive(Debug, Clone)]
pub struct CardPlan {
    /// Comma-separated GPU names as `vram-plan --gpu` takes them.
    pub gpus: String,
    pub ctx: u64,
}

impl Default for CardPlan {
    /// The usual GPUs at 4k context.
    fn default() -> Self {
        CardPlan {
            gpus: request::DEFAULT_GPUS.into(),
            ctx: 4096,
        }
    }
}

/// The card for the model at `path`, titled `repo` (the repo it goes to).
/// An earlier card (`old`, e.g. the one `quantize` or `lora merge` wrote,
/// with its provenance) keeps its text and front matter; the Hub metadata
/// llmtool knows is set, and the quality and VRAM sections are
/// (re)generated, the VRAM table for `plan`'s GPUs and context.
pub fn model_card(path: &Path, repo: &str, old: Option<&str>, plan: &CardPlan) -> Result<String> {
    let spec = path.to_string_lossy().into_owned();
    let model = Model::open(&spec)?;
    let f = facts(path, &model);
    let (old_front, old_body) = old.map(split_card).unwrap_or_default();
    let old_entry = |k: &str| {
        old_front
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, raw)| raw.clone())
    };
    let old_value = |k: &str| old.and_then(|o| front_matter_value(o, k));
    let base = f.base_model.clone().or_else(|| old_value("base_model"));
    let mut c = ModelCard::new();
    match (&f.base_model, old_entry("base_model")) {
        (Some(b), _) => {
            c.text("base_model", b);
        }
        (None, Some(raw)) => {
            c.raw(&raw);
        }
        (None, None) => {}
    }
    let relation = f
        .relation
        .map(str::to_string)
        .or_else(|| old_value("base_model_relation"));
    if let Some(r) = &relation {
        c.field("base_model_relation", r);
    }
    c.field("library_name", f.library)
        .field("pipeline_tag", "text-generation");
    let mut tags = f.tags.clone();
    for t in old_entry("tags")
        .map(|r| list_items(&r))
        .unwrap_or_default()
    {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    c.list("tags", &tags);
    match old_entry("license") {
        Some(raw) => {
            c.raw(&raw);
        }
        None => {
            let license = f
                .license
                .clone()
                .or_else(|| base.as_deref().and_then(cached_license));
            if let Some(l) = &license {
                c.text("license", l);
            }
        }
    }
    const SET: &[&str] = &[
        "base_model",
        "base_model_relation",
        "library_name",
        "pipeline_tag",
        "tags",
        "license",
    ];
    for (key, raw) in &old_front {
        if !SET.contains(&key.as_str()) {
            c.raw(raw);
        }
    }
    let kept = old_body.split(GENERATED).next().unwrap_or("").trim_end();
    let mut body = if kept.is_empty() {
        format!(
            "# {repo}\n\n{} weights, {} tensors, {} on disk{}.",
            f.format,
            model.tensors().len(),
            crate::units::human_bytes(model.bytes_on_disk()),
            match &base {
                Some(b) => format!(", made from [{b}](https://huggingface.co/{b})"),
                None => String::new(),
            }
        )
    } else {
        kept.to_string()
    };
    body += &format!("\n\n{GENERATED}\n\n");
    let evals = if path.is_dir() {
        eval_lines(path)
    } else {
        vec![]
    };
    if !evals.is_empty() {
        body += "## Quality\n\n| result | perplexity | base perplexity | vs base | KLD vs base | top-1 agreement | context |\n|---|---|---|---|---|---|---|\n";
        body += &evals.join("\n");
        body += "\n\n";
    }
    if let Some(t) = vram_table(&spec, plan) {
        body += "## Will it fit (llmtool vram-plan)\n\n";
        body += &t;
        body += "\n";
    }
    body += &format!(
        "Sections below the marker written by llmtool {}.\n",
        env!("CARGO_PKG_VERSION")
    );
    c.body(&body);
    Ok(c.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_pythons() {
        assert!(fnmatch("*.safetensors", "model.safetensors"));
        assert!(fnmatch("*.json", "sub/config.json"));
        assert!(fnmatch("model-?.bin", "model-1.bin"));
        assert!(!fnmatch("*.json", "config.jsonl"));
        assert!(fnmatch("*", ""));
    }

    #[test]
    fn git_and_cache_folders_are_never_pushed() {
        assert!(always_ignored(".git/config"));
        assert!(always_ignored("a/.git/x"));
        assert!(always_ignored(".cache/huggingface/upload/x"));
        assert!(!always_ignored("gitignore.txt"));
    }

    #[test]
    fn cards_split_into_entries_and_body() {
        let (front, body) = split_card(
            "---\nbase_model: \"a/b\"\ntags:\n- x\n- y\nadapters:\n- path: \"p\"\n  sha256: 00\n---\n\n# T\n",
        );
        let keys: Vec<&str> = front.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["base_model", "tags", "adapters"]);
        assert_eq!(list_items(&front[1].1), ["x", "y"]);
        assert_eq!(front[2].1, "adapters:\n- path: \"p\"\n  sha256: 00\n");
        assert_eq!(body, "# T\n");
    }

    #[test]
    fn front_matter_values() {
        let card = "---\nlicense: apache-2.0\nbase_model: \"a/b\"\n---\n# x\nlicense: no\n";
        assert_eq!(
            front_matter_value(card, "license").as_deref(),
            Some("apache-2.0")
        );
        assert_eq!(
            front_matter_value(card, "base_model").as_deref(),
            Some("a/b")
        );
        assert_eq!(front_matter_value(card, "tags"), None);
    }
}
