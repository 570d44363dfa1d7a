//! GGUF metadata → the tokenizer.json (and tokenizer_config.json,
//! special_tokens_map.json) transformers' GGUF import builds.
//!
//! transformers picks its converter by `general.architecture`, not by
//! `tokenizer.ggml.model`: for `qwen2`/`qwen3` it is `GGUFQwen2Converter`
//! (byte-level BPE as Qwen ships it); for `llama` it is `GGUFLlamaConverter`, which
//! makes a BPE with byte fallback either way and, for a `gpt2` tokenizer
//! (Llama-3, SmolLM), swaps in the byte-level pre-tokenizer and decoder. It
//! ignores `tokenizer.ggml.pre` and `add_bos_token` (LlamaTokenizerFast always
//! adds BOS), and without merges it rebuilds them from the scores. We build
//! the same thing so that a model converted back to HF tokenizes as the
//! reference import does, with one exception: a byte-level vocabulary under
//! a Llama architecture is written as its Hub repo ships it, because the
//! import's form reads back through llama.cpp's converter as SentencePiece.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Map, Value as Json};
use tokenizers::Tokenizer;

use super::{keys, token_type, Result, TokenizerError};
use crate::model::family::GgufArch;
use crate::store::atomic::AtomicFile;
use crate::store::gguf::{Array, Metadata, Value};

/// The special tokens `GGUFQwen2Converter` adds, and Qwen2TokenizerFast's
/// default unk/eos/pad token.
const QWEN2_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Qwen2Converter's pre-tokenizer split pattern (convert_slow_tokenizer.py).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const SPACE: &str = "\u{2581}";

fn meta_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Metadata(msg.into())
}

fn string_array<'a>(meta: &'a Metadata, key: &str) -> Result<Option<Vec<&'a str>>> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Array(Array::String(items))) => Ok(Some(items.iter().collect())),
        Some(_) => Err(meta_err(format!("{key} must be an array of strings"))),
    }
}

fn number_array(meta: &Metadata, key: &str) -> Result<Option<Vec<f64>>> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .to_f64s()
            .ok_or_else(|| meta_err(format!("{key} must be a numeric array")))
            .map(Some),
        Some(_) => Err(meta_err(format!("{key} must be a numeric array"))),
    }
}

/// An id key, checked against the vocabulary.
fn token_id(meta: &Metadata, key: &str, n: usize) -> Result<Option<usize>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < n => Ok(Some(id as usize)),
            _ => Err(meta_err(format!(
                "{key} is {} but the vocabulary has {n} tokens",
                v.to_json()
            ))),
        },
    }
}

/// Merges rebuilt from scores, as `GGUFTokenizerSkeleton` does for a GGUF
/// without merges (SentencePiece-style vocabularies): every split of every
/// token into two vocabulary tokens, ordered by the token's score (stable),
/// and within a token by the pieces' scores, both descending.
fn merges_from_scores(tokens: &[&str], scores: &[f64]) -> Vec<(String, String)> {
    let mut score: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    for (t, s) in tokens.iter().zip(scores) {
        score.insert(t, *s);
    }
    let mut seen = HashSet::with_capacity(tokens.len());
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for t in tokens {
        if !seen.insert(*t) {
            continue;
        }
        let piece_score = score[t];
        let mut local: Vec<(&str, &str, f64)> = t
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| {
                let (l, r) = t.split_at(i);
                (score.contains_key(l) && score.contains_key(r)).then_some((l, r, piece_score))
            })
            .collect();
        local.sort_by(|a, b| {
            (score[b.0], score[b.1])
                .partial_cmp(&(score[a.0], score[a.1]))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special,
    })
}

/// What transformers' import decided, shared by the three files we write.
struct Built {
    tokenizer_json: Json,
    /// transformers' tokenizer class for tokenizer_config.json.
    class: &'static str,
    /// LlamaTokenizerFast's add_bos_token/add_eos_token (None: not written).
    add_bos_eos: Option<(bool, bool)>,
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    pad: Option<String>,
    clean_up_spaces: bool,
    /// tokenizer_config.json's `add_prefix_space` (None: not written).
    add_prefix_space: Option<bool>,
}

fn build(meta: &Metadata) -> Result<Built> {
    let arch = meta
        .str("general.architecture")
        .ok_or_else(|| meta_err("general.architecture is missing"))?;
    match GgufArch::transformers_tokenizer(arch) {
        Some(GgufArch::Qwen2) => return build_qwen2(meta),
        Some(GgufArch::Llama) => {}
        None => {
            return Err(meta_err(format!(
                "architecture '{arch}': writing an HF tokenizer follows transformers' \
                 GGUFLlamaConverter ({}) and GGUFQwen2Converter ({}) only",
                GgufArch::transformers_tokenizer_names(GgufArch::Llama).join(", "),
                GgufArch::transformers_tokenizer_names(GgufArch::Qwen2).join(", ")
            )))
        }
    }
    let tokens = string_array(meta, keys::TOKENS)?.ok_or_else(|| {
        meta_err(format!(
            "{} is missing: the file has no vocabulary",
            keys::TOKENS
        ))
    })?;
    let n = tokens.len();
    let model = meta.str(keys::MODEL).unwrap_or("llama");
    let byte_level = model != "llama";
    let types = number_array(meta, keys::TOKEN_TYPE)?;
    let merges: Vec<(String, String)> = match string_array(meta, keys::MERGES)? {
        Some(m) => split_merges(&m)?,
        None => {
            let scores = number_array(meta, keys::SCORES)?.ok_or_else(|| {
                meta_err(format!(
                    "neither {} nor {} is present",
                    keys::MERGES,
                    keys::SCORES
                ))
            })?;
            if scores.len() != n {
                return Err(meta_err(format!(
                    "{} has {} entries for {n} tokens",
                    keys::SCORES,
                    scores.len()
                )));
            }
            merges_from_scores(&tokens, &scores)
        }
    };
    let bos_id = token_id(meta, keys::BOS_ID, n)?;
    let eos_id = token_id(meta, keys::EOS_ID, n)?;
    let unk_id = token_id(meta, keys::UNK_ID, n)?;
    let pad_id = token_id(meta, keys::PAD_ID, n)?;
    // LlamaTokenizerFast adds BOS to every encoding; transformers takes the
    // token for it from bos_token_id (and needs eos_token_id present).
    let (Some(bos_id), Some(eos_id)) = (bos_id, eos_id) else {
        return Err(meta_err(format!(
            "{} and {} are both needed (transformers' LlamaTokenizerFast adds BOS)",
            keys::BOS_ID,
            keys::EOS_ID
        )));
    };
    let bos = tokens[bos_id].to_string();
    let unk = unk_id.map(|i| tokens[i].to_string());

    let mut added = Vec::new();
    let mut added_content = HashSet::new();
    let mut push_special = |id: usize, added: &mut Vec<Json>| {
        if added_content.insert(tokens[id]) {
            added.push(added_token(id, tokens[id], true));
        }
    };
    match &types {
        Some(t) => {
            for (id, ty) in t.iter().enumerate() {
                if *ty == f64::from(token_type::CONTROL) && id < n {
                    push_special(id, &mut added);
                }
            }
        }
        None => {
            for id in [unk_id, Some(bos_id)].into_iter().flatten() {
                push_special(id, &mut added);
            }
        }
    }
    // The special tokens the tokenizer names are added on load when absent.
    for id in [Some(bos_id), unk_id].into_iter().flatten() {
        push_special(id, &mut added);
    }

    let add_prefix_space = match meta.get(keys::ADD_SPACE_PREFIX) {
        Some(Value::Bool(b)) => *b,
        _ => true,
    };
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE});
    let (normalizer, pre_tokenizer) = if byte_level {
        (
            json!({"type": "Sequence", "normalizers": []}),
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}),
        )
    } else {
        let mut seq = Vec::new();
        if add_prefix_space {
            seq.push(json!({"type": "Prepend", "prepend": SPACE}));
        }
        seq.push(replace);
        (json!({"type": "Sequence", "normalizers": seq}), Json::Null)
    };
    let mut decoders = vec![
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
        json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
    ];
    if byte_level {
        decoders.push(json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}));
    }
    if add_prefix_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let post_processor = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos.as_str(): {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    });
    let vocab = vocab_json(&tokens);
    let merges = merges_json(merges);
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    Ok(Built {
        tokenizer_json,
        class: "LlamaTokenizer",
        add_bos_eos: Some((true, false)),
        bos: Some(bos),
        eos: Some(tokens[eos_id].to_string()),
        unk,
        pad: pad_id.map(|i| tokens[i].to_string()),
        clean_up_spaces: byte_level,
        add_prefix_space: None,
    })
}

/// The vocabulary as tokenizer.json's `model.vocab`. A repeated token keeps
/// its first position and its last id, as a Python dict comprehension does.
fn vocab_json(tokens: &[&str]) -> Map<String, Json> {
    let mut vocab = Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    vocab
}

/// `tokenizer.ggml.merges` entries split at their space, as transformers does.
fn split_merges(merges: &[&str]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .map(|s| {
            let mut parts = s.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(meta_err(format!(
                    "{}: merge {s:?} is not two tokens",
                    keys::MERGES
                ))),
            }
        })
        .collect()
}

fn merges_json(merges: Vec<(String, String)>) -> Vec<Json> {
    merges.into_iter().map(|(a, b)| json!([a, b])).collect()
}

/// The tokens and merges a byte-level BPE is built from.
fn tokens_and_merges(meta: &Metadata) -> Result<(Vec<&str>, Vec<&str>)> {
    let tokens = string_array(meta, keys::TOKENS)?.ok_or_else(|| {
        meta_err(format!(
            "{} is missing: the file has no vocabulary",
            keys::TOKENS
        ))
    })?;
    let merges = string_array(meta, keys::MERGES)?.ok_or_else(|| {
        meta_err(format!(
            "{} is missing (a byte-level BPE needs merges)",
            keys::MERGES
        ))
    })?;
    Ok((tokens, merges))
}

/// `GGUFQwen2Converter`: byte-level BPE with Qwen2's split regex, NFC,
/// and `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` added as special.
fn build_qwen2(meta: &Metadata) -> Result<Built> {
    let (tokens, merges) = tokens_and_merges(meta)?;
    let n = tokens.len();
    let vocab = vocab_json(&tokens);
    let merges = merges_json(split_merges(&merges)?);
    let mut added = Vec::new();
    for s in QWEN2_SPECIALS {
        let Some(id) = vocab.get(s).and_then(Json::as_u64) else {
            return Err(meta_err(format!(
                "{s} is not in {}: transformers' Qwen2 import would append it as a new token",
                keys::TOKENS
            )));
        };
        added.push(added_token(id as usize, s, true));
    }
    let add_prefix_space = matches!(meta.get(keys::ADD_SPACE_PREFIX), Some(Value::Bool(true)));
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": false},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    let named = |key: &str| -> Result<String> {
        Ok(match token_id(meta, key, n)? {
            Some(i) => tokens[i].to_string(),
            None => QWEN2_SPECIALS[0].to_string(),
        })
    };
    Ok(Built {
        tokenizer_json,
        class: "Qwen2Tokenizer",
        add_bos_eos: None,
        bos: None,
        eos: Some(named(keys::EOS_ID)?),
        unk: Some(QWEN2_SPECIALS[0].to_string()),
        pad: Some(named(keys::PAD_ID)?),
        clean_up_spaces: false,
        add_prefix_space: None,
    })
}

/// The original Hub form of a byte-level BPE tokenizer, by llama.cpp's
/// `tokenizer.ggml.pre` name: its pre-tokenizer, transformers class and
/// `ignore_merges`. `smollm` is SmolLM2's tokenizer.json
/// (fixtures/tokenizer/smollm2-gpt2, which llama.cpp's converter reads back
/// as `smollm`); `gpt-2` is GPT-2's; `llama-bpe` is Meta-Llama-3's.
fn hub_form(pre: &str) -> Option<(Json, &'static str, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    Some(match pre {
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "GPT2Tokenizer",
            false,
        ),
        "gpt-2" => (byte_level(true), "GPT2Tokenizer", false),
        "llama-bpe" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                byte_level(false)]}),
            "PreTrainedTokenizerFast",
            true,
        ),
        _ => return None,
    })
}

/// Meta-Llama-3's pre-tokenizer split pattern (its tokenizer.json).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What [`write_hf_tokenizer`] writes: for a byte-level BPE vocabulary
/// (`tokenizer.ggml.model` gpt2) under a Llama architecture whose
/// pre-tokenizer is known, the tokenizer as its Hub repo ships it, so that
/// llama.cpp's converter and ours read the directory back to the same
/// `tokenizer.*` keys. transformers' GGUF import (what [`build`] mirrors)
/// writes a Llama tokenizer with byte fallback there instead, which both
/// converters take for SentencePiece (`tokenizer.ggml.model` llama, `pre`
/// default): a GGUF made from it detokenizes as `ĊĊTheĠ…`. Otherwise the
/// import's form.
fn build_for_hub(meta: &Metadata) -> Result<Built> {
    let llama = meta
        .str("general.architecture")
        .and_then(GgufArch::transformers_tokenizer)
        == Some(GgufArch::Llama);
    let form = meta.str(keys::PRE).and_then(hub_form);
    match form {
        Some(form) if llama && meta.str(keys::MODEL) == Some("gpt2") => {
            build_byte_level(meta, form)
        }
        _ => build(meta),
    }
}

fn build_byte_level(
    meta: &Metadata,
    (pre_tokenizer, class, ignore_merges): (Json, &'static str, bool),
) -> Result<Built> {
    let (tokens, merges) = tokens_and_merges(meta)?;
    let n = tokens.len();
    let types = number_array(meta, keys::TOKEN_TYPE)?.unwrap_or_default();
    let mut added = Vec::new();
    for (id, ty) in types.iter().enumerate().take(n) {
        if *ty == f64::from(token_type::CONTROL) {
            added.push(added_token(id, tokens[id], true));
        } else if *ty == f64::from(token_type::USER_DEFINED) {
            added.push(added_token(id, tokens[id], false));
        }
    }
    let name = |key: &str| -> Result<Option<String>> {
        Ok(token_id(meta, key, n)?.map(|i| tokens[i].to_string()))
    };
    let bos = name(keys::BOS_ID)?;
    let add_bos = matches!(meta.get(keys::ADD_BOS), Some(Value::Bool(true)));
    let byte_level_post = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let post_processor = match (&bos, add_bos) {
        (Some(b), true) => json!({"type": "Sequence", "processors": [byte_level_post, {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {b.as_str(): {"id": b, "ids": [token_id(meta, keys::BOS_ID, n)?], "tokens": [b]}},
        }]}),
        _ => byte_level_post,
    };
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab_json(&tokens),
            "merges": merges_json(split_merges(&merges)?),
        },
    });
    Ok(Built {
        tokenizer_json,
        class,
        add_bos_eos: None,
        bos,
        eos: name(keys::EOS_ID)?,
        unk: name(keys::UNK_ID)?,
        pad: name(keys::PAD_ID)?,
        clean_up_spaces: false,
        add_prefix_space: Some(false),
    })
}

/// The tokenizer.json transformers' GGUF import builds from this metadata.
pub fn hf_tokenizer_json(meta: &Metadata) -> Result<Json> {
    Ok(build(meta)?.tokenizer_json)
}

/// The tokenizer of a GGUF model, as the `tokenizers` library runs it
/// (encodes as transformers' GGUF import does).
pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer> {
    let text = serde_json::to_string(&hf_tokenizer_json(meta)?).expect("JSON values serialize");
    Tokenizer::from_str(&text).map_err(|e| TokenizerError::Engine {
        path: PathBuf::from("<tokenizer.json built from GGUF metadata>"),
        msg: e.to_string(),
    })
}

fn write_json(path: &Path, value: &Json) -> Result<PathBuf> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    let mut f = AtomicFile::create(path)?;
    f.write_all(text.as_bytes())?;
    Ok(f.commit()?)
}

/// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json
/// into `out_dir` (created if needed; each file written atomically): a
/// byte-level vocabulary with a known pre-tokenizer in its Hub form (see
/// [`build_for_hub`]), anything else so that
/// `AutoTokenizer.from_pretrained(out_dir)` loads a LlamaTokenizerFast that
/// encodes as transformers' GGUF import of the same metadata. The config
/// adds what the import leaves out: the real EOS token (the import sets
/// EOS to the BOS token), the padding token, `model_max_length` from
/// `{arch}.context_length` and the chat template. Returns the paths written.
pub fn write_hf_tokenizer(meta: &Metadata, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let b = build_for_hub(meta)?;
    std::fs::create_dir_all(out_dir).map_err(|e| TokenizerError::Io {
        path: out_dir.into(),
        source: e,
    })?;
    let mut decoder = Map::new();
    for a in b.tokenizer_json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut e = a.as_object().cloned().unwrap_or_default();
        let id = e.remove("id").unwrap_or(Json::Null);
        decoder.insert(id.to_string(), Json::Object(e));
    }
    let arch = meta.str("general.architecture").unwrap_or("llama");
    let mut config = Map::new();
    if let Some(a) = b.add_prefix_space {
        config.insert("add_prefix_space".into(), json!(a));
    }
    if let Some((add_bos, add_eos)) = b.add_bos_eos {
        config.insert("add_bos_token".into(), json!(add_bos));
        config.insert("add_eos_token".into(), json!(add_eos));
    }
    config.insert("added_tokens_decoder".into(), Json::Object(decoder));
    config.insert("bos_token".into(), json!(b.bos));
    config.insert("eos_token".into(), json!(b.eos));
    config.insert("unk_token".into(), json!(b.unk));
    config.insert("pad_token".into(), json!(b.pad));
    config.insert(
        "clean_up_tokenization_spaces".into(),
        json!(b.clean_up_spaces),
    );
    if b.add_bos_eos.is_some() {
        config.insert("legacy".into(), json!(true));
    }
    if let Some(ctx) = meta.u64(&format!("{arch}.context_length")) {
        config.insert("model_max_length".into(), json!(ctx));
    }
    config.insert("tokenizer_class".into(), json!(b.class));
    if let Some(ct) = meta.str(keys::CHAT_TEMPLATE) {
        config.insert("chat_template".into(), json!(ct));
    }
    let mut map = Map::new();
    for (k, v) in [
        ("bos_token", &b.bos),
        ("eos_token", &b.eos),
        ("unk_token", &b.unk),
        ("pad_token", &b.pad),
    ] {
        if let Some(v) = v {
            map.insert(k.into(), json!(v));
        }
    }
    Ok(vec![
        write_json(&out_dir.join("tokenizer.json"), &b.tokenizer_json)?,
        write_json(
            &out_dir.join("tokenizer_config.json"),
            &Json::Object(config),
        )?,
        write_json(&out_dir.join("special_tokens_map.json"), &Json::Object(map))?,
    ])
}
