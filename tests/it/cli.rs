//! End-to-end tests of `limopack-hook` on small synthetic roots (`crate::support::sys`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use fs_err as fs;
use crate::support::sys::*;
use crate::support::*;

/// Case 1: Installing limopack deletes nothing: no config means pruning is off, even with a
/// baseline and plenty to prune.
#[test]
fn default_config_deletes_nothing() {
    let sys = Sys::standard();
    fs::remove_file(sys.p("etc/limopack/limopack.yaml")).unwrap();
    let before = tree_hash(&sys.p("lib"));
    let out = sys.ok(&[]);
    assert_eq!(tree_hash(&sys.p("lib")), before);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K}: kept 5 of 20 modules (1 declaration), would prune 15 files"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("but pruning is off (prune: false in /etc/limopack/limopack.yaml)"),
        "{}",
        out.stdout
    );
    assert_eq!(sys.plan(K)["action"], "pruning-off");
    // The static entry is recorded even while pruning is off.
    assert_eq!(sys.state()["statics"][0]["entry"], "ext4");
    assert!(pruned_in(&sys.state(), K).is_empty());
}

/// Case 2: A kernel with no static module is left whole, even with pruning on.
#[test]
fn no_baseline_deletes_nothing() {
    let sys = Sys::standard();
    fs::remove_file(sys.p("etc/limopack/modules.d/baseline.yaml")).unwrap();
    sys.admin("local", "modules:\n  - btusb\n");
    let before = tree_hash(&sys.p("lib"));
    let out = sys.ok(&[]);
    assert_eq!(tree_hash(&sys.p("lib")), before);
    assert!(
        out.stdout.contains(&format!("limopack: {K}: no baseline (no static modules recorded for it); left whole (20 modules)")),
        "{}",
        out.stdout
    );
    let kplan = sys.plan(K);
    assert_eq!(kplan["action"], "no-baseline");
    assert_eq!(kplan["baseline"], false);
    assert!(kplan["prune"].as_array().unwrap().is_empty());
}

/// Case 3: The main job: keep the closure of what is declared, prune the rest of the kernel
/// package's module files, remove the folders left empty, leave the indexes alone.
#[test]
fn prune_keeps_the_closure_and_nothing_else() {
    let sys = Sys::standard();
    sys.vendor("bluez", "modules:\n  - btusb\n");
    sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("bluez")]);
    let tree = sys.tree(K);
    let index_before: Vec<(String, Vec<u8>)> = [
        "modules.dep",
        "modules.alias",
        "modules.softdep",
        "modules.builtin",
        "modules.order",
    ]
    .iter()
    .map(|f| (f.to_string(), fs::read(tree.join(f)).unwrap()))
    .collect();

    let plan = sys.plan(K);
    assert_eq!(kept_names(&plan), set(&KEPT_EXT4_BTUSB));
    assert_eq!(plan["action"], "prune");
    assert_eq!(plan["kept"]["crc32c_generic"]["reason"]["kind"], "pulled");
    assert_eq!(
        plan["kept"]["crc32c_generic"]["reason"]["edge"],
        "softdep-pre"
    );
    assert_eq!(plan["kept"]["crc32c_generic"]["reason"]["by"], "ext4");
    assert_eq!(plan["kept"]["ext4"]["reason"]["kind"], "static");
    assert_eq!(plan["kept"]["btusb"]["reason"]["kind"], "declared");
    assert_eq!(plan["kept"]["btusb"]["reason"]["package"], "bluez");
    assert_eq!(plan["kept"]["bluetooth"]["reason"]["kind"], "pulled");

    let out = sys.ok(&[]);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K}: kept 10 of 20 modules (2 declarations), pruned 10 files (4 KiB)"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(sys.present(K, DEP), set(&KEPT_EXT4_BTUSB));
    // Folders left empty are gone; folders still holding a kept module stay.
    for gone in [
        "kernel/sound",
        "kernel/fs/btrfs",
        "kernel/lib/raid6",
        "kernel/arch",
        "kernel/drivers/net",
    ] {
        assert!(!tree.join(gone).exists(), "{gone} should be gone");
    }
    for stays in [
        "kernel/crypto",
        "kernel/lib",
        "kernel/drivers/bluetooth",
        "kernel/fs/jbd2",
    ] {
        assert!(tree.join(stays).is_dir(), "{stays} should stay");
    }
    for (file, bytes) in &index_before {
        assert_eq!(&fs::read(tree.join(file)).unwrap(), bytes, "{file} changed");
    }

    let state = sys.state();
    let pruned = pruned_in(&state, K);
    assert_eq!(pruned.len(), 10, "{state:#}");
    let pruned_names: BTreeSet<String> = pruned.keys().map(|rel| name_of(rel)).collect();
    assert_eq!(pruned_names, &all_modules() - &set(&KEPT_EXT4_BTUSB));
    assert_eq!(pruned["kernel/fs/btrfs/btrfs.ko"]["package"], KPKG);
    assert_eq!(pruned["kernel/fs/btrfs/btrfs.ko"]["version"], "6.1.99-1");
    assert_eq!(
        state["kernels"][K]["refcounts"]["btusb"][0],
        "/usr/share/limopack/bluez.yaml"
    );
    assert!(!sys.p("var/lib/limopack/journal.json").exists());

    // A second run has nothing left to do.
    let out = sys.ok(&[]);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K}: kept 10 of 20 modules (2 declarations), nothing to prune"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(sys.present(K, DEP), set(&KEPT_EXT4_BTUSB));
}

/// Case 4: A dry run changes nothing at all, state included, and says what it would do.
#[test]
fn dry_run_changes_nothing() {
    let sys = Sys::standard();
    let before = tree_hash(&sys.root);
    let out = sys.ok(&["--dry-run"]);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K}: kept 5 of 20 modules (1 declaration), would prune 15 files (6 KiB)"
        )),
        "{}",
        out.stdout
    );
    let verbose = sys.ok(&["--dry-run", "-v"]);
    assert!(
        verbose.stdout.contains(&format!(
            "  would prune kernel/fs/btrfs/btrfs.ko ({KPKG}, 1 KiB)"
        )),
        "{}",
        verbose.stdout
    );
    let json = sys.ok(&["--dry-run", "--json"]).json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(kernel_of(&json, K)["prune"].as_array().unwrap().len(), 15);
    assert_eq!(tree_hash(&sys.root), before);
    assert!(!sys.p("var/lib/limopack").exists());
}

/// Case 5: A module stays while any active declaration names it, and goes when the last one does.
#[test]
fn refcount_follows_installed_declarations() {
    let sys = Sys::standard();
    sys.vendor("pkg-a", "modules:\n  - btrfs\n");
    sys.vendor("pkg-b", "modules:\n  - btrfs\n");
    sys.dpkg(&[
        sys.kernel_pkg(K),
        Sys::decl_pkg("pkg-a"),
        Sys::decl_pkg("pkg-b"),
    ]);
    let btrfs = sys.m(K, "kernel/fs/btrfs/btrfs.ko");

    sys.ok(&[]);
    assert!(btrfs.is_file());
    let plan = sys.plan(K);
    assert_eq!(
        plan["refcounts"]["btrfs"],
        serde_json::json!([
            "/usr/share/limopack/pkg-a.yaml",
            "/usr/share/limopack/pkg-b.yaml"
        ])
    );

    // pkg-a removed: dpkg deleted its file and keeps it as config-files.
    set_status(&sys.root, "pkg-a", "deinstall ok config-files");
    fs::remove_file(sys.p("usr/share/limopack/pkg-a.yaml")).unwrap();
    sys.ok(&[]);
    assert!(btrfs.is_file(), "btrfs must stay while pkg-b declares it");
    assert_eq!(
        sys.plan(K)["refcounts"]["btrfs"],
        serde_json::json!(["/usr/share/limopack/pkg-b.yaml"])
    );
    assert!(sys.m(K, "kernel/lib/raid6/raid6_pq.ko").is_file());

    // pkg-b in config-files with its file still on disk: the declaration does not count.
    set_status(&sys.root, "pkg-b", "deinstall ok config-files");
    let json = sys.ok(&["--dry-run", "--json"]).json();
    let decl = json["plan"]["declarations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/usr/share/limopack/pkg-b.yaml")
        .unwrap()
        .clone();
    assert_eq!(decl["active"], false, "{decl:#}");
    assert_eq!(decl["package"], "pkg-b");
    assert_eq!(decl["note"], "its package is config-files");
    let out = sys.ok(&[]);
    assert!(
        !btrfs.exists(),
        "btrfs must go once no declaration names it:\n{}",
        out.stdout
    );
    assert!(!sys.m(K, "kernel/lib/raid6/raid6_pq.ko").exists());
    assert!(sys.m(K, "kernel/fs/ext4/ext4.ko").is_file());
}

/// Case 6: The admin's file of the same name masks a vendor declaration: empty, or a symlink to
/// /dev/null.
#[test]
fn admin_file_masks_vendor_declaration() {
    for mask in ["empty", "devnull"] {
        let sys = Sys::standard();
        sys.vendor("bluez", "modules:\n  - btusb\n");
        sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("bluez")]);
        assert!(kept_names(&sys.plan(K)).contains("btusb"));
        match mask {
            "empty" => sys.admin("bluez", ""),
            _ => {
                std::os::unix::fs::symlink("/dev/null", sys.p("etc/limopack/modules.d/bluez.yaml"))
                    .unwrap()
            }
        }
        let json = sys.ok(&["--dry-run", "--json"]).json();
        let vendor = json["plan"]["declarations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == "/usr/share/limopack/bluez.yaml")
            .unwrap_or_else(|| panic!("{mask}: {json:#}"))
            .clone();
        assert_eq!(vendor["active"], false, "{mask}");
        assert!(
            vendor["note"].as_str().unwrap().contains("masked"),
            "{mask}"
        );
        sys.ok(&[]);
        assert!(
            !sys.m(K, "kernel/drivers/bluetooth/btusb.ko").exists(),
            "{mask}"
        );
        assert!(
            !sys.m(K, "kernel/net/bluetooth/bluetooth.ko").exists(),
            "{mask}"
        );
        assert!(sys.m(K, "kernel/fs/ext4/ext4.ko").is_file(), "{mask}");
    }
}

/// Case 7: A vendor declaration no package owns still counts (keeping more is safe), with a warning.
#[test]
fn unowned_vendor_declaration_counts_with_a_warning() {
    let sys = Sys::standard();
    sys.vendor("stray", "modules:\n  - btusb\n");
    let out = sys.ok(&[]);
    assert!(
        out.stderr.contains("limopack: warning: /usr/share/limopack/stray.yaml: no package owns this declaration; it counts anyway"),
        "{}",
        out.stderr
    );
    assert!(sys.m(K, "kernel/drivers/bluetooth/btusb.ko").is_file());
    assert!(sys.m(K, "kernel/drivers/bluetooth/btrtl.ko").is_file());
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
}

/// Case 8: Files no package owns (DKMS output) and files of a package that is not a module
/// package are never pruned, and what they depend on stays with them.
#[test]
fn unowned_and_foreign_files_are_never_pruned() {
    let sys = Sys::empty();
    sys.kernel(
        K,
        &format!("{DEP}updates/dkms/zfs.ko: kernel/lib/libcrc32c.ko\nkernel/drivers/misc/acme.ko:\n"),
    );
    sys.config("prune: true\ndepmod: false\n");
    sys.admin("baseline", "static:\n  - ext4\n");
    let mut kernel = sys.kernel_pkg(K);
    // acme.ko belongs to a package that is not a module package; zfs.ko to no package.
    kernel.files.retain(|f| !f.ends_with("/acme.ko"));
    let mut acme = Pkg::installed("acme-drivers", "2.0");
    acme.files
        .push(format!("/lib/modules/{K}/kernel/drivers/misc/acme.ko"));
    sys.dpkg(&[kernel, acme]);

    let plan = sys.plan(K);
    assert_eq!(
        strings(&plan["not_owned"]),
        set(&["kernel/drivers/misc/acme.ko", "updates/dkms/zfs.ko"])
    );
    sys.ok(&[]);
    for stays in ["updates/dkms/zfs.ko", "kernel/drivers/misc/acme.ko", "kernel/lib/libcrc32c.ko"] {
        assert!(sys.m(K, stays).is_file(), "{stays} must never be pruned");
    }
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    let out = sys.ok(&["explain", "zfs"]);
    assert!(out.stdout.contains("zfs: no package owns its file (DKMS or hand-built); kept with what it needs"), "{}", out.stdout);
    let out = sys.ok(&["explain", "libcrc32c"]);
    assert!(out.stdout.contains("libcrc32c: dependency of zfs"), "{}", out.stdout);
    let out = sys.ok(&["explain", "acme"]);
    assert!(out.stdout.contains("its file belongs to acme-drivers, which limopack does not prune"), "{}", out.stdout);
}

/// Case 8b: A file that a module package shares with another package stays (plan.rs means to
/// keep it: `owners.iter().all(is_module_package)`), but `Packages::query` only asks dpkg
/// about module packages and declaration owners, so the other owner is never seen and the
/// file is pruned.
#[test]
fn file_shared_with_another_package_is_never_pruned() {
    let sys = Sys::empty();
    sys.kernel(K, &format!("{DEP}kernel/drivers/misc/shared.ko:\n"));
    sys.config("prune: true\ndepmod: false\n");
    sys.admin("baseline", "static:\n  - ext4\n");
    let mut acme = Pkg::installed("acme-drivers", "2.0");
    acme.files
        .push(format!("/lib/modules/{K}/kernel/drivers/misc/shared.ko"));
    sys.dpkg(&[sys.kernel_pkg(K), acme]);

    let plan = sys.plan(K);
    assert_eq!(
        strings(&plan["not_owned"]),
        set(&["kernel/drivers/misc/shared.ko"]),
        "{:#}",
        plan["prune"]
    );
    sys.ok(&[]);
    assert!(sys.m(K, "kernel/drivers/misc/shared.ko").is_file());
}

/// Case 9: Symlinks in the tree are never followed or removed, even when an index names them.
#[test]
fn symlinks_out_of_the_tree_are_left_alone() {
    let sys = Sys::standard();
    let outside = sys.outside();
    fs::write(outside.join("outside.ko"), "precious\n").unwrap();
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("dir/inner.ko"), "precious too\n").unwrap();
    let tree = sys.tree(K);
    std::os::unix::fs::symlink(outside.join("outside.ko"), tree.join("kernel/evil.ko")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), tree.join("kernel/evildir")).unwrap();
    sys.index(
        K,
        &format!("{DEP}kernel/evil.ko:\nkernel/evildir/inner.ko:\n"),
    );
    // The kernel package even claims them.
    sys.dpkg(&[sys.kernel_pkg(K)]);
    let outside_before = tree_hash(&outside);

    let out = sys.ok(&[]);
    assert!(
        out.stderr
            .contains("kernel/evil.ko: not a regular file; left alone"),
        "{}",
        out.stderr
    );
    assert_eq!(tree_hash(&outside), outside_before);
    assert_eq!(
        fs::read_link(tree.join("kernel/evil.ko")).unwrap(),
        outside.join("outside.ko")
    );
    assert_eq!(
        fs::read_link(tree.join("kernel/evildir")).unwrap(),
        outside.join("dir")
    );
    // The rest was pruned as usual.
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    assert!(sys.m(K, "kernel/fs/ext4/ext4.ko").is_file());
}

/// Case 11: A name that matches no module is a warning on every run, not only the first.
#[test]
fn unmatched_name_warns_on_every_run() {
    let sys = Sys::standard();
    sys.admin("local", "modules:\n  - btusb\n  - no-such-mod\n");
    let warning = format!(
        "limopack: warning: {K}: /etc/limopack/modules.d/local.yaml:3: `no_such_mod` matches no module of {K}"
    );
    for run in 1..=2 {
        let out = sys.ok(&[]);
        assert!(out.stderr.contains(&warning), "run {run}:\n{}", out.stderr);
    }
    let out = sys.ok(&["--dry-run"]);
    assert!(out.stderr.contains(&warning), "dry run:\n{}", out.stderr);
    assert!(sys.m(K, "kernel/drivers/bluetooth/btusb.ko").is_file());
}

/// Two kernels, K and K2, with the same modules, both with their packages.
fn two_kernels() -> Sys {
    let sys = Sys::empty();
    sys.kernel(K, DEP);
    sys.kernel(K2, DEP);
    sys.config("prune: true\ndepmod: false\n");
    sys.admin("baseline", "static:\n  - ext4\n");
    sys.dpkg(&[sys.kernel_pkg(K), sys.kernel_pkg(K2)]);
    sys
}

/// Case 12: `kernels:` limits a declaration to the kernels its glob matches.
#[test]
fn kernels_glob_limits_a_declaration() {
    let sys = two_kernels();
    sys.admin("bt-61", "modules:\n  - btusb\nkernels: \"6.1.*\"\n");
    let json = sys.ok(&["--dry-run", "--json"]).json();
    assert_eq!(kernel_of(&json, K)["declarations"], 2);
    assert_eq!(kernel_of(&json, K2)["declarations"], 1);
    let out = sys.ok(&[]);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K}: kept 10 of 20 modules (2 declarations), pruned 10 files"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K2}: kept 5 of 20 modules (1 declaration), pruned 15 files"
        )),
        "{}",
        out.stdout
    );
    assert!(sys.m(K, "kernel/drivers/bluetooth/btusb.ko").is_file());
    assert!(!sys.m(K2, "kernel/drivers/bluetooth/btusb.ko").exists());
    assert!(sys.m(K2, "kernel/fs/ext4/ext4.ko").is_file());
}

/// Case 13: Entries are modprobe names: globs over names, aliases, and `-` equal to `_`.
#[test]
fn globs_aliases_and_dashes_resolve() {
    let sys = Sys::standard();
    sys.admin(
        "local",
        "modules:\n  - snd_hda_codec_*\n  - fs-btrfs\n  - crc32c-intel\n",
    );
    let plan = sys.plan(K);
    let kept = kept_names(&plan);
    for name in [
        "snd_hda_codec_realtek",
        "snd_hda_codec_generic",
        "snd_hda_codec",
        "btrfs",
        "raid6_pq",
        "xor",
        "libcrc32c",
        "crc32c_intel",
    ] {
        assert!(kept.contains(name), "{name} not kept: {kept:?}");
    }
    assert_eq!(plan["kept"]["btrfs"]["reason"]["entry"], "fs_btrfs");
    assert_eq!(
        plan["kept"]["crc32c_intel"]["path"],
        "kernel/arch/x86/crypto/crc32c-intel.ko"
    );
    assert_eq!(plan["kept"]["snd_hda_codec"]["reason"]["kind"], "pulled");
    sys.ok(&[]);
    assert!(sys.m(K, "kernel/arch/x86/crypto/crc32c-intel.ko").is_file());
    assert!(sys
        .m(K, "kernel/sound/pci/hda/snd-hda-codec-realtek.ko")
        .is_file());
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file());
    assert!(!sys.m(K, "kernel/sound/pci/hda/snd-hda-intel.ko").exists());
    assert!(!sys.m(K, "kernel/drivers/bluetooth/btusb.ko").exists());
    // A built-in name needs no file and is not a warning.
    sys.admin("builtin", "modules:\n  - loop\n");
    let out = sys.ok(&["--dry-run", "--json"]);
    assert_eq!(
        kernel_of(&out.json(), K)["builtin"],
        serde_json::json!(["loop"])
    );
    assert!(
        !out.stderr.contains("`loop` matches no module"),
        "{}",
        out.stderr
    );
}

/// Case 14: Static entries are recorded the first time they are seen and kept for good.
#[test]
fn static_entries_outlive_their_declaration() {
    let sys = Sys::standard();
    sys.vendor("nic", "static:\n  - e1000e\n");
    sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("nic")]);
    // Seen first while pruning is off: recorded all the same.
    sys.config("prune: false\ndepmod: false\n");
    sys.ok(&[]);
    let statics = sys.state()["statics"].clone();
    let entries: BTreeSet<String> = statics
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entry"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(entries, set(&["e1000e", "ext4"]), "{statics:#}");
    let e1000e = statics
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["entry"] == "e1000e")
        .unwrap();
    assert_eq!(e1000e["declaration"], "/usr/share/limopack/nic.yaml");

    // The package and its declaration go; pruning goes on.
    fs::remove_file(sys.p("usr/share/limopack/nic.yaml")).unwrap();
    sys.dpkg(&[sys.kernel_pkg(K)]);
    sys.config("prune: true\ndepmod: false\n");
    sys.ok(&[]);
    let e1000e = "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko";
    assert!(sys.m(K, e1000e).is_file());
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    let plan = sys.plan(K);
    assert_eq!(plan["kept"]["e1000e"]["reason"]["kind"], "static");
    sys.ok(&[]);
    assert!(sys.m(K, e1000e).is_file(), "kept on every later run");
}

/// Case 15: A journal left by a killed run is folded into the state by the next run.
#[test]
fn journal_of_a_killed_run_is_repaired() {
    let sys = Sys::standard();
    let rel = "kernel/fs/btrfs/btrfs.ko";
    // The killed run had deleted btrfs.ko and not yet saved its state.
    fs::remove_file(sys.m(K, rel)).unwrap();
    sys.write(
        "var/lib/limopack/journal.json",
        &serde_json::json!({
            "kernel": K,
            "files": {
                rel: {"module": "btrfs", "package": KPKG, "version": "6.1.99-1", "size": 5},
                "kernel/crypto/xor.ko": {"module": "xor", "package": KPKG, "version": "6.1.99-1", "size": 5},
            }
        })
        .to_string(),
    );
    let out = sys.ok(&[]);
    assert!(
        out.stderr
            .contains(&format!("{K}: completing a run that was interrupted")),
        "{}",
        out.stderr
    );
    assert!(!sys.p("var/lib/limopack/journal.json").exists());
    let state = sys.state();
    let pruned = pruned_in(&state, K);
    assert!(pruned.contains_key(rel), "{state:#}");
    assert_eq!(pruned[rel]["package"], KPKG);
    assert_eq!(pruned[rel]["size"], 5);
    // xor.ko was still on disk: this run pruned it, with its real size.
    assert_eq!(
        pruned["kernel/crypto/xor.ko"]["size"],
        fake_module("xor").len()
    );
    assert_eq!(
        sys.present(K, DEP),
        set(&["crc16", "crc32c_generic", "ext4", "jbd2", "mbcache"])
    );
    let status = sys.ok(&["status", "-v"]);
    assert!(
        status
            .stdout
            .contains(&format!("    {rel} ({KPKG} 6.1.99-1)")),
        "{}",
        status.stdout
    );
}

/// Case 16: `explain`, `status` and `--json` say why, what and who.
#[test]
fn explain_status_and_json() {
    let sys = Sys::standard();
    sys.vendor("bluez", "modules:\n  - btusb\n");
    sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("bluez")]);

    let out = sys.ok(&["explain", "crc32c_generic"]);
    let text = &out.stdout;
    assert!(
        text.contains(&format!(
            "{K}: crc32c_generic: kept (/lib/modules/{K}/kernel/crypto/crc32c_generic.ko)"
        )),
        "{text}"
    );
    let chain_at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    let first = chain_at("  crc32c_generic: soft dependency (pre:) of ext4");
    let second = chain_at("  ext4: static entry `ext4` of /etc/limopack/modules.d/baseline.yaml");
    assert!(first < second, "{text}");
    // By alias, and through a hard dependency to a vendor declaration.
    let out = sys.ok(&["explain", "crypto-crc32c"]);
    assert!(
        out.stdout.contains("crc32c_generic: kept"),
        "{}",
        out.stdout
    );
    let out = sys.ok(&["explain", "bluetooth"]);
    assert!(
        out.stdout.contains("  bluetooth: dependency of btusb"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "  btusb: declared as `btusb` in /usr/share/limopack/bluez.yaml (package bluez)"
        ),
        "{}",
        out.stdout
    );
    let out = sys.ok(&["explain", "btusb"]);
    assert!(
        out.stdout
            .contains("referenced by 1 declaration(s): /usr/share/limopack/bluez.yaml"),
        "{}",
        out.stdout
    );
    let out = sys.ok(&["explain", "btrfs"]);
    assert!(
        out.stdout.contains(&format!(
            "{K}: btrfs: would be pruned: no declaration names it"
        )),
        "{}",
        out.stdout
    );
    let out = sys.ok(&["explain", "loop"]);
    assert!(
        out.stdout.contains("built into the kernel"),
        "{}",
        out.stdout
    );
    // As modinfo does for a name it does not know, explain fails, saying so.
    let out = sys.fails(&["explain", "nonesuch"]);
    assert!(
        out.stdout.contains("no such module in this kernel"),
        "{}",
        out.stdout
    );

    let json = sys.ok(&["explain", "--json", "crc32c-generic"]).json();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["kernels"][0]["status"], "kept");
    assert_eq!(json["kernels"][0]["chain"][1]["module"], "ext4");
    let json = sys.ok(&["--json"]).json();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["dry_run"], false);
    assert_eq!(json["done"][0]["removed"], 10);
    assert_eq!(json["done"][0]["version"], K);

    let out = sys.ok(&["explain", "btrfs"]);
    assert!(
        out.stdout.contains(&format!(
            "{K}: btrfs: pruned (/lib/modules/{K}/kernel/fs/btrfs/btrfs.ko of {KPKG}); nothing needs it"
        )),
        "{}",
        out.stdout
    );
    let json = sys.ok(&["explain", "btrfs", "--json"]).json();
    assert_eq!(json["kernels"][0]["status"], "pruned");

    // Quiet by default: how many files of each package; each file under -v.
    let out = sys.ok(&["status"]);
    let head = format!("{K}\n  tree: /lib/modules/{K}\n  action: up-to-date\n  kept: 10 of 20 modules, 2 declarations\n  pruned: 10 files, 4 KiB\n");
    assert!(out.stdout.contains(&format!("{head}    10 files of {KPKG} 6.1.99-1\n")), "{}", out.stdout);
    assert!(!out.stdout.contains("kernel/fs/btrfs/btrfs.ko"), "{}", out.stdout);
    let out = sys.ok(&["status", "-v"]);
    assert!(out.stdout.contains(&format!("    kernel/fs/btrfs/btrfs.ko ({KPKG} 6.1.99-1)")), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "    kernel/sound/pci/hda/snd-hda-intel.ko ({KPKG} 6.1.99-1)"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("declaration /usr/share/limopack/bluez.yaml: active"),
        "{}",
        out.stdout
    );
    let json = sys.ok(&["status", "--json"]).json();
    assert_eq!(json["schema"], 1);
    assert_eq!(
        json["kernels"][0]["pruned"]["kernel/fs/btrfs/btrfs.ko"]["package"],
        KPKG
    );
    assert_eq!(json["kernels"][0]["pruned"].as_object().unwrap().len(), 10);
    let json = sys.ok(&["--dry-run", "--json"]).json();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["dry_run"], true);

    // -q prints nothing on success.
    let out = sys.ok(&["-q"]);
    assert_eq!(out.stdout, "");
}

/// Case 17: `--kernel` limits the run to one kernel; an unknown one is an error.
#[test]
fn kernel_option_limits_the_run() {
    let sys = two_kernels();
    let k_before = tree_hash(&sys.tree(K));
    let out = sys.ok(&["--kernel", K2]);
    assert!(
        out.stdout.contains(&format!(
            "limopack: {K2}: kept 5 of 20 modules (1 declaration), pruned 15 files"
        )),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&format!("limopack: {K}:")),
        "{}",
        out.stdout
    );
    assert_eq!(tree_hash(&sys.tree(K)), k_before);
    assert!(!sys.m(K2, "kernel/fs/btrfs/btrfs.ko").exists());
    assert!(pruned_in(&sys.state(), K).is_empty());

    let before = tree_hash(&sys.p("lib"));
    let out = sys.fails(&["--kernel", "9.9.9-nope"]);
    assert!(
        out.stderr.contains("9.9.9-nope: no such module tree"),
        "{}",
        out.stderr
    );
    sys.fails(&["--dry-run", "--kernel", "9.9.9-nope"]);
    assert_eq!(tree_hash(&sys.p("lib")), before);
}

/// Case 18: A module declared after it was pruned is kept but missing, and the run says how to
/// bring it back.
#[test]
fn module_declared_after_pruning_is_reported_missing() {
    let sys = Sys::standard();
    sys.ok(&[]);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    sys.admin("storage", "modules:\n  - btrfs\n");
    let out = sys.ok(&[]);
    // One line for the package, not one a module.
    assert!(
        out.stderr.contains(&format!(
            "limopack: warning: {K}: 4 kept modules are missing: btrfs, libcrc32c, raid6_pq, xor; `apt-get install --reinstall {KPKG}` brings them back\n"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("kept 9 of 20 modules (2 declarations), nothing to prune, 4 missing (see the warning)"), "{}", out.stdout);
    let plan = sys.plan(K);
    assert_eq!(plan["kept"]["btrfs"]["present"], false);
    assert_eq!(plan["kept"]["ext4"]["present"], true);
    let out = sys.ok(&["explain", "btrfs"]);
    assert!(
        out.stdout
            .contains(&format!("kept, but its file /lib/modules/{K}/kernel/fs/btrfs/btrfs.ko is missing (pruned earlier)")),
        "{}",
        out.stdout
    );
    let out = sys.ok(&["status"]);
    assert!(
        out.stdout
            .contains("  missing: btrfs (kernel/fs/btrfs/btrfs.ko)"),
        "{}",
        out.stdout
    );
}

/// A copy of the committed example root.
fn demo_sys() -> Sys {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-root");
    let tmp = tempfile::tempdir().unwrap();
    copy_root(&demo, tmp.path());
    // Git checks files out with the user's umask; limopack refuses group-writable ones.
    for file in [
        "etc/limopack/limopack.yaml",
        "etc/limopack/modules.d/baseline.yaml",
        "usr/share/limopack/bluez.yaml",
    ] {
        fs::set_permissions(
            tmp.path().join(file),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    Sys {
        root: tmp.path().to_path_buf(),
        _tmp: tmp,
    }
}

/// The committed example root gives a real plan, as the README promises.
#[test]
fn demo_root_dry_run_is_a_real_plan() {
    let sys = demo_sys();
    let before = tree_hash(&sys.root);
    let out = sys.ok(&["--dry-run"]);
    assert_eq!(
        out.stdout,
        "limopack: 6.1.0-99-demo-amd64: kept 18 of 28 modules (2 declarations), would prune 10 files (4 KiB)\n"
    );
    assert_eq!(out.stderr, "", "a clean demo has no warnings or notes");
    assert_eq!(tree_hash(&sys.root), before);
    let plan = sys.plan("6.1.0-99-demo-amd64");
    assert_eq!(plan["kept"]["btusb"]["reason"]["package"], "bluez");
    assert_eq!(plan["kept"]["crc32c_generic"]["reason"]["kind"], "pulled");
}

/// A run that prunes walks the tree again at its end and caches that walk, so the next run
/// reads the cache: it opens no folder of the tree. Before any real run there is no cache,
/// and a dry run walks.
#[test]
fn a_run_that_prunes_caches_the_tree_it_leaves() {
    let sys = demo_sys();
    let kernel_dir = "/lib/modules/6.1.0-99-demo-amd64/kernel";
    let opened = |log: &str| log.lines().filter(|l| l.contains(kernel_dir) && l.contains("O_DIRECTORY")).count();
    let (_, log) = sys.traced("openat", &["--dry-run"]);
    assert!(opened(&log) > 0, "no cache yet, so the dry run walks:\n{log}");
    let out = sys.ok(&[]);
    assert!(out.stdout.contains("pruned 10 files"), "{}", out.stdout);
    let (out, log) = sys.traced("openat", &["--dry-run"]);
    assert!(out.stdout.contains("nothing to prune"), "{}", out.stdout);
    assert_eq!(opened(&log), 0, "the pruned tree was walked again:\n{log}");
}

/// The README's first command, as written there: `cargo run` runs the package's default
/// binary, which must be the hook, with the arguments after `--`, from the repository, and
/// prints what the README says it prints.
#[test]
fn the_readmes_first_command_does_what_the_readme_says() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let command = readme.lines().find(|l| l.starts_with("cargo run ")).expect("the README's first command");
    let (cargo, args) = command.split_once(" -- ").expect("cargo run … -- ARGS");
    assert_eq!(cargo, "cargo run --release", "{command}");
    let manifest = fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    assert!(manifest.lines().any(|l| l == "default-run = \"limopack-hook\""), "cargo run must pick the hook");
    let out = Command::new(env!("CARGO_BIN_EXE_limopack-hook")).args(args.split_whitespace()).current_dir(repo).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    let promised = readme.split("The first prints one line per kernel, for example:\n\n```\n").nth(1).and_then(|r| r.split("```").next());
    assert_eq!(Some(stdout.as_str()), promised, "{command}");
}

/// A `modules.alias.bin` whose nodes do not decode gives way to the `modules.alias` that depmod
/// writes beside it: the run plans as from a sound index, and says which file it used. Without
/// that text too, the run stops, real or dry, with the files named and depmod as the mend, and
/// nothing is deleted: the softdep lookups of `crc32c` could not finish, so the plan may lack
/// modules that are needed.
#[test]
fn a_damaged_binary_alias_index_gives_way_to_its_text_or_stops_the_run() {
    let sys = demo_sys();
    let kver = "6.1.0-99-demo-amd64";
    let tree = sys.root.join("lib/modules").join(kver);
    let sound = sys.ok(&["--dry-run"]);
    // kmod's header (magic, version 2.1), and a root node with children that would start
    // where the file ends.
    let header: Vec<u8> = [0xB007_F457u32, 0x0002_0001, 0x2000_000C].iter().flat_map(|w| w.to_be_bytes()).collect();
    fs::write(tree.join("modules.alias.bin"), header).unwrap();
    let replaced = sys.ok(&["--dry-run"]);
    assert_eq!(replaced.stdout, sound.stdout);
    let warning = format!(
        "limopack: warning: {0}/modules.alias.bin: damaged: a lookup met a part that does not decode; {0}/modules.alias was used instead",
        tree.display()
    );
    assert!(replaced.stderr.contains(&warning), "{}", replaced.stderr);
    fs::remove_file(tree.join("modules.alias")).unwrap();
    let before = tree_hash(&tree);
    for args in [&["--dry-run"][..], &[]] {
        let out = sys.fails(args);
        for said in [
            format!("{}/modules.alias.bin: damaged: ", tree.display()),
            format!("({}/modules.alias: missing); run `depmod {kver}`", tree.display()),
        ] {
            assert!(out.stderr.contains(&said), "{args:?}: {}", out.stderr);
        }
        assert_eq!(tree_hash(&tree), before, "{args:?} changed the tree");
    }
}

/// Warnings name the line of the entry. `line_of` in declaration.rs takes the first line
/// that *contains* the entry, so `bt` is placed on the line of `btusb`.
#[test]
fn unmatched_name_warning_names_its_own_line() {
    let sys = Sys::standard();
    sys.admin("local", "modules:\n  - btusb\n  - bt\n");
    let out = sys.ok(&["--dry-run"]);
    assert!(
        out.stderr
            .contains("/etc/limopack/modules.d/local.yaml:3: `bt` matches no module"),
        "{}",
        out.stderr
    );
}

/// A journal of kernel K read by a run limited to K2 (`--kernel`) is folded in without
/// looking at K's tree (`absorb(journal, None)` counts every file as gone), so files still
/// on disk are recorded as pruned and `status` lists them.
#[test]
fn journal_of_another_kernel_records_only_files_that_are_gone() {
    let sys = two_kernels();
    sys.write(
        "var/lib/limopack/journal.json",
        &serde_json::json!({"kernel": K, "files": {"kernel/fs/btrfs/btrfs.ko": {
            "module": "btrfs", "package": KPKG, "version": "6.1.99-1", "size": 5}}})
        .to_string(),
    );
    sys.ok(&["--kernel", K2]);
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").is_file());
    let state = sys.state();
    assert!(
        !pruned_in(&state, K).contains_key("kernel/fs/btrfs/btrfs.ko"),
        "{state:#}"
    );
}

/// The standard root after a first prune, with btrfs then declared by the admin.
fn pruned_then_btrfs_declared(config: &str) -> Sys {
    let sys = Sys::standard();
    sys.config(config);
    sys.ok(&[]);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    sys.admin("storage", "modules:\n  - btrfs\n");
    sys
}

const BTRFS_CLOSURE: [&str; 4] = ["kernel/fs/btrfs/btrfs.ko", "kernel/lib/raid6/raid6_pq.ko", "kernel/crypto/xor.ko", "kernel/lib/libcrc32c.ko"];

/// A delete that fails stops the run: the other deleting thread stops at its next file, what
/// went is in the journal, and the next run, once the cause is gone, finishes the job.
#[test]
fn a_failed_archive_copy_stops_the_deletes() {
    let sys = Sys::standard();
    sys.config("prune: true\ndepmod: false\narchive: true\n");
    // The archive's folder for the kernel is a file: no copy can be made.
    let in_the_way = sys.p(&format!("var/lib/limopack/archive/{K}"));
    fs::create_dir_all(in_the_way.parent().unwrap()).unwrap();
    fs::write(&in_the_way, "in the way\n").unwrap();
    let before = tree_hash(&sys.tree(K));

    let out = sys.fails(&[]);
    assert!(out.stderr.contains(&format!("archive/{K}")), "{}", out.stderr);
    assert_eq!(tree_hash(&sys.tree(K)), before, "no file went without its copy");
    assert!(sys.p("var/lib/limopack/journal.json").exists());

    fs::remove_file(&in_the_way).unwrap();
    sys.ok(&[]);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    assert!(sys.p(&format!("var/lib/limopack/archive/{K}/kernel/fs/btrfs/btrfs.ko.zst")).exists());
    assert!(!sys.p("var/lib/limopack/journal.json").exists());
}

/// Case 19: with `archive: true`, pruned files are kept compressed and come back from there,
/// byte for byte, when something needs them again.
#[test]
fn archive_restores_what_was_pruned() {
    let sys = pruned_then_btrfs_declared("prune: true\ndepmod: false\narchive: true\n");
    let copy = sys.p(&format!("var/lib/limopack/archive/{K}/kernel/fs/btrfs/btrfs.ko.zst"));
    assert!(copy.exists());
    assert_eq!(pruned_in(&sys.state(), K)["kernel/fs/btrfs/btrfs.ko"]["archived"], true);

    let dry = sys.ok(&["--dry-run"]);
    assert!(dry.stdout.contains(", would restore 4 files"), "{}", dry.stdout);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists(), "a dry run restores nothing");

    let out = sys.ok(&[]);
    for rel in BTRFS_CLOSURE {
        assert_eq!(fs::read(sys.m(K, rel)).unwrap(), fake_module(&name_of(rel)));
        let mode = fs::metadata(sys.m(K, rel)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644, "{rel}");
        assert!(!pruned_in(&sys.state(), K).contains_key(rel), "{rel} is no longer pruned");
    }
    assert!(out.stdout.contains(&format!("limopack: {K}: restored btrfs (kernel/fs/btrfs/btrfs.ko) from limopack's archive")), "{}", out.stdout);
    assert!(!copy.exists(), "the copy goes once the file is back");
    assert!(!out.stderr.contains("missing"), "{}", out.stderr);
}

/// The kernel package of the standard root as a `.deb` in apt's cache, built by dpkg-deb from
/// the files as they are now, and its md5sums where dpkg keeps them.
fn cache_kernel_deb(sys: &Sys) {
    let staging = sys.outside().join("deb");
    fs::create_dir_all(staging.join("DEBIAN")).unwrap();
    fs::write(
        staging.join("DEBIAN/control"),
        format!("Package: {KPKG}\nVersion: 6.1.99-1\nArchitecture: amd64\nMaintainer: t <t@example.invalid>\nDescription: test kernel\n"),
    )
    .unwrap();
    let mut sums = String::new();
    for rel in dep_paths(DEP) {
        let body = fake_module(&name_of(&rel));
        let path = staging.join(format!("lib/modules/{K}/{rel}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &body).unwrap();
        let md5 = Command::new("md5sum").arg(&path).output().unwrap();
        let hash = String::from_utf8(md5.stdout).unwrap().split_whitespace().next().unwrap().to_string();
        sums.push_str(&format!("{hash}  lib/modules/{K}/{rel}\n"));
    }
    let cache = sys.p("var/cache/apt/archives");
    fs::create_dir_all(&cache).unwrap();
    let deb = cache.join(format!("{KPKG}_6.1.99-1_amd64.deb"));
    let built = Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&staging).arg(&deb).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    sys.write(&format!("var/lib/dpkg/info/{KPKG}.md5sums"), &sums);
}

/// Case 20: without an archive, a pruned file comes back from its package's `.deb` in apt's
/// cache at the installed version, checked against dpkg's md5sums.
#[test]
fn apt_cache_restores_what_was_pruned() {
    let sys = pruned_then_btrfs_declared("prune: true\ndepmod: false\n");
    cache_kernel_deb(&sys);
    let out = sys.ok(&[]);
    for rel in BTRFS_CLOSURE {
        assert!(sys.m(K, rel).exists(), "{rel}: {}", out.stderr);
    }
    assert!(out.stdout.contains(&format!("limopack: {K}: restored raid6_pq (kernel/lib/raid6/raid6_pq.ko) from apt's cache")), "{}", out.stdout);
    assert!(out.stdout.contains(", restored 4 files"), "{}", out.stdout);
    let status = sys.ok(&["status"]).stdout;
    assert!(!status.contains("missing:"), "{status}");
    // Only what was asked for came out of the package.
    assert!(!sys.m(K, "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko").exists());
}

/// Case 21: a file whose content is not what dpkg recorded is not put back; the run says why
/// and which reinstall brings it back, keeps the module listed as missing, and exits 0.
#[test]
fn restore_refuses_a_file_that_fails_md5sums() {
    let sys = pruned_then_btrfs_declared("prune: true\ndepmod: false\n");
    cache_kernel_deb(&sys);
    let sums = fs::read_to_string(sys.p(&format!("var/lib/dpkg/info/{KPKG}.md5sums"))).unwrap();
    let bad = sums
        .lines()
        .map(|l| match l.ends_with("kernel/fs/btrfs/btrfs.ko") {
            true => format!("00000000000000000000000000000000{}", &l[32..]),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    sys.write(&format!("var/lib/dpkg/info/{KPKG}.md5sums"), &format!("{bad}\n"));
    let out = sys.ok(&[]);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    assert!(sys.m(K, "kernel/lib/raid6/raid6_pq.ko").exists(), "the other files are fine");
    assert!(
        out.stderr.contains(&format!("limopack: warning: {K}: kept module btrfs is missing; it could not be restored: "))
            && out.stderr.contains("is not the 00000000000000000000000000000000 dpkg recorded; not restored")
            && out.stderr.contains(&format!("`apt-get install --reinstall {KPKG}` brings it back")),
        "{}",
        out.stderr
    );
    let leftovers: Vec<_> = fs::read_dir(sys.m(K, "kernel/fs/btrfs")).unwrap().collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind: {leftovers:?}");
    let status = sys.ok(&["status"]).stdout;
    assert!(status.contains("  missing: btrfs (kernel/fs/btrfs/btrfs.ko)"), "{status}");
}

/// Case 22: called by a hook, an error is printed and the exit status is 0, so a bad
/// declaration cannot fail apt or dpkg; a run with nothing to do prints nothing.
#[test]
fn hooks_get_errors_printed_and_exit_zero() {
    let sys = Sys::standard();
    let first = sys.ok(&["--called-by", "apt"]);
    assert!(first.stdout.contains("pruned"), "a change is reported: {}", first.stdout);
    let again = sys.ok(&["--called-by", "dpkg"]);
    assert_eq!(again.stdout, "", "nothing changed, nothing said");
    // Warnings still come on every run: here, that depmod is off in this fake tree.
    assert!(again.stderr.lines().all(|l| l.contains("depmod is off")), "{}", again.stderr);

    sys.admin("broken", "modules: [btusb\n");
    let before = tree_hash(&sys.tree(K));
    for hook in ["apt", "dpkg", "kernel"] {
        let out = sys.ok(&["--called-by", hook]);
        assert!(out.stderr.contains("limopack: error: ") && out.stderr.contains("/etc/limopack/modules.d/broken.yaml:2:1:"), "{}", out.stderr);
        assert!(out.stderr.contains("deleted nothing"), "{}", out.stderr);
    }
    sys.fails(&[]);
    assert_eq!(tree_hash(&sys.tree(K)), before);
}

/// Case 23: a kernel whose tree is gone (its package removed) is forgotten: its state, saved
/// index and archive go with it.
#[test]
fn a_removed_kernel_is_forgotten() {
    let sys = two_kernels();
    sys.config("prune: true\ndepmod: false\narchive: true\n");
    sys.ok(&[]);
    let archive = sys.p(&format!("var/lib/limopack/archive/{K2}"));
    let index = sys.p(&format!("var/lib/limopack/index/{K2}.index"));
    assert!(archive.exists() && index.exists());
    fs::remove_dir_all(sys.tree(K2)).unwrap();
    sys.ok(&[]);
    assert!(sys.state()["kernels"].get(K2).is_none(), "{:#}", sys.state());
    assert!(!archive.exists() && !index.exists());
    assert!(sys.state()["kernels"].get(K).is_some());
}

/// Case 24: under --root, the image's initramfs is not rebuilt from the host; the run says
/// so with the command of the image's own generator, unless the config says
/// `initramfs: never`, and says when the image has none.
#[test]
fn initramfs_of_an_image_is_left_to_the_image() {
    let sys = Sys::standard();
    sys.write(&format!("boot/initrd.img-{K}"), "initramfs");
    sys.write("usr/sbin/update-initramfs", "#!/bin/sh\n");
    let out = sys.ok(&[]);
    assert!(
        out.stdout.contains(&format!("limopack: {K}: /boot/initrd.img-{K} not refreshed under --root: run `update-initramfs -u -k {K}` in the image")),
        "{}",
        out.stdout
    );
    assert_eq!(fs::read_to_string(sys.p(&format!("boot/initrd.img-{K}"))).unwrap(), "initramfs");
    assert_eq!(sys.state()["kernels"][K].get("initramfs_pending"), None);

    let sys = Sys::standard();
    sys.write(&format!("boot/initrd.img-{K}"), "initramfs");
    sys.write("usr/bin/dracut", "#!/bin/sh\n");
    let out = sys.ok(&[]);
    let dracut = format!("run `dracut -q --force /boot/initrd.img-{K} {K}` in the image");
    assert!(out.stdout.contains(&dracut), "{}", out.stdout);

    let sys = Sys::standard();
    sys.write(&format!("boot/initrd.img-{K}"), "initramfs");
    let out = sys.ok(&[]);
    assert!(out.stdout.contains("nothing refreshes the initramfs: neither initramfs-tools nor dracut is installed"), "{}", out.stdout);

    let sys = Sys::standard();
    sys.config("prune: true\ndepmod: false\ninitramfs: never\n");
    sys.write(&format!("boot/initrd.img-{K}"), "initramfs");
    let out = sys.ok(&[]);
    assert!(!out.stdout.contains("initrd"), "{}", out.stdout);
}

/// A run of the binary seen by strace: the programs it started, whether it read dpkg's
/// database (what only a full run does), and what it printed.
fn spawned(sys: &Sys, args: &[&str]) -> (Vec<String>, bool, String) {
    let (out, log) = sys.traced("execve,openat", args);
    let programs = log
        .lines()
        .filter(|l| l.contains("execve(") && !l.contains("ENOENT"))
        .filter_map(|l| l.split('"').nth(1).map(|p| p.rsplit('/').next().unwrap().to_string()))
        .collect();
    let status = sys.p("var/lib/dpkg/status").display().to_string();
    let planned = log.lines().any(|l| l.contains("openat(") && l.contains(&format!("\"{status}\"")) && !l.contains("ENOENT"));
    (programs, planned, format!("{}{}", out.stdout, out.stderr))
}

/// Case 25: a run when nothing changed since the last run that found nothing to do starts no
/// program, reads nothing of dpkg's, and says what that run said, warnings included; any
/// change to an input means a full run again.
#[test]
fn an_unchanged_system_is_a_no_op() {
    let sys = Sys::standard();
    sys.admin("local", "modules:\n  - no-such-mod\n");
    sys.ok(&[]);
    let (_, planned, settled) = spawned(&sys, &[]);
    assert!(planned, "the run after a change plans again");
    let (programs, planned, again) = spawned(&sys, &[]);
    assert_eq!(programs, ["limopack-hook"], "{again}");
    assert!(!planned, "{again}");
    assert_eq!(again, settled, "the no-op says what the last run said");
    assert!(again.contains("`no_such_mod` matches no module"), "{again}");

    sys.admin("local", "modules:\n  - btusb\n");
    let (_, planned, out) = spawned(&sys, &[]);
    assert!(planned, "{out}");
    assert!(!sys.m(K, "kernel/drivers/bluetooth/btusb.ko").exists(), "{out}");
    // A changed dpkg database, a dry run and --json are full runs too.
    spawned(&sys, &[]);
    assert!(spawned(&sys, &["--json"]).1);
    assert!(spawned(&sys, &["--dry-run"]).1);
    sys.dpkg(&[sys.kernel_pkg(K), Sys::decl_pkg("bluez")]);
    assert!(spawned(&sys, &[]).1);
}

/// Case 26: `check` validates a packager's file with no system behind it, and against a
/// kernel under --root, every entry must resolve there.
#[test]
fn check_validates_declarations_for_packagers() {
    let sys = Sys::standard();
    let dir = sys.outside();
    let good = dir.join("good.limopack");
    fs::write(&good, "modules:\n  - btusb\n  - fs-btrfs\n  - snd_hda_*\nstatic: [loop]\n").unwrap();
    let typo = dir.join("typo.limopack");
    fs::write(&typo, "modules: [btusb]\nmodlues: [x]\n").unwrap();
    let unknown = dir.join("unknown.limopack");
    fs::write(&unknown, "modules:\n  - btusb\n  - bt-nosuch\n").unwrap();
    let run = |args: &[&str], files: &[&Path]| {
        let out = Command::new(env!("CARGO_BIN_EXE_limopack-hook")).args(args).arg("check").args(files).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(run(&[], &[&good, &unknown]), (Some(0), String::new()), "without a kernel, only the schema counts");
    let (code, stdout) = run(&[], &[&good, &typo]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, format!("{}:2:1: unknown field `modlues`, expected one of `modules`, `static`, `kernels`, `firmware`\n", typo.display()));
    let root = sys.root.display().to_string();
    assert_eq!(run(&["--root", &root], &[&good]).0, Some(0));
    let (code, stdout) = run(&["--root", &root, "--kernel", K], &[&unknown]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, format!("{}:3:5: `bt_nosuch` matches no module or built-in of {K}\n", unknown.display()));
}

/// Case 27: the original limopack's modules.active becomes an admin declaration that the next
/// run honours; a second import does not replace the first.
#[test]
fn import_active_moves_the_original_list_over() {
    let sys = Sys::standard();
    let active = sys.outside().join("modules.active");
    fs::write(&active, "ext4:S\nbtusb:2\ne1000e:1\n").unwrap();
    let dry = sys.ok(&["--dry-run", "import-active", active.to_str().unwrap()]);
    assert!(dry.stdout.contains("static:\n  - ext4\n") && dry.stdout.contains("modules:\n  - btusb\n  - e1000e\n"), "{}", dry.stdout);
    assert!(!sys.p("etc/limopack/modules.d/imported-active.yaml").exists(), "a dry run writes nothing");

    sys.ok(&["import-active", active.to_str().unwrap()]);
    let mode = fs::metadata(sys.p("etc/limopack/modules.d/imported-active.yaml")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    sys.ok(&[]);
    let kept = sys.present(K, DEP);
    for module in ["ext4", "btusb", "bluetooth", "e1000e"] {
        assert!(kept.contains(module), "{module} was pruned: {kept:?}");
    }
    assert!(!kept.contains("btrfs"));

    let again = sys.fails(&["import-active", active.to_str().unwrap()]);
    assert!(again.stderr.contains("imported-active.yaml: exists already"), "{}", again.stderr);
    fs::write(&active, "btusb:0\n").unwrap();
    let bad = sys.fails(&["--dry-run", "import-active", active.to_str().unwrap()]);
    assert!(bad.stderr.contains("modules.active:1:7: `0`: expected S (static) or a reference count above 0"), "{}", bad.stderr);
}

/// Case 28: every `--json` document follows doc/json/limopack-1.schema.json: a dry run, a
/// real run (with a restore), `status` and `explain`.
#[test]
fn json_output_follows_its_schema() {
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../doc/json/limopack-1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let check = |what: &str, doc: &serde_json::Value| {
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{doc:#}");
    };
    let sys = pruned_then_btrfs_declared("prune: true\ndepmod: false\narchive: true\n");
    sys.admin("local", "modules: [e1000e, no-such-mod]\n");
    let dry = sys.ok(&["--dry-run", "--json"]).json();
    assert!(!dry["plan"]["kernels"][0]["restore"].as_array().unwrap().is_empty());
    check("dry run", &dry);
    let real = sys.ok(&["--json"]).json();
    assert_eq!(real["done"][0]["restored"][0]["from"], "archive");
    check("real run", &real);
    let status = sys.ok(&["status", "--json"]).json();
    assert!(!status["kernels"][0]["pruned"].as_object().unwrap().is_empty());
    check("status", &status);
    for module in ["raid6_pq", "snd_hda_intel", "loop"] {
        check(&format!("explain {module}"), &sys.ok(&["explain", module, "--json"]).json());
    }
    check("explain nosuch", &sys.fails(&["explain", "nosuch", "--json"]).json());
    // The schema has teeth: a field it does not know is an error.
    let mut odd = status.clone();
    odd["kernels"][0]["surprise"] = serde_json::json!(1);
    assert!(!validator.is_valid(&odd));
}

/// An I/O error names its path and says what went wrong once: the library's error carries
/// the OS error in its message, not again as a cause for the binary's chain printer.
#[test]
fn io_error_names_the_path_and_the_cause_once() {
    let sys = Sys::empty();
    sys.write("lib/modules", "not a folder\n");
    let out = sys.fails(&["--dry-run"]);
    let line = out.stderr.lines().find(|l| l.starts_with("limopack: error: ")).unwrap();
    assert_eq!(line, format!("limopack: error: {}: Not a directory", sys.p("lib/modules").display()));
}
