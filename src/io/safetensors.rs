//! Our own reader and writer of the safetensors format (the format timm and Hugging Face use).
//!
//! Layout: an 8-byte little-endian header length `n`; `n` bytes of JSON mapping each tensor name
//! to `{"dtype": .., "shape": [..], "data_offsets": [start, end]}` (offsets relative to the byte
//! buffer), plus an optional `"__metadata__"` object of string → string; then the byte buffer.
//!
//! Writing always uses `F32` little-endian, keys sorted, and pads the header with spaces so the
//! buffer starts on an 8-byte boundary. Reading accepts `F32`, `F64`, `F16`, `BF16` (converted to
//! `f32`) and `I64`, `I32`, `U8`, `BOOL` (converted to `f32`; integers must be exactly
//! representable, booleans must be 0 or 1).
//!
//! Reading trusts nothing: the header length is checked against the file length (and capped at
//! [`MAX_HEADER`]) before anything is allocated; the header must be well-formed JSON without
//! duplicate keys and with at most [`MAX_HEADER_VALUES`] values; every entry's dtype, shape and
//! offsets are checked with overflow-checked arithmetic (`end - start == numel × dtype size`,
//! inside the buffer); the tensors must tile the buffer exactly, in offset order, without gaps or
//! overlaps. Any violation is an [`Error::Format`] naming the file and the key. Tensor data never
//! takes more than 4× the buffer's bytes (`U8` → `f32`), and the parsed header is bounded by the
//! value limit, so no declared size can trigger a huge allocation.
//!
//! ```
//! use consolidator::io::safetensors::TensorFile;
//! use consolidator::Tensor;
//! let mut f = TensorFile::new();
//! f.insert("head.weight", Tensor::new(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap());
//! f.metadata.insert("format".into(), "pt".into());
//! let bytes = f.to_bytes();
//! let back = TensorFile::from_bytes(&bytes, "in-memory").unwrap();
//! assert_eq!(back, f);
//! assert_eq!(back.get("head.weight").unwrap().shape(), &[2, 3]);
//! assert!(back.get("head.bias").is_err());
//! assert!(TensorFile::from_bytes(&bytes[..bytes.len() - 1], "truncated").is_err());
//! ```

use super::atomic::write_atomic_with;
use super::json::Json;
use crate::tensor::checked_numel;
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest header the reader accepts, in bytes (100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

/// Most JSON values a header may hold (4 million: about 500,000 tensors; a ViT-L has ~300).
/// Bounds the parsed header's memory (at most ~32 bytes per value) on hostile input.
pub const MAX_HEADER_VALUES: usize = 4_000_000;

/// The reserved header key holding the string → string metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// A set of named tensors and string metadata: the content of one safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// The tensors by name (sorted).
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` map (sorted).
    pub metadata: BTreeMap<String, String>,
}

/// The element types the reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    U8,
    Bool,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

/// One validated header entry.
struct Entry {
    key: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl TensorFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tensor named `key`, or [`Error::MissingKey`].
    pub fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| Error::MissingKey { key: key.to_string() })
    }

    /// Adds (or replaces) the tensor named `key`.
    ///
    /// # Panics
    /// If `key` is `"__metadata__"`, which the format reserves.
    pub fn insert(&mut self, key: impl Into<String>, t: Tensor) {
        let key = key.into();
        assert!(
            key != METADATA_KEY,
            "TensorFile::insert: the key `{METADATA_KEY}` is reserved by the safetensors format"
        );
        self.tensors.insert(key, t);
    }

    /// Reads a file (see [`TensorFile::from_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes the file atomically (see [`crate::io::atomic`]); same bytes as
    /// [`TensorFile::to_bytes`]. The data are streamed (no second in-memory copy of the tensors).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let head = self.header_bytes();
        write_atomic_with(path.as_ref(), |w| {
            w.write_all(&head)?;
            let mut buf = Vec::with_capacity(4 * 16_384);
            for t in self.tensors.values() {
                for chunk in t.data().chunks(16_384) {
                    buf.clear();
                    for v in chunk {
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                    w.write_all(&buf)?;
                }
            }
            Ok(())
        })
    }

    /// Serializes: `F32` little-endian, keys sorted, `__metadata__` first when not empty, header
    /// padded with spaces to a multiple of 8 bytes.
    ///
    /// # Panics
    /// If a tensor is named `"__metadata__"` (only possible by editing `tensors` directly).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.reserve(4 * self.tensors.values().map(Tensor::numel).sum::<usize>());
        for t in self.tensors.values() {
            for v in t.data() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// The 8-byte length and the padded JSON header.
    fn header_bytes(&self) -> Vec<u8> {
        assert!(
            !self.tensors.contains_key(METADATA_KEY),
            "TensorFile::to_bytes: a tensor may not be named `{METADATA_KEY}`"
        );
        let mut header: Vec<(String, Json)> = Vec::with_capacity(self.tensors.len() + 1);
        if !self.metadata.is_empty() {
            header.push((
                METADATA_KEY.to_string(),
                Json::obj(self.metadata.iter().map(|(k, v)| (k.clone(), Json::Str(v.clone())))),
            ));
        }
        let mut offset = 0usize;
        for (key, t) in &self.tensors {
            let end = offset + 4 * t.numel();
            header.push((
                key.clone(),
                Json::obj([
                    ("dtype", Json::from("F32")),
                    ("shape", Json::Arr(t.shape().iter().map(|&d| Json::from(d)).collect())),
                    ("data_offsets", Json::Arr(vec![Json::from(offset), Json::from(end)])),
                ]),
            ));
            offset = end;
        }
        let mut text = Json::Obj(header).to_string().into_bytes();
        while (8 + text.len()) % 8 != 0 {
            text.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + text.len());
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(&text);
        out
    }

    /// Parses and validates a safetensors byte buffer (see the module docs). `what` names the
    /// source (usually the path) in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
        if bytes.len() < 8 {
            return Err(fail(format!("{} bytes is too short to hold the 8-byte header length", bytes.len())));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[..8]);
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER {
            return Err(fail(format!("declared header length {header_len} exceeds the {MAX_HEADER}-byte limit")));
        }
        let available = (bytes.len() - 8) as u64;
        if header_len > available {
            return Err(fail(format!(
                "declared header length {header_len} exceeds the {available} bytes after the length field (truncated file?)"
            )));
        }
        let header_end = 8 + header_len as usize;
        let header_bytes = &bytes[8..header_end];
        if header_bytes.first() != Some(&b'{') {
            return Err(fail("the header does not start with '{'".to_string()));
        }
        let header = Json::parse_limited(header_bytes, &format!("safetensors header of {what}"), MAX_HEADER_VALUES)?;
        let buffer = &bytes[header_end..];

        let Json::Obj(pairs) = header else {
            return Err(fail("the header is not a JSON object".to_string()));
        };
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            if key == METADATA_KEY {
                metadata = parse_metadata(&value).map_err(fail)?;
            } else {
                entries.push(parse_entry(key, &value, buffer.len()).map_err(fail)?);
            }
        }

        // The tensors must tile the buffer exactly, in offset order.
        entries.sort_by(|a, b| (a.start, a.end, &a.key).cmp(&(b.start, b.end, &b.key)));
        let mut cursor = 0usize;
        for e in &entries {
            if e.start != cursor {
                return Err(fail(if e.start < cursor {
                    format!(
                        "tensor `{}`: data_offsets [{}, {}] overlap the previous tensor (which ends at {cursor})",
                        e.key, e.start, e.end
                    )
                } else {
                    format!(
                        "tensor `{}`: data_offsets start at {} but the previous tensor ends at {cursor} (gap in the buffer)",
                        e.key, e.start
                    )
                }));
            }
            cursor = e.end;
        }
        if cursor != buffer.len() {
            return Err(fail(format!("the tensors cover {cursor} bytes of a {}-byte buffer", buffer.len())));
        }

        let mut tensors = BTreeMap::new();
        for e in entries {
            let data =
                convert(&buffer[e.start..e.end], e.dtype).map_err(|msg| fail(format!("tensor `{}`: {msg}", e.key)))?;
            let t = Tensor::new(&e.shape, data).map_err(|err| fail(format!("tensor `{}`: {err}", e.key)))?;
            tensors.insert(e.key, t);
        }
        Ok(TensorFile { tensors, metadata })
    }
}

fn parse_metadata(value: &Json) -> std::result::Result<BTreeMap<String, String>, String> {
    let Json::Obj(pairs) = value else {
        return Err(format!("`{METADATA_KEY}` is not an object"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        let Json::Str(s) = v else {
            return Err(format!("`{METADATA_KEY}` entry `{k}` is not a string (metadata values must be strings)"));
        };
        out.insert(k.clone(), s.clone());
    }
    Ok(out)
}

fn parse_entry(key: String, value: &Json, buffer_len: usize) -> std::result::Result<Entry, String> {
    let Json::Obj(fields) = value else {
        return Err(format!("tensor `{key}`: the entry is not an object"));
    };
    if let Some((f, _)) = fields.iter().find(|(f, _)| !matches!(f.as_str(), "dtype" | "shape" | "data_offsets")) {
        return Err(format!("tensor `{key}`: unknown field `{f}`"));
    }
    let dtype_name = value
        .get("dtype")
        .ok_or_else(|| format!("tensor `{key}`: missing `dtype`"))?
        .as_str()
        .ok_or_else(|| format!("tensor `{key}`: `dtype` is not a string"))?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
        format!("tensor `{key}`: unsupported dtype {dtype_name:?} (supported: F32, F64, F16, BF16, I64, I32, U8, BOOL)")
    })?;
    let shape = value
        .get("shape")
        .ok_or_else(|| format!("tensor `{key}`: missing `shape`"))?
        .as_array()
        .ok_or_else(|| format!("tensor `{key}`: `shape` is not an array"))?
        .iter()
        .map(|d| d.as_usize().ok_or_else(|| format!("tensor `{key}`: shape entry {d} is not a non-negative integer")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let offsets = value
        .get("data_offsets")
        .ok_or_else(|| format!("tensor `{key}`: missing `data_offsets`"))?
        .as_array()
        .ok_or_else(|| format!("tensor `{key}`: `data_offsets` is not an array"))?;
    let [start, end] = offsets else {
        return Err(format!("tensor `{key}`: `data_offsets` must hold exactly 2 numbers, it holds {}", offsets.len()));
    };
    let (Some(start), Some(end)) = (start.as_usize(), end.as_usize()) else {
        return Err(format!("tensor `{key}`: `data_offsets` are not non-negative integers"));
    };
    if start > end {
        return Err(format!("tensor `{key}`: data_offsets [{start}, {end}] run backwards"));
    }
    if end > buffer_len {
        return Err(format!(
            "tensor `{key}`: data_offsets [{start}, {end}] run past the end of the {buffer_len}-byte buffer"
        ));
    }
    let nbytes = checked_numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| format!("tensor `{key}`: the byte size of shape {shape:?} overflows"))?;
    if end - start != nbytes {
        return Err(format!(
            "tensor `{key}`: data_offsets [{start}, {end}] span {} bytes, but shape {shape:?} of {dtype_name} needs {nbytes}",
            end - start
        ));
    }
    Ok(Entry { key, dtype, shape, start, end })
}

/// Converts little-endian elements of `dtype` to `f32`. `bytes.len()` is a multiple of the size.
fn convert(bytes: &[u8], dtype: Dtype) -> std::result::Result<Vec<f32>, String> {
    fn each<const N: usize>(
        bytes: &[u8],
        f: impl Fn([u8; N]) -> std::result::Result<f32, String>,
    ) -> std::result::Result<Vec<f32>, String> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    match dtype {
        Dtype::F32 => each(bytes, |a| Ok(f32::from_le_bytes(a))),
        Dtype::F64 => each(bytes, |a| {
            let v = f64::from_le_bytes(a);
            let x = v as f32;
            if v.is_finite() && !x.is_finite() {
                Err(format!("F64 value {v} is outside the f32 range"))
            } else {
                Ok(x)
            }
        }),
        Dtype::F16 => each(bytes, |a| Ok(f16_to_f32(u16::from_le_bytes(a)))),
        Dtype::BF16 => each(bytes, |a| Ok(f32::from_bits((u16::from_le_bytes(a) as u32) << 16))),
        Dtype::I64 => each(bytes, |a| {
            let v = i64::from_le_bytes(a);
            let x = v as f32;
            if x as i128 == v as i128 {
                Ok(x)
            } else {
                Err(format!("I64 value {v} is not exactly representable as f32"))
            }
        }),
        Dtype::I32 => each(bytes, |a| {
            let v = i32::from_le_bytes(a);
            let x = v as f32;
            if x as i128 == v as i128 {
                Ok(x)
            } else {
                Err(format!("I32 value {v} is not exactly representable as f32"))
            }
        }),
        Dtype::U8 => Ok(bytes.iter().map(|&b| b as f32).collect()),
        Dtype::Bool => bytes
            .iter()
            .map(|&b| match b {
                0 => Ok(0.0),
                1 => Ok(1.0),
                _ => Err(format!("BOOL byte {b} is neither 0 nor 1")),
            })
            .collect(),
    }
}

/// IEEE 754 half precision to single precision (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m · 2^-24, exact in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
    }
}
