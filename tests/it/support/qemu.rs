//! Booting a disk image in QEMU under TCG (no KVM on the test machines) with its kernel and
//! initramfs given directly, the serial console captured, and the whole boot bounded in time.
//! A boot can have more devices, and can hot-add one through QEMU's monitor once the guest
//! says it is ready.
//!
//! External tools used: qemu-system-x86_64 (Debian package qemu-system-x86).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// Where `qemu-system-x86_64` is on `PATH`, if it is installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(QEMU)).find(|p| p.is_file())
}

/// One boot: what the serial console printed, and how it ended.
pub struct Boot {
    /// The console output (kernel, initramfs and init), carriage returns removed, with what
    /// QEMU itself wrote to stderr after it.
    pub console: String,
    /// QEMU's exit status; None when it was killed at the time limit.
    pub status: Option<ExitStatus>,
    pub took: Duration,
}

/// What a boot has beyond its disk and network card.
#[derive(Default)]
pub struct Extras<'a> {
    /// More `-device` arguments, present from power-on.
    pub devices: &'a [&'a str],
    /// The guest's writes go to a temporary overlay, and the image stays as it was.
    pub snapshot: bool,
    /// `(said, command)`: once the console has printed `said`, `command` goes to QEMU's
    /// human monitor, as an admin types `device_add …` at it; each once.
    pub on_console: &'a [(&'a str, &'a str)],
}

/// Boots `image` as a virtio disk, with a virtio network card on QEMU's user network, from
/// `kernel` and `initrd` with the kernel command line `append`. QEMU is killed once `limit`
/// has passed. The guest should power itself off; `-no-reboot` turns a reboot or a panic
/// (with `panic=-1` on the command line) into QEMU's exit as well.
pub fn boot(qemu: &Path, kernel: &Path, initrd: &Path, image: &Path, append: &str, limit: Duration) -> Boot {
    boot_with(qemu, kernel, initrd, image, append, limit, &Extras::default())
}

/// [`boot`] with `extras`.
pub fn boot_with(qemu: &Path, kernel: &Path, initrd: &Path, image: &Path, append: &str, limit: Duration, extras: &Extras) -> Boot {
    let started = Instant::now();
    let monitor = image.with_extension("monitor");
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-m", "1024", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .args(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]);
    for device in extras.devices {
        cmd.args(["-device", device]);
    }
    if extras.snapshot {
        cmd.arg("-snapshot");
    }
    if !extras.on_console.is_empty() {
        cmd.arg("-monitor").arg(format!("unix:{},server=on,wait=off", monitor.display()));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", qemu.display()));
    // The pipe reaches its end when QEMU exits or is killed, once the child holds the only
    // writers: the command's copies go now.
    drop(cmd);
    let console = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&console);
    let copier = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut chunk) {
            shared.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let mut pending: Vec<&(&str, &str)> = extras.on_console.iter().collect();
    let mut connection = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        let said = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
        pending.retain(|(cue, command)| {
            if !said.contains(cue) {
                return true;
            }
            let stream = connection.get_or_insert_with(|| UnixStream::connect(&monitor).unwrap_or_else(|e| panic!("QEMU's monitor {}: {e}", monitor.display())));
            writeln!(stream, "{command}").unwrap();
            false
        });
        std::thread::sleep(Duration::from_millis(100));
    };
    copier.join().unwrap();
    let console = String::from_utf8_lossy(&console.lock().unwrap()).replace('\r', "");
    let _ = std::fs::remove_file(&monitor);
    Boot { console, status, took: started.elapsed() }
}
