//! The plan: a pure function from what is installed to what is kept, what is pruned, and why.
//!
//! Nothing here touches the disk or runs a program. [`plan`] takes the declarations, the
//! module index and files of each kernel, dpkg's answers and limopack's state, and returns a
//! [`Plan`]. A dry run prints it, `explain` reads it, and [`crate::apply`] carries it out, so
//! what a dry run shows is what a real run does.

pub mod firmware;
pub mod modules;


use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;

use crate::read::declaration::Origin;
use crate::kver::Kver;
use crate::plan::firmware::FirmwarePlan;
use crate::read::state::StaticRecord;

pub use modules::{Action, DeclarationStatus, Inputs, KernelInput, KernelPlan, Kept, PruneFile, Reason, RestoreFile, Source};
use modules::plan_kernel;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub prune_enabled: bool,
    pub declarations: Vec<DeclarationStatus>,
    /// Static entries seen for the first time: the state records them.
    pub new_statics: Vec<StaticRecord>,
    pub kernels: Vec<KernelPlan>,
    /// Kernels whose trees are gone: their state, saved index and archive are dropped.
    pub forget_kernels: Vec<Kver>,
    pub warnings: Vec<String>,
    /// Declarations that could not be read, each as its error says: nothing is pruned while
    /// there is one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// What the kept modules need under `/lib/firmware`, and what goes; made after the
    /// kernels' plans ([`crate::plan::firmware`]).
    pub firmware: FirmwarePlan,
}

/// Work out the plan. Pure: same inputs, same plan.
pub fn plan(inputs: &Inputs) -> Plan {
    let mut warnings = Vec::new();
    let (declarations, active) = declaration_statuses(inputs, &mut warnings);

    let mut statics: Vec<(StaticRecord, usize)> = inputs
        .state
        .statics
        .iter()
        .map(|r| (r.clone(), 0))
        .collect();
    // Each entry once, whatever number of declarations repeat it: looked up, not searched.
    let mut known: HashMap<(String, Option<String>), usize> =
        statics.iter().enumerate().map(|(i, (r, _))| ((r.entry.clone(), r.kernels.clone()), i)).collect();
    let mut new_statics = Vec::new();
    for &d in &active {
        let decl = &inputs.declarations.active[d];
        for entry in &decl.statics {
            let record = StaticRecord {
                entry: entry.text.clone(),
                kernels: decl.kernels.as_ref().map(|k| k.text.clone()),
                declaration: decl.path.clone(),
                forgotten_for: Vec::new(),
            };
            match known.get(&(record.entry.clone(), record.kernels.clone())) {
                None => {
                    known.insert((record.entry.clone(), record.kernels.clone()), statics.len());
                    new_statics.push(record.clone());
                    statics.push((record, entry.line));
                }
                // Forgotten for some kernel and declared again: that undoes the forget.
                Some(&at) if !statics[at].0.forgotten_for.is_empty() => {
                    statics[at] = (record.clone(), entry.line);
                    new_statics.push(record);
                }
                Some(_) => {}
            }
        }
    }

    let kernels = inputs
        .kernels
        .iter()
        .map(|k| plan_kernel(inputs, k, &active, &declarations, &statics))
        .collect();
    Plan {
        prune_enabled: inputs.config.prune,
        declarations,
        new_statics,
        kernels,
        forget_kernels: inputs.gone.clone(),
        warnings,
        errors: inputs.declarations.broken.iter().map(ToString::to_string).collect(),
        firmware: FirmwarePlan::default(),
    }
}

/// Which declarations count: the admin's always; a vendor file while its owning package has
/// its files on disk, or when no package owns it (with a warning: keeping more is safe).
fn declaration_statuses(inputs: &Inputs, warnings: &mut Vec<String>) -> (Vec<DeclarationStatus>, Vec<usize>) {
    let mut statuses = Vec::new();
    let mut active = Vec::new();
    for (i, decl) in inputs.declarations.active.iter().enumerate() {
        let path = decl.path.display().to_string();
        let owners: Vec<_> = inputs.packages.owners(&path).collect();
        let (is_active, package, note) = match decl.origin {
            Origin::Admin => (true, None, None),
            Origin::Vendor if owners.is_empty() => {
                warnings.push(format!("{path}: no package owns this declaration; it counts anyway"));
                (true, None, Some("no package owns it".to_string()))
            }
            Origin::Vendor => match owners.iter().find(|p| p.is_present()) {
                Some(p) => (true, Some(p.name.clone()), None),
                None => (
                    false,
                    Some(owners[0].name.clone()),
                    Some(format!("its package is {}", owners[0].status)),
                ),
            },
        };
        if is_active {
            active.push(i);
        }
        statuses.push(DeclarationStatus {
            path: decl.path.clone(),
            origin: decl.origin,
            package,
            active: is_active,
            note,
        });
    }
    for masked in &inputs.declarations.masked {
        statuses.push(DeclarationStatus {
            path: masked.path.clone(),
            origin: Origin::Vendor,
            package: None,
            active: false,
            note: Some("masked by the admin's file of the same name".into()),
        });
    }
    (statuses, active)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::config::Config;
    use crate::read::deb::AptCache;
    use crate::read::declaration::Declarations;
    use crate::read::index::{Edge, ModuleIndex};
    use crate::name::Shared;
    use crate::read::packages::Packages;
    use crate::read::state::State;
    use crate::read::tree::{Files, Tree};
    use std::collections::BTreeMap;
    use crate::read::declaration::Declaration;
    use crate::read::index::Sources;
    use crate::read::packages::Database;
    use std::path::Path;

    const KVER: &str = "6.1.0-1-test";
    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/bluetooth/btusb.ko: kernel/net/bluetooth/bluetooth.ko
kernel/net/bluetooth/bluetooth.ko:
kernel/drivers/net/e1000e.ko:
kernel/extra/dkms.ko:
kernel/fs/btrfs/btrfs.ko:
";

    struct World {
        index: ModuleIndex,
        files: Files,
        tree: Tree,
        packages: Packages,
        declarations: Declarations,
        config: Config,
        state: State,
        apt_cache: AptCache,
        can_download: bool,
    }

    /// A world with one kernel package owning every module but `kernel/extra/dkms.ko`;
    /// `extra` adds packages as `(name, status, owned paths)`.
    fn index_of(dep: &str) -> ModuleIndex {
        index_with(dep, |_| true)
    }

    fn index_with(dep: &str, present: impl Fn(&str) -> bool) -> ModuleIndex {
        let sources = Sources {
            dep: Some(("modules.dep".into(), dep.into())),
            alias: Some(("modules.alias".into(), "alias crypto-crc32c crc32c_generic\nalias fs-btrfs btrfs\n".into())),
            softdep: Some(("modules.softdep".into(), "softdep ext4 pre: crypto-crc32c\n".into())),
            builtin: Some(("modules.builtin".into(), "kernel/fs/ext2/ext2.ko\n".into())),
            ..Sources::default()
        };
        let mut index = ModuleIndex::parse(sources).unwrap();
        index.mark_present(|rel| present(rel).then_some(1000));
        index
    }

    /// Takes module files off the disk, as a prune would: the index sees them gone too.
    fn remove_files(w: &mut World, rels: &[&str]) {
        for rel in rels {
            w.files.regular_mut().remove(rel);
        }
        w.index = index_with(DEP, |path| !rels.contains(&path));
    }

    fn world(declarations: &[(&str, Origin, &str)], extra: &[(&str, &str, &[&str])]) -> World {
        let index = index_of(DEP);
        let mut files = Files::default();
        let mut status = format!("Package: linux-image-{KVER}\nVersion: 1\nStatus: install ok installed\n\n");
        let mut kernel_list = String::new();
        for m in index.modules() {
            let _ = files.regular_mut().insert_new(&m.path, 1000);
            if !m.path.contains("dkms") {
                kernel_list.push_str(&format!("/lib/modules/{KVER}/{}\n", m.path));
            }
        }
        let mut lists = vec![(format!("linux-image-{KVER}"), kernel_list)];
        for (name, state, paths) in extra {
            status.push_str(&format!("Package: {name}\nVersion: 5\nStatus: install ok {state}\n\n"));
            lists.push((name.to_string(), paths.iter().map(|p| format!("{p}\n")).collect()));
        }
        let db = Database { status: ("status".into(), status), updates: Vec::new(), lists };
        let prefixes = [format!("/lib/modules/{KVER}/"), "/usr/share/limopack/".to_string()];
        let declarations = Declarations {
            active: declarations
                .iter()
                .map(|(path, origin, text)| Declaration::parse(Path::new(path), text.as_bytes(), *origin).unwrap())
                .collect(),
            masked: Vec::new(),
            broken: Vec::new(),
        };
        let mut config = Config::default();
        config.prune = true;
        World {
            index,
            files,
            tree: Tree { version: KVER.into(), path: "/nonexistent".into(), shown: format!("/lib/modules/{KVER}").into() },
            packages: Packages::from_database(&db, &prefixes).unwrap(),
            declarations,
            config,
            state: State::default(),
            apt_cache: AptCache::default(),
            can_download: false,
        }
    }

    fn run(w: &World, loaded: Option<&[String]>) -> Plan {
        plan(&Inputs {
            config: &w.config,
            declarations: &w.declarations,
            packages: &w.packages,
            state: &w.state,
            kernels: vec![KernelInput { tree: &w.tree, index: &w.index, files: &w.files, loaded }],
            apt_cache: &w.apt_cache,
            can_download: w.can_download,
            gone: Vec::new(),
        })
    }

    const BASELINE: (&str, Origin, &str) = ("/etc/limopack/modules.d/baseline.yaml", Origin::Admin, "static: [ext4]\n");
    const BLUEZ: (&str, &str, &[&str]) = ("bluez", "installed", &["/usr/share/limopack/bluez.yaml"]);

    fn kept(plan: &Plan) -> Vec<&str> {
        plan.kernels[0].kept.keys().map(|k| &**k).collect()
    }

    fn pruned(plan: &Plan) -> Vec<&str> {
        let mut v: Vec<&str> = plan.kernels[0].prune.iter().map(|f| &*f.module).collect();
        v.sort();
        v
    }

    #[test]
    fn keep_set_is_the_closure_of_statics_and_declarations() {
        let w = world(&[BASELINE, ("/usr/share/limopack/bluez.yaml", Origin::Vendor, "modules: [btusb]\n")], &[BLUEZ]);
        let p = run(&w, None);
        let k = &p.kernels[0];
        assert_eq!(k.action, Action::Prune);
        assert_eq!(kept(&p), ["bluetooth", "btusb", "crc16", "crc32c_generic", "dkms", "ext4", "jbd2"]);
        assert_eq!(pruned(&p), ["btrfs", "e1000e"]);
        assert_eq!(k.not_owned, [Shared::from("kernel/extra/dkms.ko")]);
        assert_eq!(k.kept["dkms"].reason, Reason::NotPrunable { package: None });
        assert_eq!(k.kept["crc32c_generic"].reason, Reason::Pulled { by: "ext4".into(), edge: Edge::SoftdepPre });
        assert_eq!(
            k.kept["btusb"].reason,
            Reason::Declared { entry: "btusb".into(), declaration: "/usr/share/limopack/bluez.yaml".into(), package: Some("bluez".into()) }
        );
        assert_eq!(k.refcounts["btusb"].len(), 1);
        assert_eq!(p.new_statics.len(), 1);
        assert_eq!(k.prune_bytes(), 2000);
    }

    #[test]
    fn refcount_counts_every_declaration() {
        let w = world(
            &[BASELINE, ("/etc/limopack/modules.d/a.yaml", Origin::Admin, "modules: [e1000e]\n"), ("/etc/limopack/modules.d/b.yaml", Origin::Admin, "modules: [e1000e, btusb]\n")],
            &[],
        );
        let p = run(&w, None);
        assert_eq!(p.kernels[0].refcounts["e1000e"].len(), 2);
        assert_eq!(p.kernels[0].refcounts["btusb"].len(), 1);
    }

    #[test]
    fn without_a_baseline_nothing_is_pruned() {
        let w = world(&[("/etc/limopack/modules.d/a.yaml", Origin::Admin, "modules: [btusb]\n")], &[]);
        let p = run(&w, None);
        assert_eq!(p.kernels[0].action, Action::NoBaseline);
        assert!(p.kernels[0].prune.is_empty());
    }

    #[test]
    fn with_pruning_off_the_plan_is_shown_but_not_acted_on() {
        let mut w = world(&[BASELINE], &[]);
        w.config = Config::default();
        let p = run(&w, None);
        assert_eq!(p.kernels[0].action, Action::PruningOff);
        assert!(!p.kernels[0].prune.is_empty());
    }

    #[test]
    fn a_removed_package_declares_nothing() {
        let removed = ("bluez", "config-files", &["/usr/share/limopack/bluez.yaml"][..]);
        let w = world(&[BASELINE, ("/usr/share/limopack/bluez.yaml", Origin::Vendor, "modules: [btusb]\n")], &[removed]);
        let p = run(&w, None);
        assert!(pruned(&p).contains(&"btusb"));
        assert!(!p.declarations[1].active);
    }

    #[test]
    fn an_unowned_vendor_declaration_counts_with_a_warning() {
        let w = world(&[BASELINE, ("/usr/share/limopack/stray.yaml", Origin::Vendor, "modules: [btusb]\n")], &[]);
        let p = run(&w, None);
        assert!(kept(&p).contains(&"btusb"));
        assert!(p.warnings.iter().any(|w| w.contains("no package owns this declaration")));
    }

    #[test]
    fn files_shared_with_other_packages_or_of_removed_packages_stay() {
        let shared = format!("/lib/modules/{KVER}/kernel/drivers/net/e1000e.ko");
        let w = world(&[BASELINE], &[("my-dkms-thing", "installed", &[shared.as_str()])]);
        let p = run(&w, None);
        assert_eq!(pruned(&p), ["bluetooth", "btrfs", "btusb"]);
        assert!(p.kernels[0].not_owned.contains(&Shared::from("kernel/drivers/net/e1000e.ko")));
    }

    #[test]
    fn loaded_modules_are_kept_with_their_closure() {
        let w = world(&[BASELINE], &[]);
        let loaded = vec!["btusb".to_string()];
        let p = run(&w, Some(&loaded));
        assert_eq!(p.kernels[0].kept["btusb"].reason, Reason::Loaded);
        assert!(kept(&p).contains(&"bluetooth"));
        assert!(p.kernels[0].running);
    }

    #[test]
    fn recorded_statics_outlive_their_declaration() {
        let mut w = world(&[], &[]);
        w.state.statics.push(StaticRecord { entry: "fs_btrfs".into(), kernels: None, declaration: "/gone.yaml".into(), forgotten_for: Vec::new() });
        let p = run(&w, None);
        assert!(p.kernels[0].baseline);
        assert!(kept(&p).contains(&"btrfs"));
        assert!(p.new_statics.is_empty());
    }

    #[test]
    fn kernels_glob_limits_a_declaration() {
        let w = world(&[BASELINE, ("/etc/limopack/modules.d/new.yaml", Origin::Admin, "kernels: \"6.12.*\"\nmodules: [btusb]\n")], &[]);
        let p = run(&w, None);
        assert!(!kept(&p).contains(&"btusb"));
        assert_eq!(p.kernels[0].declarations, 1);
    }

    #[test]
    fn unmatched_names_warn_and_builtins_do_not() {
        let w = world(&[BASELINE, ("/etc/limopack/modules.d/a.yaml", Origin::Admin, "modules:\n  - ext2\n  - nosuch\n")], &[]);
        let p = run(&w, None);
        assert_eq!(p.kernels[0].warnings, ["/etc/limopack/modules.d/a.yaml:3: `nosuch` matches no module of 6.1.0-1-test"]);
        assert_eq!(p.kernels[0].builtin, ["ext2"]);
    }

    #[test]
    fn a_kept_module_whose_file_is_gone_is_missing() {
        let mut w = world(&[BASELINE, ("/etc/limopack/modules.d/a.yaml", Origin::Admin, "modules: [e1000e]\n")], &[]);
        remove_files(&mut w, &["kernel/drivers/net/e1000e.ko"]);
        let p = run(&w, None);
        let missing: Vec<_> = p.kernels[0].missing().map(|(m, _)| &**m).collect();
        assert_eq!(missing, ["e1000e"]);
        let restore = &p.kernels[0].restore;
        assert_eq!(restore.len(), 1);
        assert_eq!((&*restore[0].package, &*restore[0].version), ("linux-image-6.1.0-1-test", "1"));
        assert!(restore[0].sources.is_empty(), "no archive, no cache, no apt: only the reinstall hint");
    }

    #[test]
    fn what_cannot_be_pruned_keeps_what_it_needs() {
        let mut w = world(&[BASELINE], &[]);
        w.index = index_of(&DEP.replace("kernel/extra/dkms.ko:", "kernel/extra/dkms.ko: kernel/fs/btrfs/btrfs.ko"));
        let p = run(&w, None);
        let k = &p.kernels[0];
        assert_eq!(k.kept["btrfs"].reason, Reason::Pulled { by: "dkms".into(), edge: Edge::Dependency });
        assert!(!pruned(&p).contains(&"btrfs"), "{:?}", pruned(&p));
    }

    #[test]
    fn restore_sources_come_in_order_archive_cache_download() {
        let mut w = world(&[BASELINE, ("/etc/limopack/modules.d/a.yaml", Origin::Admin, "modules: [e1000e, btusb]\n")], &[]);
        remove_files(&mut w, &["kernel/drivers/net/e1000e.ko", "kernel/drivers/bluetooth/btusb.ko", "kernel/extra/dkms.ko"]);
        let file = crate::read::state::PrunedFile { package: "linux-image-6.1.0-1-test".into(), version: "1".into(), size: 1, archived: true };
        w.state.kernels.entry(KVER.into()).or_default().pruned.insert("kernel/drivers/net/e1000e.ko".into(), file);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("var/cache/apt/archives");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join(format!("linux-image-{KVER}_1_amd64.deb")), "").unwrap();
        w.apt_cache = AptCache::scan(&crate::root::Root::new(dir.path()).unwrap()).unwrap();
        w.can_download = true;
        let p = run(&w, None);
        let restore: BTreeMap<&str, &Vec<Source>> = p.kernels[0].restore.iter().map(|r| (&*r.module, &r.sources)).collect();
        let deb = Source::AptCache { deb: cache.join(format!("linux-image-{KVER}_1_amd64.deb")) };
        assert_eq!(restore["e1000e"], &vec![Source::Archive, deb.clone(), Source::Download]);
        assert_eq!(restore["btusb"], &vec![deb.clone(), Source::Download]);
        assert_eq!(restore.len(), 2, "the unowned dkms.ko is not kept, and would not be restored");
    }
}
