//! Which pruned module a device asks for: the lookup `limopack-hook udev` makes for each
//! device that appears, `status` for each device present, and `restore --modalias` for the
//! admin.
//!
//! A device's `MODALIAS` comes from the device itself (a USB gadget can send any string), so
//! it is only ever a key: checked ([`key`]), then looked up in two of depmod's binary alias
//! indexes read in place, limopack's copy of the kernel's from before its first prune
//! (`/var/lib/limopack/index/<kver>.alias.bin`) and the tree's own `modules.alias.bin`. A
//! module the first names and the second does not is one limopack pruned and that stock
//! Debian would load for the device, unless modprobe.d or the kernel command line
//! blacklists it: udev's module loading obeys a `blacklist` for a modalias, so such a module
//! is one stock Debian would not load either. Nothing here starts a process, takes a lock or
//! writes.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{limits, Folder};
use crate::kver::Kver;
use crate::read::binary_index::BinaryIndex;
use crate::read::state::State;
use crate::root::{Root, STATE_DIR};

/// The longest modalias looked up: kmod bounds its keys by `PATH_MAX`, and the longest real
/// ones (`of:`, `acpi:` with many compatibles) are a few hundred bytes.
pub const MAX_MODALIAS: usize = 4096;

/// `modalias` as a lookup key, normalised as kmod normalises an alias (`-` is `_` outside
/// brackets); none for a string no device of a stock driver sends: empty, longer than
/// [`MAX_MODALIAS`], or with anything but printable ASCII (no blank, no control, no byte past
/// 0x7e). A trailing line break, as sysfs writes it, is dropped.
pub fn key(modalias: &str) -> Option<Cow<'_, str>> {
    let modalias = modalias.strip_suffix('\n').unwrap_or(modalias);
    let fine = !modalias.is_empty() && modalias.len() <= MAX_MODALIAS && modalias.bytes().all(|b| b.is_ascii_graphic());
    fine.then(|| crate::name::normalize(modalias))
}

/// The two alias indexes of one kernel.
pub struct Indexes {
    /// Limopack's copy from before the first prune: every module of the packaged tree.
    saved: BinaryIndex,
    /// The tree's own, which depmod rewrote after each prune and restore: what modprobe
    /// finds now. None when the tree has none (it cannot be told then what is missing).
    current: Option<BinaryIndex>,
}

/// Where limopack keeps kernel `version`'s copy of its aliases, inside [`STATE_DIR`].
pub fn saved_aliases(version: &Kver) -> String {
    format!("index/{version}.alias.bin")
}

impl Indexes {
    /// The indexes of kernel `version` under `root`; none when limopack never pruned it (it
    /// kept no copy of its aliases), as nothing of it can be missing then.
    pub fn open(root: &Root, version: &Kver) -> Result<Option<Indexes>> {
        let Some(state) = root.own(STATE_DIR)? else { return Ok(None) };
        let name = saved_aliases(version);
        let Some(bytes) = state.bytes_if_there(&name, limits::INDEX)? else { return Ok(None) };
        let saved = BinaryIndex::parse(&state.path().join(&name), bytes)?;
        let tree = root.resolve(format!("/lib/modules/{version}"))?;
        let current = match Folder::open_if_there(&tree)? {
            Some(folder) => folder.bytes_if_there("modules.alias.bin", limits::INDEX)?.map(|b| BinaryIndex::parse(&tree.join("modules.alias.bin"), b)).transpose()?,
            None => None,
        };
        Ok(Some(Indexes { saved, current }))
    }

    /// Build from the bytes of the two indexes (tests, benchmarks and fuzzing).
    pub fn from_bytes(saved: Vec<u8>, current: Option<Vec<u8>>) -> Result<Indexes> {
        let saved = BinaryIndex::parse(&PathBuf::from("saved.alias.bin"), saved)?;
        let current = current.map(|c| BinaryIndex::parse(&PathBuf::from("modules.alias.bin"), c)).transpose()?;
        Ok(Indexes { saved, current })
    }

    /// Every module of the packaged tree whose alias matches `modalias`, as `modprobe -R`
    /// on the tree before the prune answers, sorted. Empty for a string that is no key, or
    /// when the copy turned out damaged.
    pub fn matching(&self, modalias: &str) -> Vec<String> {
        let Some(key) = key(modalias) else { return Vec::new() };
        let found = wild(&self.saved, &key);
        if self.saved.is_damaged() {
            return Vec::new();
        }
        found
    }

    /// The modules `modalias` matches in the packaged tree that modprobe does not find now:
    /// pruned, and what stock Debian would load for the device. Empty when the tree has no
    /// index of its own, or either index is damaged: nothing is said without certainty.
    pub fn pruned_for(&self, modalias: &str) -> Vec<String> {
        let Some(current) = &self.current else { return Vec::new() };
        let Some(key) = key(modalias) else { return Vec::new() };
        let mut found = wild(&self.saved, &key);
        if found.is_empty() {
            return found;
        }
        let now = wild(current, &key);
        if self.saved.is_damaged() || current.is_damaged() {
            return Vec::new();
        }
        found.retain(|m| !now.contains(m));
        found
    }
}

/// The modules whose patterns in `index` match `key`, sorted, each once.
fn wild(index: &BinaryIndex, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    index.search_wild(key, &mut found);
    let mut found: Vec<String> = found.into_iter().map(|m| crate::name::normalize(m).into_owned()).collect();
    found.sort();
    found.dedup();
    found
}

/// The modules that udev does not load for a device's modalias: those of each `blacklist`
/// line of the root's modprobe.d files and, on the running system, of the kernel command
/// line's `modprobe.blacklist=a,b`, as kmod reads them; normalised names.
pub fn blacklisted(root: &Root) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (_, text) in crate::read::tree::modprobe_config(root)? {
        names.extend(text.lines().filter_map(blacklist_line).map(|n| crate::name::normalize(n).into_owned()));
    }
    if root.is_host() {
        let cmdline = crate::fs::read_kernel_file(Path::new("/proc/cmdline"), limits::CONFIG)?;
        names.extend(cmdline_blacklist(&cmdline));
    }
    Ok(names)
}

/// The module a modprobe.d line blacklists: `blacklist NAME`, blanks around, no comment.
fn blacklist_line(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("blacklist"), Some(name)) => Some(name),
        _ => None,
    }
}

/// The modules of each `modprobe.blacklist=a,b` word of a kernel command line.
fn cmdline_blacklist(cmdline: &str) -> impl Iterator<Item = String> + '_ {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("modprobe.blacklist="))
        .flat_map(|list| list.split(','))
        .filter(|name| !name.is_empty())
        .map(|name| crate::name::normalize(name).into_owned())
}

/// Where the udev rule's lookup leaves a mark for each restore it queued: a file named
/// after the module, holding the device's path (see [`crate::apply::hotplug::queue`]).
pub const QUEUE: &str = "/run/limopack/hotplug";

/// At most this many queued restores are taken at once.
const MAX_QUEUED: usize = 1024;

/// `(module, devpath)` of each restore queued and not done yet, sorted; a mark whose name is
/// no module name or whose content is no device path is passed over.
pub fn queued() -> Vec<(String, String)> {
    queued_in(Path::new(QUEUE))
}

fn queued_in(queue: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(queue) else { return Vec::new() };
    let mut found: Vec<(String, String)> = entries
        .flatten()
        .take(MAX_QUEUED)
        .filter_map(|entry| {
            let module = entry.file_name().into_string().ok().filter(|m| crate::name::invalid_entry(m).is_none() && !m.ends_with(".failed"))?;
            let bytes = crate::fs::read_entry_if_there(&entry.path(), crate::read::sysfs::MAX_DEVPATH as u64 + 1).ok()??;
            let devpath = String::from_utf8(bytes).ok()?.trim_end_matches('\n').to_string();
            crate::read::sysfs::is_devpath(&devpath).then_some((module, devpath))
        })
        .collect();
    found.sort();
    found
}

/// The package, version and path in the tree of `module`'s file, as limopack recorded them
/// when it pruned the file from kernel `version`.
pub fn pruned_from<'a>(state: &'a State, version: &Kver, module: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let kernel = state.kernels.get(version)?;
    kernel
        .pruned
        .iter()
        .find(|(path, _)| crate::name::module_name_of_path(path).is_some_and(|name| name == module))
        .map(|(path, file)| (&*file.package, &*file.version, path.as_str()))
}

/// A device present now whose driver limopack pruned from the running kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unbound {
    /// Its path under `/sys`, as udev names it (`/devices/pci0000:00/0000:00:03.0`).
    pub devpath: String,
    pub modalias: String,
    pub module: String,
    /// The package its file was pruned from, when the state says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// What brings it back.
    pub command: String,
}

/// The command that brings `module` back.
pub fn restore_command(module: &str) -> String {
    format!("limopack-hook restore {module}")
}

/// Every device under `/sys/devices` whose modalias matches a module limopack pruned from
/// the running kernel. None under `--root`, where the devices are another machine's, and
/// when the running kernel was never pruned.
pub fn unbound(root: &Root, state: &State) -> Option<Vec<Unbound>> {
    if !root.is_host() {
        return None;
    }
    let version = Kver::new(&crate::read::loaded::running_kernel()).ok()?;
    unbound_in(root, state, &version, Path::new("/sys"))
}

/// [`unbound`] for kernel `version`, with the devices under `sys`.
pub fn unbound_in(root: &Root, state: &State, version: &Kver, sys: &Path) -> Option<Vec<Unbound>> {
    let indexes = Indexes::open(root, version).ok()??;
    let denied = blacklisted(root).ok()?;
    let version = version.clone();
    let mut found = Vec::new();
    for (devpath, modalias) in crate::read::sysfs::modaliases(sys) {
        for module in indexes.pruned_for(&modalias).into_iter().filter(|m| !denied.contains(m)) {
            let package = pruned_from(state, &version, &module).map(|(p, _, _)| p.to_string());
            found.push(Unbound { devpath: devpath.clone(), modalias: modalias.clone(), command: restore_command(&module), module, package });
        }
    }
    Some(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::read::binary_index::tests::build;

    const SAVED: [(&str, &str); 5] = [
        ("pci:v00008086d0000100Esv*sd*bc*sc*i*", "e1000"),
        ("virtio:d00000004v*", "virtio_rng"),
        ("usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", "usb_storage"),
        ("pci:v*d*sv*sd*bc0Csc03i30*", "xhci_pci"),
        ("virtio:d00000001v*", "virtio_net"),
    ];

    fn indexes() -> Indexes {
        // After the prune, only virtio_net is left in the tree.
        Indexes::from_bytes(build(&SAVED), Some(build(&SAVED[4..]))).unwrap()
    }

    #[test]
    fn a_pruned_driver_is_found_and_a_present_one_is_not() {
        let idx = indexes();
        assert_eq!(idx.pruned_for("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n"), ["e1000"]);
        assert_eq!(idx.pruned_for("virtio:d00000004v00001AF4"), ["virtio_rng"]);
        assert_eq!(idx.pruned_for("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"), ["usb_storage"]);
        assert_eq!(idx.pruned_for("pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"), ["xhci_pci"]);
        assert_eq!(idx.pruned_for("virtio:d00000001v00001AF4"), Vec::<String>::new());
        assert_eq!(idx.matching("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(idx.pruned_for("platform:nothing"), Vec::<String>::new());
    }

    #[test]
    fn hostile_strings_are_no_key() {
        let idx = indexes();
        let long = "virtio:d00000004v".to_string() + &"A".repeat(MAX_MODALIAS);
        for hostile in ["", "\n", "virtio:d00000004v 1AF4", "virtio:d00000004v\u{7f}", "virtio:d00000004vé", "virtio:d00000004v\0", &long, "../../etc/passwd", "*"] {
            assert!(idx.pruned_for(hostile).is_empty() || key(hostile).is_some(), "{hostile:?}");
        }
        assert_eq!(key("virtio:d00000004v 1AF4"), None);
        assert_eq!(key(&long), None);
        assert_eq!(key("acpi:PNP0C0A-x:"), Some(Cow::Borrowed("acpi:PNP0C0A_x:")));
        // A key made of wildcards matches patterns as text only: `*` is no pattern here.
        assert_eq!(idx.pruned_for("*"), Vec::<String>::new());
    }

    /// A root whose kernel 6.1 limopack pruned down to virtio_net, e1000 recorded as pruned
    /// from its package, and a sysfs with three devices.
    pub(crate) fn pruned_root() -> (tempfile::TempDir, Root, Kver, State) {
        let dir = tempfile::tempdir().unwrap();
        let (top, version) = (dir.path().join("root"), crate::kver::kv("6.1"));
        let write = |rel: &str, bytes: &[u8]| {
            let path = top.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        write("var/lib/limopack/index/6.1.alias.bin", &build(&SAVED));
        write("lib/modules/6.1/modules.alias.bin", &build(&SAVED[4..]));
        write("sys/devices/pci0000:00/0000:00:03.0/modalias", b"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n");
        write("sys/devices/pci0000:00/0000:00:04.0/virtio1/modalias", b"virtio:d00000001v00001AF4\n");
        write("sys/devices/platform/serial8250/modalias", b"platform:serial8250\n");
        let root = Root::new(&top).unwrap();
        let mut state = State::default();
        let file = crate::read::state::PrunedFile { package: "linux-image-6.1".into(), version: "6.1-1".into(), size: 1, archived: false };
        state.kernels.entry(version.clone()).or_default().pruned.insert("kernel/drivers/net/ethernet/intel/e1000/e1000.ko".into(), file);
        (dir, root, version, state)
    }

    #[test]
    fn devices_present_whose_driver_was_pruned_are_named() {
        let (dir, root, version, state) = pruned_root();
        let found = unbound_in(&root, &state, &version, &dir.path().join("root/sys")).unwrap();
        assert_eq!(
            found,
            [Unbound {
                devpath: "/devices/pci0000:00/0000:00:03.0".into(),
                modalias: "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00".into(),
                module: "e1000".into(),
                package: Some("linux-image-6.1".into()),
                command: "limopack-hook restore e1000".into(),
            }]
        );
        // Under --root, the devices are this machine's, not the image's: no section.
        assert_eq!(unbound(&root, &state), None);
        // A kernel limopack never pruned has nothing missing.
        assert_eq!(unbound_in(&root, &state, &crate::kver::kv("6.2"), &dir.path().join("root/sys")), None);
    }

    #[test]
    fn a_blacklisted_driver_is_no_device_s_need() {
        let (dir, root, version, state) = pruned_root();
        let sys = dir.path().join("root/sys");
        std::fs::create_dir_all(dir.path().join("root/etc/modprobe.d")).unwrap();
        std::fs::write(dir.path().join("root/etc/modprobe.d/local.conf"), "# not that one\n  blacklist\te1000  \nblacklist\n").unwrap();
        assert_eq!(blacklisted(&root).unwrap(), BTreeSet::from(["e1000".to_string()]));
        assert_eq!(unbound_in(&root, &state, &version, &sys), Some(Vec::new()));
        std::fs::write(dir.path().join("root/etc/modprobe.d/local.conf"), "blacklist e1000e # a comment\n").unwrap();
        assert_eq!(unbound_in(&root, &state, &version, &sys).unwrap().len(), 1);
    }

    #[test]
    fn the_kernel_command_line_blacklists_as_kmod_reads_it() {
        let words = "root=/dev/vda modprobe.blacklist=virtio-rng,,e1000 quiet modprobe.blacklist=floppy";
        assert_eq!(cmdline_blacklist(words).collect::<Vec<_>>(), ["virtio_rng", "e1000", "floppy"]);
        assert_eq!(cmdline_blacklist("xmodprobe.blacklist=a modprobe.blacklist").count(), 0);
    }

    #[test]
    fn queued_restores_are_read_and_odd_marks_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let mark = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        mark("virtio_rng", "/devices/pci0000:00/0000:00:03.0/virtio1\n");
        mark("e1000", "/devices/pci0000:00/0000:00:04.0\n");
        mark("ata_piix.failed", "/devices/pci0000:00/0000:00:01.1\n");
        mark("evil", "/../../etc/passwd\n");
        mark("bad name", "/devices/x\n");
        mark("long", &format!("/devices/{}\n", "a".repeat(5000)));
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert_eq!(
            queued_in(dir.path()),
            [
                ("e1000".to_string(), "/devices/pci0000:00/0000:00:04.0".to_string()),
                ("virtio_rng".to_string(), "/devices/pci0000:00/0000:00:03.0/virtio1".to_string()),
            ]
        );
        assert!(queued_in(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn without_the_trees_own_index_nothing_is_said() {
        let idx = Indexes::from_bytes(build(&SAVED), None).unwrap();
        assert_eq!(idx.pruned_for("virtio:d00000004v00001AF4"), Vec::<String>::new());
        assert_eq!(idx.matching("virtio:d00000004v00001AF4"), ["virtio_rng"]);
    }
}
