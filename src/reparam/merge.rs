//! Stage 2: a delta folded into its backbone ([`merge`]), the backbone given back
//! ([`Merged::unmerge`]), and stage 1 served without merging ([`attach_delta`]).
//!
//! Both `merge` and `attach_delta` first check the delta against the backbone (one check, no
//! throwaway merge): the fingerprint, a plain backbone, every layer and tensor the delta names
//! exists with the right shape, every value is finite, and the delta changes only what its
//! method trains — a consolidator delta cannot replace `pos_embed` or a layer's weight.

use super::extract::fingerprint;
use super::format::TaskDelta;
use crate::algebra::{Dense, LayerDelta};
use crate::autograd::{Tape, Var};
use crate::model::Model;
use crate::nn::{LinearAdapter, Module, VisionTransformer};
use crate::{Error, Param, Result, Tensor};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

/// A merged model and the backbone it came from.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The plain ViT with the task folded in (the task's head and class names).
    pub model: Model,
    backbone: Model,
}

impl Merged {
    /// The backbone, exactly as it was (the kept copy; no subtraction).
    pub fn unmerge(self) -> Model {
        self.backbone
    }
}

/// Checks `delta` against `backbone` (see the module docs).
fn check(backbone: &VisionTransformer, delta: &TaskDelta) -> Result<()> {
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
    if backbone.has_adapters() {
        return Err(Error::invalid("merge", "the backbone must be a plain ViT (it has method modules attached)"));
    }
    // What the delta's method may change: apply it to a copy and see what trains.
    let mut probe = backbone.clone();
    delta.method.apply(&mut probe, delta.num_classes, 0)?;
    let adapter_ids: HashSet<_> = probe.adapter_params().iter().map(|(_, p)| p.id()).collect();
    let trains: BTreeSet<String> = probe
        .named_params()
        .into_iter()
        .filter(|(_, p)| p.trainable && !adapter_ids.contains(&p.id()))
        .map(|(k, _)| k)
        .collect();
    let adapted_layers: BTreeSet<String> =
        probe.fc_layers().into_iter().filter(|(_, l)| l.adapter.is_some()).map(|(k, _)| k).collect();
    let shapes: std::collections::BTreeMap<String, Vec<usize>> =
        probe.named_params().into_iter().map(|(k, p)| (k, p.shape().to_vec())).collect();
    for (key, lin) in backbone.fc_layers() {
        if let Some(ld) = delta.layers.get(&key) {
            if !adapted_layers.contains(&key) {
                return Err(Error::invalid(
                    "merge",
                    format!("the delta changes layer `{key}`, which its method (`{}`) does not adapt", delta.method),
                ));
            }
            ld.check_fits(&key, lin.out_dim(), lin.in_dim())?;
            if !ld.is_finite() {
                return Err(Error::NonFinite { what: format!("the delta of layer {key}") });
            }
        }
    }
    if let Some(k) = delta.layers.keys().find(|k| !adapted_layers.contains(*k)) {
        return Err(Error::invalid(
            "merge",
            format!("the delta changes layer `{k}`, which the backbone does not have"),
        ));
    }
    for (k, t) in &delta.dense {
        let Some(shape) = shapes.get(k) else {
            return Err(Error::invalid(
                "merge",
                format!("the delta holds tensor `{k}`, which the backbone does not have"),
            ));
        };
        if !trains.contains(k) {
            return Err(Error::invalid(
                "merge",
                format!("the delta replaces `{k}`, which its method (`{}`) does not train", delta.method),
            ));
        }
        if t.shape() != shape.as_slice() {
            return Err(Error::KeyShape { key: k.clone(), expected: shape.clone(), got: t.shape().to_vec() });
        }
        if !t.all_finite() {
            return Err(Error::NonFinite { what: format!("delta tensor {k}") });
        }
    }
    if !delta.dense.contains_key("head.weight") {
        return Err(Error::invalid("merge", "the delta stores no task head (`head.weight`)"));
    }
    Ok(())
}

/// The backbone with a fresh head of the delta's size and every dense tensor of the delta loaded.
fn with_dense(backbone: &Model, delta: &TaskDelta) -> Model {
    let mut model = backbone.clone();
    model.vit.reset_head(delta.num_classes, 0);
    model.vit.visit_mut("", &mut |k, p| {
        if let Some(t) = delta.dense.get(k) {
            p.value = t.clone();
        }
    });
    model.vit.freeze();
    model.classes = delta.classes.clone();
    model.method = None;
    model.metadata.clear(); // the backbone's provenance is not the task model's
    model
}

/// Stage 2: folds `delta` into `backbone` and returns a plain ViT. Refuses a delta made for
/// another backbone (which includes a backbone that already has a delta merged in), and one that
/// changes what its method does not train.
pub fn merge(backbone: &Model, delta: &TaskDelta) -> Result<Merged> {
    check(&backbone.vit, delta)?;
    let mut model = with_dense(backbone, delta);
    for (key, lin) in model.vit.fc_layers_mut() {
        let Some(ld) = delta.layers.get(&key) else {
            continue;
        };
        let (o, i) = (lin.out_dim(), lin.in_dim());
        let b0: Vec<f32> = lin.bias.as_ref().map(|b| b.value.data().to_vec()).unwrap_or_else(|| vec![0.0; o]);
        let merged = ld.merge_into(&Dense::from_f32(o, i, lin.weight.value.data(), &b0)?)?;
        if merged.weight.iter().chain(&merged.bias).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: format!("merged layer {key}") });
        }
        let (w, b) = merged.to_f32();
        if w.iter().chain(&b).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: format!("merged layer {key} (beyond the f32 range)") });
        }
        lin.weight.value = Tensor::new(&[o, i], w)?;
        match &mut lin.bias {
            Some(p) => p.value = Tensor::new(&[o], b)?,
            None if b.iter().any(|&v| v != 0.0) => {
                return Err(Error::invalid("merge", format!("layer {key} has no bias to merge into")))
            }
            None => {}
        }
    }
    model.vit.merged_deltas.push(format!("{}@{}", delta.method, delta.backbone));
    Ok(Merged { model, backbone: backbone.clone() })
}

/// Stage 1 served on the fly: the backbone with each layer's delta attached (not folded in) and
/// the task's dense tensors loaded — the unmerged-but-consolidated model, for inference.
pub fn attach_delta(backbone: &Model, delta: &TaskDelta) -> Result<Model> {
    check(&backbone.vit, delta)?;
    let mut model = with_dense(backbone, delta);
    for (key, lin) in model.vit.fc_layers_mut() {
        if let Some(ld) = delta.layers.get(&key) {
            lin.adapter = Some(Box::new(DeltaAdapter(Arc::new(ld.clone()))));
        }
    }
    Ok(model)
}

/// A stage-1 layer delta served beside the frozen layer (inference only).
#[derive(Clone, Debug)]
pub struct DeltaAdapter(pub Arc<LayerDelta>);

impl Module for DeltaAdapter {
    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Param)) {}
    fn visit_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Param)) {}
}

impl LinearAdapter for DeltaAdapter {
    fn kind(&self) -> &'static str {
        "stage-1 delta"
    }
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        if x.requires_grad() || w.requires_grad() {
            return Err(Error::invalid(
                "linear",
                "a stage-1 delta is applied for inference only; merge it to train on top",
            ));
        }
        let y = x.linear(w, b)?;
        let mut out = y.value().data().to_vec();
        self.0.apply_to_output(x.value().data(), &mut out)?;
        Ok(tape.constant(Tensor::new(y.shape(), out)?))
    }
    fn delta(&self, _weight: &Tensor, _bias: Option<&Tensor>) -> Result<LayerDelta> {
        Err(Error::invalid("consolidate", "this layer serves an attached stage-1 delta: consolidate the trained model"))
    }
    fn clone_box(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}
