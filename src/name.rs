//! Module names as kmod compares them.
//!
//! modprobe treats `-` and `_` in a name as the same character, except inside a bracket
//! expression of an alias pattern (kmod's `alias_normalize`). Every name limopack stores or
//! compares goes through [`normalize`] first.

use std::borrow::Cow;
use std::sync::Arc;

/// A name or path shared by many parts of a plan (a module's name, its file, its package):
/// cloned by reference count, not by copying it. It may be a part of a longer text: the names
/// and paths of an index taken from limopack's cache are parts of one, a single allocation for
/// four thousand modules where each of their names and paths would be one.
#[derive(Clone)]
pub struct Shared {
    text: Arc<str>,
    start: u32,
    end: u32,
}

impl Shared {
    /// The part of `text` at `range`, which must lie on character boundaries.
    pub fn part_of(text: &Arc<str>, range: std::ops::Range<usize>) -> Shared {
        assert!(text.get(range.clone()).is_some(), "a part of the text, on character boundaries");
        let (start, end) = (u32::try_from(range.start), u32::try_from(range.end));
        Shared { text: text.clone(), start: start.expect("a text under 4 GiB"), end: end.expect("a text under 4 GiB") }
    }
}

impl std::ops::Deref for Shared {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text[self.start as usize..self.end as usize]
    }
}

impl From<&str> for Shared {
    fn from(text: &str) -> Shared {
        let len = u32::try_from(text.len()).expect("a name under 4 GiB");
        Shared { text: text.into(), start: 0, end: len }
    }
}

impl From<String> for Shared {
    fn from(text: String) -> Shared {
        Shared::from(text.as_str())
    }
}

impl From<Cow<'_, str>> for Shared {
    fn from(text: Cow<'_, str>) -> Shared {
        Shared::from(&*text)
    }
}

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        self
    }
}

impl AsRef<str> for Shared {
    fn as_ref(&self) -> &str {
        self
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        **self == **other
    }
}

impl Eq for Shared {}

impl PartialOrd for Shared {
    fn partial_cmp(&self, other: &Shared) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Shared {
    fn cmp(&self, other: &Shared) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

/// As the text hashes, so that a map by `Shared` is searched by `&str`.
impl std::hash::Hash for Shared {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        Ok(String::deserialize(d)?.into())
    }
}

/// File endings of kernel modules, longest first so that `.ko.xz` is not taken for `.ko`.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko.zst", ".ko.xz", ".ko.gz", ".ko"];

/// `-` becomes `_`, except between `[` and `]`, as kmod does before every lookup.
pub fn normalize(name: &str) -> Cow<'_, str> {
    if memchr::memchr(b'-', name.as_bytes()).is_none() {
        return Cow::Borrowed(name);
    }
    let mut in_brackets = false;
    let bytes: Vec<u8> = name
        .bytes()
        .map(|b| {
            match b {
                b'[' => in_brackets = true,
                b']' => in_brackets = false,
                _ => {}
            }
            if b == b'-' && !in_brackets { b'_' } else { b }
        })
        .collect();
    // One ASCII byte for another: still the UTF-8 it was.
    Cow::Owned(String::from_utf8(bytes).expect("ASCII replaced by ASCII"))
}

/// The loaded name of a module file: `kernel/fs/ext4/ext4.ko.xz` is `ext4`,
/// `crc32c-intel.ko` is `crc32c_intel`. `None` when the path is not a module file.
pub fn module_name_of_path(path: &str) -> Option<Cow<'_, str>> {
    module_stem(path).map(normalize)
}

/// True for a file name with a module ending.
pub fn is_module_file(path: &str) -> bool {
    module_stem(path).is_some()
}

/// The file name without its module ending (`crc32c-intel`), as written.
fn module_stem(path: &str) -> Option<&str> {
    let base = match memchr::memrchr(b'/', path.as_bytes()) {
        Some(slash) => &path[slash + 1..],
        None => path,
    };
    MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
}

/// fnmatch(3) with no flags, the way kmod matches alias patterns (glibc, C locale): `*` and
/// `?` match any bytes, `/` and a leading `.` included; `[set]`, `[!set]` and `[^set]` match
/// one byte of a set of bytes, ranges (`a-z`) and classes (`[:digit:]`), with a `]` right
/// after the opening taken literally; `\` takes the next byte literally. A `[` with no
/// closing `]` is a plain `[`.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to go on after a mismatch: just past the last `*`, one byte further in the text.
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() || p < pattern.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                retry = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(_) if t == text.len() => None,
            Some(b'?') => Some(p + 1),
            Some(b'[') => match bracket(pattern, p + 1, text[t]) {
                Bracket::Set(true, next) => Some(next),
                Bracket::Set(false, _) => None,
                Bracket::Unclosed => (text[t] == b'[').then_some(p + 1),
                Bracket::BadClass => return false,
            },
            Some(b'\\') if p + 1 < pattern.len() => (text[t] == pattern[p + 1]).then_some(p + 2),
            Some(&c) => (text[t] == c).then_some(p + 1),
            None => None,
        };
        match (step, retry) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star, from))) if from < text.len() => {
                retry = Some((star, from + 1));
                p = star;
                t = from + 1;
            }
            (None, _) => return false,
        }
    }
    true
}

/// What a bracket expression says about one byte.
enum Bracket {
    /// Whether the byte is in the set, and where the pattern goes on after the `]`.
    Set(bool, usize),
    /// No `]` closes it: the `[` is a plain character.
    Unclosed,
    /// It names a character class that does not exist: glibc matches nothing at all.
    BadClass,
}

/// The bracket expression starting at `pattern[start]`, just past its `[`, against `c`.
fn bracket(pattern: &[u8], start: usize, c: u8) -> Bracket {
    let mut i = start;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&(mut lo)) = pattern.get(i) else { return Bracket::Unclosed };
        if lo == b']' && !first {
            return Bracket::Set(matched != negate, i + 1);
        }
        first = false;
        if lo == b'[' && pattern.get(i + 1) == Some(&b':') {
            // glibc takes `[:name:]` as a class only when the name is lowercase letters (`z`
            // excluded); otherwise the `[` is one more byte of the set.
            let name_start = i + 2;
            let name_len = pattern[name_start..].iter().take_while(|b| matches!(b, b'a'..=b'y')).count();
            if pattern.get(name_start + name_len..name_start + name_len + 2) == Some(b":]") {
                match in_class(&pattern[name_start..name_start + name_len], c) {
                    Some(is) => matched |= is,
                    None => return Bracket::BadClass,
                }
                i = name_start + name_len + 2;
                continue;
            }
        }
        if lo == b'\\' {
            i += 1;
            let Some(&escaped) = pattern.get(i) else { return Bracket::Unclosed };
            lo = escaped;
        }
        i += 1;
        let mut hi = lo;
        if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|&b| b != b']') {
            hi = pattern[i + 1];
            i += 2;
            if hi == b'\\' {
                let Some(&escaped) = pattern.get(i) else { return Bracket::Unclosed };
                hi = escaped;
                i += 1;
            }
        }
        matched |= (lo..=hi).contains(&c);
    }
}

/// Whether `c` is in the POSIX character class `name`; `None` for a name that is not one.
fn in_class(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => c.is_ascii_whitespace() || c == 0x0b,
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// True when the entry asks for a glob over module names rather than one name or alias.
/// Entries with `:` are device or bus aliases (`pci:v00008086d*`), whose `*` is part of the
/// alias, so they are never name globs.
pub fn is_name_glob(entry: &str) -> bool {
    !entry.contains(':') && entry.contains(['*', '?', '['])
}

/// Why an entry can never be a module name or alias, if it cannot.
pub fn invalid_entry(entry: &str) -> Option<String> {
    if entry.is_empty() {
        return Some("empty module name".into());
    }
    if entry.len() > 255 {
        return Some(format!("module name is {} bytes long; the limit is 255", entry.len()));
    }
    if let Some(c) = entry.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("`{}` contains {c:?}, which no module name has", entry.escape_debug()));
    }
    if entry.contains('/') || entry.contains('\\') {
        return Some(format!("`{entry}` is a path; give the module's name, as modprobe takes it"));
    }
    if entry.contains("..") || entry.starts_with('.') {
        return Some(format!("`{entry}` is not a module name"));
    }
    if entry.starts_with('-') {
        return Some(format!("`{entry}` starts with `-`, which no module name does"));
    }
    if let Some(stem) = MODULE_SUFFIXES.iter().find_map(|s| entry.strip_suffix(s)) {
        return Some(format!("`{entry}` is a file name; write the module name `{stem}`"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashes_are_underscores_outside_brackets() {
        assert_eq!(normalize("crc32c-intel"), "crc32c_intel");
        assert_eq!(normalize("fs-btrfs"), "fs_btrfs");
        assert_eq!(normalize("snd-hda-codec-*"), "snd_hda_codec_*");
        assert_eq!(normalize("of:N*T*Cfoo[a-z]-x"), "of:N*T*Cfoo[a-z]_x");
    }

    #[test]
    fn names_of_module_files() {
        assert_eq!(module_name_of_path("kernel/fs/ext4/ext4.ko").as_deref(), Some("ext4"));
        assert_eq!(
            module_name_of_path("kernel/arch/x86/crypto/crc32c-intel.ko.xz").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(module_name_of_path("a/b.ko.zst").as_deref(), Some("b"));
        assert_eq!(module_name_of_path("a/b.ko.gz").as_deref(), Some("b"));
        assert_eq!(module_name_of_path("modules.dep"), None);
        assert_eq!(module_name_of_path("kernel/.ko"), None);
        assert_eq!(module_name_of_path("kernel/x.ko.bak"), None);
    }

    #[test]
    fn fnmatch_is_glibcs_on_alias_patterns() {
        let m = |p: &str, t: &str| fnmatch(p.as_bytes(), t.as_bytes());
        assert!(m("pci:v00008086d*sv*sd*bc02sc00i*", "pci:v00008086d000015B8sv00001028sd0000080Cbc02sc00i00"));
        assert!(!m("pci:v00008086d*sv*sd*bc02sc00i*", "pci:v00008086d000015B8sv00001028sd0000080Cbc03sc00i00"));
        assert!(m("acpi*:PNP0C0[0-9A-F]:*", "acpi:PNP0C0A:"));
        assert!(!m("acpi*:PNP0C0[!0-9A-F]:*", "acpi:PNP0C0A:"));
        assert!(m("a[]]b", "a]b"));
        assert!(m("a[[:digit:]x]", "a7"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(m("a[b", "a[b"));
        assert!(m("*", "") && m("*/x", "a/b/x") && !m("?", ""));
    }

    /// glibc's fnmatch(3) is the oracle, on random patterns of the shapes alias patterns take
    /// (literals, `\\x`, `*`, `?`, sets with ranges, negation and classes, a stray `[`), against
    /// random texts.
    #[test]
    fn fnmatch_agrees_with_libc() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let members: [&[u8]; 9] = [b"a", b"7", b":", b"-", b"a-b", b"0-9", b"[:digit:]", b"[:alpha:]", b"]"];
        for _ in 0..300_000 {
            let mut pattern = Vec::new();
            for _ in 0..next(6) {
                match next(8) {
                    0 => pattern.push(b'*'),
                    1 => pattern.push(b'?'),
                    2 => pattern.extend([b'\\', b"a*?[]"[next(5)]]),
                    3 => {
                        pattern.push(b'[');
                        pattern.extend([&b""[..], b"!", b"^"][next(3)]);
                        for _ in 0..1 + next(3) {
                            pattern.extend(members[next(members.len())]);
                        }
                        pattern.push(b']');
                    }
                    _ => pattern.push(b"ab7-:!^]"[next(8)]),
                }
            }
            if next(10) == 0 {
                pattern.push(b'[');
            }
            let text: Vec<u8> = (0..next(6)).map(|_| b"ab7-[]!:*?"[next(10)]).collect();
            let c = |v: &[u8]| std::ffi::CString::new(v).unwrap();
            let libc = unsafe { libc::fnmatch(c(&pattern).as_ptr(), c(&text).as_ptr(), 0) == 0 };
            assert_eq!(
                fnmatch(&pattern, &text),
                libc,
                "pattern {:?} text {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn globs_and_aliases() {
        assert!(is_name_glob("snd_hda_codec_*"));
        assert!(is_name_glob("nf_[ct]*"));
        assert!(!is_name_glob("pci:v00008086d*"));
        assert!(!is_name_glob("fs-btrfs"));
    }

    #[test]
    fn entries_that_cannot_be_modules() {
        for bad in ["", " ext4", "ext 4", "a/b", "/lib/x", "..", "../x", ".hidden", "-x", "ext4.ko", "x.ko.xz", "a\tb"] {
            assert!(invalid_entry(bad).is_some(), "{bad:?} should be refused");
        }
        for good in ["ext4", "crc32c-intel", "fs-btrfs", "snd_hda_codec_*", "pci:v00008086d*sv*", "8021q", "of:N*T*Cti,am3352-i2c"] {
            assert_eq!(invalid_entry(good), None, "{good:?} should pass");
        }
        assert_eq!(
            invalid_entry("ext4.ko").unwrap(),
            "`ext4.ko` is a file name; write the module name `ext4`"
        );
    }
}
