//! The binary as a user runs it: help text, exit codes, error messages.

mod common;

use common::llmtool;

#[test]
fn help_lists_only_working_subcommands() {
    let out = llmtool().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = text
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["inspect-arch", "convert", "lora", "generate", "eval", "help"],
        "{text}"
    );
    let out = llmtool().args(["inspect-arch", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Examples:") && text.contains("--json") && text.contains("--tensors"),
        "{text}"
    );
}

fn fails_with(args: &[&str], want: &str) {
    let out = llmtool().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code 1 (not a panic) for {args:?}: {err}"
    );
    assert!(err.contains(want), "expected '{want}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_inputs_exit_1_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    fails_with(
        &["inspect-arch", &p("missing")],
        "is not a file or directory",
    );
    std::fs::write(p("t.gguf"), b"GGUF\x03\0\0\0\x01").unwrap();
    fails_with(
        &["inspect-arch", &p("t.gguf")],
        "t.gguf: truncated: the tensor count",
    );
    std::fs::write(p("t.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    fails_with(
        &["inspect-arch", &p("t.safetensors")],
        "t.safetensors: header length field says",
    );
    std::fs::write(p("w.bin"), b"\x80\x02").unwrap();
    fails_with(&["inspect-arch", &p("w.bin")], "pickle checkpoints");
    fails_with(
        &["inspect-arch", "nobody/nothing"],
        "huggingface-cli download nobody/nothing",
    );
}

#[test]
fn hub_repo_ids_resolve_through_hf_home() {
    // A fake cache holding a copy of a small model, found through HF_HOME.
    let home = tempfile::tempdir().unwrap();
    let commit = "a".repeat(40);
    let repo = home.path().join("hub/models--acme--tiny");
    let snap = repo.join("snapshots").join(&commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), &commit).unwrap();
    let src = common::fixture("models/tiny-qwen2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), snap.join(f)).unwrap();
    }
    let v = common::json_output(
        llmtool()
            .args(["inspect-arch", "acme/tiny", "--json"])
            .env("HF_HOME", home.path())
            .env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE"),
    );
    assert_eq!(v["schema"], "llmtool.arch/1");
    assert_eq!(v["family"], "qwen2");
    assert!(v["model"].as_str().unwrap().ends_with(&commit));
    // HF_HUB_CACHE takes precedence over HF_HOME.
    let out = llmtool()
        .args(["inspect-arch", "acme/tiny"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_CACHE", home.path().join("elsewhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
