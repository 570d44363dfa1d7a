//! GGML tensor types, their dequantization to `f32` and their quantization
//! from `f32`.
//!
//! This module owns five things:
//!
//! * [`GgmlType`], the table of every tensor type gguf-py 0.19.0 knows, with
//!   its numeric id, spelling, elements per block and bytes per block. The
//!   ids must agree with `enum ggml_type` in `ggml/include/ggml.h` and with
//!   `GGMLQuantizationType` in `gguf-py/gguf/constants.py`; the sizes with
//!   the block structs in `ggml/src/ggml-common.h` and with
//!   `GGML_QUANT_SIZES` in `gguf-py/gguf/constants.py` (where the two differ,
//!   only for Q8_1, gguf-py wins; see [`Q8_1_BYTES`]). All block and byte
//!   sizes are the named constants below ([`QK_K`], [`Q4_K_BYTES`], …) and
//!   the type table in this file; nothing else in the crate should repeat
//!   them.
//! * The byte layouts of the blocks, documented next to their decoders in
//!   [`legacy`] (32-element formats) and [`kquants`] (256-element
//!   super-blocks), together with their decoders and encoders.
//! * [`dequantize`], which turns whole blocks into `f32` values equal bit for
//!   bit to `gguf.quants.dequantize` of gguf-py 0.19.0
//!   (`gguf-py/gguf/quants.py`). That means doing the same float32
//!   operations in the same order as gguf-py's numpy code, which is not
//!   always the order of `dequantize_row_*` in `ggml/src/ggml-quants.c`.
//!   The unit tests check this against golden vectors made by
//!   `tests/oracle/make_quant_goldens.py` (stored in `fixtures/quant/`).
//! * [`quantize_row`], which encodes `f32` values into blocks byte for byte
//!   as llama.cpp's `ggml_quantize_chunk` does without an importance matrix
//!   (the path `llama-quantize` takes without `--imatrix`): the
//!   `quantize_row_*_ref` routines of `ggml/src/ggml-quants.c` and the
//!   scalar `GGML_FP32_TO_FP16` / `ggml_compute_fp32_to_bf16` conversions of
//!   `ggml/src/ggml-impl.h`. Bit-exactness needs the same float32 operations
//!   in the same order; the reference library `libggml-base` is built for
//!   baseline x86-64 (no `-march=native`, so no fused multiply-add) and
//!   Rust never contracts `a * b + c` either. Golden vectors from the built
//!   library (`tests/oracle/make_quantize_goldens.py`, `fixtures/quantize/`)
//!   check this block by block. [`ftype`] picks the per-tensor types of a
//!   `llama-quantize` file type.
//!
//! * [`dot`], llama.cpp's integer dot products of packed rows with 8-bit
//!   activations, which the engine uses to multiply quantized weights.
//! * [`gptq`], the GPTQ algorithm for one weight matrix and its Hessian,
//!   agreeing with llm-compressor's `quantize_weight`.
//! * [`int4pack`], integer codes packed into int32 words as GPTQ, AWQ GEMM
//!   and compressed-tensors checkpoints store them, and read back.
//!
//! Everything here except [`gptq`] (a whole matrix, rows in parallel) and
//! [`int4pack`] (whole layers; its reader a range of rows) works on one
//! block at a time, allocates nothing, and does no threading: callers
//! parallelise over rows.
//!
//! Length: over 800 lines because half of it is the bit-exactness tests
//! against gguf-py's and libggml's goldens, which belong beside the type
//! table and conversions they check.

pub mod awq;
pub mod bnb;
pub mod dot;
pub mod ftype;
pub mod gptq;
pub mod int4pack;
pub mod kquants;
pub mod legacy;
pub mod minmax;

use half::f16;

/// Elements per block of the 32-element formats (`QK4_0`, `QK4_1`, `QK5_0`,
/// `QK5_1`, `QK8_0`, `QK8_1`, `QK4_NL`, `QK_MXFP4` in `ggml-common.h`).
pub const QK32: usize = 32;
/// Elements per super-block of the k-quants and i-quants (`QK_K`).
pub const QK_K: usize = 256;
/// Elements per NVFP4 block (`QK_NVFP4`).
pub const QK_NVFP4: usize = 64;
/// Elements per Q1_0 block (gguf-py `GGML_QUANT_SIZES`).
pub const QK1_0: usize = 128;

/// Bytes per `block_q4_0`: `d: f16`, `qs: u8[16]`.
pub const Q4_0_BYTES: usize = 2 + QK32 / 2;
/// Bytes per `block_q4_1`: `d: f16`, `m: f16`, `qs: u8[16]`.
pub const Q4_1_BYTES: usize = 2 + 2 + QK32 / 2;
/// Bytes per `block_q5_0`: `d: f16`, `qh: u8[4]`, `qs: u8[16]`.
pub const Q5_0_BYTES: usize = 2 + 4 + QK32 / 2;
/// Bytes per `block_q5_1`: `d: f16`, `m: f16`, `qh: u8[4]`, `qs: u8[16]`.
pub const Q5_1_BYTES: usize = 2 + 2 + 4 + QK32 / 2;
/// Bytes per `block_q8_0`: `d: f16`, `qs: i8[32]`.
pub const Q8_0_BYTES: usize = 2 + QK32;
/// Bytes per Q8_1 block as gguf-py 0.19.0 counts them (`4 + 4 + 32`, from
/// when `d` and `s` were f32). Today's `block_q8_1` in `ggml-common.h` has
/// f16 `d` and `s` (36 bytes); Q8_1 is an in-memory format for dot products
/// and never appears in GGUF files, and this table follows gguf-py.
pub const Q8_1_BYTES: usize = 4 + 4 + QK32;
/// Size of the packed 6-bit scales and mins of Q4_K/Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;
/// Bytes per `block_q2_K`: `scales: u8[16]`, `qs: u8[64]`, `d`, `dmin: f16`.
pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;
/// Bytes per `block_q3_K`: `hmask: u8[32]`, `qs: u8[64]`, `scales: u8[12]`,
/// `d: f16`.
pub const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
/// Bytes per `block_q4_K`: `d`, `dmin: f16`, `scales: u8[12]`, `qs: u8[128]`.
pub const Q4_K_BYTES: usize = 2 + 2 + K_SCALE_SIZE + QK_K / 2;
/// Bytes per `block_q5_K`: `d`, `dmin: f16`, `scales: u8[12]`, `qh: u8[32]`,
/// `qs: u8[128]`.
pub const Q5_K_BYTES: usize = 2 + 2 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2;
/// Bytes per `block_q6_K`: `ql: u8[128]`, `qh: u8[64]`, `scales: i8[16]`,
/// `d: f16`.
pub const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Bytes per `block_q8_K`: `d: f32`, `qs: i8[256]`, `bsums: i16[16]`.
pub const Q8_K_BYTES: usize = 4 + QK_K + QK_K / 8;

/// Defines [`GgmlType`] and its per-type facts from one list, so that the
/// variant name, its gguf-py spelling, id and sizes cannot drift apart.
macro_rules! ggml_types {
    ($($(#[$doc:meta])* $variant:ident = $id:literal, $block:expr, $bytes:expr;)*) => {
        /// A GGML tensor type: every member of gguf-py 0.19.0's
        /// `GGMLQuantizationType`, with the same numeric id (the `ggml_type`
        /// stored in GGUF tensor infos) and the same spelling.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum GgmlType {
            $($(#[$doc])* $variant = $id,)*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant),*];

            /// The type with `ggml_type` id `id`, if gguf-py 0.19.0 knows it.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// gguf-py's spelling of the type, e.g. `"Q4_K"` or `"BF16"`.
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => stringify!($variant),)*
                }
            }

            /// Elements per block (1 for the plain types such as F32).
            pub fn block_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => ($block) as u64,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> u64 {
                match self {
                    $(GgmlType::$variant => ($bytes) as u64,)*
                }
            }
        }
    };
}

ggml_types! {
    /// IEEE binary32.
    F32 = 0, 1, 4;
    /// IEEE binary16.
    F16 = 1, 1, 2;
    /// 4-bit, one f16 scale per 32 elements.
    Q4_0 = 2, QK32, Q4_0_BYTES;
    /// 4-bit, f16 scale and min per 32 elements.
    Q4_1 = 3, QK32, Q4_1_BYTES;
    /// 5-bit, one f16 scale per 32 elements.
    Q5_0 = 6, QK32, Q5_0_BYTES;
    /// 5-bit, f16 scale and min per 32 elements.
    Q5_1 = 7, QK32, Q5_1_BYTES;
    /// 8-bit, one f16 scale per 32 elements.
    Q8_0 = 8, QK32, Q8_0_BYTES;
    /// 8-bit with f16 scale and scaled sum (an intermediate format).
    Q8_1 = 9, QK32, Q8_1_BYTES;
    /// 2-bit k-quant.
    Q2_K = 10, QK_K, Q2_K_BYTES;
    /// 3-bit k-quant.
    Q3_K = 11, QK_K, Q3_K_BYTES;
    /// 4-bit k-quant.
    Q4_K = 12, QK_K, Q4_K_BYTES;
    /// 5-bit k-quant.
    Q5_K = 13, QK_K, Q5_K_BYTES;
    /// 6-bit k-quant.
    Q6_K = 14, QK_K, Q6_K_BYTES;
    /// 8-bit k-quant with f32 scale (an intermediate format).
    Q8_K = 15, QK_K, Q8_K_BYTES;
    /// i-quant, about 2.06 bits per weight.
    IQ2_XXS = 16, QK_K, 2 + QK_K / 4;
    /// i-quant, about 2.31 bits per weight.
    IQ2_XS = 17, QK_K, 2 + QK_K / 4 + QK_K / 32;
    /// i-quant, about 3.06 bits per weight.
    IQ3_XXS = 18, QK_K, 2 + QK_K / 4 + QK_K / 8;
    /// i-quant, about 1.56 bits per weight.
    IQ1_S = 19, QK_K, 2 + QK_K / 8 + QK_K / 16;
    /// Non-linear 4-bit, 32-element blocks.
    IQ4_NL = 20, QK32, 2 + QK32 / 2;
    /// i-quant, about 3.44 bits per weight.
    IQ3_S = 21, QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    /// i-quant, about 2.56 bits per weight.
    IQ2_S = 22, QK_K, 2 + QK_K / 4 + QK_K / 16;
    /// Non-linear 4-bit, 256-element super-blocks.
    IQ4_XS = 23, QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    /// Signed 8-bit integer.
    I8 = 24, 1, 1;
    /// Signed 16-bit integer.
    I16 = 25, 1, 2;
    /// Signed 32-bit integer.
    I32 = 26, 1, 4;
    /// Signed 64-bit integer.
    I64 = 27, 1, 8;
    /// IEEE binary64.
    F64 = 28, 1, 8;
    /// i-quant, about 1.75 bits per weight.
    IQ1_M = 29, QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    /// bfloat16.
    BF16 = 30, 1, 2;
    /// Ternary, about 1.69 bits per weight.
    TQ1_0 = 34, QK_K, 2 + 4 * 13;
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35, QK_K, 2 + QK_K / 4;
    /// Microscaling FP4 (E8M0 scale, E2M1 values).
    MXFP4 = 39, QK32, 1 + QK32 / 2;
    /// NVIDIA FP4 (four UE4M3 scales, E2M1 values).
    NVFP4 = 40, QK_NVFP4, 4 + QK_NVFP4 / 2;
    /// 1-bit, f16 scale per 128 elements.
    Q1_0 = 41, QK1_0, 2 + QK1_0 / 8;
}

impl GgmlType {
    /// Every type, in id order (an iterator over [`GgmlType::ALL`]).
    pub fn all() -> impl Iterator<Item = GgmlType> {
        Self::ALL.iter().copied()
    }

    /// The numeric `ggml_type` id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type spelled `s`, ignoring ASCII case (`"q4_k"` is Q4_K).
    pub fn from_name(s: &str) -> Option<GgmlType> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// Bytes taken by `n_elements` elements; `None` if that is not a whole
    /// number of blocks or the size does not fit in a `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size();
        if n_elements % block != 0 {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size())
    }

    /// Whether [`dequantize`] handles this type. These are exactly the types
    /// whose output is checked bit for bit against gguf-py.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
        )
    }
}

impl GgmlType {
    /// Whether [`quantize_row`] can encode this type. Each of these is
    /// checked byte for byte against llama.cpp's `ggml_quantize_chunk`.
    pub fn can_quantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
        )
    }
}

impl std::fmt::Display for GgmlType {
    /// Writes [`GgmlType::name`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`dequantize`] refused its input.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The type has no decoder here (see [`GgmlType::can_dequantize`]).
    #[error("dequantizing {ty} is not supported")]
    Unsupported {
        /// The type asked for.
        ty: GgmlType,
    },
    /// The type has no encoder here (see [`GgmlType::can_quantize`]).
    #[error("quantizing to {ty} is not supported")]
    UnsupportedQuantize {
        /// The type asked for.
        ty: GgmlType,
    },
    /// The source is not exactly the bytes of the requested element count.
    #[error(
        "{ty}: {elements} elements need {} bytes, got {bytes}",
        expected_bytes(*.ty, *.elements)
    )]
    LengthMismatch {
        /// The type asked for.
        ty: GgmlType,
        /// Bytes supplied (`src.len()`).
        bytes: usize,
        /// Elements asked for (`dst.len()`).
        elements: usize,
    },
}

/// The expected byte count for an error message, or why there is none.
fn expected_bytes(ty: GgmlType, elements: usize) -> String {
    match ty.bytes_for(elements as u64) {
        Some(b) => b.to_string(),
        None => format!(
            "a whole number of {}-element blocks, so no count of",
            ty.block_size()
        ),
    }
}

/// Dequantizes `src`, whole blocks of `ty`, into `dst`.
///
/// `dst.len()` is the element count and `src.len()` must equal
/// `ty.bytes_for(dst.len())`; otherwise [`QuantError::LengthMismatch`] is
/// returned and `dst` is untouched. Types without a decoder give
/// [`QuantError::Unsupported`] (checked after the length).
///
/// The values are bit-identical to gguf-py 0.19.0's `gguf.quants.dequantize`
/// whenever gguf-py's are not NaN; F32, F16 and BF16 also match NaN bit
/// patterns exactly. A block type whose f16 fields hold NaN or infinity gives
/// NaN in the same places as gguf-py, but when two NaNs meet in one operation
/// the payload that survives can differ (Rust leaves it unspecified; numpy
/// gets it from its SIMD loop).
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if ty.bytes_for(dst.len() as u64) != Some(src.len() as u64) {
        return Err(QuantError::LengthMismatch {
            ty,
            bytes: src.len(),
            elements: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => f16_slice_to_f32(src, dst),
        GgmlType::BF16 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q4_0 => per_block(src, dst, legacy::dequantize_q4_0),
        GgmlType::Q4_1 => per_block(src, dst, legacy::dequantize_q4_1),
        GgmlType::Q5_0 => per_block(src, dst, legacy::dequantize_q5_0),
        GgmlType::Q5_1 => per_block(src, dst, legacy::dequantize_q5_1),
        GgmlType::Q8_0 => per_block(src, dst, legacy::dequantize_q8_0),
        GgmlType::Q2_K => per_block(src, dst, kquants::dequantize_q2_k),
        GgmlType::Q3_K => per_block(src, dst, kquants::dequantize_q3_k),
        GgmlType::Q4_K => per_block(src, dst, kquants::dequantize_q4_k),
        GgmlType::Q5_K => per_block(src, dst, kquants::dequantize_q5_k),
        GgmlType::Q6_K => per_block(src, dst, kquants::dequantize_q6_k),
        _ => return Err(QuantError::Unsupported { ty }),
    }
    Ok(())
}

/// Quantizes `src` (a whole number of blocks of `ty`, typically one or more
/// tensor rows) into `dst`, exactly as llama.cpp's `ggml_quantize_chunk`
/// with no importance matrix.
///
/// `src.len()` is the element count and `dst.len()` must equal
/// `ty.bytes_for(src.len())`; otherwise [`QuantError::LengthMismatch`] is
/// returned and `dst` is untouched. Types without an encoder give
/// [`QuantError::UnsupportedQuantize`] (checked after the length).
///
/// Blocks are independent, so callers may split a tensor anywhere on a block
/// boundary and run the pieces in parallel (rayon over rows); this function
/// allocates nothing and spawns nothing. Finite inputs give the reference
/// bytes; NaN inputs give some deterministic bytes that need not match (the
/// C code converts NaN to an integer, which is undefined behaviour).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if ty.bytes_for(src.len() as u64) != Some(dst.len() as u64) {
        return Err(QuantError::LengthMismatch {
            ty,
            bytes: dst.len(),
            elements: src.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, v) in dst.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, &v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, &v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => per_block_encode(src, dst, legacy::quantize_q4_0),
        GgmlType::Q4_1 => per_block_encode(src, dst, legacy::quantize_q4_1),
        GgmlType::Q5_0 => per_block_encode(src, dst, legacy::quantize_q5_0),
        GgmlType::Q5_1 => per_block_encode(src, dst, legacy::quantize_q5_1),
        GgmlType::Q8_0 => per_block_encode(src, dst, legacy::quantize_q8_0),
        GgmlType::Q2_K => per_block_encode(src, dst, kquants::quantize_q2_k),
        GgmlType::Q3_K => per_block_encode(src, dst, kquants::quantize_q3_k),
        GgmlType::Q4_K => per_block_encode(src, dst, kquants::quantize_q4_k),
        GgmlType::Q5_K => per_block_encode(src, dst, kquants::quantize_q5_k),
        GgmlType::Q6_K => per_block_encode(src, dst, kquants::quantize_q6_k),
        _ => return Err(QuantError::UnsupportedQuantize { ty }),
    }
    Ok(())
}

/// Runs a one-block encoder over matching chunks of `src` and `dst`, whose
/// lengths the caller has checked to be the same whole number of blocks.
fn per_block_encode<const N: usize, const B: usize>(
    src: &[f32],
    dst: &mut [u8],
    encode: fn(&[f32; N], &mut [u8; B]),
) {
    for (s, d) in src.chunks_exact(N).zip(dst.chunks_exact_mut(B)) {
        if let (Ok(s), Ok(d)) = (<&[f32; N]>::try_from(s), <&mut [u8; B]>::try_from(d)) {
            encode(s, d);
        }
    }
}

/// Encodes rows of f32 values (`cols` per row) as `ty` into `out`: float
/// types directly, block types row by row in parallel with [`quantize_row`].
pub fn quantize_rows(
    ty: GgmlType,
    values: &[f32],
    cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), QuantError> {
    use rayon::prelude::*;
    let cols = cols.max(1);
    let row_bytes = ty.bytes_for(cols as u64).unwrap_or(0) as usize;
    out.clear();
    out.resize(values.len() / cols * row_bytes, 0);
    values
        .par_chunks(cols)
        .zip(out.par_chunks_mut(row_bytes.max(1)))
        .try_for_each(|(src, dst)| quantize_row(ty, src, dst))
}

/// Converts `f32` to IEEE half bits as ggml's scalar `GGML_FP32_TO_FP16`
/// (`ggml/src/ggml-impl.h`): round to nearest even, overflow to infinity,
/// subnormals kept; every NaN becomes the quiet NaN `0x7e00` with the input's
/// sign (the payload is dropped, unlike the `half` crate).
#[inline]
pub fn f32_to_f16_bits(v: f32) -> u16 {
    if v.is_nan() {
        ((v.to_bits() >> 16) as u16 & 0x8000) | 0x7e00
    } else {
        f16::from_f32(v).to_bits()
    }
}

/// Converts `f32` to bfloat16 bits as ggml's `ggml_compute_fp32_to_bf16`
/// (`ggml/src/ggml-impl.h`): round to nearest even on the top 16 bits; a NaN
/// keeps its top 16 bits with the quiet bit forced on.
#[inline]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 0x40) as u16
    } else {
        // No overflow: the largest non-NaN pattern is 0xff80_0000.
        ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// `v.round_ties_even()` for every f32, bit for bit (sign of zero, NaN and
/// infinities included), without the libm `rintf` call it becomes on
/// baseline x86-64, which keeps the quantizers' loops scalar: below 2²³,
/// adding and subtracting ±2²³ leaves the integer rounded half to even;
/// from 2²³ up every f32 is an integer already.
#[inline(always)]
pub fn round_ties_even(v: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let c = TWO_23.copysign(v);
    let r = if v.abs() < TWO_23 { (v + c) - c } else { v };
    r.copysign(v)
}

/// ggml's `nearest_int` (`ggml/src/ggml-quants.c`): adding 1.5·2²³ leaves
/// the integer part in the low mantissa bits, rounded half to even. Only
/// meaningful for |v| < 2²², like the original; outside that it returns the
/// same garbage the C code does, which keeps the two bit-identical.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// A C `float` → small-integer cast as x86-64 GCC compiles it
/// (`cvttss2si`): truncation toward zero, and `i32::MIN` for NaN or values
/// outside the `i32` range (undefined behaviour in C, but what the reference
/// binary does; it happens when a scale's reciprocal overflows). Callers then
/// keep the low bits as C's narrowing conversion does.
#[inline(always)]
fn c_float_to_int(v: f32) -> i32 {
    if v > -2_147_483_904.0 && v < 2_147_483_648.0 {
        v as i32
    } else {
        i32::MIN
    }
}

/// Writes `v` as little-endian f16 bits at `block[at..at + 2]`.
#[inline(always)]
fn put_f16<const B: usize>(block: &mut [u8; B], at: usize, v: f32) {
    block[at..at + 2].copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// Widens little-endian f16 values. `half`'s slice conversion uses F16C
/// when the CPU has it (about 10× the per-element path, which matters when
/// quantizing f16 models); it quiets signalling NaNs, so NaN elements are
/// redone one by one to keep their exact bits.
fn f16_slice_to_f32(src: &[u8], dst: &mut [f32]) {
    // SAFETY: every bit pattern is a valid f16.
    let (head, halves, _) = unsafe { src.align_to::<f16>() };
    if head.is_empty() && halves.len() == dst.len() && cfg!(target_endian = "little") {
        use half::slice::HalfFloatSliceExt;
        halves.convert_to_f32_slice(dst);
        for (o, h) in dst.iter_mut().zip(halves) {
            if h.is_nan() {
                *o = f16_bits_to_f32(h.to_bits());
            }
        }
        return;
    }
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Runs a one-block decoder over matching chunks of `src` and `dst`, whose
/// lengths the caller has checked to be the same whole number of blocks.
fn per_block<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    decode: fn(&[u8; B], &mut [f32; N]),
) {
    for (s, d) in src.chunks_exact(B).zip(dst.chunks_exact_mut(N)) {
        // `chunks_exact` hands out exactly B and N items, so both conversions
        // succeed; the `if let` keeps this free of panicking paths.
        if let (Ok(s), Ok(d)) = (<&[u8; B]>::try_from(s), <&mut [f32; N]>::try_from(d)) {
            decode(s, d);
        }
    }
}

/// Converts IEEE half bits to `f32` as numpy's `astype(np.float32)` does:
/// exactly for every finite value and infinity, and for NaN keeping sign and
/// payload without setting the quiet bit (a signalling f16 NaN stays
/// signalling; `half` and the F16C instruction would quiet it).
#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    if h & 0x7c00 == 0x7c00 && h & 0x03ff != 0 {
        let h = u32::from(h);
        f32::from_bits(((h & 0x8000) << 16) | 0x7f80_0000 | ((h & 0x03ff) << 13))
    } else {
        f16::from_bits(h).to_f32()
    }
}

/// Reads the little-endian f16 at `block[at..at + 2]` as `f32`.
#[inline]
fn f16_at<const B: usize>(block: &[u8; B], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([block[at], block[at + 1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ties_even_equals_std_bit_for_bit() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999997,
            4_194_303.5,
            4_194_304.5,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            16_777_215.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        // Every 997th bit pattern covers every exponent and both signs.
        let sampled = (0..=u32::MAX).step_by(997).map(f32::from_bits);
        for v in specials.into_iter().chain(sampled) {
            let (got, want) = (round_ties_even(v), v.round_ties_even());
            if want.is_nan() {
                assert!(got.is_nan(), "{v:e}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{v:e}");
            }
        }
    }

    #[test]
    fn every_id_round_trips() {
        assert_eq!(GgmlType::ALL.len(), 34);
        for (i, &t) in GgmlType::ALL.iter().enumerate() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
            assert_eq!(t.to_string(), t.name());
            assert!(t.block_size() >= 1 && t.type_size() >= 1, "{t}");
            if i > 0 {
                assert!(GgmlType::ALL[i - 1].id() < t.id(), "ids in order");
            }
        }
        assert_eq!(GgmlType::all().count(), 34);
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "{id}");
        }
        assert_eq!(GgmlType::from_name("Q4_K_M"), None);
        assert_eq!(GgmlType::from_name(""), None);
        assert_eq!(GgmlType::from_name("bf16"), Some(GgmlType::BF16));
        assert_eq!(GgmlType::Q4_K.id(), 12);
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::MXFP4.id(), 39);
    }

    /// `GGML_QUANT_SIZES` of gguf-py 0.19.0, as (id, block size, type size).
    #[test]
    fn sizes_match_gguf_py() {
        const SIZES: &[(u32, u64, u64)] = &[
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 18),
            (3, 32, 20),
            (6, 32, 22),
            (7, 32, 24),
            (8, 32, 34),
            (9, 32, 40),
            (10, 256, 84),
            (11, 256, 110),
            (12, 256, 144),
            (13, 256, 176),
            (14, 256, 210),
            (15, 256, 292),
            (16, 256, 66),
            (17, 256, 74),
            (18, 256, 98),
            (19, 256, 50),
            (20, 32, 18),
            (21, 256, 110),
            (22, 256, 82),
            (23, 256, 136),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (29, 256, 56),
            (30, 1, 2),
            (34, 256, 54),
            (35, 256, 66),
            (39, 32, 17),
            (40, 64, 36),
            (41, 128, 18),
        ];
        assert_eq!(SIZES.len(), GgmlType::ALL.len());
        for &(id, block, bytes) in SIZES {
            let t = GgmlType::from_id(id).unwrap();
            assert_eq!((t.block_size(), t.type_size()), (block, bytes), "{t}");
        }
    }

    #[test]
    fn bytes_for() {
        assert_eq!(GgmlType::Q4_K.bytes_for(256), Some(144));
        assert_eq!(GgmlType::Q4_K.bytes_for(255), None);
        assert_eq!(GgmlType::Q4_K.bytes_for(0), Some(0));
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::Q8_0.bytes_for(48), None);
        assert_eq!(GgmlType::F32.bytes_for(3), Some(12));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::I64.bytes_for(u64::MAX / 8), Some(u64::MAX - 7));
        assert_eq!(GgmlType::Q8_0.bytes_for(u64::MAX / 32 * 32), None);
    }

    #[test]
    fn length_mismatch() {
        let mut out = [7f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut out).unwrap_err();
        assert!(matches!(
            e,
            QuantError::LengthMismatch {
                ty: GgmlType::Q8_0,
                bytes: 33,
                elements: 32
            }
        ));
        assert_eq!(e.to_string(), "Q8_0: 32 elements need 34 bytes, got 33");
        assert!(out.iter().all(|&v| v == 7.0), "dst untouched on error");

        let mut out = [0f32; 31];
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut out).unwrap_err();
        assert!(matches!(e, QuantError::LengthMismatch { .. }));
        assert!(
            e.to_string().contains("whole number of 32-element blocks"),
            "{e}"
        );

        let mut out = [0f32; 2];
        assert!(dequantize(GgmlType::F32, &[0; 7], &mut out).is_err());
        assert!(dequantize(GgmlType::F32, &[0; 8], &mut out).is_ok());
        let mut out = [0f32; 256];
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let n = ty.type_size() as usize;
            assert!(dequantize(ty, &vec![0; n - 1], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n + 1], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n], &mut out).is_ok());
        }
        assert!(dequantize(GgmlType::Q4_0, &[], &mut []).is_ok());
    }

    #[test]
    fn unsupported_types() {
        for &ty in GgmlType::ALL.iter().filter(|t| !t.can_dequantize()) {
            let n = ty.block_size() as usize;
            let mut out = vec![0f32; n];
            let src = vec![0u8; ty.type_size() as usize];
            let e = dequantize(ty, &src, &mut out).unwrap_err();
            assert!(matches!(e, QuantError::Unsupported { ty: t } if t == ty));
            assert_eq!(e.to_string(), format!("dequantizing {ty} is not supported"));
        }
        assert!(!GgmlType::Q8_K.can_dequantize());
        assert!(!GgmlType::IQ4_NL.can_dequantize());
        assert!(GgmlType::BF16.can_dequantize());
    }

    /// Arbitrary byte patterns decode without panicking, for every
    /// supported type and several block counts.
    #[test]
    fn any_bytes_decode() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &ty in GgmlType::ALL.iter().filter(|t| t.can_dequantize()) {
            for blocks in [0usize, 1, 3] {
                let n = blocks * ty.block_size() as usize;
                let src: Vec<u8> = (0..blocks * ty.type_size() as usize)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                let mut out = vec![0f32; n];
                dequantize(ty, &src, &mut out).unwrap();
            }
        }
    }

    /// Deterministic roughly Gaussian values (sum of uniforms), std ≈ `s`.
    fn gaussian(n: usize, seed: u64, s: f32) -> Vec<f32> {
        let mut state = seed | 1;
        let mut uni = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| s * (0..12).map(|_| uni()).sum::<f32>())
            .collect()
    }

    /// dequantize(quantize(x)) is close to x, with the error ordered by bits
    /// per weight, for every type the encoder handles.
    #[test]
    fn quantize_round_trip() {
        let x = gaussian(4 * QK_K, 7, 0.02);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        let rel_rmse = |ty: GgmlType| {
            let mut q = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
            quantize_row(ty, &x, &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize(ty, &q, &mut y).unwrap();
            let se: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            (se / x.len() as f32).sqrt() / rms
        };
        use GgmlType::*;
        let bounds = [
            (F32, 0.0),
            (F16, 1e-3),
            (BF16, 5e-3),
            (Q8_0, 0.01),
            (Q6_K, 0.03),
            (Q5_1, 0.06),
            (Q5_0, 0.06),
            (Q5_K, 0.06),
            (Q4_1, 0.12),
            (Q4_0, 0.12),
            (Q4_K, 0.12),
            (Q3_K, 0.25),
            (Q2_K, 0.45),
        ];
        for &(ty, bound) in &bounds {
            let e = rel_rmse(ty);
            assert!(e <= bound, "{ty}: relative RMSE {e} > {bound}");
        }
        assert!(rel_rmse(Q8_0) < rel_rmse(Q6_K));
        assert!(rel_rmse(Q6_K) < rel_rmse(Q5_K));
        assert!(rel_rmse(Q5_K) < rel_rmse(Q4_K));
        assert!(rel_rmse(Q4_K) < rel_rmse(Q3_K));
        assert!(rel_rmse(Q3_K) < rel_rmse(Q2_K));
        assert!(rel_rmse(Q5_0) < rel_rmse(Q4_0));
        assert_eq!(
            bounds.len(),
            GgmlType::ALL.iter().filter(|t| t.can_quantize()).count()
        );
    }

    #[test]
    fn quantize_errors() {
        let x = [0.5f32; 32];
        let mut out = [9u8; 33];
        let e = quantize_row(GgmlType::Q8_0, &x, &mut out).unwrap_err();
        assert!(matches!(
            e,
            QuantError::LengthMismatch {
                bytes: 33,
                elements: 32,
                ..
            }
        ));
        assert!(out.iter().all(|&b| b == 9), "dst untouched on error");
        let mut out = vec![0u8; 144];
        assert!(
            quantize_row(GgmlType::Q4_K, &x, &mut out).is_err(),
            "not a whole super-block"
        );
        let mut out = vec![0u8; GgmlType::IQ4_NL.type_size() as usize];
        let e = quantize_row(GgmlType::IQ4_NL, &x, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "quantizing to IQ4_NL is not supported");
        assert!(quantize_row(GgmlType::Q4_K, &[], &mut []).is_ok());
    }

    #[test]
    fn conversions() {
        assert_eq!(f32_to_f16_bits(f32::from_bits(0xffc0_1234)), 0xfe00);
        assert_eq!(f32_to_f16_bits(65520.0), 0x7c00, "rounds up to infinity");
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3c00, "tie to even");
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(
            f32_to_bf16_bits(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "tie to even"
        );
        assert_eq!(
            f32_to_bf16_bits(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even"
        );
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-3.5), -4);
        assert_eq!(c_float_to_int(f32::INFINITY), i32::MIN);
        assert_eq!(c_float_to_int(-7.9), -7);
    }

    #[test]
    fn f16_specials() {
        assert_eq!(f16_bits_to_f32(0x3c00), 1.0);
        assert_eq!(f16_bits_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert_eq!(f16_bits_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_bits_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_bits_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(f16_bits_to_f32(0x7c01).to_bits(), 0x7f80_2000);
        assert_eq!(f16_bits_to_f32(0xfe00).to_bits(), 0xffc0_0000);
    }
}

/// Bit-for-bit agreement with gguf-py 0.19.0 on the golden vectors in
/// `fixtures/quant/` (made by `tests/oracle/make_quant_goldens.py`).
#[cfg(test)]
mod golden {
    use super::*;

    /// Dequantizes `blocks` and compares every value's bits with `expected`
    /// (little-endian f32).
    fn check(ty: GgmlType, blocks: &[u8], expected: &[u8]) {
        let want: Vec<u32> = expected
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(ty.bytes_for(want.len() as u64), Some(blocks.len() as u64));
        let mut got = vec![0f32; want.len()];
        dequantize(ty, blocks, &mut got).unwrap();
        let mut bad = 0;
        for (i, (g, &w)) in got.iter().zip(&want).enumerate() {
            if g.to_bits() != w {
                if bad < 10 {
                    eprintln!(
                        "{ty} element {i} (block {}): got {g:e} ({:#010x}), gguf-py {:e} ({w:#010x})",
                        i as u64 / ty.block_size(),
                        g.to_bits(),
                        f32::from_bits(w)
                    );
                }
                bad += 1;
            }
        }
        assert_eq!(bad, 0, "{ty}: {bad} of {} values differ", want.len());
    }

    macro_rules! golden {
        ($($test:ident: $ty:ident;)*) => {$(
            #[test]
            fn $test() {
                check(
                    GgmlType::$ty,
                    include_bytes!(concat!("../../fixtures/quant/", stringify!($ty), ".blocks")),
                    include_bytes!(concat!("../../fixtures/quant/", stringify!($ty), ".f32")),
                );
            }
        )*};
    }

    golden! {
        f32: F32;
        f16_all_bit_patterns: F16;
        bf16: BF16;
        q4_0: Q4_0;
        q4_1: Q4_1;
        q5_0: Q5_0;
        q5_1: Q5_1;
        q8_0: Q8_0;
        q2_k: Q2_K;
        q3_k: Q3_K;
        q4_k: Q4_K;
        q5_k: Q5_K;
        q6_k: Q6_K;
    }

    /// The F16 golden holds every bit pattern 0..=0xffff in order.
    #[test]
    fn f16_golden_is_exhaustive() {
        let blocks = include_bytes!("../../fixtures/quant/F16.blocks");
        assert_eq!(blocks.len(), 2 * 65536);
        for (i, b) in blocks.chunks_exact(2).enumerate() {
            assert_eq!(u16::from_le_bytes([b[0], b[1]]) as usize, i);
        }
    }
}

/// Byte-for-byte agreement with llama.cpp's `ggml_quantize_chunk` (no
/// importance matrix) on the vectors in `fixtures/quantize/` (made by
/// `tests/oracle/make_quantize_goldens.py` from the built `libggml-base`).
#[cfg(test)]
mod quantize_golden {
    use super::*;

    fn floats(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Quantizes `input` row by row (256 values, one edge case each; see the
    /// oracle script) and names the first differing block of every row.
    fn check(ty: GgmlType, input: &[u8], expected: &[u8]) {
        let x = floats(input);
        assert_eq!(ty.bytes_for(x.len() as u64), Some(expected.len() as u64));
        let mut got = vec![0u8; expected.len()];
        quantize_row(ty, &x, &mut got).unwrap();
        let bs = ty.type_size() as usize;
        let per_row = ty.bytes_for(256).unwrap() as usize;
        let mut bad = Vec::new();
        for (b, (g, w)) in got.chunks(bs).zip(expected.chunks(bs)).enumerate() {
            if g != w {
                bad.push(format!(
                    "row {} block {}: got {g:02x?}\n want {w:02x?}",
                    b * bs / per_row,
                    b
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{ty}: {} blocks differ\n{}",
            bad.len(),
            bad[..bad.len().min(4)].join("\n")
        );
    }

    macro_rules! golden {
        ($($test:ident: $ty:ident, $input:literal;)*) => {$(
            #[test]
            fn $test() {
                check(
                    GgmlType::$ty,
                    include_bytes!(concat!("../../fixtures/quantize/", $input)),
                    include_bytes!(concat!("../../fixtures/quantize/", stringify!($ty), ".bin")),
                );
            }
        )*};
    }

    golden! {
        q4_0: Q4_0, "input.f32";
        q4_1: Q4_1, "input.f32";
        q5_0: Q5_0, "input.f32";
        q5_1: Q5_1, "input.f32";
        q8_0: Q8_0, "input.f32";
        q2_k: Q2_K, "input.f32";
        q3_k: Q3_K, "input.f32";
        q4_k: Q4_K, "input.f32";
        q5_k: Q5_K, "input.f32";
        q6_k: Q6_K, "input.f32";
        f16: F16, "floats.f32";
        bf16: BF16, "floats.f32";
    }
}
