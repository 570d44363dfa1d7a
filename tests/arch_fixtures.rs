//! `arch::detect` on the transformers-made fixtures, against the values the
//! oracle computed with torch (fixtures/models/*/expected.json), plus lying
//! configs and the transformers-verified output of our sharded writer.

use crate::common;

use llmtool::model::arch::{self, Family};
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
