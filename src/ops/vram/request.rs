//! One `vram-plan` call: what is asked ([`Request`]: a model spec, GPU
//! setups, formats, runtime, options) and what comes back ([`Report`]):
//! plan rows, recommendations or the catalogs. The defaults a user gets
//! without flags (runtime per model and KV type, formats per runtime) are
//! decided here.

use serde::Serialize;

use super::catalog::{self, CatalogModel};
use super::{
    plan, recommend, DeployFormat, Gpu, GpuSetup, KvType, ModelSpec, Options, PlanRow,
    Recommendation, Runtime,
};
use crate::ops::{Error, Result};
use crate::store::Model;

/// Which GPUs to plan for.
#[derive(Debug, Clone)]
pub enum Gpus {
    /// Catalog names or sizes, comma-separated (`T4,A10G,16GiB`, `2xT4`).
    Named(String),
    /// One GPU of this many bytes.
    Vram(u64),
    /// This machine's GPUs (nvidia-smi).
    Detect,
}

/// What `vram-plan` is asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path, cached repo id, config.json or catalog name.
    pub model: String,
    /// Formats to compare; empty means the runtime's usual spread.
    pub formats: Vec<DeployFormat>,
    pub runtime: Option<Runtime>,
    pub gpus: Gpus,
    /// A GPU catalog replacing the built-in one: (label, TOML text).
    pub catalog: Option<(String, String)>,
    pub options: Options,
    /// Pick the best-quality format that fits with this fraction free.
    pub recommend: Option<f64>,
}

/// The GPUs compared when none is named.
pub const DEFAULT_GPUS: &str = "T4,A10G,L4,A100-40GB";

/// What `vram-plan` answers: the model planned and the [`Answer`] (whose
/// JSON is the report's).
#[derive(Debug)]
pub struct Report {
    pub model: ModelSpec,
    pub answer: Answer,
}

impl Report {
    /// Whether anything planned fits: a row that fits, or a GPU setup with
    /// a recommended format (`vram-plan`'s exit status says so).
    pub fn anything_fits(&self) -> bool {
        match &self.answer {
            Answer::Plans { plans, .. } => plans.iter().any(|p| p.fits),
            Answer::Recommendations(v) => v.iter().any(|r| r.recommendation.chosen.is_some()),
        }
    }
}

/// Plan rows, or recommendations.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// One row per GPU setup × format.
    Plans {
        model: super::Shape,
        source: String,
        parameters: u64,
        options: Options,
        plans: Vec<PlanRow>,
    },
    /// The best format per GPU setup.
    Recommendations(Vec<GpuRecommendation>),
}

/// `--recommend`'s verdict for one GPU setup.
#[derive(Debug, Serialize)]
pub struct GpuRecommendation {
    pub gpu: String,
    pub recommendation: Recommendation,
}

/// The model and GPU catalogs (`vram-plan --list`).
#[derive(Debug)]
pub struct Catalogs {
    pub models: Vec<CatalogModel>,
    pub gpus: Vec<Gpu>,
}

/// The GPU catalog: the built-in one, or `catalog` = (label, TOML text).
pub fn gpu_catalog(catalog: Option<&(String, String)>) -> Result<Vec<Gpu>> {
    catalog::gpus(catalog.map(|(l, t)| (l.as_str(), t.as_str())))
}

/// Both catalogs.
pub fn catalogs(catalog: Option<&(String, String)>) -> Result<Catalogs> {
    Ok(Catalogs {
        models: catalog::models(),
        gpus: gpu_catalog(catalog)?,
    })
}

/// Runs one `vram-plan` request.
pub fn run(req: &Request) -> Result<Report> {
    let gpu_catalog = gpu_catalog(req.catalog.as_ref())?;
    let m = open_model(&req.model)?;
    let setups: Vec<GpuSetup> = match &req.gpus {
        Gpus::Detect => catalog::detect(&gpu_catalog)?,
        Gpus::Vram(bytes) => vec![GpuSetup {
            gpu: catalog::custom_gpu(*bytes),
            count: 1,
        }],
        Gpus::Named(s) => catalog::parse_setups(s, &gpu_catalog)?,
    };
    let runtime = default_runtime(&m, req.runtime, req.options.kv);
    if let Some(margin) = req.recommend {
        if !(0.0..0.9).contains(&margin) {
            return Err(Error::Refused(
                "--margin must be a fraction between 0 and 0.9 (0.1 = keep 10% free)".into(),
            ));
        }
        let mut out = Vec::new();
        for s in &setups {
            out.push(GpuRecommendation {
                gpu: s.label(),
                recommendation: recommend(&m, runtime, &req.options, s, margin)?,
            });
        }
        return Ok(Report {
            model: m,
            answer: Answer::Recommendations(out),
        });
    }
    let formats = if req.formats.is_empty() {
        default_formats(&m, runtime)
    } else {
        req.formats.clone()
    };
    let mut rows: Vec<PlanRow> = Vec::new();
    for s in &setups {
        let first = rows.len();
        for &f in &formats {
            let r = runtime.unwrap_or_else(|| Runtime::natural(f, &m));
            let row = plan(&m, f, r, &req.options, s)?;
            // bf16 becomes f16 on GPUs without it: one row when both are asked.
            if !rows[first..]
                .iter()
                .any(|x| x.format == row.format && x.engine == row.engine)
            {
                rows.push(row);
            }
        }
    }
    Ok(Report {
        answer: Answer::Plans {
            model: m.shape.clone(),
            source: m.source.clone(),
            parameters: m.params(),
            options: req.options.clone(),
            plans: rows,
        },
        model: m,
    })
}

/// Resolves a `vram-plan` MODEL: an existing path (model or config.json),
/// a catalog name, or a cached Hub repo id.
pub fn open_model(spec: &str) -> Result<ModelSpec> {
    let path = std::path::Path::new(spec);
    if path.is_file()
        && path.extension().is_some_and(|e| e == "json")
        && !spec.ends_with(".index.json")
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Refused(format!("cannot read {spec}: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Refused(format!("{spec} is not valid JSON: {e}")))?;
        return ModelSpec::from_config(&v, spec);
    }
    if !path.exists() {
        if let Some(c) = catalog::find_model(spec) {
            let mut m = ModelSpec::from_shape(c.shape, c.repo)?;
            m.published = [
                (DeployFormat::Awq, c.awq),
                (DeployFormat::Gptq, c.gptq_int4),
            ]
            .into_iter()
            .filter_map(|(f, repo)| Some((f, repo?)))
            .collect();
            return Ok(m);
        }
    }
    let m = Model::open(spec).map_err(|e| {
        Error::Refused(format!(
            "cannot open model '{spec}' (and it is not in the built-in catalog: `llmtool vram-plan --list`): {e}"
        ))
    })?;
    ModelSpec::from_model(&m, spec)
}

/// The runtime when none is named: llama.cpp for a GGUF model or a
/// quantized KV cache, vLLM for an fp8 KV cache, else each format's own.
fn default_runtime(m: &ModelSpec, asked: Option<Runtime>, kv: Option<KvType>) -> Option<Runtime> {
    asked.or(match kv {
        Some(KvType::Q8_0 | KvType::Q4_0) => Some(Runtime::LlamaCpp),
        Some(KvType::Fp8) => Some(Runtime::Vllm),
        _ if m.is_gguf => Some(Runtime::LlamaCpp),
        _ => None,
    })
}

/// Formats compared when none is named: the model's own tensors (a real
/// model), then a spread of formats the runtime loads. A pre-quantized
/// checkpoint is planned as it is: the other formats start from 16-bit
/// weights it does not have.
fn default_formats(m: &ModelSpec, runtime: Option<Runtime>) -> Vec<DeployFormat> {
    use DeployFormat as F;
    let mut v = Vec::new();
    if m.has_stored && runtime.is_none_or(|r| m.is_gguf == (r == Runtime::LlamaCpp)) {
        v.push(F::Native);
        if m.packing.is_some() {
            return v;
        }
    }
    v.extend_from_slice(match runtime {
        Some(Runtime::LlamaCpp) => &[F::F16, F::Q8_0, F::Q6K, F::Q5KM, F::Q4KM],
        Some(Runtime::Vllm) => &[F::Bf16, F::Gptq8, F::Awq, F::Gptq],
        Some(Runtime::Transformers) => &[F::Bf16, F::Int8, F::Awq, F::Nf4],
        None => &[F::Bf16, F::Int8, F::Nf4, F::Q8_0, F::Q4KM],
    });
    v
}
