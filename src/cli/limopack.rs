//! The command line of `limopack`, the original limopack's flags mapped onto declarations,
//! alone in its file so that `build.rs` can make the man page from the same definitions the
//! binary parses.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// The original limopack's command line, kept for the scripts and habits that use it. Each
/// command is mapped onto declarations and says what it did in the new model.
///
/// `--use=NAMES --install` adds one reference to each module in
/// /etc/limopack/modules.d/local.yaml (one line under `modules:` per reference), `--remove`
/// takes one away, and `--static` records the modules as static, kept for good. The next
/// `limopack-hook` run, which apt makes after every transaction, keeps what the references
/// name. Packages should rather ship /usr/share/limopack/PACKAGE.yaml.
#[derive(Parser)]
#[command(
    name = "limopack",
    version,
    group(ArgGroup::new("action").required(true).args(["list", "tree", "install", "remove", "apply"])),
)]
pub struct Cli {
    /// Print the loaded modules as paths relative to /lib/modules/KVER/.
    #[arg(long)]
    pub list: bool,

    /// Print each loaded module with what modprobe loads with it, as a tree.
    #[arg(long)]
    pub tree: bool,

    /// Modules to add or take away a reference to, comma-separated: names or aliases, as
    /// modprobe takes them.
    #[arg(long = "use", value_name = "MODULES", value_delimiter = ',')]
    pub modules: Vec<String>,

    /// Add a reference to each --use module. Without --use, record the loaded modules, and
    /// the drivers of this machine's devices and filesystems, as static: `limopack-hook
    /// freeze`.
    #[arg(short, long)]
    pub install: bool,

    /// Take one reference away from each --use module. Static modules are skipped, with a
    /// warning.
    #[arg(short, long, requires = "modules")]
    pub remove: bool,

    /// With --install --use: record the modules as static, kept for good.
    // `requires = "install"` would pass whenever any action of the group is given.
    #[arg(short, long, conflicts_with_all = ["list", "tree", "remove", "apply"])]
    pub r#static: bool,

    /// Prune what no declaration needs: a `limopack-hook` run. Nothing is deleted until
    /// `prune: true` is set in /etc/limopack/limopack.yaml.
    #[arg(long)]
    pub apply: bool,

    /// With --apply: prune only the files of this module package. Unlike the original,
    /// dpkg's database is never edited: the package stays installed.
    #[arg(long, value_name = "PACKAGE", conflicts_with_all = ["list", "tree", "install", "remove"])]
    pub pkname: Option<String>,

    /// Work on the system under DIR (an image) instead of the running one.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// The kernel version to work on (by default the running one, or the image's only one).
    #[arg(long, value_name = "KVER", value_parser = crate::kernel_version)]
    pub kernel: Option<crate::Kver>,

    /// Under --root, for --list, --tree and --install without --use: use this machine's
    /// /proc and /sys (its loaded modules and devices) against the image's kernel.
    #[arg(long)]
    pub from_host: bool,
}
