//! The `llmtool` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use llmtool::convert::to_hf;
use llmtool::lora::Adapter;
use llmtool::merge::{self, MergeOptions, WeightedAdapter};
use llmtool::store::safetensors::parse_size;
use llmtool::{arch, engine, eval, inspect, interrupt, store};

/// From fine-tuned adapter to deployed artifact.
#[derive(Parser)]
#[command(name = "llmtool", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What a model really is, derived from its tensor shapes.
    ///
    /// MODEL is a Hugging Face model directory (config.json + model.safetensors
    /// or shards + model.safetensors.index.json), a single .safetensors, a
    /// .gguf (the first shard of a split GGUF names the whole model), or a
    /// Hub repo id (org/name[@revision]) already in the local Hugging Face
    /// cache ($HF_HUB_CACHE, else $HF_HOME/hub). Only headers are read.
    #[command(after_help = "Examples:\n  \
        llmtool inspect-arch ./Qwen2.5-14B-Instruct\n  \
        llmtool inspect-arch Qwen/Qwen2.5-14B-Instruct --json > arch.json\n  \
        llmtool inspect-arch SmolLM2-135M-Instruct.Q4_1.gguf --tensors")]
    InspectArch {
        /// Model directory, file, or cached repo id.
        model: String,
        /// Print the versioned architecture manifest as JSON (schema in docs/ARCH-MANIFEST.md).
        #[arg(long)]
        json: bool,
        /// Also list every tensor (name, dtype, shape, bytes, file).
        #[arg(long)]
        tensors: bool,
    },
    /// Convert a GGUF model to a Hugging Face safetensors directory.
    ///
    /// Dequantizes every tensor exactly as gguf-py does, puts the Q/K rows
    /// llama.cpp permutes back in Hugging Face order, and writes config.json,
    /// generation_config.json and the tokenizer (tokenizer.json,
    /// tokenizer_config.json with the chat template) rebuilt from the GGUF
    /// metadata. Supports llama (and Mistral) and qwen2 GGUFs.
    #[command(after_help = "Examples:\n  \
        llmtool convert SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf\n  \
        llmtool convert model-f16.gguf --out ./hf --dtype bf16 --max-shard-size 2GB\n  \
        llmtool convert model.gguf --out ./hf --dry-run --json")]
    Convert {
        /// The GGUF file (the first shard of a split GGUF).
        model: String,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Output dtype (default: the GGUF's float type, or f32 for quantized files, which keeps the dequantized values exactly).
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        dtype: Option<String>,
        /// Largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
        #[arg(long, default_value = "5GB")]
        max_shard_size: String,
        /// Check everything and print the plan without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// LoRA adapters: inspect them, merge them into their base.
    #[command(subcommand)]
    Lora(LoraCommand),
    /// Generate text with the built-in CPU engine, streamed to stdout.
    ///
    /// Runs llama, mistral and qwen2 models in f32 straight over their stored
    /// weights (f32, f16, bf16, GGUF Q4_0…Q8_0 and k-quants) without
    /// dequantizing the whole model. Prints prefill and decode tokens/s on
    /// stderr at the end. A GGUF model needs --tokenizer naming a Hugging Face
    /// directory with its tokenizer.json (`llmtool convert` makes one).
    #[command(after_help = "Examples:\n  \
        llmtool generate ./smollm2-hf --prompt 'The capital of France is' --max-tokens 32\n  \
        llmtool generate ./smollm2-hf --chat --prompt 'Write a haiku about Rust' --temp 0.7 --top-p 0.9 --seed 1\n  \
        llmtool generate model.Q4_K_M.gguf --tokenizer ./hf --prompt 'Hello' --threads 2")]
    Generate {
        /// Model directory, file, or cached repo id.
        model: String,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the model's chat template as one user turn.
        #[arg(long)]
        chat: bool,
        /// System message for --chat.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Tokens to generate at most (stops earlier at end-of-sequence).
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Sampling temperature; 0 is greedy.
        #[arg(long = "temp", default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus sampling: keep the most likely tokens up to this probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        run: RunArgs,
        /// Print the generation (tokens, text, speeds) as JSON instead of streaming.
        #[arg(long)]
        json: bool,
    },
    /// Measure a model's quality on a text: perplexity, KL divergence.
    #[command(subcommand)]
    Eval(EvalCommand),
}

/// Options shared by every command that runs the engine.
#[derive(clap::Args)]
struct RunArgs {
    /// Hugging Face directory (or tokenizer.json) holding the tokenizer; default: the model's directory.
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Chunking options shared by the evaluations.
#[derive(clap::Args)]
struct EvalArgs {
    /// Text file to evaluate on.
    #[arg(long)]
    text: std::path::PathBuf,
    /// Tokens per chunk (llama-perplexity's -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Perplexity on a text, computed the way llama-perplexity does.
    ///
    /// Tokenizes the whole text (with BOS when the tokenizer adds it), cuts it
    /// into chunks of --ctx tokens, starts each chunk with BOS, and scores the
    /// second half of every chunk. Numbers are comparable with llama.cpp's.
    #[command(after_help = "Examples:\n  \
        llmtool eval ppl ./smollm2-hf --text wiki.test.raw\n  \
        llmtool eval ppl model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --ctx 512 --json")]
    Ppl {
        /// Model directory, file, or cached repo id.
        model: String,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// KL divergence of OTHER's token distributions from BASE's, and top-1 agreement.
    ///
    /// Both models see the same chunks as `eval ppl`; per scored position the
    /// KL divergence KL(BASE || OTHER) is computed over the whole vocabulary.
    /// The two may be in any formats (e.g. an HF directory and a Q4_K_M GGUF)
    /// but must share the tokenizer, which is BASE's (or --tokenizer).
    #[command(after_help = "Examples:\n  \
        llmtool eval kld ./smollm2-hf model.Q4_K_M.gguf --text corpus.txt\n  \
        llmtool eval kld model-f16.gguf model.Q4_K_M.gguf --tokenizer ./hf --text corpus.txt --json")]
    Kld {
        /// The reference model.
        base: String,
        /// The model compared against it.
        other: String,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Subcommand)]
enum LoraCommand {
    /// Merge one or more PEFT LoRA adapters into a base model (W + Σ wᵢ·ΔWᵢ).
    ///
    /// Streams tensor by tensor: memory stays around one row chunk whatever
    /// the model size. The output is a Hugging Face directory (sharded
    /// safetensors, index, config, tokenizer files, a model card recording
    /// provenance), written under a temporary name and renamed when complete.
    #[command(after_help = "Examples:\n  \
        llmtool lora merge --base Qwen/Qwen2.5-14B-Instruct --adapter ./spinoza --out ./spinoza-merged\n  \
        llmtool lora merge --base ./base --adapter ./kant:0.7 --adapter ./hume:0.3 --out ./blend --dtype bf16\n  \
        llmtool lora merge --base ./base --adapter ./bergson --out ./m --dry-run --json")]
    Merge {
        /// Base model: HF directory, index, or cached repo id.
        #[arg(long)]
        base: String,
        /// PEFT adapter directory, optionally with a weight: PATH[:WEIGHT] (repeatable).
        #[arg(long = "adapter", required = true)]
        adapters: Vec<String>,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Output dtype (default: the base's).
        #[arg(long, value_parser = ["f32", "f16", "bf16"])]
        dtype: Option<String>,
        /// Largest shard, as transformers counts it (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰).
        #[arg(long, default_value = "5GB")]
        max_shard_size: String,
        /// Check everything and print the plan without writing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rank, alpha, scaling, targets, layers and size of a PEFT LoRA adapter.
    #[command(after_help = "Example:\n  llmtool lora inspect ./spinoza --json")]
    Inspect {
        /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
        adapter: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Splits `PATH[:WEIGHT]`; a suffix that is not a number stays in the path.
fn adapter_spec(s: &str) -> (std::path::PathBuf, f64) {
    match s.rsplit_once(':') {
        Some((p, w)) if !p.is_empty() => match w.parse::<f64>() {
            Ok(w) => (p.into(), w),
            Err(_) => (s.into(), 1.0),
        },
        _ => (s.into(), 1.0),
    }
}

fn parse_dtype(d: Option<String>) -> Option<store::DType> {
    d.map(|d| match d.as_str() {
        "f32" => store::DType::F32,
        "f16" => store::DType::F16,
        _ => store::DType::BF16,
    })
}

/// Sizes rayon's pool; called once, before any parallel work.
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    Ok(())
}

fn open_model(spec: &str) -> Result<store::Model> {
    store::Model::open(spec).with_context(|| format!("cannot open model '{spec}'"))
}

/// Opens the text file of an evaluation and tokenizes it, BOS in front when
/// llama.cpp would put it there for `model`.
fn eval_tokens(
    text: &engine::text::Text,
    model: &store::Model,
    e: &EvalArgs,
) -> Result<(Vec<u32>, Option<u32>)> {
    let raw = std::fs::read_to_string(&e.text)
        .with_context(|| format!("cannot read text file {}", e.text.display()))?;
    let bos = text.bos_for(model)?;
    Ok((text.encode_with_bos(&raw, bos)?, bos))
}

fn eval_options(e: &EvalArgs) -> eval::EvalOptions {
    eval::EvalOptions {
        ctx: e.ctx,
        max_chunks: e.chunks,
        progress: !e.json,
    }
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            run,
            json,
        } => {
            set_threads(run.threads)?;
            let valid = top_p > 0.0 && top_p <= 1.0 && temperature >= 0.0;
            if !valid {
                anyhow::bail!("--top-p must be in (0, 1] and --temp at least 0");
            }
            let m = open_model(&model)?;
            let text = engine::text::Text::load(&m, run.tokenizer.as_deref())?;
            let eng = engine::Engine::new(&m)?;
            let ids = if chat {
                text.encode(&text.chat_prompt(&prompt, system.as_deref())?, false)?
            } else {
                text.encode(&prompt, true)?
            };
            let sampling = engine::generate::Sampling {
                max_tokens,
                temperature,
                top_p,
                seed,
            };
            // Stream: print the text of all tokens so far minus what was
            // printed, holding back an incomplete UTF-8 sequence.
            let mut printed = 0usize;
            let mut so_far = Vec::new();
            let mut stdout = std::io::stdout();
            let g = engine::generate::generate(&eng, &ids, &sampling, |tok| {
                if json {
                    return;
                }
                so_far.push(tok);
                if let Ok(s) = text.decode(&so_far) {
                    if s.len() > printed && !s.ends_with('\u{FFFD}') {
                        use std::io::Write;
                        let _ = write!(stdout, "{}", &s[printed..]);
                        let _ = stdout.flush();
                        printed = s.len();
                    }
                }
            })?;
            let out = text.decode(&g.tokens)?;
            if json {
                let mut v = serde_json::to_value(&g)?;
                v["text"] = out.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if out.len() > printed {
                    print!("{}", &out[printed..]);
                }
                println!();
                eprintln!(
                    "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s (stopped at {})",
                    g.prompt_tokens,
                    g.prefill_tokens_per_second,
                    g.tokens.len(),
                    g.decode_tokens_per_second,
                    g.stop
                );
            }
        }
        Command::Eval(EvalCommand::Ppl {
            model,
            eval: e,
            run,
        }) => {
            set_threads(run.threads)?;
            let m = open_model(&model)?;
            let text = engine::text::Text::load(&m, run.tokenizer.as_deref())?;
            let eng = engine::Engine::new(&m)?;
            let (tokens, bos) = eval_tokens(&text, &m, &e)?;
            let r = eval::perplexity(&eng, &tokens, bos, &eval_options(&e))?;
            if e.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "PPL = {:.4} +/- {:.5}  ({} chunks of {} tokens, {} scored, {:.0} tokens/s)",
                    r.ppl, r.ppl_error, r.chunks, r.ctx, r.scored, r.tokens_per_second
                );
            }
        }
        Command::Eval(EvalCommand::Kld {
            base,
            other,
            eval: e,
            run,
        }) => {
            set_threads(run.threads)?;
            let mb = open_model(&base)?;
            let mo = open_model(&other)?;
            let text = engine::text::Text::load(&mb, run.tokenizer.as_deref())?;
            let eb = engine::Engine::new(&mb)?;
            let eo = engine::Engine::new(&mo)?;
            let (tokens, bos) = eval_tokens(&text, &mb, &e)?;
            let r = eval::kl_divergence(&eb, &eo, &tokens, bos, &eval_options(&e))?;
            if e.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                t.set_header(vec!["statistic", "value"]);
                t.add_row(vec![
                    "chunks × ctx".into(),
                    format!("{} × {}", r.chunks, r.ctx),
                ]);
                t.add_row(vec!["scored positions".into(), r.scored.to_string()]);
                t.add_row(vec!["PPL(base)".into(), format!("{:.4}", r.ppl_base)]);
                t.add_row(vec!["PPL(other)".into(), format!("{:.4}", r.ppl_other)]);
                t.add_row(vec![
                    "mean KLD".into(),
                    format!("{:.6} ± {:.6}", r.kld_mean, r.kld_error),
                ]);
                t.add_row(vec!["max KLD".into(), format!("{:.6}", r.kld_max)]);
                for (p, v) in &r.kld_percentiles {
                    t.add_row(vec![format!("KLD {p}%"), format!("{v:.6}")]);
                }
                t.add_row(vec![
                    "same top-1".into(),
                    format!("{:.3} %", 100.0 * r.top1_agreement),
                ]);
                println!("{t}");
            }
        }
        Command::Convert {
            model,
            out,
            dtype,
            max_shard_size,
            dry_run,
            json,
        } => {
            let max_shard_size = parse_size(&max_shard_size).with_context(|| {
                format!("--max-shard-size '{max_shard_size}' is not a size like 5GB, 500MB or 2GiB")
            })?;
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let opts = to_hf::HfOptions {
                out,
                dtype: parse_dtype(dtype),
                max_shard_size,
                progress: !json,
                command: command_line(),
            };
            let report = to_hf::convert(&m, &opts, dry_run)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} {}: {} tensors, {} {}; files: {}",
                    if dry_run { "would write" } else { "wrote" },
                    report.out.display(),
                    report.tensors,
                    inspect::human_bytes(report.bytes),
                    report.dtype,
                    report.files.join(", ")
                );
            }
        }
        Command::InspectArch {
            model,
            json,
            tensors,
        } => {
            let m = store::Model::open(&model)
                .with_context(|| format!("cannot open model '{model}'"))?;
            let a = arch::detect(&m);
            if json {
                let mut v = arch::manifest(&m, &a);
                if tensors {
                    v["tensors"] = inspect::tensors_json(&m);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", inspect::render_summary(&m, &a));
                if tensors {
                    print!("{}", inspect::render_tensors(&m));
                }
            }
        }
        Command::Lora(LoraCommand::Inspect { adapter, json }) => {
            let a = Adapter::open(&adapter)
                .with_context(|| format!("cannot read adapter {}", adapter.display()))?;
            let v = a.summary();
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", inspect::render_json_table(&v));
            }
        }
        Command::Lora(LoraCommand::Merge {
            base,
            adapters,
            out,
            dtype,
            max_shard_size,
            dry_run,
            json,
        }) => {
            let max_shard_size = parse_size(&max_shard_size).with_context(|| {
                format!("--max-shard-size '{max_shard_size}' is not a size like 5GB, 500MB or 2GiB")
            })?;
            let model =
                store::Model::open(&base).with_context(|| format!("cannot open base '{base}'"))?;
            let mut list = Vec::new();
            for spec in &adapters {
                let (path, weight) = adapter_spec(spec);
                if !weight.is_finite() {
                    anyhow::bail!("--adapter {spec}: the weight must be a finite number");
                }
                let adapter = Adapter::open(&path)
                    .with_context(|| format!("cannot read adapter {}", path.display()))?;
                list.push(WeightedAdapter { adapter, weight });
            }
            let opts = MergeOptions {
                out,
                dtype: parse_dtype(dtype),
                max_shard_size,
                command: command_line(),
                base_label: base.clone(),
                progress: !json,
            };
            let report = merge::merge(&model, &list, &opts, dry_run)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} {}: {} tensors ({}), {} modules merged, {} replaced{}; files: {}",
                    if dry_run { "would write" } else { "wrote" },
                    report.out.display(),
                    report.tensors,
                    inspect::human_bytes(report.bytes),
                    report.merged_modules,
                    report.replaced_tensors.len(),
                    if report.untied_embeddings {
                        ", embeddings untied"
                    } else {
                        ""
                    },
                    report.files.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = interrupt::install() {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain()
                .any(|c| matches!(c.downcast_ref(), Some(store::StoreError::Interrupted)))
            {
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}
