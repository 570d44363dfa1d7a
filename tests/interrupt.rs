//! Ctrl-C (SIGINT) in the middle of long work: every command stops within
//! a second, exits 130 and leaves nothing behind (no output, no hidden
//! temporary).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common;
use llmtool::store::safetensors::{SafetensorsTensor, ShardedWriter};
use llmtool::store::DType;

const LAYERS: u64 = 8;
const HIDDEN: u64 = 1024;
const FFN: u64 = 4096;
const VOCAB: u64 = 32000;
const RANK: u64 = 8;

/// A llama-shaped bf16 model of ~400 MB (large enough that merging or
/// quantizing it takes well over the time a signal needs to arrive) and a
/// LoRA adapter for it, made once in the test cache.
fn big_model() -> &'static (PathBuf, PathBuf) {
    static M: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let done = common::cache_dir().join("interrupt-model");
        if done.is_dir() {
            return (done.join("base"), done.join("adapter"));
        }
        let dir = common::cache_dir().join(format!(".interrupt-model.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (base, adapter) = (dir.join("base"), dir.join("adapter"));
        let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
        for l in 0..LAYERS {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            shapes.push((p("input_layernorm.weight"), vec![HIDDEN]));
            for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                shapes.push((p(&format!("self_attn.{n}.weight")), vec![HIDDEN, HIDDEN]));
            }
            shapes.push((p("post_attention_layernorm.weight"), vec![HIDDEN]));
            shapes.push((p("mlp.gate_proj.weight"), vec![FFN, HIDDEN]));
            shapes.push((p("mlp.up_proj.weight"), vec![FFN, HIDDEN]));
            shapes.push((p("mlp.down_proj.weight"), vec![HIDDEN, FFN]));
        }
        shapes.push(("model.norm.weight".to_string(), vec![HIDDEN]));
        shapes.push(("lm_head.weight".to_string(), vec![VOCAB, HIDDEN]));
        write(&base, &shapes, DType::BF16);
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
            "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": VOCAB,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        });
        std::fs::write(base.join("config.json"), config.to_string()).unwrap();
        let mut lora = Vec::new();
        for l in 0..LAYERS {
            let p = format!("base_model.model.model.layers.{l}.self_attn.q_proj");
            lora.push((format!("{p}.lora_A.weight"), vec![RANK, HIDDEN]));
            lora.push((format!("{p}.lora_B.weight"), vec![HIDDEN, RANK]));
        }
        write(&adapter, &lora, DType::F32);
        std::fs::rename(
            adapter.join("model.safetensors"),
            adapter.join("adapter_model.safetensors"),
        )
        .unwrap();
        let cfg = serde_json::json!({"peft_type": "LORA", "r": RANK, "lora_alpha": 16,
            "target_modules": ["q_proj"], "bias": "none", "fan_in_fan_out": false});
        std::fs::write(adapter.join("adapter_config.json"), cfg.to_string()).unwrap();
        std::fs::rename(&dir, &done).unwrap();
        (done.join("base"), done.join("adapter"))
    })
}

/// Writes tensors of a repeating pattern of small, varied finite values.
fn write(dir: &Path, shapes: &[(String, Vec<u64>)], dtype: DType) {
    let plan = shapes
        .iter()
        .map(|(n, s)| SafetensorsTensor {
            name: n.clone(),
            dtype,
            shape: s.clone(),
        })
        .collect();
    let mut w = ShardedWriter::create(dir, plan, u64::MAX, BTreeMap::new()).unwrap();
    let size = if dtype == DType::BF16 { 2 } else { 4 };
    // 1 MiB of values (i mod 251 - 125) / 1000; its length is a whole number
    // of values, and 251 does not divide it, so blocks differ.
    let pattern: Vec<u8> = (0..(1usize << 20) / size)
        .flat_map(|i| {
            let v = ((i % 251) as f32 - 125.0) / 1000.0;
            let b = v.to_le_bytes();
            if size == 2 {
                b[2..].to_vec()
            } else {
                b.to_vec()
            }
        })
        .collect();
    for (n, s) in shapes {
        let bytes = s.iter().product::<u64>() as usize * size;
        let chunk = &pattern[..bytes.min(pattern.len())];
        w.write_tensor_with(n, |sink| {
            let mut left = bytes;
            while left > 0 {
                let k = left.min(chunk.len());
                sink(&chunk[..k])?;
                left -= k;
            }
            Ok(())
        })
        .unwrap();
    }
    w.finish().unwrap();
}

/// Anything in `dir` whose name starts with `.` (hidden temporaries).
fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Sends SIGINT once `ready()` holds, then checks the process exits 130
/// within a second with "interrupted" on stderr.
fn interrupt_when(mut child: Child, what: &str, mut ready: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what} finished before it could be interrupted"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{what} never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "{what} still running a second after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code, Some(130), "{what}: {err}");
    assert!(err.contains("interrupted"), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn spawn(args: &[&str]) -> Child {
    common::llmtool()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigint_stops_writers_and_leaves_nothing() {
    let (base, adapter) = big_model();
    let tmp = tempfile::tempdir().unwrap();
    let started = |dir: &Path| {
        let d = dir.to_path_buf();
        move || !hidden_entries(&d).is_empty()
    };

    let writer = |what: &str, name: &str, args: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = args.to_vec();
        args.extend(["--out", out.to_str().unwrap()]);
        interrupt_when(spawn(&args), what, started(tmp.path()));
        assert!(!out.exists(), "{what} left {}", out.display());
        assert!(
            hidden_entries(tmp.path()).is_empty(),
            "{what} left a temporary"
        );
    };
    let (base, adapter) = (base.to_str().unwrap(), adapter.to_str().unwrap());
    writer(
        "lora merge",
        "merged",
        &["lora", "merge", "--base", base, "--adapter", adapter],
    );
    writer("quantize nf4", "nf4", &["quantize", "nf4", base]);
    // The calibrated quantizers, on token ids (the model has no tokenizer).
    let ids = tmp.path().join("ids.json");
    let seqs: Vec<Vec<u32>> = (0..4)
        .map(|s| (0..64).map(|i| (s * 977 + i * 131) % 32000).collect())
        .collect();
    std::fs::write(&ids, serde_json::json!({ "ids": seqs }).to_string()).unwrap();
    let calib = [
        "--calib",
        ids.to_str().unwrap(),
        "--calib-samples",
        "4",
        "--calib-seqlen",
        "64",
    ];
    writer(
        "quantize gptq",
        "gptq",
        &[&["quantize", "gptq", base][..], &calib].concat(),
    );
    writer(
        "quantize awq",
        "awq",
        &[&["quantize", "awq", base][..], &calib].concat(),
    );
}

#[test]
fn sigint_stops_fragment_split() {
    let (base, _) = big_model();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stages");
    let d = tmp.path().to_path_buf();
    let child = spawn(&[
        "fragment",
        "split",
        base.to_str().unwrap(),
        "--by-layer",
        "4,4",
        "--out",
        out.to_str().unwrap(),
    ]);
    interrupt_when(child, "fragment split", move || {
        !hidden_entries(&d).is_empty()
    });
    assert!(!out.exists(), "fragment split left {}", out.display());
    assert!(
        hidden_entries(tmp.path()).is_empty(),
        "fragment split left a temporary"
    );
}

#[test]
fn sigint_stops_generate_and_eval() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let gguf = gguf.to_str().unwrap();
    // generate: interrupted once the first text has streamed.
    let mut child = spawn(&[
        "generate",
        gguf,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "2000",
        "--temp",
        "0.8",
        "--seed",
        "3",
    ]);
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    interrupt_when(child, "generate", || {
        stdout.read_exact(&mut first).unwrap();
        true
    });

    // eval ppl: interrupted in the first chunks of a long text.
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    let para = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    std::fs::write(&text, para.repeat(20)).unwrap();
    let child = spawn(&[
        "eval",
        "ppl",
        gguf,
        "--text",
        text.to_str().unwrap(),
        "--ctx",
        "256",
    ]);
    let t0 = Instant::now();
    interrupt_when(child, "eval ppl", || {
        t0.elapsed() > Duration::from_millis(1500)
    });
}
