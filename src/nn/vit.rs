//! The Vision Transformer, as timm builds it (`VisionTransformer` with class token, absolute
//! position embedding added after the class token is prepended, pre-norm blocks, final norm).

use super::adapter::BlockAdapter;
use super::layers::{Attention, LayerNorm, Linear, Mlp, PatchEmbed};
use super::{Keyed, Module};
use crate::autograd::{Tape, Var};
use crate::{module_keys, par, Error, Param, Result, Tensor};
use rand::SeedableRng;

/// How the token sequence becomes one vector per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The class token after the final norm (timm `global_pool='token'`).
    Token,
    /// Mean of the patch tokens, then `fc_norm` (timm `global_pool='avg'`: no final `norm`).
    Avg,
}

/// A ViT configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Input image (height, width) in pixels.
    pub img_size: (usize, usize),
    /// Patch (height, width) in pixels.
    pub patch_size: (usize, usize),
    /// Input channels (3 for RGB, 1 for MNIST).
    pub in_chans: usize,
    /// Width `C` of the tokens.
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads `H` (`C` must be a multiple).
    pub num_heads: usize,
    /// Hidden width of the MLP (timm: `embed_dim · mlp_ratio`).
    pub mlp_hidden: usize,
    /// Outputs of the head.
    pub num_classes: usize,
    /// How tokens become one vector per image.
    pub pool: Pool,
    /// Stochastic depth of the last block (linearly ramped from 0 over the blocks).
    pub drop_path_rate: f32,
}

impl VitConfig {
    /// Names of the built-in presets: timm's `vit_{tiny,small,base,large}_patch{16,32}_{224,384}`
    /// and this project's 28×28 grayscale `vit_mnist_tiny`, `vit_mnist_small`.
    pub fn presets() -> Vec<String> {
        let mut v = Vec::new();
        for size in ["tiny", "small", "base", "large"] {
            for patch in [16, 32] {
                for res in [224, 384] {
                    v.push(format!("vit_{size}_patch{patch}_{res}"));
                }
            }
        }
        v.extend(["vit_mnist_tiny".to_string(), "vit_mnist_small".to_string()]);
        v
    }

    /// A preset by name (see [`VitConfig::presets`]). The timm presets have timm's widths,
    /// depths and head counts (tiny 192/12/3, small 384/12/6, base 768/12/12, large 1024/24/16),
    /// 3 channels, 1000 classes, class-token pooling; a checkpoint's own head size replaces the
    /// 1000 when it is loaded.
    pub fn preset(name: &str) -> Result<Self> {
        let mnist = |dim, depth, heads| VitConfig {
            img_size: (28, 28),
            patch_size: (4, 4),
            in_chans: 1,
            embed_dim: dim,
            depth,
            num_heads: heads,
            mlp_hidden: dim * 4,
            num_classes: 10,
            pool: Pool::Token,
            drop_path_rate: 0.0,
        };
        match name {
            // 7×7 patches of 4×4 pixels: 50 tokens.
            "vit_mnist_tiny" => return Ok(mnist(64, 4, 4)),
            "vit_mnist_small" => return Ok(mnist(96, 6, 4)),
            _ => {}
        }
        let unknown = || {
            Error::invalid(
                "VitConfig::preset",
                format!("unknown architecture `{}`; known: {}", name.escape_debug(), Self::presets().join(", ")),
            )
        };
        let rest = name.strip_prefix("vit_").ok_or_else(unknown)?;
        let (size, rest) = rest.split_once("_patch").ok_or_else(unknown)?;
        let (patch, res) = rest.split_once('_').ok_or_else(unknown)?;
        let (dim, depth, heads) = match size {
            "tiny" => (192, 12, 3),
            "small" => (384, 12, 6),
            "base" => (768, 12, 12),
            "large" => (1024, 24, 16),
            _ => return Err(unknown()),
        };
        let patch = match patch {
            "16" => 16,
            "32" => 32,
            _ => return Err(unknown()),
        };
        let res = match res {
            "224" => 224,
            "384" => 384,
            _ => return Err(unknown()),
        };
        Ok(VitConfig {
            img_size: (res, res),
            patch_size: (patch, patch),
            in_chans: 3,
            embed_dim: dim,
            depth,
            num_heads: heads,
            mlp_hidden: dim * 4,
            num_classes: 1000,
            pool: Pool::Token,
            drop_path_rate: 0.0,
        })
    }

    /// Patches along (height, width).
    pub fn grid(&self) -> (usize, usize) {
        (self.img_size.0 / self.patch_size.0, self.img_size.1 / self.patch_size.1)
    }
    /// Tokens per image (patches + class token).
    pub fn tokens(&self) -> usize {
        let (gh, gw) = self.grid();
        gh * gw + 1
    }
    /// Checks that the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("VitConfig", m));
        if self.patch_size.0 == 0
            || self.patch_size.1 == 0
            || !self.img_size.0.is_multiple_of(self.patch_size.0)
            || !self.img_size.1.is_multiple_of(self.patch_size.1)
        {
            return bad(format!("image {:?} is not a whole number of patches {:?}", self.img_size, self.patch_size));
        }
        if self.embed_dim == 0 || self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} must be a positive multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.in_chans == 0 || self.depth == 0 || self.mlp_hidden == 0 || self.num_classes == 0 {
            return bad("in_chans, depth, mlp_hidden and num_classes must be positive".into());
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!("drop_path_rate {} must be in [0, 1)", self.drop_path_rate));
        }
        Ok(())
    }
}

/// A pre-norm transformer block: `x + DP(attn(norm1(x)))`, then `x + DP(mlp(norm2(x)))`, with
/// a slot for a method's module (prompt tokens, a module beside the MLP: see [`BlockAdapter`]).
#[derive(Clone, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub norm1: LayerNorm,
    /// Multi-head self-attention.
    pub attn: Attention,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
    /// Stochastic depth rate of both residual branches.
    pub drop_path: f32,
    /// A method's module in this block, if any.
    pub adapter: Option<Box<dyn BlockAdapter>>,
}

module_keys!(Block { "norm1." => norm1, "attn." => attn, "norm2." => norm2, "mlp." => mlp, "" => adapter });

impl Block {
    /// Forward `[B, T, C] → [B, T, C]`.
    pub fn forward<'t>(&self, tape: &'t Tape, x: &Var<'t>) -> Result<Var<'t>> {
        let [b, t, c] = x.value().dims::<3>("block")?;
        let prompts = match &self.adapter {
            Some(a) => a.prompts(tape, b, c)?,
            None => None,
        };
        // Prompt tokens go right after the class token, for this block only.
        let (x, n_prompts) = match prompts {
            None => (x.clone(), 0),
            Some(p) => {
                let n = p.shape()[1];
                (Var::concat(&[&x.narrow(1, 0, 1)?, &p, &x.narrow(1, 1, t - 1)?], 1)?, n)
            }
        };
        let h = self.attn.forward(tape, &self.norm1.forward(tape, &x)?)?;
        let x = x.add(&h.drop_path(self.drop_path)?)?;
        let n2 = self.norm2.forward(tape, &x)?;
        let mut h = self.mlp.forward(tape, &n2)?;
        if let Some(a) = &self.adapter {
            if let Some(extra) = a.beside_mlp(tape, &n2)? {
                h = h.add(&extra)?;
            }
        }
        let x = x.add(&h.drop_path(self.drop_path)?)?;
        if n_prompts == 0 {
            return Ok(x);
        }
        Var::concat(&[&x.narrow(1, 0, 1)?, &x.narrow(1, 1 + n_prompts, t - 1)?], 1)
    }
}

/// The Vision Transformer. Field paths are timm's state-dict keys.
#[derive(Clone, Debug)]
pub struct VisionTransformer {
    /// The configuration it was built from.
    pub config: VitConfig,
    /// Patch embedding (`patch_embed.proj.*`).
    pub patch_embed: PatchEmbed,
    /// Class token `[1, 1, C]`.
    pub cls_token: Param,
    /// Position embedding `[1, T, C]` (class token included).
    pub pos_embed: Param,
    /// The transformer blocks (`blocks.N.*`).
    pub blocks: Vec<Block>,
    /// Final norm (token pooling) …
    pub norm: Option<LayerNorm>,
    /// … or the norm after mean pooling (`global_pool='avg'`).
    pub fc_norm: Option<LayerNorm>,
    /// Classification head `C → num_classes`.
    pub head: Linear,
    /// Task deltas merged into these weights (`method@backbone-fingerprint`), most recent last;
    /// empty for a backbone. Saved in checkpoint metadata as `merged_deltas`.
    pub merged_deltas: Vec<String>,
}

impl VisionTransformer {
    /// A randomly initialised model (timm's scheme: truncated normal 0.02 for weights, pos_embed
    /// and cls token std 0.02 / 1e-6, zero biases, unit LayerNorms).
    pub fn new(cfg: &VitConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let c = cfg.embed_dim;
        let blocks = (0..cfg.depth)
            .map(|i| Block {
                norm1: LayerNorm::new(c),
                attn: Attention {
                    qkv: Linear::new(c, 3 * c, true, &mut rng),
                    proj: Linear::new(c, c, true, &mut rng),
                    heads: cfg.num_heads,
                },
                norm2: LayerNorm::new(c),
                mlp: Mlp {
                    fc1: Linear::new(c, cfg.mlp_hidden, true, &mut rng),
                    fc2: Linear::new(cfg.mlp_hidden, c, true, &mut rng),
                },
                drop_path: if cfg.depth > 1 {
                    cfg.drop_path_rate * i as f32 / (cfg.depth - 1) as f32
                } else {
                    cfg.drop_path_rate
                },
                adapter: None,
            })
            .collect();
        Ok(VisionTransformer {
            patch_embed: PatchEmbed::new(cfg.in_chans, c, cfg.patch_size, &mut rng),
            cls_token: Param::new(Tensor::randn(&[1, 1, c], 1e-6, &mut rng)),
            pos_embed: Param::new(Tensor::trunc_normal(&[1, cfg.tokens(), c], 0.02, &mut rng)),
            blocks,
            norm: (cfg.pool == Pool::Token).then(|| LayerNorm::new(c)),
            fc_norm: (cfg.pool == Pool::Avg).then(|| LayerNorm::new(c)),
            head: Linear::new(c, cfg.num_classes, true, &mut rng),
            config: cfg.clone(),
            merged_deltas: Vec::new(),
        })
    }

    /// Checks an image batch against the model: `[B, C, H, W]` with the model's C, H, W.
    pub fn check_images(&self, shape: &[usize]) -> Result<()> {
        let c = &self.config;
        if shape.len() != 4 || shape[1] != c.in_chans || (shape[2], shape[3]) != c.img_size {
            return Err(Error::invalid(
                "vit forward",
                format!(
                    "images must be [B, {}, {}, {}] for this model, got {shape:?} (resize the data or load the checkpoint at that image size)",
                    c.in_chans, c.img_size.0, c.img_size.1
                ),
            ));
        }
        Ok(())
    }

    /// Token features before pooling: `[B, C, H, W] → [B, T, E]` (after the final norm, if any).
    /// Runs in one [`par::region`] (workers kept ready between its ops).
    pub fn forward_features<'t>(&self, tape: &'t Tape, images: &Var<'t>) -> Result<Var<'t>> {
        self.check_images(images.shape())?;
        par::region(|| {
            let b = images.shape()[0];
            let e = self.config.embed_dim;
            let x = self.patch_embed.forward(tape, images)?;
            let cls = tape.param(&self.cls_token).broadcast_to(&[b, 1, e])?;
            let mut x = Var::concat(&[&cls, &x], 1)?.add(&tape.param(&self.pos_embed))?;
            for blk in &self.blocks {
                x = blk.forward(tape, &x)?;
            }
            match &self.norm {
                Some(n) => n.forward(tape, &x),
                None => Ok(x),
            }
        })
    }

    /// The pooled representation `[B, E]` that the head reads.
    pub fn forward_pooled<'t>(&self, tape: &'t Tape, images: &Var<'t>) -> Result<Var<'t>> {
        let x = self.forward_features(tape, images)?;
        let [b, t, e] = x.value().dims::<3>("vit pool")?;
        let pooled = match self.config.pool {
            Pool::Token => x.narrow(1, 0, 1)?.reshape(&[b, e])?,
            Pool::Avg => x.narrow(1, 1, t - 1)?.mean_dim(1)?,
        };
        match &self.fc_norm {
            Some(n) => n.forward(tape, &pooled),
            None => Ok(pooled),
        }
    }

    /// Logits `[B, num_classes]`.
    pub fn forward<'t>(&self, tape: &'t Tape, images: &Var<'t>) -> Result<Var<'t>> {
        self.head.forward(tape, &self.forward_pooled(tape, images)?)
    }

    /// Inference on a batch of images: logits, with no tape recording.
    pub fn predict(&self, images: &Tensor) -> Result<Tensor> {
        let tape = Tape::inference();
        Ok(self.forward(&tape, &tape.constant(images.clone()))?.value().clone())
    }

    /// Replaces the head with a fresh one for `num_classes` classes (truncated normal 0.02 / zero).
    pub fn reset_head(&mut self, num_classes: usize, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        self.head = Linear::new(self.config.embed_dim, num_classes, true, &mut rng);
        self.config.num_classes = num_classes;
    }

    /// The four FC layers of every block, with their keys (`blocks.{i}.attn.qkv.` …).
    pub fn fc_layers_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut v = Vec::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            v.push((format!("blocks.{i}.attn.qkv."), &mut b.attn.qkv));
            v.push((format!("blocks.{i}.attn.proj."), &mut b.attn.proj));
            v.push((format!("blocks.{i}.mlp.fc1."), &mut b.mlp.fc1));
            v.push((format!("blocks.{i}.mlp.fc2."), &mut b.mlp.fc2));
        }
        v
    }
    /// Read-only variant of [`VisionTransformer::fc_layers_mut`].
    pub fn fc_layers(&self) -> Vec<(String, &Linear)> {
        let mut v = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            v.push((format!("blocks.{i}.attn.qkv."), &b.attn.qkv));
            v.push((format!("blocks.{i}.attn.proj."), &b.attn.proj));
            v.push((format!("blocks.{i}.mlp.fc1."), &b.mlp.fc1));
            v.push((format!("blocks.{i}.mlp.fc2."), &b.mlp.fc2));
        }
        v
    }
}

impl VisionTransformer {
    /// Every LayerNorm: each block's two, and the final `norm` or `fc_norm`.
    pub fn layer_norms_mut(&mut self) -> Vec<&mut LayerNorm> {
        let mut v: Vec<&mut LayerNorm> = Vec::new();
        for b in &mut self.blocks {
            v.push(&mut b.norm1);
            v.push(&mut b.norm2);
        }
        v.extend(self.norm.as_mut());
        v.extend(self.fc_norm.as_mut());
        v
    }

    /// Whether a method's module is attached anywhere (a plain ViT has none).
    pub fn has_adapters(&self) -> bool {
        self.blocks.iter().any(|b| b.adapter.is_some())
            || self.fc_layers().iter().any(|(_, l)| l.adapter.is_some())
            || self.head.adapter.is_some()
    }

    /// The attached methods' own parameters (prompts, branches, low-rank factors …), by key.
    pub fn adapter_params(&self) -> Vec<(String, Param)> {
        let mut v = Vec::new();
        let mut put = |k: &str, p: &Param| v.push((k.to_string(), p.clone()));
        for (i, b) in self.blocks.iter().enumerate() {
            b.adapter.visit_keyed(&format!("blocks.{i}."), &mut put);
        }
        for (key, lin) in self.fc_layers() {
            lin.adapter.visit_keyed(&key, &mut put);
        }
        self.head.adapter.visit_keyed("head.", &mut put);
        v
    }

    /// The backbone's parameters, by key: everything but the head and the methods' own
    /// modules — what every task adapted from this model shares.
    pub fn backbone_params(&self) -> Vec<(String, Param)> {
        let mut skip: std::collections::HashSet<crate::ParamId> =
            self.adapter_params().iter().map(|(_, p)| p.id()).collect();
        skip.insert(self.head.weight.id());
        if let Some(b) = &self.head.bias {
            skip.insert(b.id());
        }
        self.named_params().into_iter().filter(|(_, p)| !skip.contains(&p.id())).collect()
    }
}

module_keys!(VisionTransformer {
    "patch_embed." => patch_embed,
    "cls_token" => cls_token,
    "pos_embed" => pos_embed,
    "blocks." => blocks,
    "norm." => norm,
    "fc_norm." => fc_norm,
    "head." => head,
});
