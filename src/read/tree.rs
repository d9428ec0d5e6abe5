//! Kernel module trees on disk: finding them, walking their files, and telling whether
//! their index is fresh ([`crate::apply::depmod`] refreshes it).

use rustc_hash::FxHashSet as HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags, Statx, StatxFlags};

use crate::error::{Error, Result};
use crate::read::index::ModuleIndex;
use crate::kver::Kver;
use crate::name;
use crate::fs::bytes::Bytes;
use crate::paths::PathTable;
use crate::root::Root;

/// One `/lib/modules/<kver>` folder.
#[derive(Debug, Clone)]
pub struct Tree {
    pub version: Kver,
    /// The folder on this machine.
    pub path: PathBuf,
    /// The folder as the system sees it (`/lib/modules/6.1.0-50-amd64`).
    pub shown: PathBuf,
}

impl Tree {
    /// The ways dpkg may list a file of this tree: packages ship under `/lib/modules`, and
    /// after the /usr merge some under `/usr/lib/modules`.
    pub fn dpkg_paths(&self, rel: &str) -> [String; 2] {
        [
            format!("/lib/modules/{}/{rel}", self.version),
            format!("/usr/lib/modules/{}/{rel}", self.version),
        ]
    }
}

/// Every module tree under the root, each once even when `/lib` is a symlink to `/usr/lib`.
/// Folders that cannot be managed safely are reported in `warnings` and left alone.
pub fn discover(root: &Root, warnings: &mut Vec<String>) -> Result<Vec<Tree>> {
    let mut seen: HashSet<(u64, u64)> = HashSet::default();
    let mut trees: Vec<Tree> = Vec::new();
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let dir = root.resolve(base)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut found: Vec<(Kver, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                warnings.push(format!("{}: kernel folder name is not UTF-8; left alone", path.display()));
                continue;
            };
            let version = match Kver::new(&name) {
                Ok(version) => version,
                Err(why) => {
                    warnings.push(format!("{}: not a kernel version ({why}); left alone", root.inside(&path).display()));
                    continue;
                }
            };
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.file_type().is_symlink() {
                // Where the link leads in the root, never on this machine.
                let target = root.resolve(root.inside(&path)).ok().and_then(|real| std::fs::metadata(real).ok());
                if target.is_some_and(|t| seen.contains(&(t.dev(), t.ino()))) {
                    continue;
                }
                warnings.push(format!("{}: kernel folder is a symlink; left alone", root.inside(&path).display()));
                continue;
            }
            if meta.is_dir() && seen.insert((meta.dev(), meta.ino())) {
                found.push((version, path));
            }
        }
        found.sort();
        for (version, path) in found {
            trees.push(Tree {
                shown: root.inside(&path),
                version,
                path,
            });
        }
    }
    // Two different folders for one version (an unmerged /lib and /usr/lib both holding
    // it): modprobe uses the first, so only that one is managed.
    let mut unique = HashSet::default();
    trees.retain(|t| {
        let first = unique.insert(t.version.clone());
        if !first {
            warnings.push(format!("{}: a second tree for {}; left alone", t.shown.display(), t.version));
        }
        first
    });
    Ok(trees)
}

/// When a file was last written, and which: the newest module file of a tree, which must not
/// be newer than `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    pub rel: String,
    pub mtime: SystemTime,
}

/// What changes whenever a folder's entries do (one added, removed or renamed): its inode and
/// change time. Unlike the modification time, no tool can set the change time back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) ino: u64,
    pub(crate) ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp { ino: meta.ino(), ctime: (meta.ctime(), meta.ctime_nsec()) }
    }

    pub(crate) fn of_statx(st: &Statx) -> Stamp {
        Stamp { ino: st.stx_ino, ctime: (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec)) }
    }
}

/// The files of one tree, never reached through symlinks: walked, or read from limopack's
/// cache of the last walk when no folder of the tree has changed since.
#[derive(Debug, Default)]
pub struct Files {
    /// Module files, with their sizes, by path relative to the tree: walked, or made from
    /// `listed` when a path is first looked up.
    regular: OnceLock<PathTable<u64>>,
    /// The module files as the cache lists them: where each path is in `cache`, and its size.
    /// The cache lists them in the order of the index it was saved with (see [`mark`](Self::mark)).
    listed: Vec<(u32, u32, u64)>,
    cache: Bytes,
    /// Module-named paths that are not regular files (folders, FIFOs, symlinks): never touched.
    pub odd: Vec<String>,
    /// The module file written last.
    newest: Option<Newest>,
    /// `modules.dep`: its size, when it was written, and its stamp.
    dep: Option<(u64, SystemTime, Stamp)>,
    /// Every folder, the tree's own first (as ""), each with its stamp from before it was read.
    dirs: Vec<(String, Stamp)>,
    /// Read from the cache, not walked.
    pub cached: bool,
}

/// The first line of a cache file, with its format's version. Then one line per thing:
/// `f SIZE MTIME_S MTIME_NS INO CTIME_S CTIME_NS` for modules.dep, `n MTIME_S MTIME_NS REL` for
/// the module file written last, `d INO CTIME_S CTIME_NS REL` for a folder (the tree's own has
/// an empty REL), `m SIZE REL` for a module file (in the order of the index the cache was
/// saved with, then the others by path), and `o REL` for a module-named entry that is not a
/// regular file.
const CACHE_HEADER: &str = "limopack tree cache 1";

/// `N` numbers separated by spaces, then the rest of the line after one more space (or
/// nothing, at the end of the line).
fn numbers<const N: usize>(text: &str) -> Option<([i64; N], &str)> {
    let mut out = [0i64; N];
    let bytes = text.as_bytes();
    let mut at = 0;
    for slot in &mut out {
        let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 {
            return None;
        }
        *slot = bytes[at..at + digits].iter().fold(0, |n, &b| n * 10 + i64::from(b - b'0'));
        at += digits;
        match bytes.get(at) {
            Some(b' ') => at += 1,
            None => {}
            Some(_) => return None,
        }
    }
    Some((out, &text[at..]))
}

fn time(secs: i64, nanos: i64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(u64::try_from(secs).ok()?, u32::try_from(nanos).ok()?))
}

impl Files {
    /// The files of `tree`: from the cache when it is still true, else walked.
    pub fn load(root: &Root, tree: &Tree) -> Result<Files> {
        match Files::from_cache(root, tree) {
            Some(files) => Ok(files),
            None => Files::scan(tree),
        }
    }

    /// Walk the tree. Each folder is stamped before it is read, so that a change made during
    /// the walk shows at the next check of the cache. A file or folder that vanishes between
    /// listing and `lstat` was never there as far as this run is concerned: a depmod left
    /// running by a killed run renames its temporary files away under the walk.
    ///
    /// The first folders are read breadth first until there are enough to share; two threads
    /// then take them one at a time and walk each whole. A tree has a thousand folders and
    /// four thousand files to look at, and the first run on a new kernel waits for all of it.
    pub fn scan(tree: &Tree) -> Result<Files> {
        const SHARED_OUT: usize = 64;
        let mut files = Files::default();
        let top = std::fs::symlink_metadata(&tree.path).map_err(|e| Error::io(&tree.path, e))?;
        files.dirs.push((String::new(), Stamp::of(&top)));
        let mut first = std::collections::VecDeque::from([(tree.path.clone(), String::new())]);
        while first.len() < SHARED_OUT {
            let Some((dir, rel)) = first.pop_front() else { break };
            let mut found = Vec::new();
            files.read_folder(&dir, &rel, &mut found)?;
            first.extend(found);
        }
        let shared: Vec<(PathBuf, String)> = first.into();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let walk = || -> Result<Files> {
            let mut part = Files::default();
            let mut pending = Vec::new();
            while let Some(start) = shared.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                pending.push(start.clone());
                while let Some((dir, rel)) = pending.pop() {
                    part.read_folder(&dir, &rel, &mut pending)?;
                }
            }
            Ok(part)
        };
        let (mine, other) = std::thread::scope(|s| {
            let other = s.spawn(walk);
            let mine = walk();
            (mine, crate::joined(other))
        });
        for part in [mine?, other?] {
            for (rel, size) in part.regular().iter() {
                let _ = files.regular_mut().insert_new(rel, *size);
            }
            files.odd.extend(part.odd);
            files.dirs.extend(part.dirs);
            if let Some(newest) = part.newest {
                files.note_written(newest);
            }
        }
        files.odd.sort();
        Ok(files)
    }

    /// Add what `dir` holds, and its folders to `pending`. Entries are looked at from the
    /// folder's descriptor (std's `DirEntry::metadata`), not by a path from `/` each.
    fn read_folder(&mut self, dir: &Path, rel_dir: &str, pending: &mut Vec<(PathBuf, String)>) -> Result<()> {
        let tolerated = |e: std::io::Error, at: &Path| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(Error::io(at, e)),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return tolerated(e, dir),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tolerated(e, dir)?;
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) => {
                    tolerated(e, &entry.path())?;
                    continue;
                }
            };
            let module = name::is_module_file(name);
            if !(module || kind.is_dir() || (rel_dir.is_empty() && name == "modules.dep")) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) => {
                    tolerated(e, &entry.path())?;
                    continue;
                }
            };
            let rel = match rel_dir.is_empty() {
                true => name.to_string(),
                false => format!("{rel_dir}/{name}"),
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if kind.is_dir() {
                self.dirs.push((rel.clone(), Stamp::of(&meta)));
                pending.push((entry.path(), rel.clone()));
            }
            match (kind.is_file(), module) {
                (true, true) => {
                    self.note_written(Newest { rel: rel.clone(), mtime });
                    let _ = self.regular_mut().insert_new(&rel, meta.len());
                }
                (true, false) => self.dep = Some((meta.len(), mtime, Stamp::of(&meta))),
                (false, true) => self.odd.push(rel),
                (false, false) => {}
            }
        }
        Ok(())
    }

    /// Keep `file` as the newest module file if it is; of two written at the same time, the
    /// first by name, so that every walk of the same tree names the same one.
    fn note_written(&mut self, file: Newest) {
        let newer = |n: &Newest| (file.mtime, std::cmp::Reverse(&file.rel)) > (n.mtime, std::cmp::Reverse(&n.rel));
        if self.newest.as_ref().is_none_or(newer) {
            self.newest = Some(file);
        }
    }

    /// The module files here that `index` does not list, sorted. `index` must have been
    /// marked with what is present here.
    pub fn unlisted(&self, index: &ModuleIndex) -> Vec<&str> {
        // Each module present is one of the files: only more files than that can include
        // some the index does not list, which spares building the set on every run.
        if self.len() <= index.modules().iter().filter(|m| m.present).count() {
            return Vec::new();
        }
        self.not_listed_by(index)
    }

    /// The module files here that `index` does not list, sorted, whatever it was marked with.
    fn not_listed_by(&self, index: &ModuleIndex) -> Vec<&str> {
        let listed: HashSet<&str> = index.modules().iter().map(|m| &*m.path).collect();
        let mut unlisted: Vec<&str> = self.regular().iter().map(|(rel, _)| rel).filter(|rel| !listed.contains(rel)).collect();
        unlisted.sort_unstable();
        unlisted
    }

    /// Whether there is no module file at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many module files there are.
    fn len(&self) -> usize {
        self.regular.get().map_or(self.listed.len(), PathTable::len)
    }

    /// The size of `rel` when it is a regular file here.
    pub fn size(&self, rel: &str) -> Option<u64> {
        self.regular().get(rel).copied()
    }

    /// Mark which of `index`'s modules have their file here, with its size. The cache lists
    /// the files in the order of the index it was saved with, and while the index is that
    /// one, each module's file is the next one listed: four thousand paths are compared
    /// where they would be hashed and looked up. A file left over shows that the order did
    /// not hold (or that the index does not list it), and then each path is looked up.
    pub fn mark(&self, index: &mut ModuleIndex) {
        if self.regular.get().is_none() {
            let next = std::cell::Cell::new(0);
            index.mark_present(|rel| {
                let &(start, end, size) = self.listed.get(next.get())?;
                let same = self.cache[start as usize..end as usize] == *rel.as_bytes();
                same.then(|| {
                    next.set(next.get() + 1);
                    size
                })
            });
            // Every file was some module's, in turn, and paths are unique in an index: no
            // module was passed over whose file is here.
            if next.get() == self.listed.len() {
                return;
            }
        }
        index.mark_present(|rel| self.size(rel));
    }

    /// The files by path. Of a path the cache lists twice, which limopack never writes, the
    /// first size stands; whether it is there, which is what a plan acts on, is the same.
    fn regular(&self) -> &PathTable<u64> {
        self.regular.get_or_init(|| {
            let mut table = PathTable::with_capacity(self.listed.len(), self.cache.len());
            for (rel, size) in self.listed() {
                let _ = table.insert_new(rel, size);
            }
            table
        })
    }

    pub(crate) fn regular_mut(&mut self) -> &mut PathTable<u64> {
        self.regular();
        self.listed.clear();
        self.regular.get_mut().expect("made by regular()")
    }

    /// The module files the cache lists, in its order.
    fn listed(&self) -> impl Iterator<Item = (&str, u64)> {
        // The cache was checked to be UTF-8 whole, and each path is a whole line's end.
        self.listed.iter().filter_map(|&(start, end, size)| Some((std::str::from_utf8(&self.cache[start as usize..end as usize]).ok()?, size)))
    }

    /// When `modules.dep` was written, if there is one.
    pub fn dep_mtime(&self) -> Option<SystemTime> {
        self.dep.map(|(_, mtime, _)| mtime)
    }


    /// The cached files of `tree`, if the cache is there, whole, and still true: `modules.dep`
    /// and every folder have the stamps the walk saw. A folder's stamp changes with any entry
    /// added, removed or renamed in it, which is how dpkg, depmod and DKMS change a tree.
    fn from_cache(root: &Root, tree: &Tree) -> Option<Files> {
        let bytes = root.own(crate::root::CACHE_DIR).ok()??.bytes_if_there(&crate::root::cache_name(&tree.version, "files"), crate::fs::limits::STATE).ok()??;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut lines = crate::read::index::lines(text);
        if lines.next()? != CACHE_HEADER {
            return None;
        }
        // Looked up from the tree's folder rather than from `/`: a thousand folders are
        // checked, and each full path would walk the same leading components again.
        let dir = rustix::fs::open(&tree.path, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let now = |rel: &str, mask: StatxFlags| {
            let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
            rustix::fs::statx(&dir, if rel.is_empty() { "." } else { rel }, flags, StatxFlags::INO | StatxFlags::CTIME | mask).ok()
        };
        let mut files = Files { cached: true, ..Files::default() };
        // Nearly every line is a module's.
        files.listed.reserve(memchr::memchr_iter(b'\n', text.as_bytes()).count());
        let offset = |part: &str| u32::try_from(part.as_ptr() as usize - text.as_ptr() as usize).ok();
        for line in lines.filter(|l| !l.is_empty()) {
            let (kind, rest) = line.split_at_checked(2)?;
            match kind {
                "m " => {
                    let ([size], rel) = numbers(rest)?;
                    let start = offset(rel)?;
                    files.listed.push((start, start + u32::try_from(rel.len()).ok()?, size as u64));
                }
                "d " => {
                    let ([ino, secs, nanos], rel) = numbers(rest)?;
                    let stamp = Stamp { ino: ino as u64, ctime: (secs, nanos) };
                    (now(rel, StatxFlags::empty()).map(|st| Stamp::of_statx(&st)) == Some(stamp)).then_some(())?;
                    files.dirs.push((rel.to_string(), stamp));
                }
                "n " => {
                    let ([secs, nanos], rel) = numbers(rest)?;
                    files.newest = Some(Newest { rel: rel.to_string(), mtime: time(secs, nanos)? });
                }
                "f " => {
                    let ([size, secs, nanos, ino, csecs, cnanos], _) = numbers(rest)?;
                    let mtime = time(secs, nanos)?;
                    let stamp = Stamp { ino: ino as u64, ctime: (csecs, cnanos) };
                    let st = now("modules.dep", StatxFlags::SIZE | StatxFlags::MTIME)?;
                    let st_mtime = time(st.stx_mtime.tv_sec, i64::from(st.stx_mtime.tv_nsec));
                    let same = Stamp::of_statx(&st) == stamp && st.stx_size == size as u64 && st_mtime == Some(mtime);
                    same.then_some(())?;
                    files.dep = Some((size as u64, mtime, stamp));
                }
                "o " => files.odd.push(rest.to_string()),
                _ => return None,
            }
        }
        // The folders are the tree's: an empty list would vouch for nothing.
        files.dirs.first()?.0.is_empty().then_some(())?;
        files.cache = bytes;
        Some(files)
    }

    /// The cache of these walked files, for the next run to read instead of walking; none
    /// when they came from the cache. A path with a line break cannot be written so, and
    /// such a tree is walked every time.
    /// The module files go in the order of `index`, then those it does not list, by path:
    /// the order the next run's [`mark`](Self::mark) walks while the index stays the same.
    pub fn render(&self, index: &ModuleIndex) -> Option<String> {
        use std::fmt::Write as _;
        let mut all = self.dirs.iter().map(|(r, _)| r.as_str()).chain(self.regular().iter().map(|(rel, _)| rel)).chain(self.odd.iter().map(String::as_str));
        if self.cached || all.any(|rel| rel.contains('\n')) {
            return None;
        }
        let mut text = format!("{CACHE_HEADER}\n");
        let since = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if let Some((size, mtime, stamp)) = &self.dep {
            let t = since(*mtime);
            let (ino, (secs, nanos)) = (stamp.ino, stamp.ctime);
            let _ = writeln!(text, "f {size} {} {} {ino} {secs} {nanos} ", t.as_secs(), t.subsec_nanos());
        }
        if let Some(newest) = &self.newest {
            let t = since(newest.mtime);
            let _ = writeln!(text, "n {} {} {}", t.as_secs(), t.subsec_nanos(), newest.rel);
        }
        for (rel, stamp) in &self.dirs {
            let _ = writeln!(text, "d {} {} {} {rel}", stamp.ino, stamp.ctime.0, stamp.ctime.1);
        }
        let regular = self.regular();
        for module in index.modules() {
            if let Some(size) = regular.get(&module.path) {
                let _ = writeln!(text, "m {size} {}", module.path);
            }
        }
        for rel in self.not_listed_by(index) {
            if let Some(size) = regular.get(rel) {
                let _ = writeln!(text, "m {size} {rel}");
            }
        }
        for rel in &self.odd {
            let _ = writeln!(text, "o {rel}");
        }
        Some(text)
    }
}

/// Why the tree's index does not describe its files, if it does not: depmod must run before a
/// plan can trust it. Checks what `depmod -A` checks (a module newer than modules.dep) and
/// also that the index lists exactly the module files on disk. `index` must have been marked
/// with what is present in `files`.
pub fn stale_reason(files: &Files, index: Option<&ModuleIndex>) -> Option<String> {
    let Some(dep_mtime) = files.dep_mtime() else {
        return Some("modules.dep is missing".into());
    };
    if let Some(newest) = files.newest.as_ref().filter(|n| n.mtime > dep_mtime) {
        return Some(format!("{} is newer than modules.dep", newest.rel));
    }
    let index = index?;
    if let Some(unlisted) = files.unlisted(index).first() {
        return Some(format!("{unlisted} is not in modules.dep"));
    }
    if let Some(gone) = index.modules().iter().find(|m| !m.present && !files.odd.iter().any(|o| **o == *m.path)) {
        return Some(format!("{} is in modules.dep but not on disk", gone.path));
    }
    None
}

/// modprobe.d files of the root, in the folders kmod reads. Their `softdep` and `alias` lines
/// change what modprobe loads, so the closure must see them.
pub fn modprobe_config(root: &Root) -> Result<Vec<(PathBuf, String)>> {
    let mut by_name: std::collections::BTreeMap<String, (PathBuf, PathBuf)> = Default::default();
    // A file of a later folder replaces the same-named one of an earlier folder, as in kmod:
    // /etc/modprobe.d wins.
    for dir in ["/lib/modprobe.d", "/usr/lib/modprobe.d", "/usr/local/lib/modprobe.d", "/run/modprobe.d", "/etc/modprobe.d"] {
        let Ok(entries) = std::fs::read_dir(root.resolve(dir)?) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && !name.starts_with('.') {
                by_name.insert(name.clone(), (Path::new(dir).join(name), entry.path()));
            }
        }
    }
    let mut config = Vec::new();
    for (shown, entry) in by_name.into_values() {
        // A link to /dev/null masks a file, as in systemd and kmod.
        if std::fs::read_link(&entry).is_ok_and(|target| target == Path::new("/dev/null")) {
            continue;
        }
        if let Some(bytes) = root.read_if_there(&shown, crate::fs::limits::CONFIG)? {
            config.push((shown, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_in(dir: &Path) -> (Root, Tree) {
        let root = Root::new(dir).unwrap();
        let path = dir.join("lib/modules/6.1.0-1-test");
        for (rel, body) in [("kernel/fs/ext4/ext4.ko", "ext4"), ("kernel/fs/btrfs/btrfs.ko", "btrfs!"), ("modules.dep", "x\n")] {
            std::fs::create_dir_all(path.join(rel).parent().unwrap()).unwrap();
            std::fs::write(path.join(rel), body).unwrap();
        }
        std::fs::create_dir_all(path.join("updates/dkms")).unwrap();
        let tree = Tree { version: "6.1.0-1-test".into(), shown: "/lib/modules/6.1.0-1-test".into(), path };
        (root, tree)
    }

    /// Keep a rendered cache, as a real run does.
    fn keep(root: &Root, tree: &Tree, text: Option<String>) {
        crate::apply::store::keep_cache(root, &tree.version, "files", &text.expect("a cache to keep")).unwrap();
    }

    fn same(a: &Files, b: &Files) {
        assert_eq!(a.regular(), b.regular());
        assert_eq!(a.odd, b.odd);
        assert_eq!(a.newest, b.newest);
        assert_eq!(a.dep, b.dep);
        assert_eq!(a.dirs, b.dirs);
    }

    #[test]
    fn the_cache_stands_for_the_walk_until_a_folder_or_the_index_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (root, tree) = tree_in(dir.path());
        std::os::unix::fs::symlink("/etc/passwd", tree.path.join("kernel/fs/odd.ko")).unwrap();
        let walked = Files::scan(&tree).unwrap();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked.odd, ["kernel/fs/odd.ko"]);
        keep(&root, &tree, walked.render(&ModuleIndex::default()));
        let cached = Files::load(&root, &tree).unwrap();
        assert!(cached.cached);
        same(&cached, &walked);

        // A module added to a folder that held none, two levels under any listed one.
        std::fs::write(tree.path.join("updates/dkms/zfs.ko"), "zfs").unwrap();
        let after = Files::load(&root, &tree).unwrap();
        assert!(!after.cached);
        assert!(after.size("updates/dkms/zfs.ko").is_some());
        keep(&root, &tree, after.render(&ModuleIndex::default()));
        assert!(Files::load(&root, &tree).unwrap().cached);

        // depmod replaces modules.dep by a rename: a new inode.
        std::fs::write(tree.path.join("modules.dep.tmp"), "y\n").unwrap();
        std::fs::rename(tree.path.join("modules.dep.tmp"), tree.path.join("modules.dep")).unwrap();
        assert!(!Files::load(&root, &tree).unwrap().cached);

        // A cache that is not whole, or of another format, is not believed.
        let cache = root.cache_path(&tree.version, "files");
        keep(&root, &tree, Files::scan(&tree).unwrap().render(&ModuleIndex::default()));
        let text = std::fs::read_to_string(&cache).unwrap();
        for broken in [text.replace("limopack tree cache 1", "limopack tree cache 9"), text.replace("\nd ", "\nd x"), String::new()] {
            std::fs::write(&cache, broken).unwrap();
            assert!(!Files::load(&root, &tree).unwrap().cached);
        }
    }

    /// What `mark` said of each module: whether its file is there, and its size.
    fn marked(files: &Files, dep: &str) -> Vec<(String, bool, u64)> {
        let mut index = ModuleIndex::parse(crate::read::index::Sources { dep: Some(("modules.dep".into(), dep.into())), ..crate::read::index::Sources::default() }).unwrap();
        files.mark(&mut index);
        index.modules().iter().map(|m| (m.path.to_string(), m.present, m.size)).collect()
    }

    #[test]
    fn a_cached_tree_marks_an_index_in_its_order_and_any_other_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let (root, tree) = tree_in(dir.path());
        let dep = "kernel/fs/btrfs/btrfs.ko:\nkernel/fs/gone/gone.ko:\nkernel/fs/ext4/ext4.ko:\n";
        let index = ModuleIndex::parse(crate::read::index::Sources { dep: Some(("modules.dep".into(), dep.into())), ..crate::read::index::Sources::default() }).unwrap();
        std::fs::write(tree.path.join("kernel/fs/extra.ko"), "x").unwrap();
        keep(&root, &tree, Files::scan(&tree).unwrap().render(&index));
        let text = std::fs::read_to_string(root.cache_path(&tree.version, "files")).unwrap();
        let order: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("m ")).collect();
        assert_eq!(order, ["6 kernel/fs/btrfs/btrfs.ko", "4 kernel/fs/ext4/ext4.ko", "1 kernel/fs/extra.ko"], "the index's order, then the others");

        let cached = Files::load(&root, &tree).unwrap();
        assert!(cached.cached);
        let expected = |paths: [&str; 3]| -> Vec<(String, bool, u64)> {
            let size = |p: &str| [("kernel/fs/btrfs/btrfs.ko", 6), ("kernel/fs/ext4/ext4.ko", 4)].iter().find(|(q, _)| *q == p).map(|(_, s)| *s);
            paths.iter().map(|p| (p.to_string(), size(p).is_some(), size(p).unwrap_or(0))).collect()
        };
        // extra.ko is left over in the walk of the same order, and each path is looked up;
        // the same of an index in another order.
        assert_eq!(marked(&cached, dep), expected(["kernel/fs/btrfs/btrfs.ko", "kernel/fs/gone/gone.ko", "kernel/fs/ext4/ext4.ko"]));
        let reversed = "kernel/fs/ext4/ext4.ko:\nkernel/fs/gone/gone.ko:\nkernel/fs/btrfs/btrfs.ko:\n";
        assert_eq!(marked(&Files::load(&root, &tree).unwrap(), reversed), expected(["kernel/fs/ext4/ext4.ko", "kernel/fs/gone/gone.ko", "kernel/fs/btrfs/btrfs.ko"]));

        // Without extra.ko the walk in order finds every file without a table of paths.
        std::fs::remove_file(tree.path.join("kernel/fs/extra.ko")).unwrap();
        keep(&root, &tree, Files::scan(&tree).unwrap().render(&index));
        let cached = Files::load(&root, &tree).unwrap();
        assert_eq!(marked(&cached, dep), expected(["kernel/fs/btrfs/btrfs.ko", "kernel/fs/gone/gone.ko", "kernel/fs/ext4/ext4.ko"]));
        assert!(cached.regular.get().is_none(), "no path was looked up");
        assert_eq!(marked(&cached, reversed), expected(["kernel/fs/ext4/ext4.ko", "kernel/fs/gone/gone.ko", "kernel/fs/btrfs/btrfs.ko"]));
        assert!(cached.regular.get().is_some());
    }

    #[test]
    fn cache_numbers_are_digits_only() {
        assert_eq!(numbers::<2>("12 34 rest of it"), Some(([12, 34], "rest of it")));
        assert_eq!(numbers::<1>("7 "), Some(([7], "")));
        assert_eq!(numbers::<1>("7"), Some(([7], "")));
        for bad in ["", "-1 x", "1x 2", "99999999999999999999 x"] {
            assert_eq!(numbers::<1>(bad), None, "{bad:?}");
        }
    }
}
