//! The numerics of bitsandbytes' CPU quantizers, reproduced bit for bit.
//!
//! Every constant and rounding step here must agree with bitsandbytes
//! 0.50.2 running on an x86-64 CPU under torch 2.9 (`bitsandbytes/functional.py`
//! `quantize_4bit`, `quantize_blockwise`, `create_dynamic_map`,
//! `get_4bit_type`; `backends/default/ops.py` `quantize_4bit` and
//! `int8_vectorwise_quant`; `csrc/cpu_ops.cpp` `quantize_cpu_impl` and
//! `build_quantize_lut`, as compiled in the wheel; torch
//! `aten/src/ATen/native/cpu/SumKernel.cpp` for the mean of the block
//! maxima). The goldens in `fixtures/bnb` (made by bitsandbytes itself,
//! `tests/oracle/bnb_goldens.py`) hold us to that.
//!
//! Quirks copied on purpose, because they change bits:
//! * a full 4-bit block is scaled by `x · (1/max(absmax, 1e-38))` (a
//!   reciprocal, then a product), the weight's partial last block by
//!   `x / max(absmax, 1e-38)`, and that clamped maximum is what the partial
//!   block stores (an all-zero full block stores 0, an all-zero partial
//!   one 1e-38); the 4-bit code is the number of midpoints
//!   `(c[i] + c[i+1]) / 2` of the sorted table below the value
//!   (`torch.bucketize`: a value on a midpoint takes the lower code);
//! * FP4 is searched in the exact table (`get_4bit_type`, k/12) sorted by
//!   torch's stable `argsort`, whose two zeros are patterns 0 then 8: small
//!   positive values get pattern 8 (−0), small negative ones pattern 0;
//! * the nested 8-bit codes come from a 65536-entry table over [−1, 1]
//!   (`build_quantize_lut`), indexed by `⌊fma((v/absmax + 1)·0.5, 65535,
//!   0.5)⌋` with `v/absmax` a product by the reciprocal, rather than from
//!   the nearest map entry; a nested block of zeros gets absmax 0 and codes 0;
//! * the double-quant offset is torch's CPU `mean` (a cascade of vector
//!   partial sums, [`torch_mean`]), not an exact mean;
//! * LLM.int8 converts the weight to f16 first and scales by
//!   `127 · (1/rowmax)` with round-half-even.
//!
//! Reading back ([`FourBitRef`], [`Int8Ref`], [`nested_absmax`]) is
//! `dequantize_4bit` / `dequantize_blockwise` (`functional.py`,
//! `backends/cpu/ops.py` and the wheel's `dequantize_blockwise_cpu`
//! kernels) and `int8_vectorwise_dequant` (`_ops.py`): one f32 product of
//! the code and its block's (or row's) scale, then for 4-bit the rounding
//! to the quant state's `dtype` that the kernel writes. The 4-bit code is
//! the built-in table for `quant_type`, as in every bitsandbytes kernel:
//! the stored `quant_map` is not read; the nested one is.
//! `tests/oracle/bnb_dequant_goldens.py` holds this to bitsandbytes' bits.
//!
//! bitsandbytes 0.48 differed in the first three (a nearest-value search,
//! FP4 against a 4-decimal table, bf16/f16 rounding in partial blocks, a
//! nested binary search with the map's first entry forced to −1.0); only
//! the current release is reproduced.

use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

/// The 4-bit data types bitsandbytes stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FourBit {
    Nf4,
    Fp4,
}

impl FourBit {
    /// The name used in `quant_type`, the quant-state key and the config.
    pub fn name(self) -> &'static str {
        match self {
            FourBit::Nf4 => "nf4",
            FourBit::Fp4 => "fp4",
        }
    }

    /// The table saved as `quant_map` (`functional.py` `get_4bit_type`:
    /// the raw codes divided by their largest magnitude, in f32).
    pub fn quant_map(self) -> [f32; 16] {
        match self {
            FourBit::Nf4 => NF4,
            FourBit::Fp4 => FP4_RAW.map(|v| v / 12.0),
        }
    }
}

/// NF4 code table (`get_4bit_type("nf4")`; also `CODE["nf4"]`).
const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 codes by bit pattern before normalisation (`get_4bit_type("fp4")`;
/// the `-0` there is a Python int, so entry 8 is +0.0).
const FP4_RAW: [f32; 16] = [
    0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0,
];

/// A 4-bit table as `backends/default/ops.py` searches it
/// (`_get_4bit_quantize_bounds`): the codes sorted ascending (stable on
/// ties), the midpoints between neighbours, and each sorted position's
/// bit pattern.
struct Search {
    bounds: [f32; 15],
    pattern: [u8; 16],
}

impl Search {
    fn new(code: [f32; 16]) -> Search {
        let mut pattern: [u8; 16] = std::array::from_fn(|i| i as u8);
        pattern.sort_by(|&a, &b| code[a as usize].total_cmp(&code[b as usize]));
        let bounds = std::array::from_fn(|i| {
            (code[pattern[i] as usize] + code[pattern[i + 1] as usize]) / 2.0
        });
        Search { bounds, pattern }
    }

    /// The pattern of `v` (in [−1, 1]): its position among the bounds.
    fn code(&self, v: f32) -> u8 {
        self.pattern[self.bounds.partition_point(|&b| b < v)]
    }
}

/// Block size of the nested (double) quantization of the block maxima.
pub const NESTED_BLOCKSIZE: usize = 256;

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map()` as torch
/// computes it in f32), as f32 bits. Sorted ascending, from −0.99297
/// (bitsandbytes 0.48's kernel forced that entry to −1.0; 0.50 does not).
const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// The nested quantization map, as saved in `nested_quant_map`.
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// The largest magnitude of a 4-bit block as stored: the weight's partial
/// last block (shorter than `blocksize`) keeps torch's `clamp(min=1e-38)`.
fn block_max(block: &[f32], blocksize: usize) -> f32 {
    let m = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    if block.len() < blocksize {
        m.max(MIN_ABSMAX)
    } else {
        m
    }
}

/// The floor `backends/default/ops.py` puts under a 4-bit block's maximum
/// before dividing by it.
const MIN_ABSMAX: f32 = 1e-38;

/// Quantizes consecutive 4-bit blocks of a weight converted to f32: `x`
/// holds whole blocks, but its last block may be the weight's partial last
/// block. Appends packed bytes (first element in the high nibble) to
/// `packed` and one absmax per block to `absmax`. `x.len()` must be even.
pub fn quantize_4bit_blocks(
    x: &[f32],
    blocksize: usize,
    kind: FourBit,
    packed: &mut Vec<u8>,
    absmax: &mut Vec<f32>,
) {
    let search = Search::new(kind.quant_map());
    let n_blocks = x.len().div_ceil(blocksize);
    let start_p = packed.len();
    let start_a = absmax.len();
    packed.resize(start_p + x.len() / 2, 0);
    absmax.resize(start_a + n_blocks, 0.0);
    packed[start_p..]
        .par_chunks_mut(blocksize / 2)
        .zip(absmax[start_a..].par_iter_mut())
        .zip(x.par_chunks(blocksize))
        .for_each(|((out, am), block)| {
            *am = block_max(block, blocksize);
            let r = 1.0 / am.max(MIN_ABSMAX);
            let partial = block.len() < blocksize;
            let q = |v: f32| {
                let s = if partial { v / *am } else { v * r };
                search.code(s.clamp(-1.0, 1.0))
            };
            for (o, pair) in out.iter_mut().zip(block.chunks(2)) {
                *o = (q(pair[0]) << 4) | q(pair[1]);
            }
        });
}

/// Appends the stored maximum of each `blocksize` block of `x` (the last
/// may be the weight's partial block) to `absmax`: the first pass of double
/// quantization, equal to what [`quantize_4bit_blocks`] appends.
pub fn block_absmax(x: &[f32], blocksize: usize, absmax: &mut Vec<f32>) {
    let start = absmax.len();
    absmax.resize(start + x.len().div_ceil(blocksize), 0.0);
    absmax[start..]
        .par_iter_mut()
        .zip(x.par_chunks(blocksize))
        .for_each(|(m, b)| *m = block_max(b, blocksize));
}

/// torch's serial CPU `sum` of a contiguous f32 vector (`cascade_sum`,
/// `vectorized_inner_sum` → `row_sum` → `multi_row_sum`) with vectors of
/// `lanes` floats (8 on x86-64: torch 2.9 runs its AVX2 sum kernel even on
/// AVX-512 machines).
/// torch splits inputs of 32768 or more elements across threads; this is
/// its single-thread result.
pub fn torch_sum(x: &[f32], lanes: usize) -> f32 {
    let n = x.len();
    if n < lanes {
        return 0.0 + row_sum(1, n, |i, acc| acc[0] += x[i]);
    }
    let nv = n / lanes;
    let v = row_sum_vec(lanes, nv, |i, acc| {
        for (a, b) in acc.iter_mut().zip(&x[i * lanes..(i + 1) * lanes]) {
            *a += b;
        }
    });
    let mut fin = 0f32;
    for &t in &x[nv * lanes..] {
        fin += t;
    }
    for &l in &v[..lanes] {
        fin += l;
    }
    0.0 + fin
}

/// Inputs this long or longer are split across torch's threads
/// (`at::internal::GRAIN_SIZE`).
pub const TORCH_GRAIN_SIZE: usize = 32768;

/// torch's CPU `mean` of an f32 vector with `threads` intra-op threads
/// (`torch.get_num_threads()`): [`torch_sum`] divided by the count. From
/// [`TORCH_GRAIN_SIZE`] elements on, torch's `two_pass_reduction` sums
/// `min(threads, ⌈n/grain⌉)` equal chunks (`parallel_for`'s split) into a
/// buffer of `threads` slots, then sums that buffer the same way.
pub fn torch_mean(x: &[f32], lanes: usize, threads: usize) -> f32 {
    let n = x.len();
    let sum = if n < TORCH_GRAIN_SIZE || threads <= 1 {
        torch_sum(x, lanes)
    } else {
        let used = threads.min(n.div_ceil(TORCH_GRAIN_SIZE));
        let chunk = n.div_ceil(used);
        let mut buffer = vec![0f32; threads];
        for (slot, part) in buffer.iter_mut().zip(x.chunks(chunk)) {
            *slot = torch_sum(part, lanes);
        }
        torch_sum(&buffer, lanes)
    };
    sum / n as f32
}

type Lanes = [f32; 16];

fn row_sum(width: usize, size: usize, add: impl Fn(usize, &mut Lanes)) -> f32 {
    row_sum_vec(width, size, add)[0]
}

/// `row_sum`: the row viewed as `[size/4, 4]` summed by `multi_row_sum`,
/// the leftover elements added to the first partial, then the partials.
fn row_sum_vec(width: usize, size: usize, add: impl Fn(usize, &mut Lanes)) -> Lanes {
    let size_ilp = size / 4;
    let mut p = multi_row_sum(size_ilp, |i, k, acc| add(4 * i + k, acc));
    for i in size_ilp * 4..size {
        add(i, &mut p[0]);
    }
    for k in 1..4 {
        let pk = p[k];
        for l in 0..width {
            p[0][l] += pk[l];
        }
    }
    p[0]
}

fn ceil_log2(x: usize) -> u32 {
    if x <= 2 {
        1
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

/// `multi_row_sum` with 4 rows and 4 levels of partial sums, each level
/// flushed into the next after `2^level_power` steps.
fn multi_row_sum(size: usize, add: impl Fn(usize, usize, &mut Lanes)) -> [Lanes; 4] {
    const LEVELS: usize = 4;
    let level_power = (ceil_log2(size) / LEVELS as u32).max(4);
    let step = 1usize << level_power;
    let mask = step - 1;
    let mut acc = [[[0f32; 16]; 4]; LEVELS];
    let add_into = |dst: &mut Lanes, src: &Lanes| {
        for (a, b) in dst.iter_mut().zip(src) {
            *a += b;
        }
    };
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add(i, k, a);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (dst, src) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                add_into(dst, src);
                *src = [0.0; 16];
            }
            if i & (mask << (j as u32 * level_power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add(i, k, a);
        }
        i += 1;
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (dst, src) in first[0].iter_mut().zip(level) {
            add_into(dst, src);
        }
    }
    acc[0]
}

/// The vector width of torch's x86-64 CPU sum kernel (8 floats, under
/// both its AVX2 and AVX-512 dispatch: fixtures/bnb/torch-mean.json).
/// Fixed, so that llmtool's output does not depend on the machine.
pub const TORCH_LANES: usize = 8;

/// Double quantization of 4-bit block maxima (`quantize_4bit` with
/// `compress_statistics=True`).
pub struct Nested {
    /// The maxima minus `offset`, 8-bit codes of the dynamic map.
    pub codes: Vec<u8>,
    /// One f32 maximum per 256 codes.
    pub absmax: Vec<f32>,
    /// torch's mean of the maxima.
    pub offset: f32,
}

/// Entries of the CPU kernel's table from a normalized value to a code.
const LUT_SIZE: usize = 65536;

/// `build_quantize_lut` of the dynamic map: entry `i` stands for
/// `2i/65535 − 1` and holds the first map index whose upper midpoint
/// `(c[j] + c[j+1])·0.5` is not below it.
fn nested_lut() -> &'static [u8] {
    static LUT: OnceLock<Vec<u8>> = OnceLock::new();
    LUT.get_or_init(|| {
        let map = dynamic_map();
        let mid: Vec<f32> = map.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        let mut j = 0;
        (0..LUT_SIZE)
            .map(|i| {
                let v = (2.0 * i as f32) / (LUT_SIZE - 1) as f32 - 1.0;
                while j < mid.len() && mid[j] < v {
                    j += 1;
                }
                j as u8
            })
            .collect()
    })
}

/// Quantizes block maxima as bitsandbytes' double quantization does, with
/// torch using `threads` threads for the mean.
pub fn double_quant(absmax: &[f32], threads: usize) -> Nested {
    let offset = torch_mean(absmax, TORCH_LANES, threads);
    let lut = nested_lut();
    let dev: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
    let mut codes = vec![0u8; dev.len()];
    let mut nested = vec![0f32; dev.len().div_ceil(NESTED_BLOCKSIZE)];
    codes
        .par_chunks_mut(NESTED_BLOCKSIZE)
        .zip(nested.par_iter_mut())
        .zip(dev.par_chunks(NESTED_BLOCKSIZE))
        .for_each(|((out, am), block)| {
            let m = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            *am = m;
            // Zeros stay code 0 (`codes` starts so), as the kernel writes them.
            if m == 0.0 {
                return;
            }
            let r = 1.0 / m;
            for (o, &v) in out.iter_mut().zip(block) {
                let t = ((v * r).clamp(-1.0, 1.0) + 1.0) * 0.5;
                // The wheel's x86-64 build fuses this multiply-add (it is
                // compiled for AVX2 + FMA); the cast truncates.
                *o = lut[t.mul_add((LUT_SIZE - 1) as f32, 0.5) as usize];
            }
        });
    Nested {
        codes,
        absmax: nested,
        offset,
    }
}

/// `v` rounded to float16 and back (round half to even, as torch's
/// `.to(torch.float16)`), without a table or a branch per element in the
/// common case: the f32 mantissa is rounded to 10 bits for f16 normals, to
/// multiples of 2⁻²⁴ for f16 subnormals; beyond f16's range it is ±inf.
pub fn round_to_f16(v: f32) -> f32 {
    let a = v.abs();
    // Every case is computed and one selected, so that loops over rows
    // vectorise.
    let b = v.to_bits();
    let normal = f32::from_bits(b.wrapping_add(0x0FFF + ((b >> 13) & 1)) & !0x1FFF);
    // f16 subnormals: a fixed quantum of 2⁻²⁴; the scaling is exact and
    // |v·2²⁴| < 2¹⁰, where nearest_int rounds half to even (the sign is put
    // back so that tiny negatives give −0 as the reference does).
    const Q: f32 = 16_777_216.0;
    let sub = (crate::quant::nearest_int(v * Q) as f32 / Q).copysign(v);
    let r = if a < 6.103_515_6e-5 { sub } else { normal };
    // 65520 = the midpoint between f16::MAX and 2¹⁶: rounds up to inf.
    let r = if a >= 65520.0 {
        f32::INFINITY.copysign(v)
    } else {
        r
    };
    if a.is_nan() {
        v
    } else {
        r
    }
}

/// LLM.int8 row quantization (`Int8Params._quantize` →
/// `int8_vectorwise_quant`, threshold 0): `row` is converted to f16, its
/// largest magnitude becomes the row's `SCB`, and each value is
/// `round_half_even(f16 · (127 · (1/max)))`. An all-zero row gives zeros
/// (torch turns its NaNs into 0). Returns the scale, or the index of the
/// first value beyond float16's range. `out` gets the int8 codes' bytes.
pub fn quantize_int8_row(row: &[f32], out: &mut [u8]) -> Result<f32, usize> {
    let m = row.iter().fold(0f32, |m, v| m.max(round_to_f16(*v).abs()));
    if m.is_infinite() {
        return Err(row
            .iter()
            .position(|v| round_to_f16(*v).is_infinite())
            .unwrap_or(0));
    }
    if m == 0.0 {
        out.iter_mut().for_each(|o| *o = 0);
        return Ok(0.0);
    }
    let s = (1.0 / m) * 127.0;
    for (o, v) in out.iter_mut().zip(row) {
        // |f16 · s| ≤ 127: ggml's nearest_int rounds half to even like
        // torch, without the libm call that `round_ties_even` becomes on
        // baseline x86-64 (which kept this loop scalar).
        *o = crate::quant::nearest_int(round_to_f16(*v) * s) as i8 as u8;
    }
    Ok(m)
}

/// Why stored bitsandbytes tensors cannot be read back; `tensor` is the
/// suffix of the side tensor at fault (`absmax`, `SCB`, …).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ReadError {
    #[error("{tensor} holds {got} values where the weight needs {expected}")]
    Length {
        tensor: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{tensor}[{index}] is {value}, not a finite scale")]
    NotFinite {
        tensor: &'static str,
        index: usize,
        value: f32,
    },
}

fn check_len(tensor: &'static str, got: usize, expected: usize) -> Result<(), ReadError> {
    if got == expected {
        Ok(())
    } else {
        Err(ReadError::Length {
            tensor,
            expected,
            got,
        })
    }
}

fn check_finite(tensor: &'static str, v: &[f32]) -> Result<(), ReadError> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ReadError::NotFinite {
            tensor,
            index,
            value: v[index],
        }),
    }
}

/// The dtype a 4-bit weight is dequantized to (the quant state's `dtype`):
/// bitsandbytes' kernel rounds the f32 product to it (round half to even).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
}

impl OutType {
    fn round(self, v: f32) -> f32 {
        match self {
            OutType::F32 => v,
            OutType::F16 => round_to_f16(v),
            OutType::Bf16 => f32::from_bits(u32::from(crate::quant::f32_to_bf16_bits(v)) << 16),
        }
    }
}

/// The block maxima of a double-quantized weight: `dequantize_blockwise`
/// (`map[code] · nested_absmax[i / blocksize]` in f32) and then `+ offset`
/// in f32, as `dequantize_4bit` does before using them.
pub fn nested_absmax(
    codes: &[u8],
    nested: &[f32],
    map: &[f32],
    blocksize: usize,
    offset: f32,
) -> Result<Vec<f32>, ReadError> {
    check_len("nested_quant_map", map.len(), 256)?;
    check_len(
        "nested_absmax",
        nested.len(),
        codes.len().div_ceil(blocksize),
    )?;
    check_finite("nested_absmax", nested)?;
    check_finite("nested_quant_map", map)?;
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &c)| map[c as usize] * nested[i / blocksize] + offset)
        .collect())
}

/// A bitsandbytes 4-bit weight `[rows, cols]` read in place: codes packed
/// two a byte over the flattened weight (first in the high nibble), one
/// f32 maximum per `blocksize` elements.
pub struct FourBitRef<'a> {
    code: [f32; 16],
    packed: &'a [u8],
    absmax: Vec<f32>,
    blocksize: usize,
    rows: usize,
    cols: usize,
    out: OutType,
}

impl<'a> FourBitRef<'a> {
    /// Checks that `packed` and `absmax` (already un-nested) cover the
    /// weight and that every maximum is finite.
    pub fn new(
        kind: FourBit,
        packed: &'a [u8],
        absmax: Vec<f32>,
        blocksize: usize,
        [rows, cols]: [usize; 2],
        out: OutType,
    ) -> Result<FourBitRef<'a>, ReadError> {
        let n = rows * cols;
        check_len("weight", packed.len(), n.div_ceil(2))?;
        check_len("absmax", absmax.len(), n.div_ceil(blocksize))?;
        check_finite("absmax", &absmax)?;
        Ok(FourBitRef {
            code: kind.quant_map(),
            packed,
            absmax,
            blocksize,
            rows,
            cols,
            out,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn out_type(&self) -> OutType {
        self.out
    }

    /// Writes rows `rows` dequantized into `out` (`rows.len() · cols`).
    pub fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let start = rows.start * self.cols;
        for (k, o) in out[..rows.len() * self.cols].iter_mut().enumerate() {
            let i = start + k;
            let byte = self.packed[i / 2];
            let q = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
            *o = self
                .out
                .round(self.code[q as usize] * self.absmax[i / self.blocksize]);
        }
    }
}

/// `int8_vectorwise_dequant`'s `7.874015718698502e-3` (1/127), as the f32
/// torch multiplies by.
const INV_127: f32 = 7.874_015_718_698_502e-3_f64 as f32;

/// An LLM.int8 weight `[rows, cols]` read in place: `(q · SCB[row]) ·
/// (1/127)` in f32, as `int8_vectorwise_dequant` (what transformers'
/// `dequantize` calls).
pub struct Int8Ref<'a> {
    codes: &'a [u8],
    scb: Vec<f32>,
    cols: usize,
}

impl<'a> Int8Ref<'a> {
    pub fn new(codes: &'a [u8], scb: Vec<f32>, cols: usize) -> Result<Int8Ref<'a>, ReadError> {
        check_len("SCB", scb.len() * cols, codes.len())?;
        check_finite("SCB", &scb)?;
        Ok(Int8Ref { codes, scb, cols })
    }

    pub fn rows(&self) -> usize {
        self.scb.len()
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Writes rows `rows` dequantized into `out` (`rows.len() · cols`).
    pub fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        for (r, o) in rows.zip(out.chunks_exact_mut(self.cols)) {
            let codes = &self.codes[r * self.cols..(r + 1) * self.cols];
            for (o, &q) in o.iter_mut().zip(codes) {
                *o = (f32::from(q as i8) * self.scb[r]) * INV_127;
            }
        }
    }
}

/// Python's `repr` of a float (shortest round-trip digits; exponent form
/// below 1e-4 and from 1e16, as `json.dumps` writes `nested_offset`).
pub fn py_float_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's shortest form has Python's digit count, but where two strings
    // of that length round-trip Python takes the nearest (ties to even);
    // Rust's fixed-precision formatting rounds exactly that way.
    let shortest = format!("{x:e}");
    let n_digits = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let e = format!("{x:.*e}", n_digits - 1);
    let (mant, exp) = e.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let s = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn python_float_repr() {
        for (x, want) in [
            (2.537010669708252, "2.537010669708252"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (100.0, "100.0"),
            (-0.25, "-0.25"),
            (0.012345678918063641, "0.012345678918063641"),
            (123456789012345.6, "123456789012345.6"),
            (0.073_230_743_408_203_12, "0.07323074340820312"),
        ] {
            assert_eq!(py_float_repr(x), want);
        }
    }

    #[test]
    fn f16_rounding_matches_the_half_crate() {
        let mut x = 0x1234_5678u32;
        let check = |v: f32| {
            let want = f16::from_f32(v).to_f32();
            let got = round_to_f16(v);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{v:e}: {got:e} vs {want:e}"
            );
        };
        for e in 0..256u32 {
            for m in [
                0, 1, 0xFFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7F_E000, 0x7F_F000, 0x7F_FFFF,
            ] {
                check(f32::from_bits((e << 23) | m));
                check(-f32::from_bits((e << 23) | m));
            }
        }
        for _ in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            check(f32::from_bits(x));
        }
        for v in [
            65504.0,
            65519.99,
            65520.0,
            6.1035156e-5,
            6.1035153e-5,
            2.98e-8,
            2.99e-8,
        ] {
            check(v);
        }
    }

    #[test]
    fn fp4_quant_map_is_codes_over_twelve() {
        let m = FourBit::Fp4.quant_map();
        assert_eq!(m[3], 1.0);
        assert_eq!(m[8].to_bits(), 0, "+0.0, not -0.0");
        assert_eq!(m[1], 0.0625f32 / 12.0);
    }

    // Expected values below are bitsandbytes 0.50.2's own output
    // (`functional.quantize_4bit` on CPU) for the same inputs.
    #[test]
    fn all_zero_blocks_store_what_bitsandbytes_stores() {
        let mut x = vec![0f32; 90];
        x[0] = 1.0;
        let (mut packed, mut absmax) = (Vec::new(), Vec::new());
        quantize_4bit_blocks(&x, 32, FourBit::Nf4, &mut packed, &mut absmax);
        // A full block of zeros keeps 0, the partial one the 1e-38 floor;
        // zeros take NF4's code 7.
        assert_eq!(absmax, [1.0, 0.0, 1e-38]);
        assert_eq!(packed[0], 0xF7);
        assert!(packed[1..].iter().all(|&b| b == 0x77), "{packed:?}");
        let mut again = Vec::new();
        block_absmax(&x, 32, &mut again);
        assert_eq!(again, absmax);
    }

    #[test]
    fn fp4_puts_tiny_positives_on_the_negative_zero_pattern() {
        let mut x: Vec<f32> = [0.001, -0.001, 0.0, -0.0].repeat(16);
        x[63] = 1.0;
        let (mut packed, mut absmax) = (Vec::new(), Vec::new());
        quantize_4bit_blocks(&x, 64, FourBit::Fp4, &mut packed, &mut absmax);
        assert_eq!(packed[..4], [0x80, 0x00, 0x80, 0x00]);
    }

    #[test]
    fn constant_maxima_double_quantize_to_zero_codes() {
        let n = double_quant(&[0.5; 300], 1);
        assert_eq!(n.offset, 0.5);
        assert_eq!(n.absmax, [0.0, 0.0]);
        assert!(n.codes.iter().all(|&c| c == 0));
    }

    #[test]
    fn dynamic_map_is_sorted_and_left_as_bitsandbytes_builds_it() {
        let m = dynamic_map();
        assert!(m.windows(2).all(|w| w[0] < w[1]));
        assert!(m[0] > -1.0 && m[0] < -0.99, "entry 0 is not forced to -1");
        assert_eq!(m[255], 1.0);
    }
}
