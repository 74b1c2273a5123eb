//! Careful file access: open only regular files, read no more than a limit, never write where
//! we read, and check an output location before long work.
//!
//! - [`open_regular`] refuses what is not a regular file (a directory, a named pipe, a device
//!   such as `/dev/zero`, a socket) *before* opening it, so a FIFO cannot block the reader and a
//!   device cannot feed it endless bytes; it returns the file and its length.
//! - [`read_file_limited`] reads a whole regular file of at most a given size, refusing a bigger
//!   one before reading a byte.
//! - [`read_limited`] reads a stream (a gzip decoder, say) up to a limit, growing its buffer with
//!   what actually arrives (never by a size the stream claims), and fails cleanly past the limit.
//! - [`same_file`] / [`check_output`]: an output that is one of the inputs is refused
//!   (`--out model.safetensors --backbone model.safetensors` would otherwise overwrite the input).
//! - [`check_writable`](super::check_writable) (in `io::atomic`, beside the writer it vouches
//!   for): the output's directory exists and takes new files, and the output is not a directory
//!   or a special file — checked before a long run, not after it.
//!
//! ```
//! use consolidator::io::{check_output, check_writable, same_file};
//! let dir = std::env::temp_dir().join(format!("consolidator-doc-fs-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let input = dir.join("in.safetensors");
//! consolidator::io::write_atomic(&input, b"x").unwrap();
//! assert!(same_file(&input, &dir.join(".").join("in.safetensors")));
//! assert!(!same_file(&input, &dir.join("out.safetensors"))); // does not exist yet
//! assert!(check_output(&input, &[&input]).is_err());
//! check_output(&dir.join("out.safetensors"), &[&input]).unwrap();
//! check_writable(&dir.join("out.safetensors")).unwrap();
//! assert!(check_writable(&dir).is_err()); // a directory
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::{Error, Result};
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// What kind of non-regular file `meta` describes ("a directory", "a named pipe (FIFO)", …).
pub(crate) fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn not_regular(path: &Path, meta: &Metadata) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a regular file ({}); refusing to read it", path.display(), kind_of(meta)),
        ),
    )
}

/// Opens `path` for reading if it is a regular file (symbolic links followed) and returns it with
/// its length. Anything else — a directory, a named pipe, a device, a socket — is an
/// [`Error::Io`] naming the path and what it is, given without opening it (opening a FIFO would
/// block until a writer appears).
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been replaced between the two calls: check what was opened.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok((file, meta.len()))
}

/// Reads the whole regular file `path` if it holds at most `max_bytes` bytes; a bigger file is
/// refused before anything is read. `what` names the content in the error ("optdigits file").
pub fn read_file_limited(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(Error::format(
            format!("{what} {}", path.display()),
            format!("the file holds {len} bytes, more than the {max_bytes}-byte limit"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    // `take`: a file that grows while we read cannot push us past the limit.
    file.take(max_bytes + 1).read_to_end(&mut out).map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > max_bytes {
        return Err(Error::format(
            format!("{what} {}", path.display()),
            format!("the file grew past the {max_bytes}-byte limit while being read"),
        ));
    }
    Ok(out)
}

/// Step by which [`read_limited`] grows its buffer.
const READ_STEP: usize = 16 << 20;

/// Reads `r` to its end, or fails with `Err(limit)` as soon as more than `limit` bytes arrive.
/// The buffer grows by at most 16 MiB at a time, with the bytes actually read (never by a size
/// the stream announced), so a stream that claims much and delivers little costs little, and
/// one that delivers too much is stopped at the limit (one byte past it is read, to know).
pub fn read_limited(r: &mut dyn Read, limit: usize) -> std::result::Result<Vec<u8>, ReadLimitError> {
    match read_up_to(r, limit, Vec::new())? {
        (buf, true) => Ok(buf),
        (_, false) => Err(ReadLimitError::TooLong),
    }
}

/// Reads up to `n` bytes from `r` into `buf` (appending), growing it step by step with what
/// arrives. Returns the buffer and whether the stream ended (`true`) or `n` bytes were read
/// and at least one more is available (`false`).
pub fn read_up_to(
    r: &mut dyn Read,
    n: usize,
    mut buf: Vec<u8>,
) -> std::result::Result<(Vec<u8>, bool), ReadLimitError> {
    let start = buf.len();
    loop {
        let have = buf.len() - start;
        if have == n {
            // Is there more?
            let mut probe = [0u8; 1];
            loop {
                match r.read(&mut probe) {
                    Ok(0) => return Ok((buf, true)),
                    Ok(_) => return Ok((buf, false)),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ReadLimitError::Io(e)),
                }
            }
        }
        let step = (n - have).min(READ_STEP);
        let old = buf.len();
        buf.reserve_exact(step);
        buf.resize(old + step, 0);
        let mut filled = 0;
        while filled < step {
            match r.read(&mut buf[old + filled..old + step]) {
                Ok(0) => {
                    buf.truncate(old + filled);
                    return Ok((buf, true));
                }
                Ok(k) => filled += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadLimitError::Io(e)),
            }
        }
    }
}

/// Why [`read_limited`] stopped.
#[derive(Debug)]
pub enum ReadLimitError {
    /// More bytes than the limit.
    TooLong,
    /// The stream failed (a corrupt gzip stream, a read error).
    Io(std::io::Error),
}

/// True when `a` and `b` name the same existing file (same device and inode on Unix; the same
/// canonical path elsewhere). A path that does not exist is never the same as anything.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = (&ma, &mb);
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Refuses an output path that is the same file as one of `inputs`:
/// "--out X is the same file as input Y; refusing to overwrite an input".
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
        return Err(Error::invalid(
            "output",
            format!(
                "--out {} is the same file as input {}; refusing to overwrite an input",
                out.display(),
                input.display()
            ),
        ));
    }
    Ok(())
}

/// The directory a file `path` lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
