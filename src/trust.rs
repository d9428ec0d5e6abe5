//! Which files limopack believes. A declaration decides what gets deleted as root, so, like
//! sudo with sudoers, limopack refuses one that someone other than root could have written.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// What reading a trusted file gave.
pub enum Trusted {
    Bytes(Vec<u8>),
    /// A symlink to `/dev/null`: masks the file of the same name, as in systemd.
    Masked,
}

/// Declarations and the config name modules and a few settings; one larger than this is not
/// one, and is refused before it is parsed.
pub const MAX_SIZE: u64 = 1 << 20;

/// Read a declaration or config file, refusing it when it is writable by others, owned by
/// someone other than root (or the user running limopack), a symlink out of its folder, or
/// larger than [`MAX_SIZE`].
pub fn read(path: &Path) -> Result<Trusted> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
        if target == Path::new("/dev/null") {
            return Ok(Trusted::Masked);
        }
        if target.components().count() != 1 || target.is_absolute() {
            return Err(Error::refused(
                path,
                format!("is a symlink out of its folder (to {}); refusing it", target.display()),
            ));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::refused(path, "is not a regular file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(Error::refused(
            path,
            format!("is writable by group or others (mode {:o}); refusing it, run chmod go-w", mode & 0o7777),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(Error::refused(
            path,
            format!("is owned by uid {}, not root; refusing it", meta.uid()),
        ));
    }
    if meta.len() > MAX_SIZE {
        return Err(Error::refused(
            path,
            format!("is {} bytes, more than the {MAX_SIZE} a declaration or config may be; refusing it", meta.len()),
        ));
    }
    std::fs::read(path)
        .map(Trusted::Bytes)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn loose_and_escaping_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        fs::write(&file, "modules: [x]\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read(&file).unwrap(), Trusted::Bytes(b) if b == b"modules: [x]\n"));

        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(&file).err().unwrap().to_string();
        assert!(e.contains("writable by group or others (mode 666)"), "{e}");

        let out = dir.path().join("out.yaml");
        std::os::unix::fs::symlink("/etc/passwd", &out).unwrap();
        assert!(read(&out).err().unwrap().to_string().contains("symlink out of its folder"));

        let sibling = dir.path().join("sib.yaml");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("a.yaml", &sibling).unwrap();
        assert!(matches!(read(&sibling).unwrap(), Trusted::Bytes(_)));

        let masked = dir.path().join("m.yaml");
        std::os::unix::fs::symlink("/dev/null", &masked).unwrap();
        assert!(matches!(read(&masked).unwrap(), Trusted::Masked));
    }
}
