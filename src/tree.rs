//! Kernel module trees on disk: finding them, walking their files, and keeping their index
//! fresh with depmod.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::index::{ModuleIndex, Sources};
use crate::name;
use crate::root::Root;

/// One `/lib/modules/<kver>` folder.
#[derive(Debug, Clone)]
pub struct Tree {
    pub version: String,
    /// The folder on this machine.
    pub path: PathBuf,
    /// The folder as the system sees it (`/lib/modules/6.1.0-50-amd64`).
    pub shown: PathBuf,
}

impl Tree {
    /// The ways dpkg may list a file of this tree: packages ship under `/lib/modules`, and
    /// after the /usr merge some under `/usr/lib/modules`.
    pub fn dpkg_paths(&self, rel: &str) -> [String; 2] {
        [
            format!("/lib/modules/{}/{rel}", self.version),
            format!("/usr/lib/modules/{}/{rel}", self.version),
        ]
    }
}

/// Every module tree under the root, each once even when `/lib` is a symlink to `/usr/lib`.
/// Folders that cannot be managed safely are reported in `warnings` and left alone.
pub fn discover(root: &Root, warnings: &mut Vec<String>) -> Result<Vec<Tree>> {
    let mut seen: HashSet<(u64, u64)> = HashSet::default();
    let mut trees: Vec<Tree> = Vec::new();
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let dir = root.join(base);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let Some(version) = entry.file_name().to_str().map(str::to_string) else {
                warnings.push(format!("{}: kernel folder name is not UTF-8; left alone", path.display()));
                continue;
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::metadata(&path).ok();
                if target.is_some_and(|t| seen.contains(&(t.dev(), t.ino()))) {
                    continue;
                }
                warnings.push(format!("{}: kernel folder is a symlink; left alone", root.inside(&path).display()));
                continue;
            }
            if meta.is_dir() && seen.insert((meta.dev(), meta.ino())) {
                found.push((version, path));
            }
        }
        found.sort();
        for (version, path) in found {
            trees.push(Tree {
                shown: root.inside(&path),
                version,
                path,
            });
        }
    }
    // Two different folders for one version (an unmerged /lib and /usr/lib both holding
    // it): modprobe uses the first, so only that one is managed.
    let mut unique = HashSet::default();
    trees.retain(|t| {
        let first = unique.insert(t.version.clone());
        if !first {
            warnings.push(format!("{}: a second tree for {}; left alone", t.shown.display(), t.version));
        }
        first
    });
    Ok(trees)
}

/// True when the tree holds at least one module file: a folder with none, and no index, is
/// what a removed kernel leaves behind, not a tree to manage.
pub fn has_module_files(tree: &Tree) -> bool {
    walkdir::WalkDir::new(&tree.path)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .any(|e| name::module_name_of_path(&e.path().to_string_lossy()).is_some())
}

/// One regular file of a tree.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo {
    pub size: u64,
    pub mtime: SystemTime,
}

/// The files of one tree, walked once, never through symlinks.
#[derive(Debug, Default)]
pub struct Files {
    /// Regular files by path relative to the tree.
    pub regular: HashMap<String, FileInfo>,
    /// Module-named paths that are not regular files (folders, FIFOs, symlinks): never touched.
    pub odd: Vec<String>,
}

impl Files {
    /// Walk the tree. A file or folder that vanishes between listing and `lstat` was never
    /// there as far as this run is concerned: a depmod left running by a killed run renames
    /// its temporary files away under the walk.
    pub fn scan(tree: &Tree) -> Result<Files> {
        let mut files = Files::default();
        let base = tree.path.as_os_str().len();
        let walk_error = |e: walkdir::Error| {
            let path = e.path().unwrap_or(&tree.path).to_path_buf();
            let error = e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk failed"));
            match error.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(Error::io(path, error)),
            }
        };
        for entry in walkdir::WalkDir::new(&tree.path).follow_links(false).min_depth(1) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    walk_error(e)?;
                    continue;
                }
            };
            // The walk starts at the tree, so every path begins with it and a `/`.
            let path = std::os::unix::ffi::OsStrExt::as_bytes(entry.path().as_os_str());
            let Some(rel) = path.get(base + 1..).and_then(|r| std::str::from_utf8(r).ok()) else { continue };
            let kind = entry.file_type();
            if kind.is_file() {
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) => {
                        walk_error(e)?;
                        continue;
                    }
                };
                files.regular.insert(
                    rel.to_string(),
                    FileInfo {
                        size: meta.len(),
                        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    },
                );
            } else if name::is_module_file(rel) {
                files.odd.push(rel.to_string());
            }
        }
        files.odd.sort();
        Ok(files)
    }

    /// True when `rel` is a regular file here.
    pub fn has(&self, rel: &str) -> bool {
        self.regular.contains_key(rel)
    }

    fn newest_module(&self) -> Option<(&str, SystemTime)> {
        self.regular
            .iter()
            .filter(|(rel, _)| name::is_module_file(rel))
            .map(|(rel, info)| (rel.as_str(), info.mtime))
            .max_by_key(|&(_, mtime)| mtime)
    }
}

/// Why the tree's index does not describe its files, if it does not: depmod must run before a
/// plan can trust it. Checks what `depmod -A` checks (a module newer than modules.dep) and
/// also that the index lists exactly the module files on disk.
pub fn stale_reason(files: &Files, index: Option<&ModuleIndex>) -> Option<String> {
    let Some(dep) = files.regular.get("modules.dep") else {
        return Some("modules.dep is missing".into());
    };
    if let Some((rel, mtime)) = files.newest_module() {
        if mtime > dep.mtime {
            return Some(format!("{rel} is newer than modules.dep"));
        }
    }
    let index = index?;
    let listed: HashSet<&str> = index.modules().iter().map(|m| m.path.as_str()).collect();
    if let Some(unlisted) = files
        .regular
        .keys()
        .filter(|rel| name::is_module_file(rel) && !listed.contains(rel.as_str()))
        .min()
    {
        return Some(format!("{unlisted} is not in modules.dep"));
    }
    if let Some(gone) = index.modules().iter().find(|m| !files.has(&m.path) && !files.odd.contains(&m.path)) {
        return Some(format!("{} is in modules.dep but not on disk", gone.path));
    }
    None
}

/// Run depmod for one kernel, in place.
pub fn depmod(root: &Root, version: &str) -> Result<()> {
    run_depmod(root, version, false).map(drop)
}

/// What depmod would write for one kernel, without writing it (`depmod -n`).
pub fn depmod_dry(root: &Root, tree: &Tree) -> Result<Sources> {
    let out = run_depmod(root, &tree.version, true)?;
    Sources::from_depmod_output(&out, &tree.path)
}

fn run_depmod(root: &Root, version: &str, dry: bool) -> Result<String> {
    let mut command = Command::new("depmod");
    if dry {
        command.arg("-n");
    }
    if !root.is_host() {
        command.arg("-b").arg(root.path());
    }
    let output = command
        .arg(version)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::command("depmod", "not found; install kmod so that limopack can refresh module indexes")
            }
            _ => Error::command("depmod", e.to_string()),
        })?;
    if !output.status.success() {
        return Err(Error::command(
            "depmod",
            format!("{version}: failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| Error::command("depmod", "printed something that is not UTF-8"))
}

/// modprobe.d files of the root, in the folders kmod reads. Their `softdep` and `alias` lines
/// change what modprobe loads, so the closure must see them.
pub fn modprobe_config(root: &Root) -> Result<Vec<(PathBuf, String)>> {
    let mut by_name: std::collections::BTreeMap<String, PathBuf> = Default::default();
    // Later folders lose to earlier ones for the same file name, as in kmod.
    for dir in ["/lib/modprobe.d", "/usr/lib/modprobe.d", "/usr/local/lib/modprobe.d", "/run/modprobe.d", "/etc/modprobe.d"] {
        let dir = root.join(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && !name.starts_with('.') {
                by_name.insert(name, entry.path());
            }
        }
    }
    let mut config = Vec::new();
    for path in by_name.into_values() {
        match std::fs::read(&path) {
            Ok(bytes) => config.push((root.inside(&path), String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(config)
}

/// Remove the folders left empty under `tree` by deleting `removed` files, bottom up. The tree
/// folder itself and anything not empty stay.
pub fn remove_empty_parents(tree: &Path, removed: &[PathBuf]) {
    let mut dirs: Vec<&Path> = removed.iter().filter_map(|p| p.parent()).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    let mut tried = HashSet::default();
    for dir in dirs {
        let mut current = Some(dir);
        while let Some(d) = current {
            if d == tree || !d.starts_with(tree) || !tried.insert(d.to_path_buf()) {
                break;
            }
            // Fails when not empty, which is what stops the climb.
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            current = d.parent();
        }
    }
}

/// Checks, just before each delete, that `tree/rel` is still a regular file reached through
/// real folders inside the tree, so that a delete never follows a symlink. Each folder on the
/// way is looked at once (`lstat`: a folder, not a symlink to one) and then remembered: a
/// prune deletes thousands of files from a few hundred folders.
pub struct Confined<'a> {
    tree: &'a Path,
    real_dirs: HashSet<PathBuf>,
}

impl<'a> Confined<'a> {
    pub fn new(tree: &'a Path) -> Confined<'a> {
        Confined { tree, real_dirs: HashSet::default() }
    }

    /// The path of `rel` when it is safe to delete, `None` when it is gone or not a regular
    /// file reached through real folders.
    pub fn check(&mut self, rel: &str) -> std::io::Result<Option<PathBuf>> {
        let path = self.tree.join(rel);
        if !path.parent().is_some_and(|p| self.is_real_dir(p)) {
            return Ok(None);
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(path)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_real_dir(&mut self, dir: &Path) -> bool {
        if dir == self.tree || self.real_dirs.contains(dir) {
            return true;
        }
        let inside = dir.starts_with(self.tree) && dir.parent().is_some_and(|p| self.is_real_dir(p));
        // symlink_metadata does not follow: a symlink to a folder is not a folder here.
        let real = inside && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if real {
            self.real_dirs.insert(dir.to_path_buf());
        }
        real
    }
}

/// Where to put `rel` back under `tree`: the folders on the way are made as needed and must
/// be real folders, never symlinks, and the place itself must be free or a regular file.
pub fn restore_target(tree: &Path, rel: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let refuse = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let parts: Vec<&str> = rel.split('/').collect();
    let mut at = tree.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(refuse(format!("{rel}: not a plain relative path")));
        }
        at.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if last && !meta.is_file() => return Err(refuse(format!("{} is not a regular file", at.display()))),
            Ok(meta) if !last && !meta.is_dir() => return Err(refuse(format!("{} is not a folder", at.display()))),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !last => {
                std::fs::create_dir(&at)?;
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
