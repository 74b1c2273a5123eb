//! Parameters: a tensor with an identity and a `trainable` flag.

use crate::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identity of a parameter: the key of the gradient store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A model parameter. Frozen parameters (`trainable == false`) take no gradient.
#[derive(Clone, Debug)]
pub struct Param {
    id: ParamId,
    /// The current value.
    pub value: Tensor,
    /// Whether optimisers update it (and the tape tracks it).
    pub trainable: bool,
}

impl Param {
    /// A trainable parameter.
    pub fn new(value: Tensor) -> Self {
        Param { id: ParamId(NEXT_ID.fetch_add(1, Ordering::Relaxed)), value, trainable: true }
    }
    /// A frozen parameter.
    pub fn frozen(value: Tensor) -> Self {
        Param { trainable: false, ..Param::new(value) }
    }
    /// Its identity.
    pub fn id(&self) -> ParamId {
        self.id
    }
    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.value.numel()
    }
}
