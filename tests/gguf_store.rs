//! GGUF reader and writer: round trips, split files, atomic output, the
//! malformed-input corpus, and gguf-py reading what we write.

use crate::common;

use std::path::Path;

use llmtool::quant::GgmlType;
use llmtool::store::gguf::{Array, GgufTensor, GgufWriter, Value};
use llmtool::store::{DType, Model, StoreError};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Valid Q8_0 blocks: a modest f16 scale, then 32 random int8.
fn q8_0_blocks(n_blocks: usize) -> Vec<u8> {
    let q = noise(n_blocks * 32, 7);
    let mut out = Vec::new();
    for b in 0..n_blocks {
        out.extend_from_slice(&half::f16::from_f32(0.01 * (b as f32 + 1.0)).to_le_bytes());
        out.extend_from_slice(&q[b * 32..b * 32 + 32]);
    }
    out
}

fn sample_metadata() -> Vec<(String, Value)> {
    let s = |x: &str| Value::String(x.to_string());
    vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("roundtrip ✓ ünïcode")),
        ("test.u8".into(), Value::U8(200)),
        ("test.i8".into(), Value::I8(-100)),
        ("test.u16".into(), Value::U16(60000)),
        ("test.i16".into(), Value::I16(-30000)),
        ("llama.block_count".into(), Value::U32(2)),
        ("test.i32".into(), Value::I32(-2_000_000_000)),
        ("test.f32".into(), Value::F32(0.5)),
        ("test.bool".into(), Value::Bool(true)),
        ("test.u64".into(), Value::U64(1 << 40)),
        ("test.i64".into(), Value::I64(-(1 << 40))),
        ("test.f64".into(), Value::F64(1e6)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(["<s>", "Ġhello", ""].into_iter().collect())),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(vec![3, 1, 5])),
        ),
        ("test.empty".into(), Value::Array(Array::U32(vec![]))),
        ("test.with-hyphen.key".into(), Value::Bool(false)),
    ]
}

struct Sample {
    specs: Vec<GgufTensor>,
    data: Vec<Vec<u8>>,
}

fn sample_tensors() -> Sample {
    let spec = |name: &str, ty, shape: &[u64]| GgufTensor {
        name: name.into(),
        ty,
        shape: shape.to_vec(),
    };
    let specs = vec![
        spec("token_embd.weight", GgmlType::Q8_0, &[3, 64]),
        spec("blk.0.attn_norm.weight", GgmlType::F32, &[5]),
        spec("blk.0.attn_q.weight", GgmlType::F16, &[2, 3]),
        spec("blk.0.attn_k.weight", GgmlType::BF16, &[1, 2, 7]),
        spec("blk.0.attn_q.bias", GgmlType::Q8_0, &[64]),
    ];
    let data = vec![
        q8_0_blocks(6),
        f32_bytes(&[1.0, -2.0, 3.5, 0.0, 1e-3]),
        noise(12, 1),
        noise(28, 2),
        q8_0_blocks(2),
    ];
    Sample { specs, data }
}

fn write_sample(path: &Path, meta: &[(String, Value)]) -> Sample {
    let s = sample_tensors();
    let mut w = GgufWriter::create(path, meta, s.specs.clone()).unwrap();
    for (t, d) in s.specs.iter().zip(&s.data) {
        w.write_tensor(&t.name, d).unwrap();
    }
    w.finish().unwrap();
    s
}

#[test]
fn writer_round_trips_metadata_and_tensors() {
    for alignment in [None, Some(64u32)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut meta = sample_metadata();
        if let Some(a) = alignment {
            meta.push(("general.alignment".into(), Value::U32(a)));
        }
        let s = write_sample(&path, &meta);
        let m = Model::open(path.to_str().unwrap()).unwrap();
        let g = m.gguf.as_ref().unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.entries(), &meta[..]);
        assert_eq!(m.tensors().len(), s.specs.len());
        let align = alignment.unwrap_or(32) as u64;
        for (spec, data) in s.specs.iter().zip(&s.data) {
            let t = m.get(&spec.name).unwrap();
            assert_eq!(t.shape, spec.shape, "{}", spec.name);
            assert_eq!(t.dtype, DType::from_ggml(spec.ty));
            assert_eq!(t.offset % align, 0, "{} is aligned", spec.name);
            assert_eq!(m.bytes(t), &data[..], "{} bytes", spec.name);
        }
        // Reading as f32 goes through the same dequantizer everywhere.
        let norm = m
            .read_f32(m.get("blk.0.attn_norm.weight").unwrap())
            .unwrap();
        assert_eq!(norm, vec![1.0, -2.0, 3.5, 0.0, 1e-3]);
        let rows = m
            .read_rows_f32(m.get("token_embd.weight").unwrap(), 1..3)
            .unwrap();
        let all = m.read_f32(m.get("token_embd.weight").unwrap()).unwrap();
        assert_eq!(rows, all[64..].to_vec());
        // A 1-D block-quantized tensor reads whole; its "rows" are elements.
        let bias = m.get("blk.0.attn_q.bias").unwrap();
        let whole = m.read_f32(bias).unwrap();
        assert_eq!(
            (whole.len(), whole[0]),
            (
                64,
                (s.data[4][2] as i8) as f32 * half::f16::from_f32(0.01).to_f32()
            )
        );
        let e = m.read_rows_f32(bias, 0..3).unwrap_err().to_string();
        assert!(e.contains("not whole Q8_0 blocks"), "{e}");
        // The file ends padded to the alignment, as gguf-py and llama.cpp write.
        assert_eq!(std::fs::metadata(&path).unwrap().len() % align, 0);
    }
}

#[test]
fn gguf_py_reads_what_we_write() {
    let Some(py) = common::gguf_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let meta = sample_metadata();
    let s = write_sample(&path, &meta);
    let mut expect_meta = serde_json::Map::new();
    for (k, v) in &meta {
        let mut e = serde_json::json!({"type": serde_json::to_value(v.value_type()).unwrap(), "value": v.to_json()});
        if let Value::Array(a) = v {
            e["item_type"] = serde_json::to_value(a.item_type()).unwrap();
        }
        expect_meta.insert(k.clone(), e);
    }
    let tensors: Vec<_> = s
        .specs
        .iter()
        .zip(&s.data)
        .map(|(t, d)| {
            let ne: Vec<u64> = t.shape.iter().rev().copied().collect();
            serde_json::json!({"name": t.name, "type": t.ty.name(), "shape": ne, "sha256": common::sha256_hex(d)})
        })
        .collect();
    let expect = serde_json::json!({"metadata": expect_meta, "tensors": tensors, "alignment": 32});
    let ej = dir.path().join("expect.json");
    std::fs::write(&ej, serde_json::to_vec_pretty(&expect).unwrap()).unwrap();
    common::run_oracle(&py, "check_gguf.py", &[&path, &ej]);

    // The oracle must also be able to fail: a wrong hash is caught.
    let mut wrong = expect.clone();
    wrong["tensors"][0]["sha256"] = "00".repeat(32).into();
    std::fs::write(&ej, serde_json::to_vec_pretty(&wrong).unwrap()).unwrap();
    let out = std::process::Command::new(&py)
        .arg(common::repo().join("tests/oracle/check_gguf.py"))
        .args([&path, &ej])
        .output()
        .unwrap();
    assert!(!out.status.success(), "check_gguf.py accepted a wrong hash");
}

#[test]
fn dropped_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let s = sample_tensors();
    let mut w = GgufWriter::create(&path, &sample_metadata(), s.specs.clone()).unwrap();
    w.write_tensor(&s.specs[0].name, &s.data[0]).unwrap();
    // Out-of-order and wrong-length writes are refused without side effects.
    assert!(w.write_tensor(&s.specs[2].name, &s.data[2]).is_err());
    assert!(w.write_tensor(&s.specs[1].name, &s.data[2]).is_err());
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary or final file remains"
    );
    // finish() before all tensors are written fails and also cleans up.
    let w = GgufWriter::create(&path, &sample_metadata(), s.specs.clone()).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("only 0 of 5 planned tensors"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Metadata, tensors, and the error text the writer must give.
type PlanCase = (Vec<(String, Value)>, Vec<GgufTensor>, &'static str);

#[test]
fn writer_refuses_bad_plans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let spec = |name: &str, ty, shape: &[u64]| GgufTensor {
        name: name.into(),
        ty,
        shape: shape.to_vec(),
    };
    let cases: Vec<PlanCase> = vec![
        (
            vec![],
            vec![spec(&"x".repeat(64), GgmlType::F32, &[1])],
            "longer than 63",
        ),
        (
            vec![],
            vec![spec("a", GgmlType::Q4_K, &[2, 128])],
            "blocks of 256",
        ),
        (
            vec![],
            vec![
                spec("a", GgmlType::F32, &[1]),
                spec("a", GgmlType::F32, &[1]),
            ],
            "repeated",
        ),
        (
            vec![],
            vec![spec("a", GgmlType::F32, &[1, 1, 1, 1, 1])],
            "more than 4 dimensions",
        ),
        (
            vec![("general.alignment".into(), Value::U32(48))],
            vec![],
            "power of two",
        ),
        (
            vec![("k".into(), Value::U8(1)), ("k".into(), Value::U8(2))],
            vec![],
            "repeated",
        ),
    ];
    for (meta, specs, want) in cases {
        let e = GgufWriter::create(&path, &meta, specs)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(want), "expected '{want}' in: {e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn split_files_open_as_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_tensors();
    let split_meta = |no: u16, total: i32| {
        vec![
            ("split.no".to_string(), Value::U16(no)),
            ("split.count".to_string(), Value::U16(2)),
            ("split.tensors.count".to_string(), Value::I32(total)),
        ]
    };
    let write = |name: &str, meta: Vec<(String, Value)>, range: std::ops::Range<usize>| {
        // Writers never replace a file; the variants below replace shards.
        let _ = std::fs::remove_file(dir.path().join(name));
        let mut w = GgufWriter::create(
            &dir.path().join(name),
            &meta,
            s.specs[range.clone()].to_vec(),
        )
        .unwrap();
        for i in range {
            w.write_tensor(&s.specs[i].name, &s.data[i]).unwrap();
        }
        w.finish().unwrap();
    };
    let mut first = sample_metadata();
    first.extend(split_meta(0, 5));
    write("m-00001-of-00002.gguf", first, 0..2);
    write("m-00002-of-00002.gguf", split_meta(1, 5), 2..5);
    let p = dir.path().join("m-00001-of-00002.gguf");
    let m = Model::open(p.to_str().unwrap()).unwrap();
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.tensors().len(), 5);
    assert_eq!(
        m.bytes(m.get("blk.0.attn_k.weight").unwrap()),
        &s.data[3][..]
    );
    assert_eq!(
        m.gguf.as_ref().unwrap().str("general.architecture"),
        Some("llama")
    );
    // The directory resolves to the split set too.
    assert_eq!(
        Model::open(dir.path().to_str().unwrap())
            .unwrap()
            .tensors()
            .len(),
        5
    );

    // A lying split.tensors.count.
    let mut lying = sample_metadata();
    lying.extend(split_meta(0, 6));
    write("m-00001-of-00002.gguf", lying, 0..2);
    let e = Model::open(p.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("split.tensors.count says 6 tensors but the shards hold 5"),
        "{e}"
    );

    // A missing shard.
    std::fs::remove_file(dir.path().join("m-00002-of-00002.gguf")).unwrap();
    let e = Model::open(p.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("m-00002-of-00002.gguf: split shard 2 of 2 is missing"),
        "{e}"
    );
}

/// Hand-assembled GGUF bytes, for inputs our writer refuses to produce.
#[derive(Default)]
struct Raw(Vec<u8>);
impl Raw {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &[u8]) -> Self {
        self.u64(s.len() as u64).bytes(s)
    }
    fn header(n_tensors: u64, n_kv: u64) -> Self {
        Raw::default()
            .bytes(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kv)
    }
    /// A tensor info: name, ne, type id, offset.
    fn info(self, name: &str, ne: &[u64], ty: u32, off: u64) -> Self {
        let mut r = self.str(name.as_bytes()).u32(ne.len() as u32);
        for &d in ne {
            r = r.u64(d);
        }
        r.u32(ty).u64(off)
    }
    fn pad_to(mut self, n: usize) -> Self {
        self.0.resize(n, 0);
        self
    }
}

fn open_bytes(bytes: &[u8]) -> Result<Model, StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, bytes).unwrap();
    Model::open(p.to_str().unwrap())
}

#[test]
fn malformed_gguf_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.gguf");
    write_sample(&good_path, &sample_metadata());
    let good = std::fs::read(&good_path).unwrap();

    let two_f32 = |off_a: u64, off_b: u64, len: usize| {
        Raw::header(2, 0)
            .info("a", &[8], 0, off_a)
            .info("b", &[8], 0, off_b)
            .pad_to(len)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty file",
            vec![],
            "truncated: the GGUF magic needs 4 bytes",
        ),
        ("bad magic", b"GGML\x03\0\0\0".to_vec(), "not a GGUF file"),
        (
            "version 1",
            Raw::default().bytes(b"GGUF").u32(1).0,
            "GGUF version 1 is not supported",
        ),
        (
            "big endian",
            Raw::default().bytes(b"GGUF").u32(3 << 24).0,
            "big-endian",
        ),
        (
            "truncated counts",
            Raw::default().bytes(b"GGUF").u32(3).u64(0).0,
            "truncated: the metadata count",
        ),
        (
            "huge kv count",
            Raw::header(0, u64::MAX).0,
            "the metadata count is 18446744073709551615, over llmtool's limit of 65536 keys",
        ),
        (
            "kv count past the file",
            Raw::header(0, 1000).pad_to(256).0,
            "the metadata count claims 1000 items",
        ),
        (
            "huge string",
            Raw::header(0, 1).u64(u64::MAX / 2).pad_to(64).0,
            "metadata key #0 needs",
        ),
        (
            "bad utf-8 key",
            Raw::header(0, 1).str(b"k\xff").u32(0).bytes(&[1]).0,
            "metadata key #0 is not valid UTF-8",
        ),
        (
            "empty key",
            Raw::header(0, 1).str(b"").u32(0).bytes(&[1]).0,
            "metadata key #0 is empty",
        ),
        (
            "unknown value type",
            Raw::header(0, 1).str(b"k").u32(13).0,
            "metadata 'k' has unknown value type 13",
        ),
        (
            "bool not 0/1",
            Raw::header(0, 1).str(b"k").u32(7).bytes(&[2]).0,
            "must be 0 or 1",
        ),
        (
            "duplicate key",
            Raw::header(0, 2)
                .str(b"k")
                .u32(0)
                .bytes(&[1])
                .str(b"k")
                .u32(0)
                .bytes(&[1])
                .0,
            "metadata key 'k' appears twice",
        ),
        (
            "nested array",
            Raw::header(0, 1)
                .str(b"k")
                .u32(9)
                .u32(9)
                .u64(1)
                .u32(0)
                .u64(0)
                .0,
            "nested array",
        ),
        (
            "huge array",
            Raw::header(0, 1).str(b"k").u32(9).u32(4).u64(1 << 60).0,
            "claims 1152921504606846976 items",
        ),
        (
            "alignment type",
            Raw::header(0, 1)
                .str(b"general.alignment")
                .u32(10)
                .u64(32)
                .0,
            "must be a UINT32 power of two",
        ),
        (
            "alignment zero",
            Raw::header(0, 1).str(b"general.alignment").u32(4).u32(0).0,
            "must be a UINT32 power of two",
        ),
        (
            "huge tensor count",
            Raw::header(u64::MAX, 0).0,
            "over llmtool's limit of 262144 tensors per file",
        ),
        (
            "tensor count past the file",
            Raw::header(1000, 0).pad_to(256).0,
            "the tensor count claims 1000 items",
        ),
        (
            "tensor name over GGML_MAX_NAME",
            Raw::header(1, 0)
                .info(&"x".repeat(64), &[4], 0, 0)
                .pad_to(256)
                .0,
            "its name is 64 bytes long; GGUF allows at most 63",
        ),
        (
            "bool array item not 0/1",
            Raw::header(0, 1)
                .str(b"k")
                .u32(9)
                .u32(7)
                .u64(3)
                .bytes(&[0, 1, 5])
                .0,
            "metadata 'k' is a bool with byte value 5 at offset",
        ),
        (
            "alignment array",
            Raw::header(0, 1)
                .str(b"general.alignment")
                .u32(9)
                .u32(4)
                .u64(2)
                .u32(32)
                .u32(32)
                .0,
            "must be a UINT32 power of two, found an ARRAY",
        ),
        (
            "too many dims",
            Raw::header(1, 0)
                .info("t", &[1, 1, 1, 1, 1], 0, 0)
                .pad_to(128)
                .0,
            "tensor 't': has 5 dimensions",
        ),
        (
            "unknown ggml type",
            Raw::header(1, 0).info("t", &[4], 99, 0).pad_to(128).0,
            "tensor 't': has unknown ggml type id 99",
        ),
        (
            "ne0 not block multiple",
            Raw::header(1, 0).info("t", &[33], 8, 0).pad_to(128).0,
            "ne[0] = 33 is not a multiple of Q8_0's block size 32",
        ),
        (
            "shape overflow",
            Raw::header(1, 0)
                .info("t", &[1 << 40, 1 << 40], 0, 0)
                .pad_to(128)
                .0,
            "overflows",
        ),
        (
            "misaligned offset",
            two_f32(0, 40, 256).0,
            "tensor 'b': data offset 40 is not a multiple of the alignment 32",
        ),
        (
            "overlapping tensors",
            Raw::header(2, 0)
                .info("a", &[16], 0, 0)
                .info("b", &[8], 0, 32)
                .pad_to(256)
                .0,
            "tensor 'b': its bytes",
        ),
        (
            "offset past end",
            two_f32(0, 4096, 256).0,
            "tensor 'b': data at offset 4096 (+32 bytes) runs past the end of the 256-byte file",
        ),
        ("valid control", two_f32(0, 32, 256).0, ""),
        (
            "truncated data",
            good[..good.len() - 40].to_vec(),
            "runs past the end",
        ),
        ("truncated header", good[..100].to_vec(), "truncated"),
    ];
    for (what, bytes, want) in cases {
        if want.is_empty() {
            // two_f32 with distinct names at aligned offsets is valid: the
            // control case that the raw builder itself is right.
            open_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
            continue;
        }
        let e = match open_bytes(&bytes) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{what}: expected '{want}' in: {e}");
        assert!(e.contains("bad.gguf"), "{what}: error names the file: {e}");
    }
    let dup = Raw::header(2, 0)
        .info("a", &[8], 0, 0)
        .info("a", &[8], 0, 32)
        .pad_to(256)
        .0;
    let e = open_bytes(&dup)
        .expect_err("duplicate tensor refused")
        .to_string();
    assert!(e.contains("tensor 'a': appears twice"), "{e}");
    // Errors quote at most 80 characters of a name from the file.
    for bytes in [
        Raw::header(1, 0)
            .info(&"y".repeat(1 << 20), &[4], 0, 0)
            .pad_to((1 << 20) + 256)
            .0,
        Raw::header(0, 1)
            .str("z".repeat(1 << 20).as_bytes())
            .u32(13)
            .0,
    ] {
        let e = open_bytes(&bytes).expect_err("refused").to_string();
        let head: String = e.chars().take(400).collect();
        assert!(
            e.len() < 400 && e.contains("…"),
            "{} bytes: {head}",
            e.len()
        );
    }
}

/// A FIFO or a device named as a GGUF is refused for what it is (opening a
/// FIFO would block), not reported as a missing split shard.
#[cfg(unix)]
#[test]
fn non_regular_gguf_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.gguf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let dev = dir.path().join("random.gguf");
    std::os::unix::fs::symlink("/dev/urandom", &dev).unwrap();
    for (p, what) in [(fifo, "is a FIFO"), (dev, "is a device")] {
        let e = Model::open(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}: {what}, not a regular file", p.display())),
            "{e}"
        );
        assert!(!e.contains("missing"), "{e}");
    }
}
