//! The `limopack` command: each of the original limopack's commands, mapped onto
//! declarations, on small synthetic roots (`crate::support::sys`) and on a real Debian kernel with
//! modprobe as the oracle.

use std::collections::BTreeSet;

use fs_err as fs;
use limopack::read::index::ModuleIndex;
use crate::support::sys::*;
use crate::support::*;

const LOCAL: &str = "etc/limopack/modules.d/local.yaml";

/// Runs `limopack --root ROOT ARGS` and asserts success; stdout and stderr.
fn ok(sys: &Sys, args: &[&str]) -> (String, String) {
    let out = sys.run_limopack(args);
    assert!(out.ok, "limopack {args:?} failed:\n{}\n{}", out.stdout, out.stderr);
    (out.stdout, out.stderr)
}

/// Runs `limopack --root ROOT ARGS`, asserts failure; stderr.
fn fails(sys: &Sys, args: &[&str]) -> String {
    let out = sys.run_limopack(args);
    assert!(!out.ok, "limopack {args:?} should have failed:\n{}\n{}", out.stdout, out.stderr);
    out.stderr
}

/// `--use=a,b --install` adds one reference each, as the original counted; `--remove` takes
/// one away; the module stays while one is left and goes with the last, at the next sync.
#[test]
fn install_and_remove_count_references() {
    let sys = Sys::standard();
    let (out, _) = ok(&sys, &["--use=btusb,e1000e", "--install"]);
    assert!(out.contains("limopack: btusb: 1 reference in /etc/limopack/modules.d/local.yaml\n"), "{out}");
    let (out, _) = ok(&sys, &["--use=btusb", "-i"]);
    assert!(out.contains("limopack: btusb: 2 references in /etc/limopack/modules.d/local.yaml\n"), "{out}");
    assert!(out.contains("the next limopack-hook run keeps them"), "{out}");
    let text = fs::read_to_string(sys.p(LOCAL)).unwrap();
    assert!(text.contains("modules:\n  - btusb\n  - btusb\n  - e1000e\n"), "{text}");
    let plan = sys.plan(K);
    assert_eq!(plan["refcounts"]["btusb"], serde_json::json!(["/etc/limopack/modules.d/local.yaml"]));
    assert!(kept_names(&plan).contains("btusb") && kept_names(&plan).contains("bluetooth"));

    let (out, _) = ok(&sys, &["--use=btusb", "--remove"]);
    assert!(out.contains("limopack: btusb: 1 reference left in /etc/limopack/modules.d/local.yaml\n"), "{out}");
    assert!(kept_names(&sys.plan(K)).contains("btusb"), "one reference is left");
    let (out, _) = ok(&sys, &["--use=btusb,e1000e", "-r"]);
    assert!(out.contains("limopack: btusb: last reference taken out of /etc/limopack/modules.d/local.yaml"), "{out}");
    assert!(out.contains("limopack: removed /etc/limopack/modules.d/local.yaml: no references left"), "{out}");
    assert!(!sys.p(LOCAL).exists(), "an empty file would mask a vendor local.yaml");
    assert!(!kept_names(&sys.plan(K)).contains("btusb"));

    let (out, err) = ok(&sys, &["--use=btusb", "--remove"]);
    assert!(err.contains("limopack: warning: btusb: no reference in /etc/limopack/modules.d/local.yaml; nothing taken away"), "{err}");
    assert!(out.is_empty() && !sys.p(LOCAL).exists(), "{out}");
}

/// `--static` (`-is`) records a module for good; `--remove` skips it with a warning, as the
/// original did. A name no kernel has is warned about at its line; one that could never be
/// a module is refused, and nothing is written.
#[test]
fn static_modules_are_never_removed() {
    let sys = Sys::standard();
    let (out, _) = ok(&sys, &["--use=btrfs", "-is"]);
    assert!(out.contains("limopack: btrfs: static in /etc/limopack/modules.d/local.yaml: kept for good"), "{out}");
    let (_, err) = ok(&sys, &["--use=btrfs", "--remove"]);
    assert!(err.contains("limopack: warning: btrfs: static in /etc/limopack/modules.d/local.yaml; skipped"), "{err}");
    assert!(fs::read_to_string(sys.p(LOCAL)).unwrap().contains("static:\n  - btrfs\n"));
    assert_eq!(sys.plan(K)["kept"]["btrfs"]["reason"]["kind"], "static");

    let (_, err) = ok(&sys, &["--use=no-such-mod", "--install"]);
    assert_located(&err, "/etc/limopack/modules.d/local.yaml");
    assert!(err.contains("`no_such_mod` matches no module or built-in of 6.1.0-1-test"), "{err}");
    let before = fs::read_to_string(sys.p(LOCAL)).unwrap();
    let err = fails(&sys, &["--use=../../etc/passwd", "--install"]);
    assert!(err.contains("limopack: error: --use: `../../etc/passwd` is a path"), "{err}");
    assert_eq!(fs::read_to_string(sys.p(LOCAL)).unwrap(), before);

    let err = fails(&sys, &["--static", "--list"]);
    assert!(err.contains("error: the argument '--static' cannot be used with '--list'"), "--static goes with --install only:\n{err}");
    let err = fails(&sys, &["--pkname=x", "--list"]);
    assert!(err.contains("error: the argument '--pkname <PACKAGE>' cannot be used with '--list'"), "--pkname goes with --apply only:\n{err}");
}

/// `--apply --pkname=P` prunes only P's files, never touches dpkg's database and says so;
/// files of other packages stay, with what they need. A later `--apply` prunes the rest.
#[test]
fn apply_with_pkname_prunes_only_that_package() {
    const EXTRA: &str = "linux-modules-extra-6.1.0-1-test";
    let sys = Sys::standard();
    let mut kernel = sys.kernel_pkg(K);
    let mut extra = Pkg::installed(EXTRA, "6.1.99-1");
    extra.files = kernel.files.iter().filter(|f| f.contains("/snd-hda-codec")).cloned().collect();
    kernel.files.retain(|f| !f.contains("/snd-hda-codec"));
    sys.dpkg(&[kernel, extra]);
    let dpkg = tree_hash(&sys.p("var/lib/dpkg"));

    let (out, _) = ok(&sys, &["--apply", &format!("--pkname={EXTRA}")]);
    assert!(out.contains(&format!("limopack: note: the original limopack removed {EXTRA} from dpkg's database; this one never edits it")), "{out}");
    assert!(out.contains(&format!("limopack: {K}: kept 18 of 20 modules (1 declaration), pruned 2 files")), "{out}");
    let gone: BTreeSet<String> = &all_modules() - &sys.present(K, DEP);
    assert_eq!(gone, set(&["snd_hda_codec_generic", "snd_hda_codec_realtek"]));
    assert!(sys.m(K, "kernel/sound/pci/hda/snd-hda-codec.ko").is_file(), "snd-hda-intel, which stays, needs it");
    assert_eq!(tree_hash(&sys.p("var/lib/dpkg")), dpkg, "dpkg's database is never edited");

    let (out, _) = ok(&sys, &["--apply"]);
    assert!(out.contains(&format!("limopack: {K}: kept 5 of 20 modules (1 declaration), pruned 13 files")), "{out}");
    assert_eq!(sys.present(K, DEP), set(&["crc16", "crc32c_generic", "ext4", "jbd2", "mbcache"]));

    let err = fails(&sys, &["--apply", "--pkname=bash"]);
    assert!(err.contains("bash is not a module package"), "{err}");
}

/// `-i` without `--use` is a freeze, which under `--root` needs `--from-host`.
#[test]
fn install_without_use_freezes() {
    let sys = Sys::standard();
    let err = fails(&sys, &["-i"]);
    assert!(err.contains("not the running system: freeze reads /proc and /sys"), "{err}");
    let (out, err) = ok(&sys, &["-i", "--from-host"]);
    // This machine's devices match no module of the stand-in kernel: nothing new is found,
    // and the baseline is left as it is.
    assert!(
        out.contains("limopack: /etc/limopack/modules.d/baseline.yaml: nothing new to record (1 static entry); left as it is")
            && out.ends_with("limopack: this was `limopack-hook freeze`\n"),
        "{out}\n{err}"
    );
    // The standard baseline's ext4 stays, whatever this machine shows.
    let text = fs::read_to_string(sys.p("etc/limopack/modules.d/baseline.yaml")).unwrap();
    assert!(text.contains("\n  - ext4"), "{text}");
}

/// `--list` and `--tree` on a real kernel: each loaded module's file, and under it exactly
/// what `modprobe --show-depends` loads with it. Through the binary, under `--root` with
/// `--from-host`, the host's loaded modules are listed against the image's kernel.
#[test]
fn list_and_tree_match_modprobe() {
    // modprobe names only files that are there, so it reads the cached tree, which nothing
    // here writes to; the binary gets a root of its own.
    let (cached, kver) = real_kernel_tree(Release::Bookworm, "cloud-amd64");
    let index = ModuleIndex::load(&cached.join("lib/modules").join(&kver)).unwrap();
    let loaded = ["btrfs", "virtio_net", "sctp", "not_a_module"].map(String::from);

    let (paths, unknown) = limopack::admin::compat::list(&index, &loaded);
    assert_eq!(unknown, ["not_a_module"]);
    let mut expected: Vec<String> = loaded[..3].iter().map(|m| modprobe_show_depends(Release::Bookworm, &cached, &kver, m).unwrap().pop().unwrap()).collect();
    expected.sort();
    assert_eq!(paths, expected);

    let lines = limopack::admin::compat::tree(&index, &loaded);
    // Each block: a loaded module's line, then its indented dependencies with their marks.
    let mut blocks: Vec<Vec<(String, &str)>> = Vec::new();
    for line in &lines {
        let (path, mark) = line.trim().split_once(" (").unwrap_or((line.trim(), ""));
        match line.starts_with(' ') {
            false => blocks.push(vec![(path.to_string(), mark)]),
            true => blocks.last_mut().unwrap().push((path.to_string(), mark)),
        }
    }
    assert_eq!(blocks.len(), 3, "{lines:#?}");
    for block in &blocks {
        let module = limopack::name::module_name_of_path(&block[0].0).unwrap();
        let want: BTreeSet<String> = modprobe_show_depends(Release::Bookworm, &cached, &kver, &module).unwrap().into_iter().collect();
        let got: BTreeSet<String> = block.iter().map(|(p, _)| p.clone()).collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        assert!(missing.is_empty(), "the tree of {module} lacks what modprobe loads: {missing:?}\n{lines:#?}");
        // More only where a soft dependency's alias matches several modules, of which
        // modprobe loads the first: the tree, like the keep set, shows them all.
        for (path, mark) in block.iter().filter(|(p, _)| !want.contains(p)) {
            assert!(mark.starts_with("softdep") || mark.starts_with("weakdep"), "{path} in the tree of {module}, but not loaded by modprobe:\n{lines:#?}");
        }
        assert!(want.len() > 1, "{module} loads nothing with it: a weak check");
    }

    let sys = Sys::empty();
    assert_eq!(real_kernel_index_root(Release::Bookworm, "cloud-amd64", &sys.root), kver);
    let err = fails(&sys, &["--list"]);
    assert!(err.contains("--from-host"), "{err}");
    let (out, _) = ok(&sys, &["--list", "--from-host"]);
    let host = limopack::admin::compat::list(&index, &limopack::read::loaded::read_proc().unwrap()).0;
    assert_eq!(out.lines().collect::<Vec<_>>(), host);
    let (out, _) = ok(&sys, &["--tree", "--from-host"]);
    assert_eq!(out.lines().map(String::from).collect::<Vec<_>>(), limopack::admin::compat::tree(&index, &limopack::read::loaded::read_proc().unwrap()));
}
