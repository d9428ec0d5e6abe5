//! The devices of the running system, as udev sees them: each `modalias` file under
//! `/sys/devices`, with the device's path.

use std::path::Path;

use crate::fs::{limits, read_kernel_file};

/// At most this many `modalias` files are read: a big server has a few thousand devices.
const MAX_DEVICES: usize = 100_000;

/// `(devpath, modalias)` of every device under `sys/devices` that has a readable, non-empty
/// modalias, its path as udev's `DEVPATH` (`/devices/pci0000:00/0000:00:03.0`). Walked
/// without following links (sysfs links back up its own tree), sorted by path; files that
/// cannot be read are passed over.
pub fn modaliases(sys: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(sys.join("devices")).sort_by_file_name().max_depth(64).into_iter().flatten();
    for entry in walk {
        if found.len() >= MAX_DEVICES {
            break;
        }
        // sysfs attributes are regular files; anything else is not read (a FIFO would block).
        if entry.file_name() != "modalias" || !entry.file_type().is_file() {
            continue;
        }
        let Some(device) = entry.path().parent().and_then(|d| d.strip_prefix(sys).ok()) else { continue };
        let Some(devpath) = device.to_str().map(|d| format!("/{d}")) else { continue };
        match read_kernel_file(entry.path(), limits::CONFIG) {
            Ok(text) if !text.trim().is_empty() => found.push((devpath, text.trim().to_string())),
            _ => {}
        }
    }
    found
}

/// The longest device path taken: the kernel bounds its paths by `PATH_MAX`.
pub const MAX_DEVPATH: usize = 4096;

/// Whether `devpath` is one the kernel gives a device: under `/devices/`, printable ASCII,
/// no `.` or `..` part, at most 4096 bytes. Only such a path is ever handed to `udevadm`.
pub fn is_devpath(devpath: &str) -> bool {
    devpath.len() <= MAX_DEVPATH
        && devpath.starts_with("/devices/")
        && devpath.bytes().all(|b| b.is_ascii_graphic())
        && devpath.split('/').skip(1).all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modaliases_are_found_with_their_device() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let dev = sys.join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n").unwrap();
        std::fs::create_dir_all(sys.join("devices/platform/empty")).unwrap();
        std::fs::write(sys.join("devices/platform/empty/modalias"), "\n").unwrap();
        assert_eq!(
            modaliases(sys),
            [("/devices/pci0000:00/0000:00:03.0".to_string(), "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00".to_string())]
        );
    }

    #[test]
    fn only_kernel_devpaths_pass() {
        assert!(is_devpath("/devices/pci0000:00/0000:00:03.0"));
        assert!(is_devpath("/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0"));
        for bad in ["/etc/passwd", "/devices/../../etc", "/devices/a b", "/devices//x", "/devices/x/.", "devices/x", "/devices/x\n"] {
            assert!(!is_devpath(bad), "{bad:?}");
        }
    }
}
