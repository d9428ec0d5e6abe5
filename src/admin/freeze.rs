//! `limopack-hook freeze`: the vital set of the running system, recorded as the admin
//! declaration `/etc/limopack/modules.d/baseline.yaml`, every entry static. The original
//! limopack took only what is loaded now; a freeze also takes what the hardware and the
//! mounts need, so that a driver not loaded yet is covered too:
//! - loaded now: `/proc/modules`;
//! - devices: every `modalias` under `/sys/devices`, resolved through the kernel's aliases as
//!   modprobe does (the way dracut's hostonly mode finds drivers);
//! - filesystems: the type of every mount, as the kernel asks for it (`fs-TYPE`);
//! - block devices: those under `/`, `/usr` and swap, each ancestor's driver and modalias up
//!   its sysfs path, through the `slaves/` of dm and md stacks, as dracut's hostonly does.
//!
//! A second freeze merges with the file: an entry the machine no longer shows stays, and the
//! freeze says so.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::read::declaration::{self, Draft};
use crate::error::{Error, Result};
use crate::fs::{limits, read_kernel_file};
use crate::read::index::{Lookup, ModuleIndex};
use crate::kver::Kver;
use crate::root::{Root, ADMIN_DIR};
use crate::read::{loaded, tree};

/// The file a freeze writes, among the admin's declarations.
pub const BASELINE: &str = "baseline.yaml";

/// Where this machine's procfs and sysfs are: `/proc` and `/sys`, or a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Paths {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Paths {
    pub fn host() -> Paths {
        Paths { proc: PathBuf::from("/proc"), sys: PathBuf::from("/sys") }
    }
}

/// The kernel whose names a freeze (or the `limopack` command) resolves against.
pub struct Target {
    pub version: Kver,
    /// The tree as the system sees it (`/lib/modules/6.1.0-50-amd64`).
    pub shown: PathBuf,
    pub index: ModuleIndex,
}

/// The kernel of `root` to resolve against: `kernel`, else the running one on the host, else
/// the one tree of an image. An image's `/proc` and `/sys` are this machine's, so `what`
/// (the command, for the message) is refused there unless `from_host` says to use them.
pub fn target(root: &Root, kernel: Option<&Kver>, from_host: bool, what: &str) -> Result<Target> {
    if !root.is_host() && !from_host {
        return Err(Error::request(
            root.path(),
            format!(
                "not the running system: {what} reads /proc and /sys, which are this machine's, not the \
                 image's. Run it inside the image once it boots, or add --from-host to use this \
                 machine's devices and modules against the image's kernel"
            ),
        ));
    }
    let mut notes = Vec::new();
    let trees: Vec<tree::Tree> = tree::discover(root, &mut notes)?
        .into_iter()
        .filter(|t| t.path.join("modules.dep").exists())
        .collect();
    let version = match (kernel, root.is_host()) {
        (Some(k), _) => k.to_string(),
        (None, true) => loaded::running_kernel(),
        (None, false) => match trees.as_slice() {
            [one] => one.version.to_string(),
            [] => return Err(Error::missing(root.resolve("/lib/modules")?, "no module tree with a modules.dep; nothing to resolve names against")),
            several => {
                let names: Vec<&str> = several.iter().map(|t| t.version.as_str()).collect();
                return Err(Error::request(root.resolve("/lib/modules")?, format!("holds several kernels ({}); choose one with --kernel", names.join(", "))));
            }
        },
    };
    let Some(tree) = trees.into_iter().find(|t| *t.version == *version) else {
        let why = match kernel {
            Some(_) => "no such module tree with a modules.dep".to_string(),
            None => format!("no module tree with a modules.dep for the running kernel {}; choose one with --kernel", crate::shown::escaped(&version)),
        };
        return Err(Error::request(root.resolve("/lib/modules")?.join(crate::shown::escaped(&version).as_ref()), why));
    };
    // The index the run plans with: after a prune, the pruned modules are still named.
    Ok(Target { index: crate::run::kernel_index(root, &tree)?, version: tree.version, shown: tree.shown })
}

/// One mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device the kernel reports; major 0 for filesystems on no block device, and for
    /// btrfs, whose real device is its source.
    pub device: (u32, u32),
    pub target: String,
    pub fstype: String,
    pub source: String,
}

/// Parse mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - TYPE SOURCE
/// SUPEROPTIONS`, with ` `, tab, newline and `\` in paths escaped as octal (`\040`).
pub fn parse_mountinfo(path: &Path, text: &str) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| {
            Error::syntax(path, n + 1, 1, format!("{what}; expected `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [FIELDS…] - TYPE SOURCE OPTIONS`"))
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .map(|at| at + 6)
            .filter(|at| at + 2 < fields.len())
            .ok_or_else(|| bad("no ` - ` before the type and source".into()))?;
        let device = fields[2]
            .split_once(':')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
            .ok_or_else(|| bad(format!("`{}` is not MAJ:MIN", fields[2])))?;
        mounts.push(Mount {
            device,
            target: unescape(fields[4]),
            fstype: unescape(fields[separator + 1]),
            source: unescape(fields[separator + 2]),
        });
    }
    Ok(mounts)
}

/// Parse `/proc/swaps`: a header line, then `FILENAME TYPE SIZE USED PRIORITY`, the name
/// escaped as in mountinfo. Gives the names.
pub fn parse_swaps(path: &Path, text: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("Filename")) || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            return Err(Error::syntax(path, n + 1, 1, format!("`{line}`: expected FILENAME TYPE SIZE USED PRIORITY")));
        }
        names.push(unescape(fields[0]));
    }
    Ok(names)
}

/// Undo the kernel's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, b| v.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's name of a mount's type: FUSE subtypes (`fuse.sshfs`) are `fuse` to it.
fn kernel_fstype(fstype: &str) -> &str {
    fstype.split('.').next().unwrap_or(fstype)
}

/// A block device that `/`, `/usr` or swap lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// What lives on it: `/`, `/usr`, `swap /swapfile`.
    pub holds: String,
    /// `MAJ:MIN`, when it is on a block device.
    pub device: Option<String>,
    /// Module names (`driver/module` links) and modaliases up its sysfs path and its slaves,
    /// and the aliases of its dm target or md personality.
    pub wanted: BTreeSet<String>,
    /// Why nothing was found, when nothing could be.
    pub note: Option<String>,
}

/// What the machine shows, before any name is resolved.
#[derive(Debug, Default)]
pub struct Survey {
    /// What could not be looked at, and what that means for the freeze.
    pub notes: Vec<String>,
    pub loaded: Vec<String>,
    /// The content of every readable `modalias` file under `/sys/devices`, one per device.
    pub modaliases: Vec<String>,
    /// `modalias` files that could not be read, skipped.
    pub unreadable: usize,
    /// Kernel types of every mounted filesystem.
    pub filesystems: BTreeSet<String>,
    pub block: Vec<Block>,
}

/// Read what the machine shows from its procfs and sysfs.
pub fn survey(paths: &Paths) -> Result<Survey> {
    let mountinfo = paths.proc.join("self/mountinfo");
    let text = read_kernel_file(&mountinfo, limits::CONFIG)?;
    let mounts = parse_mountinfo(&mountinfo, &text)?;
    let swaps_path = paths.proc.join("swaps");
    let swaps = match read_kernel_file(&swaps_path, limits::CONFIG) {
        Ok(text) => parse_swaps(&swaps_path, &text)?,
        // A kernel built without swap has no /proc/swaps.
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let devices = paths.sys.join("devices");
    let mut notes = Vec::new();
    if !devices.is_dir() {
        notes.push(format!(
            "{} is not there, so no device's driver is seen: mount sysfs there (mount -t sysfs sysfs {}) and freeze again",
            devices.display(),
            paths.sys.display()
        ));
    }
    let (modaliases, unreadable) = modaliases(&devices);
    let mut block = Vec::new();
    // The last mount on a folder is the one on top, the one seen there.
    for folder in ["/", "/usr"] {
        if let Some(mount) = mounts.iter().rev().find(|m| m.target == folder) {
            let device = match mount.device.0 {
                0 => device_of(Path::new(&mount.source), true, &mounts),
                _ => Ok(mount.device),
            };
            block.push(block_of(&paths.sys, folder.to_string(), device.map_err(|_| format!("{} is not on a block device", mount.fstype))));
        }
    }
    for swap in swaps {
        let device = device_of(Path::new(&swap), false, &mounts);
        block.push(block_of(&paths.sys, format!("swap {swap}"), device));
    }
    Ok(Survey {
        notes,
        loaded: loaded::read(&paths.proc)?,
        modaliases,
        unreadable,
        filesystems: mounts.iter().map(|m| kernel_fstype(&m.fstype).to_string()).collect(),
        block,
    })
}

/// The block device of `path`: itself when it is one, else (a swap file) the device of the
/// filesystem holding it. An anonymous device (btrfs) is looked up by its mount's source.
/// `only_node` refuses anything but a block device node.
fn device_of(path: &Path, only_node: bool, mounts: &[Mount]) -> std::result::Result<(u32, u32), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let split = |dev: u64| (rustix::fs::major(dev), rustix::fs::minor(dev));
    if meta.file_type().is_block_device() {
        return Ok(split(meta.rdev()));
    }
    if only_node {
        return Err(format!("{} is not a block device", path.display()));
    }
    let device = split(meta.dev());
    if device.0 != 0 {
        return Ok(device);
    }
    let mount = mounts.iter().rev().find(|m| m.device == device).ok_or_else(|| format!("{}: on no mount this machine shows", path.display()))?;
    device_of(Path::new(&mount.source), true, mounts)
}

/// The names a block device needs, or why none were found.
fn block_of(sys: &Path, holds: String, device: std::result::Result<(u32, u32), String>) -> Block {
    let (major, minor) = match device {
        Ok(device) => device,
        Err(note) => return Block { holds, device: None, wanted: BTreeSet::new(), note: Some(note) },
    };
    let device = format!("{major}:{minor}");
    let link = sys.join("dev/block").join(&device);
    let devices = std::fs::canonicalize(sys.join("devices"));
    match (std::fs::canonicalize(&link), devices) {
        (Ok(node), Ok(devices)) => {
            let mut wanted = BTreeSet::new();
            walk_block(&devices, &node, &mut wanted, &mut HashSet::new());
            Block { holds, device: Some(device), wanted, note: None }
        }
        (Err(e), _) | (_, Err(e)) => Block { holds, device: Some(device), wanted: BTreeSet::new(), note: Some(format!("{}: {e}", link.display())) },
    }
}

/// Collect what the block device at `node` (a folder under `devices`) needs: for it and each
/// ancestor, the module its driver comes from and its modalias; for a dm or md device, its
/// target or personality and, through `slaves/`, what it is built on.
fn walk_block(devices: &Path, node: &Path, wanted: &mut BTreeSet<String>, seen: &mut HashSet<PathBuf>) {
    if !seen.insert(node.to_path_buf()) {
        return;
    }
    let read = |path: PathBuf| read_kernel_file(&path, limits::CONFIG).map(|s| s.trim().to_string()).unwrap_or_default();
    // A partition's stack (dm, md, slaves) is its disk's.
    let disk = match node.join("partition").exists() {
        true => node.parent().unwrap_or(node),
        false => node,
    };
    if disk.join("dm").is_dir() {
        wanted.insert("dm_mod".into());
        let uuid = read(disk.join("dm/uuid"));
        let target = [("CRYPT-VERITY-", "dm-verity"), ("CRYPT-INTEGRITY-", "dm-integrity"), ("CRYPT-", "dm-crypt"), ("mpath-", "dm-multipath")]
            .iter()
            .find(|(prefix, _)| uuid.starts_with(prefix));
        if let Some((_, module)) = target {
            wanted.insert(module.to_string());
        }
    }
    let level = read(disk.join("md/level"));
    if !level.is_empty() {
        // md asks for its personality as `md-LEVEL` (md-raid1, md-linear).
        wanted.insert(format!("md-{level}"));
    }
    for ancestor in node.ancestors().take_while(|a| a.starts_with(devices) && *a != devices) {
        if let Some(module) = std::fs::read_link(ancestor.join("driver/module")).ok().and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned())) {
            wanted.insert(module);
        }
        let alias = read(ancestor.join("modalias"));
        if !alias.is_empty() {
            wanted.insert(alias);
        }
    }
    if let Ok(slaves) = std::fs::read_dir(disk.join("slaves")) {
        for slave in slaves.flatten() {
            if let Ok(below) = std::fs::canonicalize(slave.path()) {
                walk_block(devices, &below, wanted, seen);
            }
        }
    }
}

/// The content of every `modalias` file under `devices`, walked without following symlinks
/// (sysfs links back up its own tree); and how many could not be read.
fn modaliases(devices: &Path) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut unreadable = 0;
    for entry in walkdir::WalkDir::new(devices).sort_by_file_name().into_iter().flatten() {
        // sysfs attributes are regular files; anything else is not read (a FIFO would block).
        if entry.file_name() != "modalias" || !entry.file_type().is_file() {
            continue;
        }
        match read_kernel_file(entry.path(), limits::CONFIG) {
            Ok(text) if !text.trim().is_empty() => found.push(text.trim().to_string()),
            Ok(_) => {}
            Err(_) => unreadable += 1,
        }
    }
    (found, unreadable)
}

/// One reason a module is vital, and what it matched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Group {
    /// What the machine showed: loaded names, modaliases, filesystem types or block devices.
    pub inputs: usize,
    /// Module names matched: the entries to write.
    pub modules: BTreeSet<String>,
    /// Inputs that are built into the kernel.
    pub builtin: BTreeSet<String>,
    /// Inputs that match nothing in the kernel.
    pub unmatched: BTreeSet<String>,
}

impl Group {
    /// Resolve each input as modprobe would, trying its spellings in turn (a filesystem
    /// type, then `fs-TYPE`).
    fn resolve(index: &ModuleIndex, inputs: impl IntoIterator<Item = (String, Vec<String>)>) -> Group {
        let mut group = Group::default();
        for (input, spellings) in inputs {
            group.inputs += 1;
            let found = spellings.iter().map(|s| index.lookup(s)).find(|l| *l != Lookup::NotFound).unwrap_or(Lookup::NotFound);
            match found {
                Lookup::Modules(ids) => group.modules.extend(ids.into_iter().map(|id| index.module(id).name.to_string())),
                Lookup::Builtin => {
                    group.builtin.insert(input);
                }
                Lookup::NotFound => {
                    group.unmatched.insert(input);
                }
            }
        }
        group
    }
}

/// A survey resolved against one kernel: the four groups.
#[derive(Debug)]
pub struct Frozen {
    pub version: String,
    pub loaded: Group,
    pub devices: Group,
    /// `modalias` files that could not be read.
    pub unreadable: usize,
    pub filesystems: Group,
    pub block: Group,
    /// Each block device: what it holds and the modules it matched, or why none.
    pub block_devices: Vec<(Block, BTreeSet<String>)>,
}

impl Frozen {
    pub fn resolve(survey: &Survey, target: &Target) -> Frozen {
        let index = &target.index;
        let one = |s: &String| (s.clone(), vec![s.clone()]);
        let devices: BTreeSet<&String> = survey.modaliases.iter().collect();
        let mut device_group = Group::resolve(index, devices.into_iter().map(one));
        device_group.inputs = survey.modaliases.len();
        let block_devices: Vec<(Block, BTreeSet<String>)> = survey
            .block
            .iter()
            .map(|b| (b.clone(), Group::resolve(index, b.wanted.iter().map(one)).modules))
            .collect();
        let mut block = Group::resolve(index, survey.block.iter().flat_map(|b| b.wanted.iter().map(one)));
        block.inputs = survey.block.len();
        Frozen {
            version: target.version.to_string(),
            loaded: Group::resolve(index, survey.loaded.iter().map(one)),
            devices: device_group,
            unreadable: survey.unreadable,
            filesystems: Group::resolve(index, survey.filesystems.iter().map(|t| (t.clone(), vec![t.clone(), format!("fs-{t}")]))),
            block,
            block_devices,
        }
    }

    /// Each module to record, with the groups that found it.
    pub fn reasons(&self) -> BTreeMap<String, Vec<&'static str>> {
        let mut reasons: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (why, group) in [("loaded", &self.loaded), ("device", &self.devices), ("filesystem", &self.filesystems), ("block device", &self.block)] {
            for module in &group.modules {
                reasons.entry(module.clone()).or_default().push(why);
            }
        }
        reasons
    }

    /// One line per group, with its count: what was found and why it is recorded.
    pub fn lines(&self) -> Vec<String> {
        let list = |names: &BTreeSet<String>| names.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
        let mut lines = Vec::new();
        let mut loaded = format!("loaded now: {}", plural(self.loaded.inputs, "module", "modules"));
        if !self.loaded.unmatched.is_empty() {
            loaded += &format!(" ({} not in {}, left out: {})", self.loaded.unmatched.len(), self.version, list(&self.loaded.unmatched));
        }
        lines.push(loaded);
        let mut others = Vec::new();
        if !self.devices.builtin.is_empty() {
            others.push(format!("{} built in", self.devices.builtin.len()));
        }
        if !self.devices.unmatched.is_empty() {
            others.push(format!("{} match nothing", self.devices.unmatched.len()));
        }
        if self.unreadable > 0 {
            others.push(format!("{} unreadable, skipped", self.unreadable));
        }
        let others = match others.is_empty() {
            true => String::new(),
            false => format!(" ({})", others.join(", ")),
        };
        let matched = match self.devices.modules.is_empty() {
            true => String::new(),
            false => format!(": {}", list(&self.devices.modules)),
        };
        lines.push(format!("device modaliases: {}, matching {}{others}{matched}", self.devices.inputs, plural(self.devices.modules.len(), "module", "modules")));
        let mut filesystems = format!("filesystems: {}", if self.filesystems.modules.is_empty() { "none as modules".to_string() } else { list(&self.filesystems.modules) });
        if !self.filesystems.builtin.is_empty() {
            filesystems += &format!(" (built in: {})", list(&self.filesystems.builtin));
        }
        lines.push(filesystems);
        let devices: Vec<String> = self
            .block_devices
            .iter()
            .map(|(b, modules)| match (&b.device, &b.note) {
                (_, Some(note)) => format!("{}: {note}", b.holds),
                (Some(device), None) if modules.is_empty() => format!("{} on {device}: no module", b.holds),
                (Some(device), None) => format!("{} on {device}", b.holds),
                (None, None) => b.holds.clone(),
            })
            .collect();
        let devices = match devices.is_empty() {
            true => String::new(),
            false => format!(" ({})", devices.join("; ")),
        };
        let modules = match self.block.modules.is_empty() {
            true => "none as modules".to_string(),
            false => list(&self.block.modules),
        };
        lines.push(format!("block devices of /, /usr and swap: {modules}{devices}"));
        lines
    }
}

/// `1 module`, `2 modules`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The comment a new baseline starts with.
const HEADER: [&str; 4] = [
    "The vital set of this machine: modules kept for good, whatever packages declare.",
    "Written by `limopack-hook freeze`; a later freeze adds what it finds and keeps every",
    "entry here, so entries may be added by hand (names or aliases, as modprobe takes them).",
    "",
];

/// The baseline after a freeze, and what changed.
#[derive(Debug)]
pub struct Merged {
    pub draft: Draft,
    /// Entries the file did not have.
    pub new: BTreeSet<String>,
    /// Entries of the file that this freeze did not find, kept.
    pub unseen: BTreeSet<String>,
}

/// Merge what a freeze found into the existing baseline (its declaration and text). Every
/// entry of the file stays, and so do its `modules:`, `kernels:`, `firmware:` and top
/// comments; `stamp` is added to those comments.
pub fn merge(existing: Option<(&declaration::Declaration, &str)>, reasons: &BTreeMap<String, Vec<&'static str>>, stamp: String) -> Merged {
    let mut draft = match existing {
        Some((declaration, text)) => Draft::of(declaration, text),
        None => Draft { header: HEADER.iter().map(|s| s.to_string()).collect(), ..Draft::default() },
    };
    draft.header.push(stamp);
    let mut unseen = BTreeSet::new();
    for (entry, why) in &mut draft.statics {
        match reasons.get(entry) {
            Some(found) => *why = Some(found.join(", ")),
            None => {
                unseen.insert(entry.clone());
                *why = Some("kept: not seen by the last freeze".into());
            }
        }
    }
    let old: BTreeSet<String> = draft.statics.iter().map(|(e, _)| e.clone()).collect();
    let mut new = BTreeSet::new();
    for (module, found) in reasons {
        if !old.contains(module) {
            new.insert(module.clone());
            draft.statics.push((module.clone(), Some(found.join(", "))));
        }
    }
    Merged { draft, new, unseen }
}

/// What to freeze, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub kernel: Option<Kver>,
    pub from_host: bool,
    pub dry_run: bool,
}

/// What a freeze found and wrote.
pub struct Outcome {
    /// What was found, group by group, and what happened to the file.
    pub lines: Vec<String>,
    /// What could not be looked at, as warnings.
    pub notes: Vec<String>,
    /// The declaration, as written or (dry run) as it would be.
    pub yaml: String,
}

/// Survey this machine through `paths`, resolve against the root's kernel, merge with the
/// root's baseline and, unless dry, write it (atomically, mode 0644).
pub fn freeze(opts: &Options, paths: &Paths, now: SystemTime) -> Result<Outcome> {
    let root = Root::new(&opts.root)?;
    let target = target(&root, opts.kernel.as_ref(), opts.from_host, "freeze")?;
    let survey = survey(paths)?;
    let frozen = Frozen::resolve(&survey, &target);
    let existing = declaration::read_admin(&root, BASELINE)?;
    let whence = match root.is_host() {
        true => "this machine".to_string(),
        false => format!("the host's /proc and /sys, for the image at {}", root.path().display()),
    };
    let stamp = format!(
        "Frozen {} for {} from {whence}: {} loaded, {}, {}, {}.",
        humantime::format_rfc3339_seconds(now),
        target.version,
        frozen.loaded.inputs,
        plural(frozen.devices.inputs, "device modalias", "device modaliases"),
        plural(frozen.filesystems.inputs, "filesystem type", "filesystem types"),
        plural(frozen.block.inputs, "block device", "block devices"),
    );
    let merged = merge(existing.as_ref().map(|(d, t)| (d, t.as_str())), &frozen.reasons(), stamp);
    let shown = Path::new(ADMIN_DIR).join(BASELINE);
    if merged.draft.is_empty() {
        // An empty file would also mask a vendor declaration of the same name.
        return Err(Error::request(
            root.resolve(&shown)?,
            format!("not written: nothing this machine shows (loaded modules, devices, filesystems, block devices) matches a module of {}", target.version),
        ));
    }
    let yaml = merged.draft.render();
    let mut lines = vec![format!("limopack: freezing the vital set for {} ({}), from {whence}", target.version, target.shown.display())];
    lines.extend(frozen.lines().into_iter().map(|l| format!("  {l}")));
    if !merged.unseen.is_empty() {
        let names: Vec<&str> = merged.unseen.iter().map(String::as_str).collect();
        lines.push(format!("  kept from {}, not seen now: {}", shown.display(), names.join(", ")));
    }
    let total = merged.draft.statics.len();
    // A freeze that finds nothing new leaves the file as it is: only its stamp would change.
    if existing.is_some() && merged.new.is_empty() {
        lines.push(format!("limopack: {}: nothing new to record ({}); left as it is", shown.display(), plural(total, "static entry", "static entries")));
        return Ok(Outcome { lines, notes: survey.notes, yaml });
    }
    let verb = if opts.dry_run { "would write" } else { "wrote" };
    lines.push(format!("limopack: {verb} {}: {} ({} new)", shown.display(), plural(total, "static entry", "static entries"), merged.new.len()));
    if !opts.dry_run {
        crate::apply::store::write_admin(&root, BASELINE, &yaml)?;
    }
    Ok(Outcome { lines, notes: survey.notes, yaml })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::declaration::{Declaration, Origin};
    use crate::read::index::Sources;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn mountinfo_lines_give_device_target_and_type() {
        let text = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:35 / /mnt/my\\040disk rw master:3 shared:4 - fuse.sshfs me@host:/x rw
25 22 0:40 /@usr /usr rw - btrfs /dev/nvme0n1p2 rw,subvol=/@usr
";
        let mounts = parse_mountinfo(Path::new("mountinfo"), text).unwrap();
        assert_eq!(mounts[0], Mount { device: (254, 1), target: "/".into(), fstype: "ext4".into(), source: "/dev/vda1".into() });
        assert_eq!(mounts[2].target, "/mnt/my disk");
        assert_eq!(kernel_fstype(&mounts[2].fstype), "fuse");
        assert_eq!((mounts[3].device, mounts[3].source.as_str()), ((0, 40), "/dev/nvme0n1p2"));
        let e = parse_mountinfo(Path::new("mountinfo"), "22 1 254:1 / / rw\n").unwrap_err().to_string();
        assert!(e.starts_with("mountinfo:1:1: no ` - ` before the type and source"), "{e}");
        let e = parse_mountinfo(Path::new("mountinfo"), "22 1 x / / rw - ext4 /dev/x rw\n").unwrap_err().to_string();
        assert!(e.starts_with("mountinfo:1:1: `x` is not MAJ:MIN"), "{e}");
    }

    #[test]
    fn swaps_give_their_names() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda2                               partition\t1048572\t\t0\t\t-2\n/swap\\040file file 1024 0 -3\n";
        assert_eq!(parse_swaps(Path::new("swaps"), text).unwrap(), ["/dev/vda2", "/swap file"]);
        assert_eq!(parse_swaps(Path::new("swaps"), "Filename Type Size Used Priority\n").unwrap(), Vec::<String>::new());
        assert!(parse_swaps(Path::new("swaps"), "Filename\n/dev/x\n").unwrap_err().to_string().starts_with("swaps:2:1:"));
    }

    fn index() -> ModuleIndex {
        let sources = Sources {
            dep: Some((
                "modules.dep".into(),
                "kernel/drivers/block/virtio_blk.ko:\nkernel/drivers/virtio/virtio_pci.ko:\nkernel/fs/ext4/ext4.ko:\nkernel/fs/fat/vfat.ko:\n\
                 kernel/drivers/md/dm-mod.ko:\nkernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/raid1.ko:\n\
                 kernel/drivers/net/virtio_net.ko:\nkernel/drivers/bluetooth/btusb.ko:\n"
                    .into(),
            )),
            alias: Some((
                "modules.alias".into(),
                "alias virtio:d00000002v* virtio_blk\nalias virtio:d00000001v* virtio_net\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                 alias fs-ext4 ext4\nalias fs-vfat vfat\nalias md-raid1 raid1\nalias md-level-1 raid1\n"
                    .into(),
            )),
            builtin: Some(("modules.builtin".into(), "kernel/drivers/char/rtc.ko\nkernel/fs/fat/fat.ko\n".into())),
            ..Sources::default()
        };
        ModuleIndex::parse(sources).unwrap()
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A sysfs and procfs as a virtio machine with a LUKS root on md RAID1 shows them: the
    /// PCI functions, their virtio devices, two disks with a partition each, md0 over both
    /// partitions and dm-0 (LUKS) over md0, plus links that would loop if followed.
    fn fake_machine(dir: &Path) -> Paths {
        let sys = dir.join("sys");
        let proc = dir.join("proc");
        let pci = sys.join("devices/pci0000:00");
        for (slot, virtio, disk, minor) in [("0000:00:02.0", "virtio1", "vda", 0), ("0000:00:03.0", "virtio2", "vdb", 16)] {
            let function = pci.join(slot);
            write(&function.join("modalias"), "pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00\n");
            symlink("../../../bus/pci/drivers/virtio-pci", function.join("driver")).unwrap();
            let device = function.join(virtio);
            write(&device.join("modalias"), "virtio:d00000002v00001AF4\n");
            symlink("../../../../bus/virtio/drivers/virtio_blk", device.join("driver")).unwrap();
            let part = device.join(format!("block/{disk}/{disk}1"));
            write(&part.join("partition"), "1\n");
            write(&part.join("dev"), &format!("254:{}\n", minor + 1));
            symlink(format!("../../devices/pci0000:00/{slot}/{virtio}/block/{disk}/{disk}1"), sys_link(&sys, 254, minor + 1)).unwrap();
            // sysfs links back up its own tree; a walk that followed them would not end.
            symlink("../../..", device.join("subsystem")).unwrap();
        }
        write(&sys.join("bus/pci/drivers/virtio-pci/.keep"), "");
        symlink("../../../../module/virtio_pci", sys.join("bus/pci/drivers/virtio-pci/module")).unwrap();
        write(&sys.join("bus/virtio/drivers/virtio_blk/.keep"), "");
        write(&sys.join("module/virtio_pci/.keep"), "");
        let net = pci.join("0000:00:04.0/virtio3");
        write(&net.join("modalias"), "virtio:d00000001v00001AF4\n");
        write(&pci.join("0000:00:04.0/modalias"), "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00\n");
        write(&sys.join("devices/platform/rtc_cmos/modalias"), "platform:rtc_cmos\n");
        write(&sys.join("devices/platform/nothing/modalias"), "platform:no_such_driver\n");
        // A modalias that cannot be read as text: skipped, and counted.
        fs::create_dir_all(sys.join("devices/platform/odd")).unwrap();
        fs::write(sys.join("devices/platform/odd/modalias"), b"\xff\xfe\n").unwrap();
        let md = sys.join("devices/virtual/block/md0");
        write(&md.join("md/level"), "raid1\n");
        fs::create_dir_all(md.join("slaves")).unwrap();
        symlink("../../../../pci0000:00/0000:00:02.0/virtio1/block/vda/vda1", md.join("slaves/vda1")).unwrap();
        symlink("../../../../pci0000:00/0000:00:03.0/virtio2/block/vdb/vdb1", md.join("slaves/vdb1")).unwrap();
        symlink("../../devices/virtual/block/md0", sys_link(&sys, 9, 0)).unwrap();
        let dm = sys.join("devices/virtual/block/dm-0");
        write(&dm.join("dm/uuid"), "CRYPT-LUKS2-0123456789abcdef-root\n");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink("../../md0", dm.join("slaves/md0")).unwrap();
        symlink("../../devices/virtual/block/dm-0", sys_link(&sys, 253, 0)).unwrap();
        write(&proc.join("modules"), "virtio_net 69632 0 - Live 0x0\nbtusb 1 0 - Live 0x0\nout_of_tree 1 0 - Live 0x0\n");
        write(
            &proc.join("self/mountinfo"),
            "21 1 253:0 / / rw - ext4 /dev/mapper/root rw\n22 21 0:5 / /proc rw - proc proc rw\n\
             23 21 0:6 / /dev rw - devtmpfs udev rw\n24 21 254:17 / /boot/efi rw - vfat /dev/vdb1 rw\n\
             25 21 0:7 / /mnt rw - fuse.sshfs me@x: rw\n",
        );
        // A swap partition gone since: noted, not fatal.
        write(&proc.join("swaps"), &format!("Filename Type Size Used Priority\n{}/gone partition 1024 0 -2\n", dir.display()));
        Paths { proc, sys }
    }

    fn sys_link(sys: &Path, major: u32, minor: u32) -> PathBuf {
        let dir = sys.join("dev/block");
        fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{major}:{minor}"))
    }

    #[test]
    fn a_machine_without_sysfs_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake_machine(dir.path());
        assert!(survey(&paths).unwrap().notes.is_empty());
        let bare = Paths { proc: paths.proc.clone(), sys: dir.path().join("nosys") };
        let notes = survey(&bare).unwrap().notes;
        assert_eq!(notes.len(), 1);
        let nosys = dir.path().join("nosys");
        assert_eq!(notes, [format!("{}/devices is not there, so no device's driver is seen: mount sysfs there (mount -t sysfs sysfs {}) and freeze again", nosys.display(), nosys.display())]);
    }

    #[test]
    fn a_fake_machine_is_surveyed_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake_machine(dir.path());
        let survey = survey(&paths).unwrap();
        assert_eq!(survey.loaded, ["virtio_net", "btusb", "out_of_tree"]);
        assert_eq!(survey.modaliases.len(), 8, "{:?}", survey.modaliases);
        assert_eq!(survey.unreadable, 1);
        assert_eq!(survey.filesystems, ["devtmpfs", "ext4", "fuse", "proc", "vfat"].map(String::from).into());
        // / is on dm-0; the swap partition is gone.
        assert_eq!(survey.block.len(), 2);
        let root = &survey.block[0];
        assert_eq!((root.holds.as_str(), root.device.as_deref()), ("/", Some("253:0")));
        let want: BTreeSet<String> = [
            "dm_mod",
            "dm-crypt",
            "md-raid1",
            "virtio_pci",
            "pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00",
            "virtio:d00000002v00001AF4",
        ]
        .map(String::from)
        .into();
        assert_eq!(root.wanted, want);
        assert_eq!(survey.block[1].note.as_deref(), Some("No such file or directory (os error 2)"));

        let target = Target { version: "6.1.0-1-test".into(), shown: "/lib/modules/6.1.0-1-test".into(), index: index() };
        let frozen = Frozen::resolve(&survey, &target);
        assert_eq!(frozen.loaded.modules, ["btusb", "virtio_net"].map(String::from).into());
        assert_eq!(frozen.loaded.unmatched, ["out_of_tree"].map(String::from).into());
        assert_eq!(frozen.devices.modules, ["virtio_blk", "virtio_net", "virtio_pci"].map(String::from).into());
        assert_eq!(frozen.devices.inputs, 8);
        assert_eq!(frozen.devices.unmatched.len(), 2, "{:?}", frozen.devices.unmatched);
        assert_eq!(frozen.filesystems.modules, ["ext4", "vfat"].map(String::from).into());
        assert_eq!(frozen.block.modules, ["dm_crypt", "dm_mod", "raid1", "virtio_blk", "virtio_pci"].map(String::from).into());
        let lines = frozen.lines();
        assert_eq!(lines[0], "loaded now: 3 modules (1 not in 6.1.0-1-test, left out: out_of_tree)");
        assert_eq!(lines[1], "device modaliases: 8, matching 3 modules (2 match nothing, 1 unreadable, skipped): virtio_blk, virtio_net, virtio_pci");
        assert_eq!(lines[2], "filesystems: ext4, vfat");
        let block = format!("block devices of /, /usr and swap: dm_crypt, dm_mod, raid1, virtio_blk, virtio_pci (/ on 253:0; swap {}/gone: No such file", dir.path().display());
        assert!(lines[3].starts_with(&block), "{}", lines[3]);
        assert_eq!(frozen.reasons()["virtio_blk"], ["device", "block device"]);
    }

    #[test]
    fn a_swap_file_is_on_its_filesystem_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("swapfile");
        fs::write(&file, "").unwrap();
        let dev = fs::metadata(&file).unwrap().dev();
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let mounts = [Mount { device: (major, minor), target: "/".into(), fstype: "ext4".into(), source: "/dev/x".into() }];
        match major {
            0 => assert!(device_of(&file, false, &mounts).is_err(), "an anonymous device with a source that is no block device"),
            _ => assert_eq!(device_of(&file, false, &mounts), Ok((major, minor))),
        }
        assert!(device_of(&file, true, &mounts).unwrap_err().ends_with("is not a block device"));
    }

    fn reasons(names: &[(&str, &'static str)]) -> BTreeMap<String, Vec<&'static str>> {
        names.iter().map(|(n, w)| (n.to_string(), vec![*w])).collect()
    }

    #[test]
    fn a_new_baseline_is_sorted_and_reads_back() {
        let merged = merge(None, &reasons(&[("virtio_pci", "device"), ("ext4", "filesystem")]), "Frozen now.".into());
        let yaml = merged.draft.render();
        assert!(yaml.starts_with("# The vital set of this machine"), "{yaml}");
        assert!(yaml.contains("#\n# Frozen now.\nstatic:\n  - ext4  # filesystem\n  - virtio_pci  # device\n"), "{yaml}");
        let back = Declaration::parse(Path::new("b.yaml"), yaml.as_bytes(), Origin::Admin).unwrap();
        assert_eq!(back.statics.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(), ["ext4", "virtio_pci"]);
        assert_eq!(merged.new.len(), 2);
    }

    #[test]
    fn a_second_freeze_drops_nothing() {
        let text = "# My machine.\n# Frozen then.\nkernels: \"6.*\"\nstatic:\n  - ext4  # filesystem\n  - crc32c-intel\n  - \"pci:v00008086d*\"\nmodules: [btusb, btusb]\nfirmware: [\"iwlwifi-*.pnvm\"]\n";
        let old = Declaration::parse(Path::new("b.yaml"), text.as_bytes(), Origin::Admin).unwrap();
        let merged = merge(Some((&old, text)), &reasons(&[("ext4", "filesystem"), ("virtio_blk", "device")]), "Frozen now.".into());
        assert_eq!(merged.new, ["virtio_blk"].map(String::from).into());
        assert_eq!(merged.unseen, ["crc32c_intel", "pci:v00008086d*"].map(String::from).into());
        let yaml = merged.draft.render();
        assert!(yaml.starts_with("# My machine.\n# Frozen then.\n# Frozen now.\nkernels: \"6.*\"\n"), "{yaml}");
        assert!(yaml.contains("  - crc32c_intel  # kept: not seen by the last freeze\n"), "{yaml}");
        let back = Declaration::parse(Path::new("b.yaml"), yaml.as_bytes(), Origin::Admin).unwrap();
        let statics: Vec<&str> = back.statics.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(statics, ["crc32c_intel", "ext4", "pci:v00008086d*", "virtio_blk"]);
        assert_eq!(back.modules.len(), 2, "both references stay");
        assert_eq!(back.firmware[0].0.text, "iwlwifi-*.pnvm");
        assert_eq!(back.kernels.unwrap().text, "6.*");
    }

    #[test]
    fn an_image_is_refused_without_from_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let e = target(&root, None, false, "freeze").err().unwrap().to_string();
        assert!(e.contains("not the running system: freeze reads /proc and /sys") && e.contains("--from-host"), "{e}");
        let e = target(&root, None, true, "freeze").err().unwrap().to_string();
        assert!(e.ends_with("lib/modules: no module tree with a modules.dep; nothing to resolve names against"), "{e}");
        for kver in ["6.1.0-1-a", "6.1.0-2-b"] {
            write(&dir.path().join(format!("lib/modules/{kver}/modules.dep")), "kernel/a.ko:\n");
        }
        let e = target(&root, None, true, "freeze").err().unwrap().to_string();
        assert!(e.ends_with("holds several kernels (6.1.0-1-a, 6.1.0-2-b); choose one with --kernel"), "{e}");
        assert_eq!(target(&root, Some(&"6.1.0-2-b".into()), true, "freeze").unwrap().version.as_str(), "6.1.0-2-b");
        let e = target(&root, Some(&"6.9".into()), true, "freeze").err().unwrap().to_string();
        assert!(e.ends_with("lib/modules/6.9: no such module tree with a modules.dep"), "{e}");
    }
}
