//! What the last run that changed nothing saw, so that the next one can tell, from stat data
//! alone, that nothing it reads has changed since, and stop there: no dpkg-query, no depmod,
//! no parsing. This is the common case of `DPkg::Post-Invoke` after an apt run that did not
//! touch kernels or declarations.
//!
//! The fingerprint is the stat data (device, inode, size, modification and change times) of
//! every file and folder a plan is made from: the config, the declaration folders and their
//! files, the modprobe.d folders and files, dpkg's status file and its journal folder, the
//! module tree folders and their `modules.dep`, plus the running kernel, its loaded modules and
//! limopack's own version. A change to any of them, even one that would not change the plan,
//! means a full run.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::root::{Root, ADMIN_DIR, CONFIG_FILE, VENDOR_DIR};
use crate::read::state;

/// Stat data of one path; all zero when it does not exist.
type Stamp = [i64; 6];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    seen: Vec<(String, Stamp)>,
}

/// A fingerprint and what the run that took it printed, to print again when nothing changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub fingerprint: Fingerprint,
    /// The summary line of each kernel.
    pub summaries: Vec<String>,
    /// Warnings are printed on every run, this one included.
    pub warnings: Vec<String>,
}

const FOLDERS: [&str; 7] = [
    VENDOR_DIR,
    ADMIN_DIR,
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/run/modprobe.d",
    "/etc/modprobe.d",
];

/// The stamp of `path`; none at all when it cannot be resolved inside the root, which a run
/// then says why.
fn stamp(path: Result<std::path::PathBuf>) -> Stamp {
    let Ok(path) = path else { return [-1; 6] };
    match std::fs::symlink_metadata(path) {
        Ok(m) => [m.dev() as i64, m.ino() as i64, m.size() as i64, m.mtime(), m.mtime_nsec(), m.ctime() * 1_000_000_000 + m.ctime_nsec()],
        Err(_) => [0; 6],
    }
}

impl Fingerprint {
    /// Look at everything a plan is made from. Only stat calls, folder listings and, on the
    /// running system, `/proc/modules`.
    pub fn take(root: &Root) -> Fingerprint {
        let mut seen = Vec::new();
        let mut note = |shown: String, path: Result<std::path::PathBuf>| seen.push((shown, stamp(path)));
        note(CONFIG_FILE.to_string(), root.resolve(CONFIG_FILE));
        for folder in FOLDERS.iter().chain(&["/var/lib/dpkg/updates", "/lib/modules", "/usr/lib/modules"]) {
            let dir = root.resolve(folder);
            let entries = dir.as_ref().ok().and_then(|dir| std::fs::read_dir(dir).ok());
            note(folder.to_string(), dir);
            let Some(entries) = entries else { continue };
            let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for name in names {
                let shown = format!("{folder}/{}", name.to_string_lossy());
                // Each entry as a run reads it, every link followed inside the root.
                note(shown.clone(), root.resolve(&shown));
                if folder.ends_with("/modules") {
                    note(format!("{shown}/modules.dep"), root.resolve(format!("{shown}/modules.dep")));
                }
            }
        }
        note("/var/lib/dpkg/status".into(), root.resolve("/var/lib/dpkg/status"));
        // The state: a forget changes what a run keeps.
        note(format!("{}/{}", crate::root::STATE_DIR, crate::read::state::State::FILE), root.resolve(format!("{}/{}", crate::root::STATE_DIR, crate::read::state::State::FILE)));
        seen.push((format!("limopack {}", env!("CARGO_PKG_VERSION")), [0; 6]));
        if root.is_host() {
            let loaded = crate::fs::read_kernel_file(Path::new("/proc/modules"), crate::fs::limits::CONFIG).unwrap_or_default();
            let names: Vec<&str> = loaded.lines().filter_map(|l| l.split_whitespace().next()).collect();
            seen.push((format!("running {} loaded {}", crate::read::loaded::running_kernel(), names.join(",")), [0; 6]));
        }
        Fingerprint { seen }
    }
}

impl Saved {
    /// Its file in limopack's state folder.
    pub(crate) const FILE: &'static str = "fingerprint.json";

    /// The record of the last run that changed nothing, if there is a readable one.
    pub fn load(root: &Root) -> Option<Saved> {
        state::read_json(root, Saved::FILE).ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_to_an_input_shows() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let decls = dir.path().join("usr/share/limopack");
        std::fs::create_dir_all(&decls).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/modules/6.1/kernel")).unwrap();
        std::fs::write(dir.path().join("lib/modules/6.1/modules.dep"), "").unwrap();
        std::fs::write(decls.join("a.yaml"), "modules: [a]\n").unwrap();
        let first = Fingerprint::take(&root);
        assert_eq!(Fingerprint::take(&root), first, "nothing changed");

        std::fs::write(decls.join("a.yaml"), "modules: [b]\n").unwrap();
        let edited = Fingerprint::take(&root);
        assert_ne!(edited, first, "a declaration's content changed");

        std::fs::write(dir.path().join("lib/modules/6.1/modules.dep"), "kernel/a.ko:\n").unwrap();
        assert_ne!(Fingerprint::take(&root), edited, "depmod ran");

        let before = Fingerprint::take(&root);
        std::fs::create_dir_all(dir.path().join("etc/limopack")).unwrap();
        std::fs::write(dir.path().join("etc/limopack/limopack.yaml"), "prune: true\n").unwrap();
        assert_ne!(Fingerprint::take(&root), before, "a config appeared");
    }
}
