//! Our own reader and writer of the safetensors format (the format timm and Hugging Face use).
//!
//! Layout: an 8-byte little-endian header length `n`; `n` bytes of JSON mapping each tensor name
//! to `{"dtype": .., "shape": [..], "data_offsets": [start, end]}` (offsets relative to the byte
//! buffer), plus an optional `"__metadata__"` object of string → string; then the byte buffer.
//!
//! Writing always uses `F32` little-endian, keys sorted, and pads the header with spaces so the
//! buffer starts on an 8-byte boundary; tensors holding NaN or infinities are refused by
//! [`TensorFile::save`]. Reading accepts `F32`, `F64`, `F16`, `BF16` (converted to `f32`) and
//! `I64`, `I32`, `U8`, `BOOL` (converted to `f32`; integers must be exactly representable,
//! booleans must be 0 or 1). [`RawFile`] keeps each tensor's stored dtype and bytes instead, and
//! also reads `I16`, `I8`, `U64`, `U32`, `U16` (dataset labels, say).
//!
//! [`TensorFile::load`] and [`RawFile::load`] read header first: only a regular file is opened
//! (a directory, a named pipe or `/dev/zero` is refused at once), the 8-byte length and the
//! header are read and validated against the file's length, and only then exactly the declared
//! data is read — never the whole file blindly.
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
use std::io::Read;
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

/// The element types the reader understands (the safetensors names, `F32` … `BOOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `F32`
    F32,
    /// `F64`
    F64,
    /// `F16` (IEEE half)
    F16,
    /// `BF16`
    BF16,
    /// `I64`
    I64,
    /// `I32`
    I32,
    /// `I16`
    I16,
    /// `I8`
    I8,
    /// `U64`
    U64,
    /// `U32`
    U32,
    /// `U16`
    U16,
    /// `U8`
    U8,
    /// `BOOL` (one byte, 0 or 1)
    Bool,
}

impl Dtype {
    /// Every dtype, in the order error messages list them.
    pub const ALL: [Dtype; 13] = [
        Dtype::F32,
        Dtype::F64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U64,
        Dtype::U32,
        Dtype::U16,
        Dtype::U8,
        Dtype::Bool,
    ];

    /// The dtype of a safetensors name (`"F32"`, `"U8"`, …).
    pub fn parse(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::U8 | Dtype::I8 | Dtype::Bool => 1,
        }
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16)
    }

    /// One little-endian element (`bytes.len() == self.size()`) as `f64`: exact for every dtype
    /// except 64-bit integers beyond 2^53, which round.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`Dtype::size`].
    pub fn element_f64(self, bytes: &[u8]) -> f64 {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[..N]);
            a
        }
        match self {
            Dtype::F32 => f32::from_le_bytes(arr(bytes)) as f64,
            Dtype::F64 => f64::from_le_bytes(arr(bytes)),
            Dtype::F16 => f16_to_f32(u16::from_le_bytes(arr(bytes))) as f64,
            Dtype::BF16 => f32::from_bits((u16::from_le_bytes(arr(bytes)) as u32) << 16) as f64,
            Dtype::I64 => i64::from_le_bytes(arr(bytes)) as f64,
            Dtype::I32 => i32::from_le_bytes(arr(bytes)) as f64,
            Dtype::I16 => i16::from_le_bytes(arr(bytes)) as f64,
            Dtype::I8 => bytes[0] as i8 as f64,
            Dtype::U64 => u64::from_le_bytes(arr(bytes)) as f64,
            Dtype::U32 => u32::from_le_bytes(arr(bytes)) as f64,
            Dtype::U16 => u16::from_le_bytes(arr(bytes)) as f64,
            Dtype::U8 | Dtype::Bool => bytes[0] as f64,
        }
    }
}

/// One validated header entry.
#[derive(Clone, Debug)]
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

    /// Reads a file (see [`RawFile::load`]: only a regular file, header first, then exactly the
    /// data the header declares) and converts every tensor to `f32`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        RawFile::load(path)?.into_tensor_file()
    }

    /// Writes the file atomically (see [`crate::io::atomic`]); same bytes as
    /// [`TensorFile::to_bytes`]. The data are streamed (no second in-memory copy of the tensors).
    ///
    /// A tensor holding a NaN or an infinity is refused ([`TensorFile::check_finite`]) before
    /// anything is written: a diverged model must not replace a good file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_finite().map_err(|e| match e {
            Error::NonFinite { what } => Error::NonFinite { what: format!("{what} to {}", path.as_ref().display()) },
            other => other,
        })?;
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
    /// padded with spaces to a multiple of 8 bytes. Writes whatever values the tensors hold,
    /// NaN included (round trips of files read from elsewhere need that); [`TensorFile::save`]
    /// and [`TensorFile::to_bytes_checked`] refuse non-finite values.
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
        while !(8 + text.len()).is_multiple_of(8) {
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
        let (header, buffer) = split_bytes(bytes, what)?;
        let header = Header::parse(header, buffer.len(), what)?;
        header.into_tensor_file(buffer, what)
    }

    /// Errors with [`Error::NonFinite`] naming the first tensor (in key order) that holds a NaN or
    /// an infinity, and the index of its first such value.
    pub fn check_finite(&self) -> Result<()> {
        for (key, t) in &self.tensors {
            if let Some(i) = t.data().iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("tensor `{}` (first at index {i}: {}); refusing to save it", key, t.data()[i]),
                });
            }
        }
        Ok(())
    }

    /// [`TensorFile::to_bytes`] after [`TensorFile::check_finite`]: what [`TensorFile::save`]
    /// writes, as bytes.
    pub fn to_bytes_checked(&self) -> Result<Vec<u8>> {
        self.check_finite()?;
        Ok(self.to_bytes())
    }
}

/// Splits a whole file into its header text and data buffer, checking the declared header length.
fn split_bytes<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8])> {
    let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
    if bytes.len() < 8 {
        return Err(fail(format!("{} bytes is too short to hold the 8-byte header length", bytes.len())));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[..8]);
    let header_len = check_header_len(u64::from_le_bytes(len_bytes), (bytes.len() - 8) as u64, what)?;
    Ok((&bytes[8..8 + header_len], &bytes[8 + header_len..]))
}

/// Checks a declared header length against the limit and the bytes after the length field.
fn check_header_len(header_len: u64, available: u64, what: &str) -> Result<usize> {
    let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
    if header_len > MAX_HEADER {
        return Err(fail(format!("declared header length {header_len} exceeds the {MAX_HEADER}-byte limit")));
    }
    if header_len > available {
        return Err(fail(format!(
            "declared header length {header_len} exceeds the {available} bytes after the length field (truncated file?)"
        )));
    }
    Ok(header_len as usize)
}

/// A parsed, validated header: entries tiling a buffer of known length, and the metadata.
struct Header {
    entries: Vec<Entry>,
    metadata: BTreeMap<String, String>,
}

impl Header {
    /// Parses the header text and validates every entry against a `buffer_len`-byte buffer.
    fn parse(header_bytes: &[u8], buffer_len: usize, what: &str) -> Result<Header> {
        let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
        if header_bytes.first() != Some(&b'{') {
            return Err(fail("the header does not start with '{'".to_string()));
        }
        let header = Json::parse_limited(header_bytes, &format!("safetensors header of {what}"), MAX_HEADER_VALUES)?;
        let Json::Obj(pairs) = header else {
            return Err(fail("the header is not a JSON object".to_string()));
        };
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            if key == METADATA_KEY {
                metadata = parse_metadata(&value).map_err(fail)?;
            } else {
                entries.push(parse_entry(key, &value, buffer_len).map_err(fail)?);
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
        if cursor != buffer_len {
            return Err(fail(format!("the tensors cover {cursor} bytes of a {buffer_len}-byte buffer")));
        }
        Ok(Header { entries, metadata })
    }

    /// Converts every entry of `buffer` (the validated one) to an `f32` tensor.
    fn into_tensor_file(self, buffer: &[u8], what: &str) -> Result<TensorFile> {
        let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
        let mut tensors = BTreeMap::new();
        for e in self.entries {
            let data =
                convert(&buffer[e.start..e.end], e.dtype).map_err(|msg| fail(format!("tensor `{}`: {msg}", e.key)))?;
            let t = Tensor::new(&e.shape, data).map_err(|err| fail(format!("tensor `{}`: {err}", e.key)))?;
            tensors.insert(e.key, t);
        }
        Ok(TensorFile { tensors, metadata: self.metadata })
    }
}

/// A validated safetensors file with its tensors kept as stored: each tensor's [`Dtype`], shape
/// and raw little-endian bytes. [`TensorFile`] converts everything to `f32`; this is the
/// lower-level view for readers that need the stored dtype (a `U8` image stays one byte per
/// value in memory).
///
/// ```
/// use consolidator::io::safetensors::{Dtype, RawFile, TensorFile};
/// use consolidator::Tensor;
/// let mut f = TensorFile::new();
/// f.insert("w", Tensor::new(&[2], vec![0.5, -1.0]).unwrap());
/// let raw = RawFile::from_bytes(&f.to_bytes(), "mem").unwrap();
/// let w = raw.view("w").unwrap();
/// assert_eq!((w.dtype, w.shape), (Dtype::F32, &[2][..]));
/// assert_eq!(w.bytes, &[0, 0, 0, 63, 0, 0, 128, 191]);
/// assert_eq!(raw.into_tensor_file().unwrap(), f);
/// ```
#[derive(Clone)]
pub struct RawFile {
    /// The `__metadata__` map (sorted).
    pub metadata: BTreeMap<String, String>,
    entries: BTreeMap<String, Entry>,
    buffer: Vec<u8>,
    what: String,
}

impl std::fmt::Debug for RawFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFile")
            .field("what", &self.what)
            .field("tensors", &self.entries.values().map(|e| (&e.key, e.dtype, &e.shape)).collect::<Vec<_>>())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// One tensor of a [`RawFile`], as stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorView<'a> {
    /// The stored element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: &'a [usize],
    /// The elements, little-endian, `numel × dtype.size()` bytes.
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }
}

impl RawFile {
    /// Reads a safetensors file header first: refuses what is not a regular file (a directory, a
    /// named pipe, `/dev/zero`) without opening it, reads the 8-byte length and the header,
    /// validates every entry against the file's real length, and only then reads the data —
    /// exactly the bytes the header declares, which must be exactly what the file holds. A huge
    /// file whose header is invalid is refused after reading its first bytes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let fail = |msg: String| Error::format(format!("safetensors file {what}"), msg);
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                fail("the file ended early (was it truncated while being read?)".into())
            } else {
                Error::io(path, e)
            }
        };
        let (mut file, len) = super::fs::open_regular(path)?;
        if len < 8 {
            return Err(fail(format!("{len} bytes is too short to hold the 8-byte header length")));
        }
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(io)?;
        let header_len = check_header_len(u64::from_le_bytes(len_bytes), len - 8, &what)?;
        let mut header_bytes = vec![0u8; header_len];
        file.read_exact(&mut header_bytes).map_err(io)?;
        let buffer_len = usize::try_from(len - 8 - header_len as u64)
            .map_err(|_| fail(format!("a {len}-byte file is too large for this machine")))?;
        let header = Header::parse(&header_bytes, buffer_len, &what)?;
        drop(header_bytes);
        let mut buffer = vec![0u8; buffer_len];
        file.read_exact(&mut buffer).map_err(io)?;
        let mut probe = [0u8; 1];
        if file.read(&mut probe).map_err(io)? != 0 {
            return Err(fail("the file grew while being read".into()));
        }
        Ok(RawFile::from_parts(header, buffer, what))
    }

    /// Parses and validates a safetensors byte buffer (see [`TensorFile::from_bytes`]), keeping
    /// the data as stored (one copy of the data part of `bytes`).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let (header, buffer) = split_bytes(bytes, what)?;
        let header = Header::parse(header, buffer.len(), what)?;
        Ok(RawFile::from_parts(header, buffer.to_vec(), what.to_string()))
    }

    fn from_parts(header: Header, buffer: Vec<u8>, what: String) -> Self {
        let entries = header.entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        RawFile { metadata: header.metadata, entries, buffer, what }
    }

    /// The source's name, as given to [`RawFile::from_bytes`] (the path for [`RawFile::load`]).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The tensor named `key`, as stored.
    pub fn view(&self, key: &str) -> Option<TensorView<'_>> {
        self.entries.get(key).map(|e| TensorView {
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &self.buffer[e.start..e.end],
        })
    }

    /// Converts every tensor to `f32` (the checks of [`TensorFile::from_bytes`] apply).
    pub fn into_tensor_file(self) -> Result<TensorFile> {
        let mut entries: Vec<Entry> = self.entries.into_values().collect();
        entries.sort_by_key(|e| e.start);
        Header { entries, metadata: self.metadata }.into_tensor_file(&self.buffer, &self.what)
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
        let names: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
        format!("tensor `{key}`: unsupported dtype {dtype_name:?} (supported: {})", names.join(", "))
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
        // Integers must be exactly representable: |v| ≤ 2^24, or a multiple of a power of two.
        // TensorFile keeps the dtypes it always read; the other integer types are RawFile's.
        Dtype::U64 | Dtype::U32 | Dtype::U16 | Dtype::I16 | Dtype::I8 => Err(format!(
            "unsupported dtype {:?} for an f32 tensor file (supported: F32, F64, F16, BF16, I64, I32, U8, BOOL; \
             RawFile reads it as stored)",
            dtype.name()
        )),
        Dtype::I64 | Dtype::I32 => bytes
            .chunks_exact(dtype.size())
            .map(|c| {
                let v: i128 = match dtype {
                    Dtype::I64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128,
                    _ => i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i128,
                };
                let x = v as f32;
                if x as i128 == v {
                    Ok(x)
                } else {
                    Err(format!("{} value {v} is not exactly representable as f32", dtype.name()))
                }
            })
            .collect(),
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
