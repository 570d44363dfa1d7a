//! llmtool: one binary from fine-tuned adapter to deployed artifact.
//!
//! The library holds every subcommand's logic so that tests and benches call
//! it directly; `main.rs` only parses arguments and dispatches.
//!
//! Data flows from [`store`] (memory-mapped tensors from safetensors, GGUF,
//! the Hugging Face cache) through [`quant`] (block layouts, dequantization)
//! into the analyses ([`arch`], [`inspect`]) and back out through the
//! streaming writers in [`store`]. [`tokenizer`] carries tokenizers across the
//! HF ↔ GGUF bridge.

pub mod arch;
pub mod bnb;
pub mod convert;
pub mod engine;
pub mod eval;
pub mod hfdir;
pub mod inspect;
pub mod interrupt;
pub mod lora;
pub mod merge;
pub mod plan;
pub mod progress;
pub mod quant;
pub mod quantize;
pub mod store;
pub mod stream;
pub mod tokenizer;
