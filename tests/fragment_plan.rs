//! `fragment plan` against a real llama.cpp RPC run
//! (fixtures/fragment/rpc-run.json, made by tests/oracle/fragment_rpc_run.py):
//! the layers land where the plan says, each device's memory is within 3 %
//! of llama.cpp's buffers, and perplexity through RPC equals one process's.
//! Then the commands, vLLM's side and the refusals.

use std::process::Output;

use serde_json::Value;

use crate::common::{self, llmtool, run_ok};

fn plan(args: &[&str]) -> Output {
    llmtool()
        .args(["fragment", "plan"])
        .args(args)
        .output()
        .unwrap()
}

fn plan_json(args: &[&str]) -> Value {
    let out = run_ok(llmtool().args(["fragment", "plan", "--json"]).args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = plan(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn rpc_run() -> Value {
    serde_json::from_slice(&std::fs::read(common::fixture("fragment/rpc-run.json")).unwrap())
        .unwrap()
}

/// The plan the RPC run was made from, recomputed now from the catalog
/// shape (the same per-tensor types as the real Q4_K_M file).
fn replanned(run: &Value) -> Value {
    let mut args = vec![
        "SmolLM2-135M",
        "--quant",
        "q4_k_m",
        "--engine",
        "llama.cpp",
        "--ctx",
        "128",
        "--ubatch",
        "128",
    ];
    for h in run["hosts"].as_array().unwrap() {
        args.extend(["--host", h.as_str().unwrap()]);
    }
    plan_json(&args)
}

#[test]
fn layers_land_where_the_plan_says() {
    let run = rpc_run();
    assert!(run["failures"].as_array().unwrap().is_empty());
    let p = replanned(&run);
    let devices = p["llama_cpp"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    let by_device = &run["layers_by_device"];
    let layers = p["layers"].as_u64().unwrap();
    for d in devices {
        let name = d["device"].as_str().unwrap();
        let mut want: Vec<u64> =
            (d["first_layer"].as_u64().unwrap()..d["end_layer"].as_u64().unwrap()).collect();
        if d["output"].as_bool().unwrap() {
            // llama.cpp logs the output as layer n_layer.
            want.push(layers);
        }
        let got: Vec<u64> = by_device[name]
            .as_array()
            .unwrap_or_else(|| panic!("llama.cpp used no device {name}"))
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // Every device holds layers: the head's CPU, then both servers.
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["CPU", "RPC0", "RPC1"]);
}

#[test]
fn device_memory_matches_llama_cpp_within_3_percent() {
    let run = rpc_run();
    let p = replanned(&run);
    for (d, measured) in p["llama_cpp"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(run["devices"].as_array().unwrap())
    {
        let need = &d["need"];
        let planned: u64 = ["weights", "kv", "compute", "host"]
            .iter()
            .map(|k| need[k].as_u64().unwrap())
            .sum();
        let theirs = measured["llama_cpp_total_mib"].as_f64().unwrap();
        let ours = planned as f64 / (1 << 20) as f64;
        let err = (ours - theirs).abs() / theirs;
        assert!(
            err <= 0.03,
            "{}: plan {ours:.2} MiB, llama.cpp {theirs:.2} MiB",
            d["device"]
        );
        // KV to the byte: it follows the layers.
        let kv = measured["llama_cpp_mib"]["kv"].as_f64().unwrap();
        assert!((need["kv"].as_f64().unwrap() / (1 << 20) as f64 - kv).abs() < 0.01);
    }
}

#[test]
fn perplexity_through_rpc_is_the_single_process_figure() {
    let run = rpc_run();
    assert_eq!(run["ppl_rpc"], run["ppl_single"]);
    assert!(run["head_command"].as_str().unwrap().contains("--rpc"));
}

#[test]
fn head_command_uses_the_plan() {
    let run = rpc_run();
    let p = replanned(&run);
    let lc = &p["llama_cpp"];
    let cmd = lc["head_command"].as_str().unwrap();
    // The CPU keeps 7 layers: -ngl = 31 - 7; the servers split the rest,
    // the output counted with the last (llama.cpp's act_gpu_layers).
    assert!(
        cmd.starts_with("llama-server -m SmolLM2-135M-Q4_K_M.gguf --rpc 127.0.0.1:"),
        "{cmd}"
    );
    assert!(cmd.contains(" -ngl 24 "), "{cmd}");
    assert!(cmd.contains(" --tensor-split 10,14 "), "{cmd}");
    assert_eq!(lc["rpc_servers"].as_array().unwrap().len(), 2);
    assert_eq!(p["layers_per_host"], serde_json::json!([7, 10, 13]));
}

#[test]
fn two_t4_machines_serve_qwen_14b() {
    let p = plan_json(&[
        "Qwen2.5-14B",
        "--quant",
        "q4_k_m",
        "--host",
        "gpu1=T4",
        "--host",
        "gpu2=T4",
        "--ctx",
        "8192",
        "--engine",
        "llama.cpp",
    ]);
    let d = p["llama_cpp"]["devices"].as_array().unwrap();
    // The remote T4 first (RPC0), the head's own T4 last with the output.
    assert_eq!(d[0]["device"], "RPC0");
    assert_eq!(d[1]["device"], "CUDA0");
    assert!(d[1]["output"].as_bool().unwrap());
    let split: u64 = d
        .iter()
        .map(|x| x["end_layer"].as_u64().unwrap() - x["first_layer"].as_u64().unwrap())
        .sum();
    assert_eq!(split, 48);
    let cmd = p["llama_cpp"]["head_command"].as_str().unwrap();
    assert!(
        cmd.contains("--rpc gpu2:50052") && cmd.contains("-ngl 999"),
        "{cmd}"
    );
}

#[test]
fn vllm_gets_a_partition_and_ray_lines() {
    let p = plan_json(&[
        "Qwen2.5-72B",
        "--quant",
        "awq",
        "--engine",
        "vllm",
        "--host",
        "a=2xA10G",
        "--host",
        "b=2xA10G",
        "--host",
        "c=2xA10G",
    ]);
    let v = &p["vllm"];
    assert_eq!(v["pipeline_parallel"], 3);
    assert_eq!(v["tensor_parallel"], 2);
    let part: Vec<u64> = v["partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(part.iter().sum::<u64>(), 80);
    let cmds: Vec<&str> = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap())
        .collect();
    assert!(cmds[0].starts_with("ray start --head"));
    assert!(cmds[1].contains("--address=a:6379"));
    let serve = cmds.last().unwrap();
    let want = format!(
        "VLLM_PP_LAYER_PARTITION={} vllm serve",
        part.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(serve.starts_with(&want), "{serve}");
    assert!(
        serve.contains("--pipeline-parallel-size 3 --tensor-parallel-size 2"),
        "{serve}"
    );
}

#[test]
fn refusals_name_the_host_and_the_way_out() {
    // Not enough memory anywhere: the shortfall per device.
    let err = fails(&[
        "Qwen2.5-72B",
        "--quant",
        "q8_0",
        "--host",
        "a=T4",
        "--host",
        "b=T4",
    ]);
    assert!(
        err.contains("short by") && err.contains("RPC0") && err.contains("CUDA0"),
        "{err}"
    );
    // Unknown GPU: the catalog is listed.
    let err = fails(&["Qwen2.5-14B", "--host", "a=H9000"]);
    assert!(
        err.contains("unknown GPU 'H9000'") && err.contains("A10G"),
        "{err}"
    );
    // More devices than layers.
    let cfg = common::fixture("models/tiny-llama/config.json");
    let cfg = cfg.to_str().unwrap();
    let err = fails(&[
        cfg, "--quant", "q8_0", "--host", "a=RAM:1G", "--host", "b=RAM:1G", "--host", "c=RAM:1G",
    ]);
    assert!(
        err.contains("3 devices but the model has only 2 layers"),
        "{err}"
    );
    // A device that would get no layer.
    let err = fails(&[
        "SmolLM2-135M",
        "--quant",
        "q4_k_m",
        "--engine",
        "llama.cpp",
        "--ctx",
        "128",
        "--host",
        "a=RAM:8G",
        "--host",
        "b=RAM:40M",
    ]);
    assert!(
        err.contains("would get no layer") && err.contains("b:50052"),
        "{err}"
    );
    // Two servers on one endpoint.
    let err = fails(&[
        "SmolLM2-135M",
        "--host",
        "a=RAM:1G",
        "--host",
        "b=RAM:1G",
        "--host",
        "b=RAM:1G",
    ]);
    assert!(err.contains("both b:50052"), "{err}");
    // vLLM asked on hosts without GPUs.
    let err = fails(&[
        "SmolLM2-135M",
        "--engine",
        "vllm",
        "--host",
        "a=RAM:1G",
        "--host",
        "b=T4",
    ]);
    assert!(err.contains("vLLM needs GPUs on every node"), "{err}");
}

#[test]
fn hosts_file_gives_the_same_plan() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hosts.toml");
    std::fs::write(
        &f,
        "[[host]]\naddress = \"gpu1\"\ndevices = \"T4\"\n\n[[host]]\naddress = \"gpu2\"\nport = 50060\ndevices = \"T4\"\n",
    )
    .unwrap();
    let a = plan_json(&[
        "Qwen2.5-14B",
        "--quant",
        "q4_k_m",
        "--engine",
        "llama.cpp",
        "--hosts",
        f.to_str().unwrap(),
    ]);
    let b = plan_json(&[
        "Qwen2.5-14B",
        "--quant",
        "q4_k_m",
        "--engine",
        "llama.cpp",
        "--host",
        "gpu1=T4",
        "--host",
        "gpu2:50060=T4",
    ]);
    assert_eq!(a, b);
    std::fs::write(&f, "[[host]]\naddress = \"gpu1\"\ngpus = \"T4\"\n").unwrap();
    let err = fails(&["Qwen2.5-14B", "--hosts", f.to_str().unwrap()]);
    assert!(err.contains("hosts.toml") && err.contains("gpus"), "{err}");
}

#[test]
fn split_by_a_saved_plan_cuts_one_piece_per_host() {
    let Some(model) = common::smollm2() else {
        return;
    };
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    let out = run_ok(llmtool().args([
        "fragment", "plan", model, "--json", "--host", "a=RAM:1G", "--host", "b=RAM:2G", "--host",
        "c=RAM:2G",
    ]));
    std::fs::write(&plan_file, &out.stdout).unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_host: Vec<u64> = plan["layers_per_host"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_host.iter().sum::<u64>(), 30);
    let pieces = dir.path().join("pieces");
    run_ok(
        llmtool()
            .args(["fragment", "split", model, "--out"])
            .arg(&pieces)
            .arg("--plan")
            .arg(&plan_file),
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(pieces.join("fragments.json")).unwrap()).unwrap();
    assert_eq!(manifest["plan"], plan);
    let parts = manifest["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    // Not a plan: refused by name.
    std::fs::write(&plan_file, "{}").unwrap();
    let out = llmtool()
        .args(["fragment", "split", model, "--out"])
        .arg(dir.path().join("x"))
        .arg("--plan")
        .arg(&plan_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plan.json") && err.contains("layers_per_host"),
        "{err}"
    );
}

#[test]
fn a_new_user_s_wrong_paths_get_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmtool()
        .args(["fragment", "verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no fragments.json here") && err.contains("fragment split"),
        "{err}"
    );
    let err = fails(&["no-such-model.gguf", "--host", "a=T4"]);
    assert!(err.contains("llmtool vram-plan --list"), "{err}");
    let recipe = dir.path().join("missing.toml");
    let out = llmtool().arg("run").arg(&recipe).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.toml: cannot read the recipe"),
        "{err}"
    );
}
