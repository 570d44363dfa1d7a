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

/// Bytes between two write-behind requests.
pub const WRITE_BEHIND: u64 = 16 << 20;

/// A file being written under a temporary name next to `dest`.
pub struct AtomicFile {
    dest: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    written: u64,
    /// Bytes already handed to the kernel's writeback.
    behind: u64,
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

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}
