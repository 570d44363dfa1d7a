//! The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: layouts
//! and dequantization.
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

use super::{f16_at, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, QK32};

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
