//! The data files behind `vram-plan`: the model catalog (`data/models.toml`)
//! and the GPU catalog (`data/gpus.toml`, replaceable with `--catalog`),
//! both embedded in the binary; GPU specs on the command line (`T4`,
//! `2xT4`, `16GiB`); and this machine's GPUs from `nvidia-smi`.

use serde::{Deserialize, Serialize};

use super::{invalid, Shape, MIB};
use crate::ops::Result;

const MODELS_TOML: &str = include_str!("../../../data/models.toml");
const GPUS_TOML: &str = include_str!("../../../data/gpus.toml");

/// One catalog model: its shape plus the names it answers to, and the
/// publisher's pre-quantized repos where they exist.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogModel {
    pub repo: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The AWQ (4-bit) repo, e.g. `Qwen/Qwen2.5-14B-Instruct-AWQ`.
    #[serde(default)]
    pub awq: Option<String>,
    /// The GPTQ 4-bit repo, e.g. `Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4`.
    #[serde(default)]
    pub gptq_int4: Option<String>,
    #[serde(flatten)]
    pub shape: Shape,
}

#[derive(Deserialize)]
struct Models {
    model: Vec<CatalogModel>,
}

/// The built-in model catalog.
pub fn models() -> Vec<CatalogModel> {
    let m: Models =
        toml::from_str(MODELS_TOML).expect("data/models.toml parses (checked by a test)");
    m.model
}

/// The catalog model called `name` (its name, Hub repo or an alias, any
/// case), if any.
pub fn find_model(name: &str) -> Option<CatalogModel> {
    let l = name.to_ascii_lowercase();
    models().into_iter().find(|m| {
        m.shape.name.to_ascii_lowercase() == l
            || m.repo.to_ascii_lowercase() == l
            || m.aliases.iter().any(|a| a.to_ascii_lowercase() == l)
    })
}

/// One GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    /// Total memory as `nvidia-smi` reports it, MiB.
    pub vram_mib: u64,
    /// CUDA compute capability (7.5 for a T4), if known.
    #[serde(default)]
    pub compute_capability: Option<f64>,
    #[serde(default)]
    pub bandwidth_gbs: f64,
    #[serde(default)]
    pub price_per_hour: f64,
    #[serde(default)]
    pub price_source: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Gpu {
    /// Whether the GPU computes in bfloat16 (compute capability 8.0 and
    /// up; vLLM refuses bf16 below). Unknown GPUs are assumed recent.
    pub fn has_bf16(&self) -> bool {
        self.compute_capability.is_none_or(|c| c >= 8.0)
    }
}

#[derive(Deserialize)]
struct Gpus {
    gpu: Vec<Gpu>,
}

/// GPUs of the same kind used together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSetup {
    pub gpu: Gpu,
    pub count: u32,
}

impl GpuSetup {
    pub fn label(&self) -> String {
        if self.count > 1 {
            format!("{}x{}", self.count, self.gpu.name)
        } else {
            self.gpu.name.clone()
        }
    }
}

/// The GPU catalog: the built-in one, or `text` from `--catalog`.
pub fn gpus(text: Option<(&str, &str)>) -> Result<Vec<Gpu>> {
    let (src, text) = text.unwrap_or(("data/gpus.toml", GPUS_TOML));
    let g: Gpus = toml::from_str(text).map_err(|e| invalid(format!("{src}: {e}")))?;
    if let Some(bad) = g.gpu.iter().find(|g| g.vram_mib == 0) {
        return Err(invalid(format!(
            "{src}: GPU '{}' has vram_mib = 0",
            bad.name
        )));
    }
    Ok(g.gpu)
}

fn find_gpu<'a>(catalog: &'a [Gpu], name: &str) -> Option<&'a Gpu> {
    let norm = |s: &str| s.to_ascii_lowercase().replace([' ', '_'], "-");
    let n = norm(name);
    catalog
        .iter()
        .find(|g| norm(&g.name) == n || g.aliases.iter().any(|a| norm(a) == n))
}

/// Parses a GPU memory size (`16GiB`, `24GB`, `15360MiB`, `16G`) with
/// [`crate::units::parse_size`].
pub fn parse_vram(s: &str) -> Result<u64> {
    match crate::units::parse_size(s) {
        Some(b) if b >= MIB => Ok(b),
        Some(_) => Err(invalid(format!(
            "--vram '{s}' is too small (a bare number is bytes: say 16GiB or 24GB)"
        ))),
        None => Err(invalid(format!(
            "--vram '{s}': expected a size such as 16GiB or 24GB"
        ))),
    }
}

/// A custom GPU of `bytes` memory (from `--vram`).
pub fn custom_gpu(bytes: u64) -> Gpu {
    Gpu {
        name: format!("{:.1}GiB", bytes as f64 / (1u64 << 30) as f64),
        vram_mib: bytes / MIB,
        compute_capability: None,
        bandwidth_gbs: 0.0,
        price_per_hour: 0.0,
        price_source: String::new(),
        aliases: Vec::new(),
    }
}

/// Parses `--gpu T4,A10G` (one single-GPU setup each) or `--gpus 2xT4`
/// entries (`NxNAME`); a bare size (`16GiB`) is a custom GPU.
pub fn parse_setups(spec: &str, catalog: &[Gpu]) -> Result<Vec<GpuSetup>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (count, name) = match item.split_once(['x', 'X', '*']) {
            Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                let c: u32 = n
                    .parse()
                    .map_err(|_| invalid(format!("'{item}': bad GPU count")))?;
                (c, rest)
            }
            _ => (1, item),
        };
        if count == 0 || count > 64 {
            return Err(invalid(format!("'{item}': the GPU count must be 1 to 64")));
        }
        let gpu = match find_gpu(catalog, name) {
            Some(g) => g.clone(),
            None if name.starts_with(|c: char| c.is_ascii_digit()) => custom_gpu(parse_vram(name)?),
            None => {
                return Err(invalid(format!(
                    "unknown GPU '{name}': known are {} (or give a size such as 16GiB, or --catalog FILE)",
                    catalog.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        out.push(GpuSetup { gpu, count });
    }
    if out.is_empty() {
        return Err(invalid(format!("no GPU in '{spec}'")));
    }
    Ok(out)
}

/// Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`
/// output into setups, one per distinct GPU kind, matched to the catalog by
/// name where possible (for prices) but always with the measured memory.
pub fn parse_nvidia_smi(out: &str, catalog: &[Gpu]) -> Result<Vec<GpuSetup>> {
    let mut setups: Vec<GpuSetup> = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, mem) = line
            .rsplit_once(',')
            .ok_or_else(|| invalid(format!("nvidia-smi: unexpected line '{line}'")))?;
        let mib: u64 = mem
            .trim()
            .parse()
            .map_err(|_| invalid(format!("nvidia-smi: memory '{mem}' is not a number of MiB")))?;
        let name = name.trim();
        let known = catalog.iter().find(|g| {
            let n = name.to_ascii_lowercase();
            let g = g.name.to_ascii_lowercase();
            n.split([' ', '-']).any(|w| w == g) || n.replace(' ', "").contains(&g.replace('-', ""))
        });
        let gpu = Gpu {
            name: name.to_string(),
            vram_mib: mib,
            ..known.cloned().unwrap_or_else(|| custom_gpu(mib * MIB))
        };
        match setups.iter_mut().find(|s| s.gpu == gpu) {
            Some(s) => s.count += 1,
            None => setups.push(GpuSetup { gpu, count: 1 }),
        }
    }
    if setups.is_empty() {
        return Err(invalid("nvidia-smi reported no GPU"));
    }
    Ok(setups)
}

/// This machine's GPUs, read with `nvidia-smi`.
pub fn detect(catalog: &[Gpu]) -> Result<Vec<GpuSetup>> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|e| {
            invalid(format!(
                "--detect: cannot run nvidia-smi ({e}); name the GPU with --gpu or --vram"
            ))
        })?;
    if !out.status.success() {
        return Err(invalid(format!(
            "--detect: nvidia-smi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout), catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_parse_and_name_the_required_models() {
        let m = models();
        for n in [
            "Qwen2.5-0.5B",
            "Qwen2.5-1.5B",
            "Qwen2.5-3B",
            "Qwen2.5-7B",
            "Qwen2.5-14B",
            "Qwen2.5-32B",
            "Qwen2.5-72B",
            "Llama-3-8B",
            "Llama-3.1-8B",
            "Llama-3.1-70B",
            "Mistral-7B",
            "Mistral-Small-24B",
            "SmolLM2-135M",
        ] {
            assert!(m.iter().any(|x| x.shape.name == n), "{n} missing");
        }
        for x in &m {
            let s = &x.shape;
            assert!(s.heads % s.kv_heads == 0, "{}", s.name);
            assert!(s.layers > 0 && s.hidden > 0 && s.ffn > 0 && s.vocab > 0 && s.max_ctx > 0);
        }
        assert_eq!(
            find_model("qwen/qwen2.5-14b-instruct").unwrap().shape.name,
            "Qwen2.5-14B"
        );
        let g = gpus(None).unwrap();
        assert_eq!(find_gpu(&g, "t4").unwrap().vram_mib, 15360);
        assert!(g
            .iter()
            .all(|g| g.price_per_hour > 0.0 && g.bandwidth_gbs > 0.0));
        // Every built-in GPU knows its compute capability; T4 and V100 have
        // no bfloat16.
        assert!(g.iter().all(|g| g.compute_capability.is_some()));
        let bf16: Vec<&str> = g
            .iter()
            .filter(|g| !g.has_bf16())
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(bf16, ["T4", "V100"]);
        let q = find_model("Qwen2.5-14B").unwrap();
        assert_eq!(q.awq.as_deref(), Some("Qwen/Qwen2.5-14B-Instruct-AWQ"));
        assert_eq!(
            q.gptq_int4.as_deref(),
            Some("Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4")
        );
        assert!(find_model("Llama-3.1-8B").unwrap().awq.is_none());
    }

    #[test]
    fn gpu_specs() {
        let g = gpus(None).unwrap();
        let s = parse_setups("2xT4, A10G", &g).unwrap();
        assert_eq!((s[0].count, s[0].gpu.name.as_str()), (2, "T4"));
        assert_eq!((s[1].count, s[1].gpu.name.as_str()), (1, "A10G"));
        let s = parse_setups("16GiB", &g).unwrap();
        assert_eq!(s[0].gpu.vram_mib, 16384);
        assert_eq!(parse_vram("24GB").unwrap(), 24_000_000_000);
        assert!(parse_setups("B300", &g)
            .unwrap_err()
            .to_string()
            .contains("known are"));
        assert!(parse_vram("lots").is_err());
        assert!(gpus(Some(("x.toml", "[[gpu]]\nname='Z'\nvram_mib=0\n"))).is_err());
    }

    #[test]
    fn nvidia_smi_lines() {
        let g = gpus(None).unwrap();
        let s =
            parse_nvidia_smi("Tesla T4, 15360\nTesla T4, 15360\nNVIDIA A10G, 23028\n", &g).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].count, s[0].gpu.vram_mib), (2, 15360));
        assert_eq!(s[0].gpu.price_per_hour, 0.35);
        assert_eq!(s[1].gpu.vram_mib, 23028);
        assert!(parse_nvidia_smi("garbage", &g).is_err());
    }
}
