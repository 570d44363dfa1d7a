//! `llmtool quantize` to GGUF against llama.cpp's own pipeline on the real
//! SmolLM2: its HF form (made here by `convert --dtype bf16`, which is
//! bit-identical to transformers' import) quantized by us must give the
//! metadata and the tensor bytes that `convert_hf_to_gguf.py` (f16, bf16)
//! and `llama-quantize` (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0) wrote — goldens
//! by tests/oracle/gguf_goldens.py in fixtures/gguf/. gguf-py reads them.

use crate::common;

use std::process::Command;

use llmtool::ops::convert::{convert, HfOptions};
use llmtool::ops::quantize::gguf::{to_gguf, GgufOptions};
use llmtool::quant::ftype::FileType;
use llmtool::store::gguf::Value;
use llmtool::store::{DType, Model};

fn value_json(v: &Value) -> serde_json::Value {
    v.to_json()
}

const FORMATS: [(&str, FileType); 7] = [
    ("f16", FileType::F16),
    ("bf16", FileType::BF16),
    ("q8_0", FileType::Q8_0),
    ("q6_k", FileType::Q6_K),
    ("q5_k_m", FileType::Q5_K_M),
    ("q4_k_m", FileType::Q4_K_M),
    ("q4_0", FileType::Q4_0),
];

/// Quantizes the HF model `model` to every format and compares each file
/// with fixtures/gguf/LABEL-<format>.json: every metadata key (tokenizer
/// arrays by length and first items when `tokenizer`; the SmolLM2
/// tokenizer keys are judged by tests/tokenizer.rs), every tensor's type
/// and bytes. gguf-py then reads every file. Returns nothing: panics name
/// the format, key or tensor.
fn assert_quantizes_like_llama_cpp(model: &Model, label: &str, tokenizer: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    let mut n_tensors = 0;
    for (format, ft) in FORMATS {
        let label = format!("{label}-{format}");
        let want: serde_json::Value = serde_json::from_slice(
            &std::fs::read(common::fixture(&format!("gguf/{label}.json"))).unwrap(),
        )
        .unwrap();
        let out = tmp.path().join(format!("{label}.gguf"));
        let name = want["metadata"]["general.name"]["value"].as_str().unwrap();
        let opts = GgufOptions {
            out: out.clone(),
            name: Some(name.to_string()),
            progress: false,
        };
        to_gguf(
            model,
            ft,
            llmtool::ops::quantize::gguf::tokenizer_metadata(model, None).unwrap(),
            &opts,
            false,
        )
        .unwrap();
        let ours = Model::open(out.to_str().unwrap()).unwrap();
        let meta = ours.gguf.as_ref().unwrap();
        let judged = |k: &str| tokenizer || !k.starts_with("tokenizer.");
        for (k, v) in meta.entries().iter().filter(|(k, _)| judged(k)) {
            let w = &want["metadata"][k];
            assert_eq!(
                w["type"],
                serde_json::to_value(v.value_type()).unwrap(),
                "{label} {k} type"
            );
            if let Value::Array(a) = v {
                let items: Vec<Value> = a.iter().collect();
                assert_eq!(
                    items.len() as u64,
                    w["len"].as_u64().unwrap(),
                    "{label} {k}"
                );
                let head: Vec<_> = items.iter().take(4).map(value_json).collect();
                assert_eq!(serde_json::Value::from(head), w["head"], "{label} {k}");
                continue;
            }
            let (a, b) = (value_json(v), w["value"].clone());
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    assert!((x - y).abs() <= 1e-12 * y.abs(), "{label} {k}: {x} vs {y}")
                }
                _ => assert_eq!(a, b, "{label} {k}"),
            }
        }
        for k in want["metadata"].as_object().unwrap().keys() {
            if judged(k) {
                assert!(meta.get(k).is_some(), "{label}: missing metadata {k}");
            }
        }
        let wt = want["tensors"].as_array().unwrap();
        assert_eq!(ours.tensors().len(), wt.len(), "{label}");
        n_tensors = wt.len();
        // llama-quantize's files are compared in order (we write its order);
        // the converter's own f16/bf16 files keep the safetensors order.
        let by_name: std::collections::HashMap<&str, &serde_json::Value> = wt
            .iter()
            .map(|w| (w["name"].as_str().unwrap(), w))
            .collect();
        for (i, t) in ours.tensors().iter().enumerate() {
            let w = if format.starts_with('q') {
                assert_eq!(
                    t.name,
                    wt[i]["name"].as_str().unwrap(),
                    "{label}: tensor order"
                );
                &wt[i]
            } else {
                by_name[t.name.as_str()]
            };
            assert_eq!(
                t.dtype.to_string(),
                w["type"].as_str().unwrap(),
                "{label} {}",
                t.name
            );
            assert_eq!(
                common::sha256_hex(ours.bytes(t)),
                w["sha256"].as_str().unwrap(),
                "{label} {} bytes",
                t.name
            );
        }
        written.push(out);
    }
    // gguf-py (the `gguf` package users script with) reads every file.
    if let Some(py) = common::gguf_python() {
        let out = Command::new(py)
            .arg("-c")
            .arg("import sys\nfrom gguf import GGUFReader\nn = int(sys.argv[1])\nfor p in sys.argv[2:]:\n    r = GGUFReader(p)\n    assert len(r.tensors) == n, p\n    for t in r.tensors: t.data.sum()\nprint('ok')")
            .arg(n_tensors.to_string())
            .args(&written)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn smollm2_quantizes_like_llama_cpp() {
    let Some(g) = common::smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let gguf = Model::open(g.to_str().unwrap()).unwrap();
    convert(
        &gguf,
        &HfOptions {
            out: hf.clone(),
            dtype: Some(DType::BF16),
            max_shard_size: 5_000_000_000,
            progress: false,
            command: "test".into(),
        },
        false,
    )
    .unwrap();
    let model = Model::open(hf.to_str().unwrap()).unwrap();
    assert_quantizes_like_llama_cpp(&model, "smollm2", false);
}

/// The tiny fixture models (llama: Q/K permutation, f32 input; llama-hd:
/// f16 input, head_dim 96 ≠ hidden/heads; qwen2: bf16, biases, tied
/// embeddings, no permutation) with the SentencePiece
/// tokenizer of fixtures/tokenizer/tiny-sp beside them, tokenizer keys
/// included.
#[test]
fn tiny_models_quantize_like_llama_cpp() {
    for name in ["tiny-llama", "tiny-llama-hd", "tiny-qwen2"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        // What gguf_goldens.py --tokenizer copies.
        let files = [
            (format!("models/{name}"), "config.json"),
            (format!("models/{name}"), "model.safetensors"),
            ("tokenizer/tiny-sp".into(), "tokenizer.model"),
            ("tokenizer/tiny-sp".into(), "tokenizer_config.json"),
            ("tokenizer/tiny-sp".into(), "special_tokens_map.json"),
            ("tokenizer/tiny-sp".into(), "added_tokens.json"),
        ];
        for (src, f) in files {
            std::fs::copy(common::fixture(&src).join(f), dir.join(f)).unwrap();
        }
        let model = Model::open(dir.to_str().unwrap()).unwrap();
        assert_quantizes_like_llama_cpp(&model, name, true);
    }
}

/// NaN/Inf in a weight, and an f32 value the pipeline's f16 intermediate
/// cannot hold, are errors naming the tensor and element; nothing is left.
#[test]
fn bad_values_are_refused_by_name_and_leave_no_output() {
    let victim = "model.layers.1.mlp.up_proj.weight";
    for (bad, want) in [
        (f32::NAN, "element 777 is NaN"),
        (f32::NEG_INFINITY, "element 777 is -inf"),
        (1.0e6, "element 777 is 1000000, beyond F16's range"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let m = common::edited_tiny_llama(&src, victim, |i| if i == 777 { bad } else { 0.01 });
        // A GGUF is only written with a vocabulary.
        for f in ["tokenizer.model", "tokenizer_config.json"] {
            std::fs::copy(common::fixture("tokenizer/tiny-sp").join(f), src.join(f)).unwrap();
        }
        let vocab = llmtool::ops::quantize::gguf::tokenizer_metadata(&m, None).unwrap();
        let out = tmp.path().join("q.gguf");
        let opts = GgufOptions {
            out: out.clone(),
            name: None,
            progress: false,
        };
        let err = to_gguf(&m, FileType::Q8_0, vocab, &opts, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(victim) && err.contains(want), "{err}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["src"], "output or temporary left behind");
    }
}

/// A config as transformers 5 writes it (`rope_parameters`) gives the GGUF
/// the same metadata, RoPE base included (tiny-qwen2's is 10⁶, not the
/// default), as llama.cpp's converter reads either form.
#[test]
fn rope_parameters_of_transformers_5_give_the_same_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, v5) = (tmp.path().join("v4"), tmp.path().join("v5"));
    let fixture = common::fixture("models/tiny-qwen2");
    for d in [&src, &v5] {
        std::fs::create_dir(d).unwrap();
        // A GGUF is only written with a vocabulary.
        common::copy_tiny_sp_tokenizer(d);
    }
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), src.join(f)).unwrap();
    }
    common::with_rope_parameters(&fixture.join("config.json"), &fixture, &v5);
    let gguf = |dir: &std::path::Path, name: &str| {
        let m = Model::open(dir.to_str().unwrap()).unwrap();
        let opts = GgufOptions {
            out: tmp.path().join(name),
            name: Some("tiny".into()),
            progress: false,
        };
        let vocab = llmtool::ops::quantize::gguf::tokenizer_metadata(&m, None).unwrap();
        to_gguf(&m, FileType::Q8_0, vocab, &opts, false).unwrap();
        Model::open(tmp.path().join(name).to_str().unwrap()).unwrap()
    };
    let (a, b) = (gguf(&src, "a.gguf"), gguf(&v5, "b.gguf"));
    let (ma, mb) = (a.gguf.as_ref().unwrap(), b.gguf.as_ref().unwrap());
    let show = |m: &llmtool::store::gguf::Metadata| {
        m.entries()
            .iter()
            .map(|(k, v)| format!("{k}={}", value_json(v)))
            .collect::<Vec<_>>()
    };
    assert_eq!(show(ma), show(mb));
    assert!(
        show(mb).contains(&"qwen2.rope.freq_base=1000000.0".to_string()),
        "{:?}",
        show(mb)
    );
}
