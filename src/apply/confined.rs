//! Deletes and restores confined to a tree: a symlink swapped in anywhere on the way can
//! never lead a delete or a restore outside it.

use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};

/// Deletes files under a tree without ever going through a symlink. Each folder on the way
/// is opened from its parent's descriptor with `O_NOFOLLOW`, and each file is looked at
/// (`lstat`) and unlinked from its folder's descriptor, so a folder swapped for a symlink
/// after it was looked at cannot redirect a delete. Folders stay open while they are on the
/// way to the files given, which in sorted order share them: a prune deletes thousands of
/// files from a few hundred folders, and only the handful on the current path is open at once.
/// A folder left empty is removed when the deletes move on from it.
pub struct Confined {
    /// From the tree's own folder (`""`) down to the folder of the last file given.
    open: Vec<OpenDir>,
}

struct OpenDir {
    /// Relative to the tree.
    rel: String,
    fd: rustix::fd::OwnedFd,
    /// Something in it was deleted: when left, it may be empty.
    emptied: bool,
}

impl Confined {
    pub fn open(tree: &Path) -> std::io::Result<Confined> {
        let fd = rustix::fs::open(tree, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Confined { open: vec![OpenDir { rel: String::new(), fd, emptied: false }] })
    }

    /// True when `rel` is a regular file reached through real folders inside the tree, and so
    /// safe to [`remove`](Self::remove); false when it is gone or anything else.
    pub fn check(&mut self, rel: &str) -> std::io::Result<bool> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !self.enter(dir)? || !plain(name) {
            return Ok(false);
        }
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
        match rustix::fs::statx(&self.current().fd, name, flags, StatxFlags::TYPE) {
            Ok(st) => Ok(rustix::fs::FileType::from_raw_mode(st.stx_mode.into()) == rustix::fs::FileType::RegularFile),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete `rel`, which [`check`](Self::check) just found safe to delete.
    pub fn remove(&mut self, rel: &str) -> std::io::Result<()> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !self.enter(dir)? {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "its folder is gone"));
        }
        rustix::fs::unlinkat(&self.current().fd, name, AtFlags::empty())?;
        self.current_mut().emptied = true;
        Ok(())
    }

    /// Remove the folders still open that the deletes left empty, bottom up.
    pub fn finish(mut self) {
        while self.open.len() > 1 {
            self.leave();
        }
    }

    fn current(&self) -> &OpenDir {
        self.open.last().expect("the tree's own folder stays open")
    }

    fn current_mut(&mut self) -> &mut OpenDir {
        self.open.last_mut().expect("the tree's own folder stays open")
    }

    /// Make `dir` the current folder: leave the open ones not on its way, open the rest of
    /// the way. False when a part of the way is not a real folder (or not there).
    fn enter(&mut self, dir: &str) -> std::io::Result<bool> {
        let on_the_way = |open: &str| open.is_empty() || dir == open || dir.strip_prefix(open).is_some_and(|r| r.starts_with('/'));
        while self.open.len() > 1 && !on_the_way(&self.current().rel) {
            self.leave();
        }
        loop {
            let at = &self.current().rel;
            if at == dir {
                return Ok(true);
            }
            let rest = if at.is_empty() { dir } else { &dir[at.len() + 1..] };
            let part = rest.split('/').next().unwrap_or(rest);
            if !plain(part) {
                return Ok(false);
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(&self.current().fd, part, flags, Mode::empty()) {
                Ok(fd) => fd,
                // Gone, a symlink (ELOOP), or not a folder.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let rel = if at.is_empty() { part.to_string() } else { format!("{at}/{part}") };
            self.open.push(OpenDir { rel, fd, emptied: false });
        }
    }

    /// Close the current folder, and remove it if deletes may have left it empty; removing
    /// fails when it is not, which is what stops the climb.
    fn leave(&mut self) {
        let Some(left) = self.open.pop() else { return };
        let name = left.rel.rsplit('/').next().unwrap_or(&left.rel);
        drop(left.fd);
        if left.emptied && rustix::fs::unlinkat(&self.current().fd, name, AtFlags::REMOVEDIR).is_ok() {
            self.current_mut().emptied = true;
        }
    }
}

/// A name that stays in its folder: not empty, `.` or `..`.
fn plain(part: &str) -> bool {
    !matches!(part, "" | "." | "..")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_deletes_never_go_through_a_symlink_and_leave_no_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, outside) = (dir.path().join("tree"), dir.path().join("outside"));
        for rel in ["a/b/x.ko", "a/b/y.ko", "a/keep.ko", "c/d/z.ko", "e/w.ko"] {
            std::fs::create_dir_all(tree.join(rel).parent().unwrap()).unwrap();
            std::fs::write(tree.join(rel), rel).unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("y.ko"), "precious").unwrap();
        std::fs::write(outside.join("w.ko"), "precious").unwrap();
        std::fs::remove_dir_all(tree.join("e")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("e")).unwrap();

        let mut confined = Confined::open(&tree).unwrap();
        assert!(confined.check("a/b/x.ko").unwrap());
        confined.remove("a/b/x.ko").unwrap();
        // The folder is swapped for a symlink once it is open: the delete stays in the
        // folder that was looked at.
        std::fs::rename(tree.join("a/b"), tree.join("a/moved")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/b")).unwrap();
        assert!(confined.check("a/b/y.ko").unwrap());
        confined.remove("a/b/y.ko").unwrap();
        assert!(confined.check("c/d/z.ko").unwrap());
        confined.remove("c/d/z.ko").unwrap();
        // A symlink on the way from the start: not a file of the tree.
        assert!(!confined.check("e/w.ko").unwrap());
        for odd in ["a", "a/../a/keep.ko", "gone/x.ko", "a/b/../keep.ko", "a//keep.ko"] {
            assert!(!confined.check(odd).unwrap(), "{odd}");
        }
        confined.finish();

        assert_eq!(std::fs::read_to_string(outside.join("y.ko")).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(outside.join("w.ko")).unwrap(), "precious");
        // The folder is removed by its name, which is now the symlink's: both stay.
        assert!(!tree.join("a/moved/y.ko").exists() && tree.join("a/moved").is_dir());
        assert!(tree.join("a/b").is_symlink());
        assert!(!tree.join("c").exists(), "emptied folders go, bottom up");
        assert!(tree.join("a/keep.ko").is_file() && tree.is_dir());
    }
}
