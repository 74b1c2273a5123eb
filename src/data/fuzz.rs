//! Fuzz entry points for the data readers: parse arbitrary bytes and discard the result, checking
//! the invariants every accepted input must satisfy. Used by cargo-fuzz targets and the in-suite
//! fuzz tests.
//!
//! ```
//! consolidator::data::fuzz::fuzz_idx(&[0, 0, 8, 1, 0, 0, 0, 1, 5]);
//! consolidator::data::fuzz::fuzz_optdigits(b"not,a,valid,row\n");
//! consolidator::data::fuzz::fuzz_image(b"P2 2 1 255 0 255");
//! consolidator::data::fuzz::fuzz_tensor_source(b"\x08\0\0\0\0\0\0\0{}      ");
//! ```

use super::decode::decode_image_with_limit;
use super::idx::Idx;
use super::optdigits::parse_optdigits;
use super::source::Source;
use super::tensors::open_tensor_file;
use super::Preprocess;

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

/// Largest image the image fuzz body decodes (2^16 pixels, e.g. 256 × 256), so accepted inputs
/// stay quick; the refusal of larger sizes is exercised all the same.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 16;

/// Decodes `bytes` as an image file (PNG, JPEG, PGM or PPM; at most [`FUZZ_MAX_PIXELS`]); an
/// accepted image must be well-formed with every value in `[0, 1]`, and must preprocess (channel
/// conversion, bicubic resize to an odd size, normalisation) to finite values.
pub fn fuzz_image(bytes: &[u8]) {
    let Ok(img) = decode_image_with_limit(bytes, "fuzz input", FUZZ_MAX_PIXELS) else {
        return;
    };
    img.check("fuzz_image").expect("a decoded image is well-formed");
    assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)), "decoded values outside [0, 1]");
    for channels in [1, 3] {
        let pre = Preprocess::new(channels, 5, 7, vec![0.5], vec![0.25]).expect("valid preprocessing");
        let out = pre.apply(&img).expect("a decoded image preprocesses");
        assert_eq!(out.len(), channels * 35);
        assert!(out.iter().all(|v| v.is_finite() && (-2.0..=2.0).contains(v)), "preprocessed values out of range");
    }
}

/// Reads `bytes` as a tensor-file dataset; every accepted split must have examples, at least two
/// classes, labels below the class count, names for every class or none, and its first and last
/// images must decode to the declared shape with values in `[0, 1]` (one past the end is an error).
pub fn fuzz_tensor_source(bytes: &[u8]) {
    let Ok(splits) = open_tensor_file(bytes, "fuzz input") else {
        return;
    };
    for src in splits.values() {
        let n = src.len();
        assert!(n > 0 && src.num_classes() >= 2);
        assert!((0..n).all(|i| src.label(i) < src.num_classes()));
        let names = src.class_names();
        assert!(names.is_empty() || names.len() == src.num_classes());
        let [c, h, w] = src.image_shape();
        for i in [0, n - 1] {
            let img = src.image(i).expect("an accepted example decodes");
            assert_eq!((img.channels, img.height, img.width), (c, h, w));
            assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        assert!(src.image(n).is_err());
    }
}
