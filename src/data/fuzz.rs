//! Fuzz entry points for the data readers: parse arbitrary bytes and discard the result, checking
//! the invariants every accepted input must satisfy. Used by cargo-fuzz targets and the in-suite
//! fuzz tests.
//!
//! ```
//! consolidator::data::fuzz::fuzz_idx(&[0, 0, 8, 1, 0, 0, 0, 1, 5]);
//! consolidator::data::fuzz::fuzz_optdigits(b"not,a,valid,row\n");
//! ```

use super::idx::Idx;
use super::optdigits::parse_optdigits;

/// Parses `bytes` as an IDX file (plain or gzip'd); an accepted file's element count must match
/// its dimensions.
pub fn fuzz_idx(bytes: &[u8]) {
    if let Ok(idx) = Idx::parse(bytes, "fuzz input") {
        assert_eq!(idx.dims.iter().product::<usize>(), idx.data.len());
    }
}

/// Parses `bytes` as optdigits CSV (plain or gzip'd); an accepted file must yield pixels in
/// `[0, 1]` and labels below 10.
pub fn fuzz_optdigits(bytes: &[u8]) {
    if let Ok(ds) = parse_optdigits(bytes, "fuzz input") {
        assert_eq!(ds.images.numel(), ds.len() * 64);
        assert!(ds.images.data().iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(ds.labels.iter().all(|&l| l < 10));
    }
}
