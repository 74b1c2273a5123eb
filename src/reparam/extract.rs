//! Stage 1: a trained model becomes a [`TaskDelta`], through the adapters' own
//! [`delta`](crate::nn::LinearAdapter::delta).

use super::format::TaskDelta;
use crate::model::Model;
use crate::nn::{Module, VisionTransformer};
use crate::{Error, Result, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// FNV-1a (64-bit) over the key names, shapes and bytes of a model's backbone tensors
/// ([`VisionTransformer::backbone_params`]: everything but the head and the methods' own
/// modules), in key order.
pub fn fingerprint(vit: &VisionTransformer) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut entries = vit.backbone_params();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, p) in entries {
        eat(k.as_bytes());
        for d in p.shape() {
            eat(&(*d as u64).to_le_bytes());
        }
        for v in p.value.data() {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    format!("{h:016x}")
}

/// Stage 1: the delta of `adapted` (a model adapted from `backbone` with a mergeable method).
pub fn consolidate(adapted: &Model, backbone: &VisionTransformer) -> Result<TaskDelta> {
    let method = adapted.method.as_ref().ok_or_else(|| {
        Error::invalid(
            "consolidate",
            "the model has no method: it is not an adapted model (a plain ViT needs no delta)",
        )
    })?;
    if !method.mergeable() {
        return Err(Error::invalid(
            "consolidate",
            format!(
                "method `{}` is not mergeable: its modules are not linear maps (keep the adapted checkpoint instead)",
                method.name()
            ),
        ));
    }
    if backbone.has_adapters() {
        return Err(Error::invalid(
            "consolidate",
            "the backbone carries a method's modules: pass the plain backbone the model was adapted from",
        ));
    }
    let vit = &adapted.vit;
    if let Some((i, b)) = vit.blocks.iter().enumerate().find_map(|(i, b)| b.adapter.as_ref().map(|a| (i, a))) {
        return Err(Error::invalid(
            "consolidate",
            format!("block {i} carries a `{}` module, which cannot merge", b.kind()),
        ));
    }
    let base: BTreeMap<String, Tensor> = backbone.named_params().into_iter().map(|(k, p)| (k, p.value)).collect();
    let mut layers = BTreeMap::new();
    // Keys folded into a layer delta (not stored again as dense tensors).
    let mut folded = BTreeSet::new();
    for (key, lin) in vit.fc_layers() {
        let Some(adapter) = &lin.adapter else {
            continue; // any change to a plain layer is stored densely below
        };
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
            (None, None) => vec![0.0; lin.out_dim()],
            _ => return Err(Error::invalid("consolidate", format!("the bias of {key} does not match the backbone's"))),
        };
        let mut delta = adapter
            .delta(&lin.weight.value, lin.bias.as_ref().map(|b| &b.value))
            .map_err(|e| Error::invalid("consolidate", format!("layer {key}: {e}")))?;
        delta.check_fits(&key, lin.out_dim(), lin.in_dim())?;
        delta.shift_bias(&bias_change)?;
        if !delta.is_finite() {
            return Err(Error::NonFinite { what: format!("the stage-1 delta of layer {key} (its trained values)") });
        }
        folded.insert(wkey);
        folded.insert(bkey);
        layers.insert(key.clone(), delta);
    }
    // Dense tensors: the head (always: it is the task's), and every other backbone tensor whose
    // value differs from the backbone's (trained norms, BitFit biases, fully fine-tuned weights).
    let own: HashSet<_> = vit.adapter_params().iter().map(|(_, p)| p.id()).collect();
    let mut dense = BTreeMap::new();
    for (k, p) in vit.named_params() {
        if folded.contains(&k) || own.contains(&p.id()) {
            continue;
        }
        let is_head = p.id() == vit.head.weight.id() || vit.head.bias.as_ref().is_some_and(|b| b.id() == p.id());
        match base.get(&k) {
            _ if is_head => {}
            Some(b) if b.shape() != p.shape() => return Err(Error::shape("consolidate", b.shape(), p.shape())),
            Some(b) if b == &p.value => continue,
            Some(_) => {}
            None => return Err(Error::invalid("consolidate", format!("the backbone has no tensor `{k}`"))),
        }
        if !p.value.all_finite() {
            return Err(Error::NonFinite { what: format!("the trained tensor `{k}`") });
        }
        dense.insert(k, p.value);
    }
    Ok(TaskDelta {
        method: method.clone(),
        layers,
        dense,
        backbone: fingerprint(backbone),
        num_classes: vit.config.num_classes,
        classes: adapted.classes.clone(),
    })
}
