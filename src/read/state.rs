//! What limopack remembers between runs, under `/var/lib/limopack` in the root.
//!
//! - `state.json`: the static entries seen so far (kept for good), and per kernel the
//!   refcounts of the last run and every file pruned, with its package.
//! - `journal.json`: the files a run is about to delete, written before the first delete, so
//!   that a run killed half way leaves a record the next run folds into the state.
//! - `index/<kver>`: the kernel's module index as it was before limopack first pruned it, so
//!   that a pruned module can still be named, kept and restored.
//!
//! Read here; written by [`crate::apply::store`], each file replaced atomically.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::read::binary_index::BinaryIndex;
use crate::error::{Error, Result};
use crate::fs::limits;
use crate::read::index::Sources;
use crate::kver::Kver;
use crate::name::Shared;
use crate::root::Root;
use crate::read::tree::Tree;

/// The state's format: 2 groups pruned files by package (see [`grouped`]); 1 is still read.
const FORMAT: u32 = 2;

/// A static entry, once seen in a declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRecord {
    /// The entry, normalised (a name, alias or glob).
    pub entry: String,
    /// The `kernels:` glob of the declaration it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// The declaration that first named it.
    pub declaration: PathBuf,
    /// Kernels it was forgotten for (`limopack-hook forget --kernel`): it keeps nothing there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten_for: Vec<Kver>,
}

impl StaticRecord {
    /// Whether the entry keeps modules of kernel `version`: its `kernels:` glob takes it, and
    /// it was not forgotten for it.
    pub fn applies_to(&self, version: &Kver) -> bool {
        let glob = self.kernels.as_ref().is_none_or(|k| crate::glob::Glob::new(k).is_ok_and(|g| g.is_match(version.as_str())));
        glob && !self.forgotten_for.contains(version)
    }
}

/// A file limopack deleted, and what owned it. A module file's module is not kept: it is
/// its path's (`name::module_name_of_path`), and the state of a pruned kernel has thousands.
/// Format 1 wrote it, and reading one ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedFile {
    #[serde(deserialize_with = "interned")]
    pub package: Shared,
    #[serde(deserialize_with = "interned")]
    pub version: Shared,
    pub size: u64,
    /// A copy is in limopack's archive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
}

/// One shared copy of each package name and version read: every file of a package repeats
/// both, thousands of times in a pruned kernel's state.
fn interned<'de, D: serde::Deserializer<'de>>(from: D) -> std::result::Result<Shared, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Shared;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Shared, E> {
            thread_local!(static SEEN: RefCell<FxHashSet<Shared>> = RefCell::default());
            Ok(SEEN.with_borrow_mut(|seen| match seen.get(text) {
                Some(shared) => shared.clone(),
                None => {
                    let shared = Shared::from(text);
                    seen.insert(shared.clone());
                    shared
                }
            }))
        }
    }
    from.deserialize_str(Visitor)
}

/// The written form of a set of pruned files: since format 2, grouped by package, version and
/// whether a copy is archived, with each file one line of path and size, its module being the
/// name its path gives. Format 1 wrote an object of five fields per file: a pruned kernel's
/// state was 800 KB, and parsing it was most of a dry run. Both forms are read, and journals
/// an older limopack left are read as well.
mod grouped {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{self, Deserializer, MapAccess, SeqAccess};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};

    use super::{interned, PrunedFile};
    use crate::name::Shared;

    /// A path read from a state or journal names a file to delete, restore or archive: it must
    /// be a plain path inside its folder, relative (a tree's file) or, for firmware, under
    /// `/lib/firmware`.
    fn checked<E: de::Error>(path: String) -> Result<String, E> {
        let relative = match path.strip_prefix(crate::root::FIRMWARE_DIR) {
            Some(rest) => rest.strip_prefix('/').unwrap_or("/"),
            None => &path,
        };
        match crate::read::index::is_inside(relative.as_bytes()) {
            true => Ok(path),
            false => Err(E::custom(format!("`{}` is not a plain path inside a module tree or /lib/firmware", crate::shown::escaped(&path)))),
        }
    }

    #[derive(Serialize)]
    struct GroupOut<'a> {
        package: &'a str,
        version: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        archived: bool,
        files: FilesOut<'a>,
    }

    /// Paths and sizes, written as one object.
    #[derive(Default)]
    struct FilesOut<'a>(Vec<(&'a str, u64)>);

    impl Serialize for FilesOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (path, size) in &self.0 {
                map.serialize_entry(path, size)?;
            }
            map.end()
        }
    }

    pub fn serialize<S: Serializer>(files: &BTreeMap<String, PrunedFile>, s: S) -> Result<S::Ok, S::Error> {
        let mut groups: BTreeMap<(&str, &str, bool), FilesOut> = BTreeMap::new();
        for (path, file) in files {
            groups.entry((&file.package, &file.version, file.archived)).or_default().0.push((path, file.size));
        }
        s.collect_seq(groups.into_iter().map(|((package, version, archived), files)| GroupOut { package, version, archived, files }))
    }

    #[derive(Deserialize)]
    struct GroupIn {
        #[serde(deserialize_with = "interned")]
        package: Shared,
        #[serde(deserialize_with = "interned")]
        version: Shared,
        #[serde(default)]
        archived: bool,
        files: FilesIn,
    }

    struct FilesIn(Vec<(String, u64)>);

    impl<'de> Deserialize<'de> for FilesIn {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> de::Visitor<'de> for Visitor {
                type Value = FilesIn;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object of paths and sizes")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilesIn, A::Error> {
                    let mut files = Vec::with_capacity(map.size_hint().unwrap_or(0));
                    while let Some(entry) = map.next_entry()? {
                        files.push(entry);
                    }
                    Ok(FilesIn(files))
                }
            }
            d.deserialize_map(Visitor)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, PrunedFile>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = BTreeMap<String, PrunedFile>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of pruned files by package, or (format 1) an object of them by path")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(group) = seq.next_element::<GroupIn>()? {
                    for (path, size) in group.files.0 {
                        let file = PrunedFile { package: group.package.clone(), version: group.version.clone(), size, archived: group.archived };
                        all.push((checked(path)?, file));
                    }
                }
                // Sorted once and built whole, not inserted one by one.
                Ok(all.into_iter().collect())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut all = BTreeMap::new();
                while let Some((path, file)) = map.next_entry()? {
                    all.insert(checked(path)?, file);
                }
                Ok(all)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelState {
    /// Module name to the declarations naming it, as of the last run.
    #[serde(default)]
    pub refcounts: BTreeMap<String, Vec<PathBuf>>,
    /// Pruned files by path relative to the tree.
    #[serde(default, with = "grouped")]
    pub pruned: BTreeMap<String, PrunedFile>,
    /// The tree changed and its initramfs is still to be refreshed: set before the change,
    /// cleared once the generator succeeded, so a run killed between the two is finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initramfs_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    #[serde(default)]
    pub statics: Vec<StaticRecord>,
    #[serde(default)]
    pub kernels: BTreeMap<Kver, KernelState>,
    /// Pruned firmware by in-root path (`/lib/firmware/rtl_nic/rtl8125a-3.fw`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "grouped")]
    pub firmware: BTreeMap<String, PrunedFile>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: FORMAT,
            statics: Vec::new(),
            kernels: BTreeMap::new(),
            firmware: BTreeMap::new(),
        }
    }
}

/// The files one run is about to delete in one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub kernel: Kver,
    #[serde(with = "grouped")]
    pub files: BTreeMap<String, PrunedFile>,
}

/// The firmware files one run is about to delete, by in-root path; `dir` is where the
/// firmware folder really is in the root (`/usr/lib/firmware`), every link resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareJournal {
    pub dir: String,
    #[serde(with = "grouped")]
    pub files: BTreeMap<String, PrunedFile>,
}

impl State {
    pub const FILE: &'static str = "state.json";

    /// The state under the root; none yet is an empty state.
    pub fn load(root: &Root) -> Result<State> {
        let Some(state) = read_json::<State>(root, State::FILE).map_err(|e| with_hint(e, "state"))? else {
            return Ok(State::default());
        };
        if !(1..=FORMAT).contains(&state.format) {
            return Err(Error::damaged(
                root.state_dir()?.join(State::FILE),
                format!("state format {} is not one this limopack understands (1 to {FORMAT})", state.format),
            ));
        }
        // Written back in the format of today.
        Ok(State { format: FORMAT, ..state })
    }

    /// Fold a journal left by a run that was killed into the state: every journalled file that
    /// is gone from disk was pruned.
    pub fn absorb(&mut self, journal: Journal, tree: Option<&Tree>) {
        let kernel = self.kernels.entry(journal.kernel).or_default();
        for (rel, file) in journal.files {
            let gone = tree.is_none_or(|t| std::fs::symlink_metadata(t.path.join(&rel)).is_err());
            if gone {
                kernel.pruned.insert(rel, file);
            }
        }
    }
}

impl State {
    /// Fold the firmware journal a killed run left into the state: every journalled file
    /// that is gone from disk was pruned.
    pub fn absorb_firmware(&mut self, root: &Root, journal: FirmwareJournal) {
        for (path, file) in journal.files {
            let Some(rest) = path.strip_prefix(crate::root::FIRMWARE_DIR) else { continue };
            let gone = root.resolve(format!("{}{rest}", journal.dir)).is_ok_and(|on_disk| std::fs::symlink_metadata(on_disk).is_err());
            if gone {
                self.firmware.insert(path, file);
            }
        }
    }
}

impl FirmwareJournal {
    pub(crate) const FILE: &'static str = "firmware-journal.json";

    pub fn load(root: &Root) -> Result<Option<FirmwareJournal>> {
        read_json(root, FirmwareJournal::FILE).map_err(|e| with_hint(e, "journal"))
    }
}

impl Journal {
    pub(crate) const FILE: &'static str = "journal.json";

    pub fn load(root: &Root) -> Result<Option<Journal>> {
        read_json(root, Journal::FILE).map_err(|e| with_hint(e, "journal"))
    }
}

/// A state or journal that does not read, with what to do about it: limopack never writes
/// one so, and a run that cannot know what it pruned must not guess.
fn with_hint(error: Error, what: &str) -> Error {
    let hint = match what {
        "state" => "limopack cannot know what it pruned; restore the file from a backup, or move it away to start anew (`dpkg --verify` then lists the files pruned before, which `apt-get install --reinstall` of their packages brings back)",
        _ => "this is the record of a run that was killed; move it away, run `limopack-hook`, and check `dpkg --verify` for module files that are missing",
    };
    match error {
        Error::Syntax { path, line, column, message } => Error::Syntax { path, line, column, message: format!("{message}; {hint}") },
        other => other,
    }
}

/// The saved index of a kernel, in the state folder.
pub(crate) fn saved_index_name(version: &Kver) -> String {
    format!("index/{version}.index")
}

/// The saved copy of a kernel's `modules.alias.bin`, beside its saved index.
pub(crate) fn saved_aliases_name(version: &Kver) -> String {
    format!("index/{version}.alias.bin")
}

/// The saved index of a kernel, if limopack saved one. An index saved by an older limopack
/// holds the text of the aliases, and is read as it is.
pub fn saved_index(root: &Root, tree: &Tree) -> Result<Option<Sources>> {
    let Some(state) = root.own(crate::root::STATE_DIR)? else { return Ok(None) };
    let name = saved_index_name(&tree.version);
    let Some(bytes) = state.bytes_if_there(&name, limits::INDEX)? else { return Ok(None) };
    let path = state.path().join(&name);
    let mut sources = Sources::from_depmod_output(bytes, &path, &tree.path)?;
    if let Some(dep) = &mut sources.dep {
        dep.0 = path;
    }
    if sources.alias.is_none() {
        let name = saved_aliases_name(&tree.version);
        let bytes = state.bytes_if_there(&name, limits::INDEX)?;
        sources.alias_bin = bytes.map(|bytes| BinaryIndex::parse(&state.path().join(&name), bytes)).transpose()?;
    }
    Ok(Some(sources))
}

/// Read the JSON file `name` of limopack's state folder; mapped, as a pruned kernel's state
/// is a few hundred KB. None when there is no such file.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(root: &Root, name: &str) -> Result<Option<T>> {
    let Some(state) = root.own(crate::root::STATE_DIR)? else { return Ok(None) };
    let Some(bytes) = state.bytes_if_there(name, limits::STATE)? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        // serde_json ends its message with the place, which the error leads with.
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(&*message, |(m, _)| m).to_string();
        Error::syntax(state.path().join(name), e.line(), e.column(), message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kver::kv;

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(State::load(&root).unwrap(), State::default());
        let mut state = State::default();
        state.statics.push(StaticRecord { entry: "ext4".into(), kernels: None, declaration: "/etc/limopack/modules.d/b.yaml".into(), forgotten_for: Vec::new() });
        state.kernels.entry(kv("6.1")).or_default().pruned.insert(
            "kernel/a.ko".into(),
            PrunedFile { package: "linux-image-6.1".into(), version: "1".into(), size: 10, archived: true },
        );
        state.save(&root).unwrap();
        assert_eq!(State::load(&root).unwrap(), state);
        std::fs::write(root.state_dir().unwrap().join(State::FILE), "{\"format\": 1,\n  oops").unwrap();
        let e = State::load(&root).unwrap_err().to_string();
        assert!(e.contains("state.json:2:3:"), "{e}");
    }

    #[test]
    fn pruned_files_are_written_by_package_and_a_format_1_state_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let file = |package: &str, size, archived| PrunedFile {
            package: package.into(),
            version: "1".into(),
            size,
            archived,
        };
        let mut state = State::default();
        let kernel = state.kernels.entry(kv("6.1")).or_default();
        for (rel, f) in [
            ("kernel/fs/a-b.ko", file("linux-image-6.1", 10, false)),
            ("kernel/fs/c.ko", file("linux-image-6.1", 20, true)),
            ("extra/d.ko", file("linux-modules-extra-6.1", 30, false)),
        ] {
            kernel.pruned.insert(rel.into(), f);
        }
        state.firmware.insert("/lib/firmware/x.fw".into(), file("firmware-misc", 40, true));
        state.save(&root).unwrap();
        let text = std::fs::read_to_string(root.state_dir().unwrap().join(State::FILE)).unwrap();
        assert_eq!(State::load(&root).unwrap(), state, "{text}");
        // One group per package, version and archiving; one line per file, module left out.
        assert!(text.contains("\"format\": 2"), "{text}");
        assert!(text.contains("\n            \"kernel/fs/a-b.ko\": 10\n"), "{text}");
        assert_eq!(text.matches("\"package\": \"linux-image-6.1\"").count(), 2, "{text}");
        assert!(!text.contains("\"module\""), "{text}");

        // The same state as format 1 wrote it, modules and all: written back as format 2.
        let v1 = r#"{"format": 1, "statics": [], "kernels": {"6.1": {"refcounts": {}, "pruned": {
            "kernel/fs/a-b.ko": {"module": "a_b", "package": "linux-image-6.1", "version": "1", "size": 10},
            "kernel/fs/c.ko": {"module": "c", "package": "linux-image-6.1", "version": "1", "size": 20, "archived": true},
            "extra/d.ko": {"module": "d", "package": "linux-modules-extra-6.1", "version": "1", "size": 30}}}},
            "firmware": {"/lib/firmware/x.fw": {"package": "firmware-misc", "version": "1", "size": 40, "archived": true}}}"#;
        std::fs::write(root.state_dir().unwrap().join(State::FILE), v1).unwrap();
        let read = State::load(&root).unwrap();
        assert_eq!(read, state);
        read.save(&root).unwrap();
        assert_eq!(std::fs::read_to_string(root.state_dir().unwrap().join(State::FILE)).unwrap(), text);
    }

    #[test]
    fn journal_of_a_killed_run_is_absorbed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree { version: kv("6.1"), path: dir.path().into(), shown: "/lib/modules/6.1".into() };
        std::fs::write(dir.path().join("still-here.ko"), "").unwrap();
        let file = PrunedFile { package: "p".into(), version: "1".into(), size: 1, archived: false };
        let journal = Journal {
            kernel: kv("6.1"),
            files: [("gone.ko".to_string(), file.clone()), ("still-here.ko".to_string(), file)].into(),
        };
        let mut state = State::default();
        state.absorb(journal, Some(&tree));
        let pruned: Vec<_> = state.kernels[&kv("6.1")].pruned.keys().collect();
        assert_eq!(pruned, ["gone.ko"]);
    }

    #[test]
    fn firmware_journal_of_a_killed_run_records_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib/firmware/rtl_nic")).unwrap();
        std::fs::write(dir.path().join("usr/lib/firmware/rtl_nic/still-here.fw"), "").unwrap();
        let file = PrunedFile { package: "firmware-realtek".into(), version: "1".into(), size: 1, archived: false };
        let files = ["gone.fw", "still-here.fw"].map(|f| (format!("/lib/firmware/rtl_nic/{f}"), file.clone()));
        let journal = FirmwareJournal { dir: "/usr/lib/firmware".into(), files: files.into() };
        let at = dir.path().join("var/lib/limopack").join(FirmwareJournal::FILE);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, serde_json::to_vec(&journal).unwrap()).unwrap();
        let mut state = State::default();
        state.absorb_firmware(&root, FirmwareJournal::load(&root).unwrap().unwrap());
        assert_eq!(state.firmware.keys().collect::<Vec<_>>(), ["/lib/firmware/rtl_nic/gone.fw"]);
        let text = serde_json::to_string(&state).unwrap();
        assert!(!text.contains("\"module\""), "firmware records have no module: {text}");
    }
}
