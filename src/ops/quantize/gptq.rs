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
//!
//! Memory holds the windows' hidden states (`samples × seqlen × hidden`
//! f32), one layer's Hessians, one layer's quantized weights and the
//! activations of one batch of windows; the model's weights stay in their
//! memory maps.

use std::ops::ControlFlow;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::engine::weights::Dense;
use crate::model::engine::{Engine, WeightMatrix};
use crate::ops::Error;
use crate::quant::gptq::{self as kernels, GptqConfig, GptqError, GptqOutput, Hessian};
use crate::store::{Model, StoreError, TensorInfo};

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
    /// Tokens run through a layer at once (rounded to whole windows).
    pub batch_tokens: usize,
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

/// The projection tensors of every layer: `[layer][part]`.
fn projections(model: &Model, layers: usize) -> Vec<Vec<(LayerPart, &TensorInfo)>> {
    let mut out = vec![Vec::new(); layers];
    for t in model.tensors() {
        if let Role::Layer(i, p) = arch::role(&t.name) {
            let projection = matches!(
                p,
                LayerPart::Q
                    | LayerPart::K
                    | LayerPart::V
                    | LayerPart::O
                    | LayerPart::Gate
                    | LayerPart::Up
                    | LayerPart::Down
            );
            if projection && (i as usize) < layers {
                out[i as usize].push((p, t));
            }
        }
    }
    out
}

/// Reads a weight as f32, refusing NaN and Inf (named).
fn read_weight(model: &Model, t: &TensorInfo) -> Result<Vec<f32>, StoreError> {
    let x = model.read_rows_f32(t, 0..t.rows())?;
    StoreError::check_finite(&t.name, 0, &x)?;
    model.release(t);
    Ok(x)
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
/// layer is done, in layer order.
pub fn calibrate<'m>(
    model: &'m Model,
    engine: &Engine<'m>,
    windows: &[Vec<u32>],
    p: &Pipeline<'_>,
    sink: &mut dyn FnMut(Vec<Quantized<'m>>, LayerStats) -> Result<(), Error>,
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
    let batches: Vec<std::ops::Range<usize>> = (0..windows.len())
        .step_by(per_batch)
        .map(|s| s..(s + per_batch).min(windows.len()))
        .collect();
    let flat: Vec<u32> = windows.iter().flatten().copied().collect();
    let mut hidden = engine.embed(&flat)?;
    let rows = |r: &std::ops::Range<usize>| r.start * seqlen * d..r.end * seqlen * d;
    let all = projections(model, c.layers);

    for (li, parts) in all.iter().enumerate() {
        crate::cancel::check()?;
        (p.on_layer)(li);
        let base = engine.layer_weights(li);
        let mut dense: Vec<(LayerPart, Dense)> = Vec::new();
        let mut done: Vec<Quantized<'m>> = Vec::new();
        let mut stats = LayerStats {
            layer: li,
            ..LayerStats::default()
        };
        let groups: Vec<Vec<LayerPart>> = if p.true_sequential {
            GROUPS.iter().map(|g| g.to_vec()).collect()
        } else {
            vec![GROUPS.concat()]
        };
        for group in groups {
            // The inputs this group needs, in the order the pass meets them.
            let mut inputs: Vec<LayerPart> = Vec::new();
            for &part in &group {
                let kept = (p.keep)(li, part);
                let Some(&(_, t)) = parts.iter().find(|(q, _)| *q == part) else {
                    continue;
                };
                if kept {
                    done.push(Quantized {
                        layer: li,
                        part,
                        tensor: t,
                        result: None,
                    });
                } else if !inputs.contains(&input_of(part)) {
                    inputs.push(input_of(part));
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let order = [LayerPart::Q, LayerPart::O, LayerPart::Gate, LayerPart::Down];
            inputs.sort_by_key(|i| order.iter().position(|o| o == i));
            let last = *inputs.last().expect("non-empty");
            let mut weights = base;
            for (part, m) in &dense {
                weights.set(*part, m as &dyn WeightMatrix);
            }
            let mut hess: Vec<(LayerPart, Hessian)> = inputs
                .iter()
                .map(|&i| {
                    let cols = match i {
                        LayerPart::O => c.heads * c.head_dim,
                        LayerPart::Down => c.ffn,
                        _ => d,
                    };
                    (i, Hessian::new(cols))
                })
                .collect();
            for b in &batches {
                crate::cancel::check()?;
                let mut x = hidden[rows(b)].to_vec();
                let lens = vec![seqlen; b.len()];
                let mut failed: Option<(LayerPart, GptqError)> = None;
                let _ = engine.layer_pass(li, &weights, &mut x, &lens, &mut |part, xs| {
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
                    return Err(Error::Refused(format!(
                        "{}: layer {li}: the input of its {} projection: {e} (the layers before it produce non-finite activations; check the weights with `llmtool eval`)",
                        model.root.display(),
                        part_name(part)
                    )));
                }
            }
            // One factorization per input, shared by the projections that read it.
            let prepared: Vec<(LayerPart, kernels::Prepared)> = hess
                .into_iter()
                .map(|(i, h)| {
                    let cols = h.cols();
                    Ok((i, kernels::Prepared::new(&h.finish()?, cols, p.config)?))
                })
                .collect::<Result<_, GptqError>>()
                .map_err(|e| {
                    Error::Refused(format!("{}: layer {li}: {e}", model.root.display()))
                })?;
            for &part in &group {
                if (p.keep)(li, part) {
                    continue;
                }
                let Some(&(_, t)) = parts.iter().find(|(q, _)| *q == part) else {
                    continue;
                };
                let prep = &prepared
                    .iter()
                    .find(|(i, _)| *i == input_of(part))
                    .expect("captured above")
                    .1;
                let w = read_weight(model, t)?;
                let (r, k) = (t.rows() as usize, t.row_len() as usize);
                let out = kernels::quantize_prepared(&w, r, prep, p.config)
                    .map_err(|e| gptq_error(model, t, e))?;
                stats.loss += out.loss;
                stats.damp_increases += out.damp_increases;
                stats.dead_columns += out.dead_columns;
                dense.push((part, Dense::new(r, k, out.dequantize())));
                done.push(Quantized {
                    layer: li,
                    part,
                    tensor: t,
                    result: Some(out),
                });
            }
        }
        // The next layer's inputs come from this layer as it is stored.
        let mut weights = base;
        for (part, m) in &dense {
            weights.set(*part, m as &dyn WeightMatrix);
        }
        for b in &batches {
            crate::cancel::check()?;
            let lens = vec![seqlen; b.len()];
            let _ = engine.layer_pass(li, &weights, &mut hidden[rows(b)], &lens, &mut |_, _| {
                ControlFlow::Continue(())
            });
        }
        drop(dense);
        sink(done, stats)?;
    }
    Ok(())
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
