//! limopack reads dpkg's database in place; dpkg-query is the oracle. On the debootstrapped
//! bookworm and trixie roots, with a journal entry on top, both must name the same owner for
//! every path under the module tree, as the kernel package lists it, and the same version and
//! status for every owner.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fs_err as fs;
use limopack::read::packages::Packages;
use limopack::root::Root;
use crate::support::debian_root::{cloud_root, only_kernel, run};
use crate::support::Release;

/// dpkg-query's answer for each path: `path -> owners`, from `--search` lines.
fn dpkg_search(root: &Path, pattern: &str) -> BTreeMap<String, Vec<String>> {
    let out = run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["--search", pattern])
        .env_remove("DPKG_ADMINDIR")
        .env("LC_ALL", "C"));
    out.lines()
        .filter(|l| !l.starts_with("diversion by"))
        .filter_map(|l| l.split_once(": "))
        .map(|(owners, path)| (path.to_string(), owners.split(", ").map(String::from).collect()))
        .collect()
}

fn dpkg_show(root: &Path, package: &str) -> String {
    run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["--show", "--showformat=${Version} ${db:Status-Status}", package])
        .env_remove("DPKG_ADMINDIR"))
}

#[test]
#[ignore = "needs root, debootstrap and Debian's archive; tests/run-all runs it"]
fn dpkg_database_read_in_place_agrees_with_dpkg_query_on_bookworm() {
    dpkg_database_read_in_place_agrees_with_dpkg_query(Release::Bookworm);
}

#[test]
#[ignore = "needs root, debootstrap and Debian's archive; tests/run-all runs it"]
fn dpkg_database_read_in_place_agrees_with_dpkg_query_on_trixie() {
    dpkg_database_read_in_place_agrees_with_dpkg_query(Release::Trixie);
}

fn dpkg_database_read_in_place_agrees_with_dpkg_query(release: Release) {
    let cache = cloud_root(release);
    let work = tempfile::Builder::new().prefix("dpkg-db-").tempdir_in(cache.parent().unwrap()).unwrap();
    let root = work.path();
    // dpkg-query needs only the database; the files it lists need not be there.
    fs::create_dir_all(root.join("var/lib")).unwrap();
    run(Command::new("cp").arg("-a").arg(cache.join("var/lib/dpkg")).arg(root.join("var/lib/")));
    let kver = only_kernel(release, &cache);
    let kpkg = format!("linux-image-{kver}");
    // A journal entry, as dpkg leaves one mid-transaction: the kernel half-configured at a
    // new version. dpkg-query reads it; so must limopack.
    let mut paragraph = run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["--status", &kpkg])
        .env_remove("DPKG_ADMINDIR"));
    paragraph = paragraph
        .lines()
        .map(|l| match l {
            l if l.starts_with("Status: ") => "Status: install ok half-configured".to_string(),
            l if l.starts_with("Version: ") => format!("{l}+journal"),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(root.join("var/lib/dpkg/updates/0000"), format!("{paragraph}\n")).unwrap();

    let prefix = format!("{}/{kver}/", release.modules_dir());
    let ours = Packages::read(&Root::new(root).unwrap(), std::slice::from_ref(&prefix)).unwrap();
    let theirs = dpkg_search(root, &format!("{prefix}*"));
    assert!(theirs.len() > 1000, "{} paths", theirs.len());
    for (path, owners) in &theirs {
        let mine: Vec<String> = ours.owners(path).map(|p| p.name.to_string()).collect();
        assert_eq!(&mine, owners, "{path}");
    }
    for package in ours.packages() {
        let (version, status) = (&*package.version, package.status.as_str());
        assert_eq!(dpkg_show(root, &package.name), format!("{version} {status}"), "{}", package.name);
    }
    let kernel = ours.packages().iter().find(|p| *p.name == *kpkg).unwrap();
    assert!(kernel.version.ends_with("+journal") && kernel.status == "half-configured", "{kernel:?}");
}
