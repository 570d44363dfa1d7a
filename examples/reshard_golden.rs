//! Regenerates `fixtures/models/tiny-qwen2-llmtool-sharded/`: the tiny-qwen2
//! fixture rewritten by llmtool's sharded safetensors writer. The oracle
//! `tests/oracle/check_hf_load.py` proves transformers loads that directory
//! with identical weights and logits; `tests/arch_fixtures.rs` proves the
//! writer still produces it byte for byte.
//!
//! `cargo run --release --example reshard_golden`

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    let src = root.join("tiny-qwen2");
    let out = root.join("tiny-qwen2-llmtool-sharded");
    let model = llmtool::store::Model::open(src.to_str().unwrap_or_default())?;
    std::fs::create_dir_all(&out)?;
    for f in ["config.json", "generation_config.json"] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), out.join(f))?;
        }
    }
    for p in llmtool::store::safetensors::write_model(
        &model,
        &out,
        RESHARD_MAX_SHARD,
        Default::default(),
    )? {
        println!("{}", p.display());
    }
    Ok(())
}

/// Small enough to give several shards of the ~0.7 MB fixture.
const RESHARD_MAX_SHARD: u64 = 150_000;
