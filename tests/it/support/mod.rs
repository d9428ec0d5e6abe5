//! Shared integration-test support: fake dpkg databases, real Debian kernel
//! trees of each release (downloaded once and cached), a kmod oracle and tree hashing.
//!
//! External tools used: dpkg-query, dpkg-deb (dpkg), apt-cache, apt-get, apt-helper (apt),
//! depmod, modprobe (kmod), cp (coreutils), chroot.
#![allow(dead_code)]

pub mod debian_root;
pub mod image;
pub mod qemu;
pub mod sys;

use std::collections::{BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use fs_err as fs;
use walkdir::WalkDir;

/// One package as recorded in the fake dpkg database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    /// dpkg's three-word status, e.g. "install ok installed".
    pub status: String,
    /// Absolute in-root paths ("/lib/modules/..."), in dpkg's list order.
    /// Missing parent directories are added by `write_dpkg_db`.
    pub files: Vec<String>,
}

impl Pkg {
    pub fn installed(name: &str, version: &str) -> Pkg {
        Pkg {
            name: name.to_owned(),
            version: version.to_owned(),
            status: "install ok installed".to_owned(),
            files: Vec::new(),
        }
    }
}

/// A Debian release whose kernels, kmod, apt and dpkg the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12, oldstable: kmod 30, modules `.ko`, packages list them under `/lib/modules`.
    Bookworm,
    /// Debian 13, stable: kmod 34, modules `.ko.xz`, packages list them under
    /// `/usr/lib/modules`, and `/lib` is a link to `usr/lib`.
    Trixie,
}

impl Release {
    pub fn codename(self) -> &'static str {
        match self {
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// The folder of the module trees as the release's kernel packages list them in dpkg's
    /// database.
    pub fn modules_dir(self) -> &'static str {
        match self {
            Release::Bookworm => "/lib/modules",
            Release::Trixie => "/usr/lib/modules",
        }
    }

    /// The folder its firmware packages ship their files in.
    pub fn firmware_dir(self) -> &'static str {
        match self {
            Release::Bookworm => "/lib/firmware",
            Release::Trixie => "/usr/lib/firmware",
        }
    }

    /// The file of a module in the release's kernels, from its path without the extension:
    /// `kernel/fs/btrfs/btrfs` is `kernel/fs/btrfs/btrfs.ko` or `….ko.xz`.
    pub fn ko(self, stem: &str) -> String {
        match self {
            Release::Bookworm => format!("{stem}.ko"),
            Release::Trixie => format!("{stem}.ko.xz"),
        }
    }

    /// Whether this machine runs the release: its own apt and kmod are then the release's.
    fn is_host(self) -> bool {
        host_codename() == self.codename()
    }
}

/// `VERSION_CODENAME` of this machine's /etc/os-release.
fn host_codename() -> String {
    let release = fs::read_to_string("/etc/os-release").unwrap();
    release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("no VERSION_CODENAME in /etc/os-release")
        .trim_matches('"')
        .to_owned()
}

/// The package's program by either of its names: `limopack-hook` as cargo built it, or
/// `limopack`, a link to it beside it, made as the package makes it.
pub fn program(name: &str) -> PathBuf {
    let hook = Path::new(env!("CARGO_BIN_EXE_limopack-hook"));
    if name == "limopack-hook" {
        return hook.to_path_buf();
    }
    let link = hook.with_file_name(name);
    if fs::read_link(&link).ok().as_deref() != Some(Path::new("limopack-hook")) {
        // Made aside and renamed over, as tests running side by side may both make it.
        let aside = hook.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_file(&aside);
        std::os::unix::fs::symlink("limopack-hook", &aside).unwrap();
        fs::rename(&aside, &link).unwrap();
    }
    link
}

/// A command of the release's kmod (`depmod`, `modprobe`) that reads trees by path as the
/// host's does: the host's own when this machine runs the release, otherwise the `kmod` of
/// the release's cached root (see `debian_root::cloud_root`) with that root's libraries,
/// started through its dynamic loader, so that neither a chroot nor a mount is needed.
pub fn kmod(release: Release, program: &str) -> Command {
    if release.is_host() {
        return Command::new(program);
    }
    let root = debian_root::cloud_root(release);
    let mut cmd = Command::new(root.join("usr/lib64/ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(root.join("usr/lib/x86_64-linux-gnu"))
        .args(["--argv0", program])
        .arg(root.join("usr/bin/kmod"));
    cmd
}

/// Runs `cmd`, panicking with its stderr on failure; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("command output is not UTF-8")
}

fn status_path(root: &Path) -> PathBuf {
    root.join("var/lib/dpkg/status")
}

/// (Re)creates `root/var/lib/dpkg` holding exactly `pkgs`, laid out like a
/// real dpkg admin dir so that `dpkg-query --root=ROOT` answers -W, -l, -S
/// and `${db-fsys:Files}` queries.
pub fn write_dpkg_db(root: &Path, pkgs: &[Pkg]) {
    let admin = root.join("var/lib/dpkg");
    if admin.exists() {
        fs::remove_dir_all(&admin).unwrap();
    }
    fs::create_dir_all(admin.join("info")).unwrap();
    fs::create_dir_all(admin.join("updates")).unwrap();
    for name in ["available", "diversions", "statoverride"] {
        fs::write(admin.join(name), "").unwrap();
    }
    // "1" = multiarch db layout, what every current dpkg writes.
    fs::write(admin.join("info/format"), "1\n").unwrap();

    let mut paragraphs = Vec::new();
    for pkg in pkgs {
        let list = dpkg_list(&pkg.files);
        let mut text = list.join("\n");
        text.push('\n');
        fs::write(admin.join(format!("info/{}.list", pkg.name)), text).unwrap();
        paragraphs.push(format!(
            "Package: {}\nStatus: {}\nPriority: optional\nSection: kernel\n\
             Installed-Size: {}\nMaintainer: limopack tests <tests@example.invalid>\n\
             Architecture: amd64\nVersion: {}\nDescription: limopack test package {}\n",
            pkg.name,
            pkg.status,
            installed_size_kib(root, &list),
            pkg.version,
            pkg.name
        ));
    }
    fs::write(status_path(root), paragraphs.join("\n")).unwrap();
}

/// dpkg's .list form: "/." first, every parent directory before its
/// children, no duplicates.
fn dpkg_list(files: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut list = Vec::new();
    let mut push = |p: &str| {
        if seen.insert(p.to_owned()) {
            list.push(p.to_owned());
        }
    };
    push("/.");
    for file in files {
        let file = file.trim_end_matches('/');
        if file.is_empty() || file == "/." {
            continue;
        }
        assert!(file.starts_with('/'), "dpkg paths are absolute: {file:?}");
        let mut chain: Vec<&Path> = Path::new(file)
            .ancestors()
            .take_while(|a| *a != Path::new("/"))
            .collect();
        chain.reverse();
        for p in chain {
            push(p.to_str().unwrap());
        }
    }
    list
}

/// Sum of the regular files that exist in `root`, like dpkg-gencontrol computes it.
fn installed_size_kib(root: &Path, list: &[String]) -> u64 {
    let bytes: u64 = list
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(root.join(&p[1..])).ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum();
    bytes.div_ceil(1024)
}

/// Appends `root/subdir` and everything below it (dirs, files, symlinks) to
/// `pkg.files` as in-root absolute paths, sorted, parents first.
pub fn add_files_of_tree(pkg: &mut Pkg, root: &Path, subdir: &str) {
    let top = root.join(subdir.trim_start_matches('/'));
    for entry in WalkDir::new(&top).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap();
        pkg.files
            .push(format!("/{}", rel.to_str().expect("non-UTF-8 path")));
    }
}

/// Rewrites the Status line of `pkg` in root's dpkg status file, e.g. to
/// "deinstall ok config-files". The .list file is left as it is.
pub fn set_status(root: &Path, pkg: &str, status: &str) {
    let path = status_path(root);
    let text = fs::read_to_string(&path).unwrap();
    let mut found = false;
    let mut in_pkg = false;
    let mut out = String::new();
    // Line-wise so every other byte of the file survives unchanged; dpkg
    // puts Package first in each paragraph.
    for line in text.split_inclusive('\n') {
        if line.trim_end().is_empty() {
            in_pkg = false;
        } else if line.strip_prefix("Package: ").map(str::trim_end) == Some(pkg) {
            in_pkg = true;
            found = true;
        }
        if in_pkg && line.starts_with("Status:") {
            out.push_str("Status: ");
            out.push_str(status);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    assert!(found, "package {pkg} not in {}", path.display());
    fs::write(&path, out).unwrap();
}

// ---------------------------------------------------------------------------
// Real kernel packages, cached across test runs and test binaries.

pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("LIMOPACK_TEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-cache"),
    };
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Returns `cache/name`, building it first if absent. `build` gets a path
/// to create (file or directory); it is renamed into place only when
/// complete, under a per-entry lock, so concurrent test binaries and
/// threads build it once and never see a partial entry.
pub fn cached(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let cache = cache_dir();
    let target = cache.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(format!("{name}.lock")))
        .unwrap();
    // flock semantics: also excludes other threads of this process, since
    // each call opens its own file description.
    lock.lock().unwrap();
    if !target.exists() {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&cache)
            .unwrap();
        let out = tmp.path().join("out");
        build(&out);
        fs::rename(&out, &target).unwrap();
    }
    target
}

/// The .deb of the kernel that the release's `linux-image-<flavour>` currently depends on
/// (e.g. "cloud-amd64" or "amd64"), downloaded once. On this machine's release its own apt
/// fetches it; for another release, that release's apt in its cached root (which only reads
/// there) names it, its address and its checksum, and the host's apt fetches and checks it.
pub fn real_kernel_deb(release: Release, flavour: &str) -> PathBuf {
    let meta = format!("linux-image-{flavour}");
    // The cache entry is a directory holding the one .deb, so a cache hit
    // needs neither apt-cache nor apt-get.
    let dir = cached(&format!("{meta}.{}.download", release.codename()), |out| {
        fs::create_dir(out).unwrap();
        // Our temp dir is private, so apt's _apt sandbox user could not
        // write there; download as the invoking user instead.
        let as_root = ["-q", "-o", "APT::Sandbox::User=root"];
        if release.is_host() {
            let image = kernel_image(&run(Command::new("apt-cache").args(["depends", &meta])), &meta);
            run(Command::new("apt-get").args(as_root).args(["download", &image]).current_dir(out));
        } else {
            let root = debian_root::cloud_root(release);
            let in_root = |args: &[&str]| run(Command::new("chroot").arg(&root).args(args));
            let image = kernel_image(&in_root(&["apt-cache", "depends", &meta]), &meta);
            // One line: 'URI' FILE SIZE SHA256:HASH
            let uri = in_root(&["apt-get", "download", "--print-uris", &image]);
            let [uri, file, _, hash] = uri.split_whitespace().collect::<Vec<_>>()[..] else { panic!("apt-get --print-uris said: {uri}") };
            run(Command::new("/usr/lib/apt/apt-helper").args(as_root).args(["download-file", uri.trim_matches('\'')]).arg(out.join(file)).arg(hash));
        }
    });
    only_deb_in(&dir)
}

/// The kernel image package that `apt-cache depends <meta>` names.
fn kernel_image(depends: &str, meta: &str) -> String {
    depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|d| d.starts_with("linux-image-")))
        .unwrap_or_else(|| panic!("no linux-image dependency of {meta}:\n{depends}"))
        .to_owned()
}

/// The one `.deb` a download left in `dir`.
fn only_deb_in(dir: &Path) -> PathBuf {
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb in {}", dir.display());
    debs.into_iter().next().unwrap()
}

fn deb_stem(deb: &Path) -> String {
    deb.file_stem().unwrap().to_str().unwrap().to_owned()
}

/// The single kernel version under `root/lib/modules`.
fn only_kver(root: &Path) -> String {
    let names: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "expected one kernel in {}", root.display());
    names.into_iter().next().unwrap()
}

/// A pristine root with the release's real kernel package unpacked and the release's `depmod`
/// run, plus its kernel version. Shared by all tests: never modify it, copy it with
/// `copy_root` first. A trixie root has `lib` a link to `usr/lib`, as trixie's base-files
/// makes it, since its kernel ships under `/usr/lib/modules`; so `root/lib/modules` is the
/// tree's folder on either release.
pub fn real_kernel_tree(release: Release, flavour: &str) -> (PathBuf, String) {
    let deb = real_kernel_deb(release, flavour);
    let root = cached(&format!("{}.root", deb_stem(&deb)), |out| {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(out));
        fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).unwrap();
        if release.modules_dir().starts_with("/usr/") {
            std::os::unix::fs::symlink("usr/lib", out.join("lib")).unwrap();
        }
        let kver = only_kver(out);
        // -C /dev/null: don't let the host's depmod.d reorder search paths.
        run(kmod(release, "depmod")
            .args(["-C", "/dev/null", "-b"])
            .arg(out)
            .arg(&kver));
    });
    let kver = only_kver(&root);
    (root, kver)
}

/// A root at `dst` holding the index files (`modules.*`) of flavour's real kernel tree and an
/// empty stand-in for each module it lists: enough for commands that look names up, which
/// check the index against the files as a run does, and cheap to make, so the cached tree is
/// never written to. Returns the kernel version.
pub fn real_kernel_index_root(release: Release, flavour: &str, dst: &Path) -> String {
    let (cached, kver) = real_kernel_tree(release, flavour);
    let tree = dst.join("lib/modules").join(&kver);
    fs::create_dir_all(&tree).unwrap();
    for rel in modules_dep_paths(&cached, &kver) {
        let stand_in = tree.join(&rel);
        fs::create_dir_all(stand_in.parent().unwrap()).unwrap();
        fs::write(&stand_in, "").unwrap();
    }
    // After the stand-ins, so that the index is not older than any module.
    for entry in fs::read_dir(cached.join("lib/modules").join(&kver)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_str().unwrap().starts_with("modules.") {
            fs::copy(entry.path(), tree.join(entry.file_name())).unwrap();
        }
    }
    kver
}

/// Copies the whole of `src` into `dst` (created if needed), preserving
/// symlinks, modes and timestamps.
pub fn copy_root(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(dst));
}

/// `copy_root`, but with every file a hard link to `src`'s: a fraction of the time, and no
/// blocks to free when the copy goes, for a test that makes fixtures by the dozen. `src` stays
/// pristine only while every change to `dst` removes a file or replaces it by a rename, as
/// limopack and depmod do in a module tree; a write in place would reach `src`. `dst` must be
/// on `src`'s file system.
pub fn link_root(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    run(Command::new("cp").arg("-al").arg(src.join(".")).arg(dst));
}

/// The `.deb` of a release's firmware package, downloaded once. Firmware that is not free is
/// in Debian's `non-free-firmware` component, which a machine's sources often leave out; when
/// apt does not know the package, or the release is not this machine's, it is fetched with a
/// private sources list for that component of the release, leaving the system's apt state
/// alone.
pub fn firmware_deb(release: Release, package: &str) -> PathBuf {
    let dir = cached(&format!("{package}.{}.download", release.codename()), |out| {
        fs::create_dir(out).unwrap();
        let known = release.is_host() && {
            let show = Command::new("apt-cache").args(["show", "--no-all-versions", package]).output().unwrap();
            show.status.success() && !show.stdout.is_empty()
        };
        let mut options: Vec<String> = vec!["-q".into(), "-o".into(), "APT::Sandbox::User=root".into()];
        let apt = tempfile::tempdir().unwrap();
        if !known {
            let codename = release.codename();
            let sources = apt.path().join("sources.list");
            fs::write(
                &sources,
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                     http://deb.debian.org/debian {codename} non-free-firmware\n"
                ),
            )
            .unwrap();
            fs::create_dir_all(apt.path().join("lists/partial")).unwrap();
            fs::create_dir_all(apt.path().join("cache/archives/partial")).unwrap();
            for (key, value) in [
                ("Dir::Etc::SourceList", sources.clone()),
                ("Dir::Etc::SourceParts", apt.path().join("none")),
                ("Dir::State::Lists", apt.path().join("lists")),
                ("Dir::Cache", apt.path().join("cache")),
            ] {
                options.push("-o".into());
                options.push(format!("{key}={}", value.display()));
            }
            run(Command::new("apt-get").args(&options).arg("update"));
        }
        run(Command::new("apt-get").args(&options).args(["download", package]).current_dir(out));
    });
    only_deb_in(&dir)
}

/// The installed `Pkg` of flavour's real kernel image, owning exactly what
/// the .deb ships (not depmod's generated modules.* files). `root` must
/// already hold that kernel's module tree (see `copy_root`).
pub fn real_kernel_pkg(release: Release, root: &Path, flavour: &str) -> Pkg {
    let deb = real_kernel_deb(release, flavour);
    let field = |name: &str| {
        run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_owned()
    };
    let name = field("Package");
    let kver = name.strip_prefix("linux-image-").unwrap();
    assert!(
        root.join("lib/modules").join(kver).is_dir(),
        "{} lacks /lib/modules/{kver}; copy real_kernel_tree({release:?}, {flavour:?}) into it first",
        root.display()
    );
    // Listing a 70 MB .deb takes seconds, so cache the parsed listing.
    let listing = cached(&format!("{}.files", deb_stem(&deb)), |out| {
        let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
        fs::write(out, parse_deb_contents(&contents).join("\n")).unwrap();
    });
    let mut pkg = Pkg::installed(&name, &field("Version"));
    pkg.files = fs::read_to_string(listing)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    pkg
}

/// `dpkg-deb -c` lines ("drwxr-xr-x root/root 0 2024-01-01 00:00 ./lib/")
/// to dpkg paths ("/lib"); the archive root "./" is dropped.
fn parse_deb_contents(contents: &str) -> Vec<String> {
    contents
        .lines()
        .filter_map(|line| {
            // Five whitespace-separated fields precede the name.
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').expect("short dpkg-deb -c line")..];
            }
            let mut name = rest.trim_start();
            if line.starts_with('l') {
                name = name.split(" -> ").next().unwrap();
            } else if line.starts_with('h') {
                name = name.split(" link to ").next().unwrap();
            }
            let path = name.strip_prefix('.').unwrap().trim_end_matches('/');
            (!path.is_empty()).then(|| path.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// kmod oracle.

/// What the release's `modprobe --show-depends` would load for `module` in
/// root's tree, as paths relative to `root/lib/modules/<kver>/` in load order
/// (soft dependencies included); empty for built-in modules. Err carries
/// modprobe's stderr.
pub fn modprobe_show_depends(release: Release, root: &Path, kver: &str, module: &str) -> Result<Vec<String>, String> {
    // -C /dev/null replaces /etc,/run,/lib/modprobe.d so host config cannot
    // add options, aliases or install commands (checked with strace; kmod
    // still reads /proc/cmdline, which only adds options we discard).
    let out = kmod(release, "modprobe")
        .arg("-d")
        .arg(root)
        .args(["-S", kver, "-C", "/dev/null", "--show-depends", module])
        .output()
        .map_err(|e| format!("cannot run modprobe: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let moddir = root.join("lib/modules").join(kver);
    let mut paths = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("builtin ") {
            continue;
        }
        let path = line
            .strip_prefix("insmod ")
            .and_then(|rest| rest.split(' ').next())
            .ok_or_else(|| format!("unexpected modprobe output for {module}: {line:?}"))?;
        let rel = Path::new(path)
            .strip_prefix(&moddir)
            .map_err(|_| format!("{path} is outside {}", moddir.display()))?;
        paths.push(rel.to_str().unwrap().to_owned());
    }
    Ok(paths)
}

/// `modprobe_show_depends` for each of `modules` on two threads; results
/// in input order.
pub fn modprobe_show_depends_many(
    release: Release,
    root: &Path,
    kver: &str,
    modules: &[String],
) -> Vec<(String, Result<Vec<String>, String>)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(modules.len()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(module) = modules.get(i) else { break };
                let deps = modprobe_show_depends(release, root, kver, module);
                results.lock().unwrap().push((i, deps));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(i, deps)| (modules[i].clone(), deps))
        .collect()
}

/// Every module path in root's modules.dep, on either side of the colon,
/// sorted and deduplicated (relative to the module dir, as depmod writes).
pub fn modules_dep_paths(root: &Path, kver: &str) -> Vec<String> {
    let dep = fs::read_to_string(root.join("lib/modules").join(kver).join("modules.dep")).unwrap();
    let paths: BTreeSet<&str> = dep
        .lines()
        .flat_map(|l| l.split([':', ' ']))
        .filter(|p| !p.is_empty())
        .collect();
    paths.into_iter().map(str::to_owned).collect()
}

/// Hash of every path, file type, permission bits, file content and symlink
/// target (not followed) under `dir`; equal hashes mean nothing changed.
/// Timestamps and ownership are not included.
pub fn tree_hash(dir: &Path) -> String {
    let mut h = DefaultHasher::new();
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        path.strip_prefix(dir)
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
            .hash(&mut h);
        (meta.permissions().mode() & 0o7777).hash(&mut h);
        let ft = entry.file_type();
        if ft.is_symlink() {
            'l'.hash(&mut h);
            fs::read_link(path)
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .hash(&mut h);
        } else if ft.is_file() {
            'f'.hash(&mut h);
            fs::read(path).unwrap().hash(&mut h);
        } else if ft.is_dir() {
            'd'.hash(&mut h);
        } else {
            'o'.hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// The files a state file records as pruned in `kver`, by path, each with its package,
/// version, size and whether a copy is archived: the state groups them by package.
pub fn pruned_in(state: &serde_json::Value, kver: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut files = serde_json::Map::new();
    let Some(groups) = state["kernels"].get(kver).and_then(|k| k.get("pruned")) else { return files };
    for group in groups.as_array().expect("pruned files grouped by package") {
        for (path, size) in group["files"].as_object().expect("files by path") {
            let archived = group.get("archived").cloned().unwrap_or(false.into());
            let file = serde_json::json!({"package": group["package"], "version": group["version"], "size": size, "archived": archived});
            files.insert(path.clone(), file);
        }
    }
    files
}

/// A stand-in kernel module: the smallest x86-64 relocatable ELF object with a `.modinfo`
/// section naming it, which limopack reads as it reads a real one. depmod cannot use it (it
/// has no symbols), which is why the synthetic roots run with `depmod: false`.
pub fn fake_module(name: &str) -> Vec<u8> {
    let modinfo = format!("name={name}\0description=a stand-in for {name}, not a real module\0");
    let names = b"\0.modinfo\0.shstrtab\0";
    let mut out = vec![0u8; 64];
    let modinfo_at = out.len();
    out.extend_from_slice(modinfo.as_bytes());
    let names_at = out.len();
    out.extend_from_slice(names);
    out.resize(out.len().next_multiple_of(8), 0);
    let shoff = out.len();
    out.resize(shoff + 3 * 64, 0);
    let put = |out: &mut Vec<u8>, at: usize, value: u64, width: usize| out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    out[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    put(&mut out, 16, 1, 2); // ET_REL
    put(&mut out, 18, 62, 2); // EM_X86_64
    put(&mut out, 20, 1, 4);
    put(&mut out, 40, shoff as u64, 8);
    put(&mut out, 52, 64, 2); // e_ehsize
    put(&mut out, 58, 64, 2); // e_shentsize
    put(&mut out, 60, 3, 2); // e_shnum
    put(&mut out, 62, 2, 2); // e_shstrndx
    for (i, (name, kind, at, len)) in [(1u64, 1u64, modinfo_at, modinfo.len()), (10, 3, names_at, names.len())].into_iter().enumerate() {
        let header = shoff + (i + 1) * 64;
        put(&mut out, header, name, 4);
        put(&mut out, header + 4, kind, 4);
        put(&mut out, header + 24, at as u64, 8);
        put(&mut out, header + 32, len as u64, 8);
    }
    out
}

/// Runs `command` to its end, killing it (and failing the test) if it takes longer than
/// `limit`: what a test asks of limopack is that no input hangs it.
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reading = std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stderr = std::thread::spawn(move || std::io::Read::read_to_end(&mut pipes.1, &mut err).map(|_| err));
        std::io::Read::read_to_end(&mut pipes.0, &mut out).unwrap();
        (out, stderr.join().unwrap().unwrap())
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}: it hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (stdout, stderr) = reading.join().unwrap();
    std::process::Output { status, stdout, stderr }
}
