//! `quantize nf4|fp4|int8` against bitsandbytes itself (fixtures/bnb, made
//! by tests/oracle/bnb_goldens.py with bitsandbytes 0.50.2 on CPU): every
//! tensor transformers + bitsandbytes save for a model quantized on the fly
//! must be byte-identical in our checkpoint, with the same names, dtypes,
//! shapes and `quantization_config`; bitsandbytes.functional at other block
//! sizes likewise; and the double-quant offset must be torch's CPU mean.
//! fixtures/bnb/transformers-check.json (tests/oracle/check_bnb_load.py)
//! records that transformers loaded our output pre-quantized with logits
//! identical to its own on-the-fly quantization; each case here requires
//! our files to still have the sha256 that verdict was given for.

use crate::common;

use std::path::Path;

use llmtool::ops::quantize::bnb::{self, BnbFormat, BnbOptions};
use llmtool::quant::bnb as kernels;
use llmtool::store::{DType, Model};

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::fixture("bnb/expected.json")).unwrap()).unwrap()
}

fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::U8 => "uint8",
        DType::I8 => "int8",
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        other => panic!("unexpected dtype {other}"),
    }
}

/// Quantizes a fixture model into a temporary directory.
fn run(model_dir: &str, format: BnbFormat, blocksize: usize, dq: bool, out: &Path) -> Model {
    let model = Model::open(common::fixture(model_dir).to_str().unwrap()).unwrap();
    let opts = BnbOptions {
        blocksize,
        double_quant: dq,
        torch_threads: 1,
        ..BnbOptions::new(out.to_path_buf())
    };
    bnb::quantize(&model, format, &opts, false).unwrap_or_else(|e| panic!("{model_dir}: {e}"));
    Model::open(out.to_str().unwrap()).unwrap()
}

fn check_case(key: &str) {
    let exp = expected();
    let case = &exp["cases"][key];
    let (format, dq) = common::bnb_case_format(case["format"].as_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let got = run(case["model"].as_str().unwrap(), format, 64, dq, &out);
    let want = case["tensors"].as_object().unwrap();
    let mut names: Vec<&str> = got.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut want_names: Vec<&str> = want.keys().map(|k| k.as_str()).collect();
    names.sort();
    want_names.sort();
    assert_eq!(names, want_names, "{key}: tensor names");
    for t in got.tensors() {
        let w = &want[&t.name];
        assert_eq!(torch_dtype(t.dtype), w["dtype"], "{key} {} dtype", t.name);
        assert_eq!(
            serde_json::to_value(&t.shape).unwrap(),
            w["shape"],
            "{key} {} shape",
            t.name
        );
        assert_eq!(
            common::sha256_hex(got.bytes(t)),
            w["sha256"].as_str().unwrap(),
            "{key}: {} differs from bitsandbytes' bytes",
            t.name
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let (ours, theirs) = (&config["quantization_config"], &case["quantization_config"]);
    assert_eq!(ours, theirs, "{key}: quantization_config");
    let order = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(order(ours), order(theirs), "{key}: key order");

    let check: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixture("bnb/transformers-check.json")).unwrap(),
    )
    .unwrap();
    let verdict = &check["cases"][key];
    assert_eq!(verdict["ok"], true, "{key}: transformers' verdict");
    for file in ["model.safetensors", "config.json"] {
        assert_eq!(
            common::sha256_hex(&std::fs::read(out.join(file)).unwrap()),
            verdict[file].as_str().unwrap(),
            "{key}: {file} is not the one transformers checked; rerun tests/oracle/check_bnb_load.py"
        );
    }
}

#[test]
fn tiny_llama_f32_nf4() {
    check_case("tiny-llama/nf4");
}
#[test]
fn tiny_llama_f32_fp4() {
    check_case("tiny-llama/fp4");
}
#[test]
fn tiny_llama_f32_int8() {
    check_case("tiny-llama/int8");
}
#[test]
fn tiny_qwen2_bf16_tied_biases_nf4() {
    check_case("tiny-qwen2/nf4");
}
#[test]
fn tiny_qwen2_bf16_int8() {
    check_case("tiny-qwen2/int8");
}
#[test]
fn tiny_llama_hd_f16_nf4() {
    check_case("tiny-llama-hd/nf4");
}
#[test]
fn tiny_llama_hd_f16_fp4_without_double_quant() {
    check_case("tiny-llama-hd/fp4-nodq");
}
#[test]
fn tiny_llama_hd_f16_int8() {
    check_case("tiny-llama-hd/int8");
}
#[test]
fn partial_last_blocks_bf16_nf4() {
    check_case("tiny-odd/nf4");
}
#[test]
fn partial_last_blocks_bf16_fp4() {
    check_case("tiny-odd/fp4");
}
#[test]
fn partial_last_blocks_bf16_int8() {
    check_case("tiny-odd/int8");
}

#[test]
fn other_block_sizes_match_bitsandbytes_functional() {
    for f in expected()["functional"].as_array().unwrap() {
        let kind = f["quant_type"].as_str().unwrap();
        let bs = f["blocksize"].as_u64().unwrap() as usize;
        let dq = f["double_quant"].as_bool().unwrap();
        let format = if kind == "nf4" {
            BnbFormat::Nf4
        } else {
            BnbFormat::Fp4
        };
        let tmp = tempfile::tempdir().unwrap();
        let got = run(
            f["model"].as_str().unwrap(),
            format,
            bs,
            dq,
            &tmp.path().join("q"),
        );
        let want = f["sha256"].as_object().unwrap();
        for (name, sum) in want {
            let t = got
                .tensor(name)
                .unwrap_or_else(|| panic!("{kind}/{bs}: no tensor {name}"));
            assert_eq!(
                common::sha256_hex(got.bytes(t)),
                sum.as_str().unwrap(),
                "{kind} blocksize {bs} dq {dq}: {name}"
            );
        }
    }
}

/// The oracle's `vector(n)`: splitmix64 of 0..n, top 24 bits scaled to [0, 4).
fn vector(n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u32 << 24) as f32) * 4.0
        })
        .collect()
}

#[test]
fn double_quant_offset_is_torch_cpu_mean() {
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::fixture("bnb/torch-mean.json")).unwrap())
            .unwrap();
    // torch 2.9 sums with 8-float vectors under both dispatches.
    for (cap, threads) in [
        ("avx512", 1),
        ("avx2", 1),
        ("avx512-threads2", 2),
        ("avx512-threads3", 3),
    ] {
        let lanes = kernels::TORCH_LANES;
        for (n, bits) in exp[cap].as_object().unwrap() {
            let n: usize = n.parse().unwrap();
            let got = kernels::torch_mean(&vector(n), lanes, threads);
            assert_eq!(
                got.to_bits() as u64,
                bits.as_u64().unwrap(),
                "{cap} n={n}: {got} vs {}",
                f32::from_bits(bits.as_u64().unwrap() as u32)
            );
        }
    }
}

#[test]
fn skip_patterns_follow_transformers_matching() {
    let pats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let p = pats(&["lm_head", "down_proj", "model.layers.1"]);
    assert!(bnb::is_skipped("lm_head", &p));
    assert!(bnb::is_skipped("model.layers.0.mlp.down_proj", &p));
    assert!(bnb::is_skipped("model.layers.1.self_attn.q_proj", &p));
    assert!(!bnb::is_skipped("model.layers.10.self_attn.q_proj", &p));
    assert!(!bnb::is_skipped("model.layers.0.mlp.up_proj", &p));
}

#[test]
fn nan_weight_is_refused_by_name_and_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = "model.layers.1.mlp.up_proj.weight";
    let m = common::edited_tiny_llama(&src, victim, |i| {
        if i == 777 {
            f32::NAN
        } else {
            0.01 * i as f32
        }
    });
    let out = tmp.path().join("q");
    for format in [BnbFormat::Nf4, BnbFormat::Int8] {
        let err = bnb::quantize(&m, format, &BnbOptions::new(out.clone()), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(victim) && err.contains("element 777"), "{err}");
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["src"], "temporary directory left behind");
    }
}

/// bitsandbytes 0.48's CPU kernel divided 0 by 0 on a nested block of
/// equal maxima (we refused); 0.50 stores absmax 0 and codes 0, so the
/// weight dequantizes to the offset, its constant.
#[test]
fn constant_weight_is_double_quantized_like_bitsandbytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = "model.layers.0.self_attn.k_proj.weight";
    let m = common::edited_tiny_llama(&src, victim, |_| 0.5);
    let out = tmp.path().join("q");
    bnb::quantize(&m, BnbFormat::Nf4, &BnbOptions::new(out.clone()), false).unwrap();
    let got = Model::open(out.to_str().unwrap()).unwrap();
    let bytes = |suffix: &str| got.bytes(got.tensor(&format!("{victim}{suffix}")).unwrap());
    assert!(bytes(".absmax").iter().all(|&c| c == 0));
    assert!(bytes(".nested_absmax").iter().all(|&b| b == 0));
    let state: serde_json::Value =
        serde_json::from_slice(bytes(".quant_state.bitsandbytes__nf4")).unwrap();
    assert_eq!(state["nested_offset"], 0.5);
}

#[test]
fn int8_refuses_values_outside_float16() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = "model.layers.0.mlp.gate_proj.weight";
    let m = common::edited_tiny_llama(&src, victim, |i| if i == 5 { 1e6 } else { 0.1 });
    let err = bnb::quantize(
        &m,
        BnbFormat::Int8,
        &BnbOptions::new(tmp.path().join("q")),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(victim) && err.contains("float16"), "{err}");
}
