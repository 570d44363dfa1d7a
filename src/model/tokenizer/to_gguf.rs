//! HF directory → the `tokenizer.*` GGUF entries `convert_hf_to_gguf.py`
//! writes, in its order and with its value types.
//!
//! Length: over 800 lines because it follows llama.cpp's converter
//! (`get_vocab_base`, `_set_vocab_gpt2`, `_set_vocab_llama_hf`,
//! `_create_vocab_sentencepiece`, `SpecialVocab`) in its order, so that a
//! reader can hold the two side by side; each vocabulary path is a function.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::{keys, pre_table::PRE_BY_HASH, token_type, Result, TokenizerError};
use crate::model::family::GgufArch;
use crate::store::gguf::{Array, Value};
use crate::store::hex;

/// The text whose encoding identifies a BPE pre-tokenizer (`chktxt` of
/// `get_vocab_base_pre` in llama.cpp's `conversion/base.py`).
pub const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1f680} (normal) \u{1f636}\u{200d}\u{1f32b}\u{fe0f} (multiple emojis concatenated) \u{2705} \u{1f999}\u{1f999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17b6}\u{1793}\u{17cb}\u{178f}\u{17c2}\u{1796}\u{17b7}\u{179f}\u{17c1}\u{179f}\u{17a2}\u{17b6}\u{1785}\u{1f601} ?\u{6211}\u{60f3}\u{5728}apple\u{5de5}\u{4f5c}1314151\u{5929}\u{ff5e} ------======= \u{43d}\u{435}\u{449}\u{43e} \u{43d}\u{430} \u{411}\u{44a}\u{43b}\u{433}\u{430}\u{440}\u{441}\u{43a}\u{438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// The special-token kinds `SpecialVocab` looks for, in its order.
const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// GGUF key of a special-token id kind (`SpecialVocab.add_to_gguf` finds a
/// writer method per kind; `cls` has none and is skipped upstream too).
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => keys::BOS_ID,
        "eos" => keys::EOS_ID,
        "unk" => keys::UNK_ID,
        "sep" => keys::SEP_ID,
        "pad" => keys::PAD_ID,
        "mask" => keys::MASK_ID,
        "eot" => keys::EOT_ID,
        "eom" => keys::EOM_ID,
        _ => return None,
    })
}

fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => keys::ADD_BOS,
        "eos" => keys::ADD_EOS,
        "sep" => keys::ADD_SEP,
        _ => return None,
    })
}

/// Ordered metadata where setting a key again replaces its value in place,
/// as gguf-py's writer does with a duplicated key.
#[derive(Default)]
struct Kv(Vec<(String, Value)>);

impl Kv {
    fn set(&mut self, key: &str, v: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.0.push((key.to_string(), v)),
        }
    }
}

/// `tokenizer.ggml.token_type`: one i32 per token.
fn token_types(types: Vec<i32>) -> Value {
    Value::Array(Array::I32(types))
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::String(items.into_iter().collect()))
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TokenizerError::Io {
                path: path.into(),
                source: e,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Invalid {
            path: path.into(),
            msg: format!("not valid JSON: {e}"),
        })
}

/// Python truthiness of a JSON value.
fn truthy(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Object(m)) => !m.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Number(n)) => n.as_f64() != Some(0.0),
    }
}

/// The text of a special-token entry: a string or `{"content": ...}`.
fn token_content(v: &Json) -> Option<&str> {
    match v {
        Json::String(s) => Some(s),
        Json::Object(m) => m.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// Everything read from the directory once.
struct HfDir {
    dir: PathBuf,
    tj_path: PathBuf,
    /// tokenizer.json, Null when absent (a SentencePiece-only repo).
    tj: Json,
    /// tokenizer_config.json, when present.
    tc: Option<Map<String, Json>>,
    config: Map<String, Json>,
    tok: Option<Tokenizer>,
}

impl HfDir {
    fn open(dir: &Path) -> Result<HfDir> {
        let config_path = dir.join("config.json");
        let config = match read_json(&config_path)? {
            Some(Json::Object(m)) => m,
            Some(_) => {
                return Err(TokenizerError::Invalid {
                    path: config_path,
                    msg: "not a JSON object".into(),
                })
            }
            None => {
                return Err(TokenizerError::Invalid {
                    path: config_path,
                    msg: "missing: the converter needs the model's config.json \
                          (architecture, vocab_size)"
                        .into(),
                })
            }
        };
        let tj_path = dir.join("tokenizer.json");
        let tj = read_json(&tj_path)?.unwrap_or(Json::Null);
        let tc_path = dir.join("tokenizer_config.json");
        let tc = match read_json(&tc_path)? {
            Some(Json::Object(m)) => Some(m),
            Some(_) => {
                return Err(TokenizerError::Invalid {
                    path: tc_path,
                    msg: "not a JSON object".into(),
                })
            }
            None => None,
        };
        let tok = match tj {
            Json::Null => None,
            _ => Some(
                Tokenizer::from_file(&tj_path).map_err(|e| TokenizerError::Engine {
                    path: tj_path.clone(),
                    msg: e.to_string(),
                })?,
            ),
        };
        Ok(HfDir {
            dir: dir.into(),
            tj_path,
            tj,
            tc,
            config,
            tok,
        })
    }

    /// The fast tokenizer, required by every path but SentencePiece's.
    fn tok(&self) -> Result<&Tokenizer> {
        self.tok
            .as_ref()
            .ok_or_else(|| TokenizerError::Unsupported {
                path: self.tj_path.clone(),
                msg: "missing: without a SentencePiece tokenizer.model, only fast tokenizers \
                  (tokenizer.json) are converted; save the tokenizer with transformers to \
                  create one"
                    .into(),
            })
    }

    fn tc_get(&self, key: &str) -> Option<&Json> {
        self.tc.as_ref().and_then(|m| m.get(key))
    }

    fn invalid(&self, msg: impl Into<String>) -> TokenizerError {
        TokenizerError::Invalid {
            path: self.tj_path.clone(),
            msg: msg.into(),
        }
    }

    /// transformers' `all_special_tokens`: the named special tokens
    /// (tokenizer_config.json first, then special_tokens_map.json) and
    /// `additional_special_tokens`.
    fn named_special_tokens(&self) -> Result<Vec<String>> {
        let stm = match read_json(&self.dir.join("special_tokens_map.json"))? {
            Some(Json::Object(m)) => m,
            _ => Map::new(),
        };
        let pick = |key: &str| -> Option<Json> {
            match self.tc_get(key) {
                Some(v) if truthy(Some(v)) => Some(v.clone()),
                _ => stm.get(key).cloned(),
            }
        };
        let mut out: Vec<String> = Vec::new();
        for typ in SPECIAL_TYPES {
            if let Some(s) = pick(&format!("{typ}_token"))
                .as_ref()
                .and_then(token_content)
            {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
        if let Some(Json::Array(a)) = pick("additional_special_tokens") {
            for s in a.iter().filter_map(token_content) {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Added tokens by id: (content, normalized, special). Named special
    /// tokens that are vocabulary entries but not listed as added become
    /// added special tokens, as transformers' fast tokenizer does on load.
    fn added_tokens(&self) -> Result<Vec<(u32, String, bool, bool)>> {
        let mut out = Vec::new();
        if let Some(list) = self.tj.get("added_tokens").and_then(Json::as_array) {
            for a in list {
                let id = a.get("id").and_then(Json::as_u64);
                let content = a.get("content").and_then(Json::as_str);
                let (Some(id), Some(content)) = (id, content) else {
                    return Err(self.invalid("an added_tokens entry lacks id or content"));
                };
                let flag = |k: &str, d: bool| a.get(k).and_then(Json::as_bool).unwrap_or(d);
                out.push((
                    id as u32,
                    content.to_string(),
                    flag("normalized", true),
                    flag("special", false),
                ));
            }
        }
        let vocab = self.tok()?.get_vocab(true);
        for s in self.named_special_tokens()? {
            if out.iter().any(|(_, c, _, _)| *c == s) {
                continue;
            }
            if let Some(&id) = vocab.get(&s) {
                out.push((id, s, false, true));
            }
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    fn reverse_vocab(&self) -> Result<HashMap<u32, String>> {
        Ok(self
            .tok()?
            .get_vocab(true)
            .into_iter()
            .map(|(t, i)| (i, t))
            .collect())
    }
}

/// The pre-tokenizer name llama.cpp's converter gives the sha256 of a check
/// text encoding, if the hash is in its table.
pub fn pre_from_hash(hash: &str) -> Option<&'static str> {
    PRE_BY_HASH
        .binary_search_by(|(h, _)| (*h).cmp(hash))
        .ok()
        .map(|i| PRE_BY_HASH[i].1)
}

/// The entries `convert_hf_to_gguf.py` writes for the tokenizer of the HF
/// model directory `dir` (config.json, tokenizer.json, tokenizer_config.json,
/// special_tokens_map.json, chat_template.jinja/.json), in its order and
/// with its value types.
///
/// `pre_override` replaces the detected `tokenizer.ggml.pre` of a byte-level
/// BPE tokenizer (required when its hash is not in llama.cpp's table).
///
/// Converted: architectures `LlamaForCausalLM`/`MistralForCausalLM`/
/// `MixtralForCausalLM` (tokenizer.json with byte fallback → model `llama`
/// with the converter's placeholder scores; byte-level BPE → `gpt2`) and
/// `Qwen2ForCausalLM` (`gpt2`); for both, a SentencePiece `tokenizer.model`
/// first when there is one (model `llama` with its scores). Refused with a
/// message: Mistral `tekken.json`, other architectures and non-BPE
/// tokenizer.json models.
pub fn gguf_metadata_from_hf(
    dir: &Path,
    pre_override: Option<&str>,
) -> Result<Vec<(String, Value)>> {
    let unsupported = |path: PathBuf, msg: String| TokenizerError::Unsupported { path, msg };
    if dir.join("tekken.json").is_file() && !dir.join("tokenizer.json").is_file() {
        return Err(unsupported(
            dir.join("tekken.json"),
            "Mistral tekken tokenizers are not converted".into(),
        ));
    }
    let hf = HfDir::open(dir)?;
    let arch = hf
        .config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    // Converter classes: `LlamaModel` tries sentencepiece, then the HF llama
    // vocab, then GPT-2 BPE; `Qwen2Model` sentencepiece, then GPT-2 BPE.
    let Some(converter) = GgufArch::of_hf_class(&arch) else {
        return Err(unsupported(
            dir.join("config.json"),
            format!(
                "architecture '{arch}': tokenizer conversion follows the converter's \
                 Llama/Mistral and Qwen2 paths only"
            ),
        ));
    };
    let llama = converter == GgufArch::Llama;
    let mut kv = Kv::default();
    if llama {
        if hf.tc_get("tokenizer_class").and_then(Json::as_str) == Some("HybridDNATokenizer") {
            return Err(unsupported(
                dir.join("tokenizer_config.json"),
                "HybridDNATokenizer is not converted".into(),
            ));
        }
        if let Some(Json::Bool(b)) = hf.tc_get("add_prefix_space") {
            kv.set(keys::ADD_SPACE_PREFIX, Value::Bool(*b));
        }
    }
    // Both converter classes try SentencePiece first.
    let spm_path = dir.join("tokenizer.model");
    if spm_path.is_file() {
        sentencepiece_vocab(&hf, &spm_path, &mut kv)?;
    } else {
        hf_json_vocab(&hf, llama, pre_override, &mut kv)?;
    }
    if llama {
        match hf.config.get("vocab_size").and_then(Json::as_u64) {
            Some(32016) => {
                return Err(unsupported(
                    dir.join("config.json"),
                    "vocab_size 32016 (CodeLlama infill tokens) is not converted".into(),
                ))
            }
            // The converter's rule for Granite-small-sized vocabularies,
            // which SmolLM's 49152 also meets.
            Some(49152) => kv.set(keys::ADD_BOS, Value::Bool(false)),
            _ => {}
        }
    }
    Ok(kv.0)
}

/// The vocabulary from tokenizer.json: `LlamaHfVocab` takes BPE with byte
/// fallback and a Sequence decoder (Llama architectures only); anything else
/// falls through to the GPT-2 path.
fn hf_json_vocab(hf: &HfDir, llama: bool, pre_override: Option<&str>, kv: &mut Kv) -> Result<()> {
    hf.tok()?;
    let model = &hf.tj["model"];
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err(TokenizerError::Unsupported {
            path: hf.tj_path.clone(),
            msg: format!(
                "model type {}: only BPE tokenizers (byte-level or with byte fallback) are converted",
                model.get("type").unwrap_or(&Json::Null)
            ),
        });
    }
    let llama_hf = llama
        && model.get("byte_fallback").and_then(Json::as_bool) == Some(true)
        && hf.tj["decoder"].get("type").and_then(Json::as_str) == Some("Sequence");
    if llama_hf {
        llama_hf_vocab(hf, kv)
    } else {
        gpt2_vocab(hf, pre_override, kv)
    }
}

/// The most entries a vocabulary may have: a config.json `vocab_size` past
/// this is a corrupt file, not a tokenizer (the largest real vocabularies
/// have about 260k entries).
const MAX_VOCAB: u64 = 1 << 24;

/// `_create_vocab_sentencepiece` + `_set_vocab_sentencepiece`: the pieces of
/// `tokenizer.model` with their scores and types (a user-defined piece stays
/// NORMAL, as upstream), in `vocab_size` slots (config.json, else the piece
/// count; unfilled slots are `[PADi]`, score -10000, UNUSED), edited by
/// added_tokens.json and then tokenizer_config.json's added_tokens_decoder
/// (score -1000; CONTROL when special or special-looking, else
/// USER_DEFINED with "▁" turned into spaces); ids past the vocabulary are
/// skipped with a warning upstream and here. Model "llama", pre "default".
fn sentencepiece_vocab(hf: &HfDir, path: &Path, kv: &mut Kv) -> Result<()> {
    let invalid = |path: &Path, msg: String| TokenizerError::Invalid {
        path: path.into(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| TokenizerError::Io {
        path: path.into(),
        source: e,
    })?;
    let pieces = super::spm::read_pieces(&bytes).map_err(|why| {
        invalid(
            path,
            format!(
                "not a SentencePiece model ({why}); llama.cpp's converter reads tokenizer.model \
                 before tokenizer.json, so a stray file here must be removed"
            ),
        )
    })?;
    let config_path = hf.dir.join("config.json");
    let n = match ["vocab_size_per_layer_input", "vocab_size"]
        .iter()
        .find_map(|k| hf.config.get(*k))
    {
        None | Some(Json::Null) => pieces.len() as u64,
        Some(v) => match v.as_u64() {
            Some(0) => pieces.len() as u64,
            Some(n) if n <= MAX_VOCAB => n,
            _ => {
                return Err(invalid(
                    &config_path,
                    format!("vocab_size {v} is not a vocabulary size; fix config.json"),
                ))
            }
        },
    } as usize;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![token_type::UNUSED; n];
    for (id, p) in pieces.into_iter().enumerate().take(n) {
        use super::spm::PieceType as T;
        types[id] = match p.kind {
            T::Unknown => token_type::UNKNOWN,
            T::Control => token_type::CONTROL,
            T::Unused => token_type::UNUSED,
            T::Byte => token_type::BYTE,
            T::Normal | T::UserDefined => token_type::NORMAL,
        };
        tokens[id] = p.text;
        scores[id] = p.score;
    }
    let added_path = hf.dir.join("added_tokens.json");
    if let Some(added) = read_json(&added_path)? {
        let Json::Object(added) = added else {
            return Err(invalid(&added_path, "not a JSON object".into()));
        };
        for (content, id) in added {
            let id = id.as_u64().ok_or_else(|| {
                invalid(
                    &added_path,
                    format!("{content:?}: id {id} is not a token id"),
                )
            })? as usize;
            if id < n {
                tokens[id] = content;
                scores[id] = -1000.0;
                types[id] = token_type::USER_DEFINED;
            }
        }
    }
    let tc_path = hf.dir.join("tokenizer_config.json");
    if let Some(Json::Object(decoder)) = hf.tc_get("added_tokens_decoder") {
        for (id_text, entry) in decoder {
            let id: usize = id_text.parse().map_err(|_| {
                invalid(
                    &tc_path,
                    format!("added_tokens_decoder key {id_text:?} is not a token id"),
                )
            })?;
            let Some(content) = entry.get("content").and_then(Json::as_str) else {
                return Err(invalid(
                    &tc_path,
                    format!("added_tokens_decoder {id_text} has no content"),
                ));
            };
            if id >= n {
                continue;
            }
            if truthy(entry.get("special")) || looks_special(content) {
                types[id] = token_type::CONTROL;
                tokens[id] = content.to_string();
            } else {
                types[id] = token_type::USER_DEFINED;
                tokens[id] = content.replace('\u{2581}', " ");
            }
            scores[id] = -1000.0;
        }
    }
    llama_vocab(hf, tokens, scores, types, kv)
}

/// Writes a `llama`-model vocabulary (pre "default", no merges) and the
/// special tokens, as `_set_vocab_sentencepiece` and `_set_vocab_llama_hf`
/// both do.
fn llama_vocab(
    hf: &HfDir,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    kv: &mut Kv,
) -> Result<()> {
    let n = tokens.len();
    kv.set(keys::MODEL, Value::String("llama".into()));
    kv.set(keys::PRE, Value::String("default".into()));
    kv.set(keys::TOKENS, strings(tokens));
    kv.set(keys::SCORES, Value::Array(Array::F32(scores)));
    kv.set(keys::TOKEN_TYPE, token_types(types));
    special_vocab(hf, false, Some(n as u32), kv)
}

/// `LlamaHfVocab` + `_set_vocab_llama_hf`: model "llama", pre "default",
/// every score -1000 (the converter's placeholder), no merges.
fn llama_hf_vocab(hf: &HfDir, kv: &mut Kv) -> Result<()> {
    let base = hf.tok()?.get_vocab_size(false) as u32;
    let added = hf.added_tokens()?;
    let vocab = hf.tok()?.get_vocab(true);
    let mut special_ids = HashSet::new();
    let mut specials = HashMap::new();
    for s in hf.named_special_tokens()? {
        let Some(&id) = vocab.get(&s) else {
            return Err(hf.invalid(format!(
                "special token {s:?} (tokenizer_config.json / special_tokens_map.json) is not in the vocabulary"
            )));
        };
        special_ids.insert(id);
        specials.insert(s, id);
    }
    let extra: Vec<&(u32, String, bool, bool)> = added.iter().filter(|a| a.0 >= base).collect();
    let extra_ids: HashSet<u32> = extra.iter().map(|a| a.0).collect();
    let reverse = hf.reverse_vocab()?;
    let is_byte = |t: &str| {
        let b = t.as_bytes();
        b.len() == 6
            && t.starts_with("<0x")
            && t.ends_with('>')
            && b[3..5].iter().all(u8::is_ascii_hexdigit)
    };
    let mut tokens = Vec::new();
    let mut types = Vec::new();
    for id in 0..base {
        if extra_ids.contains(&id) {
            continue;
        }
        let Some(t) = reverse.get(&id) else {
            return Err(hf.invalid(format!(
                "no token has id {id} (below the vocabulary size {base})"
            )));
        };
        types.push(if is_byte(t) {
            token_type::BYTE
        } else if special_ids.contains(&id) {
            token_type::CONTROL
        } else {
            token_type::NORMAL
        });
        tokens.push(t.clone());
    }
    for (_, content, _, _) in extra {
        types.push(match specials.get(content) {
            Some(_) => token_type::CONTROL,
            None => token_type::USER_DEFINED,
        });
        tokens.push(content.clone());
    }
    let scores = vec![-1000.0; tokens.len()];
    llama_vocab(hf, tokens, scores, types, kv)
}

/// `does_token_look_special` of the converter.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// transformers' `clean_up_tokenization` (applied by `decode` when the
/// tokenizer_config asks for it).
fn clean_up(s: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(s.to_string(), |acc, (a, b)| acc.replace(a, b))
}

/// The ids transformers' `tokenizer.encode(text)` gives (special tokens
/// added). LlamaTokenizer(Fast) rebuilds its post-processor from
/// add_bos_token/add_eos_token on load, so for that class BOS/EOS come from
/// the config rather than tokenizer.json.
fn transformers_encode(hf: &HfDir, text: &str) -> Result<Vec<u32>> {
    let engine = |e: tokenizers::Error| TokenizerError::Engine {
        path: hf.tj_path.clone(),
        msg: e.to_string(),
    };
    let tok = hf.tok()?;
    let class = hf.tc_get("tokenizer_class").and_then(Json::as_str);
    if !matches!(class, Some("LlamaTokenizer" | "LlamaTokenizerFast")) {
        return Ok(tok.encode(text, true).map_err(engine)?.get_ids().to_vec());
    }
    let vocab = tok.get_vocab(true);
    let id_of = |key: &str| {
        hf.tc_get(key)
            .and_then(token_content)
            .and_then(|t| vocab.get(t).copied())
    };
    let flag = |key: &str, d: bool| hf.tc_get(key).and_then(Json::as_bool).unwrap_or(d);
    let mut ids = Vec::new();
    if flag("add_bos_token", true) {
        ids.extend(id_of("bos_token"));
    }
    ids.extend_from_slice(tok.encode(text, false).map_err(engine)?.get_ids());
    if flag("add_eos_token", false) {
        ids.extend(id_of("eos_token"));
    }
    Ok(ids)
}

/// `get_vocab_base` + `_set_vocab_gpt2`: model "gpt2", the detected pre,
/// tokens padded to config vocab_size with `[PADi]`, types, merges.
fn gpt2_vocab(hf: &HfDir, pre_override: Option<&str>, kv: &mut Kv) -> Result<()> {
    let model = &hf.tj["model"];
    if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        return Err(TokenizerError::Unsupported {
            path: hf.tj_path.clone(),
            msg: "BPE with byte fallback is converted for Llama/Mistral architectures only \
                  (the converter's LlamaHfVocab path)"
                .into(),
        });
    }
    let reverse = hf.reverse_vocab()?;
    let n_vocab = match hf.config.get("vocab_size").and_then(Json::as_u64) {
        Some(n) => n as u32,
        None => reverse.len() as u32,
    };
    if let Some(max) = reverse.keys().max() {
        if *max >= n_vocab {
            return Err(TokenizerError::Invalid {
                path: hf.dir.join("config.json"),
                msg: format!("vocab_size {n_vocab} but the tokenizer has id {max}; fix vocab_size"),
            });
        }
    }
    let pre = match pre_override {
        Some(p) => p.to_string(),
        None => {
            let ids = transformers_encode(hf, CHECK_TEXT)?;
            let text = format!(
                "[{}]",
                ids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let hash = hex(&Sha256::digest(text.as_bytes()));
            match pre_from_hash(&hash) {
                Some(p) => p.to_string(),
                None => {
                    return Err(TokenizerError::UnknownPre {
                        path: hf.tj_path.clone(),
                        hash,
                    })
                }
            }
        }
    };
    let added: HashMap<u32, (String, bool, bool)> = hf
        .added_tokens()?
        .into_iter()
        .map(|(id, c, n, s)| (id, (c, n, s)))
        .collect();
    let clean = hf
        .tc_get("clean_up_tokenization_spaces")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut tokens = Vec::with_capacity(n_vocab as usize);
    let mut types = Vec::with_capacity(n_vocab as usize);
    for i in 0..n_vocab {
        let Some(tok) = reverse.get(&i) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(token_type::UNUSED);
            continue;
        };
        let Some((_, normalized, special)) = added.get(&i) else {
            tokens.push(tok.clone());
            types.push(token_type::NORMAL);
            continue;
        };
        let mut t = tok.clone();
        if !normalized {
            // The converter round-trips unnormalized added tokens through
            // encode/decode (llama.cpp expects them pre-normalized).
            let engine = |e: tokenizers::Error| TokenizerError::Engine {
                path: hf.tj_path.clone(),
                msg: e.to_string(),
            };
            let ids = hf.tok()?.encode(t.as_str(), false).map_err(engine)?;
            t = hf.tok()?.decode(ids.get_ids(), false).map_err(engine)?;
            if clean {
                t = clean_up(&t);
            }
        }
        if *special || looks_special(&t) {
            types.push(token_type::CONTROL);
        } else {
            t = t.replace('\u{2581}', " ");
            types.push(token_type::USER_DEFINED);
        }
        tokens.push(t);
    }
    kv.set(keys::MODEL, Value::String("gpt2".into()));
    kv.set(keys::PRE, Value::String(pre));
    kv.set(keys::TOKENS, strings(tokens));
    kv.set(keys::TOKEN_TYPE, token_types(types));
    special_vocab(hf, true, None, kv)
}

/// gguf-py `SpecialVocab`: merges, special ids, add_*_token, chat template,
/// normalizer flags.
struct Special {
    types: Vec<&'static str>,
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
    n_vocab: Option<u32>,
}

impl Special {
    fn set_id(&mut self, typ: &'static str, v: Option<&Json>, path: &Path) -> Result<()> {
        let id = match v {
            Some(Json::Number(n)) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
            // Python's bool is an int.
            Some(Json::Bool(b)) => *b as i64,
            _ => return Ok(()),
        };
        if id < 0 {
            return Err(TokenizerError::Invalid {
                path: path.into(),
                msg: format!("invalid value for special token type {typ}: {id}"),
            });
        }
        if self.n_vocab.is_none_or(|n| id < n as i64) && !self.ids.iter().any(|(t, _)| *t == typ) {
            self.ids.push((typ, id as u32));
        }
        Ok(())
    }

    fn set_add(&mut self, typ: &'static str, v: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(e) => e.1 = v,
            None => self.add.push((typ, v)),
        }
    }

    fn setdefault_add(&mut self, typ: &'static str, v: bool) {
        if !self.add.iter().any(|(t, _)| *t == typ) {
            self.add.push((typ, v));
        }
    }
}

fn parse_normalizer(n: &Json, lower: &mut Option<bool>, strip: &mut Option<bool>) {
    match n.get("type").and_then(Json::as_str) {
        Some("Lowercase") => *lower = Some(true),
        Some("StripAccents") => *strip = Some(true),
        Some("BertNormalizer") => {
            if let Some(v) = n.get("lowercase").and_then(Json::as_bool) {
                *lower = Some(v);
            }
            if let Some(v) = n.get("strip_accents").and_then(Json::as_bool) {
                *strip = Some(v);
            }
        }
        Some("Sequence") => {
            for m in n
                .get("normalizers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                parse_normalizer(m, lower, strip);
            }
        }
        _ => {}
    }
}

fn special_token_id(tmpl_item: &Json) -> Option<String> {
    tmpl_item
        .get("SpecialToken")
        .and_then(|s| s.get("id"))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn special_vocab(hf: &HfDir, load_merges: bool, n_vocab: Option<u32>, kv: &mut Kv) -> Result<()> {
    let mut sv = Special {
        types: SPECIAL_TYPES.to_vec(),
        ids: Vec::new(),
        add: Vec::new(),
        n_vocab,
    };
    let tj = &hf.tj;
    let mut merges: Vec<String> = Vec::new();
    if load_merges {
        match tj["model"].get("merges").and_then(Json::as_array) {
            Some(m) if !m.is_empty() => {
                if m[0].is_string() {
                    for x in m {
                        merges.push(
                            x.as_str()
                                .ok_or_else(|| hf.invalid("merges mix strings and pairs"))?
                                .to_string(),
                        );
                    }
                } else if m[0]
                    .as_array()
                    .is_some_and(|p| p.len() == 2 && p[0].is_string())
                {
                    // Pairs (transformers ≥ 4.45); a space inside a part is
                    // written as U+0120, as the converter does.
                    for x in m {
                        let pair = x
                            .as_array()
                            .filter(|p| p.len() == 2)
                            .and_then(|p| Some((p[0].as_str()?, p[1].as_str()?)))
                            .ok_or_else(|| {
                                hf.invalid(format!("merge {x} is not a pair of strings"))
                            })?;
                        merges.push(format!(
                            "{} {}",
                            pair.0.replace(' ', "\u{120}"),
                            pair.1.replace(' ', "\u{120}")
                        ));
                    }
                } else {
                    return Err(hf.invalid("unknown tokenizer merges format"));
                }
            }
            _ => {}
        }
    }
    let (mut lower, mut strip) = (None, None);
    if let Some(n) = tj.get("normalizer").filter(|n| truthy(Some(n))) {
        parse_normalizer(n, &mut lower, &mut strip);
    }
    let added_tokens: Vec<Json> = tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    // The converter edits its copy of tokenizer_config as it parses the
    // post-processor; so do we.
    let mut tc = hf.tc.clone();
    let tc_truthy = |tc: &Option<Map<String, Json>>| tc.as_ref().is_some_and(|m| !m.is_empty());
    let get = |tc: &Option<Map<String, Json>>, k: &str| -> Json {
        tc.as_ref()
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or(Json::Null)
    };
    let mut special_bos = get(&tc, "bos_token");
    let mut special_cls = get(&tc, "cls_token");
    let mut special_eos = get(&tc, "eos_token");
    let mut special_sep = get(&tc, "sep_token");
    if !truthy(Some(&special_bos)) && truthy(Some(&special_cls)) && tc_truthy(&tc) {
        special_bos = special_cls.clone();
        tc.as_mut()
            .unwrap()
            .insert("bos_token".into(), special_bos.clone());
    }
    if !truthy(Some(&special_eos)) && truthy(Some(&special_sep)) && tc_truthy(&tc) {
        special_eos = special_sep.clone();
        tc.as_mut()
            .unwrap()
            .insert("eos_token".into(), special_eos.clone());
    }
    if let Some(pp) = tj.get("post_processor").filter(|p| truthy(Some(p))) {
        let procs: Vec<Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(list) => list.clone(),
            None => vec![pp.clone()],
        };
        for proc in &procs {
            match proc.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    sv.setdefault_add("bos", false);
                    sv.setdefault_add("eos", false);
                }
                Some("RobertaProcessing") => {
                    sv.set_add("bos", true);
                    sv.set_add("eos", true);
                    sv.set_add("sep", true);
                    if !truthy(Some(&special_cls)) && tc_truthy(&tc) {
                        special_cls = proc
                            .get("cls")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or_else(|| special_bos.clone());
                        tc.as_mut()
                            .unwrap()
                            .insert("cls_token".into(), special_cls.clone());
                    }
                    if !truthy(Some(&special_sep)) && tc_truthy(&tc) {
                        special_sep = proc
                            .get("sep")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or_else(|| special_eos.clone());
                        tc.as_mut()
                            .unwrap()
                            .insert("sep_token".into(), special_sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let single: Vec<Json> = proc
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let pair: Vec<Json> = proc
                        .get("pair")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let mut special_first: Option<String> = None;
                    let mut special_last: Option<String> = None;
                    if single.len() > 1 {
                        special_first = special_token_id(&single[0]);
                        if let Some(first) = &special_first {
                            let f = Json::String(first.clone());
                            if !tc_truthy(&tc) {
                                special_bos = f.clone();
                            } else if f != special_bos && f != special_cls {
                                if !truthy(Some(&special_bos)) {
                                    special_bos = f.clone();
                                    tc.as_mut().unwrap().insert("bos_token".into(), f.clone());
                                }
                                if !truthy(Some(&special_cls)) {
                                    special_cls = f.clone();
                                    tc.as_mut().unwrap().insert("cls_token".into(), f.clone());
                                }
                            }
                            sv.set_add("bos", f == special_bos || f == special_cls);
                        }
                        special_last = special_token_id(&single[single.len() - 1]);
                        if let Some(last) = &special_last {
                            let l = Json::String(last.clone());
                            if !tc_truthy(&tc) {
                                special_eos = l.clone();
                            } else if l != special_eos {
                                let m = tc.as_mut().unwrap();
                                if !sv.types.contains(&"eot") {
                                    sv.types.push("eot");
                                    m.insert("eot_token".into(), special_eos.clone());
                                } else if !sv.types.contains(&"eom") {
                                    sv.types.push("eom");
                                    m.insert("eom_token".into(), special_eos.clone());
                                }
                                special_eos = l.clone();
                                m.insert("eos_token".into(), l.clone());
                            }
                            sv.set_add("eos", l == special_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let first_matches =
                            special_first.is_some() && special_token_id(&pair[0]) == special_first;
                        let last_matches = special_last.is_some()
                            && special_token_id(&pair[pair.len() - 1]) == special_last;
                        let start = usize::from(first_matches);
                        let stop = pair.len() - usize::from(last_matches);
                        let mid: &[Json] = if start < stop {
                            &pair[start..stop]
                        } else {
                            &[]
                        };
                        if !mid.is_empty() {
                            let seq = |j: &Json| {
                                j.get("Sequence")
                                    .and_then(|s| s.get("id"))
                                    .and_then(Json::as_str)
                                    .map(str::to_string)
                            };
                            let a = seq(&mid[0]);
                            let b = seq(&mid[mid.len() - 1]);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && mid.len() > 2
                            {
                                let inner = &mid[1..mid.len() - 1];
                                let mut add_sep = false;
                                let is_sep_or_eos = |e: &str| {
                                    let e = Json::String(e.to_string());
                                    e == special_sep || e == special_eos
                                };
                                if let Some(e) = special_token_id(&inner[0]) {
                                    if is_sep_or_eos(&e) && special_last.is_none() {
                                        add_sep = true;
                                    }
                                }
                                if inner.len() == 2 {
                                    if let Some(e) = special_token_id(&inner[1]) {
                                        if is_sep_or_eos(&e) {
                                            add_sep = true;
                                        }
                                    }
                                }
                                sv.set_add("sep", add_sep);
                                if add_sep && !truthy(Some(&special_sep)) && tc_truthy(&tc) {
                                    tc.as_mut()
                                        .unwrap()
                                        .insert("sep_token".into(), special_eos.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut chat_template: Option<String> = None;
    if tc_truthy(&tc) {
        let tc = tc.as_ref().unwrap();
        let jinja = hf.dir.join("chat_template.jinja");
        let json_path = hf.dir.join("chat_template.json");
        let mut alt: Option<Json> = None;
        if jinja.is_file() {
            if hf.dir.join("additional_chat_templates").is_dir() {
                return Err(TokenizerError::Unsupported {
                    path: hf.dir.join("additional_chat_templates"),
                    msg: "several named chat templates are not converted".into(),
                });
            }
            let text = std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::Io {
                path: jinja.clone(),
                source: e,
            })?;
            alt = Some(Json::String(text));
        } else if let Some(j) = read_json(&json_path)? {
            alt = j.get("chat_template").cloned();
        }
        let ct = match tc.get("chat_template") {
            Some(v) => Some(v.clone()),
            None => alt,
        };
        match ct {
            Some(Json::String(s)) => chat_template = Some(s),
            Some(Json::Array(_)) => {
                return Err(TokenizerError::Unsupported {
                    path: hf.dir.join("tokenizer_config.json"),
                    msg: "a list of named chat templates is not converted".into(),
                })
            }
            _ => {}
        }
        let tc_path = hf.dir.join("tokenizer_config.json");
        for typ in sv.types.clone() {
            if let Some(Json::Bool(b)) = tc.get(&format!("add_{typ}_token")) {
                sv.setdefault_add(typ, *b);
            }
            let Some(content) = tc.get(&format!("{typ}_token")).and_then(token_content) else {
                continue;
            };
            let id = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content))
                .and_then(|a| a.get("id"));
            sv.set_id(typ, id, &tc_path)?;
        }
    }
    let config_path = hf.dir.join("config.json");
    for typ in sv.types.clone() {
        let key = format!("{typ}_token_id");
        let v = hf
            .config
            .get(&key)
            .filter(|v| !v.is_null())
            .or_else(|| hf.config.get("text_config").and_then(|t| t.get(&key)));
        sv.set_id(typ, v, &config_path)?;
    }
    if !merges.is_empty() {
        kv.set(keys::MERGES, strings(merges));
    }
    for (typ, id) in &sv.ids {
        if let Some(k) = id_key(typ) {
            kv.set(k, Value::U32(*id));
        }
    }
    for (typ, v) in &sv.add {
        if let Some(k) = add_key(typ) {
            kv.set(k, Value::Bool(*v));
        }
    }
    if let Some(ct) = chat_template {
        kv.set(keys::CHAT_TEMPLATE, Value::String(ct));
    }
    if let Some(v) = lower {
        kv.set(keys::NORMALIZER_LOWERCASE, Value::Bool(v));
    }
    if let Some(v) = strip {
        kv.set(keys::NORMALIZER_STRIP_ACCENTS, Value::Bool(v));
    }
    Ok(())
}
