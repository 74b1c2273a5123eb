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

use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams the content produced by `fill` to `path` atomically. If `fill` returns an error, nothing
/// is renamed, the temporary file is removed and the error is returned (wrapped with the path).
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let file_name = path.file_name().ok_or_else(|| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp_path, file) = create_temp(&dir, &file_name.to_string_lossy())?;
    let result = write_and_sync(file, fill).and_then(|()| fs::rename(&tmp_path, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir).map_err(|e| Error::io(&dir, e))
}

/// Creates a new, uniquely named temporary file `.<name>.tmp.<pid>.<n>` in `dir`.
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{pid}.{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
    Err(Error::io(dir, last_err.unwrap_or_else(|| std::io::Error::other("could not create a temporary file"))))
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
