//! Trying to break limopack: bad input of every kind, concurrent runs, stale locks, hostile
//! trees, read-only and full disks, and a `--root` run watched for what it touches outside
//! the root. Whatever happens, nothing needed is lost, and only what was to be pruned goes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fs_err as fs;
use crate::support::sys::*;
use crate::support::*;

/// What a bad input must lead to.
enum Expect {
    /// The run stops: the error names `file` (in the root), at `FILE:LINE:COLUMN:` when
    /// `located`, and says `message`. Nothing changes, and a dry run and `status` stop too.
    Error { file: &'static str, located: bool, message: &'static str },
    /// The run goes on: it says `says` (on stderr), and the kernel's tree ends exactly as it
    /// does without the fault.
    Handled { says: &'static str },
    /// Another kernel's tree (`tree`) is at fault: the run serves the standard kernel as a
    /// clean run does, leaves that one as it is, and ends with an error naming `file`.
    OtherKernel { tree: &'static str, file: &'static str, message: &'static str },
}

struct Case {
    what: &'static str,
    setup: Box<dyn Fn(&Sys)>,
    expect: Expect,
}

fn case(what: &'static str, setup: impl Fn(&Sys) + 'static, expect: Expect) -> Case {
    Case { what, setup: Box::new(setup), expect }
}

fn error(file: &'static str, message: &'static str) -> Expect {
    Expect::Error { file, located: true, message }
}

fn refused(file: &'static str, message: &'static str) -> Expect {
    Expect::Error { file, located: false, message }
}

fn handled(says: &'static str) -> Expect {
    Expect::Handled { says }
}

const DECL: &str = "etc/limopack/modules.d/x.yaml";
const VENDOR: &str = "usr/share/limopack/x.yaml";
const CONFIG: &str = "etc/limopack/limopack.yaml";
const SOFTDEP_FILE: &str = "lib/modules/6.1.0-1-test/modules.softdep";
const STATE: &str = "var/lib/limopack/state.json";

/// Writes raw bytes to `rel` in the root, mode 0644.
fn write_bytes(sys: &Sys, rel: &str, bytes: &[u8]) {
    let path = sys.p(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn chmod(sys: &Sys, rel: &str, mode: u32) {
    fs::set_permissions(sys.p(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// 50 MB of valid YAML: a list of plausible module names.
fn huge_yaml(key: &str) -> Vec<u8> {
    let mut text = format!("{key}:\n").into_bytes();
    let mut i = 0u64;
    while text.len() < 50_000_000 {
        text.extend_from_slice(format!("  - module_{i}\n").as_bytes());
        i += 1;
    }
    text
}

fn cases() -> Vec<Case> {
    vec![
        // Declarations.
        case("broken YAML", |s| s.admin("x", "modules: [btusb\nstatic:\n  - ext4\n"), error(DECL, "")),
        case("typo'd key", |s| s.admin("x", "modules:\n  - btusb\nmodlues:\n  - btrfs\n"), error(DECL, "unknown field `modlues`")),
        case("wrong type", |s| s.admin("x", "modules: btusb\n"), error(DECL, "expected a sequence")),
        case("a mapping where a list belongs", |s| s.admin("x", "modules:\n  btusb: yes\n"), error(DECL, "expected a sequence")),
        case("static of the wrong type", |s| s.admin("x", "static: 3\n"), error(DECL, "expected a sequence")),
        case("duplicate keys", |s| s.admin("x", "modules: [btusb]\nmodules: [btrfs]\n"), error(DECL, "duplicate")),
        case("non-UTF-8 bytes", |s| write_bytes(s, DECL, b"modules:\n  - bt\xffusb\n"), error(DECL, "not valid UTF-8")),
        case("a path as a module name", |s| s.vendor("x", "modules:\n  - kernel/fs/btrfs/btrfs.ko\n"), error(VENDOR, "is a path")),
        case("`..` as a module name", |s| s.admin("x", "static:\n  - ..\n"), error(DECL, "is not a module name")),
        case("a slash in a module name", |s| s.admin("x", "modules: [bt/usb]\n"), error(DECL, "is a path")),
        case("a file name as a module name", |s| s.admin("x", "modules: [ext4.ko]\n"), error(DECL, "")),
        case("an empty module name", |s| s.admin("x", "modules: [\"\"]\n"), error(DECL, "")),
        case("whitespace in a module name", |s| s.admin("x", "modules: [\"bt usb\"]\n"), error(DECL, "")),
        case("a glob that cannot compile", |s| s.vendor("x", "modules:\n  - snd_hda_[\n"), error(VENDOR, "bad glob")),
        case("a kernels glob that cannot compile", |s| s.vendor("x", "modules:\n  - btusb\nkernels: \"6.[1\"\n"), error(VENDOR, "bad glob")),
        case("a 50 MB declaration", |s| write_bytes(s, DECL, &huge_yaml("modules")), refused(DECL, "more than the 1048576")),
        case(
            "a declaration that is a symlink out of its folder",
            |s| {
                let target = s.outside().join("x.yaml");
                fs::write(&target, "modules: [btusb]\n").unwrap();
                fs::create_dir_all(s.p("usr/share/limopack")).unwrap();
                std::os::unix::fs::symlink(&target, s.p(VENDOR)).unwrap();
            },
            refused(VENDOR, "is a symlink out of its folder"),
        ),
        case(
            "a world-writable declaration",
            |s| {
                s.vendor("x", "modules: [btusb]\n");
                chmod(s, VENDOR, 0o666);
            },
            refused(VENDOR, "is writable by group or others (mode 666)"),
        ),
        case(
            "a group-writable declaration",
            |s| {
                s.admin("x", "modules: [btusb]\n");
                chmod(s, DECL, 0o664);
            },
            refused(DECL, "is writable by group or others (mode 664)"),
        ),
        case(
            "a declaration owned by another user",
            |s| {
                s.admin("x", "modules: [btusb]\n");
                std::os::unix::fs::chown(s.p(DECL), Some(65534), None).unwrap();
            },
            refused(DECL, "is owned by uid 65534, not root"),
        ),
        case("an empty declaration", |s| s.vendor("x", ""), handled("")),
        case("a whitespace-only declaration", |s| s.vendor("x", " \n\t\n  \n"), handled("")),
        case("a comments-only declaration", |s| s.admin("x", "# nothing yet\n"), handled("")),
        // The config.
        case("broken YAML config", |s| s.config("prune: [true\n"), error(CONFIG, "")),
        case("typo'd config key", |s| s.config("prune: true\ndepmod: false\nprnue: false\n"), error(CONFIG, "unknown field `prnue`")),
        case("config of the wrong type", |s| s.config("prune: yes please\n"), error(CONFIG, "expected a boolean")),
        case("a config mapping where a list belongs", |s| s.config("prune: true\npackages:\n  linux: yes\n"), error(CONFIG, "expected a sequence")),
        case("an unknown initramfs policy", |s| s.config("prune: true\ninitramfs: sometimes\n"), error(CONFIG, "unknown variant `sometimes`")),
        case("non-UTF-8 config", |s| write_bytes(s, CONFIG, b"prune: tr\xffue\n"), error(CONFIG, "UTF-8")),
        case("duplicate config keys", |s| s.config("prune: false\nprune: true\n"), error(CONFIG, "duplicate")),
        case("a world-writable config", |s| chmod(s, CONFIG, 0o666), refused(CONFIG, "is writable by group or others (mode 666)")),
        case("a 50 MB config", |s| write_bytes(s, CONFIG, &huge_yaml("packages")), refused(CONFIG, "more than the 1048576")),
        // The module index.
        case(
            "modules.dep truncated mid-path",
            |s| {
                let cut = DEP.find("kernel/fs/jbd2/jbd2.ko:").unwrap() + "kernel/fs/jb".len();
                s.write(DEP_FILE, &DEP[..cut]);
            },
            error(DEP_FILE, "looks truncated"),
        ),
        case(
            "modules.dep truncated mid-dependency",
            |s| {
                let cut = DEP.find("kernel/fs/mbcache.ko").unwrap() + "kernel/fs/mbc".len();
                s.write(DEP_FILE, &DEP[..cut]);
            },
            error(DEP_FILE, "`kernel/fs/mbc` is not a module file"),
        ),
        case(
            "modules.dep naming ../../etc/passwd",
            |s| s.index(K, &format!("{DEP}../../etc/passwd:\n")),
            error(DEP_FILE, "`../../etc/passwd` is not a path inside the module tree"),
        ),
        case(
            "modules.dep naming an absolute path",
            |s| s.index(K, &DEP.replace("kernel/fs/btrfs/btrfs.ko: ", "kernel/fs/btrfs/btrfs.ko: /etc/passwd.ko ")),
            error(DEP_FILE, "`/etc/passwd.ko` is not a path inside the module tree"),
        ),
        case(
            "modules.dep naming files that do not exist",
            |s| s.index(K, &format!("{DEP}kernel/ghost/ghost.ko:\n")),
            handled("kernel/ghost/ghost.ko is in modules.dep but not on disk"),
        ),
        case("modules.dep missing", |s| fs::remove_file(s.p(DEP_FILE)).unwrap(), refused(DEP_FILE, "missing, and depmod is off")),
        case("modules.alias corrupt", |s| s.write(ALIAS_FILE, "alias fs-btrfs\n"), error(ALIAS_FILE, "expected `alias PATTERN MODULE`")),
        case("modules.alias binary garbage", |s| write_bytes(s, ALIAS_FILE, b"alias \xfe\xff btrfs\n"), error(ALIAS_FILE, "")),
        case("modules.softdep corrupt", |s| s.write(SOFTDEP_FILE, "softdpe ext4 pre: crc32c\n"), error(SOFTDEP_FILE, "")),
        // Untagged words are taken as `pre:`, as keeping more is the safe side.
        case("modules.softdep with an unknown tag", |s| s.write(SOFTDEP_FILE, "softdep ext4 sideways: crc32c\n"), handled("")),
        case("modules.softdep without a module", |s| s.write(SOFTDEP_FILE, "softdep\n"), error(SOFTDEP_FILE, "")),
        // Kernel folders.
        case(
            "a kernel folder with a non-UTF-8 name",
            |s| {
                use std::os::unix::ffi::OsStrExt;
                let odd = s.p("lib/modules").join(std::ffi::OsStr::from_bytes(b"6.1.0-\xff"));
                fs::create_dir_all(odd.join("kernel")).unwrap();
                fs::write(odd.join("kernel/x.ko"), "x").unwrap();
            },
            handled("kernel folder name is not UTF-8; left alone"),
        ),
        case(
            "a kernel folder that is a symlink",
            |s| {
                let elsewhere = s.outside().join("6.9.0-elsewhere");
                fs::create_dir_all(elsewhere.join("kernel")).unwrap();
                fs::write(elsewhere.join("kernel/x.ko"), "x").unwrap();
                std::os::unix::fs::symlink(&elsewhere, s.p("lib/modules/6.9.0-elsewhere")).unwrap();
            },
            handled("kernel folder is a symlink; left alone"),
        ),
        case(
            "a kernel folder with modules and no modules.dep",
            |s| s.write("lib/modules/6.2.0-noindex/kernel/x.ko", "x"),
            Expect::OtherKernel {
                tree: "lib/modules/6.2.0-noindex",
                file: "lib/modules/6.2.0-noindex/modules.dep",
                message: "missing, and depmod is off",
            },
        ),
        case(
            "an empty leftover kernel folder",
            |s| fs::create_dir_all(s.p("lib/modules/6.0.0-gone/updates/dkms")).unwrap(),
            // A folder limopack never managed: nothing to forget, and nothing to say.
            handled(""),
        ),
        // dpkg and the state.
        case(
            "a dpkg status file dpkg would refuse",
            |s| s.write("var/lib/dpkg/status", "Package: broken\nStatus: what\n\n"),
            error("var/lib/dpkg/status", "broken: `Status: what` is not dpkg's `WANT FLAG STATUS`"),
        ),
        case(
            "a dpkg status file that is not UTF-8",
            |s| write_bytes(s, "var/lib/dpkg/status", b"Package: br\xffoken\nStatus: install ok installed\n"),
            refused("var/lib/dpkg/status", "not valid UTF-8"),
        ),
        case("a corrupt state file", |s| s.write(STATE, "{\"format\": 1,\n  oops"), error(STATE, "")),
        case("a state file of a future format", |s| s.write(STATE, "{\"format\": 3}\n"), refused(STATE, "state format 3")),
    ]
}

/// A hash of each kernel's tree after a clean run of the standard root: what a handled fault
/// must also end with.
fn reference() -> String {
    let sys = Sys::standard();
    sys.ok(&[]);
    tree_hash(&sys.m(K, "kernel"))
}

#[test]
fn bad_input_matrix() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let clean = reference();
    for Case { what, setup, expect } in &cases {
        eprintln!("case: {what}");
        let sys = Sys::standard();
        setup(&sys);
        let before = tree_hash(&sys.p("lib"));
        let state_before = fs::read(sys.p(STATE)).ok();
        match expect {
            Expect::Error { file, located, message } => {
                let out = sys.fails(&[]);
                let path = sys.p(file).display().to_string();
                if *located {
                    assert_located(&out.stderr, &path);
                } else {
                    assert!(out.stderr.contains(&path), "{what}: the error does not name {path}:\n{}", out.stderr);
                }
                assert!(out.stderr.contains(message), "{what}: expected {message:?} in:\n{}", out.stderr);
                assert!(out.stderr.lines().count() <= 3, "{what}: the error is not short:\n{}", out.stderr);
                assert_eq!(tree_hash(&sys.p("lib")), before, "{what}: something changed");
                // A broken declaration stops pruning only, and a broken tree only its kernel:
                // what the rest declares is still recorded, kept and restored. A fault of the
                // config, dpkg's database or the state stops everything.
                if [CONFIG, "var/lib/dpkg/status", STATE].contains(file) {
                    assert_eq!(fs::read(sys.p(STATE)).ok(), state_before, "{what}: the state changed");
                }
                assert!(!out.stdout.contains(", pruned "), "{what}: {}", out.stdout);
                sys.fails(&["--dry-run"]);
                sys.fails(&["status"]);
            }
            Expect::OtherKernel { tree, file, message } => {
                let other = tree_hash(&sys.p(tree));
                let out = sys.fails(&[]);
                let path = sys.p(file).display().to_string();
                assert!(out.stderr.contains(&path) && out.stderr.contains(message), "{what}:\n{}", out.stderr);
                assert!(out.stderr.contains("a kernel cannot be read: it is left as it is this run, and the others were served"), "{what}:\n{}", out.stderr);
                assert_eq!(tree_hash(&sys.p(tree)), other, "{what}: the kernel at fault changed");
                assert_eq!(tree_hash(&sys.m(K, "kernel")), clean, "{what}: the other kernel is not what a clean run leaves");
            }
            Expect::Handled { says } => {
                let out = sys.ok(&[]);
                assert!(out.stderr.contains(says), "{what}: expected {says:?} in:\n{}", out.stderr);
                assert_eq!(tree_hash(&sys.m(K, "kernel")), clean, "{what}: the modules are not what a clean run leaves");
            }
        }
    }
}

/// Without dpkg's database, limopack cannot know who owns what: it stops and deletes nothing.
#[test]
fn a_missing_dpkg_database_stops_the_run() {
    let sys = Sys::standard();
    fs::remove_file(sys.p("var/lib/dpkg/status")).unwrap();
    let before = tree_hash(&sys.p("lib"));
    let out = sys.fails(&[]);
    let status = sys.p("var/lib/dpkg/status").display().to_string();
    assert!(out.stderr.contains(&format!("limopack: error: {status}: No such file or directory")), "{}", out.stderr);
    assert_eq!(tree_hash(&sys.p("lib")), before);
}

/// Eight runs started at once on one root all succeed, one after another (they wait for the
/// lock), and leave the tree a single run leaves.
#[test]
fn eight_runs_at_once_end_right() {
    let clean = reference();
    let sys = Sys::standard();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_limopack-hook"))
                .arg("--root")
                .arg(&sys.root)
                .env_remove("DPKG_ADMINDIR")
                .env_remove("DPKG_ROOT")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pruned = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        pruned += stdout.matches(", pruned ").count();
    }
    assert_eq!(pruned, 1, "one run pruned, the seven after it found nothing to do");
    assert_eq!(tree_hash(&sys.m(K, "kernel")), clean);
    assert!(!sys.p("var/lib/limopack/journal.json").exists());
}

/// A lock held by a live run makes the next one wait; a lock whose holder was killed does not
/// block anyone: the kernel drops an flock with its holder.
#[test]
fn a_held_lock_waits_and_a_stale_one_never_blocks() {
    let sys = Sys::standard();
    let lock = sys.p("var/lib/limopack/lock");
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(&lock, "").unwrap();

    // The shell takes the lock on its descriptor 9 and becomes `sleep`, which holds it on.
    let mut holder = Command::new("sh")
        .args(["-c", "exec 9>\"$1\"; flock 9; exec sleep 600", "sh"])
        .arg(&lock)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let waiting = Command::new(env!("CARGO_BIN_EXE_limopack-hook"))
        .arg("--root")
        .arg(&sys.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists(), "the run did not wait for the lock");
    // SIGKILL: the holder dies without any cleanup, leaving the lock file behind.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("limopack: waiting for another run to finish"), "{stderr}");
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
    assert!(lock.exists(), "the lock file stays; only its flock mattered");
}

/// A module file replaced by a folder or a FIFO is skipped with a warning; the rest of the
/// plan goes ahead.
#[test]
fn a_module_that_is_a_folder_or_fifo_is_skipped() {
    let sys = Sys::standard();
    let btrfs = sys.m(K, "kernel/fs/btrfs/btrfs.ko");
    fs::remove_file(&btrfs).unwrap();
    fs::create_dir(&btrfs).unwrap();
    fs::write(btrfs.join("inside"), "keep me").unwrap();
    let xor = sys.m(K, "kernel/crypto/xor.ko");
    fs::remove_file(&xor).unwrap();
    let made = Command::new("mkfifo").arg(&xor).status().unwrap();
    assert!(made.success());
    let out = sys.ok(&[]);
    assert!(out.stderr.contains("kernel/fs/btrfs/btrfs.ko: not a regular file; left alone"), "{}", out.stderr);
    assert!(out.stderr.contains("kernel/crypto/xor.ko: not a regular file; left alone"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(btrfs.join("inside")).unwrap(), "keep me");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fs::symlink_metadata(&xor).unwrap().file_type()));
    assert!(!sys.m(K, "kernel/lib/raid6/raid6_pq.ko").exists(), "the rest was pruned");
    assert!(sys.m(K, "kernel/fs/ext4/ext4.ko").exists());
}

/// Mounts `what` on `at` with `options` for as long as this lives.
struct Mount(std::path::PathBuf);

impl Mount {
    fn new(args: &[&str], at: &Path) -> Mount {
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?} {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// On a read-only filesystem the run stops with a clear error and changes nothing; on the
/// same root made writable, the next run is fine.
#[test]
fn a_read_only_root_stops_cleanly() {
    let sys = Sys::standard();
    let before = tree_hash(&sys.p("lib"));
    let ro = {
        let _bind = Mount::new(&["--bind", &sys.root.display().to_string()], &sys.root);
        let remount = Command::new("mount").args(["-o", "remount,ro,bind"]).arg(&sys.root).status().unwrap();
        assert!(remount.success());
        let out = sys.fails(&[]);
        assert!(out.stderr.contains("Read-only file system"), "{}", out.stderr);
        assert!(out.stderr.contains(&sys.p("var/lib/limopack").display().to_string()), "{}", out.stderr);
        // A dry run needs no write.
        sys.ok(&["--dry-run"]);
        out
    };
    assert_eq!(tree_hash(&sys.p("lib")), before, "{}", ro.stderr);
    assert!(!sys.p(STATE).exists());
    sys.ok(&[]);
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists());
}

/// On a full disk the run stops with a clear error; the state is never left half written,
/// every kept module is there, and the next run with room finishes the job.
#[test]
fn a_full_disk_stops_cleanly() {
    let sys = Sys::standard();
    let disk = sys.outside().join("disk");
    fs::create_dir_all(&disk).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &disk);
    copy_root(&sys.root, &disk.join("root"));
    let root = disk.join("root");
    // Archiving the pruned files needs room; fill the disk but for a few KiB.
    fs::write(root.join(CONFIG.trim_start_matches('/')), "prune: true\ndepmod: false\narchive: true\n").unwrap();
    let filler = disk.join("filler");
    let _ = Command::new("dd").args(["if=/dev/zero", "bs=1k"]).arg(format!("of={}", filler.display())).stderr(Stdio::null()).status();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_limopack-hook"))
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let tree = root.join("lib/modules").join(K);
    for kept in ["kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/crypto/crc32c_generic.ko"] {
        assert!(tree.join(kept).exists(), "{kept}");
    }
    if let Ok(text) = fs::read_to_string(root.join(STATE)) {
        serde_json::from_str::<serde_json::Value>(&text).expect("the state is whole");
    }
    fs::remove_file(&filler).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!tree.join("kernel/fs/btrfs/btrfs.ko").exists());
    assert!(tree.join("kernel/fs/ext4/ext4.ko").exists());
    assert!(!root.join("var/lib/limopack/journal.json").exists());
    let state: serde_json::Value = serde_json::from_str(&fs::read_to_string(root.join(STATE)).unwrap()).unwrap();
    let gone = dep_paths(DEP).iter().filter(|rel| !tree.join(rel).exists()).count();
    assert_eq!(pruned_in(&state, K).len(), gone);
}

/// A `--root` run never reads or writes the host's /proc, /var/lib/limopack or dpkg
/// database: every path it or its programs open is inside the root, or a program, library
/// or locale file they are made of.
#[test]
fn a_root_run_touches_nothing_of_the_host() {
    let sys = Sys::standard();
    let (_, text) = sys.traced("%file", &[]);
    let root = sys.root.display().to_string();
    let mut outside: Vec<String> = Vec::new();
    for line in text.lines() {
        // A program's arguments are not paths it opens; only the program itself is.
        let quoted = line.split('"').skip(1).step_by(2);
        let paths: Vec<&str> = match line.contains(" execve(") {
            true => quoted.take(1).collect(),
            false => quoted.collect(),
        };
        for path in paths {
            let host_state = ["/proc", "/var/lib/limopack", "/var/lib/dpkg", "/etc/limopack", "/usr/share/limopack", "/lib/modules", "/usr/lib/modules", "/etc/modprobe.d"];
            if path.starts_with('/') && !path.starts_with(&root) && host_state.iter().any(|h| path.starts_with(h)) {
                outside.push(line.to_string());
            }
        }
    }
    // /proc/self is the process looking at itself (the dynamic loader, std, libpathrs
    // reading back where a descriptor leads), not the host.
    let own = |l: &String| {
        ["\"/proc/self/", "\"/proc/thread-self/", "\"/proc/./thread-self/"].iter().any(|p| l.contains(p))
            || (l.contains("(-9, \"/proc\", ") && l.contains("O_PATH|O_DIRECTORY"))
    };
    outside.retain(|l| !own(l));
    assert!(outside.is_empty(), "host paths touched:\n{}", outside.join("\n"));
    assert!(text.contains(&format!("{root}/var/lib/dpkg")), "dpkg-query read the root's database");
    assert!(!sys.m(K, "kernel/fs/btrfs/btrfs.ko").exists(), "the run did its job");
}
