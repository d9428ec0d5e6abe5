//! The command line of `limopack-hook`, alone in its file so that `build.rs` can make the man
//! page and shell completions from the same definitions the binary parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Keep each kernel's module tree down to the modules installed packages declare.
///
/// With no command, plan every kernel and carry the plan out: prune the module packages'
/// files that nothing needs, then run depmod. Nothing is deleted until `prune: true` is set
/// in /etc/limopack/limopack.yaml, and never in a kernel with no static modules.
#[derive(Parser)]
#[command(name = "limopack-hook", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print the plan and change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Work on the system under DIR (an image) instead of the running one.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Only this kernel version.
    #[arg(long, global = true, value_name = "KVER")]
    pub kernel: Option<String>,

    /// Print JSON (`"schema": 1`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print warnings and errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print each file pruned and why each module is kept.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Set by limopack's own hooks. Errors are printed and the exit status is still 0, so
    /// that a bad declaration is loud but never fails apt, dpkg or a kernel's install; a run
    /// that changed nothing prints only warnings.
    #[arg(long, value_enum, value_name = "HOOK")]
    pub called_by: Option<Hook>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Hook {
    /// apt's `DPkg::Post-Invoke`, after each transaction.
    Apt,
    /// dpkg's file triggers and limopack's own configure.
    Dpkg,
    /// /etc/kernel/postinst.d, for a newly installed kernel: initramfs-tools builds its
    /// initramfs right after, so limopack does not refresh it.
    Kernel,
}

#[derive(Subcommand)]
pub enum Command {
    /// Why a module is kept, naming the chain back to the declarations, or why it is not.
    Explain {
        /// A module name or alias, as modprobe takes it.
        module: String,
    },
    /// Per kernel: what is kept, what was pruned and which package owned it, warnings.
    Status,
    /// Check declarations as a run would read them, printing `FILE:LINE:COLUMN: message` for
    /// each problem; with --kernel or --root, each entry must also resolve to a module or a
    /// built-in of that kernel (of every kernel under --root without --kernel).
    Check {
        /// Declaration files, such as debian/PACKAGE.limopack.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Record this machine's vital set as the admin declaration
    /// /etc/limopack/modules.d/baseline.yaml, every entry static: the modules loaded now, the
    /// drivers of every device (each modalias under /sys/devices), the modules of every
    /// mounted filesystem, and the drivers of the block devices under /, /usr and swap. A
    /// later freeze merges with the file and drops nothing; with --dry-run, print it.
    Freeze {
        /// Under --root: use this machine's /proc and /sys (its devices, mounts and loaded
        /// modules) against the image's kernel. Without it, freeze refuses an image.
        #[arg(long)]
        from_host: bool,
    },
    /// Turn the original limopack's modules.active (`NAME:S`, `NAME:COUNT` lines) into the
    /// admin declaration /etc/limopack/modules.d/imported-active.yaml; with --dry-run, print it.
    ImportActive {
        /// A modules.active file, such as /lib/modules/KVER/modules.active.
        file: PathBuf,
    },
}
