//! The inference engine against transformers: logits and greedy tokens from
//! goldens made by tests/oracle/engine_goldens.py (fixtures/engine/).

use crate::common;

use std::path::Path;

use llmtool::model::engine::{Activations, Engine, Logits};
use llmtool::store::Model;

const TOL: f32 = 1e-3;

fn golden(name: &str) -> serde_json::Value {
    let p = common::fixture(&format!("engine/{name}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy decoding one token at a time through the KV cache.
fn greedy(engine: &Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = engine.new_cache();
    let mut logits = engine
        .forward(&mut [&mut cache], &[prompt], Logits::Last)
        .unwrap()
        .remove(0);
    let mut out = Vec::new();
    for _ in 0..n {
        let tok = argmax(&logits);
        out.push(tok);
        logits = engine
            .forward(&mut [&mut cache], &[&[tok]], Logits::Last)
            .unwrap()
            .remove(0);
    }
    out
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Checks one fixture golden: the requested logit rows within TOL and the
/// 32 greedy tokens identical.
fn check(case: &str, model_dir: &Path) {
    let g = golden(case);
    let model = Model::open(model_dir.to_str().unwrap()).unwrap();
    let engine = Engine::new(&model)
        .unwrap()
        .with_activations(Activations::Exact);
    let input = ids(&g["input_ids"]);
    let mut cache = engine.new_cache();
    let all = engine
        .forward(&mut [&mut cache], &[&input], Logits::All)
        .unwrap()
        .remove(0);
    let vocab = engine.config.vocab;
    for (pos, row) in g["rows"].as_object().unwrap() {
        let p: usize = pos.parse().unwrap();
        let want: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_diff(&all[p * vocab..(p + 1) * vocab], &want);
        eprintln!("{case}: position {p}: max abs diff {d:e}");
        assert!(d <= TOL, "{case}: position {p}: max |Δlogit| {d}");
    }
    let want = ids(&g["greedy"]);
    assert_eq!(
        greedy(&engine, &input, want.len()),
        want,
        "{case}: greedy tokens"
    );
}

#[test]
fn tiny_llama_f32() {
    check("tiny-llama", &common::fixture("models/tiny-llama"));
}

#[test]
fn tiny_qwen2_bf16_biases_tied() {
    check("tiny-qwen2", &common::fixture("models/tiny-qwen2"));
}

#[test]
fn tiny_llama_hd_f16_head_dim_96_gqa_4() {
    check("tiny-llama-hd", &common::fixture("models/tiny-llama-hd"));
}

#[test]
fn micro_bases() {
    check("micro-llama", &common::fixture("lora/bases/micro-llama"));
    check("micro-qwen2", &common::fixture("lora/bases/micro-qwen2"));
}

/// tiny-llama's weights under a rope_scaling config written by the oracle.
fn with_config(case: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::fixture("models/tiny-llama/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        common::fixture(&format!("engine/{case}/config.json")),
        dir.path().join("config.json"),
    )
    .unwrap();
    check(case, dir.path());
}

#[test]
fn rope_llama3_scaling() {
    with_config("tiny-llama-rope-llama3");
}

#[test]
fn rope_linear_scaling() {
    with_config("tiny-llama-rope-linear");
}

/// The same configs as transformers 5 writes them: `rope_theta` and
/// `rope_scaling` folded into one `rope_parameters` object. tiny-qwen2's
/// theta is 10⁶, so a theta read as the default 10⁴ fails it.
#[test]
fn rope_parameters_of_transformers_5() {
    for (case, config, weights) in [
        (
            "tiny-llama-rope-llama3",
            "engine/tiny-llama-rope-llama3",
            "models/tiny-llama",
        ),
        (
            "tiny-llama-rope-linear",
            "engine/tiny-llama-rope-linear",
            "models/tiny-llama",
        ),
        ("tiny-qwen2", "models/tiny-qwen2", "models/tiny-qwen2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        common::with_rope_parameters(
            &common::fixture(config).join("config.json"),
            &common::fixture(weights),
            dir.path(),
        );
        check(case, dir.path());
    }
}

/// A batch of sequences of different lengths gives each sequence the
/// logits it gets alone, and prefill then decode equals one long prefill.
#[test]
fn batches_and_cache_agree_with_single_runs() {
    let model = Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap();
    let engine = Engine::new(&model)
        .unwrap()
        .with_activations(Activations::Exact);
    let a: Vec<u32> = vec![1, 5, 9, 42, 7, 3, 100];
    let b: Vec<u32> = vec![11, 64, 2];
    let one = |t: &[u32]| {
        let mut c = engine.new_cache();
        engine
            .forward(&mut [&mut c], &[t], Logits::All)
            .unwrap()
            .remove(0)
    };
    let (mut ca, mut cb) = (engine.new_cache(), engine.new_cache());
    let both = engine
        .forward(&mut [&mut ca, &mut cb], &[&a, &b], Logits::All)
        .unwrap();
    assert!(max_diff(&both[0], &one(&a)) < 1e-5);
    assert!(max_diff(&both[1], &one(&b)) < 1e-5);
    // Continue sequence a by two tokens through the cache.
    let more = engine
        .forward(&mut [&mut ca], &[&[8, 9]], Logits::All)
        .unwrap()
        .remove(0);
    let full = one(&[a.clone(), vec![8, 9]].concat());
    let v = engine.config.vocab;
    assert!(max_diff(&more, &full[a.len() * v..]) < 1e-5);
    assert_eq!(ca.len(), a.len() + 2);
    // Asking for no rows gives none (and does not panic).
    let mut c = engine.new_cache();
    let none = engine
        .forward(&mut [&mut c], &[&b], Logits::From(3))
        .unwrap();
    assert!(none[0].is_empty());
}

/// SmolLM2 against transformers' float32 run of the same GGUF (its own GGUF
/// import): last-position logits within TOL, 32 greedy tokens identical.
fn check_smollm2(model: &Model) {
    let g = golden("smollm2");
    let raw = std::fs::read(common::fixture("engine/smollm2-last.f32")).unwrap();
    let want: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let engine = Engine::new(model)
        .unwrap()
        .with_activations(Activations::Exact);
    let input = ids(&g["input_ids"]);
    let mut cache = engine.new_cache();
    let last = engine
        .forward(&mut [&mut cache], &[&input], Logits::Last)
        .unwrap()
        .remove(0);
    let d = max_diff(&last, &want);
    eprintln!("smollm2 ({:?}): max abs diff {d:e}", model.container);
    assert!(d <= TOL, "smollm2: max |Δlogit| {d}");
    let want = ids(&g["greedy"]);
    assert_eq!(
        greedy(&engine, &input, want.len()),
        want,
        "smollm2 greedy tokens"
    );
}

#[test]
fn smollm2_gguf_q4_1_matches_transformers() {
    let Some(p) = common::smollm2() else { return };
    check_smollm2(&Model::open(p.to_str().unwrap()).unwrap());
}

#[test]
fn smollm2_converted_hf_matches_transformers() {
    use llmtool::ops::convert::{convert, HfOptions};
    let Some(p) = common::smollm2() else { return };
    let gguf = Model::open(p.to_str().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let opts = HfOptions {
        out: out.clone(),
        dtype: None,
        max_shard_size: 5_000_000_000,
        progress: false,
        command: "test".into(),
    };
    convert(&gguf, &opts, false).unwrap();
    check_smollm2(&Model::open(out.to_str().unwrap()).unwrap());
}

/// `eval::perplexity` against llama-perplexity's method computed in torch
/// (tests/oracle/engine_goldens.py `llama_perplexity`), with and without BOS.
#[test]
fn perplexity_matches_the_llama_cpp_method_in_torch() {
    use llmtool::ops::eval::{perplexity, EvalOptions};
    let g = golden("ppl-tiny-llama");
    let model = Model::open(common::fixture("models/tiny-llama").to_str().unwrap()).unwrap();
    let engine = Engine::new(&model)
        .unwrap()
        .with_activations(Activations::Exact);
    let tokens = ids(&g["tokens"]);
    let o = EvalOptions {
        ctx: g["ctx"].as_u64().unwrap() as usize,
        max_chunks: None,
        progress: false,
    };
    for (key, bos) in [("with_bos", Some(1)), ("without_bos", None)] {
        let r = perplexity(&engine, &tokens, bos, &o).unwrap();
        let want = &g[key];
        assert_eq!(r.scored as u64, want["scored"].as_u64().unwrap(), "{key}");
        let (p, e) = (
            want["ppl"].as_f64().unwrap(),
            want["ppl_error"].as_f64().unwrap(),
        );
        assert!((r.ppl - p).abs() / p < 1e-5, "{key}: ppl {} vs {p}", r.ppl);
        assert!(
            (r.ppl_error - e).abs() / e < 1e-4,
            "{key}: error {} vs {e}",
            r.ppl_error
        );
    }
}

/// The observer sees every linear layer's input: the Q input of layer 0 is
/// the RMS-normed embedding, and each input has the layer's in_features.
#[test]
fn observer_sees_linear_inputs() {
    use llmtool::model::arch::LayerPart;
    let model = Model::open(common::fixture("lora/bases/micro-llama").to_str().unwrap()).unwrap();
    let engine = Engine::new(&model)
        .unwrap()
        .with_activations(Activations::Exact);
    let c = engine.config.clone();
    let toks = [3u32, 7, 11];
    let mut seen = Vec::new();
    let mut cache = engine.new_cache();
    engine
        .forward_observed(&mut [&mut cache], &[&toks], Logits::Last, &mut |l, p, x| {
            seen.push((l, p, x.to_vec()))
        })
        .unwrap();
    assert_eq!(seen.len(), 4 * c.layers);
    for (_, p, x) in &seen {
        let width = match p {
            LayerPart::Q | LayerPart::Gate => c.hidden,
            LayerPart::O => c.heads * c.head_dim,
            LayerPart::Down => c.ffn,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(x.len(), toks.len() * width);
    }
    let emb = model
        .read_f32(model.get("model.embed_tokens.weight").unwrap())
        .unwrap();
    let norm = model
        .read_f32(model.get("model.layers.0.input_layernorm.weight").unwrap())
        .unwrap();
    let d = c.hidden;
    for (t, &tok) in toks.iter().enumerate() {
        let e = &emb[tok as usize * d..(tok as usize + 1) * d];
        let ms = e.iter().map(|v| v * v).sum::<f32>() / d as f32;
        for i in 0..d {
            let want = norm[i] * (e[i] / (ms + c.norm_eps).sqrt());
            assert!((seen[0].2[t * d + i] - want).abs() < 1e-5);
        }
    }
}

/// A layer taken a stage at a time (GPTQ's true-sequential calibration)
/// gives every projection input and the layer output bit for bit as one
/// `layer_pass` over the same batch: the stages are its arithmetic, split.
#[test]
fn staged_layer_equals_one_pass() {
    use llmtool::model::arch::LayerPart;
    use std::ops::ControlFlow;
    let model = Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap();
    let engine = Engine::new(&model).unwrap();
    let d = engine.config.hidden;
    let lens = [5usize, 5];
    let vocab = engine.config.vocab as u32;
    let toks: Vec<u32> = (0..10).map(|i| (i * 37 + 11) % vocab).collect();
    let input = engine.embed(&toks).unwrap();
    for li in 0..engine.config.layers {
        let w = engine.layer_weights(li);
        let mut seen: Vec<(LayerPart, Vec<f32>)> = Vec::new();
        let mut whole = input.clone();
        let _ = engine.layer_pass(li, &w, &mut whole, &lens, &mut |p, x| {
            seen.push((p, x.to_vec()));
            ControlFlow::Continue(())
        });
        let mut st = engine.layer_stages(&lens);
        assert_eq!(st.rows(), 10);
        let mut x = input.clone();
        assert_eq!(st.q_input(li, &x), &seen[0].1[..]);
        let att = st.o_input(li, &w, &x).to_vec();
        assert_eq!(att, seen[1].1);
        assert_eq!(st.gate_input(li, &w, &mut x, &att), &seen[2].1[..]);
        let act = st.down_input(li, &w, &x).to_vec();
        assert_eq!(act, seen[3].1);
        st.output(&w, &mut x, &act);
        assert_eq!(x, whole, "layer {li}");
        assert_eq!(x.len(), 10 * d);
    }
}

/// `eval ppl` computing as llama.cpp does (8-bit activations for quantized
/// weights, the default) against llama-perplexity itself on the same files
/// and text (fixtures/engine/llama-ppl.json, tests/oracle/llama_ppl_golden.py):
/// the shipped Q4_1 SmolLM2 and a Q4_K_M that our own convert + quantize
/// make, byte-identical to the one llama-quantize made for the golden.
///
/// The text is short (378 scored tokens), where llama.cpp's own two
/// attention paths (flash attention on and off) already differ by up to
/// 1 %: the bound is 3 % from the nearer of the two, which any wrong
/// kernel misses by far. The 0.5 % comparison on 10 710 tokens is in
/// docs/PERFORMANCE.md; the kernels themselves are checked exactly in
/// `quant::dot`'s unit tests.
#[test]
fn perplexity_is_close_to_llama_perplexity() {
    use llmtool::model::engine::text::Text;
    use llmtool::ops::convert::{convert, HfOptions};
    use llmtool::ops::eval::{perplexity, EvalOptions};
    use llmtool::ops::quantize::gguf::{to_gguf, tokenizer_from_gguf, GgufOptions};
    use llmtool::quant::ftype::FileType;
    let Some(p) = common::smollm2() else { return };
    let g = golden("llama-ppl");
    let q4_1 = Model::open(p.to_str().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The directory name becomes general.name, as in the oracle script.
    let hf = tmp.path().join("smollm2-hf");
    let hf_opts = HfOptions {
        out: hf.clone(),
        dtype: Some(llmtool::store::DType::BF16),
        max_shard_size: 5_000_000_000,
        progress: false,
        command: "test".into(),
    };
    convert(&q4_1, &hf_opts, false).unwrap();
    let hf = Model::open(hf.to_str().unwrap()).unwrap();
    let gguf = |model: &Model, ft: FileType, tok, name: &str| {
        let out = tmp.path().join(name);
        let opts = GgufOptions {
            out: out.clone(),
            name: None,
            progress: false,
        };
        to_gguf(model, ft, tok, &opts, false).unwrap();
        out
    };
    let f16 = gguf(
        &hf,
        FileType::F16,
        tokenizer_from_gguf(&hf, &q4_1).unwrap(),
        "f16.gguf",
    );
    let f16 = Model::open(f16.to_str().unwrap()).unwrap();
    let q4_k_m = gguf(&f16, FileType::Q4_K_M, Vec::new(), "q4_k_m.gguf");
    let want = &g["models"]["q4_k_m"];
    assert_eq!(
        common::sha256_hex(&std::fs::read(&q4_k_m).unwrap()),
        want["sha256"].as_str().unwrap(),
        "our Q4_K_M is not llama-quantize's"
    );

    let raw = std::fs::read_to_string(common::fixture("engine/ppl-text.txt")).unwrap();
    let text = Text::load(&q4_1, None).unwrap();
    let bos = text.bos_for(&q4_1).unwrap();
    let tokens = text.encode_with_bos(&raw, bos).unwrap();
    let o = EvalOptions {
        ctx: g["ctx"].as_u64().unwrap() as usize,
        max_chunks: None,
        progress: false,
    };
    for (label, path) in [("q4_1", p.clone()), ("q4_k_m", q4_k_m)] {
        let model = Model::open(path.to_str().unwrap()).unwrap();
        let engine = Engine::new(&model).unwrap();
        let r = perplexity(&engine, &tokens, bos, &o).unwrap();
        let want = &g["models"][label];
        assert_eq!(r.chunks as u64, want["fa_auto"]["chunks"].as_u64().unwrap());
        let theirs = ["fa_auto", "fa_off"].map(|k| want[k]["ppl"].as_f64().unwrap());
        let off = theirs
            .iter()
            .map(|t| (r.ppl - t).abs() / t)
            .fold(f64::INFINITY, f64::min);
        eprintln!("{label}: ours {:.4}, llama-perplexity {theirs:?}", r.ppl);
        assert!(
            off < 0.03,
            "{label}: ppl {} vs llama-perplexity {theirs:?}",
            r.ppl
        );
    }
}

/// A one-layer llama GGUF of zeros with `extra` metadata.
fn micro_gguf(dir: &Path, extra: Vec<(&str, llmtool::store::gguf::Value)>) -> Model {
    use llmtool::quant::GgmlType;
    use llmtool::store::gguf::{GgufTensor, GgufWriter, Value};
    let (d, ffn, vocab) = (32u64, 64u64, 16u64);
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".into(), Value::U32(1)),
        ("llama.embedding_length".into(), Value::U32(d as u32)),
        ("llama.feed_forward_length".into(), Value::U32(ffn as u32)),
        ("llama.attention.head_count".into(), Value::U32(2)),
        ("llama.attention.head_count_kv".into(), Value::U32(2)),
        ("llama.vocab_size".into(), Value::U32(vocab as u32)),
    ];
    meta.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    let t = |name: &str, shape: &[u64]| GgufTensor {
        name: name.into(),
        ty: GgmlType::F32,
        shape: shape.to_vec(),
    };
    let tensors = vec![
        t("token_embd.weight", &[vocab, d]),
        t("blk.0.attn_norm.weight", &[d]),
        t("blk.0.attn_q.weight", &[d, d]),
        t("blk.0.attn_k.weight", &[d, d]),
        t("blk.0.attn_v.weight", &[d, d]),
        t("blk.0.attn_output.weight", &[d, d]),
        t("blk.0.ffn_norm.weight", &[d]),
        t("blk.0.ffn_gate.weight", &[ffn, d]),
        t("blk.0.ffn_up.weight", &[ffn, d]),
        t("blk.0.ffn_down.weight", &[d, ffn]),
        t("output_norm.weight", &[d]),
    ];
    let path = dir.join("micro.gguf");
    let mut w = GgufWriter::create(&path, &meta, tensors.clone()).unwrap();
    for s in &tensors {
        let n: u64 = s.shape.iter().product();
        w.write_tensor(&s.name, &vec![0u8; 4 * n as usize]).unwrap();
    }
    w.finish().unwrap();
    Model::open(path.to_str().unwrap()).unwrap()
}

/// A RoPE base or factor that is not positive is refused at load, naming
/// the GGUF key (config.json keys: tests/cli.rs).
#[test]
fn gguf_rope_settings_that_would_compute_nan_are_refused() {
    use llmtool::store::gguf::Value;
    let dir = tempfile::tempdir().unwrap();
    assert!(Engine::new(&micro_gguf(dir.path(), vec![])).is_ok());
    for (extra, want) in [
        (
            vec![("llama.rope.freq_base", Value::F32(-1.0))],
            "GGUF key llama.rope.freq_base is -1; it must be a positive number",
        ),
        (
            vec![
                ("llama.rope.scaling.type", Value::String("linear".into())),
                ("llama.rope.scaling.factor", Value::F32(0.0)),
            ],
            "GGUF key llama.rope.scaling.factor is 0; it must be a positive number",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = micro_gguf(dir.path(), extra);
        let e = Engine::new(&model).err().expect("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
}
