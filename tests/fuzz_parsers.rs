//! Property-based fuzzing of the untrusted-input parsers: mutated GGUF
//! files, safetensors files and sharded indexes must give `Ok` or a clean
//! error, never a panic, and whatever parses must be readable.
//!
//! Runs a few hundred cases per target in `cargo test`; for a long run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz_parsers`
//! (see docs/TESTING.md).

use std::collections::BTreeMap;
use std::path::Path;

use llmtool::quant::GgmlType;
use llmtool::store::gguf::{self, Array, GgufTensor, GgufWriter, Value};
use llmtool::store::safetensors::{self, SafetensorsTensor, ShardedWriter};
use llmtool::store::{DType, Model, TensorInfo};
use proptest::prelude::*;

fn seed_gguf() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.gguf");
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".to_string(), Value::U32(1)),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(Array::String(["a"; 3].into_iter().collect())),
        ),
        ("general.alignment".to_string(), Value::U32(32)),
    ];
    let specs = vec![
        GgufTensor {
            name: "q".into(),
            ty: GgmlType::Q8_0,
            shape: vec![2, 32],
        },
        GgufTensor {
            name: "k".into(),
            ty: GgmlType::Q4_K,
            shape: vec![1, 256],
        },
        GgufTensor {
            name: "n".into(),
            ty: GgmlType::F16,
            shape: vec![4],
        },
    ];
    let mut w = GgufWriter::create(&p, &meta, specs.clone()).unwrap();
    for s in &specs {
        let n = s.ty.bytes_for(s.shape.iter().product()).unwrap() as usize;
        w.write_tensor(&s.name, &vec![0x11; n]).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&p).unwrap()
}

fn seed_safetensors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let plan = vec![
        SafetensorsTensor {
            name: "a".into(),
            dtype: DType::F32,
            shape: vec![2, 2],
        },
        SafetensorsTensor {
            name: "b".into(),
            dtype: DType::BF16,
            shape: vec![3],
        },
    ];
    let mut w = ShardedWriter::create(dir.path(), plan, u64::MAX, BTreeMap::new()).unwrap();
    w.write_tensor("a", &[0x3f; 16]).unwrap();
    w.write_tensor("b", &[0x40; 6]).unwrap();
    w.finish().unwrap();
    std::fs::read(dir.path().join("model.safetensors")).unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrite 8 bytes with an extreme little-endian integer.
    Big(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1u64 << 32),
                Just(0),
                Just(u64::MAX / 3),
                any::<u64>()
            ]
        )
            .prop_map(|(i, v)| Mutation::Big(i, v)),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if data.is_empty() {
            break;
        }
        let n = data.len();
        match m {
            Mutation::Flip(i, x) => data[i % n] ^= x,
            Mutation::Truncate(i) => data.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % n;
                data.splice(at..at, v.iter().copied());
            }
            Mutation::Big(i, v) => {
                let at = i % n;
                for (k, b) in v.to_le_bytes().iter().enumerate() {
                    if at + k < n {
                        data[at + k] = *b;
                    }
                }
            }
        }
    }
    data
}

/// Whatever a parser accepts must be fully readable without panicking.
fn read_everything(m: &Model) {
    for t in m.tensors() {
        let _ = m.bytes(t);
        if t.dtype.is_float_readable() {
            let _ = m.read_f32(t);
        }
    }
}

/// Accepted input: offsets stay in bounds, and the file opened as a model
/// reads in full.
fn reopen_and_read(tensors: &[TensorInfo], data: &[u8], name: &str) -> Result<(), TestCaseError> {
    for t in tensors {
        prop_assert!(t.offset + t.len <= data.len() as u64);
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(name);
    std::fs::write(&f, data).unwrap();
    read_everything(&Model::open(f.to_str().unwrap()).unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn gguf_parser_never_panics(muts in proptest::collection::vec(mutation(), 1..4)) {
        let data = apply(seed_gguf(), &muts);
        if let Ok(p) = gguf::parse(Path::new("fuzz.gguf"), &data, 0) {
            reopen_and_read(&p.tensors, &data, "f.gguf")?;
        }
    }

    #[test]
    fn safetensors_parser_never_panics(muts in proptest::collection::vec(mutation(), 1..4)) {
        let data = apply(seed_safetensors(), &muts);
        if let Ok(h) = safetensors::parse_header(Path::new("fuzz.safetensors"), &data, 0) {
            reopen_and_read(&h.tensors, &data, "f.safetensors")?;
        }
    }

    #[test]
    fn index_parser_never_panics(muts in proptest::collection::vec(mutation(), 1..3)) {
        let index = br#"{"metadata":{"total_size":22},"weight_map":{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors"}}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model-00001-of-00001.safetensors"), seed_safetensors()).unwrap();
        std::fs::write(dir.path().join("model.safetensors.index.json"), apply(index.to_vec(), &muts)).unwrap();
        if let Ok(m) = Model::open(dir.path().to_str().unwrap()) {
            read_everything(&m);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = gguf::parse(Path::new("x.gguf"), &data, 0);
        let _ = safetensors::parse_header(Path::new("x.safetensors"), &data, 0);
        let mut prefixed = b"GGUF\x03\0\0\0".to_vec();
        prefixed.extend_from_slice(&data);
        let _ = gguf::parse(Path::new("x.gguf"), &prefixed, 0);
    }
}
