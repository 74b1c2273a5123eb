//! Fuzz entry points: each parses arbitrary bytes and checks the invariants that must hold for
//! every input. Used by cargo-fuzz targets and by the in-suite fuzz tests.
//!
//! A clean `Err` is the expected outcome for most inputs; these functions panic only when an
//! invariant is broken (a parsed value that does not survive a serialize → parse round trip),
//! which is exactly what a fuzzer should report.
//!
//! ```
//! consolidator::io::fuzz::fuzz_json(b"{\"a\": [1, 2.5, \"x\"]}");
//! consolidator::io::fuzz::fuzz_safetensors(b"\x08\0\0\0\0\0\0\0{}      ");
//! ```

use super::json::Json;
use super::safetensors::TensorFile;

/// Parses `bytes` as a safetensors file; if that succeeds, the file must survive a write → read
/// round trip with bit-identical values.
pub fn fuzz_safetensors(bytes: &[u8]) {
    let Ok(file) = TensorFile::from_bytes(bytes, "fuzz input") else {
        return;
    };
    if file.tensors.contains_key(super::safetensors::METADATA_KEY) {
        return; // unreachable: the reader treats that key as metadata
    }
    let again = TensorFile::from_bytes(&file.to_bytes(), "fuzz round trip").expect("a file we wrote must read back");
    assert_eq!(file.metadata, again.metadata);
    assert_eq!(file.tensors.len(), again.tensors.len());
    for ((ka, a), (kb, b)) in file.tensors.iter().zip(&again.tensors) {
        assert_eq!(ka, kb);
        assert_eq!(a.shape(), b.shape());
        assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Parses `bytes` as JSON; if that succeeds, the value must survive both serializations.
pub fn fuzz_json(bytes: &[u8]) {
    let Ok(v) = Json::parse(bytes, "fuzz input") else {
        return;
    };
    let compact = Json::parse_str(&v.to_string(), "fuzz round trip").expect("compact round trip");
    assert_eq!(compact, v);
    let pretty = Json::parse_str(&v.to_string_pretty(), "fuzz round trip").expect("pretty round trip");
    assert_eq!(pretty, v);
}
