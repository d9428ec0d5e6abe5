//! An admin's daily life with limopack: old kernels removed, static entries taken back,
//! restores that no bad file blocks, and answers that are quiet by default and honest.

use fs_err as fs;

use crate::support::sys::*;
use crate::support::*;

/// Two kernels pruned, then the old one removed as `apt autoremove` removes it: dpkg takes
/// its module files and its record away and leaves depmod's index files in its folder.
fn with_an_old_kernel_removed() -> Sys {
    let sys = Sys::standard();
    sys.config("prune: true\ndepmod: false\narchive: true\n");
    sys.kernel(K2, DEP);
    let kernel = sys.kernel_pkg(K);
    sys.dpkg(&[kernel.clone(), sys.kernel_pkg(K2)]);
    sys.ok(&[]);
    assert!(sys.state()["kernels"].get(K2).is_some());
    fs::remove_dir_all(sys.m(K2, "kernel")).unwrap();
    sys.dpkg(&[kernel]);
    sys
}

/// Issue 20, 1: a removed kernel's folder is left alone and forgotten, and the other
/// kernels are served: a module declared after the removal is restored.
#[test]
fn a_removed_kernel_never_stops_the_others() {
    let sys = with_an_old_kernel_removed();
    let leftover = tree_hash(&sys.tree(K2));
    sys.admin("storage", "modules: [btrfs]\n");
    let out = sys.ok(&[]);
    assert!(out.stderr.contains(&format!("{K2}: holds no module files, as a removed kernel leaves its folder; left alone")), "{}", out.stderr);
    assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
    assert_eq!(tree_hash(&sys.tree(K2)), leftover, "the leftover folder is not touched");
    assert!(sys.state()["kernels"].get(K2).is_none(), "{:#}", sys.state());
    assert!(!sys.p(&format!("var/lib/limopack/archive/{K2}")).exists(), "its archive copies went with it");
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file(), "btrfs came back for the kernel still installed:\n{}", out.stdout);
    for command in [&["status"][..], &["explain", "ext4"], &["--dry-run"], &["--json", "--dry-run"]] {
        sys.ok(command);
    }
}
