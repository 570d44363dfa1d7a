//! `llmtool fragment split|merge|verify`: GGUF shards against llama.cpp's
//! own `llama-gguf-split` (goldens in fixtures/fragment, made by
//! tests/oracle/gguf_split_goldens.py), per-stage Hugging Face directories,
//! the manifest, and the refusals.

use std::path::{Path, PathBuf};

use crate::common::{self, llmtool, refuses, s};
use llmtool::store::gguf::Value;
use llmtool::store::Model;

fn golden(name: &str) -> serde_json::Value {
    let p = common::fixture(&format!("fragment/{name}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// (name, size, sha256) of every `.gguf` in `dir`, sorted by name.
fn gguf_files(dir: &Path) -> Vec<(String, u64, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, b.len() as u64, common::sha256_hex(&b))
        })
        .collect();
    v.sort();
    v
}

fn golden_files(v: &serde_json::Value) -> Vec<(String, u64, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The tiny GGUF the goldens were made from, rebuilt in `dir` exactly as
/// the oracle script builds it (tiny-llama with the tiny SentencePiece
/// tokenizer, `quantize f32`), checked against the recorded digest.
fn tiny_gguf(dir: &Path) -> PathBuf {
    let m = dir.join("tiny-llama");
    std::fs::create_dir(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(common::fixture("models/tiny-llama").join(f), m.join(f)).unwrap();
    }
    common::copy_tiny_sp_tokenizer(&m);
    let out = dir.join("tiny-llama-f32.gguf");
    common::run_ok(llmtool().args(["quantize", "f32", s(&m), "--out", s(&out)]));
    let g = golden("tiny-llama-split");
    assert_eq!(
        common::sha256_hex(&std::fs::read(&out).unwrap()),
        g["input"]["sha256"].as_str().unwrap(),
        "the tiny GGUF is not the one the goldens were made from (did quantize f32 change?)"
    );
    out
}

fn split(model: &Path, out: &Path, mode: &[&str]) -> serde_json::Value {
    common::json_output(
        llmtool()
            .args(["fragment", "split", s(model), "--out", s(out), "--json"])
            .args(mode),
    )
}

#[test]
fn tiny_shards_are_llama_gguf_splits_byte_for_byte_and_merge_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_gguf(tmp.path());
    let g = golden("tiny-llama-split");
    for (i, sp) in g["splits"].as_array().unwrap().iter().enumerate() {
        let args: Vec<&str> = sp["llmtool"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let out = tmp.path().join(format!("split{i}"));
        let report = split(&src, &out, &args);
        let want = golden_files(&sp["files"]);
        assert_eq!(gguf_files(&out), want, "{args:?}");
        // The manifest records the same files.
        let listed: Vec<(String, u64, String)> = report["manifest"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["size"].as_u64().unwrap(),
                    f["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(listed, want);
    }
    // A split input is accepted (its first shard names it): split again,
    // the same shards.
    let first = tmp
        .path()
        .join("split0")
        .join(&golden_files(&g["splits"][0]["files"])[0].0);
    let again = tmp.path().join("again");
    split(&first, &again, &["--max-size", "1MB"]);
    assert_eq!(gguf_files(&again), golden_files(&g["splits"][1]["files"]));
    // Our merge of the --max-tensors shards is llama-gguf-split --merge's file.
    let first = tmp
        .path()
        .join("split0")
        .join(&golden_files(&g["splits"][0]["files"])[0].0);
    let merged = tmp.path().join("merged.gguf");
    common::run_ok(llmtool().args(["fragment", "merge", s(&first), "--out", s(&merged)]));
    let bytes = std::fs::read(&merged).unwrap();
    assert_eq!(bytes.len() as u64, g["merge"]["size"].as_u64().unwrap());
    assert_eq!(
        common::sha256_hex(&bytes),
        g["merge"]["sha256"].as_str().unwrap()
    );
    // That file holds the input's tensors and metadata, plus the split keys
    // llama.cpp leaves in a merge (split.count 0).
    let (a, b) = (
        Model::open(s(&src)).unwrap(),
        Model::open(s(&merged)).unwrap(),
    );
    common::same_tensors(&a, &b);
    let (ma, mb) = (a.gguf.as_ref().unwrap(), b.gguf.as_ref().unwrap());
    assert_eq!(&mb.entries()[..ma.entries().len()], ma.entries());
    let extra: Vec<(&str, &Value)> = mb.entries()[ma.entries().len()..]
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let n = a.tensors().len() as i32;
    assert_eq!(
        extra,
        [
            ("split.no", &Value::U16(0)),
            ("split.tensors.count", &Value::I32(n)),
            ("split.count", &Value::U16(0))
        ]
    );
}

#[test]
fn by_layer_shards_hold_their_layers_and_load_as_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_gguf(tmp.path());
    let out = tmp.path().join("hosts");
    // The counts are one comma list: MODEL may follow them.
    let r = common::json_output(llmtool().args([
        "fragment",
        "split",
        "--by-layer",
        "1,1",
        s(&src),
        "--out",
        s(&out),
        "--json",
    ]));
    // A dry run reports the same pieces and writes nothing.
    let planned = tmp.path().join("planned");
    let d = split(&src, &planned, &["--by-layer", "1,1", "--dry-run"]);
    assert!(!planned.exists());
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["manifest"]["parts"], r["manifest"]["parts"]);
    assert_eq!(d["manifest"]["files"], serde_json::json!([]));
    let parts = r["manifest"]["parts"].as_array().unwrap();
    assert_eq!(
        parts[0]["layers"],
        serde_json::json!({"first": 0, "last": 0})
    );
    assert_eq!(
        parts[1]["layers"],
        serde_json::json!({"first": 1, "last": 1})
    );
    assert_eq!(r["manifest"]["split"]["layers"], serde_json::json!([1, 1]));
    let first = out.join("tiny-llama-f32-00001-of-00002.gguf");
    let whole = Model::open(s(&first)).unwrap();
    let orig = Model::open(s(&src)).unwrap();
    common::same_tensors(&orig, &whole);
    // Each shard alone: the embedding and layer 0 first; layer 1, the
    // final norm and the head last; the file's order kept within each.
    let names = |p: &Path| -> Vec<String> {
        let f = std::fs::read(p).unwrap();
        llmtool::store::gguf::parse(p, &f, 0)
            .unwrap()
            .tensors
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    let one = names(&first);
    let two = names(&out.join("tiny-llama-f32-00002-of-00002.gguf"));
    let order: Vec<String> = orig.tensors().iter().map(|t| t.name.clone()).collect();
    let (want_one, want_two): (Vec<String>, Vec<String>) = order
        .into_iter()
        .partition(|n| n == "token_embd.weight" || n.starts_with("blk.0."));
    assert_eq!((one, two), (want_one, want_two));
    assert!(names(&out.join("tiny-llama-f32-00002-of-00002.gguf"))
        .contains(&"output.weight".to_string()));
}

#[test]
fn verify_finds_a_flipped_byte_and_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_gguf(tmp.path());
    let out = tmp.path().join("shards");
    split(&src, &out, &["--max-tensors", "7"]);
    let v = common::json_output(llmtool().args(["fragment", "verify", s(&out), "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    let second = out.join("tiny-llama-f32-00002-of-00003.gguf");
    let mut b = std::fs::read(&second).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&second, &b).unwrap();
    std::fs::remove_file(out.join("tiny-llama-f32-00003-of-00003.gguf")).unwrap();
    let o = llmtool()
        .args(["fragment", "verify", s(&out), "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let status: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "mismatch", "missing"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tiny-llama-f32-00002-of-00003.gguf (mismatch)")
            && err.contains("tiny-llama-f32-00003-of-00003.gguf (missing)")
            && err.contains("copy them again"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_gguf(tmp.path());
    let out = tmp.path().join("out");
    let (m, o) = (s(&src), s(&out));
    let split = |mode: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["fragment", "split", m, "--out", o]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(mode.iter().map(|x| x.to_string()));
        v
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-size", "100KB"],
            "tensor 'output.weight' is 262144 bytes",
        ),
        (
            &["--by-layer", "1,2"],
            "1+2 do not add up to the model's 2 layers",
        ),
        (&["--by-layer", "2,0"], "layer count #2 is 0"),
        (
            &["--by-layer", "1,1,0"],
            "3 pieces but the model has only 2 layers",
        ),
    ];
    for (mode, want) in cases {
        let args = split(mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refuses(&args, &out, want);
    }
    // Not a GGUF.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf at all, just text").unwrap();
    refuses(
        &[
            "fragment",
            "split",
            s(&junk),
            "--out",
            o,
            "--max-tensors",
            "2",
        ],
        &out,
        "not a GGUF file",
    );
    // A Hugging Face model cut by size.
    let hf = common::fixture("models/tiny-llama");
    refuses(
        &["fragment", "split", s(&hf), "--out", o, "--max-size", "1MB"],
        &out,
        "a safetensors model; --max-size and --max-tensors cut GGUF files",
    );
    // Merging what is not split; merging over a file.
    refuses(
        &[
            "fragment",
            "merge",
            m,
            "--out",
            s(&tmp.path().join("m.gguf")),
        ],
        &tmp.path().join("m.gguf"),
        "not a split GGUF (no split.count key)",
    );
    // An output directory with files in it is left alone.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"x").unwrap();
    let o2 = llmtool()
        .args(["fragment", "split", m, "--out", o, "--max-tensors", "7"])
        .output()
        .unwrap();
    assert_eq!(o2.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o2.stderr).contains("output directory exists and is not empty")
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // A merge output that exists.
    let shards = tmp.path().join("shards");
    common::run_ok(llmtool().args([
        "fragment",
        "split",
        m,
        "--out",
        s(&shards),
        "--max-tensors",
        "7",
    ]));
    let first = shards.join("tiny-llama-f32-00001-of-00003.gguf");
    let o3 = llmtool()
        .args(["fragment", "merge", s(&first), "--out", m])
        .output()
        .unwrap();
    assert_eq!(o3.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o3.stderr).contains("output file exists"));
    // A missing shard is named.
    std::fs::remove_file(shards.join("tiny-llama-f32-00002-of-00003.gguf")).unwrap();
    let merged = tmp.path().join("merged.gguf");
    refuses(
        &["fragment", "merge", s(&first), "--out", s(&merged)],
        &merged,
        "tiny-llama-f32-00002-of-00003.gguf: split shard 2 of 3 is missing",
    );
}

/// The stages together hold the input's tensors (names, dtypes, bytes);
/// each stage's index lists exactly its files' tensors with the right
/// total size; config and tokenizer files are copied.
fn check_stages(src: &Path, counts: &str, tied: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stages");
    let r = split(src, &out, &["--by-layer", counts]);
    let orig = Model::open(s(src)).unwrap();
    let n = counts.split(',').count();
    let mut seen = std::collections::BTreeMap::new();
    for k in 1..=n {
        let dir = out.join(format!("stage-{k}-of-{n}"));
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        // Opening through the index checks that it and the files agree.
        let stage = Model::open(s(&dir.join("model.safetensors.index.json"))).unwrap();
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), stage.tensors().len());
        let total: u64 = stage.tensors().iter().map(|t| t.len).sum();
        assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
        assert!(dir.join("config.json").is_file());
        for t in stage.tensors() {
            let o = orig.get(&t.name).unwrap();
            assert_eq!((t.dtype, &t.shape), (o.dtype, &o.shape), "{}", t.name);
            assert!(stage.bytes(t) == orig.bytes(o), "{} differs", t.name);
            if let Some(l) = t.name.strip_prefix("model.layers.") {
                let layer: u64 = l.split('.').next().unwrap().parse().unwrap();
                let p = &r["manifest"]["parts"][k - 1]["layers"];
                assert!(
                    (p["first"].as_u64().unwrap()..=p["last"].as_u64().unwrap()).contains(&layer)
                );
            }
            *seen.entry(t.name.clone()).or_insert(0) += 1;
        }
        if k == 1 {
            assert!(stage.tensor("model.embed_tokens.weight").is_some());
        }
        if k == n {
            assert!(stage.tensor("model.norm.weight").is_some());
            let head = if tied {
                "model.embed_tokens.weight"
            } else {
                "lm_head.weight"
            };
            assert!(stage.tensor(head).is_some(), "last stage lacks {head}");
        }
    }
    let names: Vec<&String> = seen.keys().collect();
    let mut want: Vec<&String> = orig.tensors().iter().map(|t| &t.name).collect();
    want.sort();
    assert_eq!(names, want);
    // Only a tied embedding appears twice (first and last stage).
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(twice.len(), usize::from(tied && n > 1), "{twice:?}");
    let v = common::json_output(llmtool().args(["fragment", "verify", s(&out), "--json"]));
    assert_eq!(v["ok"], true);
}

#[test]
fn hf_stages_partition_the_model_with_valid_indexes() {
    check_stages(&common::fixture("models/tiny-llama"), "1,1", false);
    check_stages(&common::fixture("models/tiny-qwen2"), "1,1", true);
    check_stages(&common::fixture("models/tiny-qwen2-sharded"), "2", true);
}

/// SmolLM2 (30 layers, Q4_1): llama-gguf-split's shards of the real model
/// are ours byte for byte, our merge of them is llama-gguf-split's merge,
/// and the by-layer shards are those the oracle ran llama-perplexity on.
#[test]
fn smollm2_shards_match_llama_gguf_split() {
    let Some(src) = common::smollm2() else {
        return;
    };
    let g = golden("smollm2");
    assert_eq!(
        std::fs::metadata(&src).unwrap().len(),
        g["input"]["size"].as_u64().unwrap()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("size");
    split(&src, &out, &["--max-size", "40MB"]);
    assert_eq!(
        gguf_files(&out),
        golden_files(&g["split_max_size"]["llama_files"])
    );
    let merged = tmp.path().join("merged.gguf");
    let first = out.join("SmolLM2-135M-Instruct.Q4_1-00001-of-00003.gguf");
    common::run_ok(llmtool().args(["fragment", "merge", s(&first), "--out", s(&merged)]));
    let b = std::fs::read(&merged).unwrap();
    assert_eq!(
        common::sha256_hex(&b),
        g["llama_merge_of_ours"]["sha256"].as_str().unwrap()
    );
    drop(b);
    common::same_tensors(
        &Model::open(s(&src)).unwrap(),
        &Model::open(s(&merged)).unwrap(),
    );
    std::fs::remove_dir_all(&out).unwrap();
    let out = tmp.path().join("layers");
    let r = split(&src, &out, &["--by-layer", "10,10,10"]);
    assert_eq!(gguf_files(&out), golden_files(&g["by_layer_10_10_10"]));
    let ranges: Vec<(u64, u64)> = r["manifest"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["layers"]["first"].as_u64().unwrap(),
                p["layers"]["last"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges, [(0, 9), (10, 19), (20, 29)]);
}
