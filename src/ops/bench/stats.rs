//! Summary statistics of one metric over requests or repetitions, as
//! `vllm bench serve` reports them (`calculate_metrics`: numpy mean,
//! median, population std, `np.percentile` with linear interpolation) and
//! as `llama-bench` reports its samples (mean ± sample std).

use serde::Serialize;

/// Mean, median, std and the asked percentiles of `values` (ms or t/s).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    /// Population standard deviation (numpy's default, as vLLM reports).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// (percentile, value), in the order asked.
    pub percentiles: Vec<(f64, f64)>,
}

/// `np.percentile(values, p)` (linear interpolation between ranks) of
/// sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// The summary of `values` (NaN-free) with percentiles `ps`.
pub fn summarize(values: &[f64], ps: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = if n == 0 {
        0.0
    } else {
        v.iter().sum::<f64>() / n as f64
    };
    let var = if n == 0 {
        0.0
    } else {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64
    };
    Summary {
        count: n,
        mean,
        median: percentile(&v, 50.0),
        std: var.sqrt(),
        min: v.first().copied().unwrap_or(0.0),
        max: v.last().copied().unwrap_or(0.0),
        percentiles: ps.iter().map(|&p| (p, percentile(&v, p))).collect(),
    }
}

/// Sample standard deviation (n − 1), as llama-bench reports its
/// repetitions.
pub fn sample_std(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    (values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // np.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
        let s = summarize(&[4.0, 1.0, 3.0, 2.0], &[50.0, 90.0, 99.0]);
        assert_eq!(s.median, 2.5);
        assert!((s.percentiles[1].1 - 3.7).abs() < 1e-12);
        assert!((s.percentiles[2].1 - 3.97).abs() < 1e-12);
        // np.std([1, 2, 3, 4]) = 1.118033988749895
        assert!((s.std - 1.118033988749895).abs() < 1e-12);
        assert!((sample_std(&[1.0, 2.0, 3.0, 4.0]) - 1.2909944487358056).abs() < 1e-12);
        assert_eq!(summarize(&[], &[99.0]).percentiles, vec![(99.0, 0.0)]);
    }
}
