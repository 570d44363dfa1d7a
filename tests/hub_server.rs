//! An in-process Hugging Face Hub for tests and benchmarks: the endpoints
//! `huggingface_hub` 0.36.2 calls to create repos and branches, upload
//! (preupload, LFS batch with basic and multipart transfers, verify, NDJSON
//! commit) and download (repo info, resolve with the Hub's headers and LFS
//! redirect, Range), with the Hub's error headers, tokens, private and gated
//! repos, and injectable faults. tests/oracle/hub_client.py checks that the
//! real client works against it unchanged (tests/hub.rs).
//!
//! Plain `std::net`, one thread per connection, HTTP/1.1 keep-alive,
//! Content-Length and chunked request bodies. LFS objects and file contents
//! live on disk under the root given at start (objects may be GBs); the
//! refs, commits and flags live in memory.
//!
//! Where the real Hub's behaviour is not documented, this follows what
//! huggingface_hub's sources expect and says so in a comment.
// Shared by the test binary and examples/hub_server.rs, each using a part.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::http_accept::{reason, Accept};
use sha1::Digest as _;

/// Extensions the Hub's default `.gitattributes` sends to LFS (plus .gguf,
/// which model repos add); preupload answers "lfs" for them.
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

/// Files at least this large go to LFS whatever their name (the Hub's 10 MB rule).
const LFS_MIN_SIZE: u64 = 10_000_000;

/// How a started server splits large LFS uploads.
#[derive(Clone, Debug)]
pub struct Config {
    /// 0: any free port.
    pub port: u16,
    /// Objects larger than this get a multipart upload action.
    pub multipart_threshold: u64,
    /// The `chunk_size` of multipart uploads.
    pub chunk_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            multipart_threshold: 8 << 20,
            chunk_size: 8 << 20,
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer this status (with the Hub's JSON error body) instead.
    Status(u16),
    /// Answer 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// Read this many request-body bytes, then close without answering.
    DropAfter(u64),
    /// Answer normally but with the first body byte flipped.
    CorruptBody,
    /// Send the full headers but only this many body bytes, then close.
    Truncate(u64),
}

/// A fault for the next `times` requests whose method matches (`"*"`: any)
/// and whose target (path and query) contains `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: String,
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// A fault for the next matching request only.
    pub fn new(method: &str, path_contains: &str, kind: FaultKind) -> Fault {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            kind,
            times: 1,
        }
    }

    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub path: String,
    /// 0 where the connection was dropped without an answer.
    pub status: u16,
    /// Request-body bytes read.
    pub body_len: u64,
}

/// One operation of an accepted commit, in the order sent.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitOp {
    /// "file", "lfsFile", "deletedFile" or "deletedFolder".
    pub kind: String,
    pub path: String,
    /// The git blob sha1 of a "file", the sha256 of an "lfsFile".
    pub oid: Option<String>,
}

/// An accepted NDJSON commit.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedCommit {
    pub oid: String,
    /// The revision it was posted to (decoded).
    pub revision: String,
    pub summary: String,
    pub parent_commit: Option<String>,
    /// `refs/pr/N` where it opened a pull request.
    pub pr: Option<String>,
    pub ops: Vec<CommitOp>,
}

#[derive(Clone, Debug)]
struct Entry {
    size: u64,
    /// Git blob id: of the content, or of the LFS pointer for LFS files.
    blob_id: String,
    /// sha256 of the content for LFS files.
    lfs: Option<String>,
}

#[derive(Clone, Debug)]
struct Commit {
    parent: Option<String>,
    summary: String,
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    /// Tokens granted access when gated.
    gated: Option<HashSet<String>>,
    /// Branches and `refs/pr/N` → commit.
    refs: BTreeMap<String, String>,
    commits: HashMap<String, Commit>,
    next_pr: u64,
    received: Vec<ReceivedCommit>,
}

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    repos: BTreeMap<String, Repo>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    commit_counter: u64,
}

struct State {
    root: PathBuf,
    endpoint: String,
    config: Config,
    inner: Mutex<Inner>,
    lfs_bytes: AtomicU64,
    shutdown: Arc<AtomicBool>,
    tmp_counter: AtomicU64,
}

/// A running test Hub; stops when dropped.
pub struct HubServer {
    state: Arc<State>,
    _accept: Accept,
}

impl HubServer {
    /// Serves on 127.0.0.1 (a free port), keeping objects under `root`.
    pub fn start(root: &Path) -> HubServer {
        Self::start_with(root, Config::default())
    }

    pub fn start_with(root: &Path, config: Config) -> HubServer {
        for d in ["lfs", "blobs", "parts", "tmp"] {
            fs::create_dir_all(root.join(d)).expect("create hub server root");
        }
        let listener = TcpListener::bind(("127.0.0.1", config.port)).expect("bind hub server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            root: root.to_path_buf(),
            endpoint: format!("http://{addr}"),
            config,
            inner: Mutex::new(Inner::default()),
            lfs_bytes: AtomicU64::new(0),
            shutdown: Arc::new(AtomicBool::new(false)),
            tmp_counter: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = Accept::spawn(listener, state.shutdown.clone(), move |stream| {
            serve_connection(&st, stream)
        });
        HubServer {
            state,
            _accept: accept,
        }
    }

    /// `http://127.0.0.1:PORT`, what `HF_ENDPOINT` takes.
    pub fn endpoint(&self) -> String {
        self.state.endpoint.clone()
    }

    pub fn add_token(&self, token: &str) {
        self.state.lock().tokens.insert(token.into());
    }

    /// Creates `org/name` with the Hub's initial commit (a `.gitattributes`).
    pub fn create_repo(&self, id: &str) {
        let mut inner = self.state.lock();
        assert!(!inner.repos.contains_key(id), "repo {id} exists");
        let repo = self.state.new_repo(&mut inner.commit_counter);
        inner.repos.insert(id.into(), repo);
    }

    pub fn set_private(&self, id: &str) {
        self.state.repo_mut(id, |r| r.private = true);
    }

    /// Gates `id`: only the `allowed` tokens may download its files.
    pub fn set_gated(&self, id: &str, allowed: &[&str]) {
        let allowed = allowed.iter().map(|t| t.to_string()).collect();
        self.state.repo_mut(id, |r| r.gated = Some(allowed));
    }

    /// Commits `files` to `branch` of `id` (made from main if missing), storing
    /// them as LFS objects or regular files as preupload would; returns the commit.
    pub fn put_files(&self, id: &str, branch: &str, files: &[(&str, &[u8])]) -> String {
        let entries: Vec<(String, Entry)> = files
            .iter()
            .map(|(path, bytes)| {
                let sample = &bytes[..bytes.len().min(512)];
                let lfs = wants_lfs(path, bytes.len() as u64, sample);
                (
                    path.to_string(),
                    self.state.store_bytes(bytes, lfs).unwrap(),
                )
            })
            .collect();
        let mut inner = self.state.lock();
        let counter = inner.commit_counter;
        inner.commit_counter += 1;
        let repo = inner.repos.get_mut(id).expect("put_files: no such repo");
        let main = repo.refs["main"].clone();
        let parent = repo.refs.get(branch).cloned().unwrap_or(main);
        let mut commit = repo.commits[&parent].clone();
        commit.parent = Some(parent);
        commit.summary = "put_files".into();
        commit.files.extend(entries);
        let oid = commit_id(&commit, counter);
        repo.commits.insert(oid.clone(), commit);
        repo.refs.insert(branch.into(), oid.clone());
        oid
    }

    /// Injects a fault (see [`FaultKind`]); faults match in the order added.
    pub fn fail(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().log.clone()
    }

    /// The commits accepted through the commit endpoint, oldest first.
    pub fn commits(&self, id: &str) -> Vec<ReceivedCommit> {
        let inner = self.state.lock();
        inner
            .repos
            .get(id)
            .map(|r| r.received.clone())
            .unwrap_or_default()
    }

    /// The commit `rev` (branch, `refs/pr/N` or sha) points to.
    pub fn head(&self, id: &str, rev: &str) -> Option<String> {
        let inner = self.state.lock();
        resolve_rev(inner.repos.get(id)?, rev)
    }

    /// The content of `path` at `rev`.
    pub fn file(&self, id: &str, rev: &str, path: &str) -> Option<Vec<u8>> {
        let entry = {
            let inner = self.state.lock();
            let repo = inner.repos.get(id)?;
            let sha = resolve_rev(repo, rev)?;
            repo.commits[&sha].files.get(path)?.clone()
        };
        fs::read(self.state.content_path(&entry)).ok()
    }

    /// Bytes received by LFS PUTs (single and part uploads) so far.
    pub fn lfs_bytes_received(&self) -> u64 {
        self.state.lfs_bytes.load(Ordering::SeqCst)
    }
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide the
        // state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn repo_mut(&self, id: &str, f: impl FnOnce(&mut Repo)) {
        f(self
            .lock()
            .repos
            .get_mut(id)
            .unwrap_or_else(|| panic!("no repo {id}")))
    }

    /// A repo whose main holds the Hub's initial commit.
    fn new_repo(&self, counter: &mut u64) -> Repo {
        let attrs: String = LFS_EXTENSIONS
            .iter()
            .map(|e| format!("*.{e} filter=lfs diff=lfs merge=lfs -text\n"))
            .collect();
        let entry = self.store_bytes(attrs.as_bytes(), false).unwrap();
        let commit = Commit {
            parent: None,
            summary: "initial commit".into(),
            files: BTreeMap::from([(".gitattributes".to_string(), entry)]),
        };
        let oid = commit_id(&commit, *counter);
        *counter += 1;
        Repo {
            refs: BTreeMap::from([("main".to_string(), oid.clone())]),
            commits: HashMap::from([(oid, commit)]),
            next_pr: 1,
            ..Repo::default()
        }
    }

    fn content_path(&self, e: &Entry) -> PathBuf {
        match &e.lfs {
            Some(oid) => self.root.join("lfs").join(oid),
            None => self.root.join("blobs").join(&e.blob_id),
        }
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::SeqCst);
        self.root
            .join("tmp")
            .join(format!("{}.{n}", std::process::id()))
    }

    /// Stores content as a regular blob or an LFS object.
    fn store_bytes(&self, bytes: &[u8], lfs: bool) -> io::Result<Entry> {
        let entry = if lfs {
            let oid = hex(&sha2::Sha256::digest(bytes));
            lfs_entry(&oid, bytes.len() as u64)
        } else {
            Entry {
                size: bytes.len() as u64,
                blob_id: git_blob_id(bytes),
                lfs: None,
            }
        };
        let dest = self.content_path(&entry);
        if !dest.exists() {
            let tmp = self.tmp_path();
            fs::write(&tmp, bytes)?;
            fs::rename(&tmp, &dest)?;
        }
        Ok(entry)
    }
}

fn lfs_entry(oid: &str, size: u64) -> Entry {
    Entry {
        size,
        blob_id: git_blob_id(lfs_pointer(oid, size).as_bytes()),
        lfs: Some(oid.into()),
    }
}

fn lfs_pointer(oid: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
}

/// The Hub's choice of LFS: by extension, by size, or for binary content
/// (a NUL byte in the first 512 bytes, the sample preupload gets).
fn wants_lfs(path: &str, size: u64, sample: &[u8]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let by_ext = name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    by_ext || size >= LFS_MIN_SIZE || sample.contains(&0)
}

/// A sha256 in lower-case hex, as LFS names objects (and as file names here).
fn is_oid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What git (and the Hub's `blobId`/ETag of regular files) names content.
fn git_blob_id(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

/// A commit id: sha1 over the commit's content and a server-wide counter,
/// so two identical commits still get distinct ids.
fn commit_id(c: &Commit, counter: u64) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("{counter}\0{:?}\0{}\0", c.parent, c.summary).as_bytes());
    for (p, e) in &c.files {
        h.update(format!("{p}\0{}\0", e.blob_id).as_bytes());
    }
    hex(&h.finalize())
}

/// A branch, `refs/pr/N`, a full commit id or an unambiguous prefix of one (≥ 7).
fn resolve_rev(repo: &Repo, rev: &str) -> Option<String> {
    if let Some(sha) = repo.refs.get(rev) {
        return Some(sha.clone());
    }
    if repo.commits.contains_key(rev) {
        return Some(rev.into());
    }
    if rev.len() >= 7 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut hits = repo.commits.keys().filter(|k| k.starts_with(rev));
        if let (Some(one), None) = (hits.next(), hits.next()) {
            return Some(one.clone());
        }
    }
    None
}

/// Decodes %XX escapes (and `+` as a space in a query, `plus_space`).
fn percent_decode(s: &str, plus_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b[i], hexval(i + 1), hexval(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 2;
            }
            (b'+', _, _) if plus_space => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- HTTP layer

struct Request {
    method: String,
    /// As sent: path and query.
    target: String,
    /// Decoded path segments.
    segments: Vec<String>,
    query: HashMap<String, String>,
    /// Lower-case names.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(
            self.query.get(name).map(String::as_str),
            Some("1" | "true" | "True")
        )
    }
}

enum BodyMode {
    Length(u64),
    Chunked { left_in_chunk: u64, done: bool },
}

/// The request body, read on demand by the handler (large uploads stream
/// to disk).
struct Body<'a> {
    r: &'a mut BufReader<TcpStream>,
    mode: BodyMode,
    read: u64,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.mode {
            BodyMode::Length(left) => {
                if *left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let want = buf.len().min(*left as usize);
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n as u64;
                n
            }
            BodyMode::Chunked {
                left_in_chunk,
                done,
            } => {
                if *done || buf.is_empty() {
                    return Ok(0);
                }
                if *left_in_chunk == 0 {
                    let line = read_line(self.r)?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                    if size == 0 {
                        // Trailers up to the empty line.
                        while !read_line(self.r)?.is_empty() {}
                        *done = true;
                        return Ok(0);
                    }
                    *left_in_chunk = size;
                }
                let want = buf.len().min(*left_in_chunk as usize);
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *left_in_chunk -= n as u64;
                if *left_in_chunk == 0 {
                    read_line(self.r)?;
                }
                n
            }
        };
        self.read += n as u64;
        Ok(n)
    }
}

impl Body<'_> {
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_to_end(&mut v)?;
        Ok(v)
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a request line and headers; None at a clean end of connection.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "request line"));
    };
    let mut headers = Vec::new();
    loop {
        let h = read_line(r)?;
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Ok(Some(Request {
        method: method.into(),
        target: target.into(),
        segments,
        query,
        headers,
    }))
}

enum Payload {
    Bytes(Vec<u8>),
    File { path: PathBuf, start: u64, len: u64 },
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Payload,
}

impl Response {
    fn json(status: u16, v: Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Payload::Bytes(serde_json::to_vec(&v).unwrap()),
        }
    }

    /// An error as the Hub sends it: `X-Error-Code`, `X-Error-Message` and
    /// a JSON `{"error": …}`.
    fn error(status: u16, code: Option<&str>, message: &str) -> Response {
        let mut r = Response::json(status, json!({ "error": message }));
        if let Some(c) = code {
            r.headers.push(("X-Error-Code".into(), c.into()));
        }
        r.headers.push(("X-Error-Message".into(), message.into()));
        r
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn len(&self) -> u64 {
        match &self.body {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

/// Writes `resp`; `limit` stops the body after that many bytes (Truncate),
/// `corrupt` flips its first byte. Err where the body was cut.
fn write_response(
    w: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    corrupt: bool,
    limit: Option<u64>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.len()));
    w.write_all(head.as_bytes())?;
    if head_only {
        return w.flush();
    }
    let mut budget = limit.unwrap_or(u64::MAX);
    let mut first = corrupt;
    let mut send = |chunk: &mut [u8], w: &mut TcpStream| -> io::Result<bool> {
        if first && !chunk.is_empty() {
            chunk[0] ^= 0xff;
            first = false;
        }
        let n = (chunk.len() as u64).min(budget) as usize;
        w.write_all(&chunk[..n])?;
        budget -= n as u64;
        Ok(budget > 0)
    };
    match &resp.body {
        Payload::Bytes(b) => {
            send(&mut b.clone(), w)?;
        }
        Payload::File { path, start, len } => {
            let mut f = fs::File::open(path)?;
            io::Seek::seek(&mut f, io::SeekFrom::Start(*start))?;
            let mut f = f.take(*len);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 || !send(&mut buf[..n], w)? {
                    break;
                }
            }
        }
    }
    w.flush()?;
    if limit.is_some_and(|l| l < resp.len()) {
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    Ok(())
}

fn serve_connection(state: &State, stream: TcpStream) {
    // An idle keep-alive connection ends by itself.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    while let Ok(Some(req)) = read_head(&mut reader) {
        if state.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let mode = if req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            BodyMode::Chunked {
                left_in_chunk: 0,
                done: false,
            }
        } else {
            BodyMode::Length(
                req.header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let fault = state.take_fault(&req);
        let mut body = Body {
            r: &mut reader,
            mode,
            read: 0,
        };
        let resp = match &fault {
            Some(FaultKind::DropAfter(n)) => {
                let _ = io::copy(&mut (&mut body).take(*n), &mut io::sink());
                state.log(&req, 0, body.read);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Some(FaultKind::Status(code)) => {
                Response::error(*code, None, &format!("injected status {code}"))
            }
            Some(FaultKind::RetryAfter(secs)) => {
                Response::error(429, None, "Too many requests (injected)")
                    .header("Retry-After", secs.to_string())
            }
            _ => state.handle(&req, &mut body),
        };
        // The rest of a body the handler did not need (an error answered
        // early), so the connection stays in step.
        if io::copy(&mut body, &mut io::sink()).is_err() {
            state.log(&req, 0, body.read);
            return;
        }
        let received = body.read;
        let limit = match fault {
            Some(FaultKind::Truncate(n)) => Some(n),
            _ => None,
        };
        let corrupt = fault == Some(FaultKind::CorruptBody);
        // Logged before answering, so a client that has its answer finds it.
        state.log(&req, resp.status, received);
        let ok = write_response(&mut writer, &resp, req.method == "HEAD", corrupt, limit);
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if ok.is_err() || close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

// ---------------------------------------------------------------- endpoints

type Handled = Result<Response, Response>;

fn bad_request(message: &str) -> Response {
    Response::error(400, None, message)
}

fn io_error(e: io::Error) -> Response {
    Response::error(500, None, &format!("server storage error: {e}"))
}

fn parse_json(body: &mut Body) -> Result<Value, Response> {
    let bytes = body.bytes().map_err(io_error)?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
}

impl State {
    fn take_fault(&self, req: &Request) -> Option<FaultKind> {
        let mut inner = self.lock();
        let i = inner.faults.iter().position(|f| {
            f.times > 0
                && (f.method == "*" || f.method.eq_ignore_ascii_case(&req.method))
                && req.target.contains(&f.path_contains)
        })?;
        let f = &mut inner.faults[i];
        f.times -= 1;
        let kind = f.kind.clone();
        if f.times == 0 {
            inner.faults.remove(i);
        }
        Some(kind)
    }

    fn log(&self, req: &Request, status: u16, body_len: u64) {
        self.lock().log.push(Logged {
            method: req.method.clone(),
            path: req.target.clone(),
            status,
            body_len,
        });
    }

    fn handle(&self, req: &Request, body: &mut Body) -> Response {
        self.route(req, body).unwrap_or_else(|e| e)
    }

    fn route(&self, req: &Request, body: &mut Body) -> Handled {
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let m = req.method.as_str();
        match (m, s.as_slice()) {
            ("GET", ["api", "whoami-v2"]) => {
                let token = self.require_token(req)?;
                Ok(Response::json(
                    200,
                    json!({"type": "user", "name": "hub-test", "orgs": [],
                           "auth": {"accessToken": {"displayName": token, "role": "write"}}}),
                ))
            }
            ("POST", ["api", "repos", "create"]) => self.create_repo_api(req, body),
            ("POST", ["api", "validate-yaml"]) => validate_yaml(body),
            (_, ["api", "models", org, name, rest @ ..]) => {
                let id = format!("{org}/{name}");
                let rev = |from: usize| rest[from..].join("/");
                match (m, rest) {
                    ("GET", []) => self.repo_info(req, &id, "main"),
                    ("GET", ["revision", _, ..]) => self.repo_info(req, &id, &rev(1)),
                    ("POST", ["branch", _, ..]) => self.create_branch(req, body, &id, &rev(1)),
                    ("POST", ["preupload", _, ..]) => self.preupload(req, body, &id, &rev(1)),
                    ("POST", ["commit", _, ..]) => self.commit(req, body, &id, &rev(1)),
                    ("POST", ["paths-info", _, ..]) => self.paths_info(req, body, &id, &rev(1)),
                    ("GET", ["tree", rest @ ..]) => {
                        let (rev, path) = split_rev(rest)?;
                        self.tree(req, &id, &rev, &path.join("/"))
                    }
                    _ => Err(Response::error(404, None, "Sorry, we can't find the page")),
                }
            }
            ("POST", [org, repo_git, "info", "lfs", "objects", "batch"]) => {
                let id = format!("{org}/{}", repo_git.trim_end_matches(".git"));
                self.lfs_batch(req, body, &id)
            }
            ("POST", [org, repo_git, "info", "lfs", "objects", "verify"]) => {
                let id = format!("{org}/{}", repo_git.trim_end_matches(".git"));
                self.lfs_verify(req, body, &id)
            }
            // Upload URLs name files on disk: only a sha256 and a size pass.
            ("PUT" | "POST", ["lfs-upload", oid, size, ..])
                if !is_oid(oid) || size.parse::<u64>().is_err() =>
            {
                Err(bad_request(
                    "upload URLs are /lfs-upload/SHA256/SIZE[/PART]",
                ))
            }
            ("PUT", ["lfs-upload", oid, size]) => self.lfs_put(body, oid, size),
            ("PUT", ["lfs-upload", oid, size, part]) => self.lfs_put_part(body, oid, size, part),
            ("POST", ["lfs-upload", oid, size]) => self.lfs_complete(body, oid, size),
            ("GET" | "HEAD", ["lfs-objects", oid]) => self.lfs_object(req, oid),
            ("GET" | "HEAD", [org, name, "resolve", rest @ ..]) => {
                let (rev, path) = split_rev(rest)?;
                self.resolve(req, &format!("{org}/{name}"), &rev, &path.join("/"))
            }
            _ => Err(Response::error(404, None, "Sorry, we can't find the page")),
        }
    }

    /// The caller's token: None without an Authorization header, 401 for one
    /// the server does not know (the Hub's message, which huggingface_hub
    /// tells apart from a missing repo).
    fn token(&self, req: &Request) -> Result<Option<String>, Response> {
        let Some(auth) = req.header("authorization") else {
            return Ok(None);
        };
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(auth)
            .trim();
        if self.lock().tokens.contains(token) {
            Ok(Some(token.into()))
        } else {
            Err(Response::error(
                401,
                None,
                "Invalid credentials in Authorization header",
            ))
        }
    }

    fn require_token(&self, req: &Request) -> Result<String, Response> {
        self.token(req)?.ok_or_else(|| {
            Response::error(
                401,
                None,
                "You must be authenticated to access this resource",
            )
        })
    }

    /// Read access to `id`. The Hub answers a missing repo and a private one
    /// the caller may not see alike: 401 without a token, 404 with one.
    fn check_read(&self, req: &Request, id: &str) -> Result<Option<String>, Response> {
        let token = self.token(req)?;
        let inner = self.lock();
        let visible = inner
            .repos
            .get(id)
            .is_some_and(|r| !r.private || token.is_some());
        if !visible {
            let status = if token.is_some() { 404 } else { 401 };
            return Err(Response::error(
                status,
                Some("RepoNotFound"),
                "Repository not found",
            ));
        }
        Ok(token)
    }

    /// Write access: every known token may write every repo.
    fn check_write(&self, req: &Request, id: &str) -> Result<String, Response> {
        let token = self.require_token(req)?;
        if !self.lock().repos.contains_key(id) {
            return Err(Response::error(
                404,
                Some("RepoNotFound"),
                "Repository not found",
            ));
        }
        Ok(token)
    }

    fn create_repo_api(&self, req: &Request, body: &mut Body) -> Handled {
        self.require_token(req)?;
        let v = parse_json(body)?;
        let Some(name) = v["name"].as_str() else {
            return Err(bad_request("\"name\" is required"));
        };
        // A repo in the caller's own namespace when no organization is given.
        let org = v["organization"].as_str().unwrap_or("hub-test");
        if !matches!(v["type"].as_str(), None | Some("model")) {
            return Err(bad_request("this test server only hosts model repos"));
        }
        let id = format!("{org}/{name}");
        let url = format!("{}/{id}", self.endpoint);
        let mut inner = self.lock();
        if inner.repos.contains_key(&id) {
            return Err(Response::json(
                409,
                json!({"error": "You already created this model repo", "url": url}),
            )
            .header("X-Error-Message", "You already created this model repo"));
        }
        let mut repo = self.new_repo(&mut inner.commit_counter);
        repo.private = v["private"].as_bool().unwrap_or(false);
        inner.repos.insert(id.clone(), repo);
        Ok(Response::json(
            200,
            json!({"url": url, "name": id, "id": id}),
        ))
    }

    /// The commit `rev` names in `id`, or 404 RevisionNotFound.
    fn commit_of(&self, inner: &Inner, id: &str, rev: &str) -> Result<String, Response> {
        resolve_rev(&inner.repos[id], rev).ok_or_else(|| {
            Response::error(
                404,
                Some("RevisionNotFound"),
                &format!("Invalid rev id: {rev}"),
            )
        })
    }

    fn repo_info(&self, req: &Request, id: &str, rev: &str) -> Handled {
        self.check_read(req, id)?;
        let inner = self.lock();
        let sha = self.commit_of(&inner, id, rev)?;
        let repo = &inner.repos[id];
        let blobs = req.flag("blobs");
        let siblings: Vec<Value> = repo.commits[&sha]
            .files
            .iter()
            .map(|(path, e)| {
                let mut s = json!({ "rfilename": path });
                if blobs {
                    s["size"] = json!(e.size);
                    s["blobId"] = json!(e.blob_id);
                    if let Some(oid) = &e.lfs {
                        s["lfs"] = json!({"sha256": oid, "size": e.size,
                                          "pointerSize": lfs_pointer(oid, e.size).len()});
                    }
                }
                s
            })
            .collect();
        // The Hub's `gated` is false or the approval mode ("auto"/"manual").
        let gated = if repo.gated.is_some() {
            json!("manual")
        } else {
            json!(false)
        };
        let (author, _) = id.split_once('/').unwrap_or(("", id));
        Ok(Response::json(
            200,
            json!({"_id": sha, "id": id, "modelId": id, "author": author, "sha": sha,
                   "private": repo.private, "gated": gated, "disabled": false,
                   "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                   "spaces": []}),
        ))
    }

    fn create_branch(&self, req: &Request, body: &mut Body, id: &str, branch: &str) -> Handled {
        self.check_write(req, id)?;
        let v = parse_json(body)?;
        let mut inner = self.lock();
        let start = v["startingPoint"].as_str().unwrap_or("main");
        let sha = self.commit_of(&inner, id, start)?;
        let repo = inner.repos.get_mut(id).unwrap();
        if repo.refs.contains_key(branch) {
            return Err(Response::error(409, None, "Reference already exists"));
        }
        repo.refs.insert(branch.into(), sha);
        Ok(Response::json(200, json!({})))
    }

    /// Upload modes as the Hub decides them: LFS by extension, size or a
    /// binary sample (a NUL byte), regular otherwise; `oid` is what the path
    /// holds now (sha256 for LFS, git blob id otherwise), which the client
    /// compares with its own to drop unchanged files. `.gitignore` is not
    /// applied (`shouldIgnore` is always false).
    fn preupload(&self, req: &Request, body: &mut Body, id: &str, rev: &str) -> Handled {
        self.check_write(req, id)?;
        let v = parse_json(body)?;
        let Some(files) = v["files"].as_array() else {
            return Err(bad_request("\"files\" must be a list"));
        };
        let inner = self.lock();
        let sha = self.commit_of(&inner, id, rev)?;
        let current = &inner.repos[id].commits[&sha].files;
        let mut out = Vec::new();
        for f in files {
            let Some(path) = f["path"].as_str() else {
                return Err(bad_request("each file needs a \"path\""));
            };
            let size = f["size"].as_u64().unwrap_or(0);
            let sample = base64::engine::general_purpose::STANDARD
                .decode(f["sample"].as_str().unwrap_or(""))
                .map_err(|_| bad_request(&format!("{path}: \"sample\" is not base64")))?;
            let lfs = wants_lfs(path, size, &sample);
            let mut o = json!({"path": path, "uploadMode": if lfs {"lfs"} else {"regular"},
                               "shouldIgnore": false});
            if let Some(e) = current.get(path) {
                o["oid"] = json!(e.lfs.clone().unwrap_or_else(|| e.blob_id.clone()));
            }
            out.push(o);
        }
        Ok(Response::json(200, json!({ "files": out })))
    }

    /// The git-lfs batch API (upload only). A stored object gets no actions;
    /// others a basic PUT or, above the multipart threshold and when the
    /// client offers "multipart", part URLs "1", "2", … plus `chunk_size` in
    /// `header` (strings, as LFS headers are), and a verify action.
    fn lfs_batch(&self, req: &Request, body: &mut Body, id: &str) -> Handled {
        self.check_write(req, id)?;
        let v = parse_json(body)?;
        if v["operation"] != "upload" {
            return Err(bad_request("only the \"upload\" operation is served"));
        }
        let multipart_ok = v["transfers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "multipart"));
        let Some(objects) = v["objects"].as_array() else {
            return Err(bad_request("\"objects\" must be a list"));
        };
        let ep = &self.endpoint;
        let cfg = &self.config;
        let mut any_multipart = false;
        let mut out = Vec::new();
        for o in objects {
            let (Some(oid), Some(size)) = (o["oid"].as_str(), o["size"].as_u64()) else {
                return Err(bad_request("each object needs \"oid\" and \"size\""));
            };
            if !is_oid(oid) {
                out.push(json!({"oid": oid, "size": size,
                                "error": {"code": 422, "message": "oid must be a sha256 in hex"}}));
                continue;
            }
            let stored = self.root.join("lfs").join(oid);
            if let Ok(m) = fs::metadata(&stored) {
                if m.len() == size {
                    out.push(json!({"oid": oid, "size": size}));
                } else {
                    out.push(json!({"oid": oid, "size": size, "error": {"code": 422,
                        "message": format!("object {oid} is stored with size {}", m.len())}}));
                }
                continue;
            }
            let href = format!("{ep}/lfs-upload/{oid}/{size}");
            let mut upload = json!({ "href": href });
            if multipart_ok && size > cfg.multipart_threshold {
                any_multipart = true;
                let parts = size.div_ceil(cfg.chunk_size);
                let mut header = serde_json::Map::new();
                header.insert("chunk_size".into(), json!(cfg.chunk_size.to_string()));
                for p in 1..=parts {
                    header.insert(p.to_string(), json!(format!("{href}/{p}")));
                }
                upload["header"] = Value::Object(header);
            }
            let verify = format!("{ep}/{id}.git/info/lfs/objects/verify");
            out.push(json!({"oid": oid, "size": size, "authenticated": true,
                            "actions": {"upload": upload, "verify": {"href": verify}}}));
        }
        let transfer = if any_multipart { "multipart" } else { "basic" };
        let mut r = Response::json(200, json!({"transfer": transfer, "objects": out}));
        r.headers[0].1 = "application/vnd.git-lfs+json".into();
        Ok(r)
    }

    /// Streams `body` to a temporary file, counting LFS bytes; returns the
    /// file, its sha256 and size.
    fn receive(&self, body: &mut Body) -> Result<(PathBuf, String, u64), Response> {
        let tmp = self.tmp_path();
        let mut f = fs::File::create(&tmp).map_err(io_error)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_error(e));
                }
            };
            if n == 0 {
                break;
            }
            self.lfs_bytes.fetch_add(n as u64, Ordering::SeqCst);
            h.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = f.write_all(&buf[..n]) {
                let _ = fs::remove_file(&tmp);
                return Err(io_error(e));
            }
        }
        Ok((tmp, hex(&h.finalize()), size))
    }

    /// Moves `tmp` into the LFS store if it is what `oid`/`size` promised
    /// (400 and nothing stored otherwise).
    fn admit(&self, tmp: &Path, oid: &str, size: &str, got: &str, got_size: u64) -> Handled {
        if got != oid || size.parse() != Ok(got_size) {
            let _ = fs::remove_file(tmp);
            return Err(bad_request(&format!(
                "uploaded content has sha256 {got} and size {got_size}, expected {oid} and {size}"
            )));
        }
        fs::rename(tmp, self.root.join("lfs").join(oid)).map_err(io_error)?;
        Ok(Response::json(200, json!({})))
    }

    /// The basic transfer's PUT (a presigned URL: no token needed).
    fn lfs_put(&self, body: &mut Body, oid: &str, size: &str) -> Handled {
        let (tmp, got, got_size) = self.receive(body)?;
        self.admit(&tmp, oid, size, &got, got_size)
    }

    /// One multipart part; its ETag (as S3 quotes it) goes into the completion.
    fn lfs_put_part(&self, body: &mut Body, oid: &str, size: &str, part: &str) -> Handled {
        let Ok(n) = part.parse::<u64>() else {
            return Err(bad_request("part number"));
        };
        let (tmp, got, _) = self.receive(body)?;
        let dir = self.root.join("parts").join(format!("{oid}.{size}"));
        fs::create_dir_all(&dir).map_err(io_error)?;
        fs::rename(&tmp, dir.join(n.to_string())).map_err(io_error)?;
        Ok(Response::json(200, json!({})).header("ETag", format!("\"{got}\"")))
    }

    /// The multipart completion: `{"oid", "parts": [{"partNumber", "etag"}]}`
    /// with every part, in order, ETags as the part PUTs answered.
    fn lfs_complete(&self, body: &mut Body, oid: &str, size: &str) -> Handled {
        let v = parse_json(body)?;
        let dir = self.root.join("parts").join(format!("{oid}.{size}"));
        let Some(parts) = v["parts"].as_array() else {
            return Err(bad_request("\"parts\" must be a list"));
        };
        let expected = size
            .parse::<u64>()
            .unwrap_or(0)
            .div_ceil(self.config.chunk_size);
        if v["oid"] != oid || parts.len() as u64 != expected {
            return Err(bad_request(&format!(
                "completion for {oid} needs its oid and {expected} parts"
            )));
        }
        let tmp = self.tmp_path();
        let mut out = fs::File::create(&tmp).map_err(io_error)?;
        let mut h = sha2::Sha256::new();
        let mut total = 0u64;
        for (i, p) in parts.iter().enumerate() {
            let n = i as u64 + 1;
            let bytes = fs::read(dir.join(n.to_string())).unwrap_or_default();
            let etag = format!("\"{}\"", hex(&sha2::Sha256::digest(&bytes)));
            if p["partNumber"].as_u64() != Some(n) || p["etag"].as_str() != Some(etag.as_str()) {
                let _ = fs::remove_file(&tmp);
                return Err(bad_request(&format!(
                    "part {n} is missing or its etag differs"
                )));
            }
            h.update(&bytes);
            total += bytes.len() as u64;
            out.write_all(&bytes).map_err(io_error)?;
        }
        let got = hex(&h.finalize());
        let r = self.admit(&tmp, oid, size, &got, total);
        if r.is_ok() {
            let _ = fs::remove_dir_all(&dir);
        }
        r
    }

    fn lfs_verify(&self, req: &Request, body: &mut Body, id: &str) -> Handled {
        self.check_write(req, id)?;
        let v = parse_json(body)?;
        let (Some(oid), Some(size)) = (v["oid"].as_str(), v["size"].as_u64()) else {
            return Err(bad_request("verify needs \"oid\" and \"size\""));
        };
        match fs::metadata(self.root.join("lfs").join(oid)) {
            Ok(m) if is_oid(oid) && m.len() == size => Ok(Response::json(200, json!({}))),
            _ => Err(Response::error(
                404,
                None,
                &format!("LFS object {oid} ({size} bytes) is not stored"),
            )),
        }
    }

    /// The NDJSON commit. `parentCommit` must be the head of `rev` (412
    /// otherwise) unless `create_pr=1`, where it is the PR's base; lfsFile
    /// oids must be stored; deleting a missing file is 404 EntryNotFound
    /// with the message huggingface_hub matches.
    fn commit(&self, req: &Request, body: &mut Body, id: &str, rev: &str) -> Handled {
        self.check_write(req, id)?;
        let raw = body.bytes().map_err(io_error)?;
        let mut lines = Vec::new();
        for l in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(l)
                .map_err(|e| bad_request(&format!("invalid NDJSON line: {e}")))?;
            lines.push(v);
        }
        let Some(header) = lines.first().filter(|h| h["key"] == "header") else {
            return Err(bad_request("the first line must be the header"));
        };
        let summary = header["value"]["summary"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let parent_commit = header["value"]["parentCommit"].as_str().map(str::to_string);
        let create_pr = req.flag("create_pr");

        // Contents first, outside the lock (regular files may be large).
        let mut ops = Vec::new();
        let mut staged: Vec<(String, Option<Entry>, bool)> = Vec::new();
        for l in &lines[1..] {
            let val = &l["value"];
            let Some(path) = val["path"].as_str() else {
                return Err(bad_request("an operation without \"path\""));
            };
            let kind = l["key"].as_str().unwrap_or("");
            match kind {
                "file" => {
                    if val["encoding"] != "base64" {
                        return Err(bad_request(&format!("{path}: encoding must be base64")));
                    }
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(val["content"].as_str().unwrap_or(""))
                        .map_err(|_| bad_request(&format!("{path}: content is not base64")))?;
                    let e = self.store_bytes(&bytes, false).map_err(io_error)?;
                    ops.push(CommitOp {
                        kind: kind.into(),
                        path: path.into(),
                        oid: Some(e.blob_id.clone()),
                    });
                    staged.push((path.into(), Some(e), false));
                }
                "lfsFile" => {
                    let Some(oid) = val["oid"].as_str() else {
                        return Err(bad_request(&format!("{path}: lfsFile needs \"oid\"")));
                    };
                    let stored = fs::metadata(self.root.join("lfs").join(oid)).ok();
                    let Some(m) = stored.filter(|_| is_oid(oid)) else {
                        // The Hub refuses a pointer to an object it never received.
                        return Err(bad_request(&format!(
                            "{path}: LFS object {oid} was never uploaded"
                        )));
                    };
                    if val["size"].as_u64().is_some_and(|s| s != m.len()) {
                        return Err(bad_request(&format!(
                            "{path}: size {} differs from the stored object's {}",
                            val["size"],
                            m.len()
                        )));
                    }
                    ops.push(CommitOp {
                        kind: kind.into(),
                        path: path.into(),
                        oid: Some(oid.into()),
                    });
                    staged.push((path.into(), Some(lfs_entry(oid, m.len())), false));
                }
                "deletedFile" | "deletedFolder" => {
                    ops.push(CommitOp {
                        kind: kind.into(),
                        path: path.into(),
                        oid: None,
                    });
                    staged.push((path.into(), None, kind == "deletedFolder"));
                }
                other => return Err(bad_request(&format!("unknown operation {other:?}"))),
            }
        }

        let mut inner = self.lock();
        let counter = inner.commit_counter;
        let head = self.commit_of(&inner, id, rev)?;
        let repo = inner.repos.get_mut(id).unwrap();
        let is_ref = repo.refs.contains_key(rev);
        if !is_ref {
            return Err(Response::error(
                400,
                None,
                &format!("cannot commit to {rev}: not a branch"),
            ));
        }
        let base = match (&parent_commit, create_pr) {
            (Some(p), true) => resolve_rev(repo, p).ok_or_else(|| {
                Response::error(
                    404,
                    Some("RevisionNotFound"),
                    &format!("Invalid rev id: {p}"),
                )
            })?,
            (Some(p), false) if *p != head => {
                return Err(Response::error(
                    412,
                    None,
                    &format!("A commit has happened since: {rev} is at {head}, not {p}"),
                ))
            }
            _ => head,
        };
        let mut files = repo.commits[&base].files.clone();
        for (path, entry, folder) in staged {
            match entry {
                Some(e) => {
                    files.insert(path, e);
                }
                None if folder => {
                    let prefix = format!("{}/", path.trim_end_matches('/'));
                    let before = files.len();
                    files.retain(|p, _| !p.starts_with(&prefix));
                    if files.len() == before {
                        return Err(Response::error(
                            404,
                            Some("EntryNotFound"),
                            &format!("A folder with this name doesn't exist: {path}"),
                        ));
                    }
                }
                None => {
                    if files.remove(&path).is_none() {
                        return Err(Response::error(
                            404,
                            Some("EntryNotFound"),
                            &format!("A file with this name doesn't exist: {path}"),
                        ));
                    }
                }
            }
        }
        let commit = Commit {
            parent: Some(base),
            summary: summary.clone(),
            files,
        };
        let oid = commit_id(&commit, counter);
        repo.commits.insert(oid.clone(), commit);
        let ep = &self.endpoint;
        let mut resp = json!({"success": true, "commitOid": oid,
                              "commitUrl": format!("{ep}/{id}/commit/{oid}")});
        let pr = if create_pr {
            let n = repo.next_pr;
            repo.next_pr += 1;
            let r = format!("refs/pr/{n}");
            repo.refs.insert(r.clone(), oid.clone());
            resp["pullRequestUrl"] = json!(format!("{ep}/{id}/discussions/{n}"));
            Some(r)
        } else {
            repo.refs.insert(rev.into(), oid.clone());
            None
        };
        repo.received.push(ReceivedCommit {
            oid,
            revision: rev.into(),
            summary,
            parent_commit,
            pr,
            ops,
        });
        inner.commit_counter += 1;
        Ok(Response::json(200, resp))
    }

    /// `tree/{rev}[/{path}]` (`?recursive=1`), in one page (no `Link`).
    fn tree(&self, req: &Request, id: &str, rev: &str, dir: &str) -> Handled {
        self.check_read(req, id)?;
        let inner = self.lock();
        let sha = self.commit_of(&inner, id, rev)?;
        let files = &inner.repos[id].commits[&sha].files;
        let entries = list_tree(files, dir, req.flag("recursive"));
        if entries.is_empty() && !dir.is_empty() {
            return Err(Response::error(
                404,
                Some("EntryNotFound"),
                &format!("{dir} does not exist on \"{rev}\""),
            ));
        }
        Ok(Response::json(200, Value::Array(entries)))
    }

    /// `paths-info/{rev}`, a form body `paths=…&paths=…`: each path that
    /// exists as a file or folder; missing ones are left out, as the Hub does.
    fn paths_info(&self, req: &Request, body: &mut Body, id: &str, rev: &str) -> Handled {
        self.check_read(req, id)?;
        let form = String::from_utf8_lossy(&body.bytes().map_err(io_error)?).into_owned();
        let paths: Vec<String> = form
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| percent_decode(k, true) == "paths")
            .map(|(_, v)| percent_decode(v, true))
            .collect();
        let inner = self.lock();
        let sha = self.commit_of(&inner, id, rev)?;
        let files = &inner.repos[id].commits[&sha].files;
        let out: Vec<Value> = paths
            .iter()
            .filter_map(|p| match files.get(p) {
                Some(e) => Some(path_entry(p, Some(e))),
                None => {
                    let prefix = format!("{p}/");
                    let is_dir = files.range(prefix.clone()..).next();
                    is_dir
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .map(|_| path_entry(p, None))
                }
            })
            .collect();
        Ok(Response::json(200, Value::Array(out)))
    }

    /// `resolve/{rev}/{path}`: a regular file is served here with its git
    /// blob id as ETag; an LFS file is a 302 to the CDN-like `/lfs-objects/`
    /// URL (absolute, on this host), with X-Linked-Etag/X-Linked-Size naming
    /// the object, as the Hub redirects to its CDN.
    fn resolve(&self, req: &Request, id: &str, rev: &str, path: &str) -> Handled {
        let token = self.check_read(req, id)?;
        let inner = self.lock();
        let repo = &inner.repos[id];
        if let Some(allowed) = &repo.gated {
            if !token.as_ref().is_some_and(|t| allowed.contains(t)) {
                let status = if token.is_some() { 403 } else { 401 };
                return Err(Response::error(
                    status,
                    Some("GatedRepo"),
                    &format!("Access to model {id} is restricted and you are not in the authorized list."),
                ));
            }
        }
        let sha = self.commit_of(&inner, id, rev)?;
        let Some(e) = repo.commits[&sha].files.get(path) else {
            return Err(
                Response::error(404, Some("EntryNotFound"), "Entry not found")
                    .header("X-Repo-Commit", sha),
            );
        };
        match &e.lfs {
            Some(oid) => {
                let location = format!("{}/lfs-objects/{oid}", self.endpoint);
                // Express's redirect text, which the Hub sends.
                let text = format!("Found. Redirecting to {location}");
                Ok(Response {
                    status: 302,
                    headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                    body: Payload::Bytes(text.into_bytes()),
                }
                .header("Location", location)
                .header("X-Repo-Commit", sha)
                .header("ETag", format!("\"{}\"", e.blob_id))
                .header("X-Linked-Etag", format!("\"{oid}\""))
                .header("X-Linked-Size", e.size.to_string()))
            }
            None => {
                let file = self.content_path(e);
                Ok(ranged(req, file, e.size)?
                    .header("X-Repo-Commit", sha)
                    .header("ETag", format!("\"{}\"", e.blob_id)))
            }
        }
    }

    /// The CDN: objects by sha256, no token (the Hub's CDN URLs are signed).
    fn lfs_object(&self, req: &Request, oid: &str) -> Handled {
        let file = self.root.join("lfs").join(oid);
        let Some(m) = fs::metadata(&file).ok().filter(|_| is_oid(oid)) else {
            return Err(Response::error(404, None, "No such object"));
        };
        Ok(ranged(req, file, m.len())?.header("ETag", format!("\"{oid}\"")))
    }
}

/// `POST /api/validate-yaml`, which huggingface_hub calls before committing
/// a README.md: `{"content", "repoType"}`. Only the front matter's framing
/// is checked (an opening `---` line needs a closing one); the YAML itself
/// is not parsed here.
fn validate_yaml(body: &mut Body) -> Handled {
    let v = parse_json(body)?;
    let content = v["content"].as_str().unwrap_or("").replace("\r\n", "\n");
    let unclosed = content.strip_prefix("---\n").is_some_and(|rest| {
        !rest.starts_with("---\n") && !rest.contains("\n---\n") && !rest.ends_with("\n---")
    });
    if unclosed {
        let message = "README.md metadata: the front matter opened by --- is never closed";
        return Err(Response::json(
            400,
            json!({"errors": [{"message": message}], "warnings": []}),
        ));
    }
    Ok(Response::json(200, json!({"errors": [], "warnings": []})))
}

/// The revision and the path after it: a PR ref may come unencoded
/// (`refs/pr/N/…`), any revision as one percent-encoded segment.
fn split_rev<'a>(rest: &'a [&'a str]) -> Result<(String, &'a [&'a str]), Response> {
    match rest {
        ["refs", "pr", n, path @ ..] => Ok((format!("refs/pr/{n}"), path)),
        [rev, path @ ..] => Ok((rev.to_string(), path)),
        [] => Err(bad_request("a revision is required")),
    }
}

/// A file or folder as the tree and paths-info endpoints describe it.
fn path_entry(path: &str, e: Option<&Entry>) -> Value {
    match e {
        Some(e) => {
            let mut v = json!({"type": "file", "oid": e.blob_id, "size": e.size, "path": path});
            if let Some(oid) = &e.lfs {
                v["lfs"] = json!({"oid": oid, "size": e.size,
                                  "pointerSize": lfs_pointer(oid, e.size).len()});
            }
            v
        }
        // Folders get a stable id (not git's tree hash, which no client checks).
        None => json!({"type": "directory", "oid": git_blob_id(path.as_bytes()),
                       "size": 0, "path": path}),
    }
}

/// The folders (every ancestor of a file) and files under `dir` ("": the
/// root), all levels or only the first.
fn list_tree(files: &BTreeMap<String, Entry>, dir: &str, recursive: bool) -> Vec<Value> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut folders = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (path, e) in files.range(prefix.clone()..) {
        let Some(rel) = path.strip_prefix(&prefix) else {
            break;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        if recursive {
            for d in 1..parts.len() {
                folders.insert(format!("{prefix}{}", parts[..d].join("/")));
            }
            out.push(path_entry(path, Some(e)));
        } else if parts.len() == 1 {
            out.push(path_entry(path, Some(e)));
        } else {
            folders.insert(format!("{prefix}{}", parts[0]));
        }
    }
    out.extend(folders.iter().map(|f| path_entry(f, None)));
    out
}

/// A file answer honouring `Range: bytes=N-` / `bytes=N-M` (206).
fn ranged(req: &Request, path: PathBuf, size: u64) -> Handled {
    let whole = |status| Response {
        status,
        headers: vec![
            ("Content-Type".into(), "application/octet-stream".into()),
            ("Accept-Ranges".into(), "bytes".into()),
        ],
        body: Payload::File {
            path: path.clone(),
            start: 0,
            len: size,
        },
    };
    let Some(spec) = req.header("range").and_then(|r| r.strip_prefix("bytes=")) else {
        return Ok(whole(200));
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: u64 = a.trim().parse().map_err(|_| bad_request("bad Range"))?;
    let end = match b.trim() {
        "" => size.saturating_sub(1),
        e => e
            .parse::<u64>()
            .map_err(|_| bad_request("bad Range"))?
            .min(size.saturating_sub(1)),
    };
    if start >= size || end < start {
        return Err(Response::error(416, None, "Range Not Satisfiable")
            .header("Content-Range", format!("bytes */{size}")));
    }
    let mut r = whole(206);
    r.body = Payload::File {
        path,
        start,
        len: end - start + 1,
    };
    Ok(r.header("Content-Range", format!("bytes {start}-{end}/{size}")))
}
