//! Firmware of real modules: the `.modinfo` of every module of a real Debian kernel, read by
//! limopack and by kmod's modinfo (the oracle), plain and compressed; and the files a real
//! Debian firmware package (`firmware-realtek`, with its symbolic links) provides for those
//! modules' firmware names, against the package's own listing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fs_err as fs;
use limopack::read::firmware::{FirmwareDir, Found, Kind};
use limopack::read::modinfo;
use limopack::root::Root;
use crate::support::*;

const GENERIC: &str = "amd64";
/// A firmware package with links (rtlwifi, rtl_bt) for modules of the generic kernel.
const FIRMWARE_PACKAGE: &str = "firmware-realtek";

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Each module file's `key` values as kmod's modinfo prints them, for many files per process.
/// With `-0` it prints `filename:` and then `key=value` records, each ending in a NUL.
fn kmod_modinfo(files: &[PathBuf], keys: &[&str]) -> BTreeMap<PathBuf, BTreeMap<String, Vec<String>>> {
    let mut all = BTreeMap::new();
    for chunk in files.chunks(500) {
        let out = run(Command::new("modinfo").arg("-0").args(chunk));
        let mut current: Option<&mut BTreeMap<String, Vec<String>>> = None;
        for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            if let Some(file) = record.strip_prefix("filename:") {
                current = Some(all.entry(PathBuf::from(file.trim())).or_default());
            } else if let Some((key, value)) = record.split_once('=') {
                if keys.contains(&key) {
                    let fields = current.as_mut().expect("modinfo printed a field before filename");
                    fields.entry(key.to_owned()).or_default().push(value.to_owned());
                }
            }
        }
    }
    all
}

/// The first of each value, in order: limopack's `firmware` list is deduplicated.
fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values.iter().filter(|v| seen.insert(v.as_str())).cloned().collect()
}

#[test]
fn modinfo_agrees_with_kmod_on_every_module_of_a_real_kernel() {
    let (root, kver) = real_kernel_tree(Release::Bookworm, GENERIC);
    let tree = root.join("lib/modules").join(&kver);
    let files: Vec<PathBuf> = modules_dep_paths(&root, &kver).iter().map(|p| tree.join(p)).collect();
    assert!(files.len() > 3000, "{} modules", files.len());

    let started = Instant::now();
    let ours: Vec<modinfo::Modinfo> = files.iter().map(|f| modinfo::read(f).unwrap()).collect();
    let took = started.elapsed();
    eprintln!("read the .modinfo of {} modules in {took:?}", files.len());

    let keys = ["firmware", "alias", "softdep", "depends"];
    let kmod = kmod_modinfo(&files, &keys);
    let mut names = 0;
    for (file, info) in files.iter().zip(&ours) {
        let theirs = &kmod[file];
        let values = |key: &str| theirs.get(key).cloned().unwrap_or_default();
        assert_eq!(info.firmware, dedup(&values("firmware")), "firmware of {}", file.display());
        for key in &keys[1..] {
            let ours: Vec<String> = info.get_all(key).map(String::from).collect();
            assert_eq!(ours, values(key), "{key} of {}", file.display());
        }
        names += info.firmware.len();
    }
    let firmware_of = |name: &str| {
        let at = files.iter().position(|f| limopack::name::module_name_of_path(f.to_str().unwrap()).as_deref() == Some(name));
        ours[at.unwrap_or_else(|| panic!("no module {name}"))].firmware.len()
    };
    // The drivers with the longest lists are read whole.
    assert!(firmware_of("amdgpu") > 400, "amdgpu: {}", firmware_of("amdgpu"));
    assert!(firmware_of("iwlwifi") > 40 && firmware_of("i915") > 30);
    eprintln!("{names} firmware names in all");
}

#[test]
fn compressed_real_modules_read_as_the_plain_ones() {
    let (root, kver) = real_kernel_tree(Release::Bookworm, GENERIC);
    let tree = root.join("lib/modules").join(&kver);
    let wanted = ["iwlwifi", "r8169", "btrtl", "rtl8192ee", "ext4"];
    let paths: Vec<String> = modules_dep_paths(&root, &kver)
        .into_iter()
        .filter(|p| limopack::name::module_name_of_path(p).is_some_and(|n| wanted.contains(&&*n)))
        .collect();
    assert_eq!(paths.len(), wanted.len(), "{paths:?}");
    let tmp = tempfile::tempdir().unwrap();
    // As the kernel's `make modules_install` compresses them (scripts/Makefile.modinst).
    let tools: [(&str, &[&str]); 3] = [
        ("xz", &["xz", "--check=crc32", "--lzma2=dict=1MiB", "-f"]),
        ("zst", &["zstd", "-T0", "--rm", "-f", "-q"]),
        ("gz", &["gzip", "-n", "-f"]),
    ];
    for path in &paths {
        let plain = modinfo::read(&tree.join(path)).unwrap();
        assert!(plain.get("name").is_some(), "{path}");
        for (suffix, tool) in tools {
            let copy = tmp.path().join(format!("{suffix}-{}", Path::new(path).file_name().unwrap().to_str().unwrap()));
            fs::copy(tree.join(path), &copy).unwrap();
            run(Command::new(tool[0]).args(&tool[1..]).arg(&copy));
            let packed = PathBuf::from(format!("{}.{suffix}", copy.display()));
            assert_eq!(modinfo::read(&packed).unwrap(), plain, "{}", packed.display());
            // kmod reads xz and zstd modules (Debian's kmod is built without zlib).
            if suffix != "gz" {
                let kmod = kmod_modinfo(std::slice::from_ref(&packed), &["firmware"]);
                let firmware = kmod[&packed].get("firmware").cloned().unwrap_or_default();
                assert_eq!(plain.firmware, dedup(&firmware), "{}", packed.display());
            }
            let bytes = fs::read(&packed).unwrap();
            fs::write(&packed, &bytes[..bytes.len() / 2]).unwrap();
            let error = modinfo::read(&packed).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{}: ", packed.display())) && error.contains("truncated"), "{error}");
        }
    }
}

/// The package's firmware as its listing (`dpkg-deb -c`) has it: each file's path under
/// `/lib/firmware` (as bookworm ships, or `/usr/lib/firmware` as trixie does), and the target
/// of each link.
fn listing(deb: &Path) -> BTreeMap<String, Option<String>> {
    let text = String::from_utf8(run(Command::new("dpkg-deb").arg("-c").arg(deb))).unwrap();
    let mut files = BTreeMap::new();
    for line in text.lines() {
        let name = line.split_whitespace().nth(5).unwrap();
        let path = name.trim_start_matches('.').replacen("/usr/lib/firmware/", "/lib/firmware/", 1);
        if line.starts_with('-') && path.starts_with("/lib/firmware/") {
            files.insert(path, None);
        } else if line.starts_with('l') {
            files.insert(path, Some(line.split(" -> ").nth(1).unwrap().to_owned()));
        }
    }
    files
}

/// A root holding the package's firmware under `/usr/lib/firmware` with `/lib` a link to
/// `usr/lib` (usr-merged, as bookworm is) or under a real `/lib/firmware`.
fn firmware_root(deb: &Path, merged: bool) -> tempfile::TempDir {
    let staging = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(staging.path()));
    let shipped = ["lib/firmware", "usr/lib/firmware"].iter().map(|p| staging.path().join(p)).find(|p| p.is_dir()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let lib = if merged { root.path().join("usr/lib") } else { root.path().join("lib") };
    fs::create_dir_all(&lib).unwrap();
    if merged {
        std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
    }
    run(Command::new("cp").arg("-a").arg(&shipped).arg(&lib));
    root
}

/// What the package provides for `name` from `/lib/firmware`, by its listing alone: the file,
/// or the link and the file it names.
fn expected(files: &BTreeMap<String, Option<String>>, name: &str) -> Vec<Found> {
    let path = format!("/lib/firmware/{name}");
    match files.get(&path) {
        None => Vec::new(),
        Some(None) => vec![Found { path, kind: Kind::File }],
        Some(Some(target)) => {
            let dir = Path::new(&path).parent().unwrap();
            let target = dir.join(target).to_str().unwrap().to_owned();
            assert_eq!(files.get(&target), Some(&None), "{path} -> {target}: a link to a link");
            vec![Found { path, kind: Kind::Link { target: target.clone() } }, Found { path: target, kind: Kind::File }]
        }
    }
}

/// Every firmware name of every module of the real kernel.
fn all_firmware_names() -> (String, BTreeMap<String, Vec<String>>) {
    let (root, kver) = real_kernel_tree(Release::Bookworm, GENERIC);
    let tree = root.join("lib/modules").join(&kver);
    let mut names = BTreeMap::new();
    for path in modules_dep_paths(&root, &kver) {
        let info = modinfo::read(&tree.join(&path)).unwrap();
        if !info.firmware.is_empty() {
            names.insert(limopack::name::module_name_of_path(&path).unwrap().into_owned(), info.firmware);
        }
    }
    (kver, names)
}

#[test]
fn a_real_firmware_package_gives_each_module_its_files_and_links() {
    let deb = firmware_deb(Release::Bookworm, FIRMWARE_PACKAGE);
    let files = listing(&deb);
    assert!(files.values().any(Option::is_some), "{FIRMWARE_PACKAGE} ships no links");
    let (kver, modules) = all_firmware_names();
    for merged in [true, false] {
        let root = firmware_root(&deb, merged);
        let fw = FirmwareDir::new(&Root::new(root.path()).unwrap()).unwrap();
        let (mut hits, mut links) = (0, 0);
        for (module, names) in &modules {
            for name in names {
                let found = fw.files_for(&kver, name).unwrap();
                assert_eq!(found, expected(&files, name), "{module}: {name} (merged: {merged})");
                hits += usize::from(!found.is_empty());
                links += found.iter().filter(|f| matches!(f.kind, Kind::Link { .. })).count();
                for f in &found {
                    assert!(f.dpkg_paths().iter().any(|p| files.contains_key(p)), "{} is not in the package's list", f.path);
                }
            }
        }
        // r8169, rtw88, btrtl, rtl8192ee and the rest: most of the package is asked for.
        assert!(hits > 60, "{hits} names found");
        assert!(links >= 2, "{links} links found");
        let needs = |module: &str, name: &str| modules[module].iter().any(|n| n == name);
        assert!(needs("rtl8192ee", "rtlwifi/rtl8192eefw.bin") && needs("btrtl", "rtl_bt/rtl8821a_config.bin"));
        assert_eq!(
            fw.files_for(&kver, "rtl_bt/rtl8821a_config.bin").unwrap(),
            [
                Found {
                    path: "/lib/firmware/rtl_bt/rtl8821a_config.bin".into(),
                    kind: Kind::Link { target: "/lib/firmware/rtl_bt/rtl8821c_config.bin".into() },
                },
                Found { path: "/lib/firmware/rtl_bt/rtl8821c_config.bin".into(), kind: Kind::File },
            ]
        );

        // A glob gives what the listing has under it, links and targets alike.
        let glob = |pattern: &str| -> Vec<String> { fw.glob(&kver, pattern).unwrap().into_iter().map(|f| f.path).collect() };
        let listed = |prefix: &str| -> Vec<String> { files.keys().filter(|p| p.starts_with(prefix)).cloned().collect() };
        assert_eq!(glob("rtl_nic/*"), listed("/lib/firmware/rtl_nic/"));
        // rtl8723bs_nic.bin and two more are links to rtl8723bu_*.bin.
        let mut wifi = glob("rtlwifi/rtl8723bs_*");
        wifi.sort();
        let mut want: Vec<String> =
            listed("/lib/firmware/rtlwifi/rtl8723bs_").iter().flat_map(|p| expected(&files, &p["/lib/firmware/".len()..])).map(|f| f.path).collect();
        want.sort();
        want.dedup();
        assert!(want.iter().any(|p| p.contains("rtl8723bu_")), "{want:?}");
        assert_eq!(wifi, want);
        assert!(glob("*.fw").is_empty(), "`*` does not cross `/`");
        assert_eq!(glob("**/*").len(), files.keys().filter(|p| p.starts_with("/lib/firmware/")).count());
    }
}

#[test]
fn updates_kernel_folders_and_compressed_firmware_of_a_real_package() {
    let deb = firmware_deb(Release::Bookworm, FIRMWARE_PACKAGE);
    let (kver, modules) = all_firmware_names();
    let root = firmware_root(&deb, true);
    let fw_dir = root.path().join("usr/lib/firmware");
    let r8169 = &modules["r8169"];
    let [first, second, third] = [&r8169[0], &r8169[1], &r8169[2]];
    for folder in [format!("updates/{kver}"), "updates".into(), kver.clone(), "updates/6.1.0-1-amd64".into()] {
        let to = fw_dir.join(&folder).join(first);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fw_dir.join(first), to).unwrap();
    }
    // As a kernel with CONFIG_FW_LOADER_COMPRESS finds them: `.xz` alone, and `.zst` beside
    // the plain file, which the loader would take first.
    run(Command::new("xz").arg("--check=crc32").arg(fw_dir.join(second)));
    run(Command::new("zstd").args(["-q", "--keep"]).arg(fw_dir.join(third)));
    let fw = FirmwareDir::new(&Root::new(root.path()).unwrap()).unwrap();
    let paths = |name: &str| -> Vec<String> { fw.files_for(&kver, name).unwrap().into_iter().map(|f| f.path).collect() };
    assert_eq!(
        paths(first),
        [
            format!("/lib/firmware/updates/{kver}/{first}"),
            format!("/lib/firmware/updates/{first}"),
            format!("/lib/firmware/{kver}/{first}"),
            format!("/lib/firmware/{first}"),
        ]
    );
    assert_eq!(paths(second), [format!("/lib/firmware/{second}.xz")]);
    assert_eq!(paths(third), [format!("/lib/firmware/{third}"), format!("/lib/firmware/{third}.zst")]);
    // Another kernel's folders are not this one's.
    assert_eq!(fw.files_for("6.1.0-1-amd64", first).unwrap().len(), 3);

    // Compressing a link's target leaves the link dangling: reported, not followed.
    run(Command::new("xz").arg(fw_dir.join("rtlwifi/rtl8192eu_nic.bin")));
    assert_eq!(
        fw.files_for(&kver, "rtlwifi/rtl8192eefw.bin").unwrap(),
        [Found {
            path: "/lib/firmware/rtlwifi/rtl8192eefw.bin".into(),
            kind: Kind::Unfollowed {
                reason: "points to /lib/firmware/rtlwifi/rtl8192eu_nic.bin, which does not exist".into()
            },
        }]
    );
}

/// Every regular file and link under `dir`, by path relative to it.
fn files_under(dir: &Path) -> BTreeMap<String, bool> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| (e.path().strip_prefix(dir).unwrap().to_str().unwrap().to_owned(), e.path_is_symlink()))
        .collect()
}

fn hook(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_limopack-hook")).arg("--root").arg(root).args(args).env_remove("DPKG_ADMINDIR").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "limopack-hook {args:?} failed:\n{stdout}\n{stderr}");
    format!("{stdout}{stderr}")
}

fn write(root: &Path, abs: &str, text: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
}

/// The real generic kernel with the real firmware-realtek unpacked and in dpkg's database,
/// CPU microcode of intel-microcode and a file no package owns. With `firmware: keep` nothing
/// under /lib/firmware goes; with `firmware: prune` and a baseline keeping r8169, the files
/// its modinfo names (as the loader resolves them) stay and the rest of the package goes,
/// links staying; a declaration for rtl8192ee, whose firmware name is a link to a pruned
/// file, brings the module and then that file back from the `.deb`s in apt's cache.
#[test]
fn firmware_of_kept_modules_stays_and_the_rest_is_pruned_and_restored() {
    let (pristine, kver) = real_kernel_tree(Release::Bookworm, GENERIC);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_root(&pristine, &root);
    let kernel = real_kernel_pkg(Release::Bookworm, &root, GENERIC);
    let deb = firmware_deb(Release::Bookworm, FIRMWARE_PACKAGE);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let fw_dir = root.join("lib/firmware");
    let field = |name: &str| String::from_utf8(run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))).unwrap().trim().to_owned();
    let mut firmware = Pkg::installed(FIRMWARE_PACKAGE, &field("Version"));
    add_files_of_tree(&mut firmware, &root, "lib/firmware");
    let shipped = files_under(&fw_dir);
    write(&root, "/lib/firmware/intel-ucode/06-8e-09", "microcode");
    let mut microcode = Pkg::installed("intel-microcode", "3.20240531.1");
    microcode.files.push("/lib/firmware/intel-ucode/06-8e-09".into());
    write(&root, "/lib/firmware/rtl_nic/local.fw", "not from a package");
    write_dpkg_db(&root, &[kernel.clone(), firmware, microcode]);
    write(&root, "/etc/limopack/modules.d/baseline.yaml", "static: [ext4, r8169]\n");
    let before = files_under(&fw_dir);

    write(&root, "/etc/limopack/limopack.yaml", "prune: true\n");
    let out = hook(&root, &[]);
    assert!(out.contains("limopack: firmware: "), "{out}");
    assert_eq!(files_under(&fw_dir), before, "firmware: keep");

    // What r8169 needs, by its own modinfo and the loader's rules.
    let tree = root.join("lib/modules").join(&kver);
    let r8169 = modules_dep_paths(&root, &kver).into_iter().find(|p| p.ends_with("/r8169.ko")).unwrap();
    let names = modinfo::read(&tree.join(&r8169)).unwrap().firmware;
    assert!(names.iter().filter(|n| n.starts_with("rtl_nic/")).count() > 10, "{names:?}");
    let fw = FirmwareDir::new(&Root::new(&root).unwrap()).unwrap();
    let needed: BTreeSet<String> = names.iter().flat_map(|n| fw.files_for(&kver, n).unwrap()).map(|f| f.path["/lib/firmware/".len()..].to_owned()).collect();
    assert!(needed.len() > 10, "{needed:?}");

    write(&root, "/etc/limopack/limopack.yaml", "prune: true\nfirmware: prune\n");
    let out = hook(&root, &["--dry-run", "--json"]);
    let json: serde_json::Value = serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap();
    let plan = &json["plan"]["firmware"];
    assert_eq!(plan["action"], "prune", "{plan:#}");
    assert!(plan["modules"][&kver]["r8169"].as_array().unwrap().len() == names.len(), "{plan:#}");
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../doc/json/limopack-1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = hook(&root, args);
        serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap()
    };
    let explained = json_of(&["explain", "r8169", "--json"]);
    assert_eq!(explained["kernels"][0]["firmware"].as_array().unwrap().len(), names.len());
    for doc in [&json, &explained, &json_of(&["status", "--json"])] {
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }
    let out = hook(&root, &[]);
    assert!(out.contains("limopack: firmware: kept "), "{out}");
    let after = files_under(&fw_dir);
    let mut pruned = 0;
    for (rel, link) in &shipped {
        let kept = after.contains_key(rel);
        if *link {
            assert!(kept, "link {rel} stays");
        } else if needed.contains(rel) {
            assert!(kept, "{rel} is needed by r8169");
        } else {
            assert!(!kept, "{rel} is needed by nothing: pruned");
            pruned += 1;
        }
    }
    assert!(pruned > 50, "{pruned} pruned");
    assert!(after.contains_key("intel-ucode/06-8e-09") && after.contains_key("rtl_nic/local.fw"));
    let status = hook(&root, &["status"]);
    assert!(status.contains(&format!("  pruned: {pruned} file(s)")), "{status}");

    // rtl8192ee asks for rtlwifi/rtl8192eefw.bin, a link to rtl8192eu_nic.bin, which went.
    assert!(after.contains_key("rtlwifi/rtl8192eefw.bin") && !after.contains_key("rtlwifi/rtl8192eu_nic.bin"));
    let cache = root.join("var/cache/apt/archives");
    fs::create_dir_all(&cache).unwrap();
    for deb in [deb.clone(), real_kernel_deb(Release::Bookworm, GENERIC)] {
        fs::copy(&deb, cache.join(deb.file_name().unwrap())).unwrap();
    }
    write(&root, "/etc/limopack/modules.d/wifi.yaml", "modules: [rtl8192ee]\n");
    // The module comes back first; its firmware is known, and brought back, once it is there.
    let out = hook(&root, &[]);
    assert!(out.contains("restored rtl8192ee") && out.contains("no firmware is pruned this run"), "{out}");
    let out = hook(&root, &[]);
    assert!(out.contains("limopack: firmware: restored rtl8192ee (/lib/firmware/rtlwifi/rtl8192eu_nic.bin) from apt's cache"), "{out}");
    let staging = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(staging.path()));
    assert_eq!(fs::read(fw_dir.join("rtlwifi/rtl8192eu_nic.bin")).unwrap(), fs::read(staging.path().join("lib/firmware/rtlwifi/rtl8192eu_nic.bin")).unwrap());
    assert!(!hook(&root, &["status"]).contains("rtl8192eu_nic.bin ("));
}
