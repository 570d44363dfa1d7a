//! GGML tensor types and dequantization.
//!
//! [`GgmlType`] is the table of every type gguf-py 0.19.0 knows: numeric id
//! (`ggml/include/ggml.h` `enum ggml_type`, gguf-py `GGMLQuantizationType`),
//! elements per block and bytes per block (`ggml/src/ggml-common.h`, gguf-py
//! `GGML_QUANT_SIZES`). [`dequantize`] converts whole blocks to f32, bit for
//! bit as gguf-py's `gguf.quants.dequantize` does: each formula below uses
//! the same float32 operations in the same order as gguf-py's numpy code.
//!
//! Block layouts live in [`legacy`] (32-element formats) and [`kquants`]
//! (256-element super-blocks); the quantizers will join them there.

pub mod kquants;
pub mod legacy;

use half::{bf16, f16};

/// A GGML tensor type.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// Super-block size of the k-quants (`QK_K`).
pub const QK_K: u64 = 256;

/// (type, id, name, elements per block, bytes per block), as gguf-py's
/// `GGMLQuantizationType` and `GGML_QUANT_SIZES` (constants.py) list them.
const TYPES: &[(GgmlType, u32, &str, u64, u64)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, legacy::Q4_0_BYTES as u64),
    (GgmlType::Q4_1, 3, "Q4_1", 32, legacy::Q4_1_BYTES as u64),
    (GgmlType::Q5_0, 6, "Q5_0", 32, legacy::Q5_0_BYTES as u64),
    (GgmlType::Q5_1, 7, "Q5_1", 32, legacy::Q5_1_BYTES as u64),
    (GgmlType::Q8_0, 8, "Q8_0", 32, legacy::Q8_0_BYTES as u64),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 4 + 4 + 32),
    (
        GgmlType::Q2_K,
        10,
        "Q2_K",
        QK_K,
        2 + 2 + QK_K / 16 + QK_K / 4,
    ),
    (
        GgmlType::Q3_K,
        11,
        "Q3_K",
        QK_K,
        2 + QK_K / 4 + QK_K / 8 + 12,
    ),
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, kquants::Q4_K_BYTES as u64),
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, kquants::Q5_K_BYTES as u64),
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, kquants::Q6_K_BYTES as u64),
    (GgmlType::Q8_K, 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 2 + QK_K / 4),
    (
        GgmlType::IQ2_XS,
        17,
        "IQ2_XS",
        QK_K,
        2 + QK_K / 4 + QK_K / 32,
    ),
    (
        GgmlType::IQ3_XXS,
        18,
        "IQ3_XXS",
        QK_K,
        2 + QK_K / 4 + QK_K / 8,
    ),
    (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 2 + 16),
    (
        GgmlType::IQ3_S,
        21,
        "IQ3_S",
        QK_K,
        2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4,
    ),
    (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
    (
        GgmlType::IQ4_XS,
        23,
        "IQ4_XS",
        QK_K,
        2 + 2 + QK_K / 2 + QK_K / 64,
    ),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (
        GgmlType::IQ1_M,
        29,
        "IQ1_M",
        QK_K,
        QK_K / 8 + QK_K / 16 + QK_K / 32,
    ),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 2 + 4 * 13),
    (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 2 + 64),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 1 + 16),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 4 + 32),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 2 + 16),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        // Every variant has exactly one row; `all_types_round_trip` checks it.
        TYPES.iter().find(|r| r.0 == self).unwrap_or(&TYPES[0])
    }

    /// Every type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|r| r.0)
    }

    /// The type with this `ggml_type` id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The `ggml_type` id.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// gguf-py's spelling (`Q4_K`, `BF16`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Parses a name, case-insensitively.
    pub fn from_name(s: &str) -> Option<GgmlType> {
        TYPES
            .iter()
            .find(|r| r.2.eq_ignore_ascii_case(s))
            .map(|r| r.0)
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().4
    }

    /// Bytes for `n` elements; `None` when `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let b = self.block_size();
        if n % b != 0 {
            return None;
        }
        (n / b).checked_mul(self.type_size())
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a dequantization could not run.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("dequantizing {ty} is not supported")]
    Unsupported { ty: GgmlType },
    #[error("{elements} {ty} elements need {} bytes, got {bytes}", .ty.bytes_for(*.elements as u64).map_or("a whole number of blocks of".to_string(), |b| b.to_string()))]
    LengthMismatch {
        ty: GgmlType,
        bytes: usize,
        elements: usize,
    },
}

/// Dequantizes whole blocks of `ty` from `src` into `dst` (`dst.len()`
/// elements; `src.len()` must be exactly their byte size).
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
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => blocks(src, dst, legacy::dequant_q4_0),
        GgmlType::Q4_1 => blocks(src, dst, legacy::dequant_q4_1),
        GgmlType::Q5_0 => blocks(src, dst, legacy::dequant_q5_0),
        GgmlType::Q5_1 => blocks(src, dst, legacy::dequant_q5_1),
        GgmlType::Q8_0 => blocks(src, dst, legacy::dequant_q8_0),
        GgmlType::Q4_K => blocks(src, dst, kquants::dequant_q4_k),
        GgmlType::Q5_K => blocks(src, dst, kquants::dequant_q5_k),
        GgmlType::Q6_K => blocks(src, dst, kquants::dequant_q6_k),
        _ => return Err(QuantError::Unsupported { ty }),
    }
    Ok(())
}

/// Applies a per-block decoder over matching input/output chunks.
fn blocks<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; B], &mut [f32; N]),
) {
    for (s, d) in src.chunks_exact(B).zip(dst.chunks_exact_mut(N)) {
        // chunks_exact yields exactly B / N items, so the conversions hold.
        if let (Ok(s), Ok(d)) = (s.try_into(), d.try_into()) {
            f(s, d);
        }
    }
}

/// Reads a little-endian f16 at `i` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_types_round_trip() {
        let mut n = 0;
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
            assert_eq!(t.entry().0, t);
            n += 1;
        }
        assert_eq!(n, 34);
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_name("Q4_K_M"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_K.bytes_for(256), Some(144));
        assert_eq!(GgmlType::Q4_K.bytes_for(255), None);
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::Q5_K.type_size(), 176);
        assert_eq!(GgmlType::Q4_1.type_size(), 20);
    }

    #[test]
    fn length_and_type_errors() {
        let mut out = [0f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut out).unwrap_err();
        assert_eq!(e.to_string(), "32 Q8_0 elements need 34 bytes, got 33");
        let mut out = [0f32; 31];
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut out).unwrap_err();
        assert!(e.to_string().contains("whole number of blocks"), "{e}");
        let mut out = [0f32; 256];
        let e = dequantize(GgmlType::Q2_K, &[0; 84], &mut out).unwrap_err();
        assert_eq!(e.to_string(), "dequantizing Q2_K is not supported");
    }
}

/// Bit-exact agreement with gguf-py on the goldens of
/// `tests/oracle/make_quant_goldens.py` (fixtures/quant).
#[cfg(test)]
mod golden {
    use super::*;

    fn check(ty: GgmlType, blocks: &[u8], expect: &[u8]) {
        let want: Vec<f32> = expect
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut got = vec![0f32; want.len()];
        dequantize(ty, blocks, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{ty} element {i}: {g} vs gguf-py {w}"
            );
        }
    }

    macro_rules! golden_test {
        ($name:ident, $ty:ident) => {
            #[test]
            fn $name() {
                check(
                    GgmlType::$ty,
                    include_bytes!(concat!("../../fixtures/quant/", stringify!($ty), ".blocks")),
                    include_bytes!(concat!("../../fixtures/quant/", stringify!($ty), ".f32")),
                );
            }
        };
    }

    golden_test!(f16, F16);
    golden_test!(bf16, BF16);
    golden_test!(q4_0, Q4_0);
    golden_test!(q4_1, Q4_1);
    golden_test!(q5_0, Q5_0);
    golden_test!(q5_1, Q5_1);
    golden_test!(q8_0, Q8_0);
    golden_test!(q4_k, Q4_K);
    golden_test!(q5_k, Q5_K);
    golden_test!(q6_k, Q6_K);
}
