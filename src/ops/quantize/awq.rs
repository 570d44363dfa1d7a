//! `quantize awq`: activation-aware int4 checkpoints (AutoAWQ GEMM or
//! compressed-tensors) made layer by layer on the CPU.
//!
//! For each decoder layer, the layer runs once on every calibration window
//! with its original weights ([`Engine::layer_pass`]), which gathers what
//! the scale search needs: mean |x| of each linear's input, the attention
//! output before o_proj, the MLP's input, the Gram matrices of o_proj's and
//! down_proj's inputs and a sample of every input for the clip search; its
//! output is the next layer's input. Then, for each scaling group of
//! AutoAWQ's `models/llama.py` / `qwen2.py` (llm-compressor's
//! `AWQ_MAPPING_REGISTRY`), in order:
//!
//! 1. input_layernorm → q, k, v, judged by the attention block's output;
//! 2. v → o, judged by o_proj's output, only when v's outputs are o's
//!    inputs one to one (no grouped-query attention);
//! 3. post_attention_layernorm → gate, up, judged by the MLP's output;
//! 4. up → down, judged by down_proj's output;
//!
//! every grid point of [`crate::quant::awq::grid`] is tried with the
//! group's weights fake-quantized as Q(W·s)/s, the best scales are folded
//! into the previous op (norm weight, or the previous linear's rows and
//! bias) and the group's columns. Every search sees the original weights
//! and the original activations, as llm-compressor 0.14's `AWQModifier`
//! does (its sequential pipeline runs with quantization disabled, so the
//! next layer sees the smoothed but unquantized layer, the original
//! function). Then, unless `clip` is off, AutoAWQ's clip search bounds
//! v, o, gate, up and down (q and k are skipped), and every projection is
//! rounded to the nearest code with min-max scales
//! ([`crate::quant::minmax`]), as llm-compressor's `QuantizationModifier`
//! stores it.
//!
//! Losses of a linear parent come from the Gram matrix of its inputs
//! ([`crate::quant::awq::linear_loss`]) instead of 20 products with every
//! token; the attention block and the MLP are run for each grid point.
//!
//! Memory: the windows' hidden states twice (the layer's input and output),
//! the attention outputs and MLP inputs of one layer, the Gram matrices,
//! one layer's weights in f32; the model's weights stay memory-mapped.

use std::collections::{BTreeMap, HashSet};
use std::ops::{ControlFlow, Range};
use std::path::PathBuf;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::engine::weights::{matmul, Activations, Dense};
use crate::model::engine::{Engine, WeightMatrix};
use crate::ops::calibration;
use crate::ops::quantize::int_checkpoint::{
    self, read_weight, Estimate, Format, Output, Plan, Scheme, Written,
};
use crate::ops::Error;
use crate::quant::awq::{self as kernels, AwqConfig, GridPoint};
use crate::quant::gptq::Hessian;
use crate::quant::minmax::{self, GroupCodes};
use crate::store::{Model, TensorInfo};

/// A scaling group: the op whose output the scales divide, the linears
/// whose columns they multiply, and the module whose output judges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// input_layernorm → q, k, v (judged by self_attn).
    Attention,
    /// v_proj → o_proj (judged by o_proj).
    VO,
    /// post_attention_layernorm → gate, up (judged by mlp).
    Mlp,
    /// up_proj → down_proj (judged by down_proj).
    UpDown,
}

impl Mapping {
    const ALL: [Mapping; 4] = [
        Mapping::Attention,
        Mapping::VO,
        Mapping::Mlp,
        Mapping::UpDown,
    ];

    /// The linears the scales multiply.
    pub fn balance(self) -> &'static [LayerPart] {
        match self {
            Mapping::Attention => &[LayerPart::Q, LayerPart::K, LayerPart::V],
            Mapping::VO => &[LayerPart::O],
            Mapping::Mlp => &[LayerPart::Gate, LayerPart::Up],
            Mapping::UpDown => &[LayerPart::Down],
        }
    }

    /// The input of the balance linears, as the engine reports it.
    fn input(self) -> LayerPart {
        match self {
            Mapping::Attention => LayerPart::Q,
            Mapping::VO => LayerPart::O,
            Mapping::Mlp => LayerPart::Gate,
            Mapping::UpDown => LayerPart::Down,
        }
    }

    /// The module name of the op the scales divide (llm-compressor's
    /// `smooth_layer`).
    pub fn smooth_name(self) -> &'static str {
        match self {
            Mapping::Attention => "input_layernorm",
            Mapping::VO => "v_proj",
            Mapping::Mlp => "post_attention_layernorm",
            Mapping::UpDown => "up_proj",
        }
    }
}

/// The outcome of one scaling group's search.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MappingStats {
    pub mapping: Mapping,
    /// Index of the chosen point in the grid.
    pub choice: usize,
    pub point: GridPoint,
    /// Loss of every grid point computed on all windows, in grid order
    /// (`None`: screened out on the first windows).
    pub losses: Vec<Option<f64>>,
    /// The chosen scales, one per input channel of the balance linears.
    #[serde(skip)]
    pub scales: Vec<f32>,
}

/// Per-layer statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerStats {
    pub layer: usize,
    pub mappings: Vec<MappingStats>,
}

/// One layer after calibration: the projections' codes (`None`: kept, as
/// the scaled f32 values in `replaced`) and the tensors the scales changed.
pub struct LayerResult<'m> {
    pub layer: usize,
    pub codes: Vec<(&'m TensorInfo, GroupCodes)>,
    /// Norm weights, v's bias and kept projections, as scaled.
    pub replaced: Vec<(&'m TensorInfo, Vec<f32>)>,
    pub stats: LayerStats,
}

/// What the pipeline needs besides the model and the windows.
pub struct Pipeline<'a> {
    pub config: &'a AwqConfig,
    /// Tokens run through a layer at once (rounded to whole windows).
    pub batch_tokens: usize,
    /// Projections kept unquantized, by layer and part.
    pub keep: &'a (dyn Fn(usize, LayerPart) -> bool + Sync),
    /// Called when a layer starts, with its index.
    pub on_layer: &'a (dyn Fn(usize) + Sync),
}

/// What pass 1 gathers for one input of the layer.
struct Input {
    /// Σ |x| per channel.
    abs_sum: Vec<f64>,
    /// (2/T)·Σ xxᵀ, for the linear parents.
    gram: Option<Hessian>,
    /// Every input row (attention output, MLP input), for the module
    /// parents.
    rows: Option<Vec<f32>>,
    /// The clip search's sample of rows.
    sample: Vec<f32>,
}

impl Input {
    fn new(cols: usize, gram: bool, rows: bool) -> Input {
        Input {
            abs_sum: vec![0.0; cols],
            gram: gram.then(|| Hessian::new(cols)),
            rows: rows.then(Vec::new),
            sample: Vec::new(),
        }
    }

    fn add(&mut self, xs: &[f32], cols: usize, first_token: usize, sample: &HashSet<usize>) {
        for row in xs.chunks_exact(cols) {
            self.abs_sum
                .iter_mut()
                .zip(row)
                .for_each(|(a, v)| *a += f64::from(v.abs()));
        }
        if let Some(g) = &mut self.gram {
            let tokens = xs.len() / cols;
            g.add(xs, tokens).expect("inputs checked finite");
        }
        if let Some(r) = &mut self.rows {
            r.extend_from_slice(xs);
        }
        for (t, row) in xs.chunks_exact(cols).enumerate() {
            if sample.contains(&(first_token + t)) {
                self.sample.extend_from_slice(row);
            }
        }
    }

    fn mean(&self, tokens: usize) -> Vec<f32> {
        self.abs_sum
            .iter()
            .map(|s| (s / tokens as f64) as f32)
            .collect()
    }
}

/// `out[t] = down(silu(gate·x) ⊙ up·x)` for `n` rows of `x`.
fn mlp(
    gate: &dyn WeightMatrix,
    up: &dyn WeightMatrix,
    down: &dyn WeightMatrix,
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let ffn = gate.rows();
    let mut g = vec![0f32; n * ffn];
    let mut u = vec![0f32; n * ffn];
    matmul(gate, x, n, &mut g, Activations::Exact);
    matmul(up, x, n, &mut u, Activations::Exact);
    g.iter_mut()
        .zip(&u)
        .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
    let mut out = vec![0f32; n * down.rows()];
    matmul(down, &g, n, &mut out, Activations::Exact);
    out
}

fn sum_squares(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(x * x)).sum()
}

/// Windows a module's loss is first computed on for every grid point
/// (at least [`SCREEN_MIN`] and an eighth of them); only the
/// [`FINALISTS`] best of those are then computed on the rest, and the best
/// over all windows wins. Since the losses are sums over tokens, a finalist's
/// loss is exactly the reference's; the choice differs from an exhaustive
/// search only when the reference's best is not among the screened best,
/// and the module runs ~4× less.
const SCREEN_MIN: usize = 4;
const FINALISTS: usize = 3;

/// A sum of squared errors and how many elements it is over.
type SquaredError = (f64, f64);

/// The squared error of a candidate's fake-quantized weights over a range
/// of calibration windows.
type Loss<'a> = dyn FnMut(Vec<Vec<f32>>, Range<usize>) -> Result<SquaredError, Error> + 'a;

/// The grid search of one mapping: the loss (mean squared error of the
/// judging module's output) of the fake-quantized balance weights for each
/// grid point and the best one (first of equals). `loss` returns the
/// squared error over a range of calibration windows; with `windows` = 1 it
/// is not screened (a linear's loss from its Gram matrix is cheap).
fn search(
    x_mean: &[f32],
    weights: &[&[f32]],
    cols: usize,
    cfg: &AwqConfig,
    mapping: Mapping,
    windows: usize,
    loss: &mut Loss<'_>,
) -> Result<MappingStats, Error> {
    let w_mean = kernels::weight_means(weights, cols, cfg.group_size);
    let grid = kernels::grid(cfg.n_grid, cfg.duo_scaling);
    let candidate = |p: GridPoint| {
        let s = kernels::scales(x_mean, &w_mean, p);
        let q: Vec<Vec<f32>> = weights
            .iter()
            .map(|w| kernels::scaled_fake_quantize(w, cols, &s, cfg))
            .collect();
        (s, q)
    };
    let screen = windows.div_ceil(8).max(SCREEN_MIN).min(windows);
    let mut first: Vec<SquaredError> = Vec::with_capacity(grid.len());
    for &p in &grid {
        crate::cancel::check()?;
        first.push(loss(candidate(p).1, 0..screen)?);
    }
    let mse = |(sum, n): SquaredError| sum / n;
    let mut losses: Vec<Option<f64>> = vec![None; grid.len()];
    if screen == windows {
        for (l, e) in losses.iter_mut().zip(&first) {
            *l = Some(mse(*e));
        }
    } else {
        let mut order: Vec<usize> = (0..grid.len())
            .filter(|&i| mse(first[i]).is_finite())
            .collect();
        order.sort_by(|&a, &b| mse(first[a]).total_cmp(&mse(first[b])).then(a.cmp(&b)));
        for &i in order.iter().take(FINALISTS) {
            crate::cancel::check()?;
            let (sum, n) = loss(candidate(grid[i]).1, screen..windows)?;
            losses[i] = Some(mse((first[i].0 + sum, first[i].1 + n)));
        }
    }
    let best = losses
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.filter(|v| v.is_finite()).map(|v| (i, v)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let Some((choice, _)) = best else {
        return Err(Error::Refused(format!(
            "the AWQ search for {} found no finite loss (the layer's activations overflow)",
            mapping.smooth_name()
        )));
    };
    Ok(MappingStats {
        mapping,
        choice,
        point: grid[choice],
        losses,
        scales: candidate(grid[choice]).0,
    })
}

fn scale_columns(w: &mut [f32], cols: usize, s: &[f32]) {
    w.chunks_exact_mut(cols)
        .for_each(|r| r.iter_mut().zip(s).for_each(|(a, b)| *a *= b));
}

fn divide_rows(w: &mut [f32], cols: usize, s: &[f32]) {
    w.chunks_exact_mut(cols)
        .zip(s)
        .for_each(|(r, d)| r.iter_mut().for_each(|a| *a /= d));
}

/// Runs AWQ over `windows` (equal-length token id sequences) and hands each
/// layer to `sink` as soon as it is done, in layer order; the sink may stop
/// it early.
pub fn calibrate<'m>(
    model: &'m Model,
    engine: &Engine<'m>,
    windows: &[Vec<u32>],
    p: &Pipeline<'_>,
    sink: &mut dyn FnMut(LayerResult<'m>) -> Result<ControlFlow<()>, Error>,
) -> Result<(), Error> {
    let c = &engine.config;
    let cfg = p.config;
    let (d, qd, ffn) = (c.hidden, c.heads * c.head_dim, c.ffn);
    let seqlen = windows.first().map_or(0, Vec::len);
    if seqlen == 0 || windows.iter().any(|w| w.len() != seqlen) {
        return Err(Error::Refused(
            "calibration windows must be non-empty and of equal length".into(),
        ));
    }
    let tokens = windows.len() * seqlen;
    let per_batch = (p.batch_tokens / seqlen).max(1);
    let batches_of = |span: Range<usize>| -> Vec<Range<usize>> {
        span.clone()
            .step_by(per_batch)
            .map(|s| s..(s + per_batch).min(span.end))
            .collect()
    };
    let batches = batches_of(0..windows.len());
    let flat: Vec<u32> = windows.iter().flatten().copied().collect();
    let mut hidden = engine.embed(&flat)?;
    let rows_of = |r: &Range<usize>, width: usize| r.start * seqlen * width..r.end * seqlen * width;
    let sample: HashSet<usize> = kernels::clip_sample(tokens).collect();
    let shown = model.root.display();

    let mut layer_tensors: Vec<Vec<(LayerPart, &TensorInfo)>> = vec![Vec::new(); c.layers];
    for t in model.tensors() {
        if let Role::Layer(i, part) = arch::role(&t.name) {
            if (i as usize) < c.layers {
                layer_tensors[i as usize].push((part, t));
            }
        }
    }

    for (li, own) in layer_tensors.iter().enumerate() {
        crate::cancel::check()?;
        (p.on_layer)(li);
        let tensor = |part: LayerPart| own.iter().find(|(q, _)| *q == part).map(|&(_, t)| t);
        let base = engine.layer_weights(li);
        let kept = |part: LayerPart| (p.keep)(li, part);

        // The projections in f32 (refusing NaN/Inf by name before they
        // poison the activations).
        let mut w: BTreeMap<LayerPart, (&TensorInfo, Vec<f32>)> = BTreeMap::new();
        for part in [
            LayerPart::Q,
            LayerPart::K,
            LayerPart::V,
            LayerPart::O,
            LayerPart::Gate,
            LayerPart::Up,
            LayerPart::Down,
        ] {
            let t = tensor(part).ok_or_else(|| {
                Error::Refused(format!(
                    "{shown}: layer {li} has no {} projection",
                    super::gptq::part_name(part)
                ))
            })?;
            w.insert(part, (t, read_weight(model, t)?));
        }
        // Pass 1: statistics with the original weights; `hidden` becomes
        // the next layer's input.
        let layer_in = hidden.clone();
        // v → o needs v's outputs to be o's inputs one to one (no GQA);
        // without it, o_proj's Gram matrix would be computed for nothing.
        let vo = c.heads == c.kv_heads && !kept(LayerPart::O);
        let mut attn_in = Input::new(d, false, false);
        let mut o_in = Input::new(qd, vo, true);
        let mut mlp_in = Input::new(d, false, true);
        let mut down_in = Input::new(ffn, !kept(LayerPart::Down), false);
        for b in &batches {
            crate::cancel::check()?;
            let lens = vec![seqlen; b.len()];
            let first = b.start * seqlen;
            let mut bad = None;
            let _ = engine.layer_pass(
                li,
                &base,
                &mut hidden[rows_of(b, d)],
                &lens,
                &mut |part, xs| {
                    if xs.iter().any(|v| !v.is_finite()) {
                        bad = Some(part);
                        return ControlFlow::Break(());
                    }
                    match part {
                        LayerPart::Q => attn_in.add(xs, d, first, &sample),
                        LayerPart::O => o_in.add(xs, qd, first, &sample),
                        LayerPart::Gate => mlp_in.add(xs, d, first, &sample),
                        LayerPart::Down => down_in.add(xs, ffn, first, &sample),
                        _ => {}
                    }
                    ControlFlow::Continue(())
                },
            );
            if let Some(part) = bad {
                return Err(Error::Refused(format!(
                    "{shown}: layer {li}: the input of its {} projection is not finite (the layers before it produce NaN or Inf; check the weights with `llmtool eval`)",
                    super::gptq::part_name(part)
                )));
            }
        }

        let mut stats = LayerStats {
            layer: li,
            mappings: Vec::new(),
        };
        let att_orig = o_in.rows.take().unwrap_or_default();
        let (mut o_gram, mut down_gram) = (o_in.gram.take(), down_in.gram.take());
        let mlp_x = mlp_in.rows.take().unwrap_or_default();
        for mapping in Mapping::ALL {
            let balance = mapping.balance();
            if (mapping == Mapping::VO && !vo) || balance.iter().all(|&b| kept(b)) {
                continue;
            }
            let cols = match mapping {
                Mapping::VO => qd,
                Mapping::UpDown => ffn,
                _ => d,
            };
            let input = match mapping.input() {
                LayerPart::Q => &attn_in,
                LayerPart::O => &o_in,
                LayerPart::Gate => &mlp_in,
                _ => &down_in,
            };
            let x_mean = input.mean(tokens);
            let weights: Vec<&[f32]> = balance.iter().map(|b| w[b].1.as_slice()).collect();
            let dims: Vec<usize> = weights.iter().map(|v| v.len() / cols).collect();
            let st = match mapping {
                Mapping::Attention => {
                    let w_o = base.get(LayerPart::O).expect("projection");
                    search(
                        &x_mean,
                        &weights,
                        cols,
                        cfg,
                        mapping,
                        windows.len(),
                        &mut |q, span| {
                            let dense: Vec<Dense> = q
                                .into_iter()
                                .zip(&dims)
                                .map(|(v, &r)| Dense::new(r, cols, v))
                                .collect();
                            let mut lw = base;
                            for (&part, m) in balance.iter().zip(&dense) {
                                // A kept projection stays as it is stored.
                                if !kept(part) {
                                    lw.set(part, m as &dyn WeightMatrix);
                                }
                            }
                            let mut total = 0f64;
                            for b in &batches_of(span.clone()) {
                                crate::cancel::check()?;
                                let lens = vec![seqlen; b.len()];
                                let mut x = layer_in[rows_of(b, d)].to_vec();
                                let orig = &att_orig[rows_of(b, qd)];
                                let n = b.len() * seqlen;
                                let _ =
                                    engine.layer_pass(li, &lw, &mut x, &lens, &mut |part, xs| {
                                        if part != LayerPart::O {
                                            return ControlFlow::Continue(());
                                        }
                                        let diff: Vec<f32> =
                                            xs.iter().zip(orig).map(|(a, b)| a - b).collect();
                                        let mut out = vec![0f32; n * d];
                                        matmul(w_o, &diff, n, &mut out, Activations::Exact);
                                        total += sum_squares(&out);
                                        ControlFlow::Break(())
                                    });
                            }
                            Ok((total, (span.len() * seqlen * d) as f64))
                        },
                    )?
                }
                Mapping::VO | Mapping::UpDown => {
                    let gram = if mapping == Mapping::VO {
                        &mut o_gram
                    } else {
                        &mut down_gram
                    };
                    let gram = gram
                        .take()
                        .expect("linear inputs keep their Gram matrix")
                        .finish()
                        .map_err(|e| Error::Refused(format!("{shown}: layer {li}: {e}")))?;
                    let orig = weights[0];
                    search(&x_mean, &weights, cols, cfg, mapping, 1, &mut |q, _| {
                        let dw: Vec<f32> = q[0].iter().zip(orig).map(|(a, b)| a - b).collect();
                        Ok((kernels::linear_loss(&dw, dims[0], cols, &gram), 1.0))
                    })?
                }
                Mapping::Mlp => {
                    let down = base.get(LayerPart::Down).expect("projection");
                    let (g0, u0) = (
                        base.get(LayerPart::Gate).expect("projection"),
                        base.get(LayerPart::Up).expect("projection"),
                    );
                    let mut orig_out = Vec::with_capacity(tokens * d);
                    for b in &batches {
                        let n = b.len() * seqlen;
                        orig_out.extend(mlp(g0, u0, down, &mlp_x[rows_of(b, d)], n));
                    }
                    search(
                        &x_mean,
                        &weights,
                        cols,
                        cfg,
                        mapping,
                        windows.len(),
                        &mut |q, span| {
                            let mut q = q.into_iter();
                            let gq = Dense::new(dims[0], cols, q.next().expect("gate"));
                            let uq = Dense::new(dims[1], cols, q.next().expect("up"));
                            let gate: &dyn WeightMatrix =
                                if kept(LayerPart::Gate) { g0 } else { &gq };
                            let up: &dyn WeightMatrix = if kept(LayerPart::Up) { u0 } else { &uq };
                            let mut total = 0f64;
                            for b in &batches_of(span.clone()) {
                                crate::cancel::check()?;
                                let n = b.len() * seqlen;
                                let out = mlp(gate, up, down, &mlp_x[rows_of(b, d)], n);
                                let diff: Vec<f32> = out
                                    .iter()
                                    .zip(&orig_out[rows_of(b, d)])
                                    .map(|(a, b)| a - b)
                                    .collect();
                                total += sum_squares(&diff);
                            }
                            Ok((total, (span.len() * seqlen * d) as f64))
                        },
                    )?
                }
            };
            stats.mappings.push(st);
        }
        drop(att_orig);
        drop(mlp_x);
        drop(layer_in);

        // Fold the chosen scales: previous op ÷ s, balance columns × s.
        let mut replaced: Vec<(&TensorInfo, Vec<f32>)> = Vec::new();
        let mut input_scales: BTreeMap<LayerPart, Vec<f32>> = BTreeMap::new();
        for st in &stats.mappings {
            let s = &st.scales;
            for part in st.mapping.balance() {
                let cols = s.len();
                scale_columns(&mut w.get_mut(part).expect("read").1, cols, s);
                input_scales.insert(*part, s.clone());
            }
            match st.mapping {
                Mapping::Attention | Mapping::Mlp => {
                    let norm = if st.mapping == Mapping::Attention {
                        LayerPart::AttnNorm
                    } else {
                        LayerPart::FfnNorm
                    };
                    let t = tensor(norm).ok_or_else(|| {
                        Error::Refused(format!(
                            "{shown}: layer {li} has no {} weight",
                            st.mapping.smooth_name()
                        ))
                    })?;
                    let mut v = model.read_rows_f32(t, 0..t.rows())?;
                    v.iter_mut().zip(s).for_each(|(a, b)| *a /= b);
                    replaced.push((t, v));
                }
                Mapping::VO | Mapping::UpDown => {
                    let prev = if st.mapping == Mapping::VO {
                        LayerPart::V
                    } else {
                        LayerPart::Up
                    };
                    let entry = w.get_mut(&prev).expect("read");
                    let cols = entry.1.len() / s.len();
                    divide_rows(&mut entry.1, cols, s);
                    if st.mapping == Mapping::VO {
                        if let Some(t) = tensor(LayerPart::VBias) {
                            let mut v = model.read_rows_f32(t, 0..t.rows())?;
                            v.iter_mut().zip(s).for_each(|(a, b)| *a /= b);
                            replaced.push((t, v));
                        }
                    }
                }
            }
        }

        let mut codes = Vec::new();
        for (part, (t, mut v)) in w {
            let (rows, cols) = (t.rows() as usize, t.row_len() as usize);
            if kept(part) {
                // Stored as scaled (unchanged values re-encode exactly).
                replaced.push((t, v));
                continue;
            }
            let skip_clip = matches!(part, LayerPart::Q | LayerPart::K);
            if cfg.clip && !skip_clip {
                let input = match part {
                    LayerPart::V => &attn_in,
                    LayerPart::O => &o_in,
                    LayerPart::Gate | LayerPart::Up => &mlp_in,
                    _ => &down_in,
                };
                // The inputs as the scaled weights see them: x / s.
                let mut x = input.sample.clone();
                if let Some(s) = input_scales.get(&part) {
                    x.chunks_exact_mut(cols)
                        .for_each(|r| r.iter_mut().zip(s).for_each(|(a, b)| *a /= b));
                }
                let bounds = kernels::search_clip(&v, rows, cols, &x, cfg);
                kernels::apply_clip(&mut v, cols, cfg.group_size, &bounds);
            }
            codes.push((
                t,
                minmax::round_to_nearest(&v, rows, cols, cfg.group_size, cfg.bits, !cfg.zero_point),
            ));
        }
        // The layer's mapped pages are done with: resident memory stays at
        // one layer however deep the model.
        for (_, t) in own {
            model.release(t);
        }
        let result = LayerResult {
            layer: li,
            codes,
            replaced,
            stats,
        };
        if sink(result)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// Options of `quantize awq`.
pub struct AwqOptions {
    /// [`Format::Awq`] (GEMM) or [`Format::CompressedTensors`].
    pub output: Output,
    pub algorithm: AwqConfig,
}

impl AwqOptions {
    /// Defaults for `out`: AutoAWQ GEMM, 4-bit group 128 with zero points,
    /// 20 grid points with duo scaling, clip search, [`Output::new`]'s
    /// defaults.
    pub fn new(out: PathBuf) -> AwqOptions {
        AwqOptions {
            output: Output::new(out, Format::Awq),
            algorithm: AwqConfig::default(),
        }
    }
}

/// What a quantization did (or, with a dry run, would do).
#[derive(Debug, serde::Serialize)]
pub struct AwqReport {
    #[serde(flatten)]
    pub written: Written,
    pub bits: u8,
    pub group_size: usize,
    pub zero_point: bool,
    pub n_grid: usize,
    pub duo_scaling: bool,
    pub clip: bool,
    /// Per layer (empty on a dry run).
    pub layer_stats: Vec<LayerStats>,
}

/// `quantization_config`: AutoAWQ's `to_transformers_dict` for GEMM,
/// llm-compressor's for compressed-tensors.
fn quantization_config(format: Format, cfg: &AwqConfig, kept: &[String]) -> serde_json::Value {
    match format {
        Format::Awq => serde_json::json!({
            "quant_method": "awq",
            "zero_point": cfg.zero_point,
            "group_size": cfg.group_size,
            "bits": cfg.bits,
            "version": "gemm",
            "modules_to_not_convert": if kept.is_empty() { serde_json::Value::Null } else { serde_json::json!(kept) },
        }),
        _ => int_checkpoint::compressed_tensors_config(scheme(cfg), false, kept),
    }
}

fn scheme(cfg: &AwqConfig) -> Scheme {
    Scheme {
        bits: cfg.bits,
        group_size: Some(cfg.group_size),
        sym: !cfg.zero_point,
    }
}

fn estimate(
    c: &crate::model::engine::Config,
    layer_params: u64,
    tokens: u64,
    n_grid: usize,
) -> Estimate {
    let (d, qd, ffn) = (c.hidden as u64, (c.heads * c.head_dim) as u64, c.ffn as u64);
    let hidden_state_bytes = 2 * tokens * d * 4;
    let layer_bytes = (tokens * (qd + 2 * d) + qd * qd + ffn * ffn + layer_params) * 4;
    let attn = 2.0 * (d * (qd + 2 * (c.kv_heads * c.head_dim) as u64) + qd * d) as f64;
    let mlp = 2.0 * 3.0 * (d * ffn) as f64;
    let per_token = 2.0 * layer_params as f64 + n_grid as f64 * (attn + mlp);
    let grams = (qd * qd + ffn * ffn) as f64;
    Estimate {
        hidden_state_bytes,
        layer_bytes,
        peak_bytes: hidden_state_bytes + layer_bytes + layer_params * 4,
        flops: c.layers as f64
            * (tokens as f64 * (per_token + grams)
                + n_grid as f64 * 2.0 * (d * qd * qd + d * ffn * ffn) as f64),
    }
}

/// Quantizes `model` with AWQ into a checkpoint at `opts.out`, or only
/// plans it when `dry_run`.
pub fn quantize(model: &Model, opts: &AwqOptions, dry_run: bool) -> Result<AwqReport, Error> {
    let o = &opts.output;
    let config = int_checkpoint::check_input(model, "quantize awq")?;
    let engine = Engine::new(model)?;
    let cfg = &opts.algorithm;
    if cfg.bits != 4 {
        return Err(Error::Refused(format!(
            "--bits {}: AWQ checkpoints here are 4-bit (the GEMM layout stores nothing else)",
            cfg.bits
        )));
    }
    if opts.output.format == Format::Gptq {
        return Err(Error::Refused(
            "quantize awq writes --format awq or compressed-tensors; GPTQ checkpoints come from `quantize gptq`".into(),
        ));
    }
    if cfg.n_grid < 2 {
        return Err(Error::Refused(format!(
            "--n-grid {}: the search needs at least 2 points",
            cfg.n_grid
        )));
    }
    if opts.output.format == Format::Awq && !cfg.zero_point {
        return Err(Error::Refused(
            "--no-zero-point with --format awq: the AWQ GEMM kernels of vLLM and transformers read zero points; write symmetric codes with --format compressed-tensors".into(),
        ));
    }
    let layers = engine.config.layers;
    let parts = int_checkpoint::projections(model, layers);
    let scheme = scheme(cfg);
    let (keep, mut warnings) = int_checkpoint::unpackable(
        model,
        &parts,
        opts.output.format,
        scheme,
        opts.output.allow_unquantized,
    )?;
    if ![32, 64, 128].contains(&cfg.group_size) {
        warnings.push("vLLM's awq_marlin kernel takes group sizes 32, 64 and 128 only; this group size falls back to the slower awq kernel".into());
    }
    let slow: Vec<String> = parts
        .iter()
        .flatten()
        .filter(|(_, t)| t.rows() % 64 != 0 || t.row_len() % 128 != 0)
        .map(|(_, t)| {
            format!(
                "{} [{}, {}]",
                int_checkpoint::module_of(t),
                t.rows(),
                t.row_len()
            )
        })
        .collect();
    if !slow.is_empty() {
        warnings.push(format!(
            "vLLM's Marlin kernels need outputs that are multiples of 64 and inputs of 128; {} projections fall back to the slower kernel (e.g. {})",
            slow.len(),
            slow[0]
        ));
    }

    let calib = calibration::load(model, engine.config.vocab, &o.calibration)?;
    let plan = Plan::new(model, &parts, &keep, o.format, scheme);
    let qconfig = quantization_config(o.format, cfg, &plan.kept);
    let est = estimate(
        &engine.config,
        plan.layer_params,
        (calib.samples * calib.seqlen) as u64,
        cfg.n_grid,
    );
    let written = Written::plan(model, o, &plan, calib, qconfig.clone(), est, None, warnings)?;
    let mut report = AwqReport {
        written,
        bits: cfg.bits,
        group_size: cfg.group_size,
        zero_point: cfg.zero_point,
        n_grid: cfg.n_grid,
        duo_scaling: cfg.duo_scaling,
        clip: cfg.clip,
        layer_stats: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }

    let (tmp, mut w) = report.written.start(model, o, &plan)?;
    let bar = crate::progress::count_bar(o.progress, layers as u64, "AWQ", "layers");
    let keep_fn = |li: usize, part: LayerPart| keep.contains(&(li, part));
    let on_layer = |li: usize| bar.set_message(format!("layer {li}"));
    let pipeline = Pipeline {
        config: cfg,
        batch_tokens: o.batch_tokens,
        keep: &keep_fn,
        on_layer: &on_layer,
    };
    let mut stats = Vec::new();
    let mut buf = Vec::new();
    calibrate(
        model,
        &engine,
        &report.written.calibration.windows,
        &pipeline,
        &mut |r| {
            for t in &plan.per_layer[r.layer] {
                if let Some((_, codes)) = r.codes.iter().find(|(q, _)| std::ptr::eq(*q, *t)) {
                    let iw = codes.int_weights(cfg.bits, t.rows() as usize, t.row_len() as usize);
                    int_checkpoint::write_packed(
                        &mut w,
                        model,
                        t,
                        &iw,
                        o.format,
                        scheme.sym,
                        plan.scale_dtype,
                    )?;
                } else if let Some((_, v)) = r.replaced.iter().find(|(q, _)| std::ptr::eq(*q, *t)) {
                    t.dtype.encode_f32s(v, &mut buf);
                    w.write_tensor(&t.name, &buf)?;
                } else {
                    w.copy_tensor(model, t)?;
                }
            }
            stats.push(r.stats);
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
        None,
        o,
        &mut report.written,
        &|w| model_card(opts, w),
    )?;
    report.written.files = tmp.commit()?;
    Ok(report)
}

fn model_card(opts: &AwqOptions, w: &Written) -> String {
    let cfg = &opts.algorithm;
    let settings = format!(
        "4-bit, group size {}, {}, {} grid points{}, clip search {}",
        cfg.group_size,
        if cfg.zero_point {
            "zero point"
        } else {
            "symmetric"
        },
        cfg.n_grid,
        if cfg.duo_scaling {
            " with duo scaling"
        } else {
            ""
        },
        if cfg.clip { "on" } else { "off" },
    );
    int_checkpoint::model_card(
        &opts.output,
        w,
        "AWQ",
        4,
        &settings,
        "the norms before q/k/v and gate/up carry the AWQ scales; embeddings and the output head are unchanged.",
    )
}
