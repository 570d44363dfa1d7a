//! `quantize gptq`'s pipeline against llm-compressor's GPTQ over whole
//! models (goldens from tests/oracle/gptq_model_goldens.py, see
//! fixtures/README.md `gptq_model/`): the same calibration ids in, the
//! same integer codes and scales out.
//!
//! Scales depend only on the original weights and must agree everywhere.
//! Codes must agree on ≥ 99.9 % of weights layer by layer: in full for the
//! `-noprop` variants (every layer calibrated on the original model's
//! activations, llm-compressor's `propagate_error=False`), and for layer 0
//! of the propagated ones. Deeper layers of a propagated run inherit earlier
//! layers' few flipped codes (as a second torch implementation does, see the
//! README), so there the per-layer GPTQ losses must stay within 2 % of the
//! reference's.

use std::ops::ControlFlow;

use llmtool::model::engine::Engine;
use llmtool::ops::quantize::gptq::{calibrate, Pipeline, KEEP_ACTIVATIONS_UP_TO};
use llmtool::quant::gptq::GptqConfig;
use llmtool::store::Model;

use crate::common::{fixture, refuses, s, with_tokenizer};

#[derive(serde::Deserialize)]
struct Meta {
    group_size: usize,
    actorder: Option<String>,
    modules: Vec<Module>,
}

#[derive(serde::Deserialize)]
struct Module {
    name: String,
    in_features: usize,
    groups: usize,
    rows: Vec<usize>,
    codes_offset: usize,
    scales_offset: usize,
    loss: f64,
}

/// Codes agreeing, codes compared, and the largest relative scale error,
/// per layer; plus our and the reference's summed loss per layer.
#[derive(Default, Debug)]
struct LayerCheck {
    equal: usize,
    total: usize,
    max_scale_err: f32,
    /// Scales within 1e-3 of the reference's, of those compared.
    scales_equal: usize,
    scales: usize,
    loss: f64,
    ref_loss: f64,
}

fn check(model_dir: &str, variant: &str, propagate: bool, max_layers: usize) -> Vec<LayerCheck> {
    check_model(
        &fixture(&format!("models/{model_dir}")),
        model_dir,
        variant,
        propagate,
        max_layers,
    )
}

/// llm-compressor's settings: scales from the original weights, its plain
/// column order, one capture per layer.
fn check_model(
    model_path: &std::path::Path,
    model_dir: &str,
    variant: &str,
    propagate: bool,
    max_layers: usize,
) -> Vec<LayerCheck> {
    let cfg = |act_order| GptqConfig {
        group_size: None,
        act_order,
        static_groups: true,
        group_aware: false,
        ..GptqConfig::default()
    };
    check_with(
        model_path, model_dir, variant, &cfg, false, propagate, max_layers,
    )
}

/// `variant`'s golden against llmtool with `cfg(act_order)` (the group
/// size is the golden's); modules the golden lacks are not compared.
fn check_with(
    model_path: &std::path::Path,
    model_dir: &str,
    variant: &str,
    cfg: &dyn Fn(bool) -> GptqConfig,
    true_sequential: bool,
    propagate: bool,
    max_layers: usize,
) -> Vec<LayerCheck> {
    let dir = fixture(&format!("gptq_model/{model_dir}"));
    let ids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ids.json")).unwrap()).unwrap();
    let windows: Vec<Vec<u32>> = serde_json::from_value(ids["ids"].clone()).unwrap();
    let vdir = dir.join(variant);
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(vdir.join("meta.json")).unwrap()).unwrap();
    let codes = std::fs::read(vdir.join("codes.u8")).unwrap();
    let scales: Vec<f32> = std::fs::read(vdir.join("scales.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let model = Model::open(model_path.to_str().unwrap()).unwrap();
    let engine = Engine::new(&model).unwrap();
    let cfg = GptqConfig {
        group_size: Some(meta.group_size),
        ..cfg(meta.actorder.as_deref() == Some("weight"))
    };
    let mut out: Vec<LayerCheck> = Vec::new();
    let pipeline = Pipeline {
        config: &cfg,
        round_to_nearest: false,
        true_sequential,
        propagate_quantized: propagate,
        batch_tokens: 4096,
        keep_activations_up_to: KEEP_ACTIVATIONS_UP_TO,
        keep: &|_, _| false,
        on_layer: &|_| {},
    };
    calibrate(&model, &engine, &windows, &pipeline, &mut |done, stats| {
        let mut lc = LayerCheck {
            loss: stats.loss,
            ..LayerCheck::default()
        };
        for q in &done {
            let name = q.tensor.name.strip_suffix(".weight").unwrap();
            let Some(m) = meta.modules.iter().find(|m| m.name == name) else {
                continue;
            };
            let r = q.result.as_ref().unwrap();
            let out_features = q.tensor.rows() as usize;
            lc.ref_loss += m.loss;
            for (k, &row) in m.rows.iter().enumerate() {
                let want = &codes[m.codes_offset + k * m.in_features..][..m.in_features];
                let got = &r.codes[row * m.in_features..(row + 1) * m.in_features];
                lc.equal += want.iter().zip(got).filter(|(a, b)| a == b).count();
                lc.total += m.in_features;
                for g in 0..m.groups {
                    let want = scales[m.scales_offset / 4 + g * m.rows.len() + k];
                    let got = r.scales[g * out_features + row];
                    let err = (got - want).abs() / want.abs();
                    lc.max_scale_err = lc.max_scale_err.max(err);
                    lc.scales_equal += usize::from(err <= 1e-3);
                    lc.scales += 1;
                }
            }
        }
        out.push(lc);
        Ok(if out.len() >= max_layers {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    out
}

fn assert_codes(layers: &[LayerCheck], what: &str) {
    for (i, l) in layers.iter().enumerate() {
        let frac = l.equal as f64 / l.total as f64;
        assert!(
            frac >= 0.999,
            "{what} layer {i}: {:.4} % of codes equal ({l:?})",
            100.0 * frac
        );
    }
}

fn assert_scales(layers: &[LayerCheck], what: &str) {
    for (i, l) in layers.iter().enumerate() {
        assert!(l.max_scale_err <= 1e-3, "{what} layer {i}: {l:?}");
    }
}

#[test]
fn tiny_llama_layer_by_layer_equals_llm_compressor() {
    for variant in ["g128-none-noprop", "g128-weight-noprop"] {
        let layers = check("tiny-llama", variant, false, usize::MAX);
        assert_eq!(layers.len(), 2);
        assert_codes(&layers, variant);
        assert_scales(&layers, variant);
    }
}

/// True-sequential runs each layer once, in stages; when the MLP
/// activations of every window may not be kept between stages, gate/up run
/// again for the layer's output. Both give the same codes and scales, in
/// one batch and in batches of two sizes (tiny-llama, the defaults).
#[test]
fn staged_calibration_is_the_same_with_or_without_kept_activations() {
    let model = Model::open(s(&fixture("models/tiny-llama"))).unwrap();
    let engine = Engine::new(&model).unwrap();
    let ids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("gptq_model/tiny-llama/ids.json")).unwrap())
            .unwrap();
    let windows: Vec<Vec<u32>> = serde_json::from_value(ids["ids"].clone()).unwrap();
    let cfg = GptqConfig {
        group_size: Some(32),
        ..GptqConfig::default()
    };
    let run = |keep_activations_up_to: u64, batch_tokens: usize| {
        let pipeline = Pipeline {
            config: &cfg,
            round_to_nearest: false,
            true_sequential: true,
            propagate_quantized: true,
            batch_tokens,
            keep_activations_up_to,
            keep: &|_, _| false,
            on_layer: &|_| {},
        };
        let mut out: Vec<(String, Vec<u8>, Vec<f32>)> = Vec::new();
        calibrate(&model, &engine, &windows, &pipeline, &mut |done, _| {
            for q in done {
                let r = q.result.unwrap();
                out.push((q.tensor.name.clone(), r.codes, r.scales));
            }
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        out
    };
    let kept = run(u64::MAX, 1 << 20);
    assert_eq!(kept.len(), 7 * engine.config.layers);
    assert!(kept == run(0, 1 << 20), "gate/up run again");
    // Batches of 5, 5, 5 and 1 windows (16): two sizes of stage buffers.
    // The Hessians then sum in another order, so compare within the size.
    let fives = 5 * windows[0].len();
    assert!(run(u64::MAX, fives) == run(0, fives), "batches of five");
}

/// SmolLM2 (the HF form `convert` writes from the PyPI GGUF, float32),
/// group 64, 16 × 256 ids: each layer calibrated on the original
/// activations equals llm-compressor's on the sampled rows; with
/// propagation, layer 0 equals and later layers' losses follow.
#[test]
fn smollm2_layer_by_layer_equals_llm_compressor() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hf) = crate::common::smollm2_hf(tmp.path()) else {
        return;
    };
    // All 30 layers without act-order, the first 10 with it (CI time).
    for (variant, n) in [("g64-none-noprop", 30), ("g64-weight-noprop", 10)] {
        let layers = check_model(&hf, "smollm2", variant, false, n);
        assert_eq!(layers.len(), n);
        assert_codes(&layers, variant);
        assert_scales(&layers, variant);
    }
    let layers = check_model(&hf, "smollm2", "g64-none", true, 2);
    assert_codes(&layers[..1], "g64-none");
    assert_scales(&layers, "g64-none");
}

/// llmtool's defaults against GPTQModel 7.6.0's own run on CPU
/// (`tests/oracle/gptqmodel_goldens.py`; its damp, 0.05, given to both):
/// true-sequential, group-aware order, each group's scale from the weights
/// as they stand when GPTQ reaches the group's lazy block. Layer 0's q/k/v
/// read the embeddings of the same ids in both tools. A code that flips on
/// a float tie changes the rest of its row here, since the later groups'
/// scales come from the updated weights: whole rows agree or not (29 of
/// 576 q rows differ, 1 of 192 k rows, no v row), hence 99.5 % of codes,
/// and the later group scales of those 30 rows differ too (98.9 % equal).
#[test]
fn smollm2_layer_0_equals_gptqmodel_with_its_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hf) = crate::common::smollm2_hf(tmp.path()) else {
        return;
    };
    let cfg = |_| GptqConfig {
        damp: 0.05,
        ..GptqConfig::default()
    };
    let layers = check_with(&hf, "smollm2-gptqmodel", "g64-gar", &cfg, true, true, 1);
    let l = &layers[0];
    let (codes, scales) = (
        l.equal as f64 / l.total as f64,
        l.scales_equal as f64 / l.scales as f64,
    );
    assert_eq!(l.total, (576 + 192 + 192) * 576, "{l:?}");
    assert!(
        codes >= 0.995,
        "{:.3} % of codes equal: {l:?}",
        codes * 100.0
    );
    assert!(
        scales >= 0.985,
        "{:.3} % of scales equal: {l:?}",
        scales * 100.0
    );
}

#[test]
fn tiny_llama_propagated_run_follows_llm_compressor() {
    for variant in ["g128-none", "g128-weight"] {
        let layers = check("tiny-llama", variant, true, usize::MAX);
        assert_codes(&layers[..1], variant);
        assert_scales(&layers, variant);
        for (i, l) in layers.iter().enumerate() {
            let rel = (l.loss - l.ref_loss).abs() / l.ref_loss;
            assert!(rel < 0.02, "{variant} layer {i}: loss {l:?}");
        }
    }
}

/// transformers (with compressed-tensors) loads what `quantize gptq
/// --format compressed-tensors` wrote for tiny-llama, and its logits equal
/// our engine's on the same checkpoint (fixtures/README.md says how the
/// checkpoint and the logits were made).
#[test]
fn transformers_logits_on_our_compressed_tensors_output_equal_the_engine() {
    crate::common::assert_transformers_logits(&fixture("gptq_model/tiny-llama-llmtool-ct"));
}

#[test]
fn cli_writes_both_layouts_from_text_and_the_engine_runs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let jsonl = tmp.path().join("train.jsonl");
    let line = serde_json::json!({"text": crate::common::fixture("tokenizer/tiny-llama-spm/tokenizer.json").display().to_string().repeat(40)});
    let chat = serde_json::json!({"messages": [
        {"role": "user", "content": "What is a mode of substance?"},
        {"role": "assistant", "content": "An affection of substance, conceived through another."}
    ]});
    std::fs::write(&jsonl, format!("{line}\n\n{chat}\n{line}\n")).unwrap();
    for (layout, calib) in [("gptq", None), ("compressed-tensors", Some(&jsonl))] {
        let out = tmp.path().join(format!("out-{layout}"));
        let mut cmd = crate::common::llmtool();
        cmd.args([
            "quantize",
            "gptq",
            s(&m),
            "--out",
            s(&out),
            "--format",
            layout,
        ])
        .args(["--calib-samples", "4", "--calib-seqlen", "32", "--json"]);
        if let Some(c) = calib {
            cmd.args(["--calib", s(c)]);
        }
        let r = crate::common::json_output(&mut cmd);
        assert_eq!(r["quantized"], 14, "{r}");
        if calib.is_some() {
            assert_eq!(r["calibration"]["documents"], 3, "{r}");
        }
        assert_eq!(r["layer_stats"].as_array().unwrap().len(), 2);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let q = &config["quantization_config"];
        match layout {
            "gptq" => {
                assert_eq!(q["checkpoint_format"], "gptq");
                assert!(out.join("quantize_config.json").is_file());
            }
            _ => assert_eq!(q["format"], "pack-quantized"),
        }
        assert!(out.join("tokenizer.json").is_file());
        let model = Model::open(s(&out)).unwrap();
        let e = Engine::new(&model).unwrap();
        let mut cache = e.new_cache();
        let logits = e
            .forward(
                &mut [&mut cache],
                &[&[1, 5, 9, 200]],
                llmtool::model::engine::Logits::Last,
            )
            .unwrap();
        assert!(logits[0].iter().all(|v| v.is_finite()));
    }
}

/// The quality line of the report and the card: the checkpoint, read back
/// from disk, against its base on calibration windows that calibration did
/// not see, with the numbers `eval kld` computes on the same windows.
#[test]
fn the_card_measures_held_out_windows_as_eval_kld_does() {
    use llmtool::model::engine::text::Text;
    use llmtool::ops::calibration;
    use llmtool::ops::eval::{kl_divergence, EvalOptions};
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let windows = tmp.path().join("windows.json");
    let r = quantize_small(
        &m,
        &out,
        &["--held-out-samples", "3", "--save-windows", s(&windows)],
    );
    let h = &r["held_out"];
    assert_eq!(
        (h["chunks"].as_u64(), h["ctx"].as_u64()),
        (Some(3), Some(32)),
        "{r}"
    );
    assert_eq!(r["calibration"]["held_out"], 3);

    // The saved windows are the draw's: calibration under "ids", the
    // held-out ones under "held_out".
    let base = Model::open(s(&m)).unwrap();
    let quantized = Model::open(s(&out)).unwrap();
    let (eb, eq) = (
        Engine::new(&base).unwrap(),
        Engine::new(&quantized).unwrap(),
    );
    let opts = calibration::Options {
        samples: 4,
        seqlen: 32,
        held_out: 3,
        ..calibration::Options::default()
    };
    let cal = calibration::load(&base, eb.config.vocab, &opts).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&windows).unwrap()).unwrap();
    assert_eq!(saved["ids"], serde_json::json!(cal.windows));
    assert_eq!(saved["held_out"], serde_json::json!(cal.held_out_windows));

    // The card's numbers are eval's full-forward KLD on those windows, in
    // the library and from `eval kld|ppl --ids` on the saved file.
    let bos = Text::load(&base, None).unwrap().bos_for(&base).unwrap();
    let o = EvalOptions {
        ctx: 32,
        max_chunks: None,
        progress: false,
    };
    let want = kl_divergence(&eb, &eq, &cal.held_out_windows.concat(), bos, &o).unwrap();
    let cli = crate::common::json_output(crate::common::llmtool().args([
        "eval",
        "kld",
        s(&m),
        s(&out),
        "--ids",
        s(&windows),
        "--json",
    ]));
    let ppl = crate::common::json_output(crate::common::llmtool().args([
        "eval",
        "ppl",
        s(&out),
        "--ids",
        s(&windows),
        "--json",
    ]));
    let close = |what: &str, got: f64, v: f64| {
        assert!(
            (got - v).abs() <= 1e-4 * v.abs().max(1e-3),
            "{what}: {got} vs eval's {v}"
        );
    };
    for (k, v) in [
        ("ppl_base", want.ppl_base),
        ("ppl_other", want.ppl_other),
        ("kld_mean", want.kld_mean),
        ("top1_agreement", want.top1_agreement),
    ] {
        close(k, h[k].as_f64().unwrap(), v);
        close(k, cli[k].as_f64().unwrap(), v);
    }
    close(
        "eval ppl --ids",
        ppl["ppl"].as_f64().unwrap(),
        want.ppl_other,
    );
    assert_eq!(
        (cli["chunks"].as_u64(), cli["ctx"].as_u64()),
        (Some(3), Some(32))
    );
    assert!(want.kld_mean > 0.0, "4-bit codes change the distribution");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("## Quality against the base model"), "{card}");
    assert!(
        card.contains(&format!(
            "| perplexity | {:.4} | {:.4} (",
            want.ppl_base, want.ppl_other
        )),
        "{card}"
    );

    // Without held-out text the card says so and where to measure.
    let out2 = tmp.path().join("out2");
    let r = quantize_small(&m, &out2, &["--held-out-samples", "0"]);
    assert!(r["held_out"].is_null(), "{r}");
    let card = std::fs::read_to_string(out2.join("README.md")).unwrap();
    assert!(card.contains("Quality: not measured here"), "{card}");
}

/// `quantize gptq` on `m` with 4 × 32 calibration tokens and `extra`
/// flags, its `--json` report.
fn quantize_small(m: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    crate::common::json_output(
        crate::common::llmtool()
            .args(["quantize", "gptq", s(m), "--out", s(out)])
            .args(["--calib-samples", "4", "--calib-seqlen", "32", "--json"])
            .args(extra),
    )
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let r = quantize_small(&m, &out, &["--dry-run"]);
    assert_eq!(r["layers"], 2);
    assert_eq!(r["quantized"], 14);
    assert!(r["estimate"]["peak_bytes"].as_u64().unwrap() > 0);
    assert!(r["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "quantize_config.json"));
    assert!(!out.exists());

    // Round to nearest runs no layer: no hidden states, a fraction of the work.
    let rtn = quantize_small(&m, &out, &["--dry-run", "--rtn"]);
    let e = |r: &serde_json::Value, k: &str| r["estimate"][k].as_f64().unwrap();
    assert_eq!(e(&rtn, "hidden_state_bytes"), 0.0, "{rtn}");
    assert!(e(&rtn, "flops") * 10.0 < e(&r, "flops"), "{rtn} vs {r}");
    assert!(e(&rtn, "peak_bytes") < e(&r, "peak_bytes"), "{rtn} vs {r}");
    assert!(!out.exists());
}

#[test]
fn bad_inputs_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let base = ["quantize", "gptq", s(&m), "--out", s(&out)];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|a| a.to_string())
            .chain(extra.iter().map(|a| a.to_string()))
            .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&["--calib-samples", "100000"]), "need at least"),
        (
            with(&[
                "--group-size",
                "96",
                "--calib-samples",
                "4",
                "--calib-seqlen",
                "32",
            ]),
            "does not divide the input width of model.layers.0",
        ),
        (
            with(&["--asym", "--calib-samples", "4", "--calib-seqlen", "32"]),
            "--format compressed-tensors",
        ),
        (with(&["--bits", "3"]), "4- or 8-bit"),
    ];
    for (args, want) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refuses(&a, &out, want);
    }
    // A calibration file that is not what it claims.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n[1, 2]\n").unwrap();
    refuses(
        &[&base[..], &["--calib", s(&bad)]].concat(),
        &out,
        "bad.jsonl:2",
    );
    // An already-quantized input.
    let q = fixture("gptq_model/tiny-llama-llmtool-ct");
    refuses(
        &["quantize", "gptq", s(&q), "--out", s(&out)],
        &out,
        "quantized",
    );
    // NaN in a weight: named.
    let nan_dir = tmp.path().join("nan");
    std::fs::create_dir(&nan_dir).unwrap();
    let nan = with_tokenizer(&nan_dir, Some(f32::NAN));
    refuses(
        &[
            "quantize",
            "gptq",
            s(&nan),
            "--out",
            s(&out),
            "--calib-samples",
            "4",
            "--calib-seqlen",
            "32",
        ],
        &out,
        "model.layers.1.self_attn.q_proj",
    );
}

#[test]
fn allow_unquantized_keeps_the_layers_the_group_size_does_not_divide() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let out = tmp.path().join("out");
    let r = crate::common::json_output(crate::common::llmtool().args([
        "quantize",
        "gptq",
        s(&m),
        "--out",
        s(&out),
        "--group-size",
        "512",
        "--allow-unquantized",
        "--calib-samples",
        "4",
        "--calib-seqlen",
        "32",
        "--json",
    ]));
    // Only down_proj has 512 inputs.
    assert_eq!(r["quantized"], 2, "{r}");
    assert_eq!(r["kept"].as_array().unwrap().len(), 12);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let dynamic = config["quantization_config"]["dynamic"]
        .as_object()
        .unwrap();
    assert!(dynamic.contains_key("-:^model\\.layers\\.0\\.self_attn\\.q_proj$"));
    let model = Model::open(s(&out)).unwrap();
    Engine::new(&model).unwrap();
}
