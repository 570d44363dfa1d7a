//! What an operation that writes a model checks before it writes anything:
//! the model is not already quantized, its hyperparameters are usable
//! (positive sizes, heads divisible into KV groups, a positive finite RoPE
//! base and scaling factor) and every weight the architecture names has the
//! rank and shape those hyperparameters imply.
//!
//! These are the invariants llama.cpp's loader (`llama-model.cpp`,
//! `create_tensor` with its expected dimensions) and transformers'
//! `modeling_llama.py` rely on: a file that breaks one of them converts
//! "successfully" into an artifact neither can load, or one that computes
//! NaN. The engine checks the same shapes against its own configuration.

use std::path::PathBuf;

use crate::model::arch::{self, Arch, LayerPart, Role};
use crate::store::{Container, Model, StoreError};

/// The quantization a checkpoint already carries, when it is one:
/// `quantization_config.quant_method` of config.json, else the packing its
/// tensors betray ([`crate::model::packed`]).
pub fn prequantized(model: &Model) -> Option<String> {
    let declared = model
        .config
        .as_ref()
        .and_then(|c| c.get("quantization_config"))
        .map(|q| {
            q.get("quant_method")
                .and_then(|m| m.as_str())
                .unwrap_or("unknown method")
                .to_string()
        });
    declared.or_else(|| {
        crate::model::packed::logical_tensors(model)
            .packing
            .map(|p| p.label())
    })
}

/// Refuses a pre-quantized checkpoint as the input of `what` (a merge or a
/// quantization reads 16/32-bit weights).
pub fn not_prequantized(model: &Model, what: &str) -> Result<(), StoreError> {
    match prequantized(model) {
        None => Ok(()),
        Some(method) => Err(StoreError::Unsupported {
            path: model.root.clone(),
            msg: format!(
                "this is a pre-quantized checkpoint ({method}); {what} reads the 16-bit model. \
                 Use the base model it was quantized from (e.g. the repo named in its model card's \
                 base_model)"
            ),
        }),
    }
}

/// Where the hyperparameters of `model` were declared, for messages.
fn hparams_file(model: &Model) -> PathBuf {
    match model.container {
        Container::Gguf => model.root.clone(),
        Container::Safetensors => model.root.join("config.json"),
    }
}

/// Detects the architecture of `model` and checks that `what` (an
/// operation that reads 16/32-bit weights) can write it out: not
/// pre-quantized, usable hyperparameters, and every recognised weight of the
/// rank and shape they imply. Unrecognised tensors are left to the caller.
pub fn weights(model: &Model, what: &str) -> Result<Arch, StoreError> {
    not_prequantized(model, what)?;
    let a = arch::detect(model);
    let hfile = hparams_file(model);
    let bad = |msg: String| StoreError::invalid(&hfile, msg);
    // Ranks and zero dimensions first: the tensor is the cause when a size
    // derived from it is wrong.
    for t in model.tensors() {
        let Some(want) = expected_shape(&a, arch::role(&t.name)) else {
            continue;
        };
        if t.shape.len() != want.len() {
            return Err(StoreError::tensor(
                &model.root,
                &t.name,
                format!(
                    "shape {:?} has {} dimensions; this weight has {}",
                    t.shape,
                    t.shape.len(),
                    want.len()
                ),
            ));
        }
        if t.shape.contains(&0) {
            return Err(StoreError::tensor(
                &model.root,
                &t.name,
                format!(
                    "shape {:?} has a zero dimension; a weight of this architecture cannot be \
                     empty (the checkpoint is damaged or was saved from a pruned module)",
                    t.shape
                ),
            ));
        }
    }
    for (what, v) in [
        ("layer count", a.layers),
        ("hidden size", a.hidden_size),
        ("attention head count", a.heads),
        ("KV head count", a.kv_heads),
        ("head size", a.head_dim),
        ("FFN size", a.ffn_size),
        ("vocabulary size", a.vocab),
    ] {
        if v == Some(0) {
            return Err(bad(format!(
                "the {what} is 0; restore the model's original hyperparameters"
            )));
        }
    }
    if let (Some(h), Some(kv)) = (a.heads, a.kv_heads) {
        if h % kv != 0 {
            return Err(bad(format!(
                "{h} attention heads cannot share {kv} KV heads evenly"
            )));
        }
    }
    if let Some(theta) = a.rope.theta {
        if !(theta.is_finite() && theta > 0.0) {
            return Err(bad(format!(
                "rope_theta is {theta}; RoPE needs a positive base (10000 or the model's own)"
            )));
        }
    }
    if let Some(f) = a
        .rope
        .scaling
        .as_ref()
        .and_then(|s| s.get("factor"))
        .and_then(|f| f.as_f64())
    {
        if !(f.is_finite() && f > 0.0) {
            return Err(bad(format!(
                "the RoPE scaling factor is {f}; it must be positive (1 means no scaling)"
            )));
        }
    }
    for t in model.tensors() {
        let Some(want) = expected_shape(&a, arch::role(&t.name)) else {
            continue;
        };
        let ok = t
            .shape
            .iter()
            .zip(&want)
            .all(|(&s, w)| w.is_none_or(|w| s == w));
        if !ok {
            let want: Vec<String> = want
                .iter()
                .map(|w| w.map_or("?".into(), |w| w.to_string()))
                .collect();
            return Err(StoreError::tensor(
                &model.root,
                &t.name,
                format!(
                    "shape {:?}, but the hyperparameters ({}) make it [{}]",
                    t.shape,
                    a.hparams_source,
                    want.join(", ")
                ),
            ));
        }
    }
    Ok(a)
}

/// The shape (outermost first) a tensor of `role` has under the
/// hyperparameters of `a`; `None` in a dimension that cannot be told.
fn expected_shape(a: &Arch, role: Role) -> Option<Vec<Option<u64>>> {
    let prod = |x: Option<u64>, y: Option<u64>| Some(x? * y?);
    let q = prod(a.heads, a.head_dim);
    let kv = prod(a.kv_heads, a.head_dim);
    let (h, f, v) = (a.hidden_size, a.ffn_size, a.vocab);
    use LayerPart::*;
    Some(match role {
        Role::Embed | Role::LmHead => vec![v, h],
        Role::FinalNorm => vec![h],
        Role::Layer(_, p) => match p {
            AttnNorm | FfnNorm => vec![h],
            Q => vec![q, h],
            K | V => vec![kv, h],
            O => vec![h, q],
            QBias => vec![q],
            KBias | VBias => vec![kv],
            Gate | Up => vec![f, h],
            Down => vec![h, f],
        },
        Role::Other => return None,
    })
}
