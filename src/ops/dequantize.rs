//! Packed checkpoint → plain Hugging Face: `llmtool convert PACKED_DIR
//! --out DIR` on a GPTQ (v1/v2), AWQ GEMM, compressed-tensors
//! `pack-quantized` or bitsandbytes (NF4/FP4, LLM.int8) checkpoint writes
//! the model those codes stand for.
//!
//! Each packed layer (`qweight` / `weight_packed` / bitsandbytes' `weight`
//! and its side tensors) becomes one `….weight`, dequantized as
//! [`crate::quant::int4pack`] (`(q − z)·s` in f32) or [`crate::quant::bnb`]
//! (bitsandbytes' own dequantization) documents, tile of rows by tile of
//! rows; every other tensor is copied through f32. The default output dtype
//! is the one every packed layer's values are exact in
//! ([`PackedWeight::exact_dtype`]: the scales' dtype, bitsandbytes 4-bit's
//! quant-state dtype) when the unpacked tensors share it: the one rounding
//! of the product to that dtype then gives what runtimes that keep the
//! scales in it (vLLM, compressed-tensors' `decompress`, bitsandbytes)
//! compute. Else F32, which keeps the products exactly. config.json loses its
//! `quantization_config`; the tokenizer and generation files are copied;
//! the directory appears only when complete. `quantize` to GGUF takes a
//! packed checkpoint through this (see [`crate::cli`]'s quantize command).

use std::collections::BTreeMap;

use crate::model::family::GgufArch;
use crate::model::packed::{is_side, packed_module, packed_weight, PackedFormat, PackedWeight};
use crate::ops::convert::{HfOptions, HfReport};
use crate::ops::Error;
use crate::store::atomic::{self, AtomicDir};
use crate::store::card::ModelCard;
use crate::store::hfdir;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter};
use crate::store::{DType, Model, StoreError, TensorInfo};

/// Where an output tensor comes from.
enum Source<'m> {
    Tensor(&'m TensorInfo),
    Packed(PackedWeight<'m>),
}

/// Writes the dequantized model of the packed checkpoint `model` (packed
/// as `f`) at `opts.out`, or only plans it.
pub fn to_hf(
    model: &Model,
    f: PackedFormat,
    opts: &HfOptions,
    dry_run: bool,
) -> Result<HfReport, Error> {
    let file = model.root.display().to_string();
    let config = model.config.as_ref().ok_or_else(|| {
        Error::Refused(format!("{file}: no config.json beside the packed weights"))
    })?;
    let garch = GgufArch::from_config(config).ok_or_else(|| {
        Error::Refused(format!(
            "{file}: config.json describes a '{}' model; llmtool reads llama, mistral and qwen2",
            config
                .get("model_type")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
        ))
    })?;
    let mut items: Vec<(String, Vec<u64>, Source)> = Vec::new();
    for t in model.tensors() {
        if let Some(module) = packed_module(model, &t.name) {
            let p = packed_weight(model, module, f)?;
            let shape = vec![p.rows() as u64, p.cols() as u64];
            items.push((format!("{module}.weight"), shape, Source::Packed(p)));
        } else if !is_side(model, &t.name) {
            items.push((t.name.clone(), t.shape.clone(), Source::Tensor(t)));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let dtype = opts.dtype.unwrap_or_else(|| default_dtype(&items));
    let plan: Vec<SafetensorsTensor> = items
        .iter()
        .map(|(name, shape, _)| SafetensorsTensor {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
        })
        .collect();
    let bytes: u64 = plan
        .iter()
        .map(|p| dtype.bytes_for(p.shape.iter().product()).unwrap_or(0))
        .sum();
    let report = |files: Vec<String>| HfReport {
        out: opts.out.clone(),
        arch: garch,
        dtype,
        tensors: plan.len(),
        bytes,
        files,
        warnings: Vec::new(),
    };
    if dry_run {
        AtomicDir::check_dest(&opts.out)?;
        let files = ShardedWriter::create(
            &opts.out,
            plan.clone(),
            opts.max_shard_size,
            BTreeMap::new(),
        )?
        .file_names();
        return Ok(report(files));
    }
    let dir = AtomicDir::create(&opts.out)?;
    let mut w = ShardedWriter::create(
        dir.path(),
        plan.clone(),
        opts.max_shard_size,
        BTreeMap::new(),
    )?;
    let bar = crate::progress::bytes_bar(opts.progress, bytes, "dequantizing");
    for (name, _, src) in &items {
        bar.set_message(name.clone());
        w.write_tensor_with(name, |sink| {
            stream(model, name, src, dtype, &mut |b: &[u8]| {
                bar.inc(b.len() as u64);
                sink(b)
            })
        })?;
    }
    w.finish()?;
    bar.finish_and_clear();

    let mut config = config.clone();
    if let Some(c) = config.as_object_mut() {
        c.remove("quantization_config");
        let torch = match dtype {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            _ => "float32",
        };
        c.insert("torch_dtype".into(), torch.into());
    }
    atomic::write_file(
        &dir.path().join("config.json"),
        (serde_json::to_string_pretty(&config).unwrap_or_default() + "\n").as_bytes(),
    )?;
    hfdir::copy_side_files(model, dir.path())?;
    let card = ModelCard::new()
        .field("library_name", "transformers")
        .list("tags", &["llmtool", "dequantized"])
        .body(&format!(
            "# Dequantized model\n\n`{file}` ({} checkpoint) dequantized to \
             Hugging Face safetensors ({dtype}) by llmtool {}: {}, stored \
             in {dtype}.\n\n",
            f.label(),
            env!("CARGO_PKG_VERSION"),
            match f {
                PackedFormat::Int { .. } => "W = (q − z)·s",
                PackedFormat::Bitsandbytes => "W = code·absmax (4-bit) or q·SCB/127 (LLM.int8)",
            },
        ))
        .made_with(&opts.command)
        .render();
    atomic::write_file(&dir.path().join("README.md"), card.as_bytes())?;
    let files = dir.commit()?;
    Ok(report(files))
}

/// The dtype every packed layer is exact in when every packed layer and
/// every other float tensor share it and it is 16-bit, else F32.
fn default_dtype(items: &[(String, Vec<u64>, Source)]) -> DType {
    let mut dtypes = items.iter().map(|(_, _, s)| match s {
        Source::Tensor(t) => t.dtype,
        Source::Packed(p) => p.exact_dtype(),
    });
    let first = dtypes.next().unwrap_or(DType::F32);
    if matches!(first, DType::F16 | DType::BF16) && dtypes.all(|d| d == first) {
        first
    } else {
        DType::F32
    }
}

/// Streams one output tensor in chunks of about 4 MB of f32.
fn stream(
    model: &Model,
    name: &str,
    src: &Source,
    dtype: DType,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (rows, cols) = match src {
        Source::Tensor(t) => (t.rows() as usize, t.row_len().max(1) as usize),
        Source::Packed(p) => (p.rows(), p.cols()),
    };
    let step = ((1 << 20) / cols.max(1)).max(1);
    let mut bytes = Vec::new();
    for r0 in (0..rows).step_by(step) {
        let r1 = (r0 + step).min(rows);
        let chunk = match src {
            Source::Tensor(t) => model.read_rows_f32(t, r0 as u64..r1 as u64)?,
            Source::Packed(p) => {
                let mut v = vec![0f32; (r1 - r0) * cols];
                p.decode_rows(r0..r1, &mut v);
                v
            }
        };
        StoreError::check_finite(name, (r0 * cols) as u64, &chunk)?;
        dtype.encode_f32s(&chunk, &mut bytes);
        sink(&bytes)?;
    }
    if let Source::Tensor(t) = src {
        model.release(t);
    }
    Ok(())
}
