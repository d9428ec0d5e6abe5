//! Firmware files: which files under `/lib/firmware` the kernel's firmware loader would read
//! for a name that a module asks for (its modinfo `firmware=` entries) or that a declaration's
//! `firmware:` glob names.
//!
//! The loader (`drivers/base/firmware_loader/main.c`, `fw_get_filesystem_firmware`) tries
//! NAME in these folders, in order, and takes the first regular file it can read:
//!
//! 1. `/lib/firmware/updates/UTS_RELEASE`
//! 2. `/lib/firmware/updates`
//! 3. `/lib/firmware/UTS_RELEASE`
//! 4. `/lib/firmware`
//!
//! and, when none has it, the same folders again for `NAME.zst`, then `NAME.xz`
//! (`CONFIG_FW_LOADER_COMPRESS_ZSTD`, `_XZ`). Symbolic links are followed. Every file that any
//! of these could load is returned, whatever the kernel's config and whichever comes first,
//! since keeping more is the safe side. A folder given with `firmware_class.path=` on the
//! kernel's command line is searched before all of these; limopack cannot know it, so it is
//! not looked at. Firmware built into the kernel (`CONFIG_EXTRA_FIRMWARE`) needs no file.
//!
//! Links are resolved inside the root, as they would be once it is booted (an absolute target
//! starts at the root, `..` goes up a folder), never through the host's folders. Paths are
//! given as the system sees them (`/lib/firmware/rtl_nic/rtl8168h-2.fw`), with whatever lies
//! in `/lib/firmware` spelled that way even when `/lib` is a link to `usr/lib` (usr-merged
//! systems); [`dpkg_paths`] gives both spellings dpkg may list a file under.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::glob::Glob;
use serde::Serialize;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::read::config::{Config, FirmwareMode};
use crate::read::declaration::Declaration;
use crate::error::{Error, Result};
use crate::kver::Kver;
use crate::read::modinfo::FirmwareNames;
use crate::name::Shared;
use crate::root::{Root, FIRMWARE_DIR};
use crate::read::state::State;
use crate::read::tree::Tree;

/// What the loader tries after NAME itself, in its order.
const SUFFIXES: [&str; 3] = ["", ".zst", ".xz"];

/// Links followed in one lookup before it is taken for a loop: Linux's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

/// The firmware folders of one root.
#[derive(Debug)]
pub struct FirmwareDir {
    root: Root,
    /// Where `/lib/firmware` really is in the root (`/usr/lib/firmware` on a usr-merged
    /// system); `None` when it does not exist.
    base: Option<String>,
    /// The loader's folders of each kernel version asked about, found once.
    folders: Mutex<HashMap<String, Vec<String>>>,
}

/// One file that satisfies a firmware name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Found {
    /// The file, as an in-root path: `/lib/firmware/rtl_nic/rtl8168h-2.fw`.
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file: what the kernel reads.
    File,
    /// A symbolic link the kernel follows on the way, to `target` (an in-root path), which is
    /// returned too: the file itself, or the folder a link to a folder leads to.
    Link { target: String },
    /// A symbolic link that was not followed, and why: it points out of the root, loops, or
    /// leads to nothing. The kernel cannot load anything through it.
    Unfollowed { reason: String },
}

impl Found {
    /// The ways dpkg may list this file (see [`dpkg_paths`]).
    pub fn dpkg_paths(&self) -> Vec<String> {
        dpkg_paths(&self.path)
    }
}

/// The ways dpkg may list an in-root path: firmware packages ship under `/lib/firmware` on
/// bookworm and under `/usr/lib/firmware` on trixie, and either reaches the same file on a
/// usr-merged system. Paths elsewhere have one spelling.
pub fn dpkg_paths(path: &str) -> Vec<String> {
    if let Some(rest) = path.strip_prefix("/usr/lib/") {
        vec![format!("/lib/{rest}"), path.to_owned()]
    } else if let Some(rest) = path.strip_prefix("/lib/") {
        vec![path.to_owned(), format!("/usr/lib/{rest}")]
    } else {
        vec![path.to_owned()]
    }
}

/// Every path a request for `name` from kernel `kernel_version` could be satisfied by,
/// whether or not it exists, in the loader's order: each folder, plain, `.zst` and `.xz`.
pub fn candidates(kernel_version: &str, name: &str) -> Vec<String> {
    let folders = [format!("/updates/{kernel_version}"), "/updates".into(), format!("/{kernel_version}"), String::new()];
    SUFFIXES
        .iter()
        .flat_map(|suffix| folders.iter().map(move |folder| format!("{FIRMWARE_DIR}{folder}/{name}{suffix}")))
        .collect()
}

/// True for CPU microcode, which is never pruned: anything in a `*-ucode` folder of
/// `/lib/firmware` (`intel-ucode`, `amd-ucode`), in either spelling. The files of
/// microcode packages (`MICROCODE_PACKAGES` of the config) are the caller's to check by owner.
pub fn is_microcode(path: &str) -> bool {
    let path = path.strip_prefix("/usr").unwrap_or(path);
    path.strip_prefix("/lib/firmware/")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|folder| folder.ends_with("-ucode"))
}

/// Why `name` cannot be a firmware name, if it cannot: names are relative to the firmware
/// folders and must stay inside them.
fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty firmware name")
    } else if name.contains('\0') {
        Some("firmware name contains a NUL byte")
    } else if name.starts_with('/') {
        Some("firmware name is an absolute path; names are relative to /lib/firmware")
    } else if name.split('/').any(|part| part == "..") {
        Some("firmware name climbs out of /lib/firmware with `..`")
    } else {
        None
    }
}

/// Where a walk down a path ended.
enum Walked {
    /// At an existing file or folder: its in-root path with every link resolved, and its
    /// metadata.
    Reached { path: String, meta: Metadata },
    /// At a name that does not exist, here given as an in-root path.
    Missing(String),
    /// At a link that cannot be followed, and why.
    Unfollowed(String),
}

/// A link met on a walk, and where it led once the rest of its target was walked.
struct Link {
    path: String,
    target: Option<String>,
}

/// One step of a walk: a name to go into, or the end of a link's target.
enum Step {
    Name(String),
    LinkDone(usize),
}

impl FirmwareDir {
    /// The firmware folders of `root`. A root without `/lib/firmware` has no firmware.
    pub fn new(root: &Root) -> Result<FirmwareDir> {
        let mut dir = FirmwareDir { root: root.clone(), base: None, folders: Mutex::default() };
        dir.base = dir.folder("/", &FIRMWARE_DIR[1..])?;
        Ok(dir)
    }

    /// Every file that would satisfy a request for firmware `name` (`rtl_nic/rtl8168h-2.fw`)
    /// from kernel `kernel_version`: in every folder the loader tries, plain, `.zst` and `.xz`,
    /// in the loader's order, each once. A link is returned with every link and file it leads
    /// to; a link that cannot be followed is returned as [`Kind::Unfollowed`]. A name that is
    /// absolute or climbs out with `..` is refused.
    pub fn files_for(&self, kernel_version: &str, name: &str) -> Result<Vec<Found>> {
        if let Some(why) = invalid_name(name) {
            return Err(Error::untrusted(name, why));
        }
        // The folder part of the name is walked once in each firmware folder, not once for
        // each suffix.
        let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
        let mut found = FoundSet::default();
        let mut places = Vec::new();
        for folder in self.folders(kernel_version)? {
            if dir.is_empty() {
                places.push((folder, Vec::new()));
                continue;
            }
            let mut links = Vec::new();
            match self.walk(&folder, dir, &mut links)? {
                Walked::Reached { path, meta } if meta.is_dir() => places.push((path, links)),
                Walked::Reached { .. } => {}
                Walked::Missing(missing) => self.broken(links, &missing_reason(&self.spell(&missing)), &mut found),
                Walked::Unfollowed(why) => self.broken(links, &why, &mut found),
            }
        }
        for suffix in SUFFIXES {
            for (place, links) in &places {
                self.candidate(place, links, &format!("{file}{suffix}"), &mut found)?;
            }
        }
        Ok(found.list)
    }

    /// Every file that would satisfy a firmware name matching `pattern`, a glob relative to
    /// the firmware folders as a declaration's `firmware:` entries are (`iwlwifi-*.pnvm`,
    /// `rtl_nic/*`). `*` and `?` do not match `/`, as in a shell. A name matches whether it
    /// is stored plain or compressed (`.zst`, `.xz`); links to folders are walked into.
    pub fn glob(&self, kernel_version: &str, pattern: &str) -> Result<Vec<Found>> {
        if let Some(why) = invalid_name(pattern) {
            return Err(Error::untrusted(pattern, why));
        }
        let matcher = Glob::path(pattern).map_err(|e| Error::request(pattern, format!("bad firmware glob: {e}")))?;
        // The folders the pattern names before its first wildcard are walked into directly.
        let fixed = pattern.find(['*', '?', '[', '{', '\\']).map_or(pattern, |at| &pattern[..at]);
        let start = fixed.rfind('/').map_or("", |at| &fixed[..at]);
        let mut names = Vec::new();
        let mut seen = HashSet::default();
        for folder in self.folders(kernel_version)? {
            self.names_under(&folder, start, &matcher, &mut |name| {
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            })?;
        }
        names.sort();
        let mut found = FoundSet::default();
        for name in names {
            for file in self.files_for(kernel_version, &name)? {
                found.add(file);
            }
        }
        Ok(found.list)
    }

    /// The loader's folders for `kernel_version` that exist, in its order, each as its real
    /// in-root path.
    fn folders(&self, kernel_version: &str) -> Result<Vec<String>> {
        if kernel_version.is_empty() || kernel_version.contains('/') || kernel_version.starts_with('.') {
            return Err(Error::untrusted(kernel_version, "not a kernel version"));
        }
        let mut cache = self.folders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(folders) = cache.get(kernel_version) {
            return Ok(folders.clone());
        }
        let Some(base) = &self.base else { return Ok(Vec::new()) };
        let mut folders = Vec::with_capacity(4);
        let updates = self.folder(base, "updates")?;
        if let Some(updates) = &updates {
            folders.extend(self.folder(updates, kernel_version)?);
        }
        folders.extend(updates);
        folders.extend(self.folder(base, kernel_version)?);
        folders.push(base.clone());
        cache.insert(kernel_version.to_owned(), folders.clone());
        Ok(folders)
    }

    /// The real in-root path of the folder `rel` under `from`, if it is one. Something else
    /// by that name is passed over, as the loader does; a link that loops or leaves the root
    /// is an error.
    fn folder(&self, from: &str, rel: &str) -> Result<Option<String>> {
        match self.walk(from, rel, &mut Vec::new())? {
            Walked::Reached { path, meta } if meta.is_dir() => Ok(Some(path)),
            Walked::Reached { .. } | Walked::Missing(_) => Ok(None),
            Walked::Unfollowed(why) => Err(Error::untrusted(self.root.lexical(&join(from, rel)), why)),
        }
    }

    /// Add what `rel` in the folder `dir` leads to; `dir_links` are the links followed to reach
    /// that folder, needed too when it holds the file.
    fn candidate(&self, dir: &str, dir_links: &[Link], rel: &str, found: &mut FoundSet) -> Result<()> {
        let mut links = Vec::new();
        match self.walk(dir, rel, &mut links)? {
            // The kernel reads regular files only; a folder or a device is passed over.
            Walked::Reached { path, meta } if meta.is_file() => {
                for link in dir_links.iter().chain(&links) {
                    let target = self.spell(link.target.as_deref().unwrap_or(&path));
                    found.add(Found { path: self.spell(&link.path), kind: Kind::Link { target } });
                }
                found.add(Found { path: self.spell(&path), kind: Kind::File });
            }
            Walked::Reached { .. } => {}
            Walked::Missing(missing) => self.broken(links, &missing_reason(&self.spell(&missing)), found),
            Walked::Unfollowed(why) => self.broken(links, &why, found),
        }
        Ok(())
    }

    /// Report the links of a walk that stopped at `reason`. Links that led somewhere (a folder
    /// on the way) are not needed for a file that is not there; those still under way when
    /// the walk stopped are the broken ones.
    fn broken(&self, links: Vec<Link>, reason: &str, found: &mut FoundSet) {
        for link in links.into_iter().filter(|link| link.target.is_none()) {
            found.add(Found { path: self.spell(&link.path), kind: Kind::Unfollowed { reason: reason.to_owned() } });
        }
    }

    /// Every name under `folder`/`start` that `matcher` matches, plain or without a `.zst` or
    /// `.xz` ending, relative to `folder`. Links to folders are walked into, except one that
    /// leads back to a folder above it.
    fn names_under(&self, folder: &str, start: &str, matcher: &Glob, add: &mut dyn FnMut(String)) -> Result<()> {
        let mut todo = Vec::new();
        match self.walk(folder, start, &mut Vec::new())? {
            Walked::Reached { path, meta } if meta.is_dir() => {
                let prefix = if start.is_empty() { String::new() } else { format!("{start}/") };
                todo.push(Pending { dir: path, prefix, above: vec![(meta.dev(), meta.ino())] });
            }
            _ => return Ok(()),
        }
        while let Some(Pending { dir, prefix, above }) = todo.pop() {
            let host = self.root.lexical(&dir);
            let entries = match std::fs::read_dir(&host) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&host, e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&host, e))?;
                // A name that is not UTF-8 cannot be asked for by a module or a declaration.
                if let Ok(name) = entry.file_name().into_string() {
                    names.push((name, entry.metadata().map_err(|e| Error::io(entry.path(), e))?));
                }
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, meta) in names {
                let rel = format!("{prefix}{name}");
                let into = if meta.is_dir() {
                    Some((join(&dir, &name), meta))
                } else if meta.file_type().is_symlink() {
                    match self.walk(&dir, &name, &mut Vec::new())? {
                        Walked::Reached { path, meta } if meta.is_dir() => Some((path, meta)),
                        _ => None,
                    }
                } else {
                    None
                };
                match into {
                    Some((path, meta)) if !above.contains(&(meta.dev(), meta.ino())) => {
                        let mut above = above.clone();
                        above.push((meta.dev(), meta.ino()));
                        todo.push(Pending { dir: path, prefix: format!("{rel}/"), above });
                    }
                    Some(_) => {}
                    None => {
                        for stem in [Some(rel.as_str()), rel.strip_suffix(".zst"), rel.strip_suffix(".xz")].into_iter().flatten() {
                            if matcher.is_match(stem) {
                                add(stem.to_owned());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Walk down `rel` from the real in-root folder `from`, following links inside the root
    /// as the booted system would, and recording each link met in `links`.
    fn walk(&self, from: &str, rel: &str, links: &mut Vec<Link>) -> Result<Walked> {
        let mut done: Vec<String> = parts(from).map(str::to_owned).collect();
        let mut todo: VecDeque<Step> = parts(rel).map(|p| Step::Name(p.to_owned())).collect();
        let mut meta = None;
        while let Some(step) = todo.pop_front() {
            let part = match step {
                Step::LinkDone(i) => {
                    links[i].target = Some(absolute(&done));
                    continue;
                }
                Step::Name(part) => part,
            };
            match part.as_str() {
                "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Ok(Walked::Unfollowed("points out of the root".into()));
                    }
                    meta = None;
                    continue;
                }
                _ => {}
            }
            // Going on below something that is not a folder fails, as ENOTDIR does.
            if meta.as_ref().is_some_and(|m: &Metadata| !m.is_dir()) {
                return Ok(Walked::Missing(absolute(&done)));
            }
            done.push(part);
            let host = self.root.lexical(&absolute(&done));
            let this = match std::fs::symlink_metadata(&host) {
                Ok(this) => this,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    return Ok(Walked::Missing(absolute(&done)));
                }
                Err(e) => return Err(Error::io(&host, e)),
            };
            if !this.file_type().is_symlink() {
                meta = Some(this);
                continue;
            }
            if links.len() >= MAX_LINKS {
                return Ok(Walked::Unfollowed(format!("more than {MAX_LINKS} links in a row: a loop")));
            }
            let target = std::fs::read_link(&host).map_err(|e| Error::io(&host, e))?;
            let Some(target) = target.to_str() else {
                return Ok(Walked::Unfollowed("its target is not UTF-8".into()));
            };
            links.push(Link { path: absolute(&done), target: None });
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            meta = None;
            todo.push_front(Step::LinkDone(links.len() - 1));
            for part in parts(target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(Step::Name(part.to_owned()));
            }
        }
        let path = absolute(&done);
        let meta = match meta {
            Some(meta) => meta,
            // The walk ended on a `..`, a link or the root: look at where it is.
            None => {
                let host = self.root.lexical(&path);
                std::fs::metadata(&host).map_err(|e| Error::io(&host, e))?
            }
        };
        Ok(Walked::Reached { path, meta })
    }

    /// The firmware folder on the host (`ROOT/usr/lib/firmware` on a usr-merged root), every
    /// link on the way resolved inside the root; `None` when the root has none.
    pub fn host_dir(&self) -> Option<std::path::PathBuf> {
        self.base.as_ref().map(|base| self.root.lexical(base))
    }

    /// Every regular file and link under the firmware folder, links not followed, by in-root
    /// path as the system names it, with its size.
    pub fn entries(&self) -> Result<Vec<(String, u64, bool)>> {
        let Some(top) = self.host_dir() else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut todo = vec![(top.clone(), FIRMWARE_DIR.to_owned())];
        while let Some((dir, shown)) = todo.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                let meta = std::fs::symlink_metadata(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                let path = format!("{shown}/{name}");
                if meta.is_dir() {
                    todo.push((entry.path(), path));
                } else if meta.is_file() || meta.file_type().is_symlink() {
                    out.push((path, meta.len(), meta.file_type().is_symlink()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where the link at `path` (an in-root path under `/lib/firmware`) points, as an in-root
    /// path as the system names it, whether or not anything is there: what a link that leads
    /// to nothing would need to lead somewhere again.
    pub fn link_target(&self, path: &str) -> Option<String> {
        let base = self.base.as_ref()?;
        let rest = path.strip_prefix(FIRMWARE_DIR)?;
        let target = std::fs::read_link(self.root.lexical(&format!("{base}{rest}"))).ok()?;
        let target = target.to_str()?;
        let mut done: Vec<&str> = if target.starts_with('/') { Vec::new() } else { parts(path).collect() };
        if !target.starts_with('/') {
            done.pop();
        }
        for part in parts(target) {
            match part {
                "." => {}
                ".." => {
                    done.pop()?;
                }
                _ => done.push(part),
            }
        }
        let joined = absolute(&done.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        Some(self.spell(&joined))
    }

    /// An in-root path as the system names it: under `/lib/firmware` when it is there, even
    /// when `/lib/firmware` really is elsewhere (`/usr/lib/firmware`).
    fn spell(&self, path: &str) -> String {
        match &self.base {
            Some(base) => match path.strip_prefix(base.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{FIRMWARE_DIR}{rest}"),
                _ => path.to_owned(),
            },
            None => path.to_owned(),
        }
    }
}

/// A folder still to list in a walk for a glob.
struct Pending {
    /// Its real in-root path.
    dir: String,
    /// The names of what it holds begin with this, relative to the firmware folder.
    prefix: String,
    /// Device and inode of it and of each folder the walk went through to it.
    above: Vec<(u64, u64)>,
}

fn missing_reason(path: &str) -> String {
    format!("points to {path}, which does not exist")
}

/// Found files in the order found, each once.
#[derive(Default)]
struct FoundSet {
    list: Vec<Found>,
    seen: HashSet<String>,
}

impl FoundSet {
    fn add(&mut self, found: Found) {
        if self.seen.insert(found.path.clone()) {
            self.list.push(found);
        }
    }
}

/// The parts of a path, without empty ones.
fn parts(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty())
}

/// Parts as an absolute in-root path.
fn absolute(done: &[String]) -> String {
    if done.is_empty() {
        "/".into()
    } else {
        done.iter().fold(String::new(), |path, part| path + "/" + part)
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// One firmware name, and the files the loader could take for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wanted {
    pub name: String,
    /// Files and links on disk that satisfy it, links with what they lead to. Empty when none
    /// is there: many drivers list firmware that only some devices load.
    pub files: Vec<String>,
    /// Files limopack pruned earlier that would satisfy it: they are brought back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

/// A declaration's `firmware:` glob for one kernel, and what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredGlob {
    pub declaration: PathBuf,
    pub glob: String,
    pub kernel: String,
    #[serde(flatten)]
    pub wanted: Wanted,
}

/// What [`look`] read for the firmware plan.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per kernel, per kept module whose file is there: its firmware, or why it is unknown.
    pub modules: BTreeMap<String, BTreeMap<Shared, Result<Vec<Wanted>, String>>>,
    pub declared: Vec<DeclaredGlob>,
    /// Every regular file and link under `/lib/firmware`: path, size, whether a link. Read
    /// only with `firmware: prune`.
    pub on_disk: Vec<(String, u64, bool)>,
    /// Why the firmware folders could not be looked at, when they could not.
    pub error: Option<String>,
    /// The run covers some kernels only (`--kernel`).
    pub narrowed: bool,
    /// Kept modules whose file is there but could not be read (not a module, damaged, or
    /// one that decompresses to more than any module does): said on every run, whatever
    /// the firmware setting, since a broken module is worth knowing about.
    pub unreadable: Vec<String>,
    /// Kept modules whose file is missing (to be restored): their firmware is read once they
    /// are back.
    pub missing: usize,
}

/// A kept module: its name, its path in the tree, and whether its file is there.
pub type KeptModule<'a> = (&'a Shared, &'a Shared, bool);

/// What the firmware read is asked about: each kernel's kept modules (name, path in the
/// tree, whether its file is there) with its tree, and the declarations that count.
pub struct Asked<'a> {
    pub kernels: Vec<(&'a Tree, Vec<KeptModule<'a>>)>,
    pub declarations: Vec<&'a Declaration>,
}

/// Read what the firmware plan needs: the firmware names of each kernel's kept modules whose
/// files are there (one read of each module's file, no process), the files each resolves
/// to, the declarations' `firmware:` globs, and, with `firmware: prune`, every file under
/// `/lib/firmware`. Nothing fails the run here: what cannot be read is reported in the
/// [`Seen`], and a plan that cannot be sure prunes no firmware. A module's names come from
/// `names`, the caches of each kernel's, when its file is the one read before; the caches
/// are filled here from the others, and the caller decides whether to keep them.
#[allow(clippy::too_many_arguments)]
pub fn look(
    root: &Root,
    asked: &Asked,
    config: &Config,
    state: &State,
    narrowed: bool,
    names: &mut BTreeMap<Kver, FirmwareNames>,
) -> Seen {
    let mut seen = Seen { narrowed, ..Seen::default() };
    let fw = match FirmwareDir::new(root) {
        Ok(fw) => fw,
        Err(e) => {
            seen.error = Some(e.to_string());
            return seen;
        }
    };
    let with_pruned = |kernel: &str, name: &str, found: &[Found]| -> Wanted {
        let mut pruned: Vec<String> = match state.firmware.is_empty() {
            true => Vec::new(),
            false => candidates(kernel, name).into_iter().filter(|p| state.firmware.contains_key(p)).collect(),
        };
        for f in found.iter().filter(|f| matches!(f.kind, Kind::Unfollowed { .. })) {
            pruned.extend(fw.link_target(&f.path).filter(|t| state.firmware.contains_key(t)));
        }
        Wanted { name: name.to_owned(), files: found.iter().map(|f| f.path.clone()).collect(), pruned }
    };
    for (tree, kept) in &asked.kernels {
        let version = &tree.version;
        let modules = seen.modules.entry(version.to_string()).or_default();
        let (present, missing): (Vec<_>, Vec<_>) = kept.iter().partition(|(_, _, present)| *present);
        seen.missing += missing.len();
        let rels: Vec<&str> = present.iter().map(|(_, path, _)| &***path).collect();
        let cache = names.entry(version.clone()).or_insert_with(|| FirmwareNames::read(root, version));
        for ((module, _, _), found) in present.into_iter().zip(cache.of(&tree.path, &rels)) {
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    seen.unreadable.push(format!("{version}: kept module {module} cannot be read, so its firmware is unknown: {e}"));
                    continue;
                }
            };
            let firmware: Result<Vec<Wanted>> = found.iter().map(|name| Ok(with_pruned(version, name, &fw.files_for(version, name)?))).collect();
            modules.insert((*module).clone(), firmware.map_err(|e| e.to_string()));
        }
    }
    for decl in &asked.declarations {
        for (k, _) in asked.kernels.iter().filter(|(k, _)| decl.applies_to(&k.version)) {
            for pattern in &decl.firmware {
                let glob = &pattern.0.text;
                let found = match fw.glob(&k.version, glob) {
                    Ok(found) => found,
                    Err(e) => {
                        seen.error = Some(format!("{}: {glob}: {e}", decl.path.display()));
                        continue;
                    }
                };
                let mut wanted = with_pruned(&k.version, glob, &found);
                let matcher = &pattern.0.glob;
                wanted.pruned = state
                    .firmware
                    .keys()
                    .filter(|p| {
                        let rel = p.strip_prefix(&format!("{FIRMWARE_DIR}/")).unwrap_or(p);
                        [Some(rel), rel.strip_suffix(".zst"), rel.strip_suffix(".xz")].into_iter().flatten().any(|r| matcher.is_match(r))
                    })
                    .cloned()
                    .collect();
                seen.declared.push(DeclaredGlob { declaration: decl.path.clone(), glob: glob.clone(), kernel: k.version.to_string(), wanted });
            }
        }
    }
    if config.firmware == FirmwareMode::Prune {
        match fw.entries() {
            Ok(entries) => seen.on_disk = entries,
            Err(e) => seen.error = Some(e.to_string()),
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    const KVER: &str = "6.1.0-9-amd64";

    fn file(root: &Path, path: &str) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"fw").unwrap();
    }

    fn link(root: &Path, path: &str, target: &str) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// A usr-merged root: `/lib` is a link to `usr/lib`, as on Debian since bookworm.
    fn merged_root() -> (tempfile::TempDir, FirmwareDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib/firmware")).unwrap();
        symlink("usr/lib", dir.path().join("lib")).unwrap();
        let fw = FirmwareDir::new(&Root::new(dir.path()).unwrap()).unwrap();
        (dir, fw)
    }

    fn paths(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn every_folder_and_suffix_in_the_loaders_order() {
        let (dir, fw) = merged_root();
        let root = dir.path();
        for path in [
            "/lib/firmware/rtl_nic/rtl8168h-2.fw.xz",
            "/lib/firmware/rtl_nic/rtl8168h-2.fw",
            "/lib/firmware/6.1.0-9-amd64/rtl_nic/rtl8168h-2.fw.zst",
            "/lib/firmware/updates/rtl_nic/rtl8168h-2.fw",
            "/lib/firmware/updates/6.1.0-9-amd64/rtl_nic/rtl8168h-2.fw",
            "/lib/firmware/6.1.0-8-amd64/rtl_nic/rtl8168h-2.fw",
            "/lib/firmware/rtl_nic/rtl8168h-2.fw.gz",
        ] {
            file(root, path);
        }
        let found = fw.files_for(KVER, "rtl_nic/rtl8168h-2.fw").unwrap();
        assert_eq!(
            paths(&found),
            [
                "/lib/firmware/updates/6.1.0-9-amd64/rtl_nic/rtl8168h-2.fw",
                "/lib/firmware/updates/rtl_nic/rtl8168h-2.fw",
                "/lib/firmware/rtl_nic/rtl8168h-2.fw",
                "/lib/firmware/6.1.0-9-amd64/rtl_nic/rtl8168h-2.fw.zst",
                "/lib/firmware/rtl_nic/rtl8168h-2.fw.xz",
            ]
        );
        assert!(found.iter().all(|f| f.kind == Kind::File));
        assert_eq!(
            found[2].dpkg_paths(),
            ["/lib/firmware/rtl_nic/rtl8168h-2.fw", "/usr/lib/firmware/rtl_nic/rtl8168h-2.fw"]
        );
        assert!(fw.files_for(KVER, "rtl_nic/rtl8168g-3.fw").unwrap().is_empty());
    }

    #[test]
    fn links_are_followed_inside_the_root_and_both_are_returned() {
        let (dir, fw) = merged_root();
        let root = dir.path();
        file(root, "/lib/firmware/rtlwifi/rtl8192eu_nic.bin");
        link(root, "/lib/firmware/rtlwifi/rtl8192eefw.bin", "rtl8192eu_nic.bin");
        // A chain, the second link absolute: it starts at the root, not at the host's `/`.
        link(root, "/lib/firmware/a.bin", "b.bin");
        link(root, "/lib/firmware/b.bin", "/lib/firmware/rtlwifi/rtl8192eu_nic.bin");
        // A link to a folder, as linux-firmware ships for qcom.
        file(root, "/lib/firmware/qcom/sc8280xp/LENOVO/21BX/adsp.mbn");
        link(root, "/lib/firmware/qcom/LENOVO/21BX", "../sc8280xp/LENOVO/21BX");
        assert_eq!(
            fw.files_for(KVER, "rtlwifi/rtl8192eefw.bin").unwrap(),
            [
                Found {
                    path: "/lib/firmware/rtlwifi/rtl8192eefw.bin".into(),
                    kind: Kind::Link { target: "/lib/firmware/rtlwifi/rtl8192eu_nic.bin".into() }
                },
                Found { path: "/lib/firmware/rtlwifi/rtl8192eu_nic.bin".into(), kind: Kind::File },
            ]
        );
        let chain = fw.files_for(KVER, "a.bin").unwrap();
        let target = Kind::Link { target: "/lib/firmware/rtlwifi/rtl8192eu_nic.bin".into() };
        assert_eq!(paths(&chain), ["/lib/firmware/a.bin", "/lib/firmware/b.bin", "/lib", "/lib/firmware/rtlwifi/rtl8192eu_nic.bin"]);
        assert_eq!((&chain[0].kind, &chain[1].kind), (&target, &target));
        assert_eq!(chain[2].kind, Kind::Link { target: "/usr/lib".into() });
        let through_folder = fw.files_for(KVER, "qcom/LENOVO/21BX/adsp.mbn").unwrap();
        assert_eq!(
            through_folder,
            [
                Found {
                    path: "/lib/firmware/qcom/LENOVO/21BX".into(),
                    kind: Kind::Link { target: "/lib/firmware/qcom/sc8280xp/LENOVO/21BX".into() }
                },
                Found { path: "/lib/firmware/qcom/sc8280xp/LENOVO/21BX/adsp.mbn".into(), kind: Kind::File },
            ]
        );
    }

    #[test]
    fn links_out_of_the_root_in_a_loop_or_to_nothing_are_reported() {
        let (dir, fw) = merged_root();
        let root = dir.path();
        link(root, "/lib/firmware/out.bin", "../../../../etc/passwd");
        link(root, "/lib/firmware/loop1.bin", "loop2.bin");
        link(root, "/lib/firmware/loop2.bin", "loop1.bin");
        link(root, "/lib/firmware/dangling.bin", "gone/x.bin");
        link(root, "/lib/firmware/dir.bin", "rtl_nic");
        std::fs::create_dir_all(root.join("usr/lib/firmware/rtl_nic")).unwrap();
        let reason = |name: &str| match &fw.files_for(KVER, name).unwrap()[..] {
            [Found { path, kind: Kind::Unfollowed { reason } }] if *path == format!("/lib/firmware/{name}") => reason.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(reason("out.bin"), "points out of the root");
        assert_eq!(reason("dangling.bin"), "points to /lib/firmware/gone, which does not exist");
        let looping = fw.files_for(KVER, "loop1.bin").unwrap();
        assert_eq!(paths(&looping), ["/lib/firmware/loop1.bin", "/lib/firmware/loop2.bin"]);
        let looped = Kind::Unfollowed { reason: "more than 40 links in a row: a loop".into() };
        assert!(looping.iter().all(|f| f.kind == looped));
        // The kernel reads regular files only.
        assert!(fw.files_for(KVER, "dir.bin").unwrap().is_empty());
        assert!(fw.files_for(KVER, "rtl_nic").unwrap().is_empty());
        assert!(fw.files_for(KVER, "rtl_nic/x.fw/y").unwrap().is_empty());
    }

    #[test]
    fn an_absolute_lib_link_stays_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "/usr/lib/firmware/x.bin");
        symlink("/usr/lib", dir.path().join("lib")).unwrap();
        let fw = FirmwareDir::new(&Root::new(dir.path()).unwrap()).unwrap();
        assert_eq!(fw.files_for(KVER, "x.bin").unwrap(), [Found { path: "/lib/firmware/x.bin".into(), kind: Kind::File }]);
    }

    #[test]
    fn folders_that_are_files_are_passed_over_and_broken_folder_links_stop() {
        let (dir, fw) = merged_root();
        let root = dir.path();
        file(root, "/lib/firmware/6.1.0-9-amd64");
        file(root, "/lib/firmware/updates/a.bin");
        file(root, "/lib/firmware/a.bin");
        assert_eq!(paths(&fw.files_for(KVER, "a.bin").unwrap()), ["/lib/firmware/updates/a.bin", "/lib/firmware/a.bin"]);
        link(root, "/lib/firmware/updates/6.1.0-8-amd64", "../../../../../x");
        let error = fw.files_for("6.1.0-8-amd64", "a.bin").unwrap_err().to_string();
        assert!(error.ends_with("/usr/lib/firmware/updates/6.1.0-8-amd64: points out of the root"), "{error}");
    }

    #[test]
    fn names_that_leave_the_firmware_folders_are_refused() {
        let (_dir, fw) = merged_root();
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\0b"] {
            assert!(matches!(fw.files_for(KVER, bad), Err(Error::Untrusted { .. })), "{bad:?}");
        }
        assert!(matches!(fw.files_for("../x", "a.bin"), Err(Error::Untrusted { .. })));
        let none = FirmwareDir::new(&Root::new(tempfile::tempdir().unwrap().path()).unwrap()).unwrap();
        assert!(none.files_for(KVER, "a.bin").unwrap().is_empty());
    }

    #[test]
    fn globs_match_names_in_every_folder_compressed_or_not() {
        let (dir, fw) = merged_root();
        let root = dir.path();
        file(root, "/lib/firmware/iwlwifi-ty-a0-gf-a0.pnvm");
        file(root, "/lib/firmware/iwlwifi-so-a0-gf-a0.pnvm.xz");
        file(root, "/lib/firmware/updates/iwlwifi-ma-b0-gf-a0.pnvm");
        file(root, "/lib/firmware/iwlwifi-ty-a0-gf-a0-77.ucode");
        file(root, "/lib/firmware/intel/iwlwifi-x.pnvm");
        file(root, "/lib/firmware/rtl_nic/rtl8168h-2.fw");
        link(root, "/lib/firmware/rtl_nic/rtl8168h-3.fw", "rtl8168h-2.fw");
        file(root, "/lib/firmware/qcom/sc8280xp/LENOVO/21BX/adsp.mbn");
        link(root, "/lib/firmware/qcom/LENOVO/21BX", "../sc8280xp/LENOVO/21BX");
        link(root, "/lib/firmware/qcom/up", "..");
        assert_eq!(
            paths(&fw.glob(KVER, "iwlwifi-*.pnvm").unwrap()),
            [
                "/lib/firmware/updates/iwlwifi-ma-b0-gf-a0.pnvm",
                "/lib/firmware/iwlwifi-so-a0-gf-a0.pnvm.xz",
                "/lib/firmware/iwlwifi-ty-a0-gf-a0.pnvm",
            ]
        );
        assert_eq!(paths(&fw.glob(KVER, "rtl_nic/*").unwrap()), ["/lib/firmware/rtl_nic/rtl8168h-2.fw", "/lib/firmware/rtl_nic/rtl8168h-3.fw"]);
        assert_eq!(
            paths(&fw.glob(KVER, "qcom/LENOVO/*/*.mbn").unwrap()),
            ["/lib/firmware/qcom/LENOVO/21BX", "/lib/firmware/qcom/sc8280xp/LENOVO/21BX/adsp.mbn"]
        );
        // `**` crosses folders, and the link back up is not walked round and round.
        assert_eq!(fw.glob(KVER, "qcom/**/*.mbn").unwrap().len(), 2);
        assert!(fw.glob(KVER, "*.mbn").unwrap().is_empty());
        assert!(matches!(fw.glob(KVER, "a/[b"), Err(Error::Request { .. })));
    }

    #[test]
    fn microcode_in_either_spelling() {
        assert!(is_microcode("/lib/firmware/intel-ucode/06-8e-09"));
        assert!(is_microcode("/usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin"));
        assert!(is_microcode("/lib/firmware/amd-ucode"));
        assert!(!is_microcode("/lib/firmware/amdgpu/navi10_gpu_info.bin"));
        assert!(!is_microcode("/lib/firmware/rtl_nic/x-ucode"));
        assert!(!is_microcode("/usr/share/doc/intel-microcode/changelog.gz"));
        assert!(!is_microcode("/lib/firmware/iwlwifi-8000C-36.ucode"));
    }

    #[test]
    fn dpkg_spellings() {
        assert_eq!(dpkg_paths("/usr/lib/firmware/a"), ["/lib/firmware/a", "/usr/lib/firmware/a"]);
        assert_eq!(dpkg_paths("/lib/firmware/a"), ["/lib/firmware/a", "/usr/lib/firmware/a"]);
        assert_eq!(dpkg_paths("/opt/fw/a"), ["/opt/fw/a"]);
    }
}
