//! `llmtool run RECIPE` on tiny models: end to end, reruns that do nothing,
//! a changed adapter redoing only its steps, a failing step that leaves the
//! others alone, kills at several moments then a resume, recipe errors with
//! file:line and suggestions, and a push through the test Hub.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, llmtool, s};

/// A PEFT adapter on tiny-llama's q_proj/v_proj (rank 2), its values from
/// `seed`; `v_rows` is v_proj's output width (128 for tiny-llama; another
/// value makes an adapter that does not fit the base).
fn adapter(dir: &Path, seed: u32, v_rows: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}"#,
    )
    .unwrap();
    let mut x = seed.wrapping_mul(2654435761).max(1);
    let mut values = |n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (((x % 2000) as f32 - 1000.0) * 2e-5).to_le_bytes()
            })
            .collect()
    };
    let mut tensors: Vec<common::Stored> = Vec::new();
    for layer in 0..2 {
        for (m, rows) in [("q_proj", 256u64), ("v_proj", v_rows)] {
            let p = format!("base_model.model.model.layers.{layer}.self_attn.{m}");
            tensors.push((
                format!("{p}.lora_A.weight"),
                "F32",
                vec![2, 256],
                values(512),
            ));
            tensors.push((
                format!("{p}.lora_B.weight"),
                "F32",
                vec![rows, 2],
                values(rows * 2),
            ));
        }
    }
    common::write_safetensors(&dir.join("adapter_model.safetensors"), &tensors);
    dir.to_path_buf()
}

/// tiny-llama (f32) with the tiny SentencePiece-style tokenizer and a
/// 463-row vocabulary to match it, in `dir/m`.
fn base(dir: &Path) -> PathBuf {
    let m = dir.join("m");
    std::fs::create_dir(&m).unwrap();
    common::tiny_llama_variant(
        &m,
        |t| {
            let vocab_rows = t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight";
            vocab_rows.then(|| {
                let v = (0..463 * 256)
                    .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
                    .collect();
                (vec![463, 256], v)
            })
        },
        |c| c["vocab_size"] = serde_json::json!(463),
    );
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(
            common::fixture("tokenizer/tiny-llama-spm").join(f),
            m.join(f),
        )
        .unwrap();
    }
    m
}

/// tiny-llama with a tokenizer, two adapters, the eval text and a recipe
/// (formats `formats`, `extra` appended) in `dir`.
fn setup(dir: &Path, formats: &[&str], extra: &str) -> PathBuf {
    let base = base(dir);
    adapter(&dir.join("kant"), 1, 128);
    adapter(&dir.join("hume"), 2, 128);
    std::fs::copy(common::fixture("engine/ppl-text.txt"), dir.join("text.txt")).unwrap();
    let formats: String = formats.iter().map(|f| format!("[formats.{f}]\n")).collect();
    let recipe = format!(
        r#"version = 1
out = "out"

[base]
model = "{}"

[adapters]
kant = {{ path = "kant" }}
hume = {{ path = "hume" }}

{formats}
[eval]
text = "text.txt"
ctx = 32
max_chunks = 2

[vram]
gpus = ["T4", "A10G"]
ctx = 2048

[resources]
jobs = 2
memory_budget = "2GiB"
{extra}"#,
        s(&base)
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, recipe).unwrap();
    path
}

fn run_json(recipe: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let o = llmtool()
        .arg("run")
        .arg(recipe)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {err}"));
    (o.status.code(), v, err)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn runs_end_to_end_then_reruns_nothing_then_only_the_changed_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), &["q8_0", "q4_k_m"], "");
    let (code, r, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}\n{r:#}");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row["ok"], true, "{row:#}");
        assert!(row["size"].as_u64().unwrap() > 0);
        assert!(row["ppl"].as_f64().unwrap().is_finite());
        assert!(row["kld"].as_f64().unwrap() >= 0.0);
        let top1 = row["top1_agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&top1));
        let gpus: Vec<&str> = row["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["gpu"].as_str().unwrap())
            .collect();
        assert_eq!(gpus.len(), 2, "{row:#}");
    }
    let out = dir.path().join("out");
    // The report is on disk, and the card carries the eval numbers.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| kant | q8_0 |"), "{md}");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved["rows"], r["rows"]);
    let card = std::fs::read_to_string(out.join("kant/q4_k_m/README.md")).unwrap();
    let kld = rows[1]["kld"].as_f64().unwrap();
    assert!(card.contains(&format!("{kld:.5}")), "{card}");
    assert!(card.contains("fits at 2k context"), "{card}");
    assert!(
        Path::new(&out.join("kant/q4_k_m/kant-m-Q4_K_M.gguf")).is_file(),
        "{:?}",
        std::fs::read_dir(out.join("kant/q4_k_m"))
            .unwrap()
            .collect::<Vec<_>>()
    );

    // Second run: every step up to date, in seconds, same numbers.
    let t = Instant::now();
    let (code, again, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        statuses(&again).iter().all(|(_, s)| s == "up_to_date"),
        "{:?}",
        statuses(&again)
    );
    assert_eq!(again["rows"][0]["kld"], r["rows"][0]["kld"]);

    // --dry-run says the same without running.
    let plan = common::json_output(
        llmtool()
            .arg("run")
            .arg(&recipe)
            .args(["--dry-run", "--json"]),
    );
    assert!(plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["state"] == "up to date"));

    // A changed adapter: only its steps run again.
    adapter(&dir.path().join("hume"), 3, 128);
    let plan = common::json_output(
        llmtool()
            .arg("run")
            .arg(&recipe)
            .args(["--dry-run", "--json"]),
    );
    for s in plan["steps"].as_array().unwrap() {
        let hume = s["id"].as_str().unwrap().contains("/hume");
        assert_eq!(s["state"] == "run", hume, "{s}");
    }
    let (code, third, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}");
    for (id, status) in statuses(&third) {
        let want = if id.contains("/hume") {
            "done"
        } else {
            "up_to_date"
        };
        assert_eq!(status, want, "{id}");
    }
    assert_ne!(third["rows"][2]["kld"], r["rows"][2]["kld"]);
    assert_eq!(third["rows"][0]["kld"], r["rows"][0]["kld"]);

    // --only and --format select.
    let plan = common::json_output(llmtool().arg("run").arg(&recipe).args([
        "--dry-run",
        "--json",
        "--only",
        "kant",
        "--format",
        "q8_0",
    ]));
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "merge/kant",
            "quantize/kant/q8_0",
            "eval/kant/q8_0",
            "vram/kant/q8_0",
            "card/kant/q8_0"
        ]
    );
}

#[test]
fn a_failing_step_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), &["q8_0"], "");
    // hume's v_proj delta has the wrong height: its merge is refused.
    std::fs::remove_dir_all(dir.path().join("hume")).unwrap();
    adapter(&dir.path().join("hume"), 2, 64);
    let (code, r, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(1), "{err}");
    let st = statuses(&r);
    let get = |id: &str| st.iter().find(|(i, _)| i == id).unwrap().1.as_str();
    assert_eq!(get("merge/hume"), "failed");
    assert_eq!(get("quantize/hume/q8_0"), "skipped");
    assert_eq!(get("card/kant/q8_0"), "done");
    assert_eq!(r["rows"][0]["ok"], true);
    assert_eq!(r["rows"][1]["ok"], false);
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("`merge/hume` failed"), "{md}");
    // Once fixed, the rerun makes only what is missing.
    std::fs::remove_dir_all(dir.path().join("hume")).unwrap();
    adapter(&dir.path().join("hume"), 2, 128);
    let (code, r, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}");
    for (id, status) in statuses(&r) {
        let want = if id.contains("/hume") {
            "done"
        } else {
            "up_to_date"
        };
        assert_eq!(status, want, "{id}");
    }
}

/// Every output that exists is whole: the merged models and artifacts open,
/// eval results parse; a stamp never exists without its output.
fn assert_outputs_whole(out: &Path) {
    for a in ["kant", "hume"] {
        let merged = out.join("merged").join(a);
        if merged.exists() {
            llmtool::store::Model::open(s(&merged)).unwrap_or_else(|e| panic!("{merged:?}: {e}"));
        }
        for f in ["q8_0", "q4_k_m", "gptq"] {
            let art = out.join(a).join(f);
            if art.exists() {
                let m =
                    llmtool::store::Model::open(s(&art)).unwrap_or_else(|e| panic!("{art:?}: {e}"));
                assert!(!m.tensors().is_empty());
            }
            let eval = art.join("eval-kld.json");
            if eval.exists() {
                let v: Value = serde_json::from_slice(&std::fs::read(&eval).unwrap()).unwrap();
                assert!(v["kld_mean"].is_f64());
            }
        }
    }
    let stamps = out.join(".llmtool/steps");
    for e in std::fs::read_dir(&stamps).into_iter().flatten() {
        let p = e.unwrap().path();
        // A stamp being written when the kill came: not a stamp yet.
        if p.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let id = v["step"].as_str().unwrap();
        let parts: Vec<&str> = id.split('/').collect();
        let output = match parts[..] {
            ["merge", a] => Some(out.join("merged").join(a)),
            ["quantize", a, f] => Some(out.join(a).join(f)),
            ["eval", a, f] => Some(out.join(a).join(f).join("eval-kld.json")),
            ["card", a, f] => Some(out.join(a).join(f).join("README.md")),
            _ => None,
        };
        if let Some(o) = output {
            assert!(o.exists(), "stamp {id} without its output {o:?}");
        }
    }
}

fn stamp_count(out: &Path) -> usize {
    std::fs::read_dir(out.join(".llmtool/steps"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn killed_at_several_moments_it_resumes_and_leaves_nothing_broken() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), &["q8_0", "q4_k_m"], "");
    let out = dir.path().join("out");
    // Kill after 1, 4 and 8 finished steps (and mid-step: the poll lands
    // wherever the next step is), checking the outputs each time.
    for after in [1, 4, 8] {
        let mut child = llmtool()
            .arg("run")
            .arg(&recipe)
            .arg("--json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while stamp_count(&out) < after && t.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        assert_outputs_whole(&out);
    }
    let (code, r, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["rows"].as_array().unwrap().len(), 4);
    assert!(r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["ok"] == true));
    assert!(r["counts"]["up_to_date"].as_u64().unwrap() >= 1);
    assert_outputs_whole(&out);
    // Nothing half-written is left visible: only hidden temporaries could
    // have been, and the run that completed swept them.
    for a in ["kant", "hume"] {
        for e in std::fs::read_dir(out.join(a)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(n == "q8_0" || n == "q4_k_m", "left in out/{a}: {n}");
        }
    }
}

/// The recipe `text` in a fresh directory (with the adapters of [`setup`]);
/// the error output of running it, which must exit 1 before anything ran.
fn recipe_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), &["q8_0"], "");
    let full = std::fs::read_to_string(&recipe).unwrap();
    let base_line = full.lines().find(|l| l.starts_with("model = ")).unwrap();
    std::fs::write(&recipe, text.replace("BASE", base_line)).unwrap();
    let o = llmtool().arg("run").arg(&recipe).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!dir.path().join("out").exists(), "something ran: {err}");
    assert!(!err.contains("has no [formats]"), "{err}");
    err
}

#[test]
fn recipe_errors_name_the_file_line_and_a_suggestion_before_anything_runs() {
    let err = recipe_error(
        "version = 1\n[base]\nBASE\n[adapters]\nkant = { path = \"kant\" }\n[formats.q8_0]\n[resources]\njbos = 2\n",
    );
    assert!(err.contains("recipe.toml:8:1"), "{err}");
    assert!(err.contains("unknown field `jbos`"), "{err}");
    assert!(err.contains("did you mean `jobs`?"), "{err}");

    // Semantic errors are all reported at once, each at its line.
    let err = recipe_error(
        "version = 1\n[base]\nBASE\n[adapters]\nkant = { path = \"kant\" }\n\
         gone = { path = \"no-such-adapter\" }\n\
         mix = { blend = \"kant:0,7\" }\n\
         mix2 = { blend = \"kant:0.7,hume:x\" }\n\
         [formats.q4_k_n]\n\
         [formats.nf4]\nblocksize = \"big\"\n\
         [vram]\ngpus = [\"T5\"]\n\
         [hub]\nrepo = \"org/{adapter}-{fromat}\"\n",
    );
    for want in [
        "recipe.toml:6:17: adapter `gone`",
        "no-such-adapter",
        "recipe.toml:7:17: blend `kant:0,7`: `7` has no weight",
        "recipe.toml:8:18: blend `kant:0.7,hume:x`: `x` is not a weight",
        "recipe.toml:9:10: unknown format `q4_k_n`; did you mean `q4_k_m`?",
        "recipe.toml:11:13: `blocksize` must be a positive integer",
        "recipe.toml:13:9:",
        "did you mean `T4`?",
        "recipe.toml:15:8: repo `org/{adapter}-{fromat}`: unknown placeholder `{fromat}`; did you mean `format`?",
    ] {
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
    }

    // An option the format does not take.
    let err = recipe_error(
        "version = 1\n[base]\nBASE\n[adapters]\nkant = { path = \"kant\" }\n[formats.q8_0]\nblocksize = 64\n",
    );
    assert!(
        err.contains("recipe.toml:7:1: format `q8_0` has no option `blocksize`"),
        "{err}"
    );
}

#[test]
fn formats_this_build_cannot_make_are_refused_at_validation() {
    // vram-plan knows GPTQ 8-bit as a deployment format; quantize names it
    // `gptq` with `bits = 8`.
    let err = recipe_error(
        "version = 1\n[base]\nBASE\n[adapters]\nkant = { path = \"kant\" }\n[formats.gptq-int8]\n",
    );
    assert!(
        err.contains(
            "recipe.toml:6:10: format `gptq-int8`: `quantize` cannot make gptq-int8 in this build"
        ),
        "{err}"
    );
    let err = recipe_error(
        "version = 2\n[base]\nBASE\n[adapters]\nkant = { path = \"kant\" }\n[formats.q8_0]\n",
    );
    assert!(err.contains("recipe.toml:1:11: recipe version 2"), "{err}");
}

#[test]
fn pushes_each_artifact_with_its_card_through_the_test_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = crate::hub_server::HubServer::start(&dir.path().join("hub"));
    hub.add_token("hf_pipeline");
    let recipe = setup(
        dir.path(),
        &["q8_0"],
        "\n[hub]\nrepo = \"org/{adapter}-{base}-{format}\"\nprivate = true\n",
    );
    let run = |extra: &[&str]| {
        let o = llmtool()
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_TOKEN", "hf_pipeline")
            .arg("run")
            .arg(&recipe)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{err}");
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    // No token: refused before anything runs.
    let o = llmtool()
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env("HF_HOME", dir.path().join("no-home"))
        .env("HF_ENDPOINT", hub.endpoint())
        .arg("run")
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no Hub token"), "{err}");
    assert!(!dir.path().join("out").exists());
    // --no-push stops before the Hub.
    let r = run(&["--no-push"]);
    assert!(statuses(&r).iter().all(|(id, _)| !id.starts_with("push/")));
    assert!(hub.head("org/kant-m-q8_0", "main").is_none());
    let r = run(&[]);
    let url = r["rows"][0]["hub_url"].as_str().unwrap();
    assert!(url.ends_with("/org/kant-m-q8_0"), "{url}");
    let card =
        String::from_utf8(hub.file("org/kant-m-q8_0", "main", "README.md").unwrap()).unwrap();
    let kld = r["rows"][0]["kld"].as_f64().unwrap();
    assert!(card.contains(&format!("{kld:.5}")), "{card}");
    assert!(hub
        .file("org/kant-m-q8_0", "main", "kant-m-Q8_0.gguf")
        .is_some());
    assert!(hub.head("org/hume-m-q8_0", "main").is_some());
    // Pushed once: the rerun has nothing to do.
    let commits = hub.commits("org/kant-m-q8_0").len();
    let r = run(&[]);
    assert!(statuses(&r).iter().all(|(_, s)| s == "up_to_date"));
    assert_eq!(hub.commits("org/kant-m-q8_0").len(), commits);
}

#[test]
fn ctrl_c_stops_the_run_with_130_and_the_report_and_the_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // GPTQ calibrates for a while even on tiny-llama: the run is still going
    // when the first step has finished.
    let recipe = setup(dir.path(), &["gptq", "q8_0"], "");
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("jobs = 2", "jobs = 1")
        .replace(
            "[formats.gptq]\n",
            "[formats.gptq]\ncalib_samples = 16\ncalib_seqlen = 128\n",
        );
    std::fs::write(&recipe, text).unwrap();
    let out = dir.path().join("out");
    let mut child = llmtool()
        .arg("run")
        .arg(&recipe)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while stamp_count(&out) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before Ctrl-C"
        );
        assert!(t.elapsed() < Duration::from_secs(120), "never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    assert!(report["counts"]["interrupted"].as_u64().unwrap() > 0);
    assert_outputs_whole(&out);
    let (code, r, err) = run_json(&recipe, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(r["counts"]["up_to_date"].as_u64().unwrap() >= 1);
}

#[test]
fn a_blend_merges_the_weighted_adapters_as_lora_merge_does() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), &["q8_0"], "");
    let text = std::fs::read_to_string(&recipe).unwrap().replace(
        "hume = { path = \"hume\" }\n",
        "hume = { path = \"hume\" }\nmix = { blend = \"kant:0.7,hume:0.3\" }\n",
    );
    std::fs::write(&recipe, text).unwrap();
    let (code, r, err) = run_json(&recipe, &["--only", "mix"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["rows"][0]["adapter"], "mix");
    // The same merge by hand: identical tensors.
    let by_hand = dir.path().join("by-hand");
    common::run_ok(llmtool().args([
        "lora",
        "merge",
        "--base",
        s(&dir.path().join("m")),
        "--adapter",
        &format!("{}:0.7", s(&dir.path().join("kant"))),
        "--adapter",
        &format!("{}:0.3", s(&dir.path().join("hume"))),
        "--dtype",
        "bf16",
        "--out",
        s(&by_hand),
    ]));
    let ours = std::fs::read(dir.path().join("out/merged/mix/model.safetensors")).unwrap();
    let theirs = std::fs::read(by_hand.join("model.safetensors")).unwrap();
    assert!(ours == theirs, "the blend differs from lora merge's");
}

#[test]
fn an_adapter_may_be_a_hub_repo_id() {
    let dir = tempfile::tempdir().unwrap();
    let hub = crate::hub_server::HubServer::start(&dir.path().join("hub"));
    let recipe = setup(dir.path(), &["q8_0"], "");
    // The kant adapter only on the Hub.
    let files: Vec<(String, Vec<u8>)> = ["adapter_config.json", "adapter_model.safetensors"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(dir.path().join("kant").join(f)).unwrap(),
            )
        })
        .collect();
    hub.create_repo("org/kant-lora");
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    hub.put_files("org/kant-lora", "main", &refs);
    let text = std::fs::read_to_string(&recipe).unwrap().replace(
        "kant = { path = \"kant\" }",
        "kant = { path = \"org/kant-lora\" }",
    );
    std::fs::write(&recipe, text).unwrap();
    let run = |endpoint: &str| {
        llmtool()
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", dir.path().join("hf-home"))
            .env("LLMTOOL_HUB_RETRIES", "0")
            .args(["run", "--json", "--only", "kant"])
            .arg(&recipe)
            .output()
            .unwrap()
    };
    let o = run(&hub.endpoint());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        statuses(&r)
            .iter()
            .any(|(id, s)| id == "merge/kant" && s == "done"),
        "{r}"
    );
    // The merge equals the one from the local copy of the same adapter.
    let merged_hub = std::fs::read(dir.path().join("out/merged/kant/model.safetensors")).unwrap();
    let local = dir.path().join("local-merge");
    common::run_ok(
        llmtool()
            .args(["lora", "merge", "--base"])
            .arg(dir.path().join("m"))
            .arg("--adapter")
            .arg(dir.path().join("kant"))
            .args(["--dtype", "bf16", "--out"])
            .arg(&local),
    );
    assert_eq!(
        merged_hub,
        std::fs::read(local.join("model.safetensors")).unwrap()
    );
    // A repo id the Hub does not have: refused at validation, naming it.
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("org/kant-lora", "org/no-such-lora");
    std::fs::write(&recipe, text).unwrap();
    let o = run(&hub.endpoint());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("recipe.toml:") && err.contains("org/no-such-lora"),
        "{err}"
    );
}

/// The README's first command, on a copy of examples/demo: every step
/// succeeds and the report is printed; the second run does nothing.
#[test]
fn the_readme_demo_runs_end_to_end_then_reruns_nothing() {
    let Some(base) = common::smollm2() else {
        return;
    };
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let first = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- "))
        .unwrap();
    assert_eq!(
        first,
        "cargo run --release -- run examples/demo/recipe.toml --base \"$(scripts/smollm2.sh)\""
    );
    let dir = tempfile::tempdir().unwrap();
    let demo = common::repo().join("examples/demo");
    for f in ["recipe.toml", "text.txt"] {
        std::fs::copy(demo.join(f), dir.path().join(f)).unwrap();
    }
    for a in ["kant", "hume"] {
        let d = dir.path().join("adapters").join(a);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(demo.join("adapters").join(a).join(f), d.join(f)).unwrap();
        }
    }
    let recipe = dir.path().join("recipe.toml");
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("out = \"../../target/demo-run\"", "out = \"out\"");
    std::fs::write(&recipe, text).unwrap();
    let run = || {
        let t = Instant::now();
        let o = llmtool()
            .arg("run")
            .arg(&recipe)
            .arg("--base")
            .arg(&base)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (out, t.elapsed())
    };
    let (out, _) = run();
    for f in ["q4_k_m", "q8_0", "nf4"] {
        for a in ["kant", "hume"] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("| {a} | {f} |")) && l.ends_with("| ok |")),
                "{a} {f}: {out}"
            );
        }
    }
    assert!(out.contains("27 steps: 27 done"), "{out}");
    let (out, took) = run();
    assert!(out.contains("27 steps: 0 done, 27 up to date"), "{out}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
