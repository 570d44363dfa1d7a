//! `quantize gptq`: calibrated int4/int8 checkpoints made layer by layer on
//! the CPU, as GPTQModel and llm-compressor make them on a GPU.
//!
//! This module owns the sequential calibration pipeline
//! ([`calibrate`]): the calibration windows are embedded once; then, for
//! each decoder layer, the layer runs on every window with the engine's
//! forward ([`Engine::layer_pass`]) while the inputs of its projections are
//! accumulated into Hessians, each projection is quantized by
//! [`crate::quant::gptq`], and the layer runs again with the quantized
//! weights to give the next layer its inputs (llm-compressor 0.14
//! `pipelines/sequential/pipeline.py` with `propagate_error`). With
//! `true_sequential` (GPTQModel's default, `gptqmodel/looper/module_looper.py`)
//! the inputs are re-captured after each group of the layer is quantized:
//! [q, k, v], [o], [gate, up], [down]; without it, one capture with the
//! original weights serves the whole layer, as llm-compressor does.
//! GPTQModel re-runs the layer for every group; here the layer runs once,
//! a stage at a time over every batch ([`LayerStages`]), each stage with
//! the groups quantized before it: the same numbers from about half the
//! layer work (`staged_layer`).
//!
//! Memory holds the windows' hidden states (`samples × seqlen × hidden`
//! f32), one layer's Hessians, one layer's quantized weights, the
//! activations of one batch of windows and, between stages, o's or down's
//! inputs for every window; the model's weights stay in their memory maps.

use std::ops::{ControlFlow, Range};
use std::path::PathBuf;

use crate::model::arch::LayerPart;
use crate::model::engine::weights::Dense;
use crate::model::engine::{Engine, LayerStages, LayerWeights, WeightMatrix};
use crate::ops::calibration;
use crate::ops::quantize::int_checkpoint::{
    self, projections, read_weight, Estimate, Format, Output, Plan, Scheme, Written,
};
use crate::ops::Error;
use crate::quant::gptq::{self as kernels, GptqConfig, GptqError, GptqOutput, Hessian};
use crate::quant::int4pack::IntWeights;
use crate::store::{Model, TensorInfo};

/// The projections of a decoder layer, in the order GPTQModel's
/// true-sequential groups quantize them.
pub const GROUPS: [&[LayerPart]; 4] = [
    &[LayerPart::K, LayerPart::V, LayerPart::Q],
    &[LayerPart::O],
    &[LayerPart::Up, LayerPart::Gate],
    &[LayerPart::Down],
];

/// Which input a projection multiplies: the engine reports q/k/v's shared
/// input as Q and gate/up's as Gate.
fn input_of(part: LayerPart) -> LayerPart {
    match part {
        LayerPart::K | LayerPart::V => LayerPart::Q,
        LayerPart::Up => LayerPart::Gate,
        p => p,
    }
}

/// One projection after calibration.
pub struct Quantized<'m> {
    pub layer: usize,
    pub part: LayerPart,
    /// The source tensor (`….weight`).
    pub tensor: &'m TensorInfo,
    /// `None` when the projection is kept unquantized.
    pub result: Option<GptqOutput>,
}

/// What the pipeline needs besides the model and the windows.
pub struct Pipeline<'a> {
    pub config: &'a GptqConfig,
    pub true_sequential: bool,
    /// Feed the next layer the outputs of this layer as quantized (the
    /// references' default); `false` feeds it the original layer's outputs
    /// (llm-compressor's `propagate_error=False`), so that every layer is
    /// calibrated on the original model's activations.
    pub propagate_quantized: bool,
    /// Tokens run through a layer at once (rounded to whole windows).
    pub batch_tokens: usize,
    /// True-sequential keeps the MLP activations of every window between
    /// the down projection's capture and the layer's output when they take
    /// at most this many bytes; above, gate/up run once more (half a layer
    /// pass). [`KEEP_ACTIVATIONS_UP_TO`] by default.
    pub keep_activations_up_to: u64,
    /// Plain round-to-nearest with the same scales and layout, no Hessian
    /// (the baseline GPTQ is measured against): nothing is captured and no
    /// layer is run.
    pub round_to_nearest: bool,
    /// Projections to keep as they are (their input width is not a
    /// multiple of the group size), by layer and part.
    pub keep: &'a dyn Fn(usize, LayerPart) -> bool,
    /// Called when a layer starts, with its index.
    pub on_layer: &'a (dyn Fn(usize) + Sync),
}

/// Per-layer statistics of a calibration.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LayerStats {
    pub layer: usize,
    /// Sum of the projections' GPTQ losses.
    pub loss: f64,
    /// Damp raises Cholesky needed, over the layer's projections.
    pub damp_increases: u32,
    /// Input columns never activated (quantized as zero).
    pub dead_columns: usize,
}

fn gptq_error(model: &Model, t: &TensorInfo, e: GptqError) -> Error {
    Error::Refused(format!(
        "{}: tensor '{}': {e}",
        model.root.display(),
        t.name
    ))
}

/// Runs the sequential pipeline over `windows` (equal-length token id
/// sequences) and hands each layer's projections to `sink` as soon as the
/// layer is done, in layer order; the sink may stop it early.
pub fn calibrate<'m>(
    model: &'m Model,
    engine: &Engine<'m>,
    windows: &[Vec<u32>],
    p: &Pipeline<'_>,
    sink: &mut dyn FnMut(Vec<Quantized<'m>>, LayerStats) -> Result<ControlFlow<()>, Error>,
) -> Result<(), Error> {
    let c = &engine.config;
    let d = c.hidden;
    let seqlen = windows.first().map_or(0, Vec::len);
    if seqlen == 0 || windows.iter().any(|w| w.len() != seqlen) {
        return Err(Error::Refused(
            "calibration windows must be non-empty and of equal length".into(),
        ));
    }
    let per_batch = (p.batch_tokens / seqlen).max(1);
    let batches: Vec<Range<usize>> = (0..windows.len())
        .step_by(per_batch)
        .map(|s| s..(s + per_batch).min(windows.len()))
        .collect();
    let flat: Vec<u32> = windows.iter().flatten().copied().collect();
    // Round-to-nearest runs no layer: no hidden states to hold.
    let mut hidden = if p.round_to_nearest {
        Vec::new()
    } else {
        engine.embed(&flat)?
    };
    let all = projections(model, c.layers);
    // One capture per group, the layer run once over every batch in stages
    // (see `staged_layer`); the other modes run whole passes.
    let staged = p.true_sequential && p.propagate_quantized && !p.round_to_nearest;
    let keep_act = (windows.len() * seqlen * c.ffn * 4) as u64 <= p.keep_activations_up_to;
    let mut stages: Vec<LayerStages<'_, 'm>> = Vec::new();
    if staged {
        for b in &batches {
            if !stages.iter().any(|s| s.rows() == b.len() * seqlen) {
                stages.push(engine.layer_stages(&vec![seqlen; b.len()]));
            }
        }
    }

    for (li, parts) in all.iter().enumerate() {
        crate::cancel::check()?;
        (p.on_layer)(li);
        let base = engine.layer_weights(li);
        let mut layer = Layer {
            model,
            li,
            parts,
            p,
            dense: Vec::new(),
            done: Vec::new(),
            stats: LayerStats {
                layer: li,
                ..LayerStats::default()
            },
        };
        if staged {
            staged_layer(
                &mut layer,
                engine,
                &mut hidden,
                &batches,
                seqlen,
                &mut stages,
                keep_act,
            )?;
        } else {
            let groups: Vec<Vec<LayerPart>> = if p.true_sequential {
                GROUPS.iter().map(|g| g.to_vec()).collect()
            } else {
                vec![GROUPS.concat()]
            };
            for group in groups {
                // The inputs this group needs, in the order the pass meets them.
                let mut inputs: Vec<LayerPart> = Vec::new();
                for part in layer.take_group(&group) {
                    if !inputs.contains(&input_of(part)) {
                        inputs.push(input_of(part));
                    }
                }
                if inputs.is_empty() {
                    continue;
                }
                let order = [LayerPart::Q, LayerPart::O, LayerPart::Gate, LayerPart::Down];
                inputs.sort_by_key(|i| order.iter().position(|o| o == i));
                let prepared: Vec<(LayerPart, kernels::Prepared)> = if p.round_to_nearest {
                    inputs
                        .iter()
                        .map(|&i| (i, kernels::Prepared::round_to_nearest(input_cols(c, i))))
                        .collect()
                } else {
                    capture(
                        model,
                        engine,
                        li,
                        &layer.weights(base),
                        &hidden,
                        &inputs,
                        &batches,
                        seqlen,
                        p.config,
                    )?
                };
                for (input, prep) in &prepared {
                    layer.quantize(&group, *input, prep)?;
                }
            }
            // The next layer's inputs come from this layer as it is stored.
            let weights = if p.propagate_quantized {
                layer.weights(base)
            } else {
                base
            };
            for b in batches.iter().filter(|_| !p.round_to_nearest) {
                crate::cancel::check()?;
                let lens = vec![seqlen; b.len()];
                let _ = engine.layer_pass(
                    li,
                    &weights,
                    &mut hidden[batch_rows(b, seqlen, d)],
                    &lens,
                    &mut |_, _| ControlFlow::Continue(()),
                );
            }
        }
        let Layer { done, stats, .. } = layer;
        // The layer's mapped pages are done with: resident memory stays at
        // one layer however deep the model.
        for (_, t) in parts {
            model.release(t);
        }
        if sink(done, stats)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// The default bound on the MLP activations kept between stages
/// ([`Pipeline::keep_activations_up_to`]): a 7B's 128 × 512 windows
/// (2.9 GB) fit under it, a 14B's (3.6 GB) too.
pub const KEEP_ACTIVATIONS_UP_TO: u64 = 4 << 30;

/// One decoder layer in calibration: what is quantized so far.
struct Layer<'a, 'm> {
    model: &'m Model,
    li: usize,
    parts: &'a [(LayerPart, &'m TensorInfo)],
    p: &'a Pipeline<'a>,
    /// Quantized projections, dequantized for the passes after them.
    dense: Vec<(LayerPart, Dense)>,
    done: Vec<Quantized<'m>>,
    stats: LayerStats,
}

impl<'m> Layer<'_, 'm> {
    /// The projections of `group` this layer has and quantizes; kept ones
    /// are recorded as done, unquantized.
    fn take_group(&mut self, group: &[LayerPart]) -> Vec<LayerPart> {
        let mut out = Vec::new();
        for &part in group {
            let Some(&(_, t)) = self.parts.iter().find(|(q, _)| *q == part) else {
                continue;
            };
            if (self.p.keep)(self.li, part) {
                self.done.push(Quantized {
                    layer: self.li,
                    part,
                    tensor: t,
                    result: None,
                });
            } else {
                out.push(part);
            }
        }
        out
    }

    /// `base` with the projections quantized so far.
    fn weights<'w>(&'w self, base: LayerWeights<'w>) -> LayerWeights<'w> {
        let mut w = base;
        for (part, m) in &self.dense {
            w.set(*part, m as &dyn WeightMatrix);
        }
        w
    }

    /// Quantizes the projections of `group` that read `input`, with its
    /// factorized Hessian.
    fn quantize(
        &mut self,
        group: &[LayerPart],
        input: LayerPart,
        prep: &kernels::Prepared,
    ) -> Result<(), Error> {
        for &part in group {
            if input_of(part) != input || (self.p.keep)(self.li, part) {
                continue;
            }
            let Some(&(_, t)) = self.parts.iter().find(|(q, _)| *q == part) else {
                continue;
            };
            let w = read_weight(self.model, t)?;
            let (r, k) = (t.rows() as usize, t.row_len() as usize);
            let out = kernels::quantize_prepared(&w, r, prep, self.p.config)
                .map_err(|e| gptq_error(self.model, t, e))?;
            self.stats.loss += out.loss;
            self.stats.damp_increases += out.damp_increases;
            self.stats.dead_columns += out.dead_columns;
            self.dense.push((part, Dense::new(r, k, out.dequantize())));
            self.done.push(Quantized {
                layer: self.li,
                part,
                tensor: t,
                result: Some(out),
            });
        }
        Ok(())
    }
}

/// True-sequential calibration of one layer in a single pass: each stage
/// of the layer runs over every batch, giving the Hessian of one group's
/// input; the group is quantized; the next stage runs with it. The
/// attention output and (`keep_act`) the MLP activations are kept between
/// stages; `hidden` ends as the layer's quantized output. The same
/// arithmetic as a capture pass per group.
fn staged_layer(
    layer: &mut Layer<'_, '_>,
    engine: &Engine<'_>,
    hidden: &mut [f32],
    batches: &[Range<usize>],
    seqlen: usize,
    stages: &mut [LayerStages<'_, '_>],
    keep_act: bool,
) -> Result<(), Error> {
    let (model, li, d) = (layer.model, layer.li, engine.config.hidden);
    let base = engine.layer_weights(li);
    let mut att: Vec<Vec<f32>> = Vec::new();
    let mut act: Vec<Vec<f32>> = Vec::new();
    for group in GROUPS {
        let input = input_of(group[0]);
        let quantize = !layer.take_group(group).is_empty();
        let mut hess = quantize.then(|| Hessian::new(input_cols(&engine.config, input)));
        {
            let weights = layer.weights(base);
            for (bi, b) in batches.iter().enumerate() {
                crate::cancel::check()?;
                let x = &mut hidden[batch_rows(b, seqlen, d)];
                let st = stage_for(stages, b.len() * seqlen);
                let xs: &[f32] = match input {
                    LayerPart::Q => st.q_input(li, x),
                    LayerPart::O => {
                        let a = st.o_input(li, &weights, x);
                        att.push(a.to_vec());
                        a
                    }
                    LayerPart::Gate => st.gate_input(li, &weights, x, &att[bi]),
                    _ => {
                        let a = st.down_input(li, &weights, x);
                        if keep_act {
                            act.push(a.to_vec());
                        }
                        a
                    }
                };
                if let Some(h) = &mut hess {
                    h.add(xs, b.len())
                        .map_err(|e| input_error(model, li, input, e))?;
                }
            }
        }
        if input == LayerPart::Gate {
            att = Vec::new();
        }
        if let Some(h) = hess {
            let prep = factorize(model, li, h, layer.p.config)?;
            layer.quantize(group, input, &prep)?;
        }
    }
    let weights = layer.weights(base);
    for (bi, b) in batches.iter().enumerate() {
        crate::cancel::check()?;
        let x = &mut hidden[batch_rows(b, seqlen, d)];
        let st = stage_for(stages, b.len() * seqlen);
        if keep_act {
            st.output(&weights, x, &act[bi]);
        } else {
            let a = st.down_input(li, &weights, x).to_vec();
            st.output(&weights, x, &a);
        }
    }
    Ok(())
}

/// The stage buffers sized for a batch of `rows` tokens.
fn stage_for<'s, 'e, 'm>(
    stages: &'s mut [LayerStages<'e, 'm>],
    rows: usize,
) -> &'s mut LayerStages<'e, 'm> {
    stages
        .iter_mut()
        .find(|s| s.rows() == rows)
        .expect("a stage for every batch size")
}

fn input_error(model: &Model, li: usize, input: LayerPart, e: GptqError) -> Error {
    Error::Refused(format!(
        "{}: layer {li}: the input of its {} projection: {e} (the layers before it produce non-finite activations; check the weights with `llmtool eval`)",
        model.root.display(),
        part_name(input)
    ))
}

/// Input features of the projections that read `input`.
fn input_cols(c: &crate::model::engine::Config, input: LayerPart) -> usize {
    match input {
        LayerPart::O => c.heads * c.head_dim,
        LayerPart::Down => c.ffn,
        _ => c.hidden,
    }
}

/// Runs layer `li` with `weights` over every batch of windows (`hidden`,
/// `seqlen` tokens each), accumulating the Hessians of `inputs` (in the
/// order the pass meets them; it stops after the last), and factorizes
/// each once for the projections that read it.
#[allow(clippy::too_many_arguments)]
fn capture(
    model: &Model,
    engine: &Engine<'_>,
    li: usize,
    weights: &LayerWeights<'_>,
    hidden: &[f32],
    inputs: &[LayerPart],
    batches: &[Range<usize>],
    seqlen: usize,
    cfg: &GptqConfig,
) -> Result<Vec<(LayerPart, kernels::Prepared)>, Error> {
    let d = engine.config.hidden;
    let last = *inputs.last().expect("non-empty");
    let mut hess: Vec<(LayerPart, Hessian)> = inputs
        .iter()
        .map(|&i| (i, Hessian::new(input_cols(&engine.config, i))))
        .collect();
    for b in batches {
        crate::cancel::check()?;
        let mut x = hidden[batch_rows(b, seqlen, d)].to_vec();
        let lens = vec![seqlen; b.len()];
        let mut failed: Option<(LayerPart, GptqError)> = None;
        let _ = engine.layer_pass(li, weights, &mut x, &lens, &mut |part, xs| {
            if let Some((_, h)) = hess.iter_mut().find(|(i, _)| *i == part) {
                if let Err(e) = h.add(xs, lens.len()) {
                    failed = Some((part, e));
                    return ControlFlow::Break(());
                }
            }
            if part == last {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Some((part, e)) = failed {
            return Err(input_error(model, li, part, e));
        }
    }
    hess.into_iter()
        .map(|(i, h)| Ok((i, factorize(model, li, h, cfg)?)))
        .collect()
}

/// The Hessian of one input of layer `li`, factorized for its projections.
fn factorize(
    model: &Model,
    li: usize,
    h: Hessian,
    cfg: &GptqConfig,
) -> Result<kernels::Prepared, Error> {
    let cols = h.cols();
    h.finish()
        .and_then(|h| kernels::Prepared::new(&h, cols, cfg))
        .map_err(|e| Error::Refused(format!("{}: layer {li}: {e}", model.root.display())))
}

/// The rows of `hidden` (`seqlen` tokens of `d` each per window) that hold
/// the windows of batch `b`.
fn batch_rows(b: &Range<usize>, seqlen: usize, d: usize) -> Range<usize> {
    b.start * seqlen * d..b.end * seqlen * d
}

/// The module name of a projection, as in Hugging Face checkpoints.
pub fn part_name(part: LayerPart) -> &'static str {
    match part {
        LayerPart::Q => "q_proj",
        LayerPart::K => "k_proj",
        LayerPart::V => "v_proj",
        LayerPart::O => "o_proj",
        LayerPart::Gate => "gate_proj",
        LayerPart::Up => "up_proj",
        LayerPart::Down => "down_proj",
        _ => "other",
    }
}

/// Options of `quantize gptq`.
pub struct GptqOptions {
    pub output: Output,
    pub algorithm: GptqConfig,
    /// Re-capture inputs after each group of a layer (GPTQModel's default).
    pub true_sequential: bool,
    /// Round to nearest instead of GPTQ ([`Pipeline::round_to_nearest`]).
    pub round_to_nearest: bool,
}

impl GptqOptions {
    /// Defaults for `out`: GPTQ v1, 4-bit group 128 symmetric, no
    /// act-order, damp 0.01, true-sequential, [`Output::new`]'s defaults.
    pub fn new(out: PathBuf) -> GptqOptions {
        GptqOptions {
            output: Output::new(out, Format::Gptq),
            algorithm: GptqConfig::default(),
            true_sequential: true,
            round_to_nearest: false,
        }
    }
}

/// What a quantization did (or, with a dry run, would do).
#[derive(Debug, serde::Serialize)]
pub struct GptqReport {
    #[serde(flatten)]
    pub written: Written,
    pub bits: u8,
    pub group_size: i64,
    pub sym: bool,
    pub act_order: bool,
    pub true_sequential: bool,
    /// Round-to-nearest codes (`--rtn`), not GPTQ's.
    pub round_to_nearest: bool,
    pub damp: serde_json::Value,
    /// Per layer (empty on a dry run).
    pub layer_stats: Vec<LayerStats>,
}

/// `config.json`'s `quantization_config`. GPTQ v1 as AutoGPTQ's
/// `BaseQuantizeConfig.to_dict` (GPTQModel adds `meta`); `static_groups`
/// says whether scales came from each group's original weights.
/// compressed-tensors as llm-compressor 0.14 / compressed-tensors 0.19
/// write it for a W4A16-style group scheme.
fn quantization_config(
    format: Format,
    cfg: &GptqConfig,
    true_sequential: bool,
    kept: &[String],
) -> serde_json::Value {
    let group = cfg.group_size.map_or(-1, |g| g as i64);
    match format {
        Format::Gptq => {
            let mut v = serde_json::json!({
                "bits": cfg.bits,
                "group_size": group,
                "damp_percent": json_f32(cfg.damp),
                "desc_act": cfg.act_order,
                "act_group_aware": cfg.group_aware && !cfg.act_order,
                "static_groups": cfg.static_groups || cfg.act_order,
                "sym": cfg.sym,
                "true_sequential": true_sequential,
                "lm_head": false,
                "quant_method": "gptq",
                "checkpoint_format": "gptq",
                "meta": {"quantizer": [format!("llmtool:{}", env!("CARGO_PKG_VERSION"))]},
            });
            if !kept.is_empty() {
                // vLLM and GPTQModel skip modules matched by a `-:` rule.
                let rules: serde_json::Map<String, serde_json::Value> = kept
                    .iter()
                    .map(|m| (format!("-:^{}$", regex::escape(m)), serde_json::json!({})))
                    .collect();
                v["dynamic"] = serde_json::Value::Object(rules);
            }
            v
        }
        Format::CompressedTensors | Format::Awq => int_checkpoint::compressed_tensors_config(
            Scheme {
                bits: cfg.bits,
                group_size: cfg.group_size,
                sym: cfg.sym,
            },
            cfg.act_order,
            kept,
        ),
    }
}

/// An f32 option as the decimal the user typed (0.01, not 0.00999…).
fn json_f32(v: f32) -> serde_json::Value {
    serde_json::json!(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
}

/// Estimates of memory and work for `windows` windows of `seqlen` tokens.
fn estimate(
    c: &crate::model::engine::Config,
    layer_params: u64,
    windows: usize,
    seqlen: usize,
    batch_tokens: usize,
    true_sequential: bool,
    round_to_nearest: bool,
) -> Estimate {
    if round_to_nearest {
        // No layer runs: a layer's weights in f32 and their rounded copy,
        // a few operations per weight.
        return Estimate {
            hidden_state_bytes: 0,
            layer_bytes: layer_params * 4,
            peak_bytes: layer_params * 8,
            flops: c.layers as f64 * layer_params as f64 * 4.0,
        };
    }
    let tokens = (windows * seqlen) as u64;
    let (d, qd, ffn) = (c.hidden as u64, (c.heads * c.head_dim) as u64, c.ffn as u64);
    let hidden_state_bytes = tokens * d * 4;
    let batch = (batch_tokens.max(seqlen) as u64).min(tokens);
    let kvd = (c.kv_heads * c.head_dim) as u64;
    let activations = batch * (2 * d + 2 * qd + 2 * kvd + 2 * ffn + d) * 4;
    let hessians = (3 * d * d + qd * qd + ffn * ffn) * 4;
    // The largest input's factorization in f64 (`kernels::Prepared`).
    let factor = d.max(qd).max(ffn).pow(2) * 8;
    // True-sequential runs the layer once, in stages, keeping o's inputs
    // and then (up to a bound) down's between stages; above the bound
    // gate/up run again. One capture runs it twice, whole.
    let keep_act = tokens * ffn * 4 <= KEEP_ACTIVATIONS_UP_TO;
    let kept = if !true_sequential {
        0
    } else if keep_act {
        tokens * qd.max(ffn) * 4
    } else {
        tokens * qd * 4
    };
    let layer_bytes = hessians + factor + layer_params * 4 + activations + kept;
    // Layer passes, Hessians (half of XᵀX each), GPTQ updates
    // (rows·cols²/2 per projection).
    let pass = 2.0 * layer_params as f64 * tokens as f64;
    let passes = match (true_sequential, keep_act) {
        (false, _) => 2.0,
        (true, true) => 1.0,
        (true, false) => 1.0 + (2 * d * ffn) as f64 / layer_params as f64,
    };
    let hess = tokens as f64 * (3 * d * d + qd * qd + ffn * ffn) as f64;
    let gptq =
        (d * d * (qd + 2 * kvd) + d * qd * qd + 2.0 as u64 * ffn * d * d + d * ffn * ffn) as f64;
    Estimate {
        hidden_state_bytes,
        layer_bytes,
        peak_bytes: hidden_state_bytes + layer_bytes + layer_params * 4,
        flops: c.layers as f64 * (passes * pass + hess + gptq),
    }
}

/// Quantizes `model` with GPTQ into a checkpoint at `opts.out`, or only
/// plans it when `dry_run`.
pub fn quantize(model: &Model, opts: &GptqOptions, dry_run: bool) -> Result<GptqReport, Error> {
    let o = &opts.output;
    let config = int_checkpoint::check_input(model, "quantize gptq")?;
    let engine = Engine::new(model)?;
    let cfg = &opts.algorithm;
    if cfg.bits != 4 && cfg.bits != 8 {
        return Err(Error::Refused(format!(
            "--bits {}: GPTQ checkpoints here are 4- or 8-bit",
            cfg.bits
        )));
    }
    if !cfg.sym && opts.output.format == Format::Gptq {
        return Err(Error::Refused(
            "--asym with --format gptq: the GPTQ v1 layout stores zero − 1 and cannot hold a zero point of 0; write asymmetric codes with --format compressed-tensors".into(),
        ));
    }
    if opts.output.format == Format::Awq {
        return Err(Error::Refused(
            "quantize gptq writes --format gptq or compressed-tensors; AWQ GEMM checkpoints come from `quantize awq`".into(),
        ));
    }
    let layers = engine.config.layers;
    let parts = int_checkpoint::projections(model, layers);
    let scheme = Scheme {
        bits: cfg.bits,
        group_size: cfg.group_size,
        sym: cfg.sym,
    };
    let (keep, mut warnings) = int_checkpoint::unpackable(
        model,
        &parts,
        opts.output.format,
        scheme,
        opts.output.allow_unquantized,
    )?;
    if !cfg.sym {
        warnings.push("asymmetric GPTQ: vLLM cannot use its Marlin kernel for it and falls back to the slower gptq kernel".into());
    }
    if cfg.group_size.is_some_and(|g| ![32, 64, 128].contains(&g)) {
        warnings.push("vLLM's Marlin kernel takes group sizes 32, 64, 128 and -1 only; this group size falls back to the slower gptq kernel".into());
    }

    let calib = calibration::load(model, engine.config.vocab, &opts.output.calibration)?;

    let plan = Plan::new(model, &parts, &keep, o.format, scheme);
    let qconfig = quantization_config(o.format, cfg, opts.true_sequential, &plan.kept);
    let est = estimate(
        &engine.config,
        plan.layer_params,
        calib.samples,
        calib.seqlen,
        o.batch_tokens,
        opts.true_sequential,
        opts.round_to_nearest,
    );
    let side = (o.format == Format::Gptq).then_some("quantize_config.json");
    let written = Written::plan(model, o, &plan, calib, qconfig.clone(), est, side, warnings)?;
    let mut report = GptqReport {
        written,
        bits: cfg.bits,
        group_size: cfg.group_size.map_or(-1, |g| g as i64),
        sym: cfg.sym,
        act_order: cfg.act_order,
        true_sequential: opts.true_sequential,
        round_to_nearest: opts.round_to_nearest,
        damp: json_f32(cfg.damp),
        layer_stats: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }

    let (tmp, mut w) = report.written.start(model, o, &plan)?;
    let bar = crate::progress::count_bar(o.progress, layers as u64, "GPTQ", "layers");
    let keep_fn = |li: usize, part: LayerPart| keep.contains(&(li, part));
    let on_layer = |li: usize| bar.set_message(format!("layer {li}"));
    let pipeline = Pipeline {
        config: cfg,
        true_sequential: opts.true_sequential,
        propagate_quantized: true,
        batch_tokens: o.batch_tokens,
        keep_activations_up_to: KEEP_ACTIVATIONS_UP_TO,
        round_to_nearest: opts.round_to_nearest,
        keep: &keep_fn,
        on_layer: &on_layer,
    };
    let mut stats = Vec::new();
    calibrate(
        model,
        &engine,
        &report.written.calibration.windows,
        &pipeline,
        &mut |done, st| {
            let li = st.layer;
            for t in &plan.per_layer[li] {
                let Some(q) = done.iter().find(|q| std::ptr::eq(q.tensor, *t)) else {
                    w.copy_tensor(model, t)?;
                    continue;
                };
                let Some(result) = &q.result else {
                    w.copy_tensor(model, t)?;
                    continue;
                };
                let iw = IntWeights::from_gptq(
                    result,
                    u32::from(cfg.bits),
                    t.rows() as usize,
                    t.row_len() as usize,
                );
                int_checkpoint::write_packed(
                    &mut w,
                    model,
                    t,
                    &iw,
                    o.format,
                    cfg.sym,
                    plan.scale_dtype,
                )?;
            }
            if st.damp_increases > 0 {
                report.written.warnings.push(format!(
                    "layer {li}: the Hessian needed {} damp increases before Cholesky succeeded",
                    st.damp_increases
                ));
            }
            stats.push(st);
            bar.inc(1);
            Ok(ControlFlow::Continue(()))
        },
    )?;
    w.finish()?;
    bar.finish_and_clear();
    report.layer_stats = stats;

    int_checkpoint::finish(
        &tmp,
        model,
        config,
        &qconfig,
        side,
        o,
        &mut report.written,
        &|w| model_card(opts, w),
    )?;
    report.written.files = tmp.commit()?;
    Ok(report)
}

fn model_card(opts: &GptqOptions, w: &Written) -> String {
    let cfg = &opts.algorithm;
    let group = cfg
        .group_size
        .map_or("-1 (per row)".to_string(), |g| g.to_string());
    if opts.round_to_nearest {
        let settings = format!(
            "{}-bit, group size {group}, {}, round to nearest with min-max group scales (no GPTQ error feedback; `--rtn`)",
            cfg.bits,
            if cfg.sym { "symmetric" } else { "asymmetric" },
        );
        let note = "embeddings, norms and the output head are unchanged; calibration text served only the quality measurement.";
        return int_checkpoint::model_card(&opts.output, w, "RTN", cfg.bits, &settings, note);
    }
    let settings = format!(
        "{}-bit, group size {group}, {}, act-order {}, damp {}, {}",
        cfg.bits,
        if cfg.sym { "symmetric" } else { "asymmetric" },
        match (cfg.act_order, cfg.group_aware && cfg.group_size.is_some()) {
            (true, _) => "on",
            (false, true) => "group-aware",
            (false, false) => "off",
        },
        cfg.damp,
        if opts.true_sequential {
            "true-sequential"
        } else {
            "one capture per layer"
        },
    );
    int_checkpoint::model_card(
        &opts.output,
        w,
        "GPTQ",
        cfg.bits,
        &settings,
        "embeddings, norms and the output head are unchanged.",
    )
}
