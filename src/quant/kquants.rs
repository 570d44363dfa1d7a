//! The k-quant super-block formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (256
//! elements per block): layouts and dequantization. The quantizers will
//! live here too.
//!
//! Layouts are the `block_q2_K` … `block_q6_K` structs of
//! `ggml/src/ggml-common.h`; f16 fields are little-endian IEEE half. Sizes
//! are the constants in [`super`].
//!
//! Arithmetic follows gguf-py 0.19.0 `Q*_K.dequantize_blocks`
//! (`gguf-py/gguf/quants.py`), which first forms each sub-block's scale as
//! one rounded f32 product of the f16 super-scale and the small integer
//! scale, and then applies it: `(d·sc)·q` or `(d·sc)·q − (dmin·m)`, every
//! operation rounded separately (no fused multiply-add).

use super::{
    f16_at, K_SCALE_SIZE, Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, QK_K,
};

/// Unpacks the eight 6-bit scales and eight 6-bit mins of Q4_K/Q5_K from
/// their 12 packed bytes (`get_scale_min_k4` in `ggml/src/ggml-quants.c`,
/// `Q4_K.get_scale_min` in gguf-py).
///
/// Sub-blocks 0..4 keep scale and min in the low 6 bits of bytes `j` and
/// `j + 4`. Sub-blocks 4..8 take their low 4 bits from byte `j + 4` (scale
/// in the low nibble, min in the high nibble) and their top 2 bits from bits
/// 6..8 of bytes `j − 4` (scale) and `j` (min).
#[inline]
pub fn unpack_scales_mins(packed: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = packed[j] & 0x3f;
        m[j] = packed[j + 4] & 0x3f;
        sc[j + 4] = (packed[j + 8] & 0x0f) | ((packed[j] >> 6) << 4);
        m[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Copies `N` bytes starting at `at` into an array.
#[inline(always)]
fn array_at<const N: usize, const B: usize>(block: &[u8; B], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&block[at..at + N]);
    a
}

/// Dequantizes one `block_q2_K` (`ggml/src/ggml-common.h`), 84 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `scales: u8[16]` | per 16 elements: scale (low nibble), min (high nibble) |
/// | 16 | `qs: u8[64]` | 2-bit codes |
/// | 80 | `d: f16` | super-scale of the scales |
/// | 82 | `dmin: f16` | super-scale of the mins |
///
/// Element `128h + 32s + l` (`h < 2`, `s < 4`, `l < 32`) is bits `2s..2s+2`
/// of `qs[32h + l]`; element `e` belongs to sub-block `e / 16`. Value:
/// `(d·sc)·q − (dmin·m)`.
pub fn dequantize_q2_k(block: &[u8; Q2_K_BYTES], out: &mut [f32; QK_K]) {
    let d = f16_at(block, 80);
    let dmin = f16_at(block, 82);
    let (scales, qs) = (&block[..16], &block[16..80]);
    for (k, o) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[k] & 0x0f);
        let ml = dmin * f32::from(scales[k] >> 4);
        let (h, s) = (k / 8, (k / 2) % 4);
        let base = 32 * h + 16 * (k % 2);
        for (l, o) in o.iter_mut().enumerate() {
            let q = (qs[base + l] >> (2 * s)) & 3;
            *o = dl * f32::from(q) - ml;
        }
    }
}

/// Dequantizes one `block_q3_K` (`ggml/src/ggml-common.h`), 110 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `hmask: u8[32]` | third bits |
/// | 32 | `qs: u8[64]` | low 2 bits |
/// | 96 | `scales: u8[12]` | sixteen 6-bit scales, biased by 32 |
/// | 108 | `d: f16` | super-scale |
///
/// Scale `k` (of elements `16k..16k+16`) has its low 4 bits in byte `k`
/// (low nibble, `k < 8`) or byte `k − 8` (high nibble), and its top 2 bits
/// in bits `2(k/4)..2(k/4)+2` of byte `8 + k % 4`; the scale is that 6-bit
/// value minus 32. Element `128h + 32s + l` takes its low 2 bits from bits
/// `2s..2s+2` of `qs[32h + l]` and its mask bit from bit `4h + s` of
/// `hmask[l]`; the code is `low − 4` when the mask bit is clear and `low`
/// when it is set. Value: `(d·scale)·code`.
pub fn dequantize_q3_k(block: &[u8; Q3_K_BYTES], out: &mut [f32; QK_K]) {
    let d = f16_at(block, 108);
    let (hmask, qs, sc) = (&block[..32], &block[32..96], &block[96..108]);
    for (k, o) in out.chunks_exact_mut(16).enumerate() {
        let low = if k < 8 { sc[k] & 0x0f } else { sc[k - 8] >> 4 };
        let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
        let dl = d * f32::from((low | (high << 4)) as i8 - 32);
        let (h, s) = (k / 8, (k / 2) % 4);
        let (qbase, mbase) = (32 * h + 16 * (k % 2), 16 * (k % 2));
        let bit = 4 * h + s;
        for (l, o) in o.iter_mut().enumerate() {
            let low2 = ((qs[qbase + l] >> (2 * s)) & 3) as i8;
            let set = (hmask[mbase + l] >> bit) & 1;
            let code = low2 - (((set ^ 1) << 2) as i8);
            *o = dl * f32::from(code);
        }
    }
}

/// Shared Q4_K/Q5_K decoding: eight sub-blocks of 32 with scale and min
/// from [`unpack_scales_mins`]; sub-block `j` takes the low (`j` even) or
/// high (`j` odd) nibbles of `qs[32(j/2)..32(j/2)+32]`, plus, for Q5_K, bit
/// `j` of `qh[l]` as the fifth bit of its element `l`.
#[inline(always)]
fn dequantize_k4_k5<const B: usize>(
    block: &[u8; B],
    qh_at: Option<usize>,
    qs_at: usize,
    out: &mut [f32; QK_K],
) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let (sc, m) = unpack_scales_mins(&array_at(block, 4));
    let qs: [u8; QK_K / 2] = array_at(block, qs_at);
    let qh: [u8; QK_K / 8] = match qh_at {
        Some(at) => array_at(block, at),
        None => [0; QK_K / 8],
    };
    for (j, o) in out.chunks_exact_mut(32).enumerate() {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(m[j]);
        let (group, shift) = (32 * (j / 2), 4 * (j % 2));
        for (l, o) in o.iter_mut().enumerate() {
            let q = ((qs[group + l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
            *o = dl * f32::from(q) - ml;
        }
    }
}

/// Dequantizes one `block_q4_K` (`ggml/src/ggml-common.h`), 144 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | super-scale of the scales |
/// | 2 | `dmin: f16` | super-scale of the mins |
/// | 4 | `scales: u8[12]` | packed 6-bit scales and mins ([`unpack_scales_mins`]) |
/// | 16 | `qs: u8[128]` | 4-bit codes |
///
/// Sub-block `j` (elements `32j..32j+32`) takes the low (`j` even) or high
/// (`j` odd) nibbles of `qs[32(j/2)..32(j/2)+32]`. Value:
/// `(d·sc_j)·q − (dmin·m_j)`.
pub fn dequantize_q4_k(block: &[u8; Q4_K_BYTES], out: &mut [f32; QK_K]) {
    dequantize_k4_k5(block, None, 16, out);
}

/// Dequantizes one `block_q5_K` (`ggml/src/ggml-common.h`), 176 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | super-scale of the scales |
/// | 2 | `dmin: f16` | super-scale of the mins |
/// | 4 | `scales: u8[12]` | packed 6-bit scales and mins ([`unpack_scales_mins`]) |
/// | 16 | `qh: u8[32]` | fifth bits |
/// | 48 | `qs: u8[128]` | low 4 bits, laid out as in Q4_K |
///
/// Element `l` of sub-block `j` gets bit `j` of `qh[l]` as its fifth bit.
/// Value: `(d·sc_j)·q − (dmin·m_j)`.
pub fn dequantize_q5_k(block: &[u8; Q5_K_BYTES], out: &mut [f32; QK_K]) {
    dequantize_k4_k5(block, Some(16), 48, out);
}

/// Dequantizes one `block_q6_K` (`ggml/src/ggml-common.h`), 210 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `ql: u8[128]` | low 4 bits |
/// | 128 | `qh: u8[64]` | high 2 bits |
/// | 192 | `scales: i8[16]` | one signed scale per 16 elements |
/// | 208 | `d: f16` | super-scale (last, unlike the other k-quants) |
///
/// The block is two halves of 128. In half `h`, element `128h + 64t + i`
/// (`t < 2`, `i < 64`) takes nibble `t` (low, then high) of `ql[64h + i]`,
/// and element `128h + 32s + l` (`s < 4`, `l < 32`) takes bits `2s..2s+2`
/// of `qh[32h + l]` as bits 4..6. The code is that 6-bit value minus 32.
/// Value: `(d·scales[e/16])·code`.
pub fn dequantize_q6_k(block: &[u8; Q6_K_BYTES], out: &mut [f32; QK_K]) {
    let d = f16_at(block, 208);
    let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
    for (k, o) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[k] as i8);
        let (h, t, s) = (k / 8, (k / 4) % 2, (k / 2) % 4);
        let lbase = 64 * h + 16 * (k % 4);
        let hbase = 32 * h + 16 * (k % 2);
        for (l, o) in o.iter_mut().enumerate() {
            let low = (ql[lbase + l] >> (4 * t)) & 0x0f;
            let high = (qh[hbase + l] >> (2 * s)) & 3;
            *o = dl * f32::from((low | (high << 4)) as i8 - 32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packing described on [`unpack_scales_mins`], written from the
    /// writer's side, round-trips every 6-bit value in every position.
    #[test]
    fn scale_min_packing() {
        for v in 0..64u8 {
            for pos in 0..8 {
                let mut sc = [0u8; 8];
                let mut m = [0u8; 8];
                sc[pos] = v;
                m[(pos + 3) % 8] = 63 - v;
                let mut p = [0u8; K_SCALE_SIZE];
                for j in 0..4 {
                    p[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    p[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
                    p[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
                }
                assert_eq!(unpack_scales_mins(&p), (sc, m));
            }
        }
    }

    /// Hand-built Q6_K block: checks the element → (ql, qh, scale) mapping
    /// independently of the golden vectors.
    #[test]
    fn q6_k_element_mapping() {
        let mut b = [0u8; Q6_K_BYTES];
        // d = 1.0, every scale 1: the output is the code itself.
        b[208..210].copy_from_slice(&0x3c00u16.to_le_bytes());
        b[192..208].fill(1);
        // Element 128 + 64 + 5 (h = 1, t = 1, i = 5): high nibble of ql[69].
        // It is 128 + 32·2 + 5, so s = 2, qh byte 32 + 5, bits 4..6.
        b[69] = 0xa0;
        b[128 + 37] = 0b0011_0000;
        let mut out = [0f32; QK_K];
        dequantize_q6_k(&b, &mut out);
        assert_eq!(out[197], f32::from((0x0a_i16 | (3 << 4)) - 32));
        // Element 128 + 5 uses the low nibble of ql[69] (0) and qh bits 0..2.
        assert_eq!(out[133], -32.0);
        // Everything else is code 0 - 32.
        assert_eq!(out.iter().filter(|&&v| v == -32.0).count(), QK_K - 1);
    }
}
