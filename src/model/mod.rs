//! A model as a file: a ViT, the method it was adapted with (if any), the names of its classes
//! and how its inputs are normalised.
//!
//! A model file is a safetensors file with timm's key names. Its metadata holds the
//! architecture (so it loads without naming one), and for an adapted model the lossless method
//! string (`method`), which [`Model::load`] re-applies before the strict load so the method's
//! own tensors (`blocks.0.attn.qkv.consolidator.0.weight` …) find their places. A plain timm
//! checkpoint (no metadata) loads with [`LoadOptions::arch`].
//!
//! Loading trusts nothing: the architecture must fit the tensors the file holds, a method may
//! not ask for more parameters than the file holds, every key is loaded strictly, and a model
//! with a NaN or infinite weight is refused unless [`LoadOptions::allow_non_finite`] says so.
//!
//! ```
//! use consolidator::model::Model;
//! use consolidator::nn::{VisionTransformer, VitConfig};
//! use consolidator::peft::Method;
//! let cfg = VitConfig { depth: 1, ..VitConfig::preset("vit_mnist_tiny")? };
//! let backbone = Model::plain(VisionTransformer::new(&cfg, 0)?);
//! let mut adapted = backbone.adapt(&Method::parse("lora:r=2", 64)?, 3, 0)?;
//! adapted.classes = vec!["cat".into(), "dog".into(), "fox".into()];
//! let dir = std::env::temp_dir().join(format!("consolidator-doc-model-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! adapted.save(dir.join("adapted.safetensors"))?;
//! let back = Model::load(dir.join("adapted.safetensors"))?;
//! assert_eq!(back.method, adapted.method);
//! assert_eq!(back.classes, adapted.classes);
//! let x = consolidator::Tensor::full(&[1, 1, 28, 28], 0.5);
//! assert_eq!(back.predict(&x)?.data(), adapted.predict(&x)?.data());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod official;

pub use official::import_official;

use crate::data::Preprocess;
use crate::io::json::Json;
use crate::io::safetensors::TensorFile;
use crate::nn::{Module, VisionTransformer, VitConfig};
use crate::peft::{AttachCtx, Method};
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Per-channel input normalisation: `x ← (x − mean) / std` on pixel values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Per channel (or one value for every channel).
    pub mean: Vec<f32>,
    /// Per channel (or one value for every channel).
    pub std: Vec<f32>,
}

impl Normalization {
    /// ImageNet's statistics (timm's default for its ViTs).
    pub fn imagenet() -> Self {
        Normalization { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }
    /// MNIST's statistics (this project's grayscale backbones).
    pub fn mnist() -> Self {
        Normalization { mean: vec![0.1307], std: vec![0.3081] }
    }
    /// The default when a model does not say: ImageNet's for 3 channels, `(0.5, 0.5)` otherwise.
    pub fn default_for(channels: usize) -> Self {
        if channels == 3 {
            Normalization::imagenet()
        } else {
            Normalization { mean: vec![0.5], std: vec![0.5] }
        }
    }
    /// Checks the values against a model taking `channels` channels.
    pub fn check(&self, channels: usize) -> Result<()> {
        let len_ok = |n: usize| n == 1 || n == channels;
        if !len_ok(self.mean.len()) || !len_ok(self.std.len()) {
            return Err(Error::invalid(
                "normalization",
                format!("{} means and {} stds for a {channels}-channel model", self.mean.len(), self.std.len()),
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid("normalization", "means must be finite and stds positive and finite"));
        }
        Ok(())
    }
    /// Reads the metadata (`mean` / `std` lists, or the older `normalization = "mean M std S"`).
    fn from_metadata(m: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let list = |k: &str, v: &str| -> Result<Vec<f32>> {
            v.split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::format("model metadata", format!("`{k}` is not a list of numbers")))
        };
        if let (Some(mean), Some(std)) = (m.get("mean"), m.get("std")) {
            return Ok(Some(Normalization { mean: list("mean", mean)?, std: list("std", std)? }));
        }
        if let Some(v) = m.get("normalization") {
            let parts: Vec<&str> = v.split_whitespace().collect();
            if let ["mean", mean, "std", std] = parts.as_slice() {
                return Ok(Some(Normalization {
                    mean: list("normalization", mean)?,
                    std: list("normalization", std)?,
                }));
            }
            return Err(Error::format("model metadata", "`normalization` is not `mean M std S`"));
        }
        Ok(None)
    }
    fn to_metadata(&self, m: &mut BTreeMap<String, String>) {
        let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        m.insert("mean".into(), list(&self.mean));
        m.insert("std".into(), list(&self.std));
    }
}

/// How [`Model::load_with`] reads a file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The architecture, for files without one in their metadata (timm as published). The
    /// head's size is taken from the file.
    pub arch: Option<VitConfig>,
    /// Load weights that hold NaN or infinities (to inspect a broken file) instead of refusing.
    pub allow_non_finite: bool,
}

/// A ViT with what it takes to use it: the method it was adapted with, its class names, its
/// input normalisation, and the rest of its file's metadata.
#[derive(Clone, Debug)]
pub struct Model {
    /// The network (with the method's modules attached, if adapted).
    pub vit: VisionTransformer,
    /// The method it was adapted with (`None`: a plain ViT).
    pub method: Option<Method>,
    /// Names of the head's outputs (empty: unnamed, shown as their index).
    pub classes: Vec<String>,
    /// How pixel values in [0, 1] are normalised before the model sees them.
    pub normalization: Normalization,
    /// Other metadata, kept as read and written back (task, provenance, training command …).
    pub metadata: BTreeMap<String, String>,
}

/// Metadata keys [`Model`] writes itself (the rest of a file's metadata goes to
/// [`Model::metadata`]).
const OWN_KEYS: [&str; 18] = [
    "img_size_h",
    "img_size_w",
    "patch_h",
    "patch_w",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_hidden",
    "num_classes",
    "global_pool",
    "method",
    "class_names",
    "mean",
    "std",
    "normalization",
    "merged_deltas",
];

impl Model {
    /// A plain ViT with default class names (none) and normalisation.
    pub fn plain(vit: VisionTransformer) -> Model {
        let normalization = Normalization::default_for(vit.config.in_chans);
        Model { vit, method: None, classes: Vec::new(), normalization, metadata: BTreeMap::new() }
    }

    /// A copy of this (plain) model prepared for adaptation with `method` and a fresh
    /// `num_classes`-way head (see [`Method::apply`]). Class names are reset.
    pub fn adapt(&self, method: &Method, num_classes: usize, seed: u64) -> Result<Model> {
        if self.method.is_some() {
            return Err(Error::invalid("adapt", "the model is already adapted; start from a plain backbone"));
        }
        let mut vit = self.vit.clone();
        method.apply(&mut vit, num_classes, seed)?;
        let normalization = self.normalization.clone();
        Ok(Model { vit, method: Some(method.clone()), classes: Vec::new(), normalization, metadata: BTreeMap::new() })
    }

    /// What the model expects of its input images: its channels and size, its normalisation
    /// (see [`Preprocess`]: gray ↔ RGB, bicubic resize, `(v − mean) / std`).
    pub fn preprocess(&self) -> Preprocess {
        let c = &self.vit.config;
        let n = &self.normalization;
        Preprocess {
            channels: c.in_chans,
            height: c.img_size.0,
            width: c.img_size.1,
            mean: n.mean.clone(),
            std: n.std.clone(),
        }
    }

    /// Logits `[B, classes]` for images `[B, C, H, W]` (already normalised), no tape.
    pub fn predict(&self, images: &Tensor) -> Result<Tensor> {
        self.vit.predict(images)
    }

    /// The name of class `k` (its index when the model has no names).
    pub fn class_name(&self, k: usize) -> String {
        self.classes.get(k).cloned().unwrap_or_else(|| k.to_string())
    }

    /// Reads a model file (plain or adapted; a training checkpoint loads as its model).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        Model::from_file(TensorFile::load(path)?, opts).map_err(|e| match e {
            Error::Format { what, msg } if what == "model" => Error::format(path.display().to_string(), msg),
            e => e,
        })
    }

    /// Builds a model from a file's tensors and metadata.
    pub fn from_file(mut f: TensorFile, opts: &LoadOptions) -> Result<Model> {
        if f.metadata.get("format").map(String::as_str) == Some("consolidator-delta") {
            return Err(Error::invalid(
                "load model",
                "this file is a task delta, not a model: merge it into its backbone first (`consolidator merge`)",
            ));
        }
        // A training checkpoint is a model plus optimiser state.
        f.tensors.retain(|k, _| !k.starts_with("opt."));
        let cfg = match &opts.arch {
            Some(a) => {
                let mut c = a.clone();
                c.num_classes = f.get("head.weight")?.dims::<2>("head.weight")?[0];
                c.validate()?;
                c.check_fits_file(&f)?;
                c
            }
            None => VitConfig::from_checkpoint(&f)?,
        };
        let mut vit = VisionTransformer::new(&cfg, 0)?;
        let method = match f.metadata.get("method") {
            Some(m) => {
                let m = Method::parse(m, cfg.embed_dim)?;
                let held: usize = f.tensors.values().map(|t| t.numel()).sum();
                let mut ctx = AttachCtx::with_budget(0, held.saturating_sub(vit.num_params()));
                m.apply_with(&mut vit, cfg.num_classes, &mut ctx)?;
                Some(m)
            }
            None => None,
        };
        vit.load_state_dict(&f, true)?;
        if !opts.allow_non_finite {
            if let Some((k, _)) = vit.named_params().into_iter().find(|(_, p)| !p.value.all_finite()) {
                return Err(Error::NonFinite {
                    what: format!("the model's tensor `{k}` (the file holds NaN or infinite weights)"),
                });
            }
        }
        let m = &f.metadata;
        vit.merged_deltas =
            m.get("merged_deltas").map(|s| s.split(';').map(String::from).collect()).unwrap_or_default();
        let classes = match m.get("class_names") {
            None => Vec::new(),
            Some(s) => parse_class_names(s, cfg.num_classes)?,
        };
        let normalization =
            Normalization::from_metadata(m)?.unwrap_or_else(|| Normalization::default_for(cfg.in_chans));
        normalization.check(cfg.in_chans)?;
        let metadata =
            m.iter().filter(|(k, _)| !OWN_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Model { vit, method, classes, normalization, metadata })
    }

    /// The file: every parameter under its key, the architecture, method, class names,
    /// normalisation and the other metadata.
    pub fn to_file(&self) -> Result<TensorFile> {
        if !self.classes.is_empty() && self.classes.len() != self.vit.config.num_classes {
            return Err(Error::invalid(
                "save model",
                format!("{} class names for a {}-class head", self.classes.len(), self.vit.config.num_classes),
            ));
        }
        let mut f = self.vit.state_dict();
        let m = &mut f.metadata;
        for (k, v) in &self.metadata {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Some(method) = &self.method {
            m.insert("method".into(), method.to_string());
        }
        if !self.classes.is_empty() {
            m.insert(
                "class_names".into(),
                Json::Arr(self.classes.iter().map(|c| Json::Str(c.clone())).collect()).to_string(),
            );
        }
        self.normalization.to_metadata(m);
        Ok(f)
    }

    /// Saves atomically (refusing NaN or infinite weights).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let f = self.to_file()?;
        if let Some((k, _)) = f.tensors.iter().find(|(_, t)| !t.all_finite()) {
            return Err(Error::NonFinite {
                what: format!("tensor `{k}`: refusing to save a model with NaN or infinite weights"),
            });
        }
        f.save(path)
    }
}

/// Class names from metadata: a JSON array of strings, one per class.
fn parse_class_names(s: &str, num_classes: usize) -> Result<Vec<String>> {
    let bad = |msg: String| Error::format("model metadata", format!("`class_names`: {msg}"));
    let Json::Arr(items) = Json::parse_str(s, "class_names")? else {
        return Err(bad("not a JSON array".into()));
    };
    let names = items
        .iter()
        .map(|v| v.as_str().map(String::from).ok_or_else(|| bad("holds a value that is not a string".into())))
        .collect::<Result<Vec<_>>>()?;
    if names.len() != num_classes {
        return Err(bad(format!("{} names for a {num_classes}-class head", names.len())));
    }
    Ok(names)
}
