//! The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: layouts,
//! dequantization and quantization.
//!
//! Layouts are the `block_q4_0` … `block_q8_0` structs of
//! `ggml/src/ggml-common.h`; all multi-byte fields are little-endian and f16
//! fields are IEEE half. Sizes are the constants in [`super`].
//!
//! The 4-bit formats share one nibble order: element `j < 16` is the low
//! nibble of `qs[j]` and element `j + 16` is the high nibble of `qs[j]`. The
//! 5-bit formats add the fifth bit of element `j` as bit `j` of the
//! little-endian `u32` `qh`.
//!
//! Arithmetic follows gguf-py 0.19.0 `Q*_*.dequantize_blocks`
//! (`gguf-py/gguf/quants.py`): the f16 fields are widened to f32 first
//! (exactly), the integer code is formed in integers and converted to f32
//! (exactly), and then one f32 multiply (`d·q`) or a multiply followed by a
//! separately rounded add (`(d·q) + m`).
//!
//! The quantizers are llama.cpp's `quantize_row_q*_ref`
//! (`ggml/src/ggml-quants.c`), which `ggml_quantize_chunk` runs for these
//! types when there is no importance matrix: one scale from the block's
//! extreme(s), codes from the *unrounded* f32 reciprocal of the scale, and
//! the scale stored as f16. Their three roundings differ on purpose: Q8_0
//! uses `roundf` (half away from zero), the others add 0.5 (plus the offset)
//! and truncate.

use super::{
    c_float_to_int, f16_at, put_f16, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES,
    QK32,
};

/// Half the block: the number of `qs` bytes of the 4- and 5-bit formats.
const HALF: usize = QK32 / 2;

/// Decodes the 32 nibbles of `qs` in element order: low nibbles give
/// elements 0..16, high nibbles elements 16..32.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u8; QK32] {
    let mut q = [0u8; QK32];
    for (j, &b) in qs.iter().take(HALF).enumerate() {
        q[j] = b & 0x0f;
        q[j + HALF] = b >> 4;
    }
    q
}

/// Adds the fifth bits of `qh` (bit `j` for element `j`) to 4-bit codes.
#[inline(always)]
fn add_fifth_bits(q: &mut [u8; QK32], qh: u32) {
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as u8) << 4;
    }
}

/// Reads the little-endian `u32` at `block[at..at + 4]`.
#[inline(always)]
fn u32_at<const B: usize>(block: &[u8; B], at: usize) -> u32 {
    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
}

/// Dequantizes one `block_q4_0` (`ggml/src/ggml-common.h`), 18 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | scale |
/// | 2 | `qs: u8[16]` | 4-bit codes, nibble order as in the module docs |
///
/// Value: `d · (q − 8)`, with `q − 8` formed as an integer.
pub fn dequantize_q4_0(block: &[u8; Q4_0_BYTES], out: &mut [f32; QK32]) {
    let d = f16_at(block, 0);
    let q = nibbles(&block[2..]);
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * f32::from(q as i8 - 8);
    }
}

/// Dequantizes one `block_q4_1` (`ggml/src/ggml-common.h`), 20 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | scale |
/// | 2 | `m: f16` | minimum (offset) |
/// | 4 | `qs: u8[16]` | 4-bit codes, nibble order as in the module docs |
///
/// Value: `(d · q) + m`, two roundings (no fused multiply-add).
pub fn dequantize_q4_1(block: &[u8; Q4_1_BYTES], out: &mut [f32; QK32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let q = nibbles(&block[4..]);
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * f32::from(q) + m;
    }
}

/// Dequantizes one `block_q5_0` (`ggml/src/ggml-common.h`), 22 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | scale |
/// | 2 | `qh: u8[4]` | fifth bits, read as a little-endian `u32` |
/// | 6 | `qs: u8[16]` | low 4 bits, nibble order as in the module docs |
///
/// Value: `d · (q − 16)`, with `q − 16` formed as an integer.
pub fn dequantize_q5_0(block: &[u8; Q5_0_BYTES], out: &mut [f32; QK32]) {
    let d = f16_at(block, 0);
    let mut q = nibbles(&block[6..]);
    add_fifth_bits(&mut q, u32_at(block, 2));
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * f32::from(q as i8 - 16);
    }
}

/// Dequantizes one `block_q5_1` (`ggml/src/ggml-common.h`), 24 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | scale |
/// | 2 | `m: f16` | minimum (offset) |
/// | 4 | `qh: u8[4]` | fifth bits, read as a little-endian `u32` |
/// | 8 | `qs: u8[16]` | low 4 bits, nibble order as in the module docs |
///
/// Value: `(d · q) + m`, two roundings (no fused multiply-add).
pub fn dequantize_q5_1(block: &[u8; Q5_1_BYTES], out: &mut [f32; QK32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let mut q = nibbles(&block[8..]);
    add_fifth_bits(&mut q, u32_at(block, 4));
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * f32::from(q) + m;
    }
}

/// Dequantizes one `block_q8_0` (`ggml/src/ggml-common.h`), 34 bytes:
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `d: f16` | scale |
/// | 2 | `qs: i8[32]` | codes, element `j` in `qs[j]` |
///
/// Value: `q · d`.
pub fn dequantize_q8_0(block: &[u8; Q8_0_BYTES], out: &mut [f32; QK32]) {
    let d = f16_at(block, 0);
    for (o, &q) in out.iter_mut().zip(&block[2..]) {
        *o = f32::from(q as i8) * d;
    }
}

/// Signed extreme of a block: the first value with the largest magnitude
/// (strict `<`, so ties keep the earlier one), as in the symmetric `_ref`
/// quantizers.
#[inline(always)]
fn signed_absmax(x: &[f32; QK32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Minimum and maximum of a block, from `FLT_MAX` / `-FLT_MAX` starts.
#[inline(always)]
fn min_max(x: &[f32; QK32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, f32::MIN);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// The reciprocal the `_ref` quantizers multiply by: `1/d`, or 0 when `d`
/// is zero.
#[inline(always)]
fn recip_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The C expression `(int8_t)v` (then widened back), as the reference
/// binary evaluates it.
#[inline(always)]
fn as_i8(v: f32) -> i32 {
    i32::from(c_float_to_int(v) as i8)
}

/// Packs 32 codes of up to 5 bits: low nibbles into `qs` (elements 0..16 low,
/// 16..32 high), and, when `qh_at` is given, fifth bits into the `u32` there.
#[inline(always)]
fn pack_codes<const B: usize>(
    q: &[u8; QK32],
    block: &mut [u8; B],
    qh_at: Option<usize>,
    qs_at: usize,
) {
    let mut qh = 0u32;
    for j in 0..HALF {
        let (a, b) = (q[j], q[j + HALF]);
        block[qs_at + j] = (a & 0x0f) | ((b & 0x0f) << 4);
        qh |= u32::from(a >> 4 & 1) << j;
        qh |= u32::from(b >> 4 & 1) << (j + HALF);
    }
    if let Some(at) = qh_at {
        block[at..at + 4].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Quantizes 32 values to one `block_q4_0` (`quantize_row_q4_0_ref`):
/// `d = max / −8` for the signed extreme `max`; code
/// `min(15, (int8)(x/d + 8.5))`.
pub fn quantize_q4_0(x: &[f32; QK32], out: &mut [u8; Q4_0_BYTES]) {
    let d = signed_absmax(x) / -8.0;
    let id = recip_or_zero(d);
    put_f16(out, 0, d);
    let mut q = [0u8; QK32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = as_i8(v * id + 8.5).min(15) as u8;
    }
    pack_codes(&q, out, None, 2);
}

/// Quantizes 32 values to one `block_q4_1` (`quantize_row_q4_1_ref`):
/// `d = (max − min)/15`, `m = min`; code `min(15, (int8)((x − min)/d + 0.5))`.
pub fn quantize_q4_1(x: &[f32; QK32], out: &mut [u8; Q4_1_BYTES]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = recip_or_zero(d);
    put_f16(out, 0, d);
    put_f16(out, 2, min);
    let mut q = [0u8; QK32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = as_i8((v - min) * id + 0.5).min(15) as u8;
    }
    pack_codes(&q, out, None, 4);
}

/// Quantizes 32 values to one `block_q5_0` (`quantize_row_q5_0_ref`):
/// `d = max / −16` for the signed extreme; code `min(31, (int8)(x/d + 16.5))`.
pub fn quantize_q5_0(x: &[f32; QK32], out: &mut [u8; Q5_0_BYTES]) {
    let d = signed_absmax(x) / -16.0;
    let id = recip_or_zero(d);
    put_f16(out, 0, d);
    let mut q = [0u8; QK32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = as_i8(v * id + 16.5).min(31) as u8;
    }
    pack_codes(&q, out, Some(2), 6);
}

/// Quantizes 32 values to one `block_q5_1` (`quantize_row_q5_1_ref`):
/// `d = (max − min)/31`, `m = min`; code `(uint8)((x − min)/d + 0.5)`
/// (no clamp in the reference).
pub fn quantize_q5_1(x: &[f32; QK32], out: &mut [u8; Q5_1_BYTES]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = recip_or_zero(d);
    put_f16(out, 0, d);
    put_f16(out, 2, min);
    let mut q = [0u8; QK32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = c_float_to_int((v - min) * id + 0.5) as u8;
    }
    pack_codes(&q, out, Some(4), 8);
}

/// Quantizes 32 values to one `block_q8_0` (`quantize_row_q8_0_ref`):
/// `d = max|x|/127`; code `roundf(x/d)` (half away from zero).
pub fn quantize_q8_0(x: &[f32; QK32], out: &mut [u8; Q8_0_BYTES]) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = recip_or_zero(d);
    put_f16(out, 0, d);
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = c_float_to_int((v * id).round()) as u8;
    }
}
