//! Repo ids and the repo API: create a repo or a branch, list a revision's
//! files with their sizes and hashes. Upstream: huggingface_hub `hf_api.py`
//! (`create_repo`, `create_branch`, `model_info(files_metadata=True)`).

use serde_json::json;

use super::{quote, quote_path, Hub, HubError, Result};

/// `org/name`, validated as the Hub validates repo ids
/// (`utils/_validators.py`: letters, digits, `-_.`, no `--` or `..`,
/// at most 96 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId(String);

impl RepoId {
    pub fn parse(s: &str) -> Result<RepoId> {
        let bad = |why: &str| {
            HubError::Invalid(format!(
                "'{s}' is not a Hub repo id ({why}); expected ORG/NAME, e.g. my-org/spinoza-qwen2.5-14b-awq"
            ))
        };
        let (org, name) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        for part in [org, name] {
            if part.is_empty() || part.len() > 96 {
                return Err(bad("empty or too long part"));
            }
            if !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
                return Err(bad("a part starts or ends with '-' or '.'"));
            }
            if part.contains("--") || part.contains("..") {
                return Err(bad("'--' and '..' are not allowed"));
            }
        }
        Ok(RepoId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file of a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// The git blob id (sha1 of `blob LEN\0` + content, or of the LFS
    /// pointer for LFS files).
    pub blob_id: Option<String>,
    /// sha256 of the content, for files stored in LFS.
    pub lfs_sha256: Option<String>,
}

impl RemoteFile {
    /// The name of this file's blob in the cache (huggingface_hub's etag:
    /// the sha256 for LFS files, the git blob id otherwise).
    pub fn etag(&self) -> Option<&str> {
        self.lfs_sha256.as_deref().or(self.blob_id.as_deref())
    }
}

/// A revision's commit and files.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub sha: String,
    pub files: Vec<RemoteFile>,
    pub license: Option<String>,
}

/// The commit and files of `repo` at `revision`, with sizes and hashes.
pub fn info(hub: &Hub, repo: &RepoId, revision: &str) -> Result<RepoInfo> {
    let path = format!("/api/models/{repo}/revision/{}?blobs=true", quote(revision));
    let v = hub.json("GET", &path, None)?;
    let url = hub.url(&path);
    let bad = |msg: &str| HubError::Protocol {
        url: url.clone(),
        msg: msg.to_string(),
    };
    let sha = v
        .get("sha")
        .and_then(|s| s.as_str())
        .ok_or_else(|| bad("no 'sha' in the repo info"))?
        .to_string();
    let mut files = Vec::new();
    for s in v
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("no 'siblings' in the repo info"))?
    {
        let path = s
            .get("rfilename")
            .and_then(|p| p.as_str())
            .ok_or_else(|| bad("a sibling without 'rfilename'"))?;
        let lfs = s.get("lfs").filter(|l| !l.is_null());
        files.push(RemoteFile {
            path: path.to_string(),
            size: lfs
                .and_then(|l| l.get("size"))
                .or_else(|| s.get("size"))
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
            blob_id: s.get("blobId").and_then(|b| b.as_str()).map(str::to_string),
            lfs_sha256: lfs
                .and_then(|l| l.get("sha256"))
                .and_then(|b| b.as_str())
                .map(str::to_string),
        });
    }
    let license = v
        .pointer("/cardData/license")
        .and_then(|l| l.as_str())
        .map(str::to_string);
    Ok(RepoInfo {
        sha,
        files,
        license,
    })
}

/// Creates `repo` (409 "already exists" is fine: pushes are idempotent).
pub fn create(hub: &Hub, repo: &RepoId, private: bool) -> Result<()> {
    let (org, name) = repo.as_str().split_once('/').unwrap_or(("", repo.as_str()));
    let body = json!({"name": name, "organization": org, "type": "model", "private": private});
    match hub.json("POST", "/api/repos/create", Some(&body)) {
        Ok(_) => Ok(()),
        Err(HubError::Http { status: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `branch` from the default branch's head unless it exists.
pub fn ensure_branch(hub: &Hub, repo: &RepoId, branch: &str) -> Result<()> {
    match info(hub, repo, branch) {
        Ok(_) => return Ok(()),
        Err(HubError::Http { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    let path = format!("/api/models/{repo}/branch/{}", quote(branch));
    match hub.json("POST", &path, Some(&json!({}))) {
        Ok(_) | Err(HubError::Http { status: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The URL of one file at one revision.
pub fn resolve_url(hub: &Hub, repo: &RepoId, revision: &str, path: &str) -> String {
    hub.url(&format!(
        "/{repo}/resolve/{}/{}",
        quote(revision),
        quote_path(path)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_validated_like_the_hub() {
        assert!(RepoId::parse("Qwen/Qwen2.5-14B-Instruct").is_ok());
        for bad in [
            "qwen", "a/b/c", "a/-b", "a/b--c", "a/b..c", "a/b c", "/b", "a/",
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
    }
}
