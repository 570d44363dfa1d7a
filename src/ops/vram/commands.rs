//! The command each `vram-plan` row prints: what it loads ([`source`]: the
//! model, a pre-quantized repo, or a checkpoint to make first) and the
//! engine call ([`flags`]: `llama-server`, `vllm serve`, transformers'
//! `from_pretrained`), float16 on GPUs without bfloat16.

use super::{DeployFormat, GpuSetup, KvType, ModelSpec, Options, Runtime};
use crate::model::packed::Packing;

/// What a plan's command loads: the model as it is, or a checkpoint that
/// must exist first.
pub struct Source {
    /// Path or repo id in the command.
    pub name: String,
    /// What to make before the command runs, if anything.
    pub prerequisite: Option<String>,
}

/// The source the engine loads for format `f`. GGUF formats need a GGUF
/// file made by `llmtool quantize`; AWQ and GPTQ need a pre-quantized
/// checkpoint (the publisher's repo when the catalog knows one: loading
/// the 16-bit repo with `--quantization awq` fails); bitsandbytes formats
/// quantize the 16-bit weights while loading.
pub fn source(m: &ModelSpec, f: DeployFormat, e: Runtime) -> Source {
    let name = |suffix: &str| format!("{}-{suffix}", m.shape.name.replace('/', "_"));
    let ready = |name: String| Source {
        name,
        prerequisite: None,
    };
    if f == DeployFormat::Native {
        return ready(m.source.clone());
    }
    if e == Runtime::LlamaCpp {
        let file = name(&format!("{}.gguf", f.name().to_uppercase()));
        return Source {
            prerequisite: Some(format!(
                "llmtool quantize {} {} --out {file}",
                f.name(),
                m.source
            )),
            name: file,
        };
    }
    let suffix = match f {
        DeployFormat::Awq => "AWQ",
        DeployFormat::Gptq => "GPTQ-Int4",
        DeployFormat::Gptq8 => "GPTQ-Int8",
        _ => return ready(m.source.clone()),
    };
    match m.published.iter().find(|(p, _)| *p == f) {
        Some((_, repo)) => ready(repo.clone()),
        None => {
            let dir = format!("./{}", name(suffix));
            Source {
                prerequisite: Some(format!(
                    "quantize {} into {dir} with AutoAWQ, GPTQModel or llm-compressor (no published {suffix} checkpoint of it is known; llmtool writes bitsandbytes and GGUF only)",
                    m.source
                )),
                name: dir,
            }
        }
    }
}

/// The command line (or call) that runs the plan, and what it needs made
/// first. On GPUs without bfloat16 (compute capability below 8.0) the
/// engines are told to compute in float16.
#[allow(clippy::too_many_arguments)]
pub(super) fn flags(
    m: &ModelSpec,
    f: DeployFormat,
    e: Runtime,
    o: &Options,
    setup: &GpuSetup,
    ngl: Option<u64>,
    split: &[u64],
    ubatch: u64,
    kv: KvType,
) -> (String, Option<String>) {
    let Source {
        name: src,
        prerequisite,
    } = source(m, f, e);
    let loaded = f.as_loaded(m);
    let bf16 = setup.gpu.has_bf16();
    let cmd = match e {
        Runtime::LlamaCpp => {
            let mut s = format!(
                "llama-server -m {src} -c {} -np {} -ngl {} -ub {ubatch} -fa {} --cache-type-k {} --cache-type-v {}",
                o.ctx * o.users,
                o.users,
                ngl.unwrap_or(m.shape.layers + 1),
                if o.flash_attn { "on" } else { "off" },
                kv.name(),
                kv.name()
            );
            if setup.count > 1 {
                let output_on_gpu = ngl.is_none_or(|n| n > m.shape.layers);
                s += &format!(
                    " --split-mode layer --tensor-split {}",
                    tensor_split(split, output_on_gpu)
                );
            }
            s
        }
        Runtime::Vllm => {
            let mut s = format!(
                "vllm serve {src} --max-model-len {} --max-num-seqs {} --gpu-memory-utilization {} --kv-cache-dtype {} --max-num-batched-tokens {ubatch}",
                o.ctx,
                o.users,
                o.gpu_util,
                if kv == KvType::Fp8 { "fp8" } else { "auto" }
            );
            s += match loaded {
                DeployFormat::Awq => " --quantization awq",
                // llm-compressor's int4/int8 checkpoints plan as GPTQ (same
                // packing density) but load through their own method.
                DeployFormat::Gptq | DeployFormat::Gptq8
                    if matches!(m.packing, Some(Packing::Compressed { .. })) =>
                {
                    " --quantization compressed-tensors"
                }
                DeployFormat::Gptq | DeployFormat::Gptq8 => " --quantization gptq",
                DeployFormat::Nf4 | DeployFormat::Int8 => " --quantization bitsandbytes",
                _ => "",
            };
            // vLLM takes the checkpoint's dtype unless told; below compute
            // capability 8.0 it refuses bf16.
            s += match loaded {
                _ if !bf16 => " --dtype half",
                DeployFormat::F16 => " --dtype float16",
                DeployFormat::Bf16 => " --dtype bfloat16",
                _ => "",
            };
            if setup.count > 1 {
                s += &format!(" --tensor-parallel-size {}", setup.count);
            }
            if !o.cuda_graphs {
                s += " --enforce-eager";
            }
            s
        }
        Runtime::Transformers => {
            // AWQ and GPTQ kernels compute in float16 (transformers casts
            // and warns otherwise).
            let fp16 = matches!(
                loaded,
                DeployFormat::F16 | DeployFormat::Awq | DeployFormat::Gptq | DeployFormat::Gptq8
            );
            let dtype = if fp16 || !bf16 { "float16" } else { "bfloat16" };
            // A pre-quantized checkpoint carries its quantization_config.
            let q = match f {
                DeployFormat::Int8 => ", quantization_config=BitsAndBytesConfig(load_in_8bit=True)".to_string(),
                DeployFormat::Nf4 => format!(", quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_compute_dtype=torch.{dtype})"),
                _ => String::new(),
            };
            format!("AutoModelForCausalLM.from_pretrained(\"{src}\", dtype=torch.{dtype}, device_map=\"auto\"{q})")
        }
    };
    (cmd, prerequisite)
}

/// llama.cpp's `--tensor-split` that puts exactly `split[i]` layers on
/// device `i`. llama.cpp divides the offloaded layers *plus the output*
/// (`act_gpu_layers`) by the cumulative fractions (`llama-model.cpp`,
/// `get_layer_buft_list`), so the output counts as one more layer of the
/// last device; with integer parts summing to that count, every boundary
/// lands exactly (the float quotients compare equal).
pub fn tensor_split(split: &[u64], output_on_gpu: bool) -> String {
    let n = split.len();
    split
        .iter()
        .enumerate()
        .map(|(i, &l)| (l + u64::from(output_on_gpu && i + 1 == n)).to_string())
        .collect::<Vec<_>>()
        .join(",")
}
