//! limopack on a trixie system where dracut replaced initramfs-tools (the cached root of
//! `dracut_root`, with the real cloud kernel): a kernel's new initramfs is built by dracut
//! from the pruned tree, whether the kernel comes through `/etc/kernel/postinst.d` (apt
//! reinstalling the kernel package) or through systemd's `kernel-install`. Each test proves
//! it by the initramfs's contents: an initramfs built before the prune would carry every
//! module dracut takes from the whole tree. A run after an apt transaction that refreshes the
//! initramfs with dracut, and the boot of that initramfs, are in tests/it/boot.rs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use fs_err as fs;
use crate::boot::{image_modules, initramfs_modules, Generator};
use crate::support::debian_root::{dracut_root, kmod_loads, modules, only_kernel, Chroot};
use crate::support::{copy_root, Release};

const BASELINE: [&str; 4] = ["virtio_pci", "virtio_blk", "virtio_net", "ext4"];

/// A copy of the dracut root with limopack's `.deb` installed by apt, the baseline written and
/// pruning on, and nothing pruned yet: the next run that reaches limopack prunes.
struct Prepared {
    _work: tempfile::TempDir,
    kver: String,
    tree: PathBuf,
    whole: BTreeSet<String>,
    /// What kmod loads for the baseline: what the tree holds once pruned.
    wanted: BTreeSet<String>,
    /// The modules of the initramfs dracut built from the whole tree.
    initramfs_whole: BTreeSet<String>,
    initramfs_whole_bytes: u64,
}

fn prepared(tag: &str) -> (Prepared, Chroot) {
    let cache = dracut_root();
    let deb = PathBuf::from(std::env::var_os("LIMOPACK_DEB").expect("LIMOPACK_DEB: the .deb that tests/build-deb printed"));
    let work = tempfile::Builder::new().prefix(tag).tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path().join("root");
    copy_root(&cache, &root);
    let kver = only_kernel(Release::Trixie, &root);
    let tree = root.join("usr/lib/modules").join(&kver);
    let whole = modules(&tree);
    let wanted = kmod_loads(Release::Trixie, &root, &kver, &BASELINE);
    let chroot = Chroot::enter(&root);
    let initramfs_whole = initramfs_modules(&chroot, Generator::Dracut, &kver);
    let initramfs_whole_bytes = fs::metadata(chroot.p(&format!("/boot/initrd.img-{kver}"))).unwrap().len();
    // The test can fail: dracut's whole initramfs carries modules that the prune removes.
    assert!(initramfs_whole.difference(&wanted).count() > 50, "dracut's initramfs of the whole tree: {initramfs_whole:?}");

    fs::copy(&deb, chroot.p("/tmp/limopack.deb")).unwrap();
    let out = chroot.sh("apt-get -q install -y /tmp/limopack.deb");
    assert!(!out.contains("limopack: error"), "{out}");
    assert!(chroot.p("/etc/kernel/postinst.d/dkms-limopack").exists() && chroot.p("/usr/lib/kernel/install.d/45-limopack.install").exists());
    fs::write(chroot.p("/etc/limopack/modules.d/baseline.yaml"), format!("static: [{}]\n", BASELINE.join(", "))).unwrap();
    let config = fs::read_to_string(chroot.p("/etc/limopack/limopack.yaml")).unwrap();
    fs::write(chroot.p("/etc/limopack/limopack.yaml"), config.replace("\nprune: false\n", "\nprune: true\n")).unwrap();
    assert_eq!(modules(&tree), whole, "installing limopack pruned:\n{out}");
    (Prepared { _work: work, kver, tree, whole, wanted, initramfs_whole, initramfs_whole_bytes }, chroot)
}

/// The initramfs holds only kept modules, has what the disk needs, and is smaller than
/// dracut's initramfs of the whole tree.
fn assert_built_from_pruned(p: &Prepared, in_initramfs: &BTreeSet<String>, bytes: u64, said: &str) {
    let kept = modules(&p.tree);
    assert!(kept.len() < p.whole.len() / 10, "{} of {} modules kept:\n{said}", kept.len(), p.whole.len());
    let missing: Vec<_> = p.wanted.difference(&kept).collect();
    assert!(missing.is_empty(), "kmod loads {missing:?}, which are gone:\n{said}");
    let stale: Vec<_> = in_initramfs.difference(&kept).collect();
    assert!(stale.is_empty(), "the initramfs has modules that were pruned: {stale:?}\n{said}");
    let disk = Release::Trixie.ko("kernel/drivers/block/virtio_blk");
    assert!(in_initramfs.contains(&disk), "the initramfs lacks {disk}: {in_initramfs:?}");
    assert!(bytes < p.initramfs_whole_bytes, "the initramfs did not shrink: {bytes} bytes, {} before", p.initramfs_whole_bytes);
    println!(
        "{}: {} of {} modules kept; dracut's initramfs {} modules, {} bytes, from {} modules, {} bytes",
        p.kver,
        kept.len(),
        p.whole.len(),
        in_initramfs.len(),
        bytes,
        p.initramfs_whole.len(),
        p.initramfs_whole_bytes
    );
}

/// Reinstalling the kernel unpacks every module again; `/etc/kernel/postinst.d/dkms-limopack`
/// prunes them before `dracut` builds the initramfs, so the initramfs has no pruned module.
#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn a_kernel_reinstall_builds_the_dracut_initramfs_from_the_pruned_tree() {
    let (p, chroot) = prepared("dracut-reinstall-");
    let initrd = chroot.p(&format!("/boot/initrd.img-{}", p.kver));
    let old = fs::metadata(&initrd).unwrap().modified().unwrap();
    let started = Instant::now();
    let out = chroot.sh(&format!("apt-get -q install -y --reinstall linux-image-{}", p.kver));
    println!("kernel reinstalled with limopack and dracut in {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.contains("/etc/kernel/postinst.d/dkms-limopack:") && out.contains("/etc/kernel/postinst.d/dracut:"), "{out}");
    assert!(fs::metadata(&initrd).unwrap().modified().unwrap() > old, "dracut built no initramfs:\n{out}");
    let in_initramfs = initramfs_modules(&chroot, Generator::Dracut, &p.kver);
    assert_built_from_pruned(&p, &in_initramfs, fs::metadata(&initrd).unwrap().len(), &out);
    assert_eq!(out.matches(&format!("limopack: {}: kept", p.kver)).count(), 1, "only the kernel hook prunes:\n{out}");
}

/// `kernel-install add` runs `45-limopack.install` before `50-dracut.install`: the initrd
/// dracut stages is built from the pruned tree. A broken declaration stops the prune, said
/// by the plugin, and never fails kernel-install.
#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn the_kernel_install_plugin_prunes_before_dracut() {
    let (p, chroot) = prepared("dracut-kernel-install-");
    // A plugin of the test's, after dracut's: it keeps the initrd that kernel-install staged.
    let keep = chroot.p("/etc/kernel/install.d/60-keep-initrd.install");
    fs::create_dir_all(keep.parent().unwrap()).unwrap();
    fs::write(&keep, "#!/bin/sh\n[ \"$1\" = add ] && cp \"$KERNEL_INSTALL_STAGING_AREA/initrd\" /tmp/staged-initrd\nexit 0\n").unwrap();
    fs::set_permissions(&keep, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let add = format!("kernel-install --verbose add {0} /boot/vmlinuz-{0}", p.kver);

    let out = chroot.sh(&add);
    let limopack = out.find("45-limopack.install").unwrap_or_else(|| panic!("no 45-limopack.install in:\n{out}"));
    let dracut = out.find("50-dracut.install").unwrap_or_else(|| panic!("no 50-dracut.install in:\n{out}"));
    assert!(limopack < dracut, "{out}");
    let staged = chroot.p("/tmp/staged-initrd");
    let in_initramfs = image_modules(&chroot, Generator::Dracut, "/tmp/staged-initrd", &p.kver);
    assert_built_from_pruned(&p, &in_initramfs, fs::metadata(&staged).unwrap().len(), &out);

    // The plugin never fails the install: a broken declaration is said, and dracut still runs.
    let pruned = modules(&p.tree);
    fs::write(chroot.p("/etc/limopack/modules.d/broken.yaml"), "modules: [btrfs\n").unwrap();
    fs::remove_file(&staged).unwrap();
    let out = chroot.sh(&add);
    assert!(out.contains("limopack: error: /etc/limopack/modules.d/broken.yaml:2:1:"), "{out}");
    assert!(staged.exists(), "dracut staged no initrd:\n{out}");
    assert_eq!(modules(&p.tree), pruned);
}
