//! Atomic outputs: every file llmtool writes is first a hidden temporary in
//! the destination directory (`.NAME.XXXXXX.partial`) and is renamed to its
//! final name only after its last byte is written and synced. A failed,
//! full-disk or interrupted run drops the temporary, which deletes it, so no
//! file that looks finished is ever left behind.
//!
//! Syncing is what makes the rename safe against a crash of the machine,
//! but a sync at the end would wait for the whole file to reach the disk
//! after the computation is done. On Linux the writer therefore starts the
//! writeback of every [`WRITE_BEHIND`] bytes as soon as they are written
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so the
//! disk works while the next tensors are computed and the final sync only
//! has the tail left.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};
use crate::cancel::{self, Temporary};

/// Bytes between two write-behind requests.
pub const WRITE_BEHIND: u64 = 16 << 20;

/// A file being written under a temporary name next to `dest`.
pub struct AtomicFile {
    dest: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    written: u64,
    /// Bytes already handed to the kernel's writeback.
    behind: u64,
    _registered: Temporary,
}

impl AtomicFile {
    /// Starts writing `dest`; its directory must exist.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| StoreError::io(dest, e))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            _registered: Temporary::register(tmp.path()),
            out: BufWriter::with_capacity(1 << 20, tmp),
            written: 0,
            behind: 0,
        })
    }

    /// The final path this file will have.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes, naming the destination in errors (a full disk shows here).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| StoreError::io(&self.dest, e))?;
        self.written += bytes.len() as u64;
        if self.written - self.behind >= WRITE_BEHIND {
            self.write_behind()?;
        }
        Ok(())
    }

    /// Starts writing back what was written since the last call, without
    /// waiting for it.
    fn write_behind(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| StoreError::io(&self.dest, e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.out.get_ref().as_file().as_raw_fd();
            // SAFETY: a plain syscall on a descriptor this value owns; it
            // reads no memory of ours. Failure only loses the head start
            // (the final sync still covers every byte), so it is ignored.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.behind as libc::off64_t,
                    (self.written - self.behind) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.behind = self.written;
        Ok(())
    }

    /// Appends `n` zero bytes.
    pub fn write_zeros(&mut self, n: u64) -> Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn commit(self) -> Result<PathBuf> {
        let dest = self.dest;
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io(&dest, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io(&dest, e))?;
        // Temporaries are created private (0600); a finished output gets the
        // usual mode of a file anyone may read.
        set_mode(tmp.path(), 0o644).map_err(|e| StoreError::io(&dest, e))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io(&dest, e.error))?;
        Ok(dest)
    }
}

/// Writes a small file atomically in one go.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Checks that `dir` exists (creating it if needed) before a writer starts.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
}

/// An output directory built under a hidden temporary sibling
/// (`.NAME.XXXXXX.partial`) and renamed into place by [`AtomicDir::commit`];
/// dropped uncommitted (error, full disk, Ctrl-C), it is deleted.
pub struct AtomicDir {
    dest: PathBuf,
    tmp: tempfile::TempDir,
    _registered: Temporary,
}

impl AtomicDir {
    /// Fails unless `dest` is absent or an empty directory: an output never
    /// mixes with earlier files.
    pub fn check_dest(dest: &Path) -> Result<()> {
        let non_empty = dest.exists()
            && std::fs::read_dir(dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true);
        if non_empty {
            return Err(StoreError::Write {
                path: dest.to_path_buf(),
                msg: "output directory exists and is not empty; choose another output or remove it"
                    .into(),
            });
        }
        Ok(())
    }

    /// Checks `dest` and creates the temporary beside it.
    pub fn create(dest: &Path) -> Result<AtomicDir> {
        Self::check_dest(dest)?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        ensure_dir(&parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempdir_in(&parent)
            .map_err(|e| StoreError::io(&parent, e))?;
        Ok(AtomicDir {
            dest: dest.to_path_buf(),
            _registered: Temporary::register(tmp.path()),
            tmp,
        })
    }

    /// Where files go until the commit.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the directory into place (replacing an empty `dest`) and
    /// returns the sorted names of the files in it.
    pub fn commit(self) -> Result<Vec<String>> {
        let dest = self.dest;
        let tmp_path = self.tmp.keep();
        let fail = |e: std::io::Error| {
            let _ = std::fs::remove_dir_all(&tmp_path);
            StoreError::io(&dest, e)
        };
        set_mode(&tmp_path, 0o755).map_err(fail)?;
        if dest.exists() {
            std::fs::remove_dir(&dest).map_err(fail)?;
        }
        std::fs::rename(&tmp_path, &dest).map_err(fail)?;
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .map_err(|e| StoreError::io(&dest, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The protocol every streaming tensor writer follows: tensors arrive in
/// the order of the plan the writer was created with, each exactly as long
/// as planned, possibly in pieces; cancellation is polled before each piece.
pub(crate) struct TensorSequence {
    /// Name and byte length of each planned tensor.
    planned: Vec<(String, u64)>,
    next: usize,
}

impl TensorSequence {
    pub(crate) fn new(planned: Vec<(String, u64)>) -> TensorSequence {
        TensorSequence { planned, next: 0 }
    }

    /// Index of the next tensor to be written.
    pub(crate) fn next(&self) -> usize {
        self.next
    }

    /// Checks that `name` is the tensor due next and returns its planned length.
    pub(crate) fn expect(&self, path: &Path, name: &str) -> Result<u64> {
        cancel::check()?;
        let bad = |msg: String| StoreError::Write {
            path: path.to_path_buf(),
            msg,
        };
        match self.planned.get(self.next) {
            None => Err(bad(format!("tensor '{name}' is beyond the plan"))),
            Some((n, len)) if n != name => Err(bad(format!(
                "expected tensor '{n}' ({len} bytes) next, got '{name}'"
            ))),
            Some((_, len)) => Ok(*len),
        }
    }

    /// Streams the pieces `produce` hands over into `out`, checking they add
    /// up to `len`, then moves to the next tensor.
    pub(crate) fn write(
        &mut self,
        out: &mut AtomicFile,
        path: &Path,
        name: &str,
        len: u64,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let start = out.written();
        produce(&mut |bytes: &[u8]| {
            if out.written() - start + bytes.len() as u64 > len {
                return Err(StoreError::Write {
                    path: path.to_path_buf(),
                    msg: format!("tensor '{name}' got more than its {len} planned bytes"),
                });
            }
            cancel::check()?;
            out.write_all(bytes)
        })?;
        let got = out.written() - start;
        if got != len {
            return Err(StoreError::Write {
                path: path.to_path_buf(),
                msg: format!("tensor '{name}' got {got} bytes, {len} planned"),
            });
        }
        self.next += 1;
        Ok(())
    }

    /// Fails unless every planned tensor was written.
    pub(crate) fn check_complete(&self, path: &Path) -> Result<()> {
        if self.next != self.planned.len() {
            return Err(StoreError::Write {
                path: path.to_path_buf(),
                msg: format!(
                    "only {} of {} planned tensors were written",
                    self.next,
                    self.planned.len()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}
