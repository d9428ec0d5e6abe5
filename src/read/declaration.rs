//! Declarations: the YAML files in which packages and the admin say which modules they need.
//!
//! Packages ship `/usr/share/limopack/<package>.yaml`; the admin writes
//! `/etc/limopack/modules.d/<name>.yaml`, and a file there masks the vendor file of the same
//! name (an empty file disables it), as `/etc/modprobe.d` does for `/lib/modprobe.d`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::glob::Glob;
use crate::read::config::Pattern;
use crate::error::{Error, Result};
use crate::read::index::{Lookup, ModId, ModuleIndex};
use crate::name;
use crate::root::{Root, ADMIN_DIR, VENDOR_DIR};
use crate::read::trust::{self, Trusted};
use crate::read::yaml;

/// Where a declaration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `/usr/share/limopack`: counts while its owning package is installed.
    Vendor,
    /// `/etc/limopack/modules.d`: the admin's own, always counts.
    Admin,
}

/// One module entry: a name, an alias or a glob over names, normalised.
#[derive(Debug, Clone)]
pub struct Entry {
    pub text: String,
    /// Set when the entry is a glob over module names.
    pub glob: Option<Glob>,
    /// Line in its file, for messages (0 when unknown).
    pub line: usize,
    /// Column of the entry on that line (0 when unknown).
    pub column: usize,
}

impl Entry {
    /// What the entry names in a kernel: its modules, and whether it matched a built-in. The
    /// one resolver: a run, `check`, `explain`, `freeze` and the `limopack` command all ask
    /// this, of the index a run plans with (pruned modules included).
    pub fn resolve(&self, index: &ModuleIndex) -> (Vec<ModId>, bool) {
        match &self.glob {
            Some(glob) => index.glob(glob),
            None => match index.lookup(&self.text) {
                Lookup::Modules(ids) => (ids, false),
                Lookup::Builtin => (Vec::new(), true),
                Lookup::NotFound => (Vec::new(), false),
            },
        }
    }
}

impl Entry {
    /// `raw`, an entry as written, checked and normalised; or why it cannot be one.
    fn of_text(raw: &str) -> std::result::Result<Entry, String> {
        if let Some(why) = name::invalid_entry(raw) {
            return Err(why);
        }
        let text = name::normalize(raw).into_owned();
        let glob = match name::is_name_glob(&text) {
            true => Some(Glob::new(&text).map_err(|e| format!("bad glob `{raw}`: {e}"))?),
            false => None,
        };
        Ok(Entry { text, glob, line: 0, column: 0 })
    }
}

/// A firmware file or glob, relative to `/lib/firmware`.
#[derive(Debug, Clone)]
pub struct FirmwarePattern(pub Pattern);

impl FirmwarePattern {
    /// `raw`, a firmware entry as written, checked; or why it cannot be one.
    fn of_text(raw: &str) -> std::result::Result<FirmwarePattern, String> {
        if raw.starts_with('/') || raw.split('/').any(|p| p == ".." || p == "." || p.is_empty()) {
            return Err(format!("`{raw}` must be a path relative to /lib/firmware, without `..`"));
        }
        Pattern::of_text(raw).map(FirmwarePattern)
    }
}

/// One item of a list, as read: what it is, or why it is not. A bad item does not stop the
/// read, so that every one of a file is reported (as lintian does), not only the first.
enum Item<T> {
    Good(T),
    Bad { raw: String, why: String },
}

/// What an item can be: a checked form of its text.
trait OfText: Sized {
    fn of_text(raw: &str) -> std::result::Result<Self, String>;
}

impl OfText for Entry {
    fn of_text(raw: &str) -> std::result::Result<Self, String> {
        Entry::of_text(raw)
    }
}

impl OfText for FirmwarePattern {
    fn of_text(raw: &str) -> std::result::Result<Self, String> {
        FirmwarePattern::of_text(raw)
    }
}

impl<'de, T: OfText> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A scalar of the wrong type is a bad item; a list or a mapping where an item belongs
        // is a fault of the file's shape, which stops the read.
        let bad = |raw: String, what: &str| Item::Bad {
            why: format!("invalid type: {what} `{raw}`, expected a string (quote a name that YAML would read as a number or a boolean)"),
            raw,
        };
        Ok(match yaml::scalar_of(d)? {
            yaml::Scalar::Text(raw) => match T::of_text(&raw) {
                Ok(good) => Item::Good(good),
                Err(why) => Item::Bad { raw, why },
            },
            yaml::Scalar::Other(raw, what) => bad(raw, what),
        })
    }
}

/// A declaration as written: its lists item by item, and any keys that are not its own.
struct RawDeclaration {
    modules: Vec<Item<Entry>>,
    statics: Vec<Item<Entry>>,
    kernels: Option<Pattern>,
    firmware: Vec<Item<FirmwarePattern>>,
    unknown: Vec<String>,
}

/// The keys of a declaration.
const KEYS: [&str; 4] = ["modules", "static", "kernels", "firmware"];

impl<'de> Deserialize<'de> for RawDeclaration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawDeclaration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a declaration: a mapping of `modules`, `static`, `kernels` and `firmware`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawDeclaration, A::Error> {
                let mut raw = RawDeclaration { modules: Vec::new(), statics: Vec::new(), kernels: None, firmware: Vec::new(), unknown: Vec::new() };
                let mut seen = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if seen.contains(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    match key.as_str() {
                        "modules" => raw.modules = map.next_value()?,
                        "static" => raw.statics = map.next_value()?,
                        "kernels" => raw.kernels = Some(map.next_value()?),
                        "firmware" => raw.firmware = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            raw.unknown.push(key.clone());
                        }
                    }
                    seen.push(key);
                }
                Ok(raw)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// One declaration file.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// The file as the system sees it (`/usr/share/limopack/bluez.yaml`).
    pub path: PathBuf,
    pub origin: Origin,
    /// Referenced while this declaration is active.
    pub modules: Vec<Entry>,
    /// Recorded in limopack's state the first time they are seen, and kept for good.
    pub statics: Vec<Entry>,
    /// The kernel versions this file applies to; all when `None`.
    pub kernels: Option<Pattern>,
    pub firmware: Vec<FirmwarePattern>,
}

impl Declaration {
    /// Parse one declaration, or give its first problem. `path` is the file as the system
    /// sees it.
    pub fn parse(path: &Path, bytes: &[u8], origin: Origin) -> Result<Declaration> {
        let (declaration, mut problems) = Declaration::read(path, bytes, origin);
        match declaration {
            Some(declaration) if problems.is_empty() => Ok(declaration),
            _ => Err(problems.remove(0)),
        }
    }

    /// Read one declaration, with every problem found in it: none means the declaration is
    /// there. A fault of the file's shape (not YAML, a list where a mapping belongs) is one
    /// problem; each bad item and each unknown key is one more.
    pub fn read(path: &Path, bytes: &[u8], origin: Origin) -> (Option<Declaration>, Vec<Error>) {
        let raw: Option<RawDeclaration> = match yaml::parse(path, bytes) {
            Ok(raw) => raw,
            Err(e) => return (None, vec![e]),
        };
        let raw = raw.unwrap_or(RawDeclaration { modules: Vec::new(), statics: Vec::new(), kernels: None, firmware: Vec::new(), unknown: Vec::new() });
        let text = String::from_utf8_lossy(bytes);
        let mut problems = Vec::new();
        for key in &raw.unknown {
            let (line, column) = yaml::place_of_key(&text, key);
            let expected = KEYS.map(|k| format!("`{k}`")).join(", ");
            problems.push(Error::syntax(path, line, column, format!("unknown field `{key}`, expected one of {expected}")));
        }
        let mut good = |key: &str, items: Vec<Item<Entry>>| -> Vec<Entry> {
            items.into_iter().filter_map(|item| match item {
                Item::Good(mut entry) => {
                    (entry.line, entry.column) = place_of(&text, &entry.text);
                    Some(entry)
                }
                Item::Bad { raw, why } => {
                    let (line, column) = yaml::place_of_value(&text, key, &raw);
                    problems.push(Error::syntax(path, line, column, format!("{key}: {why}")));
                    None
                }
            })
            .collect()
        };
        let modules = good("modules", raw.modules);
        let statics = good("static", raw.statics);
        let mut firmware = Vec::new();
        for item in raw.firmware {
            match item {
                Item::Good(pattern) => firmware.push(pattern),
                Item::Bad { raw, why } => {
                    let (line, column) = yaml::place_of_value(&text, "firmware", &raw);
                    problems.push(Error::syntax(path, line, column, format!("firmware: {why}")));
                }
            }
        }
        problems.sort_by_key(|e| match e {
            Error::Syntax { line, column, .. } => (*line, *column),
            _ => (0, 0),
        });
        let declaration = Declaration { path: path.to_path_buf(), origin, modules, statics, kernels: raw.kernels, firmware };
        (Some(declaration), problems)
    }

    /// True when the file names no module: an empty file that only masks another.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty() && self.statics.is_empty() && self.firmware.is_empty()
    }

    /// Whether this declaration applies to a kernel version.
    pub fn applies_to(&self, kernel: &str) -> bool {
        self.kernels
            .as_ref()
            .is_none_or(|k| k.glob.is_match(kernel))
    }
}

/// Line and column where an entry first appears as a whole item, allowing for `-`/`_`
/// spelling; (0, 0) when not found. serde gives no position for a value that parsed, so
/// messages about it find it this way.
fn place_of(text: &str, entry: &str) -> (usize, usize) {
    for (n, line) in text.lines().enumerate() {
        let mut column = 1;
        for word in line.split(|c: char| c.is_whitespace() || "[],'\"#".contains(c)) {
            if !word.is_empty() && name::normalize(word) == entry {
                return (n + 1, column);
            }
            column += word.chars().count() + 1;
        }
    }
    (0, 0)
}

/// An admin declaration to write: what `freeze` and the `limopack` command keep in
/// `/etc/limopack/modules.d`. Rendered sorted, one entry a line, each with an optional
/// comment saying why it is there.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Comment lines at the top, without their `# `.
    pub header: Vec<String>,
    pub kernels: Option<String>,
    pub statics: Vec<(String, Option<String>)>,
    /// Repeats are kept: the `limopack` command counts references this way.
    pub modules: Vec<(String, Option<String>)>,
    pub firmware: Vec<String>,
}

impl Draft {
    /// Everything `existing` holds, so that a rewrite drops nothing: its entries, its
    /// `kernels:` and `firmware:`, and the comment lines at its top (from `text`).
    pub fn of(existing: &Declaration, text: &str) -> Draft {
        let header = text
            .lines()
            .take_while(|l| l.trim().is_empty() || l.starts_with('#'))
            .filter_map(|l| l.strip_prefix('#'))
            .map(|l| l.strip_prefix(' ').unwrap_or(l).to_string())
            .collect();
        Draft {
            header,
            kernels: existing.kernels.as_ref().map(|k| k.text.clone()),
            statics: existing.statics.iter().map(|e| (e.text.clone(), None)).collect(),
            modules: existing.modules.iter().map(|e| (e.text.clone(), None)).collect(),
            firmware: existing.firmware.iter().map(|f| f.0.text.clone()).collect(),
        }
    }

    /// True when the file would name nothing, and so mask a vendor file of the same name.
    pub fn is_empty(&self) -> bool {
        self.statics.is_empty() && self.modules.is_empty() && self.firmware.is_empty()
    }

    /// The YAML text: the header, then each key with its entries sorted (static entries and
    /// firmware once each, module references as often as they are listed).
    pub fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.header {
            let _ = writeln!(text, "#{}{line}", if line.is_empty() { "" } else { " " });
        }
        if let Some(kernels) = &self.kernels {
            let _ = writeln!(text, "kernels: {}", yaml::scalar(kernels));
        }
        let firmware: Vec<(String, Option<String>)> = self.firmware.iter().map(|f| (f.clone(), None)).collect();
        for (key, entries, once) in [("static", &self.statics, true), ("modules", &self.modules, false), ("firmware", &firmware, true)] {
            let mut entries = entries.clone();
            entries.sort();
            if once {
                entries.dedup_by(|a, b| a.0 == b.0);
            }
            if !entries.is_empty() {
                let _ = writeln!(text, "{key}:");
            }
            for (entry, why) in entries {
                let _ = writeln!(text, "  - {}{}", yaml::scalar(&entry), why.map(|w| format!("  # {w}")).unwrap_or_default());
            }
        }
        text
    }
}

/// The admin's declaration `name` (`baseline.yaml`) under the root, parsed, with its text;
/// `None` when there is none. A file limopack would not trust, or a mask, is an error: a
/// rewrite would replace what the admin meant.
pub fn read_admin(root: &Root, name: &str) -> Result<Option<(Declaration, String)>> {
    let dir = root.resolve(ADMIN_DIR)?;
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::untrusted(&path, "is a symlink (a mask, or a link to another file); limopack writes only a file of its own there, so move it away first"));
        }
        Ok(_) => {}
    }
    let Trusted::Bytes(bytes) = trust::read(root, &dir, name)? else {
        return Err(Error::untrusted(&path, "became a mask while it was read"));
    };
    let declaration = Declaration::parse(&path, &bytes, Origin::Admin)?;
    Ok(Some((declaration, String::from_utf8_lossy(&bytes).into_owned())))
}

/// The declarations under a root, after masking.
#[derive(Debug, Default)]
pub struct Declarations {
    pub active: Vec<Declaration>,
    /// Vendor files masked by an admin file of the same name, each as it reads (so that
    /// `explain` can say a module it names is pruned because of the mask).
    pub masked: Vec<Masked>,
    /// Files (or folders) that could not be read or trusted, each with why. What they meant
    /// is unknown, so nothing is pruned while there is one; the valid ones still count, so
    /// that what they need is restored.
    pub broken: Vec<Error>,
}

/// A vendor declaration an admin file masks.
#[derive(Debug)]
pub struct Masked {
    pub path: PathBuf,
    /// The admin's file that masks it.
    pub by: PathBuf,
    /// What it declares, when it reads.
    pub declaration: Option<Declaration>,
}

impl Declarations {
    /// Read both folders. An invalid or untrusted file is kept as broken: a run never guesses
    /// about what it meant.
    pub fn load(root: &Root) -> Result<Declarations> {
        let mut result = Declarations::default();
        let vendor = read_dir(root, VENDOR_DIR, Origin::Vendor, &mut result.broken)?;
        let admin = read_dir(root, ADMIN_DIR, Origin::Admin, &mut result.broken)?;
        let mut by_name = BTreeMap::new();
        for (name, declaration) in vendor {
            // A broken admin file masks nothing: keeping what the vendor file names is the
            // safe side of not knowing what the admin meant.
            match admin.get(&name).is_some_and(Option::is_some) {
                true => result.masked.push(Masked {
                    path: Path::new(VENDOR_DIR).join(&name),
                    by: Path::new(ADMIN_DIR).join(&name),
                    declaration: declaration.flatten(),
                }),
                false => {
                    by_name.insert(name, declaration);
                }
            }
        }
        by_name.extend(admin.into_iter().filter(|(_, d)| d.is_some()));
        result.active = by_name.into_values().flatten().flatten().collect();
        Ok(result)
    }
}

/// One file of a declaration folder: a declaration, a mask (`None`), or broken (an error,
/// pushed to the run's list; the file is `None` here, and counts as no file at all).
type Read = Option<Option<Declaration>>;

/// `*.yaml` files of one folder, by file name: `Some(None)` for a masked (`/dev/null`) one,
/// `None` for a broken one, whose error goes to `broken`. A folder that cannot be listed or
/// trusted is broken as a whole.
fn read_dir(root: &Root, dir: &str, origin: Origin, broken: &mut Vec<Error>) -> Result<BTreeMap<String, Read>> {
    let folder = root.resolve(dir)?;
    let mut found = BTreeMap::new();
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => {
            broken.push(Error::io(&folder, e));
            return Ok(found);
        }
    };
    if let Err(e) = trust::check_folders(root, &folder) {
        broken.push(e);
        return Ok(found);
    }
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                broken.push(Error::io(&folder, e));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".yaml") {
            continue;
        }
        let path = entry.path();
        let shown = Path::new(dir).join(name);
        let read = match trust::read_in(&folder, name) {
            Ok(Trusted::Bytes(bytes)) => {
                let (declaration, problems) = Declaration::read(&shown, &bytes, origin);
                match problems.is_empty() {
                    true => Ok(declaration),
                    false => Err(problems.into_iter().map(|e| rebase(e, &path)).collect()),
                }
            }
            Ok(Trusted::Masked) => Ok(None),
            Err(e) => Err(vec![e]),
        };
        match read {
            Ok(declaration) => found.insert(name.to_string(), Some(declaration)),
            Err(problems) => {
                broken.extend(problems);
                found.insert(name.to_string(), None)
            }
        };
    }
    Ok(found)
}

/// Errors name the file as found on this machine, so that under `--root` it can be opened.
fn rebase(error: Error, real: &Path) -> Error {
    match error {
        Error::Syntax { line, column, message, .. } => Error::Syntax {
            path: real.to_path_buf(),
            line,
            column,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn parse(text: &str) -> Result<Declaration> {
        Declaration::parse(Path::new("x.yaml"), text.as_bytes(), Origin::Vendor)
    }

    #[test]
    fn entries_are_normalised_and_located() {
        let d = parse("modules:\n  - btusb\n  - hci-uart\nstatic:\n  - ext4\n  - snd-hda-codec-*\nkernels: \"6.1.*\"\nfirmware:\n  - iwlwifi-*.pnvm\n").unwrap();
        let names: Vec<_> = d.modules.iter().map(|e| (e.text.as_str(), e.line)).collect();
        assert_eq!(names, [("btusb", 2), ("hci_uart", 3)]);
        let other = parse("modules:\n  - btusb\n  - bt\nstatic: [\"bt-x\", 'e']\n").unwrap();
        assert_eq!(other.modules[1].line, 3);
        assert_eq!((other.statics[0].line, other.statics[1].line), (4, 4));
        assert_eq!(d.statics[1].text, "snd_hda_codec_*");
        assert!(d.statics[1].glob.is_some());
        assert!(d.statics[0].glob.is_none());
        assert!(d.applies_to("6.1.0-50-amd64"));
        assert!(!d.applies_to("6.12.0-1-amd64"));
        assert_eq!(d.firmware[0].0.text, "iwlwifi-*.pnvm");
    }

    #[test]
    fn every_problem_of_a_file_is_found() {
        let text = "modules:\n  - btusb\n  - ../x\n  - 123\nmodlues: [a]\nstatic: [\"a b\", ext4]\nfirmware: [/abs]\n";
        let (declaration, problems) = Declaration::read(Path::new("x.yaml"), text.as_bytes(), Origin::Vendor);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, [
            "x.yaml:3:5: modules: `../x` is a path; give the module's name, as modprobe takes it",
            "x.yaml:4:5: modules: invalid type: integer `123`, expected a string (quote a name that YAML would read as a number or a boolean)",
            "x.yaml:5:1: unknown field `modlues`, expected one of `modules`, `static`, `kernels`, `firmware`",
            "x.yaml:6:10: static: `a b` contains ' ', which no module name has",
            "x.yaml:7:12: firmware: `/abs` must be a path relative to /lib/firmware, without `..`",
        ]);
        let declaration = declaration.unwrap();
        assert_eq!((declaration.modules.len(), declaration.statics.len()), (1, 1), "the good entries are read");
    }

    #[test]
    fn empty_file_is_an_empty_declaration() {
        let d = parse("").unwrap();
        assert!(d.modules.is_empty() && d.statics.is_empty());
        assert!(d.applies_to("anything"));
    }

    #[test]
    fn bad_declarations_point_at_the_fault() {
        let cases = [
            ("modlues: [x]\n", "x.yaml:1:1: unknown field `modlues`, expected one of `modules`, `static`, `kernels`, `firmware`"),
            ("modules:\n  - ../../etc/passwd\n", "x.yaml:2:5: modules: `../../etc/passwd` is a path; give the module's name, as modprobe takes it"),
            ("modules: btusb\n", "x.yaml:1:10: modules: invalid type: string \"btusb\", expected a sequence"),
            ("modules:\n  a: b\n", "x.yaml:2:3: modules: invalid type: map, expected a sequence"),
            ("static: [\"snd_[\"]\n", "x.yaml:1:10: static: bad glob `snd_[`: the `[` at character 5 opens no set: close it with `]`, or write a `[` to match as `[[]`"),
            ("modules: [\"\"]\n", "x.yaml:1:11: modules: empty module name"),
            ("modules: [a b]\n", "x.yaml:1:11: modules: `a b` contains ' ', which no module name has"),
            ("firmware: [../x]\n", "x.yaml:1:12: firmware: `../x` must be a path relative to /lib/firmware, without `..`"),
            ("kernels: [6.1]\n", "x.yaml:1:10: kernels: invalid type: sequence, expected a string (quote a name that YAML would read as a number or a boolean)"),
            ("modules: [btusb, 123]\n", "x.yaml:1:18: modules: invalid type: integer `123`, expected a string (quote a name that YAML would read as a number or a boolean)"),
            ("static: [true]\n", "x.yaml:1:10: static: invalid type: boolean `true`, expected a string (quote a name that YAML would read as a number or a boolean)"),
            ("- btusb\n", "x.yaml:1:1: invalid type: sequence, expected a declaration: a mapping of `modules`, `static`, `kernels` and `firmware`"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "for {text:?}");
        }
        let e = parse("modules: [a]\nmodules: [b]\n").unwrap_err().to_string();
        assert!(e.contains("duplicate field `modules`"), "{e}");
        let e = parse("modules: [a\n").unwrap_err().to_string();
        assert!(e.starts_with("x.yaml:2:1: did not find expected ',' or ']'"), "{e}");
    }

    #[test]
    fn admin_files_mask_vendor_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let vendor = root.resolve(VENDOR_DIR).unwrap();
        let admin = root.resolve(ADMIN_DIR).unwrap();
        fs::create_dir_all(&vendor).unwrap();
        fs::create_dir_all(&admin).unwrap();
        fs::write(vendor.join("bluez.yaml"), "modules: [btusb]\n").unwrap();
        fs::write(vendor.join("wifi.yaml"), "modules: [iwlwifi]\n").unwrap();
        fs::write(vendor.join("README"), "not a declaration").unwrap();
        fs::write(admin.join("bluez.yaml"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", admin.join("wifi.yaml")).unwrap();
        fs::write(admin.join("local.yaml"), "static: [ext4]\n").unwrap();
        let d = Declarations::load(&root).unwrap();
        let paths: Vec<_> = d.active.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(paths, ["/etc/limopack/modules.d/bluez.yaml", "/etc/limopack/modules.d/local.yaml"]);
        assert!(d.active[0].modules.is_empty());
        assert_eq!(d.masked.len(), 2);
    }

    #[test]
    fn a_broken_file_is_named_and_the_others_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let (vendor, admin) = (root.resolve(VENDOR_DIR).unwrap(), root.resolve(ADMIN_DIR).unwrap());
        fs::create_dir_all(&vendor).unwrap();
        fs::create_dir_all(&admin).unwrap();
        fs::write(vendor.join("ok.yaml"), "modules: [btusb]\n").unwrap();
        fs::write(vendor.join("bad.yaml"), "modules: [btusb\n").unwrap();
        // A broken admin file masks nothing: what the vendor file needs is kept.
        fs::write(vendor.join("wifi.yaml"), "modules: [iwlwifi]\n").unwrap();
        fs::write(admin.join("wifi.yaml"), "modlues: []\n").unwrap();
        let d = Declarations::load(&root).unwrap();
        let active: Vec<_> = d.active.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(active, ["/usr/share/limopack/ok.yaml", "/usr/share/limopack/wifi.yaml"]);
        let broken: Vec<String> = d.broken.iter().map(ToString::to_string).collect();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].starts_with(&format!("{}:2:1:", vendor.join("bad.yaml").display())), "{broken:?}");
        assert!(broken[1].starts_with(&format!("{}:1:1: unknown field `modlues`", admin.join("wifi.yaml").display())), "{broken:?}");
        assert!(d.masked.is_empty());
    }
}
