//! The tape: the list, in the order they ran, of the operations applied to values that need a
//! gradient.
//!
//! A [`Var`] is a value (a [`Tensor`]) plus, if it needs a gradient, the index of its node on the
//! tape. Every op computes its output eagerly and, only when one of its inputs has a node, pushes
//! a node holding its *backward closure*: given the gradient of the output, it adds the gradients
//! of its inputs into the store (`+=`, so a value used twice gets both contributions).
//! [`Tape::backward`] seeds the loss with 1 and runs the closures from the last node to the first.
//! Nothing else: no graph object, no topological sort (tape order already is one).
//!
//! ```
//! use consolidator::autograd::Tape;
//! use consolidator::Tensor;
//! let tape = Tape::new();
//! let x = tape.var(Tensor::new(&[3], vec![1.0, 2.0, 3.0]).unwrap());
//! let y = x.mul(&x).unwrap().sum().unwrap(); // y = Σ x²
//! let grads = tape.backward(&y).unwrap();
//! assert_eq!(grads.get(&x).unwrap().data(), &[2.0, 4.0, 6.0]); // dy/dx = 2x
//! ```

use crate::{Error, Param, ParamId, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cell::{RefCell, RefMut};
use std::collections::HashMap;

/// A backward closure: receives the gradient of its op's output and adds its inputs' gradients.
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &mut Grads) -> Result<()>>;

/// The tape. Create one per forward pass; it is consumed logically by [`Tape::backward`].
pub struct Tape {
    /// One entry per node: `None` for leaves (inputs, parameters), a closure for ops.
    nodes: RefCell<Vec<Option<(&'static str, BackwardFn)>>>,
    /// Trainable parameters put on this tape, by id, with their leaf node.
    params: RefCell<HashMap<ParamId, usize>>,
    record: bool,
    train: bool,
    rng: RefCell<StdRng>,
    /// Per-op wall time, when profiling (see [`Tape::profiled`]).
    profile: Option<RefCell<Profile>>,
    /// The gradient arriving at each node in the reverse pass, when tracing (see [`Tape::traced`]).
    trace: Option<RefCell<Vec<TraceStep>>>,
}

/// One step of a traced reverse pass: the gradient that arrived at a node, complete (every op
/// that used the node's value comes later on the tape and has already run).
#[derive(Clone, Debug)]
pub struct TraceStep {
    /// The node's index on the tape.
    pub node: usize,
    /// The op's name, or `"leaf"` for an input or a parameter.
    pub op: &'static str,
    /// `∂loss/∂(the node's value)`.
    pub grad: Tensor,
}

/// Wall time per op name: forward (the time since the previous op was recorded, so glue code
/// between ops is charged to the next op) and backward (each closure timed).
#[derive(Debug)]
struct Profile {
    last: std::time::Instant,
    ops: HashMap<&'static str, OpTime>,
}

/// The time one kind of op took on a profiled tape (see [`Tape::profiled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpTime {
    /// Calls recorded.
    pub calls: usize,
    /// Forward seconds.
    pub forward: f64,
    /// Backward seconds.
    pub backward: f64,
}

/// A value on a tape: a tensor and, if it needs a gradient, its node.
#[derive(Clone)]
pub struct Var<'t> {
    tape: &'t Tape,
    value: Tensor,
    node: Option<usize>,
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var(node {:?}, {:?})", self.node, self.value)
    }
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    /// A recording tape in training mode (dropout and drop-path active), RNG seed 0.
    pub fn new() -> Self {
        Tape {
            nodes: RefCell::new(Vec::new()),
            params: RefCell::new(HashMap::new()),
            record: true,
            train: true,
            rng: RefCell::new(StdRng::seed_from_u64(0)),
            profile: None,
            trace: None,
        }
    }
    /// A recording tape in evaluation mode (dropout and drop-path are the identity).
    pub fn eval() -> Self {
        Tape { train: false, ..Tape::new() }
    }
    /// Inference: nothing is recorded, parameters are constants, evaluation mode.
    pub fn inference() -> Self {
        Tape { record: false, train: false, ..Tape::new() }
    }
    /// Reseeds the tape's RNG (dropout, drop-path).
    pub fn with_seed(self, seed: u64) -> Self {
        *self.rng.borrow_mut() = StdRng::seed_from_u64(seed);
        self
    }
    /// Times every op from now on: [`Tape::profile`] gives the forward and backward wall time
    /// per op name. The clock reads cost about a microsecond per op.
    pub fn profiled(mut self) -> Self {
        self.profile = Some(RefCell::new(Profile { last: std::time::Instant::now(), ops: HashMap::new() }));
        self
    }
    /// Time per op name, most expensive (forward + backward) first; empty unless
    /// [`Tape::profiled`].
    pub fn profile(&self) -> Vec<(&'static str, OpTime)> {
        let mut v: Vec<_> =
            self.profile.as_ref().map(|p| p.borrow().ops.iter().map(|(k, t)| (*k, *t)).collect()).unwrap_or_default();
        v.sort_by(|a, b| (b.1.forward + b.1.backward).total_cmp(&(a.1.forward + a.1.backward)));
        v
    }
    /// Keeps, during [`Tape::backward`], a copy of the gradient arriving at every node, for
    /// teaching and debugging ([`Tape::trace`]); it costs a copy per node.
    pub fn traced(mut self) -> Self {
        self.trace = Some(RefCell::new(Vec::new()));
        self
    }
    /// The steps of the reverse pass in the order they ran (last node first); empty unless
    /// [`Tape::traced`].
    pub fn trace(&self) -> Vec<TraceStep> {
        self.trace.as_ref().map(|t| t.borrow().clone()).unwrap_or_default()
    }
    /// The names of the recorded ops, in the order they ran (empty once [`Tape::backward`] has
    /// consumed the tape).
    pub fn ops(&self) -> Vec<&'static str> {
        self.nodes.borrow().iter().filter_map(|n| n.as_ref().map(|(op, _)| *op)).collect()
    }
    /// Training mode: stochastic regularisers are active.
    pub fn is_train(&self) -> bool {
        self.train
    }
    /// Whether ops are recorded at all.
    pub fn is_recording(&self) -> bool {
        self.record
    }
    /// The tape's random number generator.
    pub fn rng(&self) -> RefMut<'_, StdRng> {
        self.rng.borrow_mut()
    }
    /// Number of recorded nodes (leaves and ops).
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }
    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, f: Option<(&'static str, BackwardFn)>) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(f);
        nodes.len() - 1
    }

    /// A value that needs a gradient (a leaf), when recording.
    pub fn var(&self, value: Tensor) -> Var<'_> {
        let node = self.record.then(|| self.push(None));
        Var { tape: self, value, node }
    }
    /// A value that never needs a gradient.
    pub fn constant(&self, value: Tensor) -> Var<'_> {
        Var { tape: self, value, node: None }
    }
    /// A parameter: a leaf if it is trainable and the tape records, a constant otherwise (frozen
    /// parameters get no node, no gradient buffer, and no weight-gradient work downstream).
    /// The same parameter put twice shares one node.
    pub fn param(&self, p: &Param) -> Var<'_> {
        if !(self.record && p.trainable) {
            return self.constant(p.value.clone());
        }
        let mut params = self.params.borrow_mut();
        let node = *params.entry(p.id()).or_insert_with(|| self.push(None));
        Var { tape: self, value: p.value.clone(), node: Some(node) }
    }

    /// Records an op. `value` is its output; `inputs` its inputs; `backward` adds the inputs'
    /// gradients given the output's. Nothing is recorded (and `backward` is dropped) when no
    /// input has a node.
    pub fn op<'t>(
        &'t self,
        op: &'static str,
        value: Tensor,
        inputs: &[&Var<'t>],
        backward: impl FnOnce(&Tensor, &mut Grads) -> Result<()> + 'static,
    ) -> Result<Var<'t>> {
        if inputs.iter().any(|v| !std::ptr::eq(v.tape, self)) {
            return Err(Error::invalid(op, "inputs come from different tapes"));
        }
        if let Some(p) = &self.profile {
            let mut p = p.borrow_mut();
            let now = std::time::Instant::now();
            let dt = now.duration_since(p.last).as_secs_f64();
            p.last = now;
            let t = p.ops.entry(op).or_default();
            t.calls += 1;
            t.forward += dt;
        }
        let node =
            (self.record && inputs.iter().any(|v| v.node.is_some())).then(|| self.push(Some((op, Box::new(backward)))));
        Ok(Var { tape: self, value, node })
    }

    /// Reverse pass from a scalar `loss`: returns the gradients of every leaf that needs one.
    /// The tape's closures are consumed; a second call errors.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        if loss.value.numel() != 1 {
            return Err(Error::bad_shape("backward", loss.shape(), "the loss must have one element"));
        }
        let Some(root) = loss.node else {
            return Err(Error::invalid("backward", "the loss does not depend on any value that needs a gradient"));
        };
        let mut nodes = std::mem::take(&mut *self.nodes.borrow_mut());
        if nodes.get(root).is_none() {
            return Err(Error::invalid("backward", "this tape was already consumed by a backward pass"));
        }
        let mut grads = Grads { slots: Vec::new() };
        grads.slots.resize_with(nodes.len(), || None);
        grads.slots[root] = Some(Tensor::full(loss.shape(), 1.0));
        // One parallel region for the pass: the workers stay ready between the ops' kernels.
        crate::par::region(|| -> Result<()> {
            for i in (0..=root).rev() {
                if let (Some(trace), Some(g)) = (&self.trace, &grads.slots[i]) {
                    let op = nodes[i].as_ref().map_or("leaf", |(op, _)| *op);
                    trace.borrow_mut().push(TraceStep { node: i, op, grad: g.clone() });
                }
                if let Some((op, f)) = nodes[i].take() {
                    // An op node: its gradient is no longer needed once propagated.
                    if let Some(g) = grads.slots[i].take() {
                        let t = self.profile.as_ref().map(|_| std::time::Instant::now());
                        f(&g, &mut grads)?;
                        if let (Some(p), Some(t)) = (&self.profile, t) {
                            p.borrow_mut().ops.entry(op).or_default().backward += t.elapsed().as_secs_f64();
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(Gradients { slots: grads.slots, params: self.params.borrow().clone() })
    }
}

impl<'t> Var<'t> {
    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    /// The tape this value lives on.
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }
    /// The node on the tape, if this value needs a gradient.
    pub fn node(&self) -> Option<usize> {
        self.node
    }
    /// True when a gradient flows to this value.
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }
    /// The same value, cut from the tape (no gradient flows back through it).
    pub fn detach(&self) -> Var<'t> {
        Var { tape: self.tape, value: self.value.clone(), node: None }
    }
    /// Shorthand for `self.tape().backward(self)`.
    pub fn backward(&self) -> Result<Gradients> {
        self.tape.backward(self)
    }
}

/// The gradient store used during the reverse pass, one slot per node.
pub struct Grads {
    slots: Vec<Option<Tensor>>,
}

impl Grads {
    /// Adds `g` into the gradient of `node` (`+=`).
    pub fn add(&mut self, node: usize, g: Tensor) -> Result<()> {
        match &mut self.slots[node] {
            slot @ None => *slot = Some(g),
            Some(acc) => {
                if acc.shape() != g.shape() {
                    return Err(Error::shape("backward accumulate", acc.shape(), g.shape()));
                }
                crate::kernels::elementwise::axpy(1.0, g.data(), acc.data_mut());
            }
        }
        Ok(())
    }
    /// Computes and adds a gradient only when `node` needs one.
    pub fn add_with(&mut self, node: Option<usize>, f: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        match node {
            Some(n) => {
                let g = f()?;
                self.add(n, g)
            }
            None => Ok(()),
        }
    }
}

/// The result of a backward pass: the gradients of leaves and parameters.
pub struct Gradients {
    slots: Vec<Option<Tensor>>,
    params: HashMap<ParamId, usize>,
}

impl Gradients {
    /// The gradient of a leaf `Var` (`None` if it needs none or the loss does not depend on it).
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        v.node.and_then(|n| self.slots.get(n)).and_then(|s| s.as_ref())
    }
    /// The gradient of a parameter (`None` for frozen parameters).
    pub fn param(&self, p: &Param) -> Option<&Tensor> {
        self.params.get(&p.id()).and_then(|&n| self.slots[n].as_ref())
    }
    /// Number of parameters that received a gradient.
    pub fn num_params(&self) -> usize {
        self.params.values().filter(|&&n| self.slots[n].is_some()).count()
    }
}
