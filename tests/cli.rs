//! The binary as a user runs it: help text, exit codes, error messages.

use crate::common;

use common::llmtool;

/// The commands `llmtool --help` lists: (name, one-line description).
fn help_commands() -> Vec<(String, String)> {
    let out = llmtool().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(char::is_whitespace)?;
            Some((name.to_string(), about.trim().to_string()))
        })
        .collect()
}

#[test]
fn help_lists_only_working_subcommands() {
    let names: Vec<String> = help_commands().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "inspect-arch",
            "convert",
            "quantize",
            "lora",
            "vram-plan",
            "generate",
            "eval",
            "push",
            "run",
            "fragment",
            "bench",
            "completions",
            "man",
            "help"
        ]
    );
    let out = llmtool().args(["inspect-arch", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Examples:") && text.contains("--json") && text.contains("--tensors"),
        "{text}"
    );
}

#[test]
fn readme_lists_exactly_the_commands_of_help() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Commands\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a '## Commands' section");
    // Table rows "| `name` | description |".
    let listed: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.splitn(2, "` | ");
            let name = cells.next()?;
            let about = cells.next()?.strip_suffix(" |")?;
            Some((name.to_string(), about.to_string()))
        })
        .collect();
    // clap's own `help` command needs no README line.
    let help: Vec<(String, String)> = help_commands()
        .into_iter()
        .filter(|(n, _)| n != "help")
        .collect();
    assert_eq!(listed, help, "README.md's command table and --help differ");
}

#[test]
fn completions_cover_every_command_in_every_shell() {
    let names: Vec<String> = help_commands().into_iter().map(|(n, _)| n).collect();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = llmtool().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for n in &names {
            assert!(script.contains(n.as_str()), "{shell} completion lacks {n}");
        }
        assert!(script.contains("tokenizer-from"), "{shell}");
    }
    // The bash script parses.
    let out = llmtool().args(["completions", "bash"]).output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("llmtool.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
    let out = llmtool().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_llmtool_and_each_command() {
    let page = |args: &[&str]| {
        let out = common::run_ok(llmtool().arg("man").args(args));
        String::from_utf8(out.stdout).unwrap()
    };
    let top = page(&[]);
    assert!(top.contains(".TH llmtool 1"), "{top}");
    // roff escapes hyphens.
    for (n, _) in help_commands().iter().filter(|(n, _)| n != "help") {
        let refname = format!("llmtool\\-{}(1)", n.replace('-', "\\-"));
        assert!(top.contains(&refname), "llmtool(1) lacks {refname}");
    }
    let merge = page(&["lora", "merge"]);
    assert!(merge.contains(".TH llmtool-lora-merge 1"), "{merge}");
    assert!(merge.contains("\\fB\\-\\-adapter\\fR"), "{merge}");
    assert!(
        merge.contains(&format!("\"llmtool {}\"", env!("CARGO_PKG_VERSION"))),
        "{merge}"
    );
    fails_with(
        &["man", "lora", "merj"],
        "no command 'llmtool lora merj'; the commands there are: merge, inspect",
    );
}

fn fails_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], want: &str) {
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
        "`hf download nobody/nothing`",
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
    // A T4 has no bfloat16 (compute capability 7.5): f16 is the best.
    assert!(String::from_utf8_lossy(&out.stdout).contains("recommended: f16"));
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
    write_word_tokenizer(dir.path());
    dir
}

/// A word-level tokenizer.json for tiny-llama's 256 ids in `dir`.
fn write_word_tokenizer(dir: &std::path::Path) {
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..256).map(|i| (format!("w{i}"), i.into())).collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
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
    let v = common::json_output(
        llmtool()
            .args(["generate", model, "--prompt", &words(&g["input_ids"])])
            .args(["--max-tokens", "32", "--threads", "2", "--json"]),
    );
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
    let v = common::json_output(
        llmtool()
            .args(["eval", "ppl", model, "--ctx", "16", "--json", "--text"])
            .arg(&text),
    );
    // No post-processor: no BOS, as llama.cpp would do for this tokenizer.
    let want = p["without_bos"]["ppl"].as_f64().unwrap();
    assert!(
        (v["ppl"].as_f64().unwrap() - want).abs() / want < 1e-5,
        "{v}"
    );

    // A model against itself: zero divergence, full agreement.
    let v = common::json_output(
        llmtool()
            .args([
                "eval", "kld", model, model, "--ctx", "16", "--json", "--text",
            ])
            .arg(&text),
    );
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

    // The same tokens as windows of ids: the same chunks, the same number.
    let tokens: Vec<u64> = p["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let windows: Vec<&[u64]> = tokens.chunks_exact(16).collect();
    let ids = dir.path().join("ids.json");
    std::fs::write(&ids, serde_json::json!({ "ids": windows }).to_string()).unwrap();
    let ids = ids.to_str().unwrap();
    let v = common::json_output(llmtool().args(["eval", "ppl", model, "--ids", ids, "--json"]));
    assert_eq!(
        v["ppl"],
        common::json_output(
            llmtool()
                .args(["eval", "ppl", model, "--ctx", "16", "--json", "--text"])
                .arg(&text),
        )["ppl"]
    );
    assert_eq!(
        (v["chunks"].as_u64(), v["ctx"].as_u64()),
        (Some(windows.len() as u64), Some(16))
    );
    let one = dir.path().join("one.json");
    std::fs::write(&one, serde_json::json!({ "ids": [windows[0]] }).to_string()).unwrap();
    fails_with(
        &["eval", "ppl", model, "--ids", one.to_str().unwrap()],
        "one window of ids; evaluation takes at least 2",
    );
    std::fs::write(&one, r#"{"ids": [[1, 2, 3, 4], [5, 6, 7, 99999]]}"#).unwrap();
    fails_with(
        &["eval", "ppl", model, "--ids", one.to_str().unwrap()],
        "99999",
    );
    let out = llmtool()
        .args(["eval", "ppl", model, "--ids", ids, "--ctx", "16"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--ids sets the chunk length");
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

/// `eval ppl` on the tiny-llama text golden with `model`: its arguments.
fn ppl_args(model: &std::path::Path, text: &std::path::Path) -> Vec<String> {
    std::fs::write(text, words(&golden("ppl-tiny-llama")["tokens"])).unwrap();
    [
        "eval",
        "ppl",
        model.to_str().unwrap(),
        "--ctx",
        "16",
        "--text",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([text.to_str().unwrap().to_string()])
    .collect()
}

#[test]
fn eval_ppl_refuses_nan_weights_instead_of_printing_nan() {
    let dir = tempfile::tempdir().unwrap();
    let victim = "model.layers.1.mlp.down_proj.weight";
    common::edited_tiny_llama(dir.path(), victim, |i| if i == 7 { f32::NAN } else { 0.01 });
    write_word_tokenizer(dir.path());
    let args = ppl_args(dir.path(), &dir.path().join("text.txt"));
    fails_with(
        &args,
        &format!("the logits are not finite: tensor '{victim}' holds NaN at element 7"),
    );
    // generate runs the same pass: no token is sampled from NaN.
    fails_with(
        &[
            "generate",
            dir.path().to_str().unwrap(),
            "--prompt",
            "w1 w2",
        ],
        victim,
    );
}

#[test]
fn eval_ppl_refuses_a_rope_base_or_factor_that_is_not_positive() {
    for (key, value, want) in [
        (
            "rope_theta",
            serde_json::json!(-1.0),
            "config.json rope_theta is -1",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "linear", "factor": 0.0}),
            "config.json rope_scaling.factor is 0",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                "high_freq_factor": 1.0, "original_max_position_embeddings": 64}),
            "high_freq_factor 1 <= low_freq_factor 4",
        ),
        (
            "rms_norm_eps",
            serde_json::json!(-1e-5),
            "config.json rms_norm_eps is -0.00001",
        ),
    ] {
        let dir = tiny_llama_with_tokenizer();
        let config = dir.path().join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        c[key] = value;
        std::fs::write(&config, c.to_string()).unwrap();
        let args = ppl_args(dir.path(), &dir.path().join("text.txt"));
        fails_with(&args, want);
    }
}

#[test]
fn eval_refuses_a_fifo_as_text_without_blocking() {
    let dir = tiny_llama_with_tokenizer();
    let fifo = dir.path().join("text.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut child = llmtool()
        .args(["eval", "ppl", dir.path().to_str().unwrap(), "--text"])
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody writes to the FIFO: opening it would block forever.
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("eval ppl blocked on a FIFO given as --text");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("text.fifo") && err.contains("not a regular file"),
        "{err}"
    );
}

/// A plain HF directory plans with no flags: its own tensors on
/// transformers next to the usual spread (it used to fail with "llama.cpp
/// cannot load this model's own files").
#[test]
fn vram_plan_directory_without_flags() {
    let dir = common::fixture("models/tiny-qwen2");
    let v = common::json_output(llmtool().args(["vram-plan", dir.to_str().unwrap(), "--json"]));
    let native = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["format"] == "native")
        .expect("the model's own tensors are planned");
    assert_eq!(native["engine"], "transformers");
    assert_eq!(native["fits"], true);
}

/// Weights without a config.json: the error says what is missing in plain
/// words (it used to read "from the tensors or the none").
#[test]
fn vram_plan_without_config_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::fixture("models/tiny-qwen2/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let out = llmtool()
        .args(["vram-plan", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("there is no config.json beside the weights"),
        "{err}"
    );
    assert!(!err.contains("the none"), "{err}");
}

/// Exit status 3 when the report shows nothing that fits (plans or
/// `--recommend`), with the report still printed; 0 as soon as one fits.
#[test]
fn vram_plan_nothing_fits_exits_3() {
    let run = |extra: &[&str]| {
        let mut args = vec!["vram-plan", "Qwen2.5-72B", "--gpu", "T4"];
        args.extend_from_slice(extra);
        llmtool().args(&args).output().unwrap()
    };
    for extra in [&["--quant", "bf16,nf4"][..], &["--recommend"], &["--json"]] {
        let out = run(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {err}");
        assert!(err.contains("nothing fits"), "{err}");
        assert!(!out.stdout.is_empty(), "the report is still printed");
        if extra == ["--json"] {
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
    }
    let out = llmtool()
        .args(["vram-plan", "Qwen2.5-72B", "--gpu", "T4,A100-80GB"])
        .args(["--quant", "nf4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// The vram-plan report fits the width (`COLUMNS`, as shells export it; it
/// used to be ~190 columns wide) and is plain ASCII when standard output is
/// not a terminal, for plans, several GPUs, vLLM and `--recommend`.
#[test]
fn vram_plan_fits_the_width_in_ascii() {
    let runs: [&[&str]; 4] = [
        &["Qwen2.5-14B", "--ctx", "2048"],
        &["Llama-3.1-8B", "--gpus", "2xT4", "--engine", "vllm"],
        &[
            "Llama-3.1-8B",
            "--gpu",
            "T4",
            "--quant",
            "q8_0",
            "--ctx",
            "131072",
            "--users",
            "3",
        ],
        &["Qwen2.5-14B", "--gpu", "T4,A10G", "--recommend"],
    ];
    // No COLUMNS and no terminal: 100 columns.
    for (columns, width) in [(Some(80), 80), (Some(100), 100), (None, 100)] {
        for args in runs {
            let mut cmd = llmtool();
            cmd.arg("vram-plan").args(args);
            match columns {
                Some(c) => cmd.env("COLUMNS", c.to_string()),
                None => cmd.env_remove("COLUMNS"),
            };
            let out = cmd.output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.lines().count() > 5, "{args:?}: a report: {text}");
            assert!(text.is_ascii(), "{args:?} at {width}: not ASCII:\n{text}");
            for line in text.lines() {
                assert!(
                    line.len() <= width,
                    "{args:?}: line of {} > {width}:\n{line}\n\n{text}",
                    line.len()
                );
            }
        }
    }
}

/// The tensors of two models are equal byte for byte (names, dtypes,
/// shapes, data), whatever their metadata.
fn same_tensors(a: &std::path::Path, b: &std::path::Path) {
    let (a, b) = (
        llmtool::store::Model::open(a.to_str().unwrap()).unwrap(),
        llmtool::store::Model::open(b.to_str().unwrap()).unwrap(),
    );
    common::same_tensors(&a, &b);
}

/// A GPTQ checkpoint goes through eval (no divergence from its dequantized
/// model), convert (that model, tensor for tensor) and quantize to GGUF
/// (the GGUF of that model).
#[test]
fn packed_checkpoints_evaluate_convert_and_quantize_as_their_dequantized_model() {
    use crate::packed_models::{packed_tiny_llama, GPTQ};
    let (packed, plain) = packed_tiny_llama(GPTQ);
    for d in [&packed, &plain] {
        write_word_tokenizer(d.path());
    }
    let (p, q) = (
        packed.path().to_str().unwrap(),
        plain.path().to_str().unwrap(),
    );
    let out = tempfile::tempdir().unwrap();
    let text = out.path().join("text.txt");
    std::fs::write(&text, words(&golden("ppl-tiny-llama")["tokens"])).unwrap();
    let v = common::json_output(
        llmtool()
            .args(["eval", "kld", q, p, "--ctx", "16", "--json", "--text"])
            .arg(&text),
    );
    assert_eq!(v["kld_mean"].as_f64().unwrap(), 0.0, "{v}");
    assert_eq!(v["top1_agreement"].as_f64().unwrap(), 1.0, "{v}");

    // GGUF needs a convertible tokenizer: tiny-sp's SentencePiece files.
    std::fs::remove_file(packed.path().join("tokenizer.json")).unwrap();
    common::copy_tiny_sp_tokenizer(packed.path());
    // Converted under the packed model's directory name (a GGUF's
    // general.name comes from it).
    let hf = out.path().join(packed.path().file_name().unwrap());
    common::run_ok(llmtool().args(["convert", p, "--out"]).arg(&hf));
    same_tensors(
        &hf.join("model.safetensors"),
        &plain.path().join("model.safetensors"),
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("quantization_config").is_none(), "{cfg}");
    assert!(hf.join("tokenizer.model").is_file());

    // quantize of the packed model = quantize of its conversion, byte for byte.
    let (a, b) = (out.path().join("a.gguf"), out.path().join("b.gguf"));
    common::run_ok(llmtool().args(["quantize", "q8_0", p, "--out"]).arg(&a));
    common::run_ok(
        llmtool()
            .args(["quantize", "q8_0"])
            .arg(&hf)
            .arg("--out")
            .arg(&b),
    );
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "the GGUF of the packed model differs from its conversion's"
    );
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.contains("dequantized")),
        "scratch directory left behind: {left:?}"
    );
}
