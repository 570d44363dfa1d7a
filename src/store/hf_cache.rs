//! The local Hugging Face Hub cache, laid out as huggingface_hub's
//! `file_download.py` / `constants.py` write it:
//! `$HF_HUB_CACHE/models--ORG--NAME/{refs/REV, snapshots/COMMIT/...}`.
//!
//! The cache root is `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`,
//! else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`.

use std::path::{Component, Path, PathBuf};

use super::{clip, Result, StoreError};

/// The hub cache directory from the environment.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    let base = var("XDG_CACHE_HOME").unwrap_or_else(|| {
        var("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
    });
    base.join("huggingface").join("hub")
}

/// Whether `spec` looks like a Hub repo id (`org/name`, optional `@revision`).
pub fn is_repo_id(spec: &str) -> bool {
    let id = spec.split_once('@').map_or(spec, |(id, _)| id);
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(id.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

/// Whether `s` is a commit hash as the cache names snapshots: 40 hex digits.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `org/name[@revision]` to its snapshot directory in `cache`.
/// The revision defaults to `main`; a 40-hex commit hash is used directly,
/// anything else is looked up in `refs/`. Neither the revision nor what a
/// ref file holds may lead outside the repository's directory.
pub fn snapshot_dir(cache: &Path, spec: &str) -> Result<PathBuf> {
    let (id, rev) = spec.split_once('@').unwrap_or((spec, "main"));
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let how = "download it first, e.g. `hf download ".to_string()
        + id
        + "` (honours HF_HOME / HF_HUB_CACHE)";
    if !repo.is_dir() {
        return Err(StoreError::NotFound(format!(
            "'{spec}' is not a file or directory, and the Hugging Face cache has no {}; {how}",
            repo.display()
        )));
    }
    let commit = if is_commit(rev) {
        rev.to_string()
    } else {
        // Branch and tag names may hold '/', never '..' or a root.
        if rev.is_empty()
            || !Path::new(rev)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(StoreError::NotFound(format!(
                "'{spec}': '{rev}' is not a revision name (a branch, tag or 40-hex commit hash)"
            )));
        }
        let r = repo.join("refs").join(rev);
        let text = std::fs::read_to_string(&r).map_err(|_| {
            StoreError::NotFound(format!(
                "{}: no cached revision '{rev}' for {id} ({} is missing); {how}",
                repo.display(),
                r.display()
            ))
        })?;
        let commit = text.trim();
        if !is_commit(commit) {
            return Err(StoreError::invalid(
                &r,
                format!(
                    "holds '{}', not a 40-hex commit hash: this cache entry is damaged; \
                     remove {} and download it again",
                    clip(commit),
                    repo.display()
                ),
            ));
        }
        commit.to_string()
    };
    let snap = repo.join("snapshots").join(&commit);
    if !snap.is_dir() {
        return Err(StoreError::NotFound(format!(
            "{}: revision '{rev}' points to commit {commit}, whose snapshot is missing; {how}",
            repo.display()
        )));
    }
    Ok(snap)
}
