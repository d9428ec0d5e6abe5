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

/// A pruned driver's file in trixie's cloud kernel, with the QEMU device it drives: one
/// present from power-on, one hot-added through the monitor. Both are virtio devices whose
/// PCI transport, virtio_pci, is built in.
const AT_BOOT: (&str, &str) = ("virtio-rng-pci", "kernel/drivers/char/hw_random/virtio-rng");
const HOT_ADDED: (&str, &str) = ("virtio-balloon-pci,id=hot0", "kernel/drivers/virtio/virtio_balloon");
/// The checks tests/it/support/hotplug-check.sh runs in each boot, in its order.
const NOTIFY_CHECKS: [&str; 5] = ["rng-present", "notified", "rng-unbound", "status-names-device", "nothing-declared"];
const RESTORE_CHECKS: [&str; 9] =
    ["rng-present", "rng-bound", "rng-loaded", "rng-declared", "balloon-present", "balloon-bound", "balloon-declared", "restored-once", "kept-after-apt"];
/// A systemd boot under TCG, with restores that run depmod and dracut in the guest.
const HOTPLUG_BOOT_LIMIT: std::time::Duration = std::time::Duration::from_secs(900);

/// The proof: trixie's cloud image with systemd and udev (the root where dracut
/// builds the initramfs), pruned by apt with limopack's `.deb`, is booted twice with a
/// virtio-rng device whose driver was pruned. With `hotplug: notify`, the journal and status
/// name the device and its module, which stays pruned. With `hotplug: restore`, udev's
/// coldplug brings the driver back from limopack's archive and the device binds; a
/// virtio-balloon device hot-added through QEMU's monitor gets its driver back the same
/// way, once though the device is added again while its restore runs; both are declared in
/// hotplug.yaml, and a following apt transaction keeps them.
#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap, qemu-system-x86_64, e2fsprogs and Debian's archive; tests/run-all runs it"]
fn a_pruned_image_under_qemu_notifies_then_restores_drivers_at_boot_and_on_hot_add() {
    use crate::support::debian_root::{dracut_root, only_kernel, package, Chroot};
    use crate::support::image::ext4_image;
    use crate::support::qemu;
    let Some(qemu) = qemu::find() else {
        println!("SKIPPED: {} is not installed; tests/run-all installs it (package qemu-system-x86) where apt has it", qemu::QEMU);
        return;
    };
    let release = Release::Trixie;
    let cache = dracut_root();
    let deb = PathBuf::from(std::env::var_os("LIMOPACK_DEB").expect("LIMOPACK_DEB: the .deb that tests/build-deb printed"));
    let work = tempfile::Builder::new().prefix("hotplug-boot-").tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path().join("root");
    copy_root(&cache, &root);
    let kver = only_kernel(release, &root);
    let package_name = format!("linux-image-{kver}");
    let tree = root.join(release.modules_dir().trim_start_matches('/')).join(&kver);
    let (rng_file, balloon_file) = (release.ko(AT_BOOT.1), release.ko(HOT_ADDED.1));

    // Installed, the baseline written, pruning and the archive turned on; one transaction
    // prunes both drivers and rebuilds the initramfs.
    let chroot = Chroot::enter(&root);
    let debs = chroot.p("/tmp/debs");
    fs::create_dir_all(&debs).unwrap();
    fs::copy(&deb, debs.join("limopack.deb")).unwrap();
    package(&debs, "first-user", None);
    package(&chroot.p("/var/tmp"), "later-user", None);
    chroot.sh("apt-get -q install -y /tmp/debs/limopack.deb");
    write_file(&root, "/etc/limopack/modules.d/baseline.yaml", &format!("static: [{}]\n", crate::boot::BASELINE.join(", ")));
    let config = fs::read_to_string(chroot.p("/etc/limopack/limopack.yaml")).unwrap();
    let config = config.replace("\nprune: false\n", "\nprune: true\narchive: true\n");
    write_file(&root, "/etc/limopack/limopack.yaml", &config);
    let out = chroot.sh("apt-get -q install -y /tmp/debs/first-user.deb");
    assert!(out.contains(&format!("refreshed /boot/initrd.img-{kver} with dracut")), "{out}");
    // The booted image leaves the initramfs to the admin: a restore refreshes it as any run
    // does (dracut::), and dracut under TCG would take minutes a restore.
    let config = format!("{config}initramfs: never\n");
    write_file(&root, "/etc/limopack/limopack.yaml", &config);
    for file in [&rng_file, &balloon_file] {
        assert!(!tree.join(file).exists(), "{file} was not pruned:\n{out}");
    }
    assert!(root.join("usr/lib/udev/rules.d/85-limopack.rules").is_file(), "the .deb ships no udev rule");

    // The check runs as a service once udev's coldplug is done; apt's cache goes, as an
    // image builder's last step does.
    let check = chroot.p("/usr/local/sbin/limopack-hotplug-check");
    fs::write(&check, include_str!("support/hotplug-check.sh")).unwrap();
    fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_file(
        &root,
        "/etc/systemd/system/limopack-hotplug-check.service",
        "[Unit]\nDescription=limopack's hotplug check\nAfter=systemd-udev-trigger.service systemd-journald.service\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/local/sbin/limopack-hotplug-check\nStandardOutput=journal+console\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    );
    write_file(
        &root,
        "/etc/limopack-hotplug-check.conf",
        &format!("KVER={kver}\nRNG_FILE={rng_file}\nBALLOON_FILE={balloon_file}\nPACKAGE={package_name}\nLATER=/var/tmp/later-user.deb\n"),
    );
    chroot.sh("systemctl enable limopack-hotplug-check.service && systemctl mask serial-getty@ttyS0.service && apt-get clean && rm -r /tmp/debs");
    drop(chroot);

    let (kernel, initrd) = (root.join(format!("boot/vmlinuz-{kver}")), root.join(format!("boot/initrd.img-{kver}")));
    let append = |mode: &str| format!("root=/dev/vda rw console=ttyS0 panic=-1 rd.shell=0 rd.emergency=reboot limopack.check={mode}");
    let image = work.path().join("root.ext4");
    let boot = |mode: &str, extras: &qemu::Extras| {
        let boot = qemu::boot_with(&qemu, &kernel, &initrd, &image, &append(mode), HOTPLUG_BOOT_LIMIT, extras);
        println!("{mode}: booted, checked and powered off in {:.1} s", boot.took.as_secs_f64());
        let console = &boot.console;
        for line in console.lines().filter(|l| l.starts_with("limopack-hotplug-check: ")) {
            println!("{line}");
        }
        assert!(boot.status.is_some(), "{mode}: QEMU was killed after {} s; the console said:\n{console}", HOTPLUG_BOOT_LIMIT.as_secs());
        assert!(console.contains("limopack-hotplug-check: done"), "{mode}: the check did not finish:\n{console}");
        for fault in ["Oops", "BUG:", "Kernel panic"] {
            assert!(!console.contains(fault), "{mode}: `{fault}` on the console:\n{console}");
        }
        boot.console
    };
    let passed = |console: &str, mode: &str, checks: &[&str]| {
        for name in checks {
            assert!(console.contains(&format!("limopack-hotplug-check: {name}: ok")), "{mode}: check `{name}` did not pass; the console said:\n{console}");
        }
    };

    // hotplug: notify (the default), on an overlay so that the image stays as built.
    ext4_image(&root, &image);
    let console = boot("notify", &qemu::Extras { devices: &[AT_BOOT.0], snapshot: true, ..Default::default() });
    passed(&console, "notify", &NOTIFY_CHECKS);
    let notice = format!(") needs virtio_rng, pruned from {package_name}; run 'limopack-hook restore virtio_rng' or set hotplug: restore");
    assert!(console.lines().any(|l| l.starts_with("limopack-hotplug-check: journal: device /devices/") && l.ends_with(&notice)), "{console}");

    // hotplug: restore.
    write_file(&root, "/etc/limopack/limopack.yaml", &format!("{config}hotplug: restore\n"));
    ext4_image(&root, &image);
    let hot_add = format!("device_add {}", HOT_ADDED.0);
    let extras = qemu::Extras { devices: &[AT_BOOT.0], on_console: &[("limopack-hotplug-check: ready for device_add", &hot_add)], ..Default::default() };
    let console = boot("restore", &extras);
    passed(&console, "restore", &RESTORE_CHECKS);
    for (module, file) in [("virtio_rng", &rng_file), ("virtio_balloon", &balloon_file)] {
        let restored = format!("limopack-hotplug-check: restore-units: limopack: {kver}: restored {file} ({module}) from limopack's archive");
        assert!(console.contains(&restored), "{module} was not restored from the archive:\n{console}");
    }
}
