//! [`Preprocess`]: from a decoded [`Image`] to the model's input — channel conversion, bicubic
//! resize, normalisation — and batches of a [`Source`] decoded in parallel.
//!
//! For each image, in this order:
//!
//! 1. **channels** ([`Image::to_channels`]): gray → RGB by replication, RGB → gray by ITU-R 601
//!    luma (`0.299 R + 0.587 G + 0.114 B`, PIL's `convert("L")`), alpha dropped;
//! 2. **size**: resized to exactly `height × width` by
//!    [`crate::data::image::resize_bicubic_clamped`] (PIL / torchvision
//!    `Resize(..., BICUBIC, antialias=True)`), skipped when the size already matches. Each pass
//!    is **clamped to `[0, 1]`**, as PIL clamps each pass of its 8-bit resize (bicubic overshoots
//!    near sharp edges; torchvision on float tensors does not clamp) — but not rounded to 8 bits,
//!    so on 8-bit images the result is within one level of PIL's;
//! 3. **normalisation**: `(v − mean[c]) · (1 / std[c])`, exactly the arithmetic of
//!    [`crate::data::Dataset::normalize`] (so a [`crate::data::Dataset`] preprocessed here is
//!    bit-identical to one normalised there).
//!
//! ```
//! use consolidator::data::{Dataset, Preprocess};
//! use consolidator::Tensor;
//! let ds = Dataset::new(Tensor::full(&[4, 1, 8, 8], 0.5), vec![0, 1, 0, 1], 2).unwrap();
//! let pre = Preprocess::new(3, 16, 16, vec![0.5], vec![0.25]).unwrap();
//! let (x, y) = pre.batch(&ds, &[3, 0]).unwrap();
//! assert_eq!(x.shape(), &[2, 3, 16, 16]);
//! assert_eq!(y, vec![1, 0]);
//! assert!(x.data().iter().all(|&v| v == 0.0));
//! ```

use super::image::Image;
use super::source::{out_of_range, Source};
use super::Dataset;
use crate::{Error, Result, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Mutex;

/// What a model expects of its input images (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Channels of the model's input (1 or 3).
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Per-channel mean (`channels` values, or 1 for all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (`channels` values, or 1 for all channels).
    pub std: Vec<f32>,
}

impl Preprocess {
    /// A validated preprocessing (see [`Preprocess::validate`]).
    pub fn new(channels: usize, height: usize, width: usize, mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let p = Preprocess { channels, height, width, mean, std };
        p.validate()?;
        Ok(p)
    }

    /// ImageNet statistics (timm's and torchvision's `IMAGENET_DEFAULT_MEAN/STD`), RGB, `h × w`.
    pub fn imagenet(height: usize, width: usize) -> Self {
        Preprocess { channels: 3, height, width, mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// Our MNIST backbone (`vit_mnist_tiny`): gray 28×28, mean 0.1307, std 0.3081 (the MNIST
    /// training set's pixel statistics).
    pub fn mnist() -> Self {
        Preprocess { channels: 1, height: 28, width: 28, mean: vec![0.1307], std: vec![0.3081] }
    }

    /// The output shape of one image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Checks the fields: 1 or 3 channels, positive sizes, `mean` and `std` of length `channels`
    /// (or 1), finite means, finite positive standard deviations.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Error::invalid("Preprocess", msg);
        if !matches!(self.channels, 1 | 3) {
            return Err(fail(format!("the model input must have 1 or 3 channels, got {}", self.channels)));
        }
        if self.height == 0 || self.width == 0 {
            return Err(fail(format!("the input size {}×{} must be positive", self.height, self.width)));
        }
        if crate::tensor::checked_numel(&[self.channels, self.height, self.width]).is_none_or(|n| n > 1 << 31) {
            return Err(fail(format!("the input size {}×{} is too large", self.height, self.width)));
        }
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != self.channels && v.len() != 1 {
                return Err(fail(format!(
                    "{name} has {} values for {} channels (give 1 or {0})",
                    v.len(),
                    self.channels
                )));
            }
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(fail(format!("the mean must be finite, got {m}")));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(fail(format!("the std must be positive and finite, got {s}")));
        }
        Ok(())
    }

    /// One image → `channels × height × width` normalised values (see the module docs).
    pub fn apply(&self, img: &Image) -> Result<Vec<f32>> {
        self.validate()?;
        let img = img.to_channels(self.channels)?;
        let mut img = if (img.height, img.width) == (self.height, self.width) {
            img
        } else {
            img.resize_bicubic_clamped(self.height, self.width)?
        };
        let per = self.height * self.width;
        for (c, plane) in img.data.chunks_exact_mut(per).enumerate() {
            let mean = self.mean[if self.mean.len() == 1 { 0 } else { c }];
            let inv = 1.0 / self.std[if self.std.len() == 1 { 0 } else { c }];
            for v in plane {
                *v = (*v - mean) * inv;
            }
        }
        Ok(img.data)
    }

    /// Examples `indices` of `src` decoded and preprocessed: images `[B, C, H, W]` and labels.
    /// Decoding runs on the crate's worker threads ([`crate::par`]); the result does not depend
    /// on their number. An error names the example ([`Source::describe`]); with several bad
    /// examples, the first in `indices` order is reported.
    pub fn batch(&self, src: &dyn Source, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        self.validate()?;
        let n = src.len();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(out_of_range(i, n, "Preprocess::batch"));
        }
        let per = self.channels * self.height * self.width;
        let total = indices
            .len()
            .checked_mul(per)
            .ok_or_else(|| Error::invalid("Preprocess::batch", "the batch is too large"))?;
        let mut data = vec![0.0f32; total];
        let errors: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
        if per > 0 {
            crate::par::for_each_chunk_mut(&mut data, per, |k, out| {
                let i = indices[k];
                let result = src
                    .image(i)
                    .and_then(|img| self.apply(&img).map_err(|e| Error::data(format!("{}: {e}", src.describe(i)))));
                match result {
                    Ok(v) => out.copy_from_slice(&v),
                    Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push((k, e)),
                }
            });
        }
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        if !errors.is_empty() {
            errors.sort_by_key(|(k, _)| *k);
            return Err(errors.swap_remove(0).1);
        }
        let labels = indices.iter().map(|&i| src.label(i)).collect();
        Ok((Tensor::new(&[indices.len(), self.channels, self.height, self.width], data)?, labels))
    }

    /// Mini-batches of `src` (see [`Preprocess::batch`]) in the order of
    /// [`Dataset::batches`]: `0..len`, or shuffled by `shuffle_seed` with the same generator, so
    /// a source and a dataset of the same examples give the same batches.
    ///
    /// # Panics
    /// If `batch_size` is 0 (like [`Dataset::batches`]).
    pub fn batches<'a>(
        &'a self,
        src: &'a dyn Source,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        drop_last: bool,
    ) -> impl ExactSizeIterator<Item = Result<(Tensor, Vec<usize>)>> + 'a {
        assert!(batch_size > 0, "Preprocess::batches: batch_size must be > 0");
        let mut order: Vec<usize> = (0..src.len()).collect();
        if let Some(seed) = shuffle_seed {
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        if drop_last {
            order.truncate(src.len() / batch_size * batch_size);
        }
        let n = order.len().div_ceil(batch_size);
        (0..n).map(move |b| {
            let end = ((b + 1) * batch_size).min(order.len());
            self.batch(src, &order[b * batch_size..end])
        })
    }

    /// Every example of `src` preprocessed into an in-memory [`Dataset`] (for small data: it
    /// holds all the pixels), decoded in chunks of 256 examples.
    pub fn materialize(&self, src: &dyn Source) -> Result<Dataset> {
        self.validate()?;
        let n = src.len();
        let per = self.channels * self.height * self.width;
        let total = n.checked_mul(per).filter(|&t| t <= isize::MAX as usize / 4).ok_or_else(|| {
            Error::invalid("Preprocess::materialize", format!("{n} images of {per} values do not fit in memory"))
        })?;
        let mut data = Vec::with_capacity(total);
        let mut labels = Vec::with_capacity(n);
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(256) {
            let (x, y) = self.batch(src, chunk)?;
            data.extend_from_slice(x.data());
            labels.extend(y);
        }
        Dataset::new(Tensor::new(&[n, self.channels, self.height, self.width], data)?, labels, src.num_classes())
    }
}
