//! The transfer suite: a small VTAB-1k built from data the backbone never saw.
//!
//! The backbone is pre-trained on the MNIST *training* set (28×28 grayscale). Each task here gives
//! 1000 labelled examples (800 train + 200 val) and a held-out test set, every image 28×28×1 in
//! `[0, 1]`, all built deterministically from a seed:
//!
//! | task | source | label | classes |
//! |---|---|---|---|
//! | `optdigits` | the real UCI optdigits 8×8 digits (other writers), bilinear-resized to 28×28 | digit | 10 |
//! | `orientation` | an MNIST test digit rotated by k·90° counter-clockwise | k | 4 |
//! | `location` | an MNIST test digit area-shrunk to 12×12, placed with its top-left corner at (8r, 8c), r, c ∈ {0, 1, 2}: a 3×3 grid of overlapping 12×12 windows with stride 8 (2·8 + 12 = 28, so 9 cells fit exactly) | 3r + c | 9 |
//! | `counting` | 1–4 MNIST test digits area-shrunk to 10×10 at distinct cells of a 3×3 grid with stride 9 (2·9 + 10 = 28), merged by maximum | count − 1 | 4 |
//! | `shift` | an inverted MNIST test digit (1 − x) plus Gaussian noise σ = 0.2, clamped to [0, 1] | digit | 10 |
//!
//! Disjoint sources: the MNIST test set (10,000 images) is split in two halves by index; train and
//! val examples use only images of the first half, test examples only images of the second, and
//! within a split every source image is used at most once. optdigits' 1797 rows are permuted by the
//! seed: 800 train, 200 val, the remaining 797 test. The structured tasks have balanced labels over
//! the 1000 train+val examples and over the test set. [`TaskData::sources`] records which source
//! images made each example.
//!
//! ```no_run
//! use consolidator::data::{load_mnist, load_optdigits, locate_data_dir, suite::{build_task, Task}};
//! let dir = locate_data_dir(None).unwrap();
//! let mnist_test = load_mnist(dir.join("mnist"), false).unwrap();
//! let optdigits = load_optdigits(dir.join("optdigits/optdigits-test.csv.gz")).unwrap();
//! for task in Task::all() {
//!     let data = build_task(task, &mnist_test, &optdigits, 0).unwrap();
//!     assert_eq!(data.train.len(), 800);
//!     println!("{}: {}", task.name(), data.description);
//! }
//! ```

use super::image::{paste_max, resize_area, resize_bilinear, rotate90};
use super::Dataset;
use crate::tensor::normal;
use crate::{Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::fmt;
use std::str::FromStr;

/// Side of every suite image.
pub const IMAGE_SIZE: usize = 28;
/// Training examples per task.
pub const TRAIN_SIZE: usize = 800;
/// Validation examples per task.
pub const VAL_SIZE: usize = 200;
/// Test examples per structured task (optdigits has 797).
pub const TEST_SIZE: usize = 1000;
/// Standard deviation of the additive noise of the `shift` task.
pub const SHIFT_NOISE_STD: f32 = 0.2;

/// One task of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// Real optdigits 8×8 digits resized to 28×28; label = digit.
    Optdigits,
    /// MNIST digits rotated by k·90°; label = k.
    Orientation,
    /// A shrunk digit in one of 9 grid cells; label = cell.
    Location,
    /// 1–4 shrunk digits; label = count − 1.
    Counting,
    /// Inverted, noisy digits (a domain shift); label = digit.
    Shift,
}

impl Task {
    /// Every task, in a fixed order.
    pub fn all() -> [Task; 5] {
        [Task::Optdigits, Task::Orientation, Task::Location, Task::Counting, Task::Shift]
    }

    /// The task's name (`optdigits`, `orientation`, `location`, `counting`, `shift`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Optdigits => "optdigits",
            Task::Orientation => "orientation",
            Task::Location => "location",
            Task::Counting => "counting",
            Task::Shift => "shift",
        }
    }

    /// The number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Task::Optdigits | Task::Shift => 10,
            Task::Orientation | Task::Counting => 4,
            Task::Location => 9,
        }
    }

    /// A one-line description of how the task is built.
    pub fn description(self) -> &'static str {
        match self {
            Task::Optdigits => "optdigits: real UCI 8x8 handwritten digits (writers unseen by the backbone), bilinear-resized to 28x28; label = digit (10 classes)",
            Task::Orientation => "orientation: MNIST test digit rotated by k*90 degrees counter-clockwise; label = k (4 classes)",
            Task::Location => "location: MNIST test digit shrunk to 12x12 at one of 3x3 positions (stride 8) on a 28x28 canvas; label = 3*row + col (9 classes)",
            Task::Counting => "counting: 1-4 MNIST test digits shrunk to 10x10 at distinct cells of a 3x3 grid (stride 9); label = count - 1 (4 classes)",
            Task::Shift => "shift: inverted MNIST test digit (1 - x) with additive Gaussian noise sigma 0.2, clamped to [0,1]; label = digit (10 classes)",
        }
    }

    fn index(self) -> u64 {
        Task::all().iter().position(|&t| t == self).unwrap_or(0) as u64
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        Task::all().into_iter().find(|t| t.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            Error::invalid(
                "Task::from_str",
                format!("unknown task {s:?}; expected one of: {}", Task::all().map(Task::name).join(", ")),
            )
        })
    }
}

/// Which source images made each example: indices into the MNIST test set, or into the optdigits
/// rows for the `optdigits` task (one list per example; `counting` lists several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// Sources of the training examples.
    pub train: Vec<Vec<usize>>,
    /// Sources of the validation examples.
    pub val: Vec<Vec<usize>>,
    /// Sources of the test examples.
    pub test: Vec<Vec<usize>>,
}

/// A built task: 800 train, 200 val, and the test set.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskData {
    /// 800 training examples.
    pub train: Dataset,
    /// 200 validation examples.
    pub val: Dataset,
    /// The test examples (1000; 797 for optdigits).
    pub test: Dataset,
    /// How the task was built.
    pub description: String,
    /// The source images of every example (for audits of train/test disjointness).
    pub sources: Sources,
}

/// Builds `task` deterministically from `seed`. `mnist_test` must be the MNIST test set
/// (`[N, 1, 28, 28]`, N ≥ 10,000 for the full suite; at least enough images for each half),
/// `optdigits` the optdigits rows (`[M, 1, 8, 8]`, M > 1000).
pub fn build_task(task: Task, mnist_test: &Dataset, optdigits: &Dataset, seed: u64) -> Result<TaskData> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(task.index() + 1));
    let (train_val, test) = match task {
        Task::Optdigits => build_optdigits(optdigits, &mut rng)?,
        _ => {
            if mnist_test.image_shape() != [1, IMAGE_SIZE, IMAGE_SIZE] || mnist_test.num_classes != 10 {
                return Err(Error::data(format!(
                    "task {task}: the MNIST test set must be [N, 1, 28, 28] with 10 classes, got images {:?} and {} classes",
                    mnist_test.images.shape(),
                    mnist_test.num_classes
                )));
            }
            let n = mnist_test.len();
            let half = n / 2;
            let mut train_pool: Vec<usize> = (0..half).collect();
            let mut test_pool: Vec<usize> = (half..n).collect();
            train_pool.shuffle(&mut rng);
            test_pool.shuffle(&mut rng);
            let train_val = synth(task, mnist_test, &train_pool, TRAIN_SIZE + VAL_SIZE, &mut rng)?;
            let test = synth(task, mnist_test, &test_pool, TEST_SIZE, &mut rng)?;
            (train_val, test)
        }
    };
    let classes = task.num_classes();
    let split = |part: &Part, range: std::ops::Range<usize>| -> Result<(Dataset, Vec<Vec<usize>>)> {
        let per = IMAGE_SIZE * IMAGE_SIZE;
        let n = range.len();
        let images =
            Tensor::new(&[n, 1, IMAGE_SIZE, IMAGE_SIZE], part.pixels[range.start * per..range.end * per].to_vec())?;
        Ok((Dataset::new(images, part.labels[range.clone()].to_vec(), classes)?, part.sources[range].to_vec()))
    };
    let (train, train_src) = split(&train_val, 0..TRAIN_SIZE)?;
    let (val, val_src) = split(&train_val, TRAIN_SIZE..TRAIN_SIZE + VAL_SIZE)?;
    let (test, test_src) = split(&test, 0..test.labels.len())?;
    Ok(TaskData {
        train,
        val,
        test,
        description: format!("{} (seed {seed})", task.description()),
        sources: Sources { train: train_src, val: val_src, test: test_src },
    })
}

/// Examples under construction: 28×28 images, labels, sources.
struct Part {
    pixels: Vec<f32>,
    labels: Vec<usize>,
    sources: Vec<Vec<usize>>,
}

fn build_optdigits(optdigits: &Dataset, rng: &mut StdRng) -> Result<(Part, Part)> {
    if optdigits.image_shape() != [1, 8, 8] || optdigits.num_classes != 10 {
        return Err(Error::data(format!(
            "task optdigits: the optdigits rows must be [M, 1, 8, 8] with 10 classes, got images {:?} and {} classes",
            optdigits.images.shape(),
            optdigits.num_classes
        )));
    }
    let m = optdigits.len();
    let need = TRAIN_SIZE + VAL_SIZE;
    if m <= need {
        return Err(Error::data(format!(
            "task optdigits: needs more than {need} rows (train + val + a test set), got {m}"
        )));
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.shuffle(rng);
    let make = |idx: &[usize]| -> Result<Part> {
        let mut part = Part {
            pixels: Vec::with_capacity(idx.len() * IMAGE_SIZE * IMAGE_SIZE),
            labels: Vec::with_capacity(idx.len()),
            sources: Vec::with_capacity(idx.len()),
        };
        for &i in idx {
            let src = &optdigits.images.data()[i * 64..(i + 1) * 64];
            let img = resize_bilinear(src, 8, 8, IMAGE_SIZE, IMAGE_SIZE)?;
            part.pixels.extend(img.iter().map(|v| v.clamp(0.0, 1.0)));
            part.labels.push(optdigits.labels[i]);
            part.sources.push(vec![i]);
        }
        Ok(part)
    };
    Ok((make(&order[..need])?, make(&order[need..])?))
}

/// Builds `n` examples of a structured task, consuming source images from `pool` in order.
fn synth(task: Task, mnist: &Dataset, pool: &[usize], n: usize, rng: &mut StdRng) -> Result<Part> {
    const S: usize = IMAGE_SIZE;
    let per = S * S;
    let image = |i: usize| &mnist.images.data()[i * per..(i + 1) * per];
    // Balanced labels for the structured tasks, in random order.
    let classes = task.num_classes();
    let mut balanced: Vec<usize> = (0..n).map(|i| i % classes).collect();
    balanced.shuffle(rng);

    let mut part =
        Part { pixels: Vec::with_capacity(n * per), labels: Vec::with_capacity(n), sources: Vec::with_capacity(n) };
    let mut next = 0usize;
    let mut take = |k: usize| -> Result<Vec<usize>> {
        let got = pool.get(next..next + k).ok_or_else(|| {
            Error::data(format!(
                "task {task}: {} source images are not enough for {n} examples (use the full 10,000-image MNIST test set)",
                pool.len()
            ))
        })?;
        next += k;
        Ok(got.to_vec())
    };
    for &label in &balanced {
        let (img, label, src) = match task {
            Task::Orientation => {
                let src = take(1)?;
                (rotate90(image(src[0]), S, label), label, src)
            }
            Task::Location => {
                let src = take(1)?;
                let small = resize_area(image(src[0]), S, S, 12, 12)?;
                let mut canvas = vec![0.0; per];
                paste_max(&mut canvas, S, &small, 12, 8 * (label / 3), 8 * (label % 3));
                (canvas, label, src)
            }
            Task::Counting => {
                let count = label + 1;
                let src = take(count)?;
                let cells = rand::seq::index::sample(rng, 9, count);
                let mut canvas = vec![0.0; per];
                for (&s, cell) in src.iter().zip(cells.iter()) {
                    let small = resize_area(image(s), S, S, 10, 10)?;
                    paste_max(&mut canvas, S, &small, 10, 9 * (cell / 3), 9 * (cell % 3));
                }
                (canvas, label, src)
            }
            Task::Shift => {
                let src = take(1)?;
                let img =
                    image(src[0]).iter().map(|&x| (1.0 - x + SHIFT_NOISE_STD * normal(rng)).clamp(0.0, 1.0)).collect();
                (img, mnist.labels[src[0]], src)
            }
            Task::Optdigits => unreachable!("optdigits is built by build_optdigits"),
        };
        // Resizing is a convex combination, but rounding can step a hair outside [0, 1].
        part.pixels.extend(img.iter().map(|v| v.clamp(0.0, 1.0)));
        part.labels.push(label);
        part.sources.push(src);
    }
    Ok(part)
}
