//! Overlapping computation with writing. Producing a chunk (dequantize,
//! merge, quantize) and handing it to the kernel (`write`, which copies into
//! the page cache) cost about the same, so chunks are produced on a second
//! thread while the previous one is written.

/// Calls `produce(i)` for `i in 0..n` on a helper thread, in order, and
/// passes each result to `sink` on this one. At most two chunks wait in
/// between, so memory stays at a few chunks. The first error from either
/// side stops both.
pub fn pipelined<E: Send>(
    n: usize,
    produce: impl Fn(usize) -> Result<Vec<u8>, E> + Send,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            for i in 0..n {
                let chunk = produce(i);
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    break;
                }
            }
        });
        // Returning early drops the receiver, which ends the producer.
        for chunk in rx {
            sink(&chunk?)?;
        }
        Ok(())
    })
}
