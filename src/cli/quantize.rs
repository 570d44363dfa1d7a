//! `llmtool quantize FORMAT MODEL --out OUT`: arguments → a
//! [`quantize::Job`] → [`quantize::run`].

use anyhow::{Context, Result};

use super::args::{self, DTypeArg, ShardArg, WriteArgs};
use super::output::{self, WrittenLine};
use crate::ops::calibration;
use crate::ops::quantize::awq::AwqOptions;
use crate::ops::quantize::bnb::{self, BnbOptions};
use crate::ops::quantize::gguf::GgufOptions;
use crate::ops::quantize::gptq::GptqOptions;
use crate::ops::quantize::int_checkpoint::{Format, Output, Written};
use crate::ops::quantize::{self, GgufTokenizer, Job, Report, Target};
use crate::quant::awq::AwqConfig;
use crate::quant::gptq::GptqConfig;
use crate::store::{card, Model};
use crate::units::human_bytes;

/// Quantize a model into a deployable artifact, without a GPU.
///
/// nf4, fp4, int8: a bitsandbytes checkpoint (Hugging Face directory)
/// that transformers and vLLM load pre-quantized, bit-identical to what
/// bitsandbytes produces on CPU. Every Linear layer but the output head
/// (and --skip patterns) is quantized; other tensors are copied.
///
/// GGUF formats (q4_k_m, q5_k_m, q6_k, q8_0, q4_0, f16, bf16, f32) read a Hugging Face model (llama,
/// mistral, qwen2) or an F32/F16/BF16 GGUF and write a llama.cpp-ready
/// GGUF in one streaming pass: tensor names, Q/K permutation, metadata
/// and tokenizer as llama.cpp's converter writes them, and llama-quantize's
/// per-tensor type choices. The file appears only when complete.
///
/// gptq: calibrated GPTQ (4- or 8-bit) made layer by layer on the CPU: each
/// decoder layer runs on the calibration windows, its projections are
/// quantized from the Hessians of their inputs, and the quantized layer
/// feeds the next. Writes a GPTQ v1 checkpoint (or compressed-tensors
/// pack-quantized with --format) that vLLM and transformers load.
///
/// awq: activation-aware int4 (AutoAWQ's algorithm as llm-compressor runs
/// it) made layer by layer on the CPU: per-channel scales searched on the
/// calibration windows and folded into the norms and previous linears, a
/// clipping search, then zero-point int4 codes. Writes an AutoAWQ GEMM
/// checkpoint (or compressed-tensors with --format).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool quantize q4_k_m ./spinoza-merged --out spinoza-Q4_K_M.gguf\n  \
    llmtool quantize q8_0 model-f16.gguf --out model-Q8_0.gguf\n  \
    llmtool quantize f16 ./Qwen2.5-7B-Instruct --out qwen2.5-7b-f16.gguf\n  \
    llmtool quantize bf16 ./spinoza-merged --out spinoza-bf16.gguf --dry-run --json\n  \
    llmtool quantize nf4 Qwen/Qwen2.5-14B-Instruct --out ./qwen14b-nf4\n  \
    llmtool quantize int8 ./merged --out ./merged-int8 --skip mlp.down_proj\n  \
    llmtool quantize gptq ./spinoza-merged --out ./spinoza-gptq\n  \
    llmtool quantize gptq ./spinoza-merged --out ./spinoza-gptq --calib train.jsonl --desc-act\n  \
    llmtool quantize gptq ./smollm2 --out ./smollm2-w4 --group-size 64 --format compressed-tensors --dry-run --json\n  \
    llmtool quantize awq ./spinoza-merged --out ./spinoza-awq\n  \
    llmtool quantize awq ./smollm2 --out ./smollm2-awq --group-size 64 --format compressed-tensors --calib chats.jsonl")]
pub struct Args {
    /// Output format.
    #[arg(value_parser = format_parser())]
    format: String,
    /// HF model directory, Hub repo id (downloaded into the HF cache), catalog name, or a float GGUF.
    model: String,
    /// Output: a .gguf file for GGUF formats, a directory for bitsandbytes ones.
    #[arg(short = 'o', long)]
    out: std::path::PathBuf,
    /// GGUF: general.name in the GGUF (default: the model directory's name).
    #[arg(long)]
    name: Option<String>,
    /// GGUF: tokenizer.ggml.pre for a byte-level BPE tokenizer whose pre-tokenizer llama.cpp's table does not know (e.g. llama-bpe, qwen2, smollm).
    #[arg(long)]
    pre: Option<String>,
    /// GGUF: take the tokenizer.* metadata from this GGUF instead of the model's tokenizer files (e.g. the file a model was converted from).
    #[arg(long, conflicts_with = "pre")]
    tokenizer_from: Option<String>,
    /// bitsandbytes: modules to keep unquantized besides lm_head, as
    /// transformers matches llm_int8_skip_modules: a last name component
    /// (down_proj), a full module name, or a prefix path (model.layers.0). Repeatable.
    #[arg(long)]
    skip: Vec<String>,
    /// nf4/fp4: block size (32, 64, …, 4096).
    #[arg(long, default_value_t = bnb::DEFAULT_BLOCKSIZE)]
    blocksize: usize,
    /// nf4/fp4: keep the block maxima in float32 instead of quantizing them to 8 bits.
    #[arg(long)]
    no_double_quant: bool,
    /// nf4/fp4: dtype of the matmuls at inference (bnb_4bit_compute_dtype); default: the weights' dtype.
    #[arg(long, value_enum)]
    compute_dtype: Option<DTypeArg>,
    /// nf4/fp4 double quant: torch thread count whose mean of the block maxima
    /// to reproduce for layers of 32768+ blocks (bitsandbytes' offset depends
    /// on it); default: this machine's cores, torch's default.
    #[arg(long)]
    torch_threads: Option<usize>,
    #[command(flatten)]
    calibrated: CalibratedArgs,
    #[command(flatten)]
    shard: ShardArg,
    #[command(flatten)]
    write: WriteArgs,
}

/// Options of `quantize gptq` and `quantize awq`.
#[derive(clap::Args)]
#[command(next_help_heading = "GPTQ and AWQ")]
struct CalibratedArgs {
    /// gptq/awq: checkpoint layout: gptq (AutoGPTQ/GPTQModel v1; gptq's default), awq (AutoAWQ GEMM; awq's default) or compressed-tensors (llm-compressor's pack-quantized). vLLM and transformers load all three.
    #[arg(long = "format", value_enum)]
    layout: Option<LayoutArg>,
    /// gptq/awq: bits per weight (gptq: 4 or 8; awq: 4).
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// gptq/awq: input columns per scale group: 32, 64, 128 (or -1, one group per row, for gptq).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    group_size: i64,
    /// gptq/awq: calibration text: plain text, or JSONL (*.jsonl) with `text` or chat `messages` per line, or JSON token ids {"ids": [[…], …]} (default: the bundled corpus).
    #[arg(long)]
    calib: Option<std::path::PathBuf>,
    /// gptq/awq: calibration windows.
    #[arg(long, default_value_t = calibration::DEFAULT_SAMPLES)]
    calib_samples: usize,
    /// gptq/awq: tokens per calibration window.
    #[arg(long, default_value_t = calibration::DEFAULT_SEQLEN)]
    calib_seqlen: usize,
    /// gptq/awq: seed of the window draw.
    #[arg(long, default_value_t = calibration::DEFAULT_SEED)]
    calib_seed: u64,
    /// gptq/awq: more windows of the calibration text, kept out of calibration, on which the finished checkpoint is measured against the base (perplexity, KL divergence, top-1) for the report and the model card; 0 skips it. Fewer are used when the text runs out; none with an ids file.
    #[arg(long, default_value_t = calibration::DEFAULT_HELD_OUT)]
    held_out_samples: usize,
    /// gptq/awq: write the drawn windows' token ids to FILE as {"ids": calibration, "held_out": held-out} (also with --dry-run): `--calib FILE` gives another tool, or another run, the same calibration, and `eval ppl|kld --ids FILE` scores the held-out windows.
    #[arg(long, value_name = "FILE")]
    save_windows: Option<std::path::PathBuf>,
    /// gptq/awq: keep layers whose shape the group size or the packing does not fit in their dtype instead of refusing.
    #[arg(long)]
    allow_unquantized: bool,
    /// gptq: process columns by descending Hessian diagonal (act-order); groups keep their natural columns, so g_idx stays trivial.
    #[arg(long, alias = "act-order")]
    desc_act: bool,
    /// gptq: plain column order instead of group-aware act-order (GPTQModel's act_group_aware, its default: columns by descending Hessian diagonal inside each group, groups by their largest; g_idx stays trivial).
    #[arg(long)]
    no_group_aware: bool,
    /// gptq: plain round-to-nearest with min-max group scales instead of GPTQ, in the same layouts: the baseline GPTQ is measured against (fast: no calibration pass; the held-out measurement still runs).
    #[arg(long)]
    rtn: bool,
    /// gptq: asymmetric codes with a zero point per group (vLLM then cannot use Marlin).
    #[arg(long)]
    asym: bool,
    /// gptq: each group's scale from its original weights (llm-compressor's observer, GPTQModel's static_groups) instead of from the weights as GPTQ has updated them when it reaches the group's lazy block (GPTQModel's default); always so with --desc-act.
    #[arg(long)]
    static_groups: bool,
    /// gptq: damp fraction of mean(diag H) added to the Hessian; raised by 0.01 while Cholesky fails.
    #[arg(long)]
    damp: Option<f32>,
    /// gptq: capture each layer's inputs once, with its original weights (llm-compressor), instead of after each group [q,k,v], [o], [gate,up], [down] is quantized (GPTQModel).
    #[arg(long)]
    no_true_sequential: bool,
    /// awq: symmetric codes without zero points (compressed-tensors only; AWQ GEMM kernels need zero points).
    #[arg(long)]
    no_zero_point: bool,
    /// awq: grid points of the scale search (AutoAWQ's n_grid).
    #[arg(long)]
    n_grid: Option<usize>,
    /// awq: skip the clipping search after scaling (llm-compressor's AWQ has none; AutoAWQ's apply_clip=False).
    #[arg(long)]
    no_clip: bool,
    /// awq: scales from activations alone (AutoAWQ's duo_scaling=False).
    #[arg(long)]
    no_duo_scaling: bool,
}

impl CalibratedArgs {
    fn group_size(&self) -> Result<Option<usize>> {
        match self.group_size {
            -1 => Ok(None),
            n if n > 0 => Ok(Some(n as usize)),
            n => anyhow::bail!("--group-size {n}: use a positive group size or -1"),
        }
    }

    /// Everything but the algorithm; `default` is the layout without --format.
    fn output(&self, a: &Args, m: &Model, default: Format) -> Output {
        Output {
            format: self.layout.map_or(default, Format::from),
            calibration: calibration::Options {
                source: self
                    .calib
                    .clone()
                    .map_or(calibration::Source::Bundled, calibration::Source::File),
                samples: self.calib_samples,
                seqlen: self.calib_seqlen,
                seed: self.calib_seed,
                held_out: self.held_out_samples,
                save: self.save_windows.clone(),
            },
            allow_unquantized: self.allow_unquantized,
            max_shard_size: a.shard.max_shard_size,
            command: args::command_line(),
            model_label: card::base_model_id(&a.model, &m.root),
            progress: !a.write.json,
            ..Output::new(a.out.clone(), default)
        }
    }

    /// Refuses the flags of the other algorithm, which would do nothing.
    fn only(&self, method: &str, others: &[(bool, &str)]) -> Result<()> {
        if let Some((_, flag)) = others.iter().find(|(set, _)| *set) {
            anyhow::bail!("{flag} does not apply to quantize {method}");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Gptq,
    Awq,
    CompressedTensors,
}

impl From<LayoutArg> for Format {
    fn from(l: LayoutArg) -> Format {
        match l {
            LayoutArg::Gptq => Format::Gptq,
            LayoutArg::Awq => Format::Awq,
            LayoutArg::CompressedTensors => Format::CompressedTensors,
        }
    }
}

/// `FORMAT`'s values: [`quantize::FORMATS`] and their aliases.
fn format_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(quantize::FORMATS.iter().map(|f| {
        clap::builder::PossibleValue::new(f.name)
            .help(f.help)
            .aliases(f.alias)
    }))
}

fn gptq_options(a: &Args, m: &Model) -> Result<GptqOptions> {
    let g = &a.calibrated;
    g.only(
        "gptq",
        &[
            (g.no_zero_point, "--no-zero-point"),
            (g.n_grid.is_some(), "--n-grid"),
            (g.no_clip, "--no-clip"),
            (g.no_duo_scaling, "--no-duo-scaling"),
        ],
    )?;
    let defaults = GptqConfig::default();
    Ok(GptqOptions {
        output: g.output(a, m, Format::Gptq),
        algorithm: GptqConfig {
            bits: g.bits,
            group_size: g.group_size()?,
            sym: !g.asym,
            act_order: g.desc_act,
            group_aware: !g.no_group_aware,
            damp: g.damp.unwrap_or(defaults.damp),
            static_groups: g.static_groups,
            ..defaults
        },
        true_sequential: !g.no_true_sequential,
        round_to_nearest: g.rtn,
    })
}

fn awq_options(a: &Args, m: &Model) -> Result<AwqOptions> {
    let g = &a.calibrated;
    g.only(
        "awq",
        &[
            (g.desc_act, "--desc-act"),
            (
                g.asym,
                "--asym (AWQ has zero points unless --no-zero-point)",
            ),
            (g.damp.is_some(), "--damp"),
            (g.no_true_sequential, "--no-true-sequential"),
            (g.static_groups, "--static-groups"),
            (g.no_group_aware, "--no-group-aware"),
            (g.rtn, "--rtn"),
        ],
    )?;
    let defaults = AwqConfig::default();
    let Some(group_size) = g.group_size()? else {
        anyhow::bail!("--group-size -1: AWQ needs groups (32, 64 or 128)");
    };
    Ok(AwqOptions {
        output: g.output(a, m, Format::Awq),
        algorithm: AwqConfig {
            bits: g.bits,
            group_size,
            zero_point: !g.no_zero_point,
            n_grid: g.n_grid.unwrap_or(defaults.n_grid),
            duo_scaling: !g.no_duo_scaling,
            clip: !g.no_clip,
        },
    })
}

pub fn run(a: Args) -> Result<()> {
    let m = super::remote::open(&a.model)?;
    let progress = !a.write.json;
    let target = quantize::format(&a.format)
        .expect("clap checked the name")
        .target;
    let job = match target {
        Target::Gguf(ftype) => Job::Gguf {
            ftype,
            tokenizer: match &a.tokenizer_from {
                Some(t) => GgufTokenizer::FromGguf(Box::new(
                    super::remote::open(t).with_context(|| format!("--tokenizer-from '{t}'"))?,
                )),
                None => GgufTokenizer::FromModel { pre: a.pre },
            },
            options: GgufOptions {
                out: a.out,
                name: a.name,
                progress,
            },
        },
        Target::Awq => Job::Awq(Box::new(awq_options(&a, &m)?)),
        Target::Gptq => Job::Gptq(Box::new(gptq_options(&a, &m)?)),
        Target::Bnb(format) => {
            let defaults = BnbOptions::new(a.out);
            Job::Bnb {
                format,
                options: Box::new(BnbOptions {
                    torch_threads: a.torch_threads.unwrap_or(defaults.torch_threads),
                    blocksize: a.blocksize,
                    double_quant: !a.no_double_quant,
                    compute_dtype: a.compute_dtype.map(Into::into),
                    skip: a.skip,
                    max_shard_size: a.shard.max_shard_size,
                    command: args::command_line(),
                    model_label: card::base_model_id(&a.model, &m.root),
                    progress,
                    ..defaults
                }),
            }
        }
    };
    let report = quantize::run(&m, &job, a.write.dry_run)?;
    output::emit_written(report, a.write)
}

impl WrittenLine for Report {
    fn warnings(&self) -> &[String] {
        match self {
            Report::Gguf(r) => &r.warnings,
            Report::Bnb(_) => &[],
            Report::Gptq(r) => &r.written.warnings,
            Report::Awq(r) => &r.written.warnings,
        }
    }
    fn line(&self, verb: &str) -> String {
        match self {
            Report::Gguf(r) => {
                let types: Vec<String> = r.types.iter().map(|(k, n)| format!("{n} {k}")).collect();
                format!(
                    "{} {}: {} tensors ({}), {}\n",
                    verb,
                    r.out.display(),
                    r.tensors,
                    types.join(", "),
                    human_bytes(r.bytes),
                )
            }
            Report::Bnb(r) => format!(
                "{} {}: {} Linear layers quantized, {} kept ({}), {} → {}; files: {}\n",
                verb,
                r.out.display(),
                r.quantized,
                r.kept.len(),
                r.kept.join(", "),
                human_bytes(r.source_bytes),
                human_bytes(r.bytes),
                r.files.join(", ")
            ),
            Report::Gptq(r) => calibrated_line(
                verb,
                &format!(
                    "{} {}-bit group {}",
                    if r.round_to_nearest { "RTN" } else { "GPTQ" },
                    r.bits,
                    r.group_size
                ),
                &r.written,
            ),
            Report::Awq(r) => calibrated_line(
                verb,
                &format!("AWQ 4-bit group {}", r.group_size),
                &r.written,
            ),
        }
    }
}

/// The summary line of `quantize gptq` / `quantize awq`.
fn calibrated_line(verb: &str, method: &str, r: &Written) -> String {
    let mut line = format!(
        "{} {}: {} projections {method} ({}), {} kept; calibration {} × {} tokens; {} → {}; files: {}\n",
        verb,
        r.out.display(),
        r.quantized,
        r.format.name(),
        r.kept.len(),
        r.calibration.samples,
        r.calibration.seqlen,
        human_bytes(r.source_bytes),
        human_bytes(r.bytes),
        r.files.join(", ")
    );
    if let Some(h) = &r.held_out {
        line += &format!(
            "held out ({} windows, {} scored tokens): perplexity {:.4} (base {:.4}, {:+.2} %), mean KL divergence {:.5}, top-1 agreement {:.2} %\n",
            h.chunks,
            h.scored,
            h.ppl_other,
            h.ppl_base,
            (h.ppl_other / h.ppl_base - 1.0) * 100.0,
            h.kld_mean,
            h.top1_agreement * 100.0
        );
    }
    line
}
