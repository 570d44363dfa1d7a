//! safetensors reader and sharded writer: round trips checked by the
//! reference `safetensors` crate, sharding and index, atomic output, model
//! resolution, and the malformed-input corpus.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use llmtool::store::safetensors::{SafetensorsTensor, ShardedWriter, INDEX_FILE};
use llmtool::store::{hf_cache, DType, Model, StoreError};
use llmtool::units::parse_size;

fn plan(name: &str, dtype: DType, shape: &[u64]) -> SafetensorsTensor {
    SafetensorsTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    }
}

fn sample() -> Vec<(SafetensorsTensor, Vec<u8>)> {
    let bytes = |n: usize, seed: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    vec![
        (
            plan("model.embed_tokens.weight", DType::BF16, &[16, 8]),
            bytes(256, 1),
        ),
        (
            plan(
                "model.layers.0.self_attn.q_proj.weight",
                DType::F32,
                &[8, 8],
            ),
            bytes(256, 2),
        ),
        (
            plan("model.layers.0.self_attn.q_proj.bias", DType::F16, &[8]),
            bytes(16, 3),
        ),
        (plan("model.norm.weight", DType::F32, &[8]), bytes(32, 4)),
        (plan("scalar", DType::I64, &[]), bytes(8, 5)),
        (plan("empty", DType::F32, &[0, 4]), vec![]),
        (plan("lm_head.weight", DType::F16, &[16, 8]), bytes(256, 6)),
    ]
}

fn write(dir: &Path, max_shard: u64) -> Vec<std::path::PathBuf> {
    let s = sample();
    let mut meta = BTreeMap::new();
    meta.insert("source".to_string(), "test".to_string());
    let mut w = ShardedWriter::create(
        dir,
        s.iter().map(|(p, _)| p.clone()).collect(),
        max_shard,
        meta,
    )
    .unwrap();
    for (p, d) in &s {
        w.write_tensor(&p.name, d).unwrap();
    }
    w.finish().unwrap()
}

/// The reference reader (the `safetensors` crate) sees exactly our tensors.
fn check_with_reference(files: &[std::path::PathBuf]) {
    let s = sample();
    let mut seen = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().unwrap() == "safetensors")
    {
        let bytes = std::fs::read(f).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .unwrap()
                .get("format")
                .map(String::as_str),
            Some("pt")
        );
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let (p, d) = s
                .iter()
                .find(|(p, _)| p.name == name)
                .expect("planned tensor");
            assert_eq!(view.data(), &d[..], "{name}");
            assert_eq!(
                view.shape().iter().map(|&x| x as u64).collect::<Vec<_>>(),
                p.shape,
                "{name}"
            );
            assert_eq!(
                format!("{:?}", view.dtype()),
                p.dtype.safetensors_name().unwrap(),
                "{name}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, s.len());
}

#[test]
fn single_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let files = write(dir.path(), u64::MAX);
    assert_eq!(files, vec![dir.path().join("model.safetensors")]);
    check_with_reference(&files);
    let m = Model::open(dir.path().to_str().unwrap()).unwrap();
    for (p, d) in sample() {
        let t = m.get(&p.name).unwrap();
        assert_eq!((t.dtype, &t.shape), (p.dtype, &p.shape));
        assert_eq!(m.bytes(t), &d[..]);
    }
    // Header is padded to 8 bytes so tensor data is aligned.
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
}

#[test]
fn sharded_round_trip_with_index() {
    let dir = tempfile::tempdir().unwrap();
    let files = write(dir.path(), 300);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
            INDEX_FILE
        ]
    );
    check_with_reference(&files);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(INDEX_FILE)).unwrap()).unwrap();
    let total: u64 = sample().iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(
        index["weight_map"]["model.embed_tokens.weight"],
        "model-00001-of-00003.safetensors"
    );
    assert_eq!(
        index["weight_map"]["lm_head.weight"],
        "model-00003-of-00003.safetensors"
    );
    let m = Model::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.tensors().len(), sample().len());
    // The index itself is also a valid spec.
    let via_index = Model::open(dir.path().join(INDEX_FILE).to_str().unwrap()).unwrap();
    assert_eq!(via_index.tensors(), m.tensors());
}

#[test]
fn interrupted_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let mut w = ShardedWriter::create(
        dir.path(),
        s.iter().map(|(p, _)| p.clone()).collect(),
        300,
        BTreeMap::new(),
    )
    .unwrap();
    for (p, d) in &s[..4] {
        w.write_tensor(&p.name, d).unwrap();
    }
    let e = w
        .write_tensor("lm_head.weight", &s[6].1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected tensor 'scalar' (8 bytes) next"), "{e}");
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no shard or temp file remains"
    );
}

#[test]
fn shard_sizes_parse_like_transformers() {
    assert_eq!(parse_size("5GB"), Some(5_000_000_000));
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("500MB"), Some(500_000_000));
    assert_eq!(parse_size("1.5 kb"), Some(1500));
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("5 parsecs"), None);
    assert_eq!(parse_size("0"), None);
    assert_eq!(parse_size("-1GB"), None);
}

/// A safetensors file from a header (as JSON text) and a data section.
fn st_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0);
    v
}

fn open_file(bytes: &[u8]) -> Result<Model, StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.safetensors");
    std::fs::write(&p, bytes).unwrap();
    Model::open(p.to_str().unwrap())
}

#[test]
fn malformed_safetensors_corpus() {
    let t = |name: &str, dtype: &str, shape: &str, a: u64, b: u64| {
        format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{a},{b}]}}"#)
    };
    let good = t("a", "F32", "[2]", 0, 8);
    let mut huge = 200_000_000u64.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "file is 0 bytes, too short"),
        ("huge header length", huge, "over the 100000000-byte limit"),
        (
            "header past end",
            {
                let mut v = 64u64.to_le_bytes().to_vec();
                v.extend_from_slice(b"{}");
                v
            },
            "says 64 bytes but only 2 follow",
        ),
        (
            "bad utf-8",
            st_bytes("{\"\u{e9}\":1}", 0)
                .into_iter()
                .map(|b| if b == 0xc3 { 0xff } else { b })
                .collect(),
            "not valid UTF-8",
        ),
        ("not json", st_bytes("{nope", 0), "not a valid JSON object"),
        (
            "not an object",
            st_bytes("[1,2]", 0),
            "not a valid JSON object",
        ),
        (
            "duplicate name",
            st_bytes(&format!("{{{good},{good}}}"), 8),
            "tensor 'a': appears twice",
        ),
        (
            "unknown dtype",
            st_bytes(&format!("{{{}}}", t("a", "F7", "[2]", 0, 8)), 8),
            "tensor 'a': unknown dtype 'F7'",
        ),
        (
            "wrong byte length",
            st_bytes(&format!("{{{}}}", t("a", "F32", "[3]", 0, 8)), 8),
            "tensor 'a': F32 [3] needs 12 bytes but data_offsets [0, 8] span 8",
        ),
        (
            "wrong dtype for bytes",
            st_bytes(&format!("{{{}}}", t("a", "BF16", "[2]", 0, 8)), 8),
            "BF16 [2] needs 4 bytes",
        ),
        (
            "reversed offsets",
            st_bytes(&format!("{{{}}}", t("a", "F32", "[0]", 8, 0)), 8),
            "end before they begin",
        ),
        (
            "past data",
            st_bytes(&format!("{{{}}}", t("a", "F32", "[2]", 0, 8)), 4),
            "run past the data section of 4 bytes",
        ),
        (
            "overlap",
            st_bytes(
                &format!(
                    "{{{},{}}}",
                    t("a", "F32", "[2]", 0, 8),
                    t("b", "F32", "[2]", 4, 12)
                ),
                12,
            ),
            "tensor 'b': its bytes 4..12 overlap tensor 'a' (0..8)",
        ),
        (
            "gap",
            st_bytes(
                &format!(
                    "{{{},{}}}",
                    t("a", "F32", "[2]", 0, 8),
                    t("b", "F32", "[1]", 12, 16)
                ),
                16,
            ),
            "tensor 'b': starts at data offset 12 but the previous tensor ends at 8",
        ),
        (
            "trailing bytes",
            st_bytes(&format!("{{{good}}}"), 12),
            "4 bytes after the last tensor",
        ),
        (
            "missing field",
            st_bytes(r#"{"a":{"dtype":"F32","shape":[2]}}"#, 8),
            "tensor 'a': malformed entry",
        ),
        (
            "negative dim",
            st_bytes(&format!("{{{}}}", t("a", "F32", "[-2]", 0, 8)), 8),
            "tensor 'a': malformed entry",
        ),
        (
            "bad metadata",
            st_bytes(&format!("{{\"__metadata__\":{{\"k\":1}},{good}}}"), 8),
            "__metadata__ must map strings to strings",
        ),
        (
            "shape overflow",
            st_bytes(
                &format!("{{{}}}", t("a", "F32", "[4294967296,4294967296]", 0, 8)),
                8,
            ),
            "overflows",
        ),
        (
            "nine dimensions",
            st_bytes(
                &format!("{{{}}}", t("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4)),
                4,
            ),
            "tensor 'a': its shape has 9 dimensions, over llmtool's limit of 8",
        ),
        (
            "name over 1024 bytes",
            st_bytes(
                &format!("{{{}}}", t(&"n".repeat(1025), "F32", "[1]", 0, 4)),
                4,
            ),
            "its name is 1025 bytes long, over llmtool's limit of 1024",
        ),
        (
            "too many tensors",
            st_bytes(
                &format!(
                    "{{{}}}",
                    (0..=1 << 18)
                        .map(|i| t(&format!("t{i}"), "F32", "[0]", 0, 0))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                0,
            ),
            "more than llmtool's limit of 262144 tensors per file",
        ),
        (
            "too many metadata entries",
            st_bytes(
                &format!(
                    "{{\"__metadata__\":{{{}}},{good}}}",
                    (0..=4096)
                        .map(|i| format!("\"k{i}\":\"v\""))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                8,
            ),
            "__metadata__ must map strings to strings: it has more than 4096 entries",
        ),
    ];
    for (what, bytes, want) in cases {
        let e = match open_file(&bytes) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{what}: expected '{want}' in: {e}");
        assert!(
            e.contains("bad.safetensors"),
            "{what}: error names the file: {e}"
        );
    }
    // Control: the well-formed variant opens.
    open_file(&st_bytes(&format!("{{{good}}}"), 8)).unwrap();
    // Errors quote at most 80 characters of a name or dtype from the file.
    let long = "x".repeat(1 << 20);
    for header in [
        format!("{{{}}}", t(&long, "F32", "[1]", 0, 4)),
        format!("{{{}}}", t("a", &long, "[1]", 0, 4)),
    ] {
        let e = open_file(&st_bytes(&header, 4)).unwrap_err().to_string();
        let head: String = e.chars().take(400).collect();
        assert!(
            e.len() < 400 && e.contains("x…"),
            "{} bytes: {head}",
            e.len()
        );
    }
}

/// An edit that makes the index lie.
type IndexEdit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn lying_indexes_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 300);
    let index_path = dir.path().join(INDEX_FILE);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let cases: Vec<(&str, IndexEdit, &str)> = vec![
        (
            "missing shard",
            Box::new(|v| v["weight_map"]["lm_head.weight"] = "model-00009-of-00009.safetensors".into()),
            "weight_map names shard 'model-00009-of-00009.safetensors'",
        ),
        (
            "tensor in another shard",
            Box::new(|v| v["weight_map"]["lm_head.weight"] = "model-00001-of-00003.safetensors".into()),
            "weight_map says tensor 'lm_head.weight' is in 'model-00001-of-00003.safetensors', but it is in",
        ),
        (
            "tensor nowhere",
            Box::new(|v| v["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors".into()),
            "weight_map says tensor 'ghost.weight' is in 'model-00001-of-00003.safetensors', but no shard holds it",
        ),
        (
            "unlisted tensor",
            Box::new(|v| {
                v["weight_map"].as_object_mut().unwrap().remove("model.norm.weight");
            }),
            "tensor 'model.norm.weight': is not listed in",
        ),
        ("no weight_map", Box::new(|v| *v = serde_json::json!({"metadata": {}})), "no \"weight_map\" object"),
        ("path escape", Box::new(|v| v["weight_map"]["lm_head.weight"] = "../x.safetensors".into()), "not a plain file name"),
    ];
    for (what, mutate, want) in cases {
        let mut v = original.clone();
        mutate(&mut v);
        std::fs::write(&index_path, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = Model::open(dir.path().to_str().unwrap())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(want), "{what}: expected '{want}' in: {e}");
        assert!(
            e.contains(INDEX_FILE) || e.contains(".safetensors"),
            "{what}: names a file: {e}"
        );
    }
    std::fs::write(&index_path, b"{not json").unwrap();
    let e = Model::open(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed JSON"), "{e}");
}

#[test]
fn model_specs_resolve_or_explain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let open_err = |p: &Path| Model::open(p.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        open_err(d).contains("no model.safetensors"),
        "{}",
        open_err(d)
    );
    std::fs::write(d.join("pytorch_model.bin"), b"PK").unwrap();
    assert!(
        open_err(d).contains("pickle checkpoints can run arbitrary code"),
        "{}",
        open_err(d)
    );
    assert!(open_err(&d.join("pytorch_model.bin")).contains("convert to safetensors"));
    std::fs::write(d.join("adapter_config.json"), b"{}").unwrap();
    assert!(open_err(d).contains("PEFT adapter"), "{}", open_err(d));
    let e = Model::open("no/such-model-anywhere")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`hf download no/such-model-anywhere`"), "{e}");
    let e = Model::open("./nothing here").unwrap_err().to_string();
    assert!(e.contains("is not a file or directory"), "{e}");
}

/// A model.safetensors that is a directory, a symlink loop or a FIFO is
/// named for what it is, not reported absent.
#[cfg(unix)]
#[test]
fn non_regular_model_safetensors_is_named() {
    /// What it is, how to make it, and the error text wanted.
    type Case = (&'static str, fn(&Path), &'static str);
    let cases: [Case; 3] = [
        (
            "directory",
            |p| std::fs::create_dir(p).unwrap(),
            "is a directory, not a regular file",
        ),
        (
            "symlink loop",
            |p| std::os::unix::fs::symlink(p, p).unwrap(),
            "symbolic links",
        ),
        (
            "fifo",
            |p| {
                let made = std::process::Command::new("mkfifo").arg(p).status();
                assert!(made.unwrap().success());
            },
            "is a FIFO, not a regular file",
        ),
    ];
    for (what, make, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        make(&p);
        let e = Model::open(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{}: ", p.display())), "{what}: {e}");
        assert!(e.contains(want), "{what}: expected '{want}' in: {e}");
    }
}

#[test]
fn hub_cache_snapshots_resolve() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--Org--Tiny-Model_1.5");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    assert!(hf_cache::is_repo_id("Org/Tiny-Model_1.5"));
    assert!(hf_cache::is_repo_id("Org/Tiny-Model_1.5@main"));
    assert!(!hf_cache::is_repo_id("./Org/x"));
    assert!(!hf_cache::is_repo_id("a/b/c"));
    assert_eq!(
        hf_cache::snapshot_dir(cache.path(), "Org/Tiny-Model_1.5").unwrap(),
        snap
    );
    assert_eq!(
        hf_cache::snapshot_dir(cache.path(), &format!("Org/Tiny-Model_1.5@{commit}")).unwrap(),
        snap
    );
    let e = hf_cache::snapshot_dir(cache.path(), "Org/Tiny-Model_1.5@v2")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cached revision 'v2'"), "{e}");
    std::fs::write(repo.join("refs/main"), "f".repeat(40)).unwrap();
    let e = hf_cache::snapshot_dir(cache.path(), "Org/Tiny-Model_1.5")
        .unwrap_err()
        .to_string();
    assert!(e.contains("whose snapshot is missing"), "{e}");
    // What refs/main holds must be a commit hash, not a way out of the cache.
    std::fs::create_dir_all(cache.path().join("outside")).unwrap();
    std::fs::write(repo.join("refs/main"), "../../outside\n").unwrap();
    let e = hf_cache::snapshot_dir(cache.path(), "Org/Tiny-Model_1.5")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refs/main: holds '../../outside', not a 40-hex commit hash"),
        "{e}"
    );
    // Nor may a revision name climb out of refs/.
    std::fs::write(cache.path().join("evil"), commit).unwrap();
    let e = hf_cache::snapshot_dir(cache.path(), "Org/Tiny-Model_1.5@../../evil")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'../../evil' is not a revision name"), "{e}");
}

/// Row-by-row decoding sees exactly what a chunk read gives, hands each row
/// its share of the output, and refuses an output it cannot share out.
#[test]
fn map_rows_f32_agrees_with_read_rows_f32() {
    let m = Model::open(common::fixture("models/tiny-qwen2").to_str().unwrap()).unwrap();
    let t = m.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
    let want = m.read_rows_f32(t, 3..9).unwrap();
    let cols = t.row_len() as usize;
    let mut out = vec![0u8; 6 * 4];
    let rows = m
        .map_rows_f32(t, 3..9, &mut out, |row, x, o| {
            let r = (row - 3) as usize;
            assert_eq!(x, &want[r * cols..(r + 1) * cols]);
            o.copy_from_slice(&x[0].to_le_bytes());
            Ok(row)
        })
        .unwrap();
    assert_eq!(rows, (3..9).collect::<Vec<u64>>());
    for r in 0..6 {
        assert_eq!(out[r * 4..r * 4 + 4], want[r * cols].to_le_bytes());
    }
    let err = m
        .map_rows_f32(t, 3..9, &mut [0u8; 7], |_, _, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("up_proj") && err.contains("7 bytes"), "{err}");
}
