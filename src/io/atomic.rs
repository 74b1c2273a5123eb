//! Atomic file writes: a reader sees either the old file or the complete new one, never a torn one.
//!
//! The bytes go to a fresh temporary file in the target's directory (same file system, so the
//! rename is atomic), which is flushed and `fsync`ed, then renamed over the target; finally the
//! directory is `fsync`ed so the rename itself survives a crash. On any error the temporary file is
//! removed and the previous file is left untouched.
//!
//! ```
//! use consolidator::io::atomic::{write_atomic, write_atomic_with};
//! use std::io::Write;
//! let dir = std::env::temp_dir().join(format!("consolidator-doc-atomic-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("run.json");
//! write_atomic(&path, b"{\"step\": 1}").unwrap();
//! // A failing writer leaves the previous content in place.
//! let failed = write_atomic_with(&path, |w| {
//!     w.write_all(b"{\"step\": ")?;
//!     Err(std::io::Error::other("interrupted"))
//! });
//! assert!(failed.is_err());
//! assert_eq!(std::fs::read(&path).unwrap(), b"{\"step\": 1}");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use super::fs::{kind_of, parent_dir};
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams the content produced by `fill` to `path` atomically. If `fill` returns an error, nothing
/// is renamed, the temporary file is removed and the error is returned (wrapped with the path).
///
/// Every error names `path` (the target), never the temporary file. A target that exists but is
/// a directory or a special file (a device, a pipe) is refused before anything is written.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let fail = |kind: ErrorKind, msg: String| Error::io(path, std::io::Error::new(kind, msg));
    let file_name =
        path.file_name().ok_or_else(|| fail(ErrorKind::InvalidInput, "the path has no file name".into()))?;
    if let Ok(meta) = fs::metadata(path) {
        if !meta.is_file() {
            let kind = if meta.is_dir() { "a directory" } else { "a special file (device, pipe or socket)" };
            return Err(fail(ErrorKind::InvalidInput, format!("the target is {kind}; refusing to replace it")));
        }
    }
    let dir = parent_dir(path);
    let (tmp_path, file) = create_temp(&dir, &file_name.to_string_lossy())
        .map_err(|e| fail(e.kind(), format!("cannot create a temporary file in {}: {e}", dir.display())))?;
    let result = write_and_sync(file, fill).and_then(|()| fs::rename(&tmp_path, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir)
        .map_err(|e| fail(e.kind(), format!("written, but syncing the directory {} failed: {e}", dir.display())))
}

/// Longest temporary file name we create, in bytes (file systems allow 255).
const MAX_TEMP_NAME: usize = 200;

/// The temporary name for target file name `name`, attempt `n`: `.<name>.tmp.<pid>.<n>`, or, when
/// that would be too long for the file system, `.<first ~100 bytes of name>~<hash of name>.tmp.<pid>.<n>`.
pub(crate) fn temp_name(name: &str, pid: u32, n: u64) -> String {
    let full = format!(".{name}.tmp.{pid}.{n}");
    if full.len() <= MAX_TEMP_NAME {
        return full;
    }
    let mut cut = 100.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    // FNV-1a: distinct long names that share a prefix still get distinct temporary names.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!(".{}~{hash:016x}.tmp.{pid}.{n}", &name[..cut])
}

/// Creates a new, uniquely named temporary file (see [`temp_name`]) in `dir`.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temp_name(name, pid, n));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("could not create a temporary file")))
}

/// Creates and removes an empty temporary file in `dir`: can new files be made there?
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let (tmp, file) = create_temp(dir, "probe")?;
    drop(file);
    fs::remove_file(tmp)
}

fn write_and_sync<F>(file: File, fill: F) -> std::io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let mut w = BufWriter::new(file);
    fill(&mut w)?;
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing on this platform; the rename is still atomic.
    Ok(())
}

/// Checks, before long work, that `out` can be written: it is not a directory or a special file
/// (a device, a pipe), and its parent directory exists, is a directory and accepts a new file
/// (probed by creating and removing an empty temporary file there).
pub fn check_writable(out: &Path) -> Result<()> {
    let fail = |msg: String| Error::io(out, std::io::Error::new(ErrorKind::InvalidInput, msg));
    if out.file_name().is_none() {
        return Err(fail(format!("{} does not name a file", out.display())));
    }
    match std::fs::metadata(out) {
        Ok(m) if m.is_file() => {}
        Ok(m) => {
            return Err(fail(format!("{} is {}, not a file; refusing to write over it", out.display(), kind_of(&m))))
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
        Err(e) => return Err(Error::io(out, e)),
    }
    let dir = parent_dir(out);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("the parent {} is not a directory", dir.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(fail(format!("the directory {} does not exist", dir.display())))
        }
        Err(e) => return Err(Error::io(&dir, e)),
    }
    probe_writable(&dir).map_err(|e| fail(format!("cannot create files in the directory {}: {e}", dir.display())))
}
