//! [`Source`]: labelled examples decoded on demand, so a folder of 100 000 images costs the
//! memory of its file list, not of its pixels. [`Subset`] is a view of some of a source's
//! examples; [`stratified_split`] draws a validation set per class.
//!
//! Every reader of this module implements [`Source`] (image folders, tensor files, IDX
//! directories, optdigits files), and so does the in-memory [`Dataset`]. A batch is made by
//! [`crate::data::Preprocess::batch`], which decodes only the examples it is asked for.
//!
//! ```
//! use consolidator::data::{stratified_split, Dataset, Source, Subset};
//! use consolidator::Tensor;
//! use std::sync::Arc;
//! let labels = vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1];
//! let ds = Dataset::new(Tensor::zeros(&[10, 1, 2, 2]), labels.clone(), 2).unwrap();
//! let (train, val) = stratified_split(&labels, 2, 0.2, 7).unwrap();
//! assert_eq!((train.len(), val.len()), (8, 2));
//! let val = Subset::new(Arc::new(ds), val).unwrap();
//! assert_eq!((val.len(), val.label(0), val.label(1)), (2, 0, 1));
//! assert_eq!(val.image(1).unwrap().data, vec![0.0; 4]);
//! ```

use super::image::Image;
use super::Dataset;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Arc;

/// Labelled examples, decoded on demand.
///
/// `label`, `image` and `describe` take an index below [`Source::len`]; `label` and `describe`
/// may panic past it (as slice indexing does), `image` returns an error.
pub trait Source: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes (every label is below it).
    fn num_classes(&self) -> usize;
    /// The class names, `num_classes` of them; empty when the source has no names.
    fn class_names(&self) -> Vec<String>;
    /// The class of example `i`.
    fn label(&self, i: usize) -> usize;
    /// Example `i`, decoded (values in `[0, 1]`). Errors name the example ([`Source::describe`]).
    fn image(&self, i: usize) -> Result<Image>;
    /// What example `i` is, for messages: a file path, `file.safetensors: example 17`.
    fn describe(&self, i: usize) -> String;
}

/// Every label of `src`, in order.
pub fn labels(src: &dyn Source) -> Vec<usize> {
    (0..src.len()).map(|i| src.label(i)).collect()
}

/// An index past the end, as an error naming the source.
pub(crate) fn out_of_range(i: usize, len: usize, what: &str) -> Error {
    Error::data(format!("{what}: example {i} is out of range for {len} examples"))
}

impl Source for Dataset {
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
    /// A copy of image `i` (`[C, H, W]`); a dataset holding normalised values returns them as
    /// they are.
    fn image(&self, i: usize) -> Result<Image> {
        let [c, h, w] = self.image_shape();
        let per = c * h * w;
        let n = Source::len(self);
        let data = (i < n)
            .then(|| self.images.data().get(i * per..(i + 1) * per))
            .flatten()
            .ok_or_else(|| out_of_range(i, n, "dataset"))?;
        Ok(Image { channels: c, height: h, width: w, data: data.to_vec() })
    }
    fn describe(&self, i: usize) -> String {
        format!("example {i}")
    }
}

/// Some examples of a source, in the given order (repeats allowed).
#[derive(Clone)]
pub struct Subset {
    /// The source.
    pub source: Arc<dyn Source>,
    /// The chosen examples' indices into `source`.
    pub indices: Vec<usize>,
}

impl Subset {
    /// A view of `indices` of `source`; every index must be in range.
    pub fn new(source: Arc<dyn Source>, indices: Vec<usize>) -> Result<Subset> {
        let n = source.len();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::data(format!("subset index {i} is out of range for {n} examples")));
        }
        Ok(Subset { source, indices })
    }
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subset({} of {} examples)", self.indices.len(), self.source.len())
    }
}

impl Source for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn num_classes(&self) -> usize {
        self.source.num_classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.source.class_names()
    }
    fn label(&self, i: usize) -> usize {
        self.source.label(self.indices[i])
    }
    fn image(&self, i: usize) -> Result<Image> {
        let &j = self.indices.get(i).ok_or_else(|| out_of_range(i, self.indices.len(), "subset"))?;
        self.source.image(j)
    }
    fn describe(&self, i: usize) -> String {
        self.source.describe(self.indices[i])
    }
}

/// Splits example indices `0..labels.len()` into `(train, val)`, class by class: each class with
/// `n` examples gives `round(n · val_fraction)` of them (a seeded random choice) to validation,
/// but never its last one, so every class keeps at least one training example. Both lists are
/// sorted. Deterministic for a given seed.
///
/// Errors: `val_fraction` outside `[0, 1)`; a label `≥ num_classes`; a class with no example at
/// all (it could not be trained); a positive fraction that leaves the validation set empty
/// (every class has a single example, or the fraction is tiny).
pub fn stratified_split(
    labels: &[usize],
    num_classes: usize,
    val_fraction: f32,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let op = "stratified_split";
    if !(val_fraction.is_finite() && (0.0..1.0).contains(&val_fraction)) {
        return Err(Error::invalid(op, format!("the validation fraction must be in [0, 1), got {val_fraction}")));
    }
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        per_class
            .get_mut(l)
            .ok_or_else(|| Error::data(format!("label {l} of example {i} is out of range for {num_classes} classes")))?
            .push(i);
    }
    if let Some(c) = per_class.iter().position(Vec::is_empty) {
        return Err(Error::data(format!(
            "class {c} has no examples, so it cannot keep a training example ({num_classes} classes, {} examples)",
            labels.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut members in per_class {
        let n = members.len();
        let n_val = ((n as f64 * val_fraction as f64).round() as usize).min(n - 1);
        members.shuffle(&mut rng);
        val.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    if val_fraction > 0.0 && val.is_empty() {
        return Err(Error::data(format!(
            "a validation fraction of {val_fraction} leaves no validation example ({} examples in {num_classes} classes; \
             every class keeps at least one training example)",
            labels.len()
        )));
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

/// [`stratified_split`] of a whole source into two [`Subset`]s `(train, val)`.
pub fn split_source(source: Arc<dyn Source>, val_fraction: f32, seed: u64) -> Result<(Subset, Subset)> {
    let (train, val) = stratified_split(&labels(source.as_ref()), source.num_classes(), val_fraction, seed)?;
    Ok((Subset { source: source.clone(), indices: train }, Subset { source, indices: val }))
}
