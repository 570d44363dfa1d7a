//! The model layer: what a stored model is (family, architecture, tensor
//! roles, HF ↔ GGUF naming), its adapters and tokenizer, and the CPU engine
//! that runs it. Built on [`crate::store`] and [`crate::quant`]; used by the
//! operations in [`crate::ops`].

pub mod adapter;
pub mod arch;
pub mod check;
pub mod engine;
pub mod family;
pub mod hf_gguf;
pub mod packed;
pub mod tokenizer;
