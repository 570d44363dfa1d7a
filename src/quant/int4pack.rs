//! Integer weight codes packed into int32 words, as the three checkpoint
//! layouts that vLLM, transformers and llama.cpp's converter read: GPTQ,
//! AWQ GEMM and compressed-tensors `pack-quantized`. Both directions:
//! [`pack_gptq`], [`pack_awq`] and [`pack_compressed`] turn codes, scales,
//! zero points and group indices ([`IntWeights`], the fields of
//! [`crate::quant::gptq::GptqOutput`]) into the tensors a checkpoint stores;
//! [`PackedRef`] reads such tensors back, element by element or a range of
//! output rows at a time as f32.
//!
//! Codes and zero points are unsigned here (a symmetric zero is
//! 2^(bits−1)); a weight is `W[o, i] = (q[o, i] − z[g, o]) · s[g, o]` with
//! `g = g_idx[i]`. The layouts, for `rows` = out features, `cols` = in
//! features, `b` bits, `p = 32/b` codes per word, element `k` of a word in
//! bits `k·b .. k·b + b` (all little-endian int32):
//!
//! * **GPTQ** (AutoGPTQ `nn_modules/qlinear/qlinear_cuda_old.py` and
//!   `qlinear_exllama.py` `pack`, GPTQModel's v1 export): `qweight`
//!   `[cols/p, rows]`, word `(r, o)` holding input columns `p·r .. p·r + p`
//!   of output `o`; `qzeros` `[groups, rows/p]` packed along the outputs;
//!   `scales` `[groups, rows]`; `g_idx` `[cols]`. Checkpoint format `gptq`
//!   (v1) stores `zero − 1` and readers add 1 back (vLLM `gptq.py`,
//!   llama.cpp `dequant_gptq`), so a true zero of 0 cannot be stored and
//!   [`pack_gptq`] refuses it; `gptq_v2` (GPTQModel) stores the zero itself.
//! * **AWQ GEMM** (AutoAWQ `awq/modules/linear/gemm.py`,
//!   `awq/utils/packing_utils.py`): 4-bit only; `qweight` `[cols, rows/8]`
//!   packed along the outputs with element `k` of word `c` holding output
//!   `8c + [0,2,4,6,1,3,5,7][k]`; `qzeros` `[groups, rows/8]` in the same
//!   order, the real zero (no −1); `scales` `[groups, rows]`; no g_idx
//!   (column `i` is in group `i / G`).
//! * **compressed-tensors `pack-quantized`** (compressed-tensors 0.19.0
//!   `compressors/pack_quantized/{base,helpers}.py`: `pack_to_int32`,
//!   `unpack_from_int32`): `weight_packed` `[rows, cols·b/32]` packed
//!   along the inputs; `weight_scale` `[rows, groups]`; `weight_shape` I64
//!   `[rows, cols]`; `weight_zero_point` only when asymmetric, packed along
//!   the outputs: `[rows·b/32, groups]`; `weight_g_idx` `[cols]` only with
//!   activation ordering. compressed-tensors keeps *signed* codes and zero
//!   points (`[−2^(b−1), 2^(b−1))`) and `pack_to_int32` adds 2^(b−1) before
//!   packing, so the stored field is the unsigned code used here; a
//!   symmetric layer stores no zero point and reads as zero 2^(b−1).
//!
//! Dequantization ([`PackedRef::decode_rows`]) is `(q − z)·s` computed in
//! f32, the scale widened exactly from its stored dtype. That is the torch
//! reference in float32: compressed-tensors' `_dequantize` (`q − z` in the
//! scale's dtype, times the scale) after transformers has loaded the scales
//! as float32 (`from_pretrained(dtype=torch.float32)`, checked on
//! `fixtures/pack/micro-llama-ct`), and llama.cpp's `dequant_gptq`. With
//! f16 or bf16 scales (≤ 11 significant bits) and `|q − z| ≤ 2^bits` the
//! product is exact; a runtime that keeps the scales in f16/bf16 (vLLM,
//! transformers in bf16, compressed-tensors' `decompress`) rounds it once
//! more to that dtype, which is what storing our values in the scales' dtype
//! gives, bit for bit (checked against `decompress` with bf16 scales).
//!
//! The unit tests compare every packed word with the reference packers'
//! (`tests/oracle/pack_goldens.py`, `fixtures/pack/`: compressed-tensors'
//! `pack_to_int32` and compressor, AutoGPTQ's and AutoAWQ's packing loops)
//! and the bf16 dequantization with compressed-tensors' `decompress`.
//!
//! Length: over 1000 lines: three layouts in both directions with their
//! checks (about 900 lines with docs), and a third of the file the tests
//! (goldens, round trips of every layout, refusals) beside them.

use std::ops::Range;

use crate::quant::f16_bits_to_f32;

/// Why codes could not be packed or packed tensors read.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PackError {
    /// The layout has no packing for this many bits.
    #[error("{bits}-bit {layout} weights are not supported ({supported})")]
    Bits {
        bits: u32,
        layout: &'static str,
        supported: &'static str,
    },
    /// A tensor's shape disagrees with the others.
    #[error("{tensor} is {got:?}, expected {expected:?}")]
    Shape {
        tensor: &'static str,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    /// A tensor's bytes disagree with its shape.
    #[error("{tensor}: its shape needs {expected} bytes, it holds {got}")]
    Length {
        tensor: &'static str,
        expected: u64,
        got: u64,
    },
    /// A dimension is not a multiple of what the packing needs.
    #[error("{tensor}: {what} {n} is not a multiple of {multiple}")]
    NotMultiple {
        tensor: &'static str,
        what: &'static str,
        n: u64,
        multiple: u64,
    },
    /// A group index points past the scales.
    #[error("{tensor}[{col}] is {group}, but the scales have {groups} groups")]
    GroupIndex {
        tensor: &'static str,
        col: usize,
        group: i64,
        groups: usize,
    },
    /// A code or zero point does not fit in the bits.
    #[error("{what} {value} at {index} does not fit in {bits} bits")]
    Range {
        what: &'static str,
        index: usize,
        value: u32,
        bits: u32,
    },
    /// GPTQ v1 stores zero − 1, which cannot hold a zero point of 0.
    #[error(
        "zero point 0 (group {group}, output {row}) cannot be stored in the GPTQ v1 format, which stores zero − 1; write gptq_v2 or compressed-tensors instead"
    )]
    ZeroV1 { group: usize, row: usize },
    /// A symmetric layout was asked for with zero points off the middle.
    #[error(
        "zero point {value} (group {group}, output {row}) in a symmetric layer: symmetric checkpoints store no zero point and read it as {mid}"
    )]
    NotSymmetric {
        group: usize,
        row: usize,
        value: u32,
        mid: u32,
    },
}

/// Which checkpoint layout packed tensors are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// GPTQ: `qweight` packed along the inputs; `v2` stores true zeros,
    /// v1 (`checkpoint_format: gptq`) zero − 1.
    Gptq { v2: bool },
    /// AutoAWQ GEMM.
    Awq,
    /// compressed-tensors `pack-quantized`.
    Compressed,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Gptq { v2: false } => "GPTQ v1",
            Layout::Gptq { v2: true } => "GPTQ v2",
            Layout::Awq => "AWQ GEMM",
            Layout::Compressed => "compressed-tensors pack-quantized",
        }
    }

    /// Refuses bit widths the layout has no packing for.
    pub fn check_bits(self, bits: u32) -> Result<(), PackError> {
        let (ok, supported) = match self {
            Layout::Awq => (bits == 4, "AWQ GEMM is 4-bit only"),
            _ => (bits == 4 || bits == 8, "4 and 8 bits are"),
        };
        if ok {
            Ok(())
        } else {
            Err(PackError::Bits {
                bits,
                layout: self.name(),
                supported,
            })
        }
    }
}

/// The dtype of stored scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleType {
    F32,
    F16,
    Bf16,
}

impl ScaleType {
    fn bytes(self) -> usize {
        match self {
            ScaleType::F32 => 4,
            _ => 2,
        }
    }

    /// The value at element `i` of little-endian `bytes`.
    fn read(self, bytes: &[u8], i: usize) -> f32 {
        match self {
            ScaleType::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()),
            ScaleType::F16 => f16_bits_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
            ScaleType::Bf16 => f32::from_bits(
                (u32::from(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))) << 16,
            ),
        }
    }
}

/// Quantized weights to pack: the fields of
/// [`GptqOutput`](crate::quant::gptq::GptqOutput) with their shape.
#[derive(Debug, Clone, Copy)]
pub struct IntWeights<'a> {
    /// Bits per code.
    pub bits: u32,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Unsigned codes, `rows × cols` row-major.
    pub codes: &'a [u8],
    /// Scales, `groups × rows`.
    pub scales: &'a [f32],
    /// Unsigned zero points, `groups × rows`.
    pub zeros: &'a [u8],
    /// Group of every input column.
    pub g_idx: &'a [u32],
}

impl<'a> IntWeights<'a> {
    /// The output of [`crate::quant::gptq::quantize`] for a `rows × cols`
    /// weight quantized to `bits`.
    pub fn from_gptq(
        out: &'a crate::quant::gptq::GptqOutput,
        bits: u32,
        rows: usize,
        cols: usize,
    ) -> Self {
        IntWeights {
            bits,
            rows,
            cols,
            codes: &out.codes,
            scales: &out.scales,
            zeros: &out.zeros,
            g_idx: &out.g_idx,
        }
    }

    /// Checks every length and range; returns the number of groups.
    fn validate(&self, layout: Layout) -> Result<usize, PackError> {
        layout.check_bits(self.bits)?;
        let shape = |tensor, expected: Vec<usize>, got: usize| {
            if expected.iter().product::<usize>() == got {
                Ok(())
            } else {
                Err(PackError::Shape {
                    tensor,
                    expected: expected.iter().map(|&d| d as u64).collect(),
                    got: vec![got as u64],
                })
            }
        };
        let (rows, cols) = (self.rows, self.cols);
        shape("codes", vec![rows, cols], self.codes.len())?;
        shape("g_idx", vec![cols], self.g_idx.len())?;
        let groups = self.scales.len().checked_div(rows).unwrap_or(0);
        shape("scales", vec![groups, rows], self.scales.len())?;
        shape("zeros", vec![groups, rows], self.zeros.len())?;
        if let Some((col, &g)) = self
            .g_idx
            .iter()
            .enumerate()
            .find(|(_, &g)| g as usize >= groups)
        {
            return Err(PackError::GroupIndex {
                tensor: "g_idx",
                col,
                group: g.into(),
                groups,
            });
        }
        for (what, v) in [("code", self.codes), ("zero point", self.zeros)] {
            if let Some((index, &value)) = v
                .iter()
                .enumerate()
                .find(|(_, &c)| u32::from(c) >> self.bits != 0)
            {
                return Err(PackError::Range {
                    what,
                    index,
                    value: value.into(),
                    bits: self.bits,
                });
            }
        }
        Ok(groups)
    }

    /// Whether column `i` is in group `i / G` for every column, G being
    /// the columns per group (`g_idx` then adds nothing).
    fn trivial_g_idx(&self, groups: usize) -> bool {
        let g = self.cols.div_ceil(groups.max(1)).max(1);
        self.g_idx
            .iter()
            .enumerate()
            .all(|(i, &x)| x as usize == i / g)
    }
}

/// The values of one packed tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// Scales; the writer stores them in the model's dtype (f16 for GPTQ and
    /// AWQ by convention, the base model's dtype for compressed-tensors).
    Scales(Vec<f32>),
}

/// One tensor of a packed Linear layer, named `{module}.{suffix}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// `qweight`, `weight_packed`, …
    pub suffix: &'static str,
    /// Torch order.
    pub shape: Vec<u64>,
    pub data: Data,
}

fn tensor(suffix: &'static str, shape: &[usize], data: Data) -> Tensor {
    Tensor {
        suffix,
        shape: shape.iter().map(|&d| d as u64).collect(),
        data,
    }
}

fn not_multiple(tensor: &'static str, what: &'static str, n: usize, multiple: usize) -> PackError {
    PackError::NotMultiple {
        tensor,
        what,
        n: n as u64,
        multiple: multiple as u64,
    }
}

/// `n` values from `value(k)` packed `32/bits` to a word, element `k` of
/// each word in bits `k·bits ..`; the last word zero-padded.
fn pack_words(n: usize, bits: u32, value: impl Fn(usize) -> u32) -> Vec<i32> {
    let per = (32 / bits) as usize;
    (0..n.div_ceil(per))
        .map(|w| {
            (0..per)
                .filter(|k| w * per + k < n)
                .fold(0u32, |acc, k| acc | value(w * per + k) << (k as u32 * bits))
                as i32
        })
        .collect()
}

/// Transposes `groups × rows` into `rows × groups`.
fn transpose(v: &[f32], groups: usize, rows: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|o| (0..groups).map(move |g| v[g * rows + o]))
        .collect()
}

/// The tensors of a GPTQ layer: `qweight`, `qzeros`, `scales`, `g_idx`, as
/// AutoGPTQ's `pack` writes them (v1 stores zero − 1, `v2` the zero).
/// `cols` and `rows` must be multiples of 32/bits.
pub fn pack_gptq(w: &IntWeights, v2: bool) -> Result<Vec<Tensor>, PackError> {
    let groups = w.validate(Layout::Gptq { v2 })?;
    let per = (32 / w.bits) as usize;
    if w.cols % per != 0 {
        return Err(not_multiple("qweight", "input features", w.cols, per));
    }
    if w.rows % per != 0 {
        return Err(not_multiple("qzeros", "output features", w.rows, per));
    }
    let offset = u32::from(!v2);
    if let Some(i) = w.zeros.iter().position(|&z| u32::from(z) < offset) {
        return Err(PackError::ZeroV1 {
            group: i / w.rows,
            row: i % w.rows,
        });
    }
    let mut qweight = Vec::with_capacity(w.cols / per * w.rows);
    for r in 0..w.cols / per {
        qweight.extend(
            (0..w.rows)
                .map(|o| pack_words(per, w.bits, |k| w.codes[o * w.cols + r * per + k].into())[0]),
        );
    }
    let qzeros: Vec<i32> = (0..groups)
        .flat_map(|g| {
            let z = &w.zeros[g * w.rows..(g + 1) * w.rows];
            pack_words(w.rows, w.bits, |o| u32::from(z[o]) - offset)
        })
        .collect();
    Ok(vec![
        tensor("qweight", &[w.cols / per, w.rows], Data::I32(qweight)),
        tensor("qzeros", &[groups, w.rows / per], Data::I32(qzeros)),
        tensor("scales", &[groups, w.rows], Data::Scales(w.scales.to_vec())),
        tensor(
            "g_idx",
            &[w.cols],
            Data::I32(w.g_idx.iter().map(|&g| g as i32).collect()),
        ),
    ])
}

/// AutoAWQ GEMM's order of outputs within a word: element `k` holds output
/// `AWQ_ORDER[k]` of its eight (`gemm.py`'s `order_map`).
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// Element of a word holding output `j` of its eight (`AWQ_REVERSE_ORDER`).
const AWQ_REVERSE: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// The tensors of an AWQ GEMM layer: `qweight`, `qzeros`, `scales`, as
/// AutoAWQ's `WQLinear_GEMM.from_linear` writes them. 4-bit; `rows` a
/// multiple of 8; column `i` must be in group `i / G` (AWQ has no g_idx).
pub fn pack_awq(w: &IntWeights) -> Result<Vec<Tensor>, PackError> {
    let groups = w.validate(Layout::Awq)?;
    if w.rows % 8 != 0 {
        return Err(not_multiple("qweight", "output features", w.rows, 8));
    }
    if !w.trivial_g_idx(groups) {
        let g = w.cols.div_ceil(groups.max(1));
        let col = (0..w.cols)
            .find(|&i| w.g_idx[i] as usize != i / g)
            .unwrap_or(0);
        return Err(PackError::GroupIndex {
            tensor: "g_idx (AWQ stores none: column i must be in group i / group_size)",
            col,
            group: w.g_idx[col].into(),
            groups,
        });
    }
    let pack = |n_rows: usize, value: &dyn Fn(usize, usize) -> u8| -> Vec<i32> {
        (0..n_rows)
            .flat_map(|r| {
                (0..w.rows / 8).map(move |c| {
                    (0..8).fold(0u32, |acc, k| {
                        acc | u32::from(value(r, 8 * c + AWQ_ORDER[k])) << (4 * k)
                    }) as i32
                })
            })
            .collect()
    };
    let qweight = pack(w.cols, &|i, o| w.codes[o * w.cols + i]);
    let qzeros = pack(groups, &|g, o| w.zeros[g * w.rows + o]);
    Ok(vec![
        tensor("qweight", &[w.cols, w.rows / 8], Data::I32(qweight)),
        tensor("qzeros", &[groups, w.rows / 8], Data::I32(qzeros)),
        tensor("scales", &[groups, w.rows], Data::Scales(w.scales.to_vec())),
    ])
}

/// The tensors of a compressed-tensors `pack-quantized` layer, as
/// `PackedQuantizationCompressor.compress` writes them: `weight_packed`,
/// `weight_scale` (`[rows, groups]`), `weight_shape`, then
/// `weight_zero_point` unless `sym` (where every zero must be 2^(bits−1))
/// and `weight_g_idx` when the group indices are not `i / G`
/// (llm-compressor's `actorder="group"`).
pub fn pack_compressed(w: &IntWeights, sym: bool) -> Result<Vec<Tensor>, PackError> {
    let groups = w.validate(Layout::Compressed)?;
    let per = (32 / w.bits) as usize;
    if w.cols % per != 0 {
        return Err(not_multiple("weight_packed", "input features", w.cols, per));
    }
    let mid = 1u32 << (w.bits - 1);
    if sym {
        if let Some(i) = w.zeros.iter().position(|&z| u32::from(z) != mid) {
            return Err(PackError::NotSymmetric {
                group: i / w.rows,
                row: i % w.rows,
                value: w.zeros[i].into(),
                mid,
            });
        }
    }
    let packed: Vec<i32> = (0..w.rows)
        .flat_map(|o| {
            let row = &w.codes[o * w.cols..(o + 1) * w.cols];
            pack_words(w.cols, w.bits, |i| row[i].into())
        })
        .collect();
    let mut out = vec![
        tensor("weight_packed", &[w.rows, w.cols / per], Data::I32(packed)),
        tensor(
            "weight_scale",
            &[w.rows, groups],
            Data::Scales(transpose(w.scales, groups, w.rows)),
        ),
        tensor(
            "weight_shape",
            &[2],
            Data::I64(vec![w.rows as i64, w.cols as i64]),
        ),
    ];
    if !sym {
        // pack_to_int32(zero_point, packed_dim=0): packed along the outputs,
        // stored [ceil(rows·b/32), groups].
        let words = w.rows.div_ceil(per);
        let mut zp = vec![0i32; words * groups];
        for g in 0..groups {
            let z = &w.zeros[g * w.rows..(g + 1) * w.rows];
            for (r, word) in pack_words(w.rows, w.bits, |o| z[o].into())
                .into_iter()
                .enumerate()
            {
                zp[r * groups + g] = word;
            }
        }
        out.push(tensor("weight_zero_point", &[words, groups], Data::I32(zp)));
    }
    if !w.trivial_g_idx(groups) {
        out.push(tensor(
            "weight_g_idx",
            &[w.cols],
            Data::I32(w.g_idx.iter().map(|&g| g as i32).collect()),
        ));
    }
    Ok(out)
}

/// One stored tensor: little-endian bytes and torch-order shape.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub bytes: &'a [u8],
    pub shape: &'a [u64],
}

/// The stored tensors of one packed layer, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// `qweight` or `weight_packed` (I32).
    pub weight: Part<'a>,
    /// `qzeros` or `weight_zero_point` (I32); `None` only for a symmetric
    /// compressed-tensors layer.
    pub zeros: Option<Part<'a>>,
    /// `scales` or `weight_scale`.
    pub scales: Part<'a>,
    pub scale_type: ScaleType,
    /// `g_idx` or `weight_g_idx` (I32), when stored.
    pub g_idx: Option<Part<'a>>,
    /// compressed-tensors' `weight_shape` values `[rows, cols]`.
    pub shape: Option<[u64; 2]>,
}

/// A packed layer read back: a `rows × cols` weight matrix decoded from
/// its stored tensors without copying them.
#[derive(Debug, Clone)]
pub struct PackedRef<'a> {
    layout: Layout,
    bits: u32,
    rows: usize,
    cols: usize,
    groups: usize,
    weight: &'a [u8],
    zeros: Option<&'a [u8]>,
    scales: &'a [u8],
    scale_type: ScaleType,
    g_idx: Vec<u32>,
    /// `G` when column `i` is in group `i / G` for every column.
    group_size: Option<usize>,
}

fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
}

impl<'a> PackedRef<'a> {
    /// Checks the tensors' shapes and lengths against each other and the
    /// group indices against the scales. The error names the tensor by its
    /// suffix (`qweight`, `weight_scale`, …).
    pub fn new(layout: Layout, bits: u32, p: Parts<'a>) -> Result<PackedRef<'a>, PackError> {
        layout.check_bits(bits)?;
        let per = (32 / bits) as u64;
        let names = match layout {
            Layout::Compressed => [
                "weight_packed",
                "weight_zero_point",
                "weight_scale",
                "weight_g_idx",
            ],
            _ => ["qweight", "qzeros", "scales", "g_idx"],
        };
        let dims2 = |name: &'static str, part: &Part| -> Result<[u64; 2], PackError> {
            match *part.shape {
                [a, b] => Ok([a, b]),
                _ => Err(PackError::Shape {
                    tensor: name,
                    expected: vec![],
                    got: part.shape.to_vec(),
                }),
            }
        };
        let w = dims2(names[0], &p.weight)?;
        let s = dims2(names[2], &p.scales)?;
        let (rows, cols, groups) = match layout {
            // Saturating: an empty tensor may declare any outer size; the
            // shape checks below then refuse it.
            Layout::Gptq { .. } => (w[1], w[0].saturating_mul(per), s[0]),
            Layout::Awq => (w[1].saturating_mul(per), w[0], s[0]),
            Layout::Compressed => {
                let [rows, cols] = p.shape.ok_or(PackError::Shape {
                    tensor: "weight_shape",
                    expected: vec![2],
                    got: vec![],
                })?;
                (rows, cols, s[1])
            }
        };
        if rows == 0 || cols == 0 {
            return Err(PackError::Shape {
                tensor: names[0],
                expected: vec![],
                got: p.weight.shape.to_vec(),
            });
        }
        let expect = |tensor: &'static str, got: &[u64], expected: Vec<u64>| {
            if got == expected.as_slice() {
                Ok(())
            } else {
                Err(PackError::Shape {
                    tensor,
                    expected,
                    got: got.to_vec(),
                })
            }
        };
        match layout {
            Layout::Gptq { .. } | Layout::Awq => {
                if rows % per != 0 {
                    return Err(not_multiple(
                        names[1],
                        "output features",
                        rows as usize,
                        per as usize,
                    ));
                }
                expect(names[2], p.scales.shape, vec![groups, rows])?;
                let z = p.zeros.ok_or(PackError::Shape {
                    tensor: names[1],
                    expected: vec![groups, rows / per],
                    got: vec![],
                })?;
                expect(names[1], z.shape, vec![groups, rows / per])?;
            }
            Layout::Compressed => {
                if cols % per != 0 {
                    return Err(not_multiple(
                        "weight_shape",
                        "input features",
                        cols as usize,
                        per as usize,
                    ));
                }
                expect(names[0], p.weight.shape, vec![rows, cols / per])?;
                expect(names[2], p.scales.shape, vec![rows, groups])?;
                if let Some(z) = p.zeros {
                    expect(names[1], z.shape, vec![rows.div_ceil(per), groups])?;
                }
            }
        }
        let (rows, cols, groups) = (rows as usize, cols as usize, groups as usize);
        // Lengths: a file's header may disagree with its own shapes only if
        // the store let it, but a short slice must never be indexed.
        let len = |tensor: &'static str, part: &Part, elem: usize| {
            let expected = part
                .shape
                .iter()
                .try_fold(elem as u64, |a, &d| a.checked_mul(d))
                .unwrap_or(u64::MAX);
            if part.bytes.len() as u64 == expected {
                Ok(())
            } else {
                Err(PackError::Length {
                    tensor,
                    expected,
                    got: part.bytes.len() as u64,
                })
            }
        };
        len(names[0], &p.weight, 4)?;
        len(names[2], &p.scales, p.scale_type.bytes())?;
        if let Some(z) = &p.zeros {
            len(names[1], z, 4)?;
        }
        if groups == 0 && cols > 0 {
            return Err(PackError::Shape {
                tensor: names[2],
                expected: vec![],
                got: p.scales.shape.to_vec(),
            });
        }
        let g_idx = match p.g_idx {
            Some(g) => {
                expect(names[3], g.shape, vec![cols as u64])?;
                len(names[3], &g, 4)?;
                let mut v = Vec::with_capacity(cols);
                for col in 0..cols {
                    let x = word(g.bytes, col) as i32;
                    if x < 0 || x as usize >= groups {
                        return Err(PackError::GroupIndex {
                            tensor: names[3],
                            col,
                            group: x.into(),
                            groups,
                        });
                    }
                    v.push(x as u32);
                }
                v
            }
            None => {
                let g = cols.div_ceil(groups.max(1)).max(1);
                if cols.div_ceil(g) != groups || (groups > 1 && cols % g != 0) {
                    return Err(not_multiple(names[2], "input features", cols, groups));
                }
                (0..cols).map(|i| (i / g) as u32).collect()
            }
        };
        let size = cols.div_ceil(groups);
        let sequential = g_idx
            .iter()
            .enumerate()
            .all(|(i, &g)| g as usize == i / size);
        Ok(PackedRef {
            layout,
            bits,
            rows,
            cols,
            groups,
            group_size: sequential.then_some(size),
            weight: p.weight.bytes,
            zeros: p.zeros.map(|z| z.bytes),
            scales: p.scales.bytes,
            scale_type: p.scale_type,
            g_idx,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn groups(&self) -> usize {
        self.groups
    }
    pub fn scale_type(&self) -> ScaleType {
        self.scale_type
    }

    fn mask(&self) -> u32 {
        (1 << self.bits) - 1
    }

    /// The unsigned code of output `o`, input `i`.
    pub fn code(&self, o: usize, i: usize) -> u32 {
        let per = (32 / self.bits) as usize;
        let (w, k) = match self.layout {
            Layout::Gptq { .. } => (word(self.weight, (i / per) * self.rows + o), i % per),
            Layout::Awq => (
                word(self.weight, i * (self.rows / per) + o / per),
                AWQ_REVERSE[o % per],
            ),
            Layout::Compressed => (word(self.weight, o * (self.cols / per) + i / per), i % per),
        };
        (w >> (k as u32 * self.bits)) & self.mask()
    }

    /// The zero point of group `g`, output `o`, as dequantization uses it:
    /// GPTQ v1's stored value plus one (so 1 ..= 2^bits), the stored value
    /// otherwise, 2^(bits−1) for a symmetric compressed-tensors layer.
    pub fn zero(&self, g: usize, o: usize) -> u32 {
        let per = (32 / self.bits) as usize;
        let Some(z) = self.zeros else {
            return 1 << (self.bits - 1);
        };
        let (w, k) = match self.layout {
            Layout::Gptq { .. } => (word(z, g * (self.rows / per) + o / per), o % per),
            Layout::Awq => (
                word(z, g * (self.rows / per) + o / per),
                AWQ_REVERSE[o % per],
            ),
            Layout::Compressed => (word(z, (o / per) * self.groups + g), o % per),
        };
        let v = (w >> (k as u32 * self.bits)) & self.mask();
        match self.layout {
            Layout::Gptq { v2: false } => v + 1,
            _ => v,
        }
    }

    /// The scale of group `g`, output `o`.
    pub fn scale(&self, g: usize, o: usize) -> f32 {
        let i = match self.layout {
            Layout::Compressed => o * self.groups + g,
            _ => g * self.rows + o,
        };
        self.scale_type.read(self.scales, i)
    }

    /// Rows `rows` (output features) dequantized into `out`
    /// (`rows.len() × cols`): `(q − z)·s` in f32, as the module docs say.
    pub fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let (cols, bits) = (self.cols, self.bits);
        debug_assert_eq!(out.len(), rows.len() * cols);
        let per = (32 / bits) as usize;
        let mask = self.mask();
        // First the codes, their bits stored in `out`'s f32 slots, walking
        // the stored words in memory order; then each row through a table
        // of its dequantized values per (group, code): one lookup a weight.
        // Indices are masked to the table's length, so no bounds checks.
        match self.layout {
            Layout::Gptq { .. } => {
                for r in 0..cols / per {
                    let base = r * self.rows;
                    for (t, o) in rows.clone().enumerate() {
                        let w = word(self.weight, base + o);
                        let dst = &mut out[t * cols + r * per..t * cols + (r + 1) * per];
                        for (k, d) in dst.iter_mut().enumerate() {
                            *d = f32::from_bits((w >> (k as u32 * bits)) & mask);
                        }
                    }
                }
            }
            Layout::Awq => {
                // Row by row (sequential writes); the words of one output
                // column group stay in cache across its eight rows.
                let words = self.rows / per;
                for (t, o) in rows.clone().enumerate() {
                    let (c, shift) = (o / per, 4 * AWQ_REVERSE[o % per] as u32);
                    for (i, d) in out[t * cols..(t + 1) * cols].iter_mut().enumerate() {
                        *d = f32::from_bits((word(self.weight, i * words + c) >> shift) & mask);
                    }
                }
            }
            Layout::Compressed => {
                let words = cols / per;
                for (t, o) in rows.clone().enumerate() {
                    for r in 0..words {
                        let w = word(self.weight, o * words + r);
                        let dst = &mut out[t * cols + r * per..t * cols + (r + 1) * per];
                        for (k, d) in dst.iter_mut().enumerate() {
                            *d = f32::from_bits((w >> (k as u32 * bits)) & mask);
                        }
                    }
                }
            }
        }
        let levels = 1usize << bits;
        let mut table = vec![0f32; self.groups * levels];
        for (t, o) in rows.enumerate() {
            for g in 0..self.groups {
                let (z, s) = (self.zero(g, o) as f32, self.scale(g, o));
                for (q, v) in table[g * levels..(g + 1) * levels].iter_mut().enumerate() {
                    *v = (q as f32 - z) * s;
                }
            }
            let row = &mut out[t * cols..(t + 1) * cols];
            match self.group_size {
                // Column i in group i / G: each run of G columns one table.
                Some(size) => {
                    for (run, lut) in row.chunks_mut(size).zip(table.chunks_exact(levels)) {
                        for v in run {
                            *v = lut[v.to_bits() as usize & (lut.len() - 1)];
                        }
                    }
                }
                None => {
                    for (v, &g) in row.iter_mut().zip(&self.g_idx) {
                        let lut = &table[g as usize * levels..(g as usize + 1) * levels];
                        *v = lut[v.to_bits() as usize & (lut.len() - 1)];
                    }
                }
            }
        }
    }

    /// Every code, zero point and scale, unpacked into the fields of
    /// [`IntWeights`] (zeros as stored after v1's +1; a v1 zero of 2^bits,
    /// which no packer writes, comes back as 0 in the u8).
    pub fn unpack(&self) -> Unpacked {
        let codes = (0..self.rows)
            .flat_map(|o| (0..self.cols).map(move |i| self.code(o, i) as u8))
            .collect();
        let zeros = (0..self.groups)
            .flat_map(|g| (0..self.rows).map(move |o| self.zero(g, o) as u8))
            .collect();
        let scales = (0..self.groups)
            .flat_map(|g| (0..self.rows).map(move |o| self.scale(g, o)))
            .collect();
        Unpacked {
            codes,
            zeros,
            scales,
            g_idx: self.g_idx.clone(),
        }
    }
}

/// Owned unpacked codes (see [`PackedRef::unpack`]), in [`IntWeights`]'
/// layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub codes: Vec<u8>,
    pub zeros: Vec<u8>,
    pub scales: Vec<f32>,
    pub g_idx: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded random layer: codes, scales, zeros and (optionally shuffled)
    /// group indices.
    struct Example {
        bits: u32,
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        zeros: Vec<u8>,
        g_idx: Vec<u32>,
    }

    impl Example {
        fn new(bits: u32, rows: usize, cols: usize, group: usize, sym: bool, act: bool) -> Self {
            let mut state = 0x2545_f491_4f6c_dd1du64 ^ (rows * 31 + cols + bits as usize) as u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let groups = cols / group;
            let levels = 1u64 << bits;
            let codes = (0..rows * cols).map(|_| (next() % levels) as u8).collect();
            let scales = (0..groups * rows)
                .map(|_| (next() % 1000) as f32 * 1e-5 + 1e-3)
                .collect();
            let zeros = (0..groups * rows)
                .map(|_| {
                    if sym {
                        (levels / 2) as u8
                    } else {
                        (1 + next() % (levels - 1)) as u8
                    }
                })
                .collect();
            let mut g_idx: Vec<u32> = (0..cols).map(|i| (i / group) as u32).collect();
            if act {
                for i in (1..cols).rev() {
                    g_idx.swap(i, (next() % (i as u64 + 1)) as usize);
                }
            }
            Example {
                bits,
                rows,
                cols,
                codes,
                scales,
                zeros,
                g_idx,
            }
        }

        fn weights(&self) -> IntWeights<'_> {
            IntWeights {
                bits: self.bits,
                rows: self.rows,
                cols: self.cols,
                codes: &self.codes,
                scales: &self.scales,
                zeros: &self.zeros,
                g_idx: &self.g_idx,
            }
        }
    }

    /// Packed tensors as stored bytes (scales as f32), ready for [`Parts`].
    struct Stored {
        tensors: Vec<(&'static str, Vec<u64>, Vec<u8>)>,
        shape: Option<[u64; 2]>,
    }

    impl Stored {
        fn new(tensors: &[Tensor]) -> Stored {
            let mut shape = None;
            let tensors = tensors
                .iter()
                .map(|t| {
                    let bytes = match &t.data {
                        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        Data::Scales(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        Data::I64(v) => {
                            shape = Some([v[0] as u64, v[1] as u64]);
                            v.iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                    };
                    (t.suffix, t.shape.clone(), bytes)
                })
                .collect();
            Stored { tensors, shape }
        }

        fn part(&self, suffix: &str) -> Option<Part<'_>> {
            self.tensors
                .iter()
                .find(|(s, ..)| *s == suffix)
                .map(|(_, shape, bytes)| Part { bytes, shape })
        }

        fn parts(&self, layout: Layout) -> Parts<'_> {
            let ct = layout == Layout::Compressed;
            let pick = |a: &str, b: &str| self.part(if ct { b } else { a });
            Parts {
                weight: pick("qweight", "weight_packed").unwrap(),
                zeros: pick("qzeros", "weight_zero_point"),
                scales: pick("scales", "weight_scale").unwrap(),
                scale_type: ScaleType::F32,
                g_idx: pick("g_idx", "weight_g_idx"),
                shape: self.shape,
            }
        }

        fn reader(&self, layout: Layout, bits: u32) -> Result<PackedRef<'_>, PackError> {
            PackedRef::new(layout, bits, self.parts(layout))
        }
    }

    fn pack(layout: Layout, w: &IntWeights, sym: bool) -> Result<Vec<Tensor>, PackError> {
        match layout {
            Layout::Gptq { v2 } => pack_gptq(w, v2),
            Layout::Awq => pack_awq(w),
            Layout::Compressed => pack_compressed(w, sym),
        }
    }

    /// pack → read back gives the same codes, zeros, scales and g_idx, and
    /// decode_rows equals (q − z)·s for every element and every row range.
    #[test]
    fn round_trips() {
        let cases = [
            (Layout::Gptq { v2: false }, 4, 32, false, true),
            (Layout::Gptq { v2: false }, 8, 16, true, false),
            (Layout::Gptq { v2: true }, 4, 16, false, false),
            (Layout::Awq, 4, 32, false, false),
            (Layout::Compressed, 4, 32, true, false),
            (Layout::Compressed, 4, 16, false, true),
            (Layout::Compressed, 8, 64, false, false),
        ];
        for (layout, bits, group, sym, act) in cases {
            let e = Example::new(bits, 40, 128, group, sym, act);
            let stored = Stored::new(&pack(layout, &e.weights(), sym).unwrap());
            let r = stored.reader(layout, bits).unwrap();
            assert_eq!((r.rows(), r.cols(), r.groups()), (40, 128, 128 / group));
            let u = r.unpack();
            let what = format!("{layout:?} {bits}-bit g{group} sym {sym} act {act}");
            assert_eq!(u.codes, e.codes, "{what}");
            assert_eq!(u.zeros, e.zeros, "{what}");
            assert_eq!(u.scales, e.scales, "{what}");
            assert_eq!(u.g_idx, e.g_idx, "{what}");
            for rows in [0..40, 3..17, 39..40] {
                let mut out = vec![f32::NAN; rows.len() * 128];
                r.decode_rows(rows.clone(), &mut out);
                for (t, o) in rows.enumerate() {
                    for i in 0..128 {
                        let g = e.g_idx[i] as usize;
                        let want = (f32::from(e.codes[o * 128 + i])
                            - f32::from(e.zeros[g * 40 + o]))
                            * e.scales[g * 40 + o];
                        assert_eq!(out[t * 128 + i], want, "{what} ({o}, {i})");
                    }
                }
            }
        }
    }

    /// f16 and bf16 scales: the product is the exact one, not rounded to
    /// the scale's dtype (transformers' float32 numbers).
    #[test]
    fn products_are_exact_in_f32() {
        // 3 · 0.1 in f16: the exact product 0.29998779296875 would round to
        // 0.2999267578125 in f16.
        let s16 = half::f16::from_f32(0.1);
        let want = 3.0 * s16.to_f32();
        assert_ne!(
            want,
            half::f16::from_f32(want).to_f32(),
            "needs rounding in f16"
        );
        let sb = half::bf16::from_f32(0.1);
        let want_b = 3.0 * sb.to_f32();
        assert_ne!(want_b, half::bf16::from_f32(want_b).to_f32());
        for (ty, bytes, want) in [
            (ScaleType::F16, s16.to_le_bytes(), want),
            (ScaleType::Bf16, sb.to_le_bytes(), want_b),
        ] {
            // One output, 8 inputs, sym 4-bit compressed-tensors: code 11 − 8 = 3.
            let packed = 0xbbbb_bbbbu32.to_le_bytes();
            let r = PackedRef::new(
                Layout::Compressed,
                4,
                Parts {
                    weight: Part {
                        bytes: &packed,
                        shape: &[1, 1],
                    },
                    zeros: None,
                    scales: Part {
                        bytes: &bytes,
                        shape: &[1, 1],
                    },
                    scale_type: ty,
                    g_idx: None,
                    shape: Some([1, 8]),
                },
            )
            .unwrap();
            let mut out = [0f32; 8];
            r.decode_rows(0..1, &mut out);
            assert_eq!(out, [want; 8], "{ty:?}");
        }
    }

    /// What `gptq::quantize` returns packs, through [`IntWeights::from_gptq`],
    /// into every layout and reads back as its own fake-quantized weights
    /// (asymmetric, act-order: compressed-tensors and GPTQ v2; symmetric:
    /// all four).
    #[test]
    fn gptq_output_round_trips() {
        use crate::quant::gptq::{quantize, GptqConfig, Hessian};
        let (rows, cols) = (16, 64);
        let mut next = {
            let mut s = 0x9e37_79b9u64;
            move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            }
        };
        let w: Vec<f32> = (0..rows * cols).map(|_| next() * 0.1).collect();
        let mut h = Hessian::new(cols);
        let x: Vec<f32> = (0..8 * cols).map(|_| next()).collect();
        h.add(&x, 8).unwrap();
        let h = h.finish().unwrap();
        for (sym, act) in [(true, false), (false, true)] {
            let cfg = GptqConfig {
                group_size: Some(32),
                sym,
                act_order: act,
                ..GptqConfig::default()
            };
            let out = quantize(&w, rows, cols, &h, &cfg).unwrap();
            let iw = IntWeights::from_gptq(&out, 4, rows, cols);
            let mut layouts = vec![Layout::Gptq { v2: true }, Layout::Compressed];
            if sym {
                layouts.extend([Layout::Gptq { v2: false }, Layout::Awq]);
            }
            for layout in layouts {
                let stored = Stored::new(&pack(layout, &iw, sym).unwrap());
                let r = stored.reader(layout, 4).unwrap();
                let mut got = vec![0f32; rows * cols];
                r.decode_rows(0..rows, &mut got);
                for (k, g) in got.iter().enumerate() {
                    let (o, i) = (k / cols, k % cols);
                    let grp = out.g_idx[i] as usize;
                    let want = (f32::from(out.codes[k]) - f32::from(out.zeros[grp * rows + o]))
                        * out.scales[grp * rows + o];
                    assert_eq!(*g, want, "{layout:?} ({o}, {i})");
                }
            }
        }
    }

    #[test]
    fn packers_refuse_bad_input() {
        let e = Example::new(4, 32, 64, 32, false, false);
        let w = e.weights();
        let err = |r: Result<Vec<Tensor>, PackError>| r.unwrap_err().to_string();
        let mut zeros = e.zeros.clone();
        zeros[33] = 0;
        let z0 = IntWeights { zeros: &zeros, ..w };
        assert_eq!(
            err(pack_gptq(&z0, false)),
            "zero point 0 (group 1, output 1) cannot be stored in the GPTQ v1 format, which stores zero − 1; write gptq_v2 or compressed-tensors instead"
        );
        assert!(pack_gptq(&z0, true).is_ok(), "v2 stores true zeros");
        assert!(err(pack_compressed(&w, true)).contains("in a symmetric layer"));
        assert_eq!(
            err(pack_gptq(&IntWeights { bits: 3, ..w }, false)),
            "3-bit GPTQ v1 weights are not supported (4 and 8 bits are)"
        );
        assert!(err(pack_awq(&IntWeights { bits: 8, ..w })).contains("AWQ GEMM is 4-bit only"));
        let g_idx: Vec<u32> = (0..64).map(|i| if i == 5 { 2 } else { i / 32 }).collect();
        assert_eq!(
            err(pack_gptq(&IntWeights { g_idx: &g_idx, ..w }, true)),
            "g_idx[5] is 2, but the scales have 2 groups"
        );
        let mut codes = e.codes.clone();
        codes[7] = 16;
        assert_eq!(
            err(pack_compressed(&IntWeights { codes: &codes, ..w }, false)),
            "code 16 at 7 does not fit in 4 bits"
        );
        assert!(err(pack_gptq(&IntWeights { cols: 60, ..w }, true)).starts_with("codes is"));
        let act = Example::new(4, 32, 64, 32, false, true);
        assert!(err(pack_awq(&act.weights())).contains("AWQ stores none"));
    }

    #[test]
    fn readers_refuse_bad_tensors() {
        let e = Example::new(4, 32, 64, 32, false, false);
        let stored = Stored::new(&pack_gptq(&e.weights(), false).unwrap());
        let v1 = Layout::Gptq { v2: false };
        let try_new = |p: Parts| PackedRef::new(v1, 4, p).map(|r| r.rows());
        let err = |p: Parts| try_new(p).unwrap_err().to_string();
        let ok = stored.parts(v1);
        assert_eq!(try_new(ok), Ok(32));
        // Scales of another layer: 48 outputs where qweight has 32.
        let wide = vec![0u8; 2 * 48 * 4];
        let scales = Part {
            bytes: &wide,
            shape: &[2, 48],
        };
        assert_eq!(
            err(Parts { scales, ..ok }),
            "scales is [2, 48], expected [2, 32]"
        );
        let mut g = ok.g_idx.unwrap().bytes.to_vec();
        g[4 * 9..4 * 10].copy_from_slice(&7i32.to_le_bytes());
        let g_idx = Some(Part {
            bytes: &g,
            shape: &[64],
        });
        assert_eq!(
            err(Parts { g_idx, ..ok }),
            "g_idx[9] is 7, but the scales have 2 groups"
        );
        let mut g = g.clone();
        g[4 * 9..4 * 10].copy_from_slice(&(-1i32).to_le_bytes());
        let g_idx = Some(Part {
            bytes: &g,
            shape: &[64],
        });
        assert_eq!(
            err(Parts { g_idx, ..ok }),
            "g_idx[9] is -1, but the scales have 2 groups"
        );
        let weight = Part {
            bytes: &ok.weight.bytes[..20],
            shape: &[8, 32],
        };
        assert_eq!(
            err(Parts { weight, ..ok }),
            "qweight: its shape needs 1024 bytes, it holds 20"
        );
        assert_eq!(
            err(Parts { zeros: None, ..ok }),
            "qzeros is [], expected [2, 4]"
        );
        let weight = Part {
            shape: &[8, 32, 1],
            ..ok.weight
        };
        assert!(err(Parts { weight, ..ok }).starts_with("qweight is [8, 32, 1]"));
        // Empty tensors declaring absurd outer sizes: refused, no overflow
        // and no allocation.
        let weight = Part {
            bytes: &[],
            shape: &[u64::MAX / 2, 0],
        };
        assert!(err(Parts { weight, ..ok }).starts_with("qweight is ["));
        let huge = [0, u64::MAX];
        let scales = Part {
            bytes: &[],
            shape: &huge,
        };
        assert!(err(Parts { scales, ..ok }).starts_with("scales is ["));
        assert_eq!(
            PackedRef::new(v1, 3, ok).unwrap_err().to_string(),
            "3-bit GPTQ v1 weights are not supported (4 and 8 bits are)"
        );
    }

    /// Byte-for-byte agreement with the reference packers on the goldens of
    /// `tests/oracle/pack_goldens.py` (`fixtures/pack/`): compressed-tensors'
    /// `pack_to_int32` and compressor, AutoGPTQ's and AutoAWQ's `pack`.
    fn golden(json: &str) {
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        let ints = |v: &serde_json::Value| -> Vec<i64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        };
        let bits = doc["bits"].as_u64().unwrap() as u32;
        let (rows, cols) = (
            doc["rows"].as_u64().unwrap() as usize,
            doc["cols"].as_u64().unwrap() as usize,
        );
        let codes: Vec<u8> = ints(&doc["codes"]).iter().map(|&x| x as u8).collect();
        let zeros: Vec<u8> = ints(&doc["zeros"]).iter().map(|&x| x as u8).collect();
        let g_idx: Vec<u32> = ints(&doc["g_idx"]).iter().map(|&x| x as u32).collect();
        let scales: Vec<f32> = doc["scales"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let w = IntWeights {
            bits,
            rows,
            cols,
            codes: &codes,
            scales: &scales,
            zeros: &zeros,
            g_idx: &g_idx,
        };
        let sym = doc["sym"].as_bool().unwrap();
        let (layout, got) = match doc["layout"].as_str().unwrap() {
            "gptq" => (Layout::Gptq { v2: false }, pack_gptq(&w, false).unwrap()),
            "awq" => (Layout::Awq, pack_awq(&w).unwrap()),
            _ => (Layout::Compressed, pack_compressed(&w, sym).unwrap()),
        };
        let want = doc["tensors"].as_object().unwrap();
        let names: Vec<&str> = got.iter().map(|t| t.suffix).collect();
        let mut want_names: Vec<&str> = want.keys().map(|k| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        want_names.sort();
        assert_eq!(sorted, want_names);
        for t in &got {
            let w = &want[t.suffix];
            assert_eq!(
                t.shape,
                ints(&w["shape"])
                    .iter()
                    .map(|&d| d as u64)
                    .collect::<Vec<_>>(),
                "{}",
                t.suffix
            );
            match &t.data {
                Data::I32(v) => {
                    let v: Vec<i64> = v.iter().map(|&x| x.into()).collect();
                    assert_eq!(v, ints(&w["values"]), "{}", t.suffix);
                }
                Data::I64(v) => assert_eq!(v, &ints(&w["values"]), "{}", t.suffix),
                Data::Scales(v) => {
                    let want: Vec<f32> = w["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect();
                    assert_eq!(v, &want, "{}", t.suffix);
                }
            }
        }
        // And the reader takes the reference's tensors back to the inputs.
        let stored = Stored::new(&got);
        let u = stored.reader(layout, bits).unwrap().unpack();
        assert_eq!(
            (u.codes, u.zeros, u.scales, u.g_idx),
            (codes, zeros, scales, g_idx)
        );
        // With bfloat16 scales, decode_rows stored as bfloat16 (what
        // convert writes by default) equals compressed-tensors'
        // decompression bit for bit.
        if let Some(want) = doc["dequant_bf16"].as_array() {
            let p = stored.part("weight_scale").unwrap();
            let bf16: Vec<u8> = p
                .bytes
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            let r = PackedRef::new(
                layout,
                bits,
                Parts {
                    scales: Part {
                        bytes: &bf16,
                        shape: p.shape,
                    },
                    scale_type: ScaleType::Bf16,
                    ..stored.parts(layout)
                },
            )
            .unwrap();
            let mut out = vec![0f32; rows * cols];
            r.decode_rows(0..rows, &mut out);
            let want: Vec<u32> = want
                .iter()
                .map(|x| (x.as_f64().unwrap() as f32).to_bits())
                .collect();
            let got: Vec<u32> = out
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32().to_bits())
                .collect();
            assert_eq!(got, want, "dequantization with bf16 scales");
        }
    }

    macro_rules! goldens {
        ($($name:ident),*) => {$(
            #[test]
            fn $name() {
                golden(include_str!(concat!("../../fixtures/pack/", stringify!($name), ".json")));
            }
        )*};
    }

    goldens!(
        gptq_g32_sym,
        gptq_g16_asym_act,
        gptq_g32_sym_8bit,
        ct_g32_sym,
        ct_g16_asym,
        ct_g16_asym_act,
        ct_g32_asym_8bit,
        awq_g32
    );
}
