//! Micro timing of `quant::quantize_row` for every encodable type: a
//! 4096-column f32 matrix of pseudo-Gaussian values (std 0.02, like LLM
//! weights), quantized on one thread and then with rayon over rows (the way
//! callers are meant to parallelise). Prints million elements per second.
//!
//! `cargo run --release --example quantize_speed -- [ROWS]` (default 1024)

use llmtool::quant::{quantize_row, GgmlType};
use rayon::prelude::*;
use std::time::Instant;

const COLS: usize = 4096;

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::args().nth(1).map_or(Ok(1024), |s| s.parse())?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uni = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..rows * COLS)
        .map(|_| 0.02 * (0..12).map(|_| uni()).sum::<f32>())
        .collect();
    println!(
        "{rows} x {COLS} f32, {} rayon threads",
        rayon::current_num_threads()
    );
    println!("type   1 thread Melem/s   rayon Melem/s");
    for &ty in GgmlType::ALL.iter().filter(|t| t.can_quantize()) {
        let row_bytes = ty.bytes_for(COLS as u64).unwrap_or(0) as usize;
        let mut out = vec![0u8; rows * row_bytes];
        let t = Instant::now();
        for (src, dst) in x.chunks(COLS).zip(out.chunks_mut(row_bytes)) {
            quantize_row(ty, src, dst)?;
        }
        let single = t.elapsed().as_secs_f64();
        let t = Instant::now();
        x.par_chunks(COLS)
            .zip(out.par_chunks_mut(row_bytes))
            .try_for_each(|(src, dst)| quantize_row(ty, src, dst))?;
        let par = t.elapsed().as_secs_f64();
        let n = (rows * COLS) as f64 / 1e6;
        println!("{:<6} {:>17.1} {:>15.1}", ty.name(), n / single, n / par);
    }
    Ok(())
}
