//! Elementwise arithmetic: `add`, `mul` (same shape). Broadcast variants live here too.

use crate::autograd::Var;
use crate::kernels::elementwise;
use crate::{Error, Result, Tensor};

impl<'t> Var<'t> {
    /// `a + b`, same shapes. Backward: `da = dy`, `db = dy`.
    pub fn add(&self, other: &Var<'t>) -> Result<Var<'t>> {
        if self.shape() != other.shape() {
            return Err(Error::shape("add", self.shape(), other.shape()));
        }
        let mut out = vec![0.0; self.value().numel()];
        elementwise::add(self.value().data(), other.value().data(), &mut out);
        let (an, bn) = (self.node(), other.node());
        let value = Tensor::from_parts(self.shape().to_vec(), out);
        self.tape().op("add", value, &[self, other], move |dy, g| {
            g.add_with(an, || Ok(dy.clone()))?;
            g.add_with(bn, || Ok(dy.clone()))
        })
    }

    /// `a ⊙ b`, same shapes. Backward: `da = dy ⊙ b`, `db = dy ⊙ a`.
    pub fn mul(&self, other: &Var<'t>) -> Result<Var<'t>> {
        if self.shape() != other.shape() {
            return Err(Error::shape("mul", self.shape(), other.shape()));
        }
        let mut out = vec![0.0; self.value().numel()];
        elementwise::mul(self.value().data(), other.value().data(), &mut out);
        let (an, bn) = (self.node(), other.node());
        let (a, b) = (self.value().clone(), other.value().clone());
        let value = Tensor::from_parts(self.shape().to_vec(), out);
        self.tape().op("mul", value, &[self, other], move |dy, g| {
            let prod = |t: &Tensor| {
                let mut o = vec![0.0; t.numel()];
                elementwise::mul(dy.data(), t.data(), &mut o);
                Ok(Tensor::from_parts(t.shape().to_vec(), o))
            };
            g.add_with(an, || prod(&b))?;
            g.add_with(bn, || prod(&a))
        })
    }
}
