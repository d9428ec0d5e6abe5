//! Carrying out a plan: the one place that deletes and restores files, runs depmod and
//! the initramfs generator, and writes state.
//!
//! Order for each kernel: restores first (each file written whole, then renamed into place);
//! then the journal (what is about to go), the saved index (first prune only), the archive
//! copies, the deletes and the empty folders; then depmod, the state, the journal cleared,
//! and last the initramfs. A run killed anywhere leaves the journal, which the next run folds
//! into the state before it plans again from scratch; its depmod check then finds any index
//! the kill left stale, and a refresh still pending in the state is done then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::Digest;

pub(crate) mod archive;
pub(crate) mod confined;
pub(crate) mod depmod;
pub(crate) mod download;
pub mod hotplug;
pub(crate) mod initramfs;
pub(crate) mod store;

use crate::read::config::Config;
use crate::read::deb;
use crate::error::{Error, Result};
use crate::read::index::ModuleIndex;
use crate::kver::Kver;
use crate::name::Shared;
use crate::read::packages;
use crate::plan::{Action, KernelPlan, Plan, RestoreFile, Source};
use crate::root::{Root, FIRMWARE_DIR};
use crate::read::firmware::{self, FirmwareDir};
use crate::plan::firmware::{FirmwareAction, FirmwarePlan};
use crate::read::state::{FirmwareJournal, Journal, PrunedFile, State};
use crate::read::tree::{Files, Tree};

/// Held for the whole run: one limopack at a time per root. The kernel drops an flock when
/// its holder dies, so a killed run never leaves a lock that blocks the next one.
pub struct Lock {
    _file: File,
}

/// Take the run lock, waiting up to `wait` for a run that holds it. Runs queue rather than
/// step aside: each one recomputes from what is installed, so the last one to finish sees
/// everything. A run stuck while it holds the lock must not hold up every apt transaction
/// after it, so the wait has a bound, after which the error says which process holds it:
/// each holder writes its pid into the lock file.
pub fn lock(root: &Root, wait: std::time::Duration, waiting: impl FnOnce(Option<u32>)) -> Result<Lock> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let needs_root = |path: &Path, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            Error::needs_root(path, "cannot be made by this user: a run that changes the system needs root (--dry-run, status and explain do not)")
        }
        _ => Error::io(path, e),
    };
    let dir = root.state_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| needs_root(&dir, e))?;
    let path = dir.join("lock");
    // Not through a link, and without blocking on a FIFO put in its place.
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| needs_root(&path, e))?;
    if !file.metadata().map_err(|e| Error::io(&path, e))?.is_file() {
        return Err(Error::untrusted(&path, "is not a regular file; remove it, limopack makes it again"));
    }
    let holder = || {
        let mut text = [0u8; 16];
        let n = file.read_at(&mut text, 0).unwrap_or(0);
        std::str::from_utf8(&text[..n]).ok()?.trim().parse::<u32>().ok()
    };
    let give_up = std::time::Instant::now() + wait;
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                if let Some(say) = waiting.take() {
                    say(holder());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = holder().map_or("another run".to_string(), |pid| format!("process {pid}"));
                return Err(Error::locked(
                    &path,
                    format!("{who} has held this lock for more than the {} s this run waits; if it is stuck, stop it, and run limopack-hook again", wait.as_secs()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0).and_then(|()| file.write_all_at(pid.as_bytes(), 0)).map_err(|e| Error::io(&path, e))?;
    Ok(Lock { _file: file })
}

/// What a real run did to the files of one place: a kernel's tree, or the firmware folder
/// (whose paths are in-root, `/lib/firmware/…`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Changes {
    pub removed: usize,
    pub bytes: u64,
    /// Files brought back, each with where from.
    pub restored: Vec<Restored>,
    /// Files that could not be brought back, each with the last reason.
    pub not_restored: Vec<NotRestored>,
    /// Files the plan listed that were no longer regular files reached through real folders.
    pub skipped: Vec<String>,
}

impl Changes {
    /// Whether a file was removed or brought back: the tree's index and its initramfs are
    /// then out of date.
    pub fn changed(&self) -> bool {
        self.removed > 0 || !self.restored.is_empty()
    }
}

/// What a real run did to one kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub version: Kver,
    #[serde(flatten)]
    pub files: Changes,
    pub depmod: bool,
    /// What happened to the initramfs, when anything did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
}

/// What a real run did to the firmware.
pub type FirmwareDone = Changes;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub path: Shared,
    pub module: Shared,
    pub from: RestoredFrom,
}

/// Where a restored file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoredFrom {
    Archive,
    AptCache,
    Download,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NotRestored {
    pub path: Shared,
    pub module: Shared,
    pub package: Shared,
    pub reason: String,
}

/// What the caller allows besides the plan.
#[derive(Debug, Clone, Copy)]
pub struct Effects {
    /// Refresh initramfs images as the config says. Off in the kernel's own hooks, where the
    /// generator (initramfs-tools or dracut) builds the image right after limopack.
    pub initramfs: bool,
}

/// Carry out `plan` on `trees`, updating and saving `state`. Firmware comes first, so that
/// an initramfs refreshed after a kernel's tree changed finds its modules' firmware there.
pub fn apply(root: &Root, config: &Config, plan: &Plan, trees: &[Tree], state: &mut State, effects: Effects) -> Result<(Vec<Done>, FirmwareDone)> {
    let before = state.clone();
    // A record declared again after a forget replaces the one it undoes.
    state.statics.retain(|r| !plan.new_statics.iter().any(|n| n.entry == r.entry && n.kernels == r.kernels));
    state.statics.extend(plan.new_statics.iter().cloned());
    forget_restored(root, state, trees)?;
    // A blocked kernel's count is missing the broken declarations' entries: the last whole
    // count stays until they read again.
    for kplan in plan.kernels.iter().filter(|k| k.action != Action::Blocked) {
        state.kernels.entry(kplan.version.clone()).or_default().refcounts =
            kplan.refcounts.iter().map(|(module, users)| (module.to_string(), users.clone())).collect();
    }
    for gone in &plan.forget_kernels {
        state.kernels.remove(gone);
    }
    if *state != before {
        state.save(root)?;
    }
    for gone in &plan.forget_kernels {
        store::forget_kernel(root, gone)?;
    }
    let firmware_done = apply_firmware(root, config, &plan.firmware, state)?;

    let mut done = Vec::new();
    let mut said_no_generator = false;
    for kplan in &plan.kernels {
        let Some(tree) = trees.iter().find(|t| t.version == kplan.version) else { continue };
        let prune = kplan.action == Action::Prune;
        let pending = state.kernels.get(&tree.version).is_some_and(|k| k.initramfs_pending);
        let restorable = kplan.restore.iter().any(|f| !f.sources.is_empty());
        if !prune && !restorable && !pending {
            continue;
        }
        let refresh = effects.initramfs && config.initramfs != crate::read::config::Initramfs::Never;
        let kernel_state = state.kernels.entry(tree.version.clone()).or_default();
        if kernel_state.initramfs_pending != refresh {
            kernel_state.initramfs_pending = refresh;
            state.save(root)?;
        }

        let mut outcome = Done { version: tree.version.clone(), files: Changes::default(), depmod: false, initramfs: None };
        let kernel_state = state.kernels.entry(tree.version.clone()).or_default();
        let dpkg_paths = |rel: &str| tree.dpkg_paths(rel).to_vec();
        (outcome.files.restored, outcome.files.not_restored) = restore(root, &Place::tree(tree, &dpkg_paths), &kplan.restore, &mut kernel_state.pruned);
        if prune {
            prune_files(root, config, kplan, tree, state, &mut outcome)?;
        }
        if config.depmod && outcome.files.changed() {
            depmod::depmod(root, tree)?;
            outcome.depmod = true;
        }
        state.save(root)?;
        Journal::clear(root)?;

        let changed = outcome.files.changed();
        if refresh && (changed || pending) {
            outcome.initramfs = initramfs::refresh(root, config.initramfs, &tree.version, &mut said_no_generator)?;
        }
        let kernel_state = state.kernels.entry(tree.version.clone()).or_default();
        if kernel_state.initramfs_pending {
            kernel_state.initramfs_pending = false;
            state.save(root)?;
        }
        done.push(outcome);
    }
    Ok((done, firmware_done))
}

/// Restore the needed firmware that is gone, then prune what the plan lists, journalled as
/// module files are (see the top of this file): the journal first, then the archive copies,
/// the deletes and the empty folders, then the state, and the journal cleared. No depmod:
/// the modules' index does not change.
fn apply_firmware(root: &Root, config: &Config, fp: &FirmwarePlan, state: &mut State) -> Result<FirmwareDone> {
    let mut done = FirmwareDone::default();
    let restorable = fp.restore.iter().any(|f| !f.sources.is_empty());
    let pruning = fp.action == FirmwareAction::Prune && !fp.prune.is_empty();
    if state.firmware.is_empty() && !pruning {
        return Ok(done);
    }
    let Some(dir) = FirmwareDir::new(root)?.host_dir() else { return Ok(done) };
    let rel = |path: &str| path.strip_prefix(FIRMWARE_DIR).and_then(|r| r.strip_prefix('/')).map(str::to_owned);
    let dpkg_paths = |rel: &str| firmware::dpkg_paths(&format!("{FIRMWARE_DIR}/{rel}"));
    let place = Place { dir: &dir, archive: FIRMWARE_ARCHIVE, dpkg_paths: &dpkg_paths };
    // Records of files that are back, put there by a reinstall or an upgrade, go with their
    // archive copies.
    let before = state.firmware.len();
    let back: Vec<String> = state.firmware.keys().filter(|p| rel(p).is_some_and(|r| std::fs::symlink_metadata(dir.join(r)).is_ok())).cloned().collect();
    for path in back {
        if state.firmware.remove(&path).is_some_and(|f| f.archived) {
            archive::forget(root, FIRMWARE_ARCHIVE, &rel(&path).unwrap_or_default())?;
        }
    }
    if restorable {
        let files: Vec<RestoreFile> = fp.restore.iter().filter_map(|f| Some(RestoreFile { path: rel(&f.path)?.into(), ..f.clone() })).collect();
        let mut pruned: BTreeMap<String, PrunedFile> = state.firmware.iter().filter_map(|(p, f)| Some((rel(p)?, f.clone()))).collect();
        let in_root = |path: &Shared| Shared::from(format!("{FIRMWARE_DIR}/{path}"));
        let (restored, not_restored) = restore(root, &place, &files, &mut pruned);
        for mut r in restored {
            r.path = in_root(&r.path);
            state.firmware.remove(&*r.path);
            done.restored.push(r);
        }
        done.not_restored = not_restored.into_iter().map(|n| NotRestored { path: in_root(&n.path), ..n }).collect();
    }
    if state.firmware.len() != before {
        state.save(root)?;
    }
    if !pruning {
        return Ok(done);
    }
    let files = records(fp.prune.iter().map(|f| (f.path.clone(), &f.package, &f.version, f.size)), config.archive);
    let journal = FirmwareJournal { dir: root.inside(&dir).display().to_string(), files: files.clone() };
    journal.save(root)?;
    let under = files.iter().filter_map(|(path, file)| Some((path.as_str(), path.strip_prefix(FIRMWARE_DIR)?.strip_prefix('/')?, file)));
    (done.removed, done.bytes, done.skipped) = delete(root, &place, under, &mut state.firmware)?;
    state.save(root)?;
    FirmwareJournal::clear(root)?;
    Ok(done)
}

/// Keep each tree's files for the next run to read instead of walking: what this run found,
/// or for a tree this run changed, a fresh walk of it, which after a prune is a short one. A
/// cache that cannot be written (a read-only or full disk) only means walking next time.
pub fn save_tree_caches<'a>(root: &Root, walked: impl Iterator<Item = (&'a Tree, &'a ModuleIndex, &'a Files)>, done: &[Done]) {
    for (tree, index, files) in walked {
        let changed = done.iter().any(|d| d.version == tree.version && (d.files.changed() || d.depmod));
        let text = match changed {
            false => files.render(index),
            true => Files::scan(tree).ok().and_then(|fresh| fresh.render(index)),
        };
        if let Some(text) = text {
            let _ = store::keep_cache(root, &tree.version, "files", &text);
        }
    }
}

/// The record of each file about to be pruned, by path, for the journal and the state.
fn records<'a>(files: impl Iterator<Item = (String, &'a Shared, &'a Shared, u64)>, archived: bool) -> BTreeMap<String, PrunedFile> {
    files.map(|(path, package, version, size)| (path, PrunedFile { package: package.clone(), version: version.clone(), size, archived })).collect()
}

/// Delete the plan's files of one kernel, journalled, with archive copies when configured.
fn prune_files(root: &Root, config: &Config, kplan: &KernelPlan, tree: &Tree, state: &mut State, outcome: &mut Done) -> Result<()> {
    let files = records(kplan.prune.iter().map(|f| (f.path.to_string(), &f.package, &f.version, f.size)), config.archive);
    let journal = Journal {
        kernel: tree.version.clone(),
        files: files.clone(),
    };
    journal.save(root)?;
    let kernel_state = state.kernels.entry(tree.version.clone()).or_default();
    if kernel_state.pruned.is_empty() {
        store::save_index(root, tree)?;
    }
    let dpkg_paths = |rel: &str| tree.dpkg_paths(rel).to_vec();
    let place = Place::tree(tree, &dpkg_paths);
    let deleted = delete(root, &place, files.iter().map(|(rel, file)| (rel.as_str(), rel.as_str(), file)), &mut kernel_state.pruned)?;
    (outcome.files.removed, outcome.files.bytes, outcome.files.skipped) = deleted;
    Ok(())
}

/// Delete each `(key, rel, file)` under the place's folder, with an archive copy first when
/// `file` says so, and record it in `pruned` by `key`; then the folders left empty. A file
/// that is no longer a regular file reached through real folders is skipped, by key. Returns
/// how many files went, their bytes, and the skipped.
///
/// Two threads delete, each one half of the files in their order, so that each still meets
/// the folders one after the other: a delete is the file system's work, which a second core
/// does beside the first. The journal written before already names every file, so the
/// order between the halves does not matter to a run killed half way. An error in one half
/// stops the other at its next file.
fn delete<'a>(
    root: &Root,
    place: &Place,
    files: impl Iterator<Item = (&'a str, &'a str, &'a PrunedFile)>,
    pruned: &mut BTreeMap<String, PrunedFile>,
) -> Result<(usize, u64, Vec<String>)> {
    let files: Vec<_> = files.collect();
    let (first, second) = files.split_at(files.len() / 2);
    let (dir, archive) = (place.dir, place.archive);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let halves = std::thread::scope(|s| {
        let other = s.spawn(|| delete_some(root, dir, archive, second, &failed));
        let mine = delete_some(root, dir, archive, first, &failed);
        [mine, crate::joined(other)]
    });
    let (mut count, mut bytes, mut skipped, mut error) = (0, 0, Vec::new(), None);
    // What went is recorded even when the other half stopped on an error.
    for half in halves {
        for (key, file) in half.gone {
            pruned.insert(key.to_owned(), file.clone());
            count += 1;
            bytes += file.size;
        }
        skipped.extend(half.skipped.into_iter().map(str::to_owned));
        error = error.or(half.error);
    }
    match error {
        Some(e) => Err(e),
        None => Ok((count, bytes, skipped)),
    }
}

/// What one thread of [`delete`] did: the files that went, the skipped, and the error it
/// stopped on.
#[derive(Default)]
struct Deleted<'a> {
    gone: Vec<(&'a str, &'a PrunedFile)>,
    skipped: Vec<&'a str>,
    error: Option<Error>,
}

fn delete_some<'a>(
    root: &Root,
    dir: &Path,
    archive: &str,
    files: &[(&'a str, &'a str, &'a PrunedFile)],
    failed: &std::sync::atomic::AtomicBool,
) -> Deleted<'a> {
    use std::sync::atomic::Ordering;
    let mut done = Deleted::default();
    let mut confined = match confined::Confined::open(dir) {
        Ok(confined) => confined,
        Err(e) => {
            failed.store(true, Ordering::Relaxed);
            done.error = Some(Error::io(dir, e));
            return done;
        }
    };
    for &(key, rel, file) in files {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let path = || dir.join(rel);
        let mut one = || -> Result<bool> {
            if !confined.check(rel).map_err(|e| Error::io(path(), e))? {
                return Ok(false);
            }
            if file.archived {
                archive::store(root, archive, rel, &path())?;
            }
            confined.remove(rel).map_err(|e| Error::io(path(), e))?;
            Ok(true)
        };
        match one() {
            Ok(true) => done.gone.push((key, file)),
            Ok(false) => done.skipped.push(key),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                done.error = Some(e);
                break;
            }
        }
    }
    confined.finish();
    done
}

/// Where restored files go: a kernel's tree, or the firmware folder.
struct Place<'a> {
    /// The folder on disk; files are given relative to it.
    dir: &'a Path,
    /// Its part of limopack's archive: the kernel version, or [`FIRMWARE_ARCHIVE`].
    archive: &'a str,
    /// How dpkg may list a file of the folder.
    dpkg_paths: &'a dyn Fn(&str) -> Vec<String>,
}

/// The archive's folder for firmware, beside the kernels' (whose names start with a digit).
const FIRMWARE_ARCHIVE: &str = "firmware";

impl Place<'_> {
    fn tree<'a>(tree: &'a Tree, dpkg_paths: &'a dyn Fn(&str) -> Vec<String>) -> Place<'a> {
        Place { dir: &tree.path, archive: &tree.version, dpkg_paths }
    }
}

/// Bring back the kept files that are gone, trying each file's sources in order: the archive,
/// then each `.deb` (read once for all the files it holds), then downloads. What cannot be
/// brought back is reported, and the run goes on: restoring never deletes anything. Each file
/// brought back leaves `pruned`, which is keyed as the files' paths are.
fn restore(
    root: &Root,
    place: &Place,
    files: &[RestoreFile],
    pruned: &mut BTreeMap<String, PrunedFile>,
) -> (Vec<Restored>, Vec<NotRestored>) {
    // A file with no source is left to the run's warning and its reinstall hint.
    let left = files.iter().filter(|f| !f.sources.is_empty()).map(|f| (f, String::new())).collect();
    let mut restoring = Restoring { root, place, pruned, sums: HashMap::new(), left, restored: Vec::new() };
    restoring.try_archive();
    restoring.try_apt_cache();
    restoring.try_downloads();
    let not_restored = restoring
        .left
        .into_iter()
        .map(|(f, reason)| NotRestored { path: f.path.clone(), module: f.module.clone(), package: f.package.clone(), reason })
        .collect();
    (restoring.restored, not_restored)
}

/// A restore under way: the files still to bring back, each with why its last source
/// failed, tried source by source in the plan's order.
struct Restoring<'a, 'p> {
    root: &'a Root,
    place: &'a Place<'a>,
    pruned: &'p mut BTreeMap<String, PrunedFile>,
    /// md5sums dpkg recorded, by package, read once each.
    sums: HashMap<Shared, HashMap<String, String>>,
    left: Vec<(&'a RestoreFile, String)>,
    restored: Vec<Restored>,
}

impl<'a> Restoring<'a, '_> {
    /// A file is back: it is no longer pruned, and its archive copy goes.
    fn finish(&mut self, f: &RestoreFile, from: RestoredFrom) {
        self.pruned.remove(&*f.path);
        let _ = archive::forget(self.root, self.place.archive, &f.path);
        self.restored.push(Restored { path: f.path.clone(), module: f.module.clone(), from });
    }

    /// From limopack's own archive, each copy checked against dpkg's md5sum.
    fn try_archive(&mut self) {
        let (root, place) = (self.root, self.place);
        let mut back = Vec::new();
        for (f, why) in self.left.iter_mut().filter(|(f, _)| f.sources.contains(&Source::Archive)) {
            let result = archive::open(root, place.archive, &f.path).and_then(|copy| match copy {
                Some(mut copy) => {
                    let expected = expected_md5(root, &mut self.sums, place, f);
                    put(place.dir, &f.path, &mut copy, expected.as_deref())
                }
                None => Err(Error::missing(archive::path(root, place.archive, &f.path)?, "no archive copy")),
            });
            match result {
                Ok(()) => back.push(*f),
                Err(e) => *why = e.to_string(),
            }
        }
        self.settle_all(&back, RestoredFrom::Archive);
    }

    /// From the `.deb`s in apt's cache, each read once for all the files it holds.
    fn try_apt_cache(&mut self) {
        let mut debs: Vec<PathBuf> = self
            .left
            .iter()
            .flat_map(|(f, _)| f.sources.iter())
            .filter_map(|s| match s {
                Source::AptCache { deb } => Some(deb.clone()),
                _ => None,
            })
            .collect();
        debs.sort();
        debs.dedup();
        for deb in debs {
            let source = Source::AptCache { deb: deb.clone() };
            let wanted: Vec<&RestoreFile> = self.left.iter().filter(|(f, _)| f.sources.contains(&source)).map(|(f, _)| *f).collect();
            let results = from_deb(self.root, &mut self.sums, self.place, &deb, &wanted);
            self.settle(results, RestoredFrom::AptCache);
        }
    }

    /// From each package's `.deb`, downloaded at the installed version.
    fn try_downloads(&mut self) {
        let mut fetch: Vec<(Shared, Shared)> =
            self.left.iter().filter(|(f, _)| f.sources.contains(&Source::Download)).map(|(f, _)| (f.package.clone(), f.version.clone())).collect();
        fetch.sort();
        fetch.dedup();
        for (package, version) in fetch {
            let wanted: Vec<&RestoreFile> =
                self.left.iter().filter(|(f, _)| f.package == package && f.sources.contains(&Source::Download)).map(|(f, _)| *f).collect();
            let results = tempfile::tempdir()
                .map_err(|e| Error::io(std::env::temp_dir(), e))
                .and_then(|dir| download::download(&package, &version, dir.path()).map(|deb| (dir, deb)))
                .map(|(_dir, deb)| from_deb(self.root, &mut self.sums, self.place, &deb, &wanted));
            match results {
                Ok(results) => self.settle(results, RestoredFrom::Download),
                Err(e) => {
                    for (_, why) in self.left.iter_mut().filter(|(f, _)| wanted.iter().any(|w| std::ptr::eq(*w, *f))) {
                        *why = e.to_string();
                    }
                }
            }
        }
    }

    /// Fold the per-file results of one source into what is left to restore.
    fn settle(&mut self, results: HashMap<Shared, Result<()>>, from: RestoredFrom) {
        let mut back = Vec::new();
        for (f, why) in self.left.iter_mut() {
            match results.get(&f.path) {
                Some(Ok(())) => back.push(*f),
                Some(Err(e)) => *why = e.to_string(),
                None => {}
            }
        }
        self.settle_all(&back, from);
    }

    /// The files in `back` are back from `from`: off the list of those left.
    fn settle_all(&mut self, back: &[&'a RestoreFile], from: RestoredFrom) {
        for f in back {
            self.finish(f, from);
        }
        self.left.retain(|(f, _)| !back.iter().any(|b| std::ptr::eq(*b, *f)));
    }
}


/// Write each wanted file found in `deb` into the tree. The result per file, by path in the
/// tree; a `.deb` that cannot be read fails every file it was to give.
fn from_deb(
    root: &Root,
    sums: &mut HashMap<Shared, HashMap<String, String>>,
    place: &Place,
    deb: &Path,
    wanted: &[&RestoreFile],
) -> HashMap<Shared, Result<()>> {
    let mut by_listed: HashMap<String, &RestoreFile> = HashMap::new();
    for f in wanted {
        for listed in (place.dpkg_paths)(&f.path) {
            by_listed.insert(listed, f);
        }
    }
    let names: HashSet<String> = by_listed.keys().cloned().collect();
    let mut results: HashMap<Shared, Result<()>> = HashMap::new();
    let read = deb::extract(deb, &names, |listed, data| {
        let f = by_listed[listed];
        let expected = expected_md5(root, sums, place, f);
        results.insert(f.path.clone(), put(place.dir, &f.path, data, expected.as_deref()));
        Ok(())
    });
    for f in wanted {
        let result = match &read {
            Err(e) => Err(Error::damaged(deb, e.to_string())),
            Ok(_) if results.contains_key(&f.path) => continue,
            Ok(_) => Err(Error::missing(deb, format!("has no {}", (place.dpkg_paths)(&f.path)[0]))),
        };
        results.insert(f.path.clone(), result);
    }
    results
}

/// The md5sum dpkg recorded for a file, looked up once per package.
fn expected_md5(root: &Root, sums: &mut HashMap<Shared, HashMap<String, String>>, place: &Place, f: &RestoreFile) -> Option<String> {
    let package = sums
        .entry(f.package.clone())
        .or_insert_with(|| packages::md5sums(root, &f.package).unwrap_or_default());
    (place.dpkg_paths)(&f.path).iter().find_map(|p| package.get(p).cloned())
}

/// Write `data` to `rel` under `top`: into a temporary file beside it, checked against
/// dpkg's md5sum when dpkg has one, then renamed into place, so the file is whole or absent.
fn put(top: &Path, rel: &str, data: &mut dyn Read, expected_md5: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = confined::restore_target(top, rel).map_err(|e| Error::io(top.join(rel), e))?;
    let dir = target.parent().unwrap_or(top);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let n = data.read(&mut buf).map_err(|e| Error::io(&target, e))?;
        if n == 0 {
            break;
        }
        // A package or an archive copy is not trusted to be sane: one that unpacks to more
        // than any module or firmware file could be fills no disk.
        written += n as u64;
        if written > crate::fs::limits::RESTORED {
            return Err(Error::mismatch(&target, format!("its copy holds more than the {} bytes a restored file may be; not restored", crate::fs::limits::RESTORED)));
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| Error::io(tmp.path(), e))?;
    }
    let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if let Some(expected) = expected_md5 {
        if got != expected {
            return Err(Error::mismatch(&target, format!("md5sum {got} is not the {expected} dpkg recorded; not restored")));
        }
    }
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(tmp.path(), e))?;
    file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
    Ok(())
}

/// Drop pruned records whose files are back, put there by a reinstall or an upgrade, with
/// their archive copies.
fn forget_restored(root: &Root, state: &mut State, trees: &[Tree]) -> Result<()> {
    for tree in trees {
        let Some(kernel) = state.kernels.get_mut(&tree.version) else { continue };
        let back: Vec<String> = kernel
            .pruned
            .keys()
            .filter(|rel| std::fs::symlink_metadata(tree.path.join(rel)).is_ok())
            .cloned()
            .collect();
        for rel in back {
            if kernel.pruned.remove(&rel).is_some_and(|f| f.archived) {
                archive::forget(root, &tree.version, &rel)?;
            }
        }
    }
    Ok(())
}
