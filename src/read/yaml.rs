//! The one place that knows the YAML parser. Declarations and the config go through here, so
//! the parser can be swapped without touching what the documents mean.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Parse one YAML document into `T`. An empty document, or one with only comments, is `None`:
/// an empty file in `/etc/limopack/modules.d` masks a vendor file, and an empty config means
/// all defaults.
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Option<T>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
        Error::syntax(path, line, column, "not valid UTF-8")
    })?;
    // Blank is empty, tabs included, which YAML would otherwise reject as indentation.
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_yaml::from_str::<Option<T>>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = strip_location(&e.to_string(), line, column);
        let (line, column) = quoted_place(text, &message, line, column).unwrap_or((line, column));
        Error::syntax(path, line, column, message)
    })
}

/// A string and nothing else: YAML reads `123`, `true` or `~` as a number, a boolean or
/// null, and a parser that takes any scalar as a string would let `modules: [123, true]`
/// through as module names. Used by the entries of declarations and the config.
pub fn string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    struct Strict;
    impl serde::de::Visitor<'_> for Strict {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string (quote a name that YAML would read as a number or a boolean)")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<String, E> {
            Ok(text.to_string())
        }
    }
    d.deserialize_any(Strict)
}

/// A scalar as read: text, or a value of another type (`123`, `true`, `~`) with its text
/// and what YAML took it for.
pub enum Scalar {
    Text(String),
    Other(String, &'static str),
}

/// A scalar of any type, told apart; a list or a mapping is an error, as for [`string`].
pub fn scalar_of<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Scalar, D::Error> {
    struct Any;
    impl serde::de::Visitor<'_> for Any {
        type Value = Scalar;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string (quote a name that YAML would read as a number or a boolean)")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Text(text.to_string()))
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Other(b.to_string(), "boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Other(n.to_string(), "integer"))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Other(n.to_string(), "integer"))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Other(n.to_string(), "floating point"))
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Scalar, E> {
            Ok(Scalar::Other("null".into(), "null"))
        }
    }
    d.deserialize_any(Any)
}

/// Line and column of the mapping key `key` at the start of a line of `text`; (1, 1) when
/// not found. serde gives no place for a key it was handed whole.
pub fn place_of_key(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(n, line)| {
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            rest.strip_prefix(key).filter(|r| r.trim_start().starts_with(':')).map(|_| (n + 1, indent + 1))
        })
        .unwrap_or((1, 1))
}

/// Line and column of the value `raw` under the key `key`: its first appearance after the
/// key, at its opening quote if it is quoted; the key's place when it is not found.
pub fn place_of_value(text: &str, key: &str, raw: &str) -> (usize, usize) {
    let (key_line, _) = place_of_key(text, key);
    let start: usize = text.split_inclusive('\n').take(key_line - 1).map(str::len).sum();
    let found = match raw.is_empty() {
        true => ["\"\"", "''"].iter().filter_map(|q| text[start..].find(q)).min(),
        false => text[start..].find(raw).map(|at| match at > 0 && matches!(text.as_bytes()[start + at - 1], b'"' | b'\'') {
            true => at - 1,
            false => at,
        }),
    };
    match found {
        Some(at) => line_column(text.as_bytes(), start + at),
        None => place_of_key(text, key),
    }
}

/// `text` as a YAML scalar: plain when it is a word that starts with a letter or `_` and
/// holds only letters, digits, `_`, `-` and `.` (and is not a boolean or null), else
/// double-quoted (a JSON string is a valid double-quoted YAML scalar), so that aliases and
/// globs such as `pci:v00008086d*` or `*.pnvm` read back as written.
pub fn scalar(text: &str) -> String {
    let bare = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"].contains(&text.to_ascii_lowercase().as_str());
    match bare {
        true => text.to_string(),
        false => serde_json::Value::from(text).to_string(),
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the place up front,
/// the way compilers and linters do, so it is dropped from the message.
fn strip_location(message: &str, line: usize, column: usize) -> String {
    let suffix = format!(" at line {line} column {column}");
    match message.find(&suffix) {
        Some(at) => format!("{}{}", &message[..at], &message[at + suffix.len()..]),
        None => message.to_string(),
    }
}

/// serde_yaml places an error raised by a list item at the start of the list. When the message
/// quotes the offending value (`` `../x` is a path ``), point at that value instead: the first
/// place it appears at or after where serde_yaml looked.
fn quoted_place(text: &str, message: &str, line: usize, column: usize) -> Option<(usize, usize)> {
    let quoted = message.split('`').nth(1).filter(|q| !q.is_empty())?;
    let start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum::<usize>() + column - 1;
    let mut at = start + text.get(start..)?.find(quoted)?;
    // A quoted scalar starts at its quote.
    if at > 0 && matches!(text.as_bytes()[at - 1], b'"' | b'\'') {
        at -= 1;
    }
    Some(line_column(text.as_bytes(), at))
}

/// 1-based line and column of a byte offset.
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        a: Vec<String>,
    }

    fn err(text: &[u8]) -> String {
        parse::<Doc>(Path::new("f.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_and_comment_only_documents_are_none() {
        for text in ["", "   \n\n", "# nothing here\n"] {
            assert!(parse::<Doc>(Path::new("f"), text.as_bytes())
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn errors_lead_with_file_line_and_column() {
        assert_eq!(
            err(b"a: [x]\nb: 1\n"),
            "f.yaml:2:1: unknown field `b`, expected `a`"
        );
        assert_eq!(
            err(b"a: x\n"),
            "f.yaml:1:4: a: invalid type: string \"x\", expected a sequence"
        );
    }

    #[test]
    fn scalars_read_back_as_written() {
        for text in ["ext4", "crc32c-intel", "pci:v00008086d*sv*", "snd_hda_*", "iwlwifi-*.pnvm", "8021q", "1.0", "null", "no", "a\"b", "*x"] {
            let line = format!("- {}\n", scalar(text));
            let back: Option<Vec<String>> = serde_yaml::from_str(&line).unwrap();
            assert_eq!(back.unwrap(), [text], "{line}");
        }
        assert_eq!(scalar("ext4"), "ext4");
        assert_eq!(scalar("pci:v*"), "\"pci:v*\"");
    }

    #[test]
    fn non_utf8_is_reported_at_its_line() {
        assert_eq!(err(b"a:\n  - ok\n  - \xff\n"), "f.yaml:3:5: not valid UTF-8");
    }
}
