//! limopack's archive of what it pruned, with `archive: true`: a zstd copy of each file under
//! `/var/lib/limopack/archive/<kver>/<path in the tree>.zst`. Restoring from it needs no
//! `.deb` and no network; it costs the disk space of the compressed files.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::root::{Root, STATE_DIR};

/// zstd's default level: a first prune archives a few hundred MiB, and the higher levels
/// would make it take minutes for a few percent of disk.
const LEVEL: i32 = 3;

/// The part of the archive of `part` (a kernel version, or `firmware`), in the state folder.
pub fn kernel_part(part: &str) -> String {
    format!("archive/{part}")
}

/// The name in the state folder of the copy of `rel` of part `part`.
fn name(part: &str, rel: &str) -> String {
    format!("{}/{rel}.zst", kernel_part(part))
}

/// Where the copy of `rel` of part `part` lives, for messages.
pub fn path(root: &Root, part: &str, rel: &str) -> Result<PathBuf> {
    Ok(root.state_dir()?.join(name(part, rel)))
}

/// Keep a compressed copy of `file`, replacing any older one whole. The copy is written
/// inside the state folder, whatever links are in it.
pub fn store(root: &Root, part: &str, rel: &str, file: &Path) -> Result<()> {
    let state = root.own_for_writing(STATE_DIR)?;
    let (source, _) = crate::fs::open_regular(file, u64::MAX)?;
    state.write_atomic_with(&name(part, rel), |out| zstd::stream::copy_encode(source, out, LEVEL))
}

/// The archived content of `rel`, decompressed as it is read; `None` when there is no copy.
pub fn open(root: &Root, part: &str, rel: &str) -> Result<Option<impl Read + use<>>> {
    let Some(state) = root.own(STATE_DIR)? else { return Ok(None) };
    let name = name(part, rel);
    let file = match state.open_regular(&name, u64::MAX) {
        Ok((file, _)) => file,
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    zstd::stream::read::Decoder::new(file).map(Some).map_err(|e| Error::io(state.path().join(name), e))
}

/// Drop the copy of `rel`, once the file is back in the tree, and the folders it leaves
/// empty. A copy that is not there is fine.
pub fn forget(root: &Root, part: &str, rel: &str) -> Result<()> {
    let Some(state) = root.own(STATE_DIR)? else { return Ok(()) };
    let name = name(part, rel);
    state.remove_file(&name)?;
    state.remove_empty_parents(&name);
    Ok(())
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

    #[test]
    fn a_link_planted_in_the_archive_leads_nowhere_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (top, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(top.join("var/lib/limopack/archive/6.1")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, top.join("var/lib/limopack/archive/6.1/kernel")).unwrap();
        let root = Root::new(&top).unwrap();
        let module = dir.path().join("m.ko");
        std::fs::write(&module, "module").unwrap();
        // The link leads to nothing inside the state folder: no copy can go there.
        let e = store(&root, "6.1", "kernel/drivers/m.ko", &module).unwrap_err().to_string();
        assert!(e.contains("archive/6.1/kernel/drivers: Not a directory"), "{e}");
        std::fs::write(outside.join("m.ko.zst"), "").unwrap();
        assert!(open(&root, "6.1", "kernel/m.ko").unwrap().is_none(), "the copy outside is not read");
        forget(&root, "6.1", "kernel/m.ko").unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nor removed");
    }
}
