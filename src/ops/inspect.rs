//! `inspect-arch`: what a model really is, from its tensor shapes
//! ([`crate::model::arch::detect`]), as the versioned manifest
//! ([`crate::model::arch::manifest`], docs/ARCH-MANIFEST.md) and,
//! optionally, every tensor.

use serde::Serialize;

use crate::model::arch::{self, Arch};
use crate::store::Model;

/// A model and what was detected in it.
pub struct InspectReport {
    pub model: Model,
    pub arch: Arch,
    /// Also list every tensor.
    pub tensors: bool,
}

/// Detects `model`'s architecture.
pub fn inspect(model: Model, tensors: bool) -> InspectReport {
    let arch = arch::detect(&model);
    InspectReport {
        model,
        arch,
        tensors,
    }
}

/// The manifest, with `tensors` when asked.
impl Serialize for InspectReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = arch::manifest(&self.model, &self.arch);
        if self.tensors {
            v["tensors"] = tensors_json(&self.model);
        }
        v.serialize(s)
    }
}

/// The per-tensor listing of the manifest's `tensors`.
pub fn tensors_json(model: &Model) -> serde_json::Value {
    model
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "dtype": t.dtype,
                "shape": t.shape,
                "bytes": t.len,
                "file": model.files[t.file].path.display().to_string(),
                "offset": t.offset,
            })
        })
        .collect()
}
