//! The Hub test server (tests/hub_server.rs): validated by the real
//! huggingface_hub client, and its own protocol checks and fault injection
//! exercised with a raw HTTP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common;
use crate::hub_server::{Config, Fault, FaultKind, HubServer};

const TOKEN: &str = "hf_test_token";

fn server(dir: &std::path::Path) -> HubServer {
    let s = HubServer::start(dir);
    s.add_token(TOKEN);
    s
}

/// A response read off the socket: status, headers (lower-case names), the
/// body bytes that arrived, and whether all `Content-Length` of them did.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One request on a fresh connection (`Connection: close`); None when the
/// server closed it without answering.
fn send(
    hub: &HubServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Reply> {
    let addr = hub.endpoint().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    // The server may close mid-body (DropAfter): a failed write is part of the test.
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let want = if method == "HEAD" { 0 } else { len };
    let mut body = Vec::new();
    let _ = r.take(want as u64).read_to_end(&mut body);
    Some(Reply {
        status,
        headers,
        complete: body.len() == want,
        body,
    })
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn post_json(hub: &HubServer, path: &str, v: &Value) -> Reply {
    let (n, t) = auth();
    send(
        hub,
        "POST",
        path,
        &[(n, &t)],
        &serde_json::to_vec(v).unwrap(),
    )
    .unwrap()
}

/// Posts an NDJSON commit of `ops` (after a header with `parent`).
fn commit(hub: &HubServer, repo: &str, parent: Option<&str>, ops: &[Value]) -> Reply {
    let mut header = json!({"summary": "test", "description": ""});
    if let Some(p) = parent {
        header["parentCommit"] = json!(p);
    }
    let mut body = serde_json::to_vec(&json!({"key": "header", "value": header})).unwrap();
    for op in ops {
        body.push(b'\n');
        body.extend(serde_json::to_vec(op).unwrap());
    }
    let (n, t) = auth();
    let path = format!("/api/models/{repo}/commit/main");
    let headers = [(n, t.as_str()), ("Content-Type", "application/x-ndjson")];
    send(hub, "POST", &path, &headers, &body).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn huggingface_hub_client_accepts_the_test_server() {
    let Some(py) = common::hub_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Small multipart settings so a 3 MB file takes six parts.
    let config = Config {
        multipart_threshold: 1 << 20,
        chunk_size: 512 << 10,
        ..Config::default()
    };
    let hub = HubServer::start_with(&dir.path().join("root"), config);
    hub.add_token(TOKEN);
    hub.create_repo("test-org/gated");
    hub.set_gated("test-org/gated", &[]);
    hub.create_repo("test-org/private");
    hub.set_private("test-org/private");
    // Transient upload failures the client retries: a 503, then a dropped
    // connection.
    hub.fail(Fault::new("PUT", "/lfs-upload/", FaultKind::Status(503)));
    hub.fail(Fault::new(
        "PUT",
        "/lfs-upload/",
        FaultKind::DropAfter(100_000),
    ));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = std::process::Command::new(&py)
        .arg(common::repo().join("tests/oracle/hub_client.py"))
        .args(["selftest", "--endpoint", &hub.endpoint(), "--token", TOKEN])
        .args([
            "--gated-repo",
            "test-org/gated",
            "--private-repo",
            "test-org/private",
        ])
        .args(["--big-size", "3000000", "--work", common::s(&work)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hub_client.py selftest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["huggingface_hub"], "0.36.2");

    // What the client did on the wire: the paths the server must keep serving.
    let log = hub.requests();
    let seen = |method: &str, path: &str, status: u16| {
        log.iter()
            .any(|l| l.method == method && l.path.contains(path) && l.status == status)
    };
    let parts = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.matches('/').count() == 4 && l.status == 200)
        .count();
    assert_eq!(parts, 6, "multipart part PUTs: {log:#?}");
    assert!(seen("PUT", "/lfs-upload/", 503), "retried after a 503");
    assert!(
        seen("PUT", "/lfs-upload/", 0),
        "retried after a dropped connection"
    );
    assert!(seen("POST", "/lfs-upload/", 200), "multipart completion");
    assert!(seen("POST", "/paths-info/", 200), "copies read paths-info");
    assert!(seen("GET", "/tree/", 200), "list_repo_files reads the tree");
    assert!(
        seen("POST", "/api/validate-yaml", 200),
        "the card is validated"
    );
    assert!(seen("POST", "/info/lfs/objects/verify", 200), "verify");
    assert!(seen("HEAD", "/resolve/", 302), "LFS resolve redirects");
    assert!(seen("GET", "/lfs-objects/", 200), "CDN download");
    assert!(log.iter().all(|l| l.status != 500), "{log:#?}");

    // Five commits: the unchanged re-upload made none.
    let commits = hub.commits("test-org/oracle");
    let sums: Vec<&str> = commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        sums,
        [
            "first upload",
            "add and delete",
            "copies",
            "dev",
            "a pull request"
        ]
    );
    let kinds: Vec<(&str, &str)> = commits[0]
        .ops
        .iter()
        .map(|o| (o.kind.as_str(), o.path.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("file", "README.md"),
            ("lfsFile", "big.safetensors"),
            ("file", "hello.txt"),
            ("lfsFile", "small.safetensors"),
            ("file", "sub/nested.txt")
        ]
    );
    let copies: Vec<(&str, &str)> = commits[2]
        .ops
        .iter()
        .map(|o| (o.kind.as_str(), o.path.as_str()))
        .collect();
    assert_eq!(
        copies,
        [
            ("lfsFile", "copy/big.safetensors"),
            ("file", "copy/hello.txt")
        ]
    );
    assert_eq!(commits[4].pr.as_deref(), Some("refs/pr/1"));
    assert_eq!(
        hub.file("test-org/oracle", "main", "hello.txt").unwrap(),
        b"hello hub\n"
    );
    assert!(hub.lfs_bytes_received() >= 3_000_000);
}

/// `hub_client.py upload` and `download`, which later tests cross with
/// llmtool: what one stores the other reads back.
#[test]
fn hub_client_upload_and_download_subcommands() {
    let Some(py) = common::hub_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = server(&dir.path().join("root"));
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("d")).unwrap();
    std::fs::write(folder.join("config.json"), b"{\"a\": 1}\n").unwrap();
    std::fs::write(folder.join("d/model.safetensors"), vec![3u8; 4096]).unwrap();
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new(&py)
            .arg(common::repo().join("tests/oracle/hub_client.py"))
            .args(args)
            .args(["--endpoint", &hub.endpoint(), "--token", TOKEN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let up = run(&["upload", "--folder", common::s(&folder), "--repo", "o/x"]);
    assert_eq!(
        up["commit"].as_str(),
        hub.head("o/x", "main").as_deref(),
        "{up}"
    );
    assert_eq!(
        hub.file("o/x", "main", "d/model.safetensors").unwrap(),
        vec![3u8; 4096]
    );
    let cache = dir.path().join("cache");
    let down = run(&["download", "--repo", "o/x", "--cache", common::s(&cache)]);
    assert_eq!(
        down["files"]["d/model.safetensors"],
        common::sha256_hex(&[3u8; 4096])
    );
    assert_eq!(
        down["files"]["config.json"],
        common::sha256_hex(b"{\"a\": 1}\n")
    );
}

#[test]
fn drop_after_closes_mid_upload_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    let data = vec![7u8; 100_000];
    let oid = common::sha256_hex(&data);
    let path = format!("/lfs-upload/{oid}/{}", data.len());
    hub.fail(Fault::new(
        "PUT",
        "/lfs-upload/",
        FaultKind::DropAfter(1000),
    ));
    assert!(send(&hub, "PUT", &path, &[], &data).is_none());
    let last = hub.requests().pop().unwrap();
    assert_eq!((last.status, last.body_len), (0, 1000));
    assert!(!dir.path().join("lfs").join(&oid).exists());
    // The fault was for one request: the retry goes through.
    assert_eq!(send(&hub, "PUT", &path, &[], &data).unwrap().status, 200);
    assert!(dir.path().join("lfs").join(&oid).exists());
}

#[test]
fn retry_after_and_status_faults_answer_then_clear() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    hub.fail(Fault::new(
        "GET",
        "/api/models/o/m",
        FaultKind::RetryAfter(7),
    ));
    hub.fail(Fault::new("*", "/api/models/o/m", FaultKind::Status(503)).times(2));
    let r = send(&hub, "GET", "/api/models/o/m", &[], b"").unwrap();
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    for _ in 0..2 {
        assert_eq!(
            send(&hub, "GET", "/api/models/o/m", &[], b"")
                .unwrap()
                .status,
            503
        );
    }
    let r = send(&hub, "GET", "/api/models/o/m", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "o/m");
}

#[test]
fn corrupt_and_truncated_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    hub.put_files("o/m", "main", &[("w.safetensors", &data)]);
    let cdn = format!("/lfs-objects/{}", common::sha256_hex(&data));

    hub.fail(Fault::new("GET", "/lfs-objects/", FaultKind::CorruptBody));
    let r = send(&hub, "GET", &cdn, &[], b"").unwrap();
    assert!(r.complete);
    assert_eq!(r.body.len(), data.len());
    assert_ne!(r.body, data);

    hub.fail(Fault::new(
        "GET",
        "/lfs-objects/",
        FaultKind::Truncate(1234),
    ));
    let r = send(&hub, "GET", &cdn, &[], b"").unwrap();
    assert_eq!(r.header("content-length"), Some("50000"));
    assert!(!r.complete);
    assert_eq!(r.body, data[..1234]);

    // A resume from where the cut happened completes the file.
    let r = send(&hub, "GET", &cdn, &[("Range", "bytes=1234-")], b"").unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1234-49999/50000"));
    assert_eq!(r.body, data[1234..]);
}

#[test]
fn resolve_answers_as_the_hub_does() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    let big = vec![1u8; 3000];
    let sha = hub.put_files(
        "o/m",
        "main",
        &[("config.json", b"{}\n"), ("model.safetensors", &big)],
    );
    // A regular file: its git blob id as ETag, the commit, ranges.
    let r = send(&hub, "HEAD", "/o/m/resolve/main/config.json", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-repo-commit"), Some(sha.as_str()));
    // `git hash-object` of "{}\n".
    assert_eq!(
        r.header("etag"),
        Some("\"0967ef424bce6791893e9a57bb952f80fd536e93\"")
    );
    assert_eq!(r.header("content-length"), Some("3"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let r = send(
        &hub,
        "GET",
        "/o/m/resolve/main/config.json",
        &[("Range", "bytes=1-")],
        b"",
    );
    assert_eq!(r.unwrap().body, b"}\n");

    // An LFS file: a redirect to the object, named by X-Linked-*.
    let oid = common::sha256_hex(&big);
    let r = send(
        &hub,
        "HEAD",
        "/o/m/resolve/main/model.safetensors",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/lfs-objects/{oid}", hub.endpoint()).as_str())
    );
    assert_eq!(
        r.header("x-linked-etag"),
        Some(format!("\"{oid}\"").as_str())
    );
    assert_eq!(r.header("x-linked-size"), Some("3000"));
    // The revision may be the commit, or a URL-encoded ref.
    let r = send(
        &hub,
        "GET",
        &format!("/o/m/resolve/{sha}/config.json"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.body, b"{}\n");
    let pr = hub.put_files("o/m", "refs/pr/1", &[("pr.txt", b"pr\n")]);
    for rev in ["refs%2Fpr%2F1", "refs/pr/1"] {
        let r = send(&hub, "GET", &format!("/o/m/resolve/{rev}/pr.txt"), &[], b"").unwrap();
        assert_eq!(
            (r.header("x-repo-commit"), &r.body[..]),
            (Some(pr.as_str()), &b"pr\n"[..])
        );
    }

    let r = send(&hub, "GET", "/o/m/resolve/main/nope.txt", &[], b"").unwrap();
    assert_eq!(
        (r.status, r.header("x-error-code")),
        (404, Some("EntryNotFound"))
    );
    let r = send(&hub, "GET", "/o/m/resolve/nope/config.json", &[], b"").unwrap();
    assert_eq!(
        (r.status, r.header("x-error-code")),
        (404, Some("RevisionNotFound"))
    );
    assert_eq!(r.json()["error"], "Invalid rev id: nope");
}

#[test]
fn private_and_gated_repos_need_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.add_token("hf_granted");
    hub.create_repo("o/private");
    hub.set_private("o/private");
    hub.create_repo("o/gated");
    hub.set_gated("o/gated", &["hf_granted"]);
    let code = |r: Reply| (r.status, r.header("x-error-code").map(str::to_string));
    let get = |path: &str, token: Option<&str>| {
        let t = token.map(|t| format!("Bearer {t}"));
        let h: Vec<(&str, &str)> = t.iter().map(|t| ("Authorization", t.as_str())).collect();
        send(&hub, "GET", path, &h, b"").unwrap()
    };
    let repo_not_found = |s| (s, Some("RepoNotFound".to_string()));
    assert_eq!(
        code(get("/api/models/o/private", None)),
        repo_not_found(401)
    );
    assert_eq!(
        code(get("/api/models/o/missing", Some(TOKEN))),
        repo_not_found(404)
    );
    assert_eq!(get("/api/models/o/private", Some(TOKEN)).status, 200);
    let r = get("/api/models/o/private", Some("hf_unknown"));
    assert_eq!(
        (r.status, r.header("x-error-message")),
        (401, Some("Invalid credentials in Authorization header"))
    );

    // Gated: the metadata is public, the files are not.
    assert_eq!(get("/api/models/o/gated", None).json()["gated"], "manual");
    let file = "/o/gated/resolve/main/.gitattributes";
    let gated = |s| (s, Some("GatedRepo".to_string()));
    assert_eq!(code(get(file, None)), gated(401));
    assert_eq!(code(get(file, Some(TOKEN))), gated(403));
    assert_eq!(get(file, Some("hf_granted")).status, 200);

    // Writes need a token.
    let r = send(&hub, "POST", "/api/repos/create", &[], br#"{"name":"x"}"#).unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn lfs_put_checks_the_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    let data = b"the real content".to_vec();
    let oid = common::sha256_hex(&data);
    let batch = json!({"operation": "upload", "transfers": ["basic", "multipart"],
                       "objects": [{"oid": oid, "size": data.len()}], "hash_algo": "sha256"});
    let r = post_json(&hub, "/o/m.git/info/lfs/objects/batch", &batch);
    assert_eq!(r.status, 200);
    let href = r.json()["objects"][0]["actions"]["upload"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches(&hub.endpoint())
        .to_string();
    let r = send(&hub, "PUT", &href, &[], b"forged content!!").unwrap();
    assert_eq!(r.status, 400);
    assert!(!dir.path().join("lfs").join(&oid).exists());
    // Upload URLs name files: anything but a sha256 and a size is refused.
    for bad in ["/lfs-upload/..%2F..%2Fescape/5", "/lfs-upload/..%2Fx/5/1"] {
        assert_eq!(send(&hub, "PUT", bad, &[], b"12345").unwrap().status, 400);
    }
    assert!(!dir.path().join("x.5").exists());
    // Still missing, so the batch still asks for it; once stored, it does not.
    let r = post_json(&hub, "/o/m.git/info/lfs/objects/batch", &batch);
    assert!(r.json()["objects"][0].get("actions").is_some());
    assert_eq!(send(&hub, "PUT", &href, &[], &data).unwrap().status, 200);
    let r = post_json(&hub, "/o/m.git/info/lfs/objects/batch", &batch);
    assert_eq!(
        r.json()["objects"][0],
        json!({"oid": oid, "size": data.len()})
    );
}

#[test]
fn multipart_completion_needs_every_part_etag() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        multipart_threshold: 10,
        chunk_size: 10,
        ..Config::default()
    };
    let hub = HubServer::start_with(dir.path(), config);
    hub.add_token(TOKEN);
    hub.create_repo("o/m");
    let data = b"twenty-five bytes of data".to_vec();
    let oid = common::sha256_hex(&data);
    let batch = json!({"operation": "upload", "transfers": ["basic", "multipart"],
                       "objects": [{"oid": oid, "size": 25}]});
    let r = post_json(&hub, "/o/m.git/info/lfs/objects/batch", &batch).json();
    assert_eq!(r["transfer"], "multipart");
    let upload = &r["objects"][0]["actions"]["upload"];
    assert_eq!(upload["header"]["chunk_size"], "10");
    let local = |u: &Value| {
        u.as_str()
            .unwrap()
            .trim_start_matches(&hub.endpoint())
            .to_string()
    };
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(10).enumerate() {
        let url = local(&upload["header"][(i + 1).to_string()]);
        let r = send(&hub, "PUT", &url, &[], chunk).unwrap();
        parts.push(json!({"partNumber": i + 1, "etag": r.header("etag").unwrap()}));
    }
    let done = local(&upload["href"]);
    let short = json!({"oid": oid, "parts": parts[..2]});
    assert_eq!(post_json(&hub, &done, &short).status, 400);
    let r = post_json(&hub, &done, &json!({"oid": oid, "parts": parts}));
    assert_eq!(r.status, 200);
    assert_eq!(
        std::fs::read(dir.path().join("lfs").join(&oid)).unwrap(),
        data
    );
}

#[test]
fn commit_checks_parent_and_lfs_objects() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    let head = hub.head("o/m", "main").unwrap();
    let add = json!({"key": "file", "value": {"path": "a.txt", "content": b64(b"a\n"),
                                            "encoding": "base64"}});
    let r = commit(&hub, "o/m", Some(&head), std::slice::from_ref(&add));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let new = r.json()["commitOid"].as_str().unwrap().to_string();
    assert_eq!(hub.head("o/m", "main").as_deref(), Some(new.as_str()));
    // The old parent is stale now.
    assert_eq!(commit(&hub, "o/m", Some(&head), &[add]).status, 412);

    let ghost = json!({"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256",
                                                 "oid": "ab".repeat(32), "size": 5}});
    let r = commit(&hub, "o/m", None, &[ghost]);
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("never uploaded"));
    let del = json!({"key": "deletedFile", "value": {"path": "missing.txt"}});
    let r = commit(&hub, "o/m", None, &[del]);
    assert_eq!(
        (r.status, r.header("x-error-code")),
        (404, Some("EntryNotFound"))
    );
    assert_eq!(hub.head("o/m", "main").as_deref(), Some(new.as_str()));
    assert_eq!(hub.commits("o/m").len(), 1);
}

#[test]
fn chunked_request_bodies_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    let line =
        serde_json::to_vec(&json!({"key": "header", "value": {"summary": "chunked"}})).unwrap();
    let op = serde_json::to_vec(&json!({"key": "file", "value": {
        "path": "c.txt", "content": b64(b"chunked body\n"), "encoding": "base64"}}))
    .unwrap();
    let mut body = Vec::new();
    for piece in [&line[..], b"\n", &op[..]] {
        body.extend(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        body.extend(piece);
        body.extend(b"\r\n");
    }
    body.extend(b"0\r\n\r\n");
    let (n, t) = auth();
    let headers = [(n, t.as_str()), ("Transfer-Encoding", "chunked")];
    let r = send(&hub, "POST", "/api/models/o/m/commit/main", &headers, &body).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(hub.file("o/m", "main", "c.txt").unwrap(), b"chunked body\n");
}

#[test]
fn preupload_reports_modes_and_current_oids() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    hub.create_repo("o/m");
    hub.put_files("o/m", "main", &[("notes.txt", b"same\n")]);
    let files = json!({"files": [
        {"path": "notes.txt", "size": 5, "sample": b64(b"same\n")},
        {"path": "w.gguf", "size": 4, "sample": b64(b"GGUF")},
        {"path": "blob", "size": 3, "sample": b64(b"a\0b")},
        {"path": "huge.txt", "size": 20_000_000, "sample": b64(b"text")}]});
    let r = post_json(&hub, "/api/models/o/m/preupload/main", &files).json();
    let modes: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uploadMode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["regular", "lfs", "lfs", "lfs"]);
    // `git hash-object` of "same\n".
    assert_eq!(
        r["files"][0]["oid"],
        "1275430f1765c63e539cb0452565563bd6aef6a6"
    );
    assert!(r["files"][1].get("oid").is_none());
}

#[test]
fn validate_yaml_checks_the_front_matter_framing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = server(dir.path());
    let check = |content: &str| {
        post_json(
            &hub,
            "/api/validate-yaml",
            &json!({"content": content, "repoType": "model"}),
        )
    };
    assert_eq!(check("---\nlicense: mit\n---\n# Card\n").status, 200);
    assert_eq!(check("# No metadata\n").status, 200);
    let r = check("---\nlicense: mit\n# Card\n");
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("never closed"));
}
