//! The IDX format of MNIST, plain or gzip'd.
//!
//! An IDX file is a 4-byte magic `00 00 TT DD` (`TT` the element type, `08` for `u8`; `DD` the
//! number of dimensions), then `DD` big-endian `u32` dimensions, then the elements row-major. MNIST
//! images are `0x00000803` (`[N, H, W]`), labels `0x00000801` (`[N]`).
//!
//! Bytes starting with the gzip magic `1f 8b` are decompressed transparently, header first:
//! the declared size is checked against [`MAX_IDX_BYTES`], then at most that many bytes are
//! inflated (plus one, to detect trailing data), into a buffer that grows with the bytes that
//! actually arrive — so a 1 MB gzip bomb that inflates to 1 GiB is refused after inflating no
//! more than its header declares, and a file that declares much but holds little costs little.
//! A plain file's declared dimensions are checked against its real length before the element
//! buffer is built. Files are streamed ([`Idx::load`]), never read whole first. Every problem
//! is an [`Error::Format`] naming the source.
//!
//! ```
//! use consolidator::data::idx::Idx;
//! let mut bytes = vec![0, 0, 8, 1, 0, 0, 0, 3];
//! bytes.extend_from_slice(&[7, 2, 1]);
//! let labels = Idx::parse_labels(&bytes, "labels").unwrap();
//! assert_eq!(labels.dims, vec![3]);
//! assert_eq!(labels.data, vec![7, 2, 1]);
//! assert!(Idx::parse_labels(&bytes[..10], "labels").is_err());
//! ```

use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Largest element buffer (uncompressed) an IDX file may declare (1 GiB).
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// The magic of an IDX file of `u8` images `[N, H, W]`.
pub const MAGIC_IMAGES: u32 = 0x0000_0803;
/// The magic of an IDX file of `u8` labels `[N]`.
pub const MAGIC_LABELS: u32 = 0x0000_0801;

/// The content of a `u8` IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions (`[N, H, W]` for images, `[N]` for labels).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// True when `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

impl Idx {
    /// Parses a `u8` IDX file with 1 to 4 dimensions, gzip'd or not.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Idx> {
        Self::parse_with_limit(bytes, what, MAX_IDX_BYTES)
    }

    /// [`Idx::parse`] refusing element buffers above `max_bytes`.
    pub fn parse_with_limit(bytes: &[u8], what: &str, max_bytes: usize) -> Result<Idx> {
        if is_gzip(bytes) {
            Self::read(&mut GzDecoder::new(bytes), None, what, max_bytes)
        } else {
            Self::read(&mut &bytes[..], Some(bytes.len() as u64), what, max_bytes)
        }
    }

    /// Reads an IDX file (gzip'd or not) from a stream, header first: the magic, the
    /// dimensions, the size check against `max_bytes` (and against `total_len`, the stream's
    /// length when it is known — a plain file), then exactly the declared elements, and one
    /// byte more to detect trailing data. The element buffer grows with what arrives, so a
    /// stream that declares much and holds little costs little; one that inflates past its
    /// declaration is stopped there.
    fn read(r: &mut dyn Read, total_len: Option<u64>, what: &str, max_bytes: usize) -> Result<Idx> {
        let fail = |msg: String| Error::format(format!("IDX file {what}"), msg);
        let gz = total_len.is_none();
        let short = |e: std::io::Error, part: &str| {
            if !gz {
                fail(format!("{} bytes is too short to hold the {part}", total_len.unwrap_or(0)))
            } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
                fail(format!("gzip stream ends before the {part}: {e}"))
            } else {
                fail(format!("corrupt gzip stream: {e}"))
            }
        };
        let mut head = [0u8; 4];
        r.read_exact(&mut head).map_err(|e| short(e, "IDX magic"))?;
        let ndims = check_magic(head).map_err(fail)?;
        let mut dims_bytes = vec![0u8; 4 * ndims];
        r.read_exact(&mut dims_bytes).map_err(|e| short(e, &format!("{ndims} IDX dimensions")))?;
        let (dims, numel) = parse_dims(&dims_bytes, max_bytes).map_err(fail)?;
        if let Some(len) = total_len {
            check_len(len.saturating_sub(4 + 4 * ndims as u64), numel, &dims).map_err(fail)?;
        }
        let (data, ended) = crate::io::fs::read_up_to(r, numel, Vec::new()).map_err(|e| match e {
            crate::io::fs::ReadLimitError::Io(e) => fail(format!("corrupt gzip stream: {e}")),
            crate::io::fs::ReadLimitError::TooLong => fail("unreachable: read_up_to never reports TooLong".into()),
        })?;
        check_len(data.len() as u64 + u64::from(!ended), numel, &dims).map_err(fail)?;
        Ok(Idx { dims, data })
    }

    /// Parses an image file (magic `0x00000803`, dims `[N, H, W]`).
    pub fn parse_images(bytes: &[u8], what: &str) -> Result<Idx> {
        Self::parse_expecting(bytes, what, 3, "images")
    }

    /// Parses a label file (magic `0x00000801`, dims `[N]`).
    pub fn parse_labels(bytes: &[u8], what: &str) -> Result<Idx> {
        Self::parse_expecting(bytes, what, 1, "labels")
    }

    /// Reads and parses an image file (see [`Idx::load`]).
    pub fn load_images(path: impl AsRef<Path>) -> Result<Idx> {
        Self::expect(Self::load(path.as_ref(), MAX_IDX_BYTES)?, &path.as_ref().display().to_string(), 3, "images")
    }

    /// Reads and parses a label file (see [`Idx::load`]).
    pub fn load_labels(path: impl AsRef<Path>) -> Result<Idx> {
        Self::expect(Self::load(path.as_ref(), MAX_IDX_BYTES)?, &path.as_ref().display().to_string(), 1, "labels")
    }

    /// Reads an IDX file (plain or gzip'd) from a regular file, streaming: the whole file is
    /// never held in memory besides the elements, a plain file's length is checked against its
    /// header before the elements are read, and a gzip'd one is inflated no further than its
    /// header declares (at most `max_bytes`).
    pub fn load(path: &Path, max_bytes: usize) -> Result<Idx> {
        let what = path.display().to_string();
        let (mut file, len) = crate::io::fs::open_regular(path)?;
        let mut magic = [0u8; 2];
        let got = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        if got == 2 && is_gzip(&magic) {
            Self::read(&mut GzDecoder::new(BufReader::new(file)), None, &what, max_bytes)
        } else {
            Self::read(&mut BufReader::new(file), Some(len), &what, max_bytes)
        }
    }

    fn parse_expecting(bytes: &[u8], what: &str, ndims: usize, kind: &str) -> Result<Idx> {
        Self::expect(Self::parse(bytes, what)?, what, ndims, kind)
    }

    fn expect(idx: Idx, what: &str, ndims: usize, kind: &str) -> Result<Idx> {
        if idx.dims.len() != ndims {
            return Err(Error::format(
                format!("IDX file {what}"),
                format!(
                    "expected {kind} with {ndims} dimension(s) (magic 0x0000080{ndims}), found {} dimensions",
                    idx.dims.len()
                ),
            ));
        }
        Ok(idx)
    }
}

fn check_magic(m: [u8; 4]) -> std::result::Result<usize, String> {
    if m[0] != 0 || m[1] != 0 {
        return Err(format!(
            "bad magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with two zero bytes",
            m[0], m[1], m[2], m[3]
        ));
    }
    if m[2] != 0x08 {
        return Err(format!("element type 0x{:02x} is not supported (only 0x08, unsigned bytes)", m[2]));
    }
    let ndims = m[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(format!("{ndims} dimensions is not supported (1 to 4)"));
    }
    Ok(ndims)
}

fn parse_dims(b: &[u8], max_bytes: usize) -> std::result::Result<(Vec<usize>, usize), String> {
    let dims: Vec<usize> = b.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let numel = crate::tensor::checked_numel(&dims)
        .filter(|&n| n <= max_bytes)
        .ok_or_else(|| format!("declared dimensions {dims:?} exceed the {max_bytes}-byte limit"))?;
    Ok((dims, numel))
}

fn check_len(got: u64, numel: usize, dims: &[usize]) -> std::result::Result<(), String> {
    let numel = numel as u64;
    if got < numel {
        return Err(format!(
            "declared dimensions {dims:?} need {numel} data bytes, only {got} present (truncated file?)"
        ));
    }
    if got > numel {
        return Err(format!("trailing data after the {numel} bytes that dimensions {dims:?} declare"));
    }
    Ok(())
}
