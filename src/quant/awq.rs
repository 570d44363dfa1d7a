//! The numerics of AWQ (Lin et al., arXiv:2306.00978) for one scaling
//! group of linears: the candidate per-channel scales of the grid search,
//! the fake quantization they are judged with, the loss of a linear from
//! the Gram matrix of its inputs, and the weight-clipping search.
//!
//! Which linears form a group, which module's output a loss compares and
//! where the chosen scales are folded belong to the caller
//! (`ops::quantize::awq`). The formulas follow llm-compressor 0.14.0.1's
//! `AWQModifier` (`llmcompressor/modifiers/transform/awq/base.py`:
//! `_compute_best_scale`, `_compute_layer_means`,
//! `_get_grid_search_params`), which carries AutoAWQ's algorithm on
//! (`awq/quantize/quantizer.py` `_search_best_scale`); the clip search is
//! AutoAWQ's `_compute_best_clip` (llm-compressor has none).
//!
//! * x̄ = mean |x| per input channel over the calibration tokens; w̄ = the
//!   mean over every row of the group's linears of |W| divided by its
//!   quantization group's max |W| (+ 1e-6).
//! * Grid ([`grid`]): with duo scaling, llm-compressor tries ratio 0
//!   without duo scaling (the identity) and then ratio i/(n−2) for
//!   i = 0..n−1 with it; AutoAWQ tries i/n for i = 0..n, all with duo
//!   scaling. Ours is llm-compressor's (it includes the identity and
//!   ratio 1, and is what the fidelity goldens check).
//! * Scales ([`scales`]): s = clamp(x̄^r / (w̄^(1−r) + 1e-4), 1e-4) with duo
//!   scaling, clamp(x̄^r, 1e-4) without; then s / √(max s · min s), and
//!   NaN or Inf replaced by 1.
//! * A candidate is judged by the output error of the linears' parent with
//!   weights Q(W·s)/s ([`scaled_fake_quantize`]; Q is the min-max group
//!   quantization of [`crate::quant::minmax`], as the
//!   `QuantizationModifier`'s observer computes it).
//! * Clip ([`search_clip`]): per output row and group, the max |w| kept is
//!   chosen among max·(1 − i/20), i = 0..10 (`max_shrink` 0.5, `n_grid`
//!   20), by the error of that group's partial products on at most
//!   [`CLIP_TOKENS`] evenly sampled inputs, with AutoAWQ's
//!   `pseudo_quantize_tensor` (its min/max do not include 0).

use rayon::prelude::*;

use crate::quant::{minmax, round_ties_even};

/// Grid points of the scale search (AutoAWQ's and llm-compressor's `n_grid`).
pub const DEFAULT_N_GRID: usize = 20;
/// Tokens the clip search samples (AutoAWQ's `n_sample_token`).
pub const CLIP_TOKENS: usize = 512;
/// Shrink steps of the clip search: `max_shrink` 0.5 × its `n_grid` 20.
const CLIP_STEPS: usize = 10;
const CLIP_GRID: f32 = 20.0;

/// How to quantize. `Default` is AutoAWQ's: 4-bit, group 128, zero point,
/// 20 grid points with duo scaling, clip search on.
#[derive(Debug, Clone, PartialEq)]
pub struct AwqConfig {
    /// Bits per code (4: AWQ GEMM stores nothing else).
    pub bits: u8,
    /// Input columns per scale group.
    pub group_size: usize,
    /// Asymmetric codes with a zero point per group (AutoAWQ's `zero_point`).
    pub zero_point: bool,
    /// Scale-search grid points.
    pub n_grid: usize,
    /// Scales from activations and weights (`duo_scaling`), not
    /// activations alone.
    pub duo_scaling: bool,
    /// Search a clipping range per group after scaling (`apply_clip`).
    pub clip: bool,
}

impl Default for AwqConfig {
    fn default() -> Self {
        AwqConfig {
            bits: 4,
            group_size: 128,
            zero_point: true,
            n_grid: DEFAULT_N_GRID,
            duo_scaling: true,
            clip: true,
        }
    }
}

/// One candidate of the scale search.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GridPoint {
    /// Exponent of the activation means.
    pub ratio: f32,
    /// Whether the weight means divide the scales.
    pub duo: bool,
}

/// The candidates in the order they are tried (llm-compressor's
/// `_get_grid_search_params`); `n_grid` ≥ 2.
pub fn grid(n_grid: usize, duo_scaling: bool) -> Vec<GridPoint> {
    let p = |i: usize, d: usize, duo| GridPoint {
        ratio: (i as f64 / d as f64) as f32,
        duo,
    };
    if duo_scaling {
        std::iter::once(p(0, 1, false))
            .chain((0..n_grid - 1).map(|i| p(i, (n_grid - 2).max(1), true)))
            .collect()
    } else {
        (0..n_grid).map(|i| p(i, n_grid - 1, false)).collect()
    }
}

/// w̄: per input column, the mean over every row of `weights` (each
/// `rows × cols`) of |w| / (its group's max |w| + 1e-6).
pub fn weight_means(weights: &[&[f32]], cols: usize, group: usize) -> Vec<f32> {
    let mut sum = vec![0f64; cols];
    let mut rows = 0usize;
    for w in weights {
        let part = w
            .par_chunks(cols)
            .fold(
                || vec![0f64; cols],
                |mut acc, row| {
                    for (g, chunk) in row.chunks(group).enumerate() {
                        let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs())) + 1e-6;
                        for (j, v) in chunk.iter().enumerate() {
                            acc[g * group + j] += f64::from(v.abs() / max);
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f64; cols],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        rows += w.len() / cols;
    }
    sum.into_iter().map(|s| (s / rows as f64) as f32).collect()
}

/// The per-channel scales of grid point `p`.
pub fn scales(x_mean: &[f32], w_mean: &[f32], p: GridPoint) -> Vec<f32> {
    let mut s: Vec<f32> = x_mean
        .iter()
        .zip(w_mean)
        .map(|(&x, &w)| {
            if p.duo {
                (x.powf(p.ratio) / (w.powf(1.0 - p.ratio) + 1e-4)).max(1e-4)
            } else {
                x.powf(p.ratio).max(1e-4)
            }
        })
        .collect();
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = s.iter().copied().fold(f32::INFINITY, f32::min);
    let norm = (max * min).sqrt();
    for v in &mut s {
        *v /= norm;
        if !v.is_finite() {
            *v = 1.0;
        }
    }
    s
}

/// Q(W·s)/s for `w` (`rows × cols`): the weight as the search judges it.
pub fn scaled_fake_quantize(w: &[f32], cols: usize, s: &[f32], cfg: &AwqConfig) -> Vec<f32> {
    let mut q: Vec<f32> = w
        .par_chunks(cols)
        .flat_map_iter(|row| row.iter().zip(s).map(|(a, b)| a * b))
        .collect();
    minmax::fake_quantize(&mut q, cols, cfg.group_size, cfg.bits, !cfg.zero_point);
    q.par_chunks_mut(cols)
        .for_each(|row| row.iter_mut().zip(s).for_each(|(a, b)| *a /= b));
    q
}

/// Mean squared output error of a linear whose weight is off by `dw`
/// (`rows × cols`), over inputs whose second moment is `h` (`cols × cols`,
/// (2/T)·Σ xxᵀ as [`crate::quant::gptq::Hessian`] accumulates it with one
/// sample per token): Σ_r dw_r·h·dw_rᵀ / (2·rows).
pub fn linear_loss(dw: &[f32], rows: usize, cols: usize, h: &[f32]) -> f64 {
    const BAND: usize = 64;
    let total: f64 = dw
        .par_chunks(BAND * cols)
        .map(|band| {
            let m = band.len() / cols;
            let mut prod = vec![0f32; m * cols];
            // SAFETY: A is the band (m × cols), B is h (cols × cols), C is
            // prod (m × cols), all row-major and in bounds; C aliases
            // neither.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    cols,
                    cols,
                    1.0,
                    band.as_ptr(),
                    cols as isize,
                    1,
                    h.as_ptr(),
                    cols as isize,
                    1,
                    0.0,
                    prod.as_mut_ptr(),
                    cols as isize,
                    1,
                );
            }
            band.iter()
                .zip(&prod)
                .map(|(a, b)| f64::from(a * b))
                .sum::<f64>()
        })
        .sum();
    total / (2.0 * rows as f64)
}

/// AutoAWQ's `pseudo_quantize_tensor` of one group, in place.
fn autoawq_fake_quantize(g: &mut [f32], bits: u8, zero_point: bool) {
    if zero_point {
        let max_int = ((1u32 << bits) - 1) as f32;
        let mx = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mn = g.iter().copied().fold(f32::INFINITY, f32::min);
        let s = (mx - mn).max(1e-5) / max_int;
        let z = (-round_ties_even(mn / s)).clamp(0.0, max_int);
        for x in g.iter_mut() {
            *x = ((round_ties_even(*x / s) + z).clamp(0.0, max_int) - z) * s;
        }
    } else {
        let max_int = ((1u32 << (bits - 1)) - 1) as f32;
        let min_int = -((1u32 << (bits - 1)) as f32);
        let mx = g.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
        let s = mx / max_int;
        for x in g.iter_mut() {
            *x = round_ties_even(*x / s).clamp(min_int, max_int) * s;
        }
    }
}

/// The token rows the clip search uses from `tokens` inputs: every
/// `tokens / 512`-th from the first (AutoAWQ's `0::n // n_sample_token`).
pub fn clip_sample(tokens: usize) -> impl Iterator<Item = usize> {
    (0..tokens).step_by((tokens / CLIP_TOKENS).max(1))
}

/// The clipping bound of every (row, group) of `w` (`rows × cols`), given
/// sampled inputs `x` (`tokens × cols`): `rows × groups` row-major.
pub fn search_clip(w: &[f32], rows: usize, cols: usize, x: &[f32], cfg: &AwqConfig) -> Vec<f32> {
    let gs = cfg.group_size;
    let groups = cols / gs;
    let t = x.len() / cols;
    let per_group: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let xg: Vec<f32> = x
                .chunks_exact(cols)
                .flat_map(|r| r[g * gs..(g + 1) * gs].iter().copied())
                .collect();
            let wg: Vec<f32> = w
                .chunks_exact(cols)
                .flat_map(|r| r[g * gs..(g + 1) * gs].iter().copied())
                .collect();
            let org_max: Vec<f32> = wg
                .chunks_exact(gs)
                .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())))
                .collect();
            // Partial products of the group: X_g · W_gᵀ (t × rows).
            let product = |wq: &[f32]| {
                let mut out = vec![0f32; t * rows];
                // SAFETY: A is xg (t × gs), B is wqᵀ (gs × rows, read with
                // strides 1 and gs from wq's rows × gs), C is out
                // (t × rows); all in bounds, C aliases neither.
                unsafe {
                    matrixmultiply::sgemm(
                        t,
                        gs,
                        rows,
                        1.0,
                        xg.as_ptr(),
                        gs as isize,
                        1,
                        wq.as_ptr(),
                        1,
                        gs as isize,
                        0.0,
                        out.as_mut_ptr(),
                        rows as isize,
                        1,
                    );
                }
                out
            };
            let org = product(&wg);
            let mut best = org_max.clone();
            let mut min_err = vec![1e9f32; rows];
            let mut cur = wg.clone();
            for i in 0..CLIP_STEPS {
                let shrink = 1.0 - i as f32 / CLIP_GRID;
                for ((dst, src), &m) in cur
                    .chunks_exact_mut(gs)
                    .zip(wg.chunks_exact(gs))
                    .zip(&org_max)
                {
                    let mv = m * shrink;
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s.clamp(-mv, mv);
                    }
                    autoawq_fake_quantize(dst, cfg.bits, cfg.zero_point);
                }
                let out = product(&cur);
                let mut err = vec![0f32; rows];
                for (o, r) in out.chunks_exact(rows).zip(org.chunks_exact(rows)) {
                    for ((e, a), b) in err.iter_mut().zip(o).zip(r) {
                        *e += (a - b) * (a - b);
                    }
                }
                for r in 0..rows {
                    let e = err[r] / t as f32;
                    if e < min_err[r] {
                        min_err[r] = e;
                        best[r] = org_max[r] * shrink;
                    }
                }
            }
            best
        })
        .collect();
    (0..rows * groups)
        .map(|k| per_group[k % groups][k / groups])
        .collect()
}

/// Clamps every (row, group) of `w` to ±its bound from [`search_clip`].
pub fn apply_clip(w: &mut [f32], cols: usize, group: usize, bounds: &[f32]) {
    let groups = cols / group;
    w.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        for (g, chunk) in row.chunks_mut(group).enumerate() {
            let m = bounds[r * groups + g];
            chunk.iter_mut().for_each(|v| *v = v.clamp(-m, m));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::gptq::Hessian;

    #[test]
    fn grids_are_the_references() {
        let g = grid(20, true);
        assert_eq!(g.len(), 20);
        assert_eq!(
            g[0],
            GridPoint {
                ratio: 0.0,
                duo: false
            }
        );
        assert_eq!(
            g[1],
            GridPoint {
                ratio: 0.0,
                duo: true
            }
        );
        assert_eq!(
            g[19],
            GridPoint {
                ratio: 1.0,
                duo: true
            }
        );
        assert!((g[10].ratio - 9.0 / 18.0).abs() < 1e-7);
        let g = grid(20, false);
        assert_eq!(g[19].ratio, 1.0);
        assert!(g.iter().all(|p| !p.duo));
    }

    #[test]
    fn identity_point_gives_unit_scales() {
        let s = scales(&[0.5, 2.0, 0.0], &[0.3, 0.1, 0.2], grid(20, true)[0]);
        assert_eq!(s, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn scales_are_normalized_around_one() {
        let s = scales(
            &[0.5, 2.0, 8.0],
            &[0.5, 0.5, 0.5],
            GridPoint {
                ratio: 0.5,
                duo: false,
            },
        );
        let (mx, mn) = (s[2], s[0]);
        assert!((mx * mn - 1.0).abs() < 1e-5, "{s:?}");
        assert!(s[0] < s[1] && s[1] < s[2]);
    }

    #[test]
    fn weight_means_normalize_by_group_max() {
        // One row, two groups of 2: |w|/max per group.
        let w = [1.0f32, -2.0, 4.0, 1.0];
        let m = weight_means(&[&w], 4, 2);
        let want = [0.5 / (1.0 + 1e-6 / 2.0), 1.0, 1.0, 0.25];
        for (a, b) in m.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{m:?}");
        }
    }

    #[test]
    fn gram_loss_equals_direct_mean_squared_error() {
        let (rows, cols, t) = (5, 8, 40);
        let dw: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 9.0)
            .collect();
        let x: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let mut h = Hessian::new(cols);
        h.add(&x, t).unwrap();
        let got = linear_loss(&dw, rows, cols, &h.finish().unwrap());
        let mut want = 0f64;
        for tok in x.chunks(cols) {
            for r in dw.chunks(cols) {
                let y: f32 = r.iter().zip(tok).map(|(a, b)| a * b).sum();
                want += f64::from(y * y);
            }
        }
        want /= (t * rows) as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
    }

    #[test]
    fn clip_never_loses_to_no_clip_and_shrinks_outlier_groups() {
        let (rows, cols, t) = (4, 16, 64);
        let cfg = AwqConfig {
            group_size: 8,
            ..AwqConfig::default()
        };
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 10.0)
            .collect();
        w[3] = 9.0; // one outlier in row 0, group 0
        let x: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 29 % 31) as f32 - 15.0) / 15.0)
            .collect();
        let bounds = search_clip(&w, rows, cols, &x, &cfg);
        assert_eq!(bounds.len(), rows * 2);
        for (k, b) in bounds.iter().enumerate() {
            let (r, g) = (k / 2, k % 2);
            let max = w[r * cols + g * 8..r * cols + g * 8 + 8]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                *b <= max && *b >= 0.5 * max - 1e-6,
                "bound {b} of max {max}"
            );
        }
        let mut clipped = w.clone();
        apply_clip(&mut clipped, cols, 8, &bounds);
        assert!(clipped.iter().zip(&w).all(|(c, o)| c.abs() <= o.abs()));
    }

    #[test]
    fn scaled_fake_quantize_with_unit_scales_is_round_to_nearest() {
        let w: Vec<f32> = (0..32).map(|i| ((i * 3 % 7) as f32 - 3.0) / 4.0).collect();
        let cfg = AwqConfig {
            group_size: 16,
            ..AwqConfig::default()
        };
        let got = scaled_fake_quantize(&w, 16, &[1.0; 16], &cfg);
        let mut want = w.clone();
        minmax::fake_quantize(&mut want, 16, 16, 4, false);
        assert_eq!(got, want);
    }
}
