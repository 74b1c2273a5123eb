//! Printing untrusted text: file metadata, tensor keys and file names can hold control
//! characters. Written to a terminal as they are, `ESC [ 2 J` clears the screen, `ESC ] 52 ;`
//! can write the clipboard, a carriage return overwrites what was printed, and Unicode
//! bidirectional overrides reorder what the reader sees. [`escape_text`] (or the [`Escaped`]
//! display wrapper) makes every such character visible as an escape.
//!
//! Escaped: the backslash itself (`\\`, so the output is unambiguous), C0 controls
//! (`\n`, `\r`, `\t`, `\0`, others `\x1b` style), DEL (`\x7f`), C1 controls U+0080–U+009F
//! (`\u{9b}` style; U+009B is the one-character CSI), and the bidirectional formatting
//! characters U+202A–U+202E, U+2066–U+2069 and the line/paragraph separators U+2028/U+2029.
//! Everything else, including other non-ASCII text, is kept.
//!
//! ```
//! use consolidator::io::text::{escape_text, Escaped};
//! assert_eq!(escape_text("vit\u{1b}[2Jtiny\n"), "vit\\x1b[2Jtiny\\n");
//! assert_eq!(escape_text("poids à jour"), "poids à jour");
//! assert_eq!(format!("{}", Escaped("a\u{9b}b\\")), "a\\u{9b}b\\\\");
//! ```

use std::fmt::{self, Write as _};

/// `s` cut to at most `max` characters (with `…` when cut): for quoting untrusted values in error
/// messages, which must stay readable whatever a file holds.
///
/// ```
/// assert_eq!(consolidator::io::text::shorten("abcdef", 4), "abc…");
/// assert_eq!(consolidator::io::text::shorten("abc", 4), "abc");
/// ```
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with control characters escaped (see the module docs).
pub fn escape_text(s: &str) -> String {
    Escaped(s).to_string()
}

/// Displays a string with control characters escaped (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\0' => f.write_str("\\0")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// C1 controls, bidirectional formatting characters and the Unicode line separators.
fn needs_escape(c: char) -> bool {
    matches!(c, '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0).chain([0x202e, 0x2066, 0x2028]) {
            let c = char::from_u32(c).unwrap();
            let out = escape_text(&c.to_string());
            assert!(out.starts_with('\\') && out.chars().all(|d| d.is_ascii_graphic()), "{c:?} -> {out:?}");
        }
        assert_eq!(escape_text("plain ASCII ~ text"), "plain ASCII ~ text");
        assert_eq!(escape_text("é😀"), "é😀");
    }
}
