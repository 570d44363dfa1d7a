//! Ctrl-C and SIGTERM: the binary installs a handler that only raises a
//! flag; long-running loops and writers call [`check`] between tensors, so
//! an interrupted run unwinds normally and its temporary outputs are
//! deleted by their destructors instead of being left half-written.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::StoreError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the signal handler (once, from `main`).
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
}

/// Fails with [`StoreError::Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), StoreError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(StoreError::Interrupted)
    } else {
        Ok(())
    }
}
