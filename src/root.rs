//! The root a run works on: `/` on a live system, or an image under `--root DIR`.
//!
//! An image is not trusted: its `lib` may be a link to `/usr/lib`, which on this machine is
//! the host's, and its `var/lib/limopack` may be a link to anywhere. Every path of the system
//! is therefore resolved inside the root the way chroot(2) would resolve it, with libpathrs
//! (`openat2` with `RESOLVE_IN_ROOT`, or its checked emulation on kernels without it): an
//! absolute link means a place in the image, and `..` stops at its top. libpathrs was chosen
//! over cap-std because cap-std refuses absolute links, which images rightly hold.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::Folder;

/// Where limopack keeps its state, lock, journal and saved indexes, inside the root.
pub const STATE_DIR: &str = "/var/lib/limopack";
/// What limopack can always make again, a few files per kernel (see [`CACHES`]).
pub const CACHE_DIR: &str = "/var/cache/limopack";
/// The endings of each kernel's files in [`CACHE_DIR`]: its tree's files as the last walk
/// found them (`tree::Files`), its parsed `modules.dep` (`index_cache`), and the firmware
/// names of its kept modules (`modinfo::FirmwareNames`).
pub const CACHES: [&str; 3] = ["files", "index", "firmware"];

/// The name in [`CACHE_DIR`] of kernel `version`'s cache of kind `kind`, one of [`CACHES`].
pub fn cache_name(version: &crate::kver::Kver, kind: &str) -> String {
    debug_assert!(CACHES.contains(&kind), "{kind} is not a cache");
    format!("{version}.{kind}")
}
/// The admin's config.
pub const CONFIG_FILE: &str = "/etc/limopack/limopack.yaml";
/// Declarations shipped by packages.
pub const VENDOR_DIR: &str = "/usr/share/limopack";
/// The admin's declarations; a same-named file here masks a vendor one.
pub const ADMIN_DIR: &str = "/etc/limopack/modules.d";
/// Where the kernel looks for firmware.
pub const FIRMWARE_DIR: &str = "/lib/firmware";

#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    /// The image's top, to resolve in; none for the running system, where chroot's
    /// resolution is the ordinary one.
    image: Option<std::sync::Arc<pathrs::Root>>,
}

impl Root {
    /// `dir` is the root folder. It is the running system when it resolves to `/`; only then
    /// are `/proc` and the running kernel consulted.
    pub fn new(dir: &Path) -> Result<Root> {
        let path = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let image = match path == Path::new("/") {
            true => None,
            false => Some(std::sync::Arc::new(pathrs::Root::open(&path).map_err(|e| resolve_error(&path, e))?)),
        };
        Ok(Root { path, image })
    }

    /// The folder of the root on this machine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the root is the running system.
    pub fn is_host(&self) -> bool {
        self.image.is_none()
    }

    /// Where an absolute path of the system (`/lib/modules`) is on this machine: every link
    /// on the way followed inside the root, as chroot would, so that the place found has no
    /// link left in it. The part of the path that does not exist yet is added as it is, and
    /// must be plain names.
    pub fn resolve(&self, absolute: impl AsRef<Path>) -> Result<PathBuf> {
        let absolute = absolute.as_ref();
        let relative = absolute.strip_prefix("/").unwrap_or(absolute);
        let Some(image) = &self.image else {
            return Ok(self.path.join(relative));
        };
        // Most paths of an image hold no link at all, and are then where they are: an openat2
        // or a few tell, and only a path with a link needs libpathrs to follow it.
        if without_links(image, relative) {
            return Ok(self.path.join(relative));
        }
        let mut existing = relative.to_path_buf();
        let mut missing = Vec::new();
        let mut found = loop {
            if existing.as_os_str().is_empty() {
                break self.path.clone();
            }
            match image.resolve(&existing) {
                Ok(handle) => break self.real_path_of(&handle, absolute)?,
                Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => {
                    missing.push(existing.file_name().map(ToOwned::to_owned));
                    existing.pop();
                }
                Err(e) => return Err(resolve_error(&self.path.join(relative), e)),
            }
        };
        for (i, part) in missing.into_iter().rev().enumerate() {
            match part {
                Some(name) if !matches!(Path::new(&name).components().next(), Some(Component::CurDir | Component::ParentDir)) => found.push(name),
                _ => return Err(Error::untrusted(self.path.join(relative), "is not a plain path inside the root")),
            }
            // What could not be resolved but is there is a link to nothing in the root:
            // chroot would create its target, which is not worth following here.
            if i == 0 && std::fs::symlink_metadata(&found).is_ok() {
                return Err(Error::untrusted(found, "is a link to nothing inside the root; refusing it"));
            }
        }
        Ok(found)
    }

    /// The bytes of the file at `absolute`, every link on the way followed inside the root;
    /// none when there is none. A refusal names the path asked for, and where it led.
    pub fn read_if_there(&self, absolute: impl AsRef<Path>, limit: u64) -> Result<Option<Vec<u8>>> {
        let absolute = absolute.as_ref();
        let asked = self.path.join(absolute.strip_prefix("/").unwrap_or(absolute));
        let real = self.resolve(absolute)?;
        match crate::fs::read_if_there(&real, limit) {
            Err(Error::Untrusted { message, .. }) if real != asked => {
                Err(Error::untrusted(asked, format!("leads to {}, which {message}", self.inside(&real).display())))
            }
            other => other,
        }
    }

    /// The path on this machine of what `handle` holds, which must be inside the root.
    fn real_path_of(&self, handle: &pathrs::Handle, asked: &Path) -> Result<PathBuf> {
        use std::os::fd::{AsFd, AsRawFd};
        let procfs = pathrs::procfs::ProcfsHandle::new().map_err(|e| resolve_error(Path::new("/proc"), e))?;
        let fd = handle.as_fd().as_raw_fd();
        let real = procfs
            .readlink(pathrs::procfs::ProcfsBase::ProcSelf, format!("fd/{fd}"))
            .map_err(|e| resolve_error(&self.path.join(asked.strip_prefix("/").unwrap_or(asked)), e))?;
        match real.starts_with(&self.path) {
            true => Ok(real),
            false => Err(Error::untrusted(real, format!("is where {} of the root leads, outside it; refusing it", asked.display()))),
        }
    }

    /// Where `walked` is on this machine, for a path that was already walked inside the root
    /// part by part with every link resolved on the way (the firmware loader's walk, which
    /// keeps the links it meets): the two are joined as they are.
    pub(crate) fn lexical(&self, walked: &str) -> PathBuf {
        self.path.join(walked.trim_start_matches('/'))
    }

    /// The reverse of [`resolve`](Self::resolve): a path on this machine as the system sees it.
    pub fn inside(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    pub fn state_dir(&self) -> Result<PathBuf> {
        self.resolve(STATE_DIR)
    }

    /// limopack's own folder `dir` ([`STATE_DIR`] or [`CACHE_DIR`]) to read from, or none
    /// when it is not there: everything in it is reached without leaving it.
    pub fn own(&self, dir: &str) -> Result<Option<Folder>> {
        Folder::open_if_there(&self.resolve(dir)?)
    }

    /// Where kernel `version`'s cache of kind `kind` is on this machine, for tests to look.
    #[cfg(test)]
    pub(crate) fn cache_path(&self, version: &crate::kver::Kver, kind: &str) -> PathBuf {
        self.resolve(CACHE_DIR).unwrap().join(cache_name(version, kind))
    }

    /// limopack's own folder `dir` to write to, made when it is not there yet.
    pub fn own_for_writing(&self, dir: &str) -> Result<Folder> {
        Folder::create(&self.resolve(dir)?)
    }
}

/// True when no part of `relative` in the image is a link, and each part is there or, from
/// the first that is not on, simply not there (not even as a link), so that the path is
/// where it reads. openat2 refuses any link with `RESOLVE_NO_SYMLINKS`, and `..` with
/// `RESOLVE_BENEATH`.
fn without_links(image: &pathrs::Root, relative: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let try_open = |at: &Path| {
        let at = if at.as_os_str().is_empty() { Path::new(".") } else { at };
        rustix::fs::openat2(image, at, flags, Mode::empty(), ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH)
    };
    let mut at = relative;
    loop {
        match try_open(at) {
            Ok(_) => return true,
            Err(rustix::io::Errno::NOENT) => match at.parent() {
                Some(parent) => at = parent,
                None => return true,
            },
            Err(_) => return false,
        }
    }
}

/// libpathrs' error, as one of ours: the errno as an I/O error, or the refusal it made.
fn resolve_error(path: &Path, error: pathrs::error::Error) -> Error {
    match error.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => Error::io(path, std::io::Error::from_raw_os_error(errno)),
        _ => Error::untrusted(path, format!("cannot be resolved inside the root: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root_as_chroot_would() {
        let dir = tempfile::tempdir().unwrap();
        let (top, host) = (dir.path().join("image"), dir.path().join("host"));
        for d in [top.join("usr/lib/modules/6.1"), host.join("lib/modules/6.1"), top.join("var/lib"), top.join("srv/state"), top.join("etc")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let root = Root::new(&top).unwrap();
        assert!(!root.is_host());
        // An absolute link is the image's own path; one that climbs stops at its top.
        std::os::unix::fs::symlink("/usr/lib", top.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../srv/state", top.join("var/lib/limopack")).unwrap();
        std::os::unix::fs::symlink(&host, top.join("etc/limopack")).unwrap();
        let top = root.path().to_path_buf();
        assert_eq!(root.resolve("/lib/modules/6.1").unwrap(), top.join("usr/lib/modules/6.1"));
        assert_eq!(root.resolve("/lib/modules/6.2/x").unwrap(), top.join("usr/lib/modules/6.2/x"));
        assert_eq!(root.resolve(STATE_DIR).unwrap(), top.join("srv/state"));
        assert_eq!(root.resolve("/var/lib/limopack/state.json").unwrap(), top.join("srv/state/state.json"));
        // A link to the host's folder is a link to nothing in the image.
        let e = root.resolve("/etc/limopack/limopack.yaml").unwrap_err().to_string();
        assert!(e.contains("etc/limopack: is a link to nothing inside the root"), "{e}");
        assert_eq!(root.inside(&top.join("usr/lib/modules/6.1")), Path::new("/usr/lib/modules/6.1"));
        assert!(Root::new(Path::new("/")).unwrap().is_host());
    }
}
