//! GPTQ, AWQ GEMM and compressed-tensors packed checkpoints read back: the
//! engine's logits on a packed copy of tiny-llama equal those of the same
//! model with the dequantized weights stored as plain f32, and malformed
//! packed layers are refused naming the file and the tensor.

use crate::common::{self, write_safetensors, Stored};

use llmtool::model::arch::{self, LayerPart, Role};
use llmtool::model::engine::{Engine, Logits};
use llmtool::quant::int4pack::{pack_awq, pack_compressed, pack_gptq, Data, IntWeights};
use llmtool::store::Model;

/// How to pack every Linear layer of tiny-llama.
#[derive(Clone, Copy)]
pub(crate) struct Case {
    /// "gptq", "gptq_v2", "awq", "compressed".
    format: &'static str,
    bits: u32,
    group: usize,
    sym: bool,
    act: bool,
    /// safetensors dtype of the scales.
    scale_dtype: &'static str,
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A scale value exactly representable in `dtype`.
fn scale_value(dtype: &str, x: f32) -> f32 {
    match dtype {
        "F16" => half::f16::from_f32(x).to_f32(),
        "BF16" => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

fn scale_bytes(dtype: &str, v: &[f32]) -> Vec<u8> {
    match dtype {
        "F16" => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        "BF16" => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The torch reference's dequantization in float32, written out
/// independently of the library: (q − z)·s.
fn dequant(q: u8, z: u8, s: f32) -> f32 {
    (f32::from(q) - f32::from(z)) * s
}

/// The tensors of a packed copy of tiny-llama (every Q/K/V/O/gate/up/down
/// packed per `case` from seeded random codes), of the same model with
/// those weights dequantized and stored as F32, and the packed copy's
/// `quantization_config`.
struct Built {
    packed: Vec<Stored>,
    plain: Vec<Stored>,
    qc: serde_json::Value,
}

fn build(case: Case) -> Built {
    let src = Model::open(common::fixture("models/tiny-llama").to_str().unwrap()).unwrap();
    let mut rng = xorshift(0x5eed ^ u64::from(case.bits) ^ case.group as u64);
    let (mut packed, mut plain): (Vec<Stored>, Vec<Stored>) = (Vec::new(), Vec::new());
    for t in src.tensors() {
        let linear = matches!(
            arch::role(&t.name),
            Role::Layer(
                _,
                LayerPart::Q
                    | LayerPart::K
                    | LayerPart::V
                    | LayerPart::O
                    | LayerPart::Gate
                    | LayerPart::Up
                    | LayerPart::Down
            )
        );
        if !linear {
            let s = (
                t.name.clone(),
                t.dtype.safetensors_name().unwrap(),
                t.shape.clone(),
                src.bytes(t).to_vec(),
            );
            packed.push(s.clone());
            plain.push(s);
            continue;
        }
        let module = t.name.strip_suffix(".weight").unwrap();
        let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
        let groups = cols / case.group;
        let levels = 1u64 << case.bits;
        let codes: Vec<u8> = (0..rows * cols).map(|_| (rng() % levels) as u8).collect();
        let zeros: Vec<u8> = (0..groups * rows)
            .map(|_| {
                if case.sym {
                    (levels / 2) as u8
                } else {
                    (1 + rng() % (levels - 1)) as u8
                }
            })
            .collect();
        let scales: Vec<f32> = (0..groups * rows)
            .map(|_| scale_value(case.scale_dtype, 0.004 + (rng() % 1000) as f32 * 1e-5))
            .collect();
        let mut g_idx: Vec<u32> = (0..cols).map(|i| (i / case.group) as u32).collect();
        if case.act {
            for i in (1..cols).rev() {
                g_idx.swap(i, (rng() % (i as u64 + 1)) as usize);
            }
        }
        let w = IntWeights {
            bits: case.bits,
            rows,
            cols,
            codes: &codes,
            scales: &scales,
            zeros: &zeros,
            g_idx: &g_idx,
        };
        let tensors = match case.format {
            "gptq" => pack_gptq(&w, false),
            "gptq_v2" => pack_gptq(&w, true),
            "awq" => pack_awq(&w),
            _ => pack_compressed(&w, case.sym),
        }
        .unwrap();
        for p in tensors {
            let (dtype, bytes) = match &p.data {
                Data::I32(v) => ("I32", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Data::I64(v) => ("I64", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Data::Scales(v) => (case.scale_dtype, scale_bytes(case.scale_dtype, v)),
            };
            packed.push((format!("{module}.{}", p.suffix), dtype, p.shape, bytes));
        }
        let weight: Vec<u8> = (0..rows * cols)
            .flat_map(|k| {
                let (o, i) = (k / cols, k % cols);
                let g = g_idx[i] as usize;
                dequant(codes[k], zeros[g * rows + o], scales[g * rows + o]).to_le_bytes()
            })
            .collect();
        plain.push((t.name.clone(), "F32", t.shape.clone(), weight));
    }
    let qc = match case.format {
        "gptq" | "gptq_v2" => serde_json::json!({
            "quant_method": "gptq", "bits": case.bits, "group_size": case.group,
            "desc_act": case.act, "sym": case.sym, "checkpoint_format": case.format,
        }),
        "awq" => serde_json::json!({
            "quant_method": "awq", "bits": case.bits, "group_size": case.group,
            "zero_point": true, "version": "gemm",
        }),
        _ => serde_json::json!({
            "quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": case.bits, "type": "int", "symmetric": case.sym,
                "strategy": "group", "group_size": case.group,
                "actorder": if case.act { "group" } else { "static" },
            }}},
            "ignore": ["lm_head"],
        }),
    };
    Built { packed, plain, qc }
}

/// A model directory: `tensors` and tiny-llama's config.json with
/// `quantization_config` set to `qc`, and tiny-llama's other files.
fn write_model(tensors: &[Stored], qc: Option<&serde_json::Value>) -> tempfile::TempDir {
    let src = common::fixture("models/tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), tensors);
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    if let Some(qc) = qc {
        c["quantization_config"] = qc.clone();
    }
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&c).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        src.join("generation_config.json"),
        dir.path().join("generation_config.json"),
    )
    .unwrap();
    dir
}

/// (packed copy of tiny-llama, the same model dequantized to F32); see
/// [`Built`].
pub(crate) fn packed_tiny_llama(case: Case) -> (tempfile::TempDir, tempfile::TempDir) {
    let b = build(case);
    (
        write_model(&b.packed, Some(&b.qc)),
        write_model(&b.plain, None),
    )
}

fn logits(dir: &std::path::Path, tokens: &[u32]) -> Vec<f32> {
    let m = Model::open(dir.to_str().unwrap()).unwrap();
    let e = Engine::new(&m).unwrap();
    let mut cache = e.new_cache();
    let mut all = e
        .forward(&mut [&mut cache], &[tokens], Logits::All)
        .unwrap()
        .remove(0);
    // And one decode step through the cache (the matrix-vector path).
    all.extend(
        e.forward(&mut [&mut cache], &[&[7]], Logits::Last)
            .unwrap()
            .remove(0),
    );
    all
}

fn check(case: Case) {
    let (packed, plain) = packed_tiny_llama(case);
    let tokens = [1, 17, 200, 3, 45, 99, 12, 250];
    let (a, b) = (
        logits(packed.path(), &tokens),
        logits(plain.path(), &tokens),
    );
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        d <= 1e-5,
        "{} {}-bit: max |Δlogit| {d} against the dequantized model",
        case.format,
        case.bits
    );
    assert!(a.iter().all(|x| x.is_finite()));
}

pub(crate) const GPTQ: Case = Case {
    format: "gptq",
    bits: 4,
    group: 64,
    sym: true,
    act: false,
    scale_dtype: "F16",
};

#[test]
fn gptq_v1_logits_equal_the_dequantized_model() {
    check(GPTQ);
    check(Case {
        sym: false,
        act: true,
        group: 128,
        ..GPTQ
    });
    check(Case { bits: 8, ..GPTQ });
}

#[test]
fn gptq_v2_logits_equal_the_dequantized_model() {
    check(Case {
        format: "gptq_v2",
        sym: false,
        ..GPTQ
    });
}

#[test]
fn awq_gemm_logits_equal_the_dequantized_model() {
    check(Case {
        format: "awq",
        sym: false,
        ..GPTQ
    });
}

#[test]
fn compressed_tensors_logits_equal_the_dequantized_model() {
    let ct = Case {
        format: "compressed",
        scale_dtype: "BF16",
        ..GPTQ
    };
    check(ct);
    check(Case {
        sym: false,
        act: true,
        ..ct
    });
    check(Case {
        bits: 8,
        sym: false,
        scale_dtype: "F32",
        ..ct
    });
}

/// `Engine::new`'s error on the packed tensors after `edit`, with
/// `quantization_config` `qc`.
fn engine_error(
    edit: impl FnOnce(&mut Vec<Stored>),
    qc: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut b = build(GPTQ);
    edit(&mut b.packed);
    qc(&mut b.qc);
    let dir = write_model(&b.packed, Some(&b.qc));
    let m = Model::open(dir.path().to_str().unwrap()).unwrap();
    let e = Engine::new(&m)
        .err()
        .expect("a malformed packed model must be refused");
    e.to_string()
}

fn tensor<'a>(t: &'a mut [Stored], name: &str) -> &'a mut Stored {
    t.iter_mut().find(|s| s.0 == name).unwrap()
}

const Q0: &str = "model.layers.0.self_attn.q_proj";

#[test]
fn malformed_packed_layers_are_refused_by_name() {
    // Scales of another shape than qweight's outputs.
    let e = engine_error(
        |t| {
            let s = tensor(t, &format!("{Q0}.scales"));
            s.2 = vec![4, 288];
            s.3 = vec![0; 4 * 288 * 2];
        },
        |_| {},
    );
    assert!(
        e.contains("model.safetensors: tensor 'model.layers.0.self_attn.q_proj.scales': scales is [4, 288], expected [4, 256]"),
        "{e}"
    );
    // A group index past the scales.
    let down = "model.layers.1.mlp.down_proj.g_idx";
    let e = engine_error(
        |t| tensor(t, down).3[4 * 10..4 * 11].copy_from_slice(&99i32.to_le_bytes()),
        |_| {},
    );
    assert!(
        e.contains(&format!(
            "tensor '{down}': g_idx[10] is 99, but the scales have 8 groups"
        )),
        "{e}"
    );
    // A side tensor missing.
    let e = engine_error(|t| t.retain(|s| s.0 != format!("{Q0}.qzeros")), |_| {});
    assert!(
        e.contains(&format!(
            "tensor '{Q0}.qweight': no '{Q0}.qzeros' tensor beside it"
        )),
        "{e}"
    );
    // A side tensor of the wrong dtype.
    let e = engine_error(|t| tensor(t, &format!("{Q0}.g_idx")).1 = "F32", |_| {});
    assert!(e.contains("g_idx': dtype F32 where I32 is stored"), "{e}");
}

/// An edit of `quantization_config`.
type EditConfig = dyn Fn(&mut serde_json::Value);

#[test]
fn unreadable_quantization_configs_are_refused_by_key() {
    let cases: [(&EditConfig, &str); 5] = [
        (
            &|q| q["checkpoint_format"] = "marlin".into(),
            "config.json: quantization_config.checkpoint_format is 'marlin'; llmtool reads GPTQ checkpoints in the 'gptq' (v1) and 'gptq_v2' formats",
        ),
        (
            &|q| q["bits"] = 3.into(),
            "config.json: quantization_config: 3-bit GPTQ v1 weights are not supported (4 and 8 bits are)",
        ),
        (
            &|q| *q = serde_json::json!({"quant_method": "awq", "bits": 4, "version": "gemv"}),
            "quantization_config.version is 'gemv'; llmtool reads AWQ checkpoints in the 'gemm' layout",
        ),
        (
            &|q| *q = serde_json::json!({"quant_method": "compressed-tensors", "format": "naive-quantized"}),
            "quantization_config.format is 'naive-quantized'; llmtool reads compressed-tensors checkpoints in the 'pack-quantized' format",
        ),
        (
            &|q| *q = serde_json::json!({"quant_method": "fp8"}),
            "tensor 'model.layers.0.self_attn.q_proj.qweight': a packed weight, but config.json has no quantization_config declaring gptq, awq, compressed-tensors or bitsandbytes packing",
        ),
    ];
    for (edit, want) in cases {
        let e = engine_error(|_| {}, edit);
        assert!(e.contains(want), "want '{want}' in: {e}");
    }
}

/// A NaN scale makes the logits NaN; the error names the scales tensor.
#[test]
fn a_nan_scale_is_named() {
    let mut b = build(GPTQ);
    let name = "model.layers.1.mlp.up_proj.scales";
    tensor(&mut b.packed, name).3[6..8].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let dir = write_model(&b.packed, Some(&b.qc));
    let m = Model::open(dir.path().to_str().unwrap()).unwrap();
    let e = Engine::new(&m).unwrap();
    let mut cache = e.new_cache();
    let err = e
        .forward(&mut [&mut cache], &[&[1, 2, 3]], Logits::Last)
        .expect_err("NaN logits must be an error")
        .to_string();
    assert!(
        err.contains(&format!("tensor '{name}' holds NaN at element 3")),
        "{err}"
    );
}

/// transformers (with compressed-tensors decompressing every layer) on a
/// pack-quantized micro-llama that compressed-tensors itself wrote
/// (`tests/oracle/pack_hf_check.py`, `fixtures/pack/micro-llama-ct`): our
/// engine's logits equal its float32 ones.
#[test]
fn compressed_tensors_checkpoint_logits_equal_transformers() {
    let dir = common::fixture("pack/micro-llama-ct");
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("logits.json")).unwrap()).unwrap();
    let ids: Vec<u32> = g["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<f32> = g["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let m = Model::open(dir.to_str().unwrap()).unwrap();
    let e = Engine::new(&m).unwrap();
    let mut cache = e.new_cache();
    let got = e
        .forward(&mut [&mut cache], &[&ids], Logits::All)
        .unwrap()
        .remove(0);
    let d = got
        .iter()
        .zip(&want)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert_eq!(got.len(), want.len());
    eprintln!("max |Δlogit| against transformers: {d:e}");
    assert!(d <= 1e-5, "max |Δlogit| {d} against transformers");
}
