//! The admin's `/etc/limopack/limopack.yaml`. Absent means all defaults, and the defaults
//! delete nothing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::glob::Glob;
use serde::{Deserialize, Deserializer};

use crate::error::Result;
use crate::root::{Root, CONFIG_FILE};
use crate::read::trust::{self, Trusted};
use crate::read::yaml;

/// Packages of CPU microcode. Their files are never pruned: the CPU, not a module, needs them,
/// and early microcode is loaded from the initramfs before any module.
pub const MICROCODE_PACKAGES: [&str; 2] = ["amd64-microcode", "intel-microcode"];

/// A glob checked when the file is read, so that a bad one points at its line.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub glob: Glob,
}


impl Pattern {
    /// `text` as a glob, or why it cannot be one.
    pub(crate) fn of_text(text: &str) -> std::result::Result<Pattern, String> {
        if text.trim().is_empty() {
            return Err("empty pattern".into());
        }
        let glob = Glob::path(text).map_err(|e| format!("bad glob `{text}`: {e}"))?;
        Ok(Pattern { text: text.to_string(), glob })
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Pattern::of_text(&yaml::string(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    prune: Option<bool>,
    packages: Option<Vec<Pattern>>,
    depmod: Option<bool>,
    initramfs: Option<Initramfs>,
    archive: Option<bool>,
    firmware: Option<FirmwareMode>,
    firmware_packages: Option<Vec<Pattern>>,
    hotplug: Option<Hotplug>,
}

/// What the udev rule does for a device that appears whose driver limopack pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hotplug {
    /// Say it in the journal: the device, the module, its package and the command that
    /// brings it back.
    #[default]
    Notify,
    /// Say it, and bring the module back (restore, declare, re-trigger the device).
    Restore,
    /// Look nothing up.
    Off,
}

/// What to do with the files under `/lib/firmware` that no kept module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareMode {
    /// Leave every firmware file alone.
    #[default]
    Keep,
    /// Prune the firmware packages' files that no kept module needs and no declaration names.
    Prune,
}

/// When to refresh a kernel's initramfs after its tree changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Initramfs {
    /// Refresh an initramfs that exists with the generator installed (initramfs-tools or
    /// dracut); say once when there is none.
    #[default]
    Auto,
    /// Refresh or create it, and fail the run when no generator is installed.
    Always,
    /// Leave it to the admin.
    Never,
}

/// The packages whose module files limopack may prune, unless the admin says otherwise.
pub const DEFAULT_PACKAGES: [&str; 3] = ["linux-image-*", "linux-modules-*", "linux-modules-extra-*"];

/// The packages whose files under `/lib/firmware` limopack may prune with `firmware: prune`.
pub const DEFAULT_FIRMWARE_PACKAGES: [&str; 2] = ["firmware-*", "linux-firmware*"];

#[derive(Debug, Clone)]
pub struct Config {
    /// The file as the system sees it, for messages.
    pub path: PathBuf,
    /// Nothing is deleted until this is true.
    pub prune: bool,
    /// Globs of module packages whose files may be pruned.
    pub packages: Vec<String>,
    /// `packages` compiled on first use: most runs ask about a handful of packages.
    packages_set: OnceLock<Vec<Glob>>,
    /// Run depmod after a tree changed (and before planning when its index is stale).
    pub depmod: bool,
    pub initramfs: Initramfs,
    /// Keep a compressed copy of each pruned file, so that restoring it needs no `.deb`.
    pub archive: bool,
    pub firmware: FirmwareMode,
    /// Globs of firmware packages whose files may be pruned.
    pub firmware_packages: Vec<String>,
    /// `firmware_packages` compiled on first use: only a run that prunes firmware asks.
    firmware_set: OnceLock<Vec<Glob>>,
    /// What the udev rule does for a device whose driver was pruned.
    pub hotplug: Hotplug,
}

impl Default for Config {
    fn default() -> Self {
        let packages: Vec<String> = DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect();
        Config::build(PathBuf::from(CONFIG_FILE), false, &packages, true)
    }
}

impl Config {
    /// Read the config under `root`; a missing file gives the defaults.
    pub fn load(root: &Root) -> Result<Config> {
        let (dir, name) = (Path::new(CONFIG_FILE).parent().unwrap_or(Path::new("/")), Path::new(CONFIG_FILE).file_name().unwrap_or_default());
        let dir = root.resolve(dir)?;
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(Config::default());
        }
        let raw: Option<RawConfig> = match trust::read(root, &dir, &name.to_string_lossy())? {
            Trusted::Bytes(bytes) => yaml::parse(&path, &bytes)?,
            Trusted::Masked => None,
        };
        let Some(raw) = raw else {
            return Ok(Config::default());
        };
        let defaults = Config::default();
        let packages = match raw.packages {
            Some(patterns) => patterns.into_iter().map(|p| p.text).collect(),
            None => defaults.packages,
        };
        let firmware_packages: Vec<String> = match raw.firmware_packages {
            Some(patterns) => patterns.into_iter().map(|p| p.text).collect(),
            None => defaults.firmware_packages,
        };
        Ok(Config {
            initramfs: raw.initramfs.unwrap_or(defaults.initramfs),
            archive: raw.archive.unwrap_or(defaults.archive),
            firmware: raw.firmware.unwrap_or(defaults.firmware),
            hotplug: raw.hotplug.unwrap_or(defaults.hotplug),
            firmware_packages,
            ..Config::build(
                root.inside(&path),
                raw.prune.unwrap_or(defaults.prune),
                &packages,
                raw.depmod.unwrap_or(defaults.depmod),
            )
        })
    }

    fn build(path: PathBuf, prune: bool, packages: &[String], depmod: bool) -> Config {
        let firmware_packages: Vec<String> = DEFAULT_FIRMWARE_PACKAGES.iter().map(|s| s.to_string()).collect();
        Config {
            path,
            prune,
            packages: packages.to_vec(),
            packages_set: OnceLock::new(),
            depmod,
            initramfs: Initramfs::default(),
            archive: false,
            firmware: FirmwareMode::default(),
            firmware_set: OnceLock::new(),
            firmware_packages,
            hotplug: Hotplug::default(),
        }
    }

    /// This config with only `package` prunable, for a run limited to one package's files,
    /// and firmware kept: what other packages' modules need is not looked at whole.
    /// A package the config does not count as a module package is refused: limopack never
    /// prunes one.
    pub fn limited_to(&self, package: &str) -> Result<Config> {
        if !self.is_module_package(package) {
            return Err(crate::Error::request(
                &self.path,
                format!("{package} is not a module package (packages: {}); limopack prunes only those", self.packages.join(", ")),
            ));
        }
        let only = [package.split(':').next().unwrap_or(package).to_string()];
        Ok(Config { initramfs: self.initramfs, archive: self.archive, hotplug: self.hotplug, ..Config::build(self.path.clone(), self.prune, &only, self.depmod) })
    }

    /// True when files of this package may be pruned. An architecture qualifier
    /// (`linux-image-6.1.0-50-amd64:amd64`) is ignored.
    pub fn is_module_package(&self, package: &str) -> bool {
        let set = self.packages_set.get_or_init(|| glob_set(&self.packages));
        let name = package.split(':').next().unwrap_or(package);
        set.iter().any(|glob| glob.is_match(name))
    }

    /// True when this package's files under `/lib/firmware` may be pruned (`firmware_packages`).
    /// CPU microcode never is, whatever the globs say.
    pub fn is_firmware_package(&self, package: &str) -> bool {
        let name = package.split(':').next().unwrap_or(package);
        let set = self.firmware_set.get_or_init(|| glob_set(&self.firmware_packages));
        set.iter().any(|glob| glob.is_match(name)) && !MICROCODE_PACKAGES.contains(&name)
    }
}

/// One set of package globs. Patterns were checked when parsed; the defaults are constants.
fn glob_set(patterns: &[String]) -> Vec<Glob> {
    patterns.iter().filter_map(|p| Glob::new(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/limopack/limopack.yaml");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Config::load(&Root::new(dir.path()).unwrap())
    }

    #[test]
    fn defaults_delete_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&Root::new(dir.path()).unwrap()).unwrap();
        assert!(!config.prune);
        assert!(config.depmod);
        assert_eq!(config.initramfs, Initramfs::Auto);
        assert!(!config.archive);
        assert!(config.is_module_package("linux-image-6.1.0-50-amd64"));
        assert!(config.is_module_package("linux-modules-extra-6.8.0-1-generic:amd64"));
        assert!(!config.is_module_package("firmware-linux-free"));
        assert!(!load("# all defaults\n").unwrap().prune);
        assert_eq!(config.firmware, FirmwareMode::Keep);
        assert!(config.is_firmware_package("firmware-realtek") && config.is_firmware_package("linux-firmware"));
        assert!(!config.is_firmware_package("intel-microcode") && !config.is_firmware_package("linux-image-6.1.0-50-amd64"));
    }

    #[test]
    fn firmware_keys_are_read_and_checked() {
        let config = load("firmware: prune\nfirmware_packages: [firmware-realtek, amd64-microcode]\n").unwrap();
        assert_eq!(config.firmware, FirmwareMode::Prune);
        assert!(config.is_firmware_package("firmware-realtek:all"));
        assert!(!config.is_firmware_package("firmware-misc-nonfree"));
        assert!(!config.is_firmware_package("amd64-microcode"), "microcode never");
        assert_eq!(config.limited_to("linux-image-6.1.0-50-amd64").unwrap().firmware, FirmwareMode::Keep);
        let e = load("prune: true\nfirmware: drop\n").unwrap_err().to_string();
        assert!(e.contains("limopack.yaml:2:11: firmware: unknown variant `drop`, expected `keep` or `prune`"), "{e}");
        let e = load("firmware_packages: ['firmware-[']\n").unwrap_err().to_string();
        assert!(e.contains(":1:21: firmware_packages: bad glob `firmware-[`"), "{e}");
    }

    #[test]
    fn keys_are_read() {
        let config = load("prune: true\npackages: [my-kernel-*]\ndepmod: false\ninitramfs: never\narchive: true\n").unwrap();
        assert!(config.prune);
        assert!(!config.depmod);
        assert_eq!(config.initramfs, Initramfs::Never);
        assert!(config.archive);
        assert!(config.is_module_package("my-kernel-modules"));
        assert!(!config.is_module_package("linux-image-6.1.0-50-amd64"));
    }

    #[test]
    fn a_run_can_be_limited_to_one_module_package() {
        let config = load("prune: true\narchive: true\n").unwrap();
        let only = config.limited_to("linux-image-6.1.0-50-amd64").unwrap();
        assert!(only.is_module_package("linux-image-6.1.0-50-amd64:amd64"));
        assert!(!only.is_module_package("linux-image-6.1.0-51-amd64"));
        assert!(only.prune && only.archive);
        let e = config.limited_to("bash").err().unwrap().to_string();
        assert!(e.ends_with("limopack.yaml: bash is not a module package (packages: linux-image-*, linux-modules-*, linux-modules-extra-*); limopack prunes only those"), "{e}");
    }

    #[test]
    fn bad_configs_name_file_line_and_column() {
        let e = load("prune: true\nprnue: false\n").unwrap_err().to_string();
        assert!(e.ends_with("etc/limopack/limopack.yaml:2:1: unknown field `prnue`, expected one of `prune`, `packages`, `depmod`, `initramfs`, `archive`, `firmware`, `firmware_packages`, `hotplug`"), "{e}");
        let e = load("initramfs: sometimes\n").unwrap_err().to_string();
        assert!(e.contains(":1:12: initramfs: unknown variant `sometimes`, expected one of `auto`, `always`, `never`"), "{e}");
        let e = load("prune: yes please\n").unwrap_err().to_string();
        assert!(e.contains(":1:8: prune: invalid type: string \"yes please\", expected a boolean"), "{e}");
        let e = load("packages: ['linux-[']\n").unwrap_err().to_string();
        assert!(e.contains(":1:12: packages: bad glob `linux-[`"), "{e}");
        let e = load("packages: linux-*\n").unwrap_err().to_string();
        assert!(e.contains("expected a sequence"), "{e}");
    }
}
