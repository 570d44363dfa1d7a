//! The k-quant super-block formats Q4_K, Q5_K, Q6_K (256 elements).
//!
//! Layouts (`ggml/src/ggml-common.h`, `block_q4_K`, `block_q5_K`, `block_q6_K`):
//!
//! | type | bytes | fields |
//! |---|---|---|
//! | Q4_K | 144 | `d: f16`, `dmin: f16`, `scales: u8[12]`, `qs: u8[128]` |
//! | Q5_K | 176 | `d: f16`, `dmin: f16`, `scales: u8[12]`, `qh: u8[32]`, `qs: u8[128]` |
//! | Q6_K | 210 | `ql: u8[128]`, `qh: u8[64]`, `scales: i8[16]`, `d: f16` (last) |
//!
//! Q4_K/Q5_K: eight sub-blocks of 32 with 6-bit scale `sc` and min `m`
//! packed in 12 bytes (see [`scale_min`]); sub-block `j = 2g + h` takes the
//! low (`h = 0`) or high (`h = 1`) nibbles of `qs[32g..32g+32]`; Q5_K's
//! fifth bit of sub-block `j` element `l` is bit `j` of `qh[l]`. Value:
//! `(d·sc)·q − (dmin·m)`, with `d·sc` and `dmin·m` rounded to f32 first, as
//! gguf-py computes them.
//!
//! Q6_K: two halves of 128; in half `h`, element `128h + 32k + l` takes
//! `ql[64h + l + 32(k & 1)]`'s low (`k < 2`) or high nibble and bits `2k..2k+2`
//! of `qh[32h + l]`; `q − 32` is scaled by `(d·scales[e / 16])`.

use super::f16_at;

pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;

/// Unpacks the 6-bit scale and min of sub-block `j` (0..8) from the 12
/// packed bytes (`get_scale_min_k4` in ggml-quants.c).
#[inline]
pub fn scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Shared Q4_K/Q5_K decoding; `qh` is Q5_K's high-bit array.
#[inline]
fn dequant_k4_k5(
    d: f32,
    dmin: f32,
    scales: &[u8],
    qs: &[u8],
    qh: Option<&[u8]>,
    out: &mut [f32; 256],
) {
    for j in 0..8 {
        let (sc, m) = scale_min(scales, j);
        let dj = d * sc as f32;
        let mj = dmin * m as f32;
        let (g, high) = (j / 2, j % 2 == 1);
        for l in 0..32 {
            let byte = qs[32 * g + l];
            let mut q = if high { byte >> 4 } else { byte & 0x0F };
            if let Some(qh) = qh {
                q |= ((qh[l] >> j) & 1) << 4;
            }
            out[32 * j + l] = dj * q as f32 - mj;
        }
    }
}

pub fn dequant_q4_k(b: &[u8; Q4_K_BYTES], out: &mut [f32; 256]) {
    dequant_k4_k5(
        f16_at(b, 0),
        f16_at(b, 2),
        &b[4..16],
        &b[16..144],
        None,
        out,
    );
}

pub fn dequant_q5_k(b: &[u8; Q5_K_BYTES], out: &mut [f32; 256]) {
    dequant_k4_k5(
        f16_at(b, 0),
        f16_at(b, 2),
        &b[4..16],
        &b[48..176],
        Some(&b[16..48]),
        out,
    );
}

pub fn dequant_q6_k(b: &[u8; Q6_K_BYTES], out: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let lo = ql[64 * h + l + 32 * (k & 1)];
                let lo = if k < 2 { lo & 0x0F } else { lo >> 4 };
                let hi = (qh[32 * h + l] >> (2 * k)) & 3;
                let e = 128 * h + 32 * k + l;
                let scale = d * scales[e / 16] as i8 as f32;
                out[e] = scale * ((lo | (hi << 4)) as i8 - 32) as f32;
            }
        }
    }
}
