//! Checkpoints: safetensors files with timm's key names.
//!
//! [`VisionTransformer::state_dict`] writes every parameter under its timm key plus the
//! configuration as metadata; [`VisionTransformer::load_state_dict`] is strict by default (a
//! missing, unexpected or mis-shaped key is an error naming the key and both shapes) and reports
//! what it skipped in non-strict mode. A checkpoint made at another image size has its
//! `pos_embed` resampled over the patch grid, as timm's loader does.

use super::vit::{Pool, VisionTransformer, VitConfig};
use super::Module;
use crate::data::image::bicubic_taps;
use crate::io::safetensors::TensorFile;
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Keys loaded.
    pub loaded: usize,
    /// Model keys the file lacks (non-strict mode only; they keep their values).
    pub missing: Vec<String>,
    /// File keys the model lacks (non-strict mode only; ignored).
    pub unexpected: Vec<String>,
    /// `pos_embed` grid resampled from → to, if it was.
    pub resampled: Option<((usize, usize), (usize, usize))>,
}

fn meta_usize(m: &BTreeMap<String, String>, k: &str) -> Result<Option<usize>> {
    m.get(k)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::format("checkpoint metadata", format!("`{k}` = `{v}` is not a whole number")))
        })
        .transpose()
}

impl VitConfig {
    /// Writes the configuration as string metadata (the keys the fixture script uses too).
    pub fn to_metadata(&self, m: &mut BTreeMap<String, String>) {
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("img_size_h", self.img_size.0.to_string());
        put("img_size_w", self.img_size.1.to_string());
        put("patch_h", self.patch_size.0.to_string());
        put("patch_w", self.patch_size.1.to_string());
        put("in_chans", self.in_chans.to_string());
        put("embed_dim", self.embed_dim.to_string());
        put("depth", self.depth.to_string());
        put("num_heads", self.num_heads.to_string());
        put("mlp_hidden", self.mlp_hidden.to_string());
        put("num_classes", self.num_classes.to_string());
        put("global_pool", if self.pool == Pool::Avg { "avg" } else { "token" }.to_string());
    }

    /// The configuration of a checkpoint: from its metadata where present, otherwise inferred
    /// from tensor shapes; the head count must be in the metadata (`num_heads`).
    pub fn from_checkpoint(f: &TensorFile) -> Result<Self> {
        let m = &f.metadata;
        let shape = |k: &str| f.get(k).map(|t| t.shape().to_vec());
        let pw = shape("patch_embed.proj.weight")?;
        let [e, c, ph, pww] = <[usize; 4]>::try_from(pw.as_slice()).map_err(|_| {
            Error::format("checkpoint", format!("patch_embed.proj.weight has shape {pw:?}, expected [E, C, ph, pw]"))
        })?;
        let depth = (0..).take_while(|i| f.tensors.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
        // `.first()`, not `[0]`: a hostile file may store these as rank-0 tensors.
        let rows =
            |k: &str| shape(k)?.first().copied().ok_or_else(|| Error::format("checkpoint", format!("{k} is a scalar")));
        let hidden = rows("blocks.0.mlp.fc1.weight")?;
        let classes = rows("head.weight")?;
        let pool = match m.get("global_pool").map(String::as_str) {
            Some("avg") => Pool::Avg,
            Some(_) => Pool::Token,
            None if f.tensors.contains_key("fc_norm.weight") => Pool::Avg,
            None => Pool::Token,
        };
        let pos = shape("pos_embed")?;
        let patch = (
            meta_usize(m, "patch_h")?.or(meta_usize(m, "patch_size")?).unwrap_or(ph),
            meta_usize(m, "patch_w")?.or(meta_usize(m, "patch_size")?).unwrap_or(pww),
        );
        let img = match (meta_usize(m, "img_size_h")?, meta_usize(m, "img_size_w")?) {
            (Some(h), Some(w)) => (h, w),
            _ => {
                let n = pos.get(1).copied().unwrap_or(1).saturating_sub(1);
                let g = (n as f64).sqrt().round() as usize;
                if g * g != n {
                    return Err(Error::format(
                        "checkpoint",
                        format!(
                            "pos_embed has {n} patch positions: not a square grid; give the image size in the metadata"
                        ),
                    ));
                }
                (g * patch.0, g * patch.1)
            }
        };
        // The head count leaves no trace in the shapes (qkv is [3C, C] for any H): it is read
        // from the metadata, never guessed.
        let heads = meta_usize(m, "num_heads")?.ok_or_else(|| {
            Error::format(
                "checkpoint",
                format!("its metadata does not give the head count (`num_heads`) of its width-{e} blocks, and the shapes cannot tell it: name the architecture (e.g. --arch vit_base_patch16_224)"),
            )
        })?;
        let cfg = VitConfig {
            img_size: img,
            patch_size: patch,
            in_chans: c,
            embed_dim: e,
            depth,
            num_heads: heads,
            mlp_hidden: hidden,
            num_classes: classes,
            pool,
            drop_path_rate: 0.0,
        };
        cfg.validate()?;
        // Metadata that contradicts the tensors is an error, not something to ignore.
        for (k, inferred) in
            [("depth", depth), ("embed_dim", e), ("in_chans", c), ("mlp_hidden", hidden), ("num_classes", classes)]
        {
            if let Some(v) = meta_usize(m, k)? {
                if v != inferred {
                    return Err(Error::format(
                        "checkpoint",
                        format!("metadata says {k} = {v}, but the tensors give {inferred}"),
                    ));
                }
            }
        }
        cfg.check_fits_file(f)?;
        Ok(cfg)
    }
}

/// Refuses a configuration whose model would hold more values than the file has.
///
/// Sizes come from shapes and metadata, and a tiny hostile file can declare a huge model (a
/// zero-element `[10^7, 0, 1, 1]` patch weight, `img_size_h = 10^9` in the metadata): building
/// it would try to allocate terabytes before the strict load could notice the mismatch. A model
/// inferred from a file is loaded strictly from that same file, so its parameters can never
/// outnumber the file's values; the count below (saturating, so it cannot overflow) is a lower
/// bound on the model's parameters: the block weights, the position embedding and the head.
impl VitConfig {
    /// Refuses a configuration whose model would hold more values than `f` has (see above).
    pub fn check_fits_file(&self, f: &TensorFile) -> Result<()> {
        let cfg = self;
        let u = |v: usize| v as u128;
        let (e, h) = (u(cfg.embed_dim), u(cfg.mlp_hidden));
        let tokens = u(cfg.img_size.0 / cfg.patch_size.0).saturating_mul(u(cfg.img_size.1 / cfg.patch_size.1)) + 1;
        let per_block = e.saturating_mul(e).saturating_mul(4).saturating_add(e.saturating_mul(h).saturating_mul(2));
        let needed = u(cfg.depth)
            .saturating_mul(per_block)
            .saturating_add(tokens.saturating_mul(e))
            .saturating_add(u(cfg.num_classes).saturating_mul(e));
        let held: u128 = f.tensors.values().map(|t| t.numel() as u128).sum();
        if needed > held {
            return Err(Error::format(
                "checkpoint",
                format!(
                "its shapes and metadata describe a model of at least {needed} parameters, but the file holds only \
                 {held} values (img {:?}, patch {:?}, embed_dim {}, depth {}, mlp {}, classes {})",
                cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.mlp_hidden, cfg.num_classes
            ),
            ));
        }
        Ok(())
    }
}

impl VisionTransformer {
    /// Every parameter under its timm key, with the configuration as metadata.
    pub fn state_dict(&self) -> TensorFile {
        let mut f = TensorFile::new();
        self.visit("", &mut |k, p| f.insert(k, p.value.clone()));
        self.config.to_metadata(&mut f.metadata);
        if !self.merged_deltas.is_empty() {
            f.metadata.insert("merged_deltas".into(), self.merged_deltas.join(";"));
        }
        f
    }

    /// Loads parameters by key. Strict: any missing, unexpected or mis-shaped key is an error.
    /// Non-strict: missing and unexpected keys are reported and skipped (mis-shaped ones are
    /// still errors). A `pos_embed` for another patch grid is resampled (bicubic, as timm).
    pub fn load_state_dict(&mut self, f: &TensorFile, strict: bool) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut seen = std::collections::BTreeSet::new();
        let grid = self.config.grid();
        let src_grid = file_grid(f, self.config.patch_size);
        let mut err: Option<Error> = None;
        self.visit_mut("", &mut |k, p| {
            if err.is_some() {
                return;
            }
            let Some(t) = f.tensors.get(k) else {
                if strict {
                    err = Some(Error::MissingKey { key: k.to_string() });
                } else {
                    report.missing.push(k.to_string());
                }
                return;
            };
            seen.insert(k.to_string());
            let mut t = t.clone();
            if k == "pos_embed"
                && t.shape() != p.shape()
                && t.rank() == 3
                && p.shape().len() == 3
                && t.shape()[2] == p.shape()[2]
            {
                let from = src_grid.unwrap_or((0, 0));
                match resample_pos_embed(&t, from, grid, 1) {
                    Ok(r) => {
                        report.resampled = Some((from, grid));
                        t = r;
                    }
                    Err(e) => {
                        err = Some(e);
                        return;
                    }
                }
            }
            if t.shape() != p.shape() {
                err =
                    Some(Error::KeyShape { key: k.to_string(), expected: p.shape().to_vec(), got: t.shape().to_vec() });
                return;
            }
            p.value = t;
            report.loaded += 1;
        });
        if let Some(e) = err {
            return Err(e);
        }
        for k in f.tensors.keys() {
            if !seen.contains(k) {
                if strict {
                    return Err(Error::UnexpectedKey { key: k.clone() });
                }
                report.unexpected.push(k.clone());
            }
        }
        Ok(report)
    }

    /// Builds a model from a checkpoint (configuration from `config` or inferred) and loads it
    /// strictly.
    pub fn from_checkpoint(f: &TensorFile, config: Option<&VitConfig>) -> Result<Self> {
        let cfg = match config {
            Some(c) => c.clone(),
            None => VitConfig::from_checkpoint(f)?,
        };
        let mut vit = VisionTransformer::new(&cfg, 0)?;
        vit.load_state_dict(f, true)?;
        vit.merged_deltas =
            f.metadata.get("merged_deltas").map(|s| s.split(';').map(String::from).collect()).unwrap_or_default();
        Ok(vit)
    }

    /// Saves the state dict atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.state_dict().save(path)
    }

    /// Loads a plain ViT checkpoint (configuration from its metadata or shapes).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        VisionTransformer::from_checkpoint(&TensorFile::load(path)?, None)
    }
}

/// The patch grid of a checkpoint's `pos_embed` (from metadata, else a square).
fn file_grid(f: &TensorFile, patch: (usize, usize)) -> Option<(usize, usize)> {
    let m = &f.metadata;
    let h = m.get("img_size_h").and_then(|v| v.parse::<usize>().ok());
    let w = m.get("img_size_w").and_then(|v| v.parse::<usize>().ok());
    let ph = m.get("patch_h").or(m.get("patch_size")).and_then(|v| v.parse::<usize>().ok()).unwrap_or(patch.0);
    let pw = m.get("patch_w").or(m.get("patch_size")).and_then(|v| v.parse::<usize>().ok()).unwrap_or(patch.1);
    if let (Some(h), Some(w)) = (h, w) {
        if ph > 0 && pw > 0 {
            return Some((h / ph, w / pw));
        }
    }
    let n = f.tensors.get("pos_embed")?.shape().get(1)?.checked_sub(1)?;
    let g = (n as f64).sqrt().round() as usize;
    (g * g == n).then_some((g, g))
}

/// Resamples a position embedding `[1, prefix + gh·gw, E]` to another grid, keeping the
/// `prefix` (class) tokens: separable bicubic (a = −0.5) with the kernel widened when shrinking
/// and weights renormalised at the borders — what timm's `resample_abs_pos_embed` gets from
/// `F.interpolate(mode='bicubic', antialias=True)`.
pub fn resample_pos_embed(pos: &Tensor, from: (usize, usize), to: (usize, usize), prefix: usize) -> Result<Tensor> {
    let [one, t, e] = pos.dims::<3>("resample_pos_embed")?;
    if one != 1 || t != prefix + from.0 * from.1 || from.0 == 0 || from.1 == 0 || to.0 == 0 || to.1 == 0 {
        return Err(Error::bad_shape(
            "resample_pos_embed",
            pos.shape(),
            format!("does not hold {prefix} prefix tokens and a {from:?} grid"),
        ));
    }
    let d = pos.data();
    let wy = bicubic_taps(from.0, to.0);
    let wx = bicubic_taps(from.1, to.1);
    let mut out = Vec::with_capacity((prefix + to.0 * to.1) * e);
    out.extend_from_slice(&d[..prefix * e]);
    let grid = &d[prefix * e..];
    // Rows first (height), then columns, in f64.
    let mut tmp = vec![0.0f64; to.0 * from.1 * e];
    for (oy, (y0, ws)) in wy.iter().enumerate() {
        for x in 0..from.1 {
            for (k, w) in ws.iter().enumerate() {
                let src = &grid[((y0 + k) * from.1 + x) * e..][..e];
                let dst = &mut tmp[(oy * from.1 + x) * e..][..e];
                for (a, b) in dst.iter_mut().zip(src) {
                    *a += w * *b as f64;
                }
            }
        }
    }
    for oy in 0..to.0 {
        for (x0, ws) in wx.iter() {
            let mut acc = vec![0.0f64; e];
            for (k, w) in ws.iter().enumerate() {
                let src = &tmp[(oy * from.1 + x0 + k) * e..][..e];
                for (a, b) in acc.iter_mut().zip(src) {
                    *a += w * b;
                }
            }
            out.extend(acc.iter().map(|&v| v as f32));
        }
    }
    Tensor::new(&[1, prefix + to.0 * to.1, e], out)
}
