//! PEFT LoRA adapters: the `adapter_config.json` fields that affect a merge,
//! the adapter tensors grouped per target module, and the per-module rank,
//! alpha and scaling.
//!
//! Semantics must agree with peft `src/peft/tuners/lora/config.py`,
//! `tuners/lora/layer.py` (`update_layer`, `get_delta_weight`),
//! `tuners/tuners_utils.py` (`check_target_module_exists`,
//! `_remove_adapter_name_from_state_dict_key`) and `utils/other.py`
//! (`get_pattern_key`, `ModulesToSaveWrapper`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::store::{Model, StoreError, TensorInfo};

/// Prefix PEFT puts before the base model's own parameter names.
pub const KEY_PREFIX: &str = "base_model.model.";
/// The adapter's weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The adapter's config file.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// Errors specific to adapters (bad input a user can fix).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: String },
}

fn invalid(path: &Path, msg: impl Into<String>) -> AdapterError {
    AdapterError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// `target_modules`: a list of names/suffixes, or one regex (fullmatch).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Targets {
    List(Vec<String>),
    Regex(String),
}

/// `layers_to_transform`: one index or a list.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Layers {
    One(u64),
    Many(Vec<u64>),
}

/// The adapter_config.json fields that matter for merging.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LoraConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    #[serde(default = "default_r")]
    pub r: u64,
    /// PEFT takes any number here (`lora_alpha: 16.0` is common).
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, u64>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub target_modules: Option<Targets>,
    #[serde(default)]
    pub layers_to_transform: Option<Layers>,
    #[serde(default)]
    pub layers_pattern: Option<serde_json::Value>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `{"base_model_class": "LlamaForCausalLM", ...}`: the class it was trained on.
    #[serde(default)]
    pub auto_mapping: Option<serde_json::Value>,
}

fn default_r() -> u64 {
    8
}

fn default_alpha() -> f64 {
    8.0
}

/// What an adapter does to one module of the base.
#[derive(Debug, Clone, Default)]
pub struct ModuleLora {
    /// `lora_A.weight` `[r, in]` (or `lora_embedding_A` `[r, num_embeddings]`).
    pub a: Option<TensorInfo>,
    /// `lora_B.weight` `[out, r]` (or `lora_embedding_B` `[dim, r]`).
    pub b: Option<TensorInfo>,
    /// `lora_B.bias` (`lora_bias: true`).
    pub b_bias: Option<TensorInfo>,
    /// DoRA `lora_magnitude_vector` `[out]`.
    pub magnitude: Option<TensorInfo>,
    /// Embedding LoRA (A/B are raw parameters, ΔW is transposed).
    pub embedding: bool,
    pub rank: u64,
    pub alpha: f64,
    pub scaling: f64,
}

/// An opened PEFT LoRA adapter.
#[derive(Debug)]
pub struct Adapter {
    pub dir: PathBuf,
    pub config: LoraConfig,
    pub weights: Model,
    /// Target module path (HF name without `.weight`) → its LoRA tensors.
    pub modules: BTreeMap<String, ModuleLora>,
    /// Full replacement tensors (`modules_to_save`, saved biases), by base tensor name.
    pub replacements: BTreeMap<String, TensorInfo>,
    /// sha256 of the weights file, for provenance.
    pub weights_path: PathBuf,
}

/// PEFT's `get_pattern_key`: the first pattern key `K` for which
/// `re.match(r"(.*\.)?(K)$", module)` matches.
fn pattern_value<T: Copy>(
    patterns: &BTreeMap<String, T>,
    module: &str,
) -> Result<Option<T>, String> {
    for (k, v) in patterns {
        let re = Regex::new(&format!(r"^(.*\.)?({k})$"))
            .map_err(|e| format!("bad pattern '{k}': {e}"))?;
        if re.is_match(module) {
            return Ok(Some(*v));
        }
    }
    Ok(None)
}

impl Adapter {
    /// Opens a PEFT adapter directory.
    pub fn open(dir: &Path) -> Result<Adapter, AdapterError> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(invalid(
                dir,
                format!("no {CONFIG_FILE}: not a PEFT adapter directory"),
            ));
        }
        let text = std::fs::read(&cfg_path).map_err(|e| StoreError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(&cfg_path, format!("malformed adapter config: {e}")))?;
        // serde would read `[]` as a struct of defaults: a silently wrong
        // merge (alpha 8 instead of the adapter's own).
        if !json.is_object() {
            return Err(invalid(
                &cfg_path,
                format!(
                    "expected a JSON object (PEFT's LoraConfig), found {}; restore the \
                     adapter_config.json saved with the adapter",
                    crate::store::json_kind(&json)
                ),
            ));
        }
        let config: LoraConfig = serde_json::from_value(json)
            .map_err(|e| invalid(&cfg_path, format!("malformed adapter config: {e}")))?;
        if !config.lora_alpha.is_finite() || config.alpha_pattern.values().any(|a| !a.is_finite()) {
            return Err(invalid(&cfg_path, "lora_alpha must be a finite number"));
        }
        match config.peft_type.as_deref() {
            Some("LORA") | None => {}
            Some(other) => {
                return Err(invalid(
                    &cfg_path,
                    format!(
                        "peft_type is {other}; only LoRA adapters (peft_type LORA) can be merged"
                    ),
                ))
            }
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.is_file() {
            let bin = dir.join("adapter_model.bin");
            return Err(invalid(
                dir,
                if bin.is_file() {
                    "adapter weights are only in pickle form (adapter_model.bin), which llmtool does not load; convert them: \
                     `python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('adapter_model.bin', weights_only=True), 'adapter_model.safetensors')\"`"
                        .to_string()
                } else {
                    format!("no {WEIGHTS_FILE}")
                },
            ));
        }
        let weights = Model::open(weights_path.to_str().unwrap_or_default())?;
        let mut modules: BTreeMap<String, ModuleLora> = BTreeMap::new();
        let mut replacements = BTreeMap::new();
        for t in weights.tensors() {
            let Some(key) = t.name.strip_prefix(KEY_PREFIX) else {
                return Err(invalid(
                    &weights_path,
                    format!(
                        "tensor '{}' lacks the '{KEY_PREFIX}' prefix of PEFT adapters",
                        t.name
                    ),
                ));
            };
            let slot = |suffix: &str| key.strip_suffix(suffix).map(str::to_string);
            if let Some(m) = slot(".lora_A.weight") {
                modules.entry(m).or_default().a = Some(t.clone());
            } else if let Some(m) = slot(".lora_B.weight") {
                modules.entry(m).or_default().b = Some(t.clone());
            } else if let Some(m) = slot(".lora_B.bias") {
                modules.entry(m).or_default().b_bias = Some(t.clone());
            } else if let Some(m) = slot(".lora_embedding_A") {
                let e = modules.entry(m).or_default();
                e.a = Some(t.clone());
                e.embedding = true;
            } else if let Some(m) = slot(".lora_embedding_B") {
                let e = modules.entry(m).or_default();
                e.b = Some(t.clone());
                e.embedding = true;
            } else if let Some(m) = slot(".lora_magnitude_vector") {
                modules.entry(m).or_default().magnitude = Some(t.clone());
            } else if key.contains(".base_layer.") {
                // save_embedding_layers: a copy of the untouched base layer.
            } else if key.contains("lora_") {
                return Err(invalid(
                    &weights_path,
                    format!(
                        "tensor '{}' is a LoRA variant llmtool does not know",
                        t.name
                    ),
                ));
            } else {
                replacements.insert(key.to_string(), t.clone());
            }
        }
        for (name, m) in modules.iter_mut() {
            let (Some(a), Some(b)) = (&m.a, &m.b) else {
                return Err(invalid(
                    &weights_path,
                    format!("module '{name}' has lora_A without lora_B or the reverse"),
                ));
            };
            let rank = a.shape.first().copied().unwrap_or(0);
            if a.shape.len() != 2 || b.shape.len() != 2 || b.shape[1] != rank || rank == 0 {
                return Err(invalid(
                    &weights_path,
                    format!(
                        "module '{name}': lora_A {:?} and lora_B {:?} do not share a rank",
                        a.shape, b.shape
                    ),
                ));
            }
            let r = pattern_value(&config.rank_pattern, name)
                .map_err(|e| invalid(&cfg_path, e))?
                .unwrap_or(config.r);
            let alpha = pattern_value(&config.alpha_pattern, name)
                .map_err(|e| invalid(&cfg_path, e))?
                .unwrap_or(config.lora_alpha);
            if r != rank {
                return Err(invalid(
                    &weights_path,
                    format!("module '{name}': config gives rank {r} but lora_A has {rank} rows"),
                ));
            }
            if config.use_dora && m.magnitude.is_none() {
                return Err(invalid(
                    &weights_path,
                    format!(
                        "module '{name}': adapter_config.json says use_dora but the weights have \
                         no lora_magnitude_vector; merging it as plain LoRA would be wrong. \
                         Save the adapter again with PEFT"
                    ),
                ));
            }
            m.rank = r;
            m.alpha = alpha;
            m.scaling = if config.use_rslora {
                alpha / (r as f64).sqrt()
            } else {
                alpha / r as f64
            };
        }
        if modules.is_empty() && replacements.is_empty() {
            return Err(invalid(&weights_path, "the adapter holds no LoRA tensors"));
        }
        Ok(Adapter {
            dir: dir.to_path_buf(),
            config,
            weights,
            modules,
            replacements,
            weights_path,
        })
    }

    /// LoRA parameter count (A, B, biases, magnitudes; not replacements).
    pub fn lora_params(&self) -> u64 {
        self.modules
            .values()
            .flat_map(|m| [&m.a, &m.b, &m.b_bias, &m.magnitude])
            .flatten()
            .map(|t| t.numel())
            .sum()
    }

    /// Layer indices the adapter touches (from `layers.N.` in module names).
    pub fn layers(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .modules
            .keys()
            .filter_map(|k| {
                k.split('.').collect::<Vec<_>>().windows(2).find_map(|w| {
                    (w[0] == "layers" || w[0] == "h" || w[0] == "blocks")
                        .then(|| w[1].parse().ok())
                        .flatten()
                })
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Distinct module kinds targeted (`q_proj`, `embed_tokens`, …).
    pub fn target_kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .modules
            .keys()
            .filter_map(|k| k.rsplit('.').next().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// A JSON summary for `lora inspect --json`.
    pub fn summary(&self) -> serde_json::Value {
        let ranks: std::collections::BTreeSet<u64> =
            self.modules.values().map(|m| m.rank).collect();
        let scalings: std::collections::BTreeSet<String> = self
            .modules
            .values()
            .map(|m| format!("{}", m.scaling))
            .collect();
        serde_json::json!({
            "adapter": self.dir.display().to_string(),
            "base_model": self.config.base_model_name_or_path,
            "r": self.config.r,
            "lora_alpha": self.config.lora_alpha,
            "ranks": ranks,
            "scalings": scalings,
            "use_rslora": self.config.use_rslora,
            "use_dora": self.config.use_dora,
            "lora_bias": self.config.lora_bias,
            "fan_in_fan_out": self.config.fan_in_fan_out,
            "target_modules": self.config.target_modules,
            "targets": self.target_kinds(),
            "modules": self.modules.len(),
            "layers": self.layers(),
            "modules_to_save": self.config.modules_to_save,
            "replaced_tensors": self.replacements.keys().collect::<Vec<_>>(),
            "lora_params": self.lora_params(),
            "rank_pattern": self.config.rank_pattern,
            "alpha_pattern": self.config.alpha_pattern,
        })
    }
}
