//! `fragment plan`: which layers go to which device of which host, and the
//! commands that start the pipeline.
//!
//! This module owns the hosts (their spec on the command line and in a
//! hosts TOML file), llama.cpp's device order over them, the per-hop cost
//! over the network and the commands; the memory of each device is
//! `vram-plan`'s model ([`vram::llama_cpp_pipeline`], [`vram::vllm_stages`]),
//! not a second one.
//!
//! Upstream facts it must agree with:
//! * llama.cpp `src/llama.cpp` (`llama_model_load_from_file_impl`): RPC
//!   devices come first, in `--rpc` order, then the head's own GPUs; one
//!   `RPC<n>` device per device an `ggml-rpc-server` exposes (its GPUs, or
//!   its CPU when it has none), numbered across servers
//!   (`ggml/src/ggml-rpc/ggml-rpc.cpp`, `ggml_backend_rpc_add_server`);
//! * `src/llama-model.cpp` (`get_layer_buft_list`): the first
//!   `n_layer + 1 − ngl` layers stay on the head's CPU, the rest and the
//!   output are cut by `--tensor-split` ([`vram::tensor_split`]);
//! * `ggml-rpc.cpp` (`ggml_backend_rpc_buffer_cpy_tensor`): a copy between
//!   two servers goes through the head (two crossings of the network);
//! * vLLM `vllm/distributed/utils.py` (`get_pp_indices`,
//!   `VLLM_PP_LAYER_PARTITION`) and its multi-node guide (Ray, tensor
//!   parallel within a node, pipeline parallel across nodes).

use serde::{Deserialize, Serialize};

use crate::ops::vram::{
    self, catalog, DeployFormat, DeviceKind, GpuSetup, KvType, ModelSpec, Options, PipelineDevice,
    Runtime,
};
use crate::ops::{Error, Result};
use crate::units::human_bytes;

/// `ggml-rpc-server`'s default port.
pub const DEFAULT_PORT: u16 = 50052;
/// Ray's default head port.
const RAY_PORT: u16 = 6379;

fn refused(msg: impl Into<String>) -> Error {
    Error::Refused(msg.into())
}

/// What a host brings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HostDevices {
    /// GPUs of one kind.
    Gpus { setup: GpuSetup },
    /// No GPU: this much memory for llama.cpp's CPU backend.
    Ram { bytes: u64 },
}

/// One machine of the pipeline. The first host given is the head: it runs
/// `llama-server` (or the Ray head), the others run `ggml-rpc-server`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    /// Host name or address, as the other machines reach it.
    pub address: String,
    /// `ggml-rpc-server`'s port on it.
    pub port: u16,
    pub devices: HostDevices,
}

impl Host {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    pub fn label(&self) -> String {
        match &self.devices {
            HostDevices::Gpus { setup } => setup.label(),
            HostDevices::Ram { bytes } => format!("RAM:{}", crate::units::gib(*bytes)),
        }
    }
}

/// How reports name host `i`: the head by its address, the others by the
/// endpoint their `ggml-rpc-server` listens on.
pub fn host_name(hosts: &[Host], i: usize) -> String {
    if i == 0 {
        format!("{} (head)", hosts[0].address)
    } else {
        hosts[i].endpoint()
    }
}

/// Parses a host's devices: a GPU setup as `vram-plan --gpus` takes it
/// (`T4`, `2xT4`, `24GiB`) or `RAM:64G` for a machine without GPU.
pub fn parse_devices(spec: &str, gpus: &[vram::Gpu]) -> Result<HostDevices> {
    let s = spec.trim();
    if let Some(size) = s
        .strip_prefix("RAM:")
        .or_else(|| s.strip_prefix("ram:"))
        .or_else(|| s.strip_prefix("cpu:"))
        .or_else(|| s.strip_prefix("CPU:"))
    {
        let bytes = crate::units::parse_size(size)
            .filter(|&b| b >= vram::MIB)
            .ok_or_else(|| {
                refused(format!(
                    "'{spec}': expected a memory size after RAM: (RAM:64G, RAM:32GiB)"
                ))
            })?;
        return Ok(HostDevices::Ram { bytes });
    }
    let mut setups = catalog::parse_setups(s, gpus)?;
    if setups.len() != 1 {
        return Err(refused(format!(
            "'{spec}': one kind of GPU per host (give each machine its own --host)"
        )));
    }
    Ok(HostDevices::Gpus {
        setup: setups.remove(0),
    })
}

/// Parses `--host ADDRESS[:PORT]=DEVICES` (`gpu-box-1=2xT4`,
/// `10.0.0.7:50053=RAM:64G`).
pub fn parse_host(spec: &str, gpus: &[vram::Gpu]) -> Result<Host> {
    let (addr, devices) = spec.split_once('=').ok_or_else(|| {
        refused(format!(
            "--host '{spec}': expected ADDRESS[:PORT]=DEVICES, e.g. gpu1=T4, 10.0.0.7:50053=2xT4, cpu1=RAM:64G"
        ))
    })?;
    let (address, port) = match addr.rsplit_once(':') {
        Some((a, p)) => (
            a,
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| refused(format!("--host '{spec}': '{p}' is not a port number")))?,
        ),
        None => (addr, DEFAULT_PORT),
    };
    if address.is_empty() || address.contains(char::is_whitespace) {
        return Err(refused(format!(
            "--host '{spec}': the address before '=' is empty or has spaces"
        )));
    }
    Ok(Host {
        address: address.to_string(),
        port,
        devices: parse_devices(devices, gpus)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    host: Vec<HostEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    address: String,
    #[serde(default)]
    port: Option<u16>,
    devices: String,
}

/// Parses a hosts TOML file (`[[host]]` tables with `address`, optional
/// `port`, `devices`), the first one the head. `src` names it in errors.
pub fn parse_hosts_file(src: &str, text: &str, gpus: &[vram::Gpu]) -> Result<Vec<Host>> {
    let f: HostsFile = toml::from_str(text).map_err(|e| refused(format!("{src}: {e}")))?;
    f.host
        .into_iter()
        .map(|h| {
            let port = h.port.unwrap_or(DEFAULT_PORT);
            parse_host(&format!("{}:{port}={}", h.address, h.devices), gpus)
                .map_err(|e| refused(format!("{src}: host '{}': {e}", h.address)))
        })
        .collect()
}

/// Which engines to plan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engines {
    LlamaCpp,
    Vllm,
    Both,
}

/// What `fragment plan` is asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The model as `vram-plan` takes it (a path, config.json, catalog name).
    pub model: String,
    /// The format served (default: the model's own tensors for a GGUF,
    /// Q4_K_M for llama.cpp and bf16 for vLLM otherwise).
    pub format: Option<DeployFormat>,
    pub hosts: Vec<Host>,
    pub options: Options,
    pub engines: Engines,
    /// Link bandwidth between hosts, bits per second.
    pub link_bps: f64,
    /// Round-trip time between hosts, seconds.
    pub rtt: f64,
}

/// One device of the llama.cpp pipeline and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    /// Index of its host in the request.
    pub host: usize,
    /// llama.cpp's name for it: `CPU` (the head's), `RPC<n>`, `CUDA<n>`.
    pub device: String,
    /// GPU name, or `CPU`.
    pub kind: String,
    pub capacity: u64,
    /// Layers `first_layer..end_layer`.
    pub first_layer: u64,
    pub end_layer: u64,
    pub output: bool,
    pub need: vram::Breakdown,
    /// capacity − need.
    pub free_after: i64,
}

/// The cost of one crossing of the network per generated token.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub from: String,
    pub to: String,
    /// What crosses: the hidden state between layers, the logits back to
    /// the head.
    pub carries: &'static str,
    /// Bytes on the wire per token (each way it goes).
    pub bytes_per_token: u64,
    /// Network time per generated token: the bytes at `--link`, plus one
    /// round trip.
    pub ms_per_token: f64,
    /// Network time for a 1000-token prompt (bandwidth only: a prompt's
    /// micro-batches pipeline their round trips).
    pub ms_per_1k_prompt: f64,
}

/// llama.cpp's side of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct LlamaCppPlan {
    pub format: DeployFormat,
    /// The GGUF the head loads (and what to make first, if anything).
    pub model_file: String,
    pub prerequisite: Option<String>,
    pub devices: Vec<DevicePlan>,
    /// Host RAM on the head besides its CPU device: the token embedding.
    pub head_host_bytes: u64,
    pub ngl: u64,
    pub tensor_split: String,
    pub hops: Vec<Hop>,
    /// `ggml-rpc-server` per remote host (host index, command).
    pub rpc_servers: Vec<(usize, String)>,
    /// The head's flags shared by llama-server, llama-cli, llama-perplexity.
    pub head_args: Vec<String>,
    pub head_command: String,
}

/// vLLM's side of the plan, or why it does not apply.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum VllmSide {
    Plan(VllmPlan),
    NotApplicable { not_applicable: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct VllmPlan {
    pub format: DeployFormat,
    pub pipeline_parallel: usize,
    pub tensor_parallel: u32,
    /// Layers per stage (`VLLM_PP_LAYER_PARTITION`).
    pub partition: Vec<u64>,
    /// Per stage, one rank's memory.
    pub stages: Vec<vram::Breakdown>,
    pub capacity_per_gpu: u64,
    pub hops: Vec<Hop>,
    /// (host index, command) in the order to run them.
    pub commands: Vec<(usize, String)>,
}

/// What `fragment plan` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: String,
    pub layers: u64,
    pub hosts: Vec<Host>,
    pub options: Options,
    pub link_bps: f64,
    pub rtt_ms: f64,
    /// Layers per host in host order, from llama.cpp's plan (what
    /// `fragment split --by-layer` takes).
    pub layers_per_host: Option<Vec<u64>>,
    pub llama_cpp: Option<LlamaCppPlan>,
    pub vllm: Option<VllmSide>,
}

/// Plans `req`.
pub fn plan(req: &Request) -> Result<Plan> {
    if req.hosts.is_empty() {
        return Err(refused(
            "no host: give --host ADDRESS=DEVICES for each machine (the first is the head), or --hosts FILE",
        ));
    }
    // The head runs no ggml-rpc-server: only the others need distinct endpoints.
    for (i, h) in req.hosts.iter().enumerate().skip(1) {
        if let Some(j) = req.hosts[1..i]
            .iter()
            .position(|o| o.endpoint() == h.endpoint())
        {
            return Err(refused(format!(
                "hosts {} and {} are both {}: give each ggml-rpc-server its own port (ADDRESS:PORT=DEVICES)",
                j + 2,
                i + 1,
                h.endpoint()
            )));
        }
    }
    if !(req.link_bps.is_finite() && req.link_bps > 0.0 && req.rtt.is_finite() && req.rtt >= 0.0) {
        return Err(refused("--link must be positive and --rtt not negative"));
    }
    let m = vram::request::open_model(&req.model)?;
    let want_llama = req.engines != Engines::Vllm;
    let want_vllm = req.engines != Engines::LlamaCpp;
    let llama_cpp = if want_llama {
        Some(llama_cpp_plan(&m, req)?)
    } else {
        None
    };
    let vllm = if want_vllm {
        Some(vllm_plan(&m, req, req.engines == Engines::Vllm)?)
    } else {
        None
    };
    Ok(Plan {
        model: m.source.clone(),
        layers: m.shape.layers,
        hosts: req.hosts.clone(),
        options: req.options.clone(),
        link_bps: req.link_bps,
        rtt_ms: req.rtt * 1e3,
        layers_per_host: llama_cpp.as_ref().map(|l| {
            let mut per = vec![0; req.hosts.len()];
            for d in &l.devices {
                per[d.host] += d.end_layer - d.first_layer;
            }
            per
        }),
        llama_cpp,
        vllm,
    })
}

/// A device in llama.cpp's order, before layers are given.
struct Slot {
    host: usize,
    device: String,
    kind: String,
    dev: PipelineDevice,
}

/// llama.cpp's devices over the hosts: the head's CPU when the head has no
/// GPU, the remote hosts' devices (`RPC0…`), then the head's GPUs.
fn llama_cpp_devices(hosts: &[Host]) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut rpc = 0;
    let gpus = |h: usize, s: &GpuSetup, name: &mut dyn FnMut() -> String| -> Vec<Slot> {
        (0..s.count)
            .map(|_| Slot {
                host: h,
                device: name(),
                kind: s.gpu.name.clone(),
                dev: PipelineDevice {
                    capacity: s.gpu.vram_mib * vram::MIB,
                    kind: DeviceKind::Gpu,
                },
            })
            .collect()
    };
    let cpu = |h: usize, device: String, bytes: u64| Slot {
        host: h,
        kind: "CPU".into(),
        dev: PipelineDevice {
            capacity: bytes,
            kind: if device == "CPU" {
                DeviceKind::HeadCpu
            } else {
                DeviceKind::Cpu
            },
        },
        device,
    };
    if let HostDevices::Ram { bytes } = hosts[0].devices {
        out.push(cpu(0, "CPU".into(), bytes));
    }
    for (i, h) in hosts.iter().enumerate().skip(1) {
        let mut next = || {
            rpc += 1;
            format!("RPC{}", rpc - 1)
        };
        match &h.devices {
            HostDevices::Gpus { setup } => out.extend(gpus(i, setup, &mut next)),
            HostDevices::Ram { bytes } => out.push(cpu(i, next(), *bytes)),
        }
    }
    if let HostDevices::Gpus { setup } = &hosts[0].devices {
        let mut cuda = 0;
        out.extend(gpus(0, setup, &mut || {
            cuda += 1;
            format!("CUDA{}", cuda - 1)
        }));
    }
    out
}

fn llama_cpp_format(m: &ModelSpec, asked: Option<DeployFormat>) -> Result<DeployFormat> {
    let f = asked.unwrap_or(if m.is_gguf {
        DeployFormat::Native
    } else {
        DeployFormat::Q4KM
    });
    if !f.runtimes().contains(&Runtime::LlamaCpp) && f != DeployFormat::Native {
        return Err(refused(format!(
            "llama.cpp does not load {}: pick a GGUF type (--quant q4_k_m, q8_0, …) or --engine vllm",
            f.name()
        )));
    }
    if f == DeployFormat::Native && !m.is_gguf {
        return Err(refused(
            "llama.cpp loads GGUF files: plan a GGUF model, or name the GGUF type to make (--quant q4_k_m)",
        ));
    }
    Ok(f)
}

fn llama_cpp_plan(m: &ModelSpec, req: &Request) -> Result<LlamaCppPlan> {
    let f = llama_cpp_format(m, req.format)?;
    let o = &req.options;
    let slots = llama_cpp_devices(&req.hosts);
    let n = m.shape.layers;
    if slots.len() as u64 > n {
        return Err(refused(format!(
            "{} devices but the model has only {n} layers: every device needs at least one layer; use fewer hosts",
            slots.len()
        )));
    }
    let devices: Vec<PipelineDevice> = slots.iter().map(|s| s.dev).collect();
    let p = vram::llama_cpp_pipeline(m, f, o, &devices)?;
    let head_cpu = !slots.is_empty() && slots[0].device == "CPU";
    let mut plans = Vec::new();
    let mut first = 0;
    for (i, (slot, (&cnt, need))) in slots.iter().zip(p.split.iter().zip(&p.loads)).enumerate() {
        let mut need = need.clone();
        if i == 0 && head_cpu {
            // The head's CPU device shares its RAM with the embedding.
            need.host = p.host;
        }
        let used = need.vram() + if i == 0 && head_cpu { need.host } else { 0 };
        plans.push(DevicePlan {
            host: slot.host,
            device: slot.device.clone(),
            kind: slot.kind.clone(),
            capacity: slot.dev.capacity,
            first_layer: first,
            end_layer: first + cnt,
            output: i + 1 == slots.len(),
            free_after: slot.dev.capacity as i64 - used as i64,
            need,
        });
        first += cnt;
    }
    let label = |d: &DevicePlan| {
        format!(
            "{} {} on {}",
            d.device,
            d.kind,
            req.hosts[d.host].endpoint()
        )
    };
    if let Some(d) = plans.iter().find(|d| d.end_layer == d.first_layer) {
        return Err(refused(format!(
            "{} would get no layer (too little memory left after its fixed costs, {} needed before any layer): drop this host or give it more memory",
            label(d),
            human_bytes(d.need.vram())
        )));
    }
    let short: Vec<String> = plans
        .iter()
        .filter(|d| d.free_after < 0)
        .map(|d| {
            format!(
                "{}: needs {} of {} (short by {})",
                label(d),
                human_bytes(d.capacity.saturating_add_signed(-d.free_after)),
                human_bytes(d.capacity),
                human_bytes(d.free_after.unsigned_abs())
            )
        })
        .collect();
    if !short.is_empty() {
        return Err(refused(format!(
            "{} does not fit these hosts at --ctx {} × --users {} in {}:\n  {}\nadd a host, use a smaller format (--quant), a quantized KV cache (--kv-cache q8_0) or a shorter context",
            m.shape.name,
            o.ctx,
            o.users,
            f.name(),
            short.join("\n  ")
        )));
    }
    let gpu_split: Vec<u64> = p.split[usize::from(head_cpu)..].to_vec();
    let ngl = if head_cpu { n + 1 - p.split[0] } else { 999 };
    let tensor_split = vram::tensor_split(&gpu_split, true);
    let source = vram::source(m, f, Runtime::LlamaCpp);
    let kv = o.kv.unwrap_or(KvType::F16);
    let remotes: Vec<String> = req.hosts[1..].iter().map(Host::endpoint).collect();
    let mut head_args: Vec<String> = vec!["-m".into(), source.name.clone()];
    if !remotes.is_empty() {
        head_args.extend(["--rpc".into(), remotes.join(",")]);
    }
    head_args.extend([
        "-ngl".into(),
        ngl.to_string(),
        "--split-mode".into(),
        "layer".into(),
    ]);
    if gpu_split.len() > 1 {
        head_args.extend(["--tensor-split".into(), tensor_split.clone()]);
    }
    head_args.extend([
        "-c".into(),
        (o.ctx * o.users).to_string(),
        "-np".into(),
        o.users.to_string(),
        "-ub".into(),
        o.ubatch.unwrap_or(vram::LLAMA_CPP_UBATCH).to_string(),
        "-fa".into(),
        if o.flash_attn { "on" } else { "off" }.into(),
        "--cache-type-k".into(),
        kv.name().into(),
        "--cache-type-v".into(),
        kv.name().into(),
    ]);
    let rpc_servers = req
        .hosts
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, h)| {
            (
                i,
                format!("ggml-rpc-server -H {} -p {} -c", h.address, h.port),
            )
        })
        .collect();
    let head_command = format!("llama-server {}", shell_join(&head_args));
    let hops = llama_cpp_hops(m, &plans, req);
    Ok(LlamaCppPlan {
        format: f,
        model_file: source.name,
        prerequisite: source.prerequisite,
        head_host_bytes: p.host,
        devices: plans,
        ngl,
        tensor_split,
        hops,
        rpc_servers,
        head_args,
        head_command,
    })
}

/// A hop carrying `bytes` per token; `per_prompt` when a whole prompt
/// sends them once per token (activations), not once (the last logits).
fn hop(
    from: String,
    to: String,
    carries: &'static str,
    bytes: u64,
    per_prompt: bool,
    req: &Request,
) -> Hop {
    let wire = bytes as f64 * 8.0 / req.link_bps;
    Hop {
        from,
        to,
        carries,
        bytes_per_token: bytes,
        ms_per_token: (wire + req.rtt) * 1e3,
        ms_per_1k_prompt: wire * 1e3 * if per_prompt { 1000.0 } else { 1.0 },
    }
}

/// The network crossings of one llama.cpp token. Activations travel as
/// f32; a copy between two RPC servers goes through the head; the logits
/// of the last device come back to the head when it is remote.
fn llama_cpp_hops(m: &ModelSpec, devices: &[DevicePlan], req: &Request) -> Vec<Hop> {
    let hidden = m.shape.hidden * 4;
    let name = |h: usize| host_name(&req.hosts, h);
    let mut out = Vec::new();
    let first = devices[0].host;
    if first != 0 {
        out.push(hop(name(0), name(first), "embeddings", hidden, true, req));
    }
    for w in devices.windows(2) {
        let (a, b) = (w[0].host, w[1].host);
        if a == b {
            continue;
        }
        if a != 0 && b != 0 {
            out.push(hop(
                name(a),
                name(0),
                "hidden state (via the head)",
                hidden,
                true,
                req,
            ));
            out.push(hop(
                name(0),
                name(b),
                "hidden state (via the head)",
                hidden,
                true,
                req,
            ));
        } else {
            out.push(hop(name(a), name(b), "hidden state", hidden, true, req));
        }
    }
    let last = devices[devices.len() - 1].host;
    if last != 0 {
        out.push(hop(
            name(last),
            name(0),
            "logits",
            m.shape.vocab * 4,
            false,
            req,
        ));
    }
    out
}

fn vllm_plan(m: &ModelSpec, req: &Request, asked: bool) -> Result<VllmSide> {
    let not = |why: String| -> Result<VllmSide> {
        if asked {
            Err(refused(why))
        } else {
            Ok(VllmSide::NotApplicable {
                not_applicable: why,
            })
        }
    };
    if m.is_gguf {
        return not(
            "vLLM serves the safetensors checkpoint: plan the Hugging Face model (or its catalog name) for vLLM"
                .into(),
        );
    }
    let mut setups = Vec::new();
    for h in &req.hosts {
        match &h.devices {
            HostDevices::Gpus { setup } => setups.push(setup.clone()),
            HostDevices::Ram { .. } => {
                return not(format!(
                    "vLLM needs GPUs on every node ({} has none)",
                    h.endpoint()
                ))
            }
        }
    }
    let setup = setups[0].clone();
    if setups.iter().any(|s| s.count != setup.count) {
        return not(
            "vLLM runs one tensor-parallel size on every node: give each host the same number of GPUs"
                .into(),
        );
    }
    let f = req.format.unwrap_or(DeployFormat::Bf16);
    if !f.runtimes().contains(&Runtime::Vllm) {
        return not(format!(
            "vLLM does not load {}: plan bf16, awq, gptq or int8 for vLLM",
            f.name()
        ));
    }
    let o = &req.options;
    let n = m.shape.layers;
    let pp = req.hosts.len();
    if pp as u64 > n {
        return not(format!("{pp} pipeline stages but only {n} layers"));
    }
    // The smallest GPU bounds a stage; stages are split in proportion to
    // what each node's GPUs have left after their fixed costs.
    let caps: Vec<u64> = setups
        .iter()
        .map(|s| (s.gpu.vram_mib as f64 * vram::MIB as f64 * o.gpu_util) as u64)
        .collect();
    let fixed = vram::vllm_stages(m, f, o, &setup, &vec![0; pp])?;
    let free: Vec<u64> = caps
        .iter()
        .zip(&fixed)
        .map(|(c, b)| c.saturating_sub(b.vram()) * setup.count as u64)
        .collect();
    let partition = vram::split_layers(n, &free);
    let stages = vram::vllm_stages(m, f, o, &setup, &partition)?;
    let short: Vec<String> = stages
        .iter()
        .zip(&caps)
        .zip(&req.hosts)
        .filter(|((b, &c), _)| b.vram() > c)
        .map(|((b, &c), h)| {
            format!(
                "{}: each GPU needs {} of {} usable (short by {})",
                h.endpoint(),
                crate::units::gib(b.vram()),
                crate::units::gib(c),
                crate::units::gib(b.vram() - c)
            )
        })
        .collect();
    if !short.is_empty() {
        return not(format!(
            "{} in {} does not fit vLLM on these hosts at --ctx {} × --users {}:\n  {}",
            m.shape.name,
            f.name(),
            o.ctx,
            o.users,
            short.join("\n  ")
        ));
    }
    let source = vram::source(m, f, Runtime::Vllm);
    let head = &req.hosts[0].address;
    let mut commands = vec![(0, format!("ray start --head --port={RAY_PORT}"))];
    for (i, _) in req.hosts.iter().enumerate().skip(1) {
        commands.push((i, format!("ray start --address={head}:{RAY_PORT}")));
    }
    let partition_s: Vec<String> = partition.iter().map(u64::to_string).collect();
    let dtype = if setups.iter().all(|s| s.gpu.has_bf16()) {
        ""
    } else {
        " --dtype half"
    };
    commands.push((
        0,
        format!(
            "VLLM_PP_LAYER_PARTITION={} vllm serve {} --pipeline-parallel-size {pp} --tensor-parallel-size {} --distributed-executor-backend ray --max-model-len {} --max-num-seqs {} --gpu-memory-utilization {}{dtype}",
            partition_s.join(","),
            source.name,
            setup.count,
            o.ctx,
            o.users,
            o.gpu_util
        ),
    ));
    // vLLM hands stages the hidden states and the residual, 16-bit each.
    let bytes = 2 * m.shape.hidden * 2;
    let hops = (1..pp)
        .map(|i| {
            hop(
                host_name(&req.hosts, i - 1),
                host_name(&req.hosts, i),
                "hidden states + residual",
                bytes,
                true,
                req,
            )
        })
        .collect();
    Ok(VllmSide::Plan(VllmPlan {
        format: f,
        pipeline_parallel: pp,
        tensor_parallel: setup.count,
        partition,
        stages,
        capacity_per_gpu: *caps.iter().min().unwrap_or(&0),
        hops,
        commands,
    }))
}

/// Reads a saved plan (`fragment plan --json > FILE`): the layers per host
/// (`fragment split --plan` cuts one piece per host) and the whole plan,
/// for the manifest.
pub fn read_plan(path: &std::path::Path) -> Result<(Vec<u64>, serde_json::Value)> {
    let bad = |why: String| {
        refused(format!(
            "--plan {}: {why} (make it with `llmtool fragment plan … --json > FILE`)",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let counts = v["layers_per_host"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(serde_json::Value::as_u64)
                .collect::<Option<Vec<u64>>>()
        })
        .ok_or_else(|| bad("no layers_per_host (a plan with llama.cpp's side)".into()))?;
    Ok((counts, v))
}

/// Joins arguments for a shell, quoting those that need it.
fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a link speed: `1Gbit`, `10Gbit/s`, `100Mbit`, `25GbE`,
/// `125MB/s` (bytes). Returns bits per second.
pub fn parse_link(s: &str) -> Result<f64> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches("ps");
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| bad_link(s))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "kbit" | "kb" | "kbe" => 1e3,
        "mbit" | "mbe" => 1e6,
        "gbit" | "gbe" => 1e9,
        "kbyte" => 8e3,
        "mbyte" => 8e6,
        "gbyte" => 8e9,
        _ => match unit.trim() {
            "KB" => 8e3,
            "MB" => 8e6,
            "GB" => 8e9,
            "Mb" => 1e6,
            "Gb" => 1e9,
            _ => return Err(bad_link(s)),
        },
    };
    let bps = v * mult;
    if bps.is_finite() && bps > 0.0 {
        Ok(bps)
    } else {
        Err(bad_link(s))
    }
}

fn bad_link(s: &str) -> Error {
    refused(format!(
        "--link '{s}': expected a speed such as 1Gbit, 10Gbit, 100Mbit or 125MB/s"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<vram::Gpu> {
        catalog::gpus(None).unwrap()
    }

    #[test]
    fn hosts_parse() {
        let h = parse_host("gpu1=2xT4", &gpus()).unwrap();
        assert_eq!((h.address.as_str(), h.port), ("gpu1", DEFAULT_PORT));
        assert!(matches!(h.devices, HostDevices::Gpus { ref setup } if setup.count == 2));
        let h = parse_host("10.0.0.7:50060=RAM:64G", &gpus()).unwrap();
        assert_eq!(h.port, 50060);
        assert_eq!(h.devices, HostDevices::Ram { bytes: 64 << 30 });
        for bad in ["gpu1", "=T4", "a:x=T4", "a=RAM:lots", "a=H9000"] {
            assert!(parse_host(bad, &gpus()).is_err(), "{bad}");
        }
        let err = parse_host("a=H9000", &gpus()).unwrap_err().to_string();
        assert!(err.contains("T4") && err.contains("A10G"), "{err}");
    }

    #[test]
    fn hosts_file_parses_and_names_the_host() {
        let text = "[[host]]\naddress = \"a\"\ndevices = \"T4\"\n[[host]]\naddress = \"b\"\nport = 50053\ndevices = \"RAM:8G\"\n";
        let h = parse_hosts_file("hosts.toml", text, &gpus()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].endpoint(), "b:50053");
        let err = parse_hosts_file(
            "hosts.toml",
            "[[host]]\naddress=\"a\"\ndevices=\"Z9\"\n",
            &gpus(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hosts.toml") && err.contains("'a'"), "{err}");
        assert!(
            parse_hosts_file("h", "[[host]]\naddress=\"a\"\ndevice=\"T4\"\n", &gpus()).is_err()
        );
    }

    #[test]
    fn device_order_is_llama_cpp_s() {
        let g = gpus();
        let hosts = vec![
            parse_host("head=2xT4", &g).unwrap(),
            parse_host("b=RAM:16G", &g).unwrap(),
            parse_host("c=2xA10G", &g).unwrap(),
        ];
        let names: Vec<String> = llama_cpp_devices(&hosts)
            .into_iter()
            .map(|s| s.device)
            .collect();
        assert_eq!(names, ["RPC0", "RPC1", "RPC2", "CUDA0", "CUDA1"]);
        let hosts = vec![
            parse_host("head=RAM:16G", &g).unwrap(),
            parse_host("b=T4", &g).unwrap(),
        ];
        let names: Vec<String> = llama_cpp_devices(&hosts)
            .into_iter()
            .map(|s| s.device)
            .collect();
        assert_eq!(names, ["CPU", "RPC0"]);
    }

    #[test]
    fn links_parse() {
        assert_eq!(parse_link("1Gbit").unwrap(), 1e9);
        assert_eq!(parse_link("10Gbit/s").unwrap(), 1e10);
        assert_eq!(parse_link("100Mbps").unwrap(), 1e8);
        assert_eq!(parse_link("125MB/s").unwrap(), 1e9);
        assert_eq!(parse_link("25GbE").unwrap(), 25e9);
        assert!(parse_link("fast").is_err());
        assert!(parse_link("0Gbit").is_err());
    }
}
