//! GGUF → Hugging Face: `llmtool convert MODEL.gguf --out DIR` (packed
//! GPTQ / AWQ / compressed-tensors checkpoints go to [`crate::ops::dequantize`]).
//!
//! Every tensor is dequantized row chunk by row chunk (the store's
//! `read_rows_f32`, bit-exact with gguf-py), renamed to its HF name, Q/K
//! rows of `llama` files are put back in HF order, and the result streams
//! into sharded safetensors. config.json and generation_config.json are
//! rebuilt from the GGUF metadata cross-checked against the tensors
//! ([`crate::model::arch::detect`]); the tokenizer files come from
//! [`crate::model::tokenizer`]. The directory appears only when complete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::family::GgufArch;
use crate::model::hf_gguf::{llama3_rope_factors, permuted_source_row, LLAMA3_DEFAULTS};
use crate::ops::Error;
use crate::store::atomic::{self, AtomicDir};
use crate::store::card::ModelCard;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter};
use crate::store::{Container, DType, Model, StoreError, TensorInfo};

/// What to write.
#[derive(Debug, Clone)]
pub struct HfOptions {
    pub out: PathBuf,
    /// Output dtype; default: the token embedding's dtype when it is F32,
    /// F16 or BF16, else F32 (so dequantized values are kept exactly).
    pub dtype: Option<DType>,
    pub max_shard_size: u64,
    pub progress: bool,
    /// The command line, recorded in the model card.
    pub command: String,
}

/// What was (or would be) written.
#[derive(Debug, Clone, Serialize)]
pub struct HfReport {
    pub out: PathBuf,
    pub arch: GgufArch,
    pub dtype: DType,
    pub tensors: usize,
    pub bytes: u64,
    pub files: Vec<String>,
    pub warnings: Vec<String>,
}

/// One output tensor: its HF name, the GGUF tensor it comes from, and the
/// head size when its rows must be un-permuted.
struct Item<'a> {
    name: String,
    src: &'a TensorInfo,
    head_dim: Option<usize>,
}

/// Converts an opened GGUF model to an HF directory at `opts.out` (or only
/// plans it when `dry_run`).
pub fn convert(model: &Model, opts: &HfOptions, dry_run: bool) -> Result<HfReport, Error> {
    let file = model.root.display().to_string();
    if let Some(f) = crate::model::packed::packed_format(model)? {
        return crate::ops::dequantize::to_hf(model, f, opts, dry_run);
    }
    let (Container::Gguf, Some(meta)) = (model.container, model.gguf.as_ref()) else {
        return Err(Error::Refused(format!(
            "{file}: not a GGUF file nor a GPTQ, AWQ, compressed-tensors or bitsandbytes checkpoint; convert turns those into HF safetensors"
        )));
    };
    let arch_name = meta.str("general.architecture").unwrap_or("");
    let Some(garch) = GgufArch::from_gguf(arch_name) else {
        return Err(Error::Refused(format!(
            "{file}: general.architecture is '{arch_name}'; convert supports llama (also Mistral) and qwen2"
        )));
    };
    let a = arch::detect(model);
    let need = |what: &str, v: Option<u64>| {
        v.ok_or_else(|| {
            Error::Refused(format!(
                "{file}: cannot tell the {what} from the metadata or the tensors"
            ))
        })
    };
    let heads = need("attention head count", a.heads)? as usize;
    let kv_heads = need("KV head count", a.kv_heads)? as usize;
    let head_dim = need("head size", a.head_dim)? as usize;
    let mut warnings = a.warnings.clone();

    let dtype = match opts.dtype {
        Some(d) => d,
        None => match model.tensor("token_embd.weight").map(|t| t.dtype) {
            Some(d @ (DType::F16 | DType::BF16 | DType::F32)) => d,
            _ => DType::F32,
        },
    };
    let mut items = Vec::new();
    let mut rope_freqs = None;
    for t in model.tensors() {
        if t.name == "rope_freqs.weight" {
            rope_freqs = Some(t);
            continue;
        }
        let Some(name) = arch::rename(&t.name, false) else {
            return Err(Error::Refused(format!(
                "{file}: tensor '{}' has no Hugging Face counterpart in a {} model",
                t.name,
                garch.name()
            )));
        };
        if !t.dtype.is_float_readable() {
            return Err(Error::Refused(format!(
                "{file}: tensor '{}' is {}, which llmtool cannot dequantize yet",
                t.name, t.dtype
            )));
        }
        let permute = match arch::role(&t.name) {
            Role::Layer(_, LayerPart::Q | LayerPart::QBias) => Some(heads),
            Role::Layer(_, LayerPart::K | LayerPart::KBias) => Some(kv_heads),
            _ => None,
        };
        let head_dim = match permute.filter(|_| garch.permutes_qk()) {
            Some(n) => {
                if t.rows() as usize != n * head_dim || head_dim % 2 != 0 {
                    return Err(Error::Refused(format!(
                        "{file}: tensor '{}' has {} rows, not {n} heads of {head_dim}",
                        t.name,
                        t.rows()
                    )));
                }
                Some(head_dim)
            }
            None => None,
        };
        items.push(Item {
            name,
            src: t,
            head_dim,
        });
    }
    // HF order: the names sorted, as transformers' save_pretrained writes them.
    items.sort_by(|x, y| x.name.cmp(&y.name));

    let mut config = config_json(model, &a, garch, dtype, head_dim)?;
    if let Some(rf) = rope_freqs {
        match llama3_scaling(model, rf, &a, head_dim)? {
            Some(scaling) => config["rope_scaling"] = scaling,
            None => warnings.push(format!(
                "{file}: rope_freqs.weight does not match Llama-3.1's rope scaling defaults; config.json has no rope_scaling, set it by hand"
            )),
        }
    }
    let plan: Vec<SafetensorsTensor> = items
        .iter()
        .map(|it| SafetensorsTensor {
            name: it.name.clone(),
            dtype,
            shape: it.src.shape.clone(),
        })
        .collect();
    let bytes: u64 = plan
        .iter()
        .map(|p| dtype.bytes_for(p.shape.iter().product()).unwrap_or(0))
        .sum();
    let report = |files: Vec<String>, warnings: Vec<String>| HfReport {
        out: opts.out.clone(),
        arch: garch,
        dtype,
        tensors: plan.len(),
        bytes,
        files,
        warnings,
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
        return Ok(report(files, warnings));
    }

    let dir = AtomicDir::create(&opts.out)?;
    let mut w = ShardedWriter::create(
        dir.path(),
        plan.clone(),
        opts.max_shard_size,
        BTreeMap::new(),
    )?;
    let bar = crate::progress::bytes_bar(opts.progress, bytes, "converting");
    for it in &items {
        bar.set_message(it.name.clone());
        w.write_tensor_with(&it.name, |sink| {
            stream_tensor(model, it, dtype, &mut |b: &[u8]| {
                bar.inc(b.len() as u64);
                sink(b)
            })
        })?;
        model.release(it.src);
    }
    w.finish()?;
    bar.finish_and_clear();

    let put_json = |name: &str, v: &serde_json::Value| {
        atomic::write_file(
            &dir.path().join(name),
            (serde_json::to_string_pretty(v).unwrap_or_default() + "\n").as_bytes(),
        )
    };
    put_json("config.json", &config)?;
    put_json("generation_config.json", &generation_config(&config))?;
    crate::model::tokenizer::write_hf_tokenizer(meta, dir.path())
        .map_err(|e| Error::Refused(format!("{file}: tokenizer: {e}")))?;
    atomic::write_file(
        &dir.path().join("README.md"),
        model_card(model, opts, garch, dtype).as_bytes(),
    )?;
    let files = dir.commit()?;
    Ok(report(files, warnings))
}

/// Streams one tensor: rows dequantized to f32 in chunks (whole heads for
/// permuted tensors), reordered, encoded to `dtype`.
fn stream_tensor(
    model: &Model,
    it: &Item,
    dtype: DType,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let t = it.src;
    let rows = t.rows() as usize;
    let cols = t.row_len().max(1) as usize;
    let unit = it.head_dim.unwrap_or(1);
    let rows_per_chunk = ((4 << 20) / cols / unit).max(1) * unit;
    let mut bytes = Vec::new();
    let mut r0 = 0;
    while r0 < rows.max(1) {
        let r1 = (r0 + rows_per_chunk).min(rows);
        let chunk = if rows == 0 {
            vec![]
        } else {
            model.read_rows_f32(t, r0 as u64..r1 as u64)?
        };
        let chunk = match it.head_dim {
            Some(hd) => {
                let mut out = vec![0f32; chunk.len()];
                for (row, dst) in out.chunks_mut(cols).enumerate() {
                    let src = permuted_source_row(row, hd, false);
                    dst.copy_from_slice(&chunk[src * cols..(src + 1) * cols]);
                }
                out
            }
            None => chunk,
        };
        dtype.encode_f32s(&chunk, &mut bytes);
        sink(&bytes)?;
        r0 = r1.max(r0 + 1);
    }
    Ok(())
}

fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

/// config.json for the converted model, from the cross-checked architecture.
fn config_json(
    model: &Model,
    a: &arch::Arch,
    garch: GgufArch,
    dtype: DType,
    head_dim: usize,
) -> Result<serde_json::Value, Error> {
    let file = model.root.display().to_string();
    let need = |what: &str, v: Option<u64>| {
        v.ok_or_else(|| {
            Error::Refused(format!(
                "{file}: cannot tell the {what} from the metadata or the tensors"
            ))
        })
    };
    let meta = model.gguf.as_ref().expect("checked by the caller");
    let id = |k: &str| meta.u64(&format!("tokenizer.ggml.{k}"));
    let mut c = json!({
        "architectures": [garch.hf_class()],
        "model_type": garch.name(),
        "hidden_size": need("hidden size", a.hidden_size)?,
        "intermediate_size": need("FFN size", a.ffn_size)?,
        "num_hidden_layers": need("layer count", a.layers)?,
        "num_attention_heads": need("head count", a.heads)?,
        "num_key_value_heads": need("KV head count", a.kv_heads)?,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": a.context_length.unwrap_or(4096),
        "rms_norm_eps": a.norm_eps.unwrap_or(1e-6),
        "rope_theta": a.rope.theta.unwrap_or(10000.0),
        "rope_scaling": null,
        "vocab_size": need("vocabulary size", a.vocab)?,
        "tie_word_embeddings": a.tied_embeddings,
        "torch_dtype": torch_dtype(dtype),
        "use_cache": true,
    });
    if let Some(s) = &a.rope.scaling {
        let kind = s.get("type").and_then(|v| v.as_str());
        let factor = s.get("factor").and_then(|v| v.as_f64());
        match (kind, factor) {
            (Some("linear"), Some(f)) => {
                c["rope_scaling"] = json!({"rope_type": "linear", "factor": f})
            }
            (Some("yarn"), Some(f)) => {
                let orig = s.get("original_context_length").and_then(|v| v.as_u64());
                c["rope_scaling"] = json!({"rope_type": "yarn", "factor": f, "original_max_position_embeddings": orig});
            }
            (Some("none") | None, _) => {}
            _ => {
                return Err(Error::Refused(format!(
                    "{file}: rope scaling {s} has no transformers equivalent llmtool knows"
                )))
            }
        }
    }
    match garch {
        GgufArch::Llama => {
            c["attention_bias"] = a.attention_bias.into();
            c["mlp_bias"] = false.into();
        }
        GgufArch::Qwen2 => {
            c["use_sliding_window"] = false.into();
        }
    }
    for (k, key) in [
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
    ] {
        if let Some(v) = id(key) {
            c[k] = v.into();
        }
    }
    Ok(c)
}

/// generation_config.json: the special ids transformers' generate needs.
fn generation_config(config: &serde_json::Value) -> serde_json::Value {
    let mut g = json!({});
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = config.get(k) {
            g[k] = v.clone();
        }
    }
    g
}

/// Recovers Llama-3.1 `rope_scaling` from `rope_freqs.weight` when the
/// factors are exactly what those parameters produce.
fn llama3_scaling(
    model: &Model,
    rf: &TensorInfo,
    a: &arch::Arch,
    head_dim: usize,
) -> Result<Option<serde_json::Value>, Error> {
    let got = model.read_f32(rf)?;
    let ctx = model
        .gguf
        .as_ref()
        .and_then(|m| m.u64("llama.rope.scaling.original_context_length"))
        .map(|v| v as f64);
    let [_, low, high, default_old] = LLAMA3_DEFAULTS;
    let old = ctx.unwrap_or(default_old);
    let base = a.rope.theta.unwrap_or(10000.0);
    // The largest factor is `factor` itself (the low-frequency end).
    let factor = got.iter().copied().fold(1.0f32, f32::max) as f64;
    let want = llama3_rope_factors(base, head_dim, factor, low, high, old);
    Ok((want == got).then(|| {
        json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": old as u64,
        })
    }))
}

fn model_card(model: &Model, opts: &HfOptions, garch: GgufArch, dtype: DType) -> String {
    ModelCard::new()
        .field("library_name", "transformers")
        .list("tags", &["llmtool", "gguf-conversion"])
        .body(&format!(
            "# Converted model\n\n\
             `{}` ({} GGUF) converted to Hugging Face safetensors ({}) by llmtool {}.\n\
             Quantized GGUF weights were dequantized exactly as gguf-py does; the\n\
             Q/K rows llama.cpp permutes were put back in Hugging Face order.\n\n",
            model.root.display(),
            garch.name(),
            torch_dtype(dtype),
            env!("CARGO_PKG_VERSION"),
        ))
        .made_with(&opts.command)
        .body("\nLoad with `AutoModelForCausalLM.from_pretrained(\"<this directory>\")`.\n")
        .render()
}
