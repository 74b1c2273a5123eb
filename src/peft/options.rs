//! The options of a method string (`lora:r=8,layers=qkv+fc2`), read with their ranges checked.

use crate::{Error, Result};

/// A method's options, `key=value` or bare `flag`, comma-separated. Each getter checks its
/// value; [`Options::finish`] refuses options no getter asked for.
pub struct Options {
    method: String,
    pairs: Vec<(String, Option<String>)>,
    asked: Vec<&'static str>,
}

impl Options {
    /// Splits `opts` (the part after `name:`) for method `method`. A repeated option is an error.
    pub fn parse(method: &str, opts: &str) -> Result<Options> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = match o.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (o.to_string(), None),
            };
            if pairs.iter().any(|(p, _)| *p == k) {
                return Err(Error::invalid(
                    "method",
                    format!("`{method}`: option `{}` is given twice", crate::io::text::shorten(&k, 80).escape_debug()),
                ));
            }
            pairs.push((k, v));
        }
        Ok(Options { method: method.to_string(), pairs, asked: Vec::new() })
    }

    fn take(&mut self, key: &'static str) -> Option<Option<String>> {
        self.asked.push(key);
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn err(&self, msg: String) -> Error {
        Error::invalid("method", format!("`{}`: {msg}", self.method))
    }

    /// The value of `key`, if given (a bare `key` without `=value` is an error).
    pub fn value(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(self.err(format!("option `{key}` needs a value (`{key}=…`)"))),
        }
    }

    /// Whether the bare flag `key` is given (`key=value` is an error).
    pub fn flag(&mut self, key: &'static str) -> Result<bool> {
        match self.take(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => Err(self.err(format!(
                "option `{key}` takes no value (got `{key}={}`)",
                crate::io::text::shorten(&v, 80).escape_debug()
            ))),
        }
    }

    /// A whole number in `lo..=hi`, if given.
    pub fn whole(&mut self, key: &'static str, lo: usize, hi: usize) -> Result<Option<usize>> {
        let Some(v) = self.value(key)? else { return Ok(None) };
        Ok(Some(self.whole_in(key, &v, lo, hi)?))
    }

    /// Parses one whole number in `lo..=hi` for option `key`.
    pub fn whole_in(&self, key: &str, v: &str, lo: usize, hi: usize) -> Result<usize> {
        match v.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(self.err(format!(
                "option `{key}` needs a whole number in {lo}..={hi}, got `{}`",
                crate::io::text::shorten(v, 80).escape_debug()
            ))),
        }
    }

    /// A finite number in the interval from `lo` to `hi`, each end open or closed
    /// (`open = (lo_open, hi_open)`), if given.
    pub fn number(&mut self, key: &'static str, lo: f32, hi: f32, open: (bool, bool)) -> Result<Option<f32>> {
        let Some(v) = self.value(key)? else { return Ok(None) };
        let inside =
            |x: f32| x.is_finite() && if open.0 { x > lo } else { x >= lo } && if open.1 { x < hi } else { x <= hi };
        match v.parse::<f32>() {
            Ok(x) if inside(x) => Ok(Some(x)),
            _ => Err(self.err(format!(
                "option `{key}` needs a number in {}{lo}, {hi}{}, got `{}`",
                if open.0 { "(" } else { "[" },
                if open.1 { ")" } else { "]" },
                crate::io::text::shorten(&v, 80).escape_debug()
            ))),
        }
    }

    /// Errors on an option no getter asked for.
    pub fn finish(self) -> Result<()> {
        if let Some((k, _)) = self.pairs.first() {
            let known = if self.asked.is_empty() { "it takes none".to_string() } else { self.asked.join(", ") };
            return Err(
                self.err(format!("unknown option `{}` ({known})", crate::io::text::shorten(k, 80).escape_debug()))
            );
        }
        Ok(())
    }
}

/// Which of a block's four FC layers a method touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSet {
    /// `attn.qkv`.
    pub qkv: bool,
    /// `attn.proj`.
    pub proj: bool,
    /// `mlp.fc1`.
    pub fc1: bool,
    /// `mlp.fc2`.
    pub fc2: bool,
}

impl LayerSet {
    /// All four.
    pub const ALL: LayerSet = LayerSet { qkv: true, proj: true, fc1: true, fc2: true };

    /// Whether the FC layer with key `key` (`blocks.3.attn.qkv.`) is in the set.
    pub fn contains(&self, key: &str) -> bool {
        (self.qkv && key.ends_with("attn.qkv."))
            || (self.proj && key.ends_with("attn.proj."))
            || (self.fc1 && key.ends_with("mlp.fc1."))
            || (self.fc2 && key.ends_with("mlp.fc2."))
    }

    /// Reads the `layers` option (`qkv+fc2`, `all`), if given.
    pub fn option(opts: &mut Options) -> Result<Option<LayerSet>> {
        let Some(v) = opts.value("layers")? else { return Ok(None) };
        let mut l = LayerSet { qkv: false, proj: false, fc1: false, fc2: false };
        for part in v.split('+') {
            match part {
                "qkv" => l.qkv = true,
                "proj" => l.proj = true,
                "fc1" => l.fc1 = true,
                "fc2" => l.fc2 = true,
                "all" => l = LayerSet::ALL,
                _ => {
                    return Err(opts.err(format!(
                        "unknown layer `{}` in `layers` (qkv, proj, fc1, fc2, all; joined by +)",
                        crate::io::text::shorten(part, 80).escape_debug()
                    )))
                }
            }
        }
        Ok(Some(l))
    }
}

impl std::fmt::Display for LayerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [(self.qkv, "qkv"), (self.proj, "proj"), (self.fc1, "fc1"), (self.fc2, "fc2")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{}", names.join("+"))
    }
}
