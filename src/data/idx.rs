//! The IDX format of MNIST, plain or gzip'd.
//!
//! An IDX file is a 4-byte magic `00 00 TT DD` (`TT` the element type, `08` for `u8`; `DD` the
//! number of dimensions), then `DD` big-endian `u32` dimensions, then the elements row-major. MNIST
//! images are `0x00000803` (`[N, H, W]`), labels `0x00000801` (`[N]`).
//!
//! Bytes starting with the gzip magic `1f 8b` are decompressed transparently, reading at most the
//! size the header declares (plus one byte, to detect trailing data), so a gzip bomb cannot
//! allocate more than [`MAX_IDX_BYTES`]. The declared dimensions are checked against the real
//! length before the element buffer is built. Every problem is an [`Error::Format`] naming the
//! source.
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
use std::io::Read;
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
        let fail = |msg: String| Error::format(format!("IDX file {what}"), msg);
        if is_gzip(bytes) {
            let mut dec = GzDecoder::new(bytes);
            let mut head = [0u8; 4];
            dec.read_exact(&mut head).map_err(|e| fail(format!("gzip stream ends before the IDX magic: {e}")))?;
            let ndims = check_magic(head).map_err(fail)?;
            let mut dims_bytes = vec![0u8; 4 * ndims];
            dec.read_exact(&mut dims_bytes)
                .map_err(|e| fail(format!("gzip stream ends inside the {ndims} IDX dimensions: {e}")))?;
            let (dims, numel) = parse_dims(&dims_bytes).map_err(fail)?;
            // Read at most numel + 1 bytes: enough to detect trailing data, never more.
            let mut data = Vec::with_capacity(numel.min(64 << 20));
            dec.take(numel as u64 + 1).read_to_end(&mut data).map_err(|e| fail(format!("corrupt gzip stream: {e}")))?;
            check_len(data.len(), numel, &dims).map_err(fail)?;
            Ok(Idx { dims, data })
        } else {
            if bytes.len() < 4 {
                return Err(fail(format!("{} bytes is too short to hold the IDX magic", bytes.len())));
            }
            let ndims = check_magic([bytes[0], bytes[1], bytes[2], bytes[3]]).map_err(fail)?;
            let header = 4 + 4 * ndims;
            let dims_bytes = bytes.get(4..header).ok_or_else(|| {
                fail(format!("{} bytes is too short to hold the {ndims} IDX dimensions", bytes.len()))
            })?;
            let (dims, numel) = parse_dims(dims_bytes).map_err(fail)?;
            check_len(bytes.len() - header, numel, &dims).map_err(fail)?;
            Ok(Idx { dims, data: bytes[header..].to_vec() })
        }
    }

    /// Parses an image file (magic `0x00000803`, dims `[N, H, W]`).
    pub fn parse_images(bytes: &[u8], what: &str) -> Result<Idx> {
        Self::parse_expecting(bytes, what, 3, "images")
    }

    /// Parses a label file (magic `0x00000801`, dims `[N]`).
    pub fn parse_labels(bytes: &[u8], what: &str) -> Result<Idx> {
        Self::parse_expecting(bytes, what, 1, "labels")
    }

    /// Reads and parses an image file.
    pub fn load_images(path: impl AsRef<Path>) -> Result<Idx> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse_images(&bytes, &path.display().to_string())
    }

    /// Reads and parses a label file.
    pub fn load_labels(path: impl AsRef<Path>) -> Result<Idx> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse_labels(&bytes, &path.display().to_string())
    }

    fn parse_expecting(bytes: &[u8], what: &str, ndims: usize, kind: &str) -> Result<Idx> {
        let idx = Self::parse(bytes, what)?;
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

fn parse_dims(b: &[u8]) -> std::result::Result<(Vec<usize>, usize), String> {
    let dims: Vec<usize> = b.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let numel = crate::tensor::checked_numel(&dims)
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| format!("declared dimensions {dims:?} exceed the {MAX_IDX_BYTES}-byte limit"))?;
    Ok((dims, numel))
}

fn check_len(got: usize, numel: usize, dims: &[usize]) -> std::result::Result<(), String> {
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
