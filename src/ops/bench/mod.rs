//! `bench`: how fast a model serves. `serve` drives an OpenAI-compatible
//! server with streamed requests and measures them as `vllm bench serve`
//! does; `local` measures the built-in engine as `llama-bench` measures
//! llama.cpp; `stats` summarizes samples the way both report them.

pub mod compare;
pub mod dataset;
pub mod local;
pub mod plot;
pub mod serve;
pub mod stats;
