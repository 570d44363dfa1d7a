//! `vram-plan`: will this model fit this GPU, for how many users, at what
//! cost.
//!
//! This module owns the memory model, component by component (each formula
//! and its upstream source is in `docs/VRAM.md`):
//!
//! * **weights**, per tensor for the chosen format (`formats::tensor_bytes`): the
//!   bytes a tensor takes under bf16/f16, bitsandbytes LLM.int8 and NF4,
//!   AWQ and GPTQ (packed 4/8-bit, group scales and zeros, `g_idx`), and the
//!   GGUF file types, whose per-tensor types follow `llama-quantize`
//!   (`quant::ftype::tensor_types`, shared with `llmtool quantize`); for a model that already is a GGUF the stored types are
//!   used as they are;
//! * **KV cache** ([`kv_bytes_per_token`]): 2 × layers × kv_heads × head_dim
//!   × bytes per element (GGML block sizes for q8_0/q4_0);
//! * **activations / compute buffers** per engine ([`Runtime`]):
//!   llama.cpp's compute-buffer reservation, transformers' forward
//!   activations, vLLM's profiled peak;
//! * **runtime overhead** per engine (CUDA context, library workspaces,
//!   llama.cpp's `--fit-target` margin, vLLM's non-torch memory and CUDA
//!   graphs).
//!
//! [`plan`] evaluates one model × format × GPU setup: whether it fits, the
//! headroom, the largest context for the users asked, the most users at the
//! context asked, llama.cpp's `-ngl` and host RAM when it does not fit, a
//! per-device layer split for several GPUs, the hourly price and the engine
//! flags (built by `commands`). [`recommend`] picks the best-quality format
//! that fits with a margin. The data files (model and GPU catalogs) live in
//! `data/` and are read by [`catalog`]; [`request`] runs one `vram-plan` call.

pub mod catalog;
mod commands;
mod formats;
mod model;
pub mod request;

use serde::Serialize;

pub use catalog::{Gpu, GpuSetup};
pub use commands::{source, tensor_split, Source};
pub use formats::{
    kv_bytes_per_token, weights_by_tensor, weights_total, DeployFormat, KvType, Runtime,
    QUALITY_ORDER,
};
use model::MAX_UBATCH;
pub use model::{ModelSpec, Shape, TensorKind, VramTensor, MAX_CTX, MAX_TOKENS};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

use crate::ops::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::Refused(msg.into())
}

/// Per-engine settings that change the memory model.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Context length per sequence.
    pub ctx: u64,
    /// Concurrent sequences.
    pub users: u64,
    /// Tokens per forward pass: llama.cpp's `-ub` (default 512),
    /// transformers' prefill (default the whole context), vLLM's
    /// `--max-num-batched-tokens` (default 2048, or 8192 on ≥ 70 GiB GPUs).
    pub ubatch: Option<u64>,
    /// KV cache type (`None`: the engine's default, 16-bit).
    pub kv: Option<KvType>,
    /// llama.cpp flash attention (its `auto` turns it on where supported).
    pub flash_attn: bool,
    /// vLLM `--gpu-memory-utilization`.
    pub gpu_util: f64,
    /// vLLM captures CUDA graphs (off with `--enforce-eager`).
    pub cuda_graphs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ctx: 4096,
            users: 1,
            ubatch: None,
            kv: None,
            flash_attn: true,
            gpu_util: 0.9,
            cuda_graphs: true,
        }
    }
}

/// llama.cpp's default `-ub`.
pub const LLAMA_CPP_UBATCH: u64 = 512;
/// llama.cpp `--fit-target` default: memory kept free per device for what
/// its buffers do not count (`common/arg.cpp`, PR #16653).
pub const LLAMA_CPP_FIT_TARGET: u64 = 1024 * MIB;
/// PyTorch CUDA context, cuBLAS workspaces and allocator slack under
/// transformers: gpu_poor's fixed "cuda + other overhead" of 650 MB
/// (RahulSChand/gpu_poor `src/App.js`).
pub const TRANSFORMERS_OVERHEAD: u64 = 650 * 1_000_000;
/// vLLM non-torch allocations (NCCL, cuBLAS) as logged in vllm#12330.
pub const VLLM_NON_TORCH: u64 = GIB / 10;
/// vLLM CUDA graph memory: 0.65 GiB logged for gemma-3-4b (vllm PR #21489);
/// we reserve this much unless `--enforce-eager`.
pub const VLLM_CUDA_GRAPHS: u64 = 650 * MIB;
/// Bytes per logit vLLM's profiled sampler step holds at its peak, over
/// `min(--max-num-seqs, tokens)` × vocabulary logits. The dummy requests ask
/// for top-k and top-p, so the peak is the sort-based path of
/// `vllm/model_executor/layers/sampler.py`: bf16 logits (2), their f32 copy
/// (4), sorted values (4) with int64 indices (8), softmax and cumsum for
/// top-p (4 + 4), two masks (2), the int64 inverse permutation (8) and the
/// re-gathered logits (4): at most 40. Fitted to 38.5 over five profile logs
/// of vLLM 0.6.5–0.8.5 whose settings are known (`fixtures/vram/published.json`,
/// `vllm_profile_logs`): all within 2 %.
pub const VLLM_SAMPLER_BYTES_PER_LOGIT: f64 = 38.5;
/// vLLM's KV block size in tokens (`--block-size` default).
pub const VLLM_BLOCK: u64 = 16;
/// llama.cpp pads the KQ mask's token dimension (`GGML_KQ_MASK_PAD`).
const KQ_MASK_PAD: u64 = 64;
/// llama.cpp rounds each sequence's context up to a multiple of 256
/// (`llama_context` constructor, `src/llama-context.cpp`).
const LLAMA_CPP_CTX_PAD: u64 = 256;

/// KV cells llama.cpp allocates for `users` sequences of `ctx` tokens
/// (`-c ctx·users -np users`: each stream gets `ctx` rounded up to 256).
pub fn llama_cpp_cells(ctx: u64, users: u64) -> u64 {
    ctx.next_multiple_of(LLAMA_CPP_CTX_PAD) * users
}

/// Memory of one plan, in bytes, per device and summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// Weights resident on the GPU(s).
    pub weights: u64,
    /// KV cache on the GPU(s).
    pub kv: u64,
    /// Activations / compute buffers.
    pub compute: u64,
    /// CUDA context, workspaces, margins.
    pub overhead: u64,
    /// Weights, KV and buffers kept in host RAM.
    pub host: u64,
}

impl Breakdown {
    pub fn vram(&self) -> u64 {
        self.weights + self.kv + self.compute + self.overhead
    }
}

/// llama.cpp's compute buffer for a context of `n_ctx` cells (all
/// sequences) and micro-batch `ub`: the worst-case prompt graph reserved by
/// `sched_reserve` (`src/llama-context.cpp`) holds the KQ mask for the whole
/// graph plus the largest of: the output stage (f32 logits for `ub`
/// outputs and ~5 hidden-state buffers), the attention stage without flash
/// attention (f32 KQ for every head), the FFN stage (gate and up in f32).
/// The small coefficients (5, 6.5, 3 hidden-state buffers) were fitted to
/// llama.cpp's own figures (fixtures/vram/llama_cpp_buffers.json, ≤ 2 %).
pub fn llama_cpp_compute(s: &Shape, n_ctx: u64, ub: u64, flash_attn: bool) -> u64 {
    llama_cpp_stage_compute(s, n_ctx, ub, flash_attn, true)
}

/// [`llama_cpp_compute`] for one device of a pipeline: only the device
/// holding the output reserves the output stage (measured through RPC,
/// docs/FRAGMENT.md).
fn llama_cpp_stage_compute(s: &Shape, n_ctx: u64, ub: u64, flash_attn: bool, output: bool) -> u64 {
    let t = ub.min(n_ctx);
    let h = s.hidden * t * 4;
    let mask = n_ctx * t.div_ceil(KQ_MASK_PAD) * KQ_MASK_PAD * if flash_attn { 2 } else { 4 };
    if !output {
        // A stage without the output peaks in the FFN: three ffn-wide and
        // two hidden-wide f32 buffers per token (measured through RPC on
        // SmolLM2, exact to 0.1 %: docs/FRAGMENT.md).
        let ffn = (3 * s.ffn + 2 * s.hidden) * t * 4;
        let attention = if flash_attn {
            0
        } else {
            s.heads * n_ctx * t * 4 + 13 * h / 2
        };
        return mask + ffn.max(attention);
    }
    let output = s.vocab * t * 4 + 5 * h;
    let attention = if flash_attn {
        0
    } else {
        s.heads * n_ctx * t * 4 + 13 * h / 2
    };
    let ffn = 2 * s.ffn * t * 4 + 3 * h;
    mask + output.max(attention).max(ffn)
}

/// Forward activations of `tokens` tokens at 16 bits: the MLP holds three
/// `ffn`-wide buffers at once (act(gate), up, their product) next to ~4
/// hidden-wide ones (residual, normed input, attention output, projection).
fn forward_activations(s: &Shape, tokens: u64) -> u64 {
    tokens * (3 * s.ffn + 4 * s.hidden) * 2
}

/// What llama.cpp reports for a model on the CPU backend (everything in
/// host buffers): model, KV and compute buffer bytes. The oracle figures in
/// `fixtures/vram/llama_cpp_buffers.json` are these three numbers.
pub fn llama_cpp_buffers(m: &ModelSpec, f: DeployFormat, o: &Options) -> Result<(u64, u64, u64)> {
    let weights = weights_total(m, f, Runtime::LlamaCpp)?;
    let cells = llama_cpp_cells(o.ctx, o.users);
    let kv = cells * kv_bytes_per_token(&m.shape, o.kv.unwrap_or(KvType::F16))?;
    let ub = o.ubatch.unwrap_or(LLAMA_CPP_UBATCH);
    Ok((
        weights,
        kv,
        llama_cpp_compute(&m.shape, cells, ub, o.flash_attn),
    ))
}

/// Weights split into per-layer bytes, and the rest: what stays with the
/// input (token embedding) and what goes with the output (final norm, head).
#[derive(Debug, Clone)]
struct LayerBytes {
    layers: Vec<u64>,
    input: u64,
    output: u64,
}

fn layer_bytes(m: &ModelSpec, f: DeployFormat, e: Runtime) -> Result<LayerBytes> {
    let mut lb = LayerBytes {
        layers: vec![0; m.shape.layers as usize],
        input: 0,
        output: 0,
    };
    for (t, b) in m.tensors.iter().zip(weights_by_tensor(m, f, e)?) {
        match (t.layer, t.kind) {
            (Some(l), _) if (l as usize) < lb.layers.len() => lb.layers[l as usize] += b,
            (_, TensorKind::Embed) => {
                lb.input += b;
                // llama.cpp keeps token_embd in host memory and copies it to
                // the output device when the head is tied to it.
                if m.shape.tied && e == Runtime::LlamaCpp {
                    lb.output += b;
                }
            }
            _ => lb.output += b,
        }
    }
    Ok(lb)
}

/// The result of planning one model × format × engine on one GPU setup.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub gpu: String,
    pub gpus: u32,
    pub format: DeployFormat,
    pub engine: Runtime,
    pub ctx: u64,
    pub users: u64,
    pub ubatch: u64,
    pub kv_type: KvType,
    /// Usable bytes: the GPUs' total (× `gpu_memory_utilization` for vLLM).
    pub capacity: u64,
    pub need: Breakdown,
    pub fits: bool,
    /// capacity − need (negative when it does not fit).
    pub headroom: i64,
    /// Largest context per sequence that fits with `users` (0: none).
    pub max_ctx: u64,
    /// Most concurrent sequences that fit at `ctx` (0: none).
    pub max_users: u64,
    /// llama.cpp `-ngl` (layers + output on the GPU; n_layer + 1 = all).
    pub ngl: Option<u64>,
    /// Host RAM needed for what is not on the GPU (llama.cpp offload).
    pub host_ram: u64,
    /// Layers per device (several GPUs).
    pub split: Vec<u64>,
    pub price_per_hour: f64,
    /// The engine command line (or transformers call).
    pub flags: String,
    /// What must be made before `flags` runs (a GGUF file, an AWQ/GPTQ
    /// checkpoint nobody publishes), with how.
    pub prerequisite: Option<String>,
}

/// Memory on each device for a layer split `split` (layers per device, in
/// order), or the single-device total when `split` has one entry.
fn device_loads(
    m: &ModelSpec,
    f: DeployFormat,
    e: Runtime,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
    split: &[u64],
) -> Result<Vec<Breakdown>> {
    // vLLM shards every layer across its tensor-parallel ranks.
    let tp = if e == Runtime::Vllm {
        setup.count.max(1) as u64
    } else {
        1
    };
    let s = &m.shape;
    let kv_type = o.kv.unwrap_or(KvType::F16);
    let kv_tok = kv_bytes_per_token(s, kv_type)?;
    let kv_layer_tok = kv_tok / s.layers.max(1);
    let mut out = Vec::new();
    let mut first = 0usize;
    for (d, &cnt) in split.iter().enumerate() {
        let range = first..first + cnt as usize;
        first += cnt as usize;
        let last = d + 1 == split.len();
        let layer_w: u64 = lb.layers[range].iter().sum();
        let mut b = Breakdown::default();
        match e {
            Runtime::LlamaCpp => {
                b = llama_cpp_device(s, o, lb, layer_w, cnt * kv_layer_tok, d == 0, last);
            }
            Runtime::Transformers => {
                b.weights =
                    layer_w + if d == 0 { lb.input } else { 0 } + if last { lb.output } else { 0 };
                b.kv = cnt * kv_layer_tok * o.ctx * o.users;
                let tokens = o.users * o.ubatch.unwrap_or(o.ctx).min(o.ctx);
                let dequant = if matches!(
                    f.as_loaded(m),
                    DeployFormat::Nf4
                        | DeployFormat::Awq
                        | DeployFormat::Gptq
                        | DeployFormat::Gptq8
                ) {
                    m.tensors
                        .iter()
                        .filter(|t| t.kind.is_linear())
                        .map(|t| t.numel() * 2)
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                };
                b.compute = forward_activations(s, tokens) + o.users * s.vocab * 4 * 2 + dequant;
                b.overhead = TRANSFORMERS_OVERHEAD;
            }
            Runtime::Vllm => {
                // Tensor parallel: every rank holds 1/n of its stage's
                // weights and KV (one stage unless pipeline-parallel).
                let all: u64 =
                    layer_w + if d == 0 { lb.input } else { 0 } + if last { lb.output } else { 0 };
                // Plus the rotary cos/sin cache every rank keeps in the
                // model dtype (`get_rope`, `max_position × head_dim`): part
                // of vLLM's "model weights take" figure (why Llama-3.1-8B
                // logs 14.99 GiB where Llama-3-8B logs 14.96).
                b.weights = all.div_ceil(tp) + s.max_ctx * s.head_dim * 2;
                let blocks = o.ctx.div_ceil(VLLM_BLOCK) * VLLM_BLOCK;
                // KV heads are split over ranks, replicated when fewer than ranks.
                let kv_per_rank = (s.kv_heads / tp).max(1);
                let stage_kv_tok = kv_tok * cnt / s.layers.max(1);
                b.kv = (blocks * o.users * stage_kv_tok).div_ceil(s.kv_heads.max(1)) * kv_per_rank;
                let tokens = o.ubatch.unwrap_or(vllm_default_batched_tokens(setup));
                b.compute = forward_activations(s, tokens)
                    .div_ceil(tp)
                    .max(vllm_sampler_peak(s, tokens, o.users));
                b.overhead = VLLM_NON_TORCH + if o.cuda_graphs { VLLM_CUDA_GRAPHS } else { 0 };
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// One llama.cpp device holding `layer_w` bytes of layers whose KV takes
/// `kv_tok` bytes per cell; the first device is charged the token
/// embedding in host memory, the last one the output.
fn llama_cpp_device(
    s: &Shape,
    o: &Options,
    lb: &LayerBytes,
    layer_w: u64,
    kv_tok: u64,
    first: bool,
    last: bool,
) -> Breakdown {
    let cells = llama_cpp_cells(o.ctx, o.users);
    Breakdown {
        weights: layer_w + if last { lb.output } else { 0 },
        kv: kv_tok * cells,
        compute: llama_cpp_stage_compute(
            s,
            cells,
            o.ubatch.unwrap_or(LLAMA_CPP_UBATCH),
            o.flash_attn,
            last,
        ),
        overhead: LLAMA_CPP_FIT_TARGET,
        host: if first { lb.input } else { 0 },
    }
}

/// The peak of vLLM's profiled sampler step. The profile runs one forward
/// pass of `tokens` split over `seqs` dummy requests; its temporaries are
/// freed, but its output hidden states (`tokens × hidden`, 16-bit, full on
/// every tensor-parallel rank) stay alive while the sampler turns the last
/// position of each request into logits. The sampler is not sharded.
fn vllm_sampler_peak(s: &Shape, tokens: u64, seqs: u64) -> u64 {
    let logits = seqs.min(tokens) * s.vocab;
    tokens * s.hidden * 2 + (logits as f64 * VLLM_SAMPLER_BYTES_PER_LOGIT) as u64
}

/// vLLM's default `--max-num-batched-tokens` for `vllm serve`: 2048, or
/// 8192 on GPUs with ≥ 70 GiB (`vllm/engine/arg_utils.py`).
fn vllm_default_batched_tokens(setup: &GpuSetup) -> u64 {
    if setup.gpu.vram_mib * MIB >= 70 * GIB {
        8192
    } else {
        2048
    }
}

/// Layers per device: proportional to what each device has left after its
/// fixed costs, largest remainder first (llama.cpp splits by free memory,
/// `docs/multi-gpu.md`); identical devices get equal shares.
pub fn split_layers(n_layers: u64, free: &[u64]) -> Vec<u64> {
    let total: u128 = free.iter().map(|&f| f as u128).sum::<u128>().max(1);
    let exact: Vec<(usize, u128)> = free
        .iter()
        .enumerate()
        .map(|(i, &f)| (i, f as u128 * n_layers as u128))
        .collect();
    let mut split: Vec<u64> = exact.iter().map(|(_, x)| (x / total) as u64).collect();
    let mut rest = n_layers - split.iter().sum::<u64>();
    let mut order: Vec<(usize, u128)> = exact.iter().map(|&(i, x)| (i, x % total)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, _) in order {
        if rest == 0 {
            break;
        }
        split[i] += 1;
        rest -= 1;
    }
    split
}

/// One device of a llama.cpp pipeline (`--split-mode layer`), in the order
/// llama.cpp uses it: the head's CPU (layers kept off the GPUs by `-ngl`),
/// then the RPC devices in `--rpc` order, then the head's own GPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineDevice {
    /// Memory this device may use, bytes.
    pub capacity: u64,
    pub kind: DeviceKind,
}

/// What a pipeline device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// A GPU: CUDA context and `--fit-target` margin on top.
    Gpu,
    /// A CPU (an `ggml-rpc-server` without GPU).
    Cpu,
    /// The head's own CPU: it also computes the token embeddings and holds
    /// the graph's inputs.
    HeadCpu,
}

/// A model laid over a pipeline of devices.
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// Consecutive layers per device; the last device also holds the output.
    pub split: Vec<u64>,
    pub loads: Vec<Breakdown>,
    /// What stays in the head's host memory whatever the split: the token
    /// embedding (llama.cpp looks rows up on the CPU).
    pub host: u64,
}

/// llama.cpp's layer split of `m` (format `f`) over `devices`: each device
/// gets consecutive layers in proportion to what it has left after its
/// fixed costs (compute buffer, margin, the output on the last),
/// largest remainder first: llama.cpp's own rule (split by free memory),
/// with the costs `vram-plan` models for one device.
pub fn llama_cpp_pipeline(
    m: &ModelSpec,
    f: DeployFormat,
    o: &Options,
    devices: &[PipelineDevice],
) -> Result<Pipeline> {
    validate(m, f, Runtime::LlamaCpp, o)?;
    let lb = layer_bytes(m, f, Runtime::LlamaCpp)?;
    let s = &m.shape;
    let kv_layer_tok = kv_bytes_per_token(s, o.kv.unwrap_or(KvType::F16))? / s.layers.max(1);
    let loads = |split: &[u64]| -> Vec<Breakdown> {
        let mut first = 0usize;
        split
            .iter()
            .zip(devices)
            .enumerate()
            .map(|(d, (&cnt, dev))| {
                let range = first..first + cnt as usize;
                first += cnt as usize;
                let layer_w = lb.layers[range].iter().sum();
                let last = d + 1 == split.len();
                let mut b = llama_cpp_device(s, o, &lb, layer_w, cnt * kv_layer_tok, false, last);
                if dev.kind != DeviceKind::Gpu {
                    // No CUDA context and no `--fit-target` margin on a CPU.
                    b.overhead = 0;
                }
                if dev.kind == DeviceKind::HeadCpu {
                    // Three more hidden-wide f32 buffers per token (measured).
                    let t = o
                        .ubatch
                        .unwrap_or(LLAMA_CPP_UBATCH)
                        .min(llama_cpp_cells(o.ctx, o.users));
                    b.compute += 3 * s.hidden * t * 4;
                }
                b
            })
            .collect()
    };
    let fixed = loads(&vec![0; devices.len()]);
    let free: Vec<u64> = devices
        .iter()
        .zip(&fixed)
        .map(|(d, b)| d.capacity.saturating_sub(b.vram()))
        .collect();
    let split = split_layers(s.layers, &free);
    Ok(Pipeline {
        loads: loads(&split),
        split,
        host: lb.input,
    })
}

/// vLLM pipeline parallelism: the memory of each stage (`split` layers per
/// stage, each stage one node of `setup` GPUs in tensor parallel).
pub fn vllm_stages(
    m: &ModelSpec,
    f: DeployFormat,
    o: &Options,
    setup: &GpuSetup,
    split: &[u64],
) -> Result<Vec<Breakdown>> {
    validate(m, f, Runtime::Vllm, o)?;
    let lb = layer_bytes(m, f, Runtime::Vllm)?;
    device_loads(m, f, Runtime::Vllm, o, setup, &lb, split)
}

/// Whether the loads fit their devices, and the smallest per-device headroom.
fn headroom(loads: &[Breakdown], cap_per_device: u64) -> i64 {
    loads
        .iter()
        .map(|b| cap_per_device as i64 - b.vram() as i64)
        .min()
        .unwrap_or(0)
}

/// Usable bytes per device: all of it, or vLLM's `gpu_memory_utilization`
/// share (vLLM sizes its KV cache to fill exactly that).
fn per_device_capacity(e: Runtime, o: &Options, setup: &GpuSetup) -> u64 {
    let total = setup.gpu.vram_mib * MIB;
    match e {
        Runtime::Vllm => (total as f64 * o.gpu_util) as u64,
        _ => total,
    }
}

struct Eval {
    loads: Vec<Breakdown>,
    split: Vec<u64>,
    headroom: i64,
}

fn evaluate(
    m: &ModelSpec,
    f: DeployFormat,
    e: Runtime,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
) -> Result<Eval> {
    let cap = per_device_capacity(e, o, setup);
    if o.ctx.saturating_mul(o.users) > MAX_TOKENS {
        // Beyond what we plan (the searches probe here): does not fit.
        return Ok(Eval {
            loads: Vec::new(),
            split: Vec::new(),
            headroom: i64::MIN,
        });
    }
    let n = setup.count.max(1) as usize;
    let (split, loads) = if e == Runtime::Vllm {
        let one = device_loads(m, f, e, o, setup, lb, &[m.shape.layers])?;
        (Vec::new(), vec![one[0].clone(); n])
    } else if n == 1 {
        let split = vec![m.shape.layers];
        let loads = device_loads(m, f, e, o, setup, lb, &split)?;
        (split, loads)
    } else {
        // Split by what each device has left after its fixed costs
        // (compute buffer, overhead, embedding/head), layers weighed evenly.
        let base = device_loads(m, f, e, o, setup, lb, &vec![0; n])?;
        let free: Vec<u64> = base.iter().map(|b| cap.saturating_sub(b.vram())).collect();
        let split = split_layers(m.shape.layers, &free);
        let loads = device_loads(m, f, e, o, setup, lb, &split)?;
        (split, loads)
    };
    Ok(Eval {
        headroom: headroom(&loads, cap),
        loads,
        split,
    })
}

fn sum(loads: &[Breakdown]) -> Breakdown {
    loads.iter().fold(Breakdown::default(), |a, b| Breakdown {
        weights: a.weights + b.weights,
        kv: a.kv + b.kv,
        compute: a.compute + b.compute,
        overhead: a.overhead + b.overhead,
        host: a.host + b.host,
    })
}

/// Checks that the engine can run the format and KV type.
fn validate(m: &ModelSpec, f: DeployFormat, e: Runtime, o: &Options) -> Result<()> {
    if f == DeployFormat::Native {
        if !m.has_stored {
            return Err(invalid(
                "format 'native' needs a real model file (the catalog and config.json give shapes only)",
            ));
        }
        if m.is_gguf != (e == Runtime::LlamaCpp) {
            return Err(invalid(format!(
                "{} cannot load this model's own files ({}); pick another --engine or --quant",
                e.name(),
                if m.is_gguf { "GGUF" } else { "safetensors" }
            )));
        }
    } else if !f.runtimes().contains(&e) {
        return Err(invalid(format!(
            "{} does not load {}; engines for it: {}",
            e.name(),
            f.name(),
            f.runtimes()
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let kv = o.kv.unwrap_or(KvType::F16);
    if !kv.supported_by(e) {
        return Err(invalid(format!(
            "{} has no {} KV cache (llama.cpp: f16, bf16, q8_0, q4_0; vLLM: f16/bf16, fp8; transformers: f16/bf16)",
            e.name(),
            kv.name()
        )));
    }
    if e == Runtime::LlamaCpp && !o.flash_attn && matches!(kv, KvType::Q8_0 | KvType::Q4_0) {
        return Err(invalid(
            "llama.cpp needs flash attention for a quantized V cache; drop --no-flash-attn",
        ));
    }
    if o.ctx == 0 || o.users == 0 || o.ubatch == Some(0) {
        return Err(invalid("--ctx, --users and --ubatch must be at least 1"));
    }
    if o.ctx > MAX_CTX
        || o.users > MAX_USERS
        || o.ubatch.is_some_and(|u| u > MAX_UBATCH)
        || o.ctx * o.users > MAX_TOKENS
    {
        return Err(invalid(format!(
            "--ctx is at most {MAX_CTX}, --users at most {MAX_USERS}, --ubatch at most {MAX_UBATCH}, and --ctx × --users at most {MAX_TOKENS}"
        )));
    }
    if !(0.05..=1.0).contains(&o.gpu_util) {
        return Err(invalid("--gpu-util must be between 0.05 and 1"));
    }
    Ok(())
}

/// Largest `x` in `1..=hi` with `ok(x)` (monotone), or 0.
fn search(hi: u64, mut ok: impl FnMut(u64) -> Result<bool>) -> Result<u64> {
    if hi == 0 || !ok(1)? {
        return Ok(0);
    }
    let (mut lo, mut hi) = (1, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Most concurrent sequences `max_users` searches up to.
pub const MAX_USERS: u64 = 4096;

/// llama.cpp partial offload: the largest `-ngl` whose GPU share fits, and
/// the host RAM for the rest. llama.cpp offloads the *last* `ngl` layers
/// (and the output when `ngl` = n_layer + 1); their KV stays with them.
fn offload(
    m: &ModelSpec,
    f: DeployFormat,
    o: &Options,
    setup: &GpuSetup,
    lb: &LayerBytes,
) -> Result<(u64, u64, Vec<u64>)> {
    let n = m.shape.layers;
    let cells = llama_cpp_cells(o.ctx, o.users);
    let kv_layer = kv_bytes_per_token(&m.shape, o.kv.unwrap_or(KvType::F16))? / n.max(1) * cells;
    let cap = per_device_capacity(Runtime::LlamaCpp, o, setup);
    let ub = o.ubatch.unwrap_or(LLAMA_CPP_UBATCH);
    // What stays on the host with `gpu_layers` offloaded (the output stays
    // too: the plan only offloads it when everything fits).
    let host = |gpu_layers: u64| {
        let cpu = (n - gpu_layers) as usize;
        lb.input
            + lb.layers[..cpu].iter().sum::<u64>()
            + (n - gpu_layers) * kv_layer
            + lb.output
            + llama_cpp_compute(&m.shape, cells, ub, o.flash_attn)
    };
    let devices = setup.count.max(1) as usize;
    // llama.cpp offloads the last layers; `device_loads` counts a layer's KV
    // with it, and the output with the last device when it is given one.
    for ngl in (1..=n).rev() {
        let part = LayerBytes {
            layers: lb.layers[(n - ngl) as usize..].to_vec(),
            input: lb.input,
            output: 0,
        };
        let split = split_layers(ngl, &vec![1; devices]);
        let loads = device_loads(m, f, Runtime::LlamaCpp, o, setup, &part, &split)?;
        if headroom(&loads, cap) >= 0 {
            return Ok((ngl, host(ngl), split));
        }
    }
    Ok((0, host(0), vec![0; devices]))
}

/// Plans model `m` in format `f` on `engine` with `setup`.
pub fn plan(
    m: &ModelSpec,
    f: DeployFormat,
    e: Runtime,
    o: &Options,
    setup: &GpuSetup,
) -> Result<PlanRow> {
    // Without bfloat16 (compute capability below 8.0) 16-bit weights run
    // as float16: same memory, and the flags say so.
    let f = if f == DeployFormat::Bf16 && !setup.gpu.has_bf16() {
        DeployFormat::F16
    } else {
        f
    };
    validate(m, f, e, o)?;
    if e == Runtime::Vllm && setup.count > 1 && m.shape.heads % setup.count as u64 != 0 {
        return Err(invalid(format!(
            "vLLM tensor parallelism needs the {} attention heads to divide over {} GPUs",
            m.shape.heads, setup.count
        )));
    }
    let lb = layer_bytes(m, f, e)?;
    let ev = evaluate(m, f, e, o, setup, &lb)?;
    let fits = ev.headroom >= 0;
    let ctx_hi = m.shape.max_ctx.max(o.ctx);
    let fits_with = |o: Options| Ok(evaluate(m, f, e, &o, setup, &lb)?.headroom >= 0);
    let max_ctx = search(ctx_hi, |ctx| fits_with(Options { ctx, ..o.clone() }))?;
    let max_users = search(MAX_USERS, |users| fits_with(Options { users, ..o.clone() }))?;
    let need = sum(&ev.loads);
    let (ngl, host_ram, split) = if fits {
        let host = need.host;
        (
            (e == Runtime::LlamaCpp).then_some(m.shape.layers + 1),
            host,
            ev.split,
        )
    } else if e == Runtime::LlamaCpp {
        let (ngl, host, split) = offload(m, f, o, setup, &lb)?;
        (Some(ngl), host, split)
    } else {
        (None, 0, ev.split)
    };
    let ubatch = match e {
        Runtime::LlamaCpp => o
            .ubatch
            .unwrap_or(LLAMA_CPP_UBATCH)
            .min(llama_cpp_cells(o.ctx, o.users)),
        Runtime::Transformers => o.ubatch.unwrap_or(o.ctx).min(o.ctx),
        Runtime::Vllm => o.ubatch.unwrap_or(vllm_default_batched_tokens(setup)),
    };
    let kv_type = o.kv.unwrap_or(KvType::F16);
    let (flags, prerequisite) = commands::flags(m, f, e, o, setup, ngl, &split, ubatch, kv_type);
    Ok(PlanRow {
        gpu: setup.gpu.name.clone(),
        gpus: setup.count,
        format: f,
        engine: e,
        ctx: o.ctx,
        users: o.users,
        ubatch,
        kv_type,
        capacity: per_device_capacity(e, o, setup) * setup.count.max(1) as u64,
        need,
        fits,
        headroom: ev.headroom,
        max_ctx,
        max_users,
        ngl,
        host_ram,
        split,
        price_per_hour: setup.gpu.price_per_hour * setup.count.max(1) as f64,
        flags,
        prerequisite,
    })
}

/// Why a better format was passed over.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub format: DeployFormat,
    pub engine: Runtime,
    pub reason: String,
}

/// `--recommend`: the best-quality format that fits with `margin` to spare.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub margin: f64,
    pub chosen: Option<PlanRow>,
    pub rejected: Vec<Rejected>,
}

/// Tries formats best quality first ([`QUALITY_ORDER`]) on `engine` (or each
/// format's natural engine) and returns the first whose every device keeps
/// `margin` (a fraction of its capacity) free.
pub fn recommend(
    m: &ModelSpec,
    engine: Option<Runtime>,
    o: &Options,
    setup: &GpuSetup,
    margin: f64,
) -> Result<Recommendation> {
    let mut rejected = Vec::new();
    for &f in QUALITY_ORDER {
        let e = match engine {
            Some(e) if f.runtimes().contains(&e) => e,
            Some(_) => continue,
            None => Runtime::natural(f, m),
        };
        if f == DeployFormat::Bf16 && !setup.gpu.has_bf16() {
            rejected.push(Rejected {
                format: f,
                engine: e,
                reason: format!(
                    "{} has no bfloat16 (compute capability below 8.0): f16 instead",
                    setup.gpu.name
                ),
            });
            continue;
        }
        let row = match plan(m, f, e, o, setup) {
            Ok(r) => r,
            Err(err) => {
                rejected.push(Rejected {
                    format: f,
                    engine: e,
                    reason: err.to_string(),
                });
                continue;
            }
        };
        let cap = per_device_capacity(e, o, setup);
        let keep = (cap as f64 * margin) as i64;
        if row.fits && row.headroom >= keep {
            return Ok(Recommendation {
                margin,
                chosen: Some(row),
                rejected,
            });
        }
        let per_dev = row.need.vram() / setup.count.max(1) as u64;
        rejected.push(Rejected {
            format: f,
            engine: e,
            reason: if row.fits {
                format!(
                    "fits, but leaves {} of {} ({:.0}% margin asked)",
                    crate::units::gib(row.headroom.max(0) as u64),
                    crate::units::gib(cap),
                    margin * 100.0
                )
            } else {
                format!(
                    "needs {} per GPU, {} available",
                    crate::units::gib(per_dev),
                    crate::units::gib(cap)
                )
            },
        });
    }
    Ok(Recommendation {
        margin,
        chosen: None,
        rejected,
    })
}
