//! Linear weights the engine multiplies with: a tensor of the store as it
//! is ([`Stored`]), or a GPTQ / AWQ GEMM / compressed-tensors /
//! bitsandbytes packed layer decoded a tile of rows at a time
//! ([`crate::model::packed::PackedWeight`], found through
//! [`crate::model::packed::packed_weight`]).
//!
//! Packed layers are dequantized to `(q − z)·s` in f32, transformers'
//! float32 numbers (see [`crate::quant::int4pack`]), or to what
//! bitsandbytes' dequantization gives ([`crate::quant::bnb`]), and go through the f32
//! products of [`weights`]: they have no integer product, and
//! [`Activations::Q8`](super::Activations::Q8) multiplies them exactly too.

use std::ops::Range;

use crate::model::packed::{packed_module, packed_weight, PackedFormat, PackedWeight};
use crate::store::{Model, StoreError, TensorInfo};

use super::weights::{self, Packed, Stored, WeightMatrix};

/// One Linear layer's weight.
pub enum Linear<'m> {
    Stored(Stored<'m>),
    Packed(PackedWeight<'m>),
}

impl<'m> Linear<'m> {
    /// The weight whose main tensor is `t`: a packed layer when `t` is a
    /// `qweight` / `weight_packed` or a bitsandbytes weight and config.json
    /// declares how it is packed, else the tensor itself.
    pub fn new(
        model: &'m Model,
        t: &'m TensorInfo,
        format: Option<PackedFormat>,
    ) -> Result<Linear<'m>, StoreError> {
        match (packed_module(model, &t.name), format) {
            (Some(module), Some(f)) => Ok(Linear::Packed(packed_weight(model, module, f)?)),
            (Some(_), None) => Err(StoreError::tensor(
                &model.files[t.file].path,
                &t.name,
                "a packed weight, but config.json has no quantization_config declaring gptq, awq, compressed-tensors or bitsandbytes packing",
            )),
            _ => Ok(Linear::Stored(Stored::new(model, t)?)),
        }
    }
}

impl WeightMatrix for Linear<'_> {
    fn rows(&self) -> usize {
        match self {
            Linear::Stored(s) => s.rows(),
            Linear::Packed(p) => p.rows(),
        }
    }
    fn cols(&self) -> usize {
        match self {
            Linear::Stored(s) => s.cols(),
            Linear::Packed(p) => p.cols(),
        }
    }
    fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        match self {
            Linear::Stored(s) => s.decode_rows(rows, out),
            Linear::Packed(p) => p.decode_rows(rows, out),
        }
    }
    fn dot_row(&self, row: usize, x: &[f32], scratch: &mut [f32]) -> f32 {
        match self {
            Linear::Stored(s) => s.dot_row(row, x, scratch),
            Linear::Packed(p) => {
                p.decode_rows(row..row + 1, scratch);
                weights::dot(scratch, x)
            }
        }
    }
    fn packed(&self) -> Option<Packed<'_>> {
        match self {
            Linear::Stored(s) => s.packed(),
            Linear::Packed(_) => None,
        }
    }
}
