//! Small synthetic roots for end-to-end runs of `limopack-hook`: a fake kernel tree (module
//! files are a few bytes of text, the `modules.*` indexes written by hand), a dpkg database
//! written with `write_dpkg_db`, declarations and the config. Fake modules cannot go through
//! a real depmod (it would drop their dependencies), so the standard config sets
//! `depmod: false`; real depmod is exercised on real kernels.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use fs_err as fs;
use serde_json::Value;

use super::*;

pub const K: &str = "6.1.0-1-test";
pub const KPKG: &str = "linux-image-6.1.0-1-test";
pub const K2: &str = "6.12.0-1-test";
pub const DEP_FILE: &str = "lib/modules/6.1.0-1-test/modules.dep";
pub const ALIAS_FILE: &str = "lib/modules/6.1.0-1-test/modules.alias";

/// `modules.dep` of the standard fake kernel: 20 modules.
pub const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/bluetooth/btusb.ko: kernel/drivers/bluetooth/btrtl.ko kernel/drivers/bluetooth/btintel.ko kernel/drivers/bluetooth/btbcm.ko kernel/net/bluetooth/bluetooth.ko
kernel/drivers/bluetooth/btrtl.ko: kernel/net/bluetooth/bluetooth.ko
kernel/drivers/bluetooth/btintel.ko: kernel/net/bluetooth/bluetooth.ko
kernel/drivers/bluetooth/btbcm.ko: kernel/net/bluetooth/bluetooth.ko
kernel/net/bluetooth/bluetooth.ko:
kernel/fs/btrfs/btrfs.ko: kernel/lib/raid6/raid6_pq.ko kernel/crypto/xor.ko kernel/lib/libcrc32c.ko
kernel/lib/raid6/raid6_pq.ko:
kernel/crypto/xor.ko:
kernel/lib/libcrc32c.ko:
kernel/sound/pci/hda/snd-hda-codec-realtek.ko: kernel/sound/pci/hda/snd-hda-codec-generic.ko kernel/sound/pci/hda/snd-hda-codec.ko
kernel/sound/pci/hda/snd-hda-codec-generic.ko: kernel/sound/pci/hda/snd-hda-codec.ko
kernel/sound/pci/hda/snd-hda-codec.ko:
kernel/sound/pci/hda/snd-hda-intel.ko: kernel/sound/pci/hda/snd-hda-codec.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
";

pub const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-btrfs btrfs
alias btrfs-control btrfs
alias usb:v*p*d*dc*dsc*dp*icE0isc01ip01in* btusb
alias pci:v00008086d000015B8sv*sd*bc*sc*i* e1000e
alias pci:v00008086d*sv*sd*bc04sc03i00* snd_hda_intel
";

pub const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
";

pub const BUILTIN: &str = "kernel/fs/fat/fat.ko\nkernel/drivers/block/loop.ko\n";

/// What a sync with the standard baseline (`static: [ext4]`) and btusb declared keeps.
pub const KEPT_EXT4_BTUSB: [&str; 10] = [
    "bluetooth",
    "btbcm",
    "btintel",
    "btrtl",
    "btusb",
    "crc16",
    "crc32c_generic",
    "ext4",
    "jbd2",
    "mbcache",
];

/// Every module path of an index text, either side of the colon, in order of first mention.
pub fn dep_paths(dep: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    dep.lines()
        .flat_map(|l| l.split([':', ' ']))
        .filter(|p| !p.is_empty())
        .filter(|p| seen.insert(p.to_string()))
        .map(str::to_owned)
        .collect()
}

/// Loaded name of a module path, as kmod spells it.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap();
    file.strip_suffix(".ko").unwrap().replace('-', "_")
}

/// What one run of the binary printed.
#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// A root under construction.
pub struct Sys {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Sys {
    /// An empty root.
    pub fn empty() -> Sys {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        Sys { _tmp: tmp, root }
    }

    /// The standard root: kernel `K` with the 20 modules of `DEP`, owned by `KPKG`; pruning on,
    /// depmod off; the admin's baseline `static: [ext4]`.
    pub fn standard() -> Sys {
        let sys = Sys::empty();
        sys.kernel(K, DEP);
        sys.config("prune: true\ndepmod: false\n");
        sys.admin("baseline", "static:\n  - ext4\n");
        sys.dpkg(&[sys.kernel_pkg(K)]);
        sys
    }

    /// A folder next to the root (outside it), for files the root must not reach.
    pub fn outside(&self) -> PathBuf {
        let dir = self._tmp.path().join("outside");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn tree(&self, kver: &str) -> PathBuf {
        self.p(&format!("lib/modules/{kver}"))
    }

    /// A module file (or any file) of kernel `kver`, relative to its tree.
    pub fn m(&self, kver: &str, rel: &str) -> PathBuf {
        self.tree(kver).join(rel)
    }

    /// Writes `text` to `rel` in the root, parents created, mode 0644 whatever the umask.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.p(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Writes `bytes` to `rel` in the root, parents created, mode 0644 whatever the umask.
    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) {
        let path = self.p(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// A kernel tree: one file per module of `dep`, then (after them, so that the index is
    /// not older than any module) `modules.dep`, `.alias`, `.softdep` and `.builtin`.
    pub fn kernel(&self, kver: &str, dep: &str) {
        for path in dep_paths(dep) {
            self.write_bytes(&format!("lib/modules/{kver}/{path}"), &fake_module(&name_of(&path)));
        }
        self.write(
            &format!("lib/modules/{kver}/modules.order"),
            &dep_paths(dep).join("\n"),
        );
        self.index(kver, dep);
    }

    /// (Re)writes the index files of `kver`.
    pub fn index(&self, kver: &str, dep: &str) {
        for (file, text) in [
            ("modules.dep", dep),
            ("modules.alias", ALIAS),
            ("modules.softdep", SOFTDEP),
            ("modules.builtin", BUILTIN),
        ] {
            self.write(&format!("lib/modules/{kver}/{file}"), text);
        }
    }

    /// The kernel package of `kver`, owning what is under `kernel/` now, plus `modules.order`
    /// and `modules.builtin` as real packages do (never `modules.dep`: depmod writes it).
    pub fn kernel_pkg(&self, kver: &str) -> Pkg {
        let mut pkg = Pkg::installed(&format!("linux-image-{kver}"), "6.1.99-1");
        add_files_of_tree(&mut pkg, &self.root, &format!("lib/modules/{kver}/kernel"));
        for file in ["modules.order", "modules.builtin"] {
            pkg.files.push(format!("/lib/modules/{kver}/{file}"));
        }
        pkg
    }

    /// A package owning `/usr/share/limopack/<name>.yaml`.
    pub fn decl_pkg(name: &str) -> Pkg {
        let mut pkg = Pkg::installed(name, "1.0-1");
        pkg.files.push(format!("/usr/share/limopack/{name}.yaml"));
        pkg
    }

    pub fn dpkg(&self, pkgs: &[Pkg]) {
        write_dpkg_db(&self.root, pkgs);
    }

    pub fn config(&self, text: &str) {
        self.write("etc/limopack/limopack.yaml", text);
    }

    pub fn vendor(&self, name: &str, text: &str) {
        self.write(&format!("usr/share/limopack/{name}.yaml"), text);
    }

    pub fn admin(&self, name: &str, text: &str) {
        self.write(&format!("etc/limopack/modules.d/{name}.yaml"), text);
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_under(env!("CARGO_BIN_EXE_limopack-hook"), &[], args)
    }

    /// Runs the `limopack` command (the original's flags) on this root, as `run` does
    /// `limopack-hook`.
    pub fn run_limopack(&self, args: &[&str]) -> Out {
        self.run_under(super::program("limopack").to_str().unwrap(), &[], args)
    }

    /// Runs `binary` with `--root` this root, behind `wrapper` (a program and its arguments;
    /// none for the binary alone).
    fn run_under(&self, binary: &str, wrapper: &[&str], args: &[&str]) -> Out {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("--root")
            .arg(&self.root)
            .args(args)
            // Either would point dpkg-query away from the root's database.
            .env_remove("DPKG_ADMINDIR")
            .env_remove("DPKG_ROOT")
            .env("LC_ALL", "C");
        // No input may hang a run: one that takes a minute has hung.
        let out = output_within(&mut command, std::time::Duration::from_secs(60));
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs under `strace -f -e trace=TRACE`, which must succeed; what the binary printed,
    /// and strace's log.
    pub fn traced(&self, trace: &str, args: &[&str]) -> (Out, String) {
        let (out, log) = self.traced_any(trace, args);
        assert!(out.ok, "limopack-hook {args:?} under strace failed:\n{}", out.stderr);
        (out, log)
    }

    /// [`traced`](Self::traced), whether the run succeeds or not.
    pub fn traced_any(&self, trace: &str, args: &[&str]) -> (Out, String) {
        let log = self._tmp.path().join("strace.log");
        let log_arg = log.display().to_string();
        let out = self.run_under(env!("CARGO_BIN_EXE_limopack-hook"), &["strace", "-f", "-qq", "-e", &format!("trace={trace}"), "-o", &log_arg], args);
        (out, fs::read_to_string(&log).unwrap())
    }

    /// Runs and asserts success.
    pub fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert!(
            out.ok,
            "limopack-hook {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// Runs and asserts failure with `limopack: error:` on stderr.
    pub fn fails(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert!(
            !out.ok,
            "limopack-hook {args:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        assert!(out.stderr.contains("limopack: error: "), "{}", out.stderr);
        out
    }

    /// The plan of kernel `kver` from a `--json` dry run.
    pub fn plan(&self, kver: &str) -> Value {
        let json = self.ok(&["--dry-run", "--json"]).json();
        kernel_of(&json, kver).clone()
    }

    pub fn state(&self) -> Value {
        let text = fs::read_to_string(self.p("var/lib/limopack/state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Loaded names of the module files of `dep` that are on disk in `kver`.
    pub fn present(&self, kver: &str, dep: &str) -> BTreeSet<String> {
        dep_paths(dep)
            .into_iter()
            .filter(|p| self.m(kver, p).exists())
            .map(|p| name_of(&p))
            .collect()
    }
}

pub fn kernel_of<'a>(json: &'a Value, kver: &str) -> &'a Value {
    assert_eq!(json["schema"], 1, "{json:#}");
    json["plan"]["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == kver)
        .unwrap_or_else(|| panic!("no kernel {kver} in {json:#}"))
}

pub fn kept_names(kplan: &Value) -> BTreeSet<String> {
    kplan["kept"].as_object().unwrap().keys().cloned().collect()
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub fn strings(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

pub fn all_modules() -> BTreeSet<String> {
    dep_paths(DEP).iter().map(|p| name_of(p)).collect()
}

/// Asserts that `text` contains `needle` followed by `:LINE:COLUMN: `.
pub fn assert_located(text: &str, needle: &str) {
    let found = text.match_indices(needle).any(|(at, _)| {
        let rest = &text[at + needle.len()..];
        let mut parts = rest.splitn(3, ':');
        let (Some(""), Some(line), Some(col_rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let col: String = col_rest.chars().take_while(char::is_ascii_digit).collect();
        !line.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
            && !col.is_empty()
            && col_rest[col.len()..].starts_with(": ")
    });
    assert!(found, "expected `{needle}:LINE:COLUMN: ` in:\n{text}");
}

