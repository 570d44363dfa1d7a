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
                .args([
                    "quantize",
                    "awq",
                    s(&m),
                    "--out",
                    s(&out),
                    "--format",
                    layout,
                    "--json",
                ])
                .args(SMALL),
        );
        assert_eq!(r["quantized"], 14, "{r}");
        // The card's quality line, from the checkpoint read back.
        let h = &r["held_out"];
        assert!(h["chunks"].as_u64().unwrap() > 0, "{r}");
        assert!(h["kld_mean"].as_f64().unwrap() > 0.0, "{r}");
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.contains("## Quality against the base model"), "{card}");
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
fn chosen_scales_fold_into_the_norms() {
    // The chosen scales are folded into the norms (÷ s): with the scales
    // the search picks on tiny-llama's second layer, the norm changes.
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    json_output(
        llmtool()
            .args([
                "quantize",
                "awq",
                s(&m),
                "--out",
                s(&out),
                "--format",
                "compressed-tensors",
                "--json",
            ])
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
    assert!(
        va.iter().zip(&vb).any(|(x, y)| (x - y).abs() > 1e-6),
        "norm unchanged"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let r = json_output(
        llmtool()
            .args([
                "quantize",
                "awq",
                s(&m),
                "--out",
                s(&out),
                "--dry-run",
                "--json",
            ])
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
        (
            vec!["--group-size", "96"],
            "does not divide the input width of model.layers.0",
        ),
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
    refuses(
        &[&base[..], &["--calib-samples", "100000"]].concat(),
        &out,
        "need at least",
    );
    // The other way round.
    refuses(
        &["quantize", "gptq", s(&m), "--out", s(&out), "--no-clip"],
        &out,
        "does not apply to quantize gptq",
    );
    // An already-quantized input.
    let q = crate::common::fixture("gptq_model/tiny-llama-llmtool-ct");
    refuses(
        &["quantize", "awq", s(&q), "--out", s(&out)],
        &out,
        "quantized",
    );
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
            .args([
                "quantize",
                "awq",
                s(&m),
                "--out",
                s(&out),
                "--group-size",
                "512",
                "--allow-unquantized",
                "--json",
            ])
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
    let l = e
        .forward(&mut [&mut cache], &[&[1, 5, 9]], Logits::Last)
        .unwrap();
    assert!(l[0].iter().all(|v| v.is_finite()));
}

#[derive(serde::Deserialize)]
struct Meta {
    group_size: usize,
    duo_scaling: bool,
    n_grid: usize,
    modules: Vec<GoldenModule>,
    mappings: Vec<GoldenMapping>,
}

#[derive(serde::Deserialize)]
struct GoldenModule {
    name: String,
    in_features: usize,
    out_features: usize,
    groups: usize,
    rows: Vec<usize>,
    codes_offset: usize,
    scales_offset: usize,
    zeros_offset: usize,
}

#[derive(serde::Deserialize)]
struct GoldenMapping {
    layer: usize,
    smooth: String,
    best: usize,
    losses: Vec<f64>,
}

/// Per layer: the mappings whose choice equals the reference's, out of
/// how many, and the codes (and zero points) equal on the sampled rows
/// of layers whose every choice agrees.
#[derive(Default, Debug)]
struct AwqCheck {
    agree: usize,
    mappings: usize,
    equal: usize,
    total: usize,
    max_scale_err: f32,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Runs our pipeline (`--no-clip`, the reference has no clip search) on
/// the goldens' ids and compares, layer by layer.
fn check_awq(
    model_path: &std::path::Path,
    golden: &str,
    variant: &str,
    max_layers: usize,
) -> Vec<AwqCheck> {
    use llmtool::ops::quantize::awq::{calibrate, Pipeline};
    use llmtool::quant::awq::AwqConfig;
    use std::ops::ControlFlow;
    let ids: serde_json::Value = serde_json::from_slice(
        &std::fs::read(crate::common::fixture(&format!(
            "gptq_model/{golden}/ids.json"
        )))
        .unwrap(),
    )
    .unwrap();
    let windows: Vec<Vec<u32>> = serde_json::from_value(ids["ids"].clone()).unwrap();
    let dir = crate::common::fixture(&format!("awq_model/{golden}/{variant}"));
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let codes = std::fs::read(dir.join("codes.u8")).unwrap();
    let zeros = std::fs::read(dir.join("zeros.u8")).unwrap();
    let scales = f32s(&std::fs::read(dir.join("scales.f32")).unwrap());
    let model = Model::open(s(model_path)).unwrap();
    let engine = Engine::new(&model).unwrap();
    let cfg = AwqConfig {
        group_size: meta.group_size,
        duo_scaling: meta.duo_scaling,
        n_grid: meta.n_grid,
        clip: false,
        ..AwqConfig::default()
    };
    let pipeline = Pipeline {
        config: &cfg,
        batch_tokens: 4096,
        keep: &|_, _| false,
        on_layer: &|_| {},
    };
    let mut out = Vec::new();
    calibrate(&model, &engine, &windows, &pipeline, &mut |r| {
        let li = r.layer;
        let mut c = AwqCheck::default();
        for m in meta.mappings.iter().filter(|m| m.layer == li) {
            let ours = r
                .stats
                .mappings
                .iter()
                .find(|s| m.smooth.ends_with(s.mapping.smooth_name()))
                .unwrap_or_else(|| panic!("no mapping for {}", m.smooth));
            c.mappings += 1;
            if ours.choice == m.best {
                c.agree += 1;
            } else {
                eprintln!(
                    "{golden} layer {li} {}: ours {} ({:?}), reference {} (losses {:?})",
                    m.smooth, ours.choice, ours.losses, m.best, m.losses
                );
            }
        }
        if c.agree == c.mappings {
            for (t, q) in &r.codes {
                let name = t.name.strip_suffix(".weight").unwrap();
                let m = meta.modules.iter().find(|m| m.name == name).unwrap();
                for (k, &row) in m.rows.iter().enumerate() {
                    let want = &codes[m.codes_offset + k * m.in_features..][..m.in_features];
                    let got = &q.codes[row * m.in_features..(row + 1) * m.in_features];
                    c.equal += want.iter().zip(got).filter(|(a, b)| a == b).count();
                    c.total += m.in_features;
                    for g in 0..m.groups {
                        let i = g * m.rows.len() + k;
                        let want = scales[m.scales_offset / 4 + i];
                        let got = q.scales[g * m.out_features + row];
                        c.max_scale_err = c.max_scale_err.max((got - want).abs() / want.abs());
                        assert_eq!(
                            zeros[m.zeros_offset + i],
                            q.zeros[g * m.out_features + row],
                            "{name} row {row} group {g}"
                        );
                    }
                }
            }
        }
        out.push(c);
        Ok(if out.len() >= max_layers {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    out
}

fn assert_fidelity(layers: &[AwqCheck], what: &str) {
    let agree: usize = layers.iter().map(|l| l.agree).sum();
    let total: usize = layers.iter().map(|l| l.mappings).sum();
    assert!(
        agree as f64 >= 0.95 * total as f64,
        "{what}: {agree} of {total} scale choices equal the reference's ({layers:?})"
    );
    for (i, l) in layers.iter().enumerate().filter(|(_, l)| l.total > 0) {
        let frac = l.equal as f64 / l.total as f64;
        assert!(
            frac >= 0.999,
            "{what} layer {i}: {:.4} % of codes equal ({l:?})",
            100.0 * frac
        );
        assert!(l.max_scale_err <= 1e-3, "{what} layer {i}: {l:?}");
    }
    assert!(
        layers.iter().any(|l| l.total > 0),
        "{what}: no layer to compare codes on"
    );
}

#[test]
fn tiny_llama_scales_and_codes_equal_llm_compressor() {
    for variant in ["g128-duo", "g128-noduo"] {
        let layers = check_awq(
            &crate::common::fixture("models/tiny-llama"),
            "tiny-llama",
            variant,
            usize::MAX,
        );
        assert_eq!(layers.len(), 2);
        assert_fidelity(&layers, variant);
    }
}

/// SmolLM2 (the HF form `convert` writes from the PyPI GGUF, float32),
/// group 64, the 16 × 256 ids of the GPTQ goldens.
#[test]
fn smollm2_scales_and_codes_equal_llm_compressor() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hf) = crate::common::smollm2_hf(tmp.path()) else {
        return;
    };
    let layers = check_awq(&hf, "smollm2", "g64-duo", usize::MAX);
    assert_eq!(layers.len(), 30);
    assert_fidelity(&layers, "smollm2 g64-duo");
}

/// The engine reads AWQ compressed-tensors checkpoints as transformers
/// does: llm-compressor's own output for tiny-llama, and ours
/// (fixtures/README.md says how each checkpoint and its logits were made).
#[test]
fn transformers_logits_on_awq_checkpoints_equal_the_engine() {
    for dir in ["tiny-llama-reference-ct", "tiny-llama-llmtool-ct"] {
        crate::common::assert_transformers_logits(&crate::common::fixture(&format!(
            "awq_model/{dir}"
        )));
    }
}
