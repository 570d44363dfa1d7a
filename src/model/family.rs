//! The one table of model families: which names in `config.json`
//! (`model_type`, `architectures`) and which GGUF `general.architecture`
//! strings mean which family, which llama.cpp converter class and which
//! transformers GGUF tokenizer converter handle it, and what llmtool does
//! with its weights. Every other module asks this table instead of matching
//! strings of its own.
//!
//! Upstream: llama.cpp `conversion/llama.py` (`@ModelBase.register` of
//! `LlamaModel`: `LlamaForCausalLM`, `MistralForCausalLM`,
//! `MixtralForCausalLM`, …) and `conversion/qwen.py` (`Qwen2Model`:
//! `Qwen2ForCausalLM`, `Qwen2Model`); transformers 4.57.1
//! `integrations/ggml.py` (`GGUF_TO_FAST_CONVERTERS`).

use serde::Serialize;

/// Model families llmtool knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    /// Mixtral's tokenizer converts as Llama's does; its mixture-of-experts
    /// weights are not converted or run.
    Mixtral,
    Qwen2,
    Unknown,
}

/// The GGUF architectures llmtool converts (llama.cpp's converter classes
/// `LlamaModel` and `Qwen2Model`). Mistral models are stored under `llama`,
/// as llama.cpp's converter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GgufArch {
    Llama,
    Qwen2,
}

/// One row of the table.
#[derive(Debug)]
pub struct FamilyInfo {
    pub family: Family,
    /// `config.json` `model_type`.
    pub model_type: &'static str,
    /// `config.json` `architectures` entries llama.cpp's converter registers
    /// for this family.
    pub hf_classes: &'static [&'static str],
    /// The converter class, and the GGUF architecture it writes.
    pub gguf: GgufArch,
    /// Whether llmtool converts, quantizes and runs the weights (otherwise
    /// only the tokenizer is understood).
    pub weights: bool,
    /// Q, K and V projections carry biases.
    pub qkv_bias: bool,
}

/// Every family, in the order they are matched.
pub const FAMILIES: &[FamilyInfo] = &[
    FamilyInfo {
        family: Family::Llama,
        model_type: "llama",
        hf_classes: &["LlamaForCausalLM", "LLaMAForCausalLM"],
        gguf: GgufArch::Llama,
        weights: true,
        qkv_bias: false,
    },
    FamilyInfo {
        family: Family::Mistral,
        model_type: "mistral",
        hf_classes: &["MistralForCausalLM"],
        gguf: GgufArch::Llama,
        weights: true,
        qkv_bias: false,
    },
    FamilyInfo {
        family: Family::Mixtral,
        model_type: "mixtral",
        hf_classes: &["MixtralForCausalLM"],
        gguf: GgufArch::Llama,
        weights: false,
        qkv_bias: false,
    },
    FamilyInfo {
        family: Family::Qwen2,
        model_type: "qwen2",
        hf_classes: &["Qwen2ForCausalLM", "Qwen2Model"],
        gguf: GgufArch::Qwen2,
        weights: true,
        qkv_bias: true,
    },
];

/// `general.architecture` values whose tokenizer transformers rebuilds with
/// `GGUFLlamaConverter` and `GGUFQwen2Converter`.
const TRANSFORMERS_LLAMA_TOKENIZERS: &[&str] = &["llama", "deci", "decilm"];
const TRANSFORMERS_QWEN2_TOKENIZERS: &[&str] = &["qwen2", "qwen2_moe", "qwen3", "qwen3_moe"];

impl Family {
    /// The row of a known family.
    pub fn info(self) -> Option<&'static FamilyInfo> {
        FAMILIES.iter().find(|f| f.family == self)
    }

    /// From a declared family name: `model_type`, or a GGUF architecture
    /// (`llama` is Llama; llama.cpp keeps Mistral under it too).
    pub fn from_name(name: &str) -> Family {
        FAMILIES
            .iter()
            .find(|f| f.model_type == name)
            .map_or(Family::Unknown, |f| f.family)
    }

    /// From `config.json`: the first `architectures` entry the table knows,
    /// else `model_type`.
    pub fn from_config(config: &serde_json::Value) -> Family {
        let classes = config
            .get("architectures")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str());
        for c in classes {
            if let Some(f) = FAMILIES.iter().find(|f| f.hf_classes.contains(&c)) {
                return f.family;
            }
        }
        config
            .get("model_type")
            .and_then(|v| v.as_str())
            .map_or(Family::Unknown, Family::from_name)
    }

    /// Q, K and V projections carry biases.
    pub fn qkv_bias(self) -> bool {
        self.info().is_some_and(|f| f.qkv_bias)
    }
}

impl GgufArch {
    /// The architecture llmtool writes for a `config.json` whose weights it
    /// converts.
    pub fn from_config(config: &serde_json::Value) -> Option<GgufArch> {
        Family::from_config(config)
            .info()
            .filter(|f| f.weights)
            .map(|f| f.gguf)
    }

    /// The converter class of an HF `architectures` entry, for the tokenizer
    /// (which converts for every family in the table).
    pub fn of_hf_class(class: &str) -> Option<GgufArch> {
        FAMILIES
            .iter()
            .find(|f| f.hf_classes.contains(&class))
            .map(|f| f.gguf)
    }

    /// From GGUF `general.architecture` (the architectures llmtool reads).
    pub fn from_gguf(name: &str) -> Option<GgufArch> {
        FAMILIES.iter().map(|f| f.gguf).find(|a| a.name() == name)
    }

    /// The transformers GGUF tokenizer converter of a `general.architecture`.
    pub fn transformers_tokenizer(name: &str) -> Option<GgufArch> {
        [GgufArch::Llama, GgufArch::Qwen2]
            .into_iter()
            .find(|a| Self::transformers_tokenizer_names(*a).contains(&name))
    }

    /// The `general.architecture` values of [`Self::transformers_tokenizer`].
    pub fn transformers_tokenizer_names(arch: GgufArch) -> &'static [&'static str] {
        match arch {
            GgufArch::Llama => TRANSFORMERS_LLAMA_TOKENIZERS,
            GgufArch::Qwen2 => TRANSFORMERS_QWEN2_TOKENIZERS,
        }
    }

    /// `general.architecture` and the prefix of the hyperparameter keys.
    pub fn name(self) -> &'static str {
        match self {
            GgufArch::Llama => "llama",
            GgufArch::Qwen2 => "qwen2",
        }
    }

    /// The transformers class written to config.json `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            GgufArch::Llama => "LlamaForCausalLM",
            GgufArch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// llama.cpp runs `llama` with interleaved-pair RoPE, so the converter
    /// permutes Q and K rows; `qwen2` uses NEOX RoPE and is not permuted.
    pub fn permutes_qk(self) -> bool {
        self == GgufArch::Llama
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_answer_per_name() {
        let mixtral = json!({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"});
        assert_eq!(Family::from_config(&mixtral), Family::Mixtral);
        assert_eq!(GgufArch::from_config(&mixtral), None);
        assert_eq!(
            GgufArch::of_hf_class("MixtralForCausalLM"),
            Some(GgufArch::Llama)
        );
        let mistral = json!({"model_type": "mistral"});
        assert_eq!(GgufArch::from_config(&mistral), Some(GgufArch::Llama));
        assert!(Family::Qwen2.qkv_bias() && !Family::Llama.qkv_bias());
        assert_eq!(
            GgufArch::transformers_tokenizer("qwen3"),
            Some(GgufArch::Qwen2)
        );
    }
}
