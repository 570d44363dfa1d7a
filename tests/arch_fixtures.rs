//! `arch::detect` on the transformers-made fixtures, against the values the
//! oracle computed with torch (fixtures/models/*/expected.json), plus lying
//! configs and the transformers-verified output of our sharded writer.

use crate::common::{self, write_safetensors, Stored};

use llmtool::model::arch::{self, Family};
use llmtool::ops::vram;
use llmtool::store::{safetensors, Model};

fn expected(name: &str) -> serde_json::Value {
    let p = common::fixture(&format!("models/{name}/expected.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn check_fixture(name: &str) -> arch::Arch {
    let dir = common::fixture(&format!("models/{name}"));
    let m = Model::open(dir.to_str().unwrap()).unwrap();
    let a = arch::detect(&m);
    let e = expected(name);
    let fam = match a.family {
        Family::Llama => "llama",
        Family::Mistral => "mistral",
        Family::Mixtral => "mixtral",
        Family::Qwen2 => "qwen2",
        Family::Unknown => "unknown",
    };
    assert_eq!(fam, e["family"], "{name} family");
    let u = |k: &str| e[k].as_u64();
    assert_eq!(a.layers, u("layers"), "{name} layers");
    assert_eq!(a.hidden_size, u("hidden_size"), "{name} hidden");
    assert_eq!(a.heads, u("heads"), "{name} heads");
    assert_eq!(a.kv_heads, u("kv_heads"), "{name} kv_heads");
    assert_eq!(a.head_dim, u("head_dim"), "{name} head_dim");
    assert_eq!(
        a.gqa_group,
        Some(u("heads").unwrap() / u("kv_heads").unwrap()),
        "{name} gqa"
    );
    assert_eq!(a.ffn_size, u("ffn_size"), "{name} ffn");
    assert_eq!(a.vocab, u("vocab"), "{name} vocab");
    assert_eq!(
        Some(a.tied_embeddings),
        e["tied_embeddings"].as_bool(),
        "{name} tied"
    );
    assert_eq!(
        Some(a.attention_bias),
        e["attention_bias"].as_bool(),
        "{name} bias"
    );
    assert_eq!(a.rope.theta, e["rope_theta"].as_f64(), "{name} rope");
    assert_eq!(a.norm_eps, e["rms_norm_eps"].as_f64(), "{name} eps");
    assert_eq!(a.context_length, u("context_length"), "{name} ctx");
    let p = &e["params"];
    assert_eq!(
        a.params.embeddings,
        p["embeddings"].as_u64().unwrap(),
        "{name} embeddings"
    );
    assert_eq!(
        a.params.attention,
        p["attention"].as_u64().unwrap(),
        "{name} attention"
    );
    assert_eq!(a.params.mlp, p["mlp"].as_u64().unwrap(), "{name} mlp");
    assert_eq!(a.params.norms, p["norms"].as_u64().unwrap(), "{name} norms");
    assert_eq!(a.params.total, p["total"].as_u64().unwrap(), "{name} total");
    assert_eq!(a.params.other, 0, "{name} other");
    let tensors = e["tensors"].as_object().unwrap();
    assert_eq!(m.tensors().len(), tensors.len(), "{name} tensor count");
    for (tn, te) in tensors {
        let t = m.get(tn).unwrap();
        assert_eq!(
            t.dtype.to_string(),
            te["dtype"].as_str().unwrap(),
            "{name} {tn} dtype"
        );
        let shape: Vec<u64> = te["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{name} {tn} shape");
    }
    let bpw = a.tensor_bytes as f64 * 8.0 / a.params.total as f64;
    assert_eq!(a.bits_per_weight, bpw);
    assert!(
        a.warnings.is_empty(),
        "{name}: unexpected warnings {:?}",
        a.warnings
    );
    a
}

#[test]
fn tiny_llama() {
    let a = check_fixture("tiny-llama");
    assert_eq!(a.dtypes.len(), 1);
    assert_eq!(a.dtypes[0].dtype.to_string(), "F32");
    assert_eq!(a.bits_per_weight, 32.0);
}

#[test]
fn tiny_qwen2_with_biases_and_tied_embeddings() {
    let a = check_fixture("tiny-qwen2");
    assert!(a.tied_embeddings && a.attention_bias);
    assert_eq!(a.bits_per_weight, 16.0);
}

#[test]
fn custom_head_dim_from_projection_shapes() {
    let a = check_fixture("tiny-llama-hd");
    // q_proj [384, 256] with 4 heads: head_dim 96, not hidden/heads = 64.
    assert_eq!(
        (a.head_dim, a.kv_heads, a.gqa_group),
        (Some(96), Some(1), Some(4))
    );
}

#[test]
fn sharded_directory() {
    let dir = common::fixture("models/tiny-qwen2-sharded");
    let m = Model::open(dir.to_str().unwrap()).unwrap();
    assert!(m.files.len() >= 3, "fixture is sharded");
    check_fixture("tiny-qwen2-sharded");
}

/// Copies a fixture to a temp dir with an edited config.json.
fn with_config(
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> (tempfile::TempDir, arch::Arch) {
    let src = common::fixture(&format!("models/{name}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let a = arch::detect(&Model::open(dir.path().to_str().unwrap()).unwrap());
    (dir, a)
}

#[test]
fn lying_configs_become_warnings_with_both_values() {
    // No head_dim in config: the implied hidden/heads = 64 is wrong.
    let (_d, a) = with_config("tiny-llama-hd", |c| {
        c.as_object_mut().unwrap().remove("head_dim");
    });
    assert_eq!(a.head_dim, Some(96));
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("implying hidden_size/heads = 64") && w.contains("using 96")),
        "{:?}",
        a.warnings
    );

    let (_d, a) = with_config("tiny-llama", |c| {
        c["num_key_value_heads"] = 4.into();
        c["hidden_size"] = 512.into();
        c["num_hidden_layers"] = 3.into();
        c["intermediate_size"] = 1000.into();
        c["tie_word_embeddings"] = true.into();
    });
    assert_eq!(
        (a.kv_heads, a.hidden_size, a.layers, a.ffn_size),
        (Some(2), Some(256), Some(2), Some(512))
    );
    for want in [
        "num_key_value_heads = 4, but the tensors give 2",
        "hidden_size = 512, but the tensors give 256",
        "layers = 3, but the tensors give 2",
        "intermediate_size = 1000, but the tensors give 512",
        "tie_word_embeddings = true, but the weights include a separate lm_head",
    ] {
        assert!(
            a.warnings.iter().any(|w| w.contains(want)),
            "missing '{want}' in {:?}",
            a.warnings
        );
    }

    let (_d, a) = with_config("tiny-llama", |c| c["model_type"] = "gpt_neox".into());
    assert_eq!(a.family, Family::Unknown);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("unsupported family 'gpt_neox'")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn weights_without_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::fixture("models/tiny-llama/model.safetensors"),
        dir.path().join("w.safetensors"),
    )
    .unwrap();
    let a = arch::detect(&Model::open(dir.path().join("w.safetensors").to_str().unwrap()).unwrap());
    assert_eq!(a.hparams_source, "none");
    assert_eq!(
        (a.layers, a.hidden_size, a.vocab, a.ffn_size),
        (Some(2), Some(256), Some(256), Some(512))
    );
    assert_eq!(a.head_dim, None);
    assert!(a.warnings[0].contains("no config.json"));
}

/// Must match `RESHARD_MAX_SHARD` in examples/reshard_golden.rs.
const RESHARD_MAX_SHARD: u64 = 150_000;

#[test]
fn sharded_writer_reproduces_the_transformers_verified_golden() {
    let golden = common::fixture("models/tiny-qwen2-llmtool-sharded");
    let check: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden.join("transformers-check.json")).unwrap())
            .unwrap();
    assert_eq!(
        check["ok"], true,
        "transformers accepted the golden: {check}"
    );
    let m = Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let files =
        safetensors::write_model(&m, out.path(), RESHARD_MAX_SHARD, Default::default()).unwrap();
    assert!(files.len() >= 3, "several shards and an index");
    for f in &files {
        let name = f.file_name().unwrap();
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(golden.join(name)).unwrap(),
            "{name:?} differs from the golden transformers loaded; rerun `just fixtures`"
        );
    }
}

/// Packs one Linear weight (module name, out, in) into its stored tensors.
type Pack = dyn Fn(&str, u64, u64) -> Vec<Stored>;

/// tiny-qwen2 with every Linear weight (not the tied embedding) replaced by
/// `pack(module, [out, in])`'s tensors, and `quantization_config` added.
fn packed_tiny_qwen2(
    quantization_config: serde_json::Value,
    pack: impl Fn(&str, u64, u64) -> Vec<Stored>,
) -> tempfile::TempDir {
    let src = Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap();
    let mut tensors = Vec::new();
    for t in src.tensors() {
        match (arch::role(&t.name), t.name.strip_suffix(".weight")) {
            (arch::Role::Layer(_, p), Some(module))
                if !matches!(p, arch::LayerPart::AttnNorm | arch::LayerPart::FfnNorm) =>
            {
                tensors.extend(pack(module, t.shape[0], t.shape[1]))
            }
            _ => tensors.push((t.name.clone(), "BF16", t.shape.clone(), Vec::new())),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixture("models/tiny-qwen2/config.json")).unwrap(),
    )
    .unwrap();
    config["quantization_config"] = quantization_config;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    dir
}

/// The unquantized tiny-qwen2's architecture, which a packed copy must show.
fn assert_same_arch_as_tiny_qwen2(a: &arch::Arch, what: &str) {
    let want =
        arch::detect(&Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap());
    assert_eq!(
        (a.layers, a.hidden_size, a.heads, a.kv_heads, a.head_dim),
        (
            want.layers,
            want.hidden_size,
            want.heads,
            want.kv_heads,
            want.head_dim
        ),
        "{what}"
    );
    assert_eq!((a.ffn_size, a.vocab), (want.ffn_size, want.vocab), "{what}");
    assert_eq!(
        a.params, want.params,
        "{what}: parameters in logical elements"
    );
    assert!(a.warnings.is_empty(), "{what}: {:?}", a.warnings);
}

const G: u64 = 64;

/// AWQ (GEMM): qweight I32 [in, out/8], qzeros [in/G, out/8], scales [in/G, out].
fn awq(module: &str, out: u64, inp: u64) -> Vec<Stored> {
    vec![
        (
            format!("{module}.qweight"),
            "I32",
            vec![inp, out / 8],
            vec![],
        ),
        (
            format!("{module}.qzeros"),
            "I32",
            vec![inp / G, out / 8],
            vec![],
        ),
        (
            format!("{module}.scales"),
            "F16",
            vec![inp / G, out],
            vec![],
        ),
    ]
}

/// GPTQ: qweight I32 [in·bits/32, out], qzeros [in/G, out·bits/32],
/// scales [in/G, out], g_idx [in].
fn gptq(bits: u64) -> impl Fn(&str, u64, u64) -> Vec<Stored> {
    move |module, out, inp| {
        vec![
            (
                format!("{module}.qweight"),
                "I32",
                vec![inp * bits / 32, out],
                vec![],
            ),
            (
                format!("{module}.qzeros"),
                "I32",
                vec![inp / G, out * bits / 32],
                vec![],
            ),
            (
                format!("{module}.scales"),
                "F16",
                vec![inp / G, out],
                vec![],
            ),
            (format!("{module}.g_idx"), "I32", vec![inp], vec![]),
        ]
    }
}

/// compressed-tensors pack-quantized, 4-bit symmetric: weight_packed I32
/// [out, in/8], weight_scale [out, in/G], weight_shape I64 [2] = [out, in].
fn compressed(module: &str, out: u64, inp: u64) -> Vec<Stored> {
    let shape = [out as i64, inp as i64]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    vec![
        (
            format!("{module}.weight_packed"),
            "I32",
            vec![out, inp / 8],
            vec![],
        ),
        (
            format!("{module}.weight_scale"),
            "BF16",
            vec![out, inp / G],
            vec![],
        ),
        (format!("{module}.weight_shape"), "I64", vec![2], shape),
    ]
}

/// Pre-quantized AWQ, GPTQ and compressed-tensors checkpoints read as the model that was
/// quantized: shapes from the qweight layout, parameters in logical
/// elements, bits per weight near the packing's (they used to report
/// head_dim and FFN from the packed rows).
#[test]
fn awq_and_gptq_checkpoints_show_the_unpacked_model() {
    let cases: [(&str, serde_json::Value, &Pack, &str); 4] = [
        (
            "awq",
            serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": G, "version": "gemm"}),
            &awq,
            "awq 4-bit",
        ),
        (
            "gptq",
            serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": G}),
            &gptq(4),
            "gptq 4-bit",
        ),
        (
            "gptq8",
            serde_json::json!({"quant_method": "gptq", "bits": 8, "group_size": G}),
            &gptq(8),
            "gptq 8-bit",
        ),
        (
            "compressed",
            serde_json::json!({"quant_method": "compressed-tensors", "format": "pack-quantized"}),
            &compressed,
            "compressed-tensors 4-bit",
        ),
    ];
    for (what, qc, pack, label) in cases {
        let dir = packed_tiny_qwen2(qc, pack);
        let m = Model::open(dir.path().to_str().unwrap()).unwrap();
        let a = arch::detect(&m);
        assert_same_arch_as_tiny_qwen2(&a, what);
        assert_eq!(a.quantization.as_deref(), Some(label), "{what}");
        // Packed Linear weights with their scales and zeros, 16-bit rest.
        let linear = a.params.attention + a.params.mlp - 2 * 256; // q/k/v biases
        let bits = if what == "gptq8" { 8.0 } else { 4.0 };
        let low = (linear as f64 * bits + (a.params.total - linear) as f64 * 16.0)
            / a.params.total as f64;
        assert!(
            a.bits_per_weight > low && a.bits_per_weight < low + 2.0,
            "{what}: {} bits per weight, packing alone gives {low}",
            a.bits_per_weight
        );
        // vram-plan sees the same model and loads it pre-quantized.
        let spec = vram::ModelSpec::from_model(&m, what).unwrap();
        assert_eq!(spec.params(), a.params.total, "{what}");
        let gpu = vram::catalog::parse_setups("A10G", &vram::catalog::gpus(None).unwrap()).unwrap();
        let row = vram::plan(
            &spec,
            vram::DeployFormat::Native,
            vram::Runtime::Vllm,
            &Default::default(),
            &gpu[0],
        )
        .unwrap();
        let want = match what {
            "awq" => "--quantization awq",
            "compressed" => "--quantization compressed-tensors",
            _ => "--quantization gptq",
        };
        assert!(row.flags.contains(want), "{what}: {}", row.flags);
    }
}

/// A qweight whose scales fit neither packing, or a bitsandbytes quant
/// state that is not JSON or disagrees with the packed bytes, is counted as
/// stored, with a warning naming the tensor (no panic, no invented shape).
#[test]
fn undecodable_packing_is_a_named_warning() {
    let dir = packed_tiny_qwen2(
        serde_json::json!({"quant_method": "awq"}),
        |module, out, inp| {
            vec![
                (
                    format!("{module}.qweight"),
                    "I32",
                    vec![inp, out / 8],
                    vec![],
                ),
                (
                    format!("{module}.scales"),
                    "F16",
                    vec![inp / G, out + 3],
                    vec![],
                ),
            ]
        },
    );
    let a = arch::detect(&Model::open(dir.path().to_str().unwrap()).unwrap());
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("model.layers.0.self_attn.q_proj.qweight")
                && w.contains("match neither AWQ nor GPTQ")),
        "{:?}",
        a.warnings
    );
    // bitsandbytes 4-bit with a quant state that is not JSON, or whose shape
    // does not match the packed bytes.
    for (state, why) in [
        (b"{not json".to_vec(), "the quant state is not JSON"),
        (
            br#"{"quant_type": "nf4", "shape": [3, 3]}"#.to_vec(),
            "holds 9 elements",
        ),
    ] {
        let dir = packed_tiny_qwen2(
            serde_json::json!({"quant_method": "bitsandbytes"}),
            |module, out, inp| {
                let len = state.len() as u64;
                vec![
                    (
                        format!("{module}.weight"),
                        "U8",
                        vec![out * inp / 2, 1],
                        vec![],
                    ),
                    (
                        format!("{module}.weight.quant_state.bitsandbytes__nf4"),
                        "U8",
                        vec![len],
                        state.clone(),
                    ),
                ]
            },
        );
        let a = arch::detect(&Model::open(dir.path().to_str().unwrap()).unwrap());
        assert!(
            a.warnings.iter().any(|w| w
                .contains("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4")
                && w.contains(why)),
            "{why}: {:?}",
            a.warnings
        );
    }
}

/// Our own `quantize nf4` / `int8` output (issue: inspect-arch reported
/// head_dim 2048-fold and FFN from the packed bytes): the architecture,
/// parameters and the vram-plan shape equal the unquantized model's.
#[test]
fn our_bitsandbytes_output_shows_the_unpacked_model() {
    let src = common::fixture("models/tiny-qwen2");
    for (kind, label, max_bits) in [
        ("nf4", "bitsandbytes nf4", 8.0),
        ("int8", "bitsandbytes int8", 11.0),
    ] {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join(kind);
        common::run_ok(common::llmtool().args([
            "quantize",
            kind,
            src.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ]));
        let a = arch::detect(&Model::open(dir.to_str().unwrap()).unwrap());
        assert_same_arch_as_tiny_qwen2(&a, kind);
        assert_eq!(a.quantization.as_deref(), Some(label));
        assert!(
            a.bits_per_weight < max_bits,
            "{kind}: {}",
            a.bits_per_weight
        );
        let plan = common::json_output(common::llmtool().args([
            "vram-plan",
            dir.to_str().unwrap(),
            "--gpu",
            "T4",
            "--engine",
            "vllm",
            "--json",
        ]));
        assert_eq!(plan["parameters"], a.params.total, "{kind}");
        assert_eq!(plan["model"]["head_dim"], 32, "{kind}");
        assert_eq!(plan["model"]["ffn"], 256, "{kind}");
        let rows = plan["plans"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "a pre-quantized model is planned as it is");
        assert_eq!(rows[0]["format"], "native");
        let flags = rows[0]["flags"].as_str().unwrap();
        assert!(flags.contains("--quantization bitsandbytes"), "{flags}");
        assert!(flags.contains("--dtype half"), "T4 has no bf16: {flags}");
    }
}
