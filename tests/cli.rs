//! The binary as a user runs it: help text, exit codes, error messages.

use crate::common;

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
        [
            "inspect-arch",
            "convert",
            "quantize",
            "lora",
            "vram-plan",
            "generate",
            "eval",
            "help"
        ],
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
    let tiny = common::fixture("models/tiny-llama");
    let tiny = tiny.to_str().unwrap();
    fails_with(
        &[
            "quantize",
            "nf4",
            tiny,
            "--out",
            &p("q"),
            "--blocksize",
            "48",
        ],
        "--blocksize 48 is not one bitsandbytes supports",
    );
    std::fs::create_dir(p("full")).unwrap();
    std::fs::write(dir.path().join("full/x"), b"x").unwrap();
    fails_with(
        &["quantize", "int8", tiny, "--out", &p("full")],
        "output directory exists and is not empty",
    );
}

/// A header within the 100 MB limit but beyond the bounds (a name of
/// 200 000 bytes, a shape of 100 000 dimensions) is refused by every command
/// that reads it, in one short line, and nothing is written.
#[test]
fn hostile_headers_are_refused_in_short_messages() {
    let dir = tempfile::tempdir().unwrap();
    let st = |name: &str, shape: &str| {
        let h = format!(r#"{{"{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[0,4]}}}}"#);
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    };
    let shape = format!("[{}]", vec!["1"; 100_000].join(","));
    for (file, bytes, want) in [
        (
            "name.safetensors",
            st(&"n".repeat(200_000), "[1]"),
            "its name is 200000 bytes long",
        ),
        (
            "dims.safetensors",
            st("w", &shape),
            "tensor 'w': its shape has 100000 dimensions",
        ),
    ] {
        let p = dir.path().join(file);
        std::fs::write(&p, bytes).unwrap();
        let p = p.to_str().unwrap();
        let out_dir = dir.path().join("out");
        let out = out_dir.to_str().unwrap();
        for args in [
            vec!["inspect-arch", p],
            vec!["quantize", "nf4", p, "--out", out],
            vec!["generate", p, "--prompt", "hi"],
        ] {
            let o = llmtool().args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
            assert!(err.len() < 1000, "{args:?}: {} bytes of stderr", err.len());
        }
        assert!(!out_dir.exists(), "nothing written");
    }
}

#[test]
fn quantize_dry_run_plans_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q");
    let v = common::json_output(llmtool().args([
        "quantize",
        "nf4",
        common::fixture("models/tiny-llama").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skip",
        "down_proj",
        "--dry-run",
        "--json",
    ]));
    assert!(!out.exists());
    assert_eq!(v["quantized"], 12, "{v}");
    let kept: Vec<&str> = v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [
            "lm_head",
            "model.layers.0.mlp.down_proj",
            "model.layers.1.mlp.down_proj"
        ]
    );
    assert_eq!(
        v["quantization_config"]["llm_int8_skip_modules"],
        serde_json::json!(["lm_head", "down_proj"])
    );
    assert_eq!(
        v["files"],
        serde_json::json!(["README.md", "config.json", "model.safetensors"])
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

#[test]
fn vram_plan_json_and_errors() {
    let v = common::json_output(llmtool().args([
        "vram-plan",
        "Qwen/Qwen2.5-14B-Instruct",
        "--gpu",
        "T4,A10G",
        "--quant",
        "int8,nf4",
        "--ctx",
        "2048",
        "--json",
    ]));
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 4);
    let fits: Vec<(String, String, bool)> = plans
        .iter()
        .map(|p| {
            (
                p["gpu"].as_str().unwrap().to_string(),
                p["format"].as_str().unwrap().to_string(),
                p["fits"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("T4", "int8", false),
        ("T4", "nf4", true),
        ("A10G", "int8", true),
        ("A10G", "nf4", true),
    ];
    for (got, want) in fits.iter().zip(want) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2), want);
    }
    let out = llmtool()
        .args(["vram-plan", "SmolLM2-135M", "--gpu", "T4", "--recommend"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("recommended: bf16"));
    fails_with(
        &["vram-plan", "SmolLM2-135M", "--quant", "q3_k"],
        "unknown format 'q3_k'",
    );
    fails_with(
        &["vram-plan", "SmolLM2-135M", "--gpu", "B300"],
        "unknown GPU 'B300'",
    );
    fails_with(
        &["vram-plan", "nobody/nothing"],
        "not in the built-in catalog",
    );
    fails_with(
        &[
            "vram-plan",
            "SmolLM2-135M",
            "--engine",
            "vllm",
            "--quant",
            "q4_k_m",
        ],
        "vllm does not load q4_k_m",
    );
}

/// tiny-llama with a word-level tokenizer ("wN" is id N), so the CLI can be
/// run end to end on a fixture model and checked against its goldens.
fn tiny_llama_with_tokenizer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(
            common::fixture(&format!("models/tiny-llama/{f}")),
            dir.path().join(f),
        )
        .unwrap();
    }
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..256).map(|i| (format!("w{i}"), i.into())).collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn words(ids: &serde_json::Value) -> String {
    ids.as_array()
        .unwrap()
        .iter()
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn golden(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::fixture(&format!("engine/{name}.json"))).unwrap())
        .unwrap()
}

#[test]
fn generate_and_eval_ppl_run_end_to_end() {
    let dir = tiny_llama_with_tokenizer();
    let model = dir.path().to_str().unwrap();
    let g = golden("tiny-llama");
    let out = llmtool()
        .args(["generate", model, "--prompt", &words(&g["input_ids"])])
        .args(["--max-tokens", "32", "--threads", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = v["tokens"].as_array().unwrap();
    let want = g["greedy"].as_array().unwrap();
    assert!(
        !got.is_empty() && want.starts_with(got),
        "{got:?} vs {want:?}"
    );
    assert!(v["decode_tokens_per_second"].as_f64().unwrap() > 0.0);

    let p = golden("ppl-tiny-llama");
    let text = dir.path().join("text.txt");
    std::fs::write(&text, words(&p["tokens"])).unwrap();
    let out = llmtool()
        .args(["eval", "ppl", model, "--ctx", "16", "--json", "--text"])
        .arg(&text)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No post-processor: no BOS, as llama.cpp would do for this tokenizer.
    let want = p["without_bos"]["ppl"].as_f64().unwrap();
    assert!(
        (v["ppl"].as_f64().unwrap() - want).abs() / want < 1e-5,
        "{v}"
    );

    // A model against itself: zero divergence, full agreement.
    let out = llmtool()
        .args([
            "eval", "kld", model, model, "--ctx", "16", "--json", "--text",
        ])
        .arg(&text)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kld_mean"].as_f64().unwrap(), 0.0, "{v}");
    assert_eq!(v["top1_agreement"].as_f64().unwrap(), 1.0, "{v}");

    fails_with(
        &[
            "eval",
            "ppl",
            model,
            "--ctx",
            "64",
            "--text",
            text.to_str().unwrap(),
        ],
        "needs at least 128",
    );
    fails_with(
        &["generate", model, "--prompt", "w1", "--top-p", "0"],
        "--top-p must be in (0, 1]",
    );
}

#[test]
fn a_gguf_generates_with_its_own_vocabulary() {
    let Some(g) = common::smollm2() else { return };
    let v = common::json_output(llmtool().args([
        "generate",
        g.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "2",
        "--json",
    ]));
    assert_eq!(v["prompt_tokens"], 6, "{v}");
    assert_eq!(v["text"], " Paris.", "{v}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["inspect-arch"][..],
        &["quantize", "q4_k_m", "m", "--out", "x", "--no-such-flag"],
        &["convert", "m.gguf", "--out", "x", "--dtype", "f64"],
        &["generate", "m", "--prompt", "x", "--threads", "0"],
    ] {
        let out = llmtool().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
