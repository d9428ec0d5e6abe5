//! `limopack-hook freeze` on this machine's real /proc and /sys, against a real Debian kernel
//! (`--root` with `--from-host`), with kmod's modprobe as the oracle for every name.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use fs_err as fs;
use limopack::read::declaration::{Declaration, Origin};
use crate::support::sys::Sys;
use crate::support::*;

/// What `modprobe -R` resolves `alias` to in root's kernel: module names, built-ins left out.
fn resolve(root: &Path, kver: &str, builtin: &BTreeSet<String>, alias: &str) -> BTreeSet<String> {
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(root)
        .args(["-S", kver, "-C", "/dev/null", "-R", alias])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim().replace('-', "_")).filter(|m| !m.is_empty() && !builtin.contains(m)).collect()
}

fn statics(path: &Path) -> BTreeSet<String> {
    let declaration = Declaration::parse(path, &fs::read(path).unwrap(), Origin::Admin).unwrap();
    declaration.statics.iter().map(|e| e.text.clone()).collect()
}

/// Every `modalias` file under /sys/devices, read the plain way (no symlink followed).
fn host_modaliases() -> Vec<String> {
    walkdir::WalkDir::new("/sys/devices")
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "modalias" && e.file_type().is_file())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A freeze under `--root` records this machine's loaded modules and the drivers of its
/// devices and filesystems, each as modprobe resolves them in the image's kernel, and
/// nothing modprobe does not know; a second freeze drops nothing.
///
/// This machine (a Firecracker VM) has a kernel without module support (no /proc/modules, so
/// "loaded now: 0"), but its virtio devices, CPU and ext4 root match modules of Debian's
/// cloud kernel, which is what the device and filesystem groups are checked on.
#[test]
fn freeze_from_host_records_what_modprobe_resolves() {
    let sys = Sys::empty();
    let root = sys.root.clone();
    let kver = real_kernel_index_root(Release::Bookworm, "cloud-amd64", &root);
    let tree = root.join("lib/modules").join(&kver);
    // Built in: what modules.builtin lists, and what only modules.builtin.modinfo names, as
    // tracefs, which modprobe resolves `fs-tracefs` to where it is mounted.
    let mut builtin: BTreeSet<String> = fs::read_to_string(tree.join("modules.builtin"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().trim_end_matches(".ko").replace('-', "_"))
        .collect();
    let modinfo = fs::read(tree.join("modules.builtin.modinfo")).unwrap();
    builtin.extend(modinfo.split(|&b| b == 0).filter_map(|r| {
        let record = std::str::from_utf8(r).ok()?;
        Some(record.split_once('.')?.0.replace('-', "_"))
    }));
    let baseline = root.join("etc/limopack/modules.d/baseline.yaml");

    let stderr = sys.fails(&["freeze"]).stderr;
    assert!(stderr.contains("not the running system: freeze reads /proc and /sys") && stderr.contains("--from-host"), "{stderr}");
    let dry = sys.ok(&["--dry-run", "freeze", "--from-host"]).stdout;
    assert!(!baseline.exists(), "a dry run writes nothing");
    assert!(dry.contains("limopack: would write /etc/limopack/modules.d/baseline.yaml") && dry.contains("\nstatic:\n"), "{dry}");

    let out = sys.ok(&["freeze", "--from-host"]).stdout;
    assert_eq!(fs::metadata(&baseline).unwrap().permissions().mode() & 0o777, 0o644);
    let written = statics(&baseline);

    // The oracle: modprobe, for what this machine shows.
    let loaded = limopack::read::loaded::read_proc().unwrap();
    assert!(out.contains(&format!("  loaded now: {} module", loaded.len())), "{out}");
    let from_loaded: BTreeSet<String> = loaded.iter().flat_map(|m| resolve(&root, &kver, &builtin, m)).collect();
    let aliases = host_modaliases();
    assert!(out.contains(&format!("  device modaliases: {}, matching", aliases.len())), "{out}");
    let distinct: BTreeSet<&String> = aliases.iter().collect();
    let from_devices: BTreeSet<String> = distinct.iter().flat_map(|a| resolve(&root, &kver, &builtin, a)).collect();
    assert!(!from_devices.is_empty(), "no device of this machine has a module in {kver}: the device group goes unchecked");
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let fstypes: BTreeSet<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(2)).map(|t| t.split('.').next().unwrap()).collect();
    let from_filesystems: BTreeSet<String> = fstypes
        .iter()
        .flat_map(|t| {
            let direct = resolve(&root, &kver, &builtin, t);
            match direct.is_empty() {
                true => resolve(&root, &kver, &builtin, &format!("fs-{t}")),
                false => direct,
            }
        })
        .collect();
    for (group, expected) in [("loaded", &from_loaded), ("device", &from_devices), ("filesystem", &from_filesystems)] {
        let missing: Vec<&String> = expected.difference(&written).collect();
        assert!(missing.is_empty(), "{group} modules missing from the baseline: {missing:?}\n{out}");
    }
    // Nothing invented: each entry is a module modprobe finds, and one the groups account
    // for (the block group's are printed on its line).
    let block_line = out.lines().find_map(|l| l.strip_prefix("  block devices of /, /usr and swap: ")).unwrap();
    let from_block: BTreeSet<&str> = block_line.split(" (").next().unwrap().split(", ").collect();
    for entry in &written {
        assert_eq!(resolve(&root, &kver, &builtin, entry), [entry.clone()].into(), "{entry}");
        let accounted = from_loaded.contains(entry) || from_devices.contains(entry) || from_filesystems.contains(entry) || from_block.contains(entry.as_str());
        assert!(accounted, "{entry} is in the baseline for no reason the oracle sees:\n{out}");
    }

    // A second freeze keeps what it no longer sees, and says so; finding nothing new, it
    // leaves the file as it is, entries added by hand included.
    let text = fs::read_to_string(&baseline).unwrap();
    let edited = text.replace("static:\n", "static:\n  - btrfs\n  - \"fs-xfs\"\n");
    fs::write(&baseline, &edited).unwrap();
    let again = sys.ok(&["freeze", "--from-host"]).stdout;
    assert!(again.contains("  kept from /etc/limopack/modules.d/baseline.yaml, not seen now: btrfs, fs_xfs\n"), "{again}");
    assert!(again.contains("limopack: /etc/limopack/modules.d/baseline.yaml: nothing new to record"), "{again}");
    assert_eq!(fs::read_to_string(&baseline).unwrap(), edited, "not rewritten");
    // Something new (a module this machine shows, taken out by hand) is written with a stamp.
    let first = written.iter().next().unwrap().clone();
    fs::write(&baseline, edited.replace(&format!("  - {first}  #"), "  #")).unwrap();
    let again = sys.ok(&["freeze", "--from-host"]).stdout;
    assert!(again.contains("(1 new)"), "{again}");
    assert_eq!(statics(&baseline), &written | &["btrfs".to_string(), "fs_xfs".to_string()].into());
    let text = fs::read_to_string(&baseline).unwrap();
    assert_eq!(text.matches("\n# Frozen ").count(), 2, "each freeze that writes is stamped:\n{text}");
    assert!(text.contains("  - btrfs  # kept: not seen by the last freeze\n"), "{text}");
}
