//! The k-quant super-block formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (256
//! elements per block): layouts, dequantization and quantization.
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
//!
//! The quantizers are the `quantize_row_q{2,3,4,5,6}_K_ref` routines of
//! `ggml/src/ggml-quants.c`, which
//! `ggml_quantize_chunk` runs when there is no importance matrix: a search
//! for each sub-block's scale (and min), 6- or 8-bit codes for those scales
//! under one f16 super-scale, then a second pass that requantizes every
//! element with the *f16-rounded* scales. Sums run sequentially in f32 and
//! ties round half to even ([`super::nearest_int`]).
//!
//! Length: just over 800 lines; it follows the k-quant section of
//! `ggml-quants.c` function by function (five types, both directions), and
//! splitting it would separate each encoder from its decoder.

use super::{
    f16_at, f16_bits_to_f32, f32_to_f16_bits, nearest_int, K_SCALE_SIZE, Q2_K_BYTES, Q3_K_BYTES,
    Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, QK_K,
};

/// Smallest magnitude a sub-block may have before it counts as all zero
/// (`GROUP_MAX_EPS` in `ggml/src/ggml-quants.c`).
const GROUP_MAX_EPS: f32 = 1e-15;

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

/// Parameters of the scale-and-min search for one k-quant type (the
/// arguments the `quantize_row_q*_K_ref` routines pass to
/// `make_qkx2_quants`).
struct Qkx2 {
    /// Largest code.
    nmax: i32,
    /// First trial offset added to `nmax`.
    rmin: f32,
    /// Step between trials.
    rdelta: f32,
    /// Number of trials after the first (inclusive upper bound).
    nstep: i32,
    /// Minimise absolute instead of squared error (Q2_K).
    use_mad: bool,
}

const Q2_K_SEARCH: Qkx2 = Qkx2 {
    nmax: 3,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: true,
};
const Q4_K_SEARCH: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};
const Q5_K_SEARCH: Qkx2 = Qkx2 {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};

/// Affine search of `make_qkx2_quants` (weights `w`): codes `l` in
/// `0..=nmax` and `(scale, −min)` minimising Σw·err(scale·l + min − x)
/// (err = square, or absolute value with `use_mad`) over a few trial
/// inverse scales, each refined by weighted least squares (with `min`
/// clamped to ≤ 0).
///
/// `L` sub-blocks of `N` (consecutive in `x`, `w` and `l`) are searched
/// together, one per lane: every lane does exactly the scalar reference's
/// f32 operations in the reference's order (so the results are bit for bit
/// the same), but the loops over lanes vectorise, which hides the latency
/// of the sequential sums that bounds the one-sub-block version.
#[inline(always)]
fn make_qkx2_quants<const N: usize, const L: usize>(
    p: &Qkx2,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
) -> ([f32; L], [f32; L]) {
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    // Element i of every lane side by side.
    let xt: [[f32; L]; N] = std::array::from_fn(|i| std::array::from_fn(|k| x[N * k + i]));
    let wt: [[f32; L]; N] = std::array::from_fn(|i| std::array::from_fn(|k| w[N * k + i]));
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = wt[0];
    let mut sum_x: [f32; L] = std::array::from_fn(|k| sum_w[k] * xt[0][k]);
    for i in 1..N {
        for k in 0..L {
            if xt[i][k] < min[k] {
                min[k] = xt[i][k];
            }
            if xt[i][k] > max[k] {
                max[k] = xt[i][k];
            }
            sum_w[k] += wt[i][k];
            sum_x[k] += wt[i][k] * xt[i][k];
        }
    }
    for m in &mut min {
        if *m > 0.0 {
            *m = 0.0;
        }
    }
    // Lanes with max == min are answered at the end; their arithmetic below
    // is meaningless but harmless.
    let flat: [bool; L] = std::array::from_fn(|k| max[k] == min[k]);
    let flat_min = min;
    let nmax = p.nmax as f32;
    let mut scale = [0f32; L];
    let mut iscale = [0f32; L];
    for k in 0..L {
        iscale[k] = nmax / (max[k] - min[k]);
        scale[k] = 1.0 / iscale[k];
    }
    let mut lt = [[0u8; L]; N];
    let mut best = [0f32; L];
    for i in 0..N {
        for k in 0..L {
            let q = nearest_int(iscale[k] * (xt[i][k] - min[k])).clamp(0, p.nmax);
            lt[i][k] = q as u8;
            best[k] += wt[i][k] * err(scale[k] * q as f32 + min[k] - xt[i][k]);
        }
    }
    let mut laux = [[0u8; L]; N];
    for is in 0..=p.nstep {
        let step = p.rmin + p.rdelta * is as f32 + nmax;
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; L], [0f32; L], [0f32; L]);
        for k in 0..L {
            iscale[k] = step / (max[k] - min[k]);
        }
        for i in 0..N {
            for k in 0..L {
                let q = nearest_int(iscale[k] * (xt[i][k] - min[k])).clamp(0, p.nmax);
                laux[i][k] = q as u8;
                let lf = q as f32;
                sum_l[k] += wt[i][k] * lf;
                sum_l2[k] += wt[i][k] * lf * lf;
                sum_xl[k] += wt[i][k] * lf * xt[i][k];
            }
        }
        let mut ok = [false; L];
        let (mut this_scale, mut this_min) = ([0f32; L], [0f32; L]);
        for k in 0..L {
            let det = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            ok[k] = det > 0.0;
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / det;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / det;
            if this_min[k] > 0.0 {
                this_min[k] = 0.0;
                this_scale[k] = sum_xl[k] / sum_l2[k];
            }
        }
        let mut cur = [0f32; L];
        for i in 0..N {
            for k in 0..L {
                let e = this_scale[k] * f32::from(laux[i][k]) + this_min[k] - xt[i][k];
                cur[k] += wt[i][k] * err(e);
            }
        }
        for k in 0..L {
            if ok[k] && cur[k] < best[k] {
                for i in 0..N {
                    lt[i][k] = laux[i][k];
                }
                best[k] = cur[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
    }
    for k in 0..L {
        if flat[k] {
            scale[k] = 0.0;
            min[k] = flat_min[k];
        }
        for (i, o) in l[N * k..N * k + N].iter_mut().enumerate() {
            *o = if flat[k] { 0 } else { lt[i][k] };
        }
    }
    (scale, min.map(|m| -m))
}

/// Quantizes 256 values to one `block_q2_K` (`quantize_row_q2_K_ref`;
/// layout on [`dequantize_q2_k`]): sixteen sub-blocks of 16 with an
/// absolute-error scale/min search (weights |x|), 4-bit scales and mins
/// under the f16 `d` and `dmin`, then 2-bit codes from the rounded scales.
pub fn quantize_q2_k(x: &[f32; QK_K], out: &mut [u8; Q2_K_BYTES]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let w = x.map(f32::abs);
    for half in 0..2 {
        let r = 128 * half..128 * half + 128;
        let (sc, mn) =
            make_qkx2_quants::<16, 8>(&Q2_K_SEARCH, &x[r.clone()], &w[r.clone()], &mut l[r]);
        scales[8 * half..8 * half + 8].copy_from_slice(&sc);
        mins[8 * half..8 * half + 8].copy_from_slice(&mn);
    }
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let mut sc = [0u8; 16];
    let mut d = 0f32;
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        d = max_scale / 15.0;
    }
    let mut dmin = 0f32;
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (s, &v) in sc.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * v) << 4) as u8;
        }
        dmin = max_min / 15.0;
    }
    let (d_bits, dmin_bits) = (f32_to_f16_bits(d), f32_to_f16_bits(dmin));
    out[..16].copy_from_slice(&sc);
    out[80..82].copy_from_slice(&d_bits.to_le_bytes());
    out[82..84].copy_from_slice(&dmin_bits.to_le_bytes());
    let (d, dmin) = (f16_bits_to_f32(d_bits), f16_bits_to_f32(dmin_bits));
    for (j, &s) in sc.iter().enumerate() {
        let dj = d * f32::from(s & 0x0f);
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(s >> 4);
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + dm) / dj).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut out[16..80]);
}

/// Packs 256 2-bit codes: element `128h + 32s + i` into bits `2s..2s+2` of
/// `qs[32h + i]` (Q2_K codes, Q3_K low bits).
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// `make_q3_quants(16, 4, x, L, true)`: symmetric codes −4..=3 for one
/// sub-block of 16, refined up to five rounds one element at a time to
/// maximise (Σw·x·l)²/Σw·l² (weights x²). Writes `l + 4` (or all 0 for an
/// all-zero sub-block) and returns the scale.
#[inline(always)]
fn make_q3_quants(x: &[f32], l_out: &mut [u8]) -> f32 {
    const NMAX: i32 = 4;
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in &x[..16] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..16].fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let mut l = [0i32; 16];
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..16 {
        l[i] = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
        let w = x[i] * x[i];
        sumlx += w * x[i] * l[i] as f32;
        suml2 += w * l[i] as f32 * l[i] as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..16 {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != l[i] {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &q) in l_out[..16].iter_mut().zip(&l) {
        *o = (q + NMAX) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Quantizes 256 values to one `block_q3_K` (`quantize_row_q3_K_ref`;
/// layout on [`dequantize_q3_k`]): sixteen symmetric sub-scales under one
/// f16 `d = max / −32` (signed extreme), 6-bit scale codes, then 3-bit codes
/// from the rounded scales (high bit in `hmask`).
pub fn quantize_q3_k(x: &[f32; QK_K], out: &mut [u8; Q3_K_BYTES]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut amax, mut max_scale) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(&x[16 * j..], &mut l[16 * j..]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let mut sc = [0u8; 12];
    let mut d = 0f32;
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &v) in scales.iter().enumerate() {
            // C keeps nearest_int's low byte in an int8_t before clamping.
            let q = ((nearest_int(iscale * v) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                sc[j] = q & 0x0f;
            } else {
                sc[j - 8] |= (q & 0x0f) << 4;
            }
            sc[8 + j % 4] |= (q >> 4) << (2 * (j / 4));
        }
        d = 1.0 / iscale;
    }
    let d_bits = f32_to_f16_bits(d);
    out[96..108].copy_from_slice(&sc);
    out[108..110].copy_from_slice(&d_bits.to_le_bytes());
    let d = f16_bits_to_f32(d_bits);
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0x0f } else { sc[j - 8] >> 4 };
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        let dj = d * f32::from((low | (high << 4)) as i8 - 32);
        if dj == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dj).clamp(-4, 3) + 4) as u8;
        }
    }
    let mut hmask = [0u8; 32];
    for (j, q) in l.iter_mut().enumerate() {
        if *q > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *q -= 4;
        }
    }
    out[..32].copy_from_slice(&hmask);
    pack_2bit(&l, &mut out[32..96]);
}

/// Packs eight 6-bit scales and mins into the 12 bytes that
/// [`unpack_scales_mins`] reads.
#[inline(always)]
fn pack_scales_mins(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut p = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        p[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        p[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        p[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
    }
    p
}

/// Shared Q4_K/Q5_K quantizer: returns the codes (0..=nmax) of all 256
/// elements after writing `d`, `dmin` and the packed scales to `block[0..16]`.
#[inline(always)]
fn quantize_k4_k5<const B: usize>(p: &Qkx2, x: &[f32; QK_K], block: &mut [u8; B]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut w = [0f32; QK_K];
    for (xs, w) in x.chunks_exact(32).zip(w.chunks_exact_mut(32)) {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in w.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
    }
    let (scales, mins) = make_qkx2_quants::<32, 8>(p, x, &w, &mut l);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t (keeping the low byte)
        // before clamping to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d_bits = f32_to_f16_bits(max_scale / 63.0);
    let dmin_bits = f32_to_f16_bits(max_min / 63.0);
    block[0..2].copy_from_slice(&d_bits.to_le_bytes());
    block[2..4].copy_from_slice(&dmin_bits.to_le_bytes());
    block[4..4 + K_SCALE_SIZE].copy_from_slice(&pack_scales_mins(&ls, &lm));
    let (d, dmin) = (f16_bits_to_f32(d_bits), f16_bits_to_f32(dmin_bits));
    for j in 0..8 {
        let dj = d * f32::from(ls[j]);
        // A zero scale keeps the first-pass codes, as in the reference.
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(lm[j]);
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dj).clamp(0, p.nmax) as u8;
        }
    }
    l
}

/// Quantizes 256 values to one `block_q4_K` (`quantize_row_q4_K_ref`;
/// layout on [`dequantize_q4_k`]).
pub fn quantize_q4_k(x: &[f32; QK_K], out: &mut [u8; Q4_K_BYTES]) {
    let l = quantize_k4_k5(&Q4_K_SEARCH, x, out);
    for g in 0..4 {
        for i in 0..32 {
            out[16 + 32 * g + i] = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
        }
    }
}

/// Quantizes 256 values to one `block_q5_K` (`quantize_row_q5_K_ref`;
/// layout on [`dequantize_q5_k`]).
pub fn quantize_q5_k(x: &[f32; QK_K], out: &mut [u8; Q5_K_BYTES]) {
    let l = quantize_k4_k5(&Q5_K_SEARCH, x, out);
    let mut qh = [0u8; 32];
    for g in 0..4 {
        for i in 0..32 {
            let (a, b) = (l[64 * g + i], l[64 * g + 32 + i]);
            qh[i] |= ((a >> 4) << (2 * g)) | ((b >> 4) << (2 * g + 1));
            out[48 + 32 * g + i] = (a & 0x0f) | ((b & 0x0f) << 4);
        }
    }
    out[16..48].copy_from_slice(&qh);
}

/// Symmetric search of `make_qx_quants` with `nmax = 32` and `rmse_type = 1`
/// (weights x²) for one 16-element sub-block of Q6_K: writes codes
/// `l + 32` (0..64) and returns the (possibly negative) scale.
#[inline(always)]
fn make_qx_quants_q6(x: &[f32], l_out: &mut [u8]) -> f32 {
    const NMAX: i32 = 32;
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in &x[..16] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..16].fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in &x[..16] {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, l_out: &mut [u8]| {
        for (o, &v) in l_out[..16].iter_mut().zip(&x[..16]) {
            *o = (code(iscale, v) + NMAX) as u8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    fill(iscale, l_out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, l_out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes 256 values to one `block_q6_K` (`quantize_row_q6_K_ref`;
/// layout on [`dequantize_q6_k`]). The super-scale comes from the *signed*
/// sub-block scale of largest magnitude, `d = max / −128`.
pub fn quantize_q6_k(x: &[f32; QK_K], out: &mut [u8; Q6_K_BYTES]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for ib in 0..16 {
        scales[ib] = make_qx_quants_q6(&x[16 * ib..], &mut l[16 * ib..]);
        if scales[ib].abs() > max_abs {
            max_abs = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_bits = f32_to_f16_bits(1.0 / iscale);
    out[208..210].copy_from_slice(&d_bits.to_le_bytes());
    let d = f16_bits_to_f32(d_bits);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        out[192 + ib] = sc[ib] as u8;
    }
    for (j, &s) in sc.iter().enumerate() {
        let dj = d * f32::from(s);
        if dj == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dj).clamp(-32, 31) + 32) as u8;
        }
    }
    for h in 0..2 {
        let (lb, qb, hb) = (128 * h, 64 * h, 128 + 32 * h);
        for i in 0..32 {
            let q = [l[lb + i], l[lb + i + 32], l[lb + i + 64], l[lb + i + 96]];
            out[qb + i] = (q[0] & 0x0f) | ((q[2] & 0x0f) << 4);
            out[qb + i + 32] = (q[1] & 0x0f) | ((q[3] & 0x0f) << 4);
            out[hb + i] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
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
