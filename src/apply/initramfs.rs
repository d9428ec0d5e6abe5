//! Refreshing a kernel's initramfs after its module tree changed, so that the next boot
//! neither carries modules that were pruned nor misses ones that came back. initramfs-tools
//! is what Debian installs by default; with another generator the admin refreshes it.

use std::process::Command;

use crate::read::config::Initramfs;
use crate::error::{Error, Result};
use crate::kver::Kver;
use crate::root::Root;

const UPDATE_INITRAMFS: &str = "/usr/sbin/update-initramfs";

/// Refresh the initramfs of `version` as `policy` says. Returns what was done or why not,
/// for the run's report; `None` when the policy asks for nothing.
pub fn refresh(root: &Root, policy: Initramfs, version: &Kver) -> Result<Option<String>> {
    if policy == Initramfs::Never {
        return Ok(None);
    }
    let image = format!("/boot/initrd.img-{version}");
    let exists = root.resolve(&image)?.exists();
    let installed = root.resolve(UPDATE_INITRAMFS)?.exists();
    if !root.is_host() {
        // update-initramfs works on the running system; an image gets its own run inside it.
        return Ok((exists || policy == Initramfs::Always)
            .then(|| format!("{image} not refreshed under --root: run `update-initramfs -u -k {version}` in the image")));
    }
    if !installed {
        return match policy {
            Initramfs::Always => Err(Error::command(
                "update-initramfs",
                "not found, and the config says `initramfs: always`; install initramfs-tools or set `initramfs: auto`",
            )),
            _ => Ok(None),
        };
    }
    if !exists && policy == Initramfs::Auto {
        return Ok(None);
    }
    let mode = if exists { "-u" } else { "-c" };
    let output = Command::new(UPDATE_INITRAMFS)
        .args([mode, "-k", version.as_str()])
        .output()
        .map_err(|e| Error::command("update-initramfs", crate::error::plain(&e)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::command(
            "update-initramfs",
            format!("{mode} -k {version} failed ({}): {}", output.status, crate::shown::escaped(stderr.trim())),
        ));
    }
    Ok(Some(format!("refreshed {image}")))
}
