//! Files: JSON, atomic writes, safetensors checkpoints (timm key names).
//!
//! - [`json`]: a small JSON value with a strict, hostile-input-safe parser and a serializer.
//! - [`atomic`]: write-to-temp, fsync, rename: a crash never leaves a torn file.
//! - [`safetensors`]: [`TensorFile`], our own validating reader and writer of the format.
//! - [`fs`]: reading only regular files within limits, the same-file and writable checks.
//! - [`text`]: escaping untrusted text before it reaches a terminal.
//! - [`fuzz`]: fuzz entry points for the parsers.
//!
//! ```
//! use consolidator::io::TensorFile;
//! use consolidator::Tensor;
//! let dir = std::env::temp_dir().join(format!("consolidator-doc-io-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("ckpt.safetensors");
//! let mut f = TensorFile::new();
//! f.insert("cls_token", Tensor::zeros(&[1, 1, 8]));
//! f.save(&path).unwrap();
//! assert_eq!(TensorFile::load(&path).unwrap(), f);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod atomic;
pub mod fs;
/// Fuzz entry points (the bodies of `fuzz/` and `tests/fuzz.rs`). Hidden: for our fuzzers, not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod json;
pub mod safetensors;
pub mod text;

pub use atomic::{check_writable, write_atomic, write_atomic_with};
pub use fs::{check_output, same_file};
pub use json::Json;
pub use safetensors::{RawFile, TensorFile};
pub use text::escape_text;
