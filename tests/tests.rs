//! The integration tests, one binary with a module per area (so `cargo test`
//! links the library once): `cargo test --test tests AREA::` runs one area.

mod common;

mod arch_fixtures;
mod awq_model;
mod bench_local;
mod bench_serve;
mod bench_server;
mod bnb_quantize;
mod bnb_read;
mod cli;
mod convert;
mod defects;
mod engine;
mod fragment;
mod fragment_plan;
mod fuzz_parsers;
mod gguf_store;
mod gptq_model;
mod http_accept;
mod hub;
mod hub_client;
mod hub_server;
mod interrupt;
mod layers;
mod lora_merge;
mod openai_server;
mod packed_models;
mod pipeline;
mod quantize_gguf;
mod quantize_models;
mod safetensors_store;

mod smollm2;
mod tokenizer;
mod vram_plan;
