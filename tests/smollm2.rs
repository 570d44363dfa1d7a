//! The real small model (SmolLM2-135M-Instruct Q4_1 GGUF from PyPI) against
//! gguf-py's reading of it (fixtures/smollm2/expected.json, made by
//! tests/oracle/smollm2_goldens.py): metadata, tensor table, raw bytes and
//! every tensor's dequantization, bit for bit; and inspect-arch's numbers.

use crate::common;

use llmtool::model::arch::{self, Family};
use llmtool::store::gguf::Value;
use llmtool::store::Model;

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::fixture("smollm2/expected.json")).unwrap())
        .unwrap()
}

fn open() -> Option<Model> {
    let p = common::smollm2()?;
    Some(Model::open(p.to_str().unwrap()).unwrap())
}

fn scalar_matches(v: &Value, want: &serde_json::Value) -> bool {
    match v {
        Value::String(s) => want.as_str() == Some(s),
        Value::Bool(b) => want.as_bool() == Some(*b),
        // Exact: the oracle printed the f32 widened to f64.
        Value::F32(x) => want.as_f64() == Some(*x as f64),
        Value::F64(x) => want.as_f64() == Some(*x),
        n => n.as_u64().is_some_and(|u| want.as_u64() == Some(u)) || n.as_f64() == want.as_f64(),
    }
}

#[test]
fn metadata_matches_gguf_py() {
    let Some(m) = open() else { return };
    let e = expected();
    let g = m.gguf.as_ref().unwrap();
    assert_eq!(g.version as u64, e["version"].as_u64().unwrap());
    assert_eq!(g.alignment() as u64, e["alignment"].as_u64().unwrap());
    assert_eq!(m.bytes_on_disk(), e["file_size"].as_u64().unwrap());
    let want = e["metadata"].as_object().unwrap();
    assert_eq!(g.entries().len(), want.len(), "same number of keys");
    for ((k, v), (wk, w)) in g.entries().iter().zip(want) {
        assert_eq!(k, wk, "key order");
        let ty = serde_json::to_value(v.value_type()).unwrap();
        assert_eq!(ty, w["type"], "{k} type");
        match v {
            Value::Array(a) => {
                let items: Vec<Value> = a.iter().collect();
                assert_eq!(
                    serde_json::to_value(a.item_type()).unwrap(),
                    w["item_type"],
                    "{k} item type"
                );
                assert_eq!(items.len() as u64, w["len"].as_u64().unwrap(), "{k} length");
                if let Some(d) = w.get("sha256") {
                    assert_eq!(
                        common::array_digest(&items),
                        d.as_str().unwrap(),
                        "{k} contents"
                    );
                } else {
                    let wv = w["value"].as_array().unwrap();
                    assert!(
                        items.iter().zip(wv).all(|(a, b)| scalar_matches(a, b)),
                        "{k} values"
                    );
                }
            }
            v => assert!(
                scalar_matches(v, &w["value"]),
                "{k}: {v:?} vs {}",
                w["value"]
            ),
        }
    }
}

#[test]
fn every_tensor_reads_and_dequantizes_like_gguf_py() {
    let Some(m) = open() else { return };
    let e = expected();
    let want = e["tensors"].as_array().unwrap();
    assert_eq!(m.tensors().len(), want.len());
    for (t, w) in m.tensors().iter().zip(want) {
        let name = w["name"].as_str().unwrap();
        assert_eq!(t.name, name, "tensor order");
        assert_eq!(
            t.dtype.to_string(),
            w["type"].as_str().unwrap(),
            "{name} type"
        );
        let ne: Vec<u64> = w["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            t.shape.iter().rev().copied().collect::<Vec<_>>(),
            ne,
            "{name} shape"
        );
        assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{name} offset");
        assert_eq!(t.len, w["n_bytes"].as_u64().unwrap(), "{name} bytes");
        assert_eq!(
            common::sha256_hex(m.bytes(t)),
            w["sha256"].as_str().unwrap(),
            "{name} raw bytes"
        );
        let f: Vec<u8> = m
            .read_f32(t)
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            common::sha256_hex(&f),
            w["dequant_sha256"].as_str().unwrap(),
            "{name} dequantized"
        );
    }
}

#[test]
fn row_ranges_match_whole_tensor_reads() {
    let Some(m) = open() else { return };
    let t = m.get("token_embd.weight").unwrap();
    let all = m.read_f32(t).unwrap();
    let rows = m.read_rows_f32(t, 100..103).unwrap();
    assert_eq!(rows, all[100 * 576..103 * 576].to_vec());
    let e = m.read_rows_f32(t, 10..49153).unwrap_err().to_string();
    assert!(
        e.contains("token_embd.weight") && e.contains("outside its 49152 rows"),
        "{e}"
    );
}

#[test]
fn inspect_arch_numbers() {
    let Some(m) = open() else { return };
    let a = arch::detect(&m);
    assert_eq!(a.family, Family::Llama);
    assert_eq!(a.hparams_source, "gguf metadata");
    assert_eq!(
        (
            a.layers,
            a.hidden_size,
            a.heads,
            a.kv_heads,
            a.head_dim,
            a.gqa_group,
            a.ffn_size,
            a.vocab
        ),
        (
            Some(30),
            Some(576),
            Some(9),
            Some(3),
            Some(64),
            Some(3),
            Some(1536),
            Some(49152)
        )
    );
    assert!(a.tied_embeddings && !a.attention_bias);
    assert_eq!(a.rope.theta, Some(100000.0));
    assert_eq!(a.norm_eps, Some(1e-5));
    assert_eq!(a.context_length, Some(8192));
    // Counts recomputed from gguf-py's ne lists.
    let e = expected();
    let numel = |pred: &dyn Fn(&str) -> bool| -> u64 {
        e["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| pred(t["name"].as_str().unwrap()))
            .map(|t| {
                t["ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum()
    };
    assert_eq!(a.params.total, numel(&|_| true));
    assert_eq!(a.params.embeddings, 49152 * 576);
    assert_eq!(a.params.norms, numel(&|n| n.contains("norm")));
    assert_eq!(
        a.params.attention,
        numel(&|n| n.contains(".attn_") && !n.contains("norm"))
    );
    assert_eq!(
        a.params.mlp,
        numel(&|n| n.contains(".ffn_") && !n.contains("norm"))
    );
    assert_eq!(a.params.total, 134_515_008);
    let hist: Vec<(String, u64)> = a
        .dtypes
        .iter()
        .map(|d| (d.dtype.to_string(), d.tensors))
        .collect();
    assert_eq!(
        hist,
        [
            ("F32".to_string(), 61),
            ("Q4_1".to_string(), 210),
            ("Q8_0".to_string(), 1)
        ]
    );
    assert_eq!(
        a.tensor_bytes,
        e["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["n_bytes"].as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
}

#[test]
fn cli_json_manifest() {
    let Some(p) = common::smollm2() else { return };
    let v = common::json_output(
        common::llmtool()
            .args(["inspect-arch", "--json", "--tensors"])
            .arg(&p),
    );
    assert_eq!(v["schema"], "llmtool.arch/1");
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["gguf_version"], 3);
    assert_eq!(v["head_dim"], 64);
    assert_eq!(v["params"]["total"], 134_515_008u64);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    assert_eq!(v["tensors"][0]["name"], "token_embd.weight");
    assert_eq!(v["tensors"][0]["shape"], serde_json::json!([49152, 576]));
    let table = common::llmtool()
        .args(["inspect-arch"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    for want in ["llama", "head_dim", "134515008", "Q4_1", "bits/weight"] {
        assert!(text.contains(want), "table lacks '{want}':\n{text}");
    }
}
