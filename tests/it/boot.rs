//! The proof that a pruned Debian image boots, on bookworm and on trixie with initramfs-tools
//! and on trixie with dracut. In a copy of the release's cached root with its real cloud kernel
//! (see tests/debian.rs; for dracut, the root where dracut replaced initramfs-tools), apt installs
//! limopack's `.deb`, the admin writes
//! the baseline that a QEMU guest's root disk and network need and turns pruning on, and one
//! apt transaction (a package declaring one more module) prunes the tree and rebuilds the
//! initramfs from it. The root then becomes an ext4 disk image, booted under QEMU (TCG) with
//! a small init script that checks the booted system from inside and reports on the serial
//! console. The release's real firmware-realtek package is installed too, with
//! `firmware: prune`: no kept module of the cloud kernel asks for its files, so they go.

use std::collections::BTreeSet;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fs_err as fs;
use crate::support::debian_root::{cloud_root, dracut_root, kmod_loads, modules, only_kernel, package, Chroot};
use crate::support::image::{ext4_image, footprint, footprint_table, part};
use crate::support::{copy_root, firmware_deb, qemu, Release};

/// What a QEMU guest needs to mount its root and reach the network: the virtio PCI
/// transport (without it no virtio device shows up), the disk and network drivers, and ext4.
/// ext4 and all it needs (jbd2, mbcache, crc16, crc32c) are built into the cloud kernel of
/// both releases, which the test checks against `modules.builtin`; the virtio drivers are
/// modules, but for trixie's virtio_pci, built in too.
pub const BASELINE: [&str; 4] = ["virtio_pci", "virtio_blk", "virtio_net", "ext4"];
const BUILT_IN: [&str; 5] = ["fs/ext4/ext4", "fs/jbd2/jbd2", "fs/mbcache", "lib/crc16", "crypto/crc32c_generic"];
/// The module one more package declares: small, and needing no hardware to load.
const DECLARED: &str = "isofs";
/// A module the initramfs carries before pruning, with either generator, and nothing
/// declares; and its file without the extension.
const PRUNED: &str = "btrfs";
const PRUNED_STEM: &str = "kernel/fs/btrfs/btrfs";
const NET_DRIVER: &str = "virtio_net";
/// The checks tests/it/support/boot-check.sh runs in the booted image, in its order.
const CHECKS: [&str; 9] = [
    "mounts",
    "kernel",
    "root-mounted-rw",
    "root-writable",
    "net-driver-bound",
    "declared-loads",
    "pruned-absent",
    "pruned-fails-cleanly",
    "no-oops",
];
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// The parts of the image whose sizes the test reports before and after pruning, where the
/// release's packages put them; firmware is measured again once its package is installed (the
/// minbase root has none).
fn measured(release: Release, kver: &str) -> Vec<(&'static str, String)> {
    vec![
        ("modules", format!("{}/{kver}", release.modules_dir())),
        ("initramfs", format!("/boot/initrd.img-{kver}")),
        ("firmware", release.firmware_dir().to_string()),
    ]
}

/// The initramfs generator of the booted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    InitramfsTools,
    Dracut,
}

impl Generator {
    /// The cached root that has this generator.
    fn root(self, release: Release) -> PathBuf {
        match self {
            Generator::InitramfsTools => cloud_root(release),
            Generator::Dracut => dracut_root(),
        }
    }

    /// The generator's own lister of an initramfs: one path a line, or `ls -l`'s lines.
    fn lister(self) -> &'static str {
        match self {
            Generator::InitramfsTools => "lsinitramfs",
            Generator::Dracut => "lsinitrd",
        }
    }
}

/// The module files in kernel `kver`'s initramfs, as its generator's lister names them,
/// relative to the kernel's tree.
pub fn initramfs_modules(chroot: &Chroot, generator: Generator, kver: &str) -> BTreeSet<String> {
    image_modules(chroot, generator, &format!("/boot/initrd.img-{kver}"), kver)
}

/// The module files of kernel `kver` in the initramfs at `image`, inside the chroot.
pub fn image_modules(chroot: &Chroot, generator: Generator, image: &str, kver: &str) -> BTreeSet<String> {
    // A merged-/usr system's initramfs keeps the tree under usr/lib, an older one under lib.
    let (usr, lib) = (format!("usr/lib/modules/{kver}/"), format!("lib/modules/{kver}/"));
    chroot
        .sh(&format!("{} {image}", generator.lister()))
        .lines()
        // lsinitrd lists as `ls -l` does: the path is the last field.
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|l| l.strip_prefix(&usr).or_else(|| l.strip_prefix(&lib)))
        .filter(|l| l.contains(".ko"))
        .map(str::to_string)
        .collect()
}

fn elapsed(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap, qemu-system-x86_64, e2fsprogs and Debian's archive; tests/run-all runs it"]
fn pruned_image_boots_in_qemu_on_bookworm() {
    pruned_image_boots_in_qemu(Release::Bookworm, Generator::InitramfsTools);
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap, qemu-system-x86_64, e2fsprogs and Debian's archive; tests/run-all runs it"]
fn pruned_image_boots_in_qemu_on_trixie() {
    pruned_image_boots_in_qemu(Release::Trixie, Generator::InitramfsTools);
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap, qemu-system-x86_64, e2fsprogs and Debian's archive; tests/run-all runs it"]
fn pruned_image_boots_in_qemu_on_trixie_with_dracut() {
    pruned_image_boots_in_qemu(Release::Trixie, Generator::Dracut);
}

fn pruned_image_boots_in_qemu(release: Release, generator: Generator) {
    let Some(qemu) = qemu::find() else {
        println!("SKIPPED: {} is not installed; tests/run-all installs it (package qemu-system-x86) where apt has it", qemu::QEMU);
        return;
    };
    let started = Instant::now();
    let cache = generator.root(release);
    let deb = PathBuf::from(std::env::var_os("LIMOPACK_DEB").expect("LIMOPACK_DEB: the .deb that tests/build-deb printed"));
    let work = tempfile::Builder::new().prefix("boot-").tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path().join("root");
    copy_root(&cache, &root);
    println!("copied the cached root: {}", elapsed(started));

    let kver = only_kernel(release, &root);
    let tree = root.join(release.modules_dir().trim_start_matches('/')).join(&kver);
    let pruned_file = release.ko(PRUNED_STEM);
    let kernel = root.join(format!("boot/vmlinuz-{kver}"));
    let initrd = root.join(format!("boot/initrd.img-{kver}"));
    let builtin = fs::read_to_string(tree.join("modules.builtin")).unwrap();
    for module in BUILT_IN {
        assert!(builtin.lines().any(|l| l == format!("kernel/{module}.ko")), "{module} is not built into {kver}");
    }
    let whole = modules(&tree);
    let wanted = kmod_loads(release, &root, &kver, &[&BASELINE[..], &[DECLARED]].concat());
    assert!(whole.contains(&pruned_file) && !wanted.contains(&pruned_file), "{pruned_file} must be in the tree and not needed");
    // What the initramfs must carry to reach the root disk: every file kmod loads for it.
    let disk = kmod_loads(release, &root, &kver, &["virtio_pci", "virtio_blk"]);
    assert!(disk.contains(&release.ko("kernel/drivers/block/virtio_blk")), "{disk:?}");
    let initrd_whole = fs::read(&initrd).unwrap();
    let mut before = footprint(&root, &measured(release, &kver));

    let pruning = Instant::now();
    let chroot = Chroot::enter(&root);
    assert!(initramfs_modules(&chroot, generator, &kver).contains(&pruned_file), "the initramfs should carry {pruned_file} before pruning");
    let debs = chroot.p("/tmp/debs");
    fs::create_dir_all(&debs).unwrap();
    fs::copy(&deb, debs.join("limopack.deb")).unwrap();
    fs::copy(firmware_deb(release, "firmware-realtek"), debs.join("firmware-realtek.deb")).unwrap();
    package(&debs, "iso-user", Some(&format!("modules: [{DECLARED}]\n")));
    chroot.sh("apt-get -q install -y /tmp/debs/limopack.deb /tmp/debs/firmware-realtek.deb");
    let firmware = footprint(&root, &measured(release, &kver)).into_iter().find(|p| p.what == "firmware").unwrap();
    assert!(firmware.files > 50, "firmware-realtek installed {} files", firmware.files);
    before.retain(|p| p.what != "firmware");
    before.push(firmware);
    fs::write(chroot.p("/etc/limopack/modules.d/baseline.yaml"), format!("static: [{}]\n", BASELINE.join(", "))).unwrap();
    let config = fs::read_to_string(chroot.p("/etc/limopack/limopack.yaml")).unwrap();
    fs::write(chroot.p("/etc/limopack/limopack.yaml"), config.replace("\nprune: false\n", "\nprune: true\nfirmware: prune\n")).unwrap();

    // One apt transaction prunes the tree and refreshes the initramfs from it.
    let out = chroot.sh("apt-get -q install -y /tmp/debs/iso-user.deb");
    let with = match generator {
        Generator::InitramfsTools => "update-initramfs",
        Generator::Dracut => "dracut",
    };
    assert!(out.contains(&format!("refreshed /boot/initrd.img-{kver} with {with}")), "{out}");
    let kept = modules(&tree);
    let missing: Vec<_> = wanted.difference(&kept).collect();
    assert!(missing.is_empty(), "kmod loads {missing:?}, which are gone; apt said:\n{out}");
    assert!(!kept.contains(&pruned_file) && kept.len() < whole.len() / 10, "{} of {} modules kept:\n{out}", kept.len(), whole.len());
    let in_initramfs = initramfs_modules(&chroot, generator, &kver);
    let stale: Vec<_> = in_initramfs.difference(&kept).collect();
    assert!(stale.is_empty(), "the initramfs has modules that were pruned: {stale:?}");
    let lacking: Vec<_> = disk.difference(&in_initramfs).collect();
    assert!(lacking.is_empty(), "the initramfs lacks {lacking:?}: {in_initramfs:?}");
    let initrd_pruned = fs::read(&initrd).unwrap();
    assert!(initrd_pruned != initrd_whole && initrd_pruned.len() < initrd_whole.len(), "the initramfs was not rebuilt smaller");

    // The init that checks the booted system, and what it expects; then apt's cache goes, as
    // an image builder's last step does.
    let check = chroot.p("/usr/local/sbin/limopack-boot-check");
    fs::write(&check, include_str!("support/boot-check.sh")).unwrap();
    fs::set_permissions(&check, Permissions::from_mode(0o755)).unwrap();
    chroot.sh("apt-get clean && rm -r /tmp/debs");
    fs::write(
        chroot.p("/etc/limopack-boot-check.conf"),
        format!("KVER={kver}\nDECLARED={DECLARED}\nPRUNED={PRUNED}\nPRUNED_FILE={pruned_file}\nNET_DRIVER={NET_DRIVER}\n"),
    )
    .unwrap();
    drop(chroot);
    println!("pruned with apt, initramfs rebuilt: {}", elapsed(pruning));

    let after = footprint(&root, &measured(release, &kver));
    println!("{kver}, {} of {} modules kept:\n{}", kept.len(), whole.len(), footprint_table(&before, &after));
    for what in ["modules", "initramfs", "firmware"] {
        assert!(part(&after, what).bytes < part(&before, what).bytes, "{what} did not shrink");
    }

    let imaging = Instant::now();
    let image = work.path().join("root.ext4");
    let image_mib = ext4_image(&root, &image);
    println!("ext4 image of {image_mib} MiB: {}", elapsed(imaging));

    // A disk that never shows up fails after initramfs-tools' 30 s wait, and panic=-1 makes
    // its panic, and the kernel's, a reboot at once, which ends QEMU (-no-reboot).
    // dracut's initramfs would wait 90 s for a missing disk and then offer a shell; rd.shell=0
    // and rd.emergency=reboot make that an end of QEMU instead.
    let append = match generator {
        Generator::InitramfsTools => "root=/dev/vda rw console=ttyS0 init=/usr/local/sbin/limopack-boot-check panic=-1",
        Generator::Dracut => "root=/dev/vda rw console=ttyS0 init=/usr/local/sbin/limopack-boot-check panic=-1 rd.shell=0 rd.emergency=reboot",
    };
    let boot = qemu::boot(&qemu, &kernel, &initrd, &image, append, BOOT_LIMIT);
    let console = &boot.console;
    println!("booted and powered off in {:.1} s; whole test {}", boot.took.as_secs_f64(), elapsed(started));
    assert!(boot.status.is_some(), "QEMU was killed after {} s; the console said:\n{console}", BOOT_LIMIT.as_secs());
    for name in CHECKS {
        assert!(console.contains(&format!("limopack-boot-check: {name}: ok")), "check `{name}` did not pass; the console said:\n{console}");
    }
    assert!(console.contains("limopack-boot-check: done"), "{console}");
    for fault in ["Oops", "BUG:", "Kernel panic"] {
        assert!(!console.contains(fault), "`{fault}` on the console:\n{console}");
    }
    assert!(boot.status.unwrap().success(), "QEMU exited with {:?}:\n{console}", boot.status);
    for line in console.lines().filter(|l| l.starts_with("limopack-boot-check: ")) {
        println!("{line}");
    }
}
