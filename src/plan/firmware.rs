//! The firmware part of the plan: which files under `/lib/firmware` the kept modules of every
//! kernel need (their modinfo `firmware=` names, as the kernel's loader resolves them), which
//! the declarations' `firmware:` globs name, and, with `firmware: prune`, which files of the
//! firmware packages nothing needs. Pure: [`crate::read::firmware::look`] reads the disk, [`plan`]
//! decides.
//!
//! Firmware is shared by every kernel, so what is needed is the union over all of them, and
//! pruning is all or nothing: when any kernel is left whole, a run covers only some kernels,
//! or any kept module's modinfo cannot be read, no firmware is pruned that run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::read::config::{Config, FirmwareMode};
use crate::read::deb::AptCache;
use crate::read::config::MICROCODE_PACKAGES;
use crate::read::firmware::{dpkg_paths, is_microcode, DeclaredGlob, Seen, Wanted};
use crate::name::Shared;
use crate::read::packages::Packages;
use crate::plan::modules::{Action, KernelPlan, RestoreFile, Source};
use crate::read::state::State;

/// Why a firmware file stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Why {
    /// Kept module `module` of `kernel` asks for `name`.
    Module { kernel: String, module: Shared, name: String },
    /// A declaration's `firmware:` glob names it.
    Declared { declaration: PathBuf, glob: String },
    /// CPU microcode: never pruned.
    Microcode,
    /// No firmware package owns it alone: no package, or one limopack does not prune.
    NotPrunable {
        #[serde(skip_serializing_if = "Option::is_none")]
        package: Option<Shared>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneFirmware {
    /// In-root path: `/lib/firmware/rtl_nic/rtl8125a-3.fw`.
    pub path: String,
    pub package: Shared,
    pub version: Shared,
    pub size: u64,
}

/// What a run does with firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareAction {
    /// `firmware: keep` or `prune: false`: every file stays.
    #[default]
    Keep,
    /// Prune the listed files.
    Prune,
    /// `firmware: prune`, but this run cannot be sure what is needed: every file stays.
    Unsure,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FirmwarePlan {
    pub action: FirmwareAction,
    /// Per kernel, per kept module: the firmware it asks for.
    pub modules: BTreeMap<String, BTreeMap<Shared, Vec<Wanted>>>,
    pub declared: Vec<DeclaredGlob>,
    /// Files that stay, by in-root path, each with the first reason found. Without
    /// `firmware: prune`, only those something needs.
    pub kept: BTreeMap<String, Why>,
    /// Bytes of the kept files, when the firmware folders were read (`firmware: prune`).
    pub kept_bytes: u64,
    pub prune: Vec<PruneFirmware>,
    /// Needed files limopack pruned earlier; `path` is in-root.
    pub restore: Vec<RestoreFile>,
    pub warnings: Vec<String>,
}

impl FirmwarePlan {
    pub fn prune_bytes(&self) -> u64 {
        self.prune.iter().map(|f| f.size).sum()
    }
}

/// Everything besides [`Seen`] a firmware plan is made from.
pub struct Context<'a> {
    pub config: &'a Config,
    pub packages: &'a Packages,
    pub state: &'a State,
    pub apt_cache: &'a AptCache,
    pub can_download: bool,
}

/// Work out the firmware plan from the kernels' plans and what was seen. Pure.
pub fn plan(kernels: &[KernelPlan], seen: &Seen, cx: &Context) -> FirmwarePlan {
    let mut fp = FirmwarePlan { declared: seen.declared.clone(), warnings: seen.unreadable.clone(), ..FirmwarePlan::default() };
    // Said once each, not once a module: a run that restores a hundred modules would
    // otherwise say a hundred times that their firmware is read the next time.
    let mut unsure: Vec<String> = Vec::new();
    match seen.missing {
        0 => {}
        1 => unsure.push("a kept module is missing (to be restored), and its firmware is read once it is back".into()),
        n => unsure.push(format!("{n} kept modules are missing (to be restored), and their firmware is read once they are back")),
    }
    match seen.unreadable.len() {
        0 => {}
        1 => unsure.push("a kept module cannot be read (see the warning), so the firmware it needs is unknown".into()),
        n => unsure.push(format!("{n} kept modules cannot be read (see the warnings), so the firmware they need is unknown")),
    }
    let mut wanted_back: BTreeMap<&str, String> = BTreeMap::new();
    for (kernel, modules) in &seen.modules {
        for (module, firmware) in modules {
            let firmware = match firmware {
                Ok(firmware) => firmware,
                Err(why) => {
                    unsure.push(format!("{kernel}: the firmware of kept module {module} cannot be looked up: {why}"));
                    continue;
                }
            };
            for w in firmware {
                let why = || Why::Module { kernel: kernel.clone(), module: module.clone(), name: w.name.clone() };
                for file in &w.files {
                    fp.kept.entry(file.clone()).or_insert_with(why);
                }
                for file in &w.pruned {
                    wanted_back.entry(file).or_insert_with(|| module.to_string());
                }
            }
            if !firmware.is_empty() {
                fp.modules.entry(kernel.clone()).or_default().insert(module.clone(), firmware.clone());
            }
        }
    }
    for d in &seen.declared {
        let why = || Why::Declared { declaration: d.declaration.clone(), glob: d.glob.clone() };
        for file in &d.wanted.files {
            fp.kept.entry(file.clone()).or_insert_with(why);
        }
        for file in &d.wanted.pruned {
            wanted_back.entry(file).or_insert_with(|| d.declaration.display().to_string());
        }
    }
    fp.restore = restore_list(&wanted_back, cx);

    if cx.config.firmware != FirmwareMode::Prune || !cx.config.prune {
        return fp;
    }
    unsure.extend(seen.error.clone());
    if seen.narrowed {
        unsure.push("the run covers some kernels only, and firmware is shared by all".into());
    }
    if kernels.is_empty() {
        unsure.push("there is no module tree".into());
    }
    for k in kernels.iter().filter(|k| k.action == Action::Blocked).take(1) {
        unsure.push(format!("a declaration cannot be read, so what {} needs is unknown", k.version));
    }
    for k in kernels.iter().filter(|k| matches!(k.action, Action::NoBaseline | Action::PruningOff)) {
        unsure.push(format!("{} is left whole, so every module of it may need its firmware", k.version));
    }

    let mut candidates = Vec::new();
    let mut kept_bytes = 0;
    for (path, size, link) in &seen.on_disk {
        // Links take no space; the files they lead to are judged on their own.
        if *link {
            continue;
        }
        if fp.kept.contains_key(path) {
            kept_bytes += size;
            continue;
        }
        match prunable_owner(path, cx) {
            Ok((package, version)) => candidates.push(PruneFirmware { path: path.clone(), package, version, size: *size }),
            Err(why) => {
                kept_bytes += size;
                fp.kept.insert(path.clone(), why);
            }
        }
    }
    fp.kept_bytes = kept_bytes;
    if unsure.is_empty() {
        fp.action = FirmwareAction::Prune;
        fp.prune = candidates;
    } else {
        fp.action = FirmwareAction::Unsure;
        for why in unsure {
            fp.warnings.push(format!("firmware: prune is set, but no firmware is pruned this run: {why}"));
        }
    }
    fp
}

/// The firmware package that owns `path` alone, with its version; or why the file stays.
fn prunable_owner(path: &str, cx: &Context) -> Result<(Shared, Shared), Why> {
    if is_microcode(path) {
        return Err(Why::Microcode);
    }
    let mut first = None;
    for listed in dpkg_paths(path) {
        for p in cx.packages.owners(&listed) {
            let name = p.name.split(':').next().unwrap_or(&p.name);
            if MICROCODE_PACKAGES.contains(&name) {
                return Err(Why::Microcode);
            }
            if !p.is_present() || !cx.config.is_firmware_package(&p.name) {
                return Err(Why::NotPrunable { package: Some(p.name.clone()) });
            }
            first.get_or_insert((p.name.clone(), p.version.clone()));
        }
    }
    first.ok_or(Why::NotPrunable { package: None })
}

/// The needed files limopack pruned, each with the sources that can bring it back; `module`
/// names what needs it. A file whose package is no longer installed is not brought back.
fn restore_list(wanted: &BTreeMap<&str, String>, cx: &Context) -> Vec<RestoreFile> {
    let mut restore = Vec::new();
    for (&path, needed_by) in wanted {
        let Some(record) = cx.state.firmware.get(path) else { continue };
        let installed = dpkg_paths(path)
            .iter()
            .find_map(|p| cx.packages.owners(p).find(|o| o.is_present() && *o.name == *record.package).cloned());
        let Some(owner) = installed else { continue };
        let mut sources = Vec::new();
        if record.archived {
            sources.push(Source::Archive);
        }
        if let Some(deb) = cx.apt_cache.find(&owner.name, &owner.version) {
            sources.push(Source::AptCache { deb: deb.to_path_buf() });
        }
        if cx.can_download && !owner.version.is_empty() {
            sources.push(Source::Download);
        }
        restore.push(RestoreFile {
            path: path.into(),
            module: needed_by.as_str().into(),
            package: owner.name,
            version: owner.version,
            sources,
        });
    }
    restore
}

/// The names of the firmware files a plan keeps for `module` of `kernel`, each with its files.
pub fn of_module<'a>(fp: &'a FirmwarePlan, kernel: &str, module: &str) -> &'a [Wanted] {
    fp.modules.get(kernel).and_then(|m| m.get(module)).map_or(&[], Vec::as_slice)
}

/// Every needed path the plan names, kept on disk or to restore.
pub fn needed(fp: &FirmwarePlan) -> BTreeSet<&str> {
    fp.kept
        .iter()
        .filter(|(_, why)| matches!(why, Why::Module { .. } | Why::Declared { .. }))
        .map(|(p, _)| p.as_str())
        .chain(fp.restore.iter().map(|r| &*r.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::packages::Database;
    use crate::read::state::PrunedFile;

    const KVER: &str = "6.1.0-1-test";
    const FW: &str = "/lib/firmware/rtl_nic";

    fn packages() -> Packages {
        let status = "Package: firmware-realtek\nVersion: 2\nStatus: install ok installed\n\n\
                      Package: intel-microcode\nVersion: 3\nStatus: install ok installed\n\n\
                      Package: my-tool\nVersion: 1\nStatus: install ok installed\n\n";
        let lists = vec![
            ("firmware-realtek".to_string(), format!("{FW}/a.fw\n{FW}/b.fw\n{FW}/c.fw\n{FW}/shared.fw\n{FW}/link.fw\n")),
            ("intel-microcode".to_string(), "/lib/firmware/intel-ucode/06-8e-09\n/lib/firmware/intel-ucode.bin\n".to_string()),
            ("my-tool".to_string(), "/usr/lib/firmware/rtl_nic/shared.fw\n".to_string()),
        ];
        let db = Database { status: ("status".into(), status.into()), updates: Vec::new(), lists };
        Packages::from_database(&db, &["/lib/firmware/".into(), "/usr/lib/firmware/".into()]).unwrap()
    }

    fn kernel(action: Action) -> KernelPlan {
        KernelPlan {
            version: KVER.into(),
            path: "/lib/modules/x".into(),
            running: false,
            action,
            baseline: true,
            modules_total: 2,
            declarations: 1,
            kept: BTreeMap::new(),
            builtin: Vec::new(),
            unresolved_statics: 0,
            keeps_all: None,
            refcounts: BTreeMap::new(),
            prune: Vec::new(),
            restore: Vec::new(),
            not_owned: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn wanted(name: &str, files: &[&str]) -> Wanted {
        Wanted { name: name.into(), files: files.iter().map(|f| f.to_string()).collect(), pruned: Vec::new() }
    }

    /// r8169 of the one kernel needs a.fw (through link.fw) and knows of a name not there.
    fn seen() -> Seen {
        let r8169 = vec![wanted("rtl_nic/link.fw", &[&format!("{FW}/link.fw"), &format!("{FW}/a.fw")]), wanted("rtl_nic/none.fw", &[])];
        let mut modules = BTreeMap::new();
        modules.insert(Shared::from("r8169"), Ok(r8169));
        modules.insert(Shared::from("ext4"), Ok(Vec::new()));
        let mut on_disk: Vec<(String, u64, bool)> =
            ["a.fw", "b.fw", "c.fw", "shared.fw", "mine.fw"].iter().map(|f| (format!("{FW}/{f}"), 100, false)).collect();
        on_disk.push((format!("{FW}/link.fw"), 5, true));
        on_disk.push(("/lib/firmware/intel-ucode/06-8e-09".into(), 1000, false));
        on_disk.push(("/lib/firmware/intel-ucode.bin".into(), 1000, false));
        Seen { modules: [(KVER.to_string(), modules)].into(), on_disk, ..Seen::default() }
    }

    fn run(config: &Config, state: &State, kernels: &[KernelPlan], seen: &Seen) -> FirmwarePlan {
        let packages = packages();
        let apt_cache = AptCache::default();
        plan(kernels, seen, &Context { config, packages: &packages, state, apt_cache: &apt_cache, can_download: false })
    }

    fn pruning() -> Config {
        let mut config = Config::default();
        config.prune = true;
        config.firmware = FirmwareMode::Prune;
        config
    }

    fn pruned(fp: &FirmwarePlan) -> Vec<&str> {
        fp.prune.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn only_unneeded_files_of_firmware_packages_alone_are_pruned() {
        let fp = run(&pruning(), &State::default(), &[kernel(Action::Prune)], &seen());
        assert_eq!(fp.action, FirmwareAction::Prune);
        assert_eq!(pruned(&fp), [format!("{FW}/b.fw"), format!("{FW}/c.fw")]);
        assert_eq!(fp.prune_bytes(), 200);
        let module = |name: &str| Why::Module { kernel: KVER.into(), module: "r8169".into(), name: name.into() };
        assert_eq!(fp.kept[&format!("{FW}/a.fw")], module("rtl_nic/link.fw"));
        assert_eq!(fp.kept[&format!("{FW}/link.fw")], module("rtl_nic/link.fw"));
        assert_eq!(fp.kept[&format!("{FW}/shared.fw")], Why::NotPrunable { package: Some("my-tool".into()) });
        assert_eq!(fp.kept[&format!("{FW}/mine.fw")], Why::NotPrunable { package: None });
        assert_eq!(fp.kept["/lib/firmware/intel-ucode/06-8e-09"], Why::Microcode);
        assert_eq!(fp.kept["/lib/firmware/intel-ucode.bin"], Why::Microcode, "owned by a microcode package");
        assert_eq!(fp.kept_bytes, 100 * 3 + 2000);
        assert_eq!(of_module(&fp, KVER, "r8169").len(), 2);
        assert!(of_module(&fp, KVER, "ext4").is_empty());
        assert!(fp.warnings.is_empty());
    }

    #[test]
    fn declared_globs_keep_what_they_match() {
        let mut seen = seen();
        let wanted = wanted("rtl_nic/c*", &[&format!("{FW}/c.fw")]);
        seen.declared.push(DeclaredGlob { declaration: "/etc/limopack/modules.d/c.yaml".into(), glob: "rtl_nic/c*".into(), kernel: KVER.into(), wanted });
        let fp = run(&pruning(), &State::default(), &[kernel(Action::UpToDate)], &seen);
        assert_eq!(pruned(&fp), [format!("{FW}/b.fw")]);
        assert_eq!(fp.kept[&format!("{FW}/c.fw")], Why::Declared { declaration: "/etc/limopack/modules.d/c.yaml".into(), glob: "rtl_nic/c*".into() });
    }

    #[test]
    fn keep_mode_or_pruning_off_prunes_nothing_and_still_shows_the_need() {
        let mut off = pruning();
        off.prune = false;
        for config in [Config::default(), off] {
            let fp = run(&config, &State::default(), &[kernel(Action::Prune)], &seen());
            assert_eq!(fp.action, FirmwareAction::Keep);
            assert!(fp.prune.is_empty());
            assert_eq!(fp.kept.len(), 2);
        }
    }

    #[test]
    fn an_unsure_run_prunes_no_firmware_and_says_why() {
        let mut unreadable = seen();
        unreadable.unreadable.push(format!("{KVER}: kept module btusb cannot be read, so its firmware is unknown: truncated"));
        let mut unknown = seen();
        unknown.modules.get_mut(KVER).unwrap().insert("btusb".into(), Err("a bad name".into()));
        let missing = Seen { missing: 3, ..seen() };
        let narrowed = Seen { narrowed: true, ..seen() };
        let cases = [
            (vec![kernel(Action::Prune), kernel(Action::NoBaseline)], seen(), "6.1.0-1-test is left whole"),
            (vec![kernel(Action::Prune)], unreadable, "a kept module cannot be read (see the warning)"),
            (vec![kernel(Action::Prune)], unknown, "the firmware of kept module btusb cannot be looked up: a bad name"),
            (vec![kernel(Action::Prune)], missing, "3 kept modules are missing (to be restored), and their firmware is read once they are back"),
            (vec![kernel(Action::Prune)], narrowed, "covers some kernels only"),
            (Vec::new(), Seen::default(), "there is no module tree"),
        ];
        for (kernels, seen, why) in cases {
            let fp = run(&pruning(), &State::default(), &kernels, &seen);
            assert_eq!(fp.action, FirmwareAction::Unsure, "{why}");
            assert!(fp.prune.is_empty());
            assert!(fp.warnings.iter().any(|w| w.starts_with("firmware: prune is set, but no firmware is pruned this run") && w.contains(why)), "{:?}", fp.warnings);
        }
    }

    #[test]
    fn pruned_firmware_that_is_needed_again_is_restored_while_its_package_is_installed() {
        let mut seen = seen();
        let back = format!("{FW}/b.fw");
        let gone = format!("{FW}/gone.fw");
        let w = Wanted { name: "rtl_nic/b.fw".into(), files: Vec::new(), pruned: vec![back.clone(), gone.clone()] };
        seen.modules.get_mut(KVER).unwrap().insert("r8168".into(), Ok(vec![w]));
        seen.on_disk.retain(|(p, _, _)| *p != back);
        let mut state = State::default();
        let record = |package: &str| PrunedFile { package: package.into(), version: "2".into(), size: 100, archived: true };
        state.firmware.insert(back.clone(), record("firmware-realtek"));
        state.firmware.insert(gone.clone(), record("firmware-removed"));
        let fp = run(&Config::default(), &state, &[kernel(Action::Prune)], &seen);
        assert_eq!(fp.restore.len(), 1);
        let r = &fp.restore[0];
        assert_eq!((&*r.path, &*r.module, &*r.package, &*r.version), (back.as_str(), "r8168", "firmware-realtek", "2"));
        assert_eq!(r.sources, [Source::Archive]);
        assert!(needed(&fp).contains(back.as_str()));
    }
}
