//! The task-delta file: what stage 1 stores per task.
//!
//! A safetensors file. Per changed layer (key prefix `<layer>` = `blocks.0.attn.qkv.`):
//!
//! | layer delta | tensors | metadata |
//! |---|---|---|
//! | sparse (consolidator) | `<layer>delta.values` (canonical order), `<layer>delta.bias` | `<layer>delta.pattern` = `grouped OxI 32,16r` |
//! | bias only | `<layer>delta.values` (empty), `<layer>delta.bias` | `<layer>delta.pattern` = `bias OxI` |
//! | low-rank (LoRA) | `<layer>lora_a.weight` `[r, I]`, `<layer>lora_b.weight` `[O, r]` (scale folded in), `<layer>delta.bias` | |
//! | scale-shift (SSF) | `<layer>ssf_scale`, `<layer>ssf_shift` | |
//! | dense | `<layer>delta.weight` `[O, I]`, `<layer>delta.bias` | |
//!
//! Every other tensor is a dense replacement under its own key (the head, trained LayerNorms,
//! BitFit biases …). File metadata: `format = consolidator-delta`, `format_version = 1`,
//! `method` (the lossless method string), `backbone_fingerprint`, `num_classes`, and
//! `class_names` (a JSON array) when the task names its classes.
//!
//! A grouped pattern stores no indices: the support is a function of the layer's widths and the
//! branch list, so the file holds exactly the values it merges. Reading checks every declared
//! size against the values the file holds before anything is built.

use crate::algebra::{
    branch_token, f64s, parse_branch_token, Affine, Dense, LayerDelta, LowRank, Pattern, ScaleShift, Sparse,
};
use crate::io::json::Json;
use crate::io::safetensors::TensorFile;
use crate::kernels::grouped::GroupSpec;
use crate::peft::{Method, MAX_BRANCHES};
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// The delta-file version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// A task, stored: per-layer deltas and the dense tensors the task replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskDelta {
    /// The method that produced it.
    pub method: Method,
    /// Per FC layer key (`blocks.0.attn.qkv.`).
    pub layers: BTreeMap<String, LayerDelta>,
    /// Replaced tensors by timm key (head, trained norms, BitFit biases …).
    pub dense: BTreeMap<String, Tensor>,
    /// Fingerprint of the backbone it applies to ([`super::fingerprint`]).
    pub backbone: String,
    /// Number of classes of the task head.
    pub num_classes: usize,
    /// The task's class names (empty when unnamed).
    pub classes: Vec<String>,
}

impl TaskDelta {
    /// Bytes the delta stores (as `f32`, plus any index arrays).
    pub fn storage_bytes(&self) -> usize {
        self.layers.values().map(LayerDelta::storage_bytes).sum::<usize>()
            + self.dense.values().map(|t| 4 * t.numel()).sum::<usize>()
    }

    /// The delta as a safetensors file (see the module docs).
    pub fn to_file(&self) -> Result<TensorFile> {
        let mut f = TensorFile::new();
        // Stored as f32: a value beyond the f32 range would become an infinity in the file.
        let t = |v: &[f64], shape: &[usize]| {
            let t = Tensor::new(shape, v.iter().map(|&x| x as f32).collect())?;
            if !t.all_finite() {
                return Err(Error::NonFinite { what: "a layer delta: its values exceed the f32 range".into() });
            }
            Ok::<Tensor, Error>(t)
        };
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
                LayerDelta::Add(Affine::Dense(d)) => {
                    f.insert(format!("{k}delta.weight"), t(&d.weight, &[d.out_dim, d.in_dim])?);
                    f.insert(format!("{k}delta.bias"), t(&d.bias, &[d.out_dim])?);
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
        m.insert("format_version".into(), FORMAT_VERSION.into());
        m.insert("method".into(), self.method.to_string());
        m.insert("backbone_fingerprint".into(), self.backbone.clone());
        m.insert("num_classes".into(), self.num_classes.to_string());
        if !self.classes.is_empty() {
            m.insert(
                "class_names".into(),
                Json::Arr(self.classes.iter().map(|c| Json::Str(c.clone())).collect()).to_string(),
            );
        }
        Ok(f)
    }

    /// Reads a delta file written by [`TaskDelta::to_file`]; every size is checked against the
    /// values the file holds.
    pub fn from_file(f: &TensorFile) -> Result<Self> {
        let m = &f.metadata;
        let bad = |msg: String| Error::format("delta file", msg);
        if m.get("format").map(String::as_str) != Some("consolidator-delta") {
            return Err(bad("not a consolidator delta (metadata `format` is missing or different)".into()));
        }
        match m.get("format_version").map(String::as_str) {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "format version `{}` is not supported (this build reads version {FORMAT_VERSION})",
                    v.escape_debug()
                )))
            }
            None => return Err(bad("metadata `format_version` is missing".into())),
        }
        let get = |k: &str| m.get(k).cloned().ok_or_else(|| bad(format!("metadata `{k}` is missing")));
        if let Some((k, _)) = f.tensors.iter().find(|(_, t)| !t.all_finite()) {
            return Err(bad(format!("tensor `{}` holds NaN or infinite values", k.escape_debug())));
        }
        let num_classes: usize = get("num_classes")?.parse().map_err(|_| bad("num_classes is not a number".into()))?;
        // `merge` builds a `num_classes`-row head before it reads the stored one: tie the number
        // to the stored head so a hostile `num_classes = 10^12` cannot ask for a huge allocation.
        let head = f.get("head.weight").map_err(|_| bad("it stores no task head (`head.weight`)".into()))?;
        let [rows, width] = head.dims::<2>("delta head.weight")?;
        if rows != num_classes {
            return Err(bad(format!("num_classes {num_classes} does not match the stored head ({rows} rows)")));
        }
        let method = Method::parse(&get("method")?, width)?;
        let classes = match m.get("class_names") {
            None => Vec::new(),
            Some(s) => {
                let v = Json::parse_str(s, "delta class_names")?;
                let names: Option<Vec<String>> =
                    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect());
                match names {
                    Some(n) if n.len() == num_classes => n,
                    _ => return Err(bad(format!("`class_names` is not a list of {num_classes} strings"))),
                }
            }
        };
        let f64v = |t: &Tensor| f64s(t.data());
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
                    return Err(bad(format!(
                        "layer {layer}: LoRA factors {:?} and {:?} do not fit",
                        t.shape(),
                        b.shape()
                    )));
                }
                let low =
                    LowRank { rank: r, in_dim: i, out_dim: o, a: f64v(t), b: f64v(b), scale: 1.0, bias: f64v(bias) };
                layers.insert(layer.to_string(), LayerDelta::Add(Affine::LowRank(low)));
            } else if let Some(layer) = k.strip_suffix("ssf_scale") {
                let shift = f.get(&format!("{layer}ssf_shift"))?;
                if shift.shape() != t.shape() || t.rank() != 1 {
                    return Err(bad(format!("layer {layer}: SSF scale {:?} and shift {:?}", t.shape(), shift.shape())));
                }
                layers.insert(layer.to_string(), LayerDelta::Post(ScaleShift { gamma: f64v(t), beta: f64v(shift) }));
            } else if let Some(layer) = k.strip_suffix("delta.weight") {
                let bias = f.get(&format!("{layer}delta.bias"))?;
                let [o, i] = t.dims::<2>("delta weight")?;
                let d = Dense::from_f32(o, i, t.data(), bias.data())?;
                layers.insert(layer.to_string(), LayerDelta::Add(Affine::Dense(d)));
            } else if !(k.ends_with("lora_b.weight") || k.ends_with("ssf_shift") || k.ends_with("delta.bias")) {
                dense.insert(k.clone(), t.clone());
            }
        }
        Ok(TaskDelta { method, layers, dense, backbone: get("backbone_fingerprint")?, num_classes, classes })
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
            specs.iter().map(|s| branch_token(s.groups, s.reorder)).collect::<Vec<_>>().join(",")
        )),
        Pattern::Csr { cols, .. } if cols.is_empty() => Ok(format!("bias {o}x{i}")),
        Pattern::Csr { .. } => {
            Err(Error::invalid("TaskDelta::to_file", "general sparse patterns are not stored in delta files"))
        }
    }
}

/// Parses a stored pattern for a layer whose file holds `bias_len` bias values and `values_len`
/// weight values. The declared sizes are checked against those counts before anything is built:
/// the pattern's size drives allocations (`O+1` row pointers) and work (a grouped pattern's
/// entry count is computed row by row), which a hostile string could otherwise make huge.
fn parse_pattern(s: &str, bias_len: usize, values_len: usize) -> Result<(usize, usize, Pattern)> {
    let quoted = crate::io::text::shorten(s, 80);
    let bad = || {
        Error::format(
            "delta file",
            format!("bad pattern `{}` (expected `grouped OxI g[r],g[r],…`)", quoted.escape_debug()),
        )
    };
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
            format!("pattern `{}` has {o} rows but the bias has {bias_len} values", quoted.escape_debug()),
        ));
    }
    match kind {
        Some("bias") => return Ok((o, i, Pattern::Csr { row_ptr: vec![0; o + 1], cols: vec![] })),
        Some("grouped") => {}
        _ => return Err(bad()),
    }
    let tokens: Vec<&str> = parts.next().ok_or_else(bad)?.split(',').collect();
    // Entry counting costs O(rows × Σ inputs per group); a real pattern has a handful of
    // branches, so a long list is a hostile file, not a model.
    if tokens.is_empty() || tokens.len() > MAX_BRANCHES || parts.next().is_some() {
        return Err(bad());
    }
    let mut specs = Vec::new();
    for token in tokens {
        let (g, reorder) = parse_branch_token(token).ok_or_else(bad)?;
        let spec = GroupSpec::new(i, o, g, reorder).map_err(|_| bad())?;
        // The pattern is the union of its specs, so it has at least as many entries as each one.
        if spec.weight_len() > values_len {
            return Err(Error::format(
                "delta file",
                format!("pattern `{}` needs more than the {values_len} values stored", quoted.escape_debug()),
            ));
        }
        specs.push(spec);
    }
    Ok((o, i, Pattern::Grouped(specs)))
}
