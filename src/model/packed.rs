//! Pre-quantized checkpoints seen as the model that was quantized.
//!
//! bitsandbytes, AWQ and GPTQ store one Linear weight as a packed tensor
//! plus side tensors, none of which has the weight's shape:
//!
//! * bitsandbytes 4-bit (`llmtool quantize nf4|fp4` and transformers'
//!   `save_pretrained`): `W.weight` is U8 `[numel/2, 1]`, next to
//!   `W.weight.absmax`, `.quant_map`, `.nested_absmax`, `.nested_quant_map`
//!   and `W.weight.quant_state.bitsandbytes__nf4` (or `__fp4`), a U8 tensor
//!   holding the JSON of `QuantState.as_dict(packed=True)`, whose `shape`
//!   is the real one;
//! * bitsandbytes LLM.int8: `W.weight` is I8 in its real shape, plus
//!   `W.SCB` (one f32 scale per row) and `W.weight_format`;
//! * AWQ (GEMM): `W.qweight` I32 `[in, out·bits/32]`, `W.qzeros`
//!   `[in/G, out·bits/32]`, `W.scales` f16 `[in/G, out]`;
//! * GPTQ: `W.qweight` I32 `[in·bits/32, out]`, `W.qzeros`
//!   `[in/G, out·bits/32]`, `W.scales` `[in/G, out]`, `W.g_idx` `[in]`;
//! * compressed-tensors `pack-quantized` (llm-compressor): `W.weight_packed`
//!   I32 `[out, in·bits/32]`, `W.weight_scale` `[out, in/G]`,
//!   `W.weight_shape` I64 `[2]` holding `[out, in]`, and when asymmetric
//!   `W.weight_zero_point`, with act-order `W.weight_g_idx`.
//!
//! [`logical_tensors`] folds each group into one [`LogicalTensor`] named
//! `W.weight`, with the `[out, in]` shape that was quantized and the bytes
//! of the whole group, so that parameters count logical elements and bits
//! per weight come out right. What cannot be decoded stays as stored, with
//! a warning naming the tensor.
//!
//! Reading the packed weights back ([`packed_format`] from config.json,
//! [`packed_module`] to find them, [`packed_weight`] per module) goes
//! through [`crate::quant::int4pack::PackedRef`] for GPTQ, AWQ GEMM and
//! compressed-tensors, and through [`crate::quant::bnb`]'s [`FourBitRef`]
//! and [`Int8Ref`] for bitsandbytes; those own the bit layouts and the
//! dequantization. A bitsandbytes weight keeps its name `W.weight`: it is
//! packed when its quant state or `W.SCB` is beside it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use std::ops::Range;

use crate::quant::bnb::{self, FourBit, FourBitRef, Int8Ref, OutType};
use crate::quant::int4pack::{Layout, PackError, PackedRef, Part, Parts, ScaleType};
use crate::store::{DType, Model, StoreError, TensorInfo};

/// How a checkpoint's Linear weights are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// bitsandbytes 4-bit NormalFloat.
    Nf4,
    /// bitsandbytes 4-bit float.
    Fp4,
    /// bitsandbytes LLM.int8.
    Int8,
    /// AWQ, GEMM layout.
    Awq { bits: u64 },
    /// GPTQ.
    Gptq { bits: u64 },
    /// compressed-tensors `pack-quantized` (integer weights, GPTQ or RTN).
    Compressed { bits: u64 },
}

impl Packing {
    /// How people name it: `bitsandbytes nf4`, `awq 4-bit`.
    pub fn label(self) -> String {
        match self {
            Packing::Nf4 => "bitsandbytes nf4".into(),
            Packing::Fp4 => "bitsandbytes fp4".into(),
            Packing::Int8 => "bitsandbytes int8".into(),
            Packing::Awq { bits } => format!("awq {bits}-bit"),
            Packing::Gptq { bits } => format!("gptq {bits}-bit"),
            Packing::Compressed { bits } => format!("compressed-tensors {bits}-bit"),
        }
    }
}

/// One weight as it was before packing, and what it takes as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalTensor {
    /// The weight's name (`….weight` for packed ones).
    pub name: String,
    /// Torch order, the real shape.
    pub shape: Vec<u64>,
    /// The stored dtype of the (main) tensor.
    pub dtype: DType,
    /// Bytes of the tensor and its side tensors.
    pub bytes: u64,
    /// `None` for a tensor stored as it is.
    pub packing: Option<Packing>,
}

impl LogicalTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A model's packed weights, and what could not be decoded; with the model,
/// [`Logical::tensors`] gives every logical weight.
#[derive(Debug, Clone, Default)]
pub struct Logical {
    /// Each packed weight's logical form, by the name of its main tensor.
    replaced: BTreeMap<String, LogicalTensor>,
    /// Side tensors folded into their weight.
    folded: HashSet<String>,
    /// The checkpoint's packing, when any weight is packed.
    pub packing: Option<Packing>,
    pub warnings: Vec<String>,
}

impl Logical {
    /// The logical weights of `m`, in stored order. Tensors stored as they
    /// are come as transient copies, so that a header with hundreds of
    /// thousands of tensors is not held twice.
    pub fn tensors<'a>(
        &'a self,
        m: &'a Model,
    ) -> impl Iterator<Item = Cow<'a, LogicalTensor>> + 'a {
        m.tensors()
            .iter()
            .filter(|t| !self.folded.contains(&t.name))
            .map(|t| match self.replaced.get(&t.name) {
                Some(l) => Cow::Borrowed(l),
                None => Cow::Owned(LogicalTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype: t.dtype,
                    bytes: t.len,
                    packing: None,
                }),
            })
    }
}

const BNB4_STATE: &str = ".quant_state.bitsandbytes__";
const BNB4_SIDES: &[&str] = &[
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
];

/// The logical weights of `m` (see the module docs), in stored order.
pub fn logical_tensors(m: &Model) -> Logical {
    let mut out = Logical::default();
    let marked = |n: &str| {
        n.contains(BNB4_STATE)
            || n.ends_with(".SCB")
            || n.ends_with(".qweight")
            || n.ends_with(".weight_packed")
    };
    if !m.tensors().iter().any(|t| marked(&t.name)) {
        return out;
    }
    let by_name: BTreeMap<&str, &TensorInfo> =
        m.tensors().iter().map(|t| (t.name.as_str(), t)).collect();
    // Side tensors folded into their weight, and each packed weight's
    // logical form under the name of its main stored tensor.
    let mut folded: HashSet<String> = HashSet::new();
    let mut replaced: BTreeMap<String, LogicalTensor> = BTreeMap::new();
    let mut fold = |main: &TensorInfo, sides: Vec<&TensorInfo>, l: LogicalTensor| {
        folded.extend(sides.iter().map(|s| s.name.clone()));
        let bytes = main.len + sides.iter().map(|s| s.len).sum::<u64>();
        replaced.insert(main.name.clone(), LogicalTensor { bytes, ..l });
    };
    let gptq_bits = m
        .config
        .as_ref()
        .and_then(|c| c.pointer("/quantization_config/bits"))
        .and_then(|b| b.as_u64());
    for t in m.tensors() {
        let side = |name: String| by_name.get(name.as_str()).copied();
        if let Some((weight, kind)) = t.name.split_once(BNB4_STATE) {
            let Some(w) = side(weight.to_string()) else {
                continue;
            };
            match bnb4(m, t, w, kind) {
                Ok((shape, packing)) => {
                    let mut sides: Vec<&TensorInfo> = BNB4_SIDES
                        .iter()
                        .filter_map(|s| side(format!("{weight}{s}")))
                        .collect();
                    sides.push(t);
                    fold(w, sides, packed(&w.name, shape, w.dtype, packing));
                }
                Err(why) => out
                    .warnings
                    .push(format!("{}: {why}; counting '{weight}' as stored", t.name)),
            }
        } else if let Some(module) = t.name.strip_suffix(".SCB") {
            let Some(w) = side(format!("{module}.weight")) else {
                continue;
            };
            let mut sides = vec![t];
            sides.extend(side(format!("{module}.weight_format")));
            fold(
                w,
                sides,
                packed(&w.name, w.shape.clone(), w.dtype, Packing::Int8),
            );
        } else if let Some(module) = t.name.strip_suffix(".qweight") {
            let scales = side(format!("{module}.scales"));
            let g_idx = side(format!("{module}.g_idx"));
            match awq_gptq(t, scales, g_idx, gptq_bits) {
                Ok((shape, packing)) => {
                    let sides = ["qzeros", "scales", "g_idx"]
                        .iter()
                        .filter_map(|s| side(format!("{module}.{s}")))
                        .collect();
                    let name = format!("{module}.weight");
                    fold(t, sides, packed(&name, shape, t.dtype, packing));
                }
                Err(why) => out
                    .warnings
                    .push(format!("{}: {why}; counting it as stored", t.name)),
            }
        } else if let Some(module) = t.name.strip_suffix(".weight_packed") {
            let sides: Vec<&TensorInfo> = COMPRESSED_SIDES
                .iter()
                .filter_map(|s| side(format!("{module}.{s}")))
                .collect();
            match compressed(m, t, side(format!("{module}.weight_shape"))) {
                Ok((shape, packing)) => {
                    let name = format!("{module}.weight");
                    fold(t, sides, packed(&name, shape, t.dtype, packing));
                }
                Err(why) => out
                    .warnings
                    .push(format!("{}: {why}; counting it as stored", t.name)),
            }
        }
    }
    out.packing = replaced.values().find_map(|t| t.packing);
    out.replaced = replaced;
    out.folded = folded;
    out
}

const COMPRESSED_SIDES: &[&str] = &[
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
];

/// The real `[out, in]` shape of a compressed-tensors `weight_packed`, from
/// its `weight_shape` tensor, and the bits its packed width implies.
fn compressed(
    m: &Model,
    packed: &TensorInfo,
    shape: Option<&TensorInfo>,
) -> Result<(Vec<u64>, Packing), String> {
    let t = shape.ok_or("no weight_shape tensor beside it")?;
    let b = m.bytes(t);
    let dims: Vec<u64> = match (t.dtype, t.shape.as_slice()) {
        (DType::I64, [2]) => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect(),
        (DType::I32, [2]) => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect(),
        _ => {
            return Err(format!(
                "weight_shape is {} {:?}, not two integers",
                t.dtype, t.shape
            ))
        }
    };
    let (&[out, inp], &[p_rows, p_cols]) = (dims.as_slice(), packed.shape.as_slice()) else {
        return Err(format!("weight_packed shape {:?} is not 2-D", packed.shape));
    };
    match p_cols.checked_mul(32).and_then(|b| b.checked_div(inp)) {
        Some(bits @ (4 | 8)) if p_rows == out && Some(bits * inp) == p_cols.checked_mul(32) => {
            Ok((vec![out, inp], Packing::Compressed { bits }))
        }
        _ => Err(format!(
            "weight_packed {:?} does not pack a weight_shape of [{out}, {inp}] in 4 or 8 bits",
            packed.shape
        )),
    }
}

/// A packed weight's logical form; its bytes are summed by the caller.
fn packed(name: &str, shape: Vec<u64>, dtype: DType, p: Packing) -> LogicalTensor {
    LogicalTensor {
        name: name.to_string(),
        shape,
        dtype,
        bytes: 0,
        packing: Some(p),
    }
}

/// The real shape of a bitsandbytes 4-bit weight `w`, from its quant-state
/// JSON `state` (`kind` is the suffix after `bitsandbytes__`).
fn bnb4(
    m: &Model,
    state: &TensorInfo,
    w: &TensorInfo,
    kind: &str,
) -> Result<(Vec<u64>, Packing), String> {
    let packing = match kind {
        "nf4" => Packing::Nf4,
        "fp4" => Packing::Fp4,
        other => return Err(format!("unknown bitsandbytes quant type '{other}'")),
    };
    let json: serde_json::Value = serde_json::from_slice(m.bytes(state))
        .map_err(|e| format!("the quant state is not JSON ({e})"))?;
    let shape: Vec<u64> = json
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64()).collect())
        .ok_or("the quant state has no integer 'shape'")?;
    let numel = crate::store::checked_numel(&shape).ok_or("its 'shape' overflows")?;
    // Two 4-bit codes per stored byte, whatever the storage dtype.
    if numel.div_ceil(2) != w.len {
        return Err(format!(
            "its 'shape' {shape:?} holds {numel} elements, but '{}' ({} bytes) packs {}",
            w.name,
            w.len,
            w.len * 2
        ));
    }
    Ok((shape, packing))
}

/// The real `[out, in]` shape of an AWQ or GPTQ `qweight`, told apart by
/// where the packing is: AWQ packs the output columns (`scales` has
/// 32/bits times `qweight`'s columns), GPTQ the input rows (`scales` has as
/// many columns as `qweight`). GPTQ's bits come from `g_idx` (one entry per
/// input), else from `quantization_config.bits`, else 4.
fn awq_gptq(
    q: &TensorInfo,
    scales: Option<&TensorInfo>,
    g_idx: Option<&TensorInfo>,
    config_bits: Option<u64>,
) -> Result<(Vec<u64>, Packing), String> {
    let &[q_rows, q_cols] = q.shape.as_slice() else {
        return Err(format!("qweight shape {:?} is not 2-D", q.shape));
    };
    let s_cols = match scales.map(|s| s.shape.as_slice()) {
        Some(&[_, c]) => c,
        Some(other) => return Err(format!("its scales shape {other:?} is not 2-D")),
        None => return Err("no scales tensor beside it".into()),
    };
    let bits_ok = |b: u64| [2, 3, 4, 8].contains(&b);
    if q_cols > 0 && s_cols == q_cols {
        let bits = match g_idx.map(|g| g.numel()) {
            Some(inputs) if inputs > 0 && (32 * q_rows) % inputs == 0 => 32 * q_rows / inputs,
            Some(inputs) => {
                return Err(format!(
                    "g_idx has {inputs} entries, which {q_rows} packed rows cannot hold"
                ))
            }
            None => config_bits.unwrap_or(4),
        };
        if !bits_ok(bits) {
            return Err(format!("{bits}-bit GPTQ is not a known packing"));
        }
        Ok((vec![q_cols, q_rows * 32 / bits], Packing::Gptq { bits }))
    } else if q_cols > 0 && s_cols % q_cols == 0 && bits_ok(32 / (s_cols / q_cols)) {
        let bits = 32 / (s_cols / q_cols);
        Ok((vec![s_cols, q_rows], Packing::Awq { bits }))
    } else {
        Err(format!(
            "qweight {:?} and scales with {s_cols} columns match neither AWQ nor GPTQ packing",
            q.shape
        ))
    }
}

/// How a checkpoint's packed Linear layers are to be read back, from
/// config.json's `quantization_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// GPTQ, AWQ GEMM or compressed-tensors integer codes.
    Int { layout: Layout, bits: u32 },
    /// bitsandbytes 4-bit (NF4/FP4) or LLM.int8, told apart per weight by
    /// its side tensors.
    Bitsandbytes,
}

impl PackedFormat {
    /// How people name it (`GPTQ 4-bit`, `bitsandbytes`).
    pub fn label(self) -> String {
        let Self::Int { layout, bits } = self else {
            return "bitsandbytes".into();
        };
        let name = match layout {
            Layout::Gptq { v2: false } => "GPTQ",
            Layout::Gptq { v2: true } => "GPTQ v2",
            Layout::Awq => "AWQ GEMM",
            Layout::Compressed => "compressed-tensors pack-quantized",
        };
        format!("{name} {bits}-bit")
    }
}

/// The suffix of the main packed tensor of a module in `layout`.
fn main_suffix(layout: Layout) -> &'static str {
    match layout {
        Layout::Compressed => ".weight_packed",
        _ => ".qweight",
    }
}

/// The module a packed layer's main tensor belongs to
/// (`….q_proj.qweight` or `….q_proj.weight_packed` → `….q_proj`; a
/// bitsandbytes `….q_proj.weight` with its `.absmax` or the module's `SCB`
/// beside it → `….q_proj`).
pub fn packed_module<'n>(model: &Model, name: &'n str) -> Option<&'n str> {
    if let Some(m) = name
        .strip_suffix(".qweight")
        .or_else(|| name.strip_suffix(".weight_packed"))
    {
        return Some(m);
    }
    let module = name.strip_suffix(".weight")?;
    let bnb = model.tensor(&format!("{name}.absmax")).is_some()
        || model.tensor(&format!("{module}.SCB")).is_some();
    bnb.then_some(module)
}

/// Whether `name` is a side tensor of a packed layer of `model` (folded
/// into the weight [`packed_weight`] reads).
pub fn is_side(model: &Model, name: &str) -> bool {
    const INT_SIDES: &[&str] = &[
        "qzeros",
        "scales",
        "g_idx",
        "weight_scale",
        "weight_zero_point",
        "weight_shape",
        "weight_g_idx",
    ];
    let Some((module, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    let int = INT_SIDES.contains(&suffix)
        && (model.tensor(&format!("{module}.qweight")).is_some()
            || model.tensor(&format!("{module}.weight_packed")).is_some());
    let int8 = matches!(suffix, "SCB" | "weight_format")
        && model.tensor(&format!("{module}.weight")).is_some()
        && model.tensor(&format!("{module}.SCB")).is_some();
    // `W.weight.absmax`, `W.weight.quant_state.bitsandbytes__nf4`, …
    let four_bit = name.split_once(".weight.").is_some_and(|(m, rest)| {
        (BNB4_SIDES.contains(&&*format!(".{rest}")) || rest.starts_with(&BNB4_STATE[1..]))
            && model.tensor(&format!("{m}.weight")).is_some()
    });
    int || int8 || four_bit
}

/// The packed format config.json declares: `quant_method` `gptq`
/// (`checkpoint_format`/`format` `gptq`, the default, or `gptq_v2`), `awq`
/// (`version` `gemm`), `compressed-tensors` (`format` `pack-quantized`,
/// integer weights) or `bitsandbytes`. `None` for a checkpoint that declares
/// none of these (plain weights); an error naming the key for one of them in
/// a variant that cannot be read (GPTQ `marlin`, AWQ `gemv`, 3-bit, …).
pub fn packed_format(model: &Model) -> Result<Option<PackedFormat>, StoreError> {
    let Some(q) = model
        .config
        .as_ref()
        .and_then(|c| c.get("quantization_config"))
    else {
        return Ok(None);
    };
    let path = model.root.join("config.json");
    let bad = |msg: String| StoreError::Unsupported {
        path: path.clone(),
        msg,
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let bits_of = |v: Option<&serde_json::Value>, key: &str| {
        v.and_then(|b| b.as_u64()).map(|b| b as u32).ok_or_else(|| {
            bad(format!(
                "quantization_config.{key} is missing or not an integer"
            ))
        })
    };
    let (layout, bits) = match text(q.get("quant_method")).as_deref() {
        Some("bitsandbytes") => return Ok(Some(PackedFormat::Bitsandbytes)),
        Some("gptq") => {
            let fmt = text(q.get("checkpoint_format").or_else(|| q.get("format")));
            let v2 = match fmt.as_deref() {
                None | Some("gptq") => false,
                Some("gptq_v2") => true,
                Some(other) => {
                    return Err(bad(format!(
                        "quantization_config.checkpoint_format is '{other}'; llmtool reads GPTQ checkpoints in the 'gptq' (v1) and 'gptq_v2' formats"
                    )))
                }
            };
            (Layout::Gptq { v2 }, bits_of(q.get("bits"), "bits")?)
        }
        Some("awq") => {
            match text(q.get("version")).as_deref() {
                None | Some("gemm") | Some("GEMM") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "quantization_config.version is '{other}'; llmtool reads AWQ checkpoints in the 'gemm' layout"
                    )))
                }
            }
            (
                Layout::Awq,
                bits_of(q.get("bits").or_else(|| q.get("w_bit")), "bits")?,
            )
        }
        Some("compressed-tensors") => {
            match text(q.get("format")).as_deref() {
                Some("pack-quantized") => {}
                other => {
                    return Err(bad(format!(
                        "quantization_config.format is {}; llmtool reads compressed-tensors checkpoints in the 'pack-quantized' format",
                        other.map_or("missing".to_string(), |f| format!("'{f}'"))
                    )))
                }
            }
            let groups = q
                .get("config_groups")
                .and_then(|g| g.as_object())
                .filter(|g| !g.is_empty())
                .ok_or_else(|| bad("quantization_config.config_groups is missing".into()))?;
            let mut bits = None;
            for (name, g) in groups {
                let w = g.get("weights");
                if let Some(t) = text(w.and_then(|w| w.get("type"))) {
                    if t != "int" {
                        return Err(bad(format!(
                            "quantization_config.config_groups.{name}.weights.type is '{t}'; pack-quantized weights are integers"
                        )));
                    }
                }
                let b = bits_of(
                    w.and_then(|w| w.get("num_bits")),
                    &format!("config_groups.{name}.weights.num_bits"),
                )?;
                if bits.is_some_and(|x| x != b) {
                    return Err(bad(
                        "quantization_config.config_groups mix bit widths; llmtool reads one width per checkpoint".into(),
                    ));
                }
                bits = Some(b);
            }
            (Layout::Compressed, bits.unwrap_or(4))
        }
        _ => return Ok(None),
    };
    layout
        .check_bits(bits)
        .map_err(|e| bad(format!("quantization_config: {e}")))?;
    Ok(Some(PackedFormat::Int { layout, bits }))
}

/// One packed Linear weight, read in place and decoded a range of rows
/// at a time to f32.
pub enum PackedWeight<'m> {
    Int(PackedRef<'m>),
    FourBit(FourBitRef<'m>),
    Int8(Int8Ref<'m>),
}

impl PackedWeight<'_> {
    pub fn rows(&self) -> usize {
        match self {
            PackedWeight::Int(p) => p.rows(),
            PackedWeight::FourBit(p) => p.rows(),
            PackedWeight::Int8(p) => p.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            PackedWeight::Int(p) => p.cols(),
            PackedWeight::FourBit(p) => p.cols(),
            PackedWeight::Int8(p) => p.cols(),
        }
    }
    /// Writes rows `rows` dequantized into `out` (`rows.len() · cols`).
    pub fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        match self {
            PackedWeight::Int(p) => p.decode_rows(rows, out),
            PackedWeight::FourBit(p) => p.decode_rows(rows, out),
            PackedWeight::Int8(p) => p.decode_rows(rows, out),
        }
    }
    /// The narrowest dtype that holds every decoded value exactly: the
    /// scales' dtype for integer codes, for 4-bit the quant state's
    /// `dtype` (bitsandbytes rounds to it), F32 for LLM.int8.
    pub fn exact_dtype(&self) -> DType {
        match self {
            PackedWeight::Int(p) => match p.scale_type() {
                ScaleType::F16 => DType::F16,
                ScaleType::Bf16 => DType::BF16,
                ScaleType::F32 => DType::F32,
            },
            PackedWeight::FourBit(p) => match p.out_type() {
                OutType::F16 => DType::F16,
                OutType::Bf16 => DType::BF16,
                OutType::F32 => DType::F32,
            },
            PackedWeight::Int8(_) => DType::F32,
        }
    }
}

/// The packed weight of `module` (e.g. `model.layers.0.self_attn.q_proj`),
/// read in place from the memory map. Every tensor's dtype and shape is
/// checked; an error names the file and the tensor.
pub fn packed_weight<'m>(
    model: &'m Model,
    module: &str,
    f: PackedFormat,
) -> Result<PackedWeight<'m>, StoreError> {
    match f {
        PackedFormat::Int { layout, bits } => {
            int_weight(model, module, layout, bits).map(PackedWeight::Int)
        }
        PackedFormat::Bitsandbytes => bnb_weight(model, module),
    }
}

fn int_weight<'m>(
    model: &'m Model,
    module: &str,
    layout: Layout,
    bits: u32,
) -> Result<PackedRef<'m>, StoreError> {
    let ct = layout == Layout::Compressed;
    let name = |suffix: &str| format!("{module}.{suffix}");
    let error =
        |t: &TensorInfo, msg: String| StoreError::tensor(&model.files[t.file].path, &t.name, msg);
    let main = model.get(&format!("{module}{}", main_suffix(layout)))?;
    let find = |suffix: &str| model.tensor(&name(suffix));
    let need = |suffix: &str| {
        find(suffix).ok_or_else(|| {
            error(
                main,
                format!(
                    "no '{}' tensor beside it; the packed layer is incomplete",
                    name(suffix)
                ),
            )
        })
    };
    let int32 = |t: &'m TensorInfo| -> Result<Part<'m>, StoreError> {
        if t.dtype == DType::I32 {
            Ok(Part {
                bytes: model.bytes(t),
                shape: &t.shape,
            })
        } else {
            Err(error(t, format!("dtype {} where I32 is stored", t.dtype)))
        }
    };
    let scales = need(if ct { "weight_scale" } else { "scales" })?;
    let scale_type = match scales.dtype {
        DType::F16 => ScaleType::F16,
        DType::BF16 => ScaleType::Bf16,
        DType::F32 => ScaleType::F32,
        other => {
            return Err(error(
                scales,
                format!("dtype {other}; scales are F16, BF16 or F32"),
            ))
        }
    };
    let zeros = match layout {
        Layout::Compressed => find("weight_zero_point").map(int32).transpose()?,
        _ => Some(int32(need("qzeros")?)?),
    };
    let g_idx = find(if ct { "weight_g_idx" } else { "g_idx" })
        .map(int32)
        .transpose()?;
    let shape = if ct {
        let t = need("weight_shape")?;
        let b = model.bytes(t);
        let v: Vec<i64> = match (t.dtype, t.shape.as_slice()) {
            (DType::I64, [2]) => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            (DType::I32, [2]) => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()).into())
                .collect(),
            _ => {
                return Err(error(
                    t,
                    format!("{} {:?}; weight_shape is two integers", t.dtype, t.shape),
                ))
            }
        };
        match v[..] {
            [r, c] if r >= 0 && c >= 0 => Some([r as u64, c as u64]),
            _ => return Err(error(t, format!("holds {v:?}; a shape is two sizes"))),
        }
    } else {
        None
    };
    let parts = Parts {
        weight: int32(main)?,
        zeros,
        scales: Part {
            bytes: model.bytes(scales),
            shape: &scales.shape,
        },
        scale_type,
        g_idx,
        shape,
    };
    PackedRef::new(layout, bits, parts).map_err(|e| {
        // Name the tensor the error is about, in its own file.
        let suffix = match &e {
            PackError::Shape { tensor, .. }
            | PackError::Length { tensor, .. }
            | PackError::NotMultiple { tensor, .. }
            | PackError::GroupIndex { tensor, .. } => tensor,
            _ => "",
        };
        match find(suffix) {
            Some(t) => error(t, e.to_string()),
            None => error(main, e.to_string()),
        }
    })
}

/// The bitsandbytes weight `{module}.weight`: LLM.int8 when `{module}.SCB`
/// is beside it, else 4-bit from its quant state (`QuantState.from_dict`:
/// the JSON's `quant_type`, `blocksize`, `dtype`, `shape`, and with double
/// quantization `nested_blocksize`, `nested_offset`).
fn bnb_weight<'m>(model: &'m Model, module: &str) -> Result<PackedWeight<'m>, StoreError> {
    let name = format!("{module}.weight");
    let w = model.get(&name)?;
    let error =
        |t: &TensorInfo, msg: String| StoreError::tensor(&model.files[t.file].path, &t.name, msg);
    // Names the side tensor a kernel check is about, else the weight.
    let read_error = |e: bnb::ReadError, sides: &[(&str, &TensorInfo)]| {
        let part = match &e {
            bnb::ReadError::Length { tensor, .. } | bnb::ReadError::NotFinite { tensor, .. } => {
                *tensor
            }
        };
        let t = sides.iter().find(|(s, _)| *s == part).map_or(w, |(_, t)| t);
        error(t, e.to_string())
    };
    let floats = |t: &TensorInfo| -> Result<Vec<f32>, StoreError> {
        match t.dtype {
            DType::F32 | DType::F16 | DType::BF16 => model.read_f32(t),
            other => Err(error(t, format!("dtype {other} where floats are stored"))),
        }
    };
    if let Some(scb) = model.tensor(&format!("{module}.SCB")) {
        let &[rows, cols] = w.shape.as_slice() else {
            return Err(error(
                w,
                format!("shape {:?}; an LLM.int8 weight is 2-D", w.shape),
            ));
        };
        if w.dtype != DType::I8 || rows == 0 || cols == 0 {
            return Err(error(
                w,
                format!(
                    "{} {:?} beside an SCB; LLM.int8 stores a non-empty I8 weight",
                    w.dtype, w.shape
                ),
            ));
        }
        if let Some(f) = model.tensor(&format!("{module}.weight_format")) {
            // bitsandbytes saves 0 for "row", the only format it loads.
            if model.bytes(f).iter().any(|&b| b != 0) {
                return Err(error(
                    f,
                    "is not 0 (\"row\"), the only LLM.int8 weight format bitsandbytes reads".into(),
                ));
            }
        }
        return Int8Ref::new(model.bytes(w), floats(scb)?, cols as usize)
            .map(PackedWeight::Int8)
            .map_err(|e| read_error(e, &[("SCB", scb)]));
    }
    let side = |suffix: &str| model.tensor(&format!("{name}.{suffix}"));
    let Some((state, kind)) = [FourBit::Nf4, FourBit::Fp4]
        .into_iter()
        .find_map(|k| side(&format!("{}{}", &BNB4_STATE[1..], k.name())).map(|t| (t, k)))
    else {
        return Err(error(
            w,
            "no quant_state.bitsandbytes__nf4 or __fp4 tensor beside it; the 4-bit layer is incomplete".into(),
        ));
    };
    let bad = |msg: String| error(state, msg);
    let json: serde_json::Value = serde_json::from_slice(model.bytes(state))
        .map_err(|e| bad(format!("the quant state is not JSON ({e})")))?;
    let uint = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("the quant state has no integer '{key}'")))
    };
    let text = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("the quant state has no '{key}' string")))
    };
    let quant_type = text("quant_type")?;
    if quant_type != kind.name() {
        return Err(bad(format!(
            "quant_type '{quant_type}' in a quant state named for {}; nf4 and fp4 are the 4-bit types",
            kind.name()
        )));
    }
    let blocksize = uint("blocksize")?;
    if !(32..=4096).contains(&blocksize) || !blocksize.is_power_of_two() {
        return Err(bad(format!(
            "blocksize {blocksize}; bitsandbytes dequantizes blocks of 32, 64, …, 4096"
        )));
    }
    let out = match text("dtype")? {
        "float32" => OutType::F32,
        "float16" => OutType::F16,
        "bfloat16" => OutType::Bf16,
        other => {
            return Err(bad(format!(
                "dtype '{other}'; 4-bit weights dequantize to float32, float16 or bfloat16"
            )))
        }
    };
    let (shape, _) = bnb4(model, state, w, kind.name()).map_err(bad)?;
    let &[rows, cols] = shape.as_slice() else {
        return Err(bad(format!("shape {shape:?}; a Linear weight is 2-D")));
    };
    if rows == 0 || cols == 0 {
        return Err(bad(format!("shape {shape:?} has a zero dimension")));
    }
    let absmax_t = side("absmax").ok_or_else(|| {
        error(
            w,
            format!("no '{name}.absmax' tensor beside it; the 4-bit layer is incomplete"),
        )
    })?;
    let absmax = match side("nested_absmax") {
        None => floats(absmax_t)?,
        Some(nested) => {
            let map = side("nested_quant_map")
                .ok_or_else(|| error(nested, format!("no '{name}.nested_quant_map' beside it")))?;
            if absmax_t.dtype != DType::U8 {
                return Err(error(
                    absmax_t,
                    format!(
                        "dtype {}; double-quantized maxima are U8 codes",
                        absmax_t.dtype
                    ),
                ));
            }
            let nested_blocksize = uint("nested_blocksize")?;
            if nested_blocksize == 0 {
                return Err(bad("nested_blocksize 0".into()));
            }
            // `QuantState.from_dict`: torch.tensor(float(...)), an f32.
            let offset = json
                .get("nested_offset")
                .and_then(|v| v.as_f64())
                .ok_or_else(|| bad("the quant state has no 'nested_offset' number".into()))?
                as f32;
            if !offset.is_finite() || text("nested_dtype")? != "float32" {
                return Err(bad(format!(
                    "nested_offset {offset} / nested_dtype '{}'; expected a finite offset and float32",
                    text("nested_dtype")?
                )));
            }
            bnb::nested_absmax(
                model.bytes(absmax_t),
                &floats(nested)?,
                &floats(map)?,
                nested_blocksize as usize,
                offset,
            )
            .map_err(|e| read_error(e, &[("nested_absmax", nested), ("nested_quant_map", map)]))?
        }
    };
    FourBitRef::new(
        kind,
        model.bytes(w),
        absmax,
        blocksize as usize,
        [rows as usize, cols as usize],
        out,
    )
    .map(PackedWeight::FourBit)
    .map_err(|e| read_error(e, &[("absmax", absmax_t)]))
}
