//! `llmtool fragment plan`: arguments → [`Request`], and the plan as tables
//! and commands for people, or JSON.

use anyhow::{Context, Result};

use super::args::MemoryArgs;
use super::output::{self, table, Render};
use crate::ops::fragment::plan::{self, Engines, Plan, Request, VllmSide};
use crate::ops::vram::{self, DeployFormat};
use crate::units::human_bytes as size;

/// Place a model's layers on several hosts and print the commands that
/// start it: llama.cpp over RPC, vLLM pipeline parallel.
///
/// Each device gets consecutive layers in proportion to the memory it has
/// left after its KV cache, compute buffer and overhead (vram-plan's
/// model, largest remainder first); the first host is the head (it loads
/// the model and serves), every other host runs ggml-rpc-server. Devices
/// follow llama.cpp's order: the head's CPU when it has no GPU, the remote
/// hosts' devices (RPC0, RPC1, … in --host order), then the head's GPUs.
/// Every device is checked to fit; a plan that does not is refused with
/// the shortfall per host. The network cost of each hop per generated
/// token is estimated at --link and --rtt.
///
/// --json prints the plan for scripts; its `layers_per_host` is what
/// `fragment split --by-layer` takes.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    llmtool fragment plan Qwen2.5-14B --quant q4_k_m --host gpu1=T4 --host gpu2=T4 --ctx 8192\n  \
    llmtool fragment plan Qwen2.5-72B --host a=2xA10G --host b=2xA10G --host c=2xA10G --quant awq --engine vllm\n  \
    llmtool fragment plan model-Q4_K_M.gguf --host head=RAM:32G --host 10.0.0.7=T4 --link 10Gbit --json\n  \
    llmtool fragment plan model.gguf --hosts hosts.toml --kv-cache q8_0 --users 4\n\n\
Hosts: ADDRESS[:PORT]=DEVICES, DEVICES as vram-plan --gpus takes them (T4, 2xT4,\n\
24GiB) or RAM:64G for a machine without GPU. A hosts file holds [[host]] tables\n\
with address, port (default 50052) and devices. GPU names: vram-plan --list.")]
pub struct Args {
    /// Model: GGUF or Hugging Face model, config.json, or catalog name.
    model: String,
    /// A host: ADDRESS[:PORT]=DEVICES; the first is the head. Repeat per host.
    #[arg(long = "host", required_unless_present = "hosts")]
    host: Vec<String>,
    /// A TOML file of [[host]] tables (address, port, devices), instead of --host.
    #[arg(long, conflicts_with = "host")]
    hosts: Option<std::path::PathBuf>,
    /// The format served (default: a GGUF's own tensors; else q4_k_m for
    /// llama.cpp and bf16 for vLLM).
    #[arg(long)]
    quant: Option<String>,
    /// llama.cpp, vllm or both.
    #[arg(long, default_value = "both")]
    engine: String,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Network bandwidth between hosts (1Gbit, 10Gbit, 125MB/s).
    #[arg(long, default_value = "1Gbit")]
    link: String,
    /// Round-trip time between hosts, milliseconds.
    #[arg(long, default_value_t = 0.5)]
    rtt_ms: f64,
    /// GPU catalog TOML replacing the built-in one (format: data/gpus.toml).
    #[arg(long)]
    catalog: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let catalog = super::args::read_catalog(a.catalog.as_deref())?;
    let gpus = vram::request::gpu_catalog(catalog.as_ref())?;
    let hosts = match &a.hosts {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read --hosts {}", p.display()))?;
            plan::parse_hosts_file(&p.display().to_string(), &text, &gpus)?
        }
        None => a
            .host
            .iter()
            .map(|h| plan::parse_host(h, &gpus))
            .collect::<Result<_, _>>()?,
    };
    let engines = match a.engine.to_ascii_lowercase().as_str() {
        "llama.cpp" | "llamacpp" | "llama-cpp" => Engines::LlamaCpp,
        "vllm" => Engines::Vllm,
        "both" => Engines::Both,
        other => anyhow::bail!("--engine '{other}': expected llama.cpp, vllm or both"),
    };
    let req = Request {
        model: super::vram_plan::plannable(a.model)?,
        format: a.quant.as_deref().map(DeployFormat::parse).transpose()?,
        hosts,
        options: a.memory.options()?,
        engines,
        link_bps: plan::parse_link(&a.link)?,
        rtt: a.rtt_ms / 1e3,
    };
    output::emit(&plan::plan(&req)?, a.json)
}

impl Render for Plan {
    fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }

    fn text(&self) -> String {
        let mut s = format!(
            "{}: {} layers, --ctx {} × --users {}, link {:.3} Gbit/s, rtt {} ms\n",
            self.model,
            self.layers,
            self.options.ctx,
            self.options.users,
            self.link_bps / 1e9,
            self.rtt_ms
        );
        let host = |i: usize| plan::host_name(&self.hosts, i);
        if let Some(l) = &self.llama_cpp {
            s += &format!("\nllama.cpp, {}:\n", l.format.name());
            let mut t = table();
            t.set_header([
                "host", "device", "kind", "layers", "weights", "KV", "compute", "overhead",
                "total", "capacity", "free",
            ]);
            for d in &l.devices {
                let layers = format!(
                    "{}-{}{}",
                    d.first_layer,
                    d.end_layer.saturating_sub(1),
                    if d.output { " +out" } else { "" }
                );
                t.add_row([
                    host(d.host),
                    d.device.clone(),
                    d.kind.clone(),
                    layers,
                    size(d.need.weights),
                    size(d.need.kv),
                    size(d.need.compute),
                    size(d.need.overhead),
                    size(d.need.vram() + d.need.host),
                    size(d.capacity),
                    size(d.free_after.max(0) as u64),
                ]);
            }
            output::align_right(&mut t, &[4, 5, 6, 7, 8, 9, 10]);
            s += &format!("{t}\n");
            if l.devices[0].device != "CPU" {
                s += &format!(
                    "The head also keeps the token embedding in RAM: {}\n",
                    size(l.head_host_bytes)
                );
            }
            s += &hops_table(&l.hops);
            if let Some(p) = &l.prerequisite {
                s += &format!("First: {p}\n");
            }
            s += "Commands:\n";
            for (i, c) in &l.rpc_servers {
                s += &format!("  on {}: {c}\n", self.hosts[*i].address);
            }
            s += &format!(
                "  on {} (head): {}\n",
                self.hosts[0].address, l.head_command
            );
        }
        match &self.vllm {
            Some(VllmSide::Plan(v)) => {
                s += &format!(
                    "\nvLLM, {}: pipeline parallel {} × tensor parallel {}, layers per stage {}\n",
                    v.format.name(),
                    v.pipeline_parallel,
                    v.tensor_parallel,
                    v.partition
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let mut t = table();
                t.set_header([
                    "host",
                    "layers",
                    "weights",
                    "KV",
                    "activations",
                    "overhead",
                    "per GPU",
                    "usable",
                ]);
                let mut first = 0;
                for (i, (b, n)) in v.stages.iter().zip(&v.partition).enumerate() {
                    t.add_row([
                        host(i),
                        format!("{}-{}", first, first + n - 1),
                        size(b.weights),
                        size(b.kv),
                        size(b.compute),
                        size(b.overhead),
                        size(b.vram()),
                        size(v.capacity_per_gpu),
                    ]);
                    first += n;
                }
                output::align_right(&mut t, &[1, 2, 3, 4, 5, 6, 7]);
                s += &format!("{t}\n");
                s += &hops_table(&v.hops);
                s += "Commands:\n";
                for (i, c) in &v.commands {
                    s += &format!("  on {}: {c}\n", self.hosts[*i].address);
                }
            }
            Some(VllmSide::NotApplicable { not_applicable }) => {
                s += &format!("\nvLLM: not planned: {not_applicable}\n");
            }
            None => {}
        }
        s
    }
}

fn hops_table(hops: &[plan::Hop]) -> String {
    if hops.is_empty() {
        return "No network hop: every layer is on the head.\n".into();
    }
    let mut t = table();
    t.set_header([
        "from",
        "to",
        "carries",
        "bytes/token",
        "ms/token",
        "ms/1k prompt",
    ]);
    for h in hops {
        t.add_row([
            h.from.clone(),
            h.to.clone(),
            h.carries.to_string(),
            h.bytes_per_token.to_string(),
            format!("{:.3}", h.ms_per_token),
            format!("{:.1}", h.ms_per_1k_prompt),
        ]);
    }
    output::align_right(&mut t, &[3, 4, 5]);
    let total: f64 = hops.iter().map(|h| h.ms_per_token).sum();
    format!("Network per generated token: {total:.3} ms\n{t}\n")
}
