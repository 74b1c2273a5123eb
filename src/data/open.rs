//! One entry point for "your data": [`open`] looks at what a path is and returns its splits as
//! [`Source`]s; [`locate_data_dir`] finds the data directory without any build-machine path.
//!
//! | the path is | read as | splits |
//! |---|---|---|
//! | a directory with `train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]` (+ labels) | IDX (MNIST layout), [`IdxSource`] | `train`, `test` |
//! | a directory of `train/`, `val/` (`valid/`, `validation/`), `test/` folders of class folders | image folders, [`crate::data::folder`] | those present |
//! | a directory of class folders | an image folder | `all` |
//! | a `.safetensors` file | a tensor file, [`crate::data::tensors`] | `all`, or `train`/`val`/`test` |
//! | a `.csv` or `.csv.gz` file | optdigits rows, [`crate::data::optdigits`] | `all` |
//!
//! ```
//! use consolidator::data::{open, Source};
//! use consolidator::io::TensorFile;
//! use consolidator::Tensor;
//! let dir = std::env::temp_dir().join(format!("consolidator-doc-open-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let mut f = TensorFile::new();
//! f.insert("images", Tensor::full(&[10, 5, 5, 3], 0.5)); // NHWC, inferred from the 3
//! f.insert("labels", Tensor::new(&[10], (0..10).map(|i| (i % 2) as f32).collect()).unwrap());
//! f.save(dir.join("toy.safetensors")).unwrap();
//! let data = open(&dir.join("toy.safetensors")).unwrap();
//! assert_eq!(data.names(), vec!["all"]);
//! let (train, val) = data.train_val(0.2, 0).unwrap();
//! assert_eq!((train.len(), val.unwrap().len()), (8, 2));
//! assert!(open(&dir.join("missing")).is_err());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use super::folder::{open_split_folders, ImageFolder};
use super::idx::Idx;
use super::image::Image;
use super::source::{out_of_range, split_source, Source};
use super::{Dataset, MAX_CLASSES};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What kind of data [`open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// IDX files in the MNIST layout.
    Idx,
    /// Split folders of class folders of images.
    SplitImageFolders,
    /// One folder of class folders of images.
    ImageFolder,
    /// A safetensors file of images and labels.
    TensorFile,
    /// An optdigits CSV file.
    Optdigits,
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataKind::Idx => "IDX files (MNIST layout)",
            DataKind::SplitImageFolders => "split folders of class folders of images",
            DataKind::ImageFolder => "a folder of class folders of images",
            DataKind::TensorFile => "a safetensors dataset file",
            DataKind::Optdigits => "an optdigits CSV file",
        })
    }
}

/// `(train, val)` sources (see [`Opened::train_val`]).
pub type TrainVal = (Arc<dyn Source>, Option<Arc<dyn Source>>);

/// An opened dataset: its splits by name (`train`, `val`, `test`, or `all`).
#[derive(Clone)]
pub struct Opened {
    /// The path given to [`open`].
    pub path: PathBuf,
    /// What it was read as.
    pub kind: DataKind,
    /// The splits by name.
    pub splits: BTreeMap<String, Arc<dyn Source>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<(String, usize)> = self.splits.iter().map(|(k, s)| (k.clone(), s.len())).collect();
        f.debug_struct("Opened").field("path", &self.path).field("kind", &self.kind).field("splits", &sizes).finish()
    }
}

impl Opened {
    /// The split names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.splits.keys().map(String::as_str).collect()
    }

    /// The split `name`, or an error listing the splits there are.
    pub fn split(&self, name: &str) -> Result<Arc<dyn Source>> {
        self.splits.get(name).cloned().ok_or_else(|| {
            Error::data(format!(
                "{} ({}) has no `{name}` split; it has: {}",
                self.path.display(),
                self.kind,
                self.names().join(", ")
            ))
        })
    }

    /// The one split of a path given for one role (`--train PATH`): `all` if present, else the
    /// only split; an error when there are several.
    pub fn single(&self) -> Result<Arc<dyn Source>> {
        if let Some(s) = self.splits.get("all") {
            return Ok(s.clone());
        }
        match self.splits.len() {
            1 => Ok(self.splits.values().next().cloned().expect("one split")),
            _ => Err(Error::data(format!(
                "{} has several splits ({}); pass it as the whole dataset (--data) or name one split's folder",
                self.path.display(),
                self.names().join(", ")
            ))),
        }
    }

    /// Training and validation sources: `train` (else `all`) for training; `val` if present,
    /// else a [`crate::data::stratified_split`] of the training source with `val_fraction`
    /// (`None` when the fraction is 0).
    pub fn train_val(&self, val_fraction: f32, seed: u64) -> Result<TrainVal> {
        let train = self.splits.get("train").or_else(|| self.splits.get("all")).cloned().ok_or_else(|| {
            Error::data(format!(
                "{} has no `train` split (it has: {}); pass training data with --train",
                self.path.display(),
                self.names().join(", ")
            ))
        })?;
        if let Some(val) = self.splits.get("val") {
            return Ok((train, Some(val.clone())));
        }
        if val_fraction == 0.0 {
            return Ok((train, None));
        }
        let (t, v) = split_source(train, val_fraction, seed)?;
        Ok((Arc::new(t), Some(Arc::new(v))))
    }
}

/// Opens the dataset at `path`, its kind detected from what the path is (see the module docs).
pub fn open(path: &Path) -> Result<Opened> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let done = |kind, splits: BTreeMap<String, Arc<dyn Source>>| Ok(Opened { path: path.to_path_buf(), kind, splits });
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.ends_with(".safetensors") {
            let splits = super::tensors::load_tensor_file(path)?;
            return done(
                DataKind::TensorFile,
                splits.into_iter().map(|(k, s)| (k, Arc::new(s) as Arc<dyn Source>)).collect(),
            );
        }
        if name.ends_with(".csv") || name.ends_with(".csv.gz") {
            let ds = super::optdigits::load_optdigits(path)?;
            let src = Named { ds, what: path.display().to_string() };
            return done(DataKind::Optdigits, BTreeMap::from([("all".to_string(), Arc::new(src) as Arc<dyn Source>)]));
        }
        return Err(Error::data(format!(
            "{}: unknown data file (expected a .safetensors dataset file or an optdigits .csv/.csv.gz file, \
             or a directory of IDX files, split folders or class folders)",
            path.display()
        )));
    }
    if !meta.is_dir() {
        return Err(Error::data(format!(
            "{}: neither a regular file nor a directory ({})",
            path.display(),
            crate::io::fs::kind_of(&meta)
        )));
    }
    if let Some(splits) = open_idx_dir(path)? {
        return done(DataKind::Idx, splits);
    }
    if let Some(splits) = open_split_folders(path)? {
        let splits = splits.into_iter().map(|(k, s)| (k, Arc::new(s) as Arc<dyn Source>)).collect();
        return done(DataKind::SplitImageFolders, splits);
    }
    let has_subdir = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok())
        .any(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir());
    if !has_subdir {
        let loose = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok())
            .filter(|e| super::decode::has_image_extension(&e.path()))
            .count();
        return Err(Error::data(format!(
            "{}: not a dataset directory: looked for IDX files (train-images-idx3-ubyte[.gz], \
             t10k-images-idx3-ubyte[.gz] with their labels), split folders (train/, val/, test/) and class \
             folders (<class name>/<images>), found none{}",
            path.display(),
            if loose > 0 {
                format!(" ({loose} image file(s) lie directly in it: put them in one folder per class)")
            } else {
                String::new()
            }
        )));
    }
    let folder = ImageFolder::open(path)?;
    done(DataKind::ImageFolder, BTreeMap::from([("all".to_string(), Arc::new(folder) as Arc<dyn Source>)]))
}

/// A dataset in memory with a name for its examples.
struct Named {
    ds: Dataset,
    what: String,
}

impl Source for Named {
    fn len(&self) -> usize {
        self.ds.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.ds.num_classes
    }
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn label(&self, i: usize) -> usize {
        self.ds.labels[i]
    }
    fn image(&self, i: usize) -> Result<Image> {
        Source::image(&self.ds, i).map_err(|_| out_of_range(i, self.ds.labels.len(), &self.what))
    }
    fn describe(&self, i: usize) -> String {
        format!("{}: example {i}", self.what)
    }
}

/// The images of an IDX image file (`[N, H, W]` bytes, kept as bytes) with their labels.
#[derive(Clone, Debug)]
pub struct IdxSource {
    images: Idx,
    labels: Vec<usize>,
    num_classes: usize,
    what: String,
}

impl IdxSource {
    /// The shape of one image, `[1, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [1, self.images.dims[1], self.images.dims[2]]
    }
}

impl Source for IdxSource {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn image(&self, i: usize) -> Result<Image> {
        let [_, h, w] = self.image_shape();
        if i >= self.labels.len() {
            return Err(out_of_range(i, self.labels.len(), &self.what));
        }
        let bytes = &self.images.data[i * h * w..(i + 1) * h * w];
        Ok(Image { channels: 1, height: h, width: w, data: bytes.iter().map(|&b| b as f32 / 255.0).collect() })
    }
    fn describe(&self, i: usize) -> String {
        format!("{}: example {i}", self.what)
    }
}

/// `dir/name` or `dir/name.gz`, whichever is a file.
fn plain_or_gz(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// The IDX splits of `dir` (`train-*` → `train`, `t10k-*` → `test`), or `None` when it holds
/// no IDX image or label file. Images `[N, H, W]`, labels `[N]`; the classes are the largest
/// label over the splits + 1 (at least 2).
pub fn open_idx_dir(dir: &Path) -> Result<Option<BTreeMap<String, Arc<dyn Source>>>> {
    let mut parts = Vec::new();
    for (prefix, split) in [("train", "train"), ("t10k", "test")] {
        let images_name = format!("{prefix}-images-idx3-ubyte");
        let labels_name = format!("{prefix}-labels-idx1-ubyte");
        match (plain_or_gz(dir, &images_name), plain_or_gz(dir, &labels_name)) {
            (None, None) => continue,
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::data(format!(
                    "{}: {images_name}[.gz] and {labels_name}[.gz] come in pairs; one of them is missing",
                    dir.display()
                )))
            }
            (Some(ip), Some(lp)) => {
                let images = Idx::load_images(&ip)?;
                let labels = Idx::load_labels(&lp)?;
                if labels.dims[0] != images.dims[0] {
                    return Err(Error::data(format!(
                        "{} holds {} images but {} holds {} labels",
                        ip.display(),
                        images.dims[0],
                        lp.display(),
                        labels.dims[0]
                    )));
                }
                if images.dims[0] == 0 || images.dims[1] == 0 || images.dims[2] == 0 {
                    return Err(Error::data(format!("{}: holds no image ({:?})", ip.display(), images.dims)));
                }
                parts.push((split, images, labels.data, ip));
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let num_classes = parts.iter().flat_map(|p| p.2.iter()).max().map_or(0, |&m| m as usize + 1);
    if num_classes < 2 {
        return Err(Error::data(format!("{}: every label is 0: a classifier needs at least 2 classes", dir.display())));
    }
    debug_assert!(num_classes <= MAX_CLASSES);
    let splits = parts
        .into_iter()
        .map(|(split, images, labels, path)| {
            let src = IdxSource {
                images,
                labels: labels.into_iter().map(usize::from).collect(),
                num_classes,
                what: path.display().to_string(),
            };
            (split.to_string(), Arc::new(src) as Arc<dyn Source>)
        })
        .collect();
    Ok(Some(splits))
}

/// The environment variable naming the data directory.
pub const DATA_ENV: &str = "CONSOLIDATOR_DATA";

/// Finds the data directory (the shipped MNIST test set, optdigits, the backbone): `explicit`
/// (a `--data` flag) if given; else the environment variable `CONSOLIDATOR_DATA`; else `./data`;
/// else `data/` beside the executable. An explicit path or a set variable that is not a
/// directory is an error (not silently skipped); when nothing is found, the error lists every
/// place looked at. No path of the build machine is used.
pub fn locate_data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    locate_data_dir_in(explicit, std::env::var_os(DATA_ENV), Path::new("."), exe_dir.as_deref())
}

/// [`locate_data_dir`] with the environment given: the variable's value, the working directory
/// and the executable's directory.
pub fn locate_data_dir_in(
    explicit: Option<&Path>,
    env_value: Option<OsString>,
    cwd: &Path,
    exe_dir: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::data(format!("the data directory {} (given explicitly) is not a directory", p.display())))
        };
    }
    let mut looked = Vec::new();
    match env_value.filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(v);
            if p.is_dir() {
                return Ok(p);
            }
            return Err(Error::data(format!("{DATA_ENV}={} is not a directory", p.display())));
        }
        None => looked.push(format!("${DATA_ENV} (not set)")),
    }
    let here = cwd.join("data");
    if here.is_dir() {
        return Ok(here);
    }
    looked.push(format!("{} (not a directory)", here.display()));
    match exe_dir {
        Some(d) => {
            let beside = d.join("data");
            if beside.is_dir() {
                return Ok(beside);
            }
            looked.push(format!("{} (beside the executable; not a directory)", beside.display()));
        }
        None => looked.push("data/ beside the executable (its location is unknown)".into()),
    }
    Err(Error::data(format!(
        "no data directory found; looked at: {}. Pass --data DIR or set {DATA_ENV}",
        looked.join(", ")
    )))
}
