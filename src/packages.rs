//! Installed packages, as dpkg knows them: who owns each declaration and module file, and
//! whether its files are on disk.
//!
//! Everything comes from `dpkg-query`, never from `/var/lib/dpkg/status` directly: inside a
//! dpkg trigger the status file on disk is stale, and dpkg-query reads the journal too.

use std::collections::HashMap;
use std::path::Path;
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

/// What dpkg said about the packages a run cares about.
#[derive(Debug, Default, Clone)]
pub struct Packages {
    packages: Vec<Package>,
    /// In-root path (as dpkg lists it) to the packages that own it.
    owners: HashMap<String, Vec<usize>>,
}

impl Packages {
    /// Ask dpkg for the owners of `paths` (declaration files) and for the packages matching
    /// `patterns` (module packages) with their file lists. Two dpkg-query calls at most.
    pub fn query(root: &Root, patterns: &[String], paths: &[&Path]) -> Result<Packages> {
        let mut names: Vec<String> = patterns.to_vec();
        if !paths.is_empty() {
            let mut args = vec!["--search".to_string()];
            args.extend(paths.iter().map(|p| p.display().to_string()));
            for line in dpkg_query(root, &args)?.lines() {
                if line.starts_with("diversion by") || line.starts_with("local diversion") {
                    continue;
                }
                if let Some((owners, _)) = line.split_once(": ") {
                    names.extend(owners.split(", ").map(str::to_string));
                }
            }
        }
        let mut args = vec![
            "--show".to_string(),
            "--showformat=Package: ${binary:Package}\\nVersion: ${Version}\\nStatus: ${db:Status-Status}\\nFiles:\\n${db-fsys:Files}\\n".to_string(),
        ];
        args.extend(names);
        Packages::parse(&dpkg_query(root, &args)?)
    }

    /// Parse the deb822 that [`query`](Self::query) asks dpkg-query to print.
    pub fn parse(text: &str) -> Result<Packages> {
        let doc: deb822_fast::Deb822 = text
            .parse()
            .map_err(|e| Error::command("dpkg-query", format!("unreadable output: {e}")))?;
        let mut packages = Packages::default();
        for paragraph in doc.iter() {
            let field = |name: &str| paragraph.get(name).unwrap_or_default().trim().to_string();
            let package = Package {
                name: field("Package"),
                version: field("Version"),
                status: field("Status"),
            };
            if package.name.is_empty() || packages.packages.contains(&package) {
                continue;
            }
            let id = packages.packages.len();
            for file in paragraph.get("Files").unwrap_or_default().lines() {
                let file = file.trim();
                if file.starts_with('/') {
                    packages.owners.entry(file.to_string()).or_default().push(id);
                }
            }
            packages.packages.push(package);
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

    const OUTPUT: &str = "\
Package: linux-image-6.1.0-50-amd64
Version: 6.1.123-1
Status: installed
Files:
 /.
 /lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko
 /lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko

Package: bluez-limopack
Version: 1.0
Status: config-files
Files:

Package: other:amd64
Version: 2
Status: unpacked
Files:
 /lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko
";

    #[test]
    fn owners_and_states() {
        let p = Packages::parse(OUTPUT).unwrap();
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
