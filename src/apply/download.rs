//! The last source of a restore: the package's `.deb`, fetched from the archive by apt.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Fetch exactly `package` at `version` into `dir` with `apt-get download`, and return the
/// `.deb`. This needs no lock that apt holds during `DPkg::Post-Invoke` or dpkg during a
/// trigger. apt checks the package against the signed archive index as it downloads.
pub fn download(package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    let output = Command::new("apt-get")
        // The folder is root's private temporary one, which apt's sandbox user cannot write.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("{package}={version}"))
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::command("apt-get", crate::error::plain(&e)))?;
    if !output.status.success() {
        return Err(Error::command(
            "apt-get",
            format!("download {package}={version} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        ));
    }
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in read {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(path);
        }
    }
    Err(Error::command("apt-get", format!("download {package}={version} left no .deb")))
}
