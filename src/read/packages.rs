//! Installed packages, read from dpkg's database the way dpkg itself reads it: `status`, then
//! the journal in `updates/` applied in order, then each package's file list in `info/`.
//!
//! Inside a dpkg trigger the `status` file alone is stale; the journal entries written since
//! its last checkpoint make it current, as they do for dpkg-query. Reading the files in place
//! spares each run two dpkg-query processes, which cost more than the rest of a plan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use deb822_fast::borrowed::BorrowedParagraph;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::fs::limits;
use crate::fs::bytes::Bytes;
use crate::name::Shared;
use crate::paths::PathTable;
use crate::root::Root;

/// dpkg's database folder, as the system sees it.
pub const ADMIN_DIR: &str = "/var/lib/dpkg";

/// One installed (or once installed) package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// `${binary:Package}`: the name, with an architecture qualifier where dpkg gives one.
    pub name: Shared,
    pub version: Shared,
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

/// What dpkg's database says about the files a run cares about and the packages that own them.
#[derive(Debug, Default, Clone)]
pub struct Packages {
    packages: Vec<Package>,
    /// In-root path (as dpkg lists it) to the package that owns it, and to the others when
    /// more than one does (a folder, mostly): one vector per path would be thousands of
    /// allocations for the few paths that need one.
    owner: PathTable<usize>,
    co_owners: FxHashMap<String, Vec<usize>>,
    /// The prefixes read for under which some package lists a path: a tree is listed under
    /// `/lib/modules` or `/usr/lib/modules`, seldom both, and a look-up under the other is
    /// spared.
    listed_under: Vec<String>,
}

/// A package's record in `status` or the journal, borrowed from the text it was read from.
struct Record<'a> {
    name: &'a str,
    arch: &'a str,
    multi_arch_same: bool,
    version: &'a str,
    status: &'a str,
}

/// The files of dpkg's database a run reads, by name: `status`, the journal entries in order,
/// and of the `.list` file of each package (by the name dpkg gives the file, `pkg` or
/// `pkg:arch`) the lines that can matter.
#[derive(Debug, Default)]
pub struct Database {
    pub status: (PathBuf, String),
    pub updates: Vec<(PathBuf, String)>,
    pub lists: Vec<(String, String)>,
}

impl Database {
    /// Read the database of `root`, keeping of each file list only the paths under one of
    /// `prefixes`. On the running system `DPKG_ADMINDIR` points elsewhere when set, as it
    /// does for dpkg-query; an image's database is always its own.
    pub fn read(root: &Root, prefixes: &[String]) -> Result<Database> {
        let admin = match std::env::var_os("DPKG_ADMINDIR").filter(|_| root.is_host()) {
            Some(dir) => PathBuf::from(dir),
            None => root.resolve(ADMIN_DIR)?,
        };
        // dpkg writes no links in its database: one is refused, as a FIFO or a device is.
        let read = |path: PathBuf| -> Result<(PathBuf, String)> {
            let (file, len) = crate::fs::open_entry(&path, limits::DPKG)?;
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(file, len), &mut bytes).map_err(|e| Error::io(&path, e))?;
            match String::from_utf8(bytes) {
                Ok(text) => Ok((path, text)),
                Err(_) => Err(Error::damaged(path, "not valid UTF-8; dpkg's database cannot be read")),
            }
        };
        let status = read(admin.join("status"))?;
        // Journal entries are named by number and applied in that order; dpkg writes each to a
        // temporary name first, which is not yet part of the database.
        let mut updates = Vec::new();
        for (_, path) in numbered(&admin.join("updates"))? {
            updates.push(read(path)?);
        }
        // A system has a list per package, megabytes in all, and nearly none names a path
        // under the prefixes: each is searched whole before it is split in lines, for the
        // last folder of each prefix (`/6.1.0-50-amd64/`, `/firmware/`), which is rare in
        // file lists, where `/usr/lib/` is everywhere.
        let mut needles: Vec<String> = prefixes
            .iter()
            .map(|p| format!("/{}/", p.trim_end_matches('/').rsplit('/').next().unwrap_or_default()))
            .collect();
        needles.sort();
        needles.dedup();
        let finders: Vec<memchr::memmem::Finder> = needles.iter().map(|n| memchr::memmem::Finder::new(n.as_bytes())).collect();
        let mut lists = Vec::new();
        // One buffer for every list that is read, not mapped: most are a few KB.
        let mut bytes = Vec::with_capacity(crate::fs::bytes::MAP_FROM as usize);
        let info = admin.join("info");
        let entries = std::fs::read_dir(&info).map_err(|e| Error::io(&info, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&info, e))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".list")) else { continue };
            let path = entry.path();
            let (mut file, len) = crate::fs::open_entry(&path, limits::DPKG)?;
            // dpkg replaces a list by renaming a new one over it, so its size stays as read.
            // A kernel's list, of four thousand lines, is mapped rather than copied in.
            let mapped = match len >= crate::fs::bytes::MAP_FROM {
                true => Some(Bytes::of_file(&file, len).map_err(|e| Error::io(&path, e))?),
                false => {
                    bytes.resize(len as usize, 0);
                    std::io::Read::read_exact(&mut file, &mut bytes).map_err(|e| Error::io(&path, e))?;
                    None
                }
            };
            if let Some(kept) = lines_under(&path, mapped.as_deref().unwrap_or(&bytes), prefixes, &finders)? {
                lists.push((name.to_string(), kept));
            }
        }
        Ok(Database { status, updates, lists })
    }
}

/// The lines of a file list that start with one of `prefixes`, each ending in a newline;
/// none when no line does. `finders` search for a part of each prefix.
fn lines_under(path: &Path, list: &[u8], prefixes: &[String], finders: &[memchr::memmem::Finder]) -> Result<Option<String>> {
    let in_a_kept_line = |at: usize| {
        let start = memchr::memrchr(b'\n', &list[..at]).map_or(0, |newline| newline + 1);
        prefixes.iter().any(|p| list[start..].starts_with(p.as_bytes()))
    };
    if !finders.iter().any(|f| f.find_iter(list).any(in_a_kept_line)) {
        return Ok(None);
    }
    // Room for the whole list, given back once filled: a kernel's list is nearly all kept.
    let mut kept = Vec::with_capacity(list.len() + 1);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', list).chain([list.len()]) {
        let line = &list[start..end];
        start = end + 1;
        if prefixes.iter().any(|p| line.starts_with(p.as_bytes())) {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    kept.shrink_to_fit();
    match String::from_utf8(kept) {
        Ok(kept) => Ok(Some(kept)),
        Err(_) => Err(Error::damaged(path, "a path that is not valid UTF-8; dpkg's database cannot be read")),
    }
}

/// The files of `dir` named by a number, in numeric order; none when `dir` is missing.
fn numbered(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(n) = entry.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).and_then(|n| n.parse().ok()) {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

impl Packages {
    /// Read dpkg's database under `root`, keeping the owners of the paths under `prefixes`
    /// (folders as dpkg lists them, ending in `/`). Every owner is kept, not only module
    /// packages, so that a file shared with another package is known to be shared.
    pub fn read(root: &Root, prefixes: &[String]) -> Result<Packages> {
        Packages::from_database(&Database::read(root, prefixes)?, prefixes)
    }

    /// Build from the text of dpkg's database files.
    pub fn from_database(db: &Database, prefixes: &[String]) -> Result<Packages> {
        let mut records: FxHashMap<(&str, &str), Record> = FxHashMap::default();
        for (path, text) in std::iter::once(&db.status).chain(&db.updates) {
            for paragraph in deb822_fast::borrowed::iter_paragraphs_borrowed(text) {
                let paragraph = paragraph.map_err(|e| Error::damaged(path, format!("not a file dpkg can read: {e}")))?;
                let record = record(path, text, &paragraph)?;
                records.insert((record.name, record.arch), record);
            }
        }
        // dpkg is always of the native architecture, so its own record names it.
        let native = records.values().find(|r| r.name == "dpkg").map(|r| r.arch);

        let mut packages = Packages::default();
        // The lists hold only lines under the prefixes read for, nearly all of them paths to
        // own: one table of the right size instead of growing it through its doublings.
        let lines = db.lists.iter().map(|(_, text)| memchr::memchr_iter(b'\n', text.as_bytes()).count()).sum();
        packages.owner = PathTable::with_capacity(lines, db.lists.iter().map(|(_, text)| text.len()).sum());
        let mut used = vec![false; prefixes.len()];
        for (list_name, text) in &db.lists {
            let mut owned = crate::read::index::lines(text)
                .filter(|line| match prefixes.iter().position(|p| line.starts_with(p.as_str())) {
                    Some(at) => {
                        used[at] = true;
                        true
                    }
                    None => false,
                })
                .peekable();
            if owned.peek().is_none() {
                continue;
            }
            let id = packages.packages.len();
            packages.packages.push(package_of(list_name, &records, native));
            for path in owned {
                if packages.owner.insert_new(path, id).is_err() {
                    packages.co_owners.entry(path.to_string()).or_default().push(id);
                }
            }
        }
        packages.listed_under = prefixes.iter().zip(used).filter(|(_, used)| *used).map(|(p, _)| p.clone()).collect();
        Ok(packages)
    }

    /// Whether some package lists a path under `prefix`, one of those the database was read
    /// for.
    pub fn lists_under(&self, prefix: &str) -> bool {
        self.listed_under.iter().any(|p| p == prefix)
    }

    /// The packages that own a path, as dpkg lists it.
    pub fn owners(&self, path: &str) -> impl Iterator<Item = &Package> {
        let first = self.owner.get(path);
        let others = first.and_then(|_| self.co_owners.get(path));
        first.into_iter().chain(others.into_iter().flatten()).map(|&id| &self.packages[id])
    }

    pub fn packages(&self) -> &[Package] {
        &self.packages
    }
}

/// The record of one paragraph, with its `Status:` checked as dpkg would: a database dpkg
/// itself would refuse is not one to delete files by.
fn record<'a>(path: &Path, text: &'a str, paragraph: &BorrowedParagraph<'a>) -> Result<Record<'a>> {
    let field = |name: &str| paragraph.get_single(name).map(str::trim).unwrap_or_default();
    let name = field("Package");
    let status = paragraph.get_single("Status").unwrap_or_default();
    let mut words = status.split_whitespace();
    let valid = matches!(words.next(), Some("unknown" | "install" | "hold" | "deinstall" | "purge"))
        && matches!(words.next(), Some("ok" | "reinstreq"))
        && matches!(
            words.next(),
            Some(
                "not-installed" | "config-files" | "half-installed" | "unpacked" | "half-configured"
                    | "triggers-awaited" | "triggers-pending" | "installed"
            )
        )
        && words.next().is_none();
    if name.is_empty() || !valid {
        // Fields are borrowed from `text`, so where one starts is where it is in the file.
        let first = paragraph.iter().next().map(|f| f.name()).unwrap_or_default();
        let at = if name.is_empty() || status.is_empty() { first } else { status };
        let line = line_of(text, at);
        let what = match name.is_empty() {
            true => "a paragraph without `Package:`".to_string(),
            false => format!("{name}: `Status: {}` is not dpkg's `WANT FLAG STATUS`", status.trim()),
        };
        return Err(Error::syntax(path, line, 1, what));
    }
    Ok(Record {
        name,
        arch: field("Architecture"),
        multi_arch_same: field("Multi-Arch") == "same",
        version: field("Version"),
        status: status.split_whitespace().nth(2).unwrap_or_default(),
    })
}

/// The line of `text` that `part`, a slice of it, starts on.
fn line_of(text: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    text.get(..offset).map_or(1, |before| before.matches('\n').count() + 1)
}

/// The package whose file list is `info/<list_name>.list`. dpkg names that file `pkg:arch`
/// only for `Multi-Arch: same` packages, and shows a package as `pkg:arch` when it is
/// `Multi-Arch: same` or of a foreign architecture (`${binary:Package}`). A list with no
/// record, which dpkg leaves only mid-removal, still owns its files; its status is `unknown`.
fn package_of(list_name: &str, records: &FxHashMap<(&str, &str), Record>, native: Option<&str>) -> Package {
    let record = match list_name.split_once(':') {
        Some((name, arch)) => records.get(&(name, arch)),
        None => records.values().find(|r| r.name == list_name && !r.multi_arch_same),
    };
    let Some(record) = record else {
        return Package { name: list_name.into(), version: "".into(), status: "unknown".into() };
    };
    let foreign = native.is_some_and(|native| !record.arch.is_empty() && record.arch != native && record.arch != "all");
    let name = match record.multi_arch_same || foreign {
        true => format!("{}:{}", record.name, record.arch),
        false => record.name.to_string(),
    };
    Package { name: name.into(), version: record.version.into(), status: record.status.to_string() }
}

/// The md5sums dpkg recorded for the files of an installed `package` (as [`Package::name`]
/// gives it), by path as dpkg lists it (`/lib/modules/…`): what `dpkg --verify` checks, and
/// what a restored file must match. Empty when the package shipped none.
pub fn md5sums(root: &Root, package: &str) -> Result<HashMap<String, String>> {
    let info = root.resolve(ADMIN_DIR)?.join("info");
    // `pkg:arch` names its info files so only when Multi-Arch: same; a foreign package that
    // is not has them under its bare name.
    let bare = package.split_once(':').map(|(name, _)| name);
    for name in std::iter::once(package).chain(bare) {
        let path = info.join(format!("{name}.md5sums"));
        if let Some(bytes) = crate::fs::read_if_there(&path, limits::DPKG)? {
            return Ok(parse_md5sums(&String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(HashMap::new())
}

/// `HASH  path/without/leading/slash` lines.
fn parse_md5sums(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(hash, path)| (format!("/{}", path.trim_start_matches('/')), hash.to_ascii_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: linux-image-6.1.0-50-amd64
Status: install ok installed
Architecture: amd64
Version: 6.1.123-1
Description: Linux 6.1
 with a continuation line: that is not a field

Package: bluez-limopack
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: other
Status: install ok unpacked
Architecture: amd64
Multi-Arch: same
Version: 2

Package: tool
Status: install ok installed
Architecture: i386
Version: 3
";

    fn db(updates: &[&str], lists: &[(&str, &str)]) -> Database {
        Database {
            status: ("status".into(), STATUS.into()),
            updates: updates.iter().enumerate().map(|(i, u)| (format!("updates/{i:04}").into(), u.to_string())).collect(),
            lists: lists.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(),
        }
    }

    const PREFIXES: [&str; 2] = ["/lib/modules/6.1.0-50-amd64/", "/usr/share/limopack/"];

    fn read(db: &Database) -> Packages {
        Packages::from_database(db, &PREFIXES.map(String::from)).unwrap()
    }

    fn owner_names<'a>(p: &'a Packages, path: &str) -> Vec<&'a str> {
        p.owners(path).map(|p| &*p.name).collect()
    }

    #[test]
    fn owners_and_states_come_from_the_lists_and_the_status() {
        let p = read(&db(
            &[],
            &[
                ("linux-image-6.1.0-50-amd64", "/.\n/lib\n/lib/modules/6.1.0-50-amd64\n/lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko\n/lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko\n/boot/vmlinuz\n"),
                ("other:amd64", "/lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko\n"),
                ("bluez-limopack", "/usr/share/limopack/bluez-limopack.yaml\n"),
                ("tool", "/usr/bin/tool\n"),
            ],
        ));
        assert_eq!(owner_names(&p, "/lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko"), ["linux-image-6.1.0-50-amd64"]);
        assert_eq!(owner_names(&p, "/lib/modules/6.1.0-50-amd64/kernel/fs/btrfs/btrfs.ko"), ["linux-image-6.1.0-50-amd64", "other:amd64"]);
        assert_eq!(owner_names(&p, "/boot/vmlinuz"), Vec::<&str>::new());
        assert_eq!(owner_names(&p, "/nope"), Vec::<&str>::new());
        let by_name = |n: &str| p.packages().iter().find(|p| &*p.name == n).unwrap();
        assert!(by_name("linux-image-6.1.0-50-amd64").is_present());
        assert_eq!(by_name("linux-image-6.1.0-50-amd64").version.as_ref(), "6.1.123-1");
        assert!(!by_name("bluez-limopack").is_present());
        assert_eq!(by_name("other:amd64").status, "unpacked");
        // Packages that own nothing of interest are not kept.
        assert_eq!(p.packages().len(), 3);
    }

    #[test]
    fn the_journal_overrides_the_status_in_order() {
        let lists = [("bluez-limopack", "/usr/share/limopack/bluez-limopack.yaml\n")];
        let p = read(&db(
            &[
                "Package: bluez-limopack\nStatus: install ok unpacked\nArchitecture: all\nVersion: 1.1\n",
                "Package: bluez-limopack\nStatus: install ok installed\nArchitecture: all\nVersion: 1.1\n",
            ],
            &lists,
        ));
        let bluez = &p.packages()[0];
        assert_eq!((bluez.status.as_str(), &*bluez.version), ("installed", "1.1"));
    }

    #[test]
    fn foreign_and_multi_arch_same_packages_are_qualified() {
        let p = read(&db(&[], &[("tool", "/usr/share/limopack/tool.yaml\n"), ("other:amd64", "/usr/share/limopack/other.yaml\n")]));
        assert_eq!(owner_names(&p, "/usr/share/limopack/tool.yaml"), ["tool:i386"]);
        assert_eq!(owner_names(&p, "/usr/share/limopack/other.yaml"), ["other:amd64"]);
    }

    #[test]
    fn an_owner_without_status_is_not_present_but_still_owns() {
        let p = read(&db(&[], &[("gone-pkg", "/lib/modules/6.1.0-50-amd64/a.ko\n")]));
        let owners: Vec<_> = p.owners("/lib/modules/6.1.0-50-amd64/a.ko").collect();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].status, "unknown");
        assert!(!owners[0].is_present());
    }

    #[test]
    fn a_status_dpkg_would_refuse_is_an_error_at_its_line() {
        let mut bad = db(&[], &[]);
        bad.status.1 = format!("{STATUS}\nPackage: broken\nArchitecture: all\nStatus: what\n");
        let e = Packages::from_database(&bad, &[]).unwrap_err().to_string();
        assert_eq!(e, "status:31:1: broken: `Status: what` is not dpkg's `WANT FLAG STATUS`");
        bad.status.1 = "Version: 1\nStatus: install ok installed\n".into();
        let e = Packages::from_database(&bad, &[]).unwrap_err().to_string();
        assert_eq!(e, "status:1:1: a paragraph without `Package:`");
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

    #[test]
    fn only_the_lines_under_the_prefixes_are_read_from_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info")).unwrap();
        std::fs::write(admin.join("status"), STATUS).unwrap();
        let lists: [(&str, &[u8]); 4] = [
            // A path that is not UTF-8 where it does not matter is no reason to stop.
            ("kernel", b"/.\n/usr/share/doc/caf\xe9\n/lib/modules/6.1.0-50-amd64\n/lib/modules/6.1.0-50-amd64/kernel/a.ko\n/boot/vmlinuz"),
            // The prefix's last folder, but not at the start of a line, nor under the prefix.
            ("docs", b"/usr/share/doc/kernel/6.1.0-50-amd64/notes\n/usr/lib/limopack/x.yaml\n"),
            ("vendor", b"/usr/share/limopack/vendor.yaml"),
            ("bad", b"/lib/modules/6.1.0-50-amd64/caf\xe9.ko\n"),
        ];
        for (name, text) in lists {
            std::fs::write(admin.join(format!("info/{name}.list")), text).unwrap();
        }
        let root = Root::new(dir.path()).unwrap();
        let prefixes = PREFIXES.map(String::from);
        let err = Database::read(&root, &prefixes).unwrap_err().to_string();
        assert!(err.contains("bad.list") && err.contains("not valid UTF-8"), "{err}");

        std::fs::remove_file(admin.join("info/bad.list")).unwrap();
        // A list larger than the read buffer is mapped, and read the same.
        let mut big: Vec<u8> = (0..5000).flat_map(|n| format!("/usr/share/doc/big/{n}\n").into_bytes()).collect();
        big.extend_from_slice(b"/usr/share/doc/caf\xe9\n/lib/modules/6.1.0-50-amd64/kernel/big.ko\n");
        assert!(big.len() > 64 * 1024);
        std::fs::write(admin.join("info/big.list"), big).unwrap();
        let mut db = Database::read(&root, &prefixes).unwrap();
        db.lists.sort();
        assert_eq!(
            db.lists,
            [
                ("big".to_string(), "/lib/modules/6.1.0-50-amd64/kernel/big.ko\n".to_string()),
                ("kernel".to_string(), "/lib/modules/6.1.0-50-amd64/kernel/a.ko\n".to_string()),
                ("vendor".to_string(), "/usr/share/limopack/vendor.yaml\n".to_string()),
            ]
        );
    }
}
