//! `llama-quantize` file types and the per-tensor type each one chooses.
//!
//! This module owns [`FileType`] (llama.cpp's `llama_ftype`, the value of
//! `general.file_type`; ids from `include/llama.h`) and [`tensor_types`], the
//! type that `llama-quantize` (no `--imatrix`, `--pure` or overrides) gives
//! every tensor of a model. The rules are those of `src/llama-quant.cpp`
//! (`tensor_allows_quantization`, `llama_tensor_get_type_impl`,
//! `tensor_type_fallback`, `llama_ftype_get_default_type`) for the file
//! types whose tensor types [`super::quantize_row`] can produce and that
//! need no importance matrix (not the IQ types, not Q2_K_S); the
//! tests compare them with real `llama-quantize` runs
//! (`fixtures/quantize/models/`).
//!
//! The choice depends on order: attn_v and ffn_down tensors are counted as
//! they are met, in the order of [`llama_order`]. [`tensor_types`] sorts
//! internally, so callers pass tensors in any order.

use super::GgmlType;
use std::cmp::Ordering;

macro_rules! file_types {
    ($($(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $default:ident;)*) => {
        /// A `llama_ftype` that llmtool can produce (`include/llama.h`):
        /// the numeric id is what `general.file_type` stores.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum FileType {
            $($(#[$doc])* $variant = $id,)*
        }

        impl FileType {
            /// Every supported file type, in id order.
            pub const ALL: &'static [FileType] = &[$(FileType::$variant),*];

            /// The `llama-quantize` spelling, e.g. `"Q4_K_M"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(FileType::$variant => $name,)*
                }
            }

            /// The type most tensors get (`llama_ftype_get_default_type`).
            pub fn default_type(self) -> GgmlType {
                match self {
                    $(FileType::$variant => GgmlType::$default,)*
                }
            }
        }
    };
}

file_types! {
    /// All tensors F32 (`LLAMA_FTYPE_ALL_F32`).
    F32 = 0, "F32", F32;
    /// `LLAMA_FTYPE_MOSTLY_F16`.
    F16 = 1, "F16", F16;
    /// `LLAMA_FTYPE_MOSTLY_Q4_0`.
    Q4_0 = 2, "Q4_0", Q4_0;
    /// `LLAMA_FTYPE_MOSTLY_Q4_1`.
    Q4_1 = 3, "Q4_1", Q4_1;
    /// `LLAMA_FTYPE_MOSTLY_Q8_0`.
    Q8_0 = 7, "Q8_0", Q8_0;
    /// `LLAMA_FTYPE_MOSTLY_Q5_0`.
    Q5_0 = 8, "Q5_0", Q5_0;
    /// `LLAMA_FTYPE_MOSTLY_Q5_1`.
    Q5_1 = 9, "Q5_1", Q5_1;
    /// `LLAMA_FTYPE_MOSTLY_Q2_K`.
    Q2_K = 10, "Q2_K", Q2_K;
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_S`.
    Q3_K_S = 11, "Q3_K_S", Q3_K;
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_M`.
    Q3_K_M = 12, "Q3_K_M", Q3_K;
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_L`.
    Q3_K_L = 13, "Q3_K_L", Q3_K;
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_S`.
    Q4_K_S = 14, "Q4_K_S", Q4_K;
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M`.
    Q4_K_M = 15, "Q4_K_M", Q4_K;
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_S`.
    Q5_K_S = 16, "Q5_K_S", Q5_K;
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_M`.
    Q5_K_M = 17, "Q5_K_M", Q5_K;
    /// `LLAMA_FTYPE_MOSTLY_Q6_K`.
    Q6_K = 18, "Q6_K", Q6_K;
    /// `LLAMA_FTYPE_MOSTLY_BF16`.
    BF16 = 32, "BF16", BF16;
}

impl FileType {
    /// The `general.file_type` value.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The file type with `general.file_type` id `id`, if supported.
    pub fn from_id(id: u32) -> Option<FileType> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The file type spelled `s` (ASCII case ignored), as `llama-quantize`
    /// names them; `"Q3_K"`, `"Q4_K"` and `"Q5_K"` are its aliases of the
    /// `_M` types.
    pub fn from_name(s: &str) -> Option<FileType> {
        let s = s.to_ascii_uppercase();
        let s = match s.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        Self::ALL.iter().copied().find(|t| t.name() == s)
    }
}

impl std::fmt::Display for FileType {
    /// Writes [`FileType::name`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The model facts the type rules read (from the GGUF metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `"llama"`, `"qwen2"`.
    pub arch: String,
    /// `ARCH.block_count`.
    pub n_layer: u32,
    /// `ARCH.expert_count` (0 when absent).
    pub n_expert: u32,
    /// `ARCH.attention.head_count`.
    pub n_head: u32,
    /// `ARCH.attention.head_count_kv` (defaults to `n_head`).
    pub n_head_kv: u32,
}

impl ModelFacts {
    /// Whether llama.cpp sizes this model as `LLM_TYPE_70B` (the only size
    /// the rules look at): 80 layers for llama (with grouped-query
    /// attention), qwen2, olmo and deci; 68 for jais2
    /// (`src/models/<arch>.cpp`, `load_arch_hparams`).
    /// Query heads per KV head (`llama_hparams::n_gqa`; 0 without KV heads).
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "olmo" | "deci" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// One tensor as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct TensorDesc<'a> {
    /// GGUF tensor name, e.g. `blk.0.attn_v.weight`.
    pub name: &'a str,
    /// GGUF dimensions, innermost first (`ne`; torch shape reversed).
    pub ne: &'a [u64],
    /// Current type in the source file.
    pub ty: GgmlType,
}

/// The type chosen for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeChoice {
    /// Target type; equal to the source type means copy unchanged.
    pub ty: GgmlType,
    /// The rules' type did not fit the row length and a fallback was used
    /// (`llama-quantize` warns and counts these).
    pub fallback: bool,
}

/// Why [`tensor_types`] refused a model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TypeRuleError {
    /// GGUF metadata lacks a key the rules need.
    #[error("GGUF metadata has no {key}; is this a llama.cpp model file?")]
    MissingKey {
        /// The missing key.
        key: String,
    },
    /// A mixture-of-experts ffn tensor whose layer cannot be read from its
    /// name (llama.cpp: "Failed to determine layer for tensor").
    #[error(
        "tensor {name}: cannot determine its layer (expected a `blk.N.` prefix below {n_layer})"
    )]
    BadLayer {
        /// The tensor.
        name: String,
        /// The model's block count.
        n_layer: u32,
    },
}

/// The layer number of a `blk.N.` name, as llama.cpp's `sscanf("blk.%d.")`.
pub fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let digits_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(rest.len(), |(i, _)| i);
    let n: i64 = rest[..digits_end].parse().ok()?;
    rest[digits_end..].starts_with('.').then_some(n)
}

/// llama.cpp's tensor order (`weight_name_comparer` in
/// `src/llama-model-loader.h`): tensors without a `blk.N.` prefix first,
/// then by layer number, each group by name (bytewise). `llama-quantize`
/// writes its output in this order and counts layers in it.
pub fn llama_order(a: &str, b: &str) -> Ordering {
    let la = layer_of(a).unwrap_or(-1);
    let lb = layer_of(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Broad tensor roles (`tensor_get_category`), matched on substrings in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// attn_v, attn_qkv and attn_kv_b: the rules treat all three as attn_v.
    AttnV,
    AttnK,
    AttnOutput,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"]
        .iter()
        .any(|p| name.contains(p))
    {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::Other
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") || name.contains("ffn_gate") {
        Category::Other
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// Number of dimensions as ggml counts them (`ggml_n_dims`: trailing 1s do
/// not count; at least 1).
fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// Whether `llama-quantize` may change this tensor's type at all
/// (`tensor_allows_quantization`): 2-D and up, named `…weight`, and none of
/// the small or sensitive tensors it always keeps (norms, MoE routers,
/// positional embeddings, …).
pub fn allows_quantization(name: &str, ne: &[u64]) -> bool {
    const KEEP_SUBSTRINGS: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    n_dims(ne) >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !KEEP_SUBSTRINGS.iter().any(|s| name.contains(s))
}

/// `use_more_bits` of `src/llama-quant.cpp`: the first and last eighth of
/// the layers and every third one between (C integer arithmetic).
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `tensor_type_fallback`: a type whose block does not divide the row
/// length `ncols` becomes a 32-element type, or F16 if that does not fit
/// either. Returns the type and whether it changed.
fn fallback(ncols: u64, ty: GgmlType) -> (GgmlType, bool) {
    if ncols % ty.block_size() == 0 {
        return (ty, false);
    }
    let to = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ncols % to.block_size() == 0 {
        (to, true)
    } else {
        (GgmlType::F16, true)
    }
}

/// Chooses every tensor's type as `llama-quantize in.gguf out.gguf FTYPE`
/// does (no imatrix, no overrides). `tensors` may be in any order; the
/// result is index-aligned with it. Tensors that keep their type (norms,
/// biases, anything 1-D) get their source type back.
pub fn tensor_types(
    ftype: FileType,
    facts: &ModelFacts,
    tensors: &[TensorDesc<'_>],
) -> Result<Vec<TypeChoice>, TypeRuleError> {
    let default = ftype.default_type();
    let quantized = default.block_size() > 1;
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let falcon = facts.arch == "falcon";
    let n_layer = i64::from(facts.n_layer);
    let n_wv = tensors
        .iter()
        .filter(|t| category(t.name) == Category::AttnV)
        .count() as i64;
    let (mut i_wv, mut i_down) = (0i64, 0i64);

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| llama_order(tensors[a].name, tensors[b].name));
    let mut out = vec![
        TypeChoice {
            ty: GgmlType::F32,
            fallback: false
        };
        tensors.len()
    ];
    for idx in order {
        let t = &tensors[idx];
        let ncols = t.ne.first().copied().unwrap_or(1);
        if !allows_quantization(t.name, t.ne) {
            out[idx] = TypeChoice {
                ty: t.ty,
                fallback: false,
            };
            continue;
        }
        if !quantized {
            out[idx] = TypeChoice {
                ty: default,
                fallback: false,
            };
            continue;
        }
        let cat = category(t.name);
        let mut ty = default;
        if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
            if falcon || ncols % default.block_size() != 0 {
                ty = GgmlType::Q8_0;
            } else if ty != GgmlType::Q8_0 {
                ty = GgmlType::Q6_K;
            }
        } else if cat == Category::AttnV {
            match ftype {
                FileType::Q2_K if facts.n_gqa() >= 4 => ty = GgmlType::Q4_K,
                FileType::Q2_K => ty = GgmlType::Q3_K,
                FileType::Q3_K_M if i_wv < 2 => ty = GgmlType::Q5_K,
                FileType::Q3_K_M => ty = GgmlType::Q4_K,
                FileType::Q3_K_L => ty = GgmlType::Q5_K,
                FileType::Q4_K_M | FileType::Q5_K_M if use_more_bits(i_wv, n_wv) => {
                    ty = GgmlType::Q6_K
                }
                FileType::Q4_K_S if i_wv < 4 => ty = GgmlType::Q5_K,
                _ => {}
            }
            if facts.is_70b() && matches!(ty, GgmlType::Q3_K | GgmlType::Q4_K) {
                ty = GgmlType::Q5_K;
            }
            if facts.n_expert == 8 {
                ty = GgmlType::Q8_0;
            }
            i_wv += 1;
        } else if cat == Category::AttnK {
            if facts.n_expert == 8 {
                ty = GgmlType::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let i_layer = if facts.n_expert > 1 {
                match layer_of(t.name) {
                    Some(l) if (0..n_layer).contains(&l) => l,
                    _ => {
                        return Err(TypeRuleError::BadLayer {
                            name: t.name.to_string(),
                            n_layer: facts.n_layer,
                        })
                    }
                }
            } else {
                i_down
            };
            match ftype {
                FileType::Q2_K => ty = GgmlType::Q3_K,
                FileType::Q3_K_M => {
                    ty = if i_layer < n_layer / 16 {
                        GgmlType::Q5_K
                    } else if !falcon || use_more_bits(i_layer, n_layer) {
                        GgmlType::Q4_K
                    } else {
                        GgmlType::Q3_K
                    };
                }
                FileType::Q3_K_L if falcon => ty = GgmlType::Q4_K,
                FileType::Q3_K_L => ty = GgmlType::Q5_K,
                FileType::Q4_K_M if falcon => {
                    ty = if i_layer < n_layer / 16 {
                        GgmlType::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        GgmlType::Q5_K
                    } else {
                        GgmlType::Q4_K
                    };
                }
                FileType::Q4_K_M | FileType::Q5_K_M if use_more_bits(i_layer, n_layer) => {
                    ty = GgmlType::Q6_K;
                }
                FileType::Q4_K_S if !falcon && i_layer < n_layer / 8 => ty = GgmlType::Q5_K,
                _ => {}
            }
            i_down += 1;
        } else if cat == Category::AttnOutput {
            ty = match ftype {
                FileType::Q3_K_L if falcon => GgmlType::Q4_K,
                _ if falcon => ty,
                FileType::Q2_K
                | FileType::Q3_K_S
                | FileType::Q3_K_M
                | FileType::Q4_K_S
                | FileType::Q4_K_M
                    if facts.n_expert == 8 =>
                {
                    GgmlType::Q5_K
                }
                _ if facts.n_expert == 8 => ty,
                FileType::Q2_K => GgmlType::Q3_K,
                FileType::Q3_K_M => GgmlType::Q4_K,
                FileType::Q3_K_L => GgmlType::Q5_K,
                _ => ty,
            };
        }
        let (ty, fallback) = fallback(ncols, ty);
        out[idx] = TypeChoice { ty, fallback };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        for &f in FileType::ALL {
            assert_eq!(FileType::from_id(f.id()), Some(f));
            assert_eq!(FileType::from_name(f.name()), Some(f));
            assert_eq!(FileType::from_name(&f.name().to_lowercase()), Some(f));
        }
        assert_eq!(FileType::Q4_K_M.id(), 15);
        assert_eq!(FileType::BF16.id(), 32);
        assert_eq!(FileType::Q8_0.id(), 7);
        assert_eq!(FileType::from_name("q4_k"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::from_name("IQ2_XXS"), None);
        assert_eq!(FileType::from_id(4), None);
    }

    #[test]
    fn more_bits_layers() {
        let sel = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(sel(16), [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(sel(32).len(), 16);
        assert_eq!(sel(2), [1]);
    }

    #[test]
    fn order_and_layers() {
        assert_eq!(layer_of("blk.12.attn_v.weight"), Some(12));
        assert_eq!(layer_of("blk.x.attn_v.weight"), None);
        assert_eq!(layer_of("output.weight"), None);
        let mut v = vec![
            "blk.10.a",
            "output.weight",
            "blk.2.b",
            "blk.2.a",
            "token_embd.weight",
        ];
        v.sort_by(|a, b| llama_order(a, b));
        assert_eq!(
            v,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback(896, GgmlType::Q4_K), (GgmlType::Q5_0, true));
        assert_eq!(fallback(896, GgmlType::Q5_K), (GgmlType::Q5_1, true));
        assert_eq!(fallback(896, GgmlType::Q6_K), (GgmlType::Q8_0, true));
        assert_eq!(fallback(100, GgmlType::Q6_K), (GgmlType::F16, true));
        assert_eq!(fallback(100, GgmlType::Q8_0), (GgmlType::F16, true));
        assert_eq!(fallback(512, GgmlType::Q4_K), (GgmlType::Q4_K, false));
    }

    #[test]
    fn keeps_small_tensors() {
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[256]));
        assert!(!allows_quantization("blk.0.attn_q.bias", &[256, 2]));
        assert!(!allows_quantization("blk.0.attn_q.weight", &[256, 1]));
        assert!(allows_quantization("blk.0.attn_q.weight", &[256, 2]));
        assert!(!allows_quantization("blk.0.ffn_gate_inp.weight", &[256, 8]));
    }

    fn facts(arch: &str, n_layer: u32, n_expert: u32, n_head: u32, n_head_kv: u32) -> ModelFacts {
        ModelFacts {
            arch: arch.into(),
            n_layer,
            n_expert,
            n_head,
            n_head_kv,
        }
    }

    /// Rules the llama-quantize goldens (dense models under 70B) do not
    /// reach, checked against `llama_tensor_get_type_impl` by reading.
    #[test]
    fn moe_and_70b_rules() {
        let ne = [4096u64, 8];
        let t = |name| TensorDesc {
            name,
            ne: &ne,
            ty: GgmlType::F16,
        };
        // 8 experts: attn_v and attn_k Q8_0, attn_output Q5_K, ffn_down by
        // the layer in its name.
        let moe = facts("llama", 32, 8, 32, 8);
        let ts = [
            t("blk.5.attn_v.weight"),
            t("blk.5.attn_k.weight"),
            t("blk.5.attn_output.weight"),
            t("blk.0.ffn_down_exps.weight"),
            t("blk.5.ffn_down_exps.weight"),
            t("output.weight"),
        ];
        let got: Vec<_> = tensor_types(FileType::Q4_K_M, &moe, &ts)
            .unwrap()
            .iter()
            .map(|c| c.ty)
            .collect();
        use GgmlType::*;
        assert_eq!(got, [Q8_0, Q8_0, Q5_K, Q6_K, Q4_K, Q6_K]);
        let bad = [t("ffn_down_exps.weight")];
        assert!(matches!(
            tensor_types(FileType::Q4_K_M, &moe, &bad),
            Err(TypeRuleError::BadLayer { .. })
        ));
        // 70B (llama, 80 layers, GQA): attn_v outside the more-bits layers
        // is raised from Q4_K to Q5_K; not so without GQA (65B).
        let names: Vec<String> = (0..80).map(|i| format!("blk.{i}.attn_v.weight")).collect();
        let ts: Vec<_> = names.iter().map(|n| t(n.as_str())).collect();
        let plan = tensor_types(FileType::Q4_K_M, &facts("llama", 80, 0, 64, 8), &ts).unwrap();
        // n/8 = 10, 7n/8 = 70: more bits for 0..10, 12, 15, …, 70..80.
        let types: Vec<_> = plan.iter().map(|c| c.ty).collect();
        assert_eq!(&types[9..13], [Q6_K, Q5_K, Q5_K, Q6_K]);
        assert_eq!(types[79], Q6_K);
        let plan = tensor_types(FileType::Q4_K_M, &facts("llama", 80, 0, 64, 64), &ts).unwrap();
        assert_eq!(plan[10].ty, Q4_K, "65B: no raise");
        // Q2_K: attn_v is Q4_K from 4 query heads per KV head, else Q3_K.
        let ts = [t("blk.0.attn_v.weight")];
        let ty = |f| tensor_types(FileType::Q2_K, &f, &ts).unwrap()[0].ty;
        assert_eq!(ty(facts("llama", 16, 0, 32, 8)), Q4_K);
        assert_eq!(ty(facts("llama", 16, 0, 32, 16)), Q3_K);
        assert_eq!(
            ty(facts("llama", 16, 0, 32, 0)),
            Q3_K,
            "no KV heads: n_gqa 0"
        );
    }
}
