//! `limopack-hook restore MODULE|--modalias STRING`: a pruned driver brought back for a
//! device, and kept; and `limopack-hook udev`, the lookup the udev rule runs for each device
//! that appears (see `udev/85-limopack.rules`).
//!
//! A restore resolves what it is asked in the kernel's own index (a modalias through
//! limopack's copy of the aliases from before the first prune, never as a path), so only
//! modules of the kernel's packaged tree can come back. It declares them in
//! `/etc/limopack/modules.d/hotplug.yaml` and runs as apt's hook does: that run keeps them,
//! restores them with their closure through the archive, apt's cache or `apt-get download`,
//! and runs depmod. When one of them could not be brought back, the declaration is put back
//! as it was, so that a restore that cannot fetch changes nothing for later runs.

use std::path::Path;
use std::time::SystemTime;

use crate::apply::hotplug as effects;
use crate::apply::RestoredFrom;
use crate::error::{Error, Result};
use crate::kver::Kver;
use crate::read::config::{Config, Hotplug};
use crate::read::hotplug::{blacklisted, key, pruned_from, queued, Indexes};
use crate::read::index::Lookup;
use crate::read::state::State;
use crate::root::Root;
use crate::run::{self, Options, Synced};

/// What is asked back.
#[derive(Debug, Clone)]
pub enum Wanted {
    /// A module name or alias, as modprobe takes it.
    Module(String),
    /// A device's modalias: every module stock Debian would load for it.
    Modalias(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub wanted: Wanted,
    /// The device it is for (its `DEVPATH`), for the declaration's comment.
    pub device: Option<String>,
    /// Re-trigger the device once its driver is back.
    pub trigger: bool,
}

/// What a restore did, or (dry run) would do, line by line.
pub struct Outcome {
    pub lines: Vec<String>,
    /// The modules asked back, by name.
    pub modules: Vec<String>,
}

/// The kernel a restore is for: `--kernel`, the running one, or an image's only one.
fn kernel(root: &Root, opts: &Options, trees: &[crate::read::tree::Tree]) -> Result<Kver> {
    if let Some(kernel) = &opts.kernel {
        return Ok(kernel.clone());
    }
    if root.is_host() {
        return Kver::new(&crate::read::loaded::running_kernel()).map_err(|why| Error::damaged(Path::new("/proc/sys/kernel/osrelease"), why));
    }
    match trees {
        [only] => Ok(only.version.clone()),
        _ => Err(Error::request(root.path(), "holds more than one kernel or none; name one with --kernel")),
    }
}

/// Bring back what `request` asks for in one kernel, declare it, and (with `trigger`)
/// re-trigger the device. A restore the udev rule queued also takes every other device's
/// restore queued by then (see [`crate::read::hotplug::queued`]): at first boot on new
/// hardware, one run and one initramfs refresh serve all the devices that came up together.
pub fn restore(opts: &Options, request: &Request, now: SystemTime) -> Result<Outcome> {
    let root = Root::new(&opts.root)?;
    if let Some(device) = &request.device {
        if !crate::read::sysfs::is_devpath(device) {
            return Err(Error::request(Path::new(device), "is no device path the kernel gives (/devices/…)"));
        }
    }
    let trees = crate::read::tree::discover(&root, &mut Vec::new())?;
    let version = kernel(&root, opts, &trees)?;
    let tree = trees
        .iter()
        .find(|t| t.version == version)
        .ok_or_else(|| Error::missing(root.path().join("lib/modules").join(version.as_str()), "no such module tree"))?;
    let index = run::kernel_index(&root, tree)?;
    let modules = match resolve(&root, &index, tree, &version, &request.wanted)? {
        Resolved::Modules(modules) => modules,
        Resolved::Builtin(name) => {
            return Ok(Outcome { lines: vec![format!("limopack: {version}: {name} is built into the kernel; nothing to restore")], modules: Vec::new() });
        }
    };
    let state = State::load(&root)?;
    let restoring = Restoring { opts, root: &root, tree, version: &version, index: &index, state: &state };
    if opts.dry_run {
        return Ok(Outcome { lines: restoring.would(&modules), modules });
    }

    let _turn = effects::lock(&root)?;
    let device = request.device.clone().or_else(|| match &request.wanted {
        Wanted::Modalias(m) => key(m).map(|k| format!("modalias {k}")),
        Wanted::Module(_) => None,
    });
    let mut batch: Vec<Wish> = modules.iter().map(|m| Wish { module: m.clone(), device: device.clone(), trigger: request.trigger && request.device.is_some() }).collect();
    if request.trigger && root.is_host() {
        effects::settle();
        for (module, devpath) in queued() {
            if !batch.iter().any(|w| w.module == module) && index.by_name(&module).is_some() {
                batch.push(Wish { module, device: Some(devpath), trigger: true });
            }
        }
    }
    let Brought { mut lines, lost, .. } = restoring.bring_back(&batch, now)?;
    let mut triggered = Vec::new();
    for wish in batch.iter().filter(|w| !lost.iter().any(|(m, _)| *m == w.module)) {
        let (true, Some(device)) = (wish.trigger, &wish.device) else { continue };
        effects::done(&wish.module);
        // A device that asked for two modules is triggered once.
        if !triggered.contains(&device) {
            effects::retrigger(device)?;
            lines.push(format!("limopack: re-triggered {device}"));
            triggered.push(device);
        }
    }
    // Another device's restore that failed in this batch is said here and tried again by
    // its own; this one's failure is the command's.
    let (mine, others): (Vec<_>, Vec<_>) = lost.into_iter().partition(|(m, _)| modules.contains(m));
    lines.extend(others.into_iter().map(|(_, said)| format!("limopack: {said}")));
    if !mine.is_empty() {
        if request.trigger {
            mine.iter().for_each(|(m, _)| effects::failed(m));
        }
        let said: Vec<String> = mine.into_iter().map(|(_, said)| said).collect();
        return Err(Error::missing(&tree.path, format!("{}; {} is left as it was", said.join("; "), declared_in())));
    }
    Ok(Outcome { lines, modules })
}

/// What a restore is asked, resolved in the kernel's index.
enum Resolved {
    Modules(Vec<String>),
    /// Built into the kernel: there is nothing to bring back.
    Builtin(String),
}

/// The modules of the packaged tree that `wanted` names: a name or alias as modprobe
/// resolves it, or a modalias through the alias index from before the first prune, less
/// what modprobe.d blacklists.
fn resolve(root: &Root, index: &crate::read::index::ModuleIndex, tree: &crate::read::tree::Tree, version: &Kver, wanted: &Wanted) -> Result<Resolved> {
    match wanted {
        Wanted::Module(name) => {
            if let Some(why) = crate::name::invalid_entry(name) {
                return Err(Error::request(&tree.path, why));
            }
            match index.lookup(name) {
                Lookup::Modules(ids) => Ok(Resolved::Modules(ids.iter().map(|&id| index.module(id).name.to_string()).collect())),
                Lookup::Builtin => Ok(Resolved::Builtin(name.clone())),
                Lookup::NotFound => Err(Error::request(&tree.path, format!("`{name}` is no module or alias of {version}'s packaged tree"))),
            }
        }
        Wanted::Modalias(modalias) => {
            let Some(key) = key(modalias) else {
                return Err(Error::request(&tree.path, "the modalias given is no modalias (printable ASCII without blanks, at most 4096 bytes)"));
            };
            let mut matched = match Indexes::open(root, version)? {
                Some(indexes) => indexes.matching(&key),
                None => match index.lookup(&key) {
                    Lookup::Modules(ids) => ids.iter().map(|&id| index.module(id).name.to_string()).collect(),
                    _ => Vec::new(),
                },
            };
            matched.retain(|m| index.by_name(m).is_some());
            let denied = blacklisted(root)?;
            if !matched.is_empty() && matched.iter().all(|m| denied.contains(m)) {
                return Err(Error::request(&tree.path, format!("modprobe.d blacklists {}, all that matches modalias {key}; udev would not load it", matched.join(", "))));
            }
            matched.retain(|m| !denied.contains(m));
            if matched.is_empty() {
                return Err(Error::request(&tree.path, format!("no module of {version}'s packaged tree matches modalias {key}")));
            }
            Ok(Resolved::Modules(matched))
        }
    }
}

/// One module to bring back, with the device it is for (its devpath, or the modalias it was
/// asked by) and whether that device is then re-triggered and its queue mark cleared: only
/// ever for a devpath, which `--trigger` requires.
struct Wish {
    module: String,
    device: Option<String>,
    trigger: bool,
}

/// Where the restores' declaration is, as the admin finds it.
fn declared_in() -> String {
    format!("{}/{}", crate::root::ADMIN_DIR, effects::DECLARATION)
}

/// One restore in one kernel, with what it read.
struct Restoring<'a> {
    opts: &'a Options,
    root: &'a Root,
    tree: &'a crate::read::tree::Tree,
    version: &'a Kver,
    index: &'a crate::read::index::ModuleIndex,
    state: &'a State,
}

impl Restoring<'_> {
    /// `, pruned from PACKAGE VERSION` for a module limopack pruned, as the state says.
    fn from(&self, module: &str) -> String {
        match pruned_from(self.state, self.version, module) {
            Some((package, version, _)) => format!(", pruned from {package} {version}"),
            None => String::new(),
        }
    }

    /// Whether `module`'s file is in the tree, as the index read last says.
    fn present(&self, module: &str) -> bool {
        self.index.by_name(module).is_some_and(|id| self.index.module(id).present)
    }

    /// What a dry run says.
    fn would(&self, modules: &[String]) -> Vec<String> {
        let version = self.version;
        let mut lines: Vec<String> = modules
            .iter()
            .map(|m| match self.present(m) {
                false => format!("limopack: {version}: would restore {m}{}, with what it needs", self.from(m)),
                true => format!("limopack: {version}: {m} is there"),
            })
            .collect();
        lines.push(format!("limopack: would declare {} in {}", modules.join(", "), declared_in()));
        lines
    }

    /// Declare every wish, run as apt's hook does when one is missing, and keep declared
    /// those that came back: one that could not is taken out again, and said with why.
    fn bring_back(&self, batch: &[Wish], now: SystemTime) -> Result<Brought> {
        let entries: Vec<Entry> = batch.iter().map(|w| (w.module.clone(), effects::comment(w.device.as_deref(), now))).collect();
        let before = effects::declare(self.root, &entries)?;
        let mut brought = Brought::default();
        if batch.iter().any(|w| !self.present(&w.module)) {
            if let Err(e) = self.sync(&mut brought) {
                effects::undo(self.root, &before)?;
                return Err(e);
            }
        }
        // The tree as it is now: read again after a run.
        let after = match brought.ran {
            true => run::kernel_index(self.root, self.tree).ok(),
            false => None,
        };
        let back = |m: &str| match &after {
            Some(index) => index.by_name(m).is_some_and(|id| index.module(id).present),
            None => !brought.ran && self.present(m),
        };
        let (back, lost): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|(m, _)| back(m));
        for (m, _) in &lost {
            let why = brought.reasons.iter().find(|(r, _)| r == m).map_or(brought.error.as_deref().unwrap_or(NO_SOURCE), |(_, why)| why.as_str());
            brought.lost.push((m.clone(), format!("could not bring back {m}{}: {why}", self.from(m))));
        }
        if !lost.is_empty() {
            effects::undo(self.root, &before)?;
            effects::declare(self.root, &back.iter().map(|e| (*e).clone()).collect::<Vec<_>>())?;
        }
        let names: Vec<&str> = back.iter().map(|(m, _)| m.as_str()).collect();
        if !names.is_empty() {
            brought.lines.push(match before.changed() {
                true => format!("limopack: declared {} in {}, so that later runs keep it", names.join(", "), declared_in()),
                false => format!("limopack: {} declared in {} already", names.join(", "), declared_in()),
            });
        }
        Ok(brought)
    }

    /// The run apt's hook makes, which restores every declared module with its closure;
    /// what it says of this kernel goes to `brought`.
    fn sync(&self, brought: &mut Brought) -> Result<()> {
        let opts = Options { dry_run: false, reuse: false, package: None, ..self.opts.clone() };
        brought.ran = true;
        let outcome = match run::sync(&opts, |_| {})? {
            Synced::Ran(outcome) => outcome,
            _ => return Err(Error::missing(&self.tree.path, "the run found no module tree to restore into")),
        };
        let version = self.version;
        let done = outcome.done.iter().find(|d| d.version == *version);
        for r in done.map(|d| d.files.restored.as_slice()).unwrap_or_default() {
            let source = match r.from {
                RestoredFrom::Archive => "limopack's archive",
                RestoredFrom::AptCache => "apt's cache",
                RestoredFrom::Download => "apt-get download",
            };
            brought.lines.push(format!("limopack: {version}: restored {} ({}) from {source}", r.path, r.module));
        }
        if done.is_some_and(|d| d.depmod) {
            brought.lines.push(format!("limopack: {version}: ran depmod"));
        }
        brought.reasons = done.iter().flat_map(|d| &d.files.not_restored).map(|n| (n.module.to_string(), n.reason.clone())).collect();
        brought.error = outcome.gathered.errors.iter().find(|e| e.version == *version).map(|e| e.error.to_string());
        Ok(())
    }
}

/// A module and the comment of its entry in the declaration.
type Entry = (String, String);

/// Why a module did not come back when the run named no reason.
const NO_SOURCE: &str = "no archive copy, no .deb in apt's cache and no download";

/// What [`Restoring::bring_back`] did.
#[derive(Default)]
struct Brought {
    lines: Vec<String>,
    /// `(module, what is said)` of each that did not come back.
    lost: Vec<(String, String)>,
    /// Why the run could not restore a file, by module.
    reasons: Vec<(String, String)>,
    /// What stopped the run in this kernel.
    error: Option<String>,
    /// Whether a run was made (none when every module was there).
    ran: bool,
}

/// What the udev rule runs for a device that appears, with its `MODALIAS` and `DEVPATH`:
/// with `hotplug: notify` (the default) or `restore`, the lines to log for each module the
/// device asks for that limopack pruned from the running kernel; with `restore`, each such
/// module's restore queued. Reads the config, the two alias indexes in place and, only when
/// something matched, the state; starts no process for a device whose driver is there, and
/// takes no lock.
pub fn uevent(root: &Root, modalias: &str, devpath: &str) -> Result<Vec<String>> {
    let Ok(version) = Kver::new(&crate::read::loaded::running_kernel()) else { return Ok(Vec::new()) };
    uevent_for(root, &version, modalias, devpath)
}

/// [`uevent`] for kernel `version`.
pub fn uevent_for(root: &Root, version: &Kver, modalias: &str, devpath: &str) -> Result<Vec<String>> {
    // A config that cannot be read is said only for a device that needs a pruned driver,
    // and restores nothing: notify is what is sure.
    let (hotplug, broken) = match Config::load(root) {
        Ok(config) => (config.hotplug, None),
        Err(e) => (Hotplug::Notify, Some(e)),
    };
    if hotplug == Hotplug::Off {
        return Ok(Vec::new());
    }
    let version = version.clone();
    let Some(indexes) = Indexes::open(root, &version)? else { return Ok(Vec::new()) };
    let mut pruned = indexes.pruned_for(modalias);
    if pruned.is_empty() {
        return Ok(Vec::new());
    }
    let denied = blacklisted(root)?;
    pruned.retain(|m| !denied.contains(m));
    let state = State::load(root).unwrap_or_default();
    let shown_key = key(modalias).map(|k| k.into_owned()).unwrap_or_default();
    let shown_path = match crate::read::sysfs::is_devpath(devpath) {
        true => devpath,
        false => "(no device path)",
    };
    let mut lines = Vec::new();
    for module in pruned {
        let package = pruned_from(&state, &version, &module).map_or("its kernel package", |(p, _, _)| p);
        let head = format!("device {shown_path} ({shown_key}) needs {module}, pruned from {package}");
        lines.push(match (hotplug, &broken) {
            (Hotplug::Restore, _) => match effects::queue(&module, devpath) {
                Ok(true) => format!("{head}; restoring it"),
                Ok(false) => format!("{head}; a restore of it is under way, or failed earlier this boot"),
                Err(e) => format!("{head}; its restore could not be queued: {e}"),
            },
            (_, Some(e)) => format!("{head}; run 'limopack-hook restore {module}'. Nothing is restored while the config is broken: {e}"),
            _ => format!("{head}; run 'limopack-hook restore {module}' or set hotplug: restore"),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_says_the_device_module_package_and_command_and_off_says_nothing() {
        let (dir, root, version, state) = crate::read::hotplug::tests::pruned_root();
        state.save(&root).unwrap();
        let e1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
        let lines = uevent_for(&root, &version, e1000, "/devices/pci0000:00/0000:00:03.0").unwrap();
        assert_eq!(
            lines,
            ["device /devices/pci0000:00/0000:00:03.0 (pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00) needs e1000, pruned from linux-image-6.1; run 'limopack-hook restore e1000' or set hotplug: restore"]
        );
        // A device whose driver is there, one no driver matches, and hostile strings.
        for modalias in ["virtio:d00000001v00001AF4", "platform:serial8250", "", "pci:v00008086d0000100E sv", "pci:*"] {
            assert!(uevent_for(&root, &version, modalias, "/devices/x").unwrap().is_empty(), "{modalias:?}");
        }
        // A devpath that is no kernel's is not repeated.
        let lines = uevent_for(&root, &version, e1000, "/../../etc/passwd").unwrap();
        assert!(lines[0].starts_with("device (no device path) ("), "{lines:?}");
        let config = dir.path().join("root/etc/limopack/limopack.yaml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "hotplug: off\n").unwrap();
        assert!(uevent_for(&root, &version, e1000, "/devices/pci0000:00/0000:00:03.0").unwrap().is_empty());

        // A broken config: a device whose driver is there says nothing; one that needs a
        // pruned driver is told of, with the config's error, and nothing is queued.
        std::fs::write(&config, "hotplug: restore\nprnue: true\n").unwrap();
        assert!(uevent_for(&root, &version, "virtio:d00000001v00001AF4", "/devices/x").unwrap().is_empty());
        let lines = uevent_for(&root, &version, e1000, "/devices/pci0000:00/0000:00:03.0").unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("needs e1000, pruned from linux-image-6.1; run 'limopack-hook restore e1000'. Nothing is restored while the config is broken: "), "{lines:?}");
        assert!(lines[0].contains("limopack.yaml:2:1: unknown field `prnue`"), "{lines:?}");

        // A blacklisted driver is no need: udev would not load it.
        std::fs::write(&config, "hotplug: notify\n").unwrap();
        std::fs::create_dir_all(dir.path().join("root/etc/modprobe.d")).unwrap();
        std::fs::write(dir.path().join("root/etc/modprobe.d/e1000.conf"), "blacklist e1000\n").unwrap();
        assert!(uevent_for(&root, &version, e1000, "/devices/pci0000:00/0000:00:03.0").unwrap().is_empty());
    }
}
