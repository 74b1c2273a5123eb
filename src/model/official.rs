//! Interop with the official PyTorch code (THU-MIG/Consolidator): read a model state dict it
//! saved, so that a consolidator trained there can be consolidated, merged and deployed here.
//!
//! The official wrapper renames each wrapped FC layer's parameters:
//!
//! | official key | shape | here |
//! |---|---|---|
//! | `<layer>.fc_origin.weight` | `[O, I, 1]` (kernel-1 Conv1d) or `[O, I]` | `<layer>.weight` `[O, I]` |
//! | `<layer>.fc_origin.bias` | `[O]` | `<layer>.bias` |
//! | `<layer>.fc_rep_branches.<k>.group_fc.weight` | `[O, I/g, 1]` | `<layer>.consolidator.<k>.weight` `[g, O/g, I/g]` (same memory order) |
//! | `<layer>.fc_rep_branches.<k>.group_fc.bias` | `[O]` | `<layer>.consolidator.<k>.bias` |
//!
//! The group count of a branch follows from its shape (`g = I / (I/g)`); the channel reorder has
//! no parameters, so whether it was on (`with_channel_shuffle`) must be given.

use super::Model;
use crate::io::safetensors::TensorFile;
use crate::kernels::grouped::GroupSpec;
use crate::nn::{Module, VisionTransformer, VitConfig};
use crate::peft::{BranchConfig, Consolidator, ConsolidatorConfig, GroupBranch, Init, LayerSet, Method};
use crate::{Error, Param, Result, Tensor};
use std::collections::BTreeMap;

/// Builds an adapted model (the backbone with consolidator branches, and the method that
/// describes them) from an official state dict. `config` describes the backbone (or `None` to
/// read it from the file's metadata and shapes); `reorder` says whether the branches used the
/// channel shuffle (it has no parameters, so it cannot be read from the file). All parameters
/// are loaded strictly: an unknown or missing key is an error. The weights are frozen (an
/// imported model is consolidated or evaluated as it is).
pub fn import_official(f: &TensorFile, config: Option<&VitConfig>, reorder: bool, drop_path: f32) -> Result<Model> {
    let what = "official consolidator state dict";
    // 1. Rename fc_origin keys to timm keys; collect branches per layer.
    let mut plain = TensorFile { tensors: BTreeMap::new(), metadata: f.metadata.clone() };
    // Per layer, per branch index: (weight, bias) as found.
    type Found = BTreeMap<usize, (Option<Tensor>, Option<Tensor>)>;
    let mut branches: BTreeMap<String, Found> = BTreeMap::new();
    for (k, t) in &f.tensors {
        if let Some(layer) = k.strip_suffix(".fc_origin.weight") {
            let t = squeeze_last(t, k)?;
            plain.tensors.insert(format!("{layer}.weight"), t);
        } else if let Some(layer) = k.strip_suffix(".fc_origin.bias") {
            plain.tensors.insert(format!("{layer}.bias"), t.clone());
        } else if let Some(pos) = k.find(".fc_rep_branches.") {
            let layer = &k[..pos];
            let rest = &k[pos + ".fc_rep_branches.".len()..];
            let (idx, field) =
                rest.split_once('.').ok_or_else(|| Error::format(what, format!("unexpected key `{k}`")))?;
            let idx: usize = idx.parse().map_err(|_| Error::format(what, format!("bad branch index in `{k}`")))?;
            let slot = branches.entry(layer.to_string()).or_default().entry(idx).or_default();
            match field {
                "group_fc.weight" => slot.0 = Some(t.clone()),
                "group_fc.bias" => slot.1 = Some(t.clone()),
                _ => return Err(Error::format(what, format!("unexpected key `{k}`"))),
            }
        } else {
            plain.tensors.insert(k.clone(), t.clone());
        }
    }
    let cfg = match config {
        Some(c) => c.clone(),
        None => VitConfig::from_checkpoint(&plain)?,
    };
    let mut vit = VisionTransformer::new(&cfg, 0)?;
    // 2. Attach the branches.
    let mut attached = 0;
    let mut groups_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (key, lin) in vit.fc_layers_mut() {
        let layer = key.trim_end_matches('.');
        let Some(bs) = branches.get(layer) else { continue };
        let (i_dim, o_dim) = (lin.in_dim(), lin.out_dim());
        let mut list = Vec::new();
        for (n, (idx, (w, b))) in bs.iter().enumerate() {
            if *idx != n {
                return Err(Error::format(what, format!("layer {layer}: branch indices are not 0, 1, …")));
            }
            let w = w
                .as_ref()
                .ok_or_else(|| Error::MissingKey { key: format!("{layer}.fc_rep_branches.{idx}.group_fc.weight") })?;
            let b = b
                .as_ref()
                .ok_or_else(|| Error::MissingKey { key: format!("{layer}.fc_rep_branches.{idx}.group_fc.bias") })?;
            let w = squeeze_last(w, layer)?;
            let [o, ci] = w.dims::<2>("official branch weight")?;
            if o != o_dim || ci == 0 || i_dim % ci != 0 {
                return Err(Error::format(
                    what,
                    format!("layer {layer} branch {idx}: weight {:?} does not fit a {o_dim}×{i_dim} layer", w.shape()),
                ));
            }
            let g = i_dim / ci;
            let spec = GroupSpec::new(i_dim, o_dim, g, reorder)?;
            b.expect_shape("official branch bias", &[o_dim])?;
            list.push(GroupBranch {
                spec,
                weight: Param::frozen(w.reshape(&spec.weight_shape())?),
                bias: Param::frozen(b.clone()),
            });
        }
        groups_of.insert(key.clone(), list.iter().map(|b| b.spec.groups).collect());
        lin.adapter = Some(Box::new(Consolidator { branches: list, drop_path }));
        attached += 1;
    }
    if attached != branches.len() {
        let known: Vec<String> = vit.fc_layers().iter().map(|(k, _)| k.trim_end_matches('.').to_string()).collect();
        let stray: Vec<&String> = branches.keys().filter(|k| !known.contains(k)).collect();
        return Err(Error::format(what, format!("branches on layers the model does not have: {stray:?}")));
    }
    // 3. Load everything else strictly (the branch parameters are already in place).
    let mut all = plain;
    for (k, p) in vit.adapter_params() {
        all.tensors.insert(k, p.value);
    }
    vit.load_state_dict(&all, true)?;
    vit.freeze();
    let method = describe(&vit, &groups_of, reorder, drop_path)?;
    let mut model = Model::plain(vit);
    model.method = Some(method);
    Ok(model)
}

/// The method string of the imported branches: the released code puts the same branch list on
/// the same kinds of layer in every block; anything else cannot be one method, and is refused.
fn describe(
    vit: &VisionTransformer,
    groups_of: &BTreeMap<String, Vec<usize>>,
    reorder: bool,
    dp: f32,
) -> Result<Method> {
    let what = "official consolidator state dict";
    let first = groups_of.values().next().ok_or_else(|| Error::format(what, "it holds no consolidator branches"))?;
    let has = |kind: &str| groups_of.keys().any(|k| k.ends_with(kind));
    let layers =
        LayerSet { qkv: has("attn.qkv."), proj: has("attn.proj."), fc1: has("mlp.fc1."), fc2: has("mlp.fc2.") };
    let method = Method::new(ConsolidatorConfig {
        layers,
        branches: first.iter().map(|&groups| BranchConfig { groups, reorder }).collect(),
        drop_path: dp,
        init: Init::Uniform(1e-3),
        train_norms: true,
        train_biases: true,
    });
    // The method must rebuild exactly the imported branches.
    let mut probe = vit.clone();
    for (_, lin) in probe.fc_layers_mut() {
        lin.adapter = None;
    }
    method.apply(&mut probe, vit.config.num_classes, 0)?;
    let shapes = |v: &VisionTransformer| -> Vec<(String, Vec<usize>)> {
        v.adapter_params().into_iter().map(|(k, p)| (k, p.shape().to_vec())).collect()
    };
    if shapes(&probe) != shapes(vit) {
        return Err(Error::format(
            what,
            format!("its layers carry different branch sets ({groups_of:?}): one method string cannot describe them"),
        ));
    }
    Ok(method)
}

fn squeeze_last(t: &Tensor, key: &str) -> Result<Tensor> {
    match t.shape() {
        [o, i, 1] => t.reshape(&[*o, *i]),
        [_, _] => Ok(t.clone()),
        s => Err(Error::format(
            "official consolidator state dict",
            format!("`{key}` has shape {s:?}, expected [O, I, 1] or [O, I]"),
        )),
    }
}
