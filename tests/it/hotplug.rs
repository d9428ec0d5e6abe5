//! A device that appears after the prune gets its driver back (issue 23): the modalias
//! lookup against a real Debian kernel's alias index answers as `modprobe -R` does on the
//! unpruned tree, and `limopack-hook restore` brings a pruned driver back, declares it in
//! hotplug.yaml, and a later run keeps it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fs_err as fs;
use serde_json::Value;

use crate::support::*;

const GENERIC: &str = "amd64";

/// Modaliases of real devices (QEMU's and a USB stick's, from their sysfs), each with the
/// module the tree's driver for it is.
const DEVICES: [(&str, &str); 4] = [
    // QEMU -device e1000
    ("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "e1000"),
    // QEMU -device virtio-rng-pci, on the virtio bus
    ("virtio:d00000004v00001AF4", "virtio_rng"),
    // A SanDisk Cruzer USB stick's mass-storage interface (bulk-only, SCSI)
    ("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00", "usb_storage"),
    // QEMU -device qemu-xhci
    ("pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", "xhci_pci"),
];

/// What the release's `modprobe -R` resolves `modalias` to in `root`'s tree, sorted.
fn modprobe_resolve(release: Release, root: &Path, kver: &str, modalias: &str) -> Vec<String> {
    let out = kmod(release, "modprobe")
        .arg("-d")
        .arg(root)
        .args(["-S", kver, "-C", "/dev/null", "-R", modalias])
        .output()
        .unwrap();
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().replace('-', "_")).filter(|l| !l.is_empty()).collect();
    found.sort();
    found.dedup();
    found
}

fn lookup_answers_as_modprobe(release: Release) {
    let (root, kver) = real_kernel_tree(release, GENERIC);
    let tree = root.join("lib/modules").join(&kver);
    let saved = fs::read(tree.join("modules.alias.bin")).unwrap();
    let indexes = limopack::read::hotplug::Indexes::from_bytes(saved, None).unwrap();
    for (modalias, driver) in DEVICES {
        let modprobe = modprobe_resolve(release, &root, &kver, modalias);
        assert!(modprobe.iter().any(|m| m == driver), "{release:?}: modprobe -R {modalias} gave {modprobe:?}, not {driver}");
        assert_eq!(indexes.matching(modalias), modprobe, "{release:?} {modalias}");
        // A sysfs file's trailing line break is not part of the key.
        assert_eq!(indexes.matching(&format!("{modalias}\n")), modprobe, "{release:?} {modalias}");
    }
    // Hostile strings: no answer, no panic.
    for hostile in ["", "*", "pci:*", "../../../../etc/passwd", "usb:v0781 p5567", "virtio:d00000004v00001AF4\u{1b}[2J"] {
        let found = indexes.matching(hostile);
        assert!(found.is_empty() || !hostile.contains(['/', ' ', '\u{1b}']), "{hostile:?} gave {found:?}");
    }
}

#[test]
fn lookup_answers_as_modprobe_on_the_unpruned_tree_on_bookworm() {
    lookup_answers_as_modprobe(Release::Bookworm);
}

#[test]
#[ignore = "needs root and debootstrap: trixie's kmod is that of the trixie root; tests/run-all runs it"]
fn lookup_answers_as_modprobe_on_the_unpruned_tree_on_trixie() {
    lookup_answers_as_modprobe(Release::Trixie);
}

/// A pruned copy of the generic bookworm kernel: ext4 alone is vital, so e1000, virtio_rng,
/// usb_storage and xhci_pci are all pruned.
struct Pruned {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    kver: String,
    deb: PathBuf,
}

fn write_file(root: &Path, abs: &str, text: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

impl Pruned {
    fn new() -> Pruned {
        let (pristine, kver) = real_kernel_tree(Release::Bookworm, GENERIC);
        let tmp = tempfile::Builder::new().prefix("limopack-hotplug-").tempdir_in(cache_dir()).unwrap();
        let root = tmp.path().join("root");
        link_root(&pristine, &root);
        let pkg = real_kernel_pkg(Release::Bookworm, &root, GENERIC);
        write_dpkg_db(&root, std::slice::from_ref(&pkg));
        write_file(&root, "/etc/limopack/modules.d/baseline.yaml", "static: [ext4]\n");
        write_file(&root, "/etc/limopack/limopack.yaml", "prune: true\n");
        let fx = Pruned { _tmp: tmp, root, kver, deb: real_kernel_deb(Release::Bookworm, GENERIC) };
        let out = fx.run(&[]);
        assert!(out.status.success(), "prune: {}", String::from_utf8_lossy(&out.stderr));
        for (_, module) in DEVICES {
            assert!(fx.module_file(module).is_none(), "{module} was not pruned");
        }
        fx
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_limopack-hook"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("DPKG_ADMINDIR")
            .env_remove("DPKG_ROOT")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }

    fn tree(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }

    /// The file of `module` in the tree, if it is there.
    fn module_file(&self, module: &str) -> Option<PathBuf> {
        let stem = module.replace('_', "-");
        walkdir::WalkDir::new(self.tree())
            .into_iter()
            .flatten()
            .map(|e| e.into_path())
            .find(|p| p.file_name().is_some_and(|n| [format!("{module}.ko"), format!("{stem}.ko")].contains(&n.to_string_lossy().into_owned())))
    }

    fn in_modules_dep(&self, module: &str) -> bool {
        let stem = module.replace('_', "-");
        fs::read_to_string(self.tree().join("modules.dep"))
            .unwrap()
            .lines()
            .any(|l| l.split(':').next().is_some_and(|p| p.ends_with(&format!("/{module}.ko")) || p.ends_with(&format!("/{stem}.ko"))))
    }

    fn hotplug_yaml(&self) -> Option<String> {
        fs::read_to_string(self.root.join("etc/limopack/modules.d/hotplug.yaml")).ok()
    }

    /// The kernel's .deb in the root's apt cache, as `apt-get install` leaves it.
    fn cache_deb(&self) {
        let cache = self.root.join("var/cache/apt/archives");
        fs::create_dir_all(&cache).unwrap();
        fs::hard_link(&self.deb, cache.join(self.deb.file_name().unwrap())).or_else(|_| fs::copy(&self.deb, cache.join(self.deb.file_name().unwrap())).map(|_| ())).unwrap();
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn restore_brings_a_pruned_driver_back_declares_it_and_later_runs_keep_it() {
    let fx = Pruned::new();
    let (e1000, rng) = (DEVICES[0].0, DEVICES[1].0);

    // A dry run says what would come back, and changes nothing.
    let out = fx.run(&["restore", "--dry-run", "--modalias", e1000]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{}: would restore e1000, pruned from linux-image-{}", fx.kver, fx.kver)), "{}", text(&out));
    assert!(fx.hotplug_yaml().is_none() && fx.module_file("e1000").is_none());

    // No archive, nothing in apt's cache, no download under --root: it cannot come back, it
    // says why, and the declaration is as it was (none).
    let out = fx.run(&["restore", "--modalias", rng]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("could not bring back virtio_rng"), "{}", text(&out));
    assert!(fx.hotplug_yaml().is_none(), "{:?}", fx.hotplug_yaml());

    // Names that are no module of the tree, and strings that are no modalias, are refused.
    for args in [&["restore", "no_such_module"][..], &["restore", "../../etc/passwd"], &["restore", "--modalias", "pci:v0000 1234"], &["restore", "--modalias", "platform:no-such-thing"]] {
        let out = fx.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(fx.hotplug_yaml().is_none());
    }

    // With the kernel's .deb in apt's cache, the device's driver comes back from it, with
    // depmod run and the module declared.
    fx.cache_deb();
    let out = fx.run(&["restore", "--modalias", e1000]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("(e1000) from apt's cache"), "{said}");
    assert!(said.contains("ran depmod"), "{said}");
    assert!(fx.module_file("e1000").is_some(), "{said}");
    assert!(fx.in_modules_dep("e1000"));
    let yaml = fx.hotplug_yaml().unwrap();
    assert!(yaml.contains(&format!("  - e1000  # for modalias {e1000}, ")), "{yaml}");

    // By name, the same path; a module that is there is declared without a restore.
    let out = fx.run(&["restore", "usb-storage"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fx.module_file("usb_storage").is_some() && fx.in_modules_dep("usb_storage"));
    let yaml = fx.hotplug_yaml().unwrap();
    assert!(yaml.contains("  - e1000  # for modalias") && yaml.contains("  - usb_storage  # restored by hand, "), "{yaml}");
    let out = fx.run(&["restore", "e1000"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("e1000 declared in /etc/limopack/modules.d/hotplug.yaml already"), "{}", text(&out));
    assert_eq!(fx.hotplug_yaml().unwrap(), yaml, "a second restore wrote the file again");

    // A following run (as after an apt transaction) keeps both; the explain names the file.
    let out = fx.run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fx.module_file("e1000").is_some() && fx.module_file("usb_storage").is_some());
    let out = fx.run(&["explain", "e1000"]);
    assert!(text(&out).contains("hotplug.yaml"), "{}", text(&out));

    // status under --root has no devices section: the devices are this machine's.
    let out = fx.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status.get("unbound_devices").is_none(), "{status:#}");
    assert!(!String::from_utf8_lossy(&fx.run(&["status"]).stdout).contains("devices whose driver"));
}
