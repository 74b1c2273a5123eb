//! Image files → [`Image`]: PNG and JPEG through small pure-Rust decoders (cargo feature
//! `image`, on by default), PGM/PPM through our own parser (always available).
//!
//! The format is recognised from the first bytes, not the file name. Every image's size is read
//! from its header and checked against [`MAX_PIXELS`] *before* its pixels are decoded, so a
//! 100-byte file declaring 100 000 × 100 000 pixels is refused without allocating; files larger
//! than [`MAX_IMAGE_FILE_BYTES`] are refused before being read. Values are scaled to `[0, 1]`
//! (8-bit by 255, 16-bit by 65535, PGM/PPM by their maxval).
//!
//! | format | decoder | what comes out |
//! |---|---|---|
//! | PNG | `png` (image-rs) | gray, gray + alpha, RGB, RGBA; 1/2/4/8/16-bit; palettes expanded (transparency → alpha); first frame of an APNG; CRCs checked |
//! | JPEG | `zune-jpeg` (strict mode: a truncated or corrupt stream is an error, not a gray smear) | gray (1-component files) or RGB (YCbCr, CMYK, …); baseline and progressive; EXIF orientation not applied (as PIL and torchvision by default) |
//! | PGM / PPM | ours | `P2`/`P5` gray, `P3`/`P6` RGB, maxval 1…65535 (two bytes big-endian above 255), `#` comments |
//!
//! Every error is an [`Error::Format`] naming the file (or the `what` given) and the format.
//!
//! ```
//! use consolidator::data::decode::decode_image;
//! let img = decode_image(b"P2\n# a comment\n2 1\n4\n0 4\n", "tiny.pgm").unwrap();
//! assert_eq!((img.channels, img.height, img.width), (1, 1, 2));
//! assert_eq!(img.data, vec![0.0, 1.0]);
//! assert!(decode_image(b"P5 2 1 255 x", "cut.pgm").unwrap_err().to_string().contains("cut.pgm"));
//! ```

use super::image::Image;
use crate::{Error, Result};
use std::path::Path;

/// Largest image accepted, in pixels (2^26: 8192 × 8192).
pub const MAX_PIXELS: u64 = 1 << 26;

/// Largest image file read, in bytes (256 MiB).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// An image file format, recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG (`89 50 4E 47 0D 0A 1A 0A`).
    Png,
    /// JPEG (`FF D8 FF`).
    Jpeg,
    /// Netpbm PGM/PPM (`P2`, `P3`, `P5`, `P6`).
    Pnm,
}

impl ImageFormat {
    /// The format `bytes` start with, if any.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.len() >= 2 && bytes[0] == b'P' && matches!(bytes[1], b'1'..=b'7') {
            Some(ImageFormat::Pnm)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG image",
            ImageFormat::Jpeg => "JPEG image",
            ImageFormat::Pnm => "PGM/PPM image",
        }
    }
}

/// The file extensions of the image formats, lower case.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "pgm", "ppm"];

/// True when `path` has one of [`IMAGE_EXTENSIONS`] (in any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads and decodes the image file `path` (see the module docs).
pub fn load_image(path: &Path) -> Result<Image> {
    let bytes = crate::io::fs::read_file_limited(path, MAX_IMAGE_FILE_BYTES, "image file")?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes image bytes; `what` names the source in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<Image> {
    decode_image_with_limit(bytes, what, MAX_PIXELS)
}

/// [`decode_image`] with another pixel limit (at most [`MAX_PIXELS`]; the fuzz targets use a
/// small one so that accepted inputs decode quickly).
pub fn decode_image_with_limit(bytes: &[u8], what: &str, max_pixels: u64) -> Result<Image> {
    let limit = Limit(max_pixels.min(MAX_PIXELS));
    let Some(format) = ImageFormat::sniff(bytes) else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(Error::format(
            format!("image file {what}"),
            format!(
                "not a PNG, JPEG, PGM or PPM file (it starts with {}; an empty or truncated file?)",
                if head.is_empty() { "nothing".to_string() } else { head.join(" ") }
            ),
        ));
    };
    let fail = |msg: String| Error::format(format!("{} {what}", format.name()), msg);
    let img = match format {
        ImageFormat::Png => png::decode(bytes, limit).map_err(fail)?,
        ImageFormat::Jpeg => jpeg::decode(bytes, limit).map_err(fail)?,
        ImageFormat::Pnm => decode_pnm(bytes, limit).map_err(fail)?,
    };
    debug_assert!(img.check("decode_image").is_ok());
    Ok(img)
}

/// The pixel limit of one decode.
#[derive(Clone, Copy)]
struct Limit(u64);

impl Limit {
    /// Refuses sizes above the limit (and zero sizes), before decoding.
    fn check(self, width: u64, height: u64) -> std::result::Result<(usize, usize), String> {
        if width == 0 || height == 0 {
            return Err(format!("the header declares an empty {width}×{height} image"));
        }
        match width.checked_mul(height) {
            Some(p) if p <= self.0 => Ok((width as usize, height as usize)),
            _ => Err(format!(
                "the header declares {width}×{height} pixels, more than the {}-pixel limit; refusing to decode it",
                self.0
            )),
        }
    }
}

/// Interleaved samples (`HWC`, already scaled) → a CHW [`Image`].
fn from_interleaved(channels: usize, height: usize, width: usize, samples: impl Iterator<Item = f32>) -> Image {
    let n = height * width;
    let mut data = vec![0.0f32; channels * n];
    for (k, v) in samples.take(channels * n).enumerate() {
        data[(k % channels) * n + k / channels] = v;
    }
    Image { channels, height, width, data }
}

#[cfg(feature = "image")]
mod png {
    use super::{from_interleaved, Image, Limit};
    use std::io::Cursor;

    /// Deflate expands at most 1032-fold: a file cannot hold more filtered pixel bytes than this
    /// many times its own size.
    const MAX_DEFLATE_RATIO: usize = 1100;

    pub fn decode(bytes: &[u8], limit: Limit) -> std::result::Result<Image, String> {
        let err = |e: ::png::DecodingError| match e {
            ::png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                "the file ends early (truncated?)".to_string()
            }
            e => e.to_string(),
        };
        let mut dec = ::png::Decoder::new(Cursor::new(bytes));
        // Palettes → RGB(A), gray below 8 bits → 8 bits, tRNS → an alpha channel; 16 bits kept.
        dec.set_transformations(::png::Transformations::EXPAND);
        let info = dec.read_header_info().map_err(err)?;
        let (width, height) = limit.check(info.width as u64, info.height as u64)?;
        let mut reader = dec.read_info().map_err(err)?;
        let size = reader.output_buffer_size().ok_or("the image does not fit in memory")?;
        if size > MAX_DEFLATE_RATIO.saturating_mul(bytes.len()).saturating_add(1 << 16) {
            return Err(format!(
                "the header declares {width}×{height} pixels ({size} bytes), more than a {}-byte file can hold",
                bytes.len()
            ));
        }
        let mut buf = vec![0u8; size];
        let frame = reader.next_frame(&mut buf).map_err(err)?;
        let (color, depth) = reader.output_color_type();
        let channels = color.samples();
        if !(1..=4).contains(&channels) || (frame.width as usize, frame.height as usize) != (width, height) {
            return Err(format!("unexpected decoder output: {channels} channels, {}×{}", frame.width, frame.height));
        }
        let buf = &buf[..frame.buffer_size()];
        let need = width * height * channels * if depth == ::png::BitDepth::Sixteen { 2 } else { 1 };
        if buf.len() < need {
            return Err(format!("the decoder returned {} bytes, {need} expected", buf.len()));
        }
        Ok(match depth {
            ::png::BitDepth::Sixteen => from_interleaved(
                channels,
                height,
                width,
                buf.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0),
            ),
            ::png::BitDepth::Eight => from_interleaved(channels, height, width, buf.iter().map(|&b| b as f32 / 255.0)),
            other => return Err(format!("unexpected decoder output depth {other:?}")),
        })
    }
}

#[cfg(feature = "image")]
mod jpeg {
    use super::{from_interleaved, Image, Limit, MAX_PIXELS};
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    pub fn decode(bytes: &[u8], limit: Limit) -> std::result::Result<Image, String> {
        check_frame(bytes)?;
        // Belt and braces: a decoder panic on a file that passed our checks becomes an error
        // (the panic message still reaches stderr through the panic hook).
        std::panic::catch_unwind(|| decode_checked(bytes, limit))
            .unwrap_or_else(|_| Err("the JPEG decoder failed on this file (corrupt or unsupported)".into()))
    }

    fn decode_checked(bytes: &[u8], limit: Limit) -> std::result::Result<Image, String> {
        let side = MAX_PIXELS as usize; // the pixel count is checked below; this only lifts zune's 16384 cap
        let opts = DecoderOptions::default().set_strict_mode(true).set_max_width(side).set_max_height(side);
        // Headers first: the size (checked before decoding) and the colorspace.
        let mut head = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
        head.decode_headers().map_err(|e| e.to_string())?;
        let (width, height) = head.dimensions().ok_or("the decoder reported no size")?;
        let (width, height) = limit.check(width as u64, height as u64)?;
        let gray = head.input_colorspace() == Some(ColorSpace::Luma);
        let (out, channels) = if gray { (ColorSpace::Luma, 1) } else { (ColorSpace::RGB, 3) };
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), opts.jpeg_set_out_colorspace(out));
        dec.decode_headers().map_err(|e| e.to_string())?;
        let size = dec.output_buffer_size().ok_or("the image does not fit in memory")?;
        if size != width * height * channels {
            return Err(format!("the decoder wants {size} bytes for a {width}×{height}×{channels} image"));
        }
        let mut buf = vec![0u8; size];
        dec.decode_into(&mut buf).map_err(|e| e.to_string())?;
        // zune-jpeg pads a scan that stops early; a complete file ends with its EOI marker.
        check_complete(bytes)?;
        Ok(from_interleaved(channels, height, width, buf.iter().map(|&b| b as f32 / 255.0)))
    }

    /// Checks the frame header (SOF) before the decoder sees it: 1 to 4 components, sampling
    /// factors 1…4, and no component sampled more densely than the first. Files breaking the
    /// last rule (no camera or encoder writes them) made zune-jpeg 0.5.15 index past its output
    /// and panic (found by the `image` fuzz target).
    fn check_frame(b: &[u8]) -> std::result::Result<(), String> {
        let mut pos = 2;
        while let (Some(&0xff), Some(&marker)) = (b.get(pos), b.get(pos + 1)) {
            if marker == 0xff {
                pos += 1;
                continue;
            }
            let Some(len) = b.get(pos + 2..pos + 4) else { break };
            let len = u16::from_be_bytes([len[0], len[1]]) as usize;
            let seg = b.get(pos + 4..(pos + 2 + len).max(pos + 4)).unwrap_or(&[]);
            if matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                // P, Y (2), X (2), Nf, then Nf × (C, H<<4 | V, Tq).
                let nf = *seg.get(5).ok_or("truncated frame header")? as usize;
                if !(1..=4).contains(&nf) {
                    return Err(format!("{nf} components in the frame header (1 to 4 supported)"));
                }
                let comps = seg.get(6..6 + 3 * nf).ok_or("truncated frame header")?;
                let hv: Vec<(u8, u8)> = comps.chunks_exact(3).map(|c| (c[1] >> 4, c[1] & 15)).collect();
                if hv.iter().any(|&(h, v)| !(1..=4).contains(&h) || !(1..=4).contains(&v)) {
                    return Err(format!("sampling factors {hv:?} outside 1..=4"));
                }
                let (h0, v0) = hv[0];
                if hv.iter().any(|&(h, v)| h > h0 || v > v0) {
                    return Err(format!(
                        "sampling factors {hv:?}: a component sampled more densely than the first is not supported"
                    ));
                }
                return Ok(());
            }
            if marker == 0xda || marker == 0xd9 {
                break;
            }
            pos += 2 + len.max(2);
        }
        Ok(()) // no frame header found here: the decoder reports it
    }

    /// Walks the marker segments (skipping each by its length, so an EXIF thumbnail's own
    /// markers are not seen) and the entropy-coded data after each SOS, and requires the
    /// end-of-image marker: a file cut anywhere before it is truncated.
    fn check_complete(b: &[u8]) -> std::result::Result<(), String> {
        const TRUNCATED: &str = "the file ends before its end-of-image marker (truncated?)";
        let mut pos = 2; // after SOI
        loop {
            if b.get(pos) != Some(&0xff) {
                return Err(if pos >= b.len() { TRUNCATED.into() } else { format!("no marker at offset {pos}") });
            }
            while b.get(pos + 1) == Some(&0xff) {
                pos += 1; // fill bytes
            }
            let Some(&marker) = b.get(pos + 1) else { return Err(TRUNCATED.into()) };
            match marker {
                0xd9 => return Ok(()),
                0x01 | 0xd0..=0xd7 => pos += 2,
                _ => {
                    let len = b.get(pos + 2..pos + 4).ok_or(TRUNCATED)?;
                    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                    if len < 2 {
                        return Err(format!("marker segment of length {len} at offset {pos}"));
                    }
                    pos += 2 + len;
                    if marker == 0xda {
                        // Entropy-coded data: up to the next marker that is not a stuffed
                        // 0xFF 0x00 or a restart marker.
                        while pos < b.len() {
                            if b[pos] == 0xff && pos + 1 < b.len() {
                                match b[pos + 1] {
                                    0x00 | 0xd0..=0xd7 => pos += 2,
                                    0xff => pos += 1,
                                    _ => break,
                                }
                            } else {
                                pos += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "image"))]
mod png {
    pub fn decode(_: &[u8], _: super::Limit) -> std::result::Result<super::Image, String> {
        Err("this build has no PNG decoder (rebuild with the cargo feature `image`)".into())
    }
}

#[cfg(not(feature = "image"))]
mod jpeg {
    pub fn decode(_: &[u8], _: super::Limit) -> std::result::Result<super::Image, String> {
        Err("this build has no JPEG decoder (rebuild with the cargo feature `image`)".into())
    }
}

/// Netpbm gray and color maps: `P2`/`P5` (PGM) and `P3`/`P6` (PPM).
fn decode_pnm(bytes: &[u8], limit: Limit) -> std::result::Result<Image, String> {
    let kind = bytes[1];
    let (channels, ascii) = match kind {
        b'2' => (1, true),
        b'5' => (1, false),
        b'3' => (3, true),
        b'6' => (3, false),
        b'1' | b'4' => return Err("PBM bitmaps (P1/P4) are not supported; convert to PGM or PNG".into()),
        _ => return Err(format!("P{} (PAM or unknown) is not supported; use P2, P3, P5 or P6", kind as char)),
    };
    if !bytes.get(2).is_some_and(|&c| c.is_ascii_whitespace() || c == b'#') {
        return Err("the magic number must be followed by whitespace".into());
    }
    let mut cur = PnmCursor { bytes, pos: 2 };
    let width = cur.number("width")?;
    let height = cur.number("height")?;
    let maxval = cur.number("maxval")?;
    if !(1..=65535).contains(&maxval) {
        return Err(format!("maxval {maxval} is outside 1..=65535"));
    }
    let (width, height) = limit.check(width, height)?;
    let n = width * height * channels;
    let left = bytes.len() - cur.pos;
    if ascii && n > left {
        // Each sample takes at least one digit: refuse before allocating for them.
        return Err(format!(
            "{width}×{height}×{channels} samples cannot fit in the {left} bytes left (truncated file?)"
        ));
    }
    let check = |v: u64, i: usize| {
        if v > maxval {
            Err(format!("sample {i} is {v}, above the maxval {maxval}"))
        } else {
            Ok(v as f32 / maxval as f32)
        }
    };
    let mut samples = Vec::with_capacity(n);
    if ascii {
        for i in 0..n {
            let v = cur.number("next sample").map_err(|e| format!("sample {i} of {n}: {e}"))?;
            samples.push(check(v, i)?);
        }
    } else {
        // Exactly one whitespace byte after the maxval, then the raster.
        match bytes.get(cur.pos) {
            Some(b) if b.is_ascii_whitespace() => cur.pos += 1,
            _ => return Err("no whitespace byte between the maxval and the raster".into()),
        }
        let bps = if maxval > 255 { 2 } else { 1 };
        let raster = bytes.get(cur.pos..).unwrap_or(&[]);
        if raster.len() < n * bps {
            return Err(format!(
                "{width}×{height}×{channels} samples of {bps} byte(s) need {} bytes, only {} present (truncated file?)",
                n * bps,
                raster.len()
            ));
        }
        // Bytes after the raster (a second image of a multi-image file) are ignored.
        if bps == 1 {
            for (i, &b) in raster[..n].iter().enumerate() {
                samples.push(check(b as u64, i)?);
            }
        } else {
            for (i, b) in raster[..2 * n].chunks_exact(2).enumerate() {
                samples.push(check(u16::from_be_bytes([b[0], b[1]]) as u64, i)?);
            }
        }
    }
    Ok(from_interleaved(channels, height, width, samples.into_iter()))
}

/// Reads the whitespace-separated decimal numbers of a PGM/PPM header (and of a plain raster).
struct PnmCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl PnmCursor<'_> {
    /// Skips whitespace and `#` comments, then reads a decimal number (at most 12 digits).
    fn number(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.bytes;
        loop {
            match b.get(self.pos) {
                Some(c) if c.is_ascii_whitespace() => self.pos += 1,
                Some(b'#') => {
                    while b.get(self.pos).is_some_and(|&c| c != b'\n' && c != b'\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        let start = self.pos;
        while b.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(match b.get(self.pos) {
                None => format!("the file ends before the {what} (truncated?)"),
                Some(&c) => format!("expected the {what}, found byte {c:#04x} at offset {}", self.pos),
            });
        }
        let digits = &b[start..self.pos];
        if digits.len() > 12 {
            return Err(format!("the {what} {}… is too large", String::from_utf8_lossy(&digits[..12])));
        }
        Ok(digits.iter().fold(0u64, |v, d| v * 10 + (d - b'0') as u64))
    }
}
