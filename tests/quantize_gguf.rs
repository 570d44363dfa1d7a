//! `llmtool quantize` to GGUF against llama.cpp's own pipeline on the real
//! SmolLM2: its HF form (made here by `convert --dtype bf16`, which is
//! bit-identical to transformers' import) quantized by us must give the
//! metadata and the tensor bytes that `convert_hf_to_gguf.py` (f16, bf16)
//! and `llama-quantize` (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0) wrote — goldens
//! by tests/oracle/gguf_goldens.py in fixtures/gguf/. gguf-py reads them.

mod common;

use std::process::Command;

use llmtool::convert::to_hf::{convert, HfOptions};
use llmtool::quant::ftype::FileType;
use llmtool::quantize::{to_gguf, GgufOptions};
use llmtool::store::gguf::Value;
use llmtool::store::{DType, Model};

fn value_json(v: &Value) -> serde_json::Value {
    v.to_json()
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
    let mut written = Vec::new();
    for (label, ft) in [
        ("f16", FileType::F16),
        ("bf16", FileType::BF16),
        ("q8_0", FileType::Q8_0),
        ("q6_k", FileType::Q6_K),
        ("q5_k_m", FileType::Q5_K_M),
        ("q4_k_m", FileType::Q4_K_M),
        ("q4_0", FileType::Q4_0),
    ] {
        let want: serde_json::Value = serde_json::from_slice(
            &std::fs::read(common::fixture(&format!("gguf/smollm2-{label}.json"))).unwrap(),
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
            &model,
            ft,
            llmtool::quantize::tokenizer_metadata(&model, None).unwrap(),
            &opts,
            false,
        )
        .unwrap();
        let ours = Model::open(out.to_str().unwrap()).unwrap();
        let meta = ours.gguf.as_ref().unwrap();
        for (k, v) in meta.entries() {
            if k.starts_with("tokenizer.") {
                continue;
            }
            let w = &want["metadata"][k];
            assert_eq!(
                w["type"],
                serde_json::to_value(v.value_type()).unwrap(),
                "{label} {k} type"
            );
            if v.value_type() != llmtool::store::gguf::ValueType::Array {
                let (a, b) = (value_json(v), w["value"].clone());
                match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() <= 1e-12 * y.abs(), "{label} {k}: {x} vs {y}")
                    }
                    _ => assert_eq!(a, b, "{label} {k}"),
                }
            }
        }
        let want_keys = want["metadata"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !k.starts_with("tokenizer."));
        for k in want_keys {
            assert!(meta.get(k).is_some(), "{label}: missing metadata {k}");
        }
        let wt = want["tensors"].as_array().unwrap();
        assert_eq!(ours.tensors().len(), wt.len(), "{label}");
        // llama-quantize's files are compared in order (we write its order);
        // the converter's own f16/bf16 files keep the safetensors order.
        let by_name: std::collections::HashMap<&str, &serde_json::Value> = wt
            .iter()
            .map(|w| (w["name"].as_str().unwrap(), w))
            .collect();
        for (i, t) in ours.tensors().iter().enumerate() {
            let w = if label.starts_with('q') {
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
            .arg("import sys\nfrom gguf import GGUFReader\nfor p in sys.argv[1:]:\n    r = GGUFReader(p)\n    assert len(r.tensors) == 272, p\n    for t in r.tensors: t.data.sum()\nprint('ok')")
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
