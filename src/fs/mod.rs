//! Reading and writing files, the few ways limopack does it.
//!
//! Every file a run reads comes from an image or a system it does not trust to be sane: a
//! FIFO would block a run that holds the lock, and `/dev/zero` or a sparse file of a terabyte
//! would fill its memory. So a file is read only when it is a regular file, opened without
//! blocking, and no larger than the bound for its kind ([`limits`]). Files are written whole
//! or not at all: into a temporary file beside the target, synced, then renamed over it.

pub mod bytes;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use bytes::Bytes;

/// The largest file of each kind a run reads; a larger one is refused, naming it. Each is
/// many times the largest seen on a real system.
pub mod limits {
    const MIB: u64 = 1 << 20;
    /// A declaration or the config: a list of module names (the largest real ones are 1 KiB).
    pub const DECLARATION: u64 = MIB;
    /// A depmod index file or limopack's copy of one (`modules.alias` is 1.3 MiB).
    pub const INDEX: u64 = 64 * MIB;
    /// dpkg's `status` or one of its journal entries or file lists (a kernel's list is 0.3 MiB,
    /// the status of a 5,000-package system 10 MiB).
    pub const DPKG: u64 = 256 * MIB;
    /// limopack's state, journal and caches (a pruned kernel's state is 0.25 MiB).
    pub const STATE: u64 = 64 * MIB;
    /// A modprobe.d file, or a file of procfs or sysfs.
    pub const CONFIG: u64 = 4 * MIB;
    /// What is decompressed of a module to find its `.modinfo`: the largest module of a
    /// Debian kernel is 30 MiB unpacked, and the section is near its start.
    pub const MODULE: u64 = 64 * MIB;
    /// A file brought back from a `.deb` or limopack's archive: a module or a firmware file
    /// (the largest firmware files are a few tens of MiB).
    pub const RESTORED: u64 = 1024 * MIB;
}

/// Open `path` for reading when it is a regular file of at most `limit` bytes, without
/// blocking (a FIFO would wait for a writer forever); its size is returned with it. A link
/// is followed: `path` is one [`crate::root::Root::resolve`] gave, or the running system's.
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, u64)> {
    open_checked(path, limit, true)
}

/// [`open_regular`] for an entry of a folder that holds no links (dpkg's file lists): one
/// that is a link is refused, whatever it leads to.
pub fn open_entry(path: &Path, limit: u64) -> Result<(File, u64)> {
    open_checked(path, limit, false)
}

fn open_checked(path: &Path, limit: u64, follow: bool) -> Result<(File, u64)> {
    let meta = match follow {
        true => std::fs::metadata(path),
        false => std::fs::symlink_metadata(path),
    };
    let meta = meta.map_err(|e| Error::io(path, e))?;
    refuse_odd(path, &meta, limit)?;
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | nofollow)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(Error::untrusted(path, "was replaced while it was opened; run again"));
    }
    refuse_odd(path, &opened, limit)?;
    Ok((file, opened.len()))
}

/// The refusal of a file that is not a regular one, or that is larger than `limit`.
fn refuse_odd(path: &Path, meta: &std::fs::Metadata, limit: u64) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let what = match () {
        _ if kind.is_file() => None,
        _ if kind.is_dir() => Some("a folder"),
        _ if kind.is_fifo() => Some("a FIFO"),
        _ if kind.is_char_device() => Some("a character device"),
        _ if kind.is_block_device() => Some("a block device"),
        _ if kind.is_socket() => Some("a socket"),
        _ if kind.is_symlink() => Some("a symlink"),
        _ => Some("not a regular file"),
    };
    if let Some(what) = what {
        return Err(Error::untrusted(path, format!("is {what}, not a regular file; refusing to read it")));
    }
    if meta.len() > limit {
        return Err(Error::untrusted(path, format!("is {} bytes, more than the {limit} such a file may be; refusing to read it", meta.len())));
    }
    Ok(())
}

/// The bytes of the regular file at `path`, of at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, limit)?;
    read_all(path, file, len, limit)
}

/// [`read`], or none when there is no such file.
pub fn read_if_there(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    match read(path, limit) {
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// The bytes of `path`, an entry of a folder that holds no links (a tree's index files), or
/// none when there is none; a link there is refused, whatever it leads to.
pub fn read_entry_if_there(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    match open_entry(path, limit) {
        Ok((file, len)) => read_all(path, file, len, limit).map(Some),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The text of the regular file at `path`, which must be UTF-8.
pub fn read_text(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read(path, limit)?).map_err(|_| Error::damaged(path, "is not valid UTF-8"))
}

/// A file of procfs or sysfs, which shows a size of 0 whatever it holds: read up to `limit`.
pub fn read_kernel_file(path: &Path, limit: u64) -> Result<String> {
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(|e| Error::io(path, e))?;
    refuse_odd(path, &file.metadata().map_err(|e| Error::io(path, e))?, u64::MAX)?;
    let bytes = read_all(path, file, 0, limit)?;
    String::from_utf8(bytes).map_err(|_| Error::damaged(path, "is not valid UTF-8"))
}

/// Everything `file` holds, `len` bytes expected; one that grew past `limit` since its size
/// was taken is refused.
fn read_all(path: &Path, file: File, len: u64, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::untrusted(path, format!("grew past the {limit} bytes such a file may be while it was read; refusing it")));
    }
    Ok(bytes)
}

/// Replace `path` with `bytes` so that a crash leaves the old file or the new one, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// [`write_atomic`] for content written piece by piece by `fill`. Whatever fails, the error
/// names `path`, not the temporary file that is gone with it.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = std::io::BufWriter::new(file);
    fill(&mut out).map_err(|e| Error::io(path, e))?;
    let file = out.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    file.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// Write `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic_with(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    })
}

/// Remove a file limopack wrote; one that is not there is already what was wanted.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// A folder whose files are read and written without ever leaving it: every path given is
/// resolved inside the folder by libpathrs, as chroot would resolve it with the folder as its
/// root, so no link in it (a tree's, or one planted in limopack's state) leads elsewhere.
/// limopack's state, caches and archive, and each module tree, are read through one.
pub struct Folder {
    path: PathBuf,
    inner: pathrs::Root,
}

/// libpathrs' error about `path`, as one of ours: its errno as an I/O error, or the refusal.
fn pathrs_error(path: &Path, error: pathrs::error::Error) -> Error {
    match error.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => Error::io(path, std::io::Error::from_raw_os_error(errno)),
        _ => Error::untrusted(path, format!("cannot be reached inside its folder: {error}")),
    }
}

fn not_found(error: &Error) -> bool {
    matches!(error, Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
}

impl Folder {
    /// The folder at `path`, which must be there.
    pub fn open(path: &Path) -> Result<Folder> {
        let inner = pathrs::Root::open(path).map_err(|e| pathrs_error(path, e))?;
        Ok(Folder { path: path.to_path_buf(), inner })
    }

    /// The folder at `path`, made first (with its parents) if it is not there.
    pub fn create(path: &Path) -> Result<Folder> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Folder::open(path)
    }

    /// The folder at `path`, or none when it is not there.
    pub fn open_if_there(path: &Path) -> Result<Option<Folder>> {
        match Folder::open(path) {
            Err(e) if not_found(&e) => Ok(None),
            other => other.map(Some),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open `rel` for reading as [`open_regular`] does, resolved inside the folder.
    pub fn open_regular(&self, rel: &str, limit: u64) -> Result<(File, u64)> {
        let path = self.path.join(rel);
        let flags = pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_NONBLOCK | pathrs::flags::OpenFlags::O_NOCTTY;
        let file = match self.inner.open_subpath(rel, flags).map_err(|e| pathrs_error(&path, e)) {
            // Something that is there but leads nowhere in the folder is not "no such file".
            Err(e) if not_found(&e) && self.inner.resolve_nofollow(rel).is_ok() => {
                return Err(Error::untrusted(&path, "is a link that leads to nothing inside its folder; refusing it"));
            }
            other => other?,
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        refuse_odd(&path, &meta, limit)?;
        Ok((file, meta.len()))
    }

    /// The bytes of `rel`, or none when it is not there.
    pub fn read_if_there(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match self.open_regular(rel, limit) {
            Ok((file, len)) => read_all(&self.path.join(rel), file, len, limit).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of `rel`, mapped when large (see [`crate::fs::bytes`]), or none when it is not
    /// there.
    pub fn bytes_if_there(&self, rel: &str, limit: u64) -> Result<Option<Bytes>> {
        match self.open_regular(rel, limit) {
            Ok((file, len)) => Bytes::of_file(&file, len).map(Some).map_err(|e| Error::io(self.path.join(rel), e)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace `rel` whole, as [`write_atomic_with`] does, its folders made as needed, all
    /// inside this folder.
    pub fn write_atomic_with(&self, rel: &str, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.join(rel);
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !dir.is_empty() {
            self.inner.mkdir_all(dir, &std::fs::Permissions::from_mode(0o755)).map_err(|e| pathrs_error(&self.path.join(dir), e))?;
        }
        let tmp = format!("{}{}.{name}.{}.tmp", dir, if dir.is_empty() { "" } else { "/" }, std::process::id());
        let flags = pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_TRUNC;
        let _ = self.inner.remove_file(&tmp);
        let file = self.inner.create_file(&tmp, flags, &std::fs::Permissions::from_mode(0o644)).map_err(|e| pathrs_error(&path, e))?;
        let written = (|| -> Result<()> {
            let mut out = std::io::BufWriter::new(file);
            fill(&mut out).map_err(|e| Error::io(&path, e))?;
            let file = out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            self.inner.rename(&tmp, rel, pathrs::flags::RenameFlags::empty()).map_err(|e| pathrs_error(&path, e))
        })();
        if written.is_err() {
            let _ = self.inner.remove_file(&tmp);
        }
        written?;
        let flags = pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY;
        let dir_file = self.inner.open_subpath(if dir.is_empty() { "." } else { dir }, flags).map_err(|e| pathrs_error(&self.path.join(dir), e))?;
        dir_file.sync_all().map_err(|e| Error::io(self.path.join(dir), e))
    }

    /// [`write_atomic_with`](Self::write_atomic_with) of `bytes`.
    pub fn write_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic_with(rel, |out| out.write_all(bytes))
    }

    /// Remove the file `rel`; one that is not there is already what was wanted.
    pub fn remove_file(&self, rel: &str) -> Result<()> {
        match self.inner.remove_file(rel) {
            Ok(()) => Ok(()),
            Err(e) => match pathrs_error(&self.path.join(rel), e) {
                e if not_found(&e) => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Remove the folders of `rel` (a file's path) that are left empty, bottom up; the
    /// first that is not empty, or not there, stops the climb.
    pub fn remove_empty_parents(&self, rel: &str) {
        let mut dir = rel;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if self.inner.remove_dir(parent).is_err() {
                break;
            }
            dir = parent;
        }
    }

    /// Remove the folder or file `name` and everything in it. One that is not there is fine.
    pub fn remove_all(&self, name: &str) -> Result<()> {
        match self.inner.remove_all(name) {
            Ok(()) => Ok(()),
            Err(e) => match pathrs_error(&self.path.join(name), e) {
                e if not_found(&e) => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// The bytes of the regular file at `path`, an entry of a folder that holds no links (a
/// tree's index files), of at most `limit` bytes (see [`open_entry`]), mapped when large; or
/// none when there is no such file.
pub fn mapped_if_there(path: &Path, limit: u64) -> Result<Option<Bytes>> {
    let (file, len) = match open_entry(path, limit) {
        Err(Error::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    Bytes::of_file(&file, len).map(Some).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read(&file, 10).unwrap(), b"0123456789");
        let e = read(&file, 9).unwrap_err().to_string();
        assert!(e.ends_with("f: is 10 bytes, more than the 9 such a file may be; refusing to read it"), "{e}");

        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0).unwrap();
        let e = read(&fifo, 10).unwrap_err().to_string();
        assert!(e.ends_with("fifo: is a FIFO, not a regular file; refusing to read it"), "{e}");
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read(&zero, 10).unwrap_err().to_string().contains("is a character device"));
        let sparse = File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 40).unwrap();
        assert!(read(&dir.path().join("sparse"), limits::DPKG).unwrap_err().to_string().contains("is 1099511627776 bytes"));
        assert!(read_if_there(&dir.path().join("none"), 1).unwrap().is_none());
        assert!(read_kernel_file(Path::new("/proc/self/status"), limits::CONFIG).unwrap().contains("Name:"));
    }

    #[test]
    fn an_atomic_write_names_its_target_when_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_json(&target, &[1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "[\n  1,\n  2\n]\n");
        let e = write_atomic_with(&target, |_| Err(std::io::Error::from_raw_os_error(libc::ENOSPC))).unwrap_err().to_string();
        assert_eq!(e, format!("{}: No space left on device", target.display()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
