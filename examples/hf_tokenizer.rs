//! Writes the HF tokenizer files `llmtool::model::tokenizer::write_hf_tokenizer`
//! makes from a GGUF's metadata, for the transformers oracle
//! (`tests/oracle/tokenizer_goldens.py check`).
//!
//! `cargo run --example hf_tokenizer -- MODEL.gguf OUT_DIR`

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(gguf), Some(out)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: hf_tokenizer MODEL.gguf OUT_DIR");
    };
    let model = llmtool::store::Model::open(gguf)?;
    let meta = model
        .gguf
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{gguf} is not a GGUF file"))?;
    for p in llmtool::model::tokenizer::write_hf_tokenizer(meta, std::path::Path::new(out))? {
        println!("{}", p.display());
    }
    Ok(())
}
