//! Text generation on the engine: prefill the prompt, then decode one token
//! at a time through the KV cache, choosing each by greedy argmax
//! (temperature 0) or by temperature + top-p (nucleus) sampling from a
//! seeded generator, and stopping at an end-of-sequence token.

use std::time::Instant;

use serde::Serialize;

use super::{Engine, EngineError, Logits};

/// How to choose tokens.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    pub seed: u64,
}

/// What a generation did, with its speeds.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    /// Why it stopped: `eos` or `max_tokens`.
    pub stop: &'static str,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_second: f64,
    /// Decode steps (one forward pass of one token each) per second.
    pub decode_tokens_per_second: f64,
}

/// SplitMix64: a small, well-mixed generator; reproducible across
/// platforms for a given seed.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Index of the largest value (the first one on ties, as torch.argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) / s.temperature).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0f32;
    for p in &probs {
        mass += p.1 / total;
        kept += 1;
        if mass >= s.top_p {
            break;
        }
    }
    let probs = &probs[..kept];
    let kept_mass: f32 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f32() * kept_mass;
    for p in probs {
        r -= p.1;
        if r <= 0.0 {
            return p.0;
        }
    }
    probs[kept - 1].0
}

/// Generates after `prompt`, calling `on_token` with each new token as soon
/// as it is chosen.
pub fn generate(
    engine: &Engine,
    prompt: &[u32],
    s: &Sampling,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::Unsupported("the prompt has no tokens".into()));
    }
    let mut rng = Rng(s.seed);
    let mut cache = engine.new_cache();
    let t0 = Instant::now();
    let mut logits = engine
        .forward(&mut [&mut cache], &[prompt], Logits::Last)?
        .remove(0);
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut tokens = Vec::new();
    let mut stop = "max_tokens";
    let mut steps = 0usize;
    while tokens.len() < s.max_tokens {
        let tok = sample(&logits, s, &mut rng);
        if engine.config.eos.contains(&tok) {
            stop = "eos";
            break;
        }
        tokens.push(tok);
        on_token(tok);
        if tokens.len() == s.max_tokens {
            break;
        }
        logits = engine
            .forward(&mut [&mut cache], &[&[tok]], Logits::Last)?
            .remove(0);
        steps += 1;
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok(Generation {
        prompt_tokens: prompt.len(),
        stop,
        prefill_seconds: prefill,
        decode_seconds: decode,
        prefill_tokens_per_second: prompt.len() as f64 / prefill,
        decode_tokens_per_second: if decode > 0.0 {
            steps as f64 / decode
        } else {
            0.0
        },
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_nucleus_and_seeds_reproduce() {
        // Token 2 holds ~0.84 of the mass: top_p 0.5 must always pick it.
        let logits = [0.0f32, 1.0, 3.0, -1.0];
        let s = Sampling {
            max_tokens: 1,
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
        };
        let mut rng = Rng(7);
        assert!((0..100).all(|_| sample(&logits, &s, &mut rng) == 2));
        let all = Sampling { top_p: 1.0, ..s };
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..200)
                .map(|_| sample(&logits, &all, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let d = draw(3);
        assert!(d.contains(&0) && d.contains(&1) && d.contains(&2));
    }
}
