//! Integer-code checkpoints as `quantize gptq` and `quantize awq` write
//! them: which projections can be packed, the tensor plan of the output,
//! the packed tensors' bytes, and the compressed-tensors
//! `quantization_config`. The two algorithms differ in how they choose
//! codes; what a checkpoint holds is decided here once.
//!
//! The layouts are [`crate::quant::int4pack`]'s: GPTQ v1 (AutoGPTQ
//! `qlinear_cuda_old.py`), AutoAWQ GEMM (`awq/modules/linear/gemm.py`) and
//! compressed-tensors 0.19.0 `pack-quantized`. The scales are stored in f16
//! for GPTQ and AWQ (both references' convention) and in the model's dtype
//! for compressed-tensors (llm-compressor's); codes are computed with the
//! f32 scales in both cases, as the references compute them before the
//! cast.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::model::arch::{self, LayerPart, Role};
use crate::model::engine::text::Text;
use crate::model::engine::Engine;
use crate::ops::calibration::{self, Calibration};
use crate::ops::eval::{self, KldReport};
use crate::ops::Error;
use crate::quant::int4pack::{self, Data, IntWeights};
use crate::store::atomic::{self, AtomicDir};
use crate::store::card::ModelCard;
use crate::store::hfdir;
use crate::store::safetensors::{SafetensorsTensor, ShardedWriter};
use crate::store::{Container, DType, Model, StoreError, TensorInfo};

/// The checkpoint layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// AutoGPTQ / GPTQModel v1 (`checkpoint_format: gptq`): qweight,
    /// qzeros (zero − 1), scales (f16), g_idx.
    Gptq,
    /// AutoAWQ GEMM (`version: gemm`): qweight and qzeros packed along the
    /// outputs, true zeros, f16 scales.
    Awq,
    /// compressed-tensors `pack-quantized`, as llm-compressor writes it.
    CompressedTensors,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Gptq => "gptq",
            Format::Awq => "awq",
            Format::CompressedTensors => "compressed-tensors",
        }
    }
}

/// What every quantized projection shares.
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    pub bits: u8,
    /// Columns per group; `None`: one group per row.
    pub group_size: Option<usize>,
    pub sym: bool,
}

/// The projection tensors of every layer: `[layer][part]`.
pub fn projections(model: &Model, layers: usize) -> Vec<Vec<(LayerPart, &TensorInfo)>> {
    let mut out = vec![Vec::new(); layers];
    for t in model.tensors() {
        if let Role::Layer(i, p) = arch::role(&t.name) {
            if p.is_projection() && (i as usize) < layers {
                out[i as usize].push((p, t));
            }
        }
    }
    out
}

/// Reads a weight as f32, refusing NaN and Inf (named).
pub fn read_weight(model: &Model, t: &TensorInfo) -> Result<Vec<f32>, StoreError> {
    let x = model.read_rows_f32(t, 0..t.rows())?;
    StoreError::check_finite(&t.name, 0, &x)?;
    model.release(t);
    Ok(x)
}

/// `model.layers.0.self_attn.q_proj` of `model.layers.0.self_attn.q_proj.weight`.
pub fn module_of(t: &TensorInfo) -> &str {
    t.name.strip_suffix(".weight").unwrap_or(&t.name)
}

/// Projections left unquantized, by layer and part.
pub type Kept = HashSet<(usize, LayerPart)>;

/// The projections the scheme cannot pack (their input width is not a
/// multiple of the group size or of the codes per word; for GPTQ and AWQ
/// also their output width), by layer and part, refused unless `allow`.
/// Returns them with a warning when allowed.
pub fn unpackable(
    model: &Model,
    parts: &[Vec<(LayerPart, &TensorInfo)>],
    format: Format,
    scheme: Scheme,
    allow: bool,
) -> Result<(Kept, Vec<String>), Error> {
    let per = 32 / usize::from(scheme.bits);
    let mut keep = HashSet::new();
    let mut unfit: Vec<String> = Vec::new();
    for (li, ps) in parts.iter().enumerate() {
        for &(part, t) in ps {
            crate::ops::quantize::bnb::require_float(t)?;
            let (rows, cols) = (t.rows() as usize, t.row_len() as usize);
            let group_ok = scheme.group_size.is_none_or(|g| cols % g == 0);
            let pack_ok = match format {
                Format::Gptq => cols % per == 0 && rows % per == 0,
                Format::Awq => rows % per == 0,
                Format::CompressedTensors => cols % per == 0,
            };
            if !(group_ok && pack_ok) {
                keep.insert((li, part));
                unfit.push(format!("{} [{rows}, {cols}]", module_of(t)));
            }
        }
    }
    if unfit.is_empty() {
        return Ok((keep, Vec::new()));
    }
    if !allow {
        let g = scheme.group_size.map_or(-1, |g| g as i64);
        let shown_list = if unfit.len() > 6 {
            format!("{} and {} more", unfit[..6].join(", "), unfit.len() - 6)
        } else {
            unfit.join(", ")
        };
        let packs = match format {
            Format::Gptq => format!("inputs and outputs must also be multiples of {per} to pack"),
            Format::Awq => format!("outputs must also be multiples of {per} to pack"),
            Format::CompressedTensors => format!("inputs must also be multiples of {per} to pack"),
        };
        return Err(Error::Refused(format!(
            "{}: group size {g} does not divide the input width of {shown_list} ({packs}); choose a --group-size that divides every input width (e.g. 64 or 32 for a hidden size of 576), or pass --allow-unquantized to keep those layers in their dtype",
            model.root.display()
        )));
    }
    let warning = format!(
        "{} projections stay unquantized (--allow-unquantized): {}",
        unfit.len(),
        unfit.join(", ")
    );
    Ok((keep, vec![warning]))
}

/// The output's tensors in writing order: non-layer tensors first, then
/// each layer's (a pipeline finishes layers in order).
pub struct Plan<'m> {
    pub head: Vec<&'m TensorInfo>,
    pub per_layer: Vec<Vec<&'m TensorInfo>>,
    pub tensors: Vec<SafetensorsTensor>,
    /// Modules kept in their dtype.
    pub kept: Vec<String>,
    /// Projections quantized.
    pub quantized: usize,
    /// Parameters of the largest layer's projections.
    pub layer_params: u64,
    pub scale_dtype: DType,
}

impl<'m> Plan<'m> {
    pub fn new(
        model: &'m Model,
        parts: &[Vec<(LayerPart, &'m TensorInfo)>],
        keep: &Kept,
        format: Format,
        scheme: Scheme,
    ) -> Plan<'m> {
        let layers = parts.len();
        let scale_dtype = match format {
            Format::Gptq | Format::Awq => DType::F16,
            Format::CompressedTensors => parts
                .iter()
                .flatten()
                .next()
                .map_or(DType::F16, |(_, t)| t.dtype),
        };
        let mut head: Vec<&TensorInfo> = Vec::new();
        let mut per_layer: Vec<Vec<&TensorInfo>> = vec![Vec::new(); layers];
        for t in model.tensors() {
            match arch::role(&t.name) {
                Role::Layer(i, _) if (i as usize) < layers => per_layer[i as usize].push(t),
                _ => head.push(t),
            }
        }
        let mut tensors: Vec<SafetensorsTensor> =
            head.iter().map(|t| SafetensorsTensor::from(*t)).collect();
        let (mut kept, mut quantized, mut layer_params) = (Vec::new(), 0, 0u64);
        for (li, ts) in per_layer.iter().enumerate() {
            let mut params = 0;
            for t in ts {
                let Some(&(part, _)) = parts[li].iter().find(|(_, p)| std::ptr::eq(*p, *t)) else {
                    tensors.push(SafetensorsTensor::from(*t));
                    continue;
                };
                params += t.numel();
                if keep.contains(&(li, part)) {
                    kept.push(module_of(t).to_string());
                    tensors.push(SafetensorsTensor::from(*t));
                } else {
                    quantized += 1;
                    tensors.extend(packed_tensors(
                        format,
                        module_of(t),
                        t.rows(),
                        t.row_len(),
                        scheme,
                        scale_dtype,
                    ));
                }
            }
            layer_params = layer_params.max(params);
        }
        Plan {
            head,
            per_layer,
            tensors,
            kept,
            quantized,
            layer_params,
            scale_dtype,
        }
    }
}

/// The tensors a packed projection becomes, in the order the packers of
/// [`int4pack`] return them.
fn packed_tensors(
    format: Format,
    module: &str,
    rows: u64,
    cols: u64,
    scheme: Scheme,
    scale_dtype: DType,
) -> Vec<SafetensorsTensor> {
    let per = 32 / u64::from(scheme.bits);
    let groups = scheme.group_size.map_or(1, |g| cols / g as u64);
    let t = |suffix: &str, dtype, shape: Vec<u64>| SafetensorsTensor {
        name: format!("{module}.{suffix}"),
        dtype,
        shape,
    };
    match format {
        Format::Gptq => vec![
            t("qweight", DType::I32, vec![cols / per, rows]),
            t("qzeros", DType::I32, vec![groups, rows / per]),
            t("scales", scale_dtype, vec![groups, rows]),
            t("g_idx", DType::I32, vec![cols]),
        ],
        Format::Awq => vec![
            t("qweight", DType::I32, vec![cols, rows / per]),
            t("qzeros", DType::I32, vec![groups, rows / per]),
            t("scales", scale_dtype, vec![groups, rows]),
        ],
        Format::CompressedTensors => {
            let mut v = vec![
                t("weight_packed", DType::I32, vec![rows, cols / per]),
                t("weight_scale", scale_dtype, vec![rows, groups]),
                t("weight_shape", DType::I64, vec![2]),
            ];
            if !scheme.sym {
                v.push(t(
                    "weight_zero_point",
                    DType::I32,
                    vec![rows.div_ceil(per), groups],
                ));
            }
            v
        }
    }
}

/// Packs one projection's codes in `format` and writes its tensors.
pub fn write_packed(
    w: &mut ShardedWriter,
    model: &Model,
    t: &TensorInfo,
    codes: &IntWeights<'_>,
    format: Format,
    sym: bool,
    scale_dtype: DType,
) -> Result<(), Error> {
    let tensors = match format {
        Format::Gptq => int4pack::pack_gptq(codes, false),
        Format::Awq => int4pack::pack_awq(codes),
        Format::CompressedTensors => int4pack::pack_compressed(codes, sym),
    }
    .map_err(|e| {
        Error::Refused(format!(
            "{}: tensor '{}': {e}",
            model.root.display(),
            t.name
        ))
    })?;
    for p in tensors {
        let name = format!("{}.{}", module_of(t), p.suffix);
        w.write_tensor(&name, &packed_bytes(&p.data, scale_dtype))?;
    }
    Ok(())
}

/// Little-endian bytes of a packed tensor, scales in `scale_dtype`.
fn packed_bytes(data: &Data, scale_dtype: DType) -> Vec<u8> {
    match data {
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Scales(v) => {
            let mut out = Vec::new();
            scale_dtype.encode_f32s(v, &mut out);
            out
        }
    }
}

/// `quantization_config` of a compressed-tensors checkpoint, as
/// llm-compressor 0.14 / compressed-tensors 0.19 write it for a W4A16-style
/// group scheme (`act_order`: llm-compressor's `actorder="weight"`).
pub fn compressed_tensors_config(
    scheme: Scheme,
    act_order: bool,
    kept: &[String],
) -> serde_json::Value {
    let mut ignore = vec!["lm_head".to_string()];
    ignore.extend(kept.iter().cloned());
    serde_json::json!({
        "config_groups": {"group_0": {
            "format": "pack-quantized",
            "input_activations": null,
            "output_activations": null,
            "targets": ["Linear"],
            "weights": {
                "actorder": if act_order { serde_json::json!("weight") } else { serde_json::Value::Null },
                "block_structure": null,
                "dynamic": false,
                "group_size": scheme.group_size,
                "num_bits": scheme.bits,
                "observer": "minmax",
                "observer_kwargs": {},
                "scale_dtype": null,
                "strategy": if scheme.group_size.is_some() { "group" } else { "channel" },
                "symmetric": scheme.sym,
                "type": "int",
                "zp_dtype": null,
            },
        }},
        "format": "pack-quantized",
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": "0.19.0",
    })
}

/// Refuses what no calibrated quantization can start from (a GGUF, a model
/// without config.json, quantized or broken weights); returns config.json.
pub fn check_input(model: &Model, command: &str) -> Result<serde_json::Value, Error> {
    let shown = model.root.display();
    if model.container != Container::Safetensors {
        return Err(Error::Refused(format!(
            "{shown}: {command} needs a Hugging Face safetensors model (got a GGUF); convert it first: `llmtool convert {shown} --out DIR`, then quantize DIR"
        )));
    }
    let Some(config) = model.config.clone() else {
        return Err(Error::Refused(format!(
            "{shown}: the model has no config.json; transformers and vLLM need one to load the checkpoint"
        )));
    };
    crate::model::check::weights(model, command)?;
    Ok(config)
}

/// Completes the output directory: config.json with `qconfig` as its
/// `quantization_config`, `qconfig` again in `side` (GPTQ's
/// `quantize_config.json`), the tokenizer and generation files, the model
/// card.
///
/// Then the finished checkpoint, read back from `dir` as any consumer
/// reads it, is measured against `model` on the held-out calibration
/// windows ([`eval::held_out_kld`]) into `written.held_out`, and `card`
/// makes the model card from the report so completed.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    dir: &AtomicDir,
    model: &Model,
    mut config: serde_json::Value,
    qconfig: &serde_json::Value,
    side: Option<&str>,
    opts: &Output,
    written: &mut Written,
    card: &dyn Fn(&Written) -> String,
) -> Result<(), Error> {
    config["quantization_config"] = qconfig.clone();
    hfdir::write_config(dir.path(), &hfdir::sort_keys(config))?;
    if let Some(name) = side {
        let body = serde_json::to_string_pretty(qconfig).expect("JSON value") + "\n";
        atomic::write_file(&dir.path().join(name), body.as_bytes())?;
    }
    hfdir::copy_side_files(model, dir.path())?;
    let held_out = &written.calibration.held_out_windows;
    if !held_out.is_empty() {
        let quantized = Model::open(&dir.path().to_string_lossy())?;
        let bos = Text::load(model, None)?.bos_for(model)?;
        written.held_out = Some(eval::held_out_kld(
            &Engine::new(model)?,
            &Engine::new(&quantized)?,
            held_out,
            bos,
            opts.batch_tokens,
            opts.progress,
        )?);
    }
    atomic::write_file(&dir.path().join("README.md"), card(written).as_bytes())?;
    Ok(())
}

/// The options of a calibrated quantization that are not the algorithm's.
pub struct Output {
    /// Output directory (must not exist, or be empty).
    pub out: PathBuf,
    pub format: Format,
    pub calibration: calibration::Options,
    /// Keep projections the scheme cannot pack instead of refusing.
    pub allow_unquantized: bool,
    pub max_shard_size: u64,
    /// Tokens per layer pass (memory of one batch of activations).
    pub batch_tokens: usize,
    /// The command line, recorded in the model card.
    pub command: String,
    /// What the user named the model, for the model card.
    pub model_label: String,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl Output {
    /// Defaults: bundled calibration (128 × 512 tokens), 5GB shards, 4096
    /// tokens per pass, no progress bars.
    pub fn new(out: PathBuf, format: Format) -> Output {
        Output {
            out,
            format,
            calibration: calibration::Options::default(),
            allow_unquantized: false,
            max_shard_size: crate::store::safetensors::DEFAULT_MAX_SHARD_SIZE,
            batch_tokens: 4096,
            command: String::new(),
            model_label: String::new(),
            progress: false,
        }
    }
}

/// What a pipeline will hold in memory and roughly how much work it is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Estimate {
    /// Hidden states of every window (f32).
    pub hidden_state_bytes: u64,
    /// One layer's working set: statistics, weights, activations.
    pub layer_bytes: u64,
    /// Both, plus the weights the memory map touches for one layer.
    pub peak_bytes: u64,
    /// Multiply-adds.
    pub flops: f64,
}

/// What a calibrated quantization wrote (or, on a dry run, would write).
#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub out: PathBuf,
    pub format: Format,
    pub calibration: Calibration,
    pub layers: usize,
    /// Projections quantized.
    pub quantized: usize,
    /// Projections kept in their dtype (`--allow-unquantized`).
    pub kept: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// Bytes of tensor data read.
    pub source_bytes: u64,
    pub files: Vec<String>,
    pub quantization_config: serde_json::Value,
    pub estimate: Estimate,
    pub warnings: Vec<String>,
    /// The checkpoint against its base on the held-out calibration
    /// windows (none on a dry run or when the text had none left).
    pub held_out: Option<KldReport>,
}

impl Written {
    /// The report of `plan` before anything is written: checks the
    /// destination, sizes the shards and, for a dry run, lists the files
    /// (`side`: an extra config file).
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        model: &Model,
        opts: &Output,
        plan: &Plan<'_>,
        calibration: Calibration,
        quantization_config: serde_json::Value,
        estimate: Estimate,
        side: Option<&str>,
        warnings: Vec<String>,
    ) -> Result<Written, Error> {
        AtomicDir::check_dest(&opts.out)?;
        let files = ShardedWriter::create(
            &opts.out,
            plan.tensors.clone(),
            opts.max_shard_size,
            BTreeMap::new(),
        )?;
        let mut names = files.file_names();
        names.extend(["README.md", "config.json"].map(String::from));
        names.extend(side.map(String::from));
        names.sort();
        Ok(Written {
            out: opts.out.clone(),
            format: opts.format,
            calibration,
            layers: plan.per_layer.len(),
            quantized: plan.quantized,
            kept: plan.kept.clone(),
            tensors: plan.tensors.len(),
            bytes: files.total_size(),
            source_bytes: model.tensors().iter().map(|t| t.len).sum(),
            files: names,
            quantization_config,
            estimate,
            warnings,
            held_out: None,
        })
    }

    /// Starts the real write: the temporary directory and its writer, with
    /// the non-layer tensors copied.
    pub fn start(
        &self,
        model: &Model,
        opts: &Output,
        plan: &Plan<'_>,
    ) -> Result<(AtomicDir, ShardedWriter), Error> {
        let tmp = AtomicDir::create(&opts.out)?;
        let mut w = ShardedWriter::create(
            tmp.path(),
            plan.tensors.clone(),
            opts.max_shard_size,
            BTreeMap::new(),
        )?;
        for t in &plan.head {
            w.copy_tensor(model, t)?;
        }
        Ok((tmp, w))
    }
}

/// The model card of a calibrated checkpoint: `method` (`GPTQ`, `AWQ`),
/// its `settings` in words, and what else it changed (`note`).
pub fn model_card(
    o: &Output,
    w: &Written,
    method: &str,
    bits: u8,
    settings: &str,
    note: &str,
) -> String {
    let c = &w.calibration;
    let label = &o.model_label;
    let format = o.format.name();
    let (method_tag, bits_tag) = (method.to_lowercase(), format!("{bits}-bit"));
    let mut tags = vec!["llmtool", &method_tag, &bits_tag];
    if format != method_tag {
        tags.push(format);
    }
    ModelCard::new()
        .text("base_model", label)
        .field("base_model_relation", "quantized")
        .field("library_name", "transformers")
        .field("pipeline_tag", "text-generation")
        .list("tags", &tags)
        .body(&format!(
            "# {label} ({method} {bits}-bit, {format})\n\n`{label}` quantized with {method} by llmtool {}: {settings}. \
             {} projections quantized; kept in their original dtype: {}; {note}\n\n\
             Calibration: {} windows of {} tokens (seed {}) from {}, {} tokens available.\n\n{}",
            env!("CARGO_PKG_VERSION"),
            w.quantized,
            if w.kept.is_empty() { "none".to_string() } else { w.kept.join(", ") },
            c.samples,
            c.seqlen,
            c.seed,
            c.source,
            c.tokens_available,
            quality(w),
        ))
        .made_with(&o.command)
        .render()
}

/// The card's quality section: the held-out measurement, or why there is
/// none.
fn quality(w: &Written) -> String {
    let Some(r) = &w.held_out else {
        return "Quality: not measured here (no held-out calibration text: the text was used up \
                by the calibration windows, the windows were given as ids, or \
                `--held-out-samples 0`); measure it with `llmtool eval ppl` and `llmtool eval kld`.\n\n"
            .to_string();
    };
    format!(
        "## Quality against the base model\n\n\
         Measured by llmtool on {} windows of the calibration text that calibration did not see \
         ({} tokens each, the second half of each scored as llama-perplexity does, {} tokens), \
         this checkpoint read back as its consumers read it:\n\n\
         | | base | this checkpoint |\n|---|---|---|\n\
         | perplexity | {:.4} | {:.4} ({:+.2} %) |\n\
         | mean KL divergence from the base | | {:.5} ± {:.5} |\n\
         | top-1 token agreement with the base | | {:.2} % |\n\n",
        r.chunks,
        r.ctx,
        r.scored,
        r.ppl_base,
        r.ppl_other,
        (r.ppl_other / r.ppl_base - 1.0) * 100.0,
        r.kld_mean,
        r.kld_error,
        r.top1_agreement * 100.0,
    )
}
