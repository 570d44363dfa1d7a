//! Turning what the user typed into a concrete set of files.

use std::path::{Path, PathBuf};

use super::{gguf, hf_cache, present, safetensors, Result, StoreError};

/// The files of one model, before they are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The directory or file the model is known by.
    pub root: PathBuf,
    /// `config.json` beside the weights, when present.
    pub config: Option<PathBuf>,
    pub kind: Files,
}

/// Which container the weights are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    Safetensors {
        files: Vec<PathBuf>,
        index: Option<PathBuf>,
    },
    Gguf {
        shards: Vec<PathBuf>,
    },
}

const PICKLE_EXTS: &[&str] = &["bin", "pt", "pth", "ckpt", "pkl"];

fn pickle_error(path: &Path) -> StoreError {
    StoreError::Unsupported {
        path: path.to_path_buf(),
        msg: "pickle checkpoints can run arbitrary code and are not read; convert to safetensors first, e.g. \
              `python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('IN', weights_only=True), 'OUT.safetensors', metadata={'format':'pt'})\"`"
            .into(),
    }
}

fn ext(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn sibling_config(p: &Path) -> Option<PathBuf> {
    let c = p.parent().unwrap_or(Path::new(".")).join("config.json");
    c.is_file().then_some(c)
}

fn gguf_kind(p: &Path) -> Files {
    Files::Gguf {
        shards: gguf::split_paths(p).unwrap_or_else(|| vec![p.to_path_buf()]),
    }
}

/// Resolves a model spec: a path (directory, `.safetensors`, index `.json`,
/// `.gguf`) or a Hub repo id found in the local cache.
pub fn resolve(spec: &str) -> Result<Resolved> {
    let path = Path::new(spec);
    if path.exists() {
        return resolve_path(path);
    }
    if hf_cache::is_repo_id(spec) {
        let snap = hf_cache::snapshot_dir(&hf_cache::cache_dir(), spec)?;
        return resolve_path(&snap);
    }
    Err(StoreError::NotFound(format!(
        "'{spec}' is not a file or directory (nor an org/name repo id of the Hugging Face cache)"
    )))
}

fn resolve_path(path: &Path) -> Result<Resolved> {
    if path.is_dir() {
        return resolve_dir(path);
    }
    let e = ext(path);
    let kind = match e.as_str() {
        "safetensors" => Files::Safetensors {
            files: vec![path.to_path_buf()],
            index: None,
        },
        "json" if path.to_string_lossy().ends_with(".safetensors.index.json") => {
            Files::Safetensors {
                files: safetensors::index_shards(path)?,
                index: Some(path.to_path_buf()),
            }
        }
        "gguf" => gguf_kind(path),
        e if PICKLE_EXTS.contains(&e) => return Err(pickle_error(path)),
        _ => {
            return Err(StoreError::Unsupported {
                path: path.to_path_buf(),
                msg: "unknown model file type; expected a .safetensors, .gguf, \
                      model.safetensors.index.json or a model directory"
                    .into(),
            })
        }
    };
    Ok(Resolved {
        root: path.to_path_buf(),
        config: sibling_config(path),
        kind,
    })
}

fn resolve_dir(dir: &Path) -> Result<Resolved> {
    let config = Some(dir.join("config.json")).filter(|c| c.is_file());
    let index = dir.join(safetensors::INDEX_FILE);
    let single = dir.join(safetensors::SINGLE_FILE);
    let kind = if present(&index) {
        Files::Safetensors {
            files: safetensors::index_shards(&index)?,
            index: Some(index),
        }
    } else if present(&single) {
        Files::Safetensors {
            files: vec![single],
            index: None,
        }
    } else {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        let by_ext =
            |x: &str| -> Vec<&PathBuf> { entries.iter().filter(|p| ext(p) == x).collect() };
        let ggufs: Vec<&PathBuf> = by_ext("gguf")
            .into_iter()
            .filter(|p| gguf::split_paths(p).is_none_or(|s| s.first() == Some(*p)))
            .collect();
        let sts = by_ext("safetensors");
        if dir.join("adapter_config.json").is_file() {
            return Err(StoreError::Unsupported {
                path: dir.to_path_buf(),
                msg: "this is a PEFT adapter, not a model; merge it into its base with `llmtool lora merge`".into(),
            });
        }
        match (ggufs.as_slice(), sts.as_slice()) {
            ([g], []) => gguf_kind(g),
            ([], [s]) => Files::Safetensors {
                files: vec![(*s).clone()],
                index: None,
            },
            ([], []) => {
                if let Some(p) = PICKLE_EXTS.iter().find_map(|x| by_ext(x).first().copied()) {
                    return Err(pickle_error(p));
                }
                return Err(StoreError::NotFound(format!(
                    "{}: no model.safetensors, {} or .gguf file in this directory",
                    dir.display(),
                    safetensors::INDEX_FILE
                )));
            }
            _ => {
                let names: Vec<String> = ggufs
                    .iter()
                    .chain(sts.iter())
                    .map(|p| {
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                return Err(StoreError::NotFound(format!(
                    "{}: several candidate model files ({}); name one of them",
                    dir.display(),
                    names.join(", ")
                )));
            }
        }
    };
    Ok(Resolved {
        root: dir.to_path_buf(),
        config,
        kind,
    })
}
