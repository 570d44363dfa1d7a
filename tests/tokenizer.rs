//! The tokenizer bridge against its oracles (fixtures/tokenizer, made by
//! tests/oracle/tokenizer_goldens.py):
//! * HF → GGUF: our `tokenizer.*` entries equal what llama.cpp's
//!   convert_hf_to_gguf.py wrote (keys in order, value types, values or
//!   array digests) for a tiny Llama-2-style byte-fallback tokenizer, for the
//!   HF form of SmolLM2 transformers writes (the converter's LlamaHfVocab
//!   path) and for SmolLM2 as byte-level BPE (the GPT-2 path, pre-tokenizer
//!   detected by hash as "smollm"), under Llama and Qwen2 architectures.
//! * GGUF → HF: our tokenizer.json equals the one transformers' GGUF import
//!   builds (whole for the fixture, sha256 for SmolLM2) and the `tokenizers`
//!   crate encodes the samples to transformers' ids.

use crate::common;

use std::path::Path;

use llmtool::model::tokenizer::{self, TokenizerError};
use llmtool::store::gguf::{Metadata, Value};
use llmtool::store::Model;
use serde_json::Value as Json;

fn golden(name: &str) -> Json {
    let p = common::fixture(&format!("tokenizer/{name}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Python's `json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`.
fn canonical(v: &Json) -> String {
    fn sorted(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Json::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            x => x.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap()
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::F32(x) => serde_json::json!(*x as f64),
        other => other.to_json(),
    }
}

/// Our entries against the converter's, key by key.
fn assert_matches_converter(ours: &[(String, Value)], want: &Json) {
    let want = want.as_object().unwrap();
    let got_keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    let want_keys: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got_keys, want_keys, "keys and their order");
    for (k, v) in ours {
        let w = &want[k];
        assert_eq!(
            serde_json::to_value(v.value_type()).unwrap(),
            w["type"],
            "{k} type"
        );
        match v {
            Value::Array(a) => {
                let items: Vec<Value> = a.iter().collect();
                assert_eq!(
                    serde_json::to_value(a.item_type()).unwrap(),
                    w["item_type"],
                    "{k} item type"
                );
                assert_eq!(items.len() as u64, w["len"].as_u64().unwrap(), "{k} length");
                match w.get("sha256") {
                    Some(d) => {
                        assert_eq!(
                            common::array_digest(&items),
                            d.as_str().unwrap(),
                            "{k} contents"
                        );
                        for s in w["samples"].as_array().unwrap() {
                            let i = s[0].as_u64().unwrap() as usize;
                            assert_eq!(value_json(&items[i]), s[1], "{k}[{i}]");
                        }
                    }
                    None => {
                        let got: Vec<Json> = items.iter().map(value_json).collect();
                        assert_eq!(Json::Array(got), w["value"], "{k} values");
                    }
                }
            }
            v => assert_eq!(value_json(v), w["value"], "{k} value"),
        }
    }
}

fn metadata_of(path: &Path) -> Metadata {
    let m = Model::open(path.to_str().unwrap()).unwrap();
    m.gguf.clone().unwrap()
}

fn assert_encodes_like_transformers(meta: &Metadata, g: &Json) {
    let tok = tokenizer::from_gguf(meta).unwrap();
    let samples = g["samples"].as_array().unwrap();
    let ids = g["ids"].as_array().unwrap();
    assert_eq!(samples.len(), ids.len());
    for (s, want) in samples.iter().zip(ids) {
        let got = tok.encode(s.as_str().unwrap(), true).unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got.get_ids(), want.as_slice(), "ids of {s}");
    }
}

#[test]
fn tiny_llama_hf_to_gguf_matches_converter() {
    let g = golden("tiny-llama-spm");
    let ours = tokenizer::gguf_metadata_from_hf(&common::fixture("tokenizer/tiny-llama-spm"), None)
        .unwrap();
    assert_matches_converter(&ours, &g["converter_keys"]);
}

#[test]
fn tiny_llama_gguf_to_hf_matches_transformers_import() {
    let g = golden("tiny-llama-spm");
    let meta = metadata_of(&common::fixture(
        "tokenizer/tiny-llama-spm/converter-vocab.gguf",
    ));
    let ours = tokenizer::hf_tokenizer_json(&meta).unwrap();
    let want = &g["gguf_import"]["tokenizer_json"];
    assert_eq!(canonical(&ours), canonical(want));
    assert_encodes_like_transformers(&meta, &g);
}

/// Makes the config.json in `dir` say Qwen2 (the converter's other class).
fn as_qwen2(dir: &Path) {
    let cfg_path = dir.join("config.json");
    let mut cfg: Json = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    cfg["model_type"] = serde_json::json!("qwen2");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

/// A SentencePiece-only repo (tokenizer.model, added_tokens.json,
/// added_tokens_decoder, [PADi] slots), under Llama and Qwen2.
#[test]
fn sentencepiece_model_to_gguf_matches_converter() {
    let src = common::fixture("tokenizer/tiny-sp");
    let ours = tokenizer::gguf_metadata_from_hf(&src, None).unwrap();
    assert_matches_converter(&ours, &golden("tiny-sp")["converter_keys"]);

    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    as_qwen2(dir.path());
    let ours = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap();
    assert_matches_converter(&ours, &golden("tiny-sp-qwen2")["converter_keys"]);

    // tokenizer.model wins over a tokenizer.json beside it, as in the
    // converter (which still reads the latter for special tokens).
    std::fs::copy(
        common::fixture("tokenizer/tiny-llama-spm/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let both = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap();
    let tokens = |kv: &[(String, Value)]| {
        kv.iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(tokens(&both), tokens(&ours));
}

/// Back to HF from the converter's GGUF of that repo (real piece scores,
/// no merges): transformers' import rebuilds merges from the scores.
#[test]
fn sentencepiece_gguf_to_hf_matches_transformers_import() {
    let g = golden("tiny-sp");
    let meta = metadata_of(&common::fixture("tokenizer/tiny-sp/converter-vocab.gguf"));
    let ours = tokenizer::hf_tokenizer_json(&meta).unwrap();
    assert_eq!(
        canonical(&ours),
        canonical(&g["gguf_import"]["tokenizer_json"])
    );
    assert_encodes_like_transformers(&meta, &g);
}

#[test]
fn smollm2_gguf_to_hf_matches_transformers_import() {
    let Some(p) = common::smollm2() else { return };
    let g = golden("smollm2");
    let meta = metadata_of(&p);
    assert_tokenizer_json_digest(&tokenizer::hf_tokenizer_json(&meta).unwrap(), &g);
    assert_encodes_like_transformers(&meta, &g);
}

/// Everything but vocab and merges compared as JSON, the whole by digest.
fn assert_tokenizer_json_digest(ours: &Json, g: &Json) {
    let mut head = ours.clone();
    let model = head["model"].as_object_mut().unwrap();
    model.remove("vocab");
    model.remove("merges");
    assert_eq!(
        canonical(&head),
        canonical(&g["gguf_import"]["tokenizer_json_without_vocab"])
    );
    assert_eq!(
        common::sha256_hex(canonical(ours).as_bytes()),
        g["gguf_import"]["tokenizer_json_sha256"].as_str().unwrap()
    );
}

/// The HF form transformers saved from the SmolLM2 GGUF: the committed small
/// files plus our tokenizer.json, which the test above proves equal to
/// transformers' own.
#[test]
fn smollm2_hf_form_to_gguf_matches_converter() {
    let Some(p) = common::smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(common::fixture("tokenizer/smollm2-hf-form")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let tj = tokenizer::hf_tokenizer_json(&metadata_of(&p)).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        serde_json::to_string(&tj).unwrap(),
    )
    .unwrap();
    let ours = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap();
    assert_matches_converter(&ours, &golden("smollm2")["converter_keys"]);
}

/// SmolLM2 as byte-level BPE (its Hub form): the committed skeleton plus the
/// GGUF's tokens and merges, built as the oracle builds it.
fn smollm2_gpt2_dir(gguf: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixture("tokenizer/smollm2-gpt2");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "tokenizer.skeleton.json" {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let meta = metadata_of(gguf);
    let strings = |k: &str| -> Vec<String> {
        match meta.get(k).unwrap() {
            Value::Array(a) => a.strings().unwrap().iter().map(str::to_string).collect(),
            _ => unreachable!(),
        }
    };
    let mut tj: Json =
        serde_json::from_slice(&std::fs::read(src.join("tokenizer.skeleton.json")).unwrap())
            .unwrap();
    let vocab: serde_json::Map<String, Json> = strings("tokenizer.ggml.tokens")
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, Json::from(i)))
        .collect();
    let merges: Vec<Json> = strings("tokenizer.ggml.merges")
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap();
            serde_json::json!([a, b])
        })
        .collect();
    tj["model"]["vocab"] = Json::Object(vocab);
    tj["model"]["merges"] = Json::Array(merges);
    std::fs::write(
        dir.path().join("tokenizer.json"),
        serde_json::to_string(&tj).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn smollm2_gpt2_form_to_gguf_matches_converter() {
    let Some(p) = common::smollm2() else { return };
    let dir = smollm2_gpt2_dir(&p);
    let ours = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap();
    assert_matches_converter(&ours, &golden("smollm2-gpt2")["converter_keys"]);
    // The detected name is the table's; an explicit one replaces it.
    let forced = tokenizer::gguf_metadata_from_hf(dir.path(), Some("llama-bpe")).unwrap();
    let pre = forced
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.pre")
        .unwrap();
    assert_eq!(pre.1, Value::String("llama-bpe".into()));
}

/// The same tokenizer under a Qwen2 architecture takes the converter's
/// Qwen2 path (no add_space_prefix, no 49152-vocabulary rule), and comes
/// back through transformers' Qwen2 import.
#[test]
fn smollm2_gpt2_form_as_qwen2_both_ways() {
    let Some(p) = common::smollm2() else { return };
    let dir = smollm2_gpt2_dir(&p);
    as_qwen2(dir.path());
    let ours = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap();
    let g = golden("smollm2-gpt2-qwen2");
    assert_matches_converter(&ours, &g["converter_keys"]);

    // Back to HF through transformers' Qwen2 import (of the converter's
    // GGUF, whose tokenizer entries the assertion above proves ours equal).
    // (plus the context length the converter writes, for model_max_length).
    let mut entries = vec![
        (
            "general.architecture".to_string(),
            Value::String("qwen2".into()),
        ),
        ("qwen2.context_length".to_string(), Value::U32(8192)),
    ];
    entries.extend(ours);
    let meta = Metadata::new(entries);
    assert_tokenizer_json_digest(&tokenizer::hf_tokenizer_json(&meta).unwrap(), &g);
    assert_encodes_like_transformers(&meta, &g);
    assert_written_as_judged(&meta, "smollm2-gpt2-qwen2-vocab.gguf");
}

#[test]
fn unknown_pre_tokenizer_is_a_clear_error() {
    // A byte-level BPE whose check-text hash no table entry has.
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixture("tokenizer/smollm2-gpt2");
    for f in ["config.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut tj: Json =
        serde_json::from_slice(&std::fs::read(src.join("tokenizer.skeleton.json")).unwrap())
            .unwrap();
    let mut sorted: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    sorted.sort();
    let vocab: serde_json::Map<String, Json> = sorted
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), Json::from(i + 17)))
        .collect();
    tj["model"]["vocab"] = Json::Object(vocab);
    std::fs::write(
        dir.path().join("tokenizer.json"),
        serde_json::to_string(&tj).unwrap(),
    )
    .unwrap();
    let err = tokenizer::gguf_metadata_from_hf(dir.path(), None).unwrap_err();
    assert!(matches!(err, TokenizerError::UnknownPre { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("name the matching one"),
        "{msg}"
    );
}

/// fixtures/tokenizer/transformers-check.json is transformers' verdict on the
/// directories `write_hf_tokenizer` wrote (AutoTokenizer loads them and
/// encodes the samples as its GGUF import does); our writer must still
/// produce those exact files.
fn assert_written_as_judged(meta: &Metadata, verdict_key: &str) {
    let verdict: Json = serde_json::from_slice(
        &std::fs::read(common::fixture("tokenizer/transformers-check.json")).unwrap(),
    )
    .unwrap();
    let v = &verdict[verdict_key];
    for k in [
        "ids_identical",
        "decode_identical",
        "chat_template_identical",
        "bos_unk_identical",
    ] {
        assert_eq!(v[k], Json::Bool(true), "{verdict_key}: {k}");
    }
    let dir = tempfile::tempdir().unwrap();
    let written = tokenizer::write_hf_tokenizer(meta, dir.path()).unwrap();
    let files = v["files_sha256"].as_object().unwrap();
    assert_eq!(written.len(), files.len());
    for p in written {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            common::sha256_hex(&std::fs::read(&p).unwrap()),
            files[name].as_str().unwrap(),
            "{verdict_key}: {name}"
        );
    }
}

#[test]
fn tiny_llama_written_files_are_the_judged_ones() {
    assert_written_as_judged(
        &metadata_of(&common::fixture(
            "tokenizer/tiny-llama-spm/converter-vocab.gguf",
        )),
        "converter-vocab.gguf",
    );
}

#[test]
fn sentencepiece_written_files_are_the_judged_ones() {
    assert_written_as_judged(
        &metadata_of(&common::fixture("tokenizer/tiny-sp/converter-vocab.gguf")),
        "tiny-sp/converter-vocab.gguf",
    );
}

#[test]
fn smollm2_written_files_are_the_judged_ones() {
    let Some(p) = common::smollm2() else { return };
    assert_written_as_judged(&metadata_of(&p), "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn refusals_name_the_file_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixture("tokenizer/tiny-llama-spm");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // A file the converter's sentencepiece would fail on (a tiktoken rank
    // file, as Llama-3's original/ folder has) comes first and fails alike.
    std::fs::write(dir.path().join("tokenizer.model"), b"IQ== 0\nIg== 1\n").unwrap();
    let msg = tokenizer::gguf_metadata_from_hf(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.model") && msg.contains("not a SentencePiece model"),
        "{msg}"
    );
    std::fs::remove_file(dir.path().join("tokenizer.model")).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), b"{not json").unwrap();
    let msg = tokenizer::gguf_metadata_from_hf(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("not valid JSON"),
        "{msg}"
    );
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let msg = tokenizer::gguf_metadata_from_hf(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("missing"),
        "{msg}"
    );

    // GGUF side: no vocabulary, an id outside it.
    let meta = Metadata::new(vec![(
        "general.architecture".into(),
        Value::String("llama".into()),
    )]);
    let msg = tokenizer::from_gguf(&meta).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.tokens is missing"), "{msg}");
    let mut entries = metadata_of(&common::fixture(
        "tokenizer/tiny-llama-spm/converter-vocab.gguf",
    ))
    .entries()
    .to_vec();
    for e in entries
        .iter_mut()
        .filter(|e| e.0 == "tokenizer.ggml.bos_token_id")
    {
        e.1 = Value::U32(100_000);
    }
    let msg = tokenizer::from_gguf(&Metadata::new(entries))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tokenizer.ggml.bos_token_id is 100000 but the vocabulary has 463 tokens"),
        "{msg}"
    );
    let meta = Metadata::new(vec![(
        "general.architecture".into(),
        Value::String("gemma2".into()),
    )]);
    let msg = tokenizer::from_gguf(&meta).unwrap_err().to_string();
    assert!(msg.contains("architecture 'gemma2'"), "{msg}");
}

/// GGUF → `llmtool convert` → `llmtool quantize`: the HF directory carries
/// SmolLM2's tokenizer as its Hub repo does (byte-level BPE, GPT2Tokenizer;
/// the form whose llama.cpp converter golden is smollm2-gpt2.json), and the
/// GGUF made from it has the original file's `tokenizer.*` keys, so
/// llama.cpp, which builds its vocabulary from those keys alone, tokenizes
/// as with the original. The one addition is `add_eos_token = false`,
/// llama.cpp's default, which today's converter writes for the Hub repo too.
/// The form transformers' GGUF import saves (a Llama tokenizer with byte
/// fallback over the same vocabulary) is refused by quantize.
#[test]
fn smollm2_tokenizer_round_trips_through_convert_and_quantize() {
    let Some(p) = common::smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let run = |args: &[&str]| {
        let out = common::llmtool().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "convert",
        p.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]);
    let read = |p: &Path| -> Json { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let hub = smollm2_gpt2_dir(&p);
    assert!(
        read(&hf.join("tokenizer.json")) == read(&hub.path().join("tokenizer.json")),
        "tokenizer.json is SmolLM2's Hub form"
    );
    let (ours, theirs) = (
        read(&hf.join("tokenizer_config.json")),
        read(&hub.path().join("tokenizer_config.json")),
    );
    for k in [
        "tokenizer_class",
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "add_prefix_space",
        "chat_template",
    ] {
        assert_eq!(ours[k], theirs[k], "tokenizer_config.json {k}");
    }

    let own = tmp.path().join("own.gguf");
    run(&[
        "quantize",
        "q8_0",
        hf.to_str().unwrap(),
        "--out",
        own.to_str().unwrap(),
    ]);
    let tokenizer_keys = |m: &Metadata| -> Vec<(String, Value)> {
        m.entries()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned()
            .collect()
    };
    let mut want = tokenizer_keys(&metadata_of(&p));
    want.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
    let mut got = tokenizer_keys(&metadata_of(&own));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got.iter().map(|e| &e.0).collect::<Vec<_>>(),
        want.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(g.1 == w.1, "{} differs from the original GGUF's", g.0);
    }
    // llama.cpp's verdict on such a file (tests/oracle/llama_tokenize_roundtrip.py):
    // llama-tokenize gave the original's ids for every sample.
    let verdict = golden("llama-tokenize-roundtrip");
    assert_eq!(verdict["identical"], true, "{verdict}");
    for row in verdict["samples"].as_array().unwrap() {
        assert_eq!(row["original"], row["round_trip"], "{}", row["text"]);
    }

    // What transformers' GGUF import saves: refused, with the way out.
    let import = tmp.path().join("import");
    std::fs::create_dir(&import).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(hf.join(f), import.join(f)).unwrap();
    }
    std::fs::copy(
        common::fixture("tokenizer/smollm2-hf-form/tokenizer_config.json"),
        import.join("tokenizer_config.json"),
    )
    .unwrap();
    let tj = tokenizer::hf_tokenizer_json(&metadata_of(&p)).unwrap();
    std::fs::write(import.join("tokenizer.json"), tj.to_string()).unwrap();
    let out = common::llmtool()
        .args(["quantize", "q8_0", import.to_str().unwrap(), "--out"])
        .arg(tmp.path().join("broken.gguf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("byte-level BPE vocabulary saved as a Llama tokenizer"),
        "{err}"
    );
    assert!(!tmp.path().join("broken.gguf").exists());
}
