//! The root a run works on: `/` on a live system, or an image under `--root DIR`.

use std::path::{Path, PathBuf};

/// Where limopack keeps its state, lock, journal and saved indexes, inside the root.
pub const STATE_DIR: &str = "/var/lib/limopack";
/// What limopack can always make again, a few files per kernel (see [`CACHES`]).
pub const CACHE_DIR: &str = "/var/cache/limopack";
/// The endings of each kernel's files in [`CACHE_DIR`]: its tree's files as the last walk
/// found them (`tree::Files`), its parsed `modules.dep` (`index_cache`), and the firmware
/// names of its kept modules (`modinfo::FirmwareNames`).
pub const CACHES: [&str; 3] = ["files", "index", "firmware"];
/// The admin's config.
pub const CONFIG_FILE: &str = "/etc/limopack/limopack.yaml";
/// Declarations shipped by packages.
pub const VENDOR_DIR: &str = "/usr/share/limopack";
/// The admin's declarations; a same-named file here masks a vendor one.
pub const ADMIN_DIR: &str = "/etc/limopack/modules.d";

#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    host: bool,
}

impl Root {
    /// `dir` is the root folder. It is the running system when it resolves to `/`; only then
    /// are `/proc` and the running kernel consulted.
    pub fn new(dir: &Path) -> std::io::Result<Root> {
        let path = std::fs::canonicalize(dir)?;
        let host = path == Path::new("/");
        Ok(Root { path, host })
    }

    /// The folder of the root on this machine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the root is the running system.
    pub fn is_host(&self) -> bool {
        self.host
    }

    /// An absolute path of the system (`/etc/limopack`) as a path on this machine.
    pub fn join(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let relative = absolute.as_ref().strip_prefix("/").unwrap_or(absolute.as_ref());
        self.path.join(relative)
    }

    /// The reverse of [`join`](Self::join): a path on this machine as the system sees it.
    pub fn inside(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.join(STATE_DIR)
    }

    /// Kernel `version`'s cache of kind `kind`, one of [`CACHES`].
    pub fn cache_file(&self, version: &str, kind: &str) -> PathBuf {
        debug_assert!(CACHES.contains(&kind), "{kind} is not a cache");
        self.join(CACHE_DIR).join(format!("{version}.{kind}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert!(!root.is_host());
        let config = root.join(CONFIG_FILE);
        assert!(config.starts_with(root.path()));
        assert_eq!(root.inside(&config), Path::new(CONFIG_FILE));
        assert!(Root::new(Path::new("/")).unwrap().is_host());
    }
}
