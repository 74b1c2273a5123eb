//! A small JSON value type, a strict parser that is safe on hostile input, and a serializer.
//!
//! Used for safetensors headers, run configurations and metric files. Objects keep their key order
//! (a `Vec` of pairs), so what is written reads back in the same order.
//!
//! The parser follows RFC 8259 strictly and never panics: nesting is limited to [`MAX_DEPTH`],
//! input to [`MAX_INPUT`] bytes, number literals to [`MAX_NUMBER_LEN`] characters; strings must be
//! valid UTF-8 with proper escapes (`\uXXXX` including surrogate pairs; lone surrogates are
//! refused); numbers must be finite as `f64`; an object may not repeat a key. Every error is an
//! [`Error::Format`] naming the source and the byte offset.
//!
//! ```
//! use consolidator::io::json::Json;
//! let v = Json::parse(br#"{"name": "vit", "dims": [3, 28, 28], "ok": true}"#, "example").unwrap();
//! assert_eq!(v.get("name").and_then(Json::as_str), Some("vit"));
//! assert_eq!(v.get("dims").and_then(|d| d.at(1)).and_then(Json::as_usize), Some(28));
//! assert_eq!(v.to_string(), r#"{"name":"vit","dims":[3,28,28],"ok":true}"#);
//! assert!(Json::parse(b"[1, 2", "example").is_err());
//! ```

use crate::{Error, Result};
use std::collections::HashSet;
use std::fmt::{self, Write as _};

/// Deepest nesting of arrays and objects the parser accepts.
pub const MAX_DEPTH: usize = 128;
/// Longest input the parser accepts, in bytes (256 MiB).
pub const MAX_INPUT: usize = 256 << 20;
/// Longest number literal the parser accepts, in characters.
pub const MAX_NUMBER_LEN: usize = 400;

/// A JSON value. Objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number (always finite).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, in key order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (surrounding whitespace allowed). `what` names the source in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Json> {
        Json::parse_limited(bytes, what, usize::MAX)
    }

    /// Like [`Json::parse`], but refuses documents holding more than `max_values` values (every
    /// scalar, array and object counts one). A parsed value takes up to 32 bytes while its text can
    /// be 2 bytes (`0,`), so this bounds memory on hostile input more tightly than the input size.
    pub fn parse_limited(bytes: &[u8], what: &str, max_values: usize) -> Result<Json> {
        if bytes.len() > MAX_INPUT {
            return Err(Error::format(
                what,
                format!("JSON text of {} bytes exceeds the {MAX_INPUT}-byte limit", bytes.len()),
            ));
        }
        let mut p = Parser { b: bytes, pos: 0, what, values: 0, max_values };
        p.skip_ws();
        let v = p.value(0)?;
        p.skip_ws();
        if p.pos != bytes.len() {
            return Err(p.err("unexpected data after the JSON value"));
        }
        Ok(v)
    }

    /// Parses a `&str` (see [`Json::parse`]).
    pub fn parse_str(text: &str, what: &str) -> Result<Json> {
        Json::parse(text.as_bytes(), what)
    }

    /// A number, or `null` when `v` is not finite (JSON has no NaN or infinity): what a metric
    /// that may have diverged should be written as.
    pub fn num(v: f64) -> Json {
        if v.is_finite() {
            Json::Num(v)
        } else {
            Json::Null
        }
    }

    /// An object from `(key, value)` pairs, in the given order.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The value of `key` if `self` is an object that has it (the first one, should there be two).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Element `i` if `self` is an array long enough.
    pub fn at(&self, i: usize) -> Option<&Json> {
        self.as_array().and_then(|a| a.get(i))
    }

    /// The string, if `self` is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if `self` is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(v) => Some(*v),
            _ => None,
        }
    }

    /// The number as a `usize`, if it is a non-negative integer not above 2^53 (exact in `f64`)
    /// that fits `usize`.
    pub fn as_usize(&self) -> Option<usize> {
        self.as_u64().and_then(|v| usize::try_from(v).ok())
    }

    /// The number as a `u64`, if it is a non-negative integer not above 2^53 (exact in `f64`).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(v) if *v >= 0.0 && v.fract() == 0.0 && *v <= 9_007_199_254_740_992.0 => Some(*v as u64),
            _ => None,
        }
    }

    /// The number as an `i64`, if it is an integer of magnitude not above 2^53.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(v) if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 => Some(*v as i64),
            _ => None,
        }
    }

    /// The boolean, if `self` is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if `self` is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// The `(key, value)` pairs, if `self` is an object.
    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(o) => Some(o),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Multi-line rendering with two-space indentation (same escaping as [`fmt::Display`]).
    pub fn to_string_pretty(&self) -> String {
        let mut s = String::new();
        write_pretty(self, 0, &mut s);
        s
    }
}

impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
/// Non-finite values become `null` (see [`Json::num`]).
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::num(v)
    }
}
/// Non-finite values become `null` (see [`Json::num`]).
impl From<f32> for Json {
    fn from(v: f32) -> Self {
        Json::num(v as f64)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::Num(v as f64)
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Self {
        Json::Num(v as f64)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl From<Vec<Json>> for Json {
    fn from(v: Vec<Json>) -> Self {
        Json::Arr(v)
    }
}

/// Compact rendering: no whitespace. Non-finite numbers (which JSON cannot hold) are written as
/// `null`; integers up to 2^53 are written without a fraction; other numbers in the shortest form
/// that reads back to the same `f64`.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_compact(self, &mut s);
        f.write_str(&s)
    }
}

fn write_compact(v: &Json, out: &mut String) {
    match v {
        Json::Arr(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact(x, out);
            }
            out.push(']');
        }
        Json::Obj(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_compact(x, out);
            }
            out.push('}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_pretty(v: &Json, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', 2 * n));
    match v {
        Json::Arr(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                pad(indent + 1, out);
                write_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push(']');
        }
        Json::Obj(o) if !o.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                pad(indent + 1, out);
                write_string(k, out);
                out.push_str(": ");
                write_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push('}');
        }
        other => write_compact(other, out),
    }
}

fn write_scalar(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(x) => write_number(*x, out),
        Json::Str(s) => write_string(s, out),
        Json::Arr(_) | Json::Obj(_) => write_compact(v, out),
    }
}

fn write_number(x: f64, out: &mut String) {
    if !x.is_finite() {
        out.push_str("null");
    } else if x == 0.0 && x.is_sign_negative() {
        out.push_str("-0");
    } else if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_992.0 {
        let _ = write!(out, "{}", x as i64);
    } else {
        // `{:?}` is the shortest representation that parses back to the same f64 ("1e300", "0.1").
        let _ = write!(out, "{x:?}");
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'a str,
    values: usize,
    max_values: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl fmt::Display) -> Error {
        Error::format(self.what, format!("JSON: {msg} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_lit(&mut self, lit: &[u8], v: Json) -> Result<Json> {
        if self.b[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal (expected null, true, false, a number, a string, an array or an object)"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json> {
        self.values += 1;
        if self.values > self.max_values {
            return Err(self.err(format_args!("more than {} values in the document", self.max_values)));
        }
        match self.peek() {
            None => Err(self.err("unexpected end of input, expected a value")),
            Some(b'n') => self.expect_lit(b"null", Json::Null),
            Some(b't') => self.expect_lit(b"true", Json::Bool(true)),
            Some(b'f') => self.expect_lit(b"false", Json::Bool(false)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                self.check_depth(depth)?;
                self.array(depth + 1)
            }
            Some(b'{') => {
                self.check_depth(depth)?;
                self.object(depth + 1)
            }
            Some(c) => Err(self.err(format_args!("unexpected character {:?}, expected a value", c as char))),
        }
    }

    fn check_depth(&self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.err(format_args!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Json> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                None => return Err(self.err("unexpected end of input inside an array")),
                Some(_) => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json> {
        self.pos += 1; // '{'
        let mut pairs: Vec<(String, Json)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Obj(pairs));
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.err("unexpected end of input inside an object")),
                Some(_) => return Err(self.err("expected a string key in an object")),
            }
            let key_pos = self.pos;
            let key = self.string()?;
            if !seen.insert(key.clone()) {
                self.pos = key_pos;
                return Err(self.err(format_args!("duplicate key {key:?}")));
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            pairs.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Obj(pairs));
                }
                None => return Err(self.err("unexpected end of input inside an object")),
                Some(_) => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits =
            self.b.get(self.pos..self.pos + 4).ok_or_else(|| self.err("unexpected end of input in a \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let x = (d as char).to_digit(16).ok_or_else(|| self.err("invalid hex digit in a \\u escape"))?;
            v = v * 16 + x;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        self.pos += 1; // '"'
        let mut out: Vec<u8> = Vec::new();
        loop {
            // Copy the run of plain bytes up to the next quote, backslash or control character.
            let run_start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.b[run_start..self.pos]);
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|e| {
                        let off = start + 1 + e.utf8_error().valid_up_to();
                        Error::format(self.what, format!("JSON: invalid UTF-8 in a string near byte {off}"))
                    });
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unexpected end of input in an escape"))?;
                    self.pos += 1;
                    let simple = match esc {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(8),
                        b'f' => Some(12),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => {
                            self.pos -= 2;
                            return Err(self.err(format_args!("invalid escape \\{}", (esc as char).escape_default())));
                        }
                    };
                    if let Some(c) = simple {
                        out.push(c);
                        continue;
                    }
                    let esc_pos = self.pos - 2;
                    let hi = self.hex4()?;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            self.pos = esc_pos;
                            return Err(self.err("unpaired high surrogate in a \\u escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            self.pos = esc_pos;
                            return Err(self.err("invalid low surrogate in a \\u escape"));
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00..0xE000).contains(&hi) {
                        self.pos = esc_pos;
                        return Err(self.err("unpaired low surrogate in a \\u escape"));
                    } else {
                        hi
                    };
                    // Valid by construction: surrogates were excluded above.
                    let c = char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => {
                    return Err(self.err("control character in a string (must be escaped)"));
                }
            }
        }
    }

    fn number(&mut self) -> Result<Json> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("expected a digit in a number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit in the exponent"));
            }
            self.digits();
        }
        let len = self.pos - start;
        if len > MAX_NUMBER_LEN {
            self.pos = start;
            return Err(self.err(format_args!("number literal longer than {MAX_NUMBER_LEN} characters")));
        }
        // The grammar above only admits ASCII, so this is valid UTF-8 and a valid Rust float.
        let text = std::str::from_utf8(&self.b[start..self.pos]).unwrap_or("x");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Json::Num(v)),
            _ => {
                self.pos = start;
                Err(self.err("number out of the f64 range"))
            }
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Json> {
        Json::parse(s.as_bytes(), "test")
    }

    #[test]
    fn scalars_and_escapes() {
        assert_eq!(p(" null ").unwrap(), Json::Null);
        assert_eq!(p("-0.5e1").unwrap(), Json::Num(-5.0));
        assert_eq!(
            p(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap(),
            Json::Str("a\"\\/\u{8}\u{c}\n\r\té😀".into())
        );
        for bad in [
            "",
            "nul",
            "01",
            "1.",
            "-",
            "1e",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "\"a\nb\"",
            "1e999",
            "{\"a\":1,\"a\":2}",
            "[1] 2",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(p(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(p(&deep).unwrap_err().to_string().contains("nesting"));
        let bomb = "[".repeat(1_000_000);
        assert!(p(&bomb).is_err());
    }

    #[test]
    fn value_limit() {
        let text = "[0,0,0]";
        assert!(Json::parse(text.as_bytes(), "t").is_ok());
        assert!(Json::parse_limited(text.as_bytes(), "t", 4).is_ok());
        let e = Json::parse_limited(text.as_bytes(), "t", 3).unwrap_err();
        assert!(e.to_string().contains("more than 3 values"), "{e}");
    }

    #[test]
    fn non_finite_numbers_and_any_string_serialize_to_valid_json() {
        assert_eq!(Json::num(f64::NAN), Json::Null);
        assert_eq!(Json::from(f32::INFINITY), Json::Null);
        assert_eq!(Json::num(-2.5), Json::Num(-2.5));
        assert_eq!(Json::Arr(vec![Json::Num(f64::NEG_INFINITY)]).to_string(), "[null]");
        // Every char below U+0100, the separators and a surrogate-pair character round-trip.
        let s: String = (0u32..0x100).chain([0x2028, 0x2029, 0x1f600]).filter_map(char::from_u32).collect();
        let v = Json::obj([(s.clone(), Json::Str(s))]);
        assert_eq!(p(&v.to_string()).unwrap(), v);
        assert_eq!(p(&v.to_string_pretty()).unwrap(), v);
        assert!(v.to_string().bytes().all(|b| b >= 0x20), "raw control bytes in the output");
    }

    #[test]
    fn round_trip() {
        let v = Json::obj([
            ("s", Json::from("q\"\\\u{1}\u{7f}é")),
            ("n", Json::from(vec![Json::Num(0.1), Json::Num(-0.0), Json::Num(1e300)])),
            ("o", Json::obj([("x", Json::Null), ("y", Json::Bool(false))])),
            ("e", Json::Arr(vec![])),
        ]);
        assert_eq!(p(&v.to_string()).unwrap(), v);
        assert_eq!(p(&v.to_string_pretty()).unwrap(), v);
    }
}
