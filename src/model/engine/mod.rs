//! The CPU inference engine: a forward pass of llama / mistral / qwen2
//! decoders computed in f32 straight over the tensor store's memory maps,
//! whatever the weights' storage ([`weights`]).
//!
//! This module owns the model's computation (embeddings, RMSNorm, RoPE and
//! its llama3 / linear scalings, grouped-query attention with a per-sequence
//! KV cache, SwiGLU MLP, qwen2's q/k/v biases, tied embeddings) and the
//! hyperparameters it needs ([`Config`], read from config.json or GGUF
//! metadata through [`crate::model::arch::detect`]). Its reference is transformers
//! 4.57.1 (`models/llama/modeling_llama.py`, `models/qwen2/modeling_qwen2.py`,
//! `modeling_rope_utils.py`); `tests/engine.rs` compares logits and greedy
//! tokens with goldens made by `tests/oracle/engine_goldens.py`.
//!
//! GGUF llama files store Q/K rows permuted for llama.cpp's interleaved-pair
//! RoPE ([`crate::model::hf_gguf::permuted_source_row`]); rather than un-permuting
//! rows, the engine rotates interleaved pairs on those files. Attention only
//! sees q·k, so both give the same scores.
//!
//! [`Engine::forward`] takes a batch of sequences, each with its own
//! [`KvCache`]: every matrix product runs once over all their new tokens
//! (prefill and calibration batches), attention runs per sequence.
//!
//! Numbers that would make the pass compute NaN are refused before it runs
//! ([`Config::from_model`]: a RoPE base or scaling factor that is not
//! positive, a negative norm epsilon, each named by its config key), and
//! logits that are not finite anyway end the pass with an error naming the
//! weight that holds NaN/Inf ([`EngineError::NonFinite`]): a perplexity or a
//! sampled token is never computed from NaN.

pub mod generate;
pub mod packed;
pub mod text;
pub mod weights;

use std::ops::ControlFlow;

use rayon::prelude::*;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::family::GgufArch;
use crate::model::packed::{packed_format, packed_module};
use crate::store::{Container, Model, StoreError, TensorInfo};
use packed::Linear;
pub use weights::Activations;
pub use weights::WeightMatrix;
use weights::{matmul, Stored};

/// Why a model cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Interrupted(#[from] crate::cancel::Interrupted),
    /// The model is outside what the engine computes; the message says why.
    #[error("{0}")]
    Unsupported(String),
    /// The forward pass produced NaN or Inf; the message names the cause.
    #[error("{0}")]
    NonFinite(String),
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dimension `i` with `i + d/2` (transformers' `rotate_half`, GGUF NEOX).
    Halves,
    /// Dimension `2i` with `2i + 1` (GGUF llama files, rows permuted).
    Interleaved,
}

/// The hyperparameters of the forward pass.
#[derive(Debug, Clone)]
pub struct Config {
    pub arch: GgufArch,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub norm_eps: f32,
    pub rope_layout: RopeLayout,
    /// One inverse frequency per rotated pair, scaling applied.
    pub inv_freq: Vec<f32>,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

/// Inverse RoPE frequencies as transformers computes them in float32:
/// `1 / theta^(2i/d)`.
fn default_inv_freq(theta: f32, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / dim as f32))
        .collect()
}

/// transformers' `_compute_llama3_parameters`: low frequencies divided by
/// `factor`, high ones kept, the band between smoothly interpolated.
fn llama3_inv_freq(inv: &[f32], factor: f32, low: f32, high: f32, old_ctx: f32) -> Vec<f32> {
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    inv.iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
            if medium {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}

impl Config {
    /// Reads the hyperparameters of `model` (config.json or GGUF metadata,
    /// cross-checked against the tensors by [`arch::detect`]).
    pub fn from_model(model: &Model) -> Result<Config, EngineError> {
        let file = model.root.display().to_string();
        let a = arch::detect(model);
        let garch = match model.container {
            Container::Gguf => model
                .gguf
                .as_ref()
                .and_then(|m| m.str("general.architecture"))
                .and_then(GgufArch::from_gguf),
            Container::Safetensors => model.config.as_ref().and_then(GgufArch::from_config),
        }
        .ok_or_else(|| {
            EngineError::Unsupported(format!(
                "{file}: the engine runs llama, mistral and qwen2 models; this one is {:?}",
                a.declared_family
                    .as_deref()
                    .unwrap_or("of an undeclared family")
            ))
        })?;
        let need = |what: &str, v: Option<u64>| {
            v.map(|x| x as usize)
                .ok_or_else(|| EngineError::Unsupported(format!("{file}: cannot tell the {what}")))
        };
        let head_dim = need("head size", a.head_dim)?;
        // Where a hyperparameter came from, for errors: the config.json key
        // or the GGUF metadata key.
        let gguf_arch = model
            .gguf
            .as_ref()
            .and_then(|m| m.str("general.architecture"))
            .unwrap_or_default();
        let key = |hf: &str, gguf: &str| match model.container {
            Container::Gguf => format!("GGUF key {gguf_arch}.{gguf}"),
            Container::Safetensors => format!("config.json {hf}"),
        };
        // NaN or a negative number here makes every logit NaN.
        let positive = |key: String, v: f64| {
            let x = v as f32;
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(EngineError::Unsupported(format!(
                    "{file}: {key} is {v}; it must be a positive number"
                )))
            }
        };
        let theta = match a.rope.theta {
            Some(t) => positive(key("rope_theta", "rope.freq_base"), t)?,
            None => 10000.0,
        };
        let mut inv_freq = default_inv_freq(theta, head_dim);
        if let Some(s) = &a.rope.scaling {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            let num = |k: &str| {
                s.get(k)
                    .and_then(|v| v.as_f64())
                    .map(|v| {
                        positive(
                            key(&format!("rope_scaling.{k}"), &format!("rope.scaling.{k}")),
                            v,
                        )
                    })
                    .transpose()
            };
            match kind {
                "default" | "none" => {}
                "linear" => {
                    let f = num("factor")?.unwrap_or(1.0);
                    inv_freq.iter_mut().for_each(|x| *x /= f);
                }
                "llama3" if model.container == Container::Gguf => {
                    // llama.cpp divides each frequency by rope_freqs.weight.
                    let t = model.get("rope_freqs.weight")?;
                    let ff = model.read_f32(t)?;
                    if ff.len() != inv_freq.len() {
                        return Err(EngineError::Unsupported(format!(
                            "{file}: rope_freqs.weight has {} values for {} frequencies",
                            ff.len(),
                            inv_freq.len()
                        )));
                    }
                    if let Some(f) = ff.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                        return Err(EngineError::Unsupported(format!(
                            "{file}: rope_freqs.weight holds {f}; every frequency factor must be a positive number"
                        )));
                    }
                    inv_freq.iter_mut().zip(ff).for_each(|(x, f)| *x /= f);
                }
                "llama3" => {
                    let (Some(f), Some(lo), Some(hi), Some(old)) = (
                        num("factor")?,
                        num("low_freq_factor")?,
                        num("high_freq_factor")?,
                        num("original_max_position_embeddings")?,
                    ) else {
                        return Err(EngineError::Unsupported(format!(
                            "{file}: llama3 rope_scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings"
                        )));
                    };
                    // The smoothing divides by their difference.
                    if hi <= lo {
                        return Err(EngineError::Unsupported(format!(
                            "{file}: llama3 rope_scaling has high_freq_factor {hi} <= low_freq_factor {lo}; it must be larger"
                        )));
                    }
                    inv_freq = llama3_inv_freq(&inv_freq, f, lo, hi, old);
                }
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "{file}: RoPE scaling '{other}' is not implemented (default, linear and llama3 are)"
                    )))
                }
            }
        }
        let rope_layout = if model.container == Container::Gguf && garch.permutes_qk() {
            RopeLayout::Interleaved
        } else {
            RopeLayout::Halves
        };
        let norm_eps = a.norm_eps.unwrap_or(1e-6);
        if !(norm_eps.is_finite() && norm_eps >= 0.0) {
            return Err(EngineError::Unsupported(format!(
                "{file}: {} is {norm_eps}; it must be a number >= 0",
                key("rms_norm_eps", "attention.layer_norm_rms_epsilon")
            )));
        }
        let (bos, eos) = special_ids(model);
        Ok(Config {
            arch: garch,
            layers: need("layer count", a.layers)?,
            hidden: need("hidden size", a.hidden_size)?,
            heads: need("attention head count", a.heads)?,
            kv_heads: need("KV head count", a.kv_heads)?,
            head_dim,
            ffn: need("FFN size", a.ffn_size)?,
            vocab: need("vocabulary size", a.vocab)?,
            norm_eps: norm_eps as f32,
            rope_layout,
            inv_freq,
            bos,
            eos,
        })
    }
}

/// BOS and EOS ids from config.json / generation_config.json or GGUF
/// metadata.
fn special_ids(model: &Model) -> (Option<u32>, Vec<u32>) {
    let ids = |v: Option<&serde_json::Value>| -> Vec<u32> {
        match v {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            Some(x) => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            None => vec![],
        }
    };
    if let Some(m) = &model.gguf {
        let bos = m.u64("tokenizer.ggml.bos_token_id").map(|x| x as u32);
        let mut eos: Vec<u32> = ["eos_token_id", "eot_token_id"]
            .iter()
            .filter_map(|k| m.u64(&format!("tokenizer.ggml.{k}")))
            .map(|x| x as u32)
            .collect();
        eos.dedup();
        return (bos, eos);
    }
    let gen = crate::store::read_json(&model.root.join("generation_config.json")).ok();
    let pick = |k: &str| {
        gen.as_ref()
            .and_then(|g| g.get(k))
            .or_else(|| model.config.as_ref().and_then(|c| c.get(k)))
    };
    (
        ids(pick("bos_token_id")).first().copied(),
        ids(pick("eos_token_id")),
    )
}

/// One decoder layer's weights.
struct Layer<'m> {
    attn_norm: Vec<f32>,
    q: Linear<'m>,
    k: Linear<'m>,
    v: Linear<'m>,
    o: Linear<'m>,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Linear<'m>,
    up: Linear<'m>,
    down: Linear<'m>,
}

impl<'m> Layer<'m> {
    fn weights(&self) -> LayerWeights<'_> {
        LayerWeights {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            o: &self.o,
            gate: &self.gate,
            up: &self.up,
            down: &self.down,
        }
    }
}

/// The seven matrices one decoder layer multiplies by. Calibration swaps
/// in quantized ones ([`LayerWeights::set`]) to run a layer as it will be
/// stored.
#[derive(Clone, Copy)]
pub struct LayerWeights<'a> {
    q: &'a dyn WeightMatrix,
    k: &'a dyn WeightMatrix,
    v: &'a dyn WeightMatrix,
    o: &'a dyn WeightMatrix,
    gate: &'a dyn WeightMatrix,
    up: &'a dyn WeightMatrix,
    down: &'a dyn WeightMatrix,
}

impl<'a> LayerWeights<'a> {
    /// The matrix of `part` (a projection: Q, K, V, O, Gate, Up, Down).
    pub fn get(&self, part: LayerPart) -> Option<&'a dyn WeightMatrix> {
        Some(match part {
            LayerPart::Q => self.q,
            LayerPart::K => self.k,
            LayerPart::V => self.v,
            LayerPart::O => self.o,
            LayerPart::Gate => self.gate,
            LayerPart::Up => self.up,
            LayerPart::Down => self.down,
            _ => return None,
        })
    }

    /// Replaces the matrix of `part`; a part that is not a projection is
    /// ignored. The shape must be the original's (checked by the caller
    /// that made it from the original).
    pub fn set(&mut self, part: LayerPart, w: &'a dyn WeightMatrix) {
        let slot = match part {
            LayerPart::Q => &mut self.q,
            LayerPart::K => &mut self.k,
            LayerPart::V => &mut self.v,
            LayerPart::O => &mut self.o,
            LayerPart::Gate => &mut self.gate,
            LayerPart::Up => &mut self.up,
            LayerPart::Down => &mut self.down,
            _ => return,
        };
        *slot = w;
    }
}

/// The activations of one layer pass over `total` tokens, allocated once
/// per forward.
struct Scratch {
    /// Tokens the buffers hold.
    rows: usize,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Scratch {
    fn new(c: &Config, total: usize) -> Scratch {
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        Scratch {
            rows: total,
            xn: vec![0.0; total * c.hidden],
            q: vec![0.0; total * qd],
            k: vec![0.0; total * kvd],
            v: vec![0.0; total * kvd],
            att: vec![0.0; total * qd],
            proj: vec![0.0; total * c.hidden],
            gate: vec![0.0; total * c.ffn],
            up: vec![0.0; total * c.ffn],
        }
    }
}

/// A batch of whole sequences (positions from 0, no cache kept) taken
/// through a decoder layer one stage at a time, the stages ending where
/// the projections' inputs are ready: q/k/v's, o's, gate/up's, down's, then
/// the layer's output. GPTQ's true-sequential calibration quantizes a group
/// of projections between two stages, over every batch, so a layer runs
/// once instead of once per group ([`Engine::layer_pass`] from the start).
/// Each stage gives the result the next projections read; the caller keeps
/// o's and down's inputs for the stage after, which reads them back.
/// The arithmetic is `layer_pass`'s, in the same order: the same bits.
pub struct LayerStages<'e, 'm> {
    engine: &'e Engine<'m>,
    spans: Vec<(usize, usize, usize)>,
    positions: Vec<usize>,
    s: Scratch,
}

impl LayerStages<'_, '_> {
    /// Tokens in the batch.
    pub fn rows(&self) -> usize {
        self.positions.len()
    }

    /// q/k/v's input: the attention norm of the layer input `x`.
    pub fn q_input(&mut self, li: usize, x: &[f32]) -> &[f32] {
        self.engine.attention_norm(li, x, &mut self.s);
        &self.s.xn
    }

    /// o's input: attention with `w`'s q/k/v over the layer input `x`.
    pub fn o_input(&mut self, li: usize, w: &LayerWeights<'_>, x: &[f32]) -> &[f32] {
        let e = self.engine;
        let mut owned: Vec<KvCache> = self.spans.iter().map(|_| e.new_cache()).collect();
        let mut caches: Vec<&mut KvCache> = owned.iter_mut().collect();
        rayon::scope(|_| {
            e.attention_norm(li, x, &mut self.s);
            e.attention(
                li,
                w,
                &self.spans,
                &self.positions,
                &mut caches,
                &mut self.s,
            );
        });
        &self.s.att
    }

    /// gate/up's input: `x` (the layer input) += o(`att`, the `o_input` of
    /// the same `x`), then its MLP norm. `x` is then the attention block's
    /// output, which the later stages take.
    pub fn gate_input(
        &mut self,
        li: usize,
        w: &LayerWeights<'_>,
        x: &mut [f32],
        att: &[f32],
    ) -> &[f32] {
        self.s.att.copy_from_slice(att);
        let e = self.engine;
        rayon::scope(|_| e.attention_residual(li, w, x, &mut self.s));
        &self.s.xn
    }

    /// down's input, from the attention block's output `x`.
    pub fn down_input(&mut self, li: usize, w: &LayerWeights<'_>, x: &[f32]) -> &[f32] {
        let e = self.engine;
        rayon::scope(|_| {
            e.mlp_norm(li, x, &mut self.s);
            e.activation(w, &mut self.s);
        });
        &self.s.gate
    }

    /// The layer's output: `x` (the attention block's output) += down(`act`,
    /// the `down_input` of the same `x`).
    pub fn output(&mut self, w: &LayerWeights<'_>, x: &mut [f32], act: &[f32]) {
        self.s.gate.copy_from_slice(act);
        let e = self.engine;
        rayon::scope(|_| e.mlp_residual(w, x, &mut self.s));
    }
}

/// A model ready to run, borrowing its weights from an opened [`Model`].
pub struct Engine<'m> {
    pub config: Config,
    model: &'m Model,
    /// Every tensor the pass reads, to find a NaN/Inf in when the logits
    /// are not finite.
    used: Vec<&'m TensorInfo>,
    embed: Stored<'m>,
    layers: Vec<Layer<'m>>,
    norm: Vec<f32>,
    /// `None` when the embeddings are tied.
    head: Option<Stored<'m>>,
    activations: Activations,
}

/// The keys and values of one sequence's past tokens, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Tokens already in the cache (the position of the next one).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forgets every token, keeping the allocations.
    pub fn clear(&mut self) {
        self.k
            .iter_mut()
            .chain(self.v.iter_mut())
            .for_each(Vec::clear);
        self.len = 0;
    }
}

/// Which logits [`Engine::forward`] returns for each sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new token's.
    Last,
    /// Every new token's (for perplexity).
    All,
    /// The new tokens' from this index on (perplexity's scored half).
    From(usize),
}

impl<'m> Engine<'m> {
    /// Prepares `model` for inference: checks every tensor the forward pass
    /// needs and reads the small ones (norms, biases) into memory. The big
    /// matrices stay in the map.
    pub fn new(model: &'m Model) -> Result<Engine<'m>, EngineError> {
        let config = Config::from_model(model)?;
        let mut embed = None;
        let mut head = None;
        let mut norm = None;
        let mut parts: Vec<Vec<Option<&TensorInfo>>> = vec![vec![None; 12]; config.layers];
        let mut used = Vec::new();
        let format = packed_format(model)?;
        for t in model.tensors() {
            // A packed layer is found by its main tensor (`qweight`,
            // `weight_packed`, bitsandbytes' `weight`), in the role of the
            // weight it replaces.
            let role = match packed_module(model, &t.name) {
                Some(module) => arch::role(&format!("{module}.weight")),
                None => arch::role(&t.name),
            };
            match role {
                Role::Embed => embed = Some(t),
                Role::LmHead => head = Some(t),
                Role::FinalNorm => norm = Some(t),
                Role::Layer(i, p) if (i as usize) < config.layers => {
                    parts[i as usize][p as usize] = Some(t)
                }
                _ => continue,
            }
            used.push(t);
            // A packed layer's NaN/Inf can only be in its scales
            // (bitsandbytes' are checked as they are read).
            if let Some(module) = packed_module(model, &t.name) {
                used.extend(
                    ["scales", "weight_scale"]
                        .iter()
                        .filter_map(|s| model.tensor(&format!("{module}.{s}"))),
                );
            }
        }
        let file = model.root.display().to_string();
        let missing = |what: String| {
            EngineError::Unsupported(format!("{file}: the model has no {what} tensor"))
        };
        let embed = Stored::new(
            model,
            embed.ok_or_else(|| missing("token embedding".into()))?,
        )?;
        let norm = Stored::new(model, norm.ok_or_else(|| missing("final norm".into()))?)?.to_vec();
        let head = head.map(|t| Stored::new(model, t)).transpose()?;
        let mut layers = Vec::with_capacity(config.layers);
        for (i, p) in parts.iter().enumerate() {
            let tensor = |part: LayerPart| {
                p[part as usize].ok_or_else(|| missing(format!("layer {i} {part:?}")))
            };
            let get = |part: LayerPart| -> Result<Stored<'m>, EngineError> {
                Ok(Stored::new(model, tensor(part)?)?)
            };
            let linear = |part: LayerPart| -> Result<Linear<'m>, EngineError> {
                Ok(Linear::new(model, tensor(part)?, format)?)
            };
            let opt = |part: LayerPart| -> Result<Option<Vec<f32>>, EngineError> {
                p[part as usize]
                    .map(|t| Ok(Stored::new(model, t)?.to_vec()))
                    .transpose()
            };
            layers.push(Layer {
                attn_norm: get(LayerPart::AttnNorm)?.to_vec(),
                q: linear(LayerPart::Q)?,
                k: linear(LayerPart::K)?,
                v: linear(LayerPart::V)?,
                o: linear(LayerPart::O)?,
                q_bias: opt(LayerPart::QBias)?,
                k_bias: opt(LayerPart::KBias)?,
                v_bias: opt(LayerPart::VBias)?,
                ffn_norm: get(LayerPart::FfnNorm)?.to_vec(),
                gate: linear(LayerPart::Gate)?,
                up: linear(LayerPart::Up)?,
                down: linear(LayerPart::Down)?,
            });
        }
        let engine = Engine {
            config,
            model,
            used,
            embed,
            layers,
            norm,
            head,
            activations: Activations::default(),
        };
        engine.check_shapes(&file)?;
        Ok(engine)
    }

    /// Refuses weights whose shapes disagree with the hyperparameters, so
    /// that the forward pass never indexes out of bounds.
    fn check_shapes(&self, file: &str) -> Result<(), EngineError> {
        let c = &self.config;
        let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let want = |name: String, m: &dyn WeightMatrix, r: usize, k: usize| {
            if (m.rows(), m.cols()) == (r, k) {
                Ok(())
            } else {
                Err(EngineError::Unsupported(format!(
                    "{file}: {name} is [{}, {}], expected [{r}, {k}] from the hyperparameters",
                    m.rows(),
                    m.cols()
                )))
            }
        };
        want("the token embedding".into(), &self.embed, c.vocab, c.hidden)?;
        want("the output head".into(), self.head(), c.vocab, c.hidden)?;
        let vec_len = |name: String, v: &[f32], n: usize| {
            if v.len() == n {
                Ok(())
            } else {
                Err(EngineError::Unsupported(format!(
                    "{file}: {name} has {} values, expected {n}",
                    v.len()
                )))
            }
        };
        vec_len("the final norm".into(), &self.norm, c.hidden)?;
        for (i, l) in self.layers.iter().enumerate() {
            want(format!("layer {i} q"), &l.q, q, c.hidden)?;
            want(format!("layer {i} k"), &l.k, kv, c.hidden)?;
            want(format!("layer {i} v"), &l.v, kv, c.hidden)?;
            want(format!("layer {i} o"), &l.o, c.hidden, q)?;
            want(format!("layer {i} gate"), &l.gate, c.ffn, c.hidden)?;
            want(format!("layer {i} up"), &l.up, c.ffn, c.hidden)?;
            want(format!("layer {i} down"), &l.down, c.hidden, c.ffn)?;
            vec_len(format!("layer {i} attention norm"), &l.attn_norm, c.hidden)?;
            vec_len(format!("layer {i} FFN norm"), &l.ffn_norm, c.hidden)?;
            for (n, b, len) in [
                ("q", &l.q_bias, q),
                ("k", &l.k_bias, kv),
                ("v", &l.v_bias, kv),
            ] {
                if let Some(b) = b {
                    vec_len(format!("layer {i} {n} bias"), b, len)?;
                }
            }
        }
        Ok(())
    }

    /// Chooses how quantized weights are multiplied (default
    /// [`Activations::Q8`], llama.cpp's way).
    pub fn with_activations(mut self, activations: Activations) -> Engine<'m> {
        self.activations = activations;
        self
    }

    fn head(&self) -> &Stored<'m> {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            k: vec![Vec::new(); self.config.layers],
            v: vec![Vec::new(); self.config.layers],
            len: 0,
        }
    }

    /// Runs `tokens[s]` through the model after what `caches[s]` already
    /// holds, for every sequence `s` at once, appending to the caches.
    /// Returns each sequence's requested logits, row-major `[n, vocab]`.
    pub fn forward(
        &self,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.forward_observed(
            caches,
            tokens,
            which,
            &mut |_: usize, _: LayerPart, _: &[f32]| {},
        )
    }

    /// [`Engine::forward`], also showing `observe` the input of every
    /// linear layer (`[tokens, in_features]`, all sequences' new tokens in
    /// order) before it is multiplied: what AWQ's activation statistics and
    /// GPTQ's Hessians are built from. Q, K and V share one input, reported
    /// once as [`LayerPart::Q`]; likewise gate and up as [`LayerPart::Gate`].
    pub fn forward_observed(
        &self,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
        which: Logits,
        observe: &mut (dyn FnMut(usize, LayerPart, &[f32]) + Send),
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        // Run the pass on a pool thread: every product then splits from
        // there, instead of the caller's thread handing each of the ~200
        // products of a token to the pool and sleeping until it is done
        // (two context switches per product, a quarter of a 1-thread decode).
        rayon::scope(|_| {
            let c = &self.config;
            let d = c.hidden;
            let total: usize = tokens.iter().map(|t| t.len()).sum();
            // Start offset and first position of every sequence in the batch.
            let mut spans = Vec::with_capacity(tokens.len());
            let mut off = 0;
            for (s, t) in tokens.iter().enumerate() {
                spans.push((off, t.len(), caches[s].len));
                off += t.len();
            }
            let positions: Vec<usize> = spans.iter().flat_map(|&(_, n, p0)| p0..p0 + n).collect();

            let flat: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
            let mut x = self.embed(&flat)?;
            let mut scratch = Scratch::new(c, total);
            for (li, l) in self.layers.iter().enumerate() {
                // A long prefill stops within one layer of a Ctrl-C.
                crate::cancel::check()?;
                let _ = self.run_layer(
                    li,
                    &l.weights(),
                    &mut x,
                    &spans,
                    &positions,
                    caches,
                    &mut scratch,
                    &mut |part, xs| {
                        observe(li, part, xs);
                        ControlFlow::Continue(())
                    },
                );
            }
            for (s, &(_, n, _)) in spans.iter().enumerate() {
                caches[s].len += n;
            }
            // The final norm and the head only for the rows asked for.
            let mut out = Vec::with_capacity(spans.len());
            for &(o, n, _) in &spans {
                let from = match which {
                    Logits::Last => n.saturating_sub(1),
                    Logits::All => 0,
                    Logits::From(i) => i.min(n),
                };
                out.push(self.head_logits(&x[(o + from) * d..(o + n) * d])?);
            }
            Ok(out)
        })
    }

    /// Runs decoder layer `li` with the matrices `w` over the hidden states
    /// `x` (`[tokens, hidden]`, updated in place), appending keys and values
    /// to the caches. `spans` holds each sequence's (first row, tokens, first
    /// position). `observe` sees each projection's input (Q for q/k/v, O,
    /// Gate for gate/up, Down) before it is multiplied; when it breaks, the
    /// pass stops there and `x` is left partly updated.
    #[allow(clippy::too_many_arguments)]
    fn run_layer(
        &self,
        li: usize,
        w: &LayerWeights<'_>,
        x: &mut [f32],
        spans: &[(usize, usize, usize)],
        positions: &[usize],
        caches: &mut [&mut KvCache],
        s: &mut Scratch,
        observe: &mut dyn FnMut(LayerPart, &[f32]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.attention_norm(li, x, s);
        observe(LayerPart::Q, &s.xn)?;
        self.attention(li, w, spans, positions, caches, s);
        observe(LayerPart::O, &s.att)?;
        self.attention_residual(li, w, x, s);
        observe(LayerPart::Gate, &s.xn)?;
        self.activation(w, s);
        observe(LayerPart::Down, &s.gate)?;
        self.mlp_residual(w, x, s);
        ControlFlow::Continue(())
    }

    // The five stages of a decoder layer, each ending where a projection's
    // input is ready; `run_layer` runs them in a row, a staged pass
    // ([`LayerStages`]) one at a time over every batch.

    /// `s.xn` = the attention norm of `x`: q/k/v's input.
    fn attention_norm(&self, li: usize, x: &[f32], s: &mut Scratch) {
        let c = &self.config;
        rms_norm(x, &self.layers[li].attn_norm, c.norm_eps, &mut s.xn);
    }

    /// `s.att` = attention over q/k/v of `s.xn`, keys and values appended to
    /// the caches: o's input.
    fn attention(
        &self,
        li: usize,
        w: &LayerWeights<'_>,
        spans: &[(usize, usize, usize)],
        positions: &[usize],
        caches: &mut [&mut KvCache],
        s: &mut Scratch,
    ) {
        let c = &self.config;
        let l = &self.layers[li];
        let total = positions.len();
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let acts = self.activations;
        matmul(w.q, &s.xn, total, &mut s.q, acts);
        matmul(w.k, &s.xn, total, &mut s.k, acts);
        matmul(w.v, &s.xn, total, &mut s.v, acts);
        add_bias(&mut s.q, l.q_bias.as_deref());
        add_bias(&mut s.k, l.k_bias.as_deref());
        add_bias(&mut s.v, l.v_bias.as_deref());
        self.rope(&mut s.q, positions, c.heads);
        self.rope(&mut s.k, positions, c.kv_heads);
        for (i, &(o, n, _)) in spans.iter().enumerate() {
            caches[i].k[li].extend_from_slice(&s.k[o * kvd..(o + n) * kvd]);
            caches[i].v[li].extend_from_slice(&s.v[o * kvd..(o + n) * kvd]);
        }
        for (i, &(o, n, p0)) in spans.iter().enumerate() {
            self.attention_heads(
                &s.q[o * qd..(o + n) * qd],
                &caches[i].k[li],
                &caches[i].v[li],
                p0,
                &mut s.att[o * qd..(o + n) * qd],
            );
        }
    }

    /// `x` += o(`s.att`), then `s.xn` = its MLP norm: gate/up's input.
    fn attention_residual(&self, li: usize, w: &LayerWeights<'_>, x: &mut [f32], s: &mut Scratch) {
        matmul(w.o, &s.att, s.rows, &mut s.proj, self.activations);
        x.iter_mut().zip(&s.proj).for_each(|(a, b)| *a += b);
        self.mlp_norm(li, x, s);
    }

    /// `s.xn` = the MLP norm of `x`: gate/up's input.
    fn mlp_norm(&self, li: usize, x: &[f32], s: &mut Scratch) {
        rms_norm(
            x,
            &self.layers[li].ffn_norm,
            self.config.norm_eps,
            &mut s.xn,
        );
    }

    /// `s.gate` = SiLU(gate(`s.xn`)) · up(`s.xn`): down's input.
    fn activation(&self, w: &LayerWeights<'_>, s: &mut Scratch) {
        matmul(w.gate, &s.xn, s.rows, &mut s.gate, self.activations);
        matmul(w.up, &s.xn, s.rows, &mut s.up, self.activations);
        s.gate.par_iter_mut().zip(&s.up).for_each(|(g, u)| {
            *g = *g / (1.0 + (-*g).exp()) * u;
        });
    }

    /// `x` += down(`s.gate`).
    fn mlp_residual(&self, w: &LayerWeights<'_>, x: &mut [f32], s: &mut Scratch) {
        matmul(w.down, &s.gate, s.rows, &mut s.proj, self.activations);
        x.iter_mut().zip(&s.proj).for_each(|(a, b)| *a += b);
    }

    /// The final norm and the output head over hidden states `x`
    /// (`[rows, hidden]`, the last layer's output): logits `[rows, vocab]`,
    /// refused with the weight to blame when any is not finite.
    pub fn head_logits(&self, x: &[f32]) -> Result<Vec<f32>, EngineError> {
        let c = &self.config;
        let rows = x.len() / c.hidden;
        let mut h = vec![0f32; x.len()];
        rms_norm(x, &self.norm, c.norm_eps, &mut h);
        let mut logits = vec![0f32; rows * c.vocab];
        matmul(self.head(), &h, rows, &mut logits, self.activations);
        if logits.par_iter().any(|v| !v.is_finite()) {
            return Err(self.non_finite_logits());
        }
        Ok(logits)
    }

    /// Lets the kernel drop the mapped pages of decoder layer `li`'s
    /// tensors: a layer-by-layer pass that is done with a layer calls it so
    /// that resident memory stays at one layer however deep the model.
    pub fn release_layer(&self, li: usize) {
        for t in self.model.tensors() {
            if arch::layer_of(&t.name) == Some(li as u64) {
                self.model.release(t);
            }
        }
    }

    /// The matrices decoder layer `li` is stored with.
    pub fn layer_weights(&self, li: usize) -> LayerWeights<'_> {
        self.layers[li].weights()
    }

    /// The token embeddings of `tokens`, `[tokens, hidden]` row-major: the
    /// input of layer 0.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let d = self.config.hidden;
        self.check_vocab(tokens.iter())?;
        let mut x = vec![0f32; tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            self.embed.decode_rows(t as usize..t as usize + 1, row);
        }
        Ok(x)
    }

    /// Runs decoder layer `li`, with the matrices `w`, over whole sequences
    /// of `lens` tokens each (positions from 0, no cache kept) whose hidden
    /// states are packed in `x` (`[Σ lens, hidden]`, updated in place): a
    /// step of layer-by-layer calibration. `observe` is as in
    /// [`Engine::forward_observed`], per layer; when it breaks, the pass
    /// stops there and `x` is left partly updated.
    pub fn layer_pass(
        &self,
        li: usize,
        w: &LayerWeights<'_>,
        x: &mut [f32],
        lens: &[usize],
        observe: &mut (dyn FnMut(LayerPart, &[f32]) -> ControlFlow<()> + Send),
    ) -> ControlFlow<()> {
        let total: usize = lens.iter().sum();
        debug_assert_eq!(x.len(), total * self.config.hidden);
        let (spans, positions) = whole_sequences(lens);
        let mut owned: Vec<KvCache> = lens.iter().map(|_| self.new_cache()).collect();
        let mut caches: Vec<&mut KvCache> = owned.iter_mut().collect();
        let mut scratch = Scratch::new(&self.config, total);
        rayon::scope(|_| {
            self.run_layer(
                li,
                w,
                x,
                &spans,
                &positions,
                &mut caches,
                &mut scratch,
                observe,
            )
        })
    }

    /// Buffers for taking batches of `lens` whole sequences through
    /// decoder layers a stage at a time ([`LayerStages`]).
    pub fn layer_stages(&self, lens: &[usize]) -> LayerStages<'_, 'm> {
        let (spans, positions) = whole_sequences(lens);
        LayerStages {
            engine: self,
            s: Scratch::new(&self.config, positions.len()),
            spans,
            positions,
        }
    }

    fn check_vocab<'t>(
        &self,
        mut tokens: impl Iterator<Item = &'t u32>,
    ) -> Result<(), EngineError> {
        match tokens.find(|&&t| t as usize >= self.config.vocab) {
            Some(t) => Err(EngineError::Unsupported(format!(
                "token id {t} is outside the vocabulary of {}",
                self.config.vocab
            ))),
            None => Ok(()),
        }
    }

    /// The error for logits that are not finite, naming the first weight
    /// that holds NaN or Inf. Every weight is decoded to find it, which
    /// only this failure pays for.
    fn non_finite_logits(&self) -> EngineError {
        let file = self.model.root.display();
        // Rows decoded at a time: a few MB per thread.
        const CHUNK: usize = 1 << 20;
        let bad = self.used.par_iter().find_map_first(|&t| {
            let w = Stored::new(self.model, t).ok()?;
            let step = (CHUNK / w.cols().max(1)).max(1);
            let mut buf = Vec::new();
            (0..w.rows()).step_by(step).find_map(|r0| {
                let rows = r0..(r0 + step).min(w.rows());
                buf.resize(rows.len() * w.cols(), 0.0);
                w.decode_rows(rows, &mut buf);
                let i = buf.iter().position(|v| !v.is_finite())?;
                Some((t, r0 * w.cols() + i, buf[i]))
            })
        });
        EngineError::NonFinite(match bad {
            Some((t, index, value)) => format!(
                "{file}: the logits are not finite: tensor '{}' holds {value} at element {index}; the weights are broken (re-merge, re-quantize or re-download the model)",
                t.name
            ),
            None => format!(
                "{file}: the logits are not finite although every weight is: the activations overflow float32 (check the model's norm epsilon and RoPE settings)"
            ),
        })
    }

    /// Rotates every head of every token in `x` (`[tokens, n_heads·head_dim]`)
    /// by its position.
    fn rope(&self, x: &mut [f32], positions: &[usize], n_heads: usize) {
        let c = &self.config;
        let hd = c.head_dim;
        let half = hd / 2;
        x.par_chunks_mut(n_heads * hd)
            .zip(positions)
            .for_each(|(tok, &p)| {
                // transformers: freqs = pos · inv_freq in f32, then cos/sin.
                let (cos, sin): (Vec<f32>, Vec<f32>) = c
                    .inv_freq
                    .iter()
                    .map(|&f| {
                        let a = p as f32 * f;
                        (a.cos(), a.sin())
                    })
                    .unzip();
                for head in tok.chunks_exact_mut(hd) {
                    for i in 0..half {
                        let (a, b) = match c.rope_layout {
                            RopeLayout::Halves => (i, i + half),
                            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * cos[i] - x1 * sin[i];
                        head[b] = x1 * cos[i] + x0 * sin[i];
                    }
                }
            });
    }

    /// Causal attention of `n` new queries at positions `p0..p0+n` over the
    /// cache (which already holds them), written into `out`.
    fn attention_heads(&self, q: &[f32], kc: &[f32], vc: &[f32], p0: usize, out: &mut [f32]) {
        let c = &self.config;
        let (hd, kvd) = (c.head_dim, c.kv_heads * c.head_dim);
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        out.par_chunks_mut(hd)
            .zip(q.par_chunks(hd))
            .enumerate()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, (i, (o, qh))| {
                let (t, h) = (i / c.heads, i % c.heads);
                let kv_off = (h / group) * hd;
                let n_keys = p0 + t + 1;
                scores.clear();
                scores.extend((0..n_keys).map(|j| {
                    weights::dot(qh, &kc[j * kvd + kv_off..j * kvd + kv_off + hd]) * scale
                }));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                scores.iter_mut().for_each(|s| *s /= sum);
                weights::weighted_rows(o, scores, vc, kvd, kv_off);
            });
    }
}

/// transformers' `LlamaRMSNorm` in f32: `w · x / sqrt(mean(x²) + eps)`, one
/// row of `w.len()` at a time.
/// The spans (first row, tokens, first position 0) and positions of
/// sequences of `lens` tokens packed one after the other, with no cache.
fn whole_sequences(lens: &[usize]) -> (Vec<(usize, usize, usize)>, Vec<usize>) {
    let mut spans = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &n in lens {
        spans.push((off, n, 0));
        off += n;
    }
    (spans, lens.iter().flat_map(|&n| 0..n).collect())
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(r).zip(w) {
                *o = w * (v * inv);
            }
        });
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        x.chunks_exact_mut(b.len())
            .for_each(|r| r.iter_mut().zip(b).for_each(|(a, b)| *a += b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_smooths_between() {
        let inv = default_inv_freq(10000.0, 64);
        let s = llama3_inv_freq(&inv, 8.0, 1.0, 4.0, 64.0);
        // wavelen < 16 kept, > 64 divided by 8, in between strictly between.
        for (a, b) in inv.iter().zip(&s) {
            let wl = 2.0 * std::f32::consts::PI / a;
            if wl < 16.0 {
                assert_eq!(a, b);
            } else if wl > 64.0 {
                assert_eq!(*b, a / 8.0);
            } else {
                assert!(*b < *a && *b > a / 8.0);
            }
        }
    }
}
