//! `lora merge` against PEFT's own merges (fixtures/lora, made by
//! tests/oracle/make_adapters.py): every tensor PEFT changed must match
//! (f32: within 1e-6 of the tensor's scale; f16/bf16: at most 1 ulp), every
//! other tensor must be the base's, bit for bit.

use crate::common;

use std::path::Path;

use llmtool::model::adapter::Adapter;
use llmtool::ops::lora::{merge, MergeOptions, WeightedAdapter};
use llmtool::store::{DType, Model, TensorInfo};

fn opts(out: &Path) -> MergeOptions {
    MergeOptions {
        out: out.to_path_buf(),
        dtype: None,
        max_shard_size: 200_000,
        command: "test".into(),
        base_label: "test-base".into(),
        progress: false,
    }
}

fn ulps(a: &TensorInfo, ma: &Model, b: &TensorInfo, mb: &Model) -> (u64, f64) {
    let (x, y) = (ma.read_f32(a).unwrap(), mb.read_f32(b).unwrap());
    assert_eq!(x.len(), y.len(), "{}", a.name);
    let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let mut max_rel = 0f64;
    let mut max_ulp = 0u64;
    let bits = |v: f32, dt: DType| -> i64 {
        match dt {
            DType::BF16 => half::bf16::from_f32(v).to_bits() as i16 as i64,
            DType::F16 => half::f16::from_f32(v).to_bits() as i16 as i64,
            _ => v.to_bits() as i32 as i64,
        }
    };
    for (p, q) in x.iter().zip(&y) {
        max_rel = max_rel.max((p - q).abs() as f64 / scale.max(1e-30));
        max_ulp = max_ulp.max((bits(*p, a.dtype) - bits(*q, a.dtype)).unsigned_abs());
    }
    (max_ulp, max_rel)
}

fn run_case(case: &str) {
    let dir = common::fixture(&format!("lora/{case}"));
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let base_dir = common::fixture(&format!("lora/bases/{}", exp["base"].as_str().unwrap()));
    let base = Model::open(base_dir.to_str().unwrap()).unwrap();
    let adapters: Vec<WeightedAdapter> = exp["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| WeightedAdapter {
            adapter: Adapter::open(&dir.join(a["path"].as_str().unwrap())).unwrap(),
            weight: a["weight"].as_f64().unwrap(),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    let report =
        merge(&base, &adapters, &opts(&out), false).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = Model::open(out.to_str().unwrap()).unwrap();
    let peft = Model::open(dir.join("merged.safetensors").to_str().unwrap()).unwrap();
    let changed: Vec<&str> = exp["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for t in got.tensors() {
        match peft.tensor(&t.name) {
            Some(p) => {
                assert_eq!(
                    (t.dtype, &t.shape),
                    (p.dtype, &p.shape),
                    "{case} {}",
                    t.name
                );
                let (ulp, rel) = ulps(t, &got, p, &peft);
                if t.dtype == DType::F32 {
                    assert!(
                        rel <= 1e-6,
                        "{case} {}: relative difference {rel:e} to PEFT",
                        t.name
                    );
                } else {
                    assert!(ulp <= 1, "{case} {}: {ulp} ulps from PEFT", t.name);
                }
            }
            None => {
                let b = base
                    .get(&t.name)
                    .unwrap_or_else(|_| panic!("{case}: unexpected tensor {}", t.name));
                assert_eq!(
                    got.bytes(t),
                    base.bytes(b),
                    "{case} {}: unchanged tensors are copied",
                    t.name
                );
            }
        }
    }
    for name in &changed {
        assert!(
            got.tensor(name).is_some(),
            "{case}: PEFT changed {name}, which we did not write"
        );
    }
    let untied = !exp["lm_head_tied_in_memory"].as_bool().unwrap()
        && base.tensor("lm_head.weight").is_none();
    assert_eq!(report.untied_embeddings, untied, "{case}: untie");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    if untied {
        assert_eq!(cfg["tie_word_embeddings"], false, "{case}: config unties");
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.starts_with("---\nbase_model: \"test-base\"\nbase_model_relation: finetune\nlibrary_name: transformers\n"),
        "{card}"
    );
    assert!(card.contains("sha256: "), "{card}");
    // Only the finished directory remains: no temporaries beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("merged")]);
}

#[test]
fn f32_basic() {
    run_case("f32-basic");
}
#[test]
fn bf16_all_linear() {
    run_case("bf16-all-linear");
}
#[test]
fn rslora_with_rank_and_alpha_patterns() {
    run_case("rslora-patterns");
}
#[test]
fn dora() {
    run_case("dora");
}
#[test]
fn qwen2_layers_to_transform_tied_embeddings() {
    run_case("qwen2-layers-tied-embed");
}
#[test]
fn embedding_lora() {
    run_case("embedding");
}
#[test]
fn modules_to_save() {
    run_case("modules-to-save");
}
#[test]
fn lora_bias() {
    run_case("lora-bias");
}
#[test]
fn two_weighted_adapters() {
    run_case("two-weighted");
}
#[test]
fn tied_base_with_lm_head_in_modules_to_save_unties() {
    run_case("tied-modules-to-save");
}

#[test]
fn dora_on_embeddings_normalises_columns() {
    run_case("dora-embedding");
}
#[test]
fn dora_bf16_with_embeddings() {
    run_case("dora-bf16");
}
#[test]
fn fan_in_fan_out_on_linear_layers_is_ignored_as_peft_does() {
    run_case("fan-in-fan-out");
}

#[test]
fn transformers_verdict_covers_every_case() {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixture("lora/transformers-check.json")).unwrap(),
    )
    .unwrap();
    let mut cases = 0;
    for e in std::fs::read_dir(common::fixture("lora")).unwrap() {
        let p = e.unwrap().path();
        if p.join("expected.json").is_file() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                v["cases"][&name]["ok"], true,
                "transformers verdict for {name}: {}",
                v["cases"][&name]
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 13);
}

fn merge_err(base: &str, adapter_dirs: &[(&Path, f64)], out: &Path) -> String {
    let base = Model::open(
        common::fixture(&format!("lora/bases/{base}"))
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let list: Vec<WeightedAdapter> = adapter_dirs
        .iter()
        .map(|(d, w)| WeightedAdapter {
            adapter: Adapter::open(d).unwrap(),
            weight: *w,
        })
        .collect();
    merge(&base, &list, &opts(out), false)
        .expect_err("refused")
        .to_string()
}

/// Copies an adapter directory so a test can break it.
fn copy_adapter(case: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(
            common::fixture(&format!("lora/{case}/adapter/{f}")),
            to.join(f),
        )
        .unwrap();
    }
}

#[test]
fn bad_adapters_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // An adapter for another architecture / size.
    let e = merge_err(
        "micro-qwen2",
        &[(&common::fixture("lora/f32-basic/adapter"), 1.0)],
        &out,
    );
    assert!(
        e.contains("trained on a LlamaForCausalLM, but the base is Qwen2ForCausalLM"),
        "{e}"
    );
    // An adapter trained on another size of the same architecture.
    let big = Model::open(common::fixture("models/tiny-llama").to_str().unwrap()).unwrap();
    let list = vec![WeightedAdapter {
        adapter: Adapter::open(&common::fixture("lora/f32-basic/adapter")).unwrap(),
        weight: 1.0,
    }];
    let e = merge(&big, &list, &opts(&out), false)
        .expect_err("size mismatch")
        .to_string();
    assert!(
        e.contains("do not fit base model.layers.0.mlp.down_proj.weight [256, 512]")
            && e.contains("another base size"),
        "{e}"
    );
    let e = merge_err(
        "micro-llama",
        &[(&common::fixture("lora/dora/adapter"), 0.5)],
        &out,
    );
    assert!(
        e.contains("DoRA adapters cannot be merged in a weighted sum"),
        "{e}"
    );
    // Pickle-only weights.
    let pk = tmp.path().join("pickle");
    copy_adapter("f32-basic", &pk);
    std::fs::rename(
        pk.join("adapter_model.safetensors"),
        pk.join("adapter_model.bin"),
    )
    .unwrap();
    let e = Adapter::open(&pk).unwrap_err().to_string();
    assert!(
        e.contains("pickle") && e.contains("safetensors.torch"),
        "{e}"
    );
    // Another PEFT method.
    let ia3 = tmp.path().join("ia3");
    copy_adapter("f32-basic", &ia3);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ia3.join("adapter_config.json")).unwrap()).unwrap();
    cfg["peft_type"] = "IA3".into();
    std::fs::write(ia3.join("adapter_config.json"), cfg.to_string()).unwrap();
    let e = Adapter::open(&ia3).unwrap_err().to_string();
    assert!(e.contains("peft_type is IA3"), "{e}");
    // A config whose rank disagrees with the tensors.
    cfg["peft_type"] = "LORA".into();
    cfg["r"] = 3.into();
    std::fs::write(ia3.join("adapter_config.json"), cfg.to_string()).unwrap();
    let e = Adapter::open(&ia3).unwrap_err().to_string();
    assert!(
        e.contains("config gives rank 3 but lora_A has 8 rows"),
        "{e}"
    );
    // NaN in the result names the tensor, and nothing is left behind.
    let e = merge_err(
        "micro-llama",
        &[(&common::fixture("lora/f32-basic/adapter"), f64::MAX)],
        &out,
    );
    assert!(
        e.contains("tensor 'model.layers.0.mlp.down_proj.weight': element 0 is -inf")
            && e.contains("NaN/Inf"),
        "{e}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{leftovers:?}"
    );
    // An existing, non-empty output directory is never overwritten.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let e = merge_err(
        "micro-llama",
        &[(&common::fixture("lora/f32-basic/adapter"), 1.0)],
        &out,
    );
    assert!(e.contains("exists and is not empty"), "{e}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn cli_merge_dry_run_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let base = common::fixture("lora/bases/micro-llama");
    let a = common::fixture("lora/two-weighted/a");
    let b = common::fixture("lora/two-weighted/b");
    let v = common::json_output(
        common::llmtool()
            .args(["lora", "merge", "--json", "--dry-run", "--base"])
            .arg(&base)
            .arg("--adapter")
            .arg(format!("{}:0.7", a.display()))
            .arg("--adapter")
            .arg(format!("{}:0.3", b.display()))
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(v["merged_modules"], 10);
    assert!(!out.exists(), "dry run writes nothing");
    let v = common::json_output(
        common::llmtool()
            .args(["lora", "inspect", "--json"])
            .arg(common::fixture("lora/rslora-patterns/adapter")),
    );
    assert_eq!(v["use_rslora"], true);
    assert_eq!(v["ranks"], serde_json::json!([2, 4, 8]));
    assert_eq!(v["layers"], serde_json::json!([0, 1]));
    let st = common::llmtool()
        .args(["lora", "merge", "--base"])
        .arg(&base)
        .args(["--adapter", "/nonexistent", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("cannot read adapter /nonexistent"));
}
