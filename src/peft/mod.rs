//! Parameter-efficient methods, all on the same engine: the consolidator and the baselines
//! people compare it with (linear probe, full fine-tuning, BitFit, LoRA, AdaptFormer adapters,
//! VPT-deep, SSF).
//!
//! Each method is one file: its settings (a [`MethodConfig`]), its module (a
//! [`LinearAdapter`](crate::nn::LinearAdapter) or [`BlockAdapter`](crate::nn::BlockAdapter) that
//! plugs into the layers' slots, with its forward and its stage-1 delta), and how it attaches to a
//! model. [`METHODS`] lists them by name: adding a method is its file and one line there.
//! A [`Method`] is one configured method; [`Method::parse`] reads the short strings of the command
//! line (`consolidator:g=32+16,reorder,dp=0.2`) and `Display` writes them back, losslessly.
//! [`Method::apply`] turns a loaded backbone into a model ready to adapt: it freezes the backbone,
//! puts a fresh trainable head on top, and lets the method attach what it adds.
//!
//! ```
//! use consolidator::nn::{Module, VisionTransformer, VitConfig};
//! use consolidator::peft::Method;
//! let cfg = VitConfig { depth: 2, ..VitConfig::preset("vit_mnist_tiny")? };
//! let mut vit = VisionTransformer::new(&cfg, 0)?;
//! let total = vit.num_params();
//! let method = Method::parse("consolidator:g=16", cfg.embed_dim)?;
//! method.apply(&mut vit, 10, 0)?;
//! // Trainable: the branches, the LayerNorms, the FC biases and the new head; frozen: the rest.
//! assert!(vit.num_trainable() * 5 < total);
//! // The string form is lossless: every setting is spelled out.
//! assert_eq!(method.to_string(), "consolidator:g=16,dp=0.5,init=0.001,layers=qkv+proj+fc1+fc2");
//! assert_eq!(Method::parse(&method.to_string(), 999)?, method);
//! # Ok::<(), consolidator::Error>(())
//! ```

mod adapter;
mod consolidator;
mod lora;
mod options;
mod ssf;
mod trainable;
mod vpt;

pub use adapter::{AdaptFormer, AdapterConfig};
pub use consolidator::{BranchConfig, Consolidator, ConsolidatorConfig, GroupBranch, Init, MAX_BRANCHES};
pub use lora::{Lora, LoraConfig};
pub use options::{LayerSet, Options};
pub use ssf::{Ssf, SsfConfig};
pub use trainable::{BitFit, Full, LinearProbe};
pub use vpt::{Prompts, VptConfig};

use crate::nn::{Module, VisionTransformer};
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// What every method implements: its settings, their string form, and how it attaches to a
/// model.
pub trait MethodConfig: Any + fmt::Debug + Send + Sync {
    /// The short name method strings start with (`"lora"`).
    fn name(&self) -> &'static str;

    /// The options that reproduce these settings exactly (`["r=4", "alpha=4", …]`): the part of
    /// the method string after `name:`.
    fn options(&self) -> Vec<String>;

    /// Attaches the method to `vit`, which arrives frozen with a fresh trainable head: puts the
    /// method's modules in the layers' slots and marks what else trains. New parameters are
    /// reserved through `ctx` before they are allocated, and drawn from its seeded generator.
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()>;

    /// Whether models adapted with it deploy as a plain ViT (every module it attaches reports
    /// an exact [`LayerDelta`](crate::algebra::LayerDelta)).
    fn mergeable(&self) -> bool;

    /// `self` as `Any`, for [`Method::config`].
    fn as_any(&self) -> &dyn Any;
}

/// A method's parser: its options (the part after `name:`) for a model of width `embed_dim`.
pub type ParseFn = fn(&mut Options, usize) -> Result<Method>;

/// Every method [`Method::parse`] knows, by name. A new method is its own file and one line here.
pub const METHODS: &[(&str, ParseFn)] = &[
    ("linear", LinearProbe::parse),
    ("full", Full::parse),
    ("bitfit", BitFit::parse),
    ("lora", LoraConfig::parse),
    ("adapter", AdapterConfig::parse),
    ("vpt", VptConfig::parse),
    ("ssf", SsfConfig::parse),
    ("consolidator", ConsolidatorConfig::parse),
];

/// Methods registered at run time (by a library user, or a test), after [`METHODS`].
static REGISTERED: std::sync::RwLock<Vec<(&'static str, ParseFn)>> = std::sync::RwLock::new(Vec::new());

/// Makes `Method::parse` (and so model and delta files) know a method defined outside this
/// crate. Refuses a name that is already taken.
pub fn register(name: &'static str, parse: ParseFn) -> Result<()> {
    let mut extra = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    if METHODS.iter().chain(extra.iter()).any(|(n, _)| *n == name) {
        return Err(Error::invalid("register method", format!("a method named `{name}` is already known")));
    }
    extra.push((name, parse));
    Ok(())
}

/// One configured method (cheap to clone). Compares and prints by its lossless string form.
#[derive(Clone)]
pub struct Method(Arc<dyn MethodConfig>);

impl Method {
    /// Wraps a method's settings.
    pub fn new(config: impl MethodConfig) -> Self {
        Method(Arc::new(config))
    }

    /// Parses `name[:option,key=value,…]` (see each method's options; `embed_dim` sizes the
    /// defaults, e.g. the consolidator's `g = embed_dim / 2`). Every value is checked here:
    /// unknown or repeated options, numbers out of range and malformed lists are errors.
    pub fn parse(s: &str, embed_dim: usize) -> Result<Method> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let extra = REGISTERED.read().unwrap_or_else(|e| e.into_inner()).clone();
        let known = || METHODS.iter().chain(extra.iter()).map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let parse = METHODS.iter().chain(extra.iter()).find(|(n, _)| *n == name).map(|(_, p)| p).ok_or_else(|| {
            Error::invalid(
                "method",
                format!("unknown method `{}` (known: {})", crate::io::text::shorten(name, 80).escape_debug(), known()),
            )
        })?;
        let mut options = Options::parse(name, opts)?;
        let m = parse(&mut options, embed_dim)?;
        options.finish()?;
        Ok(m)
    }

    /// Every known method with its default settings, for a model of width `embed_dim`.
    pub fn all(embed_dim: usize) -> Vec<Method> {
        METHODS.iter().map(|(n, _)| Method::parse(n, embed_dim).expect("every method parses with no options")).collect()
    }

    /// The short name (`"consolidator"`).
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Whether adapted models deploy as a plain ViT.
    pub fn mergeable(&self) -> bool {
        self.0.mergeable()
    }

    /// The settings as their concrete type, e.g. `method.config::<ConsolidatorConfig>()`.
    pub fn config<T: MethodConfig>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }

    /// Prepares `vit` for adaptation with this method: freezes it, installs a fresh trainable
    /// head with `num_classes` outputs, and attaches the method. Deterministic in `seed`.
    pub fn apply(&self, vit: &mut VisionTransformer, num_classes: usize, seed: u64) -> Result<()> {
        self.apply_with(vit, num_classes, &mut AttachCtx::new(seed))
    }

    /// [`Method::apply`] with a given context (e.g. one with a memory budget: see
    /// [`AttachCtx::with_budget`]).
    pub fn apply_with(&self, vit: &mut VisionTransformer, num_classes: usize, ctx: &mut AttachCtx) -> Result<()> {
        if vit.has_adapters() {
            return Err(Error::invalid(
                "method",
                format!("cannot attach `{self}`: the model already carries a method's modules"),
            ));
        }
        vit.freeze();
        vit.reset_head(num_classes, ctx.seed);
        self.0.attach(vit, ctx)?;
        // The head always trains.
        vit.head.weight.trainable = true;
        if let Some(b) = &mut vit.head.bias {
            b.trainable = true;
        }
        Ok(())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opts = self.0.options();
        if opts.is_empty() {
            write!(f, "{}", self.name())
        } else {
            write!(f, "{}:{}", self.name(), opts.join(","))
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method({self})")
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl<T: MethodConfig> From<T> for Method {
    fn from(config: T) -> Self {
        Method::new(config)
    }
}

/// What a method's `attach` draws on: a seeded generator, and a budget of parameter values.
///
/// Loading an adapted model re-applies its method from the file's metadata before the strict
/// load; the budget (the values the file holds) makes a hostile method string fail before it
/// allocates, instead of asking for more memory than the file could fill.
pub struct AttachCtx {
    seed: u64,
    rng: StdRng,
    budget: Option<usize>,
    used: usize,
}

impl AttachCtx {
    /// No budget; draws seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        AttachCtx { seed, rng: StdRng::seed_from_u64(seed), budget: None, used: 0 }
    }
    /// At most `values` new parameter values may be reserved.
    pub fn with_budget(seed: u64, values: usize) -> Self {
        AttachCtx { budget: Some(values), ..AttachCtx::new(seed) }
    }
    /// The seeded generator for initial values.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
    /// Reserves `values` parameter values for `what` before they are allocated.
    pub fn reserve(&mut self, what: &str, values: usize) -> Result<()> {
        self.used = self.used.saturating_add(values);
        match self.budget {
            Some(b) if self.used > b => Err(Error::invalid(
                "method",
                format!("{what} needs {} parameter values in all, more than the {b} available", self.used),
            )),
            _ => Ok(()),
        }
    }
    /// Values reserved so far.
    pub fn reserved(&self) -> usize {
        self.used
    }
}

/// Marks every LayerNorm of `vit` trainable (methods that train the norms).
pub(crate) fn train_norms(vit: &mut VisionTransformer) {
    for n in vit.layer_norms_mut() {
        n.visit_mut("", &mut |_, p| p.trainable = true);
    }
}
