//! `fragments.json`: what `fragment split` wrote and how, so that a peer
//! can check its copy (`fragment verify`) before it starts serving.
//!
//! Fields (schema `llmtool.fragments/1`): the llmtool version; the source
//! (path, bytes on disk, container); how it was split (mode and its limit
//! or layer counts); the placement `plan` it was made for (a JSON object,
//! or null); the parts (each shard or stage directory with its layer range
//! when it holds layers); every file's path relative to the manifest, size
//! and sha256.

use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{LayerRange, SplitMode, SplitOptions};
use crate::ops::{Error, Result};
use crate::progress;
use crate::store::{atomic, read_json, sha256_file, Container, Model, StoreError};

/// The manifest's file name in the output directory.
pub const MANIFEST_FILE: &str = "fragments.json";
/// Version tag of the manifest.
pub const SCHEMA: &str = "llmtool.fragments/1";

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub llmtool: String,
    pub source: Source,
    pub split: SplitInfo,
    /// The placement plan (`fragment plan --json`) the pieces are for.
    pub plan: Option<serde_json::Value>,
    pub parts: Vec<Part>,
    pub files: Vec<FileEntry>,
}

/// The model that was split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    /// Bytes of all its files.
    pub size: u64,
    pub container: Container,
}

/// How the model was split: `mode` is `max-size`, `max-tensors` or
/// `by-layer`, with its one parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitInfo {
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tensors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<u64>>,
}

impl SplitInfo {
    pub(super) fn of(mode: &SplitMode) -> SplitInfo {
        let (name, max_size, max_tensors, layers) = match mode {
            SplitMode::MaxSize(b) => ("max-size", Some(*b), None, None),
            SplitMode::MaxTensors(n) => ("max-tensors", None, Some(*n), None),
            SplitMode::ByLayer(c) => ("by-layer", None, None, Some(c.clone())),
        };
        SplitInfo {
            mode: name.into(),
            max_size,
            max_tensors,
            layers,
        }
    }
}

/// One piece: a GGUF shard or a stage directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub path: String,
    /// The decoder layers it holds; null when it holds none.
    pub layers: Option<LayerRange>,
    pub tensors: usize,
    /// Tensor bytes.
    pub bytes: u64,
}

/// One file, relative to the manifest's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// The manifest of a split of `model` into `parts`, before any file is
    /// written (what a dry run reports).
    pub(super) fn planned(model: &Model, opts: &SplitOptions, parts: Vec<Part>) -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            llmtool: env!("CARGO_PKG_VERSION").into(),
            source: Source {
                path: model.root.display().to_string(),
                size: model.bytes_on_disk(),
                container: model.container,
            },
            split: SplitInfo::of(&opts.mode),
            plan: opts.plan.clone(),
            parts,
            files: Vec::new(),
        }
    }

    /// Hashes `files` (relative to `dir`) in parallel, records them and
    /// writes the manifest into `dir`.
    pub(super) fn write(
        mut self,
        dir: &Path,
        files: Vec<String>,
        show_progress: bool,
    ) -> Result<Manifest> {
        let total = files
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum();
        let bar = progress::bytes_bar(show_progress, total, "hashing");
        self.files = files
            .into_par_iter()
            .map(|f| {
                let p = dir.join(&f);
                let sha256 = sha256_file(&p, &|n| bar.inc(n))?;
                let size = std::fs::metadata(&p)
                    .map_err(|e| StoreError::Io { path: p, source: e })?
                    .len();
                Ok(FileEntry {
                    path: f,
                    size,
                    sha256,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        bar.finish_and_clear();
        let mut text = serde_json::to_string_pretty(&self).expect("the manifest serializes");
        text.push('\n');
        atomic::write_file(&dir.join(MANIFEST_FILE), text.as_bytes())?;
        Ok(self)
    }

    /// Reads `dir/fragments.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(Error::Refused(format!(
                "{}: no {MANIFEST_FILE} here; verify takes the directory `llmtool fragment split` wrote",
                dir.display()
            )));
        }
        let v = read_json(&path)?;
        let m: Manifest = serde_json::from_value(v).map_err(|e| {
            Error::Refused(format!(
                "{}: not an llmtool fragments manifest ({e})",
                path.display()
            ))
        })?;
        if m.schema != SCHEMA {
            return Err(Error::Refused(format!(
                "{}: schema '{}', this llmtool reads '{SCHEMA}'",
                path.display(),
                m.schema
            )));
        }
        // A copied manifest names files under its own directory only.
        if let Some(f) = m.files.iter().find(|f| !inside(&f.path)) {
            return Err(Error::Refused(format!(
                "{}: file path '{}' leaves the manifest's directory",
                path.display(),
                f.path
            )));
        }
        Ok(m)
    }
}

/// A relative path without `..`.
fn inside(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The state of one file against the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Ok,
    Mismatch,
    Missing,
}

/// One file checked.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub path: String,
    pub status: FileStatus,
    pub size: u64,
    pub expected_size: u64,
    /// The file's sha256 (null when missing, or when its size already
    /// differs).
    pub sha256: Option<String>,
}

/// What `fragment verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub ok: bool,
    pub files: Vec<FileCheck>,
}

impl VerifyReport {
    /// The files that are not as the manifest says.
    pub fn bad(&self) -> impl Iterator<Item = &FileCheck> {
        self.files.iter().filter(|f| f.status != FileStatus::Ok)
    }
}

/// Checks every file `dir/fragments.json` lists: present, same size, same
/// sha256 (hashed in parallel).
pub fn verify(dir: &Path, show_progress: bool) -> Result<VerifyReport> {
    let m = Manifest::read(dir)?;
    let total = m.files.iter().map(|f| f.size).sum();
    let bar = progress::bytes_bar(show_progress, total, "verifying");
    let files = m
        .files
        .par_iter()
        .map(|f| {
            let p = dir.join(&f.path);
            let size = match std::fs::metadata(&p) {
                Ok(md) if md.is_file() => md.len(),
                _ => {
                    return Ok(FileCheck {
                        path: f.path.clone(),
                        status: FileStatus::Missing,
                        size: 0,
                        expected_size: f.size,
                        sha256: None,
                    })
                }
            };
            let sha256 = if size == f.size {
                Some(sha256_file(&p, &|n| bar.inc(n))?)
            } else {
                bar.inc(f.size);
                None
            };
            let status = if sha256.as_deref() == Some(f.sha256.as_str()) {
                FileStatus::Ok
            } else {
                FileStatus::Mismatch
            };
            Ok(FileCheck {
                path: f.path.clone(),
                status,
                size,
                expected_size: f.size,
                sha256,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    bar.finish_and_clear();
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        ok: files.iter().all(|f| f.status == FileStatus::Ok),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_names_files_under_its_directory_only() {
        assert!(inside("stage-1-of-2/model.safetensors"));
        assert!(inside("./m-00001-of-00002.gguf"));
        assert!(!inside("../elsewhere.gguf"));
        assert!(!inside("/etc/passwd"));
        assert!(!inside("stage-1-of-2/../../x"));
    }

    #[test]
    fn verify_refuses_a_manifest_that_leaves_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = serde_json::json!({
            "schema": SCHEMA, "llmtool": "0", "plan": null, "parts": [],
            "source": {"path": "m.gguf", "size": 1, "container": "gguf"},
            "split": {"mode": "max-tensors", "max_tensors": 1},
            "files": [{"path": "../secret", "size": 1, "sha256": "00"}],
        });
        std::fs::write(dir.path().join(MANIFEST_FILE), m.to_string()).unwrap();
        let e = verify(dir.path(), false).unwrap_err().to_string();
        assert!(
            e.contains("file path '../secret' leaves the manifest's directory"),
            "{e}"
        );
    }
}
