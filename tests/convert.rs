//! `llmtool convert` (GGUF → HF): the real SmolLM2 Q4_1 GGUF becomes an HF
//! directory whose every tensor equals gguf-py's dequantization (with the
//! Q/K rows back in HF order), and whose config matches the model. The
//! transformers side (load, identical weights and logits to transformers'
//! own GGUF import, tokenizer) is the committed verdict of
//! tests/oracle/check_convert.py.

use crate::common;

use std::collections::HashMap;

use llmtool::model::arch;
use llmtool::model::hf_gguf::permuted_source_row;
use llmtool::ops::convert::{convert, HfOptions};
use llmtool::store::{DType, Model};

fn opts(out: &std::path::Path) -> HfOptions {
    HfOptions {
        out: out.to_path_buf(),
        dtype: None,
        max_shard_size: 5_000_000_000,
        progress: false,
        command: "test".into(),
    }
}

#[test]
fn smollm2_converts_to_gguf_py_values_in_hf_order() {
    let Some(g) = common::smollm2() else { return };
    let gguf = Model::open(g.to_str().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let report = convert(&gguf, &opts(&out), false).unwrap();
    assert_eq!(report.dtype, DType::F32);
    assert_eq!(report.tensors, 272);
    let hf = Model::open(out.to_str().unwrap()).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::fixture("smollm2/expected.json")).unwrap())
            .unwrap();
    let want: HashMap<&str, &str> = expected["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["dequant_sha256"].as_str().unwrap(),
            )
        })
        .collect();
    let a = arch::detect(&hf);
    let hd = a.head_dim.unwrap() as usize;
    for t in hf.tensors() {
        let gname = arch::rename(&t.name, true).unwrap();
        let mut v = hf.read_f32(t).unwrap();
        if gname.contains("attn_q.") || gname.contains("attn_k.") {
            // Re-apply llama.cpp's permutation to compare with the GGUF rows.
            let cols = t.row_len() as usize;
            let orig = v.clone();
            for (row, dst) in v.chunks_mut(cols).enumerate() {
                let s = permuted_source_row(row, hd, true);
                dst.copy_from_slice(&orig[s * cols..(s + 1) * cols]);
            }
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            common::sha256_hex(&bytes),
            want[gname.as_str()],
            "{}",
            t.name
        );
    }
    // The config describes the same model as the GGUF.
    let g = arch::detect(&gguf);
    assert_eq!(
        (
            a.layers,
            a.hidden_size,
            a.heads,
            a.kv_heads,
            a.head_dim,
            a.ffn_size,
            a.vocab
        ),
        (
            g.layers,
            g.hidden_size,
            g.heads,
            g.kv_heads,
            g.head_dim,
            g.ffn_size,
            g.vocab
        )
    );
    assert!(a.tied_embeddings);
    assert_eq!(a.rope.theta, Some(100000.0));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // transformers judged exactly these files (tests/oracle/check_convert.py).
    let verdict: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixture("convert/transformers-check.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["ok"], true, "{verdict}");
    let files = verdict["files"].as_object().unwrap();
    assert!(files.contains_key("tokenizer.json") && files.contains_key("config.json"));
    for (name, sum) in files {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(
            &common::sha256_hex(&bytes),
            sum,
            "{name} changed since transformers judged it"
        );
    }
}

#[test]
fn convert_refuses_safetensors_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let m = Model::open(common::fixture("models/tiny-llama").to_str().unwrap()).unwrap();
    let e = convert(&m, &opts(&out), false).unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
