//! The modules loaded in the running kernel, from `/proc/modules`. They and their closure are
//! always kept: pruning a loaded module's file would break the next modprobe of its users.

use std::path::Path;

use crate::error::{Error, Result};
use crate::name;

/// Names of the loaded modules, normalised. Each line reads
/// `name size refcount deps state address [taint]`; only the name matters here, so large use
/// counts, taint flags like `(OE)` and extra or missing trailing fields are all fine. A line
/// with no plausible name is an error: a run that cannot tell what is loaded keeps everything.
pub fn parse(path: &Path, text: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        let plausible = first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plausible || name::invalid_entry(first).is_some() {
            return Err(Error::syntax(
                path,
                n + 1,
                1,
                format!("`{}` is not a module name", first.escape_debug()),
            ));
        }
        names.push(name::normalize(first).into_owned());
    }
    Ok(names)
}

/// Read `/proc/modules` of the machine limopack runs on.
pub fn read_proc() -> Result<Vec<String>> {
    read(Path::new("/proc"))
}

/// Read `modules` under a procfs mounted at `proc` (`/proc`, or a copy of one in tests).
pub fn read(proc: &Path) -> Result<Vec<String>> {
    let path = proc.join("modules");
    match crate::fs::read_kernel_file(&path, crate::fs::limits::CONFIG) {
        Ok(text) => parse(&path, &text),
        // A kernel without module support has no /proc/modules: nothing is loaded.
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The release of the running kernel, which names its module tree.
pub fn running_kernel() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_but_valid_lines() {
        let text = "\
nvidia 56885248 1234 nvidia_modeset, Live 0xffffffffc1000000 (POE)
vboxdrv 696320 2 vboxnetadp,vboxnetflt, Live 0x0000000000000000 (OE)
ext4 1048576 1 - Live 0xffffffffc0800000
crc32c-intel 24576 1
loop
";
        assert_eq!(
            parse(Path::new("/proc/modules"), text).unwrap(),
            ["nvidia", "vboxdrv", "ext4", "crc32c_intel", "loop"]
        );
    }

    #[test]
    fn garbage_stops_the_run() {
        let e = parse(Path::new("/proc/modules"), "ext4 1 1 - Live 0x0\n../x 1 1\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/modules:2:1: `../x` is not a module name");
    }
}
