//! The prompts a `bench serve` run sends: `random` (exact input lengths in
//! the model's own tokens, as vLLM's `RandomDataset` makes them: random
//! vocabulary ids decoded to text, re-encoded and trimmed), a JSONL file of
//! prompts or chats, or a ShareGPT file (the first human turn; the answer's
//! length as the output length). Sampling is seeded.

use std::path::PathBuf;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::ops::{Error, Result};

/// A seeded generator (SplitMix64): uniform draws, Poisson arrivals and
/// gamma-distributed gaps without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Gamma(shape, scale) (Marsaglia and Tsang; shape < 1 by boosting).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }
}

/// What one request asks.
#[derive(Debug, Clone)]
pub enum Body {
    Text(String),
    /// OpenAI chat messages.
    Messages(Vec<Value>),
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub body: Body,
    /// Prompt tokens by our count (the server's usage replaces it).
    pub input_len: Option<usize>,
    /// `max_tokens` to ask for.
    pub output_len: Option<usize>,
}

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum Dataset {
    Random { input_len: usize, output_len: usize },
    Jsonl(PathBuf),
    ShareGpt(PathBuf),
}

fn count(tok: Option<&Tokenizer>, text: &str) -> Option<usize> {
    tok?.encode(text, false).ok().map(|e| e.len())
}

/// A text of exactly `len` tokens of `tok` (as close as re-encoding allows).
fn random_text(tok: &Tokenizer, len: usize, rng: &mut Rng) -> Result<(String, usize)> {
    let vocab = tok.get_vocab_size(false).max(1) as u64;
    let draw =
        |rng: &mut Rng, n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab) as u32).collect() };
    let err = |e: tokenizers::Error| Error::Refused(format!("tokenizer: {e}"));
    let mut ids = draw(rng, len);
    let mut text = tok.decode(&ids, true).map_err(err)?;
    for _ in 0..8 {
        let enc = tok.encode(text.as_str(), false).map_err(err)?;
        let n = enc.len();
        if n == len {
            return Ok((text, n));
        }
        if n > len {
            ids = enc.get_ids()[..len].to_vec();
        } else {
            ids = enc.get_ids().to_vec();
            ids.extend(draw(rng, len - n));
        }
        text = tok.decode(&ids, true).map_err(err)?;
    }
    let n = tok.encode(text.as_str(), false).map_err(err)?.len();
    Ok((text, n))
}

fn read_lines(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Refused(format!("{}: {e}", path.display())))
}

/// `n` prompts from `ds`, seeded. `output_len` overrides a file's lengths.
pub fn prompts(
    ds: &Dataset,
    n: usize,
    seed: u64,
    tok: Option<&Tokenizer>,
    output_len: Option<usize>,
) -> Result<Vec<Prompt>> {
    let mut rng = Rng::new(seed);
    let pool: Vec<Prompt> = match ds {
        Dataset::Random {
            input_len,
            output_len: out,
        } => {
            let tok = tok.ok_or_else(|| {
                Error::Refused(
                    "--dataset random needs the model's tokenizer for exact lengths: pass --tokenizer (a model directory, tokenizer.json, GGUF or Hub repo id)".into(),
                )
            })?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let (text, len) = random_text(tok, *input_len, &mut rng)?;
                v.push(Prompt {
                    body: Body::Text(text),
                    input_len: Some(len),
                    output_len: Some(output_len.unwrap_or(*out)),
                });
            }
            return Ok(v);
        }
        Dataset::Jsonl(path) => {
            let text = read_lines(path)?;
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let bad = |m: &str| Error::Refused(format!("{}:{}: {m}", path.display(), i + 1));
                let j: Value =
                    serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
                let out = j
                    .get("max_tokens")
                    .or_else(|| j.get("output_len"))
                    .and_then(|x| x.as_u64())
                    .map(|x| x as usize);
                let body = if let Some(m) = j.get("messages").and_then(|m| m.as_array()) {
                    Body::Messages(m.clone())
                } else if let Some(p) = j
                    .get("prompt")
                    .or_else(|| j.get("text"))
                    .and_then(|p| p.as_str())
                {
                    Body::Text(p.to_string())
                } else {
                    return Err(bad(
                        "expected a \"prompt\" (or \"text\") string or a \"messages\" list",
                    ));
                };
                let input_len = match &body {
                    Body::Text(t) => count(tok, t),
                    Body::Messages(m) => {
                        let all: String = m
                            .iter()
                            .filter_map(|x| x.get("content").and_then(|c| c.as_str()))
                            .collect::<Vec<_>>()
                            .join("\n");
                        count(tok, &all)
                    }
                };
                v.push(Prompt {
                    body,
                    input_len,
                    output_len: output_len.or(out),
                });
            }
            v
        }
        Dataset::ShareGpt(path) => {
            let text = read_lines(path)?;
            let j: Value = serde_json::from_str(&text).map_err(|e| {
                Error::Refused(format!(
                    "{}: not a ShareGPT JSON array ({e})",
                    path.display()
                ))
            })?;
            let mut v = Vec::new();
            for conv in j.as_array().into_iter().flatten() {
                let turns = conv
                    .get("conversations")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                let value = |t: &Value| t.get("value").and_then(|x| x.as_str()).map(str::to_string);
                let (Some(q), Some(a)) =
                    (turns.first().and_then(value), turns.get(1).and_then(value))
                else {
                    continue;
                };
                v.push(Prompt {
                    input_len: count(tok, &q),
                    output_len: output_len.or_else(|| count(tok, &a)),
                    body: Body::Text(q),
                });
            }
            v
        }
    };
    if pool.is_empty() {
        return Err(Error::Refused("the dataset holds no prompts".into()));
    }
    // Seeded sampling: a shuffled pass, repeated when more are asked.
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut order: Vec<usize> = (0..pool.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        out.extend(
            order
                .into_iter()
                .take(n - out.len())
                .map(|i| pool[i].clone()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_and_gamma_has_its_mean() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20000;
        for shape in [0.5, 1.0, 4.0] {
            let m: f64 = (0..n).map(|_| a.gamma(shape, 2.0)).sum::<f64>() / n as f64;
            assert!((m - shape * 2.0).abs() < 0.1 * shape * 2.0, "{shape}: {m}");
        }
    }
}
