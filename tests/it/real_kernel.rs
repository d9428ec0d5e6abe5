//! Integration tests against real Debian kernel trees (the `linux-image-amd64` and
//! `linux-image-cloud-amd64` packages of bookworm, and for the modprobe oracle over every
//! module those of trixie too, unpacked once into the shared support cache).
//!
//! Each test copies the pristine root it needs into a tempdir of its own before anything is
//! changed, so the tests can run in parallel with each other and with other test binaries.
//! The oracle for "what must stay" is kmod itself: `modprobe --show-depends`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fs_err as fs;
use serde_json::Value;
use crate::support::*;
use walkdir::WalkDir;

const GENERIC: &str = "amd64";
const CLOUD: &str = "cloud-amd64";

const VENDOR_DECL: &str = "/usr/share/limopack/demo-tools.yaml";
const BASELINE: &str = "/etc/limopack/modules.d/baseline.yaml";
const CONFIG: &str = "/etc/limopack/limopack.yaml";
const STATE: &str = "var/lib/limopack/state.json";

/// `modules:` of the demo-tools package: names with dashes, aliases, a glob.
const DEMO_TOOLS: &str = "\
# What the demo-tools package needs.
modules:
  - crc32c-intel
  - fs-btrfs
  - nf_conntrack_*
  - usb-storage
  - xhci-pci
  - snd-hda-intel
  - btusb
  - iwlwifi
  - wireguard
  - 8021q
  - dm-crypt
  - fs-vfat
";

/// The admin's vital set for the generic kernel.
const BASELINE_GENERIC: &str = "\
static:
  - ext4
  - virtio_blk
  - virtio-net
  - virtio_pci
  - virtio_scsi
  - e1000e
  - ahci
  - sd_mod
  - xfs
  - nvme
  - loop
  - overlay
";

/// A module of the generic tree that nothing above needs; the tests that want a module file
/// no package owns take this one out of the kernel package's file list.
const UNOWNED: &str = "kernel/fs/nilfs2/nilfs2.ko";

// ---------------------------------------------------------------------------
// Helpers.

/// A private copy of a real kernel root, with a dpkg database holding its kernel package.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    kver: String,
    kernel_pkg: Pkg,
}

impl Fixture {
    fn new(release: Release, flavour: &str) -> Fixture {
        Fixture::made_by(copy_root, release, flavour)
    }

    /// With the root made by `copy_root` or `link_root`. Beside the cache, so that a linked
    /// root can be.
    fn made_by(make: fn(&Path, &Path), release: Release, flavour: &str) -> Fixture {
        let (pristine, kver) = real_kernel_tree(release, flavour);
        let tmp = tempfile::Builder::new()
            .prefix("limopack-real-")
            .tempdir_in(cache_dir())
            .unwrap();
        let root = tmp.path().join("root");
        make(&pristine, &root);
        let kernel_pkg = real_kernel_pkg(release, &root, flavour);
        write_dpkg_db(&root, std::slice::from_ref(&kernel_pkg));
        Fixture {
            _tmp: tmp,
            root,
            kver,
            kernel_pkg,
        }
    }

    fn tree(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }

    /// The generic root of tests 2, 5 and 6: demo-tools installed, the admin's baseline, and
    /// pruning on. With `unowned`, `UNOWNED` is dropped from the kernel package's file list.
    /// Test 5 makes one for each of its 50-odd trials, so its files are links to the cached
    /// tree's (`link_root`): the runs only unlink and rename in it, as the others do.
    fn demo(unowned: bool) -> Fixture {
        let mut fx = Fixture::made_by(link_root, Release::Bookworm, GENERIC);
        if unowned {
            let path = format!("/lib/modules/{}/{UNOWNED}", fx.kver);
            let before = fx.kernel_pkg.files.len();
            fx.kernel_pkg.files.retain(|f| *f != path);
            assert_eq!(fx.kernel_pkg.files.len(), before - 1, "{path} not in the kernel package");
        }
        let mut demo = Pkg::installed("demo-tools", "1.0-1");
        demo.files.push(VENDOR_DECL.to_owned());
        write_dpkg_db(&fx.root, &[fx.kernel_pkg.clone(), demo]);
        write_file(&fx.root, VENDOR_DECL, DEMO_TOOLS);
        write_file(&fx.root, BASELINE, BASELINE_GENERIC);
        write_file(&fx.root, CONFIG, "prune: true\n");
        fx
    }

    fn run(&self, args: &[&str]) -> Output {
        hook(&self.root, args)
    }

    /// `--dry-run --json`, which must succeed; the kernel's plan.
    fn dry_plan(&self) -> Value {
        let out = self.run(&["--dry-run", "--json"]);
        assert_ok(&out, "dry run");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        kernel_plan(&json, &self.kver).clone()
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&fs::read(self.root.join(STATE)).unwrap()).unwrap()
    }
}

/// Writes an in-root file with mode 0644, creating its folders.
fn write_file(root: &Path, abs: &str, text: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn hook_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_limopack-hook"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        // Either would point dpkg-query away from the root's database.
        .env_remove("DPKG_ADMINDIR")
        .env_remove("DPKG_ROOT")
        .env("LC_ALL", "C");
    cmd
}

fn hook(root: &Path, args: &[&str]) -> Output {
    hook_command(root, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn kernel_plan<'a>(json: &'a Value, kver: &str) -> &'a Value {
    json["plan"]["kernels"]
        .as_array()
        .expect("plan.kernels is an array")
        .iter()
        .find(|k| k["version"] == kver)
        .unwrap_or_else(|| panic!("no plan for {kver} in {json:#}"))
}

/// `kept` of a kernel plan: module name to path.
fn kept_paths(kplan: &Value) -> BTreeMap<String, String> {
    kplan["kept"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(m, k)| (m.clone(), k["path"].as_str().unwrap().to_owned()))
        .collect()
}

fn prune_paths(kplan: &Value) -> BTreeSet<String> {
    kplan["prune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Regular files under `tree`, relative to it; `modules_only` keeps the `.ko*` ones.
fn files_of(tree: &Path, modules_only: bool) -> BTreeSet<String> {
    WalkDir::new(tree)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(tree).unwrap().to_str().unwrap().to_owned())
        .filter(|rel| !modules_only || is_module(rel))
        .collect()
}

fn is_module(rel: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| rel.ends_with(s))
}

/// Module names of a tree's modules.dep (normalised as kmod does).
fn dep_names(root: &Path, kver: &str) -> Vec<String> {
    modules_dep_paths(root, kver)
        .iter()
        .map(|p| module_name(p))
        .collect()
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap();
    let stem = base.split(".ko").next().unwrap();
    stem.replace('-', "_")
}

/// Every violation of "each file bookworm's modprobe names for `names` exists", one line each.
fn modprobe_violations(root: &Path, kver: &str, names: &[String]) -> Vec<String> {
    let tree = root.join("lib/modules").join(kver);
    let mut bad = Vec::new();
    for (name, deps) in modprobe_show_depends_many(Release::Bookworm, root, kver, names) {
        match deps {
            Err(e) => bad.push(format!("{name}: modprobe failed: {e}")),
            Ok(paths) => {
                for p in paths.iter().filter(|p| !tree.join(p).is_file()) {
                    bad.push(format!("{name}: modprobe would load {p}, which is gone"));
                }
            }
        }
    }
    bad
}

/// Every path of modules.dep that is not a file on disk.
fn dangling_dep_paths(root: &Path, kver: &str) -> Vec<String> {
    let tree = root.join("lib/modules").join(kver);
    modules_dep_paths(root, kver)
        .into_iter()
        .filter(|p| !tree.join(p).is_file())
        .collect()
}

/// The index files (`modules.*`) of a tree whose content differs from what `depmod` writes
/// for the tree as it is now, run the way limopack runs it. Rewrites the index (with the same
/// content when it was fresh), so call it last.
fn index_differs_from_depmod(root: &Path, kver: &str) -> Vec<String> {
    let tree = root.join("lib/modules").join(kver);
    let read = || -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(&tree)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with("modules."))
            .map(|n| (n.clone(), fs::read(tree.join(&n)).unwrap()))
            .collect()
    };
    let before = read();
    let out = Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(kver)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert_ok(&out, "depmod");
    let after = read();
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect()
}

/// True while a process of group `pgid` is alive (zombies do not count).
fn group_alive(pgid: u32) -> bool {
    fs::read_dir("/proc").unwrap().filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// Names an entry of the demo declarations stands for in the pristine tree, as modprobe
/// takes them (globs expanded).
fn expand_entries(entries: &[&str], names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in entries {
        match entry.strip_suffix('*') {
            Some(prefix) => {
                let matched: Vec<_> = names.iter().filter(|n| n.starts_with(prefix)).cloned().collect();
                assert!(!matched.is_empty(), "{entry} matches nothing");
                out.extend(matched);
            }
            None => out.push(entry.to_string()),
        }
    }
    out
}

fn yaml_list(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The closure of every single module covers what modprobe loads with it.

fn keep_set_covers_modprobe(release: Release, flavour: &str) {
    let fx = Fixture::new(release, flavour);
    let gathered = limopack::run::gather(&limopack::run::Options {
        root: fx.root.clone(),
        kernel: Some(limopack::kver::Kver::new(&fx.kver).unwrap()),
        dry_run: true,
        initramfs: false,
        reuse: false,
        package: None,
        lock_wait: limopack::run::LOCK_WAIT,
    })
    .unwrap();
    let index = gathered.index(&fx.kver).expect("the kernel is gathered");
    let names: Vec<String> = index.modules().iter().map(|m| m.name.to_string()).collect();
    // Sanity: the index is the whole tree, which modules.dep lists.
    assert_eq!(names.len(), modules_dep_paths(&fx.root, &fx.kver).len());
    assert!(names.len() > 1000, "only {} modules in {}", names.len(), fx.kver);

    let started = Instant::now();
    let oracle = modprobe_show_depends_many(release, &fx.root, &fx.kver, &names);
    eprintln!("{}: modprobe --show-depends for {} modules took {:?}", fx.kver, names.len(), started.elapsed());

    let mut violations = Vec::new();
    let mut softdeps_seen = 0;
    for (name, wanted) in oracle {
        let id = index.by_name(&name).unwrap();
        let closure: BTreeSet<&str> = index
            .closure(&[id])
            .keys()
            .map(|&m| index.module(m).path.as_ref())
            .collect();
        match wanted {
            Err(e) => violations.push(format!("{name}: modprobe failed: {e}")),
            Ok(paths) => {
                let deps = index.deps(id).len() + 1;
                if paths.len() > deps {
                    softdeps_seen += 1;
                }
                for p in paths.iter().filter(|p| !closure.contains(p.as_str())) {
                    violations.push(format!("{name}: modprobe loads {p}, the closure lacks it"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{}: {} violation(s) of the modprobe oracle:\n{}",
        fx.kver,
        violations.len(),
        violations.join("\n")
    );
    // The oracle exercised more than modules.dep: soft dependencies through aliases.
    assert!(softdeps_seen > 10, "{}: only {softdeps_seen} modules with soft dependencies", fx.kver);
}

#[test]
fn keep_set_covers_modprobe_for_every_module_amd64_on_bookworm() {
    keep_set_covers_modprobe(Release::Bookworm, GENERIC);
}

#[test]
fn keep_set_covers_modprobe_for_every_module_cloud_amd64_on_bookworm() {
    keep_set_covers_modprobe(Release::Bookworm, CLOUD);
}

/// Trixie's modprobe (kmod 34) is the oracle for trixie's trees, and trixie's depmod wrote
/// their indexes (the binary ones root first): both are run from the cached trixie root.
#[test]
#[ignore = "needs root and debootstrap: trixie's kmod and apt are those of the trixie root; tests/run-all runs it"]
fn keep_set_covers_modprobe_for_every_module_amd64_on_trixie() {
    keep_set_covers_modprobe(Release::Trixie, GENERIC);
}

#[test]
#[ignore = "needs root and debootstrap: trixie's kmod and apt are those of the trixie root; tests/run-all runs it"]
fn keep_set_covers_modprobe_for_every_module_cloud_amd64_on_trixie() {
    keep_set_covers_modprobe(Release::Trixie, CLOUD);
}

// ---------------------------------------------------------------------------
// 2. A real prune of the generic tree.

#[test]
fn prune_real_tree_with_declarations() {
    let fx = Fixture::demo(true);
    let tree = fx.tree();
    let pristine_names = dep_names(&fx.root, &fx.kver);
    let before_files = files_of(&tree, false);
    let before_modules = files_of(&tree, true);
    assert_eq!(before_modules.len(), pristine_names.len());

    // Dry run: a plan, and not one byte changed.
    let hash = tree_hash(&fx.root);
    let kplan = fx.dry_plan();
    assert_eq!(tree_hash(&fx.root), hash, "a dry run changed the root");
    assert_eq!(kplan["action"], "prune", "{:#}", kplan["warnings"]);
    assert_eq!(kplan["baseline"], true);
    assert_eq!(kplan["declarations"], 2);
    assert_eq!(kplan["modules_total"].as_u64().unwrap() as usize, pristine_names.len());
    let no_match: Vec<_> = kplan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w.as_str().unwrap().contains("matches no module"))
        .collect();
    assert!(no_match.is_empty(), "entries that resolve to nothing: {no_match:?}");
    let kept = kept_paths(&kplan);
    let prune = prune_paths(&kplan);
    let not_owned = strings(&kplan["not_owned"]);
    assert!(!prune.is_empty(), "nothing to prune");
    assert_eq!(not_owned, BTreeSet::from([UNOWNED.to_owned()]));
    // Kept and pruned split the module files between them; the file no package owns is kept,
    // with what it needs.
    let kept_set: BTreeSet<String> = kept.values().cloned().collect();
    assert!(kept_set.is_disjoint(&prune));
    assert!(!prune.contains(UNOWNED) && kept_set.contains(UNOWNED));
    assert_eq!(kplan["kept"][module_name(UNOWNED)]["reason"]["kind"], "not-prunable");
    let all: BTreeSet<String> = kept_set.union(&prune).cloned().collect();
    assert_eq!(all, before_modules, "kept + prune is not every module file");
    // The vendor declaration counts, owned by its package, and refcounts name it.
    let json_decl = &kplan["refcounts"]["btrfs"];
    assert_eq!(json_decl, &serde_json::json!([VENDOR_DECL]), "refcount of btrfs");
    assert_eq!(kplan["refcounts"]["nf_conntrack_ftp"], serde_json::json!([VENDOR_DECL]));
    assert_eq!(kplan["kept"]["btrfs"]["reason"]["package"], "demo-tools");
    assert_eq!(kplan["kept"]["ext4"]["reason"]["kind"], "static");

    // The real run.
    let out = fx.run(&[]);
    assert_ok(&out, "prune run");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("limopack: {}: kept {} of", fx.kver, kept.len())), "{stdout}");
    assert!(stdout.contains(&format!("pruned {} files", prune.len())), "{stdout}");

    // Exactly the plan's files are gone; the index files are back, rewritten by depmod.
    let after_files = files_of(&tree, false);
    let removed: BTreeSet<String> = before_files.difference(&after_files).cloned().collect();
    assert_eq!(removed, prune, "removed files differ from the plan's prune list");
    let added: Vec<_> = after_files.difference(&before_files).collect();
    assert!(added.is_empty(), "new files in the tree: {added:?}");
    let after_modules = files_of(&tree, true);
    assert_eq!(after_modules, kept_set);
    assert!(tree.join(UNOWNED).is_file(), "the file no package owns was pruned");

    // modprobe still loads every declared and static module, from files that exist.
    let mut wanted = expand_entries(&yaml_list(DEMO_TOOLS), &pristine_names);
    wanted.extend(yaml_list(BASELINE_GENERIC).into_iter().map(str::to_owned));
    let bad = modprobe_violations(&fx.root, &fx.kver, &wanted);
    assert!(bad.is_empty(), "after the prune:\n{}", bad.join("\n"));
    let dangling = dangling_dep_paths(&fx.root, &fx.kver);
    assert!(dangling.is_empty(), "modules.dep names missing files: {dangling:?}");
    assert_eq!(modules_dep_paths(&fx.root, &fx.kver).len(), after_modules.len());

    // ext4 keeps both crc32c drivers: soft dependency through the alias crypto-crc32c.
    let ext4 = modprobe_show_depends(Release::Bookworm, &fx.root, &fx.kver, "ext4").unwrap();
    for crc in ["kernel/arch/x86/crypto/crc32c-intel.ko", "kernel/crypto/crc32c_generic.ko"] {
        assert!(ext4.iter().any(|p| p == crc), "modprobe ext4 lacks {crc}: {ext4:?}");
        assert!(tree.join(crc).is_file(), "{crc} was pruned");
    }
    assert!(kept.contains_key("crc32c_generic") && kept.contains_key("crc32c_intel"));

    // The state names every pruned file and its package.
    let state = fx.state();
    let pruned = pruned_in(&state, &fx.kver);
    let listed: BTreeSet<String> = pruned.keys().cloned().collect();
    assert_eq!(listed, prune);
    for (path, file) in &pruned {
        assert_eq!(file["package"], fx.kernel_pkg.name.as_str(), "{path}");
        assert_eq!(file["version"], fx.kernel_pkg.version.as_str(), "{path}");
    }
    let statics: BTreeSet<String> = state["statics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entry"].as_str().unwrap().to_owned())
        .collect();
    assert!(statics.contains("ext4") && statics.contains("virtio_net"), "{statics:?}");

    // A second run finds nothing to do, and runs no depmod.
    let dep = tree.join("modules.dep");
    let (dep_mtime, dep_hash) = (mtime(&dep), tree_hash(&tree));
    let out = fx.run(&[]);
    assert_ok(&out, "second run");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("nothing to prune"), "{stdout}");
    assert_eq!(mtime(&dep), dep_mtime, "modules.dep was rewritten: depmod ran");
    assert_eq!(tree_hash(&tree), dep_hash, "the second run changed the tree");

    // The runs kept their parses of modules.dep: the tree's now, and the tree's before the
    // prune, which is the text of limopack's saved copy. A plan made with them is the plan
    // made from the texts.
    let cache = fx.root.join("var/cache/limopack").join(format!("{}.index", fx.kver));
    let kept_parses = fs::read_to_string(&cache).unwrap();
    let counts: BTreeSet<usize> = kept_parses
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(' ').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts, BTreeSet::from([pristine_names.len(), after_modules.len()]), "{}", &kept_parses[..200]);
    let with_cache = fx.dry_plan();
    fs::remove_file(&cache).unwrap();
    assert_eq!(fx.dry_plan(), with_cache);

    // status names the pruned files and their package.
    let out = fx.run(&["status", "--json"]);
    assert_ok(&out, "status");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let k = &status["kernels"][0];
    assert_eq!(k["pruned"].as_object().unwrap().len(), prune.len());
    assert_eq!(k["missing"], serde_json::json!([]));

    // Every index file is what depmod writes for the pruned tree.
    let differ = index_differs_from_depmod(&fx.root, &fx.kver);
    assert!(differ.is_empty(), "index files depmod would write differently: {differ:?}");
}

// ---------------------------------------------------------------------------
// 3. Two kernels, a baseline for one of them.

#[test]
fn second_kernel_without_baseline_is_left_whole() {
    let (generic_src, generic) = real_kernel_tree(Release::Bookworm, GENERIC);
    let (cloud_src, cloud) = real_kernel_tree(Release::Bookworm, CLOUD);
    let tmp = tempfile::Builder::new().prefix("limopack-real-").tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_root(&generic_src, &root);
    copy_root(&cloud_src, &root);
    let pkgs = [real_kernel_pkg(Release::Bookworm, &root, GENERIC), real_kernel_pkg(Release::Bookworm, &root, CLOUD)];
    write_dpkg_db(&root, &pkgs);
    let glob = "*[0-9]-amd64";
    write_file(&root, BASELINE, &format!("kernels: \"{glob}\"\nstatic:\n  - ext4\n  - virtio_blk\n  - virtio_net\n"));
    write_file(&root, CONFIG, "prune: true\n");
    // The glob is meant for the generic kernel only.
    assert!(generic.ends_with("-amd64") && !generic.contains("cloud"), "{generic}");
    assert!(cloud.ends_with("-cloud-amd64"), "{cloud}");

    let generic_tree = root.join("lib/modules").join(&generic);
    let cloud_tree = root.join("lib/modules").join(&cloud);
    let cloud_hash = tree_hash(&cloud_tree);
    let generic_before = files_of(&generic_tree, true);

    let out = hook(&root, &["--dry-run", "--json"]);
    assert_ok(&out, "dry run");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = kernel_plan(&json, &generic);
    let c = kernel_plan(&json, &cloud);
    assert_eq!((&g["baseline"], &g["action"]), (&Value::Bool(true), &Value::from("prune")));
    assert_eq!((&c["baseline"], &c["action"]), (&Value::Bool(false), &Value::from("no-baseline")));
    assert_eq!(c["prune"], serde_json::json!([]));
    let prune = prune_paths(g);

    let out = hook(&root, &[]);
    assert_ok(&out, "prune run");
    let stdout = text(&out.stdout);
    let cloud_line = stdout
        .lines()
        .find(|l| l.contains(&cloud))
        .unwrap_or_else(|| panic!("no line for {cloud}:\n{stdout}"));
    assert!(cloud_line.contains("no baseline"), "{cloud_line}");
    let generic_line = stdout
        .lines()
        .find(|l| l.contains(&format!("{generic}:")))
        .unwrap_or_else(|| panic!("no line for {generic}:\n{stdout}"));
    assert!(generic_line.contains("pruned"), "{generic_line}");

    assert_eq!(tree_hash(&cloud_tree), cloud_hash, "the kernel without a baseline was touched");
    let generic_after = files_of(&generic_tree, true);
    let removed: BTreeSet<String> = generic_before.difference(&generic_after).cloned().collect();
    assert_eq!(removed, prune);
    assert!(generic_after.len() < generic_before.len() / 10, "{} modules left", generic_after.len());
    assert!(dangling_dep_paths(&root, &generic).is_empty());
    let bad = modprobe_violations(&root, &generic, &["ext4".into(), "virtio_blk".into(), "virtio_net".into()]);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------
// 4. Invalid declarations stop the run before anything is deleted.

#[test]
fn bad_declarations_delete_nothing() {
    let fx = Fixture::new(Release::Bookworm, CLOUD);
    write_file(&fx.root, BASELINE, "static:\n  - virtio_net\n  - virtio_blk\n");
    write_file(&fx.root, CONFIG, "prune: true\n");
    // (where, content, expected `:line:col:`, words of the message)
    let cases = [
        ("/etc/limopack/modules.d/typo.yaml", "modlues:\n  - loop\n", ":1:1:", "unknown field `modlues`"),
        ("/etc/limopack/modules.d/path.yaml", "modules:\n  - ../../etc/passwd\n  - loop\n", ":2:", "is a path"),
        ("/usr/share/limopack/broken.yaml", "modules: [a\n", ":2:1:", "did not find expected"),
    ];
    let state_dir = fx.root.join("var/lib/limopack");
    assert!(!state_dir.exists());
    for (abs, content, at, words) in cases {
        write_file(&fx.root, abs, content);
        let hash = tree_hash(&fx.root);
        let out = fx.run(&[]);
        // The run takes its lock before it reads anything, which creates the state folder
        // and the lock file, holding the run's pid. A broken declaration stops pruning but
        // not the rest of the run, which records the baseline's statics; it records no
        // kernel, whose count would miss the broken file's entries.
        let mut left: Vec<_> = fs::read_dir(&state_dir)
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        left.sort();
        assert!(left.is_empty() || left == ["lock"] || left == ["lock", "state.json"], "{abs}: the failed run left {left:?}");
        if let Ok(state) = fs::read_to_string(state_dir.join("state.json")) {
            let state: serde_json::Value = serde_json::from_str(&state).unwrap();
            assert!(state["kernels"].as_object().is_none_or(|k| k.is_empty()), "{abs}: {state}");
        }
        if !left.is_empty() {
            let pid = fs::read_to_string(state_dir.join("lock")).unwrap();
            assert!(pid.trim().parse::<u32>().is_ok() && pid.ends_with('\n'), "{pid:?}");
            fs::remove_dir_all(&state_dir).unwrap();
        }
        // Caches of what was read (the tree's files, its index) may be kept: they are
        // checked against the disk before each use.
        let _ = fs::remove_dir_all(fx.root.join("var/cache/limopack"));
        for made in ["var/cache", "var/lib", "var"] {
            let _ = fs::remove_dir(fx.root.join(made));
        }
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{abs}: the run succeeded:\n{}{stderr}", text(&out.stdout));
        let file = fx.root.join(abs.trim_start_matches('/'));
        let want = format!("{}{at}", file.display());
        assert!(stderr.contains(&want), "{abs}: stderr lacks {want:?}:\n{stderr}");
        assert!(stderr.contains(words), "{abs}: stderr lacks {words:?}:\n{stderr}");
        assert_eq!(tree_hash(&fx.root), hash, "{abs}: the failed run changed the root");
        fs::remove_file(&file).unwrap();
    }
    // Without the bad files the same root prunes: they were what stopped it.
    let tree = fx.tree();
    let before = files_of(&tree, true).len();
    let out = fx.run(&[]);
    assert_ok(&out, "run with good declarations");
    assert!(files_of(&tree, true).len() < before);
}

// ---------------------------------------------------------------------------
// 5. Runs killed at random points are completed by the next one.

/// xorshift64*, so that a failing trial can be replayed with LIMOPACK_KILL_SEED.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// When a trial kills its run.
#[derive(Debug, Clone)]
enum Kill {
    /// This long after the start.
    After(Duration),
    /// As soon as this file (one the run prunes; they go in sorted order) is gone.
    WhenGone(String),
    /// As soon as depmod has replaced `modules.dep`: every delete is done, and the state
    /// written after depmod may or may not be.
    WhenIndexReplaced,
    /// At a step boundary: strace kills the run as it enters the `when`-th call of
    /// `syscall`, before the call does anything.
    AtSyscall { step: &'static str, syscall: String, when: usize },
}

const UNLINK: &str = "unlink,unlinkat";
const RENAME: &str = "rename,renameat,renameat2";
const SPAWN: &str = "clone,clone3,vfork,fork";

/// The calls of one uninterrupted first prune that begin or end a step (writes by `rename`,
/// deletes by `unlink`, depmod by `clone`), in order, each as its class and strace's line. The
/// step boundaries are found in it rather than counted by hand, so that a change in how
/// many files a run writes moves the kills with it.
fn step_trace(fx: &Fixture) -> Vec<(&'static str, String)> {
    let trace = fx.root.with_file_name("steps.trace");
    let hook = hook_command(&fx.root, &[]);
    let out = Command::new("strace")
        .args(["-qq", "-o"])
        .arg(&trace)
        .arg("-e")
        .arg(format!("trace={UNLINK},{RENAME},{SPAWN}"))
        .arg(hook.get_program())
        .args(hook.get_args())
        .envs(hook.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()
        .unwrap();
    assert_ok(&out, "the traced reference run");
    let class = |call: &str| {
        [UNLINK, RENAME, SPAWN].into_iter().find(|class| class.split(',').any(|c| c == call))
    };
    fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|line| Some((class(line.split('(').next()?)?, line.to_owned())))
        .collect()
}

/// The step boundaries of a first prune, each as the `when`-th call of its syscall in `trace`;
/// and three points among the deletes. strace follows limopack's first thread alone (see
/// below), which deletes the first half of the files; another thread deletes the rest.
fn step_kills(trace: &[(&'static str, String)], deletes: usize, rng: &mut Rng) -> Vec<Kill> {
    let syscall = |line: &str| line.split('(').next().unwrap_or_default().to_owned();
    // strace counts the calls of each syscall apart (`when=` of `-e inject`), so a kill is
    // at the how-many-th call of the very syscall the trace shows there.
    let at_call = |step: &'static str, at: usize| {
        let call = syscall(&trace[at].1);
        let when = trace[..=at].iter().filter(|(_, l)| syscall(l) == call).count();
        Kill::AtSyscall { step, syscall: call, when }
    };
    let find = |step: &'static str, class: &'static str, from_end: bool, what: &dyn Fn(&str) -> bool| {
        let matches = |(c, l): &(&'static str, String)| *c == class && what(l);
        let at = if from_end { trace.iter().rposition(matches) } else { trace.iter().position(matches) };
        at_call(step, at.unwrap_or_else(|| panic!("no call {step} in the reference run: {trace:#?}")))
    };
    // limopack's own files are renamed and removed from a descriptor of their folder, by
    // their bare name.
    let named = |l: &str, name: &str| l.contains(&format!("/{name}\"")) || l.contains(&format!("\"{name}\""));
    let state = |l: &str| named(l, "state.json");
    let module = |l: &str| l.contains(".ko\"");
    // A thread is a clone with CLONE_THREAD; depmod is started without.
    let process = |l: &str| !l.contains("CLONE_THREAD");
    let module_deletes: Vec<usize> = (0..trace.len()).filter(|&i| trace[i].0 == UNLINK && module(&trace[i].1)).collect();
    assert_eq!(module_deletes.len(), deletes / 2, "the reference run's first thread deleted other than its half of the plan");
    let mut kills = vec![
        find("before the first state write", RENAME, false, &state),
        find("before the journal", RENAME, false, &|l| named(l, "journal.json")),
        find("before the saved index", RENAME, false, &|l| l.contains(".index\"")),
        find("after the journal, before the first delete", UNLINK, false, &module),
        find("before the first half's last delete", UNLINK, true, &module),
        find("before depmod", SPAWN, false, &process),
        find("before the initramfs mark is cleared", RENAME, true, &state),
        find("before the journal is cleared", UNLINK, false, &|l| named(l, "journal.json")),
    ];
    // The state write after depmod: the first write after the spawn.
    let spawn = trace.iter().position(|(c, l)| *c == SPAWN && process(l)).unwrap();
    let write = spawn + trace[spawn..].iter().position(|(c, _)| *c == RENAME).unwrap();
    kills.push(at_call("before the state write", write));
    for _ in 0..3 {
        let nth = 1 + rng.below(module_deletes.len() as u64 - 2) as usize;
        kills.push(at_call("mid-delete", module_deletes[nth]));
    }
    kills
}

#[test]
fn killed_runs_are_completed_by_the_next() {
    const RANDOM_TRIALS: u64 = 40;
    const MAX_DELAY_MS: u64 = 600;
    let seed = std::env::var("LIMOPACK_KILL_SEED")
        .ok()
        .map(|s| s.parse().expect("LIMOPACK_KILL_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
                | 1
        });
    eprintln!("killed_runs_are_completed_by_the_next: LIMOPACK_KILL_SEED={seed}");
    let mut rng = Rng(seed);

    // The plan is the same in every fresh copy; take it once.
    let mut planned: Option<(BTreeSet<String>, Vec<String>)> = None;
    let mut outcomes = Vec::new();
    let mut steps: Vec<Kill> = Vec::new();
    let mut trial = 0;
    loop {
        let fx = Fixture::demo(false);
        let tree = fx.tree();
        let (kept, prune) = planned
            .get_or_insert_with(|| {
                let kplan = fx.dry_plan();
                let kept = kept_paths(&kplan).into_values().collect();
                (kept, prune_paths(&kplan).into_iter().collect())
            })
            .clone();
        let owned: Vec<String> = fx
            .kernel_pkg
            .files
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("/lib/modules/{}/", fx.kver)))
            .filter(|rel| is_module(rel))
            .map(str::to_owned)
            .collect();
        let index_files: BTreeSet<String> = files_of(&tree, false)
            .into_iter()
            .filter(|f| !f.starts_with("kernel/"))
            .collect();
        if trial == RANDOM_TRIALS {
            steps = step_kills(&step_trace(&Fixture::demo(false)), prune.len(), &mut rng);
            steps.reverse();
        }
        // Even trials: a delay, each in its own slice of the window, so that the window is
        // covered whatever the seed. Odd trials: a point in the deletes, whatever the
        // machine's speed; the last one kills once depmod replaced the index. Then
        // one trial at each step boundary.
        let kill = if trial >= RANDOM_TRIALS {
            match steps.pop() {
                Some(kill) => kill,
                None => break,
            }
        } else if trial % 2 == 0 {
            let slice = MAX_DELAY_MS * 2 / RANDOM_TRIALS;
            Kill::After(Duration::from_millis(trial / 2 * slice + rng.below(slice + 1)))
        } else if trial == RANDOM_TRIALS - 1 {
            Kill::WhenIndexReplaced
        } else {
            Kill::WhenGone(prune[rng.below(prune.len() as u64) as usize].clone())
        };
        trial += 1;
        let started = Instant::now();
        let hook = hook_command(&fx.root, &[]);
        let mut command = match &kill {
            // strace follows only limopack's first thread (no -f): a kill is meant for the
            // run, not for the programs it starts, and strace counts each tracee's calls
            // apart, so depmod's renames would meet the count first.
            Kill::AtSyscall { syscall, when, .. } => {
                let mut strace = Command::new("strace");
                strace
                    .args(["-qq", "-o", "/dev/null", "-e"])
                    .arg(format!("trace={syscall}"))
                    .arg("-e")
                    .arg(format!("inject={syscall}:signal=KILL:when={when}"))
                    .arg(hook.get_program())
                    .args(hook.get_args())
                    .envs(hook.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
                strace
            }
            _ => hook,
        };
        let index_before = fs::metadata(tree.join("modules.dep")).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
        // A group of its own, so that its depmod, which outlives it, can be waited for below.
        let mut child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match &kill {
            Kill::After(delay) => std::thread::sleep(*delay),
            Kill::WhenGone(rel) => {
                let path = tree.join(rel);
                while path.exists() && child.try_wait().unwrap().is_none() {
                    assert!(started.elapsed() < Duration::from_secs(30), "the run hangs");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Kill::WhenIndexReplaced => {
                let index = tree.join("modules.dep");
                let ino = || fs::metadata(&index).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
                while ino() == index_before && child.try_wait().unwrap().is_none() {
                    assert!(started.elapsed() < Duration::from_secs(30), "the run hangs");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Kill::AtSyscall { .. } => {}
        }
        if !matches!(kill, Kill::AtSyscall { .. }) {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        if let Kill::AtSyscall { step, .. } = &kill {
            use std::os::unix::process::ExitStatusExt;
            // strace ends the way its tracee did.
            assert_eq!(status.signal(), Some(9), "trial {trial}: strace did not kill the run {step}: {status}");
        }
        let at = started.elapsed();
        let gone_after_kill = owned.iter().filter(|rel| !tree.join(rel).exists()).count();
        let journal = fx.root.join("var/lib/limopack/journal.json").exists();
        outcomes.push(format!(
            "trial {trial}: {kill:?}: {} at {at:?}, {gone_after_kill} of {} files gone, journal {}",
            if status.success() { "had finished" } else { "killed" },
            prune.len(),
            if journal { "left" } else { "absent" },
        ));

        // child.kill() is SIGKILL for limopack alone: a depmod it started runs on, and may
        // overlap the next run, as after an OOM kill of the hook.
        let out = fx.run(&[]);
        let ctx = || format!("trial {trial} ({kill:?}), LIMOPACK_KILL_SEED={seed}");
        assert_ok(&out, &format!("the run after {}", ctx()));
        let waited = Instant::now();
        while group_alive(child.id()) {
            assert!(waited.elapsed() < Duration::from_secs(30), "the killed run's depmod hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
        let missing: Vec<_> = kept.iter().filter(|rel| !tree.join(rel).is_file()).collect();
        assert!(missing.is_empty(), "{}: kept modules missing: {missing:?}", ctx());
        let dangling = dangling_dep_paths(&fx.root, &fx.kver);
        assert!(dangling.is_empty(), "{}: modules.dep names missing files: {dangling:?}", ctx());
        // The next run finished the job: exactly the keep set is left, all of it indexed.
        assert_eq!(files_of(&tree, true), kept, "{}: the tree is not the planned one", ctx());
        assert_eq!(modules_dep_paths(&fx.root, &fx.kver).len(), kept.len(), "{}", ctx());
        let state = fx.state();
        let pruned = pruned_in(&state, &fx.kver);
        let unrecorded: Vec<_> = owned
            .iter()
            .filter(|rel| !tree.join(rel).exists())
            .filter(|rel| pruned.get(rel.as_str()).is_none_or(|f| f["package"] != fx.kernel_pkg.name.as_str()))
            .collect();
        assert!(unrecorded.is_empty(), "{}: pruned files the state does not list: {unrecorded:?}", ctx());
        assert_eq!(pruned.len(), prune.len(), "{}", ctx());
        assert!(
            !fx.root.join("var/lib/limopack/journal.json").exists(),
            "{}: journal left behind",
            ctx()
        );
        // No temporary file of an interrupted write is left in the tree.
        let stray: Vec<_> = files_of(&tree, false)
            .into_iter()
            .filter(|f| !f.starts_with("kernel/") && !index_files.contains(f))
            .collect();
        assert!(stray.is_empty(), "{}: stray files {stray:?}", ctx());
        let differ = index_differs_from_depmod(&fx.root, &fx.kver);
        assert!(differ.is_empty(), "{}: index files depmod would write differently: {differ:?}", ctx());
    }
    assert!(trial >= 50, "{trial} trials");
    eprintln!("{}", outcomes.join("\n"));
}

// ---------------------------------------------------------------------------
// 6. explain after a prune.

#[test]
fn explain_names_the_chain() {
    let fx = Fixture::new(Release::Bookworm, GENERIC);
    write_file(&fx.root, BASELINE, BASELINE_GENERIC);
    write_file(&fx.root, CONFIG, "prune: true\n");
    let out = fx.run(&[]);
    assert_ok(&out, "prune run");

    let out = fx.run(&["explain", "crc32c_generic"]);
    assert_ok(&out, "explain crc32c_generic");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{0}: crc32c_generic: kept (/lib/modules/{0}/kernel/crypto/crc32c_generic.ko)", fx.kver)), "{stdout}");
    assert!(stdout.contains("soft dependency (pre:) of ext4"), "{stdout}");
    assert!(stdout.contains(&format!("ext4: static entry `ext4` of {BASELINE}")), "{stdout}");

    let out = fx.run(&["explain", "--json", "crc32c-generic"]);
    assert_ok(&out, "explain --json");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let k = &json["kernels"][0];
    assert_eq!(k["status"], "kept", "{json:#}");
    let chain: Vec<&str> = k["chain"].as_array().unwrap().iter().map(|l| l["module"].as_str().unwrap()).collect();
    assert_eq!(chain, ["crc32c_generic", "ext4"], "{json:#}");

    // A module the prune removed.
    let victim = "nilfs2";
    assert!(!fx.tree().join(UNOWNED).exists());
    let out = fx.run(&["explain", victim]);
    assert_ok(&out, "explain nilfs2");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{0}: {victim}: pruned (/lib/modules/{0}/{UNOWNED} of {1}", fx.kver, fx.kernel_pkg.name)), "{stdout}");
    let out = fx.run(&["explain", "--json", victim]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kernels"][0]["status"], "pruned", "{json:#}");
}

// ---------------------------------------------------------------------------
// Failing cases of bugs found in src/ (see the report). Run them with `-- --ignored`.

/// A depmod interrupted after its first rename, as a kill of the whole run (power loss, an
/// OOM kill of its cgroup, `systemctl kill`) leaves the tree: `modules.dep` fresh, every other
/// index file (`modules.dep.bin`, which modprobe reads, `modules.alias*`, `modules.devname`,
/// ...) still describing the unpruned tree. The next run must finish that depmod.
#[test]
fn interrupted_depmod_is_redone_by_the_next_run() {
    let fx = Fixture::new(Release::Bookworm, CLOUD);
    write_file(&fx.root, BASELINE, "static:\n  - virtio_net\n  - virtio_blk\n");
    write_file(&fx.root, CONFIG, "prune: true\n");
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("depmod"))
        .find(|p| p.is_file())
        .expect("depmod on PATH");
    let bin = fx._tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("depmod");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             # limopack runs `depmod [-n] -b ROOT KVER`.\n\
             case \"$1\" in -n) exec {real} \"$@\";; esac\n\
             dir=\"$2/lib/modules/$3\"\n\
             # depmod writes modules.dep first, each file to a temporary name renamed into place.\n\
             {real} -n -b \"$2\" \"$3\" | sed '/^# Aliases extracted from modules themselves\\./,$d' > \"$dir/modules.dep.fake\"\n\
             mv \"$dir/modules.dep.fake\" \"$dir/modules.dep\"\n\
             kill -KILL $PPID\n\
             exit 1\n",
            real = real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = hook_command(&fx.root, &[]).env("PATH", path).output().unwrap();
    assert!(!out.status.success(), "the fake depmod did not kill the run");
    assert!(fx.root.join("var/lib/limopack/journal.json").exists());

    let out = fx.run(&[]);
    assert_ok(&out, "the run after the kill");
    let pruned: Vec<String> = pruned_in(&fx.state(), &fx.kver).keys().cloned().collect();
    assert!(!pruned.is_empty());
    // What a stale modules.dep.bin does: modprobe still finds pruned modules, at files that
    // are gone.
    let ghost = module_name(&pruned[0]);
    let ghost_deps = modprobe_show_depends(Release::Bookworm, &fx.root, &fx.kver, &ghost);
    let differ = index_differs_from_depmod(&fx.root, &fx.kver);
    assert!(
        differ.is_empty(),
        "after `{}`, index files still differ from what depmod writes: {differ:?}\n\
         (`modprobe --show-depends {ghost}` for pruned {} gave {ghost_deps:?})",
        text(&out.stdout).trim(),
        pruned[0]
    );
}

/// Spec: errors are `file:line:column: what is wrong`. An entry that can never be a module
/// (a path, a bad glob) is reported at the start of its list instead of at its own line.
#[test]
fn bad_entry_is_reported_at_its_own_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cases = [
        ("modules:\n  - loop\n  - tun\n  - ../../etc/passwd\n", ":4:5:"),
        ("static:\n  - ext4\n  - xfs\n  - 'snd_['\n", ":4:5:"),
        ("modules: [loop, tun, \"ext 4\"]\n", ":1:22:"),
    ];
    let mut wrong = Vec::new();
    for (content, at) in cases {
        write_file(root, "/etc/limopack/modules.d/local.yaml", content);
        let out = hook(root, &["--dry-run"]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        let file = root.join("etc/limopack/modules.d/local.yaml");
        if !stderr.contains(&format!("{}{at}", file.display())) {
            wrong.push(format!("{content:?}: want {at}, got {}", stderr.trim()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Spec: when modules.dep is missing, a real run runs depmod before planning; a dry run plans
/// with what `depmod -n` would write and changes nothing. On a /usr-merged root the tree is
/// reached as /lib/modules and /usr/lib/modules and is counted once.
#[test]
fn missing_index_is_rebuilt_and_usr_merge_counts_a_tree_once() {
    let fx = Fixture::new(Release::Bookworm, CLOUD);
    // Merge /usr the way Debian does: /lib is a symlink to usr/lib.
    fs::create_dir_all(fx.root.join("usr")).unwrap();
    fs::rename(fx.root.join("lib"), fx.root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", fx.root.join("lib")).unwrap();
    write_file(&fx.root, BASELINE, "static:\n  - virtio_net\n  - virtio_blk\n");
    write_file(&fx.root, CONFIG, "prune: true\n");
    for entry in fs::read_dir(fx.tree()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("modules.") && name != "modules.builtin" && name != "modules.order" && name != "modules.builtin.modinfo" {
            fs::remove_file(fx.tree().join(&name)).unwrap();
        }
    }
    let hash = tree_hash(&fx.root);
    let plan = fx.dry_plan();
    assert_eq!(tree_hash(&fx.root), hash, "the dry run changed the root");
    assert_eq!(plan["action"], "prune");
    let kept = kept_paths(&plan);
    assert!(kept.values().any(|p| p.ends_with("virtio_net.ko")), "{kept:?}");

    let out = fx.run(&["--dry-run", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["plan"]["kernels"].as_array().unwrap().len(), 1, "the tree was counted twice");

    let out = fx.run(&[]);
    assert_ok(&out, "real run");
    assert!(fx.tree().join("modules.dep").is_file(), "depmod did not rebuild modules.dep");
    assert!(dangling_dep_paths(&fx.root, &fx.kver).is_empty());
    for module in ["virtio_net", "virtio_blk"] {
        let deps = modprobe_show_depends(Release::Bookworm, &fx.root, &fx.kver, module).unwrap();
        assert!(deps.iter().all(|d| fx.tree().join(d).is_file()), "{module}: {deps:?}");
    }
    assert_eq!(files_of(&fx.tree(), true).len(), kept.len());
}

