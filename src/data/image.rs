//! Small single-channel image helpers: resizing (bilinear and area), quarter-turn rotation, pasting.
//!
//! Images are row-major `f32` planes of `height × width`. Resizing is separable: each output row
//! (column) is a weighted sum of input rows (columns).
//!
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
    fn rotation_cycles() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let r1 = rotate90(&img, 3, 1);
        assert_eq!(r1, vec![2., 5., 8., 1., 4., 7., 0., 3., 6.]);
        assert_eq!(rotate90(&r1, 3, 3), img);
        assert_eq!(rotate90(&rotate90(&img, 3, 2), 3, 2), img);
    }
}
