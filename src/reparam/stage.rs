//! The two consolidation stages, for every mergeable method.
//!
//! **Stage 1** ([`consolidate`], adaptation → storage): a trained model becomes a [`TaskDelta`]:
//! for a consolidator, per wrapped layer the sum of its branches as one [`Sparse`] map on the
//! union support (values in canonical order; the support is derived from the layer's widths and
//! the branch set, so no index arrays are stored) and the merged bias change
//! `Δb = Σ_k β_k + (b_trained − b_backbone)`; plus the other trained dense tensors (head,
//! LayerNorms). LoRA stores its factors (scale folded in), SSF its scale and shift, BitFit and
//! full fine-tuning the tensors they changed. The delta records a fingerprint of the backbone.
//!
//! **Stage 2** ([`merge`], loading → inference): the delta is folded into a backbone, giving a
//! plain ViT with the backbone's structure (and the task's head). Accumulation is in `f64`,
//! rounded once. [`Merged::unmerge`] returns the backbone from the kept copy (bit-exact).
//!
//! ```
//! use consolidator::nn::{VisionTransformer, VitConfig};
//! use consolidator::peft::Method;
//! use consolidator::reparam::{consolidate, merge};
//! use consolidator::Tensor;
//! let cfg = VitConfig { depth: 1, ..VitConfig::preset("vit_mnist_tiny")? };
//! let backbone = VisionTransformer::new(&cfg, 0)?;
//! let method = Method::parse("consolidator", cfg.embed_dim)?; // g = 32 beside all four FC layers
//! let mut adapted = backbone.clone();
//! method.apply(&mut adapted, 3, 0)?; // (training would happen here)
//! let delta = consolidate(&adapted, &backbone, &method)?; // stage 1
//! assert_eq!(delta.layers.len(), 4);
//! let merged = merge(&backbone, &delta)?; // stage 2: a plain ViT
//! let images = Tensor::full(&[2, 1, 28, 28], 0.5);
//! let gap = adapted.predict(&images)?.max_abs_diff(&merged.model.predict(&images)?);
//! assert!(gap < 1e-5);
//! # Ok::<(), consolidator::Error>(())
//! ```

use super::affine::{Affine, Dense, LowRank, Pattern, ScaleShift, Sparse};
use crate::io::safetensors::TensorFile;
use crate::kernels::grouped::GroupSpec;
use crate::nn::{LinearPeft, Module, VisionTransformer};
use crate::peft::Method;
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// What a delta does to one FC layer.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerDelta {
    /// `W' = W + A`, `b' = b + a` (consolidator: sparse; LoRA: low-rank).
    Add(Affine),
    /// `W' = diag(γ)·W`, `b' = γ ⊙ b + β` (SSF).
    Post(ScaleShift),
}

/// A task, stored: per-layer deltas and the dense tensors the task replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskDelta {
    /// The method that produced it (`consolidator:g=…` etc.).
    pub method: String,
    /// Per FC layer key (`blocks.0.attn.qkv.`).
    pub layers: BTreeMap<String, LayerDelta>,
    /// Replaced tensors by timm key (head, trained norms, BitFit biases …).
    pub dense: BTreeMap<String, Tensor>,
    /// Fingerprint of the backbone it applies to.
    pub backbone: String,
    /// Number of classes of the task head.
    pub num_classes: usize,
}

/// FNV-1a (64-bit) over key names, shapes and bytes of a model's backbone tensors: every
/// parameter except the head and the method's own additions, in key order.
pub fn fingerprint(vit: &VisionTransformer) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut entries: Vec<(String, Tensor)> = Vec::new();
    vit.visit("", &mut |k, p| {
        if is_backbone_key(k) {
            entries.push((k.to_string(), p.value.clone()));
        }
    });
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, t) in entries {
        eat(k.as_bytes());
        for d in t.shape() {
            eat(&(*d as u64).to_le_bytes());
        }
        for v in t.data() {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    format!("{h:016x}")
}

fn is_backbone_key(k: &str) -> bool {
    !(k.starts_with("head.")
        || k.contains(".consolidator.")
        || k.contains(".lora_")
        || k.contains(".ssf_")
        || k.contains(".adapter.")
        || k.ends_with(".prompts"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.data().iter().map(|&v| v as f64).collect()
}

/// Stage 1: the delta of a model adapted from `backbone` with `method`.
pub fn consolidate(adapted: &VisionTransformer, backbone: &VisionTransformer, method: &Method) -> Result<TaskDelta> {
    if !method.mergeable() {
        return Err(Error::invalid(
            "consolidate",
            format!(
                "method `{}` is not mergeable: its modules are not linear maps (keep the adapted checkpoint instead)",
                method.name()
            ),
        ));
    }
    let base: BTreeMap<String, Tensor> = backbone.named_params().into_iter().map(|(k, p)| (k, p.value)).collect();
    let mut layers = BTreeMap::new();
    // Keys folded into a layer delta (not stored again as dense tensors).
    let mut folded = std::collections::BTreeSet::new();
    for (key, lin) in adapted.fc_layers() {
        if matches!(lin.peft, LinearPeft::None) {
            continue; // any change to a plain layer is stored densely below
        }
        let (i, o) = (lin.in_dim(), lin.out_dim());
        let (wkey, bkey) = (format!("{key}weight"), format!("{key}bias"));
        if base.get(&wkey) != Some(&lin.weight.value) {
            return Err(Error::invalid(
                "consolidate",
                format!("the frozen weight {wkey} differs from the backbone's: wrong backbone for this model?"),
            ));
        }
        // The change of the layer's own bias (the released recipe trains it) joins the delta's bias.
        let bias_change: Vec<f64> = match (&lin.bias, base.get(&bkey)) {
            (Some(b), Some(b0)) if b.value.shape() == b0.shape() => {
                b.value.data().iter().zip(b0.data()).map(|(&x, &y)| x as f64 - y as f64).collect()
            }
            (None, None) => vec![0.0; o],
            _ => return Err(Error::invalid("consolidate", format!("the bias of {key} does not match the backbone's"))),
        };
        folded.insert(wkey);
        folded.insert(bkey);
        let delta = match &lin.peft {
            LinearPeft::None => unreachable!("skipped above"),
            LinearPeft::Consolidator(c) => {
                let specs: Vec<GroupSpec> = c.branches.iter().map(|b| b.spec).collect();
                let mut dense = Dense::zeros(o, i);
                for b in &c.branches {
                    super::affine::branch_from_f32(b.spec, b.weight.value.data(), Some(b.bias.value.data()))?
                        .add_into(&mut dense.weight, &mut dense.bias)?;
                }
                for (d, v) in dense.bias.iter_mut().zip(&bias_change) {
                    *d += v;
                }
                LayerDelta::Add(Affine::Sparse(Sparse::gather(o, i, Pattern::Grouped(specs), &dense)))
            }
            LinearPeft::Lora(l) => {
                let b: Vec<f64> = l.b.value.data().iter().map(|&v| v as f64 * l.scale as f64).collect();
                let (a, rank) = (f64s(&l.a.value), l.a.shape()[0]);
                LayerDelta::Add(Affine::LowRank(LowRank {
                    rank,
                    in_dim: i,
                    out_dim: o,
                    a,
                    b,
                    scale: 1.0,
                    bias: bias_change,
                }))
            }
            LinearPeft::Ssf(s) => {
                if bias_change.iter().any(|&v| v != 0.0) {
                    return Err(Error::invalid("consolidate", "SSF with trained original biases is not supported"));
                }
                LayerDelta::Post(ScaleShift { gamma: f64s(&s.scale.value), beta: f64s(&s.shift.value) })
            }
            LinearPeft::Delta(_) => {
                return Err(Error::invalid(
                    "consolidate",
                    format!("layer {key} carries an attached stage-1 delta: consolidate the trained model, not a served one"),
                ));
            }
        };
        layers.insert(key.clone(), delta);
    }
    // Dense tensors: the head (always: it is the task's), and every other backbone tensor whose
    // value differs from the backbone's (trained norms, BitFit biases, fully fine-tuned weights).
    let mut dense = BTreeMap::new();
    let mut err = None;
    adapted.visit("", &mut |k, p| {
        if err.is_some() || folded.contains(k) || !(is_backbone_key(k) || k.starts_with("head.")) {
            return;
        }
        match base.get(k) {
            _ if k.starts_with("head.") => {
                dense.insert(k.to_string(), p.value.clone());
            }
            Some(b) if b.shape() != p.shape() => err = Some(Error::shape("consolidate", b.shape(), p.shape())),
            Some(b) if b == &p.value => {}
            Some(_) => {
                dense.insert(k.to_string(), p.value.clone());
            }
            None => err = Some(Error::invalid("consolidate", format!("the backbone has no tensor `{k}`"))),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(TaskDelta {
        method: method_string(method),
        layers,
        dense,
        backbone: fingerprint(backbone),
        num_classes: adapted.config.num_classes,
    })
}

fn method_string(m: &Method) -> String {
    match m {
        Method::Consolidator(c) => format!(
            "consolidator:g={}{}",
            c.branches.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join("+"),
            if c.branches.iter().any(|b| b.1) { ",reorder" } else { "" }
        ),
        other => other.name().to_string(),
    }
}

impl TaskDelta {
    /// Bytes the delta stores (as `f32`, plus any index arrays).
    pub fn storage_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .values()
            .map(|l| match l {
                LayerDelta::Add(a) => a.storage_bytes(),
                LayerDelta::Post(s) => 4 * (s.gamma.len() + s.beta.len()),
            })
            .sum();
        layers + self.dense.values().map(|t| 4 * t.numel()).sum::<usize>()
    }

    /// The delta as a safetensors file: per layer `<layer>delta.values` / `delta.bias` (sparse
    /// or bias-only), `lora_a.weight` / `lora_b.weight`, or `ssf_scale` / `ssf_shift`; replaced
    /// tensors under their own keys; metadata `format`, `method`, `backbone_fingerprint`,
    /// `num_classes`, and per sparse layer its pattern (`<layer>delta.pattern`).
    pub fn to_file(&self) -> Result<TensorFile> {
        let mut f = TensorFile::new();
        let t = |v: &[f64], shape: &[usize]| Tensor::new(shape, v.iter().map(|&x| x as f32).collect());
        for (k, l) in &self.layers {
            match l {
                LayerDelta::Add(Affine::Sparse(s)) => {
                    f.insert(format!("{k}delta.values"), t(&s.values, &[s.values.len()])?);
                    f.insert(format!("{k}delta.bias"), t(&s.bias, &[s.out_dim])?);
                    f.metadata.insert(format!("{k}delta.pattern"), pattern_string(&s.pattern, s.in_dim, s.out_dim)?);
                }
                LayerDelta::Add(Affine::LowRank(l)) => {
                    f.insert(format!("{k}lora_a.weight"), t(&l.a, &[l.rank, l.in_dim])?);
                    let b: Vec<f64> = l.b.iter().map(|v| v * l.scale).collect();
                    f.insert(format!("{k}lora_b.weight"), t(&b, &[l.out_dim, l.rank])?);
                    f.insert(format!("{k}delta.bias"), t(&l.bias, &[l.out_dim])?);
                }
                LayerDelta::Post(s) => {
                    f.insert(format!("{k}ssf_scale"), t(&s.gamma, &[s.gamma.len()])?);
                    f.insert(format!("{k}ssf_shift"), t(&s.beta, &[s.beta.len()])?);
                }
                LayerDelta::Add(other) => {
                    return Err(Error::invalid(
                        "TaskDelta::to_file",
                        format!("cannot store a {} layer delta", other.kind()),
                    ))
                }
            }
        }
        for (k, v) in &self.dense {
            f.insert(k.clone(), v.clone());
        }
        let m = &mut f.metadata;
        m.insert("format".into(), "consolidator-delta".into());
        m.insert("format_version".into(), "1".into());
        m.insert("method".into(), self.method.clone());
        m.insert("backbone_fingerprint".into(), self.backbone.clone());
        m.insert("num_classes".into(), self.num_classes.to_string());
        Ok(f)
    }

    /// Reads a delta file written by [`TaskDelta::to_file`]; every size is checked against the
    /// pattern it declares.
    pub fn from_file(f: &TensorFile) -> Result<Self> {
        let m = &f.metadata;
        if m.get("format").map(String::as_str) != Some("consolidator-delta") {
            return Err(Error::format(
                "delta file",
                "not a consolidator delta (metadata `format` is missing or different)",
            ));
        }
        let get = |k: &str| {
            m.get(k).cloned().ok_or_else(|| Error::format("delta file", format!("metadata `{k}` is missing")))
        };
        let num_classes =
            get("num_classes")?.parse().map_err(|_| Error::format("delta file", "num_classes is not a number"))?;
        let f64v = |t: &Tensor| t.data().iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let mut layers = BTreeMap::new();
        let mut dense = BTreeMap::new();
        for (k, t) in &f.tensors {
            if let Some(layer) = k.strip_suffix("delta.values") {
                let pat = get(&format!("{layer}delta.pattern"))?;
                let bias = f.get(&format!("{layer}delta.bias"))?;
                let (o, i, pattern) = parse_pattern(&pat, bias.numel(), t.numel())?;
                layers.insert(
                    layer.to_string(),
                    LayerDelta::Add(Affine::Sparse(Sparse::new(o, i, pattern, f64v(t), f64v(bias))?)),
                );
            } else if let Some(layer) = k.strip_suffix("lora_a.weight") {
                let b = f.get(&format!("{layer}lora_b.weight"))?;
                let bias = f.get(&format!("{layer}delta.bias"))?;
                let [r, i] = t.dims::<2>("delta lora_a")?;
                let [o, r2] = b.dims::<2>("delta lora_b")?;
                if r != r2 || bias.shape() != [o] {
                    return Err(Error::format(
                        "delta file",
                        format!("layer {layer}: LoRA factors {:?} and {:?} do not fit", t.shape(), b.shape()),
                    ));
                }
                layers.insert(
                    layer.to_string(),
                    LayerDelta::Add(Affine::LowRank(LowRank {
                        rank: r,
                        in_dim: i,
                        out_dim: o,
                        a: f64v(t),
                        b: f64v(b),
                        scale: 1.0,
                        bias: f64v(bias),
                    })),
                );
            } else if let Some(layer) = k.strip_suffix("ssf_scale") {
                let shift = f.get(&format!("{layer}ssf_shift"))?;
                if shift.shape() != t.shape() || t.rank() != 1 {
                    return Err(Error::format(
                        "delta file",
                        format!("layer {layer}: SSF scale {:?} and shift {:?}", t.shape(), shift.shape()),
                    ));
                }
                layers.insert(layer.to_string(), LayerDelta::Post(ScaleShift { gamma: f64v(t), beta: f64v(shift) }));
            } else if !(k.ends_with("lora_b.weight") || k.ends_with("ssf_shift") || k.ends_with("delta.bias")) {
                dense.insert(k.clone(), t.clone());
            }
        }
        // `merge` builds a `num_classes`-row head before it reads the stored one: tie the number
        // to the stored head so a hostile `num_classes = 10^12` cannot ask for a huge allocation.
        match dense.get("head.weight").map(|h| h.shape().first().copied()) {
            Some(Some(rows)) if rows == num_classes => {}
            _ => {
                return Err(Error::format(
                    "delta file",
                    format!("num_classes {num_classes} does not match the stored head (`head.weight` rows)"),
                ))
            }
        }
        Ok(TaskDelta { method: get("method")?, layers, dense, backbone: get("backbone_fingerprint")?, num_classes })
    }

    /// Saves atomically.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.to_file()?.save(path)
    }
    /// Loads and validates.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        TaskDelta::from_file(&TensorFile::load(path)?)
    }
}

fn pattern_string(p: &Pattern, i: usize, o: usize) -> Result<String> {
    match p {
        Pattern::Grouped(specs) => Ok(format!(
            "grouped {o}x{i} {}",
            specs
                .iter()
                .map(|s| format!("{}{}", s.groups, if s.reorder { "r" } else { "" }))
                .collect::<Vec<_>>()
                .join(",")
        )),
        Pattern::Csr { cols, .. } if cols.is_empty() => Ok(format!("bias {o}x{i}")),
        Pattern::Csr { .. } => {
            Err(Error::invalid("TaskDelta::to_file", "general sparse patterns are not stored in delta files"))
        }
    }
}

/// The most branches a stored grouped pattern may list.
const MAX_PATTERN_BRANCHES: usize = 64;

/// Parses a stored pattern for a layer whose file holds `bias_len` bias values and `values_len`
/// weight values. The declared sizes are checked against those counts before anything is built:
/// the pattern's size drives allocations (`O+1` row pointers) and work (a grouped pattern's
/// entry count is computed row by row), which a hostile string could otherwise make huge.
fn parse_pattern(s: &str, bias_len: usize, values_len: usize) -> Result<(usize, usize, Pattern)> {
    let bad = || Error::format("delta file", format!("bad pattern `{s}` (expected `grouped OxI g[r],g[r],…`)"));
    let mut parts = s.split(' ');
    let kind = parts.next();
    let (o, i) = parts.next().and_then(|d| d.split_once('x')).ok_or_else(bad)?;
    let (o, i): (usize, usize) = (o.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?);
    if o.checked_mul(i).is_none() || o > 1 << 24 || i > 1 << 24 {
        return Err(bad());
    }
    if o != bias_len {
        return Err(Error::format(
            "delta file",
            format!("pattern `{s}` has {o} rows but the bias has {bias_len} values"),
        ));
    }
    match kind {
        Some("bias") => return Ok((o, i, Pattern::Csr { row_ptr: vec![0; o + 1], cols: vec![] })),
        Some("grouped") => {}
        _ => return Err(bad()),
    }
    let mut specs = Vec::new();
    for g in parts.next().ok_or_else(bad)?.split(',') {
        let (g, reorder) = match g.strip_suffix('r') {
            Some(g) => (g, true),
            None => (g, false),
        };
        let g: usize = g.parse().map_err(|_| bad())?;
        let spec = GroupSpec::new(i, o, g, reorder).map_err(|_| bad())?;
        // The pattern is the union of its specs, so it has at least as many entries as each one.
        if spec.weight_len() > values_len {
            return Err(Error::format(
                "delta file",
                format!("pattern `{s}` needs more than the {values_len} values stored"),
            ));
        }
        specs.push(spec);
    }
    // Entry counting costs O(rows × Σ inputs per group); a real pattern has a handful of
    // branches, so a long list is a hostile file, not a model.
    if specs.is_empty() || specs.len() > MAX_PATTERN_BRANCHES {
        return Err(bad());
    }
    Ok((o, i, Pattern::Grouped(specs)))
}

/// Stage 1 served on the fly: the backbone with each layer's delta attached (not folded in) and
/// the task's dense tensors loaded — the unmerged-but-consolidated model, for inference.
pub fn attach_delta(backbone: &VisionTransformer, delta: &TaskDelta) -> Result<VisionTransformer> {
    // Validate everything by merging once (same checks), then attach instead.
    let merged = merge(backbone, delta)?;
    let mut model = backbone.clone();
    model.reset_head(delta.num_classes, 0);
    model.visit_mut("", &mut |k, p| {
        if let Some(t) = delta.dense.get(k) {
            p.value = t.clone();
        }
    });
    for (key, lin) in model.fc_layers_mut() {
        if let Some(ld) = delta.layers.get(&key) {
            lin.peft = LinearPeft::Delta(std::sync::Arc::new(ld.clone()));
        }
    }
    drop(merged);
    model.freeze();
    Ok(model)
}

/// A merged model and the backbone it came from.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The plain ViT with the task folded in.
    pub model: VisionTransformer,
    backbone: VisionTransformer,
}

impl Merged {
    /// The backbone, exactly as it was (the kept copy; no subtraction).
    pub fn unmerge(self) -> VisionTransformer {
        self.backbone
    }
}

/// Stage 2: folds `delta` into `backbone` and returns a plain ViT. Refuses a delta made for
/// another backbone (which includes a backbone that already has a delta merged in).
pub fn merge(backbone: &VisionTransformer, delta: &TaskDelta) -> Result<Merged> {
    if let Some(d) = backbone.merged_deltas.last() {
        return Err(Error::invalid(
            "merge",
            format!("the model already has a delta merged in ({d}); merge into the plain backbone (or unmerge first)"),
        ));
    }
    let fp = fingerprint(backbone);
    if fp != delta.backbone {
        return Err(Error::invalid(
            "merge",
            format!(
                "this delta was made for backbone {}, but the model's fingerprint is {fp}: a different backbone, or one that already has a delta merged in",
                delta.backbone
            ),
        ));
    }
    if backbone.fc_layers().iter().any(|(_, l)| !matches!(l.peft, LinearPeft::None)) {
        return Err(Error::invalid("merge", "the backbone must be a plain ViT (it has method modules attached)"));
    }
    let mut model = backbone.clone();
    model.reset_head(delta.num_classes, 0);
    let known: std::collections::BTreeSet<String> = model.fc_layers().iter().map(|(k, _)| k.clone()).collect();
    for k in delta.layers.keys() {
        if !known.contains(k) {
            return Err(Error::invalid(
                "merge",
                format!("the delta changes layer `{k}`, which the backbone does not have"),
            ));
        }
    }
    for (key, lin) in model.fc_layers_mut() {
        let Some(ld) = delta.layers.get(&key) else {
            continue;
        };
        let (o, i) = (lin.out_dim(), lin.in_dim());
        let b0: Vec<f32> = lin.bias.as_ref().map(|b| b.value.data().to_vec()).unwrap_or_else(|| vec![0.0; o]);
        let base = Affine::Dense(Dense::from_f32(o, i, lin.weight.value.data(), &b0)?);
        let merged = match ld {
            LayerDelta::Add(a) => {
                if a.out_dim() != o || a.in_dim() != i {
                    return Err(Error::invalid(
                        "merge",
                        format!("layer {key}: delta is {}x{}, the layer {o}x{i}", a.out_dim(), a.in_dim()),
                    ));
                }
                let mut d = base.to_dense();
                a.add_into(&mut d.weight, &mut d.bias)?;
                d
            }
            LayerDelta::Post(s) => {
                if s.gamma.len() != o {
                    return Err(Error::invalid(
                        "merge",
                        format!("layer {key}: SSF of width {} on a layer of width {o}", s.gamma.len()),
                    ));
                }
                Affine::ScaleShift(s.clone()).compose(&base)?.to_dense()
            }
        };
        if merged.weight.iter().chain(&merged.bias).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: format!("merged layer {key}") });
        }
        let (w, b) = merged.to_f32();
        lin.weight.value = Tensor::new(&[o, i], w)?;
        match &mut lin.bias {
            Some(p) => p.value = Tensor::new(&[o], b)?,
            None if b.iter().any(|&v| v != 0.0) => {
                return Err(Error::invalid("merge", format!("layer {key} has no bias to merge into")))
            }
            None => {}
        }
    }
    let mut err = None;
    let mut used = 0;
    model.visit_mut("", &mut |k, p| {
        if let Some(t) = delta.dense.get(k) {
            used += 1;
            if t.shape() != p.shape() {
                err.get_or_insert(Error::KeyShape {
                    key: k.to_string(),
                    expected: p.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            } else if !t.all_finite() {
                err.get_or_insert(Error::NonFinite { what: format!("delta tensor {k}") });
            } else {
                p.value = t.clone();
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if used != delta.dense.len() {
        let missing: Vec<&String> =
            delta.dense.keys().filter(|k| !model.named_params().iter().any(|(n, _)| n == *k)).collect();
        return Err(Error::invalid(
            "merge",
            format!("the delta holds tensors the backbone does not have: {missing:?}"),
        ));
    }
    model.freeze();
    model.merged_deltas.push(format!("{}@{}", delta.method, delta.backbone));
    Ok(Merged { model, backbone: backbone.clone() })
}
