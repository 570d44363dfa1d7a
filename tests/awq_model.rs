//! `quantize awq`: the command end to end on tiny-llama (both layouts read
//! back by the engine, the plan of a dry run, refusals that leave nothing),
//! and the pipeline against llm-compressor's AWQ over whole models (goldens
//! from tests/oracle/awq_model_goldens.py, see fixtures/README.md
//! `awq_model/`).

use llmtool::model::engine::{Engine, Logits};
use llmtool::store::Model;

use crate::common::{json_output, llmtool, refuses, s, with_tokenizer};

const SMALL: [&str; 4] = ["--calib-samples", "4", "--calib-seqlen", "32"];

#[test]
fn cli_writes_both_layouts_and_the_engine_runs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let mut logits = Vec::new();
    for layout in ["awq", "compressed-tensors"] {
        let out = tmp.path().join(format!("out-{layout}"));
        let r = json_output(
            llmtool()
                .args(["quantize", "awq", s(&m), "--out", s(&out), "--format", layout, "--json"])
                .args(SMALL),
        );
        assert_eq!(r["quantized"], 14, "{r}");
        let stats = r["layer_stats"].as_array().unwrap();
        assert_eq!(stats.len(), 2);
        // tiny-llama has grouped-query attention: no v → o mapping.
        let names: Vec<&str> = stats[0]["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mapping"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["attention", "mlp", "up_down"]);
        for m in stats.iter().flat_map(|l| l["mappings"].as_array().unwrap()) {
            assert_eq!(m["losses"].as_array().unwrap().len(), 20);
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let q = &config["quantization_config"];
        match layout {
            "awq" => {
                assert_eq!(q["quant_method"], "awq");
                assert_eq!(q["version"], "gemm");
                assert_eq!(q["zero_point"], true);
            }
            _ => {
                assert_eq!(q["format"], "pack-quantized");
                assert_eq!(q["config_groups"]["group_0"]["weights"]["symmetric"], false);
            }
        }
        assert!(out.join("tokenizer.json").is_file());
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.contains("AWQ 4-bit"), "{card}");
        let model = Model::open(s(&out)).unwrap();
        let e = Engine::new(&model).unwrap();
        let mut cache = e.new_cache();
        let l = e
            .forward(&mut [&mut cache], &[&[1, 5, 9, 200]], Logits::Last)
            .unwrap();
        assert!(l[0].iter().all(|v| v.is_finite()));
        logits.push(l[0].clone());
    }
    // The same codes in two layouts: only the scales' dtype differs (f16
    // in GEMM, f32 here).
    let diff = logits[0]
        .iter()
        .zip(&logits[1])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-2, "layouts disagree by {diff}");
}

#[test]
fn scales_fold_into_the_norms_and_keep_the_function() {
    // The chosen scales are folded into the norms (÷ s): with the scales
    // the search picks on tiny-llama's second layer, the norm changes.
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    json_output(
        llmtool()
            .args(["quantize", "awq", s(&m), "--out", s(&out), "--format", "compressed-tensors", "--json"])
            .args(SMALL),
    );
    let a = Model::open(s(&m)).unwrap();
    let b = Model::open(s(&out)).unwrap();
    let name = "model.layers.1.post_attention_layernorm.weight";
    let (ta, tb) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
    let (va, vb) = (
        a.read_rows_f32(ta, 0..ta.rows()).unwrap(),
        b.read_rows_f32(tb, 0..tb.rows()).unwrap(),
    );
    assert_eq!(va.len(), vb.len());
    assert!(va.iter().zip(&vb).any(|(x, y)| (x - y).abs() > 1e-6), "norm unchanged");
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let r = json_output(
        llmtool()
            .args(["quantize", "awq", s(&m), "--out", s(&out), "--dry-run", "--json"])
            .args(SMALL),
    );
    assert_eq!(r["layers"], 2);
    assert_eq!(r["quantized"], 14);
    assert_eq!(r["format"], "awq");
    assert_eq!(r["quantization_config"]["quant_method"], "awq");
    assert!(r["estimate"]["peak_bytes"].as_u64().unwrap() > 0);
    assert!(!out.exists());
}

#[test]
fn bad_inputs_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let base = ["quantize", "awq", s(&m), "--out", s(&out)];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--group-size", "96"], "does not divide the input width of model.layers.0"),
        (vec!["--group-size", "-1"], "AWQ needs groups"),
        (vec!["--no-zero-point"], "--format compressed-tensors"),
        (vec!["--bits", "8"], "4-bit"),
        (vec!["--desc-act"], "does not apply to quantize awq"),
        (vec!["--format", "gptq"], "quantize gptq"),
        (vec!["--n-grid", "1"], "at least 2"),
    ];
    for (extra, want) in &cases {
        refuses(&[&base[..], &SMALL, extra].concat(), &out, want);
    }
    refuses(&[&base[..], &["--calib-samples", "100000"]].concat(), &out, "need at least");
    // The other way round.
    refuses(
        &["quantize", "gptq", s(&m), "--out", s(&out), "--no-clip"],
        &out,
        "does not apply to quantize gptq",
    );
    // An already-quantized input.
    let q = crate::common::fixture("gptq_model/tiny-llama-llmtool-ct");
    refuses(&["quantize", "awq", s(&q), "--out", s(&out)], &out, "quantized");
    // NaN in a weight: named.
    let nan_dir = tmp.path().join("nan");
    std::fs::create_dir(&nan_dir).unwrap();
    let nan = with_tokenizer(&nan_dir, Some(f32::NAN));
    refuses(
        &[&["quantize", "awq", s(&nan), "--out", s(&out)][..], &SMALL].concat(),
        &out,
        "model.layers.1.self_attn.q_proj",
    );
}

#[test]
fn allow_unquantized_keeps_and_scales_what_cannot_be_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    // tiny-llama: hidden 256, ffn 512; group 512 fits only down_proj.
    let r = json_output(
        llmtool()
            .args(["quantize", "awq", s(&m), "--out", s(&out), "--group-size", "512", "--allow-unquantized", "--json"])
            .args(SMALL),
    );
    assert_eq!(r["quantized"], 2, "{r}");
    assert_eq!(r["kept"].as_array().unwrap().len(), 12);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["quantization_config"]["modules_to_not_convert"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    let model = Model::open(s(&out)).unwrap();
    let e = Engine::new(&model).unwrap();
    let mut cache = e.new_cache();
    let l = e.forward(&mut [&mut cache], &[&[1, 5, 9]], Logits::Last).unwrap();
    assert!(l[0].iter().all(|v| v.is_finite()));
}
