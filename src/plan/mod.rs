//! `vram-plan`: will this model fit this GPU, for how many users, at what
//! cost.
//!
//! This module owns the memory model, component by component (each formula
//! and its upstream source is in `docs/VRAM.md`):
//!
//! * **weights**, per tensor for the chosen format ([`tensor_bytes`]): the
//!   bytes a tensor takes under bf16/f16, bitsandbytes LLM.int8 and NF4,
//!   AWQ and GPTQ (packed 4/8-bit, group scales and zeros, `g_idx`), and the
//!   GGUF file types, whose per-tensor types follow `llama-quantize`
//!   (`quant::ftype::plan_types`, shared with `llmtool quantize`); for a model that already is a GGUF the stored types are
//!   used as they are;
//! * **KV cache** ([`kv_bytes_per_token`]): 2 × layers × kv_heads × head_dim
//!   × bytes per element (GGML block sizes for q8_0/q4_0);
//! * **activations / compute buffers** per engine ([`Engine`]):
//!   llama.cpp's compute-buffer reservation, transformers' forward
//!   activations, vLLM's profiled peak;
//! * **runtime overhead** per engine (CUDA context, library workspaces,
//!   llama.cpp's `--fit-target` margin, vLLM's non-torch memory and CUDA
//!   graphs).
//!
//! [`plan`] evaluates one model × format × GPU setup: whether it fits, the
//! headroom, the largest context for the users asked, the most users at the
//! context asked, llama.cpp's `-ngl` and host RAM when it does not fit, a
//! per-device layer split for several GPUs, the hourly price and the engine
//! flags. [`recommend`] picks the best-quality format that fits with a
//! margin. The data files (model and GPU catalogs) live in `data/` and are
//! read by [`catalog`]; tables are drawn by [`render`].

pub mod catalog;
pub mod render;

use serde::Serialize;

use crate::arch::{self, LayerPart, Role};
use crate::quant::ftype::{plan_types, FileType, ModelFacts, TensorDesc};
use crate::quant::GgmlType;
use crate::store::{DType, Format as StoreFormat, Model};

pub use catalog::{Gpu, GpuSetup};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Errors of the planner; messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T, E = PlanError> = std::result::Result<T, E>;

fn invalid(msg: impl Into<String>) -> PlanError {
    PlanError::Invalid(msg.into())
}

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
const MAX_UBATCH: u64 = 1 << 16;
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
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, q, kv) = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        );
        let t = |name: String, kind, layer, rows, cols| TensorSpec {
            name,
            kind,
            layer,
            rows,
            cols,
            stored: None,
        };
        let mut v = vec![t(
            "token_embd.weight".into(),
            Kind::Embed,
            None,
            self.vocab,
            h,
        )];
        for l in 0..self.layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let l = Some(l);
            v.push(t(n("attn_norm.weight"), Kind::Norm, l, 1, h));
            v.push(t(n("attn_q.weight"), Kind::Q, l, q, h));
            v.push(t(n("attn_k.weight"), Kind::K, l, kv, h));
            v.push(t(n("attn_v.weight"), Kind::V, l, kv, h));
            if self.qkv_bias {
                v.push(t(n("attn_q.bias"), Kind::Bias, l, 1, q));
                v.push(t(n("attn_k.bias"), Kind::Bias, l, 1, kv));
                v.push(t(n("attn_v.bias"), Kind::Bias, l, 1, kv));
            }
            v.push(t(n("attn_output.weight"), Kind::O, l, h, q));
            v.push(t(n("ffn_norm.weight"), Kind::Norm, l, 1, h));
            v.push(t(n("ffn_gate.weight"), Kind::Gate, l, self.ffn, h));
            v.push(t(n("ffn_up.weight"), Kind::Up, l, self.ffn, h));
            v.push(t(n("ffn_down.weight"), Kind::Down, l, h, self.ffn));
        }
        v.push(t("output_norm.weight".into(), Kind::Norm, None, 1, h));
        if !self.tied {
            v.push(t("output.weight".into(), Kind::Output, None, self.vocab, h));
        }
        v
    }
}

/// What a tensor is, for the per-format byte rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
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

impl Kind {
    /// Linear layers: what bitsandbytes, AWQ and GPTQ quantize (never the
    /// embeddings or `lm_head`, which transformers keeps in 16 bits).
    pub fn is_linear(self) -> bool {
        matches!(
            self,
            Kind::Q | Kind::K | Kind::V | Kind::O | Kind::Gate | Kind::Up | Kind::Down
        )
    }
}

/// One tensor as the memory model sees it: `rows` × `cols` with `cols` the
/// input dimension (GGUF `ne[0]`, torch's last), and what it takes on disk
/// when it comes from a real file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub kind: Kind,
    pub layer: Option<u64>,
    pub rows: u64,
    pub cols: u64,
    /// Stored dtype and bytes, for tensors read from a model file.
    #[serde(skip)]
    pub stored: Option<(DType, u64)>,
}

impl TensorSpec {
    pub fn numel(&self) -> u64 {
        self.rows * self.cols
    }
}

/// A model to plan for: its shape, its tensors, where it came from.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub shape: Shape,
    pub source: String,
    pub tensors: Vec<TensorSpec>,
    /// True when the tensors come from a GGUF file (so `native` means
    /// llama.cpp and the stored GGML types).
    pub is_gguf: bool,
    /// True when `tensors` carry their stored bytes (`native` is available).
    pub has_stored: bool,
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
            qkv_bias: family == "qwen2"
                || inner.get("attention_bias").and_then(|v| v.as_bool()) == Some(true),
            max_ctx: d.ctx.unwrap_or(4096).min(MAX_CTX),
            family,
        };
        Self::from_shape(shape, source)
    }

    /// A real model opened through the tensor store: shape from
    /// `arch::detect`, tensors (and their stored types) from the file.
    pub fn from_model(m: &Model, label: &str) -> Result<ModelSpec> {
        let a = arch::detect(m);
        let need = |v: Option<u64>, what: &str| {
            v.ok_or_else(|| {
                invalid(format!(
                    "{label}: cannot tell {what} from the tensors or the {} (a config.json beside the weights fixes this)",
                    a.hparams_source
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
        let tensors = m
            .tensors()
            .iter()
            .map(|t| {
                let (kind, layer) = match arch::role(&t.name) {
                    Role::Embed => (Kind::Embed, None),
                    Role::LmHead => (Kind::Output, None),
                    Role::FinalNorm => (Kind::Norm, None),
                    Role::Layer(i, p) => (
                        match p {
                            LayerPart::AttnNorm | LayerPart::FfnNorm => Kind::Norm,
                            LayerPart::Q => Kind::Q,
                            LayerPart::K => Kind::K,
                            LayerPart::V => Kind::V,
                            LayerPart::O => Kind::O,
                            LayerPart::QBias | LayerPart::KBias | LayerPart::VBias => Kind::Bias,
                            LayerPart::Gate => Kind::Gate,
                            LayerPart::Up => Kind::Up,
                            LayerPart::Down => Kind::Down,
                        },
                        Some(i),
                    ),
                    Role::Other if t.name.contains("norm") => (Kind::Norm, None),
                    Role::Other => (Kind::Other, None),
                };
                let cols = t.shape.last().copied().unwrap_or(1);
                let rows = if t.shape.len() <= 1 {
                    1
                } else {
                    t.numel() / cols.max(1)
                };
                TensorSpec {
                    name: t.name.clone(),
                    kind,
                    layer,
                    rows,
                    cols,
                    stored: Some((t.dtype, t.len)),
                }
            })
            .collect();
        Ok(ModelSpec {
            shape,
            source: label.to_string(),
            tensors,
            is_gguf: m.format == StoreFormat::Gguf,
            has_stored: true,
        })
    }

    pub fn params(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel()).sum()
    }
}

/// Weight formats `vram-plan` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The model's tensors as stored (a real model only).
    Native,
    Bf16,
    F16,
    /// GGUF Q8_0.
    Q8_0,
    /// bitsandbytes LLM.int8 (`load_in_8bit`).
    Int8,
    /// GPTQ 8-bit, group 128.
    Gptq8,
    Q6K,
    Q5KM,
    /// AWQ 4-bit, group 128 (GEMM packing).
    Awq,
    /// GPTQ 4-bit, group 128.
    Gptq,
    Q4KM,
    /// bitsandbytes NF4 (`load_in_4bit`, no double quantization).
    Nf4,
}

/// Every format, best quality first (the order `recommend` tries them in):
/// 16-bit, then 8-bit, 6-, 5- and 4-bit; at equal bits the formats with
/// finer scales or activation-aware calibration first (published perplexity
/// comparisons, docs/VRAM.md).
pub const QUALITY_ORDER: &[Format] = &[
    Format::Bf16,
    Format::F16,
    Format::Q8_0,
    Format::Int8,
    Format::Gptq8,
    Format::Q6K,
    Format::Q5KM,
    Format::Awq,
    Format::Gptq,
    Format::Q4KM,
    Format::Nf4,
];

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Bf16 => "bf16",
            Format::F16 => "f16",
            Format::Q8_0 => "q8_0",
            Format::Int8 => "int8",
            Format::Gptq8 => "gptq-int8",
            Format::Q6K => "q6_k",
            Format::Q5KM => "q5_k_m",
            Format::Awq => "awq",
            Format::Gptq => "gptq",
            Format::Q4KM => "q4_k_m",
            Format::Nf4 => "nf4",
        }
    }

    pub fn parse(s: &str) -> Result<Format> {
        let l = s.to_ascii_lowercase();
        QUALITY_ORDER
            .iter()
            .chain([Format::Native].iter())
            .copied()
            .find(|f| f.name() == l || (l == "gptq-int4" && *f == Format::Gptq))
            .ok_or_else(|| {
                invalid(format!(
                    "unknown format '{s}': use one of native, {}",
                    QUALITY_ORDER
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The `llama-quantize` file type, for the GGUF k-quant and Q8_0 formats.
    fn gguf_ftype(self) -> Option<FileType> {
        Some(match self {
            Format::Q8_0 => FileType::Q8_0,
            Format::Q6K => FileType::Q6_K,
            Format::Q5KM => FileType::Q5_K_M,
            Format::Q4KM => FileType::Q4_K_M,
            _ => return None,
        })
    }

    /// Engines that load this format.
    pub fn engines(self) -> &'static [Engine] {
        match self {
            Format::Native => &[Engine::LlamaCpp, Engine::Transformers, Engine::Vllm],
            Format::Bf16 | Format::F16 => &[Engine::Transformers, Engine::Vllm, Engine::LlamaCpp],
            Format::Q8_0 | Format::Q6K | Format::Q5KM | Format::Q4KM => &[Engine::LlamaCpp],
            Format::Int8 => &[Engine::Transformers],
            Format::Awq | Format::Gptq | Format::Gptq8 | Format::Nf4 => {
                &[Engine::Transformers, Engine::Vllm]
            }
        }
    }
}

/// The inference engine whose memory behaviour is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Transformers,
    Vllm,
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Transformers => "transformers",
            Engine::Vllm => "vllm",
            Engine::LlamaCpp => "llama.cpp",
        }
    }

    pub fn parse(s: &str) -> Result<Engine> {
        match s.to_ascii_lowercase().as_str() {
            "transformers" | "hf" => Ok(Engine::Transformers),
            "vllm" => Ok(Engine::Vllm),
            "llama.cpp" | "llamacpp" | "llama-cpp" | "gguf" => Ok(Engine::LlamaCpp),
            _ => Err(invalid(format!(
                "unknown engine '{s}': use transformers, vllm or llama.cpp"
            ))),
        }
    }

    /// The engine a format runs on when none is named: GGUF formats (and a
    /// GGUF model's own tensors) on llama.cpp, the rest on transformers.
    pub fn natural(f: Format, model: &ModelSpec) -> Engine {
        match f {
            Format::Native if model.is_gguf => Engine::LlamaCpp,
            f if f.engines()[0] == Engine::LlamaCpp => Engine::LlamaCpp,
            _ => Engine::Transformers,
        }
    }
}

/// KV cache element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Fp8,
}

impl KvType {
    pub fn parse(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "fp16" | "auto" => Ok(KvType::F16),
            "bf16" => Ok(KvType::Bf16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            "fp8" | "fp8_e4m3" | "fp8_e5m2" => Ok(KvType::Fp8),
            _ => Err(invalid(format!(
                "unknown KV cache type '{s}': use f16, bf16, q8_0, q4_0 or fp8"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
            KvType::Fp8 => "fp8",
        }
    }

    /// Bytes of one row of `n` elements (GGML block sizes for q8_0/q4_0).
    fn row_bytes(self, n: u64) -> Option<u64> {
        match self {
            KvType::F16 | KvType::Bf16 => Some(2 * n),
            KvType::Fp8 => Some(n),
            KvType::Q8_0 | KvType::Q4_0 => {
                let t = if self == KvType::Q8_0 {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q4_0
                };
                (n % t.block_size() == 0).then(|| n / t.block_size() * t.type_size())
            }
        }
    }

    fn supported_by(self, e: Engine) -> bool {
        match e {
            Engine::LlamaCpp => self != KvType::Fp8,
            Engine::Vllm => matches!(self, KvType::F16 | KvType::Bf16 | KvType::Fp8),
            Engine::Transformers => matches!(self, KvType::F16 | KvType::Bf16),
        }
    }
}

/// KV cache bytes per token of one sequence, all layers, K and V.
pub fn kv_bytes_per_token(s: &Shape, kv: KvType) -> Result<u64> {
    let n = s.kv_heads * s.head_dim;
    let row = kv.row_bytes(n).ok_or_else(|| {
        invalid(format!(
            "KV cache type {} needs kv_heads × head_dim ({n}) to be a multiple of 32",
            kv.name()
        ))
    })?;
    Ok(2 * s.layers * row)
}

/// Bytes tensor `t` takes in format `f` when loaded by `engine`.
///
/// bf16/f16: 2 bytes per element (a GGUF keeps 1-D tensors in F32).
/// LLM.int8: int8 weights plus one f32 scale per output row (`SCB`).
/// NF4: 4-bit codes plus one f32 absmax per 64 elements.
/// AWQ (GEMM) / GPTQ: packed 4- or 8-bit weights, one f16 scale and one
/// packed zero per output column per group of 128 inputs; GPTQ adds a
/// 4-byte `g_idx` per input column. Embeddings, `lm_head`, norms and biases
/// stay 16-bit in every transformers/vLLM format.
fn tensor_bytes(
    f: Format,
    engine: Engine,
    t: &TensorSpec,
    gguf_ty: Option<GgmlType>,
) -> Result<u64> {
    let n = t.numel();
    let gguf = engine == Engine::LlamaCpp;
    let one_d = t.rows <= 1 || matches!(t.kind, Kind::Norm | Kind::Bias);
    let group = |bits_zero: u64| {
        let groups = t.cols.div_ceil(128);
        groups * t.rows * 2 + (groups * t.rows * bits_zero).div_ceil(8)
    };
    Ok(match f {
        Format::Native => match t.stored {
            Some((_, len)) => len,
            None => {
                return Err(invalid(
                    "format 'native' needs a real model file (the catalog and config.json give shapes only)",
                ))
            }
        },
        Format::Bf16 | Format::F16 if gguf && one_d => 4 * n,
        Format::Bf16 | Format::F16 => 2 * n,
        Format::Int8 if t.kind.is_linear() => n + 4 * t.rows,
        Format::Nf4 if t.kind.is_linear() => n / 2 + n.div_ceil(64) * 4,
        Format::Awq if t.kind.is_linear() => n / 2 + group(4),
        Format::Gptq if t.kind.is_linear() => n / 2 + group(4) + 4 * t.cols,
        Format::Gptq8 if t.kind.is_linear() => n + group(8) + 4 * t.cols,
        Format::Int8 | Format::Nf4 | Format::Awq | Format::Gptq | Format::Gptq8 => 2 * n,
        Format::Q8_0 | Format::Q6K | Format::Q5KM | Format::Q4KM => {
            let ty = gguf_ty.expect("GGUF formats come with their planned types");
            t.rows * (t.cols / ty.block_size()) * ty.type_size()
        }
    })
}

/// Per-engine settings that change the memory model.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Context length per sequence.
    pub ctx: u64,
    /// Concurrent sequences.
    pub users: u64,
    /// Tokens per forward pass: llama.cpp's `-ub` (default 512),
    /// transformers' prefill (default the whole context), vLLM's
    /// `--max-num-batched-tokens` (default 2048, or 8192 on ≥ 70 GiB GPUs).
    pub ubatch: Option<u64>,
    /// KV cache type (`None`: the engine's default, 16-bit).
    pub kv: Option<KvType>,
    /// llama.cpp flash attention (its `auto` turns it on where supported).
    pub flash_attn: bool,
    /// vLLM `--gpu-memory-utilization`.
    pub gpu_util: f64,
    /// vLLM captures CUDA graphs (off with `--enforce-eager`).
    pub cuda_graphs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ctx: 4096,
            users: 1,
            ubatch: None,
            kv: None,
            flash_attn: true,
            gpu_util: 0.9,
            cuda_graphs: true,
        }
    }
}

/// llama.cpp's default `-ub`.
pub const LLAMA_CPP_UBATCH: u64 = 512;
/// llama.cpp `--fit-target` default: memory kept free per device for what
/// its buffers do not count (`common/arg.cpp`, PR #16653).
pub const LLAMA_CPP_FIT_TARGET: u64 = 1024 * MIB;
/// PyTorch CUDA context, cuBLAS workspaces and allocator slack under
/// transformers: gpu_poor's fixed "cuda + other overhead" of 650 MB
/// (RahulSChand/gpu_poor `src/App.js`).
pub const TRANSFORMERS_OVERHEAD: u64 = 650 * 1_000_000;
/// vLLM non-torch allocations (NCCL, cuBLAS) as logged in vllm#12330.
pub const VLLM_NON_TORCH: u64 = GIB / 10;
/// vLLM CUDA graph memory: 0.65 GiB logged for gemma-3-4b (vllm PR #21489);
/// we reserve this much unless `--enforce-eager`.
pub const VLLM_CUDA_GRAPHS: u64 = 650 * MIB;
/// Bytes per logit vLLM's profiled sampler step holds at its peak, over
/// `min(--max-num-seqs, tokens)` × vocabulary logits. The dummy requests ask
/// for top-k and top-p, so the peak is the sort-based path of
/// `vllm/model_executor/layers/sampler.py`: bf16 logits (2), their f32 copy
/// (4), sorted values (4) with int64 indices (8), softmax and cumsum for
/// top-p (4 + 4), two masks (2), the int64 inverse permutation (8) and the
/// re-gathered logits (4): at most 40. Fitted to 38.5 over five profile logs
/// of vLLM 0.6.5–0.8.5 whose settings are known (`fixtures/vram/published.json`,
/// `vllm_profile_logs`): all within 2 %.
pub const VLLM_SAMPLER_BYTES_PER_LOGIT: f64 = 38.5;
/// vLLM's KV block size in tokens (`--block-size` default).
pub const VLLM_BLOCK: u64 = 16;
/// llama.cpp pads the KQ mask's token dimension (`GGML_KQ_MASK_PAD`).
const KQ_MASK_PAD: u64 = 64;
/// llama.cpp rounds each sequence's context up to a multiple of 256
/// (`llama_context` constructor, `src/llama-context.cpp`).
const LLAMA_CPP_CTX_PAD: u64 = 256;

/// KV cells llama.cpp allocates for `users` sequences of `ctx` tokens
/// (`-c ctx·users -np users`: each stream gets `ctx` rounded up to 256).
pub fn llama_cpp_cells(ctx: u64, users: u64) -> u64 {
    ctx.next_multiple_of(LLAMA_CPP_CTX_PAD) * users
}

/// Memory of one plan, in bytes, per device and summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// Weights resident on the GPU(s).
    pub weights: u64,
    /// KV cache on the GPU(s).
    pub kv: u64,
    /// Activations / compute buffers.
    pub compute: u64,
    /// CUDA context, workspaces, margins.
    pub overhead: u64,
    /// Weights, KV and buffers kept in host RAM.
    pub host: u64,
}

impl Breakdown {
    pub fn vram(&self) -> u64 {
        self.weights + self.kv + self.compute + self.overhead
    }
}

/// llama.cpp's compute buffer for a context of `n_ctx` cells (all
/// sequences) and micro-batch `ub`: the worst-case prompt graph reserved by
/// `sched_reserve` (`src/llama-context.cpp`) holds the KQ mask for the whole
/// graph plus the largest of: the output stage (f32 logits for `ub`
/// outputs and ~5 hidden-state buffers), the attention stage without flash
/// attention (f32 KQ for every head), the FFN stage (gate and up in f32).
/// The small coefficients (5, 6.5, 3 hidden-state buffers) were fitted to
/// llama.cpp's own figures (fixtures/vram/llama_cpp_buffers.json, ≤ 2 %).
pub fn llama_cpp_compute(s: &Shape, n_ctx: u64, ub: u64, flash_attn: bool) -> u64 {
    let t = ub.min(n_ctx);
    let h = s.hidden * t * 4;
    let mask = n_ctx * t.div_ceil(KQ_MASK_PAD) * KQ_MASK_PAD * if flash_attn { 2 } else { 4 };
    let output = s.vocab * t * 4 + 5 * h;
    let attention = if flash_attn {
        0
    } else {
        s.heads * n_ctx * t * 4 + 13 * h / 2
    };
    let ffn = 2 * s.ffn * t * 4 + 3 * h;
    mask + output.max(attention).max(ffn)
}

/// Forward activations of `tokens` tokens at 16 bits: the MLP holds three
/// `ffn`-wide buffers at once (act(gate), up, their product) next to ~4
/// hidden-wide ones (residual, normed input, attention output, projection).
fn forward_activations(s: &Shape, tokens: u64) -> u64 {
    tokens * (3 * s.ffn + 4 * s.hidden) * 2
}

/// What llama.cpp reports for a model on the CPU backend (everything in
/// host buffers): model, KV and compute buffer bytes. The oracle figures in
/// `fixtures/vram/llama_cpp_buffers.json` are these three numbers.
pub fn llama_cpp_buffers(m: &ModelSpec, f: Format, o: &Options) -> Result<(u64, u64, u64)> {
    let weights = weights_total(m, f, Engine::LlamaCpp)?;
    let cells = llama_cpp_cells(o.ctx, o.users);
    let kv = cells * kv_bytes_per_token(&m.shape, o.kv.unwrap_or(KvType::F16))?;
    let ub = o.ubatch.unwrap_or(LLAMA_CPP_UBATCH);
    Ok((
        weights,
        kv,
        llama_cpp_compute(&m.shape, cells, ub, o.flash_attn),
    ))
}

/// Each tensor's bytes for format `f` under `engine`, in `m.tensors` order.
/// GGUF file types take `llama-quantize`'s per-tensor types from
/// [`crate::quant::ftype::plan_types`], the rule `llmtool quantize` writes.
pub fn weights_by_tensor(m: &ModelSpec, f: Format, engine: Engine) -> Result<Vec<u64>> {
    let types: Vec<Option<GgmlType>> = match f.gguf_ftype() {
        Some(ft) => {
            let names: Vec<String> = m
                .tensors
                .iter()
                .map(|t| crate::arch::rename(&t.name, true).unwrap_or_else(|| t.name.clone()))
                .collect();
            let ne: Vec<Vec<u64>> = m
                .tensors
                .iter()
                .map(|t| {
                    if t.rows <= 1 {
                        vec![t.cols]
                    } else {
                        vec![t.cols, t.rows]
                    }
                })
                .collect();
            let descs: Vec<TensorDesc> = names
                .iter()
                .zip(&ne)
                .map(|(name, ne)| TensorDesc {
                    name,
                    ne,
                    ty: if ne.len() == 1 {
                        GgmlType::F32
                    } else {
                        GgmlType::F16
                    },
                })
                .collect();
            let family = match m.shape.family.as_str() {
                "qwen2" => "qwen2",
                _ => "llama",
            };
            let facts = ModelFacts {
                arch: family.into(),
                n_layer: m.shape.layers as u32,
                n_expert: 0,
                n_head: m.shape.heads as u32,
                n_head_kv: m.shape.kv_heads as u32,
            };
            plan_types(ft, &facts, &descs)
                .map_err(|e| invalid(format!("choosing GGUF tensor types: {e}")))?
                .into_iter()
                .map(|c| Some(c.ty))
                .collect()
        }
        None => vec![None; m.tensors.len()],
    };
    m.tensors
        .iter()
        .zip(types)
        .map(|(t, ty)| tensor_bytes(f, engine, t, ty))
        .collect()
}

/// Sum of tensor bytes for format `f` under `engine`.
pub fn weights_total(m: &ModelSpec, f: Format, engine: Engine) -> Result<u64> {
    Ok(weights_by_tensor(m, f, engine)?.iter().sum())
}

/// Weights split into per-layer bytes, and the rest: what stays with the
/// input (token embedding) and what goes with the output (final norm, head).
#[derive(Debug, Clone)]
struct LayerBytes {
    layers: Vec<u64>,
    input: u64,
    output: u64,
}

fn layer_bytes(m: &ModelSpec, f: Format, e: Engine) -> Result<LayerBytes> {
    let mut lb = LayerBytes {
        layers: vec![0; m.shape.layers as usize],
        input: 0,
        output: 0,
    };
    for (t, b) in m.tensors.iter().zip(weights_by_tensor(m, f, e)?) {
        match (t.layer, t.kind) {
            (Some(l), _) if (l as usize) < lb.layers.len() => lb.layers[l as usize] += b,
            (_, Kind::Embed) => {
                lb.input += b;
                // llama.cpp keeps token_embd in host memory and copies it to
                // the output device when the head is tied to it.
                if m.shape.tied && e == Engine::LlamaCpp {
                    lb.output += b;
                }
            }
            _ => lb.output += b,
        }
    }
    Ok(lb)
}

/// The result of planning one model × format × engine on one GPU setup.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub gpu: String,
    pub gpus: u32,
    pub format: Format,
    pub engine: Engine,
    pub ctx: u64,
    pub users: u64,
    pub ubatch: u64,
    pub kv_type: KvType,
    /// Usable bytes: the GPUs' total (× `gpu_memory_utilization` for vLLM).
    pub capacity: u64,
    pub need: Breakdown,
    pub fits: bool,
    /// capacity − need (negative when it does not fit).
    pub headroom: i64,
    /// Largest context per sequence that fits with `users` (0: none).
    pub max_ctx: u64,
    /// Most concurrent sequences that fit at `ctx` (0: none).
    pub max_users: u64,
    /// llama.cpp `-ngl` (layers + output on the GPU; n_layer + 1 = all).
    pub ngl: Option<u64>,
    /// Host RAM needed for what is not on the GPU (llama.cpp offload).
    pub host_ram: u64,
    /// Layers per device (several GPUs).
    pub split: Vec<u64>,
    pub price_per_hour: f64,
    pub flags: String,
}

/// Memory on each device for a layer split `split` (layers per device, in
/// order), or the single-device total when `split` has one entry.
fn device_loads(
    m: &ModelSpec,
    f: Format,
    e: Engine,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
    split: &[u64],
) -> Result<Vec<Breakdown>> {
    // vLLM shards every layer across its tensor-parallel ranks.
    let tp = if e == Engine::Vllm {
        setup.count.max(1) as u64
    } else {
        1
    };
    let s = &m.shape;
    let kv_type = o.kv.unwrap_or(KvType::F16);
    let kv_tok = kv_bytes_per_token(s, kv_type)?;
    let kv_layer_tok = kv_tok / s.layers.max(1);
    let mut out = Vec::new();
    let mut first = 0usize;
    for (d, &cnt) in split.iter().enumerate() {
        let range = first..first + cnt as usize;
        first += cnt as usize;
        let last = d + 1 == split.len();
        let layer_w: u64 = lb.layers[range].iter().sum();
        let mut b = Breakdown::default();
        match e {
            Engine::LlamaCpp => {
                b.weights = layer_w + if last { lb.output } else { 0 };
                b.kv = cnt * kv_layer_tok * llama_cpp_cells(o.ctx, o.users);
                b.compute = llama_cpp_compute(
                    s,
                    llama_cpp_cells(o.ctx, o.users),
                    o.ubatch.unwrap_or(LLAMA_CPP_UBATCH),
                    o.flash_attn,
                );
                b.overhead = LLAMA_CPP_FIT_TARGET;
                if d == 0 {
                    b.host = lb.input;
                }
            }
            Engine::Transformers => {
                b.weights =
                    layer_w + if d == 0 { lb.input } else { 0 } + if last { lb.output } else { 0 };
                b.kv = cnt * kv_layer_tok * o.ctx * o.users;
                let tokens = o.users * o.ubatch.unwrap_or(o.ctx).min(o.ctx);
                let dequant =
                    if matches!(f, Format::Nf4 | Format::Awq | Format::Gptq | Format::Gptq8) {
                        m.tensors
                            .iter()
                            .filter(|t| t.kind.is_linear())
                            .map(|t| t.numel() * 2)
                            .max()
                            .unwrap_or(0)
                    } else {
                        0
                    };
                b.compute = forward_activations(s, tokens) + o.users * s.vocab * 4 * 2 + dequant;
                b.overhead = TRANSFORMERS_OVERHEAD;
            }
            Engine::Vllm => {
                // Tensor parallel: every rank holds 1/n of the weights and KV.
                let all: u64 = lb.layers.iter().sum::<u64>() + lb.input + lb.output;
                // Plus the rotary cos/sin cache every rank keeps in the
                // model dtype (`get_rope`, `max_position × head_dim`): part
                // of vLLM's "model weights take" figure (why Llama-3.1-8B
                // logs 14.99 GiB where Llama-3-8B logs 14.96).
                b.weights = all.div_ceil(tp) + s.max_ctx * s.head_dim * 2;
                let blocks = o.ctx.div_ceil(VLLM_BLOCK) * VLLM_BLOCK;
                // KV heads are split over ranks, replicated when fewer than ranks.
                let kv_per_rank = (s.kv_heads / tp).max(1);
                b.kv = (blocks * o.users * kv_tok).div_ceil(s.kv_heads.max(1)) * kv_per_rank;
                let tokens = o.ubatch.unwrap_or(vllm_default_batched_tokens(setup));
                b.compute = forward_activations(s, tokens)
                    .div_ceil(tp)
                    .max(vllm_sampler_peak(s, tokens, o.users));
                b.overhead = VLLM_NON_TORCH + if o.cuda_graphs { VLLM_CUDA_GRAPHS } else { 0 };
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// The peak of vLLM's profiled sampler step. The profile runs one forward
/// pass of `tokens` split over `seqs` dummy requests; its temporaries are
/// freed, but its output hidden states (`tokens × hidden`, 16-bit, full on
/// every tensor-parallel rank) stay alive while the sampler turns the last
/// position of each request into logits. The sampler is not sharded.
fn vllm_sampler_peak(s: &Shape, tokens: u64, seqs: u64) -> u64 {
    let logits = seqs.min(tokens) * s.vocab;
    tokens * s.hidden * 2 + (logits as f64 * VLLM_SAMPLER_BYTES_PER_LOGIT) as u64
}

/// vLLM's default `--max-num-batched-tokens` for `vllm serve`: 2048, or
/// 8192 on GPUs with ≥ 70 GiB (`vllm/engine/arg_utils.py`).
fn vllm_default_batched_tokens(setup: &GpuSetup) -> u64 {
    if setup.gpu.vram_mib * MIB >= 70 * GIB {
        8192
    } else {
        2048
    }
}

/// Layers per device: proportional to what each device has left after its
/// fixed costs, largest remainder first (llama.cpp splits by free memory,
/// `docs/multi-gpu.md`); identical devices get equal shares.
fn split_layers(n_layers: u64, free: &[u64]) -> Vec<u64> {
    let total: u128 = free.iter().map(|&f| f as u128).sum::<u128>().max(1);
    let exact: Vec<(usize, u128)> = free
        .iter()
        .enumerate()
        .map(|(i, &f)| (i, f as u128 * n_layers as u128))
        .collect();
    let mut split: Vec<u64> = exact.iter().map(|(_, x)| (x / total) as u64).collect();
    let mut rest = n_layers - split.iter().sum::<u64>();
    let mut order: Vec<(usize, u128)> = exact.iter().map(|&(i, x)| (i, x % total)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, _) in order {
        if rest == 0 {
            break;
        }
        split[i] += 1;
        rest -= 1;
    }
    split
}

/// Whether the loads fit their devices, and the smallest per-device headroom.
fn headroom(loads: &[Breakdown], cap_per_device: u64) -> i64 {
    loads
        .iter()
        .map(|b| cap_per_device as i64 - b.vram() as i64)
        .min()
        .unwrap_or(0)
}

/// Usable bytes per device: all of it, or vLLM's `gpu_memory_utilization`
/// share (vLLM sizes its KV cache to fill exactly that).
fn per_device_capacity(e: Engine, o: &Options, setup: &GpuSetup) -> u64 {
    let total = setup.gpu.vram_mib * MIB;
    match e {
        Engine::Vllm => (total as f64 * o.gpu_util) as u64,
        _ => total,
    }
}

struct Eval {
    loads: Vec<Breakdown>,
    split: Vec<u64>,
    headroom: i64,
}

fn evaluate(
    m: &ModelSpec,
    f: Format,
    e: Engine,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
) -> Result<Eval> {
    let cap = per_device_capacity(e, o, setup);
    if o.ctx.saturating_mul(o.users) > MAX_TOKENS {
        // Beyond what we plan (the searches probe here): does not fit.
        return Ok(Eval {
            loads: Vec::new(),
            split: Vec::new(),
            headroom: i64::MIN,
        });
    }
    let n = setup.count.max(1) as usize;
    let (split, loads) = if e == Engine::Vllm {
        let one = device_loads(m, f, e, o, setup, lb, &[m.shape.layers])?;
        (Vec::new(), vec![one[0].clone(); n])
    } else if n == 1 {
        let split = vec![m.shape.layers];
        let loads = device_loads(m, f, e, o, setup, lb, &split)?;
        (split, loads)
    } else {
        // Split by what each device has left after its fixed costs
        // (compute buffer, overhead, embedding/head), layers weighed evenly.
        let base = device_loads(m, f, e, o, setup, lb, &vec![0; n])?;
        let free: Vec<u64> = base.iter().map(|b| cap.saturating_sub(b.vram())).collect();
        let split = split_layers(m.shape.layers, &free);
        let loads = device_loads(m, f, e, o, setup, lb, &split)?;
        (split, loads)
    };
    Ok(Eval {
        headroom: headroom(&loads, cap),
        loads,
        split,
    })
}

fn sum(loads: &[Breakdown]) -> Breakdown {
    loads.iter().fold(Breakdown::default(), |a, b| Breakdown {
        weights: a.weights + b.weights,
        kv: a.kv + b.kv,
        compute: a.compute + b.compute,
        overhead: a.overhead + b.overhead,
        host: a.host + b.host,
    })
}

/// Checks that the engine can run the format and KV type.
fn validate(m: &ModelSpec, f: Format, e: Engine, o: &Options) -> Result<()> {
    if f == Format::Native {
        if !m.has_stored {
            return Err(invalid(
                "format 'native' needs a real model file (the catalog and config.json give shapes only)",
            ));
        }
        if m.is_gguf != (e == Engine::LlamaCpp) {
            return Err(invalid(format!(
                "{} cannot load this model's own files ({}); pick another --engine or --quant",
                e.name(),
                if m.is_gguf { "GGUF" } else { "safetensors" }
            )));
        }
    } else if !f.engines().contains(&e) {
        return Err(invalid(format!(
            "{} does not load {}; engines for it: {}",
            e.name(),
            f.name(),
            f.engines()
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let kv = o.kv.unwrap_or(KvType::F16);
    if !kv.supported_by(e) {
        return Err(invalid(format!(
            "{} has no {} KV cache (llama.cpp: f16, bf16, q8_0, q4_0; vLLM: f16/bf16, fp8; transformers: f16/bf16)",
            e.name(),
            kv.name()
        )));
    }
    if e == Engine::LlamaCpp && !o.flash_attn && matches!(kv, KvType::Q8_0 | KvType::Q4_0) {
        return Err(invalid(
            "llama.cpp needs flash attention for a quantized V cache; drop --no-flash-attn",
        ));
    }
    if o.ctx == 0 || o.users == 0 || o.ubatch == Some(0) {
        return Err(invalid("--ctx, --users and --ubatch must be at least 1"));
    }
    if o.ctx > MAX_CTX
        || o.users > MAX_USERS
        || o.ubatch.is_some_and(|u| u > MAX_UBATCH)
        || o.ctx * o.users > MAX_TOKENS
    {
        return Err(invalid(format!(
            "--ctx is at most {MAX_CTX}, --users at most {MAX_USERS}, --ubatch at most {MAX_UBATCH}, and --ctx × --users at most {MAX_TOKENS}"
        )));
    }
    if !(0.05..=1.0).contains(&o.gpu_util) {
        return Err(invalid("--gpu-util must be between 0.05 and 1"));
    }
    Ok(())
}

/// Largest `x` in `1..=hi` with `ok(x)` (monotone), or 0.
fn search(hi: u64, mut ok: impl FnMut(u64) -> Result<bool>) -> Result<u64> {
    if hi == 0 || !ok(1)? {
        return Ok(0);
    }
    let (mut lo, mut hi) = (1, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Most concurrent sequences `max_users` searches up to.
pub const MAX_USERS: u64 = 4096;

/// llama.cpp partial offload: the largest `-ngl` whose GPU share fits, and
/// the host RAM for the rest. llama.cpp offloads the *last* `ngl` layers
/// (and the output when `ngl` = n_layer + 1); their KV stays with them.
fn offload(
    m: &ModelSpec,
    f: Format,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
) -> Result<(u64, u64, Vec<u64>)> {
    let n = m.shape.layers;
    let cells = llama_cpp_cells(o.ctx, o.users);
    let kv_layer = kv_bytes_per_token(&m.shape, o.kv.unwrap_or(KvType::F16))? / n.max(1) * cells;
    let cap = per_device_capacity(Engine::LlamaCpp, o, setup);
    let ub = o.ubatch.unwrap_or(LLAMA_CPP_UBATCH);
    // What stays on the host with `gpu_layers` offloaded (the output stays
    // too: the plan only offloads it when everything fits).
    let host = |gpu_layers: u64| {
        let cpu = (n - gpu_layers) as usize;
        lb.input
            + lb.layers[..cpu].iter().sum::<u64>()
            + (n - gpu_layers) * kv_layer
            + lb.output
            + llama_cpp_compute(&m.shape, cells, ub, o.flash_attn)
    };
    let devices = setup.count.max(1) as usize;
    // llama.cpp offloads the last layers; `device_loads` counts a layer's KV
    // with it, and the output with the last device when it is given one.
    for ngl in (1..=n).rev() {
        let part = LayerBytes {
            layers: lb.layers[(n - ngl) as usize..].to_vec(),
            input: lb.input,
            output: 0,
        };
        let split = split_layers(ngl, &vec![1; devices]);
        let loads = device_loads(m, f, Engine::LlamaCpp, o, setup, &part, &split)?;
        if headroom(&loads, cap) >= 0 {
            return Ok((ngl, host(ngl), split));
        }
    }
    Ok((0, host(0), vec![0; devices]))
}

/// Plans model `m` in format `f` on `engine` with `setup`.
pub fn plan(m: &ModelSpec, f: Format, e: Engine, o: &Options, setup: &GpuSetup) -> Result<PlanRow> {
    validate(m, f, e, o)?;
    if e == Engine::Vllm && setup.count > 1 && m.shape.heads % setup.count as u64 != 0 {
        return Err(invalid(format!(
            "vLLM tensor parallelism needs the {} attention heads to divide over {} GPUs",
            m.shape.heads, setup.count
        )));
    }
    let lb = layer_bytes(m, f, e)?;
    let ev = evaluate(m, f, e, o, setup, &lb)?;
    let fits = ev.headroom >= 0;
    let ctx_hi = m.shape.max_ctx.max(o.ctx);
    let max_ctx = search(ctx_hi, |c| {
        let o = Options {
            ctx: c,
            ..o.clone()
        };
        Ok(evaluate(m, f, e, &o, setup, &lb)?.headroom >= 0)
    })?;
    let max_users = search(MAX_USERS, |u| {
        let o = Options {
            users: u,
            ..o.clone()
        };
        Ok(evaluate(m, f, e, &o, setup, &lb)?.headroom >= 0)
    })?;
    let need = sum(&ev.loads);
    let (ngl, host_ram, split) = if fits {
        let host = need.host;
        (
            (e == Engine::LlamaCpp).then_some(m.shape.layers + 1),
            host,
            ev.split,
        )
    } else if e == Engine::LlamaCpp {
        let (ngl, host, split) = offload(m, f, o, setup, &lb)?;
        (Some(ngl), host, split)
    } else {
        (None, 0, ev.split)
    };
    let ubatch = match e {
        Engine::LlamaCpp => o
            .ubatch
            .unwrap_or(LLAMA_CPP_UBATCH)
            .min(llama_cpp_cells(o.ctx, o.users)),
        Engine::Transformers => o.ubatch.unwrap_or(o.ctx).min(o.ctx),
        Engine::Vllm => o.ubatch.unwrap_or(vllm_default_batched_tokens(setup)),
    };
    let kv_type = o.kv.unwrap_or(KvType::F16);
    let flags = flags(m, f, e, o, setup, ngl, &split, ubatch, kv_type);
    Ok(PlanRow {
        gpu: setup.gpu.name.clone(),
        gpus: setup.count,
        format: f,
        engine: e,
        ctx: o.ctx,
        users: o.users,
        ubatch,
        kv_type,
        capacity: per_device_capacity(e, o, setup) * setup.count.max(1) as u64,
        need,
        fits,
        headroom: ev.headroom,
        max_ctx,
        max_users,
        ngl,
        host_ram,
        split,
        price_per_hour: setup.gpu.price_per_hour * setup.count.max(1) as f64,
        flags,
    })
}

/// The command line (or call) that runs the plan.
#[allow(clippy::too_many_arguments)]
fn flags(
    m: &ModelSpec,
    f: Format,
    e: Engine,
    o: &Options,
    setup: &GpuSetup,
    ngl: Option<u64>,
    split: &[u64],
    ubatch: u64,
    kv: KvType,
) -> String {
    let src = &m.source;
    match e {
        Engine::LlamaCpp => {
            let file = if f == Format::Native {
                src.clone()
            } else {
                format!(
                    "{}-{}.gguf",
                    m.shape.name.replace('/', "_"),
                    f.name().to_uppercase()
                )
            };
            let mut s = format!(
                "llama-server -m {file} -c {} -np {} -ngl {} -ub {ubatch} -fa {} --cache-type-k {} --cache-type-v {}",
                o.ctx * o.users,
                o.users,
                ngl.unwrap_or(m.shape.layers + 1),
                if o.flash_attn { "on" } else { "off" },
                kv.name(),
                kv.name()
            );
            if setup.count > 1 {
                let ts: Vec<String> = split.iter().map(|l| l.to_string()).collect();
                s += &format!(" --split-mode layer --tensor-split {}", ts.join(","));
            }
            s
        }
        Engine::Vllm => {
            let mut s = format!(
                "vllm serve {src} --max-model-len {} --max-num-seqs {} --gpu-memory-utilization {} --kv-cache-dtype {} --max-num-batched-tokens {ubatch}",
                o.ctx,
                o.users,
                o.gpu_util,
                if kv == KvType::Fp8 { "fp8" } else { "auto" }
            );
            s += match f {
                Format::Awq => " --quantization awq",
                Format::Gptq | Format::Gptq8 => " --quantization gptq",
                Format::Nf4 => " --quantization bitsandbytes",
                Format::F16 => " --dtype float16",
                Format::Bf16 => " --dtype bfloat16",
                _ => "",
            };
            if setup.count > 1 {
                s += &format!(" --tensor-parallel-size {}", setup.count);
            }
            if !o.cuda_graphs {
                s += " --enforce-eager";
            }
            s
        }
        Engine::Transformers => {
            let dtype = if f == Format::F16 {
                "float16"
            } else {
                "bfloat16"
            };
            let q = match f {
                Format::Int8 => ", quantization_config=BitsAndBytesConfig(load_in_8bit=True)",
                Format::Nf4 => ", quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_compute_dtype=torch.bfloat16)",
                _ => "",
            };
            format!("AutoModelForCausalLM.from_pretrained(\"{src}\", dtype=torch.{dtype}, device_map=\"auto\"{q})")
        }
    }
}

/// Why a better format was passed over.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub format: Format,
    pub engine: Engine,
    pub reason: String,
}

/// `--recommend`: the best-quality format that fits with `margin` to spare.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub margin: f64,
    pub chosen: Option<PlanRow>,
    pub rejected: Vec<Rejected>,
}

/// Tries formats best quality first ([`QUALITY_ORDER`]) on `engine` (or each
/// format's natural engine) and returns the first whose every device keeps
/// `margin` (a fraction of its capacity) free.
pub fn recommend(
    m: &ModelSpec,
    engine: Option<Engine>,
    o: &Options,
    setup: &GpuSetup,
    margin: f64,
) -> Result<Recommendation> {
    let mut rejected = Vec::new();
    for &f in QUALITY_ORDER {
        let e = match engine {
            Some(e) if f.engines().contains(&e) => e,
            Some(_) => continue,
            None => Engine::natural(f, m),
        };
        let row = match plan(m, f, e, o, setup) {
            Ok(r) => r,
            Err(err) => {
                rejected.push(Rejected {
                    format: f,
                    engine: e,
                    reason: err.to_string(),
                });
                continue;
            }
        };
        let cap = per_device_capacity(e, o, setup);
        let keep = (cap as f64 * margin) as i64;
        if row.fits && row.headroom >= keep {
            return Ok(Recommendation {
                margin,
                chosen: Some(row),
                rejected,
            });
        }
        let per_dev = row.need.vram() / setup.count.max(1) as u64;
        rejected.push(Rejected {
            format: f,
            engine: e,
            reason: if row.fits {
                format!(
                    "fits, but leaves {} of {} ({:.0}% margin asked)",
                    render::gib(row.headroom.max(0) as u64),
                    render::gib(cap),
                    margin * 100.0
                )
            } else {
                format!(
                    "needs {} per GPU, {} available",
                    render::gib(per_dev),
                    render::gib(cap)
                )
            },
        });
    }
    Ok(Recommendation {
        margin,
        chosen: None,
        rejected,
    })
}
