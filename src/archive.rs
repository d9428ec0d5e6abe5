//! limopack's archive of what it pruned, with `archive: true`: a zstd copy of each file under
//! `/var/lib/limopack/archive/<kver>/<path in the tree>.zst`. Restoring from it needs no
//! `.deb` and no network; it costs the disk space of the compressed files.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::root::Root;

/// zstd's default level: a first prune archives a few hundred MiB, and the higher levels
/// would make it take minutes for a few percent of disk.
const LEVEL: i32 = 3;

/// The archive's folder, inside the state folder.
fn archive_dir(root: &Root) -> Result<PathBuf> {
    Ok(root.state_dir()?.join("archive"))
}

/// Where the copy of `rel` of part `part` (a kernel version, or `firmware`) lives.
pub fn path(root: &Root, part: &str, rel: &str) -> Result<PathBuf> {
    Ok(archive_dir(root)?.join(part).join(format!("{rel}.zst")))
}

/// Keep a compressed copy of `file`, replacing any older one whole.
pub fn store(root: &Root, version: &str, rel: &str, file: &Path) -> Result<()> {
    let target = path(root, version, rel)?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let source = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    zstd::stream::copy_encode(source, tmp.as_file(), LEVEL).map_err(|e| Error::io(file, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
    Ok(())
}

/// The archived content of `rel`, decompressed as it is read; `None` when there is no copy.
pub fn open(root: &Root, version: &str, rel: &str) -> Result<Option<impl Read + use<>>> {
    let path = path(root, version, rel)?;
    let file = match crate::fs::open_regular(&path, u64::MAX) {
        Ok((file, _)) => file,
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let decoder = zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(&path, e))?;
    Ok(Some(decoder))
}

/// Drop the copy of `rel`, once the file is back in the tree. A copy that is not there is fine.
pub fn forget(root: &Root, version: &str, rel: &str) -> Result<()> {
    let path = path(root, version, rel)?;
    crate::fs::remove_if_present(&path)?;
    crate::tree::remove_empty_parents(&archive_dir(root)?.join(version), &path);
    Ok(())
}

/// Drop every copy of a kernel whose tree is gone.
pub fn forget_kernel(root: &Root, version: &crate::kver::Kver) -> Result<()> {
    crate::fs::remove_tree_in(&archive_dir(root)?, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reads_back_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let module = dir.path().join("m.ko");
        let body: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(&module, &body).unwrap();
        store(&root, "6.1", "kernel/drivers/m.ko", &module).unwrap();
        let stored = path(&root, "6.1", "kernel/drivers/m.ko").unwrap();
        assert!(std::fs::metadata(&stored).unwrap().len() < body.len() as u64 / 4);
        let mut back = Vec::new();
        open(&root, "6.1", "kernel/drivers/m.ko").unwrap().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, body);
        forget(&root, "6.1", "kernel/drivers/m.ko").unwrap();
        assert!(open(&root, "6.1", "kernel/drivers/m.ko").unwrap().is_none());
        assert!(!stored.parent().unwrap().exists(), "empty folders go too");
        forget(&root, "6.1", "kernel/drivers/m.ko").unwrap();
    }
}
