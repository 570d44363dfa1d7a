//! Property-based fuzzing of the untrusted-input parsers: mutated GGUF
//! files, safetensors files and sharded indexes must give `Ok` or a clean
//! error, never a panic, and whatever parses must be readable.
//!
//! Structured generators probe the bounds: GGUF metadata arrays of every
//! element type and lying lengths, tensor counts, dimensions and name
//! lengths on both sides of each limit; a file is accepted exactly when it
//! is within them. `hostile_headers_stay_within_memory_bounds` runs
//! llmtool on the worst headers of each kind and bounds its peak RSS.
//!
//! Runs a few hundred cases per target in `cargo test`; for a long run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz_parsers`
//! (see docs/TESTING.md).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common;

use llmtool::quant::GgmlType;
use llmtool::store::gguf::{self, Array, GgufTensor, GgufWriter, Value};
use llmtool::store::safetensors::{self, SafetensorsTensor, ShardedWriter};
use llmtool::store::{DType, Model, TensorInfo, MAX_TENSORS_PER_FILE};
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

/// GGUF header bytes: magic, version 3, tensor and key counts.
fn gguf_header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

fn put_str(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u64).to_le_bytes());
    v.extend_from_slice(s);
}

/// One metadata key `k` holding an array: element type id, claimed length,
/// then `body` as the elements.
fn gguf_array(et: u32, claimed: u64, body: &[u8]) -> Vec<u8> {
    let mut v = gguf_header(0, 1);
    put_str(&mut v, b"k");
    v.extend_from_slice(&9u32.to_le_bytes());
    v.extend_from_slice(&et.to_le_bytes());
    v.extend_from_slice(&claimed.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// A GGUF declaring `claimed` tensors and holding `infos` (name length, ne)
/// as F32 tensors with their data.
fn gguf_tensors(claimed: u64, infos: &[(usize, Vec<u64>)]) -> Vec<u8> {
    let mut v = gguf_header(claimed, 0);
    let mut offset = 0u64;
    for (i, (name_len, ne)) in infos.iter().enumerate() {
        put_str(&mut v, format!("{i:x<name_len$}").as_bytes());
        v.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        ne.iter()
            .for_each(|d| v.extend_from_slice(&d.to_le_bytes()));
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        offset += (4 * ne.iter().product::<u64>()).div_ceil(32) * 32;
    }
    v.resize(v.len().div_ceil(32) * 32 + offset as usize, 0);
    v
}

/// A safetensors file of U8 tensors (name length, shape) with their data.
fn safetensors_of(tensors: &[(usize, Vec<u64>)]) -> Vec<u8> {
    let mut offset = 0u64;
    let entries: Vec<String> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name_len, shape))| {
            let end = offset + shape.iter().product::<u64>();
            let e = format!(
                r#""{i:n<name_len$}":{{"dtype":"U8","shape":{shape:?},"data_offsets":[{offset},{end}]}}"#
            );
            offset = end;
            e
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + offset as usize, 0);
    v
}

/// An array body: random bytes, or well-formed strings.
fn array_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec("[a-z]{0,6}", 0..16).prop_map(|items| {
            let mut v = Vec::new();
            items.iter().for_each(|s| put_str(&mut v, s.as_bytes()));
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever array is accepted holds as many items as it claims, no more
    /// than its bytes allow, and writes back to the bytes it was read from.
    #[test]
    fn gguf_metadata_arrays_are_bounded(
        et in 0u32..14,
        claimed in prop_oneof![0u64..40, Just(1u64 << 40), Just(u64::MAX), any::<u64>()],
        body in array_body(),
    ) {
        let data = gguf_array(et, claimed, &body);
        if let Ok(p) = gguf::parse(Path::new("a.gguf"), &data, 0) {
            let Some(Value::Array(a)) = p.metadata.get("k") else {
                return Err(TestCaseError::fail("key k is not an array"));
            };
            prop_assert_eq!(a.len() as u64, claimed);
            prop_assert!(claimed <= body.len() as u64);
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("w.gguf");
            GgufWriter::create(&out, p.metadata.entries(), vec![]).unwrap().finish().unwrap();
            let written = std::fs::read(&out).unwrap();
            prop_assert_eq!(&written[..], &data[..written.len()]);
        }
    }

    /// A GGUF is accepted exactly when its tensor count is true and within
    /// the limit, and every name and dimension count is within GGUF's.
    #[test]
    fn gguf_tensor_counts_dims_and_names_are_bounded(
        infos in proptest::collection::vec((1usize..80, proptest::collection::vec(0u64..3, 0..7)), 0..6),
        lie in prop_oneof![Just(None), Just(Some(MAX_TENSORS_PER_FILE + 1)), Just(Some(u64::MAX)), (0u64..8).prop_map(Some)],
    ) {
        let claimed = lie.unwrap_or(infos.len() as u64);
        let data = gguf_tensors(claimed, &infos);
        // Infos past the claimed count are data bytes, not tensors.
        let fits = claimed <= infos.len() as u64
            && infos[..claimed as usize]
                .iter()
                .all(|(n, ne)| *n <= gguf::MAX_NAME_LEN && ne.len() <= gguf::MAX_DIMS);
        match gguf::parse(Path::new("t.gguf"), &data, 0) {
            Ok(p) => {
                prop_assert!(fits, "accepted out of bounds: {:?}", (claimed, &infos));
                prop_assert_eq!(p.tensors.len() as u64, claimed);
                reopen_and_read(&p.tensors, &data, "t.gguf")?;
            }
            Err(e) => prop_assert!(!fits, "refused within bounds: {e}"),
        }
    }

    /// A safetensors file is accepted exactly when every shape and name is
    /// within the limits.
    #[test]
    fn safetensors_dims_and_names_are_bounded(
        tensors in proptest::collection::vec(
            (prop_oneof![1usize..40, 1000usize..1100], proptest::collection::vec(1u64..3, 0..11)),
            0..6,
        ),
    ) {
        let data = safetensors_of(&tensors);
        let fits = tensors.iter().all(|(n, shape)| {
            *n <= safetensors::MAX_NAME_LEN && shape.len() <= safetensors::MAX_DIMS
        });
        match safetensors::parse_header(Path::new("t.safetensors"), &data, 0) {
            Ok(h) => {
                prop_assert!(fits, "accepted out of bounds: {:?}", &tensors);
                reopen_and_read(&h.tensors, &data, "t.safetensors")?;
            }
            Err(e) => {
                prop_assert!(!fits, "refused within bounds: {e}");
                prop_assert!(e.to_string().len() < 400, "long error: {e}");
            }
        }
    }
}

/// Runs `llmtool inspect-arch FILE` and returns its peak resident set in
/// bytes, and its stderr. A small Python parent runs it and reports its
/// children's `ru_maxrss`: spawned from this test process, the child's
/// figure would include this process's own high-water mark (Linux carries
/// it across exec), which other tests running in parallel inflate.
#[cfg(target_os = "linux")]
fn inspect_peak_rss(python: &Path, file: &Path) -> (u64, String) {
    const PROBE: &str = "import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(r.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = std::process::Command::new(python)
        .args(["-c", PROBE, env!("CARGO_BIN_EXE_llmtool"), "inspect-arch"])
        .arg(file)
        .output()
        .unwrap();
    let kib: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (
        kib * 1024,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The worst header of each kind the bounds allow (or the issue's cases
/// they now refuse) costs llmtool at most 100 MiB of memory beyond the
/// file itself, mapped: before, a 48 MiB UINT8 array took 1.5 GB, 30 M
/// shape dimensions 2.4 GB and 1.2 M empty tensors 2 GB.
#[cfg(target_os = "linux")]
#[test]
fn hostile_headers_stay_within_memory_bounds() {
    const ALLOWANCE: u64 = 100 << 20;
    fn many(n: usize) -> Vec<(usize, Vec<u64>)> {
        (0..n).map(|_| (1, vec![0])).collect()
    }
    // Built one at a time, so that this process stays small too.
    type Make = fn() -> Vec<u8>;
    let cases: [(&str, Make); 6] = [
        ("48 MiB UINT8 array", || {
            gguf_array(0, 48 << 20, &vec![7; 48 << 20])
        }),
        ("4 M empty strings", || {
            gguf_array(8, 4 << 20, &vec![0; 32 << 20])
        }),
        ("most tensors a GGUF may hold", || {
            gguf_tensors(MAX_TENSORS_PER_FILE, &many(MAX_TENSORS_PER_FILE as usize))
        }),
        ("30 M shape dimensions", || {
            let shape = vec!["1"; 30_000_000].join(",");
            let header =
                format!(r#"{{"a":{{"dtype":"U8","shape":[{shape}],"data_offsets":[0,1]}}}}"#);
            let mut v = (header.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(header.as_bytes());
            v.push(0);
            v
        }),
        ("1.2 M empty tensors", || safetensors_of(&many(1_200_000))),
        ("most tensors a safetensors file may hold", || {
            safetensors_of(&many(MAX_TENSORS_PER_FILE as usize))
        }),
    ];
    let Some(python) = common::python3() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (what, make) in cases {
        let bytes = make();
        let ext = if bytes.starts_with(b"GGUF") {
            "gguf"
        } else {
            "safetensors"
        };
        let file = dir.path().join(format!("hostile.{ext}"));
        std::fs::write(&file, &bytes).unwrap();
        let (peak, err) = inspect_peak_rss(&python, &file);
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            peak <= bytes.len() as u64 + ALLOWANCE,
            "{what}: peak RSS {} MiB for a {} MiB file; stderr: {}",
            peak >> 20,
            bytes.len() >> 20,
            err.chars().take(300).collect::<String>()
        );
        eprintln!(
            "{what}: peak RSS {} MiB for a {} MiB file",
            peak >> 20,
            bytes.len() >> 20
        );
        std::fs::remove_file(&file).unwrap();
    }
}
