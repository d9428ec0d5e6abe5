//! A debootstrapped Debian root of each release with its real cloud kernel, and a chroot to
//! drive apt and dpkg in it, for the tests that run limopack the way Debian does.
//!
//! External tools used: debootstrap, chroot, mount and umount.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

use super::{cached, Release};

const MIRROR: &str = "http://deb.debian.org/debian";

/// Runs `cmd`, panicking with its output on failure; returns stdout and stderr together.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

/// A root with `/proc` mounted for as long as this lives.
pub struct Chroot {
    pub root: PathBuf,
}

impl Chroot {
    pub fn enter(root: &Path) -> Chroot {
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(root.join("proc")));
        Chroot { root: root.to_path_buf() }
    }

    /// Runs a shell command inside, the way an admin at its console would; returns what it
    /// printed on both streams, in order.
    pub fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        assert!(out.0, "in the chroot: {script}\n{}", out.1);
        out.1
    }

    pub fn try_sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("chroot")
            .arg(&self.root)
            .args(["/bin/sh", "-c", &format!("exec 2>&1; {script}")])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.root.join("proc")).status();
    }
}

/// The cached root of a release with its cloud kernel, built on first use and again each week:
/// the archive drops a kernel version at a point release, and the download step needs the
/// installed one to still be there.
pub fn cloud_root(release: Release) -> PathBuf {
    weekly(&format!("{}-cloud-root", release.codename()), |out| {
        run(Command::new("debootstrap")
            .args(["--variant=minbase", release.codename()])
            .arg(out)
            .arg(MIRROR));
        let chroot = Chroot::enter(out);
        // apt-get keeps what it downloads in /var/cache/apt/archives: the kernel's .deb is
        // what a restore reads later.
        chroot.sh("apt-get -q update && apt-get -q install -y --no-install-recommends linux-image-cloud-amd64");
    })
}

/// trixie's cached cloud root where dracut replaced initramfs-tools, as `apt-get install
/// dracut` does (initramfs-tools is removed, its core tools stay), and with systemd-sysv, whose
/// poweroff, reboot and halt dracut puts in the initramfs. Its installing built the kernel's
/// initramfs with dracut, from the whole tree.
pub fn dracut_root() -> PathBuf {
    let cloud = cloud_root(Release::Trixie);
    weekly("trixie-dracut-root", |out| {
        super::copy_root(&cloud, out);
        let chroot = Chroot::enter(out);
        // Built again once systemd-sysv is there, whichever of the two apt configured first.
        chroot.sh("apt-get -q install -y --no-install-recommends dracut systemd-sysv && \
            for k in $(ls /usr/lib/modules); do dracut -q --force /boot/initrd.img-$k $k; done");
        assert!(!chroot.p("/usr/sbin/update-initramfs").exists(), "dracut should have replaced initramfs-tools");
    })
}

/// `cache/KIND.weekN`, built by `build` on first use in week N; other weeks' copies go.
fn weekly(kind: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86400;
    let kind = format!("{kind}.");
    let name = format!("{kind}week{}", days / 7);
    let cache = super::cache_dir();
    for entry in fs::read_dir(&cache).unwrap() {
        let old = entry.unwrap().file_name().into_string().unwrap();
        if old.starts_with(&kind) && !old.starts_with(&name) {
            let _ = std::fs::remove_dir_all(cache.join(&old));
            let _ = std::fs::remove_file(cache.join(&old));
        }
    }
    cached(&name, build)
}

/// The kernel version of the one tree in a release's root, found where its kernel package
/// put it.
pub fn only_kernel(release: Release, root: &Path) -> String {
    let dir = root.join(release.modules_dir().trim_start_matches('/'));
    let names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 1, "expected one kernel in {}: {names:?}", dir.display());
    names.into_iter().next().unwrap()
}

/// A package named `name` that ships `/usr/share/limopack/<name>.yaml` with `yaml`, or
/// nothing when `yaml` is None, built with dpkg-deb into `dir`.
pub fn package(dir: &Path, name: &str, yaml: Option<&str>) -> PathBuf {
    let src = dir.join(name);
    fs::create_dir_all(src.join("DEBIAN")).unwrap();
    fs::write(
        src.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: limopack tests <tests@example.invalid>\nDescription: limopack test package\n"),
    )
    .unwrap();
    if let Some(yaml) = yaml {
        fs::create_dir_all(src.join("usr/share/limopack")).unwrap();
        fs::write(src.join(format!("usr/share/limopack/{name}.yaml")), yaml).unwrap();
    }
    let deb = dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&src).arg(&deb));
    deb
}

/// What the release's kmod loads for `names` in the root's kernel, every file of it, relative
/// to the tree.
pub fn kmod_loads(release: Release, root: &Path, kver: &str, names: &[&str]) -> BTreeSet<String> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut files = BTreeSet::new();
    for (name, deps) in super::modprobe_show_depends_many(release, root, kver, &names) {
        files.extend(deps.unwrap_or_else(|e| panic!("modprobe --show-depends {name}: {e}")));
    }
    files
}

/// The module files of a tree, relative to it.
pub fn modules(tree: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(tree)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(".ko"))
        .map(|e| e.path().strip_prefix(tree).unwrap().to_string_lossy().into_owned())
        .collect()
}

