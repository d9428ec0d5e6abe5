//! The packager's path: dh_limopack and its sequence addon, run from the work tree (PATH and
//! PERL5LIB point at `debhelper/`, nothing is installed on the host), on several packages at
//! once and on the example source package `examples/packaged/limopack-example-vpn`, built with
//! dpkg-buildpackage; then that package's declaration honoured by limopack's own .deb in a
//! Debian root, of bookworm and of trixie.
//!
//! External tools used: dpkg-buildpackage and dpkg-deb (dpkg-dev, dpkg), dh (debhelper), perl;
//! for the last test, those of tests/it/support/debian_root.rs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fs_err as fs;
use crate::support::debian_root::{cloud_root, kmod_loads, modules, only_kernel, run, Chroot};
use crate::support::{copy_root, Release};

const EXAMPLE: &str = "limopack-example-vpn";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A command that finds dh_limopack, its sequence addon and limopack-hook in the work tree.
fn with_helper(program: &str) -> Command {
    let hook_dir = crate::support::program("limopack");
    let hook_dir = hook_dir.parent().unwrap();
    let path = std::env::join_paths(
        [repo().join("debhelper"), hook_dir.to_path_buf()].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut cmd = Command::new(program);
    cmd.env("PATH", path).env("PERL5LIB", repo().join("debhelper")).env("LC_ALL", "C.UTF-8");
    cmd
}

/// Runs `cmd`; its success and what it printed on both streams.
fn outcome(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Files under a folder, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// A source tree with three binary packages, each as dh helpers see them: `debian/limopack`
/// for the first, `debian/second.limopack`, nothing for the third.
fn three_packages(dir: &Path, first: &str, second: &str) {
    fs::create_dir_all(dir.join("debian")).unwrap();
    let mut control = String::from("Source: three\nMaintainer: limopack tests <tests@example.invalid>\nBuild-Depends: debhelper-compat (= 13)\n");
    for package in ["first", "second", "third"] {
        control.push_str(&format!("\nPackage: {package}\nArchitecture: all\nDescription: test package\n x\n"));
    }
    fs::write(dir.join("debian/control"), control).unwrap();
    fs::write(dir.join("debian/limopack"), first).unwrap();
    fs::write(dir.join("debian/second.limopack"), second).unwrap();
}

#[test]
fn dh_limopack_checks_then_installs_each_packages_declaration() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    three_packages(src, "modules: [btusb]\n", "static: [ext4]\n");
    let before = files(src);

    // --no-act: says what it would run and changes nothing.
    let (ok, said) = outcome(with_helper("dh_limopack").args(["--no-act", "-v"]).current_dir(src));
    assert!(ok, "{said}");
    assert!(said.contains("limopack-hook check -- debian/limopack debian/second.limopack\n"), "{said}");
    assert!(said.contains("debian/second.limopack debian/second/usr/share/limopack/second.yaml"), "{said}");
    assert_eq!(files(src), before);

    let (ok, said) = outcome(with_helper("dh_limopack").current_dir(src));
    assert!(ok, "{said}");
    let installed: BTreeSet<String> = files(src).difference(&before).cloned().collect();
    assert_eq!(installed, ["debian/first/usr/share/limopack/first.yaml", "debian/second/usr/share/limopack/second.yaml"].map(String::from).into());
    assert_eq!(fs::read_to_string(src.join("debian/second/usr/share/limopack/second.yaml")).unwrap(), "static: [ext4]\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(src.join("debian/first/usr/share/limopack/first.yaml")).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o644);

    // --name: a second declaration of one package, under a name of its own; -p picks it.
    fs::write(src.join("debian/second.old-kernels.limopack"), "modules: [btusb]\nkernels: \"5.*\"\n").unwrap();
    let (ok, said) = outcome(with_helper("dh_limopack").args(["-p", "second", "--name", "old-kernels"]).current_dir(src));
    assert!(ok, "{said}");
    assert!(src.join("debian/second/usr/share/limopack/old-kernels.yaml").is_file());
}

#[test]
fn dh_limopack_fails_on_every_bad_declaration_and_installs_none() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    three_packages(src, "modules:\n  - btusb.ko\n", "static: [ext4\n");
    let before = files(src);
    let (ok, said) = outcome(with_helper("dh_limopack").current_dir(src));
    assert!(!ok, "{said}");
    assert!(said.contains("debian/limopack:2:5: modules: `btusb.ko` is a file name; write the module name `btusb`\n"), "{said}");
    assert!(said.contains("debian/second.limopack:2:1: did not find expected ',' or ']'"), "{said}");
    assert!(said.contains("dh_limopack: error:"), "{said}");
    assert_eq!(files(src), before, "nothing is installed when a declaration is bad");
}

/// A copy of the example source package under `dir`, built with dpkg-buildpackage; whether it
/// built, and the build log.
fn build_example(dir: &Path, edit: impl FnOnce(&Path)) -> (bool, String) {
    let src = dir.join(EXAMPLE);
    run(Command::new("cp").arg("-r").arg(repo().join("examples/packaged").join(EXAMPLE)).arg(&src));
    edit(&src);
    // -d: dh-sequence-limopack is not installed; PERL5LIB finds the addon in the work tree.
    outcome(with_helper("dpkg-buildpackage").args(["-b", "-us", "-uc", "-d"]).current_dir(&src))
}

/// The example's .deb, built once for the tests that need it.
fn example_deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-example");
        let _ = std::fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (ok, log) = build_example(&dir, |_| {});
        assert!(ok, "{log}");
        assert!(log.contains("   dh_limopack\n"), "the sequence addon did not run dh_limopack:\n{log}");
        dir.join(format!("{EXAMPLE}_1.0_all.deb"))
    })
}

#[test]
fn example_package_ships_its_declaration() {
    let deb = example_deb();
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    assert!(listing.contains(&format!("./usr/share/limopack/{EXAMPLE}.yaml")), "{listing}");
    let shipped = run(Command::new("sh").arg("-c").arg(format!("dpkg-deb --fsys-tarfile '{}' | tar -xOf - ./usr/share/limopack/{EXAMPLE}.yaml", deb.display())));
    let source = fs::read_to_string(repo().join(format!("examples/packaged/{EXAMPLE}/debian/{EXAMPLE}.limopack"))).unwrap();
    assert_eq!(shipped, source);
}

/// A bad declaration fails the build at the file, line and column, here with the addon loaded
/// the other way, `dh $@ --with limopack`.
#[test]
fn bad_declaration_fails_the_example_build() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = build_example(dir.path(), |src| {
        let control = fs::read_to_string(src.join("debian/control")).unwrap();
        fs::write(src.join("debian/control"), control.replace(", dh-sequence-limopack", "")).unwrap();
        let rules = fs::read_to_string(src.join("debian/rules")).unwrap();
        fs::write(src.join("debian/rules"), rules.replace("\tdh $@\n", "\tdh $@ --with limopack\n")).unwrap();
        fs::write(src.join(format!("debian/{EXAMPLE}.limopack")), "modules:\n  - wireguard\n  - /lib/modules/tun.ko\n").unwrap();
    });
    assert!(!ok, "{log}");
    let want = format!("debian/{EXAMPLE}.limopack:3:5: modules: `/lib/modules/tun.ko` is a path; give the module's name, as modprobe takes it\n");
    assert!(log.contains(&want), "{log}");
    assert!(!dir.path().join(format!("{EXAMPLE}_1.0_all.deb")).exists());
}

fn deb_from_env(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var}: a .deb that tests/build-deb printed")))
}

/// The two .debs hold what the README's install section says, and dh-limopack's helper works as
/// installed: from its /usr/bin and /usr/share/perl5.
#[test]
#[ignore = "needs LIMOPACK_DEB and LIMOPACK_DH_DEB from tests/build-deb; tests/run-all runs it"]
fn debs_install_the_manuals_completions_and_helper() {
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb_from_env("LIMOPACK_DEB")));
    for path in [
        "./usr/sbin/limopack-hook",
        "./usr/share/man/man8/limopack-hook.8.gz",
        "./usr/share/man/man5/limopack.yaml.5.gz",
        "./usr/share/bash-completion/completions/limopack-hook",
        "./usr/share/zsh/vendor-completions/_limopack-hook",
        "./usr/share/fish/vendor_completions.d/limopack-hook.fish",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "limopack's .deb has no {path}:\n{listing}");
    }

    let dh_deb = deb_from_env("LIMOPACK_DH_DEB");
    let fields = run(Command::new("dpkg-deb").arg("--field").arg(&dh_deb).args(["Architecture", "Depends", "Provides"]));
    assert!(fields.contains("Architecture: all\n") && fields.contains("Provides: dh-sequence-limopack\n"), "{fields}");
    assert!(fields.lines().any(|l| l.starts_with("Depends:") && l.contains(" limopack (>= ") && l.contains("debhelper")), "{fields}");
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("installed");
    run(Command::new("dpkg-deb").arg("--extract").arg(&dh_deb).arg(&installed));
    for path in ["usr/bin/dh_limopack", "usr/share/perl5/Debian/Debhelper/Sequence/limopack.pm", "usr/share/man/man1/dh_limopack.1.gz"] {
        assert!(installed.join(path).is_file(), "dh-limopack's .deb has no {path}");
    }
    let src = dir.path().join("src");
    three_packages(&src, "modules: [btusb]\n", "static: [ext4]\n");
    let hook_dir = crate::support::program("limopack");
    let hook_dir = hook_dir.parent().unwrap();
    let (ok, said) = outcome(
        Command::new(installed.join("usr/bin/dh_limopack"))
            .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", hook_dir.display()))
            .env("PERL5LIB", installed.join("usr/share/perl5"))
            .current_dir(&src),
    );
    assert!(ok, "{said}");
    assert!(src.join("debian/second/usr/share/limopack/second.yaml").is_file());
}

/// The package installs at most 3 MB as apt counts it: Installed-Size is in KiB, and apt
/// says it in kB of 1,000 bytes ("After this operation, 2,990 kB of additional disk space
/// will be used"). Measured on amd64, where the program is linked by lld (debian/rules).
#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb; tests/run-all runs it"]
fn the_package_installs_at_most_3_mb() {
    let deb = deb_from_env("LIMOPACK_DEB");
    let field = run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Installed-Size"));
    let kib: u64 = field.trim().parse().unwrap_or_else(|e| panic!("Installed-Size `{field}`: {e}"));
    assert!(kib * 1024 <= 3_000_000, "{} installs {kib} KiB, {} bytes: more than 3 MB", deb.display(), kib * 1024);
}

/// Done when: the example package, built with the helper, installs a declaration that the hook
/// honours. Its modules, pruned before it came, come back with all they load; an undeclared
/// module stays pruned; removing the package prunes them again.
#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn example_package_declaration_is_honoured_on_bookworm() {
    example_package_declaration_is_honoured(Release::Bookworm);
}

#[test]
#[ignore = "needs LIMOPACK_DEB from tests/build-deb, root, debootstrap and Debian's archive; tests/run-all runs it"]
fn example_package_declaration_is_honoured_on_trixie() {
    example_package_declaration_is_honoured(Release::Trixie);
}

fn example_package_declaration_is_honoured(release: Release) {
    let limopack_deb = deb_from_env("LIMOPACK_DEB");
    let example_deb = example_deb();
    let cache = cloud_root(release);
    let work = tempfile::Builder::new().prefix("packaging-e2e-").tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path().join("root");
    copy_root(&cache, &root);
    let chroot = Chroot::enter(&root);

    let kver = only_kernel(release, &root);
    let tree = chroot.p(&format!("{}/{kver}", release.modules_dir()));
    let baseline = kmod_loads(release, &root, &kver, &["ext4", "virtio_blk", "virtio_net"]);
    let declared = kmod_loads(release, &root, &kver, &["wireguard", "tun"]);
    let with_example: BTreeSet<String> = baseline.union(&declared).cloned().collect();
    let sctp = release.ko("kernel/net/sctp/sctp");
    assert!(modules(&tree).contains(&sctp) && !with_example.contains(&sctp));
    for module in ["kernel/drivers/net/wireguard/wireguard", "kernel/drivers/net/tun"] {
        assert!(declared.contains(&release.ko(module)), "{declared:?}");
    }

    fs::create_dir_all(chroot.p("/tmp/debs")).unwrap();
    fs::copy(&limopack_deb, chroot.p("/tmp/debs/limopack.deb")).unwrap();
    fs::copy(example_deb, chroot.p("/tmp/debs/example.deb")).unwrap();
    chroot.sh("apt-get -q install -y /tmp/debs/limopack.deb");
    fs::write(chroot.p("/etc/limopack/modules.d/baseline.yaml"), "static: [ext4, virtio_blk, virtio_net]\n").unwrap();
    // initramfs: never keeps the test short; tests/debian.rs covers the refresh.
    fs::write(chroot.p("/etc/limopack/limopack.yaml"), "prune: true\ninitramfs: never\n").unwrap();
    let out = chroot.sh("limopack-hook");
    assert_eq!(modules(&tree), baseline, "{out}");

    let out = chroot.sh("apt-get -q install -y /tmp/debs/example.deb");
    assert_eq!(modules(&tree), with_example, "{out}");
    assert!(out.contains("restored wireguard"), "{out}");
    let why = chroot.sh("limopack-hook explain wireguard");
    assert!(why.contains(&format!("/usr/share/limopack/{EXAMPLE}.yaml")), "{why}");

    let out = chroot.sh(&format!("apt-get -q remove -y {EXAMPLE}"));
    assert_eq!(modules(&tree), baseline, "{out}");
}
