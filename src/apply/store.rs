//! What limopack writes in its own folders: the admin declarations it is asked to write, the state, the journals, the record of the last
//! run that changed nothing, the index saved before the first prune, and the caches of what
//! was read. The readers in [`crate::read`] read them back. Every file is replaced
//! atomically (write a temporary file, fsync, rename), and every name is made of a checked
//! kernel version, so nothing outside those folders can be written whatever the state said.


use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fs::{limits, Folder};
use crate::kver::Kver;
use crate::read::fingerprint::Saved;
use crate::read::index::HEADERS;
use crate::read::state::{saved_aliases_name, saved_index_name, FirmwareJournal, Journal, State};
use crate::read::tree::Tree;
use crate::root::Root;

impl State {
    pub fn save(&self, root: &Root) -> Result<()> {
        write_json(root, State::FILE, self)
    }
}

impl Journal {
    pub fn save(&self, root: &Root) -> Result<()> {
        write_json(root, Journal::FILE, self)
    }

    pub fn clear(root: &Root) -> Result<()> {
        remove(root, Journal::FILE)
    }
}

impl FirmwareJournal {
    pub fn save(&self, root: &Root) -> Result<()> {
        write_json(root, FirmwareJournal::FILE, self)
    }

    pub fn clear(root: &Root) -> Result<()> {
        remove(root, FirmwareJournal::FILE)
    }
}

impl Saved {
    pub fn save(&self, root: &Root) -> Result<()> {
        write_json(root, Saved::FILE, self)
    }

    /// Forget it: the next run is a full one.
    pub fn clear(root: &Root) -> Result<()> {
        remove(root, Saved::FILE)
    }
}

/// The state, with the journals of a run that was killed folded into it, the kernel that run
/// was pruning, and whether there was one. Its depmod may have stopped half way, leaving a
/// fresh modules.dep beside stale other index files, so that kernel's index is rebuilt.
pub fn complete_killed_run(root: &Root, trees: &[Tree], notes: &mut Vec<String>) -> Result<(State, Option<Kver>, bool)> {
    let mut state = State::load(root)?;
    let (mut interrupted, mut changed) = (None, false);
    // Before --kernel narrows the trees: the journal may be another kernel's.
    if let Some(journal) = Journal::load(root)? {
        let tree = trees.iter().find(|t| t.version == journal.kernel);
        notes.push(format!("{}: completing a run that was interrupted", journal.kernel));
        interrupted = Some(journal.kernel.clone());
        state.absorb(journal, tree);
        changed = true;
        state.save(root)?;
        Journal::clear(root)?;
    }
    if let Some(journal) = FirmwareJournal::load(root)? {
        state.absorb_firmware(root, journal);
        changed = true;
        state.save(root)?;
        FirmwareJournal::clear(root)?;
    }
    Ok((state, interrupted, changed))
}

/// Write the admin's declaration `name` atomically, mode 0644, and return its path.
pub fn write_admin(root: &Root, name: &str, text: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.resolve(crate::root::ADMIN_DIR)?.join(name);
    crate::fs::write_atomic(&path, text.as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Keep `text` as the cache of `kind` for kernel `version`. One that cannot be written only
/// means reading again next time, which callers may ignore.
pub fn keep_cache(root: &Root, version: &Kver, kind: &str, text: &str) -> Result<()> {
    root.own_for_writing(crate::root::CACHE_DIR)?.write_atomic(&crate::root::cache_name(version, kind), text.as_bytes())
}

/// Forget all limopack keeps of a kernel whose tree is gone: its saved index, its caches and
/// its part of the archive. Each is removed inside its own folder, by a name made of the
/// checked version, so nothing outside those folders can go whatever the state said.
pub fn forget_kernel(root: &Root, version: &Kver) -> Result<()> {
    if let Some(state) = root.own(crate::root::STATE_DIR)? {
        state.remove_file(&saved_index_name(version))?;
        state.remove_file(&saved_aliases_name(version))?;
        state.remove_all(&crate::apply::archive::kernel_part(version))?;
    }
    if let Some(caches) = root.own(crate::root::CACHE_DIR)? {
        crate::root::CACHES.iter().try_for_each(|kind| caches.remove_file(&crate::root::cache_name(version, kind)))?;
    }
    Ok(())
}

/// Save the tree's index before the first prune: `modules.dep`, `modules.softdep` and
/// `modules.weakdep` as one file in `depmod -n` layout, and `modules.alias.bin` as it is,
/// which later runs search in place instead of parsing the 1.3 MB text of the aliases. A
/// tree without the binary file has its `modules.alias` saved in the text instead.
pub fn save_index(root: &Root, tree: &Tree) -> Result<()> {
    let state = root.own_for_writing(crate::root::STATE_DIR)?;
    let (target, aliases) = (saved_index_name(&tree.version), saved_aliases_name(&tree.version));
    let folder = Folder::open(&tree.path)?;
    // The binary copy goes first: a saved index names no aliases only when it has a copy.
    let with_binary = match folder.read_if_there("modules.alias.bin", limits::INDEX)? {
        Some(bytes) => {
            state.write_atomic(&aliases, &bytes)?;
            true
        }
        None => {
            state.remove_file(&aliases)?;
            false
        }
    };
    let files: &[&str] = match with_binary {
        true => &["modules.dep", "modules.softdep", "modules.weakdep"],
        false => &["modules.dep", "modules.alias", "modules.softdep", "modules.weakdep"],
    };
    // Written file by file: the index of a big kernel is a few MiB, and a prune holds much else.
    let mut texts = Vec::new();
    for file in files {
        if let Some(bytes) = folder.read_if_there(file, limits::INDEX)? {
            texts.push((file, String::from_utf8(bytes).map_err(|_| Error::damaged(tree.path.join(file), "is not valid UTF-8"))?));
        }
    }
    state.write_atomic_with(&target, |out| {
        for (file, body) in &texts {
            let header = HEADERS.iter().find(|(name, _)| name == *file).map(|(_, h)| *h);
            let body = match header {
                Some(header) => {
                    out.write_all(header.as_bytes())?;
                    out.write_all(b"\n")?;
                    body.strip_prefix(header).map(|b| b.trim_start_matches('\n')).unwrap_or(body)
                }
                None => body,
            };
            out.write_all(body.as_bytes())?;
            if !body.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    })
}

/// Write `value` as the JSON file `name` of limopack's state folder, atomically.
pub(crate) fn write_json<T: Serialize>(root: &Root, name: &str, value: &T) -> Result<()> {
    root.own_for_writing(crate::root::STATE_DIR)?.write_atomic_with(name, |out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    })
}

/// Remove the file `name` of limopack's state folder, if it is there.
pub(crate) fn remove(root: &Root, name: &str) -> Result<()> {
    match root.own(crate::root::STATE_DIR)? {
        Some(state) => state.remove_file(name),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kver::kv;
    use crate::read::index::ModuleIndex;
    use crate::read::state::saved_index;

    #[test]
    fn saved_index_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let tree_dir = dir.path().join("lib/modules/6.1");
        std::fs::create_dir_all(&tree_dir).unwrap();
        std::fs::write(tree_dir.join("modules.dep"), "kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n").unwrap();
        std::fs::write(tree_dir.join("modules.alias"), "alias fs-a a\n").unwrap();
        std::fs::write(tree_dir.join("modules.softdep"), "# Soft dependencies extracted from modules themselves.\nsoftdep a pre: b\n").unwrap();
        let tree = Tree { version: kv("6.1"), path: tree_dir, shown: "/lib/modules/6.1".into() };
        save_index(&root, &tree).unwrap();
        let sources = saved_index(&root, &tree).unwrap().unwrap();
        let index = ModuleIndex::parse(sources).unwrap();
        assert_eq!(index.modules().len(), 2);
        assert_eq!(index.lookup("fs-a"), crate::read::index::Lookup::Modules(vec![0]));
        assert_eq!(index.closure(&[0]).len(), 2);
        assert!(!root.state_dir().unwrap().join(saved_aliases_name(&kv("6.1"))).exists(), "no binary aliases to copy");

        // With depmod's binary aliases, those are copied and searched, and the text is not
        // saved; forgetting the kernel removes both files.
        let bin = crate::read::binary_index::tests::build(&[("fs_b", "b")]);
        std::fs::write(tree.path.join("modules.alias.bin"), bin).unwrap();
        save_index(&root, &tree).unwrap();
        let text = std::fs::read_to_string(root.state_dir().unwrap().join(saved_index_name(&kv("6.1")))).unwrap();
        assert!(!text.contains("alias fs-a"), "{text}");
        let index = ModuleIndex::parse(saved_index(&root, &tree).unwrap().unwrap()).unwrap();
        assert_eq!(index.lookup("fs-b"), crate::read::index::Lookup::Modules(vec![1]));
        assert_eq!(index.lookup("fs-a"), crate::read::index::Lookup::NotFound);
        forget_kernel(&root, &kv("6.1")).unwrap();
        assert!(!root.state_dir().unwrap().join(saved_aliases_name(&kv("6.1"))).exists() && !root.state_dir().unwrap().join(saved_index_name(&kv("6.1"))).exists());
    }

    #[test]
    fn a_gone_kernels_caches_are_forgotten_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        for version in ["6.1", "6.2"] {
            for kind in crate::root::CACHES {
                crate::fs::write_atomic(&root.cache_path(&kv(version), kind), b"x").unwrap();
            }
        }
        forget_kernel(&root, &kv("6.1")).unwrap();
        for kind in crate::root::CACHES {
            assert!(!root.cache_path(&kv("6.1"), kind).exists(), "{kind}");
            assert!(root.cache_path(&kv("6.2"), kind).exists(), "{kind}");
        }
        forget_kernel(&root, &kv("6.1")).unwrap();
    }
}
