//! limopack as Debian runs it: its own `.deb` installed by apt in a debootstrapped root that
//! has the real cloud kernel, installed by apt too, on bookworm and on trixie. From the
//! admin's two files on, every change is made by `apt-get` and `dpkg` in a chroot, and the
//! test looks at the files left on disk.
//!
//! Each release's root (debootstrap --variant=minbase, then `apt-get install
//! linux-image-cloud-amd64`) is built once and cached under `target/test-cache`. The `.deb` under test comes from
//! `tests/build-deb`, which `tests/run-all` runs first and names in `LIMOPACK_DEB`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fs_err as fs;
use serde_json::Value;
use crate::support::debian_root::{cloud_root, kmod_loads, modules, only_kernel, package, Chroot};
use crate::support::{copy_root, Release};

/// The tree holds exactly what limopack keeps, and that is all kmod loads for the same
/// modules, or more: limopack follows every module an alias names, where modprobe may stop
/// at one.
fn assert_tree(chroot: &Chroot, tree: &Path, kmod: &BTreeSet<String>, said: &str) {
    let on_disk = modules(tree);
    let missing: Vec<_> = kmod.difference(&on_disk).collect();
    assert!(missing.is_empty(), "kmod needs {missing:?}, which are gone; the run said:\n{said}");
    let status: Value = serde_json::from_str(&chroot.sh("limopack-hook status --json")).unwrap();
    let kept: BTreeSet<String> = status["kernels"][0]["kept"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_disk, kept, "the run said:\n{said}");
}

/// The version of the older kernel the test installs and removes.
const OLD: &str = "9.9.9-old-amd64";

/// A package `linux-image-OLD` in `debs` that holds `files`, copied from `tree`, under the
/// release's module folder, and runs depmod for them as a kernel's postinst does.
fn old_kernel(debs: &Path, release: Release, tree: &Path, files: &BTreeSet<String>) {
    let src = debs.join(format!("linux-image-{OLD}"));
    let dest = src.join(release.modules_dir().trim_start_matches('/')).join(OLD);
    for rel in files {
        fs::create_dir_all(dest.join(rel).parent().unwrap()).unwrap();
        fs::copy(tree.join(rel), dest.join(rel)).unwrap();
    }
    fs::create_dir_all(src.join("DEBIAN")).unwrap();
    let control = format!("Package: linux-image-{OLD}\nVersion: 1.0\nArchitecture: all\nMaintainer: limopack tests <tests@example.invalid>\nDescription: an older kernel's modules\n");
    fs::write(src.join("DEBIAN/control"), control).unwrap();
    let postinst = src.join("DEBIAN/postinst");
    fs::write(&postinst, format!("#!/bin/sh\nset -e\n[ \"$1\" != configure ] || depmod {OLD}\n")).unwrap();
    fs::set_permissions(&postinst, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let deb = debs.join(format!("linux-image-{OLD}.deb"));
    let out = std::process::Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&src).arg(&deb).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack.find(needle).unwrap_or_else(|| panic!("no `{needle}` in:\n{haystack}"))
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn apt_and_dpkg_keep_the_tree_pruned_on_bookworm() {
    apt_and_dpkg_keep_the_tree_pruned(Release::Bookworm);
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn apt_and_dpkg_keep_the_tree_pruned_on_trixie() {
    apt_and_dpkg_keep_the_tree_pruned(Release::Trixie);
}

fn apt_and_dpkg_keep_the_tree_pruned(release: Release) {
    let cache = cloud_root(release);
    let deb = PathBuf::from(std::env::var_os("LIMOPACK_DEB").expect("LIMOPACK_DEB: the .deb that tests/build-deb printed"));
    let work = tempfile::Builder::new().prefix("debian-e2e-").tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path().join("root");
    copy_root(&cache, &root);
    let chroot = Chroot::enter(&root);

    let kver = only_kernel(release, &root);
    let kpkg = format!("linux-image-{kver}");
    // Where the kernel package put the tree, as dpkg lists it.
    let listed = format!("{}/{kver}", release.modules_dir());
    let tree = chroot.p(&listed);
    let initrd = chroot.p(&format!("/boot/initrd.img-{kver}"));
    let whole = modules(&tree);
    assert!(whole.len() > 1000, "the cloud kernel has {} modules", whole.len());
    // kmod's answers, asked while the tree is whole.
    let baseline = kmod_loads(release, &root, &kver, &["ext4", "virtio_blk", "virtio_net"]);
    assert!(baseline.contains(&release.ko("kernel/drivers/net/virtio_net")), "{baseline:?}");
    let with_btrfs: BTreeSet<String> = baseline.union(&kmod_loads(release, &root, &kver, &["btrfs"])).cloned().collect();
    let with_iso: BTreeSet<String> = baseline.union(&kmod_loads(release, &root, &kver, &["isofs"])).cloned().collect();
    let vfat = kmod_loads(release, &root, &kver, &["vfat"]);

    let debs = chroot.p("/tmp/debs");
    fs::create_dir_all(&debs).unwrap();
    fs::copy(&deb, debs.join("limopack.deb")).unwrap();
    package(&debs, "plain", None);
    package(&debs, "btrfs-user-a", Some("modules: [btrfs]\n"));
    package(&debs, "btrfs-user-b", Some("modules: [btrfs]\n"));
    package(&debs, "iso-user", Some("modules: [fs-iso9660]\n"));
    package(&debs, "sctp-user", Some("modules: [sctp]\n"));
    package(&debs, "broken", Some("modules: [btrfs\n"));
    // An older kernel, as apt autoremove finds one after an upgrade: the baseline's modules
    // and vfat's, copied from the whole tree, and depmod run by its postinst.
    let old_files: BTreeSet<String> = baseline.union(&vfat).cloned().collect();
    old_kernel(&debs, release, &tree, &old_files);

    // Installed with apt, limopack deletes nothing: pruning is off.
    let out = chroot.sh("apt-get -q install -y /tmp/debs/limopack.deb");
    assert!(!out.contains("limopack: error"), "{out}");
    assert_eq!(modules(&tree), whole);
    assert!(chroot.p("/etc/apt/apt.conf.d/80limopack").exists());
    assert!(chroot.p("/etc/kernel/postinst.d/dkms-limopack").exists());
    assert!(chroot.p("/usr/lib/kernel/install.d/45-limopack.install").exists());

    // The admin's two files, then any apt transaction: the tree is pruned to what kmod
    // loads for the baseline, and the initramfs is rebuilt from it.
    fs::write(chroot.p("/etc/limopack/modules.d/baseline.yaml"), "static: [ext4, virtio_blk, virtio_net]\n").unwrap();
    let config = fs::read_to_string(chroot.p("/etc/limopack/limopack.yaml")).unwrap();
    fs::write(chroot.p("/etc/limopack/limopack.yaml"), config.replace("\nprune: false\n", "\nprune: true\n")).unwrap();
    let initrd_before = fs::metadata(&initrd).unwrap().len();
    let out = chroot.sh("apt-get -q install -y /tmp/debs/plain.deb");
    assert_eq!(modules(&tree), baseline, "the run said:\n{out}");
    assert!(out.contains(&format!("limopack: {kver}: ")) && out.contains("pruned"), "{out}");
    assert!(out.contains(&format!("refreshed /boot/initrd.img-{kver}")), "{out}");
    let initrd_files = chroot.sh(&format!("lsinitramfs /boot/initrd.img-{kver}"));
    assert!(!initrd_files.contains("btrfs.ko"), "the initramfs still has btrfs");
    assert!(initrd_files.contains("virtio_blk.ko"), "{initrd_files}");
    println!("initramfs: {initrd_before} bytes before, {} after", fs::metadata(&initrd).unwrap().len());

    // dpkg's database is untouched: dpkg --verify names each pruned file as missing, and
    // limopack's status lists every one with its package.
    let (_, verify) = chroot.try_sh(&format!("dpkg --verify {kpkg}"));
    let missing: BTreeSet<String> = verify
        .lines()
        .filter(|l| l.starts_with("missing"))
        .filter_map(|l| l.split_once(&format!("{listed}/")).map(|(_, rel)| rel.to_string()))
        // Folders left empty are removed too, and dpkg names them as well.
        .filter(|rel| rel.contains(".ko"))
        .collect();
    assert_eq!(missing.len(), whole.len() - baseline.len(), "{verify}");
    let status: Value = serde_json::from_str(&chroot.sh("limopack-hook status --json")).unwrap();
    let pruned = status["kernels"][0]["pruned"].as_object().unwrap();
    assert_eq!(pruned.keys().cloned().collect::<BTreeSet<_>>(), missing);
    assert!(pruned.values().all(|f| f["package"] == kpkg.as_str()));

    // Two packages declare btrfs, one installed by apt and one by plain dpkg. The first brings
    // it back from apt's cache, through the trigger; Post-Invoke then has nothing to do.
    let out = chroot.sh("apt-get -q install -y /tmp/debs/btrfs-user-a.deb");
    assert_tree(&chroot, &tree, &with_btrfs, &out);
    let restored = format!("limopack: {kver}: restored btrfs ({}) from apt's cache", release.ko("kernel/fs/btrfs/btrfs"));
    assert!(position(&out, &restored) > position(&out, "Processing triggers for limopack"), "{out}");
    assert_eq!(out.matches(&format!("limopack: {kver}: kept ")).count(), 1, "one run changed the tree, the other was quiet:\n{out}");
    chroot.sh("dpkg -i /tmp/debs/btrfs-user-b.deb");
    let status: Value = serde_json::from_str(&chroot.sh("limopack-hook status --json")).unwrap();
    assert_eq!(status["kernels"][0]["kept"]["btrfs"]["reason"]["kind"], "declared");
    let refs = chroot.sh("limopack-hook explain btrfs");
    assert!(refs.contains("referenced by 2 declaration(s)"), "{refs}");

    // Removing one leaves btrfs; removing the other (dpkg alone) prunes it.
    let with_btrfs = modules(&tree);
    let out = chroot.sh("apt-get -q remove -y btrfs-user-a");
    assert_eq!(modules(&tree), with_btrfs, "{out}");
    let out = chroot.sh("dpkg -r btrfs-user-b");
    assert_eq!(modules(&tree), baseline, "{out}");

    // A package that declares a module pruned earlier, by alias: it comes back and modprobe
    // resolves it.
    let out = chroot.sh("apt-get -q install -y /tmp/debs/iso-user.deb");
    assert!(out.contains("restored isofs"), "{out}");
    let show = chroot.sh(&format!("modprobe -S {kver} --show-depends fs-iso9660"));
    let isofs = format!("/{kver}/{}", release.ko("kernel/fs/isofs/isofs"));
    assert!(show.lines().any(|l| l.starts_with("insmod ") && l.trim_end().ends_with(&isofs)), "{show}");
    assert_tree(&chroot, &tree, &with_iso, &out);
    let with_iso = modules(&tree);

    // The older kernel is pruned as it is installed; removed, it leaves a folder of depmod's
    // index files, which limopack leaves alone and forgets.
    let old_tree = chroot.p(&format!("{}/{OLD}", release.modules_dir()));
    let out = chroot.sh(&format!("apt-get -q install -y /tmp/debs/linux-image-{OLD}.deb"));
    assert_eq!(modules(&old_tree), baseline, "{out}");
    let out = chroot.sh(&format!("apt-get -q remove -y linux-image-{OLD}"));
    assert!(!out.contains("limopack: error"), "{out}");
    assert!(out.contains(&format!("{OLD}: holds no module files")), "said as it is forgotten:\n{out}");
    assert!(modules(&old_tree).is_empty() && old_tree.join("modules.dep").exists(), "{out}");
    let status: Value = serde_json::from_str(&chroot.sh("limopack-hook status --json")).unwrap();
    assert!(status["kernels"].as_array().unwrap().iter().all(|k| k["version"] != OLD), "{status}");

    // With apt's cache emptied, the kernel's .deb is fetched at the installed version: the
    // removed kernel's leftovers stop nothing.
    let out = chroot.sh("apt-get clean && apt-get -q install -y /tmp/debs/sctp-user.deb");
    assert!(!out.contains("limopack: error"), "{out}");
    let sctp = release.ko("kernel/net/sctp/sctp");
    assert!(out.contains(&format!("limopack: {kver}: restored sctp ({sctp}) from a downloaded .deb")), "{out}");
    assert!(tree.join(&sctp).exists());
    chroot.sh("apt-get -q remove -y sctp-user");
    assert_eq!(modules(&tree), with_iso);

    // A broken declaration is loud, in dpkg's trigger and in apt's Post-Invoke alike, and
    // fails neither: the runs stop before deleting anything.
    let out = chroot.sh("dpkg -i /tmp/debs/broken.deb");
    assert!(out.contains("limopack: error: /usr/share/limopack/broken.yaml:2:1:"), "{out}");
    let out = chroot.sh("apt-get -q install -y --reinstall /tmp/debs/plain.deb");
    assert!(out.contains("limopack: error: /usr/share/limopack/broken.yaml:2:1:"), "{out}");
    assert_eq!(modules(&tree), with_iso);
    chroot.sh("dpkg -r broken");

    // Reinstalling the kernel unpacks every module again; its postinst.d hook prunes them
    // before initramfs-tools builds the initramfs, and the trigger after has nothing to do.
    let out = chroot.sh(&format!("apt-get -q install -y --reinstall {kpkg}"));
    assert_eq!(modules(&tree), with_iso, "{out}");
    let hook_at = position(&out, "/etc/kernel/postinst.d/dkms-limopack:");
    let pruned_at = position(&out, &format!("limopack: {kver}: kept"));
    assert!(hook_at < pruned_at, "{out}");
    assert!(pruned_at < position(&out, &format!("update-initramfs: Generating /boot/initrd.img-{kver}")), "{out}");
    assert_eq!(out.matches(&format!("limopack: {kver}: kept")).count(), 1, "{out}");

    // Removed, limopack says which packages' files stay pruned and how to get them back;
    // it leaves its apt snippet behind as a conffile, and apt still works.
    let out = chroot.sh("apt-get -q remove -y limopack");
    assert!(out.contains(&format!("limopack: files pruned from these packages stay pruned: {kpkg}")), "{out}");
    assert!(out.contains("apt-get install --reinstall PACKAGE"), "{out}");
    assert!(chroot.p("/etc/apt/apt.conf.d/80limopack").exists());
    assert!(!chroot.p("/usr/sbin/limopack-hook").exists());
    let out = chroot.sh("apt-get -q install -y --reinstall /tmp/debs/plain.deb");
    assert!(!out.contains("limopack"), "{out}");
    assert_eq!(modules(&tree), with_iso);
}
