//! The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Layouts (`ggml/src/ggml-common.h`, `block_q4_0` … `block_q8_0`):
//!
//! | type | bytes | fields |
//! |---|---|---|
//! | Q4_0 | 18 | `d: f16`, `qs: u8[16]` |
//! | Q4_1 | 20 | `d: f16`, `m: f16`, `qs: u8[16]` |
//! | Q5_0 | 22 | `d: f16`, `qh: u32` (LE), `qs: u8[16]` |
//! | Q5_1 | 24 | `d: f16`, `m: f16`, `qh: u32` (LE), `qs: u8[16]` |
//! | Q8_0 | 34 | `d: f16`, `qs: i8[32]` |
//!
//! Nibbles: element `j < 16` is the low nibble of `qs[j]`, element `j + 16`
//! the high nibble. Q5's fifth bit of element `j` is bit `j` of `qh`.
//! Dequantization follows gguf-py `quants.py`: `d·(q−8)`, `d·q + m`,
//! `d·(q−16)`, `d·q + m`, `q·d`, each a single float32 rounding.

use super::f16_at;

pub const Q4_0_BYTES: usize = 18;
pub const Q4_1_BYTES: usize = 20;
pub const Q5_0_BYTES: usize = 22;
pub const Q5_1_BYTES: usize = 24;
pub const Q8_0_BYTES: usize = 34;

/// The 4-bit value of element `j` (0..32) of a 16-byte nibble array.
#[inline]
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    }
}

/// The 5-bit value of element `j` from its nibble and the `qh` bit field.
#[inline]
fn five_bits(qs: &[u8], qh: u32, j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

pub fn dequant_q4_0(b: &[u8; Q4_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (nibble(&b[2..], j) as i8 - 8) as f32;
    }
}

pub fn dequant_q4_1(b: &[u8; Q4_1_BYTES], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * nibble(&b[4..], j) as f32 + m;
    }
}

pub fn dequant_q5_0(b: &[u8; Q5_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (five_bits(&b[6..], qh, j) as i8 - 16) as f32;
    }
}

pub fn dequant_q5_1(b: &[u8; Q5_1_BYTES], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * five_bits(&b[8..], qh, j) as f32 + m;
    }
}

pub fn dequant_q8_0(b: &[u8; Q8_0_BYTES], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = q as i8 as f32 * d;
    }
}
