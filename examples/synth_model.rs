//! Writes a synthetic Llama-shaped bf16 model (config.json + sharded
//! safetensors) with llmtool's own streaming writer, for memory and speed
//! benchmarks on model sizes we cannot download here.
//!
//! `cargo run --release --example synth_model -- OUT_DIR [7b|14b|1b|tiny] [LAYERS]`
//! (LAYERS overrides the size's layer count: a 2- and a 4-layer 7B show
//! whether a command's memory grows with depth).

use std::collections::BTreeMap;

use llmtool::store::safetensors::{SafetensorsTensor, ShardedWriter, DEFAULT_MAX_SHARD_SIZE};
use llmtool::store::DType;

struct Shape {
    layers: u64,
    hidden: u64,
    ffn: u64,
    heads: u64,
    kv_heads: u64,
    vocab: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out =
        std::path::PathBuf::from(args.get(1).ok_or_else(|| {
            anyhow::anyhow!("usage: synth_model OUT_DIR [7b|14b|1b|tiny] [LAYERS]")
        })?);
    let mut s = match args.get(2).map(String::as_str).unwrap_or("7b") {
        // Llama-2-7B / Mistral-7B-like dimensions.
        "7b" => Shape {
            layers: 32,
            hidden: 4096,
            ffn: 11008,
            heads: 32,
            kv_heads: 32,
            vocab: 32000,
        },
        // Qwen2.5-14B's dimensions (llama layout, no biases): for memory
        // plans (`quantize gptq --dry-run`), one layer is enough.
        "14b" => Shape {
            layers: 48,
            hidden: 5120,
            ffn: 13824,
            heads: 40,
            kv_heads: 8,
            vocab: 152064,
        },
        "1b" => Shape {
            layers: 16,
            hidden: 2048,
            ffn: 8192,
            heads: 32,
            kv_heads: 8,
            vocab: 32000,
        },
        "tiny" => Shape {
            layers: 2,
            hidden: 256,
            ffn: 512,
            heads: 4,
            kv_heads: 2,
            vocab: 512,
        },
        other => anyhow::bail!("unknown size '{other}'"),
    };
    if let Some(n) = args.get(3) {
        s.layers = n.parse()?;
    }
    let hd = s.hidden / s.heads;
    let mut plan = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![s.vocab, s.hidden],
    )];
    for l in 0..s.layers {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        plan.push((p("input_layernorm.weight"), vec![s.hidden]));
        plan.push((p("self_attn.q_proj.weight"), vec![s.heads * hd, s.hidden]));
        plan.push((
            p("self_attn.k_proj.weight"),
            vec![s.kv_heads * hd, s.hidden],
        ));
        plan.push((
            p("self_attn.v_proj.weight"),
            vec![s.kv_heads * hd, s.hidden],
        ));
        plan.push((p("self_attn.o_proj.weight"), vec![s.hidden, s.heads * hd]));
        plan.push((p("post_attention_layernorm.weight"), vec![s.hidden]));
        plan.push((p("mlp.gate_proj.weight"), vec![s.ffn, s.hidden]));
        plan.push((p("mlp.up_proj.weight"), vec![s.ffn, s.hidden]));
        plan.push((p("mlp.down_proj.weight"), vec![s.hidden, s.ffn]));
    }
    plan.push(("model.norm.weight".to_string(), vec![s.hidden]));
    plan.push(("lm_head.weight".to_string(), vec![s.vocab, s.hidden]));

    std::fs::create_dir_all(&out)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": s.hidden, "intermediate_size": s.ffn, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads, "vocab_size": s.vocab,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    });
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let plans: Vec<SafetensorsTensor> = plan
        .iter()
        .map(|(n, shape)| SafetensorsTensor {
            name: n.clone(),
            dtype: DType::BF16,
            shape: shape.clone(),
        })
        .collect();
    let mut w = ShardedWriter::create(&out, plans, DEFAULT_MAX_SHARD_SIZE, BTreeMap::new())?;
    let mut buf = Vec::new();
    for (i, (name, shape)) in plan.iter().enumerate() {
        let n = shape.iter().product::<u64>() as usize;
        // A cheap non-constant bf16 pattern (small values around ±0.01).
        buf.clear();
        buf.extend((0..n).flat_map(|j| {
            let v = half::bf16::from_f32((((j * 7 + i * 13) % 255) as f32 - 127.0) * 1e-4);
            v.to_le_bytes()
        }));
        w.write_tensor(name, &buf)?;
    }
    for p in w.finish()? {
        println!("{}", p.display());
    }
    Ok(())
}
