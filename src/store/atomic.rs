//! Atomic outputs: every file llmtool writes is first a hidden temporary in
//! the destination directory (`.NAME.XXXXXX.partial`) and is renamed to its
//! final name only after its last byte is written and synced. A failed,
//! full-disk or interrupted run drops the temporary, which deletes it, so no
//! file that looks finished is ever left behind.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// A file being written under a temporary name next to `dest`.
pub struct AtomicFile {
    dest: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    written: u64,
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

/// A whole output directory written under a hidden temporary name beside
/// its destination (`.NAME.XXXXXX.partial`) and renamed into place by
/// [`AtomicDir::commit`]; dropping it first (an error, Ctrl-C) deletes it.
pub struct AtomicDir {
    out: PathBuf,
    tmp: tempfile::TempDir,
}

impl AtomicDir {
    /// Refuses an `out` that exists and is not empty (nothing is written).
    pub fn check_dest(out: &Path) -> Result<()> {
        if out.exists()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(StoreError::Write {
                path: out.to_path_buf(),
                msg: "output directory exists and is not empty; choose another --out or remove it"
                    .into(),
            });
        }
        Ok(())
    }

    /// Checks `out` and creates the temporary directory beside it.
    pub fn create(out: &Path) -> Result<AtomicDir> {
        Self::check_dest(out)?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = out
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
            out: out.to_path_buf(),
            tmp,
        })
    }

    /// Where to write the files now.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the directory into place (replacing an empty `out`) and
    /// returns the names of the files in it, sorted.
    pub fn commit(self) -> Result<Vec<String>> {
        let out = self.out;
        let tmp_path = self.tmp.keep();
        if out.exists() {
            std::fs::remove_dir(&out).map_err(|e| StoreError::io(&out, e))?;
        }
        std::fs::rename(&tmp_path, &out).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp_path);
            StoreError::io(&out, e)
        })?;
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .map_err(|e| StoreError::io(&out, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
}
