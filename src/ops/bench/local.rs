//! `bench local`: the built-in engine measured the way `llama-bench`
//! measures llama.cpp (tools/llama-bench/llama-bench.cpp), so the two can
//! be compared on the same machine without a server.
//!
//! This module owns the test plan (pp, tg and pp+tg tests at each depth, in
//! llama-bench's order), the timed loops and the report rows, whose fields
//! carry llama-bench's JSON names where it has one. As there:
//! - a pp test prefills `n_prompt` random tokens (the first one BOS when the
//!   model adds one), [`N_UBATCH`] tokens per forward pass; a tg test
//!   decodes `n_gen` tokens one at a time, starting from BOS or a random
//!   token; pp+tg does both in one timed sample;
//! - tokens are `rand() % n_vocab` from C's `rand()` never seeded (glibc's
//!   generator, seed 1; [`CRand`]), one stream through the whole run;
//! - a depth `d` first fills the cache with `d` tokens, untimed, once for
//!   the tests at that depth, and every repetition starts from a copy of
//!   that cache (llama-bench restores the state it saved);
//! - the warmup (unless turned off) runs the prompt once and one generated
//!   token, untimed; every repetition starts from an empty (or depth) cache;
//! - t/s of a sample is `1e9 · (n_prompt + n_gen) / ns`; `avg_ts` and
//!   `stddev_ts` are the mean and sample std of those per-sample speeds,
//!   not speeds of the mean time. `avg_ns` is truncated to whole ns as
//!   llama-bench's integer mean is; `stddev_ns` is the sample std rounded
//!   (llama-bench computes it in integer arithmetic, within 1 ns of this).

use std::time::Instant;

use serde::Serialize;

use super::stats::sample_std;
use crate::model::arch;
use crate::model::engine::text::Text;
use crate::model::engine::{Engine, KvCache, Logits};
use crate::ops::{EngineOptions, Error, Result};
use crate::quant::ftype::FileType;
use crate::store::Model;

/// Tokens per `llama_decode` call in llama-bench (its `-b` default); we
/// report it for comparability.
pub const N_BATCH: usize = 2048;
/// Tokens per forward pass of a prefill (llama-bench's `-ub` default: the
/// size llama.cpp really computes at once).
pub const N_UBATCH: usize = 512;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Prompt lengths of the pp tests (0 entries skipped).
    pub n_prompt: Vec<usize>,
    /// Lengths of the tg tests (0 entries skipped).
    pub n_gen: Vec<usize>,
    /// (prompt, gen) of the combined pp+tg tests.
    pub pg: Vec<(usize, usize)>,
    /// Context filled before each test, untimed.
    pub depth: Vec<usize>,
    pub repetitions: usize,
    pub warmup: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    pub engine: EngineOptions,
}

/// One test: what a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Test {
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`, `pp512+tg128`, then ` @ dN`.
    pub fn name(&self) -> String {
        let base = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        if self.n_depth > 0 {
            format!("{base} @ d{}", self.n_depth)
        } else {
            base
        }
    }

    /// Context the test needs.
    fn context(&self) -> usize {
        self.n_depth + self.n_prompt + self.n_gen
    }
}

/// The tests of `opts` in llama-bench's order: for each depth, the pp
/// tests, the tg tests, then the pp+tg pairs.
pub fn plan(opts: &LocalOptions) -> Vec<Test> {
    let mut tests = Vec::new();
    for &n_depth in &opts.depth {
        let pp = opts.n_prompt.iter().filter(|&&p| p > 0).map(|&p| (p, 0));
        let tg = opts.n_gen.iter().filter(|&&g| g > 0).map(|&g| (0, g));
        let pg = opts.pg.iter().filter(|&&(p, g)| p + g > 0).copied();
        tests.extend(pp.chain(tg).chain(pg).map(|(n_prompt, n_gen)| Test {
            n_prompt,
            n_gen,
            n_depth,
        }));
    }
    tests
}

/// One row of the report: a test and its samples. Field names are
/// llama-bench's (`-o json`) except the ones marked ours.
#[derive(Debug, Clone, Serialize)]
pub struct LocalRow {
    /// Ours: the engine measured ("llmtool"), to tell rows from llama-bench's.
    pub engine: &'static str,
    /// Ours: the version of llmtool that measured.
    pub llmtool_version: &'static str,
    pub model_filename: String,
    /// `family size dtype`, e.g. `llama 135M Q4_K` (llama-bench: llama.cpp's
    /// model description).
    pub model_type: String,
    /// Bytes of the tensors.
    pub model_size: u64,
    pub model_n_params: u64,
    pub backends: &'static str,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub n_threads: usize,
    /// The KV cache's element type: the engine keeps it in f32.
    pub type_k: &'static str,
    pub type_v: &'static str,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    /// Ours: llama-bench's test name (`pp512`, `tg128 @ d4096`).
    pub test: String,
    pub avg_ns: u64,
    pub stddev_ns: u64,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
}

/// The backend column: llama-bench's `backends`, naming our engine.
pub const BACKEND: &str = "CPU (llmtool)";

/// Every test's row, in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    pub rows: Vec<LocalRow>,
    /// Why the run differs from llama-bench's (e.g. no tokenizer to tell
    /// whether the model adds BOS).
    pub warnings: Vec<String>,
}

/// C's `rand()` as glibc computes it (`random_r`, TYPE_3: an additive
/// feedback generator over 31 words seeded by a Lehmer generator), so
/// the random tokens are llama-bench's, which never calls `srand`.
#[derive(Debug, Clone)]
pub struct CRand {
    table: [u32; 31],
    front: usize,
    rear: usize,
}

impl CRand {
    /// glibc's `srand(seed)` (0 counts as 1).
    pub fn new(seed: u32) -> CRand {
        let mut table = [0u32; 31];
        let mut word = seed.max(1) as i64;
        table[0] = word as u32;
        for slot in table.iter_mut().skip(1) {
            // 16807 · word mod (2³¹ − 1), Schrage's way as glibc writes it.
            let (hi, lo) = (word / 127_773, word % 127_773);
            word = 16_807 * lo - 2_836 * hi;
            if word < 0 {
                word += 2_147_483_647;
            }
            *slot = word as u32;
        }
        let mut r = CRand {
            table,
            front: 3,
            rear: 0,
        };
        // glibc discards the first 310 outputs.
        for _ in 0..310 {
            r.next_u31();
        }
        r
    }

    /// The next `rand()`: 0 ..= 2³¹ − 1.
    pub fn next_u31(&mut self) -> u32 {
        self.table[self.front] = self.table[self.front].wrapping_add(self.table[self.rear]);
        let out = self.table[self.front] >> 1;
        self.front = (self.front + 1) % 31;
        self.rear = (self.rear + 1) % 31;
        out
    }
}

/// The engine and the token source shared by every test of a run.
pub struct Bench<'e, 'm> {
    engine: &'e Engine<'m>,
    rand: CRand,
    /// BOS when the model adds one (`llama_vocab_get_add_bos`).
    bos: Option<u32>,
}

impl<'e, 'm> Bench<'e, 'm> {
    pub fn new(engine: &'e Engine<'m>, bos: Option<u32>) -> Bench<'e, 'm> {
        Bench {
            engine,
            rand: CRand::new(1),
            bos,
        }
    }

    fn random_token(&mut self) -> u32 {
        self.rand.next_u31() % self.engine.config.vocab as u32
    }

    /// llama-bench's `test_prompt`: `n` tokens after what `cache` holds,
    /// BOS first when the model adds one.
    pub fn prompt(&mut self, cache: &mut KvCache, n: usize) -> Result<()> {
        let mut done = 0;
        let mut tokens = Vec::with_capacity(N_UBATCH.min(n));
        while done < n {
            let len = (n - done).min(N_UBATCH);
            tokens.clear();
            for i in 0..len {
                let t = match self.bos {
                    Some(b) if done == 0 && i == 0 => b,
                    _ => self.random_token(),
                };
                tokens.push(t);
            }
            self.engine
                .forward(&mut [&mut *cache], &[&tokens], Logits::Last)?;
            done += len;
        }
        Ok(())
    }

    /// llama-bench's `test_gen`: `n` single-token passes, the first on BOS
    /// (or a random token), each later one on a random token.
    pub fn generate(&mut self, cache: &mut KvCache, n: usize) -> Result<()> {
        let mut token = match self.bos {
            Some(b) => b,
            None => self.random_token(),
        };
        for _ in 0..n {
            self.engine
                .forward(&mut [&mut *cache], &[&[token]], Logits::Last)?;
            token = self.random_token();
        }
        Ok(())
    }

    /// One timed sample of `t` on `cache` (already holding the depth):
    /// nanoseconds of the prompt and the generation together.
    pub fn sample(&mut self, cache: &mut KvCache, t: &Test) -> Result<u64> {
        let start = Instant::now();
        if t.n_prompt > 0 {
            self.prompt(cache, t.n_prompt)?;
        }
        if t.n_gen > 0 {
            self.generate(cache, t.n_gen)?;
        }
        Ok(start.elapsed().as_nanos().max(1) as u64)
    }
}

/// Runs every test of `opts` on `model` and reports them; `model_filename`
/// is what the user named.
pub fn bench_local(
    model: &Model,
    model_filename: &str,
    opts: &LocalOptions,
) -> Result<LocalReport> {
    let tests = plan(opts);
    if tests.is_empty() {
        return Err(Error::Refused(
            "nothing to measure: every -p and -n is 0 and no --pg pair is given; \
             ask for at least one test (e.g. -p 512 or -n 128)"
                .into(),
        ));
    }
    if opts.repetitions == 0 {
        return Err(Error::Refused("-r must be at least 1".into()));
    }
    let a = arch::detect(model);
    if let Some(ctx) = a.context_length {
        if let Some(t) = tests.iter().find(|t| t.context() as u64 > ctx) {
            return Err(Error::Refused(format!(
                "{model_filename}: test {} needs {} tokens of context (depth {} + prompt {} + gen {}) \
                 but the model's context length ({}) is {ctx}; lower -d, -p or -n",
                t.name(),
                t.context(),
                t.n_depth,
                t.n_prompt,
                t.n_gen,
                context_key(model),
            )));
        }
    }
    let engine = opts.engine.engine(model)?;
    let mut warnings = Vec::new();
    let bos = match Text::load(model, opts.engine.tokenizer.as_deref()) {
        Ok(text) => text.bos_for(model)?,
        Err(e) => {
            warnings.push(format!(
                "no tokenizer ({e}); prompts start without BOS, as for a model that adds none"
            ));
            None
        }
    };
    let mut bench = Bench::new(&engine, bos);
    let model_type = model_type(model, &a);
    let n_threads = rayon::current_num_threads();
    let bar = crate::progress::count_bar(
        opts.progress,
        (tests.len() * opts.repetitions) as u64,
        "benchmarking",
        "run",
    );
    let mut rows = Vec::with_capacity(tests.len());
    let mut cache = engine.new_cache();
    let mut filled = engine.new_cache();
    for t in &tests {
        bar.set_message(t.name());
        if opts.warmup {
            cache.clear();
            if t.n_prompt > 0 {
                bench.prompt(&mut cache, t.n_prompt)?;
            }
            if t.n_gen > 0 {
                bench.generate(&mut cache, 1)?;
            }
        }
        // A depth is filled once for all the tests at that depth; each
        // repetition starts from a copy, as llama-bench restores the state
        // it saved.
        if filled.len() != t.n_depth {
            filled.clear();
            bench.prompt(&mut filled, t.n_depth)?;
        }
        let mut samples_ns = Vec::with_capacity(opts.repetitions);
        for _ in 0..opts.repetitions {
            crate::cancel::check()?;
            cache.clone_from(&filled);
            samples_ns.push(bench.sample(&mut cache, t)?);
            bar.inc(1);
        }
        rows.push(row(
            t,
            samples_ns,
            model_filename,
            &a,
            &model_type,
            n_threads,
        ));
    }
    bar.finish_and_clear();
    Ok(LocalReport { rows, warnings })
}

/// Where the context length was read, for the error that cites it.
fn context_key(model: &Model) -> &'static str {
    if model.gguf.is_some() {
        "GGUF {arch}.context_length"
    } else {
        "config.json max_position_embeddings"
    }
}

/// `family size type`: the family as declared, the parameters in M or B,
/// the GGUF file type (`Q4_K_M`, as llama-bench names the model by it) or
/// else the dtype holding most bytes.
fn model_type(model: &Model, a: &arch::Arch) -> String {
    let family = a
        .declared_family
        .clone()
        .unwrap_or_else(|| format!("{:?}", a.family).to_lowercase());
    let p = a.params.total as f64;
    let size = if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else {
        format!("{:.0}M", p / 1e6)
    };
    let file_type = model
        .gguf
        .as_ref()
        .and_then(|m| m.u64("general.file_type"))
        .and_then(|id| FileType::from_id(id as u32))
        .map(|f| f.name().to_string());
    match file_type.or_else(|| {
        a.dtypes
            .iter()
            .max_by_key(|d| d.bytes)
            .map(|d| d.dtype.to_string())
    }) {
        Some(t) => format!("{family} {size} {t}"),
        None => format!("{family} {size}"),
    }
}

fn row(
    t: &Test,
    samples_ns: Vec<u64>,
    model_filename: &str,
    a: &arch::Arch,
    model_type: &str,
    n_threads: usize,
) -> LocalRow {
    let tokens = (t.n_prompt + t.n_gen) as f64;
    let samples_ts: Vec<f64> = samples_ns
        .iter()
        .map(|&ns| 1e9 * tokens / ns as f64)
        .collect();
    let ns: Vec<f64> = samples_ns.iter().map(|&n| n as f64).collect();
    let n = samples_ns.len() as f64;
    LocalRow {
        engine: "llmtool",
        llmtool_version: env!("CARGO_PKG_VERSION"),
        model_filename: model_filename.to_string(),
        model_type: model_type.to_string(),
        model_size: a.tensor_bytes,
        model_n_params: a.params.total,
        backends: BACKEND,
        n_batch: N_BATCH,
        n_ubatch: N_UBATCH,
        n_threads,
        type_k: "f32",
        type_v: "f32",
        n_prompt: t.n_prompt,
        n_gen: t.n_gen,
        n_depth: t.n_depth,
        test: t.name(),
        avg_ns: samples_ns.iter().sum::<u64>() / samples_ns.len() as u64,
        stddev_ns: sample_std(&ns).round() as u64,
        avg_ts: samples_ts.iter().sum::<f64>() / n,
        stddev_ts: sample_std(&samples_ts),
        samples_ns,
        samples_ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_llama() -> Model {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-llama");
        Model::open(dir.to_str().unwrap()).unwrap()
    }

    #[test]
    fn crand_is_glibc_rand() {
        // printf("%d", rand()) ×5 without srand, glibc.
        let mut r = CRand::new(1);
        let got: Vec<u32> = (0..5).map(|_| r.next_u31()).collect();
        assert_eq!(
            got,
            [1804289383, 846930886, 1681692777, 1714636915, 1957747793]
        );
    }

    #[test]
    fn plan_follows_llama_bench_order_and_names() {
        let opts = LocalOptions {
            n_prompt: vec![512, 0],
            n_gen: vec![128],
            pg: vec![(512, 128), (0, 0)],
            depth: vec![0, 4096],
            repetitions: 1,
            warmup: false,
            progress: false,
            engine: EngineOptions::default(),
        };
        let names: Vec<String> = plan(&opts).iter().map(Test::name).collect();
        assert_eq!(
            names,
            [
                "pp512",
                "tg128",
                "pp512+tg128",
                "pp512 @ d4096",
                "tg128 @ d4096",
                "pp512+tg128 @ d4096"
            ]
        );
    }

    #[test]
    fn a_sample_runs_after_the_depth_and_fills_the_cache() {
        let model = tiny_llama();
        let engine = Engine::new(&model).unwrap();
        let mut bench = Bench::new(&engine, Some(1));
        let mut cache = engine.new_cache();
        // A prompt longer than one ubatch goes through in several passes.
        bench.prompt(&mut cache, N_UBATCH + 7).unwrap();
        assert_eq!(cache.len(), N_UBATCH + 7);
        let t = Test {
            n_prompt: 5,
            n_gen: 3,
            n_depth: N_UBATCH + 7,
        };
        assert!(bench.sample(&mut cache, &t).unwrap() > 0);
        assert_eq!(cache.len(), N_UBATCH + 7 + 5 + 3);
    }

    #[test]
    fn speeds_are_per_sample_and_std_is_the_sample_std() {
        let model = tiny_llama();
        let t = Test {
            n_prompt: 0,
            n_gen: 100,
            n_depth: 0,
        };
        let samples = vec![1_000_000_000, 2_000_000_000, 4_000_000_001];
        let r = row(&t, samples, "m", &arch::detect(&model), "x", 1);
        // 100, 50, ~25 t/s: the mean of speeds (58.33), not 100 tokens over
        // the mean time (42.86).
        assert!((r.avg_ts - 175.0 / 3.0).abs() < 1e-6, "{}", r.avg_ts);
        assert!(
            (r.stddev_ts - 38.18813079402639).abs() < 1e-6,
            "{}",
            r.stddev_ts
        );
        assert_eq!(r.avg_ns, 2_333_333_333);
        assert_eq!(r.stddev_ns, 1_527_525_232);
    }
}
