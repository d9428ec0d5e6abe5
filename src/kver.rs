//! Kernel versions, as `uname -r` prints them and as they name folders: a tree under
//! `/lib/modules`, a kernel's part of the state, its caches, saved index and archive. A
//! version becomes a path and a program's argument, and it is read from folder listings, from
//! limopack's state and journal and from the command line, none of which is trusted: so it
//! is checked to be one plain name, with only the characters kernel versions have.

use std::fmt;

/// A kernel release is at most 64 bytes (the kernel's `__NEW_UTS_LEN`).
const MAX_LEN: usize = 64;

/// A checked kernel version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kver(String);

impl Kver {
    /// `text` as a kernel version, or why it cannot be one.
    pub fn new(text: &str) -> Result<Kver, String> {
        match why_not(text) {
            None => Ok(Kver(text.to_string())),
            Some(why) => Err(why),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `text` is not a kernel version: it must start with a letter or digit and hold only
/// letters, digits and `.`, `-`, `_`, `+`, `~` (`6.12.117+deb13-cloud-amd64`), so that it is
/// one folder name, never `..`, a path or an option.
fn why_not(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("a kernel version cannot be empty".into());
    }
    if text.len() > MAX_LEN {
        return Some(format!("a kernel version is at most {MAX_LEN} bytes"));
    }
    if !text.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("a kernel version starts with a letter or a digit".into());
    }
    text.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_+~".contains(*c)))
        .map(|c| format!("{} is not a character of kernel versions", crate::shown::escaped(&c.to_string())))
}

impl fmt::Display for Kver {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Kver {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Kver {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for Kver {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl PartialEq<str> for Kver {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl std::str::FromStr for Kver {
    type Err = String;

    fn from_str(text: &str) -> Result<Kver, String> {
        Kver::new(text)
    }
}

impl serde::Serialize for Kver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A version read from limopack's state or journal is checked as one from a folder is.
impl<'de> serde::Deserialize<'de> for Kver {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kver, D::Error> {
        let text = String::deserialize(d)?;
        Kver::new(&text).map_err(|why| serde::de::Error::custom(format!("`{}` is not a kernel version: {why}", crate::shown::escaped(&text))))
    }
}

/// A version for tests, which must be one.
#[cfg(test)]
pub(crate) fn kv(text: &str) -> Kver {
    Kver::new(text).expect("a kernel version")
}

#[cfg(test)]
impl From<&str> for Kver {
    fn from(text: &str) -> Kver {
        kv(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_one_plain_name() {
        for good in ["6.1.0-50-amd64", "6.12.117+deb13-cloud-amd64", "6.8.0-45-generic", "6.6.31+rpt-rpi-v8", "6.9.0-rc3~exp1", "5.10_custom"] {
            assert_eq!(Kver::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "/srv/victim", "../../etc", "..", ".", "-n", "--help", "6.1/x", "6.1\nlimopack: fake", "6.1\u{202e}", "6.1 x", &"6".repeat(65)] {
            assert!(Kver::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Kver::new("6.1\u{202e}").unwrap_err(), "\\u{202e} is not a character of kernel versions");
    }
}
