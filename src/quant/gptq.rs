//! The GPTQ algorithm (Frantar et al., arXiv:2210.17323) for one linear
//! layer: integer codes, scales and zero points from a weight matrix and the
//! Hessian of its inputs.
//!
//! This module owns the numerics only: [`Hessian`] accumulates
//! H = (2/N)·Σ xxᵀ over calibration batches, and [`quantize`] runs GPTQ on a
//! weight matrix given H. Which layers, which inputs and how the results are
//! packed belong to the callers.
//!
//! It agrees with llm-compressor 0.14.0.1's `quantize_weight`
//! (`llmcompressor/modifiers/gptq/gptq_quantize.py`, eager block update, with
//! `helpers.py`'s `accumulate_hessian`, `apply_activation_ordering` and
//! `factorize_hessian`) and compressed-tensors 0.19.0's `calculate_qparams`
//! and `fake_quantize`; the unit tests check codes, scales, zero points and
//! g_idx against goldens that those functions wrote
//! (`tests/oracle/gptq_goldens.py`, `fixtures/gptq/`). In that reference:
//!
//! * Scales and zero points come from each group's min/max of the
//!   *original* weights (the min-max observer), before any GPTQ update, as
//!   GPTQModel's `static_groups=True` does (its min/max formulas differ from
//!   compressed-tensors' only in corner cases: all-zero groups, symmetric
//!   groups without a negative weight). With `static_groups` off
//!   (GPTQModel's default, `gptqmodel/quantization/gptq.py` 7.6.0), a
//!   group's scale comes instead from the weights as GPTQ has updated them
//!   when it reaches the lazy block holding the group: earlier blocks'
//!   updates are in, the updates from the columns of the group's own block
//!   are not (GPTQModel reads `W`, not the block's working copy `W1`).
//! * Symmetric: scale = max(|min|, |max|) / ((qmax − qmin)/2), zero 0; codes
//!   are the signed range [−2^(b−1), 2^(b−1) − 1]. Asymmetric: scale =
//!   (max − min)/(qmax − qmin), zero = round(clamp(qmin − min/scale)).
//!   Here codes and zeros are stored unsigned (signed + 2^(b−1)), as GPTQ
//!   checkpoints store them, so a symmetric zero is 2^(b−1).
//! * Act-order is llm-compressor's `actorder="weight"`: columns processed by
//!   descending H diagonal, each keeping its own group's scale, so g_idx is
//!   column / group size (what vLLM's Marlin kernel wants).
//! * Group-aware act-order (GPTQModel's `act_group_aware`, its default
//!   since 5.0; `gptqmodel/quantization/gar.py`, Gafni et al., CVPRW 2025):
//!   inside each group the columns go by descending H diagonal, and the
//!   groups by their largest diagonal (a stable sort). Each group's columns
//!   stay together, so its scale is still taken when GPTQ reaches it and
//!   g_idx stays column / group size: most of act-order's gain with no
//!   reordering at inference.
//! * Dead columns (H[i,i] = 0) get H[i,i] = 1 and zero weights; damp is
//!   `damp` × mean(diag H) (default 0.01, llm-compressor's
//!   `dampening_frac`). Where Cholesky fails, llm-compressor falls back to
//!   round-to-nearest; we follow GPTQModel instead and retry with damp
//!   raised by `damp_increment` (GPTQModel's default 0.01) while it stays
//!   below 1, reporting how many raises it took.
//!
//! Float32 throughout where the reference uses float32 element-wise (the
//! fake quantization, the in-block updates: same operations, same order);
//! the lazy update after each block (the reference's matmul) is an f32
//! SGEMM whose summation order is matrixmultiply's, not BLAS's; the
//! Cholesky factorization and inverse accumulate in f64, since LAPACK's
//! float32 summation order cannot be reproduced anyway and the more exact
//! factor keeps codes within the acceptance (≥ 99.9 % equal).
//!
//! Every row of W evolves independently given H⁻¹ (the scales are fixed
//! up front), so rows run in parallel inside a block and the lazy update
//! after it is one SGEMM per band of rows. [`Hessian::add`] is XᵀX as
//! parallel SGEMMs (upper triangle), and the factorization
//! ([`Prepared`], computed once for the projections that share an input)
//! is a blocked Cholesky and triangular inverse over DGEMM, so all three
//! costs (tokens·cols²/2, rows·cols²/2 and 2·cols³/3) run in GEMM kernels.

use rayon::prelude::*;

use crate::quant::minmax::{code, code_range, qparams, value};

/// Why [`quantize`] or [`Hessian`] refused its input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GptqError {
    /// A buffer's length does not match the shape given with it.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Length the shape implies.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The group size does not divide the input width.
    #[error(
        "group size {group} does not divide the {cols} input columns; use a group size that divides it, or -1 (one group per row)"
    )]
    GroupSize {
        /// Requested group size.
        group: usize,
        /// Input columns of the weight.
        cols: usize,
    },
    /// Only 4- and 8-bit codes are supported.
    #[error("{0}-bit GPTQ is not supported (use 4 or 8)")]
    Bits(u8),
    /// The lazy-update block width is zero.
    #[error("GPTQ block size must be positive")]
    Block,
    /// NaN or infinity in the weights, the inputs or the Hessian.
    #[error("{what} contains NaN or infinity")]
    NonFinite {
        /// Which buffer.
        what: &'static str,
    },
    /// No accumulated inputs.
    #[error("the Hessian has no samples; calibration produced no inputs for this layer")]
    NoSamples,
    /// H + damp·I is not positive definite for any damp tried.
    #[error(
        "the Hessian is not positive definite even with damp {damp} (after {increases} increases); raise the damp or use more calibration samples"
    )]
    NotPositiveDefinite {
        /// The last damp fraction tried.
        damp: f32,
        /// How many times it was raised.
        increases: u32,
    },
}

/// How to quantize. `Default` is GPTQModel's: 4-bit, group 128, symmetric,
/// no act-order, damp 0.01 raised by 0.01 on failure, lazy blocks of 128
/// columns, group scales from the updated weights.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqConfig {
    /// Bits per code: 4 or 8.
    pub bits: u8,
    /// Columns per group; `None` is one group per row (GPTQ's `-1`).
    pub group_size: Option<usize>,
    /// Symmetric (zero point fixed at the middle of the range).
    pub sym: bool,
    /// Process columns by descending H diagonal (`desc_act`).
    pub act_order: bool,
    /// Group-aware act-order (GPTQModel's `act_group_aware`): columns by
    /// descending H diagonal inside each group, groups by their largest.
    /// Ignored under `act_order` and with one group per row.
    pub group_aware: bool,
    /// Damp fraction of mean(diag H) added to the diagonal.
    pub damp: f32,
    /// Added to `damp` each time Cholesky fails (0: fail at once).
    pub damp_increment: f32,
    /// Columns per lazy block update.
    pub block: usize,
    /// Scales from each group's original weights (llm-compressor's
    /// observer, GPTQModel's `static_groups=True`) rather than from the
    /// weights as GPTQ has updated them when it reaches the group
    /// (GPTQModel's default). Act-order always uses static groups.
    pub static_groups: bool,
}

impl Default for GptqConfig {
    fn default() -> Self {
        GptqConfig {
            bits: 4,
            group_size: Some(128),
            sym: true,
            act_order: false,
            group_aware: true,
            damp: 0.01,
            damp_increment: 0.01,
            block: 128,
            static_groups: false,
        }
    }
}

/// What [`quantize`] produced for a weight of `rows` × `cols`.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqOutput {
    /// Unsigned codes, `rows` × `cols` row-major, each below 2^bits.
    pub codes: Vec<u8>,
    /// Scales, `groups` × `rows` row-major (GPTQ's `scales` layout).
    pub scales: Vec<f32>,
    /// Unsigned zero points, `groups` × `rows`: w ≈ (code − zero) · scale.
    pub zeros: Vec<u8>,
    /// Group of every input column.
    pub g_idx: Vec<u32>,
    /// The reference's loss: Σ over weights of ((w − q)/Hinv[i,i])² / 2.
    pub loss: f64,
    /// The damp fraction that factorized.
    pub damp: f32,
    /// How many times damp was raised before Cholesky succeeded.
    pub damp_increases: u32,
    /// Columns whose H diagonal was zero (weights quantized as zero).
    pub dead_columns: usize,
}

impl GptqOutput {
    /// The weights the codes stand for, `rows` × `cols` row-major:
    /// (code − zero) · scale in f32, the reference's fake quantization.
    pub fn dequantize(&self) -> Vec<f32> {
        let cols = self.g_idx.len();
        let rows = self.codes.len().checked_div(cols).unwrap_or(0);
        let mut w = vec![0f32; rows * cols];
        w.par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                let codes = &self.codes[r * cols..(r + 1) * cols];
                for ((v, &q), &g) in row.iter_mut().zip(codes).zip(&self.g_idx) {
                    let i = g as usize * rows + r;
                    *v = (f32::from(q) - f32::from(self.zeros[i])) * self.scales[i];
                }
            });
        w
    }
}

/// Accumulates H = (2/N)·Σ xxᵀ over calibration inputs, N counting samples
/// (sequences) as llm-compressor's `accumulate_hessian` does; the scale of H
/// does not change GPTQ's result, only its loss.
#[derive(Debug, Clone)]
pub struct Hessian {
    cols: usize,
    sum: Vec<f32>,
    samples: usize,
}

impl Hessian {
    /// An empty accumulator for inputs of `cols` features.
    pub fn new(cols: usize) -> Self {
        Hessian {
            cols,
            sum: vec![0.0; cols * cols],
            samples: 0,
        }
    }

    /// Adds the inputs of `samples` sequences: `x` is tokens × cols,
    /// row-major.
    pub fn add(&mut self, x: &[f32], samples: usize) -> Result<(), GptqError> {
        let n = self.cols;
        if n == 0 || x.len() % n != 0 {
            return Err(GptqError::Shape {
                what: "Hessian input",
                expected: x.len().next_multiple_of(n.max(1)),
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(GptqError::NonFinite {
                what: "layer input",
            });
        }
        let tokens = x.len() / n;
        // The upper triangle by blocks of rows, each a parallel f32 SGEMM
        // (as the reference's `inp.t() @ inp`): sum[r0..r1, r0..] += 2·Xᵀ·X
        // over those columns; mirrored below.
        // Blocks of 128 rows: each block repacks X's columns it reads, so
        // fewer, larger blocks; later blocks have less work.
        const ROWS: usize = 128;
        let sum = SendPtr(self.sum.as_mut_ptr());
        (0..n.div_ceil(ROWS)).into_par_iter().for_each(|b| {
            let r0 = b * ROWS;
            let m = ROWS.min(n - r0);
            let sum = &sum;
            // SAFETY: A is Xᵀ rows r0..r0+m (m × tokens, strides 1 and n),
            // B is X's columns r0.. (tokens × (n − r0), strides n and 1), C is
            // sum's rows r0..r0+m from column r0 (strides n and 1); every
            // index is in bounds and each task writes only its own rows.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    tokens,
                    n - r0,
                    2.0,
                    x.as_ptr().add(r0),
                    1,
                    n as isize,
                    x.as_ptr().add(r0),
                    n as isize,
                    1,
                    1.0,
                    sum.0.add(r0 * n + r0),
                    n as isize,
                    1,
                );
            }
        });
        for i in 0..n {
            for j in 0..i {
                self.sum[i * n + j] = self.sum[j * n + i];
            }
        }
        self.samples += samples;
        Ok(())
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// H = sum / samples, cols × cols row-major.
    pub fn finish(self) -> Result<Vec<f32>, GptqError> {
        if self.samples == 0 {
            return Err(GptqError::NoSamples);
        }
        let n = self.samples as f32;
        Ok(self.sum.into_iter().map(|v| v / n).collect())
    }
}

/// A pointer the parallel SGEMM tasks share, each writing its own rows.
struct SendPtr(*mut f32);
// SAFETY: only used by `Hessian::add`, whose tasks write disjoint rows.
unsafe impl Sync for SendPtr {}

/// What GPTQ needs from a Hessian, computed once for every weight that
/// shares the input (q/k/v, gate/up): the processing order, the dead
/// columns and the inverse factor.
#[derive(Debug, Clone)]
pub struct Prepared {
    cols: usize,
    /// Processing order: `perm[i]` is the column processed `i`-th.
    perm: Vec<usize>,
    /// Dead columns, in processing order.
    dead: Vec<bool>,
    /// Upper Cholesky factor of the damped inverse, in processing order.
    hinv: Vec<f32>,
    damp: f32,
    damp_increases: u32,
    /// [`Prepared::round_to_nearest`]: the identity factor (`hinv` left
    /// empty), no updates.
    rtn: bool,
}

impl Prepared {
    /// The factor of an identity Hessian: every column's error stays its
    /// own, so [`quantize_prepared`] rounds each weight to the nearest code
    /// of its group's min-max scale — plain round-to-nearest (RTN), the
    /// baseline GPTQ is measured against, in the same layout.
    pub fn round_to_nearest(cols: usize) -> Prepared {
        Prepared {
            cols,
            perm: (0..cols).collect(),
            dead: vec![false; cols],
            hinv: Vec::new(),
            damp: 0.0,
            damp_increases: 0,
            rtn: true,
        }
    }

    /// Checks `h` (`cols` × `cols`) and factorizes it for `cfg`.
    pub fn new(h: &[f32], cols: usize, cfg: &GptqConfig) -> Result<Prepared, GptqError> {
        if h.len() != cols * cols {
            return Err(GptqError::Shape {
                what: "Hessian",
                expected: cols * cols,
                got: h.len(),
            });
        }
        if h.iter().any(|v| !v.is_finite()) {
            return Err(GptqError::NonFinite { what: "Hessian" });
        }
        // Processing order: descending diagonal under act-order (a stable
        // sort; only dead columns tie, and they do not interact).
        let mut perm: Vec<usize> = (0..cols).collect();
        let diag = |c: usize| h[c * cols + c];
        let by_diag = |a: &usize, b: &usize| diag(*b).total_cmp(&diag(*a));
        match cfg.group_size {
            _ if cfg.act_order => perm.sort_by(by_diag),
            Some(gs) if cfg.group_aware && gs < cols && cols % gs == 0 => {
                let mut groups: Vec<Vec<usize>> = perm
                    .chunks(gs)
                    .map(|g| {
                        let mut g = g.to_vec();
                        g.sort_by(by_diag);
                        g
                    })
                    .collect();
                groups.sort_by(|a, b| by_diag(&a[0], &b[0]));
                perm = groups.concat();
            }
            _ => {}
        }
        let mut hp: Vec<f32> = (0..cols * cols)
            .map(|k| h[perm[k / cols] * cols + perm[k % cols]])
            .collect();
        let dead: Vec<bool> = (0..cols).map(|i| hp[i * cols + i] == 0.0).collect();
        for i in (0..cols).filter(|&i| dead[i]) {
            hp[i * cols + i] = 1.0;
        }
        let (hinv, damp, damp_increases) = inverse_factor(&hp, cols, cfg)?;
        Ok(Prepared {
            cols,
            perm,
            dead,
            hinv,
            damp,
            damp_increases,
            rtn: false,
        })
    }
}

/// Quantizes `w` (`rows` × `cols`, row-major: out × in features) with the
/// Hessian `h` (`cols` × `cols`) of its inputs.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f32],
    cfg: &GptqConfig,
) -> Result<GptqOutput, GptqError> {
    check_config(cols, cfg)?;
    quantize_prepared(w, rows, &Prepared::new(h, cols, cfg)?, cfg)
}

fn check_config(cols: usize, cfg: &GptqConfig) -> Result<usize, GptqError> {
    if cfg.bits != 4 && cfg.bits != 8 {
        return Err(GptqError::Bits(cfg.bits));
    }
    if cfg.block == 0 {
        return Err(GptqError::Block);
    }
    let gs = cfg.group_size.unwrap_or(cols);
    if gs == 0 || cols % gs != 0 {
        return Err(GptqError::GroupSize { group: gs, cols });
    }
    Ok(gs)
}

/// [`quantize`] with the Hessian already prepared (by [`Prepared::new`]
/// with the same `cfg`).
pub fn quantize_prepared(
    w: &[f32],
    rows: usize,
    prep: &Prepared,
    cfg: &GptqConfig,
) -> Result<GptqOutput, GptqError> {
    let cols = prep.cols;
    let gs = check_config(cols, cfg)?;
    if w.len() != rows * cols {
        return Err(GptqError::Shape {
            what: "weight",
            expected: rows * cols,
            got: w.len(),
        });
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite { what: "weight" });
    }
    let groups = cols / gs;
    let (perm, dead, hinv) = (&prep.perm, &prep.dead, &prep.hinv);
    // A group must lie inside one lazy block to take its scale as GPTQModel
    // does (true of 32, 64 and 128 with blocks of 128, and of one group per
    // row).
    let dynamic = !cfg.static_groups && !cfg.act_order && (gs == cols || cfg.block % gs == 0);

    // Scales from the original weights, before dead columns are zeroed.
    let mut scale = vec![0f32; rows * groups];
    let mut zero = vec![0f32; rows * groups];
    scale
        .par_chunks_mut(groups)
        .zip(zero.par_chunks_mut(groups))
        .enumerate()
        .for_each(|(r, (sr, zr))| {
            for g in 0..groups {
                let (s, z) = qparams(
                    &w[r * cols + g * gs..r * cols + (g + 1) * gs],
                    cfg.bits,
                    cfg.sym,
                );
                sr[g] = s;
                zr[g] = z;
            }
        });

    let (qmin, qmax) = code_range(cfg.bits);
    let half = -qmin;
    let group_of: Vec<usize> = perm.iter().map(|&c| c / gs).collect();
    let mut codes = vec![0u8; rows * cols];
    // The weights in processing order, dead columns zeroed.
    let mut wp = vec![0f32; rows * cols];
    wp.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        for (p, (v, &c)) in row.iter_mut().zip(perm).enumerate() {
            *v = if dead[p] { 0.0 } else { w[r * cols + c] };
        }
    });
    let mut row_loss = vec![0f64; rows];
    let bw = cfg.block;
    let mut err = vec![0f32; rows * bw];
    for i1 in (0..cols).step_by(bw) {
        let i2 = (i1 + bw).min(cols);
        let n = i2 - i1;
        // Inside the block, column by column, every row in parallel.
        wp.par_chunks_mut(cols)
            .zip(err.par_chunks_mut(bw))
            .zip(codes.par_chunks_mut(cols))
            .zip(row_loss.par_iter_mut())
            .zip(
                scale
                    .par_chunks_mut(groups)
                    .zip(zero.par_chunks_mut(groups)),
            )
            .for_each(|((((wr, er), code_row), loss), (sr, zr))| {
                if dynamic {
                    // GPTQModel's default: each group starting in this
                    // block takes its scale from the weights as the block
                    // starts (every earlier block's lazy update is in, none
                    // of this block's own columns: GPTQModel reads W, not
                    // the block's working copy W1).
                    for i in (i1..i2).filter(|i| i % gs == 0) {
                        let (s, z) = qparams(&wr[i..i + gs], cfg.bits, cfg.sym);
                        sr[group_of[i]] = s;
                        zr[group_of[i]] = z;
                    }
                }
                let mut block_loss = 0f32;
                for i in i1..i2 {
                    let g = group_of[i];
                    let (s, z) = (sr[g], zr[g]);
                    let x = wr[i];
                    let qi = code(x, s, z, cfg.sym, (qmin, qmax));
                    let q = value(qi, s, z, cfg.sym);
                    code_row[perm[i]] = (qi + half) as u8;
                    let e = if prep.rtn {
                        x - q
                    } else {
                        (x - q) / hinv[i * cols + i]
                    };
                    er[i - i1] = e;
                    block_loss += e * e;
                    if prep.rtn {
                        continue;
                    }
                    let hrow = &hinv[i * cols + i..i * cols + i2];
                    for (wj, &hj) in wr[i..i2].iter_mut().zip(hrow) {
                        *wj -= e * hj;
                    }
                }
                *loss += f64::from(block_loss / 2.0);
            });
        // Lazy update of the columns after the block, all rows at once:
        // W[:, i2:] −= Err · Hinv[i1:i2, i2:] (the reference's matmul), as
        // one SGEMM per band of rows, bands in parallel.
        if i2 < cols && !prep.rtn {
            const BAND: usize = 32;
            wp.par_chunks_mut(BAND * cols)
                .zip(err.par_chunks(BAND * bw))
                .for_each(|(wb, eb)| {
                    let m = wb.len() / cols;
                    // SAFETY: A is the band's errors (m × n, row stride bw),
                    // B is hinv's rows i1..i2 from column i2 (n × (cols − i2),
                    // row stride cols), C is the band's columns i2..
                    // (m × (cols − i2), row stride cols); all in bounds, C
                    // does not alias A or B.
                    unsafe {
                        matrixmultiply::sgemm(
                            m,
                            n,
                            cols - i2,
                            -1.0,
                            eb.as_ptr(),
                            bw as isize,
                            1,
                            hinv.as_ptr().add(i1 * cols + i2),
                            cols as isize,
                            1,
                            1.0,
                            wb.as_mut_ptr().add(i2),
                            cols as isize,
                            1,
                        );
                    }
                });
        }
    }
    let loss = row_loss.iter().sum();

    let transpose = |m: &[f32]| -> Vec<f32> {
        (0..groups * rows)
            .map(|k| m[(k % rows) * groups + k / rows])
            .collect()
    };
    Ok(GptqOutput {
        codes,
        scales: transpose(&scale),
        zeros: transpose(&zero)
            .into_iter()
            .map(|z| (z + half) as u8)
            .collect(),
        g_idx: (0..cols).map(|c| (c / gs) as u32).collect(),
        loss,
        damp: prep.damp,
        damp_increases: prep.damp_increases,
        dead_columns: dead.iter().filter(|&&d| d).count(),
    })
}

/// The upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹ (UᵀU = the
/// inverse), as f32, with the damp fraction used and how often it was
/// raised: what torch's `cholesky(cholesky_inverse(cholesky(H)), upper=True)`
/// computes, by a shorter road. With J the reversal permutation and
/// JHJ = LLᵀ, R = JLJ is upper triangular with H = RRᵀ, so
/// H⁻¹ = R⁻ᵀR⁻¹ and U = R⁻¹ = J·L⁻¹·J (the factor is unique): one Cholesky
/// and one triangular inverse instead of two of each and a product.
fn inverse_factor(
    h: &[f32],
    n: usize,
    cfg: &GptqConfig,
) -> Result<(Vec<f32>, f32, u32), GptqError> {
    let mean = ((0..n).map(|i| f64::from(h[i * n + i])).sum::<f64>() / n as f64) as f32;
    let mut damp = cfg.damp;
    let mut increases = 0;
    let rev = |k: usize| (n - 1 - k / n) * n + (n - 1 - k % n);
    let lower = loop {
        let mut a: Vec<f64> = (0..n * n).map(|k| f64::from(h[rev(k)])).collect();
        // The damp is added in f32, as the reference does.
        for i in 0..n {
            a[i * n + i] = f64::from(h[rev(i * n + i)] + damp * mean);
        }
        if cholesky_in_place(&mut a, n) {
            break a;
        }
        // GPTQModel's additive grid: raise while progress stays below 1.
        let next = damp + cfg.damp_increment;
        if !(damp < next && next < 1.0) {
            return Err(GptqError::NotPositiveDefinite { damp, increases });
        }
        damp = next;
        increases += 1;
    };
    let inv = lower_inverse(&lower, n);
    // U[i][j] = L⁻¹[n−1−i][n−1−j].
    let upper = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if j >= i {
                inv[(n - 1 - i) * n + (n - 1 - j)] as f32
            } else {
                0.0
            }
        })
        .collect();
    Ok((upper, damp, increases))
}

/// Block width of the blocked Cholesky factorization and inverse.
const NB: usize = 64;

/// A pointer shared by parallel DGEMM tasks that write disjoint rows.
struct SendPtr64(*mut f64);
// SAFETY: only used where each task writes its own rows.
unsafe impl Sync for SendPtr64 {}

/// Lower Cholesky factor of the symmetric `a` in place (its lower triangle;
/// the upper is left as it was). False where `a` is not positive definite.
///
/// Right-looking and blocked as LAPACK's `potrf`: factor a diagonal block,
/// solve the panel below it, and subtract the panel's outer product from
/// the trailing lower triangle with DGEMMs (bands of rows in parallel), so
/// that nearly all of the n³/3 work runs in GEMM kernels.
fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for k0 in (0..n).step_by(NB) {
        let k1 = (k0 + NB).min(n);
        for j in k0..k1 {
            let d = a[j * n + j] - (k0..j).map(|p| a[j * n + p] * a[j * n + p]).sum::<f64>();
            if d <= 0.0 || !d.is_finite() {
                return false;
            }
            let d = d.sqrt();
            a[j * n + j] = d;
            for i in j + 1..k1 {
                let s: f64 = (k0..j).map(|p| a[i * n + p] * a[j * n + p]).sum();
                a[i * n + j] = (a[i * n + j] - s) / d;
            }
        }
        if k1 == n {
            break;
        }
        // The panel below the block: X · L_kkᵀ = A, row by row.
        let (top, bottom) = a.split_at_mut(k1 * n);
        let top = &*top;
        bottom.par_chunks_mut(n).for_each(|row| {
            for j in k0..k1 {
                let s: f64 = (k0..j).map(|p| row[p] * top[j * n + p]).sum();
                row[j] = (row[j] - s) / top[j * n + j];
            }
        });
        // Trailing update of the lower triangle: A[r, k1..=r] −= P[r]·Pᵀ.
        let kb = k1 - k0;
        let base = SendPtr64(a.as_mut_ptr());
        let bands: Vec<usize> = (k1..n).step_by(NB).collect();
        bands.into_par_iter().for_each(|r0| {
            let r1 = (r0 + NB).min(n);
            let base = &base;
            // SAFETY: A is P's rows r0..r1 (columns k0..k1), B is Pᵀ over
            // rows k1..r1 (P's columns k0..k1, read transposed), C is rows
            // r0..r1, columns k1..r1. Tasks write disjoint rows; what they
            // read (columns k0..k1) no task writes.
            unsafe {
                matrixmultiply::dgemm(
                    r1 - r0,
                    kb,
                    r1 - k1,
                    -1.0,
                    base.0.add(r0 * n + k0),
                    n as isize,
                    1,
                    base.0.add(k1 * n + k0),
                    1,
                    n as isize,
                    1.0,
                    base.0.add(r0 * n + k1),
                    n as isize,
                    1,
                );
            }
        });
    }
    true
}

/// L⁻¹ of the lower-triangular `l` (its lower triangle), n × n row-major,
/// by block rows: X[i, :i] = −L_ii⁻¹·(L[i, :i]·X[:i, :i]) with one DGEMM
/// per block row (bands of columns in parallel), and X[i, i] = L_ii⁻¹.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for r0 in (0..n).step_by(NB) {
        let r1 = (r0 + NB).min(n);
        let b = r1 - r0;
        // T = L[r0..r1, 0..r0] · X[0..r0, 0..r0], b × r0.
        let mut t = vec![0f64; b * r0];
        if r0 > 0 {
            // Columns of T in bands, each band its own DGEMM.
            let tp = SendPtr64(t.as_mut_ptr());
            let bands: Vec<usize> = (0..r0).step_by(NB).collect();
            bands.into_par_iter().for_each(|c0| {
                let c1 = (c0 + NB).min(r0);
                let tp = &tp;
                // SAFETY: A is L's rows r0..r1, columns c0..r0 (X[k, c] is 0
                // for k < c), B is X's rows c0..r0, columns c0..c1, C is T's
                // columns c0..c1; tasks write disjoint columns of T.
                unsafe {
                    matrixmultiply::dgemm(
                        b,
                        r0 - c0,
                        c1 - c0,
                        1.0,
                        l.as_ptr().add(r0 * n + c0),
                        n as isize,
                        1,
                        x.as_ptr().add(c0 * n + c0),
                        n as isize,
                        1,
                        0.0,
                        tp.0.add(c0),
                        r0 as isize,
                        1,
                    );
                }
            });
        }
        // Solve L_ii · X[r0..r1, c] = −T[:, c] (c < r0) or e_c (c in the
        // block), column by column in parallel.
        let cols: Vec<Vec<f64>> = (0..r1)
            .into_par_iter()
            .map(|c| {
                let mut y: Vec<f64> = (0..b)
                    .map(|i| {
                        if c < r0 {
                            -t[i * r0 + c]
                        } else if r0 + i == c {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for i in 0..b {
                    let row = &l[(r0 + i) * n + r0..(r0 + i) * n + r0 + i];
                    let s: f64 = row.iter().zip(&y[..i]).map(|(a, v)| a * v).sum();
                    y[i] = (y[i] - s) / l[(r0 + i) * n + r0 + i];
                }
                y
            })
            .collect();
        for (c, y) in cols.into_iter().enumerate() {
            for (i, v) in y.into_iter().enumerate() {
                x[(r0 + i) * n + c] = v;
            }
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: usize = 96;
    const COLS: usize = 256;

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/gptq")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Our result for one golden case of `tests/oracle/gptq_goldens.py`
    /// against llm-compressor's: ≥ 99.9 % of codes equal, scales
    /// equal (the acceptance asks 1e-3 relative), zeros and g_idx equal, loss
    /// within 1e-4 relative.
    fn check_golden(case: &str) {
        let w = f32s(&fixture("w.f32"));
        let h = f32s(&fixture("h.f32"));
        let meta: serde_json::Value =
            serde_json::from_slice(&fixture(&format!("{case}.json"))).unwrap();
        let want_codes = fixture(&format!("{case}.u8"));
        let gs = meta["group_size"].as_i64().unwrap();
        let cfg = GptqConfig {
            bits: meta["bits"].as_u64().unwrap() as u8,
            group_size: (gs > 0).then_some(gs as usize),
            sym: meta["sym"].as_bool().unwrap(),
            act_order: meta["act_order"].as_bool().unwrap(),
            damp: meta["damp"].as_f64().unwrap() as f32,
            block: meta["block"].as_u64().unwrap() as usize,
            // llm-compressor's observer: scales from the original weights,
            // and its plain column order.
            static_groups: true,
            group_aware: false,
            ..GptqConfig::default()
        };
        let out = quantize(&w, ROWS, COLS, &h, &cfg).unwrap();
        assert_eq!(out.damp_increases, 0);
        assert_eq!(
            out.dead_columns, 3,
            "the golden input has three dead columns"
        );

        let same = out
            .codes
            .iter()
            .zip(&want_codes)
            .filter(|(a, b)| a == b)
            .count();
        let frac = same as f64 / want_codes.len() as f64;
        assert!(
            frac >= 0.999,
            "{case}: only {:.4} % of codes equal",
            100.0 * frac
        );

        let flat = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        // Scales are the same float32 operations on the same weights: equal.
        let scales: Vec<f32> = flat(&meta["scales"]).iter().map(|&s| s as f32).collect();
        assert_eq!(out.scales, scales, "{case}: scales");
        let zeros: Vec<u8> = flat(&meta["zeros"]).iter().map(|&z| z as u8).collect();
        assert_eq!(out.zeros, zeros, "{case}: zeros");
        let g_idx: Vec<u32> = meta["g_idx"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(out.g_idx, g_idx, "{case}: g_idx");
        let want_loss = meta["loss"].as_f64().unwrap();
        assert!(
            (out.loss - want_loss).abs() <= 1e-4 * want_loss,
            "{case}: loss {} vs {want_loss}",
            out.loss
        );
    }

    #[test]
    fn golden_group128_sym() {
        check_golden("g128_sym");
    }

    #[test]
    fn golden_group128_act_order() {
        check_golden("g128_act");
    }

    #[test]
    fn golden_group64_asym() {
        check_golden("g64_asym");
    }

    #[test]
    fn golden_group32_asym_act_order() {
        check_golden("g32_asym_act");
    }

    #[test]
    fn golden_per_channel() {
        check_golden("channel_sym");
    }

    #[test]
    fn golden_8bit() {
        check_golden("g128_sym_8bit");
    }

    /// A deterministic weight in (−1, 1) with an outlier every 37th value.
    fn weight(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = ((i as u64).wrapping_mul(2654435761) % 1000) as f32 / 500.0 - 1.0;
                if i % 37 == 0 {
                    4.0 * x
                } else {
                    x
                }
            })
            .collect()
    }

    fn identity(n: usize) -> Vec<f32> {
        (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect()
    }

    /// With H = I nothing propagates: GPTQ is round-to-nearest with the
    /// group's scale and zero, under every option.
    #[test]
    fn identity_hessian_is_round_to_nearest() {
        let (rows, cols) = (8, 64);
        let w = weight(rows, cols);
        for (sym, act_order, group_size) in [
            (true, false, Some(32)),
            (false, false, Some(16)),
            (true, true, Some(32)),
            (false, true, None),
        ] {
            let cfg = GptqConfig {
                sym,
                act_order,
                group_size,
                block: 24,
                ..GptqConfig::default()
            };
            let out = quantize(&w, rows, cols, &identity(cols), &cfg).unwrap();
            let gs = group_size.unwrap_or(cols);
            for r in 0..rows {
                for c in 0..cols {
                    let g = c / gs;
                    let s = out.scales[g * rows + r];
                    let z = f32::from(out.zeros[g * rows + r]);
                    // Signed zero z − 8 (0 when symmetric), as the reference adds it.
                    let rtn = (w[r * cols + c] / s + (z - 8.0))
                        .clamp(-8.0, 7.0)
                        .round_ties_even()
                        + 8.0;
                    assert_eq!(f32::from(out.codes[r * cols + c]), rtn, "{cfg:?} [{r},{c}]");
                }
            }
        }
    }

    /// A correlated Hessian makes GPTQ differ from round-to-nearest, and its
    /// reconstruction error (Σ (W−Q)H(W−Q)ᵀ) must be smaller.
    #[test]
    fn gptq_beats_round_to_nearest_on_its_objective() {
        let (rows, cols) = (16, 64);
        let w = weight(rows, cols);
        // H = AᵀA + I with A a fixed correlated matrix.
        let a: Vec<f32> = (0..cols * cols)
            .map(|k| {
                (((k as u64).wrapping_mul(40503) % 97) as f32 / 97.0)
                    + if k / cols == k % cols { 1.0 } else { 0.0 }
            })
            .collect();
        let mut hs = Hessian::new(cols);
        hs.add(&a, 1).unwrap();
        let h = hs.finish().unwrap();
        let deq = |out: &GptqOutput| -> Vec<f32> {
            (0..rows * cols)
                .map(|k| {
                    let (r, c) = (k / cols, k % cols);
                    let g = out.g_idx[c] as usize;
                    (f32::from(out.codes[k]) - f32::from(out.zeros[g * rows + r]))
                        * out.scales[g * rows + r]
                })
                .collect()
        };
        let objective = |q: &[f32]| -> f64 {
            (0..rows)
                .map(|r| {
                    let d: Vec<f64> = (0..cols)
                        .map(|c| f64::from(w[r * cols + c] - q[r * cols + c]))
                        .collect();
                    (0..cols)
                        .flat_map(|i| (0..cols).map(move |j| (i, j)))
                        .map(|(i, j)| d[i] * f64::from(h[i * cols + j]) * d[j])
                        .sum::<f64>()
                })
                .sum()
        };
        let cfg = GptqConfig {
            group_size: Some(32),
            ..GptqConfig::default()
        };
        let gptq = quantize(&w, rows, cols, &h, &cfg).unwrap();
        let rtn = quantize(&w, rows, cols, &identity(cols), &cfg).unwrap();
        assert_ne!(gptq.codes, rtn.codes);
        assert!(objective(&deq(&gptq)) < objective(&deq(&rtn)));

        // Static groups: every scale from the original weights. Dynamic
        // (the default): from the weights as the group's lazy block starts,
        // so with one block of 128 columns the original weights' too, and
        // with blocks of 32 the second group's from the weights as the
        // first block left them (GPTQModel reads W, not the block's copy).
        let fixed = quantize(
            &w,
            rows,
            cols,
            &h,
            &GptqConfig {
                static_groups: true,
                ..cfg.clone()
            },
        )
        .unwrap();
        for r in 0..rows {
            for g in 0..2 {
                let (s, _) = qparams(&w[r * cols + g * 32..r * cols + (g + 1) * 32], 4, true);
                assert_eq!(fixed.scales[g * rows + r], s);
            }
        }
        assert_eq!(gptq.scales, fixed.scales);
        let blocked = quantize(
            &w,
            rows,
            cols,
            &h,
            &GptqConfig {
                block: 32,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(blocked.scales[..rows], fixed.scales[..rows]);
        assert_ne!(blocked.scales[rows..], fixed.scales[rows..]);
        assert!(objective(&deq(&blocked)) < objective(&deq(&rtn)));
        assert!(objective(&deq(&fixed)) < objective(&deq(&rtn)));
    }

    /// [[1, 1.015], [1.015, 1]] is indefinite; damp 0.01 of the mean diagonal
    /// is not enough, 0.02 is: one increase.
    #[test]
    fn damp_rises_until_cholesky_succeeds() {
        let h = [1.0, 1.015, 1.015, 1.0];
        let cfg = GptqConfig {
            group_size: None,
            ..GptqConfig::default()
        };
        let out = quantize(&[0.5, -0.25], 1, 2, &h, &cfg).unwrap();
        assert_eq!(out.damp_increases, 1);
        assert_eq!(out.damp, 0.02);
        let none = GptqConfig {
            damp_increment: 0.0,
            ..cfg
        };
        assert_eq!(
            quantize(&[0.5, -0.25], 1, 2, &h, &none),
            Err(GptqError::NotPositiveDefinite {
                damp: 0.01,
                increases: 0
            })
        );
    }

    #[test]
    fn dead_columns_quantize_to_zero() {
        let (rows, cols) = (4, 32);
        let w = weight(rows, cols);
        let mut h = identity(cols);
        h[3 * cols + 3] = 0.0;
        let cfg = GptqConfig {
            group_size: Some(16),
            ..GptqConfig::default()
        };
        let out = quantize(&w, rows, cols, &h, &cfg).unwrap();
        assert_eq!(out.dead_columns, 1);
        for r in 0..rows {
            assert_eq!(out.codes[r * cols + 3], out.zeros[r], "row {r}");
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let w = weight(2, 48);
        let h = identity(48);
        let cfg = GptqConfig::default();
        assert_eq!(
            quantize(&w, 2, 48, &h, &cfg),
            Err(GptqError::GroupSize {
                group: 128,
                cols: 48
            })
        );
        let mut nan = w.clone();
        nan[7] = f32::NAN;
        let g16 = GptqConfig {
            group_size: Some(16),
            ..cfg.clone()
        };
        assert_eq!(
            quantize(&nan, 2, 48, &h, &g16),
            Err(GptqError::NonFinite { what: "weight" })
        );
        assert_eq!(
            quantize(&w, 2, 48, &h[1..], &g16).unwrap_err(),
            GptqError::Shape {
                what: "Hessian",
                expected: 2304,
                got: 2303
            }
        );
        assert_eq!(
            quantize(&w, 2, 48, &h, &GptqConfig { bits: 3, ..g16 }),
            Err(GptqError::Bits(3))
        );
        assert_eq!(Hessian::new(4).finish(), Err(GptqError::NoSamples));
        assert_eq!(
            Hessian::new(4).add(&[0.0; 6], 1),
            Err(GptqError::Shape {
                what: "Hessian input",
                expected: 8,
                got: 6
            })
        );
    }

    /// The accumulator is (2/N)·Σ xxᵀ with N the samples over all batches.
    #[test]
    fn hessian_is_twice_the_mean_outer_product() {
        let cols = 5;
        let x: Vec<f32> = (0..6 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut acc = Hessian::new(cols);
        acc.add(&x[..2 * cols], 1).unwrap();
        acc.add(&x[2 * cols..], 2).unwrap();
        let h = acc.finish().unwrap();
        for i in 0..cols {
            for j in 0..cols {
                let want: f64 = (0..6)
                    .map(|t| f64::from(x[t * cols + i]) * f64::from(x[t * cols + j]))
                    .sum::<f64>()
                    * 2.0
                    / 3.0;
                assert!(
                    (f64::from(h[i * cols + j]) - want).abs() < 1e-6,
                    "[{i},{j}]"
                );
            }
        }
    }

    /// Group-aware act-order: each group's columns stay together, by
    /// descending diagonal inside, groups by their largest diagonal.
    #[test]
    fn group_aware_order_keeps_groups_whole() {
        let cols = 12;
        let diag = [1.0, 9.0, 2.0, 3.0, 0.5, 4.0, 8.0, 7.0, 0.1, 10.0, 5.0, 2.5];
        let mut h = vec![0f32; cols * cols];
        for (i, d) in diag.iter().enumerate() {
            h[i * cols + i] = *d;
        }
        let cfg = GptqConfig {
            group_size: Some(4),
            ..GptqConfig::default()
        };
        let p = Prepared::new(&h, cols, &cfg).unwrap();
        // Groups: [8..12] max 10, [0..4] max 9, [4..8] max 8.
        assert_eq!(p.perm, [9, 10, 11, 8, 1, 3, 2, 0, 6, 7, 5, 4]);
        let plain = Prepared::new(
            &h,
            cols,
            &GptqConfig {
                group_aware: false,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(plain.perm, (0..cols).collect::<Vec<_>>());
        let full = Prepared::new(
            &h,
            cols,
            &GptqConfig {
                act_order: true,
                ..cfg
            },
        )
        .unwrap();
        assert_eq!(full.perm, [9, 1, 6, 7, 10, 5, 3, 11, 2, 0, 4, 8]);
    }

    /// `Prepared::round_to_nearest` (`quantize gptq --rtn`) is GPTQ with an
    /// identity Hessian, and the min-max quantizer's codes and scales.
    #[test]
    fn the_identity_factor_rounds_to_nearest() {
        let (rows, cols, gs) = (8, 128, 32);
        let w = weight(rows, cols);
        let want = crate::quant::minmax::round_to_nearest(&w, rows, cols, gs, 4, true);
        let cfg = GptqConfig {
            group_size: Some(gs),
            ..GptqConfig::default()
        };
        let got = quantize_prepared(&w, rows, &Prepared::round_to_nearest(cols), &cfg).unwrap();
        let via_h = quantize(&w, rows, cols, &identity(cols), &cfg).unwrap();
        assert_eq!(got.codes, via_h.codes);
        assert_eq!(got.codes, want.codes);
        assert_eq!(got.scales, want.scales);
        assert_eq!(got.zeros, want.zeros);
        assert_eq!(got.g_idx, want.g_idx);
    }
}
