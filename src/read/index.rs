//! The module index of one kernel: what depmod wrote under `/lib/modules/<kver>`, read the way
//! modprobe reads it.
//!
//! Names and aliases resolve in modprobe's order (modprobe.d aliases, module names,
//! `modules.alias`, built-ins), and the closure follows everything modprobe would load with a
//! module: `modules.dep`, soft dependencies (pre and post) and weak dependencies. Every path an
//! index names is checked to stay inside the tree, and an index that does not parse is an error.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::glob::Glob;

use crate::read::binary_index::BinaryIndex;
use crate::fs::bytes::Bytes;
use crate::error::{Error, Result};
use crate::name::{self, fnmatch, normalize, Shared};

/// Position of a module in its index.
pub type ModId = usize;

/// One module file as `modules.dep` lists it.
#[derive(Debug, Clone)]
pub struct Module {
    /// Loaded name, normalised (`crc32c_intel`).
    pub name: Shared,
    /// Path relative to the tree, as in `modules.dep` (`kernel/fs/ext4/ext4.ko`).
    pub path: Shared,
    /// Where its hard dependencies are in the index's list of them ([`ModuleIndex::deps`]).
    deps: std::ops::Range<usize>,
    /// False when the file is gone from disk (pruned earlier); such modules come from
    /// limopack's copy of the index taken before it pruned.
    pub present: bool,
    /// The size of its file on disk, when present.
    pub size: u64,
}

/// How the closure reached a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Edge {
    /// Named in `modules.dep`: a symbol it needs.
    Dependency,
    /// `softdep … pre:`: modprobe loads it first.
    SoftdepPre,
    /// `softdep … post:`: modprobe loads it after.
    SoftdepPost,
    /// `weakdep`: may be requested at run time, so it belongs in the same image.
    Weakdep,
}

/// What a name or alias stands for in one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Modules(Vec<ModId>),
    /// Built into the kernel image: nothing to keep on disk.
    Builtin,
    NotFound,
}

#[derive(Debug, Default, Clone)]
struct SoftDeps {
    pre: Vec<String>,
    post: Vec<String>,
}

/// Alias patterns, split so that the common literal ones are one hash lookup away.
#[derive(Debug, Default, Clone)]
struct Aliases {
    exact: HashMap<String, Vec<String>>,
    /// Patterns with wildcards, with the length of the literal text before the first one.
    wild: Vec<(usize, String, String)>,
    /// Positions in `wild` by the pattern's first byte when it is literal, so that a lookup
    /// tries only the patterns that can match (`m…` never tries the thousands of `pci:…`);
    /// patterns that start with a wildcard are under `None`.
    wild_by_first: HashMap<Option<u8>, Vec<usize>>,
}

impl Aliases {
    fn add(&mut self, pattern: &str, module: &str) {
        let pattern = normalize(pattern).into_owned();
        let module = normalize(module).into_owned();
        match pattern.bytes().position(|b| matches!(b, b'*' | b'?' | b'[')) {
            None => self.exact.entry(pattern).or_default().push(module),
            Some(at) => self.push_wild(at, pattern, module),
        }
    }

    fn push_wild(&mut self, literal: usize, pattern: String, module: String) {
        let first = (literal > 0).then(|| pattern.as_bytes()[0]);
        self.wild_by_first.entry(first).or_default().push(self.wild.len());
        self.wild.push((literal, pattern, module));
    }

    /// Module names whose alias matches `name` (already normalised), as fnmatch(3) would.
    fn lookup<'a>(&'a self, name: &str) -> Vec<&'a str> {
        let mut found: Vec<&str> = self
            .exact
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let first = name.as_bytes().first().copied();
        let candidates = [first, None].into_iter().filter_map(|f| self.wild_by_first.get(&f)).flatten();
        for &at in candidates {
            let (literal, pattern, module) = &self.wild[at];
            if name.starts_with(&pattern[..*literal]) && fnmatch(pattern.as_bytes(), name.as_bytes()) {
                found.push(module);
            }
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wild.is_empty()
    }
}

/// Where a kernel's alias patterns come from: depmod's binary index when it wrote one, which
/// is looked up in place as modprobe does; else the text of `modules.alias`, parsed.
#[derive(Debug)]
enum AliasTable {
    Text(Aliases),
    Binary(BinaryAliases),
}

impl AliasTable {
    /// Module names whose alias matches `name` (already normalised).
    fn lookup<'a>(&'a self, name: &str, found: &mut Vec<&'a str>) {
        match self {
            AliasTable::Text(aliases) => found.extend(aliases.lookup(name)),
            AliasTable::Binary(binary) => binary.lookup(name, found),
        }
    }
}

/// depmod's binary alias table, and its text twin, which depmod writes beside it from the same
/// aliases: once a lookup finds the binary one damaged, the text answers that lookup and every
/// later one, so that a part that does not decode leaves out no module.
#[derive(Debug)]
struct BinaryAliases {
    index: BinaryIndex,
    /// Where the twin is; none for limopack's copy of an index, which keeps no text.
    twin: Option<PathBuf>,
    /// The twin parsed, on first need only: a sound binary table never needs its 1.3 MB.
    parsed_twin: OnceLock<Result<Aliases>>,
}

impl BinaryAliases {
    fn lookup<'a>(&'a self, name: &str, found: &mut Vec<&'a str>) {
        if !self.index.is_damaged() {
            let before = found.len();
            self.index.search_wild(name, found);
            if !self.index.is_damaged() {
                return;
            }
            found.truncate(before);
        }
        if let Some(Ok(aliases)) = self.twin.as_deref().map(|path| self.parse_twin(path)) {
            found.extend(aliases.lookup(name));
        }
    }

    /// The twin at `path`, parsed on first need: its aliases, or why it cannot stand in.
    fn parse_twin(&self, path: &Path) -> &Result<Aliases> {
        self.parsed_twin.get_or_init(|| {
            let text = read_text_at(path)?.ok_or_else(|| Error::missing(path, "missing"))?;
            let mut aliases = Aliases::default();
            parse_aliases(path, &text, true, &mut aliases)?;
            Ok(aliases)
        })
    }

    /// What stood in for it, if a lookup found it damaged.
    fn damage(&self) -> Option<AliasDamage<'_>> {
        let bin = self.index.is_damaged().then(|| self.index.path())?;
        let Some(text) = self.twin.as_deref() else { return Some(AliasDamage::NoTwin { bin }) };
        Some(match self.parse_twin(text) {
            Ok(_) => AliasDamage::Replaced { bin, text },
            Err(why) => AliasDamage::TwinUnusable { bin, why },
        })
    }
}

/// A binary alias table that a lookup found damaged: one of its parts does not decode.
#[derive(Debug)]
pub enum AliasDamage<'a> {
    /// Its text twin, `modules.alias`, answered instead: lookups are whole.
    Replaced { bin: &'a Path, text: &'a Path },
    /// Its twin is missing or does not parse either: lookups may have left modules out.
    TwinUnusable { bin: &'a Path, why: &'a Error },
    /// limopack's copy of an index from before a prune, which keeps no twin.
    NoTwin { bin: &'a Path },
}

/// The first line depmod writes in each index file after `modules.dep`; `depmod -n` prints
/// the files one after another, and these tell where each begins.
pub const HEADERS: [(&str, &str); 5] = [
    ("modules.alias", "# Aliases extracted from modules themselves."),
    ("modules.softdep", "# Soft dependencies extracted from modules themselves."),
    ("modules.weakdep", "# Weak dependencies extracted from modules themselves."),
    ("modules.symbols", "# Aliases for symbols, used by symbol_request()."),
    ("modules.devname", "# Device nodes to trigger on-demand module loading."),
];

/// The index files of one tree, as text, with the paths to name in errors.
#[derive(Debug, Default)]
pub struct Sources {
    /// `modules.dep`, mapped: half a megabyte, read once.
    pub dep: Option<(PathBuf, Bytes)>,
    /// `modules.dep` as a run parsed it before, from limopack's cache (`index_cache`): when
    /// there is one, `dep` is not parsed again.
    pub parsed_dep: Option<DepList>,
    /// `modules.alias.bin`; when there is one, the text `modules.alias` is not read.
    pub alias_bin: Option<BinaryIndex>,
    /// Where the text `modules.alias` beside `alias_bin` is, read only if a lookup finds the
    /// binary table damaged; none for limopack's copy of an index, which keeps no text.
    pub alias_twin: Option<PathBuf>,
    pub alias: Option<(PathBuf, String)>,
    pub softdep: Option<(PathBuf, String)>,
    pub weakdep: Option<(PathBuf, String)>,
    pub builtin: Option<(PathBuf, String)>,
    pub builtin_modinfo: Option<(PathBuf, Vec<u8>)>,
    /// modprobe.d files: their `alias` and `softdep` lines count, other commands are ignored.
    pub config: Vec<(PathBuf, String)>,
}

impl Sources {
    /// Read the index files of `dir` (a module tree, or limopack's saved copy of its index).
    /// Only `modules.dep` is required.
    pub fn read(dir: &Path) -> Result<Sources> {
        let alias_bin = BinaryIndex::read(&dir.join("modules.alias.bin"))?;
        let (builtin, builtin_modinfo) = Sources::read_builtin(dir)?;
        Ok(Sources {
            dep: crate::fs::mapped_if_there(&dir.join("modules.dep"), crate::fs::limits::INDEX)?.map(|bytes| (dir.join("modules.dep"), bytes)),
            alias: match alias_bin {
                Some(_) => None,
                None => read_text(dir, "modules.alias")?,
            },
            parsed_dep: None,
            alias_twin: alias_bin.as_ref().map(|_| dir.join("modules.alias")),
            alias_bin,
            softdep: read_text(dir, "modules.softdep")?,
            weakdep: read_text(dir, "modules.weakdep")?,
            builtin,
            builtin_modinfo,
            config: Vec::new(),
        })
    }

    /// `modules.builtin` and `modules.builtin.modinfo` of the tree at `dir`: what is built
    /// into its kernel, which no copy of an index has.
    #[allow(clippy::type_complexity)]
    fn read_builtin(dir: &Path) -> Result<(Option<(PathBuf, String)>, Option<(PathBuf, Vec<u8>)>)> {
        Ok((read_text(dir, "modules.builtin")?, read_bytes(dir, "modules.builtin.modinfo")?))
    }

    /// Split what `depmod -n` prints (all index files, one after the other) into sources.
    /// This is how a dry run reads a fresh index without writing one, and how limopack's
    /// saved copy of an index is read. `modules.dep` comes first and is most of it: it stays
    /// where it is, in `text`, once the others are copied out. `label` names `text` in errors.
    pub fn from_depmod_output(mut text: Bytes, label: &Path, builtin_from: &Path) -> Result<Sources> {
        // Each file runs from its header line to the next file's; modules.dep has none.
        let mut parts: HashMap<&str, String> = HashMap::default();
        let mut dep_end = text.len();
        let (mut current, mut start) = ("modules.dep", 0);
        let mut take_part = |file: &'static str, from: usize, to: usize| -> Result<()> {
            match file {
                "modules.dep" => dep_end = to,
                _ => parts.entry(file).or_default().push_str(utf8(label, &text[from..to])?),
            }
            Ok(())
        };
        let mut at = 0;
        for end in memchr::memchr_iter(b'\n', &text).chain([text.len()]) {
            let line = &text[at..end];
            if line.first() == Some(&b'#') {
                if let Some((file, _)) = HEADERS.iter().find(|(_, header)| line.starts_with(header.as_bytes())) {
                    take_part(current, start, at)?;
                    (current, start) = (file, at);
                }
            }
            at = end + 1;
        }
        take_part(current, start, text.len())?;
        text.truncate(dep_end);
        let (builtin, builtin_modinfo) = Sources::read_builtin(builtin_from).unwrap_or_default();
        let mut take = |file: &str| {
            parts
                .remove(file)
                .map(|text| (PathBuf::from(format!("{} ({file})", label.display())), text))
        };
        Ok(Sources {
            dep: Some((PathBuf::from(format!("{} (modules.dep)", label.display())), text)),
            parsed_dep: None,
            alias_bin: None,
            alias_twin: None,
            alias: take("modules.alias"),
            softdep: take("modules.softdep"),
            weakdep: take("modules.weakdep"),
            builtin,
            builtin_modinfo,
            config: Vec::new(),
        })
    }
}

/// The lines of `text`, the last one too when it does not end with a line break: `str::lines`
/// with memchr's search, for the index files and caches of thousands of lines a run reads.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text.as_bytes()).chain([text.len()]).map(move |end| {
        let line = &text[start..end];
        start = end + 1;
        line
    })
}

/// The dependencies of a `modules.dep` line, split at spaces and tabs as libkmod splits them
/// (`strtok_r(…, " \t")`), searched with memchr: ten thousand of them are split on every run.
fn dep_words(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr2_iter(b' ', b'\t', text.as_bytes()).chain([text.len()]).filter_map(move |end| {
        let word = &text[start..end];
        start = end + 1;
        (!word.is_empty()).then_some(word)
    })
}

/// The bytes of `file` in `dir`, if there is one.
pub(crate) fn read_bytes(dir: &Path, file: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = dir.join(file);
    Ok(read_bytes_at(&path)?.map(|bytes| (path, bytes)))
}

/// The bytes of the index file at `path`, if there is one: a regular file, never a link.
fn read_bytes_at(path: &Path) -> Result<Option<Vec<u8>>> {
    crate::fs::read_entry_if_there(path, crate::fs::limits::INDEX)
}

/// The text of `file` in `dir`, if there is one; it must be UTF-8.
fn read_text(dir: &Path, file: &str) -> Result<Option<(PathBuf, String)>> {
    let path = dir.join(file);
    Ok(read_text_at(&path)?.map(|text| (path, text)))
}

fn read_text_at(path: &Path) -> Result<Option<String>> {
    let Some(bytes) = read_bytes_at(path)? else { return Ok(None) };
    String::from_utf8(bytes).map(Some).map_err(|e| not_utf8(path, e.as_bytes(), e.utf8_error()))
}

/// `bytes` as text, or an error at the line of the first byte that is not UTF-8.
fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| not_utf8(path, bytes, e))
}

fn not_utf8(path: &Path, bytes: &[u8], e: std::str::Utf8Error) -> Error {
    let line = memchr::memchr_iter(b'\n', &bytes[..e.valid_up_to()]).count() + 1;
    Error::syntax(path, line, 1, "not valid UTF-8")
}

/// Modules built into the kernel, by name and by alias.
#[derive(Debug, Default)]
struct Builtin {
    names: HashSet<String>,
    aliases: Aliases,
}

/// What a `modules.dep` says: its modules in its order, by name, and their hard dependencies,
/// one module's after another. The cache of parsed indexes keeps this (`index_cache`).
#[derive(Debug, Default)]
pub struct DepList {
    modules: Vec<Module>,
    deps: Vec<ModId>,
    by_name: Names,
}

/// Module ids by name. The table holds ids only, each found by its module's name: a map
/// keyed by a copy of each name would be four times the size, and a run makes one for every
/// index it reads.
#[derive(Debug, Default)]
struct Names(HashTable<u32>);

fn name_hash(name: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(name)
}

impl Names {
    fn with_capacity(modules: usize) -> Names {
        Names(HashTable::with_capacity(modules))
    }

    fn get(&self, modules: &[Module], name: &str) -> Option<ModId> {
        self.0.find(name_hash(name), |&id| *modules[id as usize].name == *name).map(|&id| id as usize)
    }

    /// Add the module at `id` of `modules`, whose name must not be here yet.
    fn insert(&mut self, modules: &[Module], id: ModId) {
        let id = u32::try_from(id).expect("fewer than four billion modules");
        self.0.insert_unique(name_hash(&modules[id as usize].name), id, |&other| name_hash(&modules[other as usize].name));
    }
}

impl DepList {
    pub(crate) fn with_capacity(modules: usize, deps: usize) -> DepList {
        DepList { modules: Vec::with_capacity(modules), deps: Vec::with_capacity(deps), by_name: Names::with_capacity(modules) }
    }

    /// Add the next module, unless one of its name is in the list already. Its dependencies
    /// are positions in the list (see [`is_whole`](Self::is_whole)).
    pub(crate) fn push(&mut self, name: Shared, path: Shared, deps: impl IntoIterator<Item = ModId>) -> bool {
        if self.by_name.get(&self.modules, &name).is_some() {
            return false;
        }
        let start = self.deps.len();
        self.deps.extend(deps);
        self.modules.push(Module { name, path, deps: start..self.deps.len(), present: true, size: 0 });
        self.by_name.insert(&self.modules, self.modules.len() - 1);
        true
    }

    /// True when every dependency is a module of the list.
    pub(crate) fn is_whole(&self) -> bool {
        self.deps.iter().all(|&d| d < self.modules.len())
    }
}

/// The parsed index of one kernel tree.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    modules: Vec<Module>,
    /// Every module's hard dependencies, one module's after another: one list, not one
    /// allocation for each of four thousand modules.
    deps: Vec<ModId>,
    by_name: Names,
    /// `modules.builtin` and `modules.builtin.modinfo` as read, parsed on first use
    /// (`builtin`): a run whose names all resolve to modules never asks.
    builtin_sources: (Option<String>, Option<Vec<u8>>),
    builtin: OnceLock<Builtin>,
    /// This tree's aliases, then those of limopack's copy of its index from before it pruned.
    aliases: Vec<AliasTable>,
    config_aliases: Aliases,
    softdeps: HashMap<String, SoftDeps>,
    weakdeps: HashMap<String, Vec<String>>,
}

impl ModuleIndex {
    /// The index of the tree at `dir` as depmod wrote it, every listed module taken as
    /// present: for looking names up, not for planning a prune.
    pub fn load(dir: &Path) -> Result<ModuleIndex> {
        ModuleIndex::parse(Sources::read(dir)?)
    }

    /// Parse the sources, every listed module taken as present until
    /// [`mark_present`](Self::mark_present) says otherwise.
    pub fn parse(sources: Sources) -> Result<ModuleIndex> {
        let mut index = ModuleIndex::default();
        let (dep_path, dep_bytes) = sources
            .dep
            .as_ref()
            .ok_or_else(|| Error::missing("modules.dep", "missing; run depmod"))?;
        match sources.parsed_dep {
            Some(list) => (index.modules, index.deps, index.by_name) = (list.modules, list.deps, list.by_name),
            None => index.parse_dep(dep_path, utf8(dep_path, dep_bytes)?)?,
        }
        if let Some(bin) = sources.alias_bin {
            let twin = sources.alias_twin;
            index.aliases.push(AliasTable::Binary(BinaryAliases { index: bin, twin, parsed_twin: OnceLock::new() }));
        } else if let Some((path, text)) = &sources.alias {
            let mut aliases = Aliases::default();
            parse_aliases(path, text, true, &mut aliases)?;
            index.aliases.push(AliasTable::Text(aliases));
        }
        if let Some((path, text)) = &sources.softdep {
            parse_softdeps(path, text, true, &mut index.softdeps)?;
        }
        if let Some((path, text)) = &sources.weakdep {
            parse_weakdeps(path, text, &mut index.weakdeps)?;
        }
        index.builtin_sources = (sources.builtin.map(|(_, text)| text), sources.builtin_modinfo.map(|(_, bytes)| bytes));
        for (path, text) in &sources.config {
            parse_aliases(path, text, false, &mut index.config_aliases)?;
            parse_softdeps(path, text, false, &mut index.softdeps)?;
        }
        Ok(index)
    }

    /// Read `modules.dep`: one `MODULE: DEP DEP…` line per module file. Dependencies are
    /// checked only when they do not name a listed module, which is then an error: a path
    /// the index gives is one of its own lines, and those are checked.
    fn parse_dep(&mut self, path: &Path, text: &str) -> Result<()> {
        let suspicious = may_hide_bad_parts(text);
        // (line number, the line, its module, its dependencies)
        let mut entries: Vec<(usize, &str, &str, &str)> = Vec::new();
        for (n, line) in lines(text).enumerate() {
            let line_no = n + 1;
            if line.is_empty() || line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line.as_bytes()) else {
                return Err(Error::syntax(path, line_no, 1, "expected `MODULE: DEPENDENCIES`; the file looks truncated, run depmod"));
            };
            let module = line[..colon].trim();
            if suspicious || !has_plain_ends(module) {
                check_path(path, line_no, module)?;
            }
            entries.push((line_no, line, module, &line[colon + 1..]));
        }
        self.modules.reserve(entries.len());
        self.by_name = Names::with_capacity(entries.len());
        let mut by_path: HashMap<&str, ModId> = HashMap::default();
        by_path.reserve(entries.len());
        for &(line_no, _, module, _) in &entries {
            let name = name::module_name_of_path(module)
                .ok_or_else(|| Error::syntax(path, line_no, 1, format!("`{module}` is not a module file")))?;
            if let Some(other) = self.by_name.get(&self.modules, &name) {
                let first = &self.modules[other].path;
                return Err(Error::syntax(path, line_no, 1, format!("module `{name}` is listed twice ({first} and {module})")));
            }
            by_path.insert(module, self.modules.len());
            self.modules.push(Module { name: name.into(), path: module.into(), deps: 0..0, present: true, size: 0 });
            self.by_name.insert(&self.modules, self.modules.len() - 1);
        }
        for (id, &(line_no, line, _, deps)) in entries.iter().enumerate() {
            let start = self.deps.len();
            for dep in dep_words(deps) {
                match by_path.get(dep) {
                    Some(&dep_id) => self.deps.push(dep_id),
                    None => return Err(bad_dependency(path, &entries, (line_no, column(line, dep), dep))),
                }
            }
            self.modules[id].deps = start..self.deps.len();
        }
        Ok(())
    }

    /// Say which listed modules have their file on disk, and its size. Parsing does not ask,
    /// so that it can run while the tree's files are being read.
    pub fn mark_present(&mut self, size_on_disk: impl Fn(&str) -> Option<u64>) {
        for module in &mut self.modules {
            let size = size_on_disk(&module.path);
            (module.present, module.size) = (size.is_some(), size.unwrap_or(0));
        }
    }

    /// Add the modules of `older` (limopack's copy of this tree's index from before it pruned)
    /// that this index no longer lists because their files are gone, so that a pruned module
    /// can still be named, kept, and restored. A pruned tree lists a few dozen modules and its
    /// copy thousands, so this index goes into the copy: each of its modules takes the place of
    /// the copy's module of that name, and the copy's others stay, absent.
    pub fn merge_pruned(&mut self, older: ModuleIndex) {
        let live = std::mem::replace(self, older);
        for module in &mut self.modules {
            (module.present, module.size) = (false, 0);
        }
        // Each of this index's modules by its id in the merged one.
        let mut here = Vec::with_capacity(live.modules.len());
        let mut live_deps = Vec::with_capacity(live.modules.len());
        for module in live.modules {
            live_deps.push(module.deps.clone());
            let module = Module { deps: 0..0, ..module };
            let id = match self.by_name.get(&self.modules, &module.name) {
                Some(id) => {
                    self.modules[id] = module;
                    id
                }
                None => {
                    self.modules.push(module);
                    self.by_name.insert(&self.modules, self.modules.len() - 1);
                    self.modules.len() - 1
                }
            };
            here.push(id);
        }
        for (live_id, range) in live_deps.into_iter().enumerate() {
            let start = self.deps.len();
            self.deps.extend(live.deps[range].iter().map(|&d| here[d]));
            self.modules[here[live_id]].deps = start..self.deps.len();
        }
        // Looked up before the copy's: a name resolves to what it does now as well as to what
        // it did before the prune.
        let older_aliases = std::mem::replace(&mut self.aliases, live.aliases);
        self.aliases.extend(older_aliases);
        self.softdeps.extend(live.softdeps);
        self.weakdeps.extend(live.weakdeps);
        // What is built in, and the admin's modprobe.d, are the tree's as it is now.
        (self.builtin_sources, self.builtin, self.config_aliases) = (live.builtin_sources, live.builtin, live.config_aliases);
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    pub fn module(&self, id: ModId) -> &Module {
        &self.modules[id]
    }

    /// The hard dependencies of a module, in depmod's order.
    pub fn deps(&self, id: ModId) -> &[ModId] {
        &self.deps[self.modules[id].deps.clone()]
    }

    pub fn by_name(&self, name: &str) -> Option<ModId> {
        self.by_name.get(&self.modules, &normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin().names.contains(&*normalize(name))
    }

    /// What is built into the kernel. A line of `modules.builtin` that names no module file
    /// is passed over: these names only ever tell a requested name that is in no module file
    /// apart from a misspelt one, never what is deleted.
    fn builtin(&self) -> &Builtin {
        self.builtin.get_or_init(|| {
            let mut builtin = Builtin::default();
            let (text, modinfo) = &self.builtin_sources;
            for line in text.as_deref().unwrap_or_default().lines() {
                if let Some(name) = name::module_name_of_path(line.trim()) {
                    builtin.names.insert(name.into_owned());
                }
            }
            for record in modinfo.as_deref().unwrap_or_default().split(|&b| b == 0) {
                let record = String::from_utf8_lossy(record);
                if let Some((module, alias)) = record
                    .split_once('=')
                    .and_then(|(key, value)| key.strip_suffix(".alias").map(|m| (m, value)))
                {
                    builtin.names.insert(normalize(module).into_owned());
                    builtin.aliases.add(alias, module);
                }
            }
            builtin
        })
    }

    /// The binary alias tables that a lookup found damaged, each with what stood in for it.
    pub fn damaged(&self) -> impl Iterator<Item = AliasDamage<'_>> {
        self.aliases.iter().filter_map(|table| match table {
            AliasTable::Binary(binary) => binary.damage(),
            AliasTable::Text(_) => None,
        })
    }

    /// Whether the index knows aliases at all; without `modules.alias` an alias cannot resolve.
    pub fn has_aliases(&self) -> bool {
        self.aliases.iter().any(|table| match table {
            AliasTable::Text(aliases) => !aliases.is_empty(),
            AliasTable::Binary(_) => true,
        })
    }

    /// Resolve a name or alias the way `modprobe NAME` does.
    pub fn lookup(&self, name: &str) -> Lookup {
        let name = normalize(name);
        let mut ids: Vec<ModId> = Vec::new();
        for target in self.config_aliases.lookup(&name) {
            if let Some(id) = self.by_name.get(&self.modules, target) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            if let Some(id) = self.by_name.get(&self.modules, &name) {
                return Lookup::Modules(vec![id]);
            }
            let mut found = Vec::new();
            for table in &self.aliases {
                table.lookup(&name, &mut found);
            }
            ids = found.into_iter().filter_map(|m| self.by_name.get(&self.modules, m)).collect();
        }
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            Lookup::Modules(ids)
        } else if self.builtin().names.contains(&*name) || !self.builtin().aliases.lookup(&name).is_empty() {
            Lookup::Builtin
        } else {
            Lookup::NotFound
        }
    }

    /// Modules whose name the glob matches, and whether it matched a built-in.
    pub fn glob(&self, glob: &Glob) -> (Vec<ModId>, bool) {
        let ids = (0..self.modules.len())
            .filter(|&id| glob.is_match(&self.modules[id].name))
            .collect();
        (ids, self.builtin().names.iter().any(|b| glob.is_match(b)))
    }

    /// Everything modprobe would load with the roots, and how each was reached: `None` for a
    /// root, else the module that pulled it in and along which edge. Breadth first, so the
    /// recorded chain back to a root is a shortest one.
    pub fn closure(&self, roots: &[ModId]) -> HashMap<ModId, Option<(ModId, Edge)>> {
        let mut seen: HashMap<ModId, Option<(ModId, Edge)>> = HashMap::default();
        let mut queue = VecDeque::new();
        for &root in roots {
            if seen.insert(root, None).is_none() {
                queue.push_back(root);
            }
        }
        while let Some(id) = queue.pop_front() {
            let module = &self.modules[id];
            let mut reach = |target: ModId, edge: Edge, queue: &mut VecDeque<ModId>| {
                if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(target) {
                    slot.insert(Some((id, edge)));
                    queue.push_back(target);
                }
            };
            for &dep in self.deps(id) {
                reach(dep, Edge::Dependency, &mut queue);
            }
            if let Some(soft) = self.softdeps.get(&*module.name) {
                for (targets, edge) in [(&soft.pre, Edge::SoftdepPre), (&soft.post, Edge::SoftdepPost)] {
                    for target in targets {
                        if let Lookup::Modules(ids) = self.lookup(target) {
                            ids.into_iter().for_each(|t| reach(t, edge, &mut queue));
                        }
                    }
                }
            }
            for target in self.weakdeps.get(&*module.name).into_iter().flatten() {
                if let Lookup::Modules(ids) = self.lookup(target) {
                    ids.into_iter().for_each(|t| reach(t, Edge::Weakdep, &mut queue));
                }
            }
        }
        seen
    }
}

/// Where `part`, a slice of `line`, starts in it, counted from 1.
fn column(line: &str, part: &str) -> usize {
    part.as_ptr() as usize - line.as_ptr() as usize + 1
}

/// The error for a `modules.dep` whose dependency `unknown` (line, column, path) is not one of
/// its modules: the first dependency of the file that is not even a path to a module file
/// inside the tree, which is where a file cut short ends; else `unknown` itself.
fn bad_dependency(path: &Path, lines: &[(usize, &str, &str, &str)], unknown: (usize, usize, &str)) -> Error {
    let deps = lines.iter().flat_map(|&(line_no, line, _, deps)| {
        dep_words(deps).map(move |dep| (line_no, column(line, dep), dep))
    });
    for (line_no, column, dep) in deps {
        if let Err(e) = check_path(path, line_no, dep) {
            return at_column(e, column);
        }
        if !name::is_module_file(dep) {
            return Error::syntax(path, line_no, column, format!("`{dep}` is not a module file; the file looks truncated, run depmod"));
        }
    }
    let (line_no, column, dep) = unknown;
    Error::syntax(path, line_no, column, format!("`{dep}` is named as a dependency but has no line of its own; run depmod"))
}

fn at_column(error: Error, column: usize) -> Error {
    match error {
        Error::Syntax {
            path, line, message, ..
        } => Error::Syntax {
            path,
            line,
            column,
            message,
        },
        other => other,
    }
}

/// A path named by an index must stay inside the tree: relative, no `..`, no empty parts.
fn check_path(file: &Path, line: usize, path: &str) -> Result<()> {
    if !is_inside(path.as_bytes()) {
        return Err(Error::syntax(
            file,
            line,
            1,
            format!("`{path}` is not a path inside the module tree; refusing to use this index"),
        ));
    }
    Ok(())
}

/// True for a relative path whose every part is a name: none is empty, `.` or `..`.
pub(crate) fn is_inside(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').all(|part| !matches!(part, b"" | b"." | b".."))
}

/// Whether a path of `text` could have an empty, `.` or `..` part inside it: only where a
/// `/` is doubled or followed by a `.`. Where neither is in the whole text, a path is inside
/// the tree when its ends are plain, which spares checking each of thousands byte by byte.
fn may_hide_bad_parts(text: &str) -> bool {
    memchr::memmem::find(text.as_bytes(), b"//").is_some() || memchr::memmem::find(text.as_bytes(), b"/.").is_some()
}

/// The ends of a path that [`may_hide_bad_parts`] does not look at.
fn has_plain_ends(path: &str) -> bool {
    matches!((path.as_bytes().first(), path.as_bytes().last()), (Some(first), Some(last)) if !matches!(first, b'.' | b'/') && *last != b'/')
}

fn parse_aliases(path: &Path, text: &str, strict: bool, into: &mut Aliases) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        match words.next() {
            None => continue,
            Some(w) if w.starts_with('#') => continue,
            Some("alias") => match (words.next(), words.next(), words.next()) {
                (Some(pattern), Some(module), None) => into.add(pattern, module),
                _ => {
                    return Err(Error::syntax(path, n + 1, 1, "expected `alias PATTERN MODULE`"));
                }
            },
            Some(other) if strict => {
                return Err(Error::syntax(
                    path,
                    n + 1,
                    1,
                    format!("unexpected `{other}`; expected `alias PATTERN MODULE`"),
                ));
            }
            Some(_) => continue,
        }
    }
    Ok(())
}

/// `softdep MODULE [pre: A B] [post: C]`. Names before any `pre:` or `post:` are taken as
/// `pre:`: modprobe ignores them, but keeping them is the safe side.
fn parse_softdeps(
    path: &Path,
    text: &str,
    strict: bool,
    into: &mut HashMap<String, SoftDeps>,
) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        match words.next() {
            None => continue,
            Some(w) if w.starts_with('#') => continue,
            Some("softdep") => {
                let Some(module) = words.next() else {
                    return Err(Error::syntax(path, n + 1, 1, "expected `softdep MODULE pre: … post: …`"));
                };
                let entry = into.entry(normalize(module).into_owned()).or_default();
                let mut post = false;
                for word in words {
                    match word {
                        "pre:" => post = false,
                        "post:" => post = true,
                        dep if post => entry.post.push(dep.to_string()),
                        dep => entry.pre.push(dep.to_string()),
                    }
                }
            }
            Some(other) if strict => {
                return Err(Error::syntax(
                    path,
                    n + 1,
                    1,
                    format!("unexpected `{other}`; expected `softdep MODULE pre: … post: …`"),
                ));
            }
            Some(_) => continue,
        }
    }
    Ok(())
}

fn parse_weakdeps(path: &Path, text: &str, into: &mut HashMap<String, Vec<String>>) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (None, ..) => continue,
            (Some(w), ..) if w.starts_with('#') => continue,
            (Some("weakdep"), Some(module), Some(dep), None) => {
                into.entry(normalize(module).into_owned()).or_default().push(dep.to_string())
            }
            _ => return Err(Error::syntax(path, n + 1, 1, "expected `weakdep MODULE DEPENDENCY`")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(dep: &str, alias: &str, softdep: &str) -> Sources {
        Sources {
            dep: Some(("modules.dep".into(), dep.into())),
            alias: Some(("modules.alias".into(), alias.into())),
            softdep: Some(("modules.softdep".into(), softdep.into())),
            builtin: Some(("modules.builtin".into(), "kernel/fs/ext2/ext2.ko\n".into())),
            ..Sources::default()
        }
    }

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/btrfs/btrfs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/drivers/net/e1000e/e1000e.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias fs-btrfs btrfs
alias pci:v00008086d000015B8sv*sd*bc*sc*i* e1000e
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(src(DEP, ALIAS, "softdep ext4 pre: crypto-crc32c\n")).unwrap()
    }

    fn names(index: &ModuleIndex, ids: impl IntoIterator<Item = ModId>) -> Vec<String> {
        let mut v: Vec<String> = ids.into_iter().map(|id| index.module(id).name.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn lookup_follows_modprobe() {
        let index = index();
        assert_eq!(index.lookup("ext4"), Lookup::Modules(vec![0]));
        assert_eq!(index.lookup("crc32c-intel"), Lookup::Modules(vec![4]));
        let Lookup::Modules(ids) = index.lookup("crypto-crc32c") else { panic!() };
        assert_eq!(names(&index, ids), ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(index.lookup("fs-btrfs"), Lookup::Modules(vec![6]));
        assert_eq!(index.lookup("pci:v00008086d000015B8sv00001028sd0000080Cbc02sc00i00"), Lookup::Modules(vec![8]));
        assert_eq!(index.lookup("ext2"), Lookup::Builtin);
        assert_eq!(index.lookup("nosuch"), Lookup::NotFound);
    }

    #[test]
    fn closure_takes_deps_and_softdeps_through_aliases() {
        let index = index();
        let closure = index.closure(&[0]);
        assert_eq!(
            names(&index, closure.keys().copied()),
            ["crc16", "crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"]
        );
        assert_eq!(closure[&0], None);
        assert_eq!(closure[&4], Some((0, Edge::SoftdepPre)));
        assert_eq!(closure[&1], Some((0, Edge::Dependency)));
    }

    #[test]
    fn weakdeps_and_post_softdeps_are_followed() {
        let mut s = src(DEP, ALIAS, "softdep btrfs post: crc16\n");
        s.weakdep = Some(("modules.weakdep".into(), "weakdep btrfs mbcache\n".into()));
        let index = ModuleIndex::parse(s).unwrap();
        let closure = index.closure(&[6]);
        assert_eq!(names(&index, closure.keys().copied()), ["btrfs", "crc16", "libcrc32c", "mbcache"]);
        assert_eq!(closure[&2], Some((6, Edge::Weakdep)));
        assert_eq!(closure[&1], Some((6, Edge::SoftdepPost)));
    }

    #[test]
    fn untagged_softdeps_are_kept() {
        let index = ModuleIndex::parse(src(DEP, ALIAS, "softdep btrfs crc16\n")).unwrap();
        assert!(index.closure(&[6]).contains_key(&1));
    }

    #[test]
    fn modprobe_d_aliases_and_softdeps_count() {
        let mut s = src(DEP, ALIAS, "");
        s.config = vec![(
            "x.conf".into(),
            "options e1000e foo=1\nalias mynet e1000e\nsoftdep e1000e pre: crc16\nblacklist x\n".into(),
        )];
        let index = ModuleIndex::parse(s).unwrap();
        assert_eq!(index.lookup("mynet"), Lookup::Modules(vec![8]));
        assert!(index.closure(&[8]).contains_key(&1));
    }

    fn dep_error(dep: &str) -> String {
        ModuleIndex::parse(src(dep, "", "")).unwrap_err().to_string()
    }

    #[test]
    fn broken_modules_dep_is_refused() {
        assert_eq!(
            dep_error("kernel/a.ko:\nkernel/b"),
            "modules.dep:2:1: expected `MODULE: DEPENDENCIES`; the file looks truncated, run depmod"
        );
        assert_eq!(
            dep_error("kernel/a.ko: kernel/li"),
            "modules.dep:1:14: `kernel/li` is not a module file; the file looks truncated, run depmod"
        );
        assert!(dep_error("../../etc/passwd.ko:\n").contains("not a path inside the module tree"));
        assert!(dep_error("/lib/modules/x/a.ko:\n").contains("not a path inside the module tree"));
        assert!(dep_error("kernel/a.ko: kernel/../../b.ko\n").starts_with("modules.dep:1:14:"));
        assert!(dep_error("kernel/a.ko: kernel/b.ko\n").contains("has no line of its own"));
        assert!(dep_error("kernel/a.ko:\nextra/a.ko:\n").contains("listed twice"));
    }

    #[test]
    fn broken_alias_and_softdep_files_are_refused() {
        let e = ModuleIndex::parse(src(DEP, "alias onlyone\n", "")).unwrap_err();
        assert_eq!(e.to_string(), "modules.alias:1:1: expected `alias PATTERN MODULE`");
        let e = ModuleIndex::parse(src(DEP, "", "softdep\n")).unwrap_err();
        assert!(e.to_string().starts_with("modules.softdep:1:1:"));
        let e = ModuleIndex::parse(src(DEP, "garbage here\n", "")).unwrap_err();
        assert!(e.to_string().contains("unexpected `garbage`"));
    }

    #[test]
    fn inside_paths_are_those_whose_parts_are_all_names() {
        // Every path of up to six bytes over the bytes that matter, against the definition.
        let by_definition = |p: &[u8]| !p.is_empty() && p.split(|&b| b == b'/').all(|part| !matches!(part, b"" | b"." | b".."));
        let (mut paths, mut longest) = (vec![Vec::new()], vec![Vec::new()]);
        for _ in 0..6 {
            longest = longest.iter().flat_map(|p: &Vec<u8>| [b'a', b'.', b'/'].map(|b| [p.as_slice(), &[b]].concat())).collect();
            paths.extend(longest.iter().cloned());
        }
        assert!(paths.len() > 1000);
        for p in &paths {
            assert_eq!(is_inside(p), by_definition(p), "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn pruned_modules_come_back_from_the_older_index() {
        let full = index();
        let pruned_dep = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\nkernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n";
        let mut live = ModuleIndex::parse(src(pruned_dep, "", "")).unwrap();
        assert_eq!(live.lookup("fs-btrfs"), Lookup::NotFound);
        live.merge_pruned(full);
        let Lookup::Modules(ids) = live.lookup("fs-btrfs") else { panic!() };
        let btrfs = live.module(ids[0]);
        assert!(!btrfs.present);
        assert_eq!(names(&live, live.deps(ids[0]).iter().copied()), ["libcrc32c"]);
        assert!(live.module(0).present);
    }

    #[test]
    fn depmod_output_splits_into_its_files() {
        let out = format!("{DEP}{ALIAS}# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\n# Aliases for symbols, used by symbol_request().\nalias symbol:foo ext4\n# Device nodes to trigger on-demand module loading.\nfuse fuse c10:229\n");
        let s = Sources::from_depmod_output(out.into(), Path::new("depmod -n"), Path::new("/nonexistent")).unwrap();
        let index = ModuleIndex::parse(s).unwrap();
        assert_eq!(index.modules().len(), 9);
        assert!(index.closure(&[0]).contains_key(&5));
    }

    /// kmod's header, and a root with children that would start where the file ends: every
    /// lookup meets a part that does not decode.
    const DAMAGED_BIN: [u8; 12] = [0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0x20, 0, 0, 12];

    /// The index of a tree that holds `files`, read as a run reads a tree's.
    fn tree_index(files: &[(&str, &[u8])]) -> (tempfile::TempDir, ModuleIndex) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("modules.dep"), "kernel/fs/btrfs/btrfs.ko:\n").unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let index = ModuleIndex::load(dir.path()).unwrap();
        (dir, index)
    }

    fn damage(index: &ModuleIndex) -> Vec<String> {
        index.damaged().map(|damage| format!("{damage:?}")).collect()
    }

    #[test]
    fn a_damaged_binary_alias_table_gives_way_to_its_text_twin() {
        let (dir, index) = tree_index(&[("modules.alias.bin", &DAMAGED_BIN), ("modules.alias", b"alias fs-btrfs btrfs\n")]);
        assert!(damage(&index).is_empty(), "nothing looked up yet");
        for _ in 0..2 {
            assert_eq!(index.lookup("fs-btrfs"), Lookup::Modules(vec![0]));
        }
        let bin = dir.path().join("modules.alias.bin");
        let text = dir.path().join("modules.alias");
        let damaged: Vec<_> = index.damaged().collect();
        assert!(matches!(&damaged[..], [AliasDamage::Replaced { bin: b, text: t }] if *b == bin && *t == text));
    }

    #[test]
    fn a_sound_binary_alias_table_never_reads_its_twin() {
        let bin = crate::read::binary_index::tests::build(&[("fs_btrfs", "btrfs")]);
        let (_dir, index) = tree_index(&[("modules.alias.bin", &bin), ("modules.alias", b"not an alias table\n")]);
        assert_eq!(index.lookup("fs-btrfs"), Lookup::Modules(vec![0]));
        assert_eq!(index.lookup("fs-ext4"), Lookup::NotFound);
        assert!(damage(&index).is_empty());
        let [AliasTable::Binary(binary)] = &index.aliases[..] else { panic!() };
        assert!(binary.parsed_twin.get().is_none());
    }

    #[test]
    fn a_damaged_binary_alias_table_with_no_usable_twin_is_damage() {
        let missing: &[(&str, &[u8])] = &[("modules.alias.bin", &DAMAGED_BIN)];
        let bad = &[("modules.alias.bin", &DAMAGED_BIN[..]), ("modules.alias", b"alias fs-btrfs\n")];
        for (files, why) in [(missing, "modules.alias: missing"), (bad, "modules.alias:1:1: expected `alias PATTERN MODULE`")] {
            let (dir, index) = tree_index(files);
            assert_eq!(index.lookup("fs-btrfs"), Lookup::NotFound);
            let damaged: Vec<_> = index.damaged().collect();
            let [AliasDamage::TwinUnusable { bin, why: error }] = &damaged[..] else { panic!("{damaged:?}") };
            assert_eq!(*bin, dir.path().join("modules.alias.bin"));
            assert_eq!(error.to_string(), format!("{}/{why}", dir.path().display()));
        }
        // limopack's copy of an index keeps no text to stand in.
        let copy = Sources {
            dep: Some(("copy.index".into(), "kernel/fs/btrfs/btrfs.ko:\n".into())),
            alias_bin: Some(BinaryIndex::parse(Path::new("copy.alias.bin"), DAMAGED_BIN.to_vec()).unwrap()),
            ..Sources::default()
        };
        let index = ModuleIndex::parse(copy).unwrap();
        assert_eq!(index.lookup("fs-btrfs"), Lookup::NotFound);
        assert_eq!(damage(&index), [r#"NoTwin { bin: "copy.alias.bin" }"#]);
    }
}
