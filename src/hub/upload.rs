//! Uploading files as one commit, the way huggingface_hub's
//! `create_commit` does without Xet (`_commit_api.py`, `lfs.py`):
//!
//! 1. **preupload** (256 files per call) tells which files go by LFS and
//!    the oid the Hub holds at each path;
//! 2. every LFS file is hashed (sha256, in parallel, streamed), every
//!    regular file gets its git blob id; a file whose oid equals the Hub's
//!    is unchanged and not sent again;
//! 3. the **LFS batch** API says which objects it lacks (an object it has
//!    comes back without `actions` and is skipped: a rerun after a failure
//!    uploads only what is missing); each missing one is PUT whole
//!    (`basic`) or in `chunk_size` parts with their ETags and a completion
//!    call (`multipart`), then verified when the Hub asks;
//! 4. one **NDJSON commit** (header, `file` with base64 content, `lfsFile`
//!    with the oid). It is not blindly retried: after a lost answer the
//!    branch head is read, and a commit that already landed is not made
//!    twice.
//!
//! Every other call is retried with backoff (see [`Hub::send`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;
use sha2::Digest;

use super::repo::{self, RepoId};
use super::{io_err, quote, read_json, Body, Hub, HubError, Result};
use crate::store::hex;

/// Files per preupload or LFS batch call (huggingface_hub's
/// `UPLOAD_BATCH_MAX_NUM_FILES`).
const BATCH: usize = 256;

/// Where a file to upload comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Made by llmtool itself (a model card).
    Bytes(Vec<u8>),
}

/// One file to add to the repo.
#[derive(Debug, Clone)]
pub struct Addition {
    pub path_in_repo: String,
    pub source: Source,
    pub size: u64,
}

/// How the Hub stores a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Lfs,
    Regular,
}

/// A file after preupload and hashing.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub path: String,
    pub size: u64,
    pub mode: Mode,
    /// sha256 (LFS) or git blob id (regular); absent only in a dry run that
    /// had no reason to hash the file.
    pub oid: Option<String>,
    /// The Hub already holds this exact file at this path.
    pub unchanged: bool,
    /// The Hub's `.gitignore` excludes it.
    pub ignored: bool,
    #[serde(skip)]
    pub source: Source,
}

/// Where the commit goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub repo: RepoId,
    pub revision: String,
    pub create_pr: bool,
}

impl Target {
    fn pr_query(&self) -> &'static str {
        if self.create_pr {
            "?create_pr=1"
        } else {
            ""
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pushed {
    /// `None` when nothing changed and no commit was made.
    pub commit_url: Option<String>,
    pub commit_oid: Option<String>,
    pub pull_request_url: Option<String>,
    /// LFS objects sent now / already on the Hub.
    pub lfs_uploaded: usize,
    pub lfs_already_there: usize,
    pub bytes_uploaded: u64,
}

/// The Hub's default `.gitattributes` LFS patterns (by extension), used
/// only when the repo does not exist yet and a dry run cannot ask.
const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gguf",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
];

/// Files the Hub refuses outside LFS.
const REGULAR_MAX: u64 = 10 * 1024 * 1024;

fn guessed_mode(a: &Addition) -> Mode {
    let ext = a
        .path_in_repo
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if a.size == 0 {
        Mode::Regular
    } else if a.size >= REGULAR_MAX || LFS_EXTENSIONS.contains(&ext.as_str()) {
        Mode::Lfs
    } else {
        Mode::Regular
    }
}

fn read_head(source: &Source, n: usize) -> Result<Vec<u8>> {
    match source {
        Source::Bytes(b) => Ok(b[..b.len().min(n)].to_vec()),
        Source::File(p) => {
            let mut buf = Vec::with_capacity(n);
            std::fs::File::open(p)
                .map_err(io_err(p))?
                .take(n as u64)
                .read_to_end(&mut buf)
                .map_err(io_err(p))?;
            Ok(buf)
        }
    }
}

fn read_all(source: &Source) -> Result<Vec<u8>> {
    match source {
        Source::Bytes(b) => Ok(b.clone()),
        Source::File(p) => std::fs::read(p).map_err(io_err(p)),
    }
}

/// The git blob id of `content` (`sha1("blob LEN\0" + content)`), which is
/// what the Hub reports for regular files.
pub fn git_blob_id(content: &[u8]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

/// What preupload says of one file: its mode, whether the Hub ignores
/// it, and the oid the Hub holds at its path.
type Remote = (Mode, bool, Option<String>);

/// Upload modes and the Hub's oids for `additions`. `None` when the repo
/// does not exist (404), so a dry run can still answer.
fn preupload(hub: &Hub, target: &Target, additions: &[Addition]) -> Result<Option<Vec<Remote>>> {
    let path = format!(
        "/api/models/{}/preupload/{}{}",
        target.repo,
        quote(&target.revision),
        target.pr_query()
    );
    let mut out = Vec::with_capacity(additions.len());
    for chunk in additions.chunks(BATCH) {
        let mut files = Vec::new();
        for a in chunk {
            let head = read_head(&a.source, 512)?;
            files.push(json!({
                "path": a.path_in_repo,
                "size": a.size,
                "sample": base64::engine::general_purpose::STANDARD.encode(head),
            }));
        }
        let answer = match hub.json("POST", &path, Some(&json!({ "files": files }))) {
            Ok(v) => v,
            Err(HubError::Http { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let listed = answer
            .get("files")
            .and_then(|f| f.as_array())
            .cloned()
            .unwrap_or_default();
        for a in chunk {
            let f = listed
                .iter()
                .find(|f| f.get("path").and_then(|p| p.as_str()) == Some(&a.path_in_repo))
                .ok_or_else(|| HubError::Protocol {
                    url: hub.url(&path),
                    msg: format!("preupload did not answer for '{}'", a.path_in_repo),
                })?;
            let mode = match f.get("uploadMode").and_then(|m| m.as_str()) {
                _ if a.size == 0 => Mode::Regular,
                Some("lfs") => Mode::Lfs,
                _ => Mode::Regular,
            };
            let ignore = f
                .get("shouldIgnore")
                .and_then(|s| s.as_bool())
                .unwrap_or(false);
            let oid = f.get("oid").and_then(|o| o.as_str()).map(str::to_string);
            out.push((mode, ignore, oid));
        }
    }
    Ok(Some(out))
}

/// Preuploads and hashes `additions`. In a dry run (`hash_all` false) an
/// LFS file is hashed only when the Hub holds a file at its path (to tell
/// whether it changed), since hashing is the slow part.
pub fn plan(
    hub: &Hub,
    target: &Target,
    additions: Vec<Addition>,
    hash_all: bool,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Planned>> {
    let remote = preupload(hub, target, &additions)?;
    let modes: Vec<Remote> = match remote {
        Some(m) => m,
        None => additions
            .iter()
            .map(|a| (guessed_mode(a), false, None))
            .collect(),
    };
    let to_hash: u64 = additions
        .iter()
        .zip(&modes)
        .filter(|(_, (m, _, oid))| *m == Mode::Lfs && (hash_all || oid.is_some()))
        .map(|(a, _)| a.size)
        .sum();
    bar.set_length(to_hash);
    additions
        .into_par_iter()
        .zip(modes)
        .map(|(a, (mode, ignored, remote_oid))| {
            let oid = match (mode, &a.source) {
                (Mode::Regular, s) => Some(git_blob_id(&read_all(s)?)),
                (Mode::Lfs, _) if !(hash_all || remote_oid.is_some()) => None,
                (Mode::Lfs, Source::File(p)) => {
                    Some(crate::store::sha256_file(p, &|n| bar.inc(n))?)
                }
                (Mode::Lfs, Source::Bytes(b)) => Some(hex(&sha2::Sha256::digest(b))),
            };
            Ok(Planned {
                unchanged: oid.is_some() && oid == remote_oid,
                path: a.path_in_repo,
                size: a.size,
                mode,
                oid,
                ignored,
                source: a.source,
            })
        })
        .collect()
}

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// Sends `planned` as one commit. Nothing changed: no commit.
pub fn push(
    hub: &Hub,
    target: &Target,
    planned: &[Planned],
    summary: &str,
    description: &str,
    bar: &indicatif::ProgressBar,
) -> Result<Pushed> {
    let changed: Vec<&Planned> = planned
        .iter()
        .filter(|p| !p.unchanged && !p.ignored)
        .collect();
    let mut pushed = Pushed::default();
    if changed.is_empty() {
        return Ok(pushed);
    }
    let lfs: Vec<&Planned> = changed
        .iter()
        .copied()
        .filter(|p| p.mode == Mode::Lfs)
        .collect();
    bar.set_position(0);
    bar.set_length(lfs.iter().map(|p| p.size).sum());
    for chunk in lfs.chunks(BATCH) {
        upload_lfs(hub, target, chunk, bar, &mut pushed)?;
    }
    commit(hub, target, &changed, summary, description, &mut pushed)?;
    Ok(pushed)
}

fn oid_of(p: &Planned) -> Result<&str> {
    p.oid
        .as_deref()
        .ok_or_else(|| HubError::Invalid(format!("{}: not hashed", p.path)))
}

fn upload_lfs(
    hub: &Hub,
    target: &Target,
    files: &[&Planned],
    bar: &indicatif::ProgressBar,
    pushed: &mut Pushed,
) -> Result<()> {
    let url = hub.url(&format!("/{}.git/info/lfs/objects/batch", target.repo));
    let mut objects = Vec::new();
    for p in files {
        objects.push(json!({"oid": oid_of(p)?, "size": p.size}));
    }
    let body = json!({
        "operation": "upload",
        "transfers": ["basic", "multipart"],
        "objects": objects,
        "hash_algo": "sha256",
        "ref": {"name": target.revision},
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let resp = hub.send(
        "POST",
        &url,
        &[("accept", LFS_JSON), ("content-type", LFS_JSON)],
        Body::Bytes(&bytes),
        true,
        true,
    )?;
    let answer = read_json(resp, &url)?;
    let bad = |msg: String| HubError::Protocol {
        url: url.clone(),
        msg,
    };
    let listed = answer
        .get("objects")
        .and_then(|o| o.as_array())
        .ok_or_else(|| bad("no 'objects' in the LFS batch answer".into()))?;
    for p in files {
        let oid = oid_of(p)?;
        let obj = listed
            .iter()
            .find(|o| o.get("oid").and_then(|x| x.as_str()) == Some(oid))
            .ok_or_else(|| bad(format!("LFS batch did not answer for {}", p.path)))?;
        if let Some(err) = obj.get("error") {
            return Err(bad(format!(
                "{}: the Hub refused the upload: {} {}",
                p.path,
                err.get("code").unwrap_or(&json!(null)),
                err.get("message").and_then(|m| m.as_str()).unwrap_or("")
            )));
        }
        let Some(actions) = obj.get("actions").filter(|a| !a.is_null()) else {
            pushed.lfs_already_there += 1;
            bar.inc(p.size);
            continue;
        };
        let path = match &p.source {
            Source::File(f) => f.clone(),
            Source::Bytes(_) => {
                return Err(bad(format!("{}: in-memory files are never LFS", p.path)))
            }
        };
        if let Some(upload) = actions.get("upload") {
            let href = upload
                .get("href")
                .and_then(|h| h.as_str())
                .ok_or_else(|| bad(format!("{}: upload action without href", p.path)))?;
            let header = upload.get("header").and_then(|h| h.as_object());
            match header.and_then(|h| h.get("chunk_size")) {
                Some(chunk) => {
                    let chunk = chunk
                        .as_str()
                        .and_then(|c| c.parse::<u64>().ok())
                        .or_else(|| chunk.as_u64())
                        .filter(|&c| c > 0)
                        .ok_or_else(|| bad(format!("{}: bad chunk_size", p.path)))?;
                    multipart(
                        hub,
                        href,
                        header.unwrap_or(&Default::default()),
                        &path,
                        p,
                        oid,
                        chunk,
                        bar,
                    )?;
                }
                None => {
                    let extra: Vec<(&str, &str)> = header
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                        .collect();
                    hub.send(
                        "PUT",
                        href,
                        &extra,
                        Body::File {
                            path: &path,
                            offset: 0,
                            len: p.size,
                            sent: bar,
                        },
                        true,
                        false,
                    )?;
                }
            }
        }
        if let Some(href) = actions.pointer("/verify/href").and_then(|h| h.as_str()) {
            let body = serde_json::to_vec(&json!({"oid": oid, "size": p.size})).unwrap_or_default();
            hub.send(
                "POST",
                href,
                &[("accept", LFS_JSON), ("content-type", LFS_JSON)],
                Body::Bytes(&body),
                true,
                true,
            )?;
        }
        pushed.lfs_uploaded += 1;
        pushed.bytes_uploaded += p.size;
    }
    Ok(())
}

/// S3-style multipart: the header's numbered keys are the part URLs.
#[allow(clippy::too_many_arguments)]
fn multipart(
    hub: &Hub,
    completion: &str,
    header: &serde_json::Map<String, serde_json::Value>,
    path: &Path,
    p: &Planned,
    oid: &str,
    chunk: u64,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut parts: Vec<(u64, &str)> = header
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_str()?)))
        .collect();
    parts.sort();
    let want = p.size.div_ceil(chunk);
    if parts.len() as u64 != want {
        return Err(HubError::Protocol {
            url: completion.to_string(),
            msg: format!(
                "{}: {} part URLs for {} parts of {chunk} bytes",
                p.path,
                parts.len(),
                want
            ),
        });
    }
    let mut etags = Vec::new();
    for (i, (number, url)) in parts.iter().enumerate() {
        let offset = i as u64 * chunk;
        let len = chunk.min(p.size - offset);
        let resp = hub.send(
            "PUT",
            url,
            &[],
            Body::File {
                path,
                offset,
                len,
                sent: bar,
            },
            true,
            false,
        )?;
        let etag = resp.header("etag").ok_or_else(|| HubError::Protocol {
            url: url.to_string(),
            msg: format!("{}: part {number} answered without an ETag", p.path),
        })?;
        etags.push(json!({"partNumber": number, "etag": etag}));
    }
    let body = serde_json::to_vec(&json!({"oid": oid, "parts": etags})).unwrap_or_default();
    hub.send(
        "POST",
        completion,
        &[("accept", LFS_JSON), ("content-type", LFS_JSON)],
        Body::Bytes(&body),
        true,
        false,
    )?;
    Ok(())
}

/// The NDJSON body: a header line, then one line per file in path order.
pub fn commit_body(changed: &[&Planned], summary: &str, description: &str) -> Result<Vec<u8>> {
    let mut lines =
        vec![json!({"key": "header", "value": {"summary": summary, "description": description}})];
    for p in changed {
        lines.push(match p.mode {
            Mode::Regular => json!({"key": "file", "value": {
                "path": p.path,
                "content": base64::engine::general_purpose::STANDARD.encode(read_all(&p.source)?),
                "encoding": "base64",
            }}),
            Mode::Lfs => json!({"key": "lfsFile", "value": {
                "path": p.path, "algo": "sha256", "oid": oid_of(p)?, "size": p.size,
            }}),
        });
    }
    let mut out = Vec::new();
    for l in lines {
        out.extend(serde_json::to_vec(&l).unwrap_or_default());
        out.push(b'\n');
    }
    Ok(out)
}

fn commit(
    hub: &Hub,
    target: &Target,
    changed: &[&Planned],
    summary: &str,
    description: &str,
    pushed: &mut Pushed,
) -> Result<()> {
    let body = commit_body(changed, summary, description)?;
    let path = format!(
        "/api/models/{}/commit/{}{}",
        target.repo,
        quote(&target.revision),
        target.pr_query()
    );
    let url = hub.url(&path);
    let head_before = (!target.create_pr)
        .then(|| repo::info(hub, &target.repo, &target.revision).map(|i| i.sha))
        .transpose()?;
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = hub.send(
            "POST",
            &url,
            &[("content-type", "application/x-ndjson")],
            Body::Bytes(&body),
            false,
            true,
        );
        let err = match sent {
            Ok(resp) => {
                let v = read_json(resp, &url)?;
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                pushed.commit_url = s("commitUrl");
                pushed.commit_oid = s("commitOid");
                pushed.pull_request_url = s("pullRequestUrl");
                return Ok(());
            }
            Err(e) => e,
        };
        let lost = matches!(&err, HubError::Transport { .. })
            || matches!(&err, HubError::Http { status, .. } if *status >= 500 || *status == 429 || *status == 408);
        if !lost || head_before.is_none() || tries > 3 {
            return Err(err);
        }
        // The answer was lost or the Hub hiccuped: did the commit land?
        let info = repo::info(hub, &target.repo, &target.revision)?;
        if Some(&info.sha) != head_before.as_ref() && landed(&info, changed) {
            pushed.commit_oid = Some(info.sha.clone());
            pushed.commit_url = Some(hub.url(&format!("/{}/commit/{}", target.repo, info.sha)));
            return Ok(());
        }
        super::sleep(std::time::Duration::from_secs(1 << tries))?;
    }
}

fn landed(info: &repo::RepoInfo, changed: &[&Planned]) -> bool {
    changed.iter().all(|p| {
        info.files.iter().any(|f| {
            f.path == p.path
                && match p.mode {
                    Mode::Lfs => f.lfs_sha256 == p.oid,
                    Mode::Regular => f.blob_id == p.oid,
                }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(git_blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn guessed_modes_follow_the_default_gitattributes() {
        let a = |p: &str, size| Addition {
            path_in_repo: p.into(),
            source: Source::Bytes(vec![]),
            size,
        };
        assert_eq!(guessed_mode(&a("model.safetensors", 100)), Mode::Lfs);
        assert_eq!(guessed_mode(&a("config.json", 100)), Mode::Regular);
        assert_eq!(guessed_mode(&a("big.txt", REGULAR_MAX)), Mode::Lfs);
        assert_eq!(guessed_mode(&a("empty.bin", 0)), Mode::Regular);
    }
}
