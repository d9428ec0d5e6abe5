//! One run: gather what is installed, plan, and (unless dry) apply. The binary's commands are
//! thin wrappers around these functions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::apply::{self, Done, FirmwareDone};
use crate::read::config::Config;
use crate::read::deb::AptCache;
use crate::read::firmware::Asked;
use crate::read::fingerprint::{Fingerprint, Saved};
use crate::report;
use crate::read::declaration::{Declarations, Origin};
use crate::error::Result;
use crate::joined;
use crate::read::index::{AliasDamage, ModuleIndex, Sources};
use crate::read::index_cache::{IndexCache, Key};
use crate::kver::Kver;
use crate::read::loaded;
use crate::read::packages::{Database, Packages};
use crate::plan::{self, Inputs, KernelInput, Plan};
use crate::read::gathered::{Gathered, KernelError};
use crate::root::Root;
use crate::read::state::{self, State};
use crate::read::tree::{self, Files, Tree};

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// Only this kernel version.
    pub kernel: Option<Kver>,
    /// Change nothing: no lock, no depmod in place, no deletes, no state.
    pub dry_run: bool,
    /// Refresh initramfs images after a change, as the config says.
    pub initramfs: bool,
    /// Stop early when nothing changed since the last run that changed nothing (see
    /// the fingerprint in the state folder). Only for a real run over every kernel.
    pub reuse: bool,
    /// Prune only the files of this module package (the original limopack's `--pkname`):
    /// other packages' files stay, as if they were no module packages, with what they need.
    pub package: Option<String>,
    /// How long to wait for another run's lock before giving up.
    pub lock_wait: std::time::Duration,
}

/// How long a run waits for another's lock by default (the command line's `--wait`): far
/// longer than any run takes, short enough that apt does not hang for good behind one that
/// is stuck.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

impl Gathered {
    /// The plan, unless an index turned out damaged while it was made and nothing could stand
    /// in for it: then the run stops, since a lookup that could not finish may have left out
    /// modules that are needed.
    pub fn plan(&self) -> Result<Plan> {
        let inputs = Inputs {
            config: &self.config,
            declarations: &self.declarations,
            packages: &self.packages,
            state: &self.state,
            kernels: self
                .trees
                .iter()
                .zip(&self.kernels)
                .map(|(tree, (index, files, loaded))| KernelInput {
                    tree,
                    index,
                    files,
                    loaded: loaded.as_deref(),
                })
                .collect(),
            apt_cache: &self.apt_cache,
            can_download: self.can_download,
            gone: self.gone.clone(),
        };
        let mut plan = plan::plan(&inputs);
        plan.warnings.splice(0..0, self.notes.iter().cloned());
        let mut names = BTreeMap::new();
        let seen = crate::read::firmware::look(&self.root, &self.firmware_asked(&plan), &self.config, &self.state, self.narrowed, &mut names);
        if self.keeps_caches {
            for (version, names) in &names {
                // One that cannot be written only means reading the modules again next time.
                if let Some(text) = names.render() {
                    let _ = apply::store::keep_cache(&self.root, version, "firmware", &text);
                }
            }
        }
        let cx = crate::plan::firmware::Context {
            config: &self.config,
            packages: &self.packages,
            state: &self.state,
            apt_cache: &self.apt_cache,
            can_download: self.can_download,
        };
        plan.firmware = crate::plan::firmware::plan(&plan.kernels, &seen, &cx);
        self.check_aliases(&mut plan.warnings)?;
        Ok(plan)
    }

    /// What the firmware read is asked about: each kernel's kept modules, and the declarations
    /// that are active.
    fn firmware_asked<'a>(&'a self, plan: &'a Plan) -> Asked<'a> {
        let kernels = plan
            .kernels
            .iter()
            .filter_map(|k| {
                let tree = self.trees.iter().find(|t| t.version == k.version)?;
                Some((tree, k.kept.iter().map(|(name, kept)| (name, &kept.path, kept.present)).collect()))
            })
            .collect();
        let declarations = self.declarations.active.iter().zip(&plan.declarations).filter(|(_, s)| s.active).map(|(d, _)| d).collect();
        Asked { kernels, declarations }
    }

    /// Say which damaged binary alias table had its text twin answer instead; stop, with what
    /// mends it, at one that had none.
    fn check_aliases(&self, warnings: &mut Vec<String>) -> Result<()> {
        const DAMAGED: &str = "damaged: a lookup met a part that does not decode";
        for (tree, (index, _, _)) in self.trees.iter().zip(&self.kernels) {
            for damage in index.damaged() {
                let (bin, mend) = match damage {
                    AliasDamage::Replaced { bin, text } => {
                        warnings.push(format!("{}: {DAMAGED}; {} was used instead", bin.display(), text.display()));
                        continue;
                    }
                    AliasDamage::TwinUnusable { bin, why } => {
                        (bin, format!("{DAMAGED}, and its text twin cannot stand in ({why}); run `depmod {}`", tree.version))
                    }
                    AliasDamage::NoTwin { bin } => (bin, format!(
                        "{DAMAGED}; it is limopack's copy of {}'s aliases from before it pruned, which keeps no text and which \
                         depmod does not rewrite: reinstall the kernel's module packages, so that nothing of it is pruned, then \
                         remove this file",
                        tree.version
                    )),
                };
                return Err(crate::Error::damaged(bin, mend));
            }
        }
        Ok(())
    }
}

/// Read everything a plan needs. A real run refreshes a stale index with depmod first; a dry
/// run reads what depmod would write (`depmod -n`) and writes nothing.
pub fn gather(opts: &Options) -> Result<Gathered> {
    let root = Root::new(&opts.root)?;
    // A dry run reads the state on a thread of its own, beside everything else: a pruned
    // kernel's state lists thousands of files. A real run reads it first, since it may fold
    // a killed run's journal into it and must know the state is sound before it runs depmod.
    let reading = opts.dry_run.then(|| {
        let root = root.clone();
        std::thread::spawn(move || State::load(&root))
    });
    let mut config = Config::load(&root)?;
    if let Some(package) = &opts.package {
        config = config.limited_to(package)?;
    }
    let declarations = Declarations::load(&root)?;
    let mut notes = Vec::new();
    let trees = tree::discover(&root, &mut notes)?;
    let (state, interrupted, changed) = match reading {
        Some(handle) => (Later::Reading(handle), None, false),
        None => {
            let (state, interrupted, changed) = apply::store::complete_killed_run(&root, &trees, &mut notes)?;
            (Later::Ready(state), interrupted, changed)
        }
    };
    let narrowed = |t: &Tree| opts.kernel.as_ref().is_none_or(|only| &t.version == only);
    if opts.kernel.is_some() && !trees.iter().any(narrowed) {
        let only = opts.kernel.as_ref().map(Kver::as_str).unwrap_or_default();
        return Err(crate::Error::missing(root.resolve("/lib/modules")?.join(only), "no such module tree"));
    }

    let config_files = tree::modprobe_config(&root)?;
    let running = root.is_host().then(loaded::running_kernel);
    let reading = Reading { root: &root, config: &config, config_files: &config_files, dry_run: opts.dry_run };
    let load = |tree: &Tree, bare_ok: bool, notes: &mut Vec<String>| -> Result<Option<Kernel>> {
        let rebuild = interrupted.as_ref() == Some(&tree.version);
        let Some((index, files, ran_depmod)) = load_index(&reading, tree, rebuild, bare_ok, notes)? else {
            return Ok(None);
        };
        let loaded = match &running {
            Some(version) if **version == *tree.version => Some(loaded::read_proc()?),
            _ => None,
        };
        Ok(Some(Kernel { index, files, loaded, ran_depmod }))
    };
    // dpkg's database is read while the trees are.
    // One kernel's trouble stops only that kernel: its error is kept for the end of the run.
    let found = |loaded: Result<Option<Kernel>>| match loaded {
        Ok(Some(kernel)) => Found::Ready(Box::new(kernel)),
        Ok(None) => Found::Bare,
        Err(e) => Found::Broken(e),
    };
    let ((packages, state), loaded) = std::thread::scope(|s| {
        let packages = s.spawn(|| read_packages(&root, &config, &declarations, trees.iter(), state));
        let loaded: Vec<Found> = trees
            .iter()
            .map(|tree| match narrowed(tree) {
                true => found(load(tree, false, &mut notes)),
                false => Found::Elsewhere,
            })
            .collect();
        Ok::<_, crate::Error>((joined(packages)?, loaded))
    })?;
    let reload = |tree: &Tree, notes: &mut Vec<String>| found(load(tree, true, notes));
    let sorted = sort_out(trees, loaded, &state, &packages, &mut notes, &reload);
    let apt_cache = AptCache::scan(&root)?;
    // apt-get download works on the running system's apt; an image's packages come from
    // its own apt, which a --root run does not drive.
    let can_download = root.is_host() && Path::new("/usr/bin/apt-get").exists();
    Ok(Gathered {
        root,
        config,
        declarations,
        packages,
        state,
        trees: sorted.trees,
        kernels: sorted.kernels,
        apt_cache,
        can_download,
        gone: sorted.gone,
        notes,
        errors: sorted.errors,
        changed: changed || sorted.changed,
        narrowed: opts.kernel.is_some(),
        keeps_caches: !opts.dry_run,
    })
}

/// The kernels a run plans, sorted out from what reading each tree found.
struct Sorted {
    /// The trees planned, and what was read of each.
    trees: Vec<Tree>,
    kernels: Vec<(ModuleIndex, Files, Option<Vec<String>>)>,
    errors: Vec<KernelError>,
    /// Kernels in the state whose trees are gone.
    gone: Vec<Kver>,
    /// depmod ran for one of them.
    changed: bool,
}

/// Sort out what reading each tree found. A tree with no module file is what a removed
/// kernel leaves behind (its index files, which depmod wrote and dpkg does not remove): left
/// alone, and forgotten (said once, when limopack knew the kernel), unless limopack pruned every module of a kernel whose package is
/// still installed, which `reload` reads as it is.
fn sort_out(
    trees: Vec<Tree>,
    found: Vec<Found>,
    state: &State,
    packages: &Packages,
    notes: &mut Vec<String>,
    reload: &dyn Fn(&Tree, &mut Vec<String>) -> Found,
) -> Sorted {
    let mut sorted = Sorted { trees: Vec::new(), kernels: Vec::new(), errors: Vec::new(), gone: Vec::new(), changed: false };
    let mut managed = Vec::new();
    for (tree, found) in trees.into_iter().zip(found) {
        let found = match found {
            Found::Bare if fully_pruned(state, packages, &tree) => reload(&tree, notes),
            Found::Bare => {
                // Said once, as the kernel is forgotten: the folder stays until its package
                // is purged, and a note on every apt run after would be noise.
                if state.kernels.contains_key(&tree.version) {
                    notes.push(format!("{}: holds no module files, as a removed kernel leaves its folder; left alone", tree.version));
                }
                continue;
            }
            other => other,
        };
        match found {
            Found::Ready(kernel) => {
                sorted.changed |= kernel.ran_depmod;
                sorted.kernels.push((kernel.index, kernel.files, kernel.loaded));
                managed.push((tree, true));
            }
            Found::Broken(e) => {
                sorted.errors.push(KernelError { version: tree.version.clone(), error: e });
                managed.push((tree, false));
            }
            Found::Elsewhere | Found::Bare => managed.push((tree, false)),
        }
    }
    sorted.gone = state.kernels.keys().filter(|k| !managed.iter().any(|(t, _)| &t.version == *k)).cloned().collect();
    sorted.trees = managed.into_iter().filter(|(_, planned)| *planned).map(|(t, _)| t).collect();
    sorted
}

/// What reading one tree gave.
enum Found {
    Ready(Box<Kernel>),
    /// No module file.
    Bare,
    /// An error of this kernel's alone.
    Broken(crate::Error),
    /// Not read: `--kernel` names another.
    Elsewhere,
}

/// One kernel's share of what is gathered, and whether depmod ran to make its index.
struct Kernel {
    index: ModuleIndex,
    files: Files,
    loaded: Option<Vec<String>>,
    ran_depmod: bool,
}

/// Whether `tree`, which holds no module file, is one limopack pruned whole while its
/// package is still installed.
fn fully_pruned(state: &State, packages: &Packages, tree: &Tree) -> bool {
    state.kernels.get(&tree.version).is_some_and(|k| {
        k.pruned.values().any(|f| packages.packages().iter().any(|p| p.name == f.package && p.is_present()))
    })
}

/// dpkg's database, as far as it owns the trees, the declarations and the firmware, and the
/// state (which a dry run may still be reading). With no tree and no vendor declaration,
/// there is nothing to ask dpkg about.
fn read_packages<'a>(
    root: &Root,
    config: &Config,
    declarations: &Declarations,
    trees: impl Iterator<Item = &'a Tree>,
    state: Later,
) -> Result<(Packages, State)> {
    let vendor = declarations.active.iter().any(|d| d.origin == Origin::Vendor);
    let mut prefixes = vec![format!("{}/", crate::root::VENDOR_DIR)];
    prefixes.extend(trees.flat_map(|t| t.dpkg_paths("")));
    let firmware = crate::read::firmware::dpkg_paths(&format!("{}/", crate::root::FIRMWARE_DIR));
    let all: Vec<String> = prefixes.iter().chain(&firmware).cloned().collect();
    let db = (vendor || prefixes.len() > 1).then(|| Database::read(root, &all)).transpose()?;
    let Some(db) = db else { return Ok((Packages::default(), state.get()?)) };
    // Firmware's owners matter when firmware is pruned, or was: only the second needs the
    // state, which a dry run may still be reading, and it is rare.
    let pruning_firmware = config.firmware == crate::read::config::FirmwareMode::Prune;
    if pruning_firmware {
        prefixes.extend_from_slice(&firmware);
    }
    let packages = Packages::from_database(&db, &prefixes)?;
    let state = state.get()?;
    match pruning_firmware || state.firmware.is_empty() {
        true => Ok((packages, state)),
        false => {
            prefixes.extend(firmware);
            Ok((Packages::from_database(&db, &prefixes)?, state))
        }
    }
}

/// The index of `tree` as a dry run plans with it, pruned modules included: what `check`,
/// `freeze` and the `limopack` command resolve names in, so that they agree with a run.
pub fn kernel_index(root: &Root, tree: &Tree) -> Result<ModuleIndex> {
    let config = Config::load(root)?;
    let config_files = tree::modprobe_config(root)?;
    let reading = Reading { root, config: &config, config_files: &config_files, dry_run: true };
    let kernel = load_index(&reading, tree, false, true, &mut Vec::new())?;
    Ok(kernel.map(|(index, _, _)| index).unwrap_or_default())
}

/// What every tree's index is read with.
struct Reading<'a> {
    root: &'a Root,
    config: &'a Config,
    /// modprobe.d, whose `alias` and `softdep` lines count.
    config_files: &'a [(PathBuf, String)],
    /// Read what depmod would write, and write nothing.
    dry_run: bool,
}

/// The index of one tree, fresh, with the modules limopack pruned earlier added back from
/// its saved copy; and whether depmod ran to make it fresh. `rebuild` asks for depmod
/// whatever the index says; a tree with no module file gives none, unless `bare_ok`.
fn load_index(reading: &Reading, tree: &Tree, rebuild: bool, bare_ok: bool, notes: &mut Vec<String>) -> Result<Option<(ModuleIndex, Files, bool)>> {
    let Reading { root, config, config_files, dry_run } = *reading;
    // With depmod off there is nothing to rebuild with; the index is used as it is.
    let rebuild = rebuild && config.depmod;
    let parse = |sources: Sources| {
        ModuleIndex::parse(Sources { config: config_files.to_vec(), ..sources })
    };
    // A modules.dep whose text a run parsed before is taken from the cache: the index, with
    // the key of its text and whether it was there.
    let cache = IndexCache::read(root, &tree.version);
    let parse_cached = |mut sources: Sources| -> Result<(ModuleIndex, Key, bool)> {
        let key = Key::of(sources.dep.as_ref().map_or(&[][..], |(_, text)| text));
        sources.parsed_dep = cache.lookup(key);
        let cached = sources.parsed_dep.is_some();
        Ok((parse(sources)?, key, cached))
    };
    // The indexes (the tree's, and limopack's copy from before a prune) are read while the
    // tree's files are: neither needs the other until both are in. Both indexes on one
    // thread, as a tree with a copy is a pruned one, whose own index is short.
    let (files, indexes) = std::thread::scope(|s| {
        let indexes = s.spawn(|| {
            let sources = Sources::read(&tree.path)?;
            let index = match sources.dep.is_some() && !rebuild {
                true => Some(parse_cached(sources)?),
                false => None,
            };
            Ok::<_, crate::Error>((index, state::saved_index(root, tree)?.map(parse_cached).transpose()?))
        });
        let files = Files::load(root, tree);
        (files, joined(indexes))
    });
    let (mut files, (index, saved)) = (files?, indexes?);
    // No module file: a folder a removed kernel left, which is not to be refreshed.
    if !bare_ok && files.is_empty() {
        return Ok(None);
    }
    let (mut index, mut key) = index.map(|(index, key, cached)| (index, (key, cached))).unzip();
    if let Some(index) = &mut index {
        files.mark(index);
    }
    let mut ran_depmod = false;
    let stale = match rebuild {
        true => Some("the run that was pruning it was interrupted".to_string()),
        false => tree::stale_reason(&files, index.as_ref()),
    };
    if let Some(reason) = stale {
        if !config.depmod {
            notes.push(format!("{}: index is stale ({reason}), and depmod is off; modules not in it are left alone", tree.version));
        } else if dry_run {
            notes.push(format!("{}: index is stale ({reason}); planning with what depmod would write", tree.version));
            let mut fresh = parse(apply::depmod::depmod_dry(root, tree)?)?;
            files.mark(&mut fresh);
            (index, key) = (Some(fresh), None);
        } else {
            notes.push(format!("{}: index is stale ({reason}); ran depmod", tree.version));
            apply::depmod::depmod(root, tree)?;
            ran_depmod = true;
            files = Files::scan(tree)?;
            let mut fresh = parse(Sources::read(&tree.path)?)?;
            files.mark(&mut fresh);
            (index, key) = (Some(fresh), None);
        }
    }
    let mut index = match index {
        Some(index) => index,
        None => {
            return Err(crate::Error::StaleIndex {
                path: tree.path.join("modules.dep"),
                message: "missing, and depmod is off; run depmod".into(),
            })
        }
    };
    // A real run keeps what it parsed for the next, when the cache did not have it all: the
    // tree's index, unless depmod made a new one (`key` is then gone), and the saved copy.
    let tree_parse = key.map(|(key, cached)| (key, cached, &index));
    let parses: Vec<_> = tree_parse.into_iter().chain(saved.as_ref().map(|(saved, key, cached)| (*key, *cached, saved))).collect();
    if !dry_run && parses.iter().any(|&(_, cached, _)| !cached) {
        // One that cannot be written only means parsing again next time.
        let text = IndexCache::render(parses.iter().map(|&(key, _, index)| (key, index)));
        let _ = apply::store::keep_cache(root, &tree.version, "index", &text);
    }
    if let Some((saved, _, _)) = saved {
        index.merge_pruned(saved);
    }
    Ok(Some((index, files, ran_depmod)))
}

/// The state, read now or still being read (see [`gather`]).
enum Later {
    Ready(State),
    Reading(std::thread::JoinHandle<Result<State>>),
}

impl Later {
    fn get(self) -> Result<State> {
        match self {
            Later::Ready(state) => Ok(state),
            Later::Reading(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}


/// What a sync did.
pub enum Synced {
    /// Nothing a plan is made from changed since the last run that changed nothing: what it
    /// printed stands.
    Unchanged(Saved),
    Ran(Box<Outcome>),
    /// The root has no module tree and limopack has never run on it: nothing to do, and
    /// nothing is made (no state folder, no lock).
    NoTrees,
}

/// What a full sync did.
pub struct Outcome {
    pub plan: Plan,
    pub done: Vec<Done>,
    pub firmware: FirmwareDone,
    /// What the plan was made from, and the state after the run.
    pub gathered: Gathered,
}

/// The main job: plan every kernel and, unless dry, carry the plan out.
pub fn sync(opts: &Options, waiting: impl FnOnce(Option<u32>)) -> Result<Synced> {
    let root = Root::new(&opts.root)?;
    // Nothing to do, and nothing to make, but the config and declarations are still read,
    // so that a fault in them is said now. A run whose output is read by a program (`--json`,
    // `-v`) plans even then.
    if opts.reuse && tree::discover(&root, &mut Vec::new())?.is_empty() && root.own(crate::root::STATE_DIR)?.is_none() {
        let gathered = gather(&Options { dry_run: true, ..opts.clone() })?;
        if !gathered.declarations.broken.is_empty() {
            return Err(gathered.declarations.broken.into_iter().next().expect("one at least"));
        }
        return Ok(Synced::NoTrees);
    }
    let _lock = match opts.dry_run {
        true => None,
        false => Some(apply::lock(&root, opts.lock_wait, waiting)?),
    };
    // Taken before anything is read, so that a change made while this run plans is seen
    // by the next one.
    let seen = (opts.reuse && !opts.dry_run && opts.kernel.is_none() && opts.package.is_none()).then(|| Fingerprint::take(&root));
    if let Some(seen) = &seen {
        if let Some(saved) = Saved::load(&root).filter(|s| s.fingerprint == *seen) {
            return Ok(Synced::Unchanged(saved));
        }
    }
    let mut gathered = gather(opts)?;
    let plan = gathered.plan()?;
    let (done, firmware) = match opts.dry_run {
        true => (Vec::new(), FirmwareDone::default()),
        false => {
            let effects = apply::Effects { initramfs: opts.initramfs };
            let (done, firmware) = apply::apply(&gathered.root, &gathered.config, &plan, &gathered.trees, &mut gathered.state, effects)?;
            let walked = gathered.trees.iter().zip(&gathered.kernels).map(|(tree, (index, files, _))| (tree, index, files));
            apply::save_tree_caches(&gathered.root, walked, &done);
            (done, firmware)
        }
    };
    if let Some(fingerprint) = seen {
        // Only a run that found nothing to do may be repeated by doing nothing: after a
        // change, the next run plans again and finds the tree as this one left it.
        let settled = !gathered.changed
            && gathered.declarations.broken.is_empty()
            && gathered.errors.is_empty()
            && done.is_empty()
            && !firmware.changed()
            && plan.firmware.prune.is_empty()
            && plan.firmware.restore.is_empty()
            && plan.forget_kernels.is_empty()
            && plan.kernels.iter().all(|k| k.action != plan::Action::Prune && k.missing().next().is_none());
        match settled {
            true => Saved {
                fingerprint,
                summaries: plan
                    .kernels
                    .iter()
                    .map(|k| report::summary(k, None, false, crate::root::CONFIG_FILE))
                    .chain(report::firmware_lines(&plan.firmware, None, false))
                    .collect(),
                warnings: report::warnings(&plan, &gathered.state, &done),
            }
            .save(&root)?,
            false => Saved::clear(&root)?,
        }
    }
    Ok(Synced::Ran(Box::new(Outcome {
        plan,
        done,
        firmware,
        gathered,
    })))
}
