//! bitsandbytes checkpoints read back (`model::packed`'s bitsandbytes path):
//! every weight dequantized bit for bit as bitsandbytes 0.50.2 does
//! (fixtures/bnb/dequant.json, tests/oracle/bnb_dequant_goldens.py), quant
//! states that lie refused by name, and `eval` / `generate` / `convert`
//! taking our own `quantize nf4` output.

use std::path::Path;

use llmtool::model::packed::{packed_weight, PackedFormat};
use llmtool::ops::quantize::bnb::{self, BnbFormat, BnbOptions};
use llmtool::store::{DType, Model};

use crate::common::{self, json_output, llmtool, refuses, s, with_tokenizer};

fn goldens() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::fixture("bnb/dequant.json")).unwrap()).unwrap()
}

/// `model_dir` quantized by our `quantize` (byte-identical to what
/// transformers + bitsandbytes save: `bnb_quantize`) into `out`.
fn quantized(model_dir: &str, format: BnbFormat, blocksize: usize, dq: bool, out: &Path) -> Model {
    let model = Model::open(s(&common::fixture(model_dir))).unwrap();
    let opts = BnbOptions {
        blocksize,
        double_quant: dq,
        torch_threads: 1,
        ..BnbOptions::new(out.to_path_buf())
    };
    bnb::quantize(&model, format, &opts, false).unwrap();
    Model::open(s(out)).unwrap()
}

/// Each golden weight of `model`, dequantized and stored in the golden's
/// dtype, has the golden's sha256.
fn check_weights(model: &Model, weights: &serde_json::Value, what: &str) {
    let weights = weights.as_object().unwrap();
    assert!(!weights.is_empty());
    for (name, g) in weights {
        let module = name.strip_suffix(".weight").unwrap();
        let p = packed_weight(model, module, PackedFormat::Bitsandbytes)
            .unwrap_or_else(|e| panic!("{what} {name}: {e}"));
        let shape = [p.rows() as u64, p.cols() as u64];
        assert_eq!(serde_json::json!(shape), g["shape"], "{what} {name}");
        let mut v = vec![0f32; p.rows() * p.cols()];
        p.decode_rows(0..p.rows(), &mut v);
        let dtype = match g["dtype"].as_str().unwrap() {
            "float32" => DType::F32,
            "float16" => DType::F16,
            "bfloat16" => DType::BF16,
            other => panic!("{other}"),
        };
        assert_eq!(p.exact_dtype(), dtype, "{what} {name}");
        let mut bytes = Vec::new();
        dtype.encode_f32s(&v, &mut bytes);
        assert_eq!(
            common::sha256_hex(&bytes),
            g["sha256"].as_str().unwrap(),
            "{what} {name}: first values {:?}, bitsandbytes' {}",
            &v[..4],
            g["first"]
        );
    }
}

/// Every case transformers saves (f32, f16 and bf16 models; NF4 and FP4
/// with and without double quantization, LLM.int8; partial last blocks).
#[test]
fn checkpoints_dequantize_as_bitsandbytes_does() {
    let g = goldens();
    for (key, case) in g["cases"].as_object().unwrap() {
        let tmp = tempfile::tempdir().unwrap();
        let (format, dq) = common::bnb_case_format(case["format"].as_str().unwrap());
        let model = quantized(
            case["model"].as_str().unwrap(),
            format,
            64,
            dq,
            &tmp.path().join("q"),
        );
        check_weights(&model, &case["weights"], key);
    }
}

/// Other block sizes (32 to 4096, with and without double quantization).
#[test]
fn other_block_sizes_dequantize_as_bitsandbytes_does() {
    let g = goldens();
    for case in g["functional"].as_array().unwrap() {
        let tmp = tempfile::tempdir().unwrap();
        let format = match case["quant_type"].as_str().unwrap() {
            "nf4" => BnbFormat::Nf4,
            _ => BnbFormat::Fp4,
        };
        let bs = case["blocksize"].as_u64().unwrap() as usize;
        let model = quantized(
            case["model"].as_str().unwrap(),
            format,
            bs,
            case["double_quant"].as_bool().unwrap(),
            &tmp.path().join("q"),
        );
        check_weights(&model, &case["weights"], &format!("blocksize {bs}"));
    }
}

/// A copy of `src` (a 4-bit checkpoint) with `edit` applied to each
/// tensor's bytes (by name), as `dir`.
fn edited(src: &Path, dir: &Path, edit: impl Fn(&str, &mut Vec<u8>)) -> Model {
    let m = Model::open(s(src)).unwrap();
    let tensors: Vec<common::Stored> = m
        .tensors()
        .iter()
        .map(|t| {
            let mut b = m.bytes(t).to_vec();
            edit(&t.name, &mut b);
            let shape = if t.name.contains(".quant_state.") {
                vec![b.len() as u64]
            } else {
                t.shape.clone()
            };
            let dtype = match t.dtype {
                DType::U8 => "U8",
                DType::I8 => "I8",
                DType::F32 => "F32",
                other => panic!("{other}"),
            };
            (t.name.clone(), dtype, shape, b)
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    common::write_safetensors(&dir.join("model.safetensors"), &tensors);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    Model::open(s(dir)).unwrap()
}

/// Quant states and scales that lie: a clear error naming the tensor, never
/// a panic.
#[test]
fn lying_quant_states_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    quantized("models/tiny-llama", BnbFormat::Nf4, 64, true, &q);
    let i8 = tmp.path().join("i8");
    quantized("models/tiny-llama", BnbFormat::Int8, 64, false, &i8);
    let module = "model.layers.0.mlp.up_proj";
    let state = format!("{module}.weight.quant_state.bitsandbytes__nf4");
    let json_edit = |key: &'static str, value: serde_json::Value| {
        let state = state.clone();
        move |name: &str, b: &mut Vec<u8>| {
            if name == state {
                let mut j: serde_json::Value = serde_json::from_slice(b).unwrap();
                j[key] = value.clone();
                *b = serde_json::to_vec(&j).unwrap();
            }
        }
    };
    type Edit = Box<dyn Fn(&str, &mut Vec<u8>)>;
    let cases: Vec<(&str, &Path, Edit, String, &str)> = vec![
        (
            "shape",
            &q,
            Box::new(json_edit("shape", serde_json::json!([512, 257]))),
            state.clone(),
            "holds 131584 elements",
        ),
        (
            "quant-type",
            &q,
            Box::new(json_edit("quant_type", serde_json::json!("nf3"))),
            state.clone(),
            "quant_type 'nf3'",
        ),
        (
            "blocksize",
            &q,
            Box::new(json_edit("blocksize", serde_json::json!(48))),
            state.clone(),
            "blocksize 48",
        ),
        (
            "dtype",
            &q,
            Box::new(json_edit("dtype", serde_json::json!("int8"))),
            state.clone(),
            "dtype 'int8'",
        ),
        (
            "nan-nested-absmax",
            &q,
            Box::new(move |name: &str, b: &mut Vec<u8>| {
                if name == format!("{module}.weight.nested_absmax") {
                    b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                }
            }),
            format!("{module}.weight.nested_absmax"),
            "nested_absmax[0] is NaN",
        ),
        (
            "nan-scb",
            &i8,
            Box::new(move |name: &str, b: &mut Vec<u8>| {
                if name == format!("{module}.SCB") {
                    b[8..12].copy_from_slice(&f32::INFINITY.to_le_bytes());
                }
            }),
            format!("{module}.SCB"),
            "SCB[2] is inf",
        ),
    ];
    for (what, src, edit, tensor, want) in cases {
        let m = edited(src, &tmp.path().join(what), edit);
        let f = if src == i8.as_path() {
            PackedFormat::Bitsandbytes
        } else {
            llmtool::model::packed::packed_format(&m).unwrap().unwrap()
        };
        let err = match packed_weight(&m, module, f) {
            Ok(_) => panic!("{what}: read"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("'{tensor}'")) && err.contains(want),
            "{what}: {err}"
        );
    }
    // From the command line: exit 1, the message, no output.
    let bad = tmp.path().join("blocksize");
    let out = tmp.path().join("deq");
    refuses(
        &["convert", s(&bad), "--out", s(&out)],
        &out,
        "blocksize 48",
    );
}

fn ppl(model: &Path, text: &Path) -> f64 {
    let v = json_output(
        llmtool()
            .args(["eval", "ppl", s(model), "--ctx", "16", "--json", "--text"])
            .arg(text),
    );
    v["ppl"].as_f64().unwrap()
}

/// `quantize nf4` → `eval ppl` on the checkpoint equals `eval ppl` on its
/// `convert` output (the same weights, written out), and `eval kld`
/// between them is 0; `generate` runs. (`quantize q4_k_m` of it:
/// `defects::pre_quantized_inputs_point_at_the_16_bit_model`.)
#[test]
fn our_nf4_output_evaluates_like_its_dequantized_model() {
    let tmp = tempfile::tempdir().unwrap();
    let m = with_tokenizer(tmp.path(), None);
    let q = tmp.path().join("nf4");
    common::run_ok(llmtool().args(["quantize", "nf4", s(&m), "--out", s(&q)]));
    let deq = tmp.path().join("deq");
    let r = json_output(llmtool().args(["convert", s(&q), "--out", s(&deq), "--json"]));
    assert_eq!(r["dtype"], "F32", "{r}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deq.join("config.json")).unwrap()).unwrap();
    assert!(config.get("quantization_config").is_none());
    let card = std::fs::read_to_string(deq.join("README.md")).unwrap();
    assert!(card.contains("bitsandbytes"), "{card}");

    let text = tmp.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog and then it runs far away ".repeat(8),
    )
    .unwrap();
    let (a, b, base) = (ppl(&q, &text), ppl(&deq, &text), ppl(&m, &text));
    assert!(a.is_finite() && (a - b).abs() <= 1e-4 * b, "{a} vs {b}");
    assert!(a != base, "the quantized model evaluates as the original");
    let v = json_output(
        llmtool()
            .args([
                "eval",
                "kld",
                s(&deq),
                s(&q),
                "--ctx",
                "16",
                "--json",
                "--text",
            ])
            .arg(&text),
    );
    assert_eq!(v["kld_mean"].as_f64().unwrap(), 0.0, "{v}");

    let g = json_output(llmtool().args([
        "generate",
        s(&q),
        "--prompt",
        "the quick",
        "--max-tokens",
        "4",
        "--json",
    ]));
    assert!(!g["tokens"].as_array().unwrap().is_empty(), "{g}");
}
