//! Which files limopack believes. A declaration decides what gets deleted as root, so, like
//! sudo with sudoers and its include folders, limopack refuses one that someone other than
//! root could have written: the file, every link on the way to it, and every folder above it
//! in the root must be owned by root (or the user running limopack) and writable by no one
//! else. Links may only lead to another file of the same folder, or to `/dev/null` (a mask).
//! A refused file is never parsed, so nothing of it is ever printed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fs::limits;
use crate::root::Root;

/// What reading a trusted file gave.
pub enum Trusted {
    Bytes(Vec<u8>),
    /// A symlink to `/dev/null`: masks the file of the same name, as in systemd.
    Masked,
}

/// Links followed from one name before the chain is refused: enough for any sane layout.
const MAX_HOPS: usize = 8;

/// Read the declaration or config file `name` of `dir`, a folder of `root` as
/// [`Root::resolve`] gives it, refusing it unless it, its links and its folders are trusted.
pub fn read(root: &Root, dir: &Path, name: &str) -> Result<Trusted> {
    check_folders(root, dir)?;
    read_in(dir, name)
}

/// [`read`] for a folder [`check_folders`] found trusted already: the declarations of one
/// folder, which are thousands on some systems, share the check of their folder.
pub fn read_in(dir: &Path, name: &str) -> Result<Trusted> {
    let mut path = dir.join(name);
    for _ in 0..MAX_HOPS {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        check_owner(&path, &meta, "is")?;
        if !meta.file_type().is_symlink() {
            return read_file(&path);
        }
        let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
        if target == Path::new("/dev/null") {
            return Ok(Trusted::Masked);
        }
        if target.components().count() != 1 || !matches!(target.components().next(), Some(std::path::Component::Normal(_))) {
            return Err(Error::untrusted(
                &path,
                format!("is a symlink out of its folder (to {}); refusing it", crate::shown::escaped(&target.to_string_lossy())),
            ));
        }
        path = dir.join(target);
    }
    Err(Error::untrusted(dir.join(name), format!("is a chain of more than {MAX_HOPS} symlinks; refusing it")))
}

/// The file at the end of the links: regular, trusted, and small enough to be a declaration.
fn read_file(path: &Path) -> Result<Trusted> {
    let (file, _) = crate::fs::open_regular(path, limits::DECLARATION)?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check_owner(path, &meta, "is")?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limits::DECLARATION), &mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(Trusted::Bytes(bytes))
}

/// `dir` and every folder above it up to the root's top must be trusted: whoever may write
/// a folder may put any file in it.
pub fn check_folders(root: &Root, dir: &Path) -> Result<()> {
    for folder in dir.ancestors().take_while(|d| d.starts_with(root.path())) {
        match std::fs::metadata(folder) {
            Ok(meta) => check_owner(folder, &meta, "is a folder")?,
            // A folder not there yet holds nothing to read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(folder, e)),
        }
    }
    Ok(())
}

/// Refuse what someone other than root (or the user running limopack) owns or may write. A
/// link's own mode means nothing; its owner does.
fn check_owner(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<()> {
    let mode = meta.permissions().mode();
    if !meta.file_type().is_symlink() && mode & 0o022 != 0 {
        return Err(Error::untrusted(
            path,
            format!("{what} writable by group or others (mode {:o}); refusing it, run chmod go-w {}", mode & 0o7777, path.display()),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(Error::untrusted(path, format!("{what} owned by uid {}, not root; refusing it, run chown root {}", meta.uid(), path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn loose_and_escaping_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let folder = root.path().join("decl");
        fs::create_dir(&folder).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
        let read = |name: &str| super::read(&root, &folder, name);
        let file = folder.join("a.yaml");
        fs::write(&file, "modules: [x]\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read("a.yaml").unwrap(), Trusted::Bytes(b) if b == b"modules: [x]\n"));

        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let e = read("a.yaml").err().unwrap().to_string();
        assert!(e.contains("is writable by group or others (mode 666)"), "{e}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();

        std::os::unix::fs::symlink("/etc/passwd", folder.join("out.yaml")).unwrap();
        assert!(read("out.yaml").err().unwrap().to_string().contains("symlink out of its folder"));
        // Every hop is checked: a sibling that leads out is refused, and says nothing of
        // what it leads to.
        std::os::unix::fs::symlink("out.yaml", folder.join("hop.yaml")).unwrap();
        let e = read("hop.yaml").err().unwrap().to_string();
        assert!(e.contains("out.yaml: is a symlink out of its folder (to /etc/passwd)") && !e.contains("root:"), "{e}");
        std::os::unix::fs::symlink("a.yaml", folder.join("sib.yaml")).unwrap();
        assert!(matches!(read("sib.yaml").unwrap(), Trusted::Bytes(_)));
        std::os::unix::fs::symlink("loop.yaml", folder.join("loop.yaml")).unwrap();
        assert!(read("loop.yaml").err().unwrap().to_string().contains("a chain of more than 8 symlinks"));

        std::os::unix::fs::symlink("/dev/null", folder.join("m.yaml")).unwrap();
        assert!(matches!(read("m.yaml").unwrap(), Trusted::Masked));
        // A mask someone else made masks nothing.
        rustix::fs::chownat(rustix::fs::CWD, folder.join("m.yaml"), Some(rustix::fs::Uid::from_raw(65534)), None, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert!(read("m.yaml").err().unwrap().to_string().contains("m.yaml: is owned by uid 65534"));

        // A folder anyone may write is no place for declarations.
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).unwrap();
        let e = read("a.yaml").err().unwrap().to_string();
        assert!(e.contains("decl: is a folder writable by group or others (mode 777)"), "{e}");
    }
}
