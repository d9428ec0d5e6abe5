//! `limopack-hook check`: a packager's declaration checked the way a run would read it, for a
//! package's CI or a lintian-like test, without installing anything. Against a kernel, every
//! entry must also resolve to a module or a built-in of that kernel.

use std::path::{Path, PathBuf};

use crate::read::declaration::{Declaration, Entry, Origin};
use crate::error::{Error, Result};
use crate::read::index::ModuleIndex;
use crate::kver::Kver;
use crate::root::{Root, ADMIN_DIR, VENDOR_DIR};
use crate::read::trust::{self, Trusted};
use crate::read::tree;

/// One thing wrong, at `path:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            // A problem of the whole file (missing, unreadable, refused) has no place in it.
            0 => write!(f, "{}: {}", self.path.display(), self.message),
            line => write!(f, "{}:{line}:{}: {}", self.path.display(), self.column, self.message),
        }
    }
}

/// The module index of one kernel to resolve entries against.
pub struct Kernel {
    pub version: Kver,
    index: ModuleIndex,
}

/// The kernels of `root`, or only `version`; each tree's index as depmod wrote it.
pub fn kernels(root: &Path, version: Option<&Kver>) -> Result<Vec<Kernel>> {
    let root = Root::new(root)?;
    let mut notes = Vec::new();
    let mut kernels = Vec::new();
    for tree in tree::discover(&root, &mut notes)? {
        if version.is_some_and(|v| *v != tree.version) {
            continue;
        }
        if !tree.path.join("modules.dep").exists() {
            continue;
        }
        // The index the run plans with: after a prune, the pruned modules are still named.
        kernels.push(Kernel { index: crate::run::kernel_index(&root, &tree)?, version: tree.version });
    }
    match (version, kernels.is_empty()) {
        (Some(v), true) => Err(Error::missing(root.resolve("/lib/modules")?.join(v), "no such module tree with a modules.dep")),
        (None, true) => Err(Error::missing(root.resolve("/lib/modules")?, "no module tree with a modules.dep")),
        _ => Ok(kernels),
    }
}

/// Check each file: every problem of it as a run would find them (a file in the root's
/// declaration folders also with the run's checks of owner, mode and links), and that each
/// of its entries resolves in each of `kernels` its `kernels:` glob applies to.
pub fn check(root: &Root, files: &[PathBuf], kernels: &[Kernel]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for path in files {
        let read = read(root, path).map(|bytes| Declaration::read(path, &bytes, Origin::Vendor));
        let declaration = match read {
            Ok((declaration, found)) => {
                problems.extend(found.into_iter().map(|e| Problem::of(path, e)));
                declaration
            }
            Err(e) => {
                problems.push(Problem::of(path, e));
                None
            }
        };
        let Some(declaration) = declaration else { continue };
        for kernel in kernels.iter().filter(|k| declaration.applies_to(&k.version)) {
            for entry in declaration.modules.iter().chain(&declaration.statics) {
                if !resolves(&kernel.index, entry) {
                    problems.push(Problem {
                        path: path.clone(),
                        line: entry.line,
                        column: entry.column,
                        message: format!("`{}` matches no module or built-in of {}", entry.text, kernel.version),
                    });
                }
            }
        }
    }
    problems
}

/// The bytes of the declaration at `path`: through the run's trust checks when it is one
/// of the root's declaration folders, else as any file limopack reads (a packager's
/// `debian/PACKAGE.limopack`, which the package installs with its own mode and owner).
fn read(root: &Root, path: &Path) -> Result<Vec<u8>> {
    let folder = path.parent().and_then(|p| std::fs::canonicalize(if p.as_os_str().is_empty() { Path::new(".") } else { p }).ok());
    let installed = [VENDOR_DIR, ADMIN_DIR].iter().any(|dir| root.resolve(dir).ok().is_some_and(|d| Some(d) == folder));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match (installed, &folder) {
        (true, Some(folder)) => match trust::read(root, folder, &name)? {
            Trusted::Bytes(bytes) => Ok(bytes),
            Trusted::Masked => Ok(Vec::new()),
        },
        _ => crate::fs::read(path, crate::fs::limits::DECLARATION),
    }
}

impl Problem {
    /// `error` of the file at `path` as a problem: at its place, when it has one.
    fn of(path: &Path, error: Error) -> Problem {
        match error {
            Error::Syntax { path, line, column, message } => Problem { path, line, column, message },
            other => {
                let text = other.to_string();
                let message = text.strip_prefix(&format!("{}: ", path.display())).unwrap_or(&text).to_string();
                Problem { path: path.to_path_buf(), line: 0, column: 0, message }
            }
        }
    }
}

fn resolves(index: &ModuleIndex, entry: &Entry) -> bool {
    let (ids, builtin) = entry.resolve(index);
    !ids.is_empty() || builtin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::index::Sources;

    fn kernel() -> Kernel {
        let sources = Sources {
            dep: Some(("modules.dep".into(), "kernel/fs/btrfs/btrfs.ko:\nkernel/drivers/bluetooth/btusb.ko:\n".into())),
            alias: Some(("modules.alias".into(), "alias fs-btrfs btrfs\n".into())),
            builtin: Some(("modules.builtin".into(), "kernel/fs/ext4/ext4.ko\n".into())),
            ..Sources::default()
        };
        Kernel { version: "6.1.0-1-amd64".into(), index: ModuleIndex::parse(sources).unwrap() }
    }

    fn problems(text: &str, kernels: &[Kernel]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg.yaml");
        std::fs::write(&path, text).unwrap();
        check(&Root::new(dir.path()).unwrap(), std::slice::from_ref(&path), kernels)
            .iter()
            .map(|p| p.to_string().replace(&path.display().to_string(), "pkg.yaml"))
            .collect()
    }

    #[test]
    fn schema_errors_are_placed() {
        assert_eq!(problems("modules: [btusb]\nmodlues: [x]\n", &[]), ["pkg.yaml:2:1: unknown field `modlues`, expected one of `modules`, `static`, `kernels`, `firmware`"]);
        assert_eq!(problems("modules: [btusb]\n", &[]), Vec::<String>::new());
    }

    #[test]
    fn entries_must_resolve_in_the_kernel() {
        let k = [kernel()];
        assert_eq!(problems("modules:\n  - btusb\n  - fs-btrfs\n  - bt*\nstatic: [ext4]\n", &k), Vec::<String>::new());
        assert_eq!(
            problems("modules:\n  - btusb\n  - no-such_mod\n", &k),
            ["pkg.yaml:3:5: `no_such_mod` matches no module or built-in of 6.1.0-1-amd64"]
        );
        assert_eq!(problems("modules: [nothing]\nkernels: \"5.*\"\n", &k), Vec::<String>::new(), "the kernel is not one the file applies to");
    }
}
