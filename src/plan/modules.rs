//! The module part of the plan, one kernel at a time: which modules are named (statics,
//! declarations, what is loaded), which cannot be pruned, the closure of what they need,
//! which files go, and which pruned files come back, with the reason for each.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::read::config::Config;
use crate::read::deb::AptCache;
use crate::read::declaration::{Declarations, Entry, Origin};
use crate::read::index::{Edge, ModId, ModuleIndex};
use crate::kver::Kver;
use crate::name::{self, Shared};
use crate::read::packages::{Package, Packages};
use crate::read::state::{State, StaticRecord};
use crate::read::tree::{Files, Tree};

/// One kernel's share of the inputs.
pub struct KernelInput<'a> {
    pub tree: &'a Tree,
    pub index: &'a ModuleIndex,
    pub files: &'a Files,
    /// Modules loaded now, for the running kernel only.
    pub loaded: Option<&'a [String]>,
}

pub struct Inputs<'a> {
    pub config: &'a Config,
    pub declarations: &'a Declarations,
    pub packages: &'a Packages,
    pub state: &'a State,
    pub kernels: Vec<KernelInput<'a>>,
    /// The `.deb` files in apt's cache, to restore from.
    pub apt_cache: &'a AptCache,
    /// Whether a missing file may be fetched with `apt-get download` (the running system).
    pub can_download: bool,
    /// Kernels the state remembers whose trees are gone.
    pub gone: Vec<Kver>,
}

/// Why a module is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// A static entry, recorded in the state or named by a declaration now.
    Static {
        entry: String,
        declaration: PathBuf,
        /// No declaration names it any more: only the state keeps it, until it is forgotten.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        recorded_only: bool,
    },
    /// Named under `modules:` by an active declaration.
    Declared {
        entry: String,
        declaration: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        package: Option<Shared>,
    },
    /// Loaded in the running kernel.
    Loaded,
    /// Its file is one limopack may not prune (no package owns it, as with DKMS output, or a
    /// package that is not a module package does): it stays, so what it needs stays too.
    NotPrunable {
        #[serde(skip_serializing_if = "Option::is_none")]
        package: Option<String>,
    },
    /// Pulled in by another kept module.
    Pulled { by: String, edge: Edge },
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// Path relative to the tree.
    pub path: Shared,
    /// False when the file is gone (pruned earlier): it must be restored.
    pub present: bool,
    pub reason: Reason,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneFile {
    /// Path relative to the tree.
    pub path: Shared,
    pub module: Shared,
    pub package: Shared,
    pub version: Shared,
    pub size: u64,
}

/// Where a missing file can come back from, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// limopack's own compressed copy (`archive: true`).
    Archive,
    /// The owning package's `.deb` in apt's cache, at the installed version.
    AptCache { deb: PathBuf },
    /// That `.deb`, fetched with `apt-get download PACKAGE=VERSION`.
    Download,
}

/// A kept module whose file is gone, and how to bring it back.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreFile {
    /// Path relative to the tree.
    pub path: Shared,
    pub module: Shared,
    /// The installed package that owns the file, and its version.
    pub package: Shared,
    pub version: Shared,
    /// Empty when nothing can bring it back: the run says which reinstall does.
    pub sources: Vec<Source>,
}

/// What a run does with a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Prune the listed files.
    Prune,
    /// Nothing to prune.
    UpToDate,
    /// There are files to prune, but the admin has not turned pruning on.
    PruningOff,
    /// No static module applies to this kernel: it is left whole.
    NoBaseline,
    /// There are files to prune, but a declaration cannot be read: what it needs is unknown,
    /// so nothing is pruned until it is fixed. What the others need is still restored.
    Blocked,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelPlan {
    pub version: Kver,
    pub path: PathBuf,
    pub running: bool,
    pub action: Action,
    pub baseline: bool,
    /// Modules the index knows, pruned ones included.
    pub modules_total: usize,
    /// Active declarations that apply to this kernel.
    pub declarations: usize,
    pub kept: BTreeMap<Shared, Kept>,
    /// Requested names that are built into the kernel: nothing to keep on disk.
    pub builtin: Vec<String>,
    /// Static entries that apply to this kernel and match nothing in it: with no other, the
    /// kernel has no baseline and is left whole.
    pub unresolved_statics: usize,
    /// The entry that alone names every module of the kernel (a glob such as `*`), if one
    /// does: why nothing is pruned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keeps_all: Option<String>,
    /// Module name to the declarations that name it under `modules:`.
    pub refcounts: BTreeMap<Shared, Vec<PathBuf>>,
    pub prune: Vec<PruneFile>,
    /// Kept modules whose files are gone, with an installed owner to restore them from.
    pub restore: Vec<RestoreFile>,
    /// Module files that stay because no module package owns them (DKMS, hand-built, shared).
    pub not_owned: Vec<Shared>,
    pub warnings: Vec<String>,
}

impl KernelPlan {
    pub fn prune_bytes(&self) -> u64 {
        self.prune.iter().map(|f| f.size).sum()
    }

    /// Kept modules whose files are gone.
    pub fn missing(&self) -> impl Iterator<Item = (&Shared, &Kept)> {
        self.kept.iter().filter(|(_, k)| !k.present)
    }
}

/// A declaration and whether it counts.
#[derive(Debug, Clone, Serialize)]
pub struct DeclarationStatus {
    pub path: PathBuf,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<Shared>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub(crate) fn plan_kernel(
    inputs: &Inputs,
    k: &KernelInput,
    active: &[usize],
    statuses: &[DeclarationStatus],
    statics: &[(StaticRecord, usize)],
) -> KernelPlan {
    let index = k.index;
    let mut named = Named::new(&k.tree.version);
    named.statics(inputs, index, active, statics);
    named.declared(inputs, index, active, statuses);
    named.loaded(index, k.loaded);
    let mut owners = Owners::new(inputs, k.tree);
    let (owned_by, not_owned) = named.not_prunable(index, &mut owners);
    let closure = index.closure(&named.roots.keys().copied().collect::<Vec<_>>());
    let kept = kept(index, &closure, &named.roots);
    let mut prune = prune_list(index, &owned_by, &closure);
    let Named { mut warnings, mut builtin, baseline, unresolved_statics, keeps_all, declarations, refcounts, .. } = named;
    for rel in k.files.unlisted(index) {
        warnings.push(format!("{rel}: not in modules.dep; left alone"));
    }
    let restore = restore_list(inputs, k, &kept);
    for odd in &k.files.odd {
        warnings.push(format!("{odd}: not a regular file; left alone"));
    }
    let action = action(inputs, baseline, &prune);
    if action == Action::NoBaseline {
        prune.clear();
    }
    builtin.sort();
    builtin.dedup();
    KernelPlan {
        version: k.tree.version.clone(),
        path: owners.shown().unwrap_or_else(|| k.tree.shown.clone()),
        running: k.loaded.is_some(),
        action,
        baseline,
        modules_total: index.modules().len(),
        declarations,
        kept,
        builtin,
        unresolved_statics,
        keeps_all,
        refcounts,
        prune,
        restore,
        not_owned,
        warnings,
    }
}


/// What names modules of one kernel, found step by step: the roots of the closure with the
/// reason each is kept, and what the summary says about them.
struct Named<'a> {
    version: &'a Kver,
    roots: BTreeMap<ModId, Reason>,
    builtin: Vec<String>,
    warnings: Vec<String>,
    /// A static entry names something in this kernel: without one, nothing is pruned.
    baseline: bool,
    unresolved_statics: usize,
    /// The entry that alone names every module, if one does.
    keeps_all: Option<String>,
    /// Declarations that apply to this kernel and name something.
    declarations: usize,
    refcounts: BTreeMap<Shared, Vec<PathBuf>>,
}

impl<'a> Named<'a> {
    fn new(version: &'a Kver) -> Named<'a> {
        Named {
            version,
            roots: BTreeMap::new(),
            builtin: Vec::new(),
            warnings: Vec::new(),
            baseline: false,
            unresolved_statics: 0,
            keeps_all: None,
            declarations: 0,
            refcounts: BTreeMap::new(),
        }
    }

    fn no_match(&mut self, at: &str, entry: &str) {
        self.warnings.push(format!("{at}: `{entry}` matches no module of {}", self.version));
    }

    /// A glob such as `*` that names every module keeps the whole tree for good: the summary
    /// says which entry, or nothing being pruned would look like a fault.
    fn note_keeps_all(&mut self, ids: &[ModId], index: &ModuleIndex, said: impl FnOnce() -> String) {
        if self.keeps_all.is_none() && !ids.is_empty() && ids.len() == index.modules().len() {
            self.keeps_all = Some(said());
        }
    }

    /// The static entries, recorded and declared. A baseline is one that names something in
    /// this kernel: one whose entries all match nothing (a typo) would otherwise prune the
    /// whole tree.
    fn statics(&mut self, inputs: &Inputs, index: &ModuleIndex, active: &[usize], statics: &[(StaticRecord, usize)]) {
        // The static entries active declarations name now; the others only the state keeps.
        let declared: std::collections::HashSet<(&str, Option<&str>)> = active
            .iter()
            .map(|&d| &inputs.declarations.active[d])
            .flat_map(|decl| decl.statics.iter().map(|e| (e.text.as_str(), decl.kernels.as_ref().map(|k| k.text.as_str()))))
            .collect();
        for (record, line) in statics.iter().filter(|(r, _)| r.applies_to(self.version)) {
            let (ids, is_builtin) = entry_of(&record.entry).resolve(index);
            self.baseline |= is_builtin || !ids.is_empty();
            self.unresolved_statics += usize::from(!is_builtin && ids.is_empty());
            if is_builtin {
                self.builtin.push(record.entry.clone());
            } else if ids.is_empty() {
                let at = match *line {
                    0 => format!("{} (static, recorded)", record.declaration.display()),
                    line => format!("{}:{line}", record.declaration.display()),
                };
                self.no_match(&at, &record.entry);
            }
            self.note_keeps_all(&ids, index, || format!("static entry `{}` of {}", record.entry, record.declaration.display()));
            let recorded_only = !declared.contains(&(record.entry.as_str(), record.kernels.as_deref()));
            for id in ids {
                self.roots.entry(id).or_insert_with(|| Reason::Static { entry: record.entry.clone(), declaration: record.declaration.clone(), recorded_only });
            }
        }
    }

    /// The `modules:` entries of the active declarations that apply to this kernel, each
    /// module counted once for each declaration that names it.
    fn declared(&mut self, inputs: &Inputs, index: &ModuleIndex, active: &[usize], statuses: &[DeclarationStatus]) {
        for &d in active {
            let decl = &inputs.declarations.active[d];
            if !decl.applies_to(self.version) || decl.is_empty() {
                continue;
            }
            self.declarations += 1;
            // Statuses follow the declarations one for one (masked files come after them all);
            // an active declaration's package is its present owner.
            let package = &statuses[d].package;
            for entry in &decl.modules {
                let (ids, is_builtin) = entry.resolve(index);
                if is_builtin {
                    self.builtin.push(entry.text.clone());
                } else if ids.is_empty() {
                    self.no_match(&format!("{}:{}", decl.path.display(), entry.line), &entry.text);
                }
                self.note_keeps_all(&ids, index, || format!("`{}` of {}", entry.text, decl.path.display()));
                for id in ids {
                    let users = self.refcounts.entry(index.module(id).name.clone()).or_default();
                    // Declarations come one after the other: a repeat within this one is last.
                    if users.last() != Some(&decl.path) {
                        users.push(decl.path.clone());
                    }
                    self.roots.entry(id).or_insert_with(|| Reason::Declared { entry: entry.text.clone(), declaration: decl.path.clone(), package: package.clone() });
                }
            }
        }
    }

    /// The modules loaded now, for the running kernel.
    fn loaded(&mut self, index: &ModuleIndex, loaded: Option<&[String]>) {
        for id in loaded.into_iter().flatten().filter_map(|module| index.by_name(module)) {
            self.roots.entry(id).or_insert(Reason::Loaded);
        }
    }

    /// Module files on disk that limopack may not prune are roots too: a DKMS module keeps
    /// the in-tree modules it depends on. Returns the owner of each module that may be
    /// pruned, and the files that may not, sorted.
    fn not_prunable<'p>(&mut self, index: &ModuleIndex, owners: &mut Owners<'p>) -> (Vec<Option<&'p Package>>, Vec<Shared>) {
        let mut owned_by = vec![None; index.modules().len()];
        let mut not_owned = Vec::new();
        for (id, module) in index.modules().iter().enumerate().filter(|(_, m)| m.present) {
            match owners.prunable_owner(&module.path) {
                Ok(owner) => owned_by[id] = Some(owner),
                Err(package) => {
                    not_owned.push(module.path.clone());
                    self.roots.entry(id).or_insert(Reason::NotPrunable { package });
                }
            }
        }
        not_owned.sort();
        (owned_by, not_owned)
    }
}

/// Every module of the closure, with why it is kept: its own reason for a root, the module
/// that pulls it in for the others.
fn kept(index: &ModuleIndex, closure: &HashMap<ModId, Option<(ModId, Edge)>>, roots: &BTreeMap<ModId, Reason>) -> BTreeMap<Shared, Kept> {
    closure
        .iter()
        .map(|(&id, via)| {
            let module = index.module(id);
            let reason = match via {
                None => roots[&id].clone(),
                Some((by, edge)) => Reason::Pulled { by: index.module(*by).name.to_string(), edge: *edge },
            };
            (module.name.clone(), Kept { path: module.path.clone(), present: module.present, reason })
        })
        .collect()
}

/// The owned module files outside the closure, in modules.dep's order, which is stable from
/// run to run.
fn prune_list(index: &ModuleIndex, owned_by: &[Option<&Package>], closure: &HashMap<ModId, Option<(ModId, Edge)>>) -> Vec<PruneFile> {
    // Room for every owned file at once: a full tree's list is four thousand entries, grown
    // by doubling it would be copied a dozen times.
    let mut prune = Vec::with_capacity(owned_by.iter().flatten().count());
    for (id, module) in index.modules().iter().enumerate() {
        let (Some(owner), false) = (owned_by[id], closure.contains_key(&id)) else { continue };
        prune.push(PruneFile { path: module.path.clone(), module: module.name.clone(), package: owner.name.clone(), version: owner.version.clone(), size: module.size });
    }
    prune
}

/// What the run does with the kernel, by what stops it first.
fn action(inputs: &Inputs, baseline: bool, prune: &[PruneFile]) -> Action {
    if !baseline {
        Action::NoBaseline
    } else if prune.is_empty() {
        Action::UpToDate
    } else if !inputs.config.prune {
        Action::PruningOff
    } else if !inputs.declarations.broken.is_empty() {
        Action::Blocked
    } else {
        Action::Prune
    }
}

/// The module package (name, version) that owns `rel` when limopack may prune it: every owner
/// has its files on disk and is a configured module package. Otherwise the package that stands
/// in the way, if any.
struct Owners<'a> {
    inputs: &'a Inputs<'a>,
    /// Of `/lib/modules/KVER/` and `/usr/lib/modules/KVER/`, the ways dpkg may list the tree,
    /// those some package lists files under.
    prefixes: Vec<String>,
    path: String,
    /// Whether a package's files may be pruned, by name: a glob match per package, not per file.
    prunable: HashMap<&'a str, bool>,
}

impl<'a> Owners<'a> {
    fn new(inputs: &'a Inputs<'a>, tree: &Tree) -> Owners<'a> {
        let prefixes = tree.dpkg_paths("").into_iter().filter(|p| inputs.packages.lists_under(p)).collect();
        Owners { inputs, prefixes, path: String::new(), prunable: HashMap::default() }
    }

    /// The tree as dpkg lists it (`/usr/lib/modules/KVER` on trixie, `/lib/modules/KVER` on
    /// bookworm, whichever way `/lib` is linked), so that a path printed under it is one
    /// `dpkg -S` finds; none when no package lists the tree.
    fn shown(&self) -> Option<PathBuf> {
        self.prefixes.first().map(|p| PathBuf::from(p.trim_end_matches('/')))
    }

    fn prunable_owner(&mut self, rel: &str) -> Result<&'a Package, Option<String>> {
        let mut first = None;
        for prefix in &self.prefixes {
            self.path.clear();
            self.path.push_str(prefix);
            self.path.push_str(rel);
            for p in self.inputs.packages.owners(&self.path) {
                let config = self.inputs.config;
                let ok = *self.prunable.entry(&p.name).or_insert_with(|| p.is_present() && config.is_module_package(&p.name));
                if !ok {
                    return Err(Some(p.name.to_string()));
                }
                first.get_or_insert(p);
            }
        }
        first.ok_or(None)
    }
}

/// The kept modules whose files are gone and that an installed package owns, each with the
/// sources that can bring it back. A file no installed package owns is not brought back: it
/// would be a file dpkg does not know.
fn restore_list(inputs: &Inputs, k: &KernelInput, kept: &BTreeMap<Shared, Kept>) -> Vec<RestoreFile> {
    let pruned = inputs.state.kernels.get(&k.tree.version).map(|s| &s.pruned);
    let mut restore = Vec::new();
    for (module, kept) in kept.iter().filter(|(_, kept)| !kept.present) {
        let owner = k
            .tree
            .dpkg_paths(&kept.path)
            .iter()
            .find_map(|p| inputs.packages.owners(p).find(|o| o.is_present()).cloned());
        let Some(owner) = owner else { continue };
        let mut sources = Vec::new();
        if pruned.and_then(|p| p.get(&*kept.path)).is_some_and(|f| f.archived) {
            sources.push(Source::Archive);
        }
        if let Some(deb) = inputs.apt_cache.find(&owner.name, &owner.version) {
            sources.push(Source::AptCache { deb: deb.to_path_buf() });
        }
        if inputs.can_download && !owner.version.is_empty() {
            sources.push(Source::Download);
        }
        restore.push(RestoreFile {
            path: kept.path.clone(),
            module: module.clone(),
            package: owner.name,
            version: owner.version,
            sources,
        });
    }
    restore
}

/// A recorded static entry back as an entry to resolve.
fn entry_of(text: &str) -> Entry {
    let glob = name::is_name_glob(text)
        .then(|| crate::glob::Glob::new(text).ok())
        .flatten();
    Entry {
        text: text.to_string(),
        glob,
        line: 0,
        column: 0,
    }
}
