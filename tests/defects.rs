//! Defects found by trying llmtool as a new user and as an attacker (issue
//! 15): each case is an input that once panicked, hung or wrote a broken
//! artifact with exit 0. Every test runs the binary as a user would and
//! requires exit 1 with a message naming the file and the fix, nothing
//! written, no panic.

use std::path::Path;
use std::process::Output;

use crate::common::{self, llmtool, tiny_llama_variant};

/// Runs llmtool and requires a clean refusal: exit 1, `want` in stderr, no
/// panic.
fn refuses(args: &[&str], want: &str) -> String {
    let out: Output = llmtool().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: exit 1 expected: {err}"
    );
    assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// No final output and no hidden temporary left in `dir`.
fn nothing_written(dir: &Path, out: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(out))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `dir/m`: tiny-llama edited by `edit` and `config`, with the tiny
/// SentencePiece tokenizer beside it (so GGUF formats have a vocabulary).
fn variant(
    dir: &Path,
    edit: impl FnMut(&llmtool::store::TensorInfo) -> Option<(Vec<u64>, Vec<f32>)>,
    config: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let m = dir.join("m");
    std::fs::create_dir(&m).unwrap();
    tiny_llama_variant(&m, edit, config);
    common::copy_tiny_sp_tokenizer(&m);
    m
}

#[test]
fn zero_row_projections_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = variant(
        tmp.path(),
        |t| {
            (t.name.ends_with("q_proj.weight") || t.name.ends_with("k_proj.weight"))
                .then(|| (vec![0, t.shape[1]], vec![]))
        },
        |_| {},
    );
    for fmt in ["q8_0", "nf4", "int8"] {
        let out = tmp.path().join(format!("out-{fmt}"));
        refuses(
            &["quantize", fmt, s(&model), "--out", s(&out)],
            "model.layers.0.self_attn.",
        );
        nothing_written(tmp.path(), &format!("out-{fmt}"));
    }
}

#[test]
fn config_that_is_not_an_object_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = variant(tmp.path(), |_| None, |c| *c = serde_json::json!([1, 2]));
    for args in [
        vec!["quantize", "nf4"],
        vec!["quantize", "q8_0"],
        vec!["inspect-arch"],
    ] {
        let out = tmp.path().join("out");
        let mut a = args.clone();
        a.push(s(&model));
        if args[0] == "quantize" {
            a.extend(["--out", s(&out)]);
        }
        refuses(&a, "config.json");
        nothing_written(tmp.path(), "out");
    }
}

/// A copy of the f32-basic adapter whose adapter_config.json is `edit`ed
/// (or replaced by `raw`).
fn adapter_variant(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let src = common::fixture("lora/f32-basic/adapter");
    let a = dir.join("adapter");
    std::fs::create_dir(&a).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        a.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("adapter_config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(a.join("adapter_config.json"), cfg.to_string()).unwrap();
    a
}

/// `lora merge --base BASE --adapter ADAPTER --out OUT`.
fn merge_args<'a>(base: &'a str, adapter: &'a str, out: &'a str) -> [&'a str; 8] {
    [
        "lora",
        "merge",
        "--base",
        base,
        "--adapter",
        adapter,
        "--out",
        out,
    ]
}

fn merge(adapter: &str, out: &Path) {
    let base = common::fixture("lora/bases/micro-llama");
    common::run_ok(llmtool().args(merge_args(s(&base), adapter, s(out))));
}

#[test]
fn adapter_configs_that_would_merge_wrongly_are_refused() {
    let base = common::fixture("lora/bases/micro-llama");
    for (edit, want) in [
        (
            Box::new(|c: &mut serde_json::Value| *c = serde_json::json!([]))
                as Box<dyn FnOnce(&mut serde_json::Value)>,
            "adapter_config.json: expected a JSON object",
        ),
        (
            Box::new(|c: &mut serde_json::Value| c["use_dora"] = true.into()),
            "says use_dora but the weights have no lora_magnitude_vector",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let a = adapter_variant(tmp.path(), edit);
        let out = tmp.path().join("merged");
        refuses(&merge_args(s(&base), s(&a), s(&out)), want);
        nothing_written(tmp.path(), "merged");
    }
    // A weight that is not a number, after a real directory.
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter_variant(tmp.path(), |_| {});
    let weighted = format!("{}:abc", s(&a));
    let out = tmp.path().join("merged");
    refuses(
        &merge_args(s(&base), &weighted, s(&out)),
        "'abc' is not a weight",
    );
}

/// PEFT reads `lora_alpha` and `alpha_pattern` as any number: 16.0 merges
/// exactly as 16, and a float pattern applies.
#[test]
fn float_alphas_merge_as_peft_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("ref");
    merge(s(&common::fixture("lora/f32-basic/adapter")), &reference);
    let floats = tempfile::tempdir().unwrap();
    let a = adapter_variant(floats.path(), |c| {
        c["lora_alpha"] = serde_json::json!(16.0);
        c["alpha_pattern"] = serde_json::json!({"q_proj": 16.0});
    });
    let merged = tmp.path().join("floats");
    merge(s(&a), &merged);
    let tensors = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(tensors(&reference) == tensors(&merged), "16.0 merges as 16");
    // A different float alpha on q_proj changes exactly those tensors.
    let halved = tempfile::tempdir().unwrap();
    let a = adapter_variant(halved.path(), |c| {
        c["alpha_pattern"] = serde_json::json!({"q_proj": 8.5});
    });
    let merged = tmp.path().join("halved");
    merge(s(&a), &merged);
    let m = llmtool::store::Model::open(s(&merged)).unwrap();
    let r = llmtool::store::Model::open(s(&reference)).unwrap();
    for t in r.tensors() {
        let same = r.bytes(t) == m.bytes(m.get(&t.name).unwrap());
        assert_eq!(same, !t.name.contains("q_proj"), "{}", t.name);
    }
}

/// An F32 GGUF of tiny-llama with the tiny SentencePiece vocabulary, made by
/// llmtool itself.
fn f32_gguf(dir: &Path) -> std::path::PathBuf {
    let m = variant(dir, |_| None, |_| {});
    let out = dir.join("base.gguf");
    common::run_ok(llmtool().args(["quantize", "f32", s(&m), "--out", s(&out)]));
    out
}

/// `src` rewritten to `dst` with its metadata and tensor table edited.
fn gguf_variant(
    src: &Path,
    dst: &Path,
    meta: impl FnOnce(&mut Vec<(String, llmtool::store::gguf::Value)>),
    mut tensor: impl FnMut(&mut llmtool::store::gguf::GgufTensor),
) {
    use llmtool::store::gguf::{GgufTensor, GgufWriter};
    let m = llmtool::store::Model::open(s(src)).unwrap();
    let mut entries: Vec<_> = m
        .gguf
        .as_ref()
        .unwrap()
        .entries()
        .iter()
        .filter(|(k, _)| k != "general.alignment")
        .cloned()
        .collect();
    meta(&mut entries);
    let specs: Vec<GgufTensor> = m
        .tensors()
        .iter()
        .map(|t| {
            let mut g = GgufTensor {
                name: t.name.clone(),
                ty: llmtool::quant::GgmlType::F32,
                shape: t.shape.clone(),
            };
            tensor(&mut g);
            g
        })
        .collect();
    let mut w = GgufWriter::create(dst, &entries, specs.clone()).unwrap();
    for (t, g) in m.tensors().iter().zip(&specs) {
        w.write_tensor(&g.name, m.bytes(t)).unwrap();
    }
    w.finish().unwrap();
}

fn set(
    entries: &mut Vec<(String, llmtool::store::gguf::Value)>,
    key: &str,
    v: llmtool::store::gguf::Value,
) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = v,
        None => entries.push((key.to_string(), v)),
    }
}

/// GGUF inputs (and `--tokenizer-from` files) llama.cpp could not load, or
/// would load wrong, are refused before anything is written.
#[test]
fn damaged_gguf_inputs_are_refused_before_writing() {
    use llmtool::store::gguf::{Array, Value};
    type Meta = Vec<(String, Value)>;
    let tmp = tempfile::tempdir().unwrap();
    let base = f32_gguf(tmp.path());
    type TensorEdit = Box<dyn FnMut(&mut llmtool::store::gguf::GgufTensor)>;
    type MetaEdit = Box<dyn FnOnce(&mut Meta)>;
    let cases: Vec<(&str, MetaEdit, TensorEdit, &str)> = vec![
        (
            "no-tokens",
            Box::new(|m: &mut Meta| m.retain(|(k, _)| k != "tokenizer.ggml.tokens")),
            Box::new(|_| {}),
            "tokenizer.ggml.tokens is missing",
        ),
        (
            "heads-0",
            Box::new(|m: &mut Meta| set(m, "llama.attention.head_count", Value::U32(0))),
            Box::new(|_| {}),
            "attention head count is 0",
        ),
        (
            "flat-embedding",
            Box::new(|_: &mut Meta| {}),
            Box::new(|t| {
                if t.name == "token_embd.weight" {
                    t.shape = vec![t.shape.iter().product()];
                }
            }),
            "token_embd.weight",
        ),
        (
            "dotdot",
            Box::new(|_: &mut Meta| {}),
            Box::new(|t| {
                if t.name == "blk.0.attn_q.weight" {
                    t.name = "../../x".into();
                }
            }),
            "tensor '../../x' is not a tensor of a llama GGUF",
        ),
        (
            "bos-1e9",
            Box::new(|m: &mut Meta| {
                set(m, "tokenizer.ggml.bos_token_id", Value::U32(1_000_000_000))
            }),
            Box::new(|_| {}),
            "tokenizer.ggml.bos_token_id is 1000000000, outside",
        ),
        (
            "u32-tokens",
            Box::new(|m: &mut Meta| {
                let n = match m.iter().find(|(k, _)| k == "tokenizer.ggml.tokens") {
                    Some((_, Value::Array(a))) => a.len(),
                    _ => unreachable!(),
                };
                set(
                    m,
                    "tokenizer.ggml.tokens",
                    Value::Array(Array::U32((0..n as u32).collect())),
                );
            }),
            Box::new(|_| {}),
            "not of strings",
        ),
        (
            "one-score",
            Box::new(|m: &mut Meta| {
                set(
                    m,
                    "tokenizer.ggml.scores",
                    Value::Array(Array::F32(vec![0.0])),
                )
            }),
            Box::new(|_| {}),
            "tokenizer.ggml.scores is 1 items",
        ),
    ];
    for (name, meta, tensor, want) in cases {
        let bad = tmp.path().join(format!("{name}.gguf"));
        gguf_variant(&base, &bad, meta, tensor);
        let out = tmp.path().join(format!("out-{name}.gguf"));
        refuses(&["quantize", "q8_0", s(&bad), "--out", s(&out)], want);
        nothing_written(tmp.path(), &format!("out-{name}"));
        // The same damage in a --tokenizer-from file (tokenizer keys only).
        if name != "heads-0" && name != "flat-embedding" && name != "dotdot" {
            let hf = variant(&tmp.path().join(name).tap_mkdir(), |_| None, |_| {});
            refuses(
                &[
                    "quantize",
                    "q8_0",
                    s(&hf),
                    "--tokenizer-from",
                    s(&bad),
                    "--out",
                    s(&out),
                ],
                want,
            );
            nothing_written(tmp.path(), &format!("out-{name}"));
        }
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// HF inputs whose hyperparameters or weights would give a GGUF with
/// `embedding_length 0`, an all-zero `rope_freqs`, or a bitsandbytes
/// checkpoint keeping a 1-D "Linear" weight.
#[test]
fn damaged_hf_inputs_are_refused_before_writing() {
    type Edit = Box<dyn FnMut(&llmtool::store::TensorInfo) -> Option<(Vec<u64>, Vec<f32>)>>;
    type Config = Box<dyn FnOnce(&mut serde_json::Value)>;
    let none = || -> Edit { Box::new(|_| None) };
    let cases: Vec<(&str, Edit, Config, &str)> = vec![
        (
            "empty-embedding",
            Box::new(|t| (t.name == "model.embed_tokens.weight").then(|| (vec![256, 0], vec![]))),
            Box::new(|_| {}),
            "'model.embed_tokens.weight': shape [256, 0] has a zero dimension",
        ),
        (
            "rope-factor-0",
            none(),
            Box::new(|c| c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 0.0})),
            "RoPE scaling factor is 0",
        ),
        (
            "rope-theta-negative",
            none(),
            Box::new(|c| c["rope_theta"] = serde_json::json!(-1.0)),
            "rope_theta is -1",
        ),
        (
            "flat-q",
            Box::new(|t| {
                t.name.ends_with("layers.1.self_attn.q_proj.weight").then(|| {
                    let n = t.numel();
                    (vec![n], f32s(n as usize))
                })
            }),
            Box::new(|_| {}),
            "'model.layers.1.self_attn.q_proj.weight': shape [65536] has 1 dimensions; this weight has 2",
        ),
    ];
    for (name, edit, config, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let model = variant(tmp.path(), edit, config);
        for fmt in ["q8_0", "nf4"] {
            let out = tmp.path().join(format!("out-{name}-{fmt}"));
            refuses(&["quantize", fmt, s(&model), "--out", s(&out)], want);
            nothing_written(tmp.path(), "out-");
        }
    }
}

fn f32s(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect()
}

/// Two runs writing the same output: one wins, the other fails with exit 1
/// and says why; the winner's file is whole.
#[test]
fn racing_writers_never_both_claim_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let m = variant(tmp.path(), |_| None, |_| {});
    let out = tmp.path().join("q.gguf");
    for _ in 0..3 {
        let _ = std::fs::remove_file(&out);
        let spawn = || {
            llmtool()
                .args(["quantize", "q8_0", s(&m), "--out", s(&out)])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(ok, 1, "exactly one writer succeeds");
        let loser = if a.status.success() { &b } else { &a };
        let err = String::from_utf8_lossy(&loser.stderr);
        assert_eq!(loser.status.code(), Some(1), "{err}");
        assert!(
            err.contains("another process created this output")
                || err.contains("output file exists"),
            "{err}"
        );
        llmtool::store::Model::open(s(&out)).unwrap();
        nothing_written(tmp.path(), ".partial");
    }
}

/// A symlinked output directory is written through; a file-size limit
/// (`ulimit -f`) gives one clean error naming the output, not the hidden
/// temporary.
#[test]
fn output_paths_are_what_the_user_named() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::fixture("lora/bases/micro-llama");
    let adapter = common::fixture("lora/f32-basic/adapter");
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    merge(s(&adapter), &link);
    assert!(real.join("model.safetensors").is_file());

    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec '{}' lora merge --base '{}' --adapter '{}' --out '{}'",
            env!("CARGO_BIN_EXE_llmtool"),
            s(&base),
            s(&adapter),
            s(&tmp.path().join("small"))
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("File too large").count(), 1, "{err}");
    assert!(
        err.contains("small/model.safetensors") && !err.contains(".partial"),
        "{err}"
    );
    nothing_written(tmp.path(), "small");
}

/// Our own nf4 output as the base of a merge or the input of a bitsandbytes
/// quantization: refused as pre-quantized, pointing at the 16-bit base. To
/// GGUF it is dequantized first, as GPTQ and AWQ checkpoints are.
#[test]
fn pre_quantized_inputs_point_at_the_16_bit_model() {
    let tmp = tempfile::tempdir().unwrap();
    let m = variant(tmp.path(), |_| None, |_| {});
    let nf4 = tmp.path().join("nf4");
    common::run_ok(llmtool().args(["quantize", "nf4", s(&m), "--out", s(&nf4)]));
    let want = "pre-quantized checkpoint (bitsandbytes";
    let gguf = tmp.path().join("q.gguf");
    common::run_ok(llmtool().args(["quantize", "q4_k_m", s(&nf4), "--out", s(&gguf)]));
    llmtool::store::Model::open(s(&gguf)).unwrap();
    nothing_written(tmp.path(), "q.gguf.dequantized");
    refuses(
        &[
            "quantize",
            "int8",
            s(&nf4),
            "--out",
            s(&tmp.path().join("i8")),
        ],
        want,
    );
    let adapter = common::fixture("lora/f32-basic/adapter");
    let out = tmp.path().join("mm");
    refuses(&merge_args(s(&nf4), s(&adapter), s(&out)), want);
}
