//! The effects of bringing a pruned driver back for a device: the admin declaration
//! `/etc/limopack/modules.d/hotplug.yaml` that keeps it, the lock that orders writers of it,
//! the restore queued outside udev's worker, the device's re-trigger and the journal line.
//!
//! No string from a device reaches a path or a command line here: what is queued is a module
//! name the kernel's own index gave ([`crate::name::invalid_entry`] checked again) and a
//! devpath the kernel gave ([`crate::read::sysfs::is_devpath`]).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::read::declaration::{self, Draft};
use crate::read::hotplug::QUEUE;
use crate::root::Root;

/// The admin declaration the restores write, in `/etc/limopack/modules.d`.
pub const DECLARATION: &str = "hotplug.yaml";

const HEADER: [&str; 3] = [
    "Drivers limopack brought back for devices that appeared after it pruned them",
    "(limopack-hook restore, or hotplug: restore). Each entry is kept like any other;",
    "remove one to let the next run prune that module again.",
];

/// Held while a restore edits the declaration and runs: restores queued for several devices
/// at once take turns, so that none loses another's entry.
pub struct HotplugLock {
    _file: File,
}

/// Take the restores' lock, waiting for another restore to finish.
pub fn lock(root: &Root) -> Result<HotplugLock> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = root.state_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("hotplug.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    if !file.metadata().map_err(|e| Error::io(&path, e))?.is_file() {
        return Err(Error::untrusted(&path, "is not a regular file; remove it, limopack makes it again"));
    }
    file.lock().map_err(|e| Error::io(&path, e))?;
    Ok(HotplugLock { _file: file })
}

/// The declaration as it was before [`declare`] changed it, to put back when the restore
/// fails.
#[derive(Debug)]
pub struct Before {
    pub path: PathBuf,
    text: Option<String>,
    changed: bool,
}

impl Before {
    /// Whether the declaration changed.
    pub fn changed(&self) -> bool {
        self.changed
    }
}

/// Add each `(module, comment)` not named yet to the declaration, one entry a module with
/// its comment (the device and the date); what it names already, and every comment in it,
/// stays as it is.
pub fn declare(root: &Root, modules: &[(String, String)]) -> Result<Before> {
    let existing = declaration::read_admin(root, DECLARATION)?;
    let path = root.inside(&root.resolve(crate::root::ADMIN_DIR)?.join(DECLARATION));
    let text = existing.as_ref().map(|(_, text)| text.clone());
    let mut draft = match &existing {
        Some((declared, text)) => {
            let mut draft = Draft::of(declared, text);
            let comments = comments(text);
            for (entry, why) in &mut draft.modules {
                *why = comments.iter().find(|(e, _)| e == entry).map(|(_, c)| c.clone());
            }
            draft
        }
        None => Draft { header: HEADER.iter().map(|l| l.to_string()).collect(), ..Draft::default() },
    };
    let named = |module: &str| draft.modules.iter().chain(&draft.statics).any(|(e, _)| crate::name::normalize(e) == crate::name::normalize(module));
    let new: Vec<(String, Option<String>)> = modules.iter().filter(|(m, _)| !named(m)).map(|(m, c)| (m.clone(), Some(c.clone()))).collect();
    if new.is_empty() {
        return Ok(Before { path, text, changed: false });
    }
    draft.modules.extend(new);
    std::fs::create_dir_all(root.resolve(crate::root::ADMIN_DIR)?).map_err(|e| Error::io(&path, e))?;
    crate::apply::store::write_admin(root, DECLARATION, &draft.render())?;
    Ok(Before { path, text, changed: true })
}

/// Put the declaration back as it was before [`declare`].
pub fn undo(root: &Root, before: &Before) -> Result<()> {
    if !before.changed {
        return Ok(());
    }
    match &before.text {
        Some(text) => crate::apply::store::write_admin(root, DECLARATION, text).map(|_| ()),
        None => crate::fs::remove_if_present(&root.resolve(crate::root::ADMIN_DIR)?.join(DECLARATION)),
    }
}

/// `(entry, comment)` of each `  - entry  # comment` line of a declaration's text.
fn comments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (entry, comment) = line.trim_start().strip_prefix("- ")?.split_once("  # ")?;
            let entry = serde_yaml::from_str::<String>(entry.trim()).ok()?;
            Some((entry, comment.trim().to_string()))
        })
        .collect()
}

/// The comment of a module's entry: the device it was brought back for, and the date.
pub fn comment(device: Option<&str>, now: std::time::SystemTime) -> String {
    let date = humantime::format_rfc3339_seconds(now).to_string();
    let day = date.get(..10).unwrap_or(&date);
    match device {
        Some(device) => format!("for {device}, {day}"),
        None => format!("restored by hand, {day}"),
    }
}

/// Queue `limopack-hook restore MODULE --device DEVPATH --trigger` outside udev's worker,
/// which kills a long `RUN` program. A mark under [`QUEUE`] (the module's name, holding the
/// devpath) says a restore of it is queued, so that a device that comes and goes queues one,
/// and a `.failed` mark that it failed (one try a boot); the restore that runs first takes
/// every mark there is by then. The restore is a transient systemd unit named after the
/// module, started with `--no-block`; without systemd, a process of its own session.
/// True when a restore was queued now.
pub fn queue(module: &str, devpath: &str) -> Result<bool> {
    if crate::name::invalid_entry(module).is_some() || !crate::read::sysfs::is_devpath(devpath) {
        return Ok(false);
    }
    let queue = Path::new(QUEUE);
    std::fs::create_dir_all(queue).map_err(|e| Error::io(queue, e))?;
    if queue.join(format!("{module}.failed")).exists() {
        return Ok(false);
    }
    let mark = queue.join(module);
    match File::options().write(true).create_new(true).open(&mark) {
        Ok(mut file) => writeln!(file, "{devpath}").map_err(|e| Error::io(&mark, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io(&mark, e)),
    }
    let started = start(module, devpath);
    if !matches!(started, Ok(true)) {
        let _ = std::fs::remove_file(&mark);
    }
    started
}

/// Start the restore of `module` for `devpath`, as [`queue`] says.
fn start(module: &str, devpath: &str) -> Result<bool> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), e))?;
    let args = ["restore", module, "--device", devpath, "--trigger"];
    if Path::new("/run/systemd/system").is_dir() {
        let unit = format!("limopack-restore-{module}");
        let status = Command::new("systemd-run")
            .args(["--no-block", "--quiet", "--unit", &unit, "--description", &format!("limopack: restore {module} for {devpath}")])
            .arg(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::io(Path::new("systemd-run"), e))?;
        return Ok(status.success());
    }
    use std::os::unix::process::CommandExt;
    Command::new(&exe)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(&exe, e))?;
    Ok(true)
}

/// Wait (30 s at most) for udev to finish the events queued now, so that the restore that
/// runs first takes the marks of every device that came up together.
pub fn settle() {
    let _ = Command::new("udevadm").args(["settle", "--timeout=30"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// `module`'s restore is done: its mark goes, and a device that asks for it again finds
/// it there.
pub fn done(module: &str) {
    if crate::name::invalid_entry(module).is_none() {
        let _ = std::fs::remove_file(Path::new(QUEUE).join(module));
    }
}

/// `module`'s restore failed: its mark becomes `.failed`, so that no device queues it
/// again this boot.
pub fn failed(module: &str) {
    if crate::name::invalid_entry(module).is_none() {
        let queue = Path::new(QUEUE);
        let _ = std::fs::rename(queue.join(module), queue.join(format!("{module}.failed")));
    }
}

/// Ask udev to add the device at `devpath` again, so that its driver, back now, binds
/// without a re-plug.
pub fn retrigger(devpath: &str) -> Result<()> {
    if !crate::read::sysfs::is_devpath(devpath) {
        return Err(Error::request(Path::new(devpath), "is no device path the kernel gives"));
    }
    let sys = format!("/sys{devpath}");
    let status = Command::new("udevadm")
        .args(["trigger", "--action=add", "--"])
        .arg(&sys)
        .status()
        .map_err(|e| Error::io(Path::new("udevadm"), e))?;
    match status.success() {
        true => Ok(()),
        false => Err(Error::command("udevadm", format!("trigger --action=add {sys} failed ({status})"))),
    }
}

/// One line to the system log (the journal), as `limopack`.
pub fn log(line: &str) {
    let text = crate::shown::escaped(line).replace('\0', " ");
    let Ok(text) = std::ffi::CString::new(text) else { return };
    // SAFETY: both strings are NUL-terminated and live across the calls; the format takes
    // exactly the one string argument given.
    unsafe {
        libc::openlog(c"limopack".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
        libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), text.as_ptr());
        libc::closelog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once_with_their_comments_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let before = declare(&root, &[("e1000".into(), "for /devices/pci0000:00/0000:00:03.0, 2026-12-03".into())]).unwrap();
        let path = dir.path().join("etc/limopack/modules.d/hotplug.yaml");
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("  - e1000  # for /devices/pci0000:00/0000:00:03.0, 2026-12-03\n"), "{first}");
        assert!(first.starts_with("# Drivers limopack brought back"), "{first}");
        let again = declare(&root, &[("e1000".into(), "later".into()), ("virtio-rng".into(), "restored by hand, 2026-12-04".into())]).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert!(second.contains("  - e1000  # for /devices/pci0000:00/0000:00:03.0, 2026-12-03\n"), "{second}");
        assert!(second.contains("  - virtio-rng  # restored by hand, 2026-12-04\n"), "{second}");
        assert!(!second.contains("later"));
        let parsed = crate::read::declaration::read_admin(&root, DECLARATION).unwrap().unwrap().0;
        assert_eq!(parsed.modules.len(), 2);
        undo(&root, &again).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        undo(&root, &before).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn the_comment_names_the_device_and_the_day() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_300_000);
        assert_eq!(comment(Some("/devices/x"), t), "for /devices/x, 2026-12-03");
        assert_eq!(comment(None, t), "restored by hand, 2026-12-03");
    }
}
