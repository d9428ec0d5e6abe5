//! Checks the shared test support against the real tools it imitates or wraps.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use fs_err as fs;
use crate::support::*;

/// Runs `dpkg-query --root=ROOT ARGS`, returning (success, stdout).
fn dpkg_query(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(args)
        // Either would redirect dpkg-query away from ROOT's database.
        .env_remove("DPKG_ADMINDIR")
        .env_remove("DPKG_ROOT")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

const KVER: &str = "6.1.0-99-test";

/// A root with a kernel package and an out-of-tree module package that
/// share parent directories.
fn fake_root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let moddir = root.join("lib/modules").join(KVER);
    for (dir, file) in [("kernel/fs/ext4", "ext4.ko"), ("updates/dkms", "zfs.ko")] {
        fs::create_dir_all(moddir.join(dir)).unwrap();
        fs::write(moddir.join(dir).join(file), vec![0u8; 3000]).unwrap();
    }
    let mut kernel = Pkg::installed(&format!("linux-image-{KVER}"), "6.1.999-1");
    add_files_of_tree(&mut kernel, root, &format!("lib/modules/{KVER}/kernel"));
    // Leaf path only: write_dpkg_db must add its parents.
    let mut zfs = Pkg::installed("zfs-modules", "2.1.11-1");
    zfs.files.push(format!("/lib/modules/{KVER}/updates/dkms/zfs.ko"));
    write_dpkg_db(root, &[kernel, zfs]);
    tmp
}

#[test]
fn add_files_of_tree_lists_dirs_and_files_sorted() {
    let tmp = fake_root();
    let mut pkg = Pkg::installed("x", "1");
    add_files_of_tree(&mut pkg, tmp.path(), &format!("/lib/modules/{KVER}/kernel"));
    let base = format!("/lib/modules/{KVER}/kernel");
    assert_eq!(
        pkg.files,
        [
            base.clone(),
            format!("{base}/fs"),
            format!("{base}/fs/ext4"),
            format!("{base}/fs/ext4/ext4.ko"),
        ]
    );
}

#[test]
fn dpkg_query_reads_fake_db() {
    let tmp = fake_root();
    let root = tmp.path();
    let ext4 = format!("/lib/modules/{KVER}/kernel/fs/ext4/ext4.ko");
    let zfs = format!("/lib/modules/{KVER}/updates/dkms/zfs.ko");
    let kernel = format!("linux-image-{KVER}");

    let (ok, out) = dpkg_query(root, &["-W"]);
    assert!(ok);
    assert_eq!(out, format!("{kernel}\t6.1.999-1\nzfs-modules\t2.1.11-1\n"));

    let (ok, out) = dpkg_query(root, &["-W", "-f=${Installed-Size} ${Architecture}\n", "zfs-modules"]);
    assert!(ok);
    assert_eq!(out, "3 amd64\n");

    let (ok, out) = dpkg_query(root, &["-S", &ext4]);
    assert!(ok);
    assert_eq!(out, format!("{kernel}: {ext4}\n"));

    let (ok, out) = dpkg_query(root, &["-S", &zfs]);
    assert!(ok);
    assert_eq!(out, format!("zfs-modules: {zfs}\n"));

    // Shared parent directory: both owners, in database order.
    let (ok, out) = dpkg_query(root, &["-S", &format!("/lib/modules/{KVER}")]);
    assert!(ok);
    assert_eq!(out, format!("{kernel}, zfs-modules: /lib/modules/{KVER}\n"));

    let (ok, out) = dpkg_query(root, &["-S", "/lib/modules/unowned.ko"]);
    assert!(!ok);
    assert_eq!(out, "");

    let (ok, out) = dpkg_query(root, &["-W", "-f=${db-fsys:Files}", "zfs-modules"]);
    assert!(ok);
    let expected: String = [
        "/.".to_owned(),
        "/lib".to_owned(),
        "/lib/modules".to_owned(),
        format!("/lib/modules/{KVER}"),
        format!("/lib/modules/{KVER}/updates"),
        format!("/lib/modules/{KVER}/updates/dkms"),
        zfs,
    ]
    .iter()
    .map(|p| format!(" {p}\n"))
    .collect();
    assert_eq!(out, expected);
}

#[test]
fn set_status_marks_package_config_files() {
    let tmp = fake_root();
    let root = tmp.path();
    set_status(root, "zfs-modules", "deinstall ok config-files");
    let (ok, out) = dpkg_query(root, &["-W", "-f=${db:Status-Abbrev}${Package}\n"]);
    assert!(ok);
    assert_eq!(out, format!("ii linux-image-{KVER}\nrc zfs-modules\n"));
}

#[test]
fn kernel_cache_and_real_package_db() {
    let (pristine, kver) = real_kernel_tree(Release::Bookworm, "cloud-amd64");
    assert!(kver.ends_with("-cloud-amd64"), "{kver}");
    // A second call is a cache hit on the same paths.
    assert_eq!(real_kernel_tree(Release::Bookworm, "cloud-amd64"), (pristine.clone(), kver.clone()));
    assert!(pristine.join("lib/modules").join(&kver).join("modules.dep.bin").is_file());

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_root(&pristine, root);
    assert_eq!(tree_hash(root), tree_hash(&pristine));

    let pkg = real_kernel_pkg(Release::Bookworm, root, "cloud-amd64");
    assert_eq!(pkg.name, format!("linux-image-{kver}"));
    assert_eq!(pkg.status, "install ok installed");
    assert!(!pkg.version.is_empty());
    assert!(pkg.files.iter().all(|f| f.starts_with('/') && !f.ends_with('/')));
    write_dpkg_db(root, std::slice::from_ref(&pkg));

    let xfs = format!("/lib/modules/{kver}/kernel/fs/xfs/xfs.ko");
    let (ok, out) = dpkg_query(root, &["-S", &xfs]);
    assert!(ok);
    assert_eq!(out, format!("{}: {xfs}\n", pkg.name));
    // depmod's output is generated, not shipped, hence unowned.
    let (ok, _) = dpkg_query(root, &["-S", &format!("/lib/modules/{kver}/modules.dep")]);
    assert!(!ok);

    let (ok, out) = dpkg_query(root, &["-W", "-f=${db-fsys:Files}", &pkg.name]);
    assert!(ok);
    let listed: Vec<&str> = out.lines().map(str::trim_start).collect();
    assert_eq!(listed[0], "/.");
    assert_eq!(listed[1..], pkg.files.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn oracle_on_cloud_kernel() {
    let (root, kver) = real_kernel_tree(Release::Bookworm, "cloud-amd64");
    // The cloud flavour builds ext4 in.
    assert_eq!(modprobe_show_depends(Release::Bookworm, &root, &kver, "ext4"), Ok(vec![]));
    let xfs = modprobe_show_depends(Release::Bookworm, &root, &kver, "xfs").unwrap();
    assert_eq!(xfs.last().unwrap(), "kernel/fs/xfs/xfs.ko");
    assert!(xfs.contains(&"kernel/lib/libcrc32c.ko".to_owned()), "{xfs:?}");
    let err = modprobe_show_depends(Release::Bookworm, &root, &kver, "no_such_module").unwrap_err();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn oracle_on_generic_kernel() {
    let (root, kver) = real_kernel_tree(Release::Bookworm, "amd64");
    let ext4 = modprobe_show_depends(Release::Bookworm, &root, &kver, "ext4").unwrap();
    assert_eq!(ext4.last().unwrap(), "kernel/fs/ext4/ext4.ko");
    assert!(ext4.contains(&"kernel/fs/jbd2/jbd2.ko".to_owned()), "{ext4:?}");
    assert!(ext4.iter().any(|p| p.contains("crc32c")), "{ext4:?}");
}

/// Every module of the generic kernel resolves, including itself and only
/// modules depmod knows; also reports the oracle's cost.
#[test]
fn oracle_over_whole_generic_kernel() {
    let (root, kver) = real_kernel_tree(Release::Bookworm, "amd64");
    let known = modules_dep_paths(&root, &kver);
    let modules: Vec<String> = known
        .iter()
        .map(|p| {
            let file = p.rsplit('/').next().unwrap();
            file.split('.').next().unwrap().to_owned()
        })
        .collect();
    assert!(modules.len() > 3000, "{}", modules.len());

    let start = Instant::now();
    let results = modprobe_show_depends_many(Release::Bookworm, &root, &kver, &modules);
    eprintln!("oracle: {} modules in {:?}", modules.len(), start.elapsed());

    assert_eq!(results.len(), modules.len());
    for ((module, deps), path) in results.iter().zip(&known) {
        let deps = deps.as_ref().unwrap_or_else(|e| panic!("{module}: {e}"));
        // Not necessarily last: "post:" softdeps load after the module.
        assert!(deps.contains(path), "{module}: {deps:?}");
        for dep in deps {
            assert!(known.binary_search(dep).is_ok(), "{module} -> {dep}");
        }
    }
}

#[test]
fn tree_hash_detects_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/a.ko"), "one").unwrap();
    std::os::unix::fs::symlink("sub/a.ko", dir.join("link")).unwrap();
    let base = tree_hash(dir);
    assert_eq!(tree_hash(dir), base);

    let copy = tempfile::tempdir().unwrap();
    copy_root(dir, copy.path());
    assert!(fs::symlink_metadata(copy.path().join("link")).unwrap().is_symlink());
    assert_eq!(tree_hash(copy.path()), base);

    fs::write(dir.join("sub/a.ko"), "two").unwrap();
    let changed = tree_hash(dir);
    assert_ne!(changed, base);

    fs::remove_file(dir.join("link")).unwrap();
    std::os::unix::fs::symlink("sub/b.ko", dir.join("link")).unwrap();
    let relinked = tree_hash(dir);
    assert_ne!(relinked, changed);

    fs::set_permissions(dir.join("sub/a.ko"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let chmodded = tree_hash(dir);
    assert_ne!(chmodded, relinked);

    fs::write(dir.join("new"), "").unwrap();
    assert_ne!(tree_hash(dir), chmodded);
}
