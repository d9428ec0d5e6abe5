//! The original limopack's `modules.active`, for moving to declarations: each line is
//! `NAME:S` for a static module, or `NAME:COUNT` for a module that COUNT packages asked for.
//! Static entries become `static:`; counted ones become `modules:` of one admin declaration,
//! which holds them until the packages that need them ship declarations of their own.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::name;

/// What a `modules.active` file says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub statics: BTreeSet<String>,
    pub referenced: BTreeSet<String>,
}

impl Active {
    /// Parse `text`, read from `path`. A name listed both ways is static: that is what kept it.
    pub fn parse(path: &Path, text: &str) -> Result<Active> {
        let mut active = Active::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |column: usize, what: String| Error::syntax(path, n + 1, column, what);
            let Some((module, kind)) = line.rsplit_once(':') else {
                return Err(bad(1, format!("`{line}`: expected NAME:S or NAME:COUNT")));
            };
            if let Some(why) = name::invalid_entry(module) {
                return Err(bad(1, why));
            }
            let module = name::normalize(module).into_owned();
            match kind {
                "S" => {
                    active.statics.insert(module);
                }
                count if count.parse::<u32>().is_ok_and(|c| c > 0) => {
                    active.referenced.insert(module);
                }
                other => {
                    let column = line.len() - other.len() + 1;
                    return Err(bad(column, format!("`{other}`: expected S (static) or a reference count above 0")));
                }
            }
        }
        active.referenced.retain(|m| !active.statics.contains(m));
        Ok(active)
    }

    /// The admin declaration to write, with comments that say where it came from.
    pub fn to_declaration(&self, source: &Path) -> String {
        let mut text = format!(
            "# Imported from {} by `limopack-hook import-active`.\n",
            source.display()
        );
        if !self.statics.is_empty() {
            text.push_str("# Static: kept for good, as the original limopack kept them.\nstatic:\n");
            for m in &self.statics {
                let _ = writeln!(text, "  - {m}");
            }
        }
        if !self.referenced.is_empty() {
            text.push_str(
                "# Referenced by packages: kept while this file names them. Take an entry out once\n\
                 # the package that needs it ships /usr/share/limopack/PACKAGE.yaml.\nmodules:\n",
            );
            for m in &self.referenced {
                let _ = writeln!(text, "  - {m}");
            }
        }
        text
    }
}

/// Where `import-active` writes, among the admin's declarations.
pub const IMPORTED: &str = "/etc/limopack/modules.d/imported-active.yaml";

/// Import `file` into the root's admin declarations. Refuses to replace an earlier import:
/// merging by hand is the only way that never drops an entry someone added since.
pub fn import(root: &crate::root::Root, file: &Path, dry_run: bool) -> Result<String> {
    let text = crate::fs::read_text(file, crate::fs::limits::DECLARATION)?;
    let yaml = Active::parse(file, &text)?.to_declaration(file);
    if dry_run {
        return Ok(yaml);
    }
    let target = root.resolve(IMPORTED)?;
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(Error::request(target, "exists already; merge the new entries into it by hand, or move it away"));
    }
    crate::apply::store::write_admin(root, "imported-active.yaml", &yaml)?;
    Ok(yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_static_and_referenced_entries() {
        let text = "ext4:S\nhci-nokia:2\n# a comment\n\nbtusb:1\nloop:S\nloop:3\n";
        let active = Active::parse(Path::new("modules.active"), text).unwrap();
        assert_eq!(active.statics, ["ext4", "loop"].map(String::from).into());
        assert_eq!(active.referenced, ["btusb", "hci_nokia"].map(String::from).into());
        let yaml = active.to_declaration(Path::new("/lib/modules/6.1/modules.active"));
        assert!(yaml.contains("static:\n  - ext4\n  - loop\n"), "{yaml}");
        assert!(yaml.contains("modules:\n  - btusb\n  - hci_nokia\n"), "{yaml}");
        let back = crate::read::declaration::Declaration::parse(Path::new("x.yaml"), yaml.as_bytes(), crate::read::declaration::Origin::Admin).unwrap();
        assert_eq!(back.statics.len(), 2);
        assert_eq!(back.modules.len(), 2);
    }

    #[test]
    fn bad_lines_are_placed() {
        let e = Active::parse(Path::new("m.active"), "ext4:S\nbtusb:0\n").unwrap_err().to_string();
        assert_eq!(e, "m.active:2:7: `0`: expected S (static) or a reference count above 0");
        let e = Active::parse(Path::new("m.active"), "ext4\n").unwrap_err().to_string();
        assert_eq!(e, "m.active:1:1: `ext4`: expected NAME:S or NAME:COUNT");
        let e = Active::parse(Path::new("m.active"), "../x:S\n").unwrap_err().to_string();
        assert!(e.starts_with("m.active:1:1: `../x` is a path"), "{e}");
    }
}
