//! Deploy formats and runtimes: which formats `vram-plan` compares, which
//! runtime loads each, the KV cache types, and the bytes every tensor takes
//! in each format (`tensor_bytes`, `weights_by_tensor`).

use serde::Serialize;

use super::{invalid, ModelSpec, Shape, TensorKind, VramTensor};
use crate::model::family::Family;
use crate::model::packed::Packing;
use crate::ops::Result;
use crate::quant::ftype::{tensor_types, FileType, ModelFacts, TensorDesc};
use crate::quant::GgmlType;

/// Weight formats `vram-plan` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeployFormat {
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
pub const QUALITY_ORDER: &[DeployFormat] = &[
    DeployFormat::Bf16,
    DeployFormat::F16,
    DeployFormat::Q8_0,
    DeployFormat::Int8,
    DeployFormat::Gptq8,
    DeployFormat::Q6K,
    DeployFormat::Q5KM,
    DeployFormat::Awq,
    DeployFormat::Gptq,
    DeployFormat::Q4KM,
    DeployFormat::Nf4,
];

impl Serialize for DeployFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl DeployFormat {
    pub fn name(self) -> &'static str {
        match self {
            DeployFormat::Native => "native",
            DeployFormat::Bf16 => "bf16",
            DeployFormat::F16 => "f16",
            DeployFormat::Q8_0 => "q8_0",
            DeployFormat::Int8 => "int8",
            DeployFormat::Gptq8 => "gptq-int8",
            DeployFormat::Q6K => "q6_k",
            DeployFormat::Q5KM => "q5_k_m",
            DeployFormat::Awq => "awq",
            DeployFormat::Gptq => "gptq",
            DeployFormat::Q4KM => "q4_k_m",
            DeployFormat::Nf4 => "nf4",
        }
    }

    pub fn parse(s: &str) -> Result<DeployFormat> {
        let l = s.to_ascii_lowercase();
        QUALITY_ORDER
            .iter()
            .chain([DeployFormat::Native].iter())
            .copied()
            .find(|f| f.name() == l || (l == "gptq-int4" && *f == DeployFormat::Gptq))
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
            DeployFormat::Q8_0 => FileType::Q8_0,
            DeployFormat::Q6K => FileType::Q6_K,
            DeployFormat::Q5KM => FileType::Q5_K_M,
            DeployFormat::Q4KM => FileType::Q4_K_M,
            _ => return None,
        })
    }

    /// What the engine loads: a pre-quantized model's own tensors are its
    /// packing's format (`native` of an AWQ checkpoint is AWQ), anything
    /// else is itself. Decides engine flags and dequantization buffers.
    pub fn as_loaded(self, m: &ModelSpec) -> DeployFormat {
        match (self, m.packing) {
            (DeployFormat::Native, Some(Packing::Nf4 | Packing::Fp4)) => DeployFormat::Nf4,
            (DeployFormat::Native, Some(Packing::Int8)) => DeployFormat::Int8,
            (DeployFormat::Native, Some(Packing::Awq { .. })) => DeployFormat::Awq,
            (
                DeployFormat::Native,
                Some(Packing::Gptq { bits: 8 } | Packing::Compressed { bits: 8 }),
            ) => DeployFormat::Gptq8,
            (DeployFormat::Native, Some(Packing::Gptq { .. } | Packing::Compressed { .. })) => {
                DeployFormat::Gptq
            }
            (f, _) => f,
        }
    }

    /// Engines that load this format.
    pub fn runtimes(self) -> &'static [Runtime] {
        match self {
            DeployFormat::Native => &[Runtime::LlamaCpp, Runtime::Transformers, Runtime::Vllm],
            DeployFormat::Bf16 | DeployFormat::F16 => {
                &[Runtime::Transformers, Runtime::Vllm, Runtime::LlamaCpp]
            }
            DeployFormat::Q8_0 | DeployFormat::Q6K | DeployFormat::Q5KM | DeployFormat::Q4KM => {
                &[Runtime::LlamaCpp]
            }
            DeployFormat::Int8 => &[Runtime::Transformers],
            DeployFormat::Awq | DeployFormat::Gptq | DeployFormat::Gptq8 | DeployFormat::Nf4 => {
                &[Runtime::Transformers, Runtime::Vllm]
            }
        }
    }
}

/// The inference engine whose memory behaviour is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Transformers,
    Vllm,
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Transformers => "transformers",
            Runtime::Vllm => "vllm",
            Runtime::LlamaCpp => "llama.cpp",
        }
    }

    pub fn parse(s: &str) -> Result<Runtime> {
        match s.to_ascii_lowercase().as_str() {
            "transformers" | "hf" => Ok(Runtime::Transformers),
            "vllm" => Ok(Runtime::Vllm),
            "llama.cpp" | "llamacpp" | "llama-cpp" | "gguf" => Ok(Runtime::LlamaCpp),
            _ => Err(invalid(format!(
                "unknown engine '{s}': use transformers, vllm or llama.cpp"
            ))),
        }
    }

    /// The engine a format runs on when none is named: GGUF formats (and a
    /// GGUF model's own tensors) on llama.cpp, the rest (a safetensors
    /// model's own tensors included) on transformers.
    pub fn natural(f: DeployFormat, model: &ModelSpec) -> Runtime {
        match f {
            DeployFormat::Native if model.is_gguf => Runtime::LlamaCpp,
            DeployFormat::Native => Runtime::Transformers,
            f if f.runtimes()[0] == Runtime::LlamaCpp => Runtime::LlamaCpp,
            _ => Runtime::Transformers,
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

    pub(super) fn supported_by(self, e: Runtime) -> bool {
        match e {
            Runtime::LlamaCpp => self != KvType::Fp8,
            Runtime::Vllm => matches!(self, KvType::F16 | KvType::Bf16 | KvType::Fp8),
            Runtime::Transformers => matches!(self, KvType::F16 | KvType::Bf16),
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
    f: DeployFormat,
    engine: Runtime,
    t: &VramTensor,
    gguf_ty: Option<GgmlType>,
) -> Result<u64> {
    let n = t.numel();
    let gguf = engine == Runtime::LlamaCpp;
    let one_d = t.rows <= 1 || matches!(t.kind, TensorKind::Norm | TensorKind::Bias);
    let group = |bits_zero: u64| {
        let groups = t.cols.div_ceil(128);
        groups * t.rows * 2 + (groups * t.rows * bits_zero).div_ceil(8)
    };
    Ok(match f {
        DeployFormat::Native => match t.stored {
            Some((_, len)) => len,
            None => {
                return Err(invalid(
                    "format 'native' needs a real model file (the catalog and config.json give shapes only)",
                ))
            }
        },
        DeployFormat::Bf16 | DeployFormat::F16 if gguf && one_d => 4 * n,
        DeployFormat::Bf16 | DeployFormat::F16 => 2 * n,
        DeployFormat::Int8 if t.kind.is_linear() => n + 4 * t.rows,
        DeployFormat::Nf4 if t.kind.is_linear() => n / 2 + n.div_ceil(64) * 4,
        DeployFormat::Awq if t.kind.is_linear() => n / 2 + group(4),
        DeployFormat::Gptq if t.kind.is_linear() => n / 2 + group(4) + 4 * t.cols,
        DeployFormat::Gptq8 if t.kind.is_linear() => n + group(8) + 4 * t.cols,
        DeployFormat::Int8 | DeployFormat::Nf4 | DeployFormat::Awq | DeployFormat::Gptq | DeployFormat::Gptq8 => 2 * n,
        DeployFormat::Q8_0 | DeployFormat::Q6K | DeployFormat::Q5KM | DeployFormat::Q4KM => {
            let ty = gguf_ty.expect("GGUF formats come with their planned types");
            t.rows * (t.cols / ty.block_size()) * ty.type_size()
        }
    })
}

/// Each tensor's bytes for format `f` under `engine`, in `m.tensors` order.
/// GGUF file types take `llama-quantize`'s per-tensor types from
/// [`crate::quant::ftype::tensor_types`], the rule `llmtool quantize` writes.
pub fn weights_by_tensor(m: &ModelSpec, f: DeployFormat, engine: Runtime) -> Result<Vec<u64>> {
    let types: Vec<Option<GgmlType>> = match f.gguf_ftype() {
        Some(ft) => {
            let names: Vec<String> = m
                .tensors
                .iter()
                .map(|t| {
                    crate::model::arch::rename(&t.name, true).unwrap_or_else(|| t.name.clone())
                })
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
            let family = Family::from_name(&m.shape.family)
                .info()
                .map_or("llama", |f| f.gguf.name());
            let facts = ModelFacts {
                arch: family.into(),
                n_layer: m.shape.layers as u32,
                n_expert: 0,
                n_head: m.shape.heads as u32,
                n_head_kv: m.shape.kv_heads as u32,
            };
            tensor_types(ft, &facts, &descs)
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
pub fn weights_total(m: &ModelSpec, f: DeployFormat, engine: Runtime) -> Result<u64> {
    Ok(weights_by_tensor(m, f, engine)?.iter().sum())
}
