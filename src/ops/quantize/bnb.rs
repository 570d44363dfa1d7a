//! `quantize nf4|fp4|int8`: writes bitsandbytes checkpoints that
//! transformers (`from_pretrained`) and vLLM load pre-quantized, on any
//! machine, without a GPU or Python.
//!
//! This module owns the checkpoint layout: which tensors become which
//! (`Linear4bit._save_to_state_dict` + `QuantState.as_dict(packed=True)`,
//! `Linear8bitLt._save_to_state_dict` of bitsandbytes 0.50.2), the
//! quant-state JSON, which modules stay unquantized (transformers
//! `integrations/bitsandbytes.py` `_replace_with_bnb_linear`,
//! `get_keys_to_not_convert`), and `config.json`'s `quantization_config`
//! (transformers 4.57 `BitsAndBytesConfig.to_dict`, keys sorted). The
//! numerics live in [`crate::quant::bnb`].
//!
//! Streaming: the weights are read in row chunks aligned to the block
//! size, quantized in parallel (rayon) and written at once; memory holds
//! one chunk plus one tensor's block maxima. With double quantization the
//! quant-state JSON (part of the safetensors header) holds the mean of
//! every tensor's maxima, so a first pass computes those maxima before
//! the header is written.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use crate::model::arch::{self, Role};
use crate::ops::Error;
use crate::quant::bnb::{self as kernels, FourBit};
use crate::store::atomic::{self, AtomicDir};
use crate::store::card::ModelCard;
use crate::store::hfdir;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter};
use crate::store::{Container, DType, Model, StoreError, TensorInfo};

/// The bitsandbytes checkpoint formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BnbFormat {
    /// 4-bit NormalFloat (QLoRA).
    Nf4,
    /// 4-bit float (e2m1).
    Fp4,
    /// LLM.int8: int8 rows with one f32 scale each.
    Int8,
}

impl BnbFormat {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BnbFormat::Nf4 => "nf4",
            BnbFormat::Fp4 => "fp4",
            BnbFormat::Int8 => "int8",
        }
    }

    fn four_bit(self) -> Option<FourBit> {
        match self {
            BnbFormat::Nf4 => Some(FourBit::Nf4),
            BnbFormat::Fp4 => Some(FourBit::Fp4),
            BnbFormat::Int8 => None,
        }
    }
}

/// Block sizes bitsandbytes' 4-bit quantizer accepts.
pub const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/// bitsandbytes' default 4-bit block size (`Params4bit`, `quantize_4bit`).
pub const DEFAULT_BLOCKSIZE: usize = 64;
/// Modules transformers keeps unquantized by default: the output head
/// (`get_keys_to_not_convert`).
const DEFAULT_SKIP: &str = "lm_head";

/// Options of a quantization.
pub struct BnbOptions {
    /// Output directory (must not exist, or be empty).
    pub out: PathBuf,
    /// 4-bit block size.
    pub blocksize: usize,
    /// 4-bit double quantization of the block maxima.
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype`; `None`: the weights' dtype.
    pub compute_dtype: Option<DType>,
    /// Extra modules to keep unquantized (transformers' matching rules).
    pub skip: Vec<String>,
    pub max_shard_size: u64,
    /// torch's thread count to reproduce in the double-quant mean of
    /// layers of 32768+ blocks (bitsandbytes' result depends on it).
    pub torch_threads: usize,
    /// The command line, recorded in the model card.
    pub command: String,
    /// What the user named the model, for the model card.
    pub model_label: String,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl BnbOptions {
    /// Defaults for `out`: block size 64, double quantization, compute
    /// dtype from the weights, 5GB shards, torch's default thread count on
    /// this machine (its cores), no progress bars.
    pub fn new(out: PathBuf) -> BnbOptions {
        BnbOptions {
            out,
            blocksize: DEFAULT_BLOCKSIZE,
            double_quant: true,
            compute_dtype: None,
            skip: Vec::new(),
            max_shard_size: crate::store::safetensors::DEFAULT_MAX_SHARD_SIZE,
            torch_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            command: String::new(),
            model_label: String::new(),
            progress: false,
        }
    }
}

/// What a quantization did (or, with a dry run, would do).
#[derive(Debug, serde::Serialize)]
pub struct BnbReport {
    pub out: PathBuf,
    pub format: BnbFormat,
    /// Linear layers quantized.
    pub quantized: usize,
    /// Linear layers kept in their dtype (the head, `--skip`).
    pub kept: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// Bytes of tensor data read.
    pub source_bytes: u64,
    pub files: Vec<String>,
    pub quantization_config: serde_json::Value,
}

/// transformers' rule (`_replace_with_bnb_linear`): a module is skipped
/// when a pattern equals its last name component or its full name, or
/// `pattern + "."` occurs in its full name.
pub fn is_skipped(module: &str, patterns: &[String]) -> bool {
    let short = module.rsplit('.').next().unwrap_or(module);
    patterns
        .iter()
        .any(|p| p == short || p == module || module.contains(&format!("{p}.")))
}

/// torch's name of a float dtype (`str(dtype)` without `torch.`).
fn torch_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

pub(crate) fn require_float(t: &TensorInfo) -> Result<(), Error> {
    match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        d => Err(Error::Refused(format!(
            "tensor '{}' has dtype {d}; bitsandbytes quantizes float32, float16 and bfloat16 weights (is the model already quantized?)",
            t.name
        ))),
    }
}

/// `config.json`'s `quantization_config` as transformers 4.57 writes it
/// (`BitsAndBytesConfig.to_dict`, keys sorted).
pub fn quantization_config(
    format: BnbFormat,
    double_quant: bool,
    compute_dtype: DType,
    skip: Option<&[String]>,
) -> serde_json::Value {
    let four = format.four_bit();
    let v = serde_json::json!({
        "_load_in_4bit": four.is_some(),
        "_load_in_8bit": four.is_none(),
        "bnb_4bit_compute_dtype": torch_name(compute_dtype),
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": four.map_or("fp4", FourBit::name),
        "bnb_4bit_use_double_quant": four.is_some() && double_quant,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": skip,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": four.is_some(),
        "load_in_8bit": four.is_none(),
        "quant_method": "bitsandbytes",
    });
    hfdir::sort_keys(v)
}

/// The `quant_state.bitsandbytes__*` JSON (`QuantState.as_dict(packed=True)`
/// → `json.dumps`: default separators, keys in that order).
fn quant_state_json(
    kind: FourBit,
    blocksize: usize,
    t: &TensorInfo,
    nested_offset: Option<f32>,
) -> String {
    let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
    let mut s = format!(
        "{{\"quant_type\": \"{}\", \"blocksize\": {blocksize}, \"dtype\": \"{}\", \"shape\": [{}]",
        kind.name(),
        torch_name(t.dtype),
        shape.join(", ")
    );
    if let Some(off) = nested_offset {
        s += &format!(
            ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            kernels::NESTED_BLOCKSIZE,
            kernels::py_float_repr(off as f64)
        );
    }
    s + "}"
}

/// What happens to one source tensor.
enum Item<'a> {
    Copy(&'a TensorInfo),
    FourBit {
        t: &'a TensorInfo,
        /// The double-quant offset found by the first pass.
        offset: Option<f32>,
    },
    Int8(&'a TensorInfo),
}

/// Row ranges of about 4M elements whose element counts are whole
/// `align`-element blocks (but the last).
fn row_chunks(t: &TensorInfo, align: usize) -> Vec<Range<u64>> {
    let cols = t.row_len().max(1) as usize;
    let g = gcd(cols, align);
    let unit = align / g;
    let rows_per = (((4 << 20) / cols).max(1)).div_ceil(unit) * unit;
    let rows = t.rows();
    (0..rows)
        .step_by(rows_per)
        .map(|r| r..(r + rows_per as u64).min(rows))
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Reads rows of a weight as f32, refusing NaN and Inf (named).
fn read_finite(model: &Model, t: &TensorInfo, rows: Range<u64>) -> Result<Vec<f32>, StoreError> {
    let first = rows.start * t.row_len();
    let x = model.read_rows_f32(t, rows)?;
    StoreError::check_finite(&t.name, first, &x)?;
    Ok(x)
}

/// Streams a weight through the 4-bit quantizer: packed bytes go to
/// `sink`, the block maxima are returned. With `kind` `None`, only the
/// maxima are computed (the first pass of double quantization).
fn quantize_4bit_tensor(
    model: &Model,
    t: &TensorInfo,
    kind: Option<FourBit>,
    blocksize: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<Vec<f32>, StoreError> {
    let mut absmax = Vec::with_capacity((t.numel() as usize).div_ceil(blocksize));
    let mut packed = Vec::new();
    let chunks = row_chunks(t, blocksize);
    for rows in &chunks {
        let x = read_finite(model, t, rows.clone())?;
        let Some(kind) = kind else {
            kernels::block_absmax(&x, blocksize, &mut absmax);
            continue;
        };
        packed.clear();
        kernels::quantize_4bit_blocks(&x, blocksize, kind, &mut packed, &mut absmax);
        sink(&packed)?;
    }
    Ok(absmax)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Quantizes `model`'s Linear layers into a bitsandbytes checkpoint at
/// `opts.out`, or only plans it when `dry_run`.
pub fn quantize(
    model: &Model,
    format: BnbFormat,
    opts: &BnbOptions,
    dry_run: bool,
) -> Result<BnbReport, Error> {
    if model.container != Container::Safetensors {
        return Err(Error::Refused(format!(
            "{0}: quantize {1} needs a Hugging Face safetensors model (got a GGUF); convert it \
             first: `llmtool convert {0} --out DIR`, then quantize DIR",
            model.root.display(),
            format.name()
        )));
    }
    let Some(config) = model.config.clone() else {
        return Err(Error::Refused(format!(
            "{}: the model has no config.json; transformers needs one to load the checkpoint",
            model.root.display()
        )));
    };
    crate::model::check::weights(model, "quantize")?;
    let kind = format.four_bit();
    if kind.is_some() && !BLOCKSIZES.contains(&opts.blocksize) {
        return Err(Error::Refused(format!(
            "--blocksize {} is not one bitsandbytes supports ({})",
            opts.blocksize,
            BLOCKSIZES.map(|b| b.to_string()).join(", ")
        )));
    }
    if let Some(d) = opts.compute_dtype {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Refused(format!(
                "--compute-dtype {d} is not float32, float16 or bfloat16"
            )));
        }
    }
    let mut patterns = vec![DEFAULT_SKIP.to_string()];
    patterns.extend(opts.skip.iter().cloned());

    // Which tensors are Linear weights, and which of those stay as they are.
    let mut items = Vec::new();
    let mut kept = Vec::new();
    let mut first_dtype = None;
    for t in model.tensors() {
        let Some(module) = t.name.strip_suffix(".weight") else {
            items.push(Item::Copy(t));
            continue;
        };
        let linear = match arch::role(&t.name) {
            Role::LmHead => true,
            Role::Layer(_, p) if p.is_projection() => true,
            Role::Other if t.shape.len() == 2 && !is_skipped(module, &patterns) => {
                return Err(Error::Refused(format!(
                    "tensor '{}' [{}] is not a layer llmtool knows (q/k/v/o, gate/up/down projections, lm_head); if it is an nn.Linear that should stay unquantized, pass --skip {module}",
                    t.name,
                    t.shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )))
            }
            _ => false,
        };
        if !linear {
            items.push(Item::Copy(t));
        } else if is_skipped(module, &patterns) {
            kept.push(module.to_string());
            items.push(Item::Copy(t));
        } else {
            require_float(t)?;
            first_dtype.get_or_insert(t.dtype);
            if kind.is_some() && t.numel() % 2 == 1 {
                return Err(Error::Refused(format!(
                    "tensor '{}' {:?} has an odd number of elements; bitsandbytes packs two 4-bit values per byte and cannot store it (pass --skip {module})",
                    t.name, t.shape
                )));
            }
            items.push(match kind {
                Some(_) => Item::FourBit { t, offset: None },
                None => Item::Int8(t),
            });
        }
    }
    if first_dtype.is_none() {
        return Err(Error::Refused(format!(
            "{}: no Linear layer to quantize (all skipped?)",
            model.root.display()
        )));
    }
    // transformers' default compute dtype is float32; for 4-bit we default
    // to the weights' dtype (what a bf16 model is run in), int8 ignores it.
    let compute = match (opts.compute_dtype, kind) {
        (Some(d), _) => d,
        (None, Some(_)) => first_dtype.unwrap_or(DType::F32),
        (None, None) => DType::F32,
    };
    let skip_list = (!opts.skip.is_empty()).then_some(patterns.as_slice());
    let qconfig = quantization_config(format, opts.double_quant, compute, skip_list);

    // First pass (double quantization only): every tensor's block maxima,
    // whose mean goes into the quant-state JSON in the header.
    let n_quant = items.iter().filter(|i| !matches!(i, Item::Copy(_))).count();
    if let (Some(_), true, false) = (kind, opts.double_quant, dry_run) {
        let scan_total: u64 = items
            .iter()
            .map(|i| match i {
                Item::FourBit { t, .. } => t.len,
                _ => 0,
            })
            .sum();
        let bar = crate::progress::bytes_bar(opts.progress, scan_total, "block maxima");
        for item in &mut items {
            if let Item::FourBit { t, offset } = item {
                bar.set_message(t.name.clone());
                let absmax = quantize_4bit_tensor(model, t, None, opts.blocksize, &mut |_| Ok(()))?;
                model.release(t);
                bar.inc(t.len);
                // Only the offset is needed here; the nested codes are made
                // in the second pass.
                *offset = Some(kernels::torch_mean(
                    &absmax,
                    kernels::TORCH_LANES,
                    opts.torch_threads,
                ));
            }
        }
        bar.finish_and_clear();
    }

    // Output plan.
    let mut plan: Vec<SafetensorsTensor> = Vec::new();
    for item in &items {
        match item {
            Item::Copy(t) => plan.push(SafetensorsTensor::from(*t)),
            Item::FourBit { t, offset, .. } => {
                let k = kind.expect("4-bit item");
                let n = t.numel();
                let blocks = n.div_ceil(opts.blocksize as u64);
                let p = |suffix: &str, dtype, shape: Vec<u64>| SafetensorsTensor {
                    name: format!("{}{suffix}", t.name),
                    dtype,
                    shape,
                };
                plan.push(p("", DType::U8, vec![n / 2, 1]));
                let dq = opts.double_quant;
                plan.push(p(
                    ".absmax",
                    if dq { DType::U8 } else { DType::F32 },
                    vec![blocks],
                ));
                plan.push(p(".quant_map", DType::F32, vec![16]));
                if dq {
                    let nb = blocks.div_ceil(kernels::NESTED_BLOCKSIZE as u64);
                    plan.push(p(".nested_absmax", DType::F32, vec![nb]));
                    plan.push(p(".nested_quant_map", DType::F32, vec![256]));
                }
                // A dry run plans the JSON with a zero offset (same shape of header).
                let json =
                    quant_state_json(k, opts.blocksize, t, dq.then(|| offset.unwrap_or(0.0)));
                plan.push(p(
                    &format!(".quant_state.bitsandbytes__{}", k.name()),
                    DType::U8,
                    vec![json.len() as u64],
                ));
            }
            Item::Int8(t) => {
                let module = t.name.trim_end_matches(".weight");
                plan.push(SafetensorsTensor {
                    name: t.name.clone(),
                    dtype: DType::I8,
                    shape: t.shape.clone(),
                });
                plan.push(SafetensorsTensor {
                    name: format!("{module}.SCB"),
                    dtype: DType::F32,
                    shape: vec![t.rows()],
                });
                plan.push(SafetensorsTensor {
                    name: format!("{module}.weight_format"),
                    dtype: DType::U8,
                    shape: vec![],
                });
            }
        }
    }
    let out = &opts.out;
    AtomicDir::check_dest(out)?;
    let files = ShardedWriter::create(out, plan.clone(), opts.max_shard_size, BTreeMap::new())?;
    let bytes = files.total_size();
    let source_bytes: u64 = model.tensors().iter().map(|t| t.len).sum();
    let n_tensors = plan.len();
    let report = |files: Vec<String>| BnbReport {
        out: out.clone(),
        format,
        quantized: n_quant,
        kept: kept.clone(),
        tensors: n_tensors,
        bytes,
        source_bytes,
        files,
        quantization_config: qconfig.clone(),
    };
    if dry_run {
        let mut names = files.file_names();
        names.extend(["README.md", "config.json"].map(String::from));
        names.sort();
        return Ok(report(names));
    }

    let tmp = AtomicDir::create(out)?;
    let mut w = ShardedWriter::create(tmp.path(), plan, opts.max_shard_size, BTreeMap::new())?;
    let verb = format!("quantizing to {}", format.name());
    let bar = crate::progress::bytes_bar(opts.progress, source_bytes, &verb);
    for item in &items {
        match item {
            Item::Copy(t) => {
                bar.set_message(t.name.clone());
                w.copy_tensor(model, t)?;
                bar.inc(t.len);
            }
            Item::FourBit { t, offset } => {
                bar.set_message(t.name.clone());
                write_4bit(model, &mut w, t, kind.expect("4-bit"), opts, *offset)?;
                model.release(t);
                bar.inc(t.len);
            }
            Item::Int8(t) => {
                bar.set_message(t.name.clone());
                write_int8(model, &mut w, t)?;
                model.release(t);
                bar.inc(t.len);
            }
        }
    }
    w.finish()?;
    bar.finish_and_clear();

    let mut config = config;
    config["quantization_config"] = qconfig.clone();
    hfdir::write_config(tmp.path(), &hfdir::sort_keys(config))?;
    hfdir::copy_side_files(model, tmp.path())?;
    atomic::write_file(
        &tmp.path().join("README.md"),
        model_card(format, opts, &qconfig, n_quant, &kept).as_bytes(),
    )?;
    let names = tmp.commit()?;
    Ok(report(names))
}

fn write_4bit(
    model: &Model,
    w: &mut ShardedWriter,
    t: &TensorInfo,
    kind: FourBit,
    opts: &BnbOptions,
    offset: Option<f32>,
) -> Result<(), Error> {
    let mut absmax = Vec::new();
    w.write_tensor_with(&t.name, |sink| {
        absmax = quantize_4bit_tensor(model, t, Some(kind), opts.blocksize, sink)?;
        Ok(())
    })?;
    let nested = if opts.double_quant {
        let n = kernels::double_quant(&absmax, opts.torch_threads);
        // The header already holds the first pass's offset.
        if Some(n.offset) != offset {
            return Err(Error::Refused(format!(
                "tensor '{}' changed while being quantized (its block maxima differ between the two passes)",
                t.name
            )));
        }
        w.write_tensor(&format!("{}.absmax", t.name), &n.codes)?;
        Some(n)
    } else {
        w.write_tensor(&format!("{}.absmax", t.name), &f32_bytes(&absmax))?;
        None
    };
    w.write_tensor(
        &format!("{}.quant_map", t.name),
        &f32_bytes(&kind.quant_map()),
    )?;
    if let Some(n) = &nested {
        w.write_tensor(&format!("{}.nested_absmax", t.name), &f32_bytes(&n.absmax))?;
        w.write_tensor(
            &format!("{}.nested_quant_map", t.name),
            &f32_bytes(&kernels::dynamic_map()),
        )?;
    }
    let json = quant_state_json(kind, opts.blocksize, t, nested.map(|n| n.offset));
    w.write_tensor(
        &format!("{}.quant_state.bitsandbytes__{}", t.name, kind.name()),
        json.as_bytes(),
    )?;
    Ok(())
}

fn write_int8(model: &Model, w: &mut ShardedWriter, t: &TensorInfo) -> Result<(), Error> {
    let cols = t.row_len().max(1) as usize;
    let chunks = row_chunks(t, 1);
    // Chunks are quantized on a helper thread (rows in parallel) while this
    // one writes the previous chunk: the copy into the page cache is a
    // quarter of the work.
    let scb = std::sync::Mutex::new(Vec::with_capacity(t.rows() as usize));
    w.write_tensor_with(&t.name, |sink| {
        crate::stream::pipelined(
            chunks.len(),
            |i| {
                let rows = chunks[i].clone();
                let mut q = vec![0u8; (rows.end - rows.start) as usize * cols];
                let scales = model.map_rows_f32(t, rows, &mut q, |row, x, o| {
                    let first = row * cols as u64;
                    StoreError::check_finite(&t.name, first, x)?;
                    // LLM.int8 goes through float16: larger values would become inf.
                    kernels::quantize_int8_row(x, o).map_err(|i| StoreError::Write {
                        path: model.root.clone(),
                        msg: format!(
                            "tensor '{}': element {} is {}, outside float16's range; LLM.int8 converts weights to float16 first (pass --skip {})",
                            t.name,
                            first + i as u64,
                            x[i],
                            t.name.trim_end_matches(".weight")
                        ),
                    })
                })?;
                scb.lock().expect("no panics hold it").extend(scales);
                Ok(q)
            },
            sink,
        )
    })?;
    let scb = scb.into_inner().expect("no panics hold it");
    let module = t.name.trim_end_matches(".weight");
    w.write_tensor(&format!("{module}.SCB"), &f32_bytes(&scb))?;
    // `weight_format` 0 = "row" (bitsandbytes `LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING`).
    w.write_tensor(&format!("{module}.weight_format"), &[0u8])?;
    Ok(())
}

fn model_card(
    format: BnbFormat,
    opts: &BnbOptions,
    qconfig: &serde_json::Value,
    quantized: usize,
    kept: &[String],
) -> String {
    let (title, what) = match format {
        BnbFormat::Nf4 | BnbFormat::Fp4 => (
            "4-bit",
            format!(
                "{} with block size {}{}, compute dtype {}",
                if format == BnbFormat::Nf4 {
                    "NF4"
                } else {
                    "FP4"
                },
                opts.blocksize,
                if opts.double_quant {
                    ", double-quantized block maxima"
                } else {
                    ""
                },
                qconfig["bnb_4bit_compute_dtype"].as_str().unwrap_or("")
            ),
        ),
        BnbFormat::Int8 => (
            "8-bit",
            "LLM.int8 (int8 rows, one f32 scale per row)".into(),
        ),
    };
    ModelCard::new()
        .text("base_model", &opts.model_label)
        .field("base_model_relation", "quantized")
        .field("library_name", "transformers")
        .field("pipeline_tag", "text-generation")
        .list("tags", &["llmtool", "bitsandbytes", title])
        .body(&format!(
            "# {} (bitsandbytes {title})\n\n`{}` quantized by llmtool {}: {what}. \
             {quantized} Linear layers quantized; kept in their original dtype: {}.\n\n",
            opts.model_label,
            opts.model_label,
            env!("CARGO_PKG_VERSION"),
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(", ")
            }
        ))
        .body(
            "The tensors are those bitsandbytes writes for this format, and `config.json` \
             carries the `quantization_config` transformers writes, so the checkpoint loads \
             pre-quantized (needs `bitsandbytes` installed):\n\n```python\n\
             from transformers import AutoModelForCausalLM\n\
             model = AutoModelForCausalLM.from_pretrained(\"<this directory>\", device_map=\"auto\")\n```\n\n\
             With vLLM: `vllm serve <this directory> --quantization bitsandbytes`.\n\n",
        )
        .made_with(&opts.command)
        .render()
}
