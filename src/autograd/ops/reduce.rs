//! Reductions: `sum` (to a scalar).

use crate::autograd::Var;
use crate::kernels::elementwise;
use crate::{Result, Tensor};

impl<'t> Var<'t> {
    /// Sum of all elements, a scalar. Backward: `dx = dy` broadcast.
    pub fn sum(&self) -> Result<Var<'t>> {
        let s = elementwise::sum(self.value().data());
        let (xn, shape) = (self.node(), self.shape().to_vec());
        self.tape()
            .op("sum", Tensor::scalar(s), &[self], move |dy, g| {
                g.add_with(xn, || Ok(Tensor::full(&shape, dy.data()[0])))
            })
    }
}
