//! llmtool: one binary from fine-tuned adapter to deployed artifact.
//!
//! The crate is layered; each layer uses only the ones below it
//! (docs/ARCHITECTURE.md, checked by `tests/layers.rs`):
//!
//! 1. support: [`cancel`], [`progress`], [`stream`], [`units`]
//! 2. kernels: [`quant`] (GGML and bitsandbytes numerics)
//! 3. formats: [`store`] (safetensors, GGUF, HF directories, atomic writers)
//! 4. the Hub: [`hub`] (uploads, downloads into the HF cache)
//! 5. model: [`model`] (families, architecture, adapters, tokenizers, engine)
//! 6. operations: [`ops`] (one module per job, options in, report out)
//! 7. command line: [`cli`] (arguments → options → operation → rendered report)
//!
//! `main.rs` only calls [`cli::main`].

pub mod cancel;
pub mod cli;
pub mod hub;
pub mod model;
pub mod ops;
pub mod progress;
pub mod quant;
pub mod store;
pub mod stream;
pub mod units;
