//! A small argument parser: `command [positional…] [--flag value | --switch]…`.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Parsed arguments of one subcommand. Every flag must be consumed, or [`Args::finish`] errors.
pub struct Args {
    pub positional: Vec<String>,
    flags: BTreeMap<String, Option<String>>,
    used: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

/// Switches that take no value.
const SWITCHES: [&str; 8] = ["json", "resume", "strict", "non-strict", "quick", "help", "no-progress", "sgd"];

impl Args {
    pub fn parse(raw: &[String]) -> Result<Args, String> {
        let mut positional = Vec::new();
        let mut flags = BTreeMap::new();
        let mut it = raw.iter().peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                let value = if inline.is_some() || SWITCHES.contains(&name.as_str()) {
                    inline
                } else {
                    Some(it.next().ok_or_else(|| format!("--{name} needs a value"))?.clone())
                };
                flags.insert(name, value);
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Args { positional, flags, used: Default::default() })
    }

    /// A flag's value parsed as `T`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// A flag's value parsed as `T`, if given.
    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.used.borrow_mut().insert(name.to_string());
        match self.flags.get(name) {
            None => Ok(None),
            Some(None) => Err(format!("--{name} needs a value")),
            Some(Some(v)) => v.parse::<T>().map(Some).map_err(|_| format!("--{name}: cannot read `{v}`")),
        }
    }

    /// A string flag, if given.
    pub fn str(&self, name: &str) -> Option<String> {
        self.used.borrow_mut().insert(name.to_string());
        self.flags.get(name).cloned().flatten()
    }

    /// Whether a switch is present.
    pub fn has(&self, name: &str) -> bool {
        self.used.borrow_mut().insert(name.to_string());
        self.flags.contains_key(name)
    }

    /// Errors on flags no one asked for (typos) and on extra positional arguments.
    pub fn finish(&self, max_positional: usize) -> Result<(), String> {
        let used = self.used.borrow();
        if let Some(k) = self.flags.keys().find(|k| !used.contains(*k)) {
            return Err(format!("unknown option --{k} (see `consolidator help`)"));
        }
        if self.positional.len() > max_positional {
            return Err(format!("unexpected argument `{}`", self.positional[max_positional]));
        }
        Ok(())
    }
}
