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
use crate::read::hotplug::{key, pruned_from, Indexes};
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
/// re-trigger the device.
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
    let modules: Vec<String> = match &request.wanted {
        Wanted::Module(name) => {
            if let Some(why) = crate::name::invalid_entry(name) {
                return Err(Error::request(&tree.path, why));
            }
            match index.lookup(name) {
                Lookup::Modules(ids) => ids.iter().map(|&id| index.module(id).name.to_string()).collect(),
                Lookup::Builtin => {
                    return Ok(Outcome { lines: vec![format!("limopack: {version}: {name} is built into the kernel; nothing to restore")], modules: Vec::new() });
                }
                Lookup::NotFound => return Err(Error::request(&tree.path, format!("`{name}` is no module or alias of {version}'s packaged tree"))),
            }
        }
        Wanted::Modalias(modalias) => {
            let Some(key) = key(modalias) else {
                return Err(Error::request(&tree.path, "the modalias given is no modalias (printable ASCII without blanks, at most 4096 bytes)"));
            };
            let mut matched = match Indexes::open(&root, &version)? {
                Some(indexes) => indexes.matching(&key),
                None => match index.lookup(&key) {
                    Lookup::Modules(ids) => ids.iter().map(|&id| index.module(id).name.to_string()).collect(),
                    _ => Vec::new(),
                },
            };
            matched.retain(|m| index.by_name(m).is_some());
            if matched.is_empty() {
                return Err(Error::request(&tree.path, format!("no module of {version}'s packaged tree matches modalias {key}")));
            }
            matched
        }
    };
    let state = State::load(&root)?;
    let missing: Vec<&String> = modules.iter().filter(|m| index.by_name(m).is_some_and(|id| !index.module(id).present)).collect();
    let declared_in = format!("{}/{}", crate::root::ADMIN_DIR, effects::DECLARATION);
    let mut lines = Vec::new();
    let from = |m: &str| match pruned_from(&state, &version, m) {
        Some((package, version, _)) => format!(", pruned from {package} {version}"),
        None => String::new(),
    };
    if opts.dry_run {
        for m in &modules {
            lines.push(match missing.contains(&m) {
                true => format!("limopack: {version}: would restore {m}{}, with what it needs", from(m)),
                false => format!("limopack: {version}: {m} is there"),
            });
        }
        lines.push(format!("limopack: would declare {} in {declared_in}", modules.join(", ")));
        return Ok(Outcome { lines, modules });
    }

    let _turn = effects::lock(&root)?;
    let device = request.device.clone().or_else(|| match &request.wanted {
        Wanted::Modalias(m) => key(m).map(|k| format!("modalias {k}")),
        Wanted::Module(_) => None,
    });
    let comment = effects::comment(device.as_deref(), now);
    let before = effects::declare(&root, &modules.iter().map(|m| (m.clone(), comment.clone())).collect::<Vec<_>>())?;
    let sync_opts = Options { dry_run: false, reuse: false, package: None, ..opts.clone() };
    let outcome = match run::sync(&sync_opts, |_| {}) {
        Ok(Synced::Ran(outcome)) => outcome,
        Ok(_) => {
            effects::undo(&root, &before)?;
            return Err(Error::missing(&tree.path, "the run found no module tree to restore into"));
        }
        Err(e) => {
            effects::undo(&root, &before)?;
            return Err(e);
        }
    };
    let kplan = outcome.plan.kernels.iter().find(|k| k.version == version);
    let done = outcome.done.iter().find(|d| d.version == version);
    let mut failed = Vec::new();
    for m in &modules {
        let kept = kplan.and_then(|k| k.kept.get(m.as_str()));
        let back = kept.is_some_and(|k| k.present) || done.is_some_and(|d| d.files.restored.iter().any(|r| *r.module == **m));
        if !back {
            let why = done
                .and_then(|d| d.files.not_restored.iter().find(|n| *n.module == **m))
                .map(|n| n.reason.clone())
                .or_else(|| outcome.gathered.errors.iter().find(|e| e.version == version).map(|e| e.error.to_string()))
                .unwrap_or_else(|| "no archive copy, no .deb in apt's cache and no download".to_string());
            failed.push(format!("{m}{}: {why}", from(m)));
        }
    }
    if !failed.is_empty() {
        effects::undo(&root, &before)?;
        return Err(Error::missing(
            &tree.path,
            format!("could not bring back {}; {declared_in} is left as it was", failed.join("; ")),
        ));
    }
    for r in done.map(|d| d.files.restored.as_slice()).unwrap_or_default() {
        let source = match r.from {
            RestoredFrom::Archive => "limopack's archive",
            RestoredFrom::AptCache => "apt's cache",
            RestoredFrom::Download => "apt-get download",
        };
        lines.push(format!("limopack: {version}: restored {} ({}) from {source}", r.path, r.module));
    }
    if done.is_some_and(|d| d.depmod) {
        lines.push(format!("limopack: {version}: ran depmod"));
    }
    lines.push(match before.changed() {
        true => format!("limopack: declared {} in {declared_in}, so that later runs keep it", modules.join(", ")),
        false => format!("limopack: {} declared in {declared_in} already", modules.join(", ")),
    });
    if request.trigger {
        if let Some(device) = &request.device {
            effects::retrigger(device)?;
            lines.push(format!("limopack: re-triggered {device}"));
        }
    }
    Ok(Outcome { lines, modules })
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
    let config = Config::load(root)?;
    if config.hotplug == Hotplug::Off {
        return Ok(Vec::new());
    }
    let version = version.clone();
    let Some(indexes) = Indexes::open(root, &version)? else { return Ok(Vec::new()) };
    let pruned = indexes.pruned_for(modalias);
    if pruned.is_empty() {
        return Ok(Vec::new());
    }
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
        lines.push(match config.hotplug {
            Hotplug::Restore => match effects::queue(&module, devpath) {
                Ok(true) => format!("{head}; restoring it"),
                Ok(false) => format!("{head}; a restore of it is under way, or failed earlier this boot"),
                Err(e) => format!("{head}; its restore could not be queued: {e}"),
            },
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
    }
}
