//! A method added from outside the crate, through the seam alone: a per-channel scale of each FC
//! layer's input, `y = (x ⊙ s)·Wᵀ + b`. It has its own config (how it attaches), its own module
//! (forward and stage-1 delta), and one registration line — nothing in `nn`, `reparam` or the
//! file formats knows it. Then the whole pipeline: adapt, train a few steps, consolidate, write
//! and read the delta file, merge, check merged == unmerged, unmerge bit-exactly.

use consolidator::algebra::{Affine, Dense, LayerDelta};
use consolidator::autograd::{Tape, Var};
use consolidator::data::Dataset;
use consolidator::model::Model;
use consolidator::nn::{LinearAdapter, Module, VisionTransformer, VitConfig};
use consolidator::peft::{register, AttachCtx, Method, MethodConfig, Options};
use consolidator::reparam::{attach_delta, consolidate, fingerprint, merge, TaskDelta};
use consolidator::train::{TrainConfig, Trainer};
use consolidator::{module_keys, Param, Result, Tensor};
use rand::{Rng, SeedableRng};
use std::any::Any;

/// The method's settings: which layers (here: all four FC layers of every block).
#[derive(Clone, Debug, PartialEq)]
struct InScaleConfig;

impl InScaleConfig {
    fn parse(_: &mut Options, _embed_dim: usize) -> Result<Method> {
        Ok(Method::new(InScaleConfig))
    }
}

impl MethodConfig for InScaleConfig {
    fn name(&self) -> &'static str {
        "inscale"
    }
    fn options(&self) -> Vec<String> {
        Vec::new()
    }
    fn attach(&self, vit: &mut VisionTransformer, ctx: &mut AttachCtx) -> Result<()> {
        for (_, lin) in vit.fc_layers_mut() {
            let i = lin.in_dim();
            ctx.reserve("inscale", i)?;
            let s = Tensor::rand_uniform(&[i], 0.9, 1.1, ctx.rng());
            lin.adapter = Some(Box::new(InScale { s: Param::new(s) }));
        }
        Ok(())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The module: one scale per input channel.
#[derive(Clone, Debug)]
struct InScale {
    s: Param,
}

module_keys!(InScale { "in_scale" => s });

impl LinearAdapter for InScale {
    fn kind(&self) -> &'static str {
        "inscale"
    }
    fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>, w: &Var<'t>, b: Option<&Var<'t>>) -> Result<Var<'t>> {
        x.mul(&tape.param(&self.s))?.linear(w, b)
    }
    /// `W·diag(s) = W + W·diag(s − 1)`: a dense addition that depends on the layer's weight.
    fn delta(&self, weight: &Tensor, _bias: Option<&Tensor>) -> Result<LayerDelta> {
        let [o, i] = weight.dims::<2>("inscale delta")?;
        let s = self.s.value.data();
        let w: Vec<f64> = (0..o * i).map(|k| weight.data()[k] as f64 * (s[k % i] as f64 - 1.0)).collect();
        Ok(LayerDelta::Add(Affine::Dense(Dense { out_dim: o, in_dim: i, weight: w, bias: vec![0.0; o] })))
    }
    fn clone_box(&self) -> Box<dyn LinearAdapter> {
        Box::new(self.clone())
    }
}

fn config() -> VitConfig {
    VitConfig { depth: 2, embed_dim: 16, num_heads: 2, mlp_hidden: 32, ..VitConfig::preset("vit_mnist_tiny").unwrap() }
}

#[test]
fn a_method_from_outside_the_crate_adapts_consolidates_and_merges() {
    register("inscale", InScaleConfig::parse).unwrap();
    assert!(register("inscale", InScaleConfig::parse).is_err(), "a name is registered once");
    let backbone = Model::plain(VisionTransformer::new(&config(), 3).unwrap());
    let method = Method::parse("inscale", 16).unwrap();
    let mut adapted = backbone.adapt(&method, 3, 1).unwrap();
    // Trainable: the scales (16 + 16 + 16 + 32 inputs per block) and the head.
    assert_eq!(adapted.vit.num_trainable(), 2 * (16 + 16 + 16 + 32) + 16 * 3 + 3);

    // A few steps of training move the scales.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let x = Tensor::randn(&[12, 1, 28, 28], 1.0, &mut rng);
    let labels: Vec<usize> = (0..12).map(|_| rng.gen_range(0..3)).collect();
    let data = Dataset::new(x.clone(), labels, 3).unwrap();
    let cfg = TrainConfig { epochs: 3, batch_size: 4, lr: 1e-2, warmup_epochs: 0, ..TrainConfig::default() };
    Trainer::new(cfg).run(&mut adapted, &data, None).unwrap();

    // Stage 1 through the seam, the delta file, stage 2.
    let delta = consolidate(&adapted, &backbone.vit).unwrap();
    assert_eq!(delta.layers.len(), 8);
    let delta = TaskDelta::from_file(&delta.to_file().unwrap()).unwrap();
    let merged = merge(&backbone, &delta).unwrap();
    let served = attach_delta(&backbone, &delta).unwrap();
    let (unmerged, deployed, stage1) =
        (adapted.predict(&x).unwrap(), merged.model.predict(&x).unwrap(), served.predict(&x).unwrap());
    let tol = 1e-5 * unmerged.max_abs().max(1.0);
    assert!(deployed.max_abs_diff(&unmerged) <= tol, "stage 2 differs by {}", deployed.max_abs_diff(&unmerged));
    assert!(stage1.max_abs_diff(&unmerged) <= tol, "stage 1 differs by {}", stage1.max_abs_diff(&unmerged));
    // The merged model is plain, and the method changed the function.
    assert!(!merged.model.vit.has_adapters());
    let mut plain = backbone.vit.clone();
    plain.reset_head(3, 0);
    plain.head = adapted.vit.head.clone();
    assert!(plain.predict(&x).unwrap().max_abs_diff(&unmerged) > 1e-4);
    // Unmerge gives the backbone back, bit for bit.
    assert_eq!(fingerprint(&merged.unmerge().vit), fingerprint(&backbone.vit));

    // The adapted model file round-trips too (its method re-applied from the metadata).
    let dir = std::env::temp_dir().join(format!("consolidator-seam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    adapted.save(dir.join("m.safetensors")).unwrap();
    let back = Model::load(dir.join("m.safetensors")).unwrap();
    assert_eq!(back.method.as_ref().map(|m| m.name()), Some("inscale"));
    assert_eq!(back.predict(&x).unwrap().data(), unmerged.data());
    std::fs::remove_dir_all(&dir).unwrap();
}
