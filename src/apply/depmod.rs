//! depmod: the index of a tree, rebuilt after its files change, and what depmod would write
//! for it (`depmod -n`) when the index on disk cannot be trusted. Under `--root`, depmod
//! works on the image's tree with the image's configuration, never the host's.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::read::index::Sources;
use crate::read::tree::Tree;
use crate::root::Root;

/// Run depmod for one kernel, in place.
pub fn depmod(root: &Root, tree: &Tree) -> Result<()> {
    run_depmod(root, tree, false).map(drop)
}

/// What depmod would write for one kernel, without writing it (`depmod -n`).
pub fn depmod_dry(root: &Root, tree: &Tree) -> Result<Sources> {
    let out = run_depmod(root, tree, true)?;
    Sources::from_depmod_output(out.into(), Path::new("depmod -n"), &tree.path)
}

/// The folders depmod reads its configuration from, in its order of precedence.
const DEPMOD_CONFIG: [&str; 5] = ["/etc/depmod.d", "/run/depmod.d", "/usr/local/lib/depmod.d", "/usr/lib/depmod.d", "/lib/depmod.d"];

fn run_depmod(root: &Root, tree: &Tree, dry: bool) -> Result<String> {
    let mut command = Command::new("depmod");
    if dry {
        command.arg("-n");
    }
    // Held while depmod runs: the base it is given under --root.
    let _base = match root.is_host() {
        true => None,
        false => Some(image_base(root, tree, &mut command)?),
    };
    // The version is checked to be a plain name, and `--` ends the options whatever it is.
    let output = command
        .arg("--")
        .arg(tree.version.as_str())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::command("depmod", "not found; install kmod so that limopack can refresh module indexes")
            }
            _ => Error::command("depmod", crate::error::plain(&e)),
        })?;
    if !output.status.success() {
        return Err(Error::command(
            "depmod",
            format!("{}: failed ({}): {}", tree.version, output.status, crate::shown::escaped(String::from_utf8_lossy(&output.stderr).trim())),
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| Error::command("depmod", "printed something that is not UTF-8"))
}

/// A base folder for depmod to work on an image's tree. `depmod -b DIR` reads the tree at
/// `DIR/lib/modules/KVER` (or `DIR/usr/lib/modules/KVER`, as kmod 34 may be built) on this
/// machine, where an image's absolute `lib -> /usr/lib` leads to the host's; and it reads
/// the host's `/etc/depmod.d`. So depmod is given a private base whose module folders are
/// links to the tree as the image resolves it, and with `-C`, the image's own configuration
/// folders, resolved the same way (and an empty one, so that none of the host's is read).
fn image_base(root: &Root, tree: &Tree, command: &mut Command) -> Result<tempfile::TempDir> {
    let base = tempfile::Builder::new().prefix("limopack-depmod.").tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let made = |e: std::io::Error| Error::io(base.path(), e);
    for modules in ["lib/modules", "usr/lib/modules"] {
        let dir = base.path().join(modules);
        std::fs::create_dir_all(&dir).map_err(made)?;
        std::os::unix::fs::symlink(&tree.path, dir.join(tree.version.as_str())).map_err(made)?;
    }
    let empty = base.path().join("depmod.d");
    std::fs::create_dir(&empty).map_err(made)?;
    command.arg("-b").arg(base.path()).arg("-C").arg(&empty);
    for dir in DEPMOD_CONFIG {
        let real = root.resolve(dir)?;
        if real.is_dir() {
            command.arg("-C").arg(real);
        }
    }
    Ok(base)
}

