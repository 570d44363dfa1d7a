//! Atomic outputs: every file llmtool writes is first a hidden temporary in
//! the destination directory (`.NAME.PID.XXXXXX.partial`, private to the
//! user) and is renamed to its final name only after its last byte is
//! written and synced. A failed, full-disk or interrupted run drops the
//! temporary, which deletes it, so no file that looks finished is ever left
//! behind. The rename never replaces: when another process finished the
//! same output first, this one fails and says so (renameat2
//! `RENAME_NOREPLACE`; link + unlink for files where it is missing). A
//! `kill -9` cannot drop anything; the next run for the same output removes
//! the temporaries whose process (the PID in the name) is gone.
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
    /// What messages call the file: `dest`, or its final path when `dest`
    /// is inside a temporary output directory.
    shown: PathBuf,
    out: BufWriter<std::fs::File>,
    tmp: tempfile::TempPath,
    written: u64,
    /// Bytes already handed to the kernel's writeback.
    behind: u64,
    _registered: Temporary,
}

impl AtomicFile {
    /// Starts writing `dest`; its directory must exist.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let dir = parent_of(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = shown_path(dest);
        // Inside an output directory's temporary (ours) there is nothing
        // stale; AtomicDir swept its parent.
        if shown == dest {
            sweep_stale(&dir, &name);
        }
        // The handle, not NamedTempFile's writer: its errors would name the
        // hidden temporary instead of the output.
        let (file, tmp) = tempfile::Builder::new()
            .prefix(&temp_prefix(&name))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&shown, e))?
            .into_parts();
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            _registered: Temporary::register(&tmp),
            shown,
            out: BufWriter::with_capacity(1 << 20, file),
            tmp,
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
            .map_err(|e| StoreError::io(&self.shown, e))?;
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
            .map_err(|e| StoreError::io(&self.shown, e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.out.get_ref().as_raw_fd();
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

    /// Flushes, syncs and renames the file to its final name, which must
    /// not exist.
    pub fn commit(self) -> Result<PathBuf> {
        let AtomicFile {
            dest,
            shown,
            out,
            tmp,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| StoreError::io(&shown, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&shown, e))?;
        drop(file);
        // Temporaries are created private (0600); a finished output gets the
        // usual mode of a file anyone may read.
        set_mode(&tmp, 0o644).map_err(|e| StoreError::io(&shown, e))?;
        tmp.persist_noclobber(&dest).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                taken(&shown)
            } else {
                StoreError::io(&shown, e.error)
            }
        })?;
        Ok(dest)
    }
}

/// The error of the process that lost a race for the same output.
fn taken(dest: &Path) -> StoreError {
    StoreError::Write {
        path: dest.to_path_buf(),
        msg: "another process created this output while this one was writing it; it was \
              left as it is and this run's result was discarded"
            .into(),
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.PID.`: the temporary's prefix; tempfile appends six random
/// characters and `.partial`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.{}.", std::process::id())
}

/// The final path of `path` when it lies inside a temporary output
/// directory (`DIR/.NAME.PID.XXXXXX.partial/FILE` → `DIR/NAME/FILE`).
fn shown_path(path: &Path) -> PathBuf {
    let final_dir = path.parent().and_then(|d| {
        let n = d.file_name()?.to_str()?;
        let stem = n.strip_prefix('.')?.strip_suffix(".partial")?;
        let mut parts = stem.rsplitn(3, '.');
        let (_rand, pid, name) = (parts.next()?, parts.next()?, parts.next()?);
        pid.parse::<u32>().ok()?;
        Some(d.parent()?.join(name))
    });
    match (final_dir, path.file_name()) {
        (Some(d), Some(f)) => d.join(f),
        _ => path.to_path_buf(),
    }
}

/// Removes the temporaries of `name` in `dir` that a killed run left: those
/// whose PID names no live process. Best effort: what cannot be removed
/// stays, and the new run goes on.
fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".partial"))
        else {
            continue;
        };
        let Some(pid) = rest
            .split_once('.')
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_: u32) -> bool {
    true
}

/// Renames the directory `from` to `to`, failing if `to` exists.
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: check, then rename.
        Some(libc::EINVAL) | Some(libc::ENOSYS) if !to.exists() => std::fs::rename(from, to),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// Writes a small file atomically in one go.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Writes a small file atomically, replacing one that exists (a card
/// regenerated, a result written again): readers see the old file or the
/// new one, never a part of either.
pub fn replace_file(dest: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |e: std::io::Error| StoreError::io(dest, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    set_mode(tmp.path(), 0o644).map_err(io)?;
    tmp.persist(dest).map_err(|e| io(e.error))?;
    Ok(dest.to_path_buf())
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

    /// Checks `dest` and creates the temporary beside it. A `dest` that is
    /// a symbolic link stands for the directory it points to.
    pub fn create(dest: &Path) -> Result<AtomicDir> {
        let dest = match std::fs::symlink_metadata(dest) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(dest).map_err(|e| StoreError::io(dest, e))?
            }
            _ => dest.to_path_buf(),
        };
        Self::check_dest(&dest)?;
        let parent = parent_of(&dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        ensure_dir(&parent)?;
        sweep_stale(&parent, &name);
        let prefix = temp_prefix(&name);
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix).suffix(".partial");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(std::fs::Permissions::from_mode(0o700));
        }
        let tmp = b
            .tempdir_in(&parent)
            .map_err(|e| StoreError::io(&parent, e))?;
        Ok(AtomicDir {
            _registered: Temporary::register(tmp.path()),
            dest,
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
        // An empty directory the user made for the output gives way; one
        // that another process filled meanwhile does not.
        if dest.is_dir() && std::fs::remove_dir(&dest).is_err() {
            let _ = std::fs::remove_dir_all(&tmp_path);
            return Err(taken(&dest));
        }
        rename_noreplace(&tmp_path, &dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp_path);
            if e.kind() == std::io::ErrorKind::AlreadyExists
                || e.raw_os_error() == Some(libc::ENOTEMPTY)
            {
                taken(&dest)
            } else {
                StoreError::io(&dest, e)
            }
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_never_replaces_one_another_process_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.gguf");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"ours").unwrap();
        std::fs::write(&dest, b"theirs").unwrap();
        let err = f.commit().unwrap_err().to_string();
        assert!(err.contains("another process created this output"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_directory_never_replaces_one_another_process_filled() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let d = AtomicDir::create(&dest).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "temporary directories are private");
        }
        write_file(&d.path().join("a"), b"ours").unwrap();
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("b"), b"theirs").unwrap();
        let err = d.commit().unwrap_err().to_string();
        assert!(err.contains("another process created this output"), "{err}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_inside_an_output_directory_name_the_final_path() {
        let p = Path::new("/data/.merged.4242.AbC123.partial/model.safetensors");
        assert_eq!(shown_path(p), Path::new("/data/merged/model.safetensors"));
        let p = Path::new("/data/merged/model.safetensors");
        assert_eq!(shown_path(p), p);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale_file = dir.path().join(format!(".q.gguf.{dead}.xYz123.partial"));
        let stale_dir = dir.path().join(format!(".q.gguf.{dead}.aBc456.partial"));
        let live = dir
            .path()
            .join(format!(".q.gguf.{}.dEf789.partial", std::process::id()));
        let other = dir.path().join(format!(".r.gguf.{dead}.xYz123.partial"));
        std::fs::write(&stale_file, b"x").unwrap();
        std::fs::create_dir(&stale_dir).unwrap();
        std::fs::write(stale_dir.join("f"), b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        std::fs::write(&other, b"x").unwrap();
        let f = AtomicFile::create(&dir.path().join("q.gguf")).unwrap();
        assert!(!stale_file.exists() && !stale_dir.exists());
        assert!(live.exists() && other.exists());
        drop(f);
    }
}
