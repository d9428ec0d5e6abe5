//! Module names as kmod compares them.
//!
//! modprobe treats `-` and `_` in a name as the same character, except inside a bracket
//! expression of an alias pattern (kmod's `alias_normalize`). Every name limopack stores or
//! compares goes through [`normalize`] first.

/// File endings of kernel modules, longest first so that `.ko.xz` is not taken for `.ko`.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko.zst", ".ko.xz", ".ko.gz", ".ko"];

/// `-` becomes `_`, except between `[` and `]`, as kmod does before every lookup.
pub fn normalize(name: &str) -> String {
    if !name.contains('-') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut in_brackets = false;
    for c in name.chars() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            _ => {}
        }
        out.push(if c == '-' && !in_brackets { '_' } else { c });
    }
    out
}

/// The loaded name of a module file: `kernel/fs/ext4/ext4.ko.xz` is `ext4`,
/// `crc32c-intel.ko` is `crc32c_intel`. `None` when the path is not a module file.
pub fn module_name_of_path(path: &str) -> Option<String> {
    module_stem(path).map(normalize)
}

/// True for a file name with a module ending.
pub fn is_module_file(path: &str) -> bool {
    module_stem(path).is_some()
}

/// The file name without its module ending (`crc32c-intel`), as written.
fn module_stem(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
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
