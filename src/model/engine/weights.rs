//! The weight-format interface of the engine: a 2-D weight matrix in
//! whatever layout it is stored, multiplied by f32 activations without ever
//! being dequantized whole.
//!
//! A format implements [`WeightMatrix`]: its shape, and how to turn a range
//! of rows into f32. [`matvec`] (decode: one activation vector) walks rows
//! in parallel and dots each freshly decoded row with the input; [`matmul`]
//! (prefill: many vectors) decodes a tile of rows at a time and hands it to
//! `matrixmultiply`'s SGEMM. Only a tile per thread is ever materialised.
//!
//! Quantized GGML rows can instead be multiplied the way llama.cpp does
//! ([`Activations::Q8`], the default): the activations are rounded to 8 bits
//! once per product and each packed row is dotted with them in integers
//! ([`crate::quant::dot`]), with no f32 copy of any weight. F16 rows are
//! dotted straight from their halves in either mode.
//!
//! [`Stored`] covers every tensor the store can read as f32 (F32, F16, BF16
//! and the GGML block types decoded by [`crate::quant`]). Formats whose
//! scales live in separate tensors (bitsandbytes nf4/int8, AWQ/GPTQ packed
//! int4) implement [`WeightMatrix::decode_rows`] over their several tensors
//! and get both products for free.

use std::ops::Range;

use rayon::prelude::*;

use crate::quant::{self, dot::RowDot, GgmlType};
use crate::store::{DType, Model, StoreError, TensorInfo};

/// A weight matrix `[rows, cols]` (torch order: `y = W·x` has `rows`
/// outputs), readable a range of rows at a time.
pub trait WeightMatrix: Send + Sync {
    /// Output features.
    fn rows(&self) -> usize;
    /// Input features.
    fn cols(&self) -> usize;
    /// Decodes rows `rows` into `out` (`rows.len() * cols` values).
    fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]);
    /// `W[row] · x`. The default decodes the row into `scratch` (`cols`
    /// long) first; formats that can do better override it.
    fn dot_row(&self, row: usize, x: &[f32], scratch: &mut [f32]) -> f32 {
        self.decode_rows(row..row + 1, scratch);
        dot(scratch, x)
    }
    /// The rows as packed GGML blocks with an integer product, for
    /// [`Activations::Q8`]; `None` for formats that have none.
    fn packed(&self) -> Option<Packed<'_>> {
        None
    }
}

/// How products with quantized weights treat their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// f32 activations times exactly dequantized weights: transformers'
    /// numbers (its float32 forward of the dequantized model).
    Exact,
    /// Activations rounded to 8 bits per block and integer dot products on
    /// the packed weights, as llama.cpp computes: its numbers, and faster.
    /// Weights without an integer product (floats, Q2_K, Q3_K) are
    /// multiplied exactly.
    #[default]
    Q8,
}

/// Packed rows and their integer product.
pub struct Packed<'a> {
    pub dot: RowDot,
    pub bytes: &'a [u8],
    pub row_bytes: usize,
}

impl Packed<'_> {
    fn row(&self, r: usize) -> &[u8] {
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// A tensor of the store in its own dtype, borrowed from the memory map.
pub struct Stored<'m> {
    bytes: &'m [u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    dot: Option<RowDot>,
}

impl<'m> Stored<'m> {
    /// Wraps a 2-D tensor (or a 1-D one as a single row). Refuses dtypes
    /// that have no f32 decoder and rows that are not whole blocks.
    pub fn new(model: &'m Model, t: &TensorInfo) -> Result<Stored<'m>, StoreError> {
        let path = &model.files[t.file].path;
        let bad = |msg: String| StoreError::InvalidTensor {
            path: path.clone(),
            tensor: t.name.clone(),
            msg,
        };
        let ty = match t.dtype.to_ggml() {
            Some(ty) if t.dtype.is_float_readable() => ty,
            _ => return Err(bad(format!("dtype {} cannot be computed with", t.dtype))),
        };
        let (rows, cols) = match t.shape.as_slice() {
            [n] => (1, *n as usize),
            [r, c] => (*r as usize, *c as usize),
            s => return Err(bad(format!("shape {s:?} is not a matrix"))),
        };
        let row_bytes = match DType::from_ggml(ty).bytes_for(cols as u64) {
            Some(b) if b > 0 => b as usize,
            _ => {
                return Err(bad(format!(
                    "rows of {cols} elements are not whole {ty} blocks"
                )))
            }
        };
        Ok(Stored {
            bytes: model.bytes(t),
            ty,
            rows,
            cols,
            row_bytes,
            dot: RowDot::for_type(ty),
        })
    }

    /// The tensor's whole contents as f32 (for norms and biases).
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.rows * self.cols];
        self.decode_rows(0..self.rows, &mut v);
        v
    }
}

impl WeightMatrix for Stored<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let src = &self.bytes[rows.start * self.row_bytes..rows.end * self.row_bytes];
        // Lengths and decodability were checked in `new`.
        quant::dequantize(self.ty, src, out).expect("validated when the matrix was made");
    }
    fn dot_row(&self, row: usize, x: &[f32], scratch: &mut [f32]) -> f32 {
        let src = &self.bytes[row * self.row_bytes..(row + 1) * self.row_bytes];
        match self.ty {
            GgmlType::F16 => dot_f16(src, x),
            _ => {
                self.decode_rows(row..row + 1, scratch);
                dot(scratch, x)
            }
        }
    }
    fn packed(&self) -> Option<Packed<'_>> {
        Some(Packed {
            dot: self.dot?,
            bytes: self.bytes,
            row_bytes: self.row_bytes,
        })
    }
}

/// Dot product of little-endian f16 values (`w`, two bytes each) with f32
/// ones, widening each half exactly: one pass over the weights instead of a
/// conversion and a second pass.
fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), 2 * x.len());
    #[cfg(target_arch = "x86_64")]
    if has_fma() && is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { dot_f16_fma(w, x) };
    }
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, v)| quant::f16_bits_to_f32(u16::from_le_bytes([h[0], h[1]])) * v)
        .sum()
}

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    use std::sync::OnceLock;
    static FMA: OnceLock<bool> = OnceLock::new();
    *FMA.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_fma(w: &[u8], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(w.len() / 2);
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            let h = _mm_loadu_si128(pw.add(2 * (i + 8 * l)) as *const __m128i);
            let y = _mm256_loadu_ps(px.add(i + 8 * l));
            *acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), y, *acc);
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
    let mut total = lanes.iter().sum::<f32>();
    while i < n {
        total += quant::f16_bits_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])) * x[i];
        i += 1;
    }
    total
}

/// Dot product. On x86-64 CPUs with AVX2 and FMA (checked once at run
/// time) it runs 32 lanes of fused multiply-adds; elsewhere eight
/// independent accumulators that the compiler maps onto SSE lanes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { dot_fma(a, b) };
    }
    dot_portable(a, b)
}

/// `out = Σ_j w[j] · v[j·stride + offset ..][..out.len()]`, summed in `j`
/// order with a rounding after each product and each sum (no fused
/// multiply-add), so every CPU path gives the same bits as the plain loop.
/// Attention's probability-weighted sum of value rows; on x86-64 with AVX2
/// the partial sums stay in registers across `j`.
pub fn weighted_rows(out: &mut [f32], w: &[f32], v: &[f32], stride: usize, offset: usize) {
    if let Some(j) = w.len().checked_sub(1) {
        assert!(
            j * stride + offset + out.len() <= v.len(),
            "value rows out of bounds"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and the rows are in bounds (above).
        return unsafe { weighted_rows_avx2(out, w, v, stride, offset) };
    }
    weighted_rows_portable(out, w, v, stride, offset);
}

fn weighted_rows_portable(out: &mut [f32], w: &[f32], v: &[f32], stride: usize, offset: usize) {
    out.fill(0.0);
    for (j, &wj) in w.iter().enumerate() {
        let row = &v[j * stride + offset..][..out.len()];
        out.iter_mut().zip(row).for_each(|(a, b)| *a += wj * b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weighted_rows_avx2(out: &mut [f32], w: &[f32], v: &[f32], stride: usize, offset: usize) {
    use std::arch::x86_64::*;
    let n = out.len();
    let lanes = n - n % 8;
    // Blocks of up to 64 outputs: eight 8-lane accumulators.
    for c in (0..lanes).step_by(64) {
        let regs = ((lanes - c) / 8).min(8);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, &wj) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wj);
            let row = v.as_ptr().add(j * stride + offset + c);
            for (l, acc) in acc.iter_mut().enumerate().take(regs) {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, _mm256_loadu_ps(row.add(8 * l))));
            }
        }
        for (l, acc) in acc.iter().enumerate().take(regs) {
            _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * l), *acc);
        }
    }
    weighted_rows_portable(&mut out[lanes..], w, v, stride, offset + lanes);
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let n = a.len() - ac.remainder().len();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in n..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * l));
            let y = _mm256_loadu_ps(pb.add(i + 8 * l));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
    let mut total = lanes.iter().sum::<f32>();
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}

/// A matrix held in memory as f32: a layer's weights after calibration
/// replaced them with their quantized values.
pub struct Dense {
    rows: usize,
    cols: usize,
    v: Vec<f32>,
}

impl Dense {
    /// `v` is `rows × cols`, row-major.
    pub fn new(rows: usize, cols: usize, v: Vec<f32>) -> Dense {
        assert_eq!(
            v.len(),
            rows * cols,
            "Dense::new: values do not fill the shape"
        );
        Dense { rows, cols, v }
    }

    pub fn values(&self) -> &[f32] {
        &self.v
    }
}

impl WeightMatrix for Dense {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        out.copy_from_slice(&self.v[rows.start * self.cols..rows.end * self.cols]);
    }
}

/// Rows handed to one rayon task by [`matvec`].
const MATVEC_ROWS: usize = 16;
/// Rows of the weight decoded per SGEMM tile by [`matmul`].
const GEMM_ROWS: usize = 64;
/// Elements of decoded weight a tile may hold when many vectors share it.
const GEMM_TILE_ELEMS: usize = 4 << 20;

/// Rows per SGEMM tile for `n` vectors: 64 for a prefill; for the long
/// batches of calibration, each thread's share of the rows (up to 16 MB of
/// decoded weight), since every tile repacks all `n` vectors.
fn gemm_rows(rows: usize, cols: usize, n: usize) -> usize {
    if n < 512 {
        return GEMM_ROWS;
    }
    let share = rows
        .div_ceil(rayon::current_num_threads())
        .next_multiple_of(8);
    share.clamp(GEMM_ROWS, (GEMM_TILE_ELEMS / cols.max(1)).max(GEMM_ROWS))
}

/// `out = W · x` for one input vector (`x.len() == cols`, `out.len() == rows`).
pub fn matvec(w: &dyn WeightMatrix, x: &[f32], out: &mut [f32], acts: Activations) {
    if let Some(p) = integer_product(w, acts) {
        let a = p.dot.quantize(x);
        out.par_chunks_mut(MATVEC_ROWS)
            .enumerate()
            .for_each(|(i, o)| {
                for (j, y) in o.iter_mut().enumerate() {
                    *y = p.dot.dot(p.row(i * MATVEC_ROWS + j), &a);
                }
            });
        return;
    }
    let cols = w.cols();
    out.par_chunks_mut(MATVEC_ROWS).enumerate().for_each_init(
        || vec![0f32; cols],
        |scratch, (i, o)| {
            for (j, y) in o.iter_mut().enumerate() {
                *y = w.dot_row(i * MATVEC_ROWS + j, x, scratch);
            }
        },
    );
}

/// The packed rows to multiply in integers, when `acts` asks for that and
/// the format has it.
fn integer_product(w: &dyn WeightMatrix, acts: Activations) -> Option<Packed<'_>> {
    match acts {
        Activations::Q8 => w.packed(),
        Activations::Exact => None,
    }
}

/// `out[t] = W · xs[t]` for `n` input vectors stored row-major in `xs`
/// (`n × cols`); `out` is `n × rows`. One vector goes through [`matvec`];
/// more go through SGEMM over tiles of decoded rows, or through integer
/// products of each row with every quantized vector.
pub fn matmul(w: &dyn WeightMatrix, xs: &[f32], n: usize, out: &mut [f32], acts: Activations) {
    let (rows, cols) = (w.rows(), w.cols());
    debug_assert_eq!(xs.len(), n * cols);
    debug_assert_eq!(out.len(), n * rows);
    match n {
        0 => return,
        1 => return matvec(w, xs, out, acts),
        _ => {}
    }
    if let Some(p) = integer_product(w, acts) {
        // Rows of outᵀ (rows × n) so each task owns contiguous memory.
        let mut out_t = vec![0f32; rows * n];
        let a: Vec<_> = xs.par_chunks(cols).map(|x| p.dot.quantize(x)).collect();
        out_t
            .par_chunks_mut(MATVEC_ROWS * n)
            .enumerate()
            .for_each(|(i, o)| {
                for (j, o) in o.chunks_exact_mut(n).enumerate() {
                    p.dot.dot_many(p.row(i * MATVEC_ROWS + j), &a, o);
                }
            });
        for (r, col) in out_t.chunks_exact(n).enumerate() {
            for (t, v) in col.iter().enumerate() {
                out[t * rows + r] = *v;
            }
        }
        return;
    }
    // Each task decodes a tile of rows and writes out's columns of those
    // rows: out[:, r0..r0+m] = xs · tileᵀ.
    let tile_rows = gemm_rows(rows, cols, n);
    let base = OutPtr(out.as_mut_ptr());
    (0..rows.div_ceil(tile_rows)).into_par_iter().for_each_init(
        || vec![0f32; tile_rows * cols],
        |tile, i| {
            let r0 = i * tile_rows;
            let m = tile_rows.min(rows - r0);
            let tile = &mut tile[..m * cols];
            w.decode_rows(r0..r0 + m, tile);
            let base = &base;
            // SAFETY: A is xs (n × cols, row-major), B is tileᵀ
            // (cols × m, read through the row-major m × cols tile), C is
            // out's columns r0..r0+m (n × m, row stride rows); all in
            // bounds, and tasks write disjoint columns.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    cols,
                    m,
                    1.0,
                    xs.as_ptr(),
                    cols as isize,
                    1,
                    tile.as_ptr(),
                    1,
                    cols as isize,
                    0.0,
                    base.0.add(r0),
                    rows as isize,
                    1,
                );
            }
        },
    );
}

/// `out`'s pointer, shared by the tasks of [`matmul`] that write disjoint
/// columns of it.
struct OutPtr(*mut f32);
// SAFETY: only used by `matmul`, whose tasks write disjoint elements.
unsafe impl Sync for OutPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_rows_equals_the_plain_loop_bit_for_bit() {
        let val = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) * 1.37e-3;
        for (hd, keys) in [(64, 300), (128, 17), (100, 9), (3, 5), (72, 1), (64, 0)] {
            let (stride, offset) = (3 * hd + 5, hd + 2);
            let v: Vec<f32> = (0..keys.max(1) * stride + offset + hd).map(val).collect();
            let w: Vec<f32> = (0..keys).map(|j| val(j + 11) / 7.0).collect();
            let mut want = vec![0f32; hd];
            for (j, wj) in w.iter().enumerate() {
                for (a, o) in want.iter_mut().enumerate() {
                    *o += wj * v[j * stride + offset + a];
                }
            }
            let mut got = vec![f32::NAN; hd];
            weighted_rows(&mut got, &w, &v, stride, offset);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "hd {hd}, {keys} keys");
        }
    }

    #[test]
    fn matmul_and_matvec_agree_with_a_naive_product() {
        let (rows, cols, n) = (150, 37, 5);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        let xs: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 31) % 11) as f32 * 0.5)
            .collect();
        let w = Dense::new(rows, cols, v);
        let mut out = vec![0f32; n * rows];
        matmul(&w, &xs, n, &mut out, Activations::Exact);
        for t in 0..n {
            let mut one = vec![0f32; rows];
            matvec(
                &w,
                &xs[t * cols..(t + 1) * cols],
                &mut one,
                Activations::Exact,
            );
            for r in 0..rows {
                let want: f32 = (0..cols)
                    .map(|k| w.values()[r * cols + k] * xs[t * cols + k])
                    .sum();
                // Small integers and halves: every order of summation is exact.
                assert_eq!(out[t * rows + r], want);
                assert_eq!(one[r], want);
            }
        }
    }
}
