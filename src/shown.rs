//! Text from disk as limopack prints it. A module's name, a file's name, a package's field or
//! a firmware name comes from files anyone may have made; printed raw, a line break in one
//! would forge a line of limopack's own, and a bidi control would show a name reversed. So
//! every line printed passes through [`escaped`], which writes such characters as `\xNN` or
//! `\u{NNNN}`, as `ls --quoting-style=escape` and Rust's `{:?}` do.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: controls (line breaks and escape
/// sequences included), and the format characters that reorder or hide text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with every unsafe character escaped, and every backslash that could start such an
/// escape doubled, so that no two texts print the same.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `value` as pretty JSON. JSON escapes every control character already; the format
/// characters that would reorder a line are escaped too (as `\u202e`), which any JSON reader
/// reads back as the same text.
pub fn json(value: &serde_json::Value) -> String {
    let text = format!("{value:#}");
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return text;
    }
    text.chars()
        .map(|c| match c != '\n' && is_unsafe(c) {
            true => format!("\\u{:04x}", c as u32),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_unsafe_reaches_the_terminal() {
        assert!(matches!(escaped("kernel/fs/ext4/ext4.ko"), Cow::Borrowed(_)));
        assert_eq!(escaped("a\nlimopack: pruned 0 files"), "a\\x0alimopack: pruned 0 files");
        assert_eq!(escaped("evil\u{202e}ok.ko"), "evil\\u{202e}ok.ko");
        assert_eq!(escaped("\x1b[2J"), "\\x1b[2J");
        assert_eq!(escaped("a\\x0ab"), "a\\\\x0ab");
        assert_eq!(escaped("\u{85}"), "\\x85");
    }

    #[test]
    fn json_reads_back_the_same() {
        let value = serde_json::json!({ "name": "a\u{202e}b\nc", "n": 1 });
        let text = json(&value);
        assert!(!text.contains('\u{202e}') && text.contains("\\u202e"), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value);
    }
}
