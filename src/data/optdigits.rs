//! The UCI "Optical Recognition of Handwritten Digits" CSV (optdigits), plain or gzip'd.
//!
//! One example per line: 64 integers in `0..=16` (an 8×8 image, row-major, each the count of set
//! pixels in a 4×4 block of the original 32×32 bitmap) then the label `0..=9`, comma-separated,
//! no header. Blank lines are skipped. Errors name the line and the column (both 1-based).
//!
//! ```
//! use consolidator::data::optdigits::parse_optdigits;
//! let line = format!("{},{}\n", vec!["16"; 64].join(","), 7);
//! let ds = parse_optdigits(line.as_bytes(), "inline").unwrap();
//! assert_eq!(ds.images.shape(), &[1, 1, 8, 8]);
//! assert_eq!(ds.images.data()[0], 1.0); // 16 / 16
//! assert_eq!(ds.labels, vec![7]);
//! assert!(parse_optdigits(b"1,2,3\n", "inline").is_err());
//! ```

use super::idx::is_gzip;
use super::Dataset;
use crate::io::fs::{read_file_limited, read_limited, ReadLimitError};
use crate::{Error, Result, Tensor};
use flate2::read::GzDecoder;
use std::path::Path;

/// Largest text accepted, plain or decompressed (64 MiB; the real file is about 0.3 MB).
pub const MAX_OPTDIGITS_BYTES: usize = 64 << 20;

/// Parses optdigits CSV bytes (gzip'd or not) into a dataset `[N, 1, 8, 8]` in `[0, 1]` (counts
/// divided by 16) with 10 classes.
pub fn parse_optdigits(bytes: &[u8], what: &str) -> Result<Dataset> {
    let fail = |msg: String| Error::format(format!("optdigits file {what}"), msg);
    let owned;
    let text: &[u8] = if is_gzip(bytes) {
        // Inflated into a buffer that grows with what arrives, stopped just past the cap.
        owned = read_limited(&mut GzDecoder::new(bytes), MAX_OPTDIGITS_BYTES).map_err(|e| match e {
            ReadLimitError::TooLong => fail(format!("decompresses to more than {MAX_OPTDIGITS_BYTES} bytes")),
            ReadLimitError::Io(e) => fail(format!("corrupt gzip stream: {e}")),
        })?;
        &owned
    } else {
        if bytes.len() > MAX_OPTDIGITS_BYTES {
            return Err(fail(format!("larger than {MAX_OPTDIGITS_BYTES} bytes")));
        }
        bytes
    };
    let text =
        std::str::from_utf8(text).map_err(|e| fail(format!("not text (invalid UTF-8 at byte {})", e.valid_up_to())))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut count = 0usize;
        for (j, field) in line.split(',').enumerate() {
            let col = j + 1;
            count += 1;
            if col > 65 {
                continue; // reported below with the real count
            }
            let field = field.trim();
            let max = if col <= 64 { 16 } else { 9 };
            let v: u32 = field
                .parse()
                .map_err(|_| fail(format!("line {line_no}, column {col}: {field:?} is not a non-negative integer")))?;
            if v > max {
                return Err(fail(format!(
                    "line {line_no}, column {col}: {v} is outside 0..={max}{}",
                    if col <= 64 { " (pixel count)" } else { " (label)" }
                )));
            }
            if col <= 64 {
                pixels.push(v as f32 / 16.0);
            } else {
                labels.push(v as usize);
            }
        }
        if count != 65 {
            return Err(fail(format!("line {line_no}: {count} columns, expected 65 (64 pixel counts then the label)")));
        }
    }
    let n = labels.len();
    let images = Tensor::new(&[n, 1, 8, 8], pixels)?;
    Dataset::new(images, labels, 10)
}

/// Reads and parses an optdigits file (`.csv` or `.csv.gz`): only a regular file of at most
/// [`MAX_OPTDIGITS_BYTES`], refused before reading when larger.
pub fn load_optdigits(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let bytes = read_file_limited(path, MAX_OPTDIGITS_BYTES as u64, "optdigits file")?;
    parse_optdigits(&bytes, &path.display().to_string())
}
