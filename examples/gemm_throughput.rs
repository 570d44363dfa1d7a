//! f32 GEMM throughput of the engine's `matmul` (the product every
//! calibration pass runs) on SmolLM2's projection shapes, with all rayon
//! threads: the ceiling docs/PERFORMANCE.md sets the GPTQ and AWQ work
//! against. `scripts/gemm-ceiling.sh` runs it beside torch's `mm`.
//!
//! `cargo run --release --example gemm_throughput -- [TOKENS]` (default 4096)

use llmtool::model::engine::weights::{matmul, Dense};
use llmtool::model::engine::Activations;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(4096), |s| s.parse())?;
    println!("{n} tokens, {} rayon threads", rayon::current_num_threads());
    println!("shape (tokens x in -> out)   GFLOP/s");
    let val = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3;
    for (cols, rows) in [(576, 576), (576, 1536), (1536, 576), (576, 960)] {
        let w = Dense::new(rows, cols, (0..rows * cols).map(val).collect());
        let x: Vec<f32> = (0..n * cols).map(|i| val(i + 17)).collect();
        let mut out = vec![0f32; n * rows];
        matmul(&w, &x, n, &mut out, Activations::Exact);
        let (start, reps) = (Instant::now(), 10);
        for _ in 0..reps {
            matmul(&w, &x, n, &mut out, Activations::Exact);
        }
        let secs = start.elapsed().as_secs_f64() / f64::from(reps);
        let flop = 2.0 * (n * cols * rows) as f64;
        println!("{n} x {cols} -> {rows}   {:>10.1}", flop / secs / 1e9);
    }
    Ok(())
}
