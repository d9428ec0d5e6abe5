//! `cargo bench`: limopack side by side with what a user would reach for instead, and with the
//! floor the I/O sets, each pair measured in one run, interleaved (A, B, A, B, ...), on the real
//! Debian kernel trees the tests cache: trixie's (`.ko.xz`, kmod 34 as the oracle) and
//! bookworm's (`LIMOPACK_BENCH_RELEASES=trixie` for one). Prints medians, min and max, the ratios, and whether each
//! target of `benches/README.md` is met. Setup is not timed.
//!
//! Needs root (fixtures are copies of the cached tree), kmod, dpkg and `/usr/bin/time` for
//! peak memory. `LIMOPACK_BENCH=scaling` runs only the synthetic trees, `LIMOPACK_BENCH=hotplug` only
//! the udev rule's lookup, and
//! `LIMOPACK_BENCH_KEEP=1` keeps them (their paths are printed) for a profiler. The apply
//! pair prunes on an ext4 of its own in RAM (see [`ApplyDisk`]); `LIMOPACK_BENCH_DISK=target`
//! prunes on the disk under `target/bench` instead.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fs_err as fs;
use support::*;

const PAIRS: usize = 9;
const HOOK: &str = env!("CARGO_BIN_EXE_limopack-hook");

/// The 25 modules the plan is asked for: the baseline's one static entry and 24 declared.
const REQUESTED: [&str; 25] = [
    "ext4", "xfs", "btrfs", "virtio_blk", "virtio_net", "virtio_pci", "virtio_scsi", "e1000e", "ahci", "sd_mod",
    "nvme", "loop", "overlay", "usb_storage", "xhci_pci", "snd_hda_intel", "btusb", "iwlwifi", "wireguard", "8021q",
    "dm_crypt", "vfat", "nf_conntrack_ftp", "bridge", "tun",
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, min and max, in ms.
fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn run(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// Peak resident memory of a command, in MiB, from GNU time.
fn peak_mib(cmd: &Command) -> f64 {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = text.lines().last().unwrap().trim().parse().unwrap_or_else(|_| panic!("GNU time said: {text}"));
    kib / 1024.0
}

fn hook(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(HOOK);
    cmd.arg("--root").arg(root).args(args).env_remove("DPKG_ADMINDIR").env("LC_ALL", "C");
    cmd
}

/// The release's own modprobe (see `support::kmod`).
fn modprobe(release: Release, root: &Path, kver: &str, module: &str) -> Command {
    let mut cmd = support::kmod(release, "modprobe");
    cmd.arg("-d").arg(root).args(["-S", kver, "-C", "/dev/null", "--show-depends", module]);
    cmd
}

fn write(root: &Path, abs: &str, text: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
}

/// A root with the generic kernel, its package in dpkg's database, a baseline, a vendor
/// declaration of the other 24 modules, and pruning on. With `linked`, module files are
/// hardlinks into the cache (limopack and depmod only unlink and rename, never write a file
/// in place); a prune needs real copies, since unlinking a hardlink frees no blocks.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    kver: String,
    release: Release,
}

impl Fixture {
    fn new(dir: &Path, release: Release, linked: bool) -> Fixture {
        let (pristine, kver) = real_kernel_tree(release, "amd64");
        let tmp = tempfile::Builder::new().prefix("bench-").tempdir_in(dir).unwrap();
        let root = tmp.path().join("root");
        let status = Command::new("cp").arg(if linked { "-al" } else { "-a" }).arg(&pristine).arg(&root).status().unwrap();
        assert!(status.success());
        let kernel = real_kernel_pkg(release, &root, "amd64");
        let mut vendor = Pkg::installed("bench-tools", "1.0");
        vendor.files.push("/usr/share/limopack/bench-tools.yaml".into());
        write_dpkg_db(&root, &[kernel, vendor]);
        write(&root, "/etc/limopack/modules.d/baseline.yaml", &format!("static: [{}]\n", REQUESTED[0]));
        write(&root, "/usr/share/limopack/bench-tools.yaml", &format!("modules: [{}]\n", REQUESTED[1..].join(", ")));
        write(&root, "/etc/limopack/limopack.yaml", "prune: true\ninitramfs: never\n");
        Fixture { _tmp: tmp, root, kver, release }
    }

    fn tree(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }
}

struct Report {
    lines: Vec<String>,
    failed: usize,
}

impl Report {
    fn target(&mut self, what: &str, ok: bool) {
        self.lines.push(format!("  {} {what}", if ok { "PASS" } else { "FAIL" }));
        if !ok {
            self.failed += 1;
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&scratch).unwrap();
    let mut report = Report { lines: Vec::new(), failed: 0 };
    let only = std::env::var("LIMOPACK_BENCH").unwrap_or_default();
    if only != "scaling" && only != "hotplug" {
        for release in releases() {
            against_kmod_and_the_floor(&scratch, release, &mut report);
        }
    }
    if only != "hotplug" {
        scaling(&scratch, &mut report);
        declarations(&scratch, &mut report);
    }
    hotplug(&scratch, &mut report);

    println!("targets:");
    for line in &report.lines {
        println!("{line}");
    }
    if report.failed > 0 {
        println!("{} target(s) missed", report.failed);
        std::process::exit(1);
    }
}

/// The releases whose real trees are measured: `LIMOPACK_BENCH_RELEASES` (`bookworm`,
/// `trixie`, or both, comma-separated), both by default.
fn releases() -> Vec<Release> {
    let asked = std::env::var("LIMOPACK_BENCH_RELEASES").unwrap_or_else(|_| "bookworm,trixie".into());
    asked
        .split(',')
        .map(|name| match name.trim() {
            "bookworm" => Release::Bookworm,
            "trixie" => Release::Trixie,
            other => panic!("LIMOPACK_BENCH_RELEASES: `{other}` is not bookworm or trixie"),
        })
        .collect()
}

/// Plan, no-op, apply and memory on the release's real kernel tree.
fn against_kmod_and_the_floor(scratch: &Path, release: Release, report: &mut Report) {
    let scratch = scratch.to_path_buf();
    println!("== {release:?}");
    report.lines.push(format!("{release:?}:"));
    // Plan: a dry run against one `modprobe --show-depends` per requested module.
    let fx = Fixture::new(&scratch, release, true);
    let first = run(&mut hook(&fx.root, &["--dry-run"]));
    as_after_a_real_run(&fx.root);
    let (p, k) = plan_against_kmod(&fx);
    let all = count_modules(&fx.tree());
    println!("plan (dry run, {all} modules, 25 requested):");
    println!("  limopack-hook --dry-run   median {:7.1} ms  (min {:.1}, max {:.1})", p.0, p.1, p.2);
    println!("  kmod, modprobe -D x 25    median {:7.1} ms  (min {:.1}, max {:.1})", k.0, k.1, k.2);
    println!("  ratio {:.3}", p.0 / k.0);
    println!("  (the first dry run on a new tree, before any real run has cached its files: {:.1} ms)", ms(first));
    report.target(&format!("plan <= 0.15 x the kmod loop ({:.3})", p.0 / k.0), p.0 / k.0 <= 0.15);

    // Memory of each. The dry run's is taken here, as the plan's times were: the next
    // fixture links the same files again, which changes their inodes' ctime, and with it the
    // stamps of the modules' firmware names this root has cached.
    let hook_mib = peak_mib(&hook(&fx.root, &["--dry-run"]));
    let kmod_mib = REQUESTED.iter().map(|m| peak_mib(&modprobe(release, &fx.root, &fx.kver, m))).fold(0.0, f64::max);
    println!("peak memory: limopack-hook --dry-run {hook_mib:.1} MiB, modprobe {kmod_mib:.1} MiB");

    // The same after a prune, as every run after the first one is: the tree holds the kept
    // modules, and limopack's state and saved index hold the pruned ones.
    let pruned = Fixture::new(&scratch, release, true);
    run(&mut hook(&pruned.root, &[]));
    let (p, k) = plan_against_kmod(&pruned);
    let left = count_modules(&pruned.tree());
    println!("plan on the pruned tree ({left} modules left, {} pruned in the state):", all - left);
    println!("  limopack-hook --dry-run   median {:7.1} ms  (min {:.1}, max {:.1})", p.0, p.1, p.2);
    println!("  kmod, modprobe -D x 25    median {:7.1} ms  (min {:.1}, max {:.1})", k.0, k.1, k.2);
    println!("  ratio {:.3}", p.0 / k.0);
    report.target(&format!("plan on the pruned tree <= 0.15 x the kmod loop ({:.3})", p.0 / k.0), p.0 / k.0 <= 0.15);
    drop(pruned);

    // No-op: a real run when nothing changed since the last one.
    run(&mut hook(&fx.root, &[]));
    run(&mut hook(&fx.root, &[]));
    let noop: Vec<Duration> = (0..PAIRS * 3).map(|_| run(&mut hook(&fx.root, &[]))).collect();
    let n = stats(&noop);
    let noop_mib = peak_mib(&hook(&fx.root, &[]));
    println!("no-op (nothing changed since the last run):");
    println!("  limopack-hook             median {:7.1} ms  (min {:.1}, max {:.1}), {noop_mib:.1} MiB", n.0, n.1, n.2);
    report.target(&format!("no-op median <= 5 ms ({:.1} ms)", n.0), n.0 <= 5.0);
    drop(fx);

    // Apply: a full prune against the floor: the same unlinks by xargs rm, the folders left
    // empty by rmdir, and depmod. Each timed run starts after a sync, and the two take turns
    // going first, so that neither pays for the other's writeback.
    let disk = ApplyDisk::new(&scratch);
    let (mut apply, mut floor, mut apply_mib) = (Vec::new(), Vec::new(), 0.0f64);
    for i in 0..PAIRS {
        let a = Fixture::new(disk.dir(), release, false);
        let b = Fixture::new(disk.dir(), release, false);
        let out = hook(&b.root, &["--dry-run", "--json"]).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let files: Vec<PathBuf> = json["plan"]["kernels"][0]["prune"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| b.tree().join(f["path"].as_str().unwrap()))
            .collect();
        // Every folder above a pruned file, inside the tree, deepest first.
        let tree = b.tree();
        let mut dirs: Vec<&Path> = files
            .iter()
            .flat_map(|f| f.ancestors().skip(1).take_while(|d| *d != tree))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        if i == 0 {
            apply_mib = peak_mib(&hook(&a.root, &[]));
            continue;
        }
        let mut limopack = || {
            sync_disks();
            apply.push(run(&mut hook(&a.root, &[])));
        };
        let mut by_hand = || {
            sync_disks();
            let started = Instant::now();
            xargs(&["rm", "-f"], files.iter().map(|f| f.as_path()));
            xargs(&["rmdir", "--ignore-fail-on-non-empty"], dirs.iter().copied());
            run(Command::new("depmod").arg("-b").arg(&b.root).arg(&b.kver));
            floor.push(started.elapsed());
        };
        if i % 2 == 0 {
            limopack();
            by_hand();
        } else {
            by_hand();
            limopack();
        }
    }
    let (a, f) = (stats(&apply), stats(&floor));
    println!("apply (full prune, {} pairs after one run for memory, on {}):", apply.len(), disk.what());
    println!("  limopack-hook             median {:7.1} ms  (min {:.1}, max {:.1}), {apply_mib:.1} MiB", a.0, a.1, a.2);
    println!("  rm + rmdir + depmod       median {:7.1} ms  (min {:.1}, max {:.1})", f.0, f.1, f.2);
    println!("  ratio {:.3}", a.0 / f.0);
    report.target(&format!("apply <= 1.2 x the floor ({:.3})", a.0 / f.0), a.0 / f.0 <= 1.2);
    let peak = hook_mib.max(noop_mib).max(apply_mib);
    report.target(&format!("peak memory <= 20 MiB ({peak:.1} MiB)"), peak <= 20.0);
}

/// Where the apply pair prunes: by default a fresh ext4 on a loop device backed by RAM
/// (`/dev/shm`). On a file system mounted with online discard (`-o discard`, as the
/// development machine's root is), each unlink waits for the discard of the file's blocks
/// (`ext4_free_blocks` -> `blkdev_issue_discard`), and both sides then time the virtual disk's
/// latency of the moment: the floor alone ranged from 1.9 s to 5.4 s in one run. On its own
/// ext4, with its own journal, the pair times the work, fsyncs included.
/// `LIMOPACK_BENCH_DISK=target` prunes under `target/bench` instead.
enum ApplyDisk {
    Ram { image: PathBuf, mount: PathBuf },
    Target(PathBuf),
}

impl ApplyDisk {
    fn new(scratch: &Path) -> ApplyDisk {
        if std::env::var("LIMOPACK_BENCH_DISK").as_deref() == Ok("target") {
            return ApplyDisk::Target(scratch.to_path_buf());
        }
        let image = PathBuf::from(format!("/dev/shm/limopack-bench-{}.img", std::process::id()));
        let mount = scratch.join("ram");
        fs::create_dir_all(&mount).unwrap();
        // Two copies of the tree at a time, 400 MiB each; the image is sparse.
        run(Command::new("truncate").args(["-s", "3G"]).arg(&image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        ApplyDisk::Ram { image, mount }
    }

    fn dir(&self) -> &Path {
        match self {
            ApplyDisk::Ram { mount, .. } => mount,
            ApplyDisk::Target(dir) => dir,
        }
    }

    fn what(&self) -> String {
        match self {
            ApplyDisk::Ram { .. } => "ext4 on a loop device in RAM".into(),
            ApplyDisk::Target(dir) => format!("the disk of {}", dir.display()),
        }
    }
}

impl Drop for ApplyDisk {
    fn drop(&mut self) {
        if let ApplyDisk::Ram { image, mount } = self {
            let _ = Command::new("umount").arg(&*mount).status();
            let _ = fs::remove_file(&*image);
        }
    }
}

/// Dry runs and kmod loops over the requested modules, interleaved: the stats of each.
fn plan_against_kmod(fx: &Fixture) -> ((f64, f64, f64), (f64, f64, f64)) {
    let (mut plan, mut kmod) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        plan.push(run(&mut hook(&fx.root, &["--dry-run"])));
        let started = Instant::now();
        for module in REQUESTED {
            run(&mut modprobe(fx.release, &fx.root, &fx.kver, module));
        }
        kmod.push(started.elapsed());
    }
    (stats(&plan), stats(&kmod))
}

/// The plan on synthetic trees of growing size.
fn scaling(scratch: &Path, report: &mut Report) {
    println!("scaling (dry run on synthetic trees, depmod off):");
    let mut per_module = Vec::new();
    for n in [1_000usize, 10_000, 100_000] {
        let mut tmp = tempfile::Builder::new().prefix("bench-synthetic-").tempdir_in(scratch).unwrap();
        if std::env::var_os("LIMOPACK_BENCH_KEEP").is_some() {
            tmp.disable_cleanup(true);
            println!("  kept {}", tmp.path().display());
        }
        synthetic(tmp.path(), n);
        as_after_a_real_run(tmp.path());
        let samples: Vec<Duration> = (0..5).map(|_| run(&mut hook(tmp.path(), &["--dry-run"]))).collect();
        let (median, min, max) = stats(&samples);
        let mib = peak_mib(&hook(tmp.path(), &["--dry-run"]));
        println!("  {n:>7} modules  median {median:8.1} ms  (min {min:.1}, max {max:.1})  {:.2} us/module  {mib:.1} MiB", median * 1000.0 / n as f64);
        per_module.push((n, median));
    }
    let (small, large) = (per_module[1], per_module[2]);
    let growth = (large.1 / small.1) / (large.0 as f64 / small.0 as f64);
    report.target(&format!("plan grows linearly (10k to 100k: {growth:.2} x linear)"), growth <= 1.5);
    report.target(&format!("100k-module plan < 1 s ({:.0} ms)", large.1), large.1 < 1000.0);
}

/// Many declarations of one module: the plan's cost grows with their number, not its square
/// (each static entry and each module's users were once searched for every declaration).
fn declarations(scratch: &Path, report: &mut Report) {
    println!("declarations (dry run, 1,000 modules, N admin declarations of one module):");
    let mut timed = Vec::new();
    for n in [5_000usize, 10_000, 20_000] {
        let tmp = tempfile::Builder::new().prefix("bench-declarations-").tempdir_in(scratch).unwrap();
        synthetic(tmp.path(), 1_000);
        for i in 0..n {
            write(tmp.path(), &format!("/etc/limopack/modules.d/d{i}.yaml"), "modules: [m1]\nstatic: [m2]\n");
        }
        let samples: Vec<Duration> = (0..3).map(|_| run(&mut hook(tmp.path(), &["--dry-run"]))).collect();
        let (median, min, max) = stats(&samples);
        println!("  {n:>7} declarations  median {median:8.1} ms  (min {min:.1}, max {max:.1})");
        timed.push((n, median));
    }
    let (small, large) = (timed[1], timed[2]);
    let growth = (large.1 / small.1) / (large.0 as f64 / small.0 as f64);
    report.target(&format!("plan grows linearly in declarations (10k to 20k: {growth:.2} x linear)"), growth <= 1.5);
    report.target(&format!("20k declarations of one module plan < 1 s ({:.0} ms)", large.1), large.1 < 1000.0);
}

/// A root as every run but the first finds it: a real run has cached its trees' files (see
/// `tree::Files`). That run has pruning off, so that it deletes nothing; the config is then
/// put back.
fn as_after_a_real_run(root: &Path) {
    let config = root.join("etc/limopack/limopack.yaml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replace("prune: true", "prune: false")).unwrap();
    let out = hook(root, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(&config, text).unwrap();
    assert!(fs::read_dir(root.join("var/cache/limopack")).unwrap().next().is_some(), "no tree cache written");
}

/// `xargs -0 COMMAND` over `paths`.
fn xargs<'a>(command: &[&str], paths: impl Iterator<Item = &'a Path>) {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut child = Command::new("xargs").arg("-0").args(command).stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for path in paths {
        stdin.write_all(path.as_os_str().as_bytes()).unwrap();
        stdin.write_all(b"\0").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "xargs {command:?}");
}

fn count_modules(tree: &Path) -> usize {
    walkdir::WalkDir::new(tree)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".ko"))
        .count()
}

/// Written pages reach the disk before a timed delete, so that one run's writeback does not
/// land in the next one's time.
fn sync_disks() {
    let _ = Command::new("sync").status();
}

/// A tree of `n` modules with realistic fan-out: each depends on up to four earlier ones (a
/// third have none), has a name alias and a PCI-style wildcard alias, and one in a hundred has
/// a soft dependency. One package owns every file; 25 modules are declared, one is static.
fn synthetic(root: &Path, n: usize) {
    let kver = "9.0.0-synthetic";
    let tree = root.join("lib/modules").join(kver);
    let path = |i: usize| format!("kernel/d{}/m{i}.ko", i / 500);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |below: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below.max(1) as u64) as usize
    };
    let (mut dep, mut alias, mut softdep) = (String::new(), String::from("# Aliases extracted from modules themselves.\n"), String::new());
    let mut files = Vec::new();
    for i in 0..n {
        let deps: Vec<String> = match i {
            0 => Vec::new(),
            _ => (0..next(6).saturating_sub(2)).map(|_| path(next(i))).collect(),
        };
        dep.push_str(&format!("{}: {}\n", path(i), deps.join(" ")));
        alias.push_str(&format!("alias m{i}-alias m{i}\nalias pci:v{:08X}d*sv*sd*bc*sc*i* m{i}\n", i));
        if i % 100 == 1 {
            softdep.push_str(&format!("softdep m{i} pre: m{}-alias\n", i - 1));
        }
        let file = tree.join(path(i));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, fake_module(&format!("m{i}"))).unwrap();
        files.push(format!("/lib/modules/{kver}/{}", path(i)));
    }
    fs::write(tree.join("modules.dep"), dep).unwrap();
    fs::write(tree.join("modules.alias"), alias).unwrap();
    fs::write(tree.join("modules.softdep"), softdep).unwrap();
    fs::write(tree.join("modules.builtin"), "").unwrap();
    let mut kernel = Pkg::installed(&format!("linux-image-{kver}"), "1");
    kernel.files = files;
    write_dpkg_db(root, &[kernel]);
    let declared: Vec<String> = (0..24).map(|k| format!("m{}", (k * 7919) % n)).collect();
    write(root, "/etc/limopack/modules.d/baseline.yaml", "static: [m0]\n");
    write(root, "/etc/limopack/modules.d/local.yaml", &format!("modules: [{}]\n", declared.join(", ")));
    write(root, "/etc/limopack/limopack.yaml", "prune: true\ndepmod: false\n");
}

/// The lookup the udev rule runs for each device that appears (issue 23), on the real
/// generic kernel pruned down to ext4: the config read, the two alias indexes opened and
/// searched in place, and for a device whose driver was pruned the state read too. Timed in
/// process per device, over devices whose driver is there, pruned, or none at all; and the
/// whole `limopack-hook udev` process for a device on this machine, whose kernel limopack
/// never pruned (the process's floor).
fn hotplug(scratch: &Path, report: &mut Report) {
    let fx = Fixture::new(scratch, Release::Bookworm, true);
    write(&fx.root, "/etc/limopack/modules.d/baseline.yaml", "static: [ext4]\n");
    write(&fx.root, "/usr/share/limopack/bench-tools.yaml", "modules: [virtio_net, ahci]\n");
    run(&mut hook(&fx.root, &[]));
    let root = limopack::root::Root::new(&fx.root).unwrap();
    let kver = limopack::kver::Kver::new(&fx.kver).unwrap();
    let devices = [
        ("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", true),
        ("virtio:d00000004v00001AF4", true),
        ("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00", true),
        ("pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", true),
        ("virtio:d00000001v00001AF4", false),
        ("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", false),
        ("platform:serial8250", false),
        ("acpi:PNP0501:", false),
    ];
    println!("hotplug lookup (udev rule, per device, pruned generic kernel):");
    let mut worst: f64 = 0.0;
    for (modalias, pruned) in devices {
        let found = limopack::admin::restore::uevent_for(&root, &kver, modalias, "/devices/bench").unwrap();
        assert_eq!(!found.is_empty(), pruned, "{modalias}: {found:?}");
        let samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                let _ = limopack::admin::restore::uevent_for(&root, &kver, modalias, "/devices/bench").unwrap();
                started.elapsed()
            })
            .collect();
        let (median, min, max) = stats(&samples);
        worst = worst.max(median);
        println!("  {modalias:<56} {:<9} median {median:6.3} ms  (min {min:.3}, max {max:.3})", if pruned { "pruned" } else { "there" });
    }
    let samples: Vec<Duration> = (0..50)
        .map(|_| run(Command::new(HOOK).arg("udev").env("MODALIAS", devices[0].0).env("DEVPATH", "/devices/bench")))
        .collect();
    let (median, min, max) = stats(&samples);
    println!("  limopack-hook udev, whole process (host kernel not pruned)  median {median:6.3} ms  (min {min:.3}, max {max:.3})");
    report.target(&format!("udev lookup < 2 ms a device (worst median {worst:.3} ms)"), worst < 2.0);
}
