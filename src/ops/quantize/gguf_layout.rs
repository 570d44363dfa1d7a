//! HF safetensors (or a float GGUF) → GGUF, in one streaming pass: what
//! llama.cpp's `convert_hf_to_gguf.py` followed by `llama-quantize` produce,
//! without the intermediate f16 file.
//!
//! [`layout`] decides names, shapes, the Q/K permutation, generated tensors
//! (`rope_freqs.weight` for Llama-3 RoPE) and the metadata; the caller picks
//! each tensor's type (see `quant::ftype`) and [`write`] streams row chunks:
//! read (any float dtype) → permute → quantize in parallel → GGUF writer.
//! Tensor order is `llama-quantize`'s (tensors outside `blk.` first, then
//! layer by layer in numeric order, names sorted within a layer), so the
//! per-layer counters of the type rules see what llama.cpp's see.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::family::GgufArch;
use crate::model::hf_gguf::{
    hparam_value, llama3_rope_factors, permuted_source_row, HEAD_DIM_KEYS, HPARAMS,
    LLAMA3_DEFAULTS, RMS_EPS, ROPE_THETA,
};
use crate::ops::Error;
use crate::quant::ftype::llama_order;
use crate::quant::{self, GgmlType};
use crate::store::gguf::{GgufTensor, GgufWriter, Value};
use crate::store::{Container, DType, Model, StoreError};

/// `general.quantization_version` (`GGML_QNT_VERSION` in `ggml.h`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Where an output tensor's values come from.
#[derive(Debug, Clone)]
pub enum TensorSource {
    /// A tensor of the input model, by name; rows permuted in heads of
    /// `head_dim` when set.
    Tensor {
        name: String,
        head_dim: Option<usize>,
    },
    /// Values computed by the converter (`rope_freqs.weight`).
    Generated(Vec<f32>),
}

/// One tensor of the output file.
#[derive(Debug, Clone)]
pub struct OutTensor {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Torch order (outermost first), as in the input.
    pub shape: Vec<u64>,
    /// The type it is written as; [`layout`] sets the converter's choice
    /// (F32 for 1-D tensors, norms and biases, else F16) and the caller's
    /// type rule may replace it.
    pub ty: GgmlType,
    pub source: TensorSource,
    /// The 16-bit type the values are rounded to before a block type
    /// encodes them: the intermediate file of llama.cpp's two-step pipeline
    /// (the converter's `--outtype auto`, then `llama-quantize`). Set by
    /// [`layout`] for HF tensors not already stored in that type (BF16 when
    /// the model's first 2-D tensor is bf16, else F16: the converter's
    /// dtype heuristic in `ModelBase.__init__`); callers that keep a float
    /// type clear it.
    pub via: Option<GgmlType>,
}

/// Everything [`write`] needs.
#[derive(Debug, Clone)]
pub struct GgufLayout {
    pub arch: GgufArch,
    /// Metadata without `general.file_type`, which [`write`] adds.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<OutTensor>,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    /// Where `general.file_type` goes: last, as `llama-quantize` appends it
    /// to a copied GGUF's keys, or among the hyperparameters, where the
    /// converter writes it.
    pub file_type_last: bool,
    pub warnings: Vec<String>,
}

/// What was (or would be) written.
#[derive(Debug, Clone, Serialize)]
pub struct GgufReport {
    pub out: PathBuf,
    pub arch: GgufArch,
    pub file_type: u32,
    pub tensors: usize,
    pub bytes: u64,
    /// Output tensor count per type name.
    pub types: std::collections::BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

/// The model card fields the converter copies into `general.*` (gguf-py
/// `Metadata.load` reads README.md's YAML front matter; `set_gguf_meta_model`
/// writes license, tags and languages in this order). Only the flat
/// `key: value` and `key:` + `- item` forms model cards use are read.
fn model_card_metadata(dir: &Path) -> Vec<(String, Value)> {
    let Ok(text) = std::fs::read_to_string(dir.join("README.md")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("---") {
        return Vec::new();
    }
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    for line in lines {
        if line.trim() == "---" {
            break;
        }
        let unquote = |v: &str| v.trim().trim_matches('"').trim_matches('\'').to_string();
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            if let Some((_, items)) = fields.last_mut() {
                items.push(unquote(item));
            }
        } else if let Some((k, v)) = line.split_once(':') {
            if !line.starts_with(' ') {
                let v = v.trim();
                let items = if v.is_empty() {
                    vec![]
                } else {
                    vec![unquote(v)]
                };
                fields.push((k.trim().to_string(), items));
            }
        }
    }
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
    let strings =
        |v: Vec<String>| Value::Array(crate::store::gguf::Array::String(v.into_iter().collect()));
    let mut out = Vec::new();
    if let Some(l) = get("license").and_then(|v| v.into_iter().next()) {
        out.push(("general.license".to_string(), Value::String(l)));
    }
    if let Some(t) = get("tags").filter(|t| !t.is_empty()) {
        out.push(("general.tags".to_string(), strings(t)));
    }
    if let Some(l) = get("language")
        .or_else(|| get("languages"))
        .filter(|l| !l.is_empty())
    {
        out.push(("general.languages".to_string(), strings(l)));
    }
    out
}

fn rope_type_is_llama3(config: &serde_json::Value) -> bool {
    arch::rope_of_config(config)
        .1
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(|v| v.as_str())
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"))
}

/// gguf-py's `model_weight_count_rounded_notation` (`utility.py`): at
/// least two significant digits, K/M/B/T.
pub fn size_label(params: u64) -> String {
    let n = params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round() as u64);
    let digits = digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// gguf-py's name heuristic for a directory name: `-` becomes a space and
/// all-lowercase words are title-cased (Python `str.title`), except version
/// numbers and words starting with a digit.
pub fn title_words(s: &str) -> String {
    s.replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || (w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()));
            let lower = w.chars().any(|c| c.is_lowercase()) && !w.chars().any(|c| c.is_uppercase());
            if !lower || versionish {
                return w.to_string();
            }
            let mut out = String::new();
            let mut prev_letter = false;
            for c in w.chars() {
                if prev_letter {
                    out.extend(c.to_lowercase());
                } else {
                    out.extend(c.to_uppercase());
                }
                prev_letter = c.is_alphabetic();
            }
            out
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The converter's type before quantization: F32 for 1-D tensors, norms and
/// anything not ending in `.weight`; the float type for the rest.
fn base_type(name: &str, shape: &[u64], float: GgmlType) -> GgmlType {
    if shape.len() <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") {
        GgmlType::F32
    } else {
        float
    }
}

/// Plans the conversion of an HF model or a float GGUF, whose architecture
/// `a` has passed [`crate::model::check::weights`]. `float` is the type
/// of 2-D weights before any type rule (F16, BF16 or F32). `tokenizer` holds
/// the `tokenizer.*` entries (HF input only; a GGUF keeps its own).
pub fn layout(
    model: &Model,
    a: &arch::Arch,
    float: GgmlType,
    name: Option<&str>,
    tokenizer: Vec<(String, Value)>,
) -> Result<GgufLayout, Error> {
    match model.container {
        Container::Safetensors => layout_hf(model, a, float, name, tokenizer),
        Container::Gguf => layout_gguf(model, float),
    }
}

fn layout_hf(
    model: &Model,
    a: &arch::Arch,
    float: GgmlType,
    name: Option<&str>,
    tokenizer: Vec<(String, Value)>,
) -> Result<GgufLayout, Error> {
    let file = model.root.display().to_string();
    let Some(config) = model.config.as_ref() else {
        return Err(Error::Refused(format!(
            "{file}: no config.json beside the weights; it is needed for the GGUF metadata"
        )));
    };
    let config = config.get("text_config").unwrap_or(config);
    let Some(garch) = GgufArch::from_config(config) else {
        return Err(Error::Refused(format!(
            "{file}: config.json describes a '{}' model; GGUF conversion supports llama, mistral and qwen2",
            config.get("model_type").and_then(|v| v.as_str()).unwrap_or("unknown")
        )));
    };
    let mut warnings = a.warnings.clone();
    let need = |what: &str, v: Option<u64>| {
        v.ok_or_else(|| {
            Error::Refused(format!(
                "{file}: cannot tell the {what} from config.json or the tensors"
            ))
        })
    };
    let heads = need("attention head count", a.heads)? as usize;
    let kv_heads = need("KV head count", a.kv_heads)? as usize;
    let head_dim = need("head size", a.head_dim)? as usize;
    let n_layer = need("layer count", a.layers)?;

    let intermediate = match model
        .tensors()
        .iter()
        .find(|t| t.shape.len() >= 2)
        .map(|t| t.dtype)
    {
        Some(DType::BF16) => GgmlType::BF16,
        _ => GgmlType::F16,
    };
    let mut tensors = Vec::new();
    let mut unknown = Vec::new();
    for t in model.tensors() {
        if t.name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let Some(gname) = arch::rename(&t.name, true) else {
            unknown.push(t.name.clone());
            continue;
        };
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Refused(format!(
                "{file}: tensor {} is {}; GGUF conversion reads F32, F16 or BF16 weights",
                t.name, t.dtype
            )));
        }
        let heads_of = match arch::role(&t.name) {
            Role::Layer(_, LayerPart::Q | LayerPart::QBias) => Some(heads),
            Role::Layer(_, LayerPart::K | LayerPart::KBias) => Some(kv_heads),
            _ => None,
        };
        let permute = match heads_of.filter(|_| garch.permutes_qk()) {
            Some(n) if t.rows() as usize == n * head_dim && head_dim % 2 == 0 => Some(head_dim),
            Some(n) => {
                return Err(Error::Refused(format!(
                    "{file}: tensor {} has {} rows, not {n} heads of {head_dim}",
                    t.name,
                    t.rows()
                )))
            }
            None => None,
        };
        tensors.push(OutTensor {
            ty: base_type(&gname, &t.shape, float),
            name: gname,
            shape: t.shape.clone(),
            source: TensorSource::Tensor {
                name: t.name.clone(),
                head_dim: permute,
            },
            via: (t.dtype.to_ggml() != Some(intermediate)).then_some(intermediate),
        });
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(Error::Refused(format!(
            "{file}: tensors with no GGUF name in a {} model: {}",
            garch.name(),
            unknown.join(", ")
        )));
    }

    let key = |s: &str| format!("{}.{s}", garch.name());
    let dir = crate::store::hfdir::source_dir(model);
    let label = name.map(str::to_string).map(Ok).unwrap_or_else(|| {
        Err(dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()))
    });
    let label = label.unwrap_or_else(|dir| title_words(&dir));
    let mut meta: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(garch.name().into()),
        ),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(label)),
    ];
    let total: u64 = model
        .tensors()
        .iter()
        .filter(|t| !t.name.ends_with("rotary_emb.inv_freq"))
        .map(|t| t.numel())
        .sum::<u64>()
        + if rope_type_is_llama3(config) {
            head_dim as u64 / 2
        } else {
            0
        };
    meta.push((
        "general.size_label".into(),
        Value::String(size_label(total)),
    ));
    meta.extend(model_card_metadata(&dir));
    for (hf, suffix, kind) in HPARAMS {
        // Prefer what the tensors say (arch::detect already warned on a lie).
        let derived = match *hf {
            "num_hidden_layers" => a.layers,
            "hidden_size" => a.hidden_size,
            "intermediate_size" => a.ffn_size,
            "num_attention_heads" => a.heads,
            "num_key_value_heads" => a.kv_heads,
            _ => None,
        };
        let v = derived
            .map(serde_json::Value::from)
            .or_else(|| config.get(*hf).cloned());
        if let Some(v) = v.as_ref().and_then(|v| hparam_value(*kind, v)) {
            meta.push((key(suffix), v));
        }
    }
    let (theta, scaling) = arch::rope_of_config(config);
    let rope_type = scaling
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(|v| v.as_str())
        .map(str::to_ascii_lowercase);
    let sf = |k: &str| scaling.and_then(|s| s.get(k)).and_then(|v| v.as_f64());
    let mut rope_freqs = None;
    match rope_type.as_deref() {
        None | Some("default") => {}
        Some("linear") => {
            if let Some(f) = sf("factor") {
                meta.push((key("rope.scaling.type"), Value::String("linear".into())));
                meta.push((key("rope.scaling.factor"), Value::F32(f as f32)));
            }
        }
        Some("yarn") => {
            if let Some(f) = sf("factor") {
                meta.push((key("rope.scaling.type"), Value::String("yarn".into())));
                meta.push((key("rope.scaling.factor"), Value::F32(f as f32)));
                let orig = sf("original_max_position_embeddings").ok_or_else(|| {
                    Error::Refused(format!(
                        "{file}: yarn rope_scaling without original_max_position_embeddings"
                    ))
                })?;
                meta.push((
                    key("rope.scaling.original_context_length"),
                    Value::U32(orig as u32),
                ));
                for (hfk, gk) in [
                    ("extrapolation_factor", "rope.scaling.yarn_ext_factor"),
                    ("beta_fast", "rope.scaling.yarn_beta_fast"),
                    ("beta_slow", "rope.scaling.yarn_beta_slow"),
                ] {
                    if let Some(v) = sf(hfk) {
                        meta.push((key(gk), Value::F32(v as f32)));
                    }
                }
                if let Some(v) = sf("attention_factor").or_else(|| sf("attn_factor")) {
                    meta.push((key("rope.scaling.yarn_attn_factor"), Value::F32(v as f32)));
                }
            }
        }
        Some("llama3") if garch == GgufArch::Llama => {
            let [factor, low, high, old] = LLAMA3_DEFAULTS;
            rope_freqs = Some(llama3_rope_factors(
                theta.unwrap_or(10000.0),
                head_dim,
                sf("factor").unwrap_or(factor),
                sf("low_freq_factor").unwrap_or(low),
                sf("high_freq_factor").unwrap_or(high),
                sf("original_max_position_embeddings").unwrap_or(old),
            ));
        }
        Some(other) => {
            return Err(Error::Refused(format!(
                "{file}: rope_scaling type '{other}' is not supported for {} GGUFs",
                garch.name()
            )))
        }
    }
    if let Some(v) = theta {
        meta.push((key(ROPE_THETA.1), Value::F32(v as f32)));
    }
    if let Some(v) = config.get(RMS_EPS.0).and_then(|v| v.as_f64()) {
        meta.push((key(RMS_EPS.1), Value::F32(v as f32)));
    }
    if let Some(hd) = config.get("head_dim").and_then(|v| v.as_u64()) {
        for k in HEAD_DIM_KEYS {
            meta.push((key(k), Value::U32(hd as u32)));
        }
    }
    // `general.file_type` goes here (added by `write`), then the llama extras.
    if garch == GgufArch::Llama {
        if let Some(v) = a.vocab {
            meta.push((key("vocab_size"), Value::U32(v as u32)));
        }
        meta.push((key("rope.dimension_count"), Value::U32(head_dim as u32)));
    }
    meta.push((
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    ));
    meta.extend(tokenizer);
    if let Some(f) = rope_freqs {
        tensors.push(OutTensor {
            name: "rope_freqs.weight".into(),
            shape: vec![f.len() as u64],
            ty: GgmlType::F32,
            source: TensorSource::Generated(f),
            via: None,
        });
    }
    if a.context_length.is_none() {
        warnings.push(format!(
            "{file}: config.json has no max_position_embeddings; llama.cpp will refuse a GGUF without {}",
            key("context_length")
        ));
    }
    tensors.sort_by(|x, y| llama_order(&x.name, &y.name));
    Ok(GgufLayout {
        arch: garch,
        metadata: meta,
        tensors,
        n_layer,
        n_head: heads as u64,
        n_head_kv: kv_heads as u64,
        file_type_last: false,
        warnings,
    })
}

/// Requantizing a float GGUF: llama-quantize copies the metadata (without
/// `split.*`), then sets the quantization version and file type.
fn layout_gguf(model: &Model, float: GgmlType) -> Result<GgufLayout, Error> {
    let file = model.root.display().to_string();
    let meta = model.gguf.as_ref().expect("GGUF models carry metadata");
    let arch_name = meta.str("general.architecture").unwrap_or("");
    let Some(garch) = GgufArch::from_gguf(arch_name) else {
        return Err(Error::Refused(format!(
            "{file}: general.architecture is '{arch_name}'; supported: llama, qwen2"
        )));
    };
    let mut tensors = Vec::new();
    for t in model.tensors() {
        // llama.cpp refuses a file with tensors its architecture does not
        // name ("wrong number of tensors"); such a name is damage, not data.
        if arch::role(&t.name) == Role::Other && t.name != "rope_freqs.weight" {
            return Err(Error::Refused(format!(
                "{file}: tensor '{}' is not a tensor of a {} GGUF; llama.cpp would refuse the \
                 file. Remove it, or convert from the original model",
                t.name.escape_debug(),
                garch.name()
            )));
        }
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Refused(format!(
                "{file}: tensor {} is already {}; quantize from an F32/F16/BF16 GGUF or from the HF model (requantizing loses quality)",
                t.name, t.dtype
            )));
        }
        tensors.push(OutTensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ty: if t.shape.len() <= 1 {
                GgmlType::F32
            } else {
                base_type(&t.name, &t.shape, float)
            },
            source: TensorSource::Tensor {
                name: t.name.clone(),
                head_dim: None,
            },
            via: None,
        });
    }
    tensors.sort_by(|x, y| llama_order(&x.name, &y.name));
    let metadata = meta
        .entries()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("split.")
                && k != "general.file_type"
                && k != "general.quantization_version"
                && k != "general.alignment"
        })
        .cloned()
        .chain([(
            "general.quantization_version".to_string(),
            Value::U32(QUANTIZATION_VERSION),
        )])
        .collect();
    let k = |s: &str| meta.u64(&format!("{}.{s}", garch.name()));
    let n_layer = k("block_count")
        .ok_or_else(|| Error::Refused(format!("{file}: no {}.block_count", garch.name())))?;
    let n_head = k("attention.head_count").unwrap_or(0);
    let n_head_kv = k("attention.head_count_kv").unwrap_or(n_head);
    Ok(GgufLayout {
        arch: garch,
        metadata,
        tensors,
        n_layer,
        n_head,
        n_head_kv,
        file_type_last: true,
        warnings: Vec::new(),
    })
}

/// Streams the laid-out tensors into `out` (a temporary renamed at the end),
/// with `general.file_type` = `file_type`.
pub fn write(
    model: &Model,
    layout: &GgufLayout,
    file_type: u32,
    out: &Path,
    progress: bool,
) -> Result<GgufReport, Error> {
    let mut meta = layout.metadata.clone();
    // The converter writes file_type right after the generic hyperparameters.
    let at = if layout.file_type_last {
        meta.len()
    } else {
        meta.iter()
            .position(|(k, _)| {
                k.ends_with(".vocab_size")
                    || k.ends_with(".rope.dimension_count")
                    || k == "general.quantization_version"
            })
            .unwrap_or(meta.len())
    };
    meta.insert(at, ("general.file_type".into(), Value::U32(file_type)));
    let specs: Vec<GgufTensor> = layout
        .tensors
        .iter()
        .map(|t| GgufTensor {
            name: t.name.clone(),
            ty: t.ty,
            shape: t.shape.clone(),
        })
        .collect();
    let report = report(layout, file_type, out);
    let mut w = GgufWriter::create(out, &meta, specs)?;
    let bar = crate::progress::bytes_bar(progress, report.bytes, "quantizing");
    for t in &layout.tensors {
        bar.set_message(t.name.clone());
        w.write_tensor_with(&t.name, |sink| {
            let mut counted = |b: &[u8]| {
                bar.inc(b.len() as u64);
                sink(b)
            };
            stream_tensor(model, t, &mut counted)
        })?;
        if let TensorSource::Tensor { name, .. } = &t.source {
            if let Some(src) = model.tensor(name) {
                model.release(src);
            }
        }
    }
    let path = w.finish()?;
    bar.finish_and_clear();
    Ok(GgufReport {
        out: path,
        ..report
    })
}

/// The report of a layout: sizes and type counts, nothing written.
pub fn report(layout: &GgufLayout, file_type: u32, out: &Path) -> GgufReport {
    let mut types = std::collections::BTreeMap::new();
    for t in &layout.tensors {
        *types.entry(t.ty.name().to_string()).or_insert(0) += 1;
    }
    GgufReport {
        out: out.to_path_buf(),
        arch: layout.arch,
        file_type,
        tensors: layout.tensors.len(),
        bytes: layout
            .tensors
            .iter()
            .map(|t| t.ty.bytes_for(t.shape.iter().product()).unwrap_or(0))
            .sum(),
        types,
        warnings: layout.warnings.clone(),
    }
}

/// Refuses NaN and Inf (llama-quantize refuses them in its output too) and
/// rounds to the tensor's 16-bit intermediate, refusing values beyond its
/// range (the two-step pipeline would store inf there). `first` is the
/// index of `chunk[0]` in the tensor.
fn check_and_round(chunk: &mut [f32], t: &OutTensor, first: u64) -> Result<(), StoreError> {
    let tensor = || match &t.source {
        TensorSource::Tensor { name, .. } => name.clone(),
        TensorSource::Generated(_) => t.name.clone(),
    };
    StoreError::check_finite(&tensor(), first, chunk)?;
    let round: fn(f32) -> f32 = match t.via {
        Some(GgmlType::F16) => |v| quant::f16_bits_to_f32(quant::f32_to_f16_bits(v)),
        Some(GgmlType::BF16) => |v| f32::from_bits(u32::from(quant::f32_to_bf16_bits(v)) << 16),
        _ => return Ok(()),
    };
    let mut overflow = None;
    for (i, v) in chunk.iter_mut().enumerate() {
        let r = round(*v);
        if !r.is_finite() && overflow.is_none() {
            overflow = Some((i, *v));
        }
        *v = r;
    }
    match overflow {
        Some((i, value)) => Err(StoreError::Overflow16 {
            tensor: tensor(),
            index: first + i as u64,
            value,
            ty: t.via.map_or("", GgmlType::name),
        }),
        None => Ok(()),
    }
}

fn encode_error(t: &OutTensor, source: quant::QuantError) -> StoreError {
    StoreError::Encode {
        tensor: t.name.clone(),
        source,
    }
}

fn stream_tensor(
    model: &Model,
    t: &OutTensor,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (src, head_dim) = match &t.source {
        TensorSource::Generated(v) => {
            let mut out = Vec::new();
            quant::quantize_rows(t.ty, v, v.len(), &mut out).map_err(|e| encode_error(t, e))?;
            return sink(&out);
        }
        TensorSource::Tensor { name, head_dim } => (model.get(name)?, *head_dim),
    };
    // The store's rows: the outermost dimension (a 1-D tensor is rows of 1).
    let rows = src.rows() as usize;
    let cols = src.row_len().max(1) as usize;
    let unit = head_dim.unwrap_or(1);
    let rows_per_chunk = ((4 << 20) / cols / unit).max(1) * unit;
    let n = rows.max(1).div_ceil(rows_per_chunk);
    crate::stream::pipelined(
        n,
        |i| {
            let (r0, r1) = (i * rows_per_chunk, ((i + 1) * rows_per_chunk).min(rows));
            let mut chunk = if rows == 0 {
                vec![]
            } else {
                model.read_rows_f32(src, r0 as u64..r1 as u64)?
            };
            check_and_round(&mut chunk, t, (r0 * cols) as u64)?;
            if let Some(hd) = head_dim {
                let orig = chunk.clone();
                chunk
                    .par_chunks_mut(cols)
                    .enumerate()
                    .for_each(|(row, dst)| {
                        let s = permuted_source_row(row, hd, true);
                        dst.copy_from_slice(&orig[s * cols..(s + 1) * cols]);
                    });
            }
            let mut out = Vec::new();
            quant::quantize_rows(t.ty, &chunk, cols, &mut out).map_err(|e| encode_error(t, e))?;
            Ok(out)
        },
        sink,
    )
}
