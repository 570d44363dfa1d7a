//! Min-max quantization of weight groups: the scale and zero point of a
//! group from its smallest and largest value, and rounding to codes, as
//! compressed-tensors 0.19.0 computes them (`quantization/utils/helpers.py`
//! `calculate_qparams`, `quantization/lifecycle/forward.py`
//! `_quantize`/`_dequantize`) for integer weights with the min-max
//! observer. GPTQ ([`crate::quant::gptq`]) takes its static group scales
//! from here, AWQ ([`crate::quant::awq`]) its grid-search fake quantization
//! and its final codes.
//!
//! * The range always contains 0: min = min(group, 0), max = max(group, 0).
//! * Symmetric: scale = max(|min|, |max|) / ((qmax − qmin)/2), zero 0.
//!   Asymmetric: scale = (max − min)/(qmax − qmin), zero =
//!   round(clamp(qmin − min/scale)). A zero scale becomes f32::EPSILON.
//! * A value's code is round(clamp(x/scale + zero, qmin, qmax)) (the zero
//!   added only when asymmetric), rounding half to even like torch.
//!
//! Codes and zeros are signed here (`[−2^(b−1), 2^(b−1))`); checkpoints
//! store them unsigned (+2^(b−1)), see [`crate::quant::int4pack`].

use rayon::prelude::*;

use crate::quant::int4pack::IntWeights;
use crate::quant::round_ties_even;

/// The signed code range of `bits` (compressed-tensors' `calculate_range`).
pub fn code_range(bits: u8) -> (f32, f32) {
    let half = f32::from(1u8 << (bits - 1));
    (-half, half - 1.0)
}

/// Scale and signed zero point of one group (`calculate_qparams`).
pub fn qparams(group: &[f32], bits: u8, sym: bool) -> (f32, f32) {
    let (qmin, qmax) = code_range(bits);
    let range = qmax - qmin;
    let mn = group.iter().fold(0f32, |m, &v| m.min(v));
    let mx = group.iter().fold(0f32, |m, &v| m.max(v));
    let (scale, zero) = if sym {
        (mn.abs().max(mx.abs()) / (range / 2.0), 0.0)
    } else {
        let s = (mx - mn) / range;
        // 0/0 for an all-zero group: NaN, which the cast to int8 makes 0.
        let z = round_ties_even((qmin - mn / s).clamp(qmin, qmax));
        (s, if z.is_nan() { 0.0 } else { z })
    };
    let scale = if scale == 0.0 { f32::EPSILON } else { scale };
    (scale, zero)
}

/// The signed code of `x` (`_quantize`): the zero point is added only for
/// asymmetric schemes.
#[inline]
pub fn code(x: f32, scale: f32, zero: f32, sym: bool, (qmin, qmax): (f32, f32)) -> f32 {
    let mut scaled = x / scale;
    if !sym {
        scaled += zero;
    }
    round_ties_even(scaled.clamp(qmin, qmax))
}

/// The value a signed code stands for (`_dequantize`).
#[inline]
pub fn value(code: f32, scale: f32, zero: f32, sym: bool) -> f32 {
    if sym {
        code * scale
    } else {
        (code - zero) * scale
    }
}

/// Round-to-nearest codes of a weight, with their scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCodes {
    /// Unsigned codes, `rows × cols` row-major.
    pub codes: Vec<u8>,
    /// Scales, `groups × rows`.
    pub scales: Vec<f32>,
    /// Unsigned zero points, `groups × rows`.
    pub zeros: Vec<u8>,
    /// Group of every input column (`i / group size`).
    pub g_idx: Vec<u32>,
}

impl GroupCodes {
    /// The codes as [`IntWeights`] of `bits`, for the packers.
    pub fn int_weights(&self, bits: u8, rows: usize, cols: usize) -> IntWeights<'_> {
        IntWeights {
            bits: u32::from(bits),
            rows,
            cols,
            codes: &self.codes,
            scales: &self.scales,
            zeros: &self.zeros,
            g_idx: &self.g_idx,
        }
    }
}

/// Round-to-nearest of `w` (`rows × cols`, groups of `group` columns along
/// each row): what compressed-tensors' `QuantizationModifier` stores.
/// `cols` must be a multiple of `group`.
pub fn round_to_nearest(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    bits: u8,
    sym: bool,
) -> GroupCodes {
    let groups = cols / group;
    let range = code_range(bits);
    let half = -range.0;
    let mut codes = vec![0u8; rows * cols];
    let mut params = vec![(0f32, 0f32); rows * groups];
    codes
        .par_chunks_mut(cols)
        .zip(params.par_chunks_mut(groups))
        .enumerate()
        .for_each(|(r, (cr, pr))| {
            let row = &w[r * cols..(r + 1) * cols];
            for (g, p) in pr.iter_mut().enumerate() {
                let span = g * group..(g + 1) * group;
                let (s, z) = qparams(&row[span.clone()], bits, sym);
                *p = (s, z);
                for (c, &x) in cr[span.clone()].iter_mut().zip(&row[span]) {
                    *c = (code(x, s, z, sym, range) + half) as u8;
                }
            }
        });
    let at = |k: usize| params[(k % rows) * groups + k / rows];
    GroupCodes {
        codes,
        scales: (0..groups * rows).map(|k| at(k).0).collect(),
        zeros: (0..groups * rows).map(|k| (at(k).1 + half) as u8).collect(),
        g_idx: (0..cols).map(|c| (c / group) as u32).collect(),
    }
}

/// `w` replaced in place by its round-to-nearest values
/// (`fake_quantize` with min-max scales of the values themselves).
pub fn fake_quantize(w: &mut [f32], cols: usize, group: usize, bits: u8, sym: bool) {
    let range = code_range(bits);
    w.par_chunks_mut(cols).for_each(|row| {
        for g in row.chunks_exact_mut(group) {
            let (s, z) = qparams(g, bits, sym);
            for x in g.iter_mut() {
                *x = value(code(*x, s, z, sym, range), s, z, sym);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_range_contains_zero_and_round_trips_the_extremes() {
        // All positive: min is taken as 0, so zero = qmin and 0 is exact.
        let g = [0.5f32, 1.0, 2.0, 3.0];
        let (s, z) = qparams(&g, 4, false);
        assert_eq!(s, 3.0 / 15.0);
        assert_eq!(z, -8.0);
        let mut w = g.to_vec();
        fake_quantize(&mut w, 4, 4, 4, false);
        assert!((w[3] - 3.0).abs() < 1e-6);
        let rtn = round_to_nearest(&g, 1, 4, 4, 4, false);
        assert_eq!(rtn.zeros, vec![0]);
        assert_eq!(rtn.codes[3], 15);
        assert_eq!(rtn.g_idx, vec![0; 4]);
    }

    #[test]
    fn codes_match_fake_quantization() {
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let rtn = round_to_nearest(&w, 2, 32, 16, 4, false);
        let mut fq = w.clone();
        fake_quantize(&mut fq, 32, 16, 4, false);
        for r in 0..2 {
            for c in 0..32 {
                let k = (c / 16) * 2 + r;
                let v =
                    (f32::from(rtn.codes[r * 32 + c]) - f32::from(rtn.zeros[k])) * rtn.scales[k];
                assert_eq!(v, fq[r * 32 + c], "row {r} col {c}");
            }
        }
    }
}
