//! `Tensor`: a contiguous, row-major `f32` array with a shape.
//!
//! The storage is reference counted, so cloning a tensor, reshaping it or handing it to the
//! autograd tape costs no copy; writing through [`Tensor::data_mut`] copies only when the storage
//! is shared (copy on write). Views that would need strides (transposes, attention heads) are not
//! materialised: the kernels take strides instead (see `kernels::gemm`).
//!
//! Shape letters used across the crate: `B` batch, `T` tokens, `C` channels, `H` heads,
//! `D` head width, `G` groups, `I`/`O` a linear layer's input/output width.
//!
//! ```
//! use consolidator::Tensor;
//! let t = Tensor::new(&[2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
//! assert_eq!(t.shape(), &[2, 3]);
//! let r = t.reshape(&[3, 2]).unwrap();
//! assert_eq!(r.data()[2], 3.0);
//! assert!(t.reshape(&[4, 2]).is_err());
//! ```

use crate::{Error, Result};
use rand::Rng;
use std::any::Any;
use std::sync::{Arc, Mutex};

/// A contiguous row-major `f32` tensor.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<Storage>,
}

/// Values derived from a storage's contents, by key (see [`Tensor::derived`]).
type Derived = Mutex<Vec<(u64, Arc<dyn Any + Send + Sync>)>>;

/// The values, and what was derived from them (e.g. a frozen weight's packed GEMM panels),
/// which every write through [`Tensor::data_mut`] forgets.
#[derive(Default)]
struct Storage {
    values: Vec<f32>,
    derived: Derived,
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        Storage { values: self.values.clone(), derived: Derived::default() }
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.data.values == other.data.values
    }
}

fn storage(values: Vec<f32>) -> Arc<Storage> {
    Arc::new(Storage { values, derived: Derived::default() })
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: Vec<f32> = self.data.values.iter().take(8).copied().collect();
        write!(f, "Tensor{:?} {:?}{}", self.shape, head, if self.numel() > 8 { "…" } else { "" })
    }
}

/// Number of elements of a shape, or an error if the product overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// A tensor from a shape and its row-major data; the lengths must agree.
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        match checked_numel(shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape: shape.to_vec(), data: storage(data) }),
            _ => Err(Error::bad_shape(
                "Tensor::new",
                shape,
                format!("the shape does not hold the {} values given", data.len()),
            )),
        }
    }

    /// Internal constructor for kernels whose output length is correct by construction.
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(checked_numel(&shape), Some(data.len()), "Tensor::from_parts {shape:?}");
        Tensor { shape, data: storage(data) }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        let n = checked_numel(shape).expect("Tensor::full: shape product overflows");
        Tensor::from_parts(shape.to_vec(), vec![value; n])
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor::full(shape, 0.0)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(v: f32) -> Self {
        Tensor::from_parts(vec![], vec![v])
    }

    /// Uniform values in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Self {
        let n = checked_numel(shape).expect("Tensor::rand_uniform: shape product overflows");
        Tensor::from_parts(shape.to_vec(), (0..n).map(|_| rng.gen_range(lo..hi)).collect())
    }

    /// Normal values with mean 0 and standard deviation `std` (Box–Muller).
    pub fn randn(shape: &[usize], std: f32, rng: &mut impl Rng) -> Self {
        let n = checked_numel(shape).expect("Tensor::randn: shape product overflows");
        Tensor::from_parts(shape.to_vec(), (0..n).map(|_| std * normal(rng)).collect())
    }

    /// Truncated normal: normal values with standard deviation `std`, redrawn outside ±2·std (timm's
    /// `trunc_normal_(std=…)` convention for ViT weights).
    pub fn trunc_normal(shape: &[usize], std: f32, rng: &mut impl Rng) -> Self {
        let n = checked_numel(shape).expect("Tensor::trunc_normal: shape product overflows");
        let draw = |rng: &mut _| loop {
            let z = normal(rng);
            if z.abs() <= 2.0 {
                return std * z;
            }
        };
        Tensor::from_parts(shape.to_vec(), (0..n).map(|_| draw(rng)).collect())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.values.len()
    }
    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data.values
    }
    /// Mutable values; copies the storage first if it is shared. Forgets what was derived from
    /// the values ([`Tensor::derived`]).
    pub fn data_mut(&mut self) -> &mut [f32] {
        let s = Arc::make_mut(&mut self.data);
        s.derived.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        s.values.as_mut_slice()
    }
    /// The values as an owned vector (no copy when the storage is not shared).
    pub fn into_vec(self) -> Vec<f32> {
        Arc::try_unwrap(self.data).map(|s| s.values).unwrap_or_else(|a| a.values.clone())
    }
    /// A value computed from this tensor's values by `make`, once: kept with the storage (shared
    /// by clones and reshapes) under `key` until the values change through [`Tensor::data_mut`]
    /// or the storage is freed. The GEMM keeps a frozen weight's packed panels this way.
    pub fn derived<T: Any + Send + Sync>(&self, key: u64, make: impl FnOnce(&[f32]) -> T) -> Arc<T> {
        let lock = || self.data.derived.lock().unwrap_or_else(|e| e.into_inner());
        let found = lock().iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        if let Some(v) = found.and_then(|v| v.downcast::<T>().ok()) {
            return v;
        }
        let v = Arc::new(make(self.data()));
        let mut d = lock();
        d.retain(|(k, _)| *k != key);
        d.push((key, v.clone()));
        v
    }
    /// True when two tensors share one storage (used by tests of the no-copy paths).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// The same values under another shape with the same number of elements (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel(shape) != Some(self.numel()) {
            return Err(Error::shape("reshape", &self.shape, shape));
        }
        Ok(Tensor { shape: shape.to_vec(), data: self.data.clone() })
    }

    /// The last dimension and the product of the others: a `[.., n]` tensor seen as `rows × n`.
    pub fn rows_cols(&self) -> (usize, usize) {
        let n = self.shape.last().copied().unwrap_or(1);
        (self.numel().checked_div(n).unwrap_or(0), n)
    }

    /// The dimensions of a rank-`N` tensor, or an error naming `op`.
    pub fn dims<const N: usize>(&self, op: &'static str) -> Result<[usize; N]> {
        <[usize; N]>::try_from(self.shape.as_slice())
            .map_err(|_| Error::bad_shape(op, &self.shape, format!("expected a tensor of rank {N}")))
    }

    /// Errors unless the shape equals `expected`.
    pub fn expect_shape(&self, op: &'static str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::shape(op, expected, &self.shape));
        }
        Ok(())
    }

    /// Largest absolute elementwise difference (∞ if the shapes differ).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        if self.shape != other.shape {
            return f32::INFINITY;
        }
        self.data().iter().zip(other.data()).fold(0.0, |m, (a, b)| m.max((a - b).abs()))
    }

    /// Largest absolute value.
    pub fn max_abs(&self) -> f32 {
        self.data().iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.data().iter().all(|v| v.is_finite())
    }
}

/// One standard normal draw (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
