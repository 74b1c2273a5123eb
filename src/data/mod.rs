//! Data: "your data" through one reader API, the in-memory [`Dataset`], the transfer suite.
//!
//! **Reading data.** [`open`] takes a path and returns its splits (`train`, `val`, `test`, or
//! `all`) as [`Source`]s: labelled examples decoded on demand, so memory holds the file list
//! (or the file's bytes), never every decoded image. It recognises
//!
//! - a folder of class folders of images (`PATH/<class>/*.{png,jpg,jpeg,pgm,ppm}`), or of
//!   `train/`, `val/`, `test/` folders laid out so ([`folder`], decoding by [`decode`]);
//! - a safetensors file of `images` and `labels` ([`tensors`]);
//! - a directory of IDX files in the MNIST layout ([`idx`], [`IdxSource`]);
//! - an optdigits CSV, plain or gzip'd ([`optdigits`]).
//!
//! [`Preprocess`] turns examples into the model's input — channel conversion, bicubic resize as
//! PIL/torchvision do it ([`image`]), normalisation — and makes batches `[B, C, H, W]`, decoded
//! in parallel ([`Preprocess::batch`], [`Preprocess::batches`]). [`stratified_split`] and
//! [`Subset`] carve a validation set out of a training source. [`locate_data_dir`] finds the
//! shipped data (flag, `CONSOLIDATOR_DATA`, `./data`, beside the executable).
//!
//! ```no_run
//! use consolidator::data::{open, Preprocess};
//! let data = open("my_images/".as_ref())?; // my_images/{cat,dog}/*.jpg
//! let (train, val) = data.train_val(0.2, 0)?; // a stratified 20 % validation split
//! let pre = Preprocess::imagenet(224, 224);
//! for batch in pre.batches(train.as_ref(), 32, Some(1), false) {
//!     let (images, labels) = batch?; // images [32, 3, 224, 224]
//! #   let _ = (images, labels, &val);
//! }
//! # Ok::<(), consolidator::Error>(())
//! ```
//!
//! **In memory.** A [`Dataset`] holds images `[N, C, H, W]` as `f32` and one class index per
//! image; it is a [`Source`] too. The transfer suite ([`suite`]) builds its tasks as datasets.
//!
//! - [`image`]: [`Image`], bicubic (PIL-exact), bilinear and area resizing, rotation, pasting.
//! - [`suite`]: the small VTAB-1k transfer suite built from data the backbone never saw.
//! - [`fuzz`]: fuzz entry points for the readers.
//!
//! ```
//! use consolidator::data::Dataset;
//! use consolidator::Tensor;
//! let images = Tensor::new(&[3, 1, 2, 2], (0..12).map(|v| v as f32 / 12.0).collect()).unwrap();
//! let ds = Dataset::new(images, vec![0, 1, 1], 2).unwrap();
//! ds.validate(1, 2, 2, 2).unwrap();
//! assert!(ds.validate(1, 28, 28, 2).is_err());
//! let batches: Vec<_> = ds.batches(2, Some(7), false).collect();
//! assert_eq!(batches.len(), 2);
//! assert_eq!(batches[0].0.shape(), &[2, 1, 2, 2]);
//! assert_eq!(batches[1].1.len(), 1);
//! ```

pub mod decode;
pub mod folder;
/// Fuzz entry points (the bodies of `fuzz/` and `tests/fuzz.rs`). Hidden: for our fuzzers, not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod idx;
pub mod image;
mod open;
pub mod optdigits;
mod preprocess;
mod source;
pub mod suite;
pub mod tensors;

pub use decode::{decode_image, load_image};
pub use folder::ImageFolder;
pub use image::{bicubic_taps, resize_bicubic, resize_bicubic_clamped, resize_bilinear, Image};
pub use open::{
    locate_data_dir, locate_data_dir_in, open, open_idx_dir, DataKind, IdxSource, Opened, TrainVal, DATA_ENV,
};
pub use optdigits::load_optdigits;
pub use preprocess::Preprocess;
pub use source::{labels, split_source, stratified_split, Source, Subset};
pub use suite::{build_task, Task, TaskData};
pub use tensors::{to_tensor_file, Layout, TensorSource};

/// Most classes a dataset may have (a hostile label or class list cannot ask for a larger head).
pub const MAX_CLASSES: usize = 1 << 20;

use crate::{Error, Result, Tensor};
use idx::Idx;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Labelled images.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The images, `[N, C, H, W]`, `f32`.
    pub images: Tensor,
    /// One class index per image, each `< num_classes`.
    pub labels: Vec<usize>,
    /// The number of classes.
    pub num_classes: usize,
}

impl Dataset {
    /// A dataset from images `[N, C, H, W]` and `N` labels, each below `num_classes`.
    pub fn new(images: Tensor, labels: Vec<usize>, num_classes: usize) -> Result<Self> {
        let ds = Dataset { images, labels, num_classes };
        ds.check_consistent()?;
        Ok(ds)
    }

    fn check_consistent(&self) -> Result<()> {
        let [n, _, _, _] = self.images.dims::<4>("Dataset")?;
        if n != self.labels.len() {
            return Err(Error::data(format!("{n} images but {} labels", self.labels.len())));
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l >= self.num_classes) {
            return Err(Error::data(format!(
                "label {l} of example {i} is out of range for {} classes",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        let s = self.images.shape();
        match s {
            [_, c, h, w] => [*c, *h, *w],
            _ => [0, 0, 0],
        }
    }

    /// Checks that the dataset fits a model taking `[channels, height, width]` images and
    /// predicting `num_classes` classes: not empty, images of that size, labels in range.
    pub fn validate(&self, channels: usize, height: usize, width: usize, num_classes: usize) -> Result<()> {
        self.check_consistent()?;
        if self.is_empty() {
            return Err(Error::data("the dataset is empty"));
        }
        let [c, h, w] = self.image_shape();
        if c != channels {
            return Err(Error::data(format!("images have {c} channel(s), the model expects {channels}")));
        }
        if (h, w) != (height, width) {
            return Err(Error::data(format!(
                "images are {h}×{w}, the model expects {height}×{width} (resize the data or build the model for this size)"
            )));
        }
        if self.num_classes > num_classes {
            if let Some((i, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l >= num_classes) {
                return Err(Error::data(format!(
                    "label {l} of example {i} is out of range for a model with {num_classes} classes"
                )));
            }
            return Err(Error::data(format!(
                "the dataset has {} classes, the model predicts {num_classes}",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// `x ← (x − mean) / std` for every pixel.
    pub fn normalize(&mut self, mean: f32, std: f32) -> Result<()> {
        if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
            return Err(Error::invalid(
                "Dataset::normalize",
                format!("needs a finite mean and a positive finite std, got mean {mean}, std {std}"),
            ));
        }
        let inv = 1.0 / std;
        for v in self.images.data_mut() {
            *v = (*v - mean) * inv;
        }
        Ok(())
    }

    /// The examples at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let [c, h, w] = self.image_shape();
        let per = c * h * w;
        let mut data = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::data(format!("subset index {i} is out of range for {} examples", self.len())));
            }
            data.extend_from_slice(&self.images.data()[i * per..(i + 1) * per]);
            labels.push(self.labels[i]);
        }
        Dataset::new(Tensor::new(&[indices.len(), c, h, w], data)?, labels, self.num_classes)
    }

    /// Mini-batches `(images [B, C, H, W], labels)` in order, or shuffled by `shuffle_seed`
    /// (deterministic for a given seed). With `drop_last` a final short batch is skipped.
    ///
    /// # Panics
    /// If `batch_size` is 0 (like [`slice::chunks`]).
    pub fn batches(&self, batch_size: usize, shuffle_seed: Option<u64>, drop_last: bool) -> Batches<'_> {
        assert!(batch_size > 0, "Dataset::batches: batch_size must be > 0");
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(seed) = shuffle_seed {
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        if drop_last {
            order.truncate(self.len() / batch_size * batch_size);
        }
        Batches { ds: self, order, batch_size, next: 0 }
    }
}

/// Iterator over mini-batches (see [`Dataset::batches`]).
pub struct Batches<'a> {
    ds: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let idx = &self.order[self.next..end];
        self.next = end;
        let [c, h, w] = self.ds.image_shape();
        let per = c * h * w;
        let src = self.ds.images.data();
        let mut data = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            data.extend_from_slice(&src[i * per..(i + 1) * per]);
        }
        let labels = idx.iter().map(|&i| self.ds.labels[i]).collect();
        let images =
            Tensor::new(&[idx.len(), c, h, w], data).expect("batch shape matches the copied data by construction");
        Some((images, labels))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// The data directory holding the shipped MNIST test set, optdigits and backbone: what
/// [`locate_data_dir`]`(None)` finds (`$CONSOLIDATOR_DATA`, `./data`, `data/` beside the
/// executable), or `data` when none exists (so the error comes from the file that is missing).
/// Prefer [`locate_data_dir`], which says where it looked; this shim stays for callers that
/// cannot handle an error here.
pub fn shipped_data_dir() -> PathBuf {
    locate_data_dir(None).unwrap_or_else(|_| PathBuf::from("data"))
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists, else an [`Error::Io`] naming both.
fn find_plain_or_gz(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        &plain,
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("neither this file nor {} exists", gz.display())),
    ))
}

/// Loads MNIST from `dir` (`train-images-idx3-ubyte` / `train-labels-idx1-ubyte`, or the `t10k-`
/// files when `train` is false; each plain or `.gz`): images `[N, 1, 28, 28]` in `[0, 1]` (bytes
/// divided by 255), 10 classes.
pub fn load_mnist(dir: impl AsRef<Path>, train: bool) -> Result<Dataset> {
    let dir = dir.as_ref();
    let prefix = if train { "train" } else { "t10k" };
    let images_path = find_plain_or_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_plain_or_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = Idx::load_images(&images_path)?;
    let labels = Idx::load_labels(&labels_path)?;
    mnist_from_idx(images, labels, &images_path, &labels_path)
}

/// Builds an MNIST-style dataset from parsed IDX images `[N, H, W]` and labels `[N]` (labels must
/// be below 10). The paths only name the sources in errors.
pub fn mnist_from_idx(images: Idx, labels: Idx, images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let [n, h, w] = <[usize; 3]>::try_from(images.dims.as_slice())
        .map_err(|_| Error::format(format!("IDX file {}", images_path.display()), "expected images [N, H, W]"))?;
    if labels.dims != [n] {
        return Err(Error::data(format!(
            "{} holds {n} images but {} holds {:?} labels",
            images_path.display(),
            labels_path.display(),
            labels.dims
        )));
    }
    if let Some((i, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(Error::format(
            format!("IDX file {}", labels_path.display()),
            format!("label {l} of example {i} is not a digit 0..=9"),
        ));
    }
    let pixels = images.data.iter().map(|&b| b as f32 / 255.0).collect();
    Dataset::new(Tensor::new(&[n, 1, h, w], pixels)?, labels.data.iter().map(|&l| l as usize).collect(), 10)
}
