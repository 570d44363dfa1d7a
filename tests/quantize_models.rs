//! `quant::ftype::tensor_types` + `quant::quantize_row` against real
//! `llama-quantize` runs (fixtures/quantize/models/*.json, made by
//! tests/oracle/make_ftype_goldens.py): for every model and file type, the
//! output order, every tensor's type, and the sha256 of every tensor's bytes.

use crate::common;

use llmtool::quant::ftype::{llama_order, tensor_types, FileType, ModelFacts, TensorDesc};
use llmtool::quant::{self, GgmlType};
use llmtool::store::Model;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Loads tensor number k: (f32 values, raw source bytes).
type Loader = Box<dyn Fn(usize) -> (Vec<f32>, Vec<u8>) + Sync>;

/// A source model: tensor descriptions plus a way to get each tensor's
/// f32 values and raw bytes.
struct Source {
    facts: ModelFacts,
    names: Vec<String>,
    ne: Vec<Vec<u64>>,
    types: Vec<GgmlType>,
    /// Per tensor: (f32 values, raw source bytes), computed on demand.
    load: Loader,
}

fn golden(name: &str) -> serde_json::Value {
    let path = common::fixture(&format!("quantize/models/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// splitmix64, as in the oracle script.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The oracle's `values(k, n)`: f16 bits of tensor number `k`.
fn values(k: u64, n: u64) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let s = splitmix64((k << 32) | i);
            if (s >> 20) & 63 == 0 {
                return 0;
            }
            let sign = ((s >> 63) << 15) as u16;
            let exp = ((9 + (s >> 32) % 6) as u16) << 10;
            sign | exp | (s & 0x3ff) as u16
        })
        .collect()
}

fn synthetic(g: &serde_json::Value) -> Source {
    let tensors = g["tensors"].as_array().unwrap();
    let names: Vec<String> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let ne: Vec<Vec<u64>> = tensors
        .iter()
        .map(|t| {
            t["ne"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect()
        })
        .collect();
    let types: Vec<GgmlType> = tensors
        .iter()
        .map(|t| GgmlType::from_name(t["type"].as_str().unwrap()).unwrap())
        .collect();
    let u = |k: &str| g[k].as_u64().unwrap() as u32;
    let facts = ModelFacts {
        arch: g["arch"].as_str().unwrap().to_string(),
        n_layer: u("n_layer"),
        n_expert: 0,
        n_head: u("n_head"),
        n_head_kv: u("n_head_kv"),
    };
    let (ne2, types2) = (ne.clone(), types.clone());
    let load = move |k: usize| {
        let n: u64 = ne2[k].iter().product();
        let bits = values(k as u64, n);
        let f: Vec<f32> = bits.iter().map(|&h| quant::f16_bits_to_f32(h)).collect();
        let raw = match types2[k] {
            GgmlType::F16 => bits.iter().flat_map(|h| h.to_le_bytes()).collect(),
            _ => f.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        (f, raw)
    };
    Source {
        facts,
        names,
        ne,
        types,
        load: Box::new(load),
    }
}

fn gguf_source(model: Model) -> Source {
    let facts = ModelFacts::from_gguf(model.gguf.as_ref().unwrap()).unwrap();
    let infos = model.tensors().to_vec();
    let names = infos.iter().map(|t| t.name.clone()).collect();
    let ne = infos
        .iter()
        .map(|t| t.shape.iter().rev().copied().collect())
        .collect();
    let types = infos.iter().map(|t| t.dtype.to_ggml().unwrap()).collect();
    let load = move |k: usize| {
        let t = &infos[k];
        (model.read_f32(t).unwrap(), model.bytes(t).to_vec())
    };
    Source {
        facts,
        names,
        ne,
        types,
        load: Box::new(load),
    }
}

/// Checks every file type of golden `g` against `src`; `digest_filter`
/// picks the tensors whose bytes are recomputed (all of them, or a sample
/// for the large real model).
fn check(src: &Source, g: &serde_json::Value, digest_filter: &(dyn Fn(&str) -> bool + Sync)) {
    let descs: Vec<TensorDesc> = (0..src.names.len())
        .map(|k| TensorDesc {
            name: &src.names[k],
            ne: &src.ne[k],
            ty: src.types[k],
        })
        .collect();
    let mut order: Vec<usize> = (0..descs.len()).collect();
    order.sort_by(|&a, &b| llama_order(&src.names[a], &src.names[b]));
    let want_order: Vec<&str> = g["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let got_order: Vec<&str> = order.iter().map(|&k| src.names[k].as_str()).collect();
    assert_eq!(got_order, want_order, "tensor order");

    let ftypes = g["ftypes"].as_object().unwrap();
    assert_eq!(ftypes.len(), 16);
    let mut plans = Vec::new();
    for (ft_name, want) in ftypes {
        let ft = FileType::from_name(ft_name).unwrap();
        assert_eq!(
            u64::from(ft.id()),
            want["file_type"].as_u64().unwrap(),
            "{ft_name}"
        );
        let plan = tensor_types(ft, &src.facts, &descs).unwrap();
        for (pos, &k) in order.iter().enumerate() {
            assert_eq!(
                plan[k].ty.name(),
                want["types"][pos].as_str().unwrap(),
                "{ft_name}: type of {}",
                src.names[k]
            );
        }
        plans.push((ft_name.clone(), plan, want));
    }

    // Every source tensor once, quantized to each file type's choice.
    let bad: Vec<String> = order
        .par_iter()
        .enumerate()
        .filter(|&(_, &k)| digest_filter(&src.names[k]))
        .flat_map_iter(|(pos, &k)| {
            let (f, raw) = (src.load)(k);
            let mut bad = Vec::new();
            for (ft_name, plan, want) in &plans {
                let ty = plan[k].ty;
                let bytes = if ty == src.types[k] {
                    raw.clone()
                } else {
                    let mut out = vec![0u8; ty.bytes_for(f.len() as u64).unwrap() as usize];
                    quant::quantize_row(ty, &f, &mut out).unwrap();
                    out
                };
                let hex: String = Sha256::digest(&bytes)[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if hex != want["sha256_16"][pos].as_str().unwrap() {
                    bad.push(format!("{ft_name}: {} as {ty}", src.names[k]));
                }
            }
            bad
        })
        .collect();
    assert!(bad.is_empty(), "{} tensors differ: {bad:#?}", bad.len());
}

#[test]
fn synthetic_llama_256() {
    let g = golden("syn-llama-256");
    check(&synthetic(&g), &g, &|_| true);
}

#[test]
fn synthetic_qwen2_576_fallbacks_and_tied() {
    let g = golden("syn-qwen2-576");
    check(&synthetic(&g), &g, &|_| true);
}

/// Whether a SmolLM2 tensor's bytes are recomputed by the default test:
/// everything outside the blocks plus the first two and last blocks (the
/// types of all tensors are always checked).
fn smollm2_sample(name: &str) -> bool {
    !name.starts_with("blk.")
        || ["blk.0.", "blk.1.", "blk.29."]
            .iter()
            .any(|p| name.starts_with(p))
}

#[test]
fn smollm2_real_model() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let g = golden("smollm2");
    let model = Model::open(path.to_str().unwrap()).unwrap();
    check(&gguf_source(model), &g, &smollm2_sample);
}

/// Every tensor of SmolLM2 in every file type (about a minute on two cores):
/// `cargo test --test quantize_models -- --ignored`.
#[test]
#[ignore]
fn smollm2_real_model_every_tensor() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let g = golden("smollm2");
    let model = Model::open(path.to_str().unwrap()).unwrap();
    check(&gguf_source(model), &g, &|_| true);
}
