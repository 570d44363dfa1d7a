//! The model as the memory model sees it: hyperparameters ([`Shape`]) and
//! one [`VramTensor`] per weight, from a catalog entry, a `config.json` or
//! the tensors of a real model file.

use serde::Serialize;

use super::invalid;
use crate::model::arch::{self, LayerPart, Role};
use crate::model::family::Family;
use crate::model::packed::{self, Packing};
use crate::ops::Result;
use crate::store::{Container, DType, Model};

/// The hyperparameters the memory model needs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Shape {
    pub name: String,
    pub family: String,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub ffn: u64,
    pub vocab: u64,
    pub tied: bool,
    #[serde(default)]
    pub qkv_bias: bool,
    pub max_ctx: u64,
}

/// Largest context, micro-batch and dimensions the planner accepts: far
/// beyond any real model, small enough that no product of them overflows.
pub const MAX_CTX: u64 = 1 << 21;
pub(super) const MAX_UBATCH: u64 = 1 << 16;
const MAX_DIM: u64 = 1 << 20;
/// Most tokens of KV cache over all sequences (ctx × users) planned.
pub const MAX_TOKENS: u64 = 1 << 26;

impl Shape {
    /// Refuses shapes no real model has (zero or absurd sizes), so that the
    /// arithmetic below cannot overflow on a hostile config.json.
    pub fn check(&self) -> Result<()> {
        let dims = [
            ("layers", self.layers, 1 << 10),
            ("hidden_size", self.hidden, MAX_DIM),
            ("attention heads", self.heads, 1 << 12),
            ("KV heads", self.kv_heads, 1 << 12),
            ("head_dim", self.head_dim, 1 << 12),
            ("intermediate_size", self.ffn, MAX_DIM),
            ("vocab_size", self.vocab, 1 << 24),
        ];
        for (what, v, max) in dims {
            if v == 0 || v > max {
                return Err(invalid(format!(
                    "{}: {what} = {v} is not a plausible model dimension (1..={max})",
                    self.name
                )));
            }
        }
        if self.heads * self.head_dim > MAX_DIM || self.heads % self.kv_heads != 0 {
            return Err(invalid(format!(
                "{}: {} heads × head_dim {} with {} KV heads is not a valid attention layout",
                self.name, self.heads, self.head_dim, self.kv_heads
            )));
        }
        Ok(())
    }

    /// The tensors of a llama-style model of this shape, in GGUF order.
    pub fn tensors(&self) -> Vec<VramTensor> {
        let (h, q, kv) = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        );
        let t = |name: String, kind, layer, rows, cols| VramTensor {
            name,
            kind,
            layer,
            rows,
            cols,
            stored: None,
        };
        let mut v = vec![t(
            "token_embd.weight".into(),
            TensorKind::Embed,
            None,
            self.vocab,
            h,
        )];
        for l in 0..self.layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let l = Some(l);
            v.push(t(n("attn_norm.weight"), TensorKind::Norm, l, 1, h));
            v.push(t(n("attn_q.weight"), TensorKind::Q, l, q, h));
            v.push(t(n("attn_k.weight"), TensorKind::K, l, kv, h));
            v.push(t(n("attn_v.weight"), TensorKind::V, l, kv, h));
            if self.qkv_bias {
                v.push(t(n("attn_q.bias"), TensorKind::Bias, l, 1, q));
                v.push(t(n("attn_k.bias"), TensorKind::Bias, l, 1, kv));
                v.push(t(n("attn_v.bias"), TensorKind::Bias, l, 1, kv));
            }
            v.push(t(n("attn_output.weight"), TensorKind::O, l, h, q));
            v.push(t(n("ffn_norm.weight"), TensorKind::Norm, l, 1, h));
            v.push(t(n("ffn_gate.weight"), TensorKind::Gate, l, self.ffn, h));
            v.push(t(n("ffn_up.weight"), TensorKind::Up, l, self.ffn, h));
            v.push(t(n("ffn_down.weight"), TensorKind::Down, l, h, self.ffn));
        }
        v.push(t("output_norm.weight".into(), TensorKind::Norm, None, 1, h));
        if !self.tied {
            v.push(t(
                "output.weight".into(),
                TensorKind::Output,
                None,
                self.vocab,
                h,
            ));
        }
        v
    }
}

/// What a tensor is, for the per-format byte rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TensorKind {
    Embed,
    Output,
    Norm,
    Bias,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Other,
}

impl TensorKind {
    /// Linear layers: what bitsandbytes, AWQ and GPTQ quantize (never the
    /// embeddings or `lm_head`, which transformers keeps in 16 bits).
    pub fn is_linear(self) -> bool {
        matches!(
            self,
            TensorKind::Q
                | TensorKind::K
                | TensorKind::V
                | TensorKind::O
                | TensorKind::Gate
                | TensorKind::Up
                | TensorKind::Down
        )
    }
}

/// One tensor as the memory model sees it: `rows` × `cols` with `cols` the
/// input dimension (GGUF `ne[0]`, torch's last), and what it takes on disk
/// when it comes from a real file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VramTensor {
    pub name: String,
    pub kind: TensorKind,
    pub layer: Option<u64>,
    pub rows: u64,
    pub cols: u64,
    /// Stored dtype and bytes, for tensors read from a model file.
    #[serde(skip)]
    pub stored: Option<(DType, u64)>,
}

impl VramTensor {
    pub fn numel(&self) -> u64 {
        self.rows * self.cols
    }
}

/// A model to plan for: its shape, its tensors, where it came from.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub shape: Shape,
    pub source: String,
    pub tensors: Vec<VramTensor>,
    /// True when the tensors come from a GGUF file (so `native` means
    /// llama.cpp and the stored GGML types).
    pub is_gguf: bool,
    /// True when `tensors` carry their stored bytes (`native` is available).
    pub has_stored: bool,
    /// How a pre-quantized checkpoint is packed (its `native` format).
    pub packing: Option<Packing>,
    /// Pre-quantized versions published on the Hub (from the catalog): the
    /// repos AWQ/GPTQ commands load.
    pub published: Vec<(super::DeployFormat, String)>,
}

impl ModelSpec {
    /// A model described by its shape alone (catalog entry or config.json).
    pub fn from_shape(shape: Shape, source: impl Into<String>) -> Result<ModelSpec> {
        shape.check()?;
        Ok(ModelSpec {
            tensors: shape.tensors(),
            shape,
            source: source.into(),
            is_gguf: false,
            has_stored: false,
            packing: None,
            published: Vec::new(),
        })
    }

    /// A bare `config.json` (or any JSON with the same fields).
    pub fn from_config(c: &serde_json::Value, source: &str) -> Result<ModelSpec> {
        let d = arch::declared_from_config(c);
        let inner = c.get("text_config").unwrap_or(c);
        let need = |v: Option<u64>, what: &str| {
            v.ok_or_else(|| invalid(format!("{source}: config has no {what}")))
        };
        let hidden = need(d.hidden, "hidden_size")?;
        let heads = need(d.heads, "num_attention_heads")?;
        if heads == 0 {
            return Err(invalid(format!("{source}: num_attention_heads is 0")));
        }
        let family = d.family.clone().unwrap_or_else(|| "unknown".into());
        // `dir/config.json` is named after its directory.
        let path = std::path::Path::new(source);
        let name = match (path.file_name(), path.parent().and_then(|p| p.file_name())) {
            (Some(f), Some(dir)) if f == "config.json" => dir.to_string_lossy().into_owned(),
            _ => source.to_string(),
        };
        let shape = Shape {
            name,
            layers: need(d.layers, "num_hidden_layers")?,
            hidden,
            heads,
            kv_heads: d.kv_heads.unwrap_or(heads),
            head_dim: d.head_dim.unwrap_or(hidden / heads),
            ffn: need(d.ffn, "intermediate_size")?,
            vocab: need(d.vocab, "vocab_size")?,
            tied: d.tied.unwrap_or(false),
            qkv_bias: Family::from_name(&family).qkv_bias()
                || inner.get("attention_bias").and_then(|v| v.as_bool()) == Some(true),
            max_ctx: d.ctx.unwrap_or(4096).min(MAX_CTX),
            family,
        };
        Self::from_shape(shape, source)
    }

    /// A real model opened through the tensor store: shape from
    /// `arch::detect`, tensors (and their stored types) from the file, packed
    /// weights (bitsandbytes, AWQ, GPTQ) in their real shapes with the bytes
    /// of all their side tensors ([`packed`]).
    pub fn from_model(m: &Model, label: &str) -> Result<ModelSpec> {
        let a = arch::detect(m);
        // Where the tensors leave a value open, the declared one was asked.
        let asked = match a.hparams_source {
            "none" => "there is no config.json beside the weights to declare it".to_string(),
            src => format!("the {src} does not declare it"),
        };
        let need = |v: Option<u64>, what: &str| {
            v.ok_or_else(|| {
                invalid(format!(
                    "{label}: cannot tell {what} from the tensors, and {asked} (the model's config.json beside the weights fixes this)"
                ))
            })
        };
        // The file or directory name, for the output file names in commands.
        let path = std::path::Path::new(label.trim_end_matches('/'));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| label.to_string());
        let shape = Shape {
            name,
            family: a
                .declared_family
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            layers: need(a.layers, "the layer count")?,
            hidden: need(a.hidden_size, "hidden_size")?,
            heads: need(a.heads, "the attention head count")?,
            kv_heads: need(a.kv_heads, "the KV head count")?,
            head_dim: need(a.head_dim, "head_dim")?,
            ffn: need(a.ffn_size, "intermediate_size")?,
            vocab: need(a.vocab, "vocab_size")?,
            tied: a.tied_embeddings,
            qkv_bias: a.attention_bias,
            max_ctx: a.context_length.unwrap_or(4096).min(MAX_CTX),
        };
        shape.check()?;
        let logical = packed::logical_tensors(m);
        let tensors = logical
            .tensors(m)
            .map(|t| {
                let (kind, layer) = match arch::role(&t.name) {
                    Role::Embed => (TensorKind::Embed, None),
                    Role::LmHead => (TensorKind::Output, None),
                    Role::FinalNorm => (TensorKind::Norm, None),
                    Role::Layer(i, p) => (
                        match p {
                            LayerPart::AttnNorm | LayerPart::FfnNorm => TensorKind::Norm,
                            LayerPart::Q => TensorKind::Q,
                            LayerPart::K => TensorKind::K,
                            LayerPart::V => TensorKind::V,
                            LayerPart::O => TensorKind::O,
                            LayerPart::QBias | LayerPart::KBias | LayerPart::VBias => {
                                TensorKind::Bias
                            }
                            LayerPart::Gate => TensorKind::Gate,
                            LayerPart::Up => TensorKind::Up,
                            LayerPart::Down => TensorKind::Down,
                        },
                        Some(i),
                    ),
                    Role::Other if t.name.contains("norm") => (TensorKind::Norm, None),
                    Role::Other => (TensorKind::Other, None),
                };
                let cols = t.shape.last().copied().unwrap_or(1);
                let rows = if t.shape.len() <= 1 {
                    1
                } else {
                    t.numel() / cols.max(1)
                };
                VramTensor {
                    name: t.name.clone(),
                    kind,
                    layer,
                    rows,
                    cols,
                    stored: Some((t.dtype, t.bytes)),
                }
            })
            .collect();
        Ok(ModelSpec {
            shape,
            source: label.to_string(),
            tensors,
            is_gguf: m.container == Container::Gguf,
            has_stored: true,
            packing: logical.packing,
            published: Vec::new(),
        })
    }

    pub fn params(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel()).sum()
    }
}
