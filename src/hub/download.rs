//! Downloading the files a command needs into the standard Hugging Face
//! cache (`models--ORG--NAME/{blobs,refs,snapshots}`, see `store::hf_cache`),
//! so Python tools reuse what llmtool fetched and the other way round.
//! Upstream: huggingface_hub `file_download.py` (`hf_hub_download`: blobs
//! named by etag, `.incomplete` partials resumed with `Range`, relative
//! symlinks from the snapshot) and `_snapshot_download.py`.
//!
//! Only what is needed is fetched: config, tokenizer and generation files
//! plus the safetensors (and their index), or the one GGUF asked for
//! (`org/name:Q4_K_M`), or an adapter's config and weights. Every blob is
//! checked before it is renamed into place: LFS files against the Hub's
//! sha256, regular files against their git blob id. `HF_HUB_OFFLINE=1`
//! reads the cache only; a Hub that cannot be reached falls back to the
//! cache too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::repo::{self, RemoteFile, RepoId};
use super::{io_err, Body, Hub, HubError, Result};
use crate::store::{hex, hf_cache};

/// `org/name[@revision][:FILE-SELECTOR]` as typed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub repo: RepoId,
    pub revision: String,
    /// Picks one GGUF of a repo that holds several (`Q4_K_M` matches
    /// `…-q4_k_m.gguf`), case-insensitively.
    pub select: Option<String>,
}

impl Spec {
    /// `None` when `s` does not have the shape of a repo id at all (so the
    /// caller can say "no such file" instead).
    pub fn parse(s: &str) -> Option<Result<Spec>> {
        let (rest, select) = match s.rsplit_once(':') {
            Some((r, sel)) if !sel.contains('/') => (r, Some(sel.to_string())),
            _ => (s, None),
        };
        let (id, revision) = rest.split_once('@').unwrap_or((rest, "main"));
        if id.matches('/').count() != 1 || id.starts_with(['.', '/']) {
            return None;
        }
        Some(RepoId::parse(id).and_then(|repo| {
            if revision.is_empty() || select.as_deref() == Some("") {
                return Err(HubError::Invalid(format!(
                    "'{s}': expected ORG/NAME[@REVISION][:QUANT]"
                )));
            }
            Ok(Spec {
                repo,
                revision: revision.to_string(),
                select,
            })
        }))
    }
}

/// How much of a model a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Everything to open it: config, tokenizer, weights.
    Weights,
    /// `config.json` alone (planning memory from the shapes it gives).
    Config,
    /// The tokenizer and config files, no weights (counting tokens).
    Tokenizer,
}

/// What a fetch left in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `snapshots/COMMIT`.
    pub snapshot: PathBuf,
    /// What to open: the snapshot, or the selected GGUF in it.
    pub model: PathBuf,
    pub downloaded_bytes: u64,
    /// Answered from the cache alone (offline or unreachable Hub).
    pub from_cache: bool,
}

/// Whether `HF_HUB_OFFLINE` is set to a true value.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Small files a model directory is read with.
const META: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "quantize_config.json",
    "README.md",
];

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The files of `files` that opening the model needs.
pub fn wanted<'a>(spec: &Spec, files: &'a [RemoteFile], need: Need) -> Result<Vec<&'a RemoteFile>> {
    let top = |f: &&RemoteFile| !f.path.contains('/');
    let named = |n: &str| files.iter().find(|f| f.path == n);
    if need == Need::Config && spec.select.is_none() {
        return named("config.json").map(|c| vec![c]).ok_or_else(|| {
            HubError::Invalid(format!("{}: no config.json in this repo", spec.repo))
        });
    }
    let ggufs: Vec<&RemoteFile> = files
        .iter()
        .filter(top)
        .filter(|f| lower(&f.path).ends_with(".gguf"))
        .collect();
    let gguf_names = || {
        ggufs
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(sel) = &spec.select {
        let hits: Vec<&RemoteFile> = ggufs
            .iter()
            .copied()
            .filter(|f| lower(&f.path).contains(&lower(sel)))
            .collect();
        let firsts = hits.iter().filter(|f| !is_later_shard(&f.path)).count();
        return match firsts {
            1 => Ok(hits),
            0 => Err(HubError::Invalid(format!(
                "{}: no GGUF file matches ':{sel}' (files: {})",
                spec.repo,
                if ggufs.is_empty() {
                    "none".into()
                } else {
                    gguf_names()
                }
            ))),
            _ => Err(HubError::Invalid(format!(
                "{}: ':{sel}' matches several GGUF files ({}); give more of the name",
                spec.repo,
                hits.iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    let meta = META.iter().filter_map(|n| named(n));
    if need == Need::Tokenizer {
        let m: Vec<&RemoteFile> = meta.collect();
        if !m.iter().any(|f| f.path.starts_with("tokenizer")) {
            return Err(HubError::Invalid(format!(
                "{}: no tokenizer files in this repo",
                spec.repo
            )));
        }
        return Ok(m);
    }
    if named("adapter_config.json").is_some() {
        let w = named("adapter_model.safetensors").ok_or_else(|| {
            HubError::Invalid(format!(
                "{}: a PEFT adapter without adapter_model.safetensors (pickle adapters are not read)",
                spec.repo
            ))
        })?;
        return Ok(meta
            .chain(named("adapter_config.json"))
            .chain([w])
            .collect());
    }
    let st: Vec<&RemoteFile> = files
        .iter()
        .filter(top)
        .filter(|f| {
            lower(&f.path).ends_with(".safetensors") || f.path == "model.safetensors.index.json"
        })
        .collect();
    if !st.is_empty() {
        return Ok(meta.chain(st).collect());
    }
    let firsts = ggufs.iter().filter(|f| !is_later_shard(&f.path)).count();
    match firsts {
        1 => Ok(ggufs),
        0 => Err(HubError::Invalid(format!(
            "{}: no safetensors or GGUF weights in this repo ({} files); pickle checkpoints are not read",
            spec.repo,
            files.len()
        ))),
        _ => Err(HubError::Invalid(format!(
            "{}: several GGUF files ({}); pick one, e.g. {}:Q4_K_M",
            spec.repo,
            gguf_names(),
            spec.repo
        ))),
    }
}

/// `…-00002-of-00003.gguf` and later.
fn is_later_shard(name: &str) -> bool {
    let l = lower(name);
    let Some(stem) = l.strip_suffix(".gguf") else {
        return false;
    };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    matches!(parts.as_slice(), [_, "of", n, _] if n.parse::<u32>().is_ok_and(|n| n > 1))
}

fn repo_dir(cache: &Path, repo: &RepoId) -> PathBuf {
    cache.join(format!("models--{}", repo.as_str().replace('/', "--")))
}

/// Brings what `spec` needs into `cache` and says where it is.
pub fn fetch(
    hub: &Hub,
    spec: &Spec,
    need: Need,
    cache: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<Fetched> {
    if offline() {
        return from_cache(spec, need, cache).map_err(|e| {
            HubError::Offline(format!(
                "HF_HUB_OFFLINE is set and the cache cannot serve {}: {e}",
                spec.repo
            ))
        });
    }
    // With a cached copy to fall back on, an unreachable Hub is not worth
    // a minute of retries.
    let cached = from_cache(spec, need, cache).is_ok();
    let quick;
    let hub = if cached {
        quick = hub.clone().with_retry(super::Retry {
            retries: 0,
            ..Default::default()
        });
        &quick
    } else {
        hub
    };
    let info = match repo::info(hub, &spec.repo, &spec.revision) {
        Ok(i) => i,
        // Unreachable or failing Hub: what the cache holds is as good as
        // it gets (as huggingface_hub does).
        Err(e @ (HubError::Transport { .. } | HubError::Http { status: 500.., .. })) => {
            return from_cache(spec, need, cache).map_err(|_| e);
        }
        Err(e) => return Err(e),
    };
    let files = wanted(spec, &info.files, need)?;
    let dir = repo_dir(cache, &spec.repo);
    let snapshot = dir.join("snapshots").join(&info.sha);
    let missing: Vec<&&RemoteFile> = files
        .iter()
        .filter(|f| !snapshot.join(&f.path).exists())
        .collect();
    bar.set_length(missing.iter().map(|f| f.size).sum());
    let mut downloaded = 0;
    for f in missing {
        downloaded += download(hub, spec, &info.sha, f, &dir, bar)?;
    }
    if spec.revision != info.sha {
        write_ref(&dir, &spec.revision, &info.sha)?;
    }
    let model = match (&spec.select, need) {
        (Some(_), _) | (None, Need::Config) => snapshot.join(&files[0].path),
        (None, Need::Weights | Need::Tokenizer) => snapshot.clone(),
    };
    Ok(Fetched {
        snapshot,
        model,
        downloaded_bytes: downloaded,
        from_cache: false,
    })
}

fn from_cache(spec: &Spec, need: Need, cache: &Path) -> Result<Fetched> {
    let snap = hf_cache::snapshot_dir(cache, &format!("{}@{}", spec.repo, spec.revision))
        .map_err(|e| HubError::Invalid(e.to_string()))?;
    let model = match &spec.select {
        None if need == Need::Config => snap.join("config.json"),
        None => snap.clone(),
        Some(sel) => {
            let mut names: Vec<PathBuf> = std::fs::read_dir(&snap)
                .map_err(io_err(&snap))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = lower(&p.file_name().unwrap_or_default().to_string_lossy());
                    n.ends_with(".gguf") && n.contains(&lower(sel)) && !is_later_shard(&n)
                })
                .collect();
            names.sort();
            match names.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(HubError::Invalid(format!(
                        "{}: the cached snapshot has {} GGUF files matching ':{sel}'",
                        snap.display(),
                        names.len()
                    )))
                }
            }
        }
    };
    Ok(Fetched {
        snapshot: snap,
        model,
        downloaded_bytes: 0,
        from_cache: true,
    })
}

fn write_ref(dir: &Path, revision: &str, sha: &str) -> Result<()> {
    if revision
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(HubError::Invalid(format!(
            "'{revision}' is not a revision name"
        )));
    }
    let path = dir.join("refs").join(revision);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(".ref.{}.tmp", std::process::id()));
    std::fs::write(&tmp, sha).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// The checksum a finished blob must have.
enum Check {
    Sha256(String),
    GitBlob(String),
}

/// Downloads one file into `blobs/ETAG` (resuming `ETAG.incomplete`),
/// checks it, and links it from the snapshot. Returns the bytes fetched.
fn download(
    hub: &Hub,
    spec: &Spec,
    sha: &str,
    f: &RemoteFile,
    dir: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    let (etag, check) = match (&f.lfs_sha256, &f.blob_id) {
        (Some(s), _) => (s.clone(), Check::Sha256(s.clone())),
        (None, Some(b)) => (b.clone(), Check::GitBlob(b.clone())),
        (None, None) => {
            return Err(HubError::Protocol {
                url: hub.url(&format!("/api/models/{}", spec.repo)),
                msg: format!("{}: the Hub lists no hash for it", f.path),
            })
        }
    };
    if etag.is_empty() || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HubError::Protocol {
            url: hub.url(&format!("/api/models/{}", spec.repo)),
            msg: format!("{}: '{etag}' is not a hash", f.path),
        });
    }
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let blob = blobs.join(&etag);
    let mut fetched = 0;
    if !blob.is_file() {
        let partial = blobs.join(format!("{etag}.incomplete"));
        // Not a cancel::Temporary: an interrupted download is kept to resume.
        fetched = fetch_blob(hub, spec, sha, f, &partial, bar)?;
        let got = digest(&partial, &check, f.size)?;
        let want = match &check {
            Check::Sha256(s) | Check::GitBlob(s) => s,
        };
        if &got != want {
            let _ = std::fs::remove_file(&partial);
            return Err(HubError::Checksum {
                path: format!("{}/{}", spec.repo, f.path),
                got,
                want: want.clone(),
            });
        }
        std::fs::rename(&partial, &blob).map_err(io_err(&blob))?;
    } else {
        bar.inc(f.size);
    }
    let link = dir.join("snapshots").join(sha).join(&f.path);
    let parent = link.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let depth = f.path.matches('/').count() + 2;
    let target = PathBuf::from("../".repeat(depth)).join("blobs").join(&etag);
    match std::os::unix::fs::symlink(&target, &link) {
        Ok(()) => Ok(fetched),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(fetched),
        Err(e) => Err(HubError::Io {
            path: link,
            source: e,
        }),
    }
}

/// Appends the rest of the file to `partial`, resuming with `Range` from
/// what is there and again after a connection drops mid-body.
fn fetch_blob(
    hub: &Hub,
    spec: &Spec,
    sha: &str,
    f: &RemoteFile,
    partial: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    let url = repo::resolve_url(hub, &spec.repo, sha, &f.path);
    let mut fetched = 0;
    let mut drops = 0;
    bar.inc(std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0));
    loop {
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        // Too long is left to the checksum, which discards it.
        if have >= f.size {
            return Ok(fetched);
        }
        let range = format!("bytes={have}-");
        let headers: Vec<(&str, &str)> = if have > 0 {
            vec![("range", range.as_str())]
        } else {
            vec![]
        };
        let resp = hub.send("GET", &url, &headers, Body::Empty, true, true)?;
        // A server that ignores Range sends everything again.
        let append = resp.status() == 206;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(partial)
            .map_err(io_err(partial))?;
        let mut body = resp.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            crate::cancel::check()?;
            match body.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.write_all(&buf[..n]).map_err(io_err(partial))?;
                    fetched += n as u64;
                    bar.inc(n as u64);
                }
            }
        }
        out.flush().map_err(io_err(partial))?;
        let now = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if now < f.size {
            drops += 1;
            if drops > 5 {
                return Err(HubError::Transport {
                    url,
                    msg: format!(
                        "the download kept breaking off ({now} of {} bytes kept in {}; run again to resume)",
                        f.size,
                        partial.display()
                    ),
                    tries: drops,
                });
            }
            super::sleep(std::time::Duration::from_millis(500 * drops as u64))?;
        }
    }
}

fn digest(path: &Path, check: &Check, size: u64) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = <sha1::Sha1 as sha1::Digest>::new();
    if let Check::GitBlob(_) = check {
        sha1::Digest::update(&mut sha1, format!("blob {size}\0").as_bytes());
    }
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        match check {
            Check::Sha256(_) => sha256.update(&buf[..n]),
            Check::GitBlob(_) => sha1::Digest::update(&mut sha1, &buf[..n]),
        }
    }
    Ok(match check {
        Check::Sha256(_) => hex(&sha256.finalize()),
        Check::GitBlob(_) => hex(&sha1::Digest::finalize(sha1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rf(path: &str) -> RemoteFile {
        RemoteFile {
            path: path.into(),
            size: 1,
            blob_id: Some("ab".into()),
            lfs_sha256: None,
        }
    }

    fn spec(s: &str) -> Spec {
        Spec::parse(s).unwrap().unwrap()
    }

    #[test]
    fn specs_parse() {
        let s = spec("Qwen/Qwen2.5-7B-Instruct-GGUF@v1:Q4_K_M");
        assert_eq!(s.repo.as_str(), "Qwen/Qwen2.5-7B-Instruct-GGUF");
        assert_eq!(s.revision, "v1");
        assert_eq!(s.select.as_deref(), Some("Q4_K_M"));
        assert_eq!(spec("a/b").revision, "main");
        assert!(Spec::parse("./local/dir").is_none());
        assert!(Spec::parse("model.gguf").is_none());
        assert!(Spec::parse("a/b:").unwrap().is_err());
    }

    #[test]
    fn only_needed_files_are_wanted() {
        let files: Vec<RemoteFile> = [
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "onnx/model.onnx",
            ".gitattributes",
        ]
        .map(rf)
        .to_vec();
        let got: Vec<&str> = wanted(&spec("a/b"), &files, Need::Weights)
            .unwrap()
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            got,
            [
                "config.json",
                "tokenizer.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json"
            ]
        );
    }

    #[test]
    fn gguf_selectors_pick_one_file_or_its_shards() {
        let files: Vec<RemoteFile> = [
            "m-q4_k_m.gguf",
            "m-q8_0-00001-of-00002.gguf",
            "m-q8_0-00002-of-00002.gguf",
        ]
        .map(rf)
        .to_vec();
        let pick = |s: &str| {
            wanted(&spec(s), &files, Need::Weights)
                .map(|v| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>())
        };
        assert_eq!(pick("a/b:Q4_K_M").unwrap(), ["m-q4_k_m.gguf"]);
        assert_eq!(pick("a/b:q8_0").unwrap().len(), 2);
        assert!(pick("a/b:Q5_K_M")
            .unwrap_err()
            .to_string()
            .contains("m-q4_k_m.gguf"));
        assert!(pick("a/b").unwrap_err().to_string().contains("a/b:Q4_K_M"));
    }
}
