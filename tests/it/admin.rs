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
    // Said once: the folder stays until its package is purged, and later runs are quiet.
    let out = sys.ok(&["--dry-run"]);
    assert!(!out.stderr.contains(K2), "{}", out.stderr);
    for command in [&["status"][..], &["explain", "ext4"], &["--dry-run"], &["--json", "--dry-run"]] {
        sys.ok(command);
    }
}

/// Issue 20, 2: a static entry outlives its file until it is forgotten: `explain` says so and
/// how; `forget` refuses while a file still names it, says what the next run prunes, and a
/// declaration of the entry again undoes it. A no-op run sees the state change.
#[test]
fn a_static_entry_is_taken_back_with_forget() {
    let sys = Sys::standard();
    sys.admin("storage", "static: [btrfs]\n");
    sys.ok(&[]);
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file());

    let out = sys.fails(&["forget", "btrfs"]);
    assert!(out.stderr.contains("storage.yaml:1:10: `btrfs` is still a static entry here"), "{}", out.stderr);
    fs::remove_file(sys.p("etc/limopack/modules.d/storage.yaml")).unwrap();
    let out = sys.ok(&["explain", "btrfs"]);
    assert!(
        out.stdout.contains("btrfs: static entry `btrfs`, recorded from /etc/limopack/modules.d/storage.yaml, which names it no more; `limopack-hook forget btrfs` takes it back"),
        "{}",
        out.stdout
    );
    // Nothing changed since the last run but the file: the no-op check sees that too.
    sys.ok(&[]);
    let out = sys.ok(&["--dry-run", "forget", "btrfs"]);
    assert!(out.stdout.contains("limopack: forgot static entry `btrfs` (recorded from /etc/limopack/modules.d/storage.yaml)"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("limopack: {K}: the next run would prune 4 more files (2 KiB): btrfs, raid6_pq, xor, libcrc32c")), "{}", out.stdout);
    assert!(sys.state()["statics"].as_array().unwrap().iter().any(|r| r["entry"] == "btrfs"), "a dry run changes nothing");

    let out = sys.ok(&["forget", "btrfs"]);
    assert!(out.stdout.contains(&format!("limopack: {K}: the next run prunes 4 more files")), "{}", out.stdout);
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file(), "forget itself deletes nothing");
    let out = sys.ok(&[]);
    assert!(out.stdout.contains("pruned 4 files"), "the no-op check saw the state change:\n{}", out.stdout);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    let out = sys.fails(&["forget", "btrfs"]);
    assert!(out.stderr.contains("`btrfs` is not a recorded static entry; recorded: ext4"), "{}", out.stderr);
}

/// Issue 20, 2: forget for one kernel keeps the entry for the others; declaring the entry
/// again undoes it.
#[test]
fn forget_for_one_kernel_and_declared_again() {
    let sys = Sys::standard();
    sys.kernel(K2, DEP);
    sys.dpkg(&[sys.kernel_pkg(K), sys.kernel_pkg(K2)]);
    sys.admin("storage", "static: [btrfs]\n");
    sys.ok(&[]);
    fs::remove_file(sys.p("etc/limopack/modules.d/storage.yaml")).unwrap();
    let out = sys.ok(&["--kernel", K2, "forget", "btrfs"]);
    assert!(out.stdout.contains(&format!("forgot static entry `btrfs` (recorded from /etc/limopack/modules.d/storage.yaml) for {K2}")), "{}", out.stdout);
    sys.ok(&[]);
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file(), "kept for the other kernel");
    assert!(!sys.m(K2, "kernel/fs/btrfs/btrfs.ko").exists(), "pruned for the kernel it was forgotten for");
    sys.admin("storage", "static: [btrfs]\n");
    let plan = sys.plan(K2);
    assert_eq!(plan["kept"]["btrfs"]["reason"]["kind"], "static", "declared again, it is kept again");
}

/// Issue 20, 3: a declaration that cannot be read (here one others may write) stops pruning,
/// not restoring: what the valid declarations need comes back, `status` still shows the
/// whole picture, and each says the error.
#[test]
fn a_bad_declaration_never_blocks_restores() {
    use std::os::unix::fs::PermissionsExt;
    let sys = Sys::standard();
    sys.config("prune: true\ndepmod: false\narchive: true\n");
    let kernel = sys.kernel_pkg(K);
    sys.ok(&[]);
    sys.vendor("bluez", "modules: [btusb]\n");
    fs::set_permissions(sys.p("usr/share/limopack/bluez.yaml"), std::fs::Permissions::from_mode(0o664)).unwrap();
    sys.dpkg(&[kernel, Sys::decl_pkg("bluez")]);
    sys.admin("storage", "modules: [btrfs]\n");
    let before = sys.present(K, DEP);
    let out = sys.fails(&[]);
    assert!(out.stderr.contains("bluez.yaml: is writable by group or others (mode 664)"), "{}", out.stderr);
    assert!(out.stderr.contains("1 declaration file cannot be read: nothing is pruned until it is fixed"), "{}", out.stderr);
    assert!(out.stdout.contains("restored 4 files"), "{}", out.stdout);
    let after = sys.present(K, DEP);
    assert!(after.is_superset(&before) && after.contains("btrfs"), "only restored, nothing pruned: {after:?}");
    let out = sys.fails(&["status"]);
    assert!(out.stdout.contains(&format!("{K}\n  tree: /lib/modules/{K}\n  action: up-to-date")), "{}", out.stdout);
    assert!(out.stderr.contains("bluez.yaml: is writable by group or others"), "{}", out.stderr);
    let out = sys.run(&["--called-by", "apt"]);
    assert!(out.ok, "under apt the status is 0:\n{}", out.stderr);
}

/// Issue 20, 6: honest answers. explain fails for a name no kernel knows, even one left
/// whole; a kernel left whole is shown as whole; a mask that prunes a module is named; a
/// root with no module tree is said once and gets nothing made.
#[test]
fn answers_are_honest() {
    let sys = Sys::standard();
    sys.admin("baseline", "");
    let out = sys.fails(&["explain", "nosuchmodule"]);
    assert!(out.stderr.contains("`nosuchmodule` is no module, alias or built-in of any kernel here"), "{}", out.stderr);
    assert!(out.stdout.contains("nosuchmodule: no such module in this kernel"), "{}", out.stdout);
    let out = sys.ok(&["explain", "btrfs"]);
    assert!(out.stdout.contains("btrfs: stays: this kernel has no baseline, so it is left whole"), "{}", out.stdout);
    let out = sys.ok(&["status"]);
    assert!(out.stdout.contains("  kept: all 20 modules, as the kernel has no baseline and is left whole"), "{}", out.stdout);

    sys.admin("baseline", "static: [ext4]\n");
    sys.vendor("bluez", "modules: [btusb]\n");
    sys.admin("bluez", "# not on this machine\n");
    sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("bluez")]);
    let out = sys.ok(&["explain", "btusb"]);
    assert!(
        out.stdout.contains("/usr/share/limopack/bluez.yaml names it, but is masked by /etc/limopack/modules.d/bluez.yaml"),
        "{}",
        out.stdout
    );

    let empty = Sys::empty();
    for args in [&[][..], &["--dry-run"], &["status"]] {
        let out = empty.ok(args);
        assert_eq!(out.stdout, "limopack: no module tree under /lib/modules or /usr/lib/modules; nothing to do\n", "{args:?}");
    }
    assert!(!empty.p("var/lib/limopack").exists(), "nothing was made");
    assert_eq!(empty.ok(&["--called-by", "apt"]).stdout, "", "quiet under apt");
}

/// Issue 20, 8: read-only commands work for a user who is not root on what it may read (the
/// state is readable as dpkg's status is); a run that changes files says plainly that it
/// needs root; options a command would ignore are usage errors; no Rust error text leaks.
#[test]
fn conventions_of_a_debian_tool() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let sys = Sys::standard();
    sys.ok(&[]);
    // The root must be reachable by that user: the test's own folder is root's alone.
    let top = sys.root.parent().unwrap();
    fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", env!("CARGO_BIN_EXE_limopack-hook"), "--root"])
            .arg(&sys.root)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for args in [&["--dry-run"][..], &["status"], &["explain", "ext4"]] {
        let (code, stdout, stderr) = as_nobody(args);
        assert_eq!(code, Some(0), "{args:?}: {stdout}{stderr}");
        assert!(!stderr.contains("ermission denied"), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = as_nobody(&[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("a run that changes the system needs root (--dry-run, status and explain do not)"), "{stderr}");

    for (args, option) in [(&["--json", "freeze"][..], "--json"), (&["status", "--dry-run"], "--dry-run"), (&["check", "-q", "x.yaml"], "--quiet"), (&["--kernel", K, "import-active", "x"], "--kernel")] {
        let out = sys.run(args);
        assert!(!out.ok && out.stderr.contains(&format!("error: {option} means nothing to")), "{args:?}: {}", out.stderr);
    }
    let usage = Command::new(env!("CARGO_BIN_EXE_limopack-hook")).args(["--json", "freeze"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "a usage error exits 2, as clap's own do");

    let out = sys.run(&["check", "/nonexistent.yaml"]);
    assert!(out.stdout.contains("/nonexistent.yaml: No such file or directory\n"), "{}", out.stdout);
    assert!(!out.stdout.contains("os error") && !out.stdout.contains(":0:0:"), "{}", out.stdout);
}
