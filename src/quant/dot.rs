//! Integer dot products of packed GGML weight rows with 8-bit activations:
//! how llama.cpp multiplies a quantized matrix by a vector.
//!
//! llama.cpp never widens a quantized weight to f32 in a product. It
//! quantizes the activation vector once per product to the weight type's
//! `vec_dot_type` (`type_traits_cpu` in `ggml/src/ggml-cpu/ggml-cpu.c`) and
//! runs `ggml_vec_dot_<w>_<a>` (`ggml/src/ggml-cpu/quants.c`, SIMD versions
//! in `arch/x86/quants.c`) on each packed row:
//!
//! | weights | activations | per block |
//! |---|---|---|
//! | Q4_0, Q5_0, Q8_0 | Q8_0 | `dw·da · Σ qw·qa` |
//! | Q4_1, Q5_1 | Q8_1 | `dw·da · Σ qw·qa + mw · sa` (`sa = da · Σ qa`) |
//! | Q4_K, Q5_K | Q8_K | `dw·da · Σⱼ scⱼ Σ qw·qa − dminw·da · Σⱼ mⱼ · bsumⱼ` |
//! | Q6_K | Q8_K | `dw·da · Σₖ scₖ Σ (qw − 32)·qa` |
//!
//! The activation quantizers are llama.cpp's: Q8_0/Q8_1 take `d = amax/127`
//! stored as f16 and round half to even (the AVX2 `quantize_row_q8_0`);
//! Q8_K is `quantize_row_q8_K_ref` (`ggml/src/ggml-quants.c`: the signed
//! extreme maps to −127, `d` kept as f32, sums of every 16 codes kept for the
//! min terms). The integer sums are exact, so every implementation here
//! (the portable one and the AVX2 one, picked once at run time) differs from
//! another only in the order of the final f32 additions.
//!
//! Rounding the activations to 8 bits is what makes llama.cpp's logits on a
//! quantized model differ slightly from those of the exactly dequantized
//! model; the engine uses these products when asked to compute as
//! llama.cpp does (the default for `eval` and `generate`), and the exact f32
//! path otherwise.
//!
//! Length: over 800 lines because each product keeps its portable
//! reference and its AVX2 version side by side (and the tests comparing
//! them), mirroring `quants.c` / `arch/x86/quants.c` one type at a time.

use super::{
    f16_bits_to_f32, f32_to_f16_bits, kquants::unpack_scales_mins, nearest_int, GgmlType,
    K_SCALE_SIZE, Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES,
    Q6_K_BYTES, Q8_0_BYTES, QK32, QK_K,
};

/// One block of 32 activations as `block_q8_0`/`block_q8_1`
/// (`ggml/src/ggml-common.h`), unpacked: `d` is the f16 scale widened, `s`
/// the f16-rounded `d · Σ qs` that Q8_1 carries (also filled for Q8_0,
/// where nothing reads it).
#[derive(Clone, Copy)]
pub struct Q8Block {
    /// Scale.
    pub d: f32,
    /// `d · Σ qs`, rounded to f16.
    pub s: f32,
    /// Codes.
    pub qs: [i8; QK32],
}

/// One block of 256 activations as `block_q8_K` (`ggml/src/ggml-common.h`).
#[derive(Clone, Copy)]
pub struct Q8KBlock {
    /// Scale (f32, not f16).
    pub d: f32,
    /// Codes.
    pub qs: [i8; QK_K],
    /// Sum of each 16 consecutive codes.
    pub bsums: [i16; QK_K / 16],
}

/// An activation vector quantized for one weight type.
pub enum Acts {
    /// Q8_0 or Q8_1 blocks.
    Q8(Vec<Q8Block>),
    /// Q8_K blocks.
    Q8K(Vec<Q8KBlock>),
}

/// Vectors one kernel call dots a row with: each weight block is unpacked
/// once for all of them (prefill and batches), as llama.cpp's `nrc` does.
pub const GROUP: usize = 4;

/// Dots one packed row with up to [`GROUP`] activation vectors, one result each.
type DotQ8 = fn(&[u8], &[&[Q8Block]], &mut [f32]);
type DotQ8K = fn(&[u8], &[&[Q8KBlock]], &mut [f32]);

#[derive(Clone, Copy)]
enum Kernel {
    Q8(DotQ8),
    Q8K(DotQ8K),
}

/// The integer product of one weight type: how to quantize activations for
/// it and how to dot a packed row with them.
#[derive(Clone, Copy)]
pub struct RowDot {
    kernel: Kernel,
}

impl RowDot {
    /// The fastest implementation this CPU runs for `ty`, or `None` for
    /// types that have no integer product here (floats, Q2_K, Q3_K, …).
    pub fn for_type(ty: GgmlType) -> Option<RowDot> {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            if let Some(kernel) = avx2::kernel(ty) {
                return Some(RowDot { kernel });
            }
        }
        RowDot::portable(ty)
    }

    /// The portable implementation (the reference the SIMD ones are tested
    /// against).
    pub fn portable(ty: GgmlType) -> Option<RowDot> {
        let kernel = match ty {
            GgmlType::Q4_0 => Kernel::Q8(|r, a, o| each(r, a, o, dot_q4_0)),
            GgmlType::Q4_1 => Kernel::Q8(|r, a, o| each(r, a, o, dot_q4_1)),
            GgmlType::Q5_0 => Kernel::Q8(|r, a, o| each(r, a, o, dot_q5_0)),
            GgmlType::Q5_1 => Kernel::Q8(|r, a, o| each(r, a, o, dot_q5_1)),
            GgmlType::Q8_0 => Kernel::Q8(|r, a, o| each(r, a, o, dot_q8_0)),
            GgmlType::Q4_K => Kernel::Q8K(|r, a, o| each(r, a, o, dot_q4_k)),
            GgmlType::Q5_K => Kernel::Q8K(|r, a, o| each(r, a, o, dot_q5_k)),
            GgmlType::Q6_K => Kernel::Q8K(|r, a, o| each(r, a, o, dot_q6_k)),
            _ => return None,
        };
        Some(RowDot { kernel })
    }

    /// Quantizes `x` (a whole number of blocks) for this weight type.
    pub fn quantize(&self, x: &[f32]) -> Acts {
        match self.kernel {
            Kernel::Q8(_) => Acts::Q8(x.chunks_exact(QK32).map(quantize_q8).collect()),
            Kernel::Q8K(_) => Acts::Q8K(x.chunks_exact(QK_K).map(quantize_q8_k).collect()),
        }
    }

    /// `row · acts`, where `row` is one packed weight row as many blocks
    /// long as `acts` and `acts` came from [`RowDot::quantize`] of this
    /// value (anything else is a caller bug and panics).
    pub fn dot(&self, row: &[u8], acts: &Acts) -> f32 {
        let mut out = [0f32];
        self.dot_many(row, std::slice::from_ref(acts), &mut out);
        out[0]
    }

    /// `out[t] = row · acts[t]` for every vector, unpacking the row once per
    /// [`GROUP`] vectors.
    pub fn dot_many(&self, row: &[u8], acts: &[Acts], out: &mut [f32]) {
        for (a, o) in acts.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            match self.kernel {
                Kernel::Q8(f) => {
                    let mut v: [&[Q8Block]; GROUP] = [&[]; GROUP];
                    for (v, a) in v.iter_mut().zip(a) {
                        *v = match a {
                            Acts::Q8(b) => b,
                            Acts::Q8K(_) => panic!("activations quantized for another weight type"),
                        };
                    }
                    f(row, &v[..a.len()], o)
                }
                Kernel::Q8K(f) => {
                    let mut v: [&[Q8KBlock]; GROUP] = [&[]; GROUP];
                    for (v, a) in v.iter_mut().zip(a) {
                        *v = match a {
                            Acts::Q8K(b) => b,
                            Acts::Q8(_) => panic!("activations quantized for another weight type"),
                        };
                    }
                    f(row, &v[..a.len()], o)
                }
            }
        }
    }
}

/// Runs a one-vector kernel over several vectors.
#[inline(always)]
fn each<A>(row: &[u8], acts: &[&[A]], out: &mut [f32], f: fn(&[u8], &[A]) -> f32) {
    for (o, a) in out.iter_mut().zip(acts) {
        *o = f(row, a);
    }
}

/// Q8_0/Q8_1 quantization of 32 values as the AVX2 `quantize_row_q8_0`/
/// `quantize_row_q8_1` do: `d = amax/127`, codes `x·127/amax` rounded half to even.
fn quantize_q8(x: &[f32]) -> Q8Block {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK32];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = nearest_int(v * id) as i8;
        sum += i32::from(*q);
    }
    let f16 = |v: f32| f16_bits_to_f32(f32_to_f16_bits(v));
    Q8Block {
        d: f16(d),
        s: f16(d * sum as f32),
        qs,
    }
}

/// Q8_K quantization of 256 values (`quantize_row_q8_K_ref`).
fn quantize_q8_k(x: &[f32]) -> Q8KBlock {
    let mut b = Q8KBlock {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| i16::from(v)).sum();
    }
    b.d = 1.0 / iscale;
    b
}

/// The f16 at `block[at..at + 2]`, widened.
#[inline(always)]
fn f16_le(block: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([block[at], block[at + 1]]))
}

/// Σ `q[j] · a[j]` over one 32-element block (a loop the compiler
/// vectorises).
#[inline(always)]
fn sum_i8(q: &[i8; QK32], a: &[i8; QK32]) -> i32 {
    q.iter()
        .zip(a)
        .map(|(&q, &a)| i32::from(q) * i32::from(a))
        .sum()
}

/// The 32 codes of a 4-bit block (low nibbles are elements 0..16, high
/// nibbles 16..32; see [`super::legacy`]), plus `offset`, with the fifth
/// bits of the little-endian `u32` at `qh` (bit `j` for element `j`) when
/// the format has them.
#[inline(always)]
fn codes(qs: &[u8], qh: Option<&[u8]>, offset: i8) -> [i8; QK32] {
    let mut q = [0i8; QK32];
    for j in 0..QK32 / 2 {
        q[j] = (qs[j] & 0x0f) as i8;
        q[j + 16] = (qs[j] >> 4) as i8;
    }
    if let Some(qh) = qh {
        let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, q) in q.iter_mut().enumerate() {
            *q |= (((bits >> j) & 1) << 4) as i8;
        }
    }
    q.map(|v| v + offset)
}

/// The 32-element formats: `d` at byte 0, for Q4_1/Q5_1 a min `m` at byte
/// 2 (which meets the activations' `s`), codes from `code`.
#[inline(always)]
fn dot_legacy(
    row: &[u8],
    acts: &[Q8Block],
    bytes: usize,
    with_min: bool,
    code: impl Fn(&[u8]) -> [i8; QK32],
) -> f32 {
    row.chunks_exact(bytes)
        .zip(acts)
        .map(|(b, a)| {
            let v = f16_le(b, 0) * a.d * sum_i8(&code(b), &a.qs) as f32;
            if with_min {
                v + f16_le(b, 2) * a.s
            } else {
                v
            }
        })
        .sum()
}

fn dot_q4_0(row: &[u8], acts: &[Q8Block]) -> f32 {
    dot_legacy(row, acts, Q4_0_BYTES, false, |b| codes(&b[2..], None, -8))
}

fn dot_q4_1(row: &[u8], acts: &[Q8Block]) -> f32 {
    dot_legacy(row, acts, Q4_1_BYTES, true, |b| codes(&b[4..], None, 0))
}

fn dot_q5_0(row: &[u8], acts: &[Q8Block]) -> f32 {
    dot_legacy(row, acts, Q5_0_BYTES, false, |b| {
        codes(&b[6..], Some(&b[2..]), -16)
    })
}

fn dot_q5_1(row: &[u8], acts: &[Q8Block]) -> f32 {
    dot_legacy(row, acts, Q5_1_BYTES, true, |b| {
        codes(&b[8..], Some(&b[4..]), 0)
    })
}

fn dot_q8_0(row: &[u8], acts: &[Q8Block]) -> f32 {
    dot_legacy(row, acts, Q8_0_BYTES, false, |b| {
        std::array::from_fn(|j| b[2 + j] as i8)
    })
}

/// Q4_K and Q5_K: sub-block `j` (32 elements) takes the low (`j` even) or
/// high nibbles of `qs[32(j/2)..]`, and for Q5_K bit `j` of `qh[l]`.
#[inline(always)]
fn dot_k4_k5(row: &[u8], acts: &[Q8KBlock], bytes: usize, qh_at: Option<usize>) -> f32 {
    let qs_at = qh_at.map_or(4 + K_SCALE_SIZE, |at| at + QK_K / 8);
    row.chunks_exact(bytes)
        .zip(acts)
        .map(|(b, a)| {
            let mut packed = [0u8; K_SCALE_SIZE];
            packed.copy_from_slice(&b[4..4 + K_SCALE_SIZE]);
            let (sc, m) = unpack_scales_mins(&packed);
            let mut sumi = 0i32;
            let mut summ = 0i32;
            for j in 0..8 {
                let (group, shift) = (qs_at + 32 * (j / 2), 4 * (j % 2));
                let q: [i8; QK32] = std::array::from_fn(|l| {
                    let high = qh_at.map_or(0, |at| ((b[at + l] >> j) & 1) << 4);
                    (((b[group + l] >> shift) & 0x0f) | high) as i8
                });
                let y: &[i8; QK32] = a.qs[32 * j..32 * j + 32].try_into().unwrap();
                sumi += i32::from(sc[j]) * sum_i8(&q, y);
                let bsum = i32::from(a.bsums[2 * j]) + i32::from(a.bsums[2 * j + 1]);
                summ += i32::from(m[j]) * bsum;
            }
            a.d * f16_le(b, 0) * sumi as f32 - a.d * f16_le(b, 2) * summ as f32
        })
        .sum()
}

fn dot_q4_k(row: &[u8], acts: &[Q8KBlock]) -> f32 {
    dot_k4_k5(row, acts, Q4_K_BYTES, None)
}

fn dot_q5_k(row: &[u8], acts: &[Q8KBlock]) -> f32 {
    dot_k4_k5(row, acts, Q5_K_BYTES, Some(4 + K_SCALE_SIZE))
}

/// Q6_K: element `128h + 32s + l` is nibble `s / 2` of `ql[64h + 32(s%2) + l]`
/// plus bits `2s..2s+2` of `qh[32h + l]`, minus 32 (see
/// [`super::kquants::dequantize_q6_k`]); each 16 elements share a scale.
fn dot_q6_k(row: &[u8], acts: &[Q8KBlock]) -> f32 {
    row.chunks_exact(Q6_K_BYTES)
        .zip(acts)
        .map(|(b, a)| {
            let mut sumi = 0i32;
            for g in 0..QK_K / 32 {
                let (h, s) = (g / 4, g % 4);
                let q: [i8; QK32] = std::array::from_fn(|l| {
                    let low = (b[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0f;
                    let high = (b[128 + 32 * h + l] >> (2 * s)) & 3;
                    (low | (high << 4)) as i8 - 32
                });
                let y = &a.qs[32 * g..32 * g + 32];
                for half in 0..2 {
                    let part: i32 = (16 * half..16 * half + 16)
                        .map(|l| i32::from(q[l]) * i32::from(y[l]))
                        .sum();
                    sumi += i32::from(b[192 + 2 * g + half] as i8) * part;
                }
            }
            a.d * f16_le(b, 208) * sumi as f32
        })
        .sum()
}

/// AVX2 versions of every kernel. The integer arithmetic is the portable
/// one's; only the f32 accumulation order differs.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        use std::sync::OnceLock;
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    /// Only called after [`available`] said yes.
    pub fn kernel(ty: GgmlType) -> Option<Kernel> {
        // SAFETY (every wrapper): handed out only when the CPU has AVX2, FMA and F16C.
        Some(match ty {
            GgmlType::Q4_0 => Kernel::Q8(|r, a, o| unsafe { q4_0(r, a, o) }),
            GgmlType::Q4_1 => Kernel::Q8(|r, a, o| unsafe { q4_1(r, a, o) }),
            GgmlType::Q5_0 => Kernel::Q8(|r, a, o| unsafe { q5_0(r, a, o) }),
            GgmlType::Q5_1 => Kernel::Q8(|r, a, o| unsafe { q5_1(r, a, o) }),
            GgmlType::Q8_0 => Kernel::Q8(|r, a, o| unsafe { q8_0(r, a, o) }),
            GgmlType::Q4_K => Kernel::Q8K(|r, a, o| unsafe { q4_k(r, a, o, false) }),
            GgmlType::Q5_K => Kernel::Q8K(|r, a, o| unsafe { q4_k(r, a, o, true) }),
            GgmlType::Q6_K => Kernel::Q8K(|r, a, o| unsafe { q6_k(r, a, o) }),
            _ => return None,
        })
    }

    /// Calls `$f::<T>` with `T` the number of vectors (1..=[`GROUP`]), so
    /// each count gets its own fully unrolled loop.
    macro_rules! by_count {
        ($f:ident, $row:expr, $acts:expr, $out:expr $(, $extra:expr)*) => {
            match $acts.len() {
                1 => $f::<1>($row, fixed($acts), $out $(, $extra)*),
                2 => $f::<2>($row, fixed($acts), $out $(, $extra)*),
                3 => $f::<3>($row, fixed($acts), $out $(, $extra)*),
                _ => $f::<GROUP>($row, fixed($acts), $out $(, $extra)*),
            }
        };
    }

    /// The first `T` activation vectors, cut to the row's block count
    /// (checked once here rather than on every block), by value so they
    /// stay in registers.
    #[inline(always)]
    fn fixed<'a, A, const T: usize>(acts: &[&'a [A]]) -> [&'a [A]; T] {
        std::array::from_fn(|t| acts[t])
    }

    /// The f16 at `p`, widened by the CPU (the `half` crate would make a
    /// call per scale).
    #[inline(always)]
    unsafe fn f16(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Σ of the eight f32 lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// The 32 nibbles of a 16-byte `qs` in element order (low nibbles
    /// then high nibbles), as unsigned bytes.
    #[inline(always)]
    unsafe fn nibbles32(qs: *const u8) -> __m256i {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Byte `j` is 0xff when bit `j` of `bits` is set, else 0.
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        // Byte j takes byte j/8 of `bits`; OR-ing every bit but bit j%8
        // makes it all ones exactly when that bit is set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
    }

    /// The 32-element formats: `codes` gives a block's codes. Bytes times
    /// signed bytes go through `maddubs` (which wants one unsigned operand)
    /// by moving the weight's signs onto the activations. Q4_1 and Q5_1
    /// (`with_min`) add the block minimum times the activations' `s`.
    #[inline(always)]
    unsafe fn legacy<const T: usize>(
        row: &[u8],
        acts: [&[Q8Block]; T],
        out: &mut [f32],
        (bytes, codes, with_min): (usize, unsafe fn(*const u8) -> __m256i, bool),
    ) {
        let blocks = row.len() / bytes;
        let acts = acts.map(|a| &a[..blocks]);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut mins = [0f32; T];
        for (i, b) in row.chunks_exact(bytes).enumerate() {
            let x = codes(b.as_ptr());
            let ax = _mm256_sign_epi8(x, x);
            let dx = f16(b.as_ptr());
            let mx = if with_min {
                f16(b.as_ptr().add(2))
            } else {
                0.0
            };
            for t in 0..T {
                let a = &acts[t][i];
                let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(load(a.qs.as_ptr()), x));
                let s = _mm256_madd_epi16(p, ones);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * a.d), _mm256_cvtepi32_ps(s), acc[t]);
                if with_min {
                    mins[t] += mx * a.s;
                }
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]) + mins[t];
        }
    }

    /// The fifth bits of a 32-element block (`u32` at `qh`) as 0x10 bytes.
    #[inline(always)]
    unsafe fn fifth_bits(qh: *const u8) -> __m256i {
        let bits = u32::from_le_bytes([*qh, *qh.add(1), *qh.add(2), *qh.add(3)]);
        _mm256_and_si256(bits_to_bytes(bits), _mm256_set1_epi8(0x10))
    }

    #[inline(always)]
    unsafe fn codes_q4_1(b: *const u8) -> __m256i {
        nibbles32(b.add(4))
    }

    #[inline(always)]
    unsafe fn codes_q5_1(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles32(b.add(8)), fifth_bits(b.add(4)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1(row: &[u8], acts: &[&[Q8Block]], out: &mut [f32]) {
        by_count!(
            legacy,
            row,
            acts,
            out,
            (Q4_1_BYTES, codes_q4_1 as unsafe fn(_) -> _, true)
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_1(row: &[u8], acts: &[&[Q8Block]], out: &mut [f32]) {
        by_count!(
            legacy,
            row,
            acts,
            out,
            (Q5_1_BYTES, codes_q5_1 as unsafe fn(_) -> _, true)
        )
    }

    #[inline(always)]
    unsafe fn codes_q4_0(b: *const u8) -> __m256i {
        _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8))
    }

    #[inline(always)]
    unsafe fn codes_q5_0(b: *const u8) -> __m256i {
        let q = _mm256_or_si256(nibbles32(b.add(6)), fifth_bits(b.add(2)));
        _mm256_sub_epi8(q, _mm256_set1_epi8(16))
    }

    #[inline(always)]
    unsafe fn codes_q8_0(b: *const u8) -> __m256i {
        _mm256_loadu_si256(b.add(2) as *const __m256i)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0(row: &[u8], acts: &[&[Q8Block]], out: &mut [f32]) {
        by_count!(
            legacy,
            row,
            acts,
            out,
            (Q4_0_BYTES, codes_q4_0 as unsafe fn(_) -> _, false)
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0(row: &[u8], acts: &[&[Q8Block]], out: &mut [f32]) {
        by_count!(
            legacy,
            row,
            acts,
            out,
            (Q5_0_BYTES, codes_q5_0 as unsafe fn(_) -> _, false)
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0(row: &[u8], acts: &[&[Q8Block]], out: &mut [f32]) {
        by_count!(
            legacy,
            row,
            acts,
            out,
            (Q8_0_BYTES, codes_q8_0 as unsafe fn(_) -> _, false)
        )
    }

    /// Q4_K, or Q5_K when `fifth` (its `qh` before `qs`).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k(row: &[u8], acts: &[&[Q8KBlock]], out: &mut [f32], fifth: bool) {
        if fifth {
            by_count!(k4_k5, row, acts, out, Q5_K_BYTES, true)
        } else {
            by_count!(k4_k5, row, acts, out, Q4_K_BYTES, false)
        }
    }

    #[inline(always)]
    unsafe fn k4_k5<const T: usize>(
        row: &[u8],
        acts: [&[Q8KBlock]; T],
        out: &mut [f32],
        bytes: usize,
        fifth: bool,
    ) {
        let acts = acts.map(|a| &a[..row.len() / bytes]);
        let m4 = _mm256_set1_epi8(0x0f);
        let high = _mm256_set1_epi8(0x10);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut mins = [0f32; T];
        for (i, b) in row.chunks_exact(bytes).enumerate() {
            let mut packed = [0u8; K_SCALE_SIZE];
            packed.copy_from_slice(&b[4..4 + K_SCALE_SIZE]);
            let (sc, m) = unpack_scales_mins(&packed);
            let (d, dmin) = (f16(b.as_ptr()), f16(b.as_ptr().add(2)));
            let qh = b.as_ptr().add(4 + K_SCALE_SIZE);
            let qs = if fifth { qh.add(QK_K / 8) } else { qh };
            let mut codes = [_mm256_setzero_si256(); 8];
            let mut scales = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
                codes[2 * c] = _mm256_and_si256(q, m4);
                codes[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                scales[2 * c] = _mm256_set1_epi16(i16::from(sc[2 * c]));
                scales[2 * c + 1] = _mm256_set1_epi16(i16::from(sc[2 * c + 1]));
            }
            if fifth {
                // Sub-block j takes bit j of qh[l] for its element l.
                let bits = _mm256_loadu_si256(qh as *const __m256i);
                for (j, c) in codes.iter_mut().enumerate() {
                    let mask = _mm256_set1_epi8((1u8 << j) as i8);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bits, mask), mask);
                    *c = _mm256_or_si256(*c, _mm256_and_si256(set, high));
                }
            }
            for t in 0..T {
                let a = &acts[t][i];
                let summ: i32 = (0..8)
                    .map(|j| {
                        let bs = i32::from(a.bsums[2 * j]) + i32::from(a.bsums[2 * j + 1]);
                        i32::from(m[j]) * bs
                    })
                    .sum();
                mins[t] += a.d * dmin * summ as f32;
                let mut sumi = _mm256_setzero_si256();
                for j in 0..8 {
                    let p = _mm256_maddubs_epi16(codes[j], load(a.qs.as_ptr().add(32 * j)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scales[j]));
                }
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(a.d * d), _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]) - mins[t];
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k(row: &[u8], acts: &[&[Q8KBlock]], out: &mut [f32]) {
        by_count!(q6_k_n, row, acts, out)
    }

    /// Codes are used unsigned (0..64); their −32 is applied through the
    /// activations' sums of 16 codes.
    #[inline(always)]
    unsafe fn q6_k_n<const T: usize>(row: &[u8], acts: [&[Q8KBlock]; T], out: &mut [f32]) {
        let acts = acts.map(|a| &a[..row.len() / Q6_K_BYTES]);
        let m4 = _mm256_set1_epi8(0x0f);
        let m2 = _mm256_set1_epi8(3);
        let mut acc = [_mm256_setzero_ps(); T];
        for (i, b) in row.chunks_exact(Q6_K_BYTES).enumerate() {
            let p = b.as_ptr();
            let scale = |k: usize| i32::from(b[192 + k] as i8);
            // Group g = 4h + s holds elements 32g..32g+32, scales 2g and 2g+1.
            let mut codes = [_mm256_setzero_si256(); 8];
            let mut scales = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
                let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                let high = [
                    qh,
                    _mm256_srli_epi16::<2>(qh),
                    _mm256_srli_epi16::<4>(qh),
                    _mm256_srli_epi16::<6>(qh),
                ]
                .map(|v| _mm256_slli_epi16::<4>(_mm256_and_si256(v, m2)));
                let low = [
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                ];
                for s in 0..4 {
                    let g = 4 * h + s;
                    codes[g] = _mm256_or_si256(low[s], high[s]);
                    scales[g] = _mm256_set_m128i(
                        _mm_set1_epi16(scale(2 * g + 1) as i16),
                        _mm_set1_epi16(scale(2 * g) as i16),
                    );
                }
            }
            let d = f16(p.add(208));
            for t in 0..T {
                let a = &acts[t][i];
                let offset: i32 = (0..16).map(|k| scale(k) * i32::from(a.bsums[k])).sum();
                let mut sumi = _mm256_setzero_si256();
                for g in 0..8 {
                    let prod = _mm256_maddubs_epi16(codes[g], load(a.qs.as_ptr().add(32 * g)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(prod, scales[g]));
                }
                let total =
                    _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * offset, 0, 0, 0, 0, 0, 0, 0));
                acc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(a.d * d), _mm256_cvtepi32_ps(total), acc[t]);
            }
        }
        for t in 0..T {
            out[t] = hsum(acc[t]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize_row};

    /// Deterministic values with varied magnitudes and signs.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                u * if i % 37 == 0 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    fn dequantized_acts(acts: &Acts) -> Vec<f32> {
        match acts {
            Acts::Q8(b) => b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect(),
            Acts::Q8K(b) => b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect(),
        }
    }

    const TYPES: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The integer products equal the f32 dot of the dequantized row with
    /// the dequantized activations (up to f32 rounding), and every SIMD
    /// kernel equals the portable one.
    #[test]
    fn integer_products_equal_the_dequantized_dot() {
        let n = 3 * QK_K;
        for ty in TYPES {
            for seed in 0..4 {
                let w = values(n, seed);
                let mut row = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
                quantize_row(ty, &w, &mut row).unwrap();
                let mut wd = vec![0f32; n];
                dequantize(ty, &row, &mut wd).unwrap();
                let x = values(n, 100 + seed);
                let portable = RowDot::portable(ty).unwrap();
                let acts = portable.quantize(&x);
                let xd = dequantized_acts(&acts);
                let want: f64 = wd
                    .iter()
                    .zip(&xd)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let scale: f64 = wd
                    .iter()
                    .zip(&xd)
                    .map(|(a, b)| f64::from((a * b).abs()))
                    .sum();
                let got = portable.dot(&row, &acts);
                // Q8_1 carries d·Σq rounded to f16 for the min term.
                let s_rounding: f64 = match (&acts, ty) {
                    (Acts::Q8(a), GgmlType::Q4_1 | GgmlType::Q5_1) => row
                        .chunks_exact(ty.type_size() as usize)
                        .zip(a)
                        .map(|(b, a)| f64::from((f16_le(b, 2) * a.s).abs()) / 1024.0)
                        .sum(),
                    _ => 0.0,
                };
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * scale + s_rounding,
                    "{ty} seed {seed}: portable {got} vs {want}"
                );
                let fast = RowDot::for_type(ty).unwrap().dot(&row, &acts);
                assert!(
                    (fast - got).abs() <= 1e-5 * scale as f32,
                    "{ty} seed {seed}: fast {fast} vs portable {got}"
                );
                // Several vectors at once give each vector's own product.
                let xs: Vec<Acts> = (0..GROUP + 1)
                    .map(|v| portable.quantize(&values(n, 200 + v as u32)))
                    .collect();
                let mut many = vec![0f32; xs.len()];
                let fast_dot = RowDot::for_type(ty).unwrap();
                fast_dot.dot_many(&row, &xs, &mut many);
                for (a, m) in xs.iter().zip(&many) {
                    assert_eq!(*m, fast_dot.dot(&row, a), "{ty}: dot_many");
                }
                // And the whole product stays close to the unquantized one.
                let exact: f64 = wd
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                assert!(
                    (f64::from(got) - exact).abs() <= 0.02 * scale,
                    "{ty}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn activation_quantizers_follow_llama_cpp() {
        // Q8_0: amax 2.54 → d = 0.02, codes round half to even.
        let mut x = [0f32; QK32];
        x[0] = 2.54;
        x[1] = -1.27;
        x[2] = 0.01; // 0.5 of a step: rounds to even (0)
        x[3] = 0.03; // 1.5 steps: rounds to 2
        let b = quantize_q8(&x);
        assert_eq!(&b.qs[..4], &[127, -64, 0, 2]);
        assert_eq!(b.d, f16_bits_to_f32(f32_to_f16_bits(2.54 / 127.0)));
        // Q8_K: the signed extreme maps to −127, so d is negative for a positive max.
        let mut y = [0f32; QK_K];
        y[5] = 4.0;
        y[6] = -2.0;
        y[20] = 1.0;
        let k = quantize_q8_k(&y);
        assert_eq!((k.qs[5], k.qs[6], k.qs[20]), (-127, 64, -32));
        assert_eq!(k.d, -4.0 / 127.0);
        assert_eq!(k.bsums[0], -63);
        assert_eq!(k.bsums[1], -32);
        // All zeros stay zero.
        let z = quantize_q8_k(&[0f32; QK_K]);
        assert_eq!(z.d, 0.0);
    }
}
