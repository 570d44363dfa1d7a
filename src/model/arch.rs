//! Architecture detection: what a model really is, from its tensor shapes.
//!
//! Hyperparameters are read from `config.json` (HF) or the GGUF metadata,
//! then cross-checked against the tensors, because configs lie or are
//! missing. Wherever a tensor can tell (hidden size, layers, head_dim, KV
//! heads, FFN size, vocab, tied embeddings, biases) the tensor wins and a
//! disagreement becomes a warning carrying both values.
//!
//! Tensor roles are recognised under the HF names of llama/mistral/qwen2
//! (`model.layers.N.self_attn.q_proj.weight`, transformers'
//! `modeling_llama.py`) and their GGUF names (`blk.N.attn_q.weight`,
//! gguf-py `constants.py` TENSOR_NAMES).

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::model::family::Family;
use crate::model::packed::{self, LogicalTensor};
use crate::store::{Container, DType, Model};

/// Version tag of the JSON manifest (documented in `docs/ARCH-MANIFEST.md`).
pub const MANIFEST_SCHEMA: &str = "llmtool.arch/1";

/// The role of a tensor inside a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerPart {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerPart {
    /// A Linear weight of the layer (q/k/v/o, gate/up/down), as opposed to
    /// a norm or a bias: what quantizers quantize.
    pub fn is_projection(self) -> bool {
        matches!(
            self,
            LayerPart::Q
                | LayerPart::K
                | LayerPart::V
                | LayerPart::O
                | LayerPart::Gate
                | LayerPart::Up
                | LayerPart::Down
        )
    }
}

/// The role of a tensor in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embed,
    LmHead,
    FinalNorm,
    Layer(u64, LayerPart),
    Other,
}

const HF_LAYER_PARTS: &[(&str, LayerPart)] = &[
    ("input_layernorm.weight", LayerPart::AttnNorm),
    ("self_attn.q_proj.weight", LayerPart::Q),
    ("self_attn.k_proj.weight", LayerPart::K),
    ("self_attn.v_proj.weight", LayerPart::V),
    ("self_attn.o_proj.weight", LayerPart::O),
    ("self_attn.q_proj.bias", LayerPart::QBias),
    ("self_attn.k_proj.bias", LayerPart::KBias),
    ("self_attn.v_proj.bias", LayerPart::VBias),
    ("post_attention_layernorm.weight", LayerPart::FfnNorm),
    ("mlp.gate_proj.weight", LayerPart::Gate),
    ("mlp.up_proj.weight", LayerPart::Up),
    ("mlp.down_proj.weight", LayerPart::Down),
];

const GGUF_LAYER_PARTS: &[(&str, LayerPart)] = &[
    ("attn_norm.weight", LayerPart::AttnNorm),
    ("attn_q.weight", LayerPart::Q),
    ("attn_k.weight", LayerPart::K),
    ("attn_v.weight", LayerPart::V),
    ("attn_output.weight", LayerPart::O),
    ("attn_q.bias", LayerPart::QBias),
    ("attn_k.bias", LayerPart::KBias),
    ("attn_v.bias", LayerPart::VBias),
    ("ffn_norm.weight", LayerPart::FfnNorm),
    ("ffn_gate.weight", LayerPart::Gate),
    ("ffn_up.weight", LayerPart::Up),
    ("ffn_down.weight", LayerPart::Down),
];

/// Classifies a tensor name (HF or GGUF naming).
pub fn role(name: &str) -> Role {
    match name {
        "model.embed_tokens.weight" | "token_embd.weight" => return Role::Embed,
        "lm_head.weight" | "output.weight" => return Role::LmHead,
        "model.norm.weight" | "output_norm.weight" => return Role::FinalNorm,
        _ => {}
    }
    let (rest, parts) = if let Some(r) = name.strip_prefix("model.layers.") {
        (r, HF_LAYER_PARTS)
    } else if let Some(r) = name.strip_prefix("blk.") {
        (r, GGUF_LAYER_PARTS)
    } else {
        return Role::Other;
    };
    let Some((idx, part)) = rest.split_once('.') else {
        return Role::Other;
    };
    match (idx.parse::<u64>(), parts.iter().find(|(s, _)| *s == part)) {
        (Ok(i), Some((_, p))) => Role::Layer(i, *p),
        _ => Role::Other,
    }
}

/// The decoder layer a tensor belongs to: `blk.N.…` (GGUF) or
/// `model.layers.N.…` (Hugging Face), whatever its part (packed
/// `qweight`/`scales` tensors included).
pub fn layer_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("blk.")
        .or_else(|| name.strip_prefix("model.layers."))?;
    rest.split_once('.')?.0.parse().ok()
}

/// The same tensor under the other naming: HF → GGUF or GGUF → HF
/// (`model.layers.3.mlp.down_proj.weight` ↔ `blk.3.ffn_down.weight`).
/// `None` for names outside the llama/mistral/qwen2 tensor set.
pub fn rename(name: &str, to_gguf: bool) -> Option<String> {
    let (embed, head, norm, prefix, parts) = if to_gguf {
        (
            "token_embd.weight",
            "output.weight",
            "output_norm.weight",
            "blk.",
            GGUF_LAYER_PARTS,
        )
    } else {
        (
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.norm.weight",
            "model.layers.",
            HF_LAYER_PARTS,
        )
    };
    let is_hf = name.starts_with("model.") || name == "lm_head.weight";
    if is_hf != to_gguf {
        return None;
    }
    match role(name) {
        Role::Embed => Some(embed.into()),
        Role::LmHead => Some(head.into()),
        Role::FinalNorm => Some(norm.into()),
        Role::Layer(i, part) => parts
            .iter()
            .find(|(_, p)| *p == part)
            .map(|(suffix, _)| format!("{prefix}{i}.{suffix}")),
        Role::Other => None,
    }
}

/// Parameter counts by category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Params {
    /// Token embeddings plus an untied output head.
    pub embeddings: u64,
    /// q/k/v/o projections and their biases.
    pub attention: u64,
    /// gate/up/down projections.
    pub mlp: u64,
    /// Every normalisation weight.
    pub norms: u64,
    /// Anything else (e.g. `rope_freqs`).
    pub other: u64,
    pub total: u64,
}

/// Tensors, parameters and bytes of one dtype.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DTypeStat {
    pub dtype: DType,
    pub tensors: u64,
    pub params: u64,
    pub bytes: u64,
}

/// Rotary embedding settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rope {
    pub theta: Option<f64>,
    /// The scaling object as declared (`rope_scaling` of config.json, or the
    /// GGUF `rope.scaling.*` keys), or `null`.
    pub scaling: Option<serde_json::Value>,
}

/// What `inspect-arch` reports about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arch {
    pub family: Family,
    /// The family string as declared (config `model_type` or GGUF
    /// `general.architecture`), if any.
    pub declared_family: Option<String>,
    /// Where hyperparameters came from: `config.json`, `gguf metadata` or `none`.
    pub hparams_source: &'static str,
    /// How a pre-quantized checkpoint's Linear weights are packed
    /// (`bitsandbytes nf4`, `awq 4-bit`, …; [`packed`]), else `null`. Shapes,
    /// parameters and bits per weight are those of the unpacked weights.
    pub quantization: Option<String>,
    pub layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    /// Query heads per KV head.
    pub gqa_group: Option<u64>,
    pub ffn_size: Option<u64>,
    pub vocab: Option<u64>,
    pub tied_embeddings: bool,
    pub attention_bias: bool,
    pub rope: Rope,
    pub norm_eps: Option<f64>,
    pub context_length: Option<u64>,
    pub params: Params,
    pub dtypes: Vec<DTypeStat>,
    pub tensor_count: u64,
    pub tensor_bytes: u64,
    pub bytes_on_disk: u64,
    /// Tensor bytes × 8 / parameters.
    pub bits_per_weight: f64,
    /// Disagreements between the declared hyperparameters and the tensors.
    pub warnings: Vec<String>,
}

/// Hyperparameters as declared by config.json or GGUF metadata.
#[derive(Debug, Default)]
pub struct Declared {
    pub source: &'static str,
    pub family: Option<String>,
    pub layers: Option<u64>,
    pub hidden: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub ffn: Option<u64>,
    pub vocab: Option<u64>,
    pub tied: Option<bool>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub eps: Option<f64>,
    pub ctx: Option<u64>,
}

/// Reads the hyperparameters a `config.json` declares (used alone by
/// `vram-plan` for a bare config).
pub fn declared_from_config(c: &serde_json::Value) -> Declared {
    // Multimodal wrappers nest the language model's config.
    let c = c.get("text_config").unwrap_or(c);
    let u = |k: &str| c.get(k).and_then(|v| v.as_u64());
    let f = |k: &str| c.get(k).and_then(|v| v.as_f64());
    let (rope_theta, rope_scaling) = rope_of_config(c);
    Declared {
        source: "config.json",
        family: c
            .get("model_type")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        layers: u("num_hidden_layers"),
        hidden: u("hidden_size"),
        heads: u("num_attention_heads"),
        kv_heads: u("num_key_value_heads"),
        head_dim: u("head_dim"),
        ffn: u("intermediate_size"),
        vocab: u("vocab_size"),
        tied: c.get("tie_word_embeddings").and_then(|v| v.as_bool()),
        rope_theta,
        rope_scaling: rope_scaling.cloned(),
        eps: f("rms_norm_eps"),
        ctx: u("max_position_embeddings"),
    }
}

/// The RoPE base and scaling object of a config.json. transformers 5
/// writes one `rope_parameters` object (theta, type and the scaling's
/// fields), older versions `rope_theta` and `rope_scaling`; where both
/// exist `rope_parameters` wins, as in llama.cpp's converter
/// (`TextModel.__init__` of `convert_hf_to_gguf.py`). Scaling of type
/// `default` is none.
pub fn rope_of_config(c: &serde_json::Value) -> (Option<f64>, Option<&serde_json::Value>) {
    let params = c.get("rope_parameters").filter(|v| v.is_object());
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| c.get("rope_theta"))
        .and_then(|v| v.as_f64());
    let scaling = params.or_else(|| c.get("rope_scaling")).filter(|s| {
        s.is_object()
            && !matches!(
                s.get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(|t| t.as_str()),
                None | Some("default")
            )
    });
    (theta, scaling)
}

fn declared_from_gguf(m: &crate::store::gguf::Metadata) -> Declared {
    let arch = m.str("general.architecture").unwrap_or("").to_string();
    let k = |s: &str| format!("{arch}.{s}");
    let scaling_keys = ["type", "factor", "original_context_length"];
    let scaling: serde_json::Map<String, serde_json::Value> = scaling_keys
        .iter()
        .filter_map(|s| {
            m.get(&k(&format!("rope.scaling.{s}")))
                .map(|v| (s.to_string(), v.to_json()))
        })
        .collect();
    Declared {
        source: "gguf metadata",
        family: Some(arch.clone()).filter(|a| !a.is_empty()),
        layers: m.u64(&k("block_count")),
        hidden: m.u64(&k("embedding_length")),
        heads: m.u64(&k("attention.head_count")),
        kv_heads: m.u64(&k("attention.head_count_kv")),
        head_dim: m.u64(&k("attention.key_length")),
        ffn: m.u64(&k("feed_forward_length")),
        vocab: m
            .u64(&k("vocab_size"))
            .or_else(|| match m.get("tokenizer.ggml.tokens") {
                Some(crate::store::gguf::Value::Array(a)) => Some(a.len() as u64),
                _ => None,
            }),
        tied: None,
        rope_theta: m.f64(&k("rope.freq_base")),
        rope_scaling: (!scaling.is_empty()).then(|| serde_json::Value::Object(scaling)),
        eps: m.f64(&k("attention.layer_norm_rms_epsilon")),
        ctx: m.u64(&k("context_length")),
    }
}

fn family_of(declared: Option<&str>, model: &Model) -> Family {
    match declared {
        Some("llama") => {
            // llama.cpp stores Mistral models under the `llama` architecture;
            // only the name tells them apart.
            let name = model
                .gguf
                .as_ref()
                .and_then(|m| m.str("general.name").or(m.str("general.basename")))
                .unwrap_or("");
            if name.to_ascii_lowercase().contains("mistral") {
                Family::Mistral
            } else {
                Family::Llama
            }
        }
        Some(name) => Family::from_name(name),
        None => Family::Unknown,
    }
}

struct Checker<'a> {
    source: &'a str,
    warnings: Vec<String>,
}

impl Checker<'_> {
    /// Prefers the tensor-derived value; warns when the declared one differs.
    fn pick(
        &mut self,
        what: &str,
        declared: Option<u64>,
        derived: Option<(u64, String)>,
    ) -> Option<u64> {
        match (declared, derived) {
            (Some(d), Some((t, how))) => {
                if d != t {
                    self.warnings.push(format!(
                        "{} says {what} = {d}, but the tensors give {t} ({how}); using {t}",
                        self.source
                    ));
                }
                Some(t)
            }
            (d, t) => t.map(|(t, _)| t).or(d),
        }
    }
}

/// Detects the architecture of an opened model.
pub fn detect(model: &Model) -> Arch {
    let declared = match (&model.gguf, &model.config) {
        (Some(m), _) => declared_from_gguf(m),
        (None, Some(c)) => declared_from_config(c),
        (None, None) => Declared {
            source: "none",
            ..Default::default()
        },
    };
    let mut ck = Checker {
        source: declared.source,
        warnings: Vec::new(),
    };
    if declared.source == "none" {
        ck.warnings.push(
            "no config.json beside the weights: head counts, rope and context length are unknown"
                .into(),
        );
    }

    // Packed weights (bitsandbytes, AWQ, GPTQ) count as what was quantized.
    let logical = packed::logical_tensors(model);
    ck.warnings.extend(logical.warnings.iter().cloned());
    let mut params = Params::default();
    let mut dtypes: BTreeMap<DType, DTypeStat> = BTreeMap::new();
    let mut layer_ids = std::collections::BTreeSet::new();
    let mut first: BTreeMap<&'static str, LogicalTensor> = BTreeMap::new();
    let (mut embed, mut head) = (None, None);
    let mut bias = false;
    for t in logical.tensors(model) {
        let n = t.numel();
        params.total += n;
        let s = dtypes.entry(t.dtype).or_insert(DTypeStat {
            dtype: t.dtype,
            tensors: 0,
            params: 0,
            bytes: 0,
        });
        s.tensors += 1;
        s.params += n;
        s.bytes += t.bytes;
        match role(&t.name) {
            Role::Embed => {
                params.embeddings += n;
                embed = Some(t.into_owned());
            }
            Role::LmHead => {
                params.embeddings += n;
                head = Some(t.into_owned());
            }
            Role::FinalNorm => params.norms += n,
            Role::Layer(i, p) => {
                layer_ids.insert(i);
                use LayerPart::*;
                match p {
                    AttnNorm | FfnNorm => params.norms += n,
                    Q | K | V | O | QBias | KBias | VBias => params.attention += n,
                    Gate | Up | Down => params.mlp += n,
                }
                let key = match p {
                    Q => "q",
                    K => "k",
                    Gate => "gate",
                    Up => "up",
                    _ => "",
                };
                if !key.is_empty() {
                    first.entry(key).or_insert_with(|| t.into_owned());
                }
                bias |= p == QBias;
            }
            Role::Other if t.name.contains("norm") => params.norms += n,
            Role::Other => params.other += n,
        }
    }
    let dim = |t: Option<&LogicalTensor>, i: usize| t.and_then(|t| t.shape.get(i).copied());
    let q = first.get("q");
    let k = first.get("k");

    let hidden = ck.pick(
        "hidden_size",
        declared.hidden,
        embed.as_ref().and_then(|e| {
            e.shape
                .get(1)
                .map(|&h| (h, format!("{} is {:?}", e.name, e.shape)))
        }),
    );
    let vocab = ck.pick(
        "vocab_size",
        declared.vocab,
        embed.as_ref().and_then(|e| {
            e.shape
                .first()
                .map(|&v| (v, format!("{} is {:?}", e.name, e.shape)))
        }),
    );
    let layers_found = layer_ids.last().map(|&l| l + 1);
    if let Some(n) = layers_found {
        if layer_ids.len() as u64 != n {
            let missing: Vec<u64> = (0..n).filter(|i| !layer_ids.contains(i)).collect();
            ck.warnings
                .push(format!("layers {missing:?} have no tensors (of {n})"));
        }
    }
    let layers = ck.pick(
        "layers",
        declared.layers,
        layers_found.map(|n| (n, format!("layer indices 0..{}", n - 1))),
    );
    let ffn = ck.pick(
        "intermediate_size",
        declared.ffn,
        first.get("gate").or(first.get("up")).and_then(|t| {
            t.shape
                .first()
                .map(|&f| (f, format!("{} is {:?}", t.name, t.shape)))
        }),
    );

    // head_dim and KV heads come from the q/k output rows once the head count
    // is known: q_out = heads·head_dim, k_out = kv_heads·head_dim.
    let heads = declared.heads;
    let q_out = dim(q, 0);
    let k_out = dim(k, 0);
    let head_dim_t = match (heads, q_out) {
        (Some(h), Some(qo)) if h > 0 && qo % h == 0 => Some(qo / h),
        (Some(h), Some(qo)) => {
            ck.warnings.push(format!(
                "{} declares {h} attention heads, which do not divide q_proj's {qo} output rows",
                declared.source
            ));
            None
        }
        _ => None,
    };
    let head_dim_how = |hd: u64| {
        format!(
            "{} has {} rows = {} heads × {hd}",
            q.map(|t| t.name.as_str()).unwrap_or("q"),
            q_out.unwrap_or(0),
            heads.unwrap_or(0)
        )
    };
    let declared_head_dim = declared
        .head_dim
        .or_else(|| match (declared.hidden, heads) {
            (Some(h), Some(n)) if n > 0 => Some(h / n),
            _ => None,
        });
    let head_dim = match (declared.head_dim, head_dim_t) {
        // Without an explicit head_dim the implied one is hidden/heads, which
        // is exactly the assumption custom-attention models break.
        (None, Some(t)) if declared_head_dim.is_some_and(|d| d != t) => {
            ck.warnings.push(format!(
                "{} has no head_dim, implying hidden_size/heads = {}, but {}; using {t}",
                declared.source,
                declared_head_dim.unwrap_or(0),
                head_dim_how(t)
            ));
            Some(t)
        }
        (d, t) => ck.pick("head_dim", d, t.map(|t| (t, head_dim_how(t)))),
    };
    let kv_t = match (head_dim, k_out) {
        (Some(hd), Some(ko)) if hd > 0 && ko % hd == 0 => Some((
            ko / hd,
            format!(
                "{} has {ko} rows = kv_heads × head_dim {hd}",
                k.map(|t| t.name.as_str()).unwrap_or("k")
            ),
        )),
        _ => None,
    };
    let kv_heads = ck.pick("num_key_value_heads", declared.kv_heads.or(heads), kv_t);
    let gqa_group = match (heads, kv_heads) {
        (Some(h), Some(kv)) if kv > 0 && h % kv == 0 => Some(h / kv),
        _ => None,
    };

    let tied = head.is_none() && embed.is_some();
    if let Some(d) = declared.tied {
        if d != tied {
            ck.warnings.push(format!(
                "{} says tie_word_embeddings = {d}, but the weights {}",
                declared.source,
                if tied {
                    "have no separate lm_head (tied in practice)"
                } else {
                    "include a separate lm_head"
                }
            ));
        }
    }
    let mut rope = Rope {
        theta: declared.rope_theta,
        scaling: declared.rope_scaling.clone(),
    };
    if rope.scaling.is_none() && model.tensor("rope_freqs.weight").is_some() {
        rope.scaling =
            Some(serde_json::json!({"type": "llama3", "from": "rope_freqs.weight tensor"}));
    }
    let family = family_of(declared.family.as_deref(), model);
    if family == Family::Unknown {
        ck.warnings.push(format!(
            "unsupported family {}: found {} tensors, {} decoder layers recognised by llama-style names",
            declared.family.as_deref().map_or("(undeclared)".to_string(), |f| format!("'{f}'")),
            model.tensors().len(),
            layer_ids.len()
        ));
    }
    let tensor_bytes: u64 = model.tensors().iter().map(|t| t.len).sum();
    Arch {
        family,
        declared_family: declared.family,
        hparams_source: declared.source,
        quantization: logical.packing.map(|p| p.label()),
        layers,
        hidden_size: hidden,
        heads,
        kv_heads,
        head_dim,
        gqa_group,
        ffn_size: ffn,
        vocab,
        tied_embeddings: tied,
        attention_bias: bias,
        rope,
        norm_eps: declared.eps,
        context_length: declared.ctx,
        params: params.clone(),
        dtypes: dtypes.into_values().collect(),
        tensor_count: model.tensors().len() as u64,
        tensor_bytes,
        bytes_on_disk: model.bytes_on_disk(),
        bits_per_weight: if params.total > 0 {
            tensor_bytes as f64 * 8.0 / params.total as f64
        } else {
            0.0
        },
        warnings: ck.warnings,
    }
}

/// The versioned JSON manifest `inspect-arch --json` prints.
pub fn manifest(model: &Model, arch: &Arch) -> serde_json::Value {
    let mut v = serde_json::json!({
        "schema": MANIFEST_SCHEMA,
        "llmtool_version": env!("CARGO_PKG_VERSION"),
        "model": model.root.display().to_string(),
        "format": model.container,
        "files": model.files.iter().map(|f| serde_json::json!({"path": f.path.display().to_string(), "bytes": f.size})).collect::<Vec<_>>(),
    });
    if model.container == Container::Gguf {
        v["gguf_version"] = model.gguf.as_ref().map(|m| m.version).into();
    }
    let arch = serde_json::to_value(arch).expect("arch serializes");
    if let (Some(out), serde_json::Value::Object(a)) = (v.as_object_mut(), arch) {
        out.extend(a);
    }
    v
}
