//! Installed packages, as dpkg knows them: who owns each declaration and module file, and
//! whether its files are on disk.
//!
//! Everything comes from `dpkg-query`, never from `/var/lib/dpkg/status` directly: inside a
//! dpkg trigger the status file on disk is stale, and dpkg-query reads the journal too.

use std::collections::HashMap;
use std::process::Command;

use crate::error::{Error, Result};
use crate::root::Root;

/// One installed (or once installed) package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// `${binary:Package}`: the name, with an architecture qualifier where dpkg gives one.
    pub name: String,
    pub version: String,
    /// dpkg's status word: `installed`, `unpacked`, `config-files`, …
    pub status: String,
}

impl Package {
    /// True while the package's files are on disk. Half-installed counts: keeping more is the
    /// safe side.
    pub fn is_present(&self) -> bool {
        matches!(
            self.status.as_str(),
            "installed" | "unpacked" | "half-configured" | "half-installed" | "triggers-awaited" | "triggers-pending"
        )
    }
}

/// What dpkg said about the files a run cares about and the packages that own them.
#[derive(Debug, Default, Clone)]
pub struct Packages {
    packages: Vec<Package>,
    /// In-root path (as dpkg lists it) to the packages that own it.
    owners: rustc_hash::FxHashMap<String, Vec<usize>>,
}

impl Packages {
    /// Ask dpkg who owns the files matching `patterns` (declaration files, and `TREE/*` for
    /// each module tree), and for the status of each owner. Every owner is seen, not only
    /// module packages, so that a file shared with another package is known to be shared.
    /// Two dpkg-query calls.
    pub fn query(root: &Root, patterns: &[String]) -> Result<Packages> {
        if patterns.is_empty() {
            return Ok(Packages::default());
        }
        let mut args = vec!["--search".to_string()];
        args.extend(patterns.iter().cloned());
        let search = dpkg_query(root, &args)?;
        let mut names: Vec<&str> = search_lines(&search).flat_map(|(owners, _)| owners).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Packages::parse("", &search);
        }
        let mut args = vec![
            "--show".to_string(),
            "--showformat=Package: ${binary:Package}\\nVersion: ${Version}\\nStatus: ${db:Status-Status}\\n\\n".to_string(),
        ];
        args.extend(names.iter().map(|n| n.to_string()));
        Packages::parse(&dpkg_query(root, &args)?, &search)
    }

    /// Build from what `dpkg-query --show` (deb822 paragraphs with Package, Version and
    /// Status) and `dpkg-query --search` (`pkg1, pkg2: /path` lines) printed.
    pub fn parse(status: &str, search: &str) -> Result<Packages> {
        let doc: deb822_fast::Deb822 = status
            .parse()
            .map_err(|e| Error::command("dpkg-query", format!("unreadable output: {e}")))?;
        let mut packages = Packages::default();
        let mut by_name: rustc_hash::FxHashMap<String, usize> = Default::default();
        for paragraph in doc.iter() {
            let field = |name: &str| paragraph.get(name).unwrap_or_default().trim().to_string();
            let package = Package {
                name: field("Package"),
                version: field("Version"),
                status: field("Status"),
            };
            if !package.name.is_empty() && !by_name.contains_key(&package.name) {
                by_name.insert(package.name.clone(), packages.packages.len());
                packages.packages.push(package);
            }
        }
        for (owners, path) in search_lines(search) {
            for owner in owners {
                // dpkg names a package it no longer has a status for only mid-removal; such
                // an owner still owns the file, as far as keeping it is concerned.
                let id = *by_name.entry(owner.to_string()).or_insert_with(|| {
                    packages.packages.push(Package {
                        name: owner.to_string(),
                        version: String::new(),
                        status: "unknown".into(),
                    });
                    packages.packages.len() - 1
                });
                packages.owners.entry(path.to_string()).or_default().push(id);
            }
        }
        Ok(packages)
    }

    /// The packages that own a path, as dpkg lists it.
    pub fn owners(&self, path: &str) -> impl Iterator<Item = &Package> {
        self.owners
            .get(path)
            .into_iter()
            .flatten()
            .map(|&id| &self.packages[id])
    }

    pub fn packages(&self) -> &[Package] {
        &self.packages
    }
}

/// The md5sums dpkg recorded for the files of an installed `package`, by path as dpkg lists
/// it (`/lib/modules/…`): what `dpkg --verify` checks, and what a restored file must match.
/// Empty when the package shipped none.
pub fn md5sums(root: &Root, package: &str) -> Result<HashMap<String, String>> {
    let args = ["--control-path".to_string(), package.to_string(), "md5sums".to_string()];
    let listed = dpkg_query(root, &args)?;
    let Some(path) = listed.lines().next().filter(|l| !l.is_empty()) else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_md5sums(&text))
}

/// `HASH  path/without/leading/slash` lines.
fn parse_md5sums(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(hash, path)| (format!("/{}", path.trim_start_matches('/')), hash.to_ascii_lowercase()))
        .collect()
}

/// `pkg1, pkg2: /path` lines of `dpkg-query --search`, without diversion notes.
fn search_lines(text: &str) -> impl Iterator<Item = (impl Iterator<Item = &str>, &str)> {
    text.lines()
        .filter(|line| !line.starts_with("diversion by") && !line.starts_with("local diversion"))
        .filter_map(|line| line.split_once(": "))
        .map(|(owners, path)| (owners.split(", ").map(str::trim), path.trim()))
}

/// Run dpkg-query on the root's database. Exit status 1 means some path or package was not
/// found, which is an answer, not a failure.
fn dpkg_query(root: &Root, args: &[String]) -> Result<String> {
    let mut command = Command::new("dpkg-query");
    if !root.is_host() {
        command.arg(format!("--root={}", root.path().display()));
    }
    let output = command
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::command(
                "dpkg-query",
                "not found; limopack needs dpkg to know which package owns each module file",
            ),
            _ => Error::command("dpkg-query", e.to_string()),
        })?;
    match output.status.code() {
        Some(0 | 1) => String::from_utf8(output.stdout)
            .map_err(|_| Error::command("dpkg-query", "printed something that is not UTF-8")),
        _ => Err(Error::command(
            "dpkg-query",
            format!(
                "failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: linux-image-6.1.0-50-amd64
Version: 6.1.123-1
Status: installed

Package: bluez-limopack
Version: 1.0
Status: config-files

Package: other:amd64
Version: 2
Status: unpacked
";
    const SEARCH: &str = "\
linux-image-6.1.0-50-amd64: /lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko
diversion by foo from: /lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko
linux-image-6.1.0-50-amd64, other:amd64: /lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko
bluez-limopack: /usr/share/limopack/bluez-limopack.yaml
";

    #[test]
    fn owners_and_states() {
        let p = Packages::parse(STATUS, SEARCH).unwrap();
        assert_eq!(p.packages().len(), 3);
        let ext4: Vec<_> = p.owners("/lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko").map(|p| p.name.as_str()).collect();
        assert_eq!(ext4, ["linux-image-6.1.0-50-amd64"]);
        let btrfs: Vec<_> = p.owners("/lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko").map(|p| p.name.as_str()).collect();
        assert_eq!(btrfs, ["linux-image-6.1.0-50-amd64", "other:amd64"]);
        assert_eq!(p.owners("/nope").count(), 0);
        assert!(p.packages()[0].is_present());
        assert!(!p.packages()[1].is_present());
        assert!(p.packages()[2].is_present());
    }

    #[test]
    fn an_owner_without_status_is_not_present_but_still_owns() {
        let p = Packages::parse("", "gone-pkg: /lib/modules/x/a.ko\n").unwrap();
        let owners: Vec<_> = p.owners("/lib/modules/x/a.ko").collect();
        assert_eq!(owners.len(), 1);
        assert!(!owners[0].is_present());
    }

    #[test]
    fn md5sums_are_keyed_like_dpkg_lists_files() {
        let sums = parse_md5sums("0123456789ABCDEF0123456789abcdef  lib/modules/6.1/kernel/a.ko\nbroken line\n");
        assert_eq!(sums["/lib/modules/6.1/kernel/a.ko"], "0123456789abcdef0123456789abcdef");
        assert_eq!(sums.len(), 1);
    }

    #[test]
    fn states_that_count_as_present() {
        for (status, present) in [
            ("installed", true), ("unpacked", true), ("half-configured", true), ("half-installed", true),
            ("triggers-awaited", true), ("triggers-pending", true), ("config-files", false), ("not-installed", false),
        ] {
            let p = Package { name: "p".into(), version: "1".into(), status: status.into() };
            assert_eq!(p.is_present(), present, "{status}");
        }
    }
}
