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
    let version = &k.tree.version;
    let index = k.index;
    let mut warnings = Vec::new();
    let mut roots: BTreeMap<ModId, Reason> = BTreeMap::new();
    let mut builtin = Vec::new();
    let no_match = |what: &str, entry: &str, warnings: &mut Vec<String>| {
        warnings.push(format!("{what}: `{entry}` matches no module of {version}"));
    };

    // A baseline is a static entry that names something in this kernel: one whose entries
    // all match nothing (a typo) would otherwise prune the whole tree.
    // The static entries active declarations name now; the others only the state keeps.
    let declared: std::collections::HashSet<(&str, Option<&str>)> = active
        .iter()
        .map(|&d| &inputs.declarations.active[d])
        .flat_map(|decl| decl.statics.iter().map(|e| (e.text.as_str(), decl.kernels.as_ref().map(|k| k.text.as_str()))))
        .collect();
    let (mut baseline, mut unresolved_statics) = (false, 0);
    let mut keeps_all = None;
    for (record, line) in statics {
        if !record.applies_to(version) {
            continue;
        }
        let entry = entry_of(&record.entry);
        let (ids, is_builtin) = entry.resolve(index);
        baseline |= is_builtin || !ids.is_empty();
        unresolved_statics += usize::from(!is_builtin && ids.is_empty());
        if is_builtin {
            builtin.push(record.entry.clone());
        } else if ids.is_empty() {
            let at = if *line > 0 {
                format!("{}:{line}", record.declaration.display())
            } else {
                format!("{} (static, recorded)", record.declaration.display())
            };
            no_match(&at, &record.entry, &mut warnings);
        }
        // A glob such as `*` that names every module keeps the whole tree for good: the
        // summary says which entry, or nothing being pruned would look like a fault.
        if keeps_all.is_none() && ids.len() == index.modules().len() && !ids.is_empty() {
            keeps_all = Some(format!("static entry `{}` of {}", record.entry, record.declaration.display()));
        }
        for id in ids {
            roots.entry(id).or_insert_with(|| Reason::Static {
                entry: record.entry.clone(),
                declaration: record.declaration.clone(),
                recorded_only: !declared.contains(&(record.entry.as_str(), record.kernels.as_deref())),
            });
        }
    }

    let mut declarations = 0;
    let mut refcounts: BTreeMap<Shared, Vec<PathBuf>> = BTreeMap::new();
    for &d in active {
        let decl = &inputs.declarations.active[d];
        if !decl.applies_to(version) || decl.is_empty() {
            continue;
        }
        declarations += 1;
        // Statuses follow the declarations one for one (masked files come after them all);
        // an active declaration's package is its present owner.
        let package = statuses[d].package.clone();
        for entry in &decl.modules {
            let (ids, is_builtin) = entry.resolve(index);
            if is_builtin {
                builtin.push(entry.text.clone());
            } else if ids.is_empty() {
                no_match(&format!("{}:{}", decl.path.display(), entry.line), &entry.text, &mut warnings);
            }
            if keeps_all.is_none() && ids.len() == index.modules().len() && !ids.is_empty() {
                keeps_all = Some(format!("`{}` of {}", entry.text, decl.path.display()));
            }
            for id in ids {
                let users = refcounts.entry(index.module(id).name.clone()).or_default();
                // Declarations come one after the other: a repeat within this one is last.
                if users.last() != Some(&decl.path) {
                    users.push(decl.path.clone());
                }
                roots.entry(id).or_insert_with(|| Reason::Declared {
                    entry: entry.text.clone(),
                    declaration: decl.path.clone(),
                    package: package.clone(),
                });
            }
        }
    }

    if let Some(loaded) = k.loaded {
        for module in loaded {
            if let Some(id) = index.by_name(module) {
                roots.entry(id).or_insert(Reason::Loaded);
            }
        }
    }

    // Module files on disk that limopack may not prune are roots too: a DKMS module keeps the
    // in-tree modules it depends on. The others may be pruned; each has its owner.
    let mut owners = Owners::new(inputs, k.tree);
    let mut owned_by: Vec<Option<&Package>> = vec![None; index.modules().len()];
    let mut not_owned = Vec::new();
    for (id, module) in index.modules().iter().enumerate().filter(|(_, m)| m.present) {
        match owners.prunable_owner(&module.path) {
            Ok(owner) => owned_by[id] = Some(owner),
            Err(package) => {
                not_owned.push(module.path.clone());
                roots.entry(id).or_insert(Reason::NotPrunable { package });
            }
        }
    }
    not_owned.sort();

    let root_ids: Vec<ModId> = roots.keys().copied().collect();
    let closure = index.closure(&root_ids);
    let mut kept = BTreeMap::new();
    for (&id, via) in &closure {
        let module = index.module(id);
        let reason = match via {
            None => roots[&id].clone(),
            Some((by, edge)) => Reason::Pulled {
                by: index.module(*by).name.to_string(),
                edge: *edge,
            },
        };
        kept.insert(module.name.clone(), Kept { path: module.path.clone(), present: module.present, reason });
    }

    // Room for every owned file at once: a full tree's list is four thousand entries, grown
    // by doubling it would be copied a dozen times.
    let mut prune = Vec::with_capacity(owned_by.iter().flatten().count());
    // In modules.dep's order, which is stable from run to run.
    for (id, module) in index.modules().iter().enumerate() {
        let (Some(owner), false) = (owned_by[id], closure.contains_key(&id)) else { continue };
        prune.push(PruneFile {
            path: module.path.clone(),
            module: module.name.clone(),
            package: owner.name.clone(),
            version: owner.version.clone(),
            size: module.size,
        });
    }
    for rel in k.files.unlisted(index) {
        warnings.push(format!("{rel}: not in modules.dep; left alone"));
    }
    let restore = restore_list(inputs, k, &kept);
    for odd in &k.files.odd {
        warnings.push(format!("{odd}: not a regular file; left alone"));
    }

    let action = if !baseline {
        prune.clear();
        Action::NoBaseline
    } else if prune.is_empty() {
        Action::UpToDate
    } else if !inputs.config.prune {
        Action::PruningOff
    } else if !inputs.declarations.broken.is_empty() {
        Action::Blocked
    } else {
        Action::Prune
    };
    builtin.sort();
    builtin.dedup();
    KernelPlan {
        version: version.clone(),
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
        .then(|| globset::Glob::new(text).ok().map(|g| g.compile_matcher()))
        .flatten();
    Entry {
        text: text.to_string(),
        glob,
        line: 0,
        column: 0,
    }
}
