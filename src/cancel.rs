//! The one cancellation path. The binary installs a handler for Ctrl-C and
//! SIGTERM that only raises a flag; writers (between tensors and between
//! the pieces of a tensor), the engine (between layers and tokens) and the
//! evaluations (between chunks) call [`check`], so an interrupted run
//! unwinds normally: temporary outputs are deleted by their destructors and
//! nothing that looks finished is left behind. The error is [`Interrupted`];
//! every library error wraps it as a `#[source]`, so the command line finds
//! it in any error chain and exits 130.
//!
//! A second Ctrl-C means "now": the handler deletes the temporaries still
//! registered (see [`Temporary`]) and exits 130 without unwinding.
//!
//! This module is the bottom layer: it imports nothing from the crate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Temporary outputs that a second Ctrl-C deletes before exiting.
static TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The exit status of a run stopped by a signal (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The run was stopped by Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted; no output was left behind")]
pub struct Interrupted;

/// Installs the signal handlers (once, from the binary). SIGXFSZ is
/// ignored so that a file-size limit (`ulimit -f`) surfaces as the write
/// error EFBIG, which the writers report and clean up, instead of killing
/// the process mid-write.
pub fn install() -> Result<(), ctrlc::Error> {
    #[cfg(target_os = "linux")]
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            let paths = TEMPORARIES.lock().map(|v| v.clone()).unwrap_or_default();
            for p in paths {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            eprintln!("\ninterrupted again: stopped at once");
            std::process::exit(EXIT_INTERRUPTED.into());
        }
    })
}

/// Fails with [`Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether a signal has arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A temporary output path registered for deletion by a second Ctrl-C for
/// as long as this value lives (the owner deletes or renames it itself).
#[derive(Debug)]
pub struct Temporary(PathBuf);

impl Temporary {
    /// Registers `path`.
    pub fn register(path: &Path) -> Temporary {
        if let Ok(mut v) = TEMPORARIES.lock() {
            v.push(path.to_path_buf());
        }
        Temporary(path.to_path_buf())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Ok(mut v) = TEMPORARIES.lock() {
            if let Some(i) = v.iter().position(|p| *p == self.0) {
                v.swap_remove(i);
            }
        }
    }
}
