//! `llmtool bench local` on the tiny fixture with tiny settings: the rows
//! llama-bench would print (names, fields, repetitions, depth), the three
//! output shapes, and the inputs it refuses.

use crate::common::{fixture, json_output, llmtool, run_ok};

fn tiny() -> String {
    fixture("models/tiny-llama").display().to_string()
}

#[test]
fn json_rows_carry_llama_bench_fields_per_test_and_repetition() {
    let v = json_output(llmtool().args(["bench", "local", &tiny()]).args([
        "-p",
        "8",
        "-n",
        "4",
        "--pg",
        "8,4",
        "-d",
        "0,16",
        "-r",
        "3",
        "--threads",
        "1",
        "--json",
    ]));
    let rows = v
        .as_array()
        .expect("an array of rows, as llama-bench -o json");
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(
        tests,
        [
            "pp8",
            "tg4",
            "pp8+tg4",
            "pp8 @ d16",
            "tg4 @ d16",
            "pp8+tg4 @ d16"
        ]
    );
    for r in rows {
        for key in [
            "model_type",
            "model_size",
            "model_n_params",
            "n_batch",
            "n_ubatch",
            "n_threads",
            "type_k",
            "type_v",
            "n_prompt",
            "n_gen",
            "n_depth",
            "avg_ns",
            "stddev_ns",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
            "llmtool_version",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["engine"], "llmtool");
        assert_eq!(r["n_threads"], 1);
        assert_eq!(r["model_n_params"], 1_312_000);
        let ns: Vec<u64> = r["samples_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let ts: Vec<f64> = r["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(ns.len(), 3, "one sample per repetition");
        // t/s of each sample is its tokens over its time; avg_ts their mean.
        let tokens = r["n_prompt"].as_u64().unwrap() + r["n_gen"].as_u64().unwrap();
        for (n, t) in ns.iter().zip(&ts) {
            assert!((t - 1e9 * tokens as f64 / *n as f64).abs() < 1e-6 * t);
        }
        let mean = ts.iter().sum::<f64>() / 3.0;
        assert!((r["avg_ts"].as_f64().unwrap() - mean).abs() < 1e-9 * mean);
        assert_eq!(r["avg_ns"].as_u64().unwrap(), ns.iter().sum::<u64>() / 3);
    }
    assert_eq!(rows[3]["n_depth"], 16);
    assert_eq!(rows[5]["n_prompt"], 8);
    assert_eq!(rows[5]["n_gen"], 4);
}

#[test]
fn depth_fills_the_context_up_to_the_models_length_and_no_further() {
    // 2040 + 4 + 4 = 2048 = max_position_embeddings: runs.
    let v = json_output(llmtool().args(["bench", "local", &tiny()]).args([
        "-p",
        "0",
        "-n",
        "0",
        "--pg",
        "4,4",
        "-d",
        "2040",
        "-r",
        "1",
        "--no-warmup",
        "--json",
    ]));
    assert_eq!(v[0]["test"], "pp4+tg4 @ d2040");
    let out = llmtool()
        .args(["bench", "local", &tiny()])
        .args(["-p", "0", "-n", "0", "--pg", "4,4", "-d", "2041", "-r", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pp4+tg4 @ d2041 needs 2049 tokens of context")
            && err.contains("max_position_embeddings) is 2048")
            && err.contains("lower -d"),
        "{err}"
    );
}

#[test]
fn md_is_llama_bench_table_and_jsonl_one_row_per_line() {
    let out = run_ok(
        llmtool()
            .args(["bench", "local", &tiny()])
            .args(["-p", "8", "-n", "4", "-r", "2"]),
    );
    let md = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines.len(), 4, "{md}");
    assert_eq!(
        lines[0],
        "| model                          |       size |     params | backend    | threads |            test |                  t/s |"
    );
    assert!(
        lines[1].starts_with("| ------------------------------ | ---------: |"),
        "{md}"
    );
    assert!(
        lines[2].contains("| CPU (llmtool) |")
            && lines[2].contains(" pp8 |")
            && lines[2].contains(" ± "),
        "{md}"
    );
    assert!(lines[3].contains(" tg4 |"), "{md}");

    let out = run_ok(
        llmtool()
            .args(["bench", "local", &tiny()])
            .args(["-p", "8", "-n", "4", "-r", "2", "-o", "jsonl"]),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["test"], "tg4");
}

#[test]
fn nothing_to_measure_and_unknown_format_are_refused() {
    let out = llmtool()
        .args(["bench", "local", &tiny(), "-p", "0", "-n", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing to measure") && err.contains("-p 512"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    for args in [["-o", "xml"], ["-r", "0"], ["--pg", "512"]] {
        let out = llmtool()
            .args(["bench", "local", &tiny()])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error: invalid value"), "{args:?}: {err}");
    }
    let out = llmtool()
        .args(["bench", "local", "no/such-dir.gguf", "-p", "4", "-n", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such-dir.gguf"));
}

#[test]
fn a_gguf_is_named_by_its_file_type_as_llama_bench_names_it() {
    // The safetensors fixture has no file type: its main dtype stands in.
    let v = json_output(
        llmtool()
            .args(["bench", "local", &tiny()])
            .args(["-p", "8", "-n", "0", "-r", "1", "--json"]),
    );
    assert_eq!(v[0]["model_type"], "llama 1M F32");
    let Some(gguf) = crate::common::smollm2() else {
        return;
    };
    let v = json_output(llmtool().args(["bench", "local"]).arg(&gguf).args([
        "-p",
        "8",
        "-n",
        "0",
        "-r",
        "1",
        "--no-warmup",
        "--json",
    ]));
    assert_eq!(v[0]["model_type"], "llama 135M Q4_1");
    assert_eq!(v[0]["model_n_params"], 134_515_008);
}
