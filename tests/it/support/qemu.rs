//! Booting a disk image in QEMU under TCG (no KVM on the test machines) with its kernel and
//! initramfs given directly, the serial console captured, and the whole boot bounded in time.
//!
//! External tools used: qemu-system-x86_64 (Debian package qemu-system-x86).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
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

/// Boots `image` as a virtio disk, with a virtio network card on QEMU's user network, from
/// `kernel` and `initrd` with the kernel command line `append`. QEMU is killed once `limit`
/// has passed. The guest should power itself off; `-no-reboot` turns a reboot or a panic
/// (with `panic=-1` on the command line) into QEMU's exit as well.
pub fn boot(qemu: &Path, kernel: &Path, initrd: &Path, image: &Path, append: &str, limit: Duration) -> Boot {
    let started = Instant::now();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-m", "1024", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .args(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", qemu.display()));
    // The pipe reaches its end when QEMU exits or is killed: the child held the only writers.
    let console = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Boot { console: console.join().unwrap(), status, took: started.elapsed() }
}
