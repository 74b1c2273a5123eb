//! Images and their resizing: the decoded [`Image`] (channels × height × width, values in
//! `[0, 1]`), channel conversion, bicubic resizing as PIL and torchvision do it, and the small
//! single-channel helpers the transfer suite uses (bilinear, area, quarter-turn rotation, pasting).
//!
//! Planes are row-major `f32` arrays of `height × width`. Resizing is separable: each output row
//! (column) is a weighted sum of input rows (columns).
//!
//! - [`resize_bicubic`] is PIL's `Image.resize(..., BICUBIC)` and torchvision's
//!   `Resize(..., interpolation=BICUBIC, antialias=True)`: the cubic kernel with `a = −0.5`,
//!   widened by the scale when shrinking (antialiasing), its taps renormalised to sum to 1 at
//!   the borders ([`bicubic_taps`]). The horizontal pass runs first, then the vertical one,
//!   each accumulating in `f64` and storing `f32`, a pass skipped when its size already
//!   matches — the arithmetic of PIL's resize of a 32-bit float (`"F"`) image, which
//!   `tests/data_sources.rs` checks bit for bit against values Pillow 12 computed
//!   (`scripts/bicubic_reference.py`; Pillow 13 runs the vertical pass first when it shrinks the
//!   height and not the width as much, which changes some results in the last bit). Nothing is
//!   clamped: bicubic overshoots a little near edges.
//! - [`resize_bicubic_clamped`] clamps each pass to `[0, 1]`, as PIL's resize of an 8-bit image
//!   clamps each pass to 0…255: within one level of PIL on 8-bit images. This is what
//!   [`crate::data::Preprocess`] uses.
//! - [`resize_bilinear`] samples at pixel centres (`x_src = (x + ½)·in/out − ½`, clamped to the
//!   edge), the convention of PyTorch's `interpolate(mode="bilinear", align_corners=False)`
//!   without antialiasing: right for enlarging.
//! - [`resize_area`] averages the input area each output pixel covers (exact box filter, fractional
//!   overlaps weighted): right for shrinking, where bilinear sampling would alias.
//!
//! ```
//! use consolidator::data::image::{resize_area, resize_bilinear, rotate90};
//! let img = vec![0.0, 1.0, 2.0, 3.0]; // 2×2
//! assert_eq!(resize_bilinear(&img, 2, 2, 4, 4).unwrap()[..4], [0.0, 0.25, 0.75, 1.0]);
//! assert_eq!(resize_area(&img, 2, 2, 1, 1).unwrap(), vec![1.5]);
//! assert_eq!(rotate90(&img, 2, 1), vec![1.0, 3.0, 0.0, 2.0]); // counter-clockwise
//! ```

use crate::{Error, Result};

/// A decoded image: `channels × height × width` values in `[0, 1]`, channel-major (CHW).
/// Channels: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Number of channels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels × height × width` values, channel-major.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from its size and CHW data; the sizes must be positive, the channels 1 to 4 and
    /// the data must hold exactly `channels × height × width` values.
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Image> {
        let img = Image { channels, height, width, data };
        img.check("Image::new")?;
        Ok(img)
    }

    /// Checks the invariants of [`Image::new`] (the fields are public).
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (c, h, w) = (self.channels, self.height, self.width);
        if !(1..=4).contains(&c) || h == 0 || w == 0 {
            return Err(Error::invalid(
                op,
                format!("an image needs 1 to 4 channels and a positive size, got {c}×{h}×{w}"),
            ));
        }
        if crate::tensor::checked_numel(&[c, h, w]) != Some(self.data.len()) {
            return Err(Error::invalid(op, format!("{} values do not form a {c}×{h}×{w} image", self.data.len())));
        }
        Ok(())
    }

    /// One channel's plane.
    ///
    /// # Panics
    /// If `c >= self.channels` or the data is shorter than the size says.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    /// The image with `channels` channels (1 gray or 3 RGB; or its own count, unchanged):
    /// gray → RGB replicates the plane; RGB → gray is ITU-R 601 luma
    /// `0.299 R + 0.587 G + 0.114 B` (PIL's `convert("L")`, here in `f32` without PIL's
    /// rounding to 8 bits); an alpha channel is dropped (as PIL's `convert("RGB")` does, without
    /// compositing onto a background).
    pub fn to_channels(&self, channels: usize) -> Result<Image> {
        self.check("Image::to_channels")?;
        if channels == self.channels {
            return Ok(self.clone());
        }
        let n = self.height * self.width;
        let color = match self.channels {
            1 | 2 => 1, // gray, gray + alpha
            _ => 3,     // RGB, RGBA
        };
        let data = match (color, channels) {
            (1, 1) | (3, 3) => self.data[..channels * n].to_vec(), // drop alpha
            (1, 3) => self.plane(0).repeat(3),
            (3, 1) => {
                let (r, g, b) = (self.plane(0), self.plane(1), self.plane(2));
                (0..n).map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i]).collect()
            }
            _ => {
                return Err(Error::invalid(
                    "Image::to_channels",
                    format!("cannot convert a {}-channel image to {channels} channels (1 or 3)", self.channels),
                ))
            }
        };
        Ok(Image { channels, height: self.height, width: self.width, data })
    }

    /// The image resized to `height × width` by [`resize_bicubic`], plane by plane (unclamped).
    pub fn resize_bicubic(&self, height: usize, width: usize) -> Result<Image> {
        self.resize_planes(height, width, resize_bicubic)
    }

    /// The image resized by [`resize_bicubic_clamped`] (each pass clamped to `[0, 1]`).
    pub fn resize_bicubic_clamped(&self, height: usize, width: usize) -> Result<Image> {
        self.resize_planes(height, width, resize_bicubic_clamped)
    }

    fn resize_planes(&self, height: usize, width: usize, f: PlaneResize) -> Result<Image> {
        self.check("Image::resize_bicubic")?;
        let mut data = Vec::with_capacity(self.channels.saturating_mul(height).saturating_mul(width));
        for c in 0..self.channels {
            data.extend(f(self.plane(c), self.height, self.width, height, width)?);
        }
        Ok(Image { channels: self.channels, height, width, data })
    }
}

/// For each of `n_out` output positions, the first input index and the normalised weights of its
/// window: separable bicubic (`a = −0.5`, PIL's and torchvision's kernel, support 2), the window
/// widened by `n_in / n_out` when shrinking (antialiasing), weights divided by their sum (so the
/// windows cut by the borders still sum to 1). Output position `i` is centred at input
/// coordinate `(i + ½)·n_in/n_out`. This is PIL's `precompute_coeffs` for `BICUBIC`, and what
/// timm gets from `F.interpolate(mode='bicubic', antialias=True)` when it resamples position
/// embeddings.
///
/// `nn::resample_pos_embed` (position-embedding resampling) uses these taps too.
pub fn bicubic_taps(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let cubic = |x: f64| {
        let a = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out as f64;
    let support = 2.0 * scale.max(1.0);
    let inv = 1.0 / scale.max(1.0);
    (0..n_out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let mut w: Vec<f64> = (lo..hi).map(|j| cubic((j as f64 - center + 0.5) * inv)).collect();
            let s: f64 = w.iter().sum();
            if s != 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
            (lo, w)
        })
        .collect()
}

/// Bicubic resize of an `h × w` plane to `out_h × out_w` with antialiasing (see the module docs
/// and [`bicubic_taps`]): horizontal pass, then vertical, each skipped when its size matches,
/// accumulating in `f64`. Not clamped: PIL's resize of a float (`"F"`) image, bit for bit.
pub fn resize_bicubic(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Vec<f32>> {
    check(src, h, w, out_h, out_w, "resize_bicubic")?;
    Ok(bicubic_passes(src, h, w, out_h, out_w, false))
}

/// [`resize_bicubic`] clamping each pass's output to `[0, 1]`, as PIL's resize of an 8-bit
/// image clamps each pass to 0…255 (without PIL's rounding to 8 bits after each pass: on 8-bit
/// input the two agree within one level).
pub fn resize_bicubic_clamped(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Vec<f32>> {
    check(src, h, w, out_h, out_w, "resize_bicubic_clamped")?;
    Ok(bicubic_passes(src, h, w, out_h, out_w, true))
}

fn bicubic_passes(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, clamp: bool) -> Vec<f32> {
    let store = |acc: f64| if clamp { (acc as f32).clamp(0.0, 1.0) } else { acc as f32 };
    let horizontal = if w == out_w {
        src.to_vec()
    } else {
        let taps = bicubic_taps(w, out_w);
        let mut out = Vec::with_capacity(h * out_w);
        for row in src.chunks_exact(w) {
            for (lo, ws) in &taps {
                let mut acc = 0.0f64;
                for (k, wt) in ws.iter().enumerate() {
                    acc += row[lo + k] as f64 * wt;
                }
                out.push(store(acc));
            }
        }
        out
    };
    if h == out_h {
        return horizontal;
    }
    let taps = bicubic_taps(h, out_h);
    let mut out = Vec::with_capacity(out_h * out_w);
    for (lo, ws) in &taps {
        for x in 0..out_w {
            let mut acc = 0.0f64;
            for (k, wt) in ws.iter().enumerate() {
                acc += horizontal[(lo + k) * out_w + x] as f64 * wt;
            }
            out.push(store(acc));
        }
    }
    out
}

/// A plane resizer: `(src, h, w, out_h, out_w)` → the resized plane.
type PlaneResize = fn(&[f32], usize, usize, usize, usize) -> Result<Vec<f32>>;

/// One output index's `(input index, weight)` taps.
type Taps = Vec<Vec<(usize, f32)>>;

fn check(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, op: &'static str) -> Result<()> {
    if h.checked_mul(w) != Some(src.len()) {
        return Err(Error::invalid(op, format!("{} values do not form a {h}×{w} image", src.len())));
    }
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::invalid(op, format!("cannot resize {h}×{w} to {out_h}×{out_w}: sizes must be positive")));
    }
    Ok(())
}

fn bilinear_taps(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let x = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (x.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let t = (x - i0 as f64).clamp(0.0, 1.0) as f32;
            if i0 == i1 || t == 0.0 {
                vec![(i0, 1.0)]
            } else {
                vec![(i0, 1.0 - t), (i1, t)]
            }
        })
        .collect()
}

fn area_taps(n_in: usize, n_out: usize) -> Taps {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let lo = o as f64 * scale;
            let hi = (o + 1) as f64 * scale;
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(n_in);
            (first..last)
                .filter_map(|i| {
                    let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    (overlap > 0.0).then_some((i, (overlap / scale) as f32))
                })
                .collect()
        })
        .collect()
}

fn resample(src: &[f32], w: usize, ty: &Taps, tx: &Taps) -> Vec<f32> {
    let mut out = Vec::with_capacity(ty.len() * tx.len());
    for row_taps in ty {
        for col_taps in tx {
            let mut acc = 0.0f32;
            for &(iy, a) in row_taps {
                for &(ix, b) in col_taps {
                    acc += a * b * src[iy * w + ix];
                }
            }
            out.push(acc);
        }
    }
    out
}

/// Bilinear resize of an `h × w` image to `out_h × out_w` (pixel-centre sampling, edge clamped).
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Vec<f32>> {
    check(src, h, w, out_h, out_w, "resize_bilinear")?;
    Ok(resample(src, w, &bilinear_taps(h, out_h), &bilinear_taps(w, out_w)))
}

/// Area (box-filter) resize of an `h × w` image to `out_h × out_w`: each output pixel is the mean
/// of the input area it covers.
pub fn resize_area(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Vec<f32>> {
    check(src, h, w, out_h, out_w, "resize_area")?;
    Ok(resample(src, w, &area_taps(h, out_h), &area_taps(w, out_w)))
}

/// Rotates a square `size × size` image by `quarter_turns · 90°` counter-clockwise.
///
/// # Panics
/// If `src.len() != size * size`.
pub fn rotate90(src: &[f32], size: usize, quarter_turns: usize) -> Vec<f32> {
    assert_eq!(src.len(), size * size, "rotate90: not a {size}×{size} image");
    let n = size;
    let mut out = vec![0.0; n * n];
    for y in 0..n {
        for x in 0..n {
            // (y, x) in the output comes from this source pixel.
            let (sy, sx) = match quarter_turns % 4 {
                0 => (y, x),
                1 => (x, n - 1 - y),
                2 => (n - 1 - y, n - 1 - x),
                _ => (n - 1 - x, y),
            };
            out[y * n + x] = src[sy * n + sx];
        }
    }
    out
}

/// Pastes a `ph × pw` patch onto a `ch × cw` canvas with its top-left corner at `(top, left)`,
/// keeping the maximum of canvas and patch (so overlapping strokes merge). Parts outside the canvas
/// are clipped.
pub fn paste_max(canvas: &mut [f32], cw: usize, patch: &[f32], pw: usize, top: usize, left: usize) {
    let ch = canvas.len().checked_div(cw).unwrap_or(0);
    let ph = patch.len().checked_div(pw).unwrap_or(0);
    for y in 0..ph {
        let cy = top.saturating_add(y);
        if cy >= ch {
            break;
        }
        for x in 0..pw {
            let cx = left.saturating_add(x);
            if cx >= cw {
                break;
            }
            let c = &mut canvas[cy * cw + cx];
            *c = c.max(patch[y * pw + x]);
        }
    }
}

/// Random translation of a batch `[B, C, H, W]`: image `b` moves by its own `(dy, dx)`, each drawn
/// uniformly from `−max_shift..=max_shift`, the pixels it uncovers copying the nearest edge
/// pixel (the background of a digit, a border of a photo). The same shift applies to every
/// channel of an image. The training-time augmentation of [`crate::train::TrainConfig::shift`].
///
/// ```
/// use consolidator::data::image::shift_batch;
/// use consolidator::Tensor;
/// use rand::SeedableRng;
/// let x = Tensor::new(&[1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!(shift_batch(&x, 0, &mut rand::rngs::StdRng::seed_from_u64(0))?.data(), x.data());
/// # Ok::<(), consolidator::Error>(())
/// ```
pub fn shift_batch(images: &crate::Tensor, max_shift: usize, rng: &mut impl rand::Rng) -> Result<crate::Tensor> {
    let &[b, c, h, w] = images.shape() else {
        return Err(Error::bad_shape("shift_batch", images.shape(), "images must be [B, C, H, W]"));
    };
    if max_shift > 0 && max_shift >= h.min(w) {
        return Err(Error::bad_shape(
            "shift_batch",
            images.shape(),
            format!("a shift of up to {max_shift} pixels needs images larger than that"),
        ));
    }
    let s = max_shift as isize;
    let mut out = images.data().to_vec();
    for (i, img) in out.chunks_mut((c * h * w).max(1)).enumerate().take(b) {
        let (dy, dx) = (rng.gen_range(-s..=s), rng.gen_range(-s..=s));
        if (dy, dx) == (0, 0) {
            continue;
        }
        let src = &images.data()[i * c * h * w..(i + 1) * c * h * w];
        // Output (y, x) reads source (y − dy, x − dx), clamped to the image.
        let from = |v: usize, d: isize, n: usize| (v as isize - d).clamp(0, n as isize - 1) as usize;
        for ch in 0..c {
            let (plane, dst) = (&src[ch * h * w..(ch + 1) * h * w], &mut img[ch * h * w..(ch + 1) * h * w]);
            for y in 0..h {
                let sy = from(y, dy, h);
                for x in 0..w {
                    dst[y * w + x] = plane[sy * w + from(x, dx, w)];
                }
            }
        }
    }
    crate::Tensor::new(images.shape(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant() {
        let img: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear(&img, 3, 4, 3, 4).unwrap(), img);
        assert_eq!(resize_area(&img, 3, 4, 3, 4).unwrap(), img);
        let ones = vec![1.0; 28 * 28];
        for v in resize_area(&ones, 28, 28, 12, 12).unwrap() {
            assert!((v - 1.0).abs() < 1e-5);
        }
        for v in resize_bilinear(&ones[..64], 8, 8, 28, 28).unwrap() {
            assert!((v - 1.0).abs() < 1e-5);
        }
        // Area resize preserves the mean.
        let mean_in: f32 = img.iter().sum::<f32>() / 12.0;
        let out = resize_area(&img, 3, 4, 2, 3).unwrap();
        let mean_out: f32 = out.iter().sum::<f32>() / 6.0;
        assert!((mean_in - mean_out).abs() < 1e-4);
        assert!(resize_area(&img, 3, 3, 2, 2).is_err());
    }

    #[test]
    fn bicubic_basics() {
        // Identity at the same size, constants stay constant (the taps sum to 1), both ways.
        let img: Vec<f32> = (0..12).map(|v| v as f32 / 11.0).collect();
        assert_eq!(resize_bicubic(&img, 3, 4, 3, 4).unwrap(), img);
        let ones = vec![0.75; 30 * 20];
        for (oh, ow) in [(7, 5), (64, 3), (30, 41), (1, 1)] {
            for v in resize_bicubic(&ones, 30, 20, oh, ow).unwrap() {
                assert!((v - 0.75).abs() < 1e-6, "{oh}×{ow}: {v}");
            }
        }
        for (n_in, n_out) in [(1, 5), (5, 1), (28, 224), (224, 28), (10, 7)] {
            for (_, ws) in bicubic_taps(n_in, n_out) {
                assert!((ws.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        // A linear ramp is reproduced away from the borders when enlarging by 2.
        let ramp: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let up = resize_bicubic(&ramp, 1, 16, 1, 32).unwrap();
        for (i, v) in up.iter().enumerate().skip(4).take(24) {
            assert!((v - ((i as f32 + 0.5) / 2.0 - 0.5)).abs() < 1e-5, "{i}: {v}");
        }
        assert!(resize_bicubic(&img, 3, 4, 0, 4).is_err());
    }

    #[test]
    fn channel_conversion() {
        let rgb = Image::new(3, 1, 2, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.5]).unwrap();
        let gray = rgb.to_channels(1).unwrap();
        assert_eq!(gray.data, vec![0.299, 0.587 + 0.114 * 0.5]);
        let back = gray.to_channels(3).unwrap();
        assert_eq!(back.data, [gray.data.clone(), gray.data.clone(), gray.data.clone()].concat());
        let rgba = Image::new(4, 1, 1, vec![0.1, 0.2, 0.3, 0.0]).unwrap();
        assert_eq!(rgba.to_channels(3).unwrap().data, vec![0.1, 0.2, 0.3]);
        let la = Image::new(2, 1, 1, vec![0.4, 1.0]).unwrap();
        assert_eq!(la.to_channels(1).unwrap().data, vec![0.4]);
        assert_eq!(la.to_channels(3).unwrap().data, vec![0.4; 3]);
        assert!(rgb.to_channels(2).is_err());
        assert!(Image::new(5, 1, 1, vec![0.0; 5]).is_err());
        assert!(Image::new(1, 2, 2, vec![0.0; 3]).is_err());
    }

    #[test]
    fn rotation_cycles() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let r1 = rotate90(&img, 3, 1);
        assert_eq!(r1, vec![2., 5., 8., 1., 4., 7., 0., 3., 6.]);
        assert_eq!(rotate90(&r1, 3, 3), img);
        assert_eq!(rotate90(&rotate90(&img, 3, 2), 3, 2), img);
    }
}
