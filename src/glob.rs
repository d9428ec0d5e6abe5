//! Globs: declarations' module entries and `kernels:`, the config's package globs, firmware
//! globs. They are the `glob` crate's patterns (rust-lang's, the shell's syntax): `*`, `?`,
//! `[...]` (`[!...]` negates, ranges), and `**` as a whole path component. Matching is on the
//! whole text. A name glob lets `*` and `?` match `/` too (module names, package names and
//! kernel versions hold none); a path glob does not, as in the shell.

use std::fmt;

use glob::{MatchOptions, Pattern};

/// A glob that did not parse: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed glob, ready to match.
#[derive(Clone)]
pub struct Glob {
    pattern: Pattern,
    options: MatchOptions,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Glob").field(&self.pattern.as_str()).finish()
    }
}

impl Glob {
    /// `text` as a glob over names: `*` and `?` match any character, `/` included.
    pub fn new(text: &str) -> Result<Glob, GlobError> {
        Glob::build(text, false)
    }

    /// `text` as a glob over paths: `*` and `?` stop at `/`, and `**` crosses it.
    pub fn path(text: &str) -> Result<Glob, GlobError> {
        Glob::build(text, true)
    }

    fn build(text: &str, literal_separator: bool) -> Result<Glob, GlobError> {
        let pattern = Pattern::new(text).map_err(|e| match e.msg {
            "invalid range pattern" => GlobError(format!("the `[` at character {} opens no set: close it with `]`, or write a `[` to match as `[[]`", e.pos + 1)),
            msg => GlobError(format!("{msg} at character {}", e.pos + 1)),
        })?;
        let options = MatchOptions { case_sensitive: true, require_literal_separator: literal_separator, require_literal_leading_dot: false };
        Ok(Glob { pattern, options })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        self.pattern.as_str()
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.pattern.matches_with(text, self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_syntax() {
        let m = |g: &str, t: &str| Glob::new(g).unwrap().is_match(t);
        assert!(m("snd_hda_codec_*", "snd_hda_codec_realtek") && !m("snd_hda_codec_*", "snd_hda_intel"));
        assert!(m("6.1.*", "6.1.0-50-amd64") && !m("6.1.*", "6.12.1"));
        assert!(m("linux-image-*", "linux-image-6.1.0-50-amd64") && m("linux-modules-extra-*", "linux-modules-extra-6.8.0-1-generic"));
        assert!(m("e1000?", "e1000e") && !m("e1000?", "e1000"));
        assert!(m("nvme[_-]core", "nvme_core") && m("[!a-m]*", "xfs") && !m("[!a-m]*", "ext4"));
        assert!(m("a[*]", "a*") && !m("a[*]", "ab"));
        let p = |g: &str, t: &str| Glob::path(g).unwrap().is_match(t);
        assert!(p("iwlwifi-*.pnvm", "iwlwifi-ty-a0-gf-a0.pnvm") && !p("rtl_nic/*", "rtl_nic/sub/x.fw"));
        assert!(p("rtl_nic/**", "rtl_nic/sub/x.fw") && p("**/x.fw", "x.fw") && p("a/**/b", "a/b") && p("a/**/b", "a/x/y/b"));
        assert!(!p("a?b", "a/b") && m("a?b", "a/b") && m("*", "a/b"));
    }

    #[test]
    fn bad_globs_say_where_and_what() {
        let e = |g: &str| Glob::new(g).unwrap_err().to_string();
        assert_eq!(e("a["), "the `[` at character 2 opens no set: close it with `]`, or write a `[` to match as `[[]`");
        assert_eq!(e("a**b"), "recursive wildcards must form a single path component at character 1");
    }

    /// A glob of many stars against a long text that almost matches: no backtracking blows
    /// up, since the crate gives up on a star once the rest cannot match anywhere after it.
    #[test]
    fn many_stars_against_a_near_miss() {
        let glob = Glob::new(&"a*".repeat(40)).unwrap();
        assert!(!glob.is_match(&("a".repeat(39) + &"b".repeat(4000))));
        assert!(glob.is_match(&"a".repeat(40)));
    }
}
