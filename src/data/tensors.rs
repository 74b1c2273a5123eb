//! Datasets stored as tensors in a safetensors file: `images` and `labels`, kept as stored (a
//! `U8` image costs one byte per value in memory) and converted one example at a time.
//!
//! - **`images`**: `U8` (divided by 255) or a float dtype (`F32`, `F64`, `F16`, `BF16`, whose
//!   values must already be in `[0, 1]` — checked when the file is opened, so normalised data is
//!   caught). Layout `[N, H, W]`, `[N, H, W, C]` or `[N, C, H, W]`: from the metadata key
//!   `layout` (`NHW`, `NHWC` or `NCHW`) if present, else from the shape — rank 3 is `NHW`; at
//!   rank 4 the channel axis is the one of positions 1 and 3 whose size is 1, 3 or 4, and it
//!   must be exactly one of them (`[N, 3, 32, 3]` is ambiguous: set `layout`).
//! - **`labels`**: `[N]` (or `[N, 1]`), any integer dtype, or a float dtype holding whole numbers
//!   (what [`crate::io::TensorFile`] writes); negative or fractional labels are an error naming
//!   the example.
//! - **classes**: the metadata key `class_names`, a JSON array of strings (`["cat","dog"]`;
//!   a value not starting with `[` is read as comma-separated names, `cat,dog`). Without it the
//!   classes are unnamed and their number is the largest label + 1 (or the metadata key
//!   `num_classes`).
//! - **splits**: tensors `images`/`labels` form the split `all`; or `train.images`/
//!   `train.labels`, `val.…`, `test.…` form those splits (sharing `layout` and classes).
//! - at least 2 classes.
//!
//! [`to_tensor_file`] writes a [`Dataset`] in this layout (with `layout` set), so what we write
//! reads back.
//!
//! Every error names the file.
//!
//! ```
//! use consolidator::data::tensors::open_tensor_file;
//! use consolidator::data::Source;
//! use consolidator::io::TensorFile;
//! use consolidator::Tensor;
//! let mut f = TensorFile::new();
//! f.insert("images", Tensor::new(&[2, 2, 2], vec![0.0, 0.5, 1.0, 0.25, 1.0, 1.0, 0.0, 0.0]).unwrap());
//! f.insert("labels", Tensor::new(&[2], vec![1.0, 0.0]).unwrap());
//! f.metadata.insert("class_names".into(), r#"["zero","one"]"#.into());
//! let splits = open_tensor_file(&f.to_bytes(), "mem.safetensors").unwrap();
//! let all = &splits["all"];
//! assert_eq!((all.len(), all.num_classes(), all.label(0)), (2, 2, 1));
//! assert_eq!(all.class_names(), vec!["zero", "one"]);
//! assert_eq!(all.image(1).unwrap().data, vec![1.0, 1.0, 0.0, 0.0]);
//! ```

use super::image::Image;
use super::source::{out_of_range, Source};
use super::{Dataset, MAX_CLASSES};
use crate::io::json::Json;
use crate::io::safetensors::{Dtype, RawFile};
use crate::io::text::escape_text;
use crate::io::TensorFile;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How the images of a tensor file are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[N, H, W]`, one channel.
    Nhw,
    /// `[N, H, W, C]`, channels last.
    Nhwc,
    /// `[N, C, H, W]`, channels first.
    Nchw,
}

impl Layout {
    /// The layout of a metadata value (`NHW`, `NHWC`, `NCHW`, any case).
    pub fn parse(s: &str) -> Option<Layout> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NHW" => Some(Layout::Nhw),
            "NHWC" => Some(Layout::Nhwc),
            "NCHW" => Some(Layout::Nchw),
            _ => None,
        }
    }

    /// `(N, C, H, W)` of a shape in this layout, if the rank fits.
    fn dims(self, shape: &[usize]) -> Option<(usize, usize, usize, usize)> {
        match (self, shape) {
            (Layout::Nhw, &[n, h, w]) => Some((n, 1, h, w)),
            (Layout::Nhwc, &[n, h, w, c]) => Some((n, c, h, w)),
            (Layout::Nchw, &[n, c, h, w]) => Some((n, c, h, w)),
            _ => None,
        }
    }
}

/// One split of a tensor file (see the module docs).
#[derive(Clone, Debug)]
pub struct TensorSource {
    file: Arc<RawFile>,
    images_key: String,
    layout: Layout,
    dtype: Dtype,
    /// `(N, C, H, W)`.
    dims: (usize, usize, usize, usize),
    labels: Vec<usize>,
    num_classes: usize,
    class_names: Vec<String>,
}

/// Opens a tensor-file dataset: its splits by name (`all`, or `train`/`val`/`test`).
pub fn load_tensor_file(path: &Path) -> Result<BTreeMap<String, TensorSource>> {
    splits_of(Arc::new(RawFile::load(path)?))
}

/// [`load_tensor_file`] of bytes in memory; `what` names them in errors.
pub fn open_tensor_file(bytes: &[u8], what: &str) -> Result<BTreeMap<String, TensorSource>> {
    splits_of(Arc::new(RawFile::from_bytes(bytes, what)?))
}

fn fail(file: &RawFile, msg: impl Into<String>) -> Error {
    Error::format(format!("dataset file {}", file.what()), msg)
}

/// The splits of a validated safetensors file.
pub fn splits_of(file: Arc<RawFile>) -> Result<BTreeMap<String, TensorSource>> {
    let prefixes: Vec<(&str, String)> = if file.view("images").is_some() || file.view("labels").is_some() {
        vec![("all", String::new())]
    } else {
        ["train", "val", "test"]
            .into_iter()
            .filter(|s| file.view(&format!("{s}.images")).is_some() || file.view(&format!("{s}.labels")).is_some())
            .map(|s| (s, format!("{s}.")))
            .collect()
    };
    if prefixes.is_empty() {
        let keys: Vec<String> = file.keys().take(8).map(|k| format!("`{}`", escape_text(k))).collect();
        return Err(fail(
            &file,
            format!(
                "no `images` and `labels` tensors (nor `train.images`, `val.images`, `test.images`); it holds {}",
                if keys.is_empty() { "no tensors".to_string() } else { keys.join(", ") }
            ),
        ));
    }
    // Labels first: the classes are shared by the splits.
    let mut labels = Vec::new();
    for (_, p) in &prefixes {
        labels.push(read_labels(&file, &format!("{p}labels"))?);
    }
    let max_label = labels.iter().flatten().copied().max();
    let (num_classes, class_names) = classes(&file, max_label)?;
    let mut out = BTreeMap::new();
    for ((split, p), labels) in prefixes.into_iter().zip(labels) {
        let src = TensorSource::new(file.clone(), &format!("{p}images"), labels, num_classes, class_names.clone())?;
        out.insert(split.to_string(), src);
    }
    Ok(out)
}

/// `labels`: `[N]` or `[N, 1]`, whole non-negative numbers below [`MAX_CLASSES`].
fn read_labels(file: &RawFile, key: &str) -> Result<Vec<usize>> {
    let v = file.view(key).ok_or_else(|| fail(file, format!("no `{key}` tensor beside the images")))?;
    if !matches!(v.shape, [_] | [_, 1]) {
        return Err(fail(file, format!("`{key}` has shape {:?}; expected [N] (one class index per image)", v.shape)));
    }
    let size = v.dtype.size();
    v.bytes
        .chunks_exact(size)
        .enumerate()
        .map(|(i, b)| {
            let x = v.dtype.element_f64(b);
            if v.dtype == Dtype::Bool {
                return Err(fail(file, format!("`{key}` is BOOL; labels must be integers")));
            }
            if !(x.is_finite() && x.fract() == 0.0) {
                return Err(fail(file, format!("`{key}`: label {x} of example {i} is not a whole number")));
            }
            if x < 0.0 {
                return Err(fail(file, format!("`{key}`: label {x} of example {i} is negative")));
            }
            if x >= MAX_CLASSES as f64 {
                return Err(fail(
                    file,
                    format!("`{key}`: label {x} of example {i} exceeds the {MAX_CLASSES}-class limit"),
                ));
            }
            Ok(x as usize)
        })
        .collect()
}

/// The class count and names, from the metadata or the labels.
fn classes(file: &RawFile, max_label: Option<usize>) -> Result<(usize, Vec<String>)> {
    let needed = max_label.map_or(0, |m| m + 1);
    let names = match file.metadata.get("class_names") {
        Some(text) => Some(parse_class_names(text).map_err(|m| fail(file, format!("metadata `class_names`: {m}")))?),
        None => None,
    };
    let declared = match file.metadata.get("num_classes") {
        Some(t) => {
            Some(t.trim().parse::<usize>().ok().filter(|&n| (1..=MAX_CLASSES).contains(&n)).ok_or_else(|| {
                fail(
                    file,
                    format!("metadata `num_classes` = `{}` is not a class count 1..={MAX_CLASSES}", escape_text(t)),
                )
            })?)
        }
        None => None,
    };
    let n = match (&names, declared) {
        (Some(names), Some(d)) if names.len() != d => {
            return Err(fail(file, format!("{} class names but `num_classes` = {d}", names.len())));
        }
        (Some(names), _) => names.len(),
        (None, Some(d)) => d,
        (None, None) => needed,
    };
    if needed > n {
        return Err(fail(file, format!("label {} is out of range for {n} classes", needed - 1)));
    }
    if n < 2 {
        return Err(fail(
            file,
            format!(
                "{n} class(es): a classifier needs at least 2 classes (set the metadata `num_classes` or \
                 `class_names` if a split holds only some classes)"
            ),
        ));
    }
    Ok((n, names.unwrap_or_default()))
}

/// A JSON array of distinct, non-empty strings, or comma-separated names.
fn parse_class_names(text: &str) -> std::result::Result<Vec<String>, String> {
    let names: Vec<String> = if text.trim_start().starts_with('[') {
        let json = Json::parse_limited(text.as_bytes(), "class_names", MAX_CLASSES + 1).map_err(|e| e.to_string())?;
        json.as_array()
            .ok_or("not a JSON array")?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("{v} is not a string")))
            .collect::<std::result::Result<_, _>>()?
    } else {
        text.split(',').map(|s| s.trim().to_string()).collect()
    };
    if names.len() > MAX_CLASSES {
        return Err(format!("more than {MAX_CLASSES} names"));
    }
    if names.iter().any(String::is_empty) {
        return Err("a class name is empty".into());
    }
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("the name `{}` appears twice", escape_text(w[0])));
    }
    Ok(names)
}

/// A [`Dataset`] as a tensor file this module reads back: `images` `[N, C, H, W]` `F32` (values
/// as they are: save raw intensities in `[0, 1]`, not normalised ones), `labels` `[N]`, metadata
/// `layout = NCHW`, `num_classes`, and `class_names` (a JSON array) when names are given (one
/// per class).
pub fn to_tensor_file(ds: &Dataset, class_names: &[String]) -> Result<TensorFile> {
    if !class_names.is_empty() && class_names.len() != ds.num_classes {
        return Err(Error::invalid(
            "to_tensor_file",
            format!("{} class names for {} classes", class_names.len(), ds.num_classes),
        ));
    }
    let mut f = TensorFile::new();
    f.insert("images", ds.images.clone());
    f.insert("labels", crate::Tensor::new(&[ds.labels.len()], ds.labels.iter().map(|&l| l as f32).collect())?);
    f.metadata.insert("layout".into(), "NCHW".into());
    f.metadata.insert("num_classes".into(), ds.num_classes.to_string());
    if !class_names.is_empty() {
        let names = Json::Arr(class_names.iter().map(|n| Json::Str(n.clone())).collect());
        f.metadata.insert("class_names".into(), names.to_string());
    }
    Ok(f)
}

impl TensorSource {
    fn new(
        file: Arc<RawFile>,
        key: &str,
        labels: Vec<usize>,
        num_classes: usize,
        class_names: Vec<String>,
    ) -> Result<TensorSource> {
        let v = file.view(key).ok_or_else(|| fail(&file, format!("no `{key}` tensor beside the labels")))?;
        if !(v.dtype == Dtype::U8 || v.dtype.is_float()) {
            return Err(fail(
                &file,
                format!("`{key}` is {}; images must be U8 (0..255) or a float dtype (0..1)", v.dtype.name()),
            ));
        }
        let layout = match file.metadata.get("layout") {
            Some(s) => Layout::parse(s).ok_or_else(|| {
                fail(&file, format!("metadata `layout` = `{}`; expected NHW, NHWC or NCHW", escape_text(s)))
            })?,
            None => infer_layout(v.shape).map_err(|m| fail(&file, format!("`{key}`: {m}")))?,
        };
        let dims @ (n, c, h, w) = layout.dims(v.shape).ok_or_else(|| {
            fail(&file, format!("`{key}` has shape {:?}, which is not {layout:?} (metadata `layout`)", v.shape))
        })?;
        if !(1..=4).contains(&c) {
            return Err(fail(&file, format!("`{key}` has {c} channels; expected 1 to 4 ({layout:?})")));
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(fail(&file, format!("`{key}` of shape {:?} holds no image", v.shape)));
        }
        if labels.len() != n {
            return Err(fail(&file, format!("`{key}` holds {n} images but there are {} labels", labels.len())));
        }
        if v.dtype.is_float() {
            let size = v.dtype.size();
            if let Some((i, x)) = v
                .bytes
                .chunks_exact(size)
                .map(|b| v.dtype.element_f64(b))
                .enumerate()
                .find(|(_, x)| !(0.0..=1.0).contains(x))
            {
                return Err(fail(
                    &file,
                    format!(
                        "`{key}`: value {x} at index {i} is outside [0, 1]; float images must hold raw intensities in [0, 1] \
                         (not normalised values; use U8 for 0..255)"
                    ),
                ));
            }
        }
        let dtype = v.dtype;
        Ok(TensorSource { images_key: key.to_string(), layout, dtype, dims, labels, num_classes, class_names, file })
    }

    /// The layout of the images (given or inferred).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The stored dtype of the images.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.dims.1, self.dims.2, self.dims.3]
    }
}

/// The layout a shape implies (see the module docs).
fn infer_layout(shape: &[usize]) -> std::result::Result<Layout, String> {
    let channels = |c: usize| matches!(c, 1 | 3 | 4);
    match shape {
        [_, _, _] => Ok(Layout::Nhw),
        &[_, a, _, b] => match (channels(a), channels(b)) {
            (true, false) => Ok(Layout::Nchw),
            (false, true) => Ok(Layout::Nhwc),
            (true, true) => {
                Err(format!("shape {shape:?} is ambiguous (NCHW or NHWC?); set the metadata `layout` to NCHW or NHWC"))
            }
            (false, false) => {
                Err(format!("shape {shape:?} has no channel axis of size 1, 3 or 4 at position 1 (NCHW) or 3 (NHWC)"))
            }
        },
        _ => Err(format!("shape {shape:?} is not [N, H, W], [N, H, W, C] or [N, C, H, W]")),
    }
}

impl Source for TensorSource {
    fn len(&self) -> usize {
        self.dims.0
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn image(&self, i: usize) -> Result<Image> {
        let (n, c, h, w) = self.dims;
        if i >= n {
            return Err(out_of_range(i, n, self.file.what()));
        }
        let v = self.file.view(&self.images_key).ok_or_else(|| fail(&self.file, "the images went missing"))?;
        let per = c * h * w;
        let size = self.dtype.size();
        let bytes = &v.bytes[i * per * size..(i + 1) * per * size];
        let value = |k: usize| -> f32 {
            let b = &bytes[k * size..(k + 1) * size];
            match self.dtype {
                Dtype::U8 => b[0] as f32 / 255.0,
                Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                d => d.element_f64(b) as f32,
            }
        };
        let data = match self.layout {
            Layout::Nhw | Layout::Nchw => (0..per).map(value).collect(),
            Layout::Nhwc => {
                let hw = h * w;
                (0..per).map(|k| value((k % hw) * c + k / hw)).collect()
            }
        };
        Ok(Image { channels: c, height: h, width: w, data })
    }
    fn describe(&self, i: usize) -> String {
        format!("{}: `{}` example {i}", self.file.what(), self.images_key)
    }
}
