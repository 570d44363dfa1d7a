//! `llmtool push` and Hub downloads against the test Hub (tests/hub_server.rs,
//! itself validated by huggingface_hub in tests/hub.rs): interop with the
//! real client both ways, the commit it would send, reruns, faults, tokens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{self, fixture, llmtool, s, sha256_hex};
use crate::hub_server::{Config, Fault, FaultKind, HubServer};

const TOKEN: &str = "hf_llmtoolTESTsecret0123456789";

fn server(root: &Path) -> HubServer {
    let hub = HubServer::start_with(
        root,
        Config {
            multipart_threshold: 3 << 20,
            chunk_size: 1 << 20,
            ..Config::default()
        },
    );
    hub.add_token(TOKEN);
    hub
}

/// llmtool with the test Hub as endpoint, its own HF cache, and few retries.
fn tool(hub: &HubServer, cache: &Path) -> Command {
    let mut c = llmtool();
    c.env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.join("home"))
        .env("HF_TOKEN", TOKEN)
        .env("LLMTOOL_HUB_RETRIES", "2")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN_PATH");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "failed: {t}");
    assert!(!t.contains(TOKEN), "the token was printed: {t}");
    t
}

fn fails(c: &mut Command, want: &str) -> String {
    let o = c.output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(want), "expected '{want}' in: {t}");
    assert!(!t.contains(TOKEN), "the token was printed: {t}");
    assert!(!t.contains("panicked"), "{t}");
    t
}

/// A model folder: the tiny llama with tokenizer and card, plus a 5 MiB
/// binary (multipart at the test server's 3 MiB threshold) and a nested
/// text file.
fn folder(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(m.join("extra")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("models/tiny-llama").join(f), m.join(f)).unwrap();
    }
    let mut big = vec![0u8; 5 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(m.join("extra/blob.bin"), &big).unwrap();
    std::fs::write(m.join("extra/notes.txt"), "philosophers\n").unwrap();
    std::fs::write(m.join("README.md"), "---\nlicense: mit\n---\n# test\n").unwrap();
    m
}

/// path → sha256 of every file under `root`, following symlinks.
fn tree(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, sha256_hex(&std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn hub_py(hub: &HubServer, args: &[&str]) -> Option<serde_json::Value> {
    let py = common::hub_python()?;
    let out = Command::new(py)
        .arg(common::repo().join("tests/oracle/hub_client.py"))
        .args(&args[..1])
        .args(["--endpoint", &hub.endpoint(), "--token", TOKEN])
        .args(&args[1..])
        .env("HF_HUB_DISABLE_XET", "1")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "hub_client.py {args:?}: {t}");
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}")))
}

fn commits(hub: &HubServer, repo: &str) -> usize {
    hub.commits(repo).len()
}

#[test]
fn pushed_folder_downloads_byte_identical_with_huggingface_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    let out = ok(tool(&hub, &tmp.path().join("c")).args([
        "push",
        s(&m),
        "--repo",
        "org/spinoza",
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["card"], "kept");
    assert_eq!(r["files"].as_array().unwrap().len(), 5);
    assert_eq!(commits(&hub, "org/spinoza"), 1);
    let Some(got) = hub_py(
        &hub,
        &[
            "download",
            "--repo",
            "org/spinoza",
            "--cache",
            s(&tmp.path().join("py")),
        ],
    ) else {
        return;
    };
    let snap = PathBuf::from(got["path"].as_str().unwrap());
    // The Hub adds its .gitattributes to every new repo.
    let mut remote = tree(&snap);
    remote.retain(|(p, _)| p != ".gitattributes");
    assert_eq!(remote, tree(&m));
}

#[test]
fn commit_equals_huggingface_hubs_for_the_same_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    if hub_py(
        &hub,
        &["upload", "--folder", s(&m), "--repo", "org/by-python"],
    )
    .is_none()
    {
        return;
    }
    ok(tool(&hub, &tmp.path().join("c")).args(["push", s(&m), "--repo", "org/by-llmtool"]));
    let ops = |repo: &str| {
        let c = hub.commits(repo);
        assert_eq!(c.len(), 1, "{repo}: {c:?}");
        let mut ops: Vec<_> = c[0]
            .ops
            .iter()
            .map(|o| (o.path.clone(), o.kind.clone(), o.oid.clone()))
            .collect();
        ops.sort();
        ops
    };
    assert_eq!(ops("org/by-llmtool"), ops("org/by-python"));
}

#[test]
fn python_upload_is_downloaded_by_llmtool_and_read_offline_by_python() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    std::fs::remove_dir_all(m.join("extra")).unwrap();
    if hub_py(&hub, &["upload", "--folder", s(&m), "--repo", "org/kant"]).is_none() {
        return;
    }
    let cache = tmp.path().join("c");
    let out = ok(tool(&hub, &cache).args(["inspect-arch", "org/kant", "--json"]));
    assert!(out.contains("\"llama\""), "{out}");
    let snap = cache
        .join("models--org--kant/snapshots")
        .join(hub.head("org/kant", "main").unwrap());
    assert_eq!(tree(&snap), tree(&m));
    // The Hub is gone: huggingface_hub finds everything in our cache.
    let endpoint = hub.endpoint();
    drop(hub);
    let py = common::hub_python().unwrap();
    let o = Command::new(py)
        .arg(common::repo().join("tests/oracle/hub_client.py"))
        .args([
            "download",
            "--endpoint",
            &endpoint,
            "--repo",
            "org/kant",
            "--cache",
            s(&cache),
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // And so does llmtool, offline or with the Hub unreachable.
    let mut c = llmtool();
    c.env("HF_HUB_CACHE", &cache)
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HUB_OFFLINE", "1");
    ok(c.args(["inspect-arch", "org/kant"]));
    let mut c = llmtool();
    c.env("HF_HUB_CACHE", &cache)
        .env("HF_ENDPOINT", &endpoint)
        .env_remove("HF_HUB_OFFLINE");
    ok(c.args(["inspect-arch", "org/kant"]));
}

#[test]
fn a_rerun_with_nothing_changed_makes_no_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    let cache = tmp.path().join("c");
    ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/x"]));
    let before = hub.lfs_bytes_received();
    let out = ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/x"]));
    assert!(out.contains("no commit"), "{out}");
    assert_eq!(commits(&hub, "org/x"), 1);
    assert_eq!(hub.lfs_bytes_received(), before);
    // One changed file: one commit holding only it.
    std::fs::write(m.join("extra/notes.txt"), "and more\n").unwrap();
    ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/x"]));
    let c = hub.commits("org/x");
    assert_eq!(c.len(), 2);
    let paths: Vec<&str> = c[1].ops.iter().map(|o| o.path.as_str()).collect();
    assert_eq!(paths, ["extra/notes.txt"]);
    assert_eq!(hub.lfs_bytes_received(), before);
}

#[test]
fn a_dropped_upload_is_retried_and_a_rerun_sends_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    let cache = tmp.path().join("c");
    // Dropped once mid-part: the retry completes it, one commit.
    hub.fail(Fault::new("PUT", "", FaultKind::DropAfter(100_000)));
    ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/a"]));
    assert_eq!(commits(&hub, "org/a"), 1);
    assert_eq!(
        hub.file("org/a", "main", "extra/blob.bin").unwrap().len(),
        5 << 20
    );

    // Every try (3 with LLMTOOL_HUB_RETRIES=2) of one new object fails:
    // the push stops after the other one went up, and makes no commit.
    let small = vec![5u8; 1000];
    let large = vec![3u8; 4 << 20];
    std::fs::write(m.join("a-first.safetensors"), &small).unwrap();
    std::fs::write(m.join("b-second.safetensors"), &large).unwrap();
    let before = hub.lfs_bytes_received();
    let bad = format!("/lfs-upload/{}", sha256_hex(&large));
    hub.fail(Fault::new("PUT", &bad, FaultKind::Status(503)).times(3));
    fails(
        tool(&hub, &cache).args(["push", s(&m), "--repo", "org/a"]),
        "503",
    );
    assert_eq!(commits(&hub, "org/a"), 1);
    assert_eq!(hub.lfs_bytes_received() - before, 1000);
    // The rerun sends only the missing object, and commits once.
    ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/a"]));
    assert_eq!(commits(&hub, "org/a"), 2);
    assert_eq!(hub.lfs_bytes_received() - before, 1000 + (4 << 20));
}

#[test]
fn a_503_then_success_and_a_429_retry_after_are_waited_out() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    hub.fail(Fault::new("POST", "/preupload/", FaultKind::Status(503)));
    hub.fail(Fault::new("POST", "/commit/", FaultKind::Status(503)));
    hub.fail(Fault::new(
        "POST",
        "objects/batch",
        FaultKind::RetryAfter(2),
    ));
    let t0 = std::time::Instant::now();
    ok(tool(&hub, &tmp.path().join("c")).args(["push", s(&m), "--repo", "org/b"]));
    assert!(
        t0.elapsed().as_secs_f64() >= 2.0,
        "Retry-After not honoured"
    );
    assert_eq!(commits(&hub, "org/b"), 1);
    let statuses: Vec<u16> = hub.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429) && statuses.contains(&503));
}

#[test]
fn auth_and_missing_repos_give_the_hubs_message_and_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    let cache = tmp.path().join("c");
    let t = fails(
        tool(&hub, &cache)
            .env("HF_TOKEN", "hf_wrongWRONGwrong")
            .args(["push", s(&m), "--repo", "org/c"]),
        "401",
    );
    assert!(
        t.contains("HF_TOKEN") && !t.contains("hf_wrongWRONGwrong"),
        "{t}"
    );
    fails(
        tool(&hub, &cache).args(["inspect-arch", "org/missing"]),
        "RepoNotFound",
    );
    hub.create_repo("org/gated");
    hub.put_files("org/gated", "main", &[("config.json", b"{}")]);
    hub.set_gated("org/gated", &[]);
    fails(
        tool(&hub, &cache).args(["inspect-arch", "org/gated"]),
        "gated",
    );
    hub.create_repo("org/private");
    hub.put_files("org/private", "main", &[("config.json", b"{}")]);
    hub.set_private("org/private");
    fails(
        tool(&hub, &cache)
            .env_remove("HF_TOKEN")
            .args(["inspect-arch", "org/private"]),
        "token",
    );
}

fn seed_tiny(hub: &HubServer, repo: &str) -> Vec<u8> {
    let st = std::fs::read(fixture("models/tiny-llama/model.safetensors")).unwrap();
    let cfg = std::fs::read(fixture("models/tiny-llama/config.json")).unwrap();
    hub.create_repo(repo);
    hub.put_files(
        repo,
        "main",
        &[
            ("config.json", &cfg),
            ("model.safetensors", &st),
            ("pytorch_model.bin", b"x"),
        ],
    );
    st
}

#[test]
fn a_partial_download_resumes_and_a_corrupted_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let st = seed_tiny(&hub, "org/tiny");
    let cache = tmp.path().join("c");
    let blobs = cache.join("models--org--tiny/blobs");

    // LFS files are served by a redirect to the storage URL.
    hub.fail(Fault::new("GET", "/lfs-objects/", FaultKind::CorruptBody));
    let t = fails(
        tool(&hub, &cache).args(["inspect-arch", "org/tiny"]),
        "sha256",
    );
    assert!(t.contains("discarded"), "{t}");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == &sha256_hex(&st) || n.ends_with(".incomplete"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A partial file from an earlier run, and a connection cut mid-body.
    std::fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&st))),
        &st[..1000],
    )
    .unwrap();
    hub.fail(Fault::new(
        "GET",
        "/lfs-objects/",
        FaultKind::Truncate(2000),
    ));
    ok(tool(&hub, &cache).args(["inspect-arch", "org/tiny"]));
    assert_eq!(std::fs::read(blobs.join(sha256_hex(&st))).unwrap(), st);
    let gets: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/lfs-objects/"))
        .collect();
    // Corrupted, then resumed at 1000 and cut at 3000, then resumed at 3000.
    let statuses: Vec<u16> = gets.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 206, 206], "{gets:?}");
    // Pickle weights are never fetched.
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.path.contains("pytorch_model.bin")));
}

#[test]
fn offline_reads_the_cache_only_and_catalog_names_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let cache = tmp.path().join("c");
    let repo = "HuggingFaceTB/SmolLM2-135M-Instruct";
    seed_tiny(&hub, repo);
    fails(
        tool(&hub, &cache)
            .env("HF_HUB_OFFLINE", "1")
            .args(["inspect-arch", repo]),
        "HF_HUB_OFFLINE",
    );
    // A mistyped local path is not a Hub request.
    fails(
        tool(&hub, &cache).args(["inspect-arch", "models/smollm2.gguf"]),
        "models/smollm2.gguf",
    );
    assert!(hub.requests().is_empty());
    ok(tool(&hub, &cache).args(["inspect-arch", "smollm2-135m"]));
    ok(tool(&hub, &cache)
        .env("HF_HUB_OFFLINE", "1")
        .args(["inspect-arch", "SmolLM2-135M"]));
}

#[test]
fn a_gguf_pushes_alone_with_a_generated_card_and_dry_run_sends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let cache = tmp.path().join("c");
    let out = ok(tool(&hub, &cache).args([
        "push",
        s(&gguf),
        "--repo",
        "org/smol-gguf",
        "--dry-run",
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["card"], "generated");
    let card = r["card_text"].as_str().unwrap();
    for want in [
        "library_name: gguf",
        "base_model_relation: quantized",
        "| T4 |",
    ] {
        assert!(card.contains(want), "{want}: {card}");
    }
    assert!(hub
        .requests()
        .iter()
        .all(|l| !l.path.contains("/commit/") && l.method != "PUT"));
    ok(tool(&hub, &cache).args(["push", s(&gguf), "--repo", "org/smol-gguf"]));
    let files: Vec<String> = hub.commits("org/smol-gguf")[0]
        .ops
        .iter()
        .map(|o| o.path.clone())
        .collect();
    assert_eq!(files, ["README.md", "SmolLM2-135M-Instruct.Q4_1.gguf"]);
}

#[test]
fn card_only_keeps_the_provenance_and_adds_quality_and_vram() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let m = folder(tmp.path());
    std::fs::remove_dir_all(m.join("extra")).unwrap();
    std::fs::write(
        m.join("README.md"),
        "---\nbase_model: \"org/base\"\nlibrary_name: transformers\ntags:\n- llmtool\n- lora\n\
         adapters:\n- path: \"spinoza\"\n  sha256: abc123\n  weight: 1\n---\n\n# Merged model\n\n\
         Made with:\n\n```sh\nllmtool lora merge --base org/base --adapter spinoza --out m\n```\n",
    )
    .unwrap();
    std::fs::write(
        m.join("eval-kld.json"),
        r#"{"kld_mean": 0.0123, "ppl_base": 10.0, "ppl_other": 10.5, "top1_agreement": 0.97, "ctx": 512}"#,
    )
    .unwrap();
    let cache = tmp.path().join("c");
    ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/m", "--card-only"]));
    let card = std::fs::read_to_string(m.join("README.md")).unwrap();
    for want in [
        "base_model: \"org/base\"",
        "pipeline_tag: text-generation",
        "- lora",
        "  sha256: abc123",
        "llmtool lora merge --base org/base",
        "| eval-kld.json | 10.5000 | 10.0000 | +5.00 % | 0.01230 | 97.00 % | 512 |",
        "| T4 |",
    ] {
        assert!(card.contains(want), "{want}:\n{card}");
    }
    let c = hub.commits("org/m");
    let paths: Vec<&str> = c[0].ops.iter().map(|o| o.path.as_str()).collect();
    assert_eq!(paths, ["README.md"]);
    // Regenerating again changes nothing: same card, no commit.
    let out = ok(tool(&hub, &cache).args(["push", s(&m), "--repo", "org/m", "--card-only"]));
    assert!(out.contains("no commit"), "{out}");
    assert_eq!(std::fs::read_to_string(m.join("README.md")).unwrap(), card);
}

#[test]
fn adapters_from_the_hub_globs_branches_prs_and_the_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = server(&tmp.path().join("hub"));
    let cache = tmp.path().join("c");
    // An adapter repo: `lora inspect` takes its id.
    let ad = fixture("lora/f32-basic/adapter");
    let cfg = std::fs::read(ad.join("adapter_config.json")).unwrap();
    let w = std::fs::read(ad.join("adapter_model.safetensors")).unwrap();
    hub.create_repo("org/spinoza-lora");
    hub.put_files(
        "org/spinoza-lora",
        "main",
        &[
            ("adapter_config.json", &cfg),
            ("adapter_model.safetensors", &w),
        ],
    );
    let out = ok(tool(&hub, &cache).args(["lora", "inspect", "org/spinoza-lora"]));
    assert!(out.contains("rank"), "{out}");

    // --include/--exclude, a new branch, then a pull request; the token
    // read from $HF_HOME/token.
    let m = folder(tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let push = |extra: &[&str]| {
        let mut c = tool(&hub, &cache);
        c.env_remove("HF_TOKEN")
            .env("HF_HOME", &home)
            .args(["push", s(&m), "--repo", "org/g"])
            .args(extra);
        ok(&mut c)
    };
    push(&[
        "--include",
        "*.json",
        "--include",
        "*.md",
        "--exclude",
        "extra/*",
    ]);
    let first: Vec<String> = hub.commits("org/g")[0]
        .ops
        .iter()
        .map(|o| o.path.clone())
        .collect();
    assert_eq!(first, ["README.md", "config.json"]);
    push(&["--revision", "nightly"]);
    assert!(hub.file("org/g", "nightly", "extra/blob.bin").is_some());
    assert!(hub.file("org/g", "main", "extra/blob.bin").is_none());
    std::fs::write(m.join("extra/notes.txt"), "changed\n").unwrap();
    let out = push(&["--create-pr", "-m", "new notes"]);
    assert!(out.contains("pull request"), "{out}");
    let pr = hub.commits("org/g").pop().unwrap();
    assert_eq!(pr.summary, "new notes");
    assert!(pr.pr.is_some(), "{pr:?}");
    assert!(hub.file("org/g", "main", "extra/notes.txt").is_none());
}
