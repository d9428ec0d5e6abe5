//! The command line of `limopack-hook`, alone in its file so that `build.rs` can make the man
//! page and shell completions from the same definitions the binary parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum, ValueHint};

/// The end of `--help`, and the man page's sections after OPTIONS: build.rs turns each
/// `Heading:` line into a section, each indented `TERM  text` or TERM line followed by deeper
/// lines into an item, and other indented lines into paragraphs.
const AFTER_LONG_HELP: &str = "\
Restoring pruned modules:
  A kept module whose file was pruned earlier comes back from, in this order:
  limopack's archive, with `archive: true`; the owning package's .deb at the
  installed version in /var/cache/apt/archives; that .deb fetched with
  `apt-get download PACKAGE=VERSION` into a private temporary folder. Each
  restored file must match the md5sum dpkg recorded for it. When no source has
  it, the run prints the `apt-get install --reinstall PACKAGE` that brings it
  back, and `status` lists it as missing. Pruned firmware comes back the same
  way once a kept module asks for it again.

Safety:
  Only regular files inside /lib/modules/KVER that a configured module package
  owns are removed; the index files and the files no package owns (DKMS output,
  hand-built modules) stay. Any unreadable or invalid declaration,
  configuration or module index stops the run before anything is deleted.
  dpkg's database is never edited: `dpkg --verify` shows pruned files as
  missing, and `status` lists each with its package. One run at a time: a run
  waits for the lock. Firmware is pruned only with `firmware: prune`: regular
  files under /lib/firmware that a configured firmware package alone owns and
  that no kept module of any kernel and no declaration needs; CPU microcode
  never, and no firmware at all in a run that cannot be sure.

Hotplug:
  A device that appears after the prune may need a driver that was pruned. The
  udev rule /usr/lib/udev/rules.d/85-limopack.rules looks each added device's
  MODALIAS up in the running kernel's alias index from before the first prune
  (/var/lib/limopack/index/KVER.alias.bin, read in place, no lock, no process
  started) and, when it matches a module that modprobe no longer finds, acts
  on `hotplug:` in /etc/limopack/limopack.yaml. With `notify` (the default) it
  logs one line to the journal: `limopack: device DEVPATH (MODALIAS) needs
  MODULE, pruned from PACKAGE; run 'limopack-hook restore MODULE' or set
  hotplug: restore`. With `restore` it queues `limopack-hook restore` outside
  udev's worker (a transient systemd unit limopack-restore-MODULE started with
  --no-block), which brings the module back, declares it in
  /etc/limopack/modules.d/hotplug.yaml and re-triggers the device, so that it
  binds without a re-plug; a device that comes and goes restores once, and a
  restore that failed is not queued again until the next boot. The coldplug
  pass at boot does the same for the devices present; the restore that runs
  first waits for udev to settle and brings back the drivers of every device
  queued by then, in one run. A module that modprobe.d (or the kernel command
  line's modprobe.blacklist=) blacklists is never asked for, as udev would not
  load it. A config that cannot be read restores nothing: the device is logged
  as with `notify`, with the error. With `off`
  nothing is looked up. `status` lists the devices present now whose driver
  was pruned, with the command that brings each back.

Exit status:
  0   Success, including runs with warnings.
  1   An error, printed as `limopack: error: FILE:LINE:COLUMN: what is wrong`;
      the failing step deleted nothing. Under --called-by the status is 0 even
      then, so that a typo cannot wedge apt, dpkg or a kernel's install.
  2   A usage error: an unknown option or command, a missing argument, or an
      option the command would ignore (such as `forget --json`). Nothing was
      read or changed.

Files:
  /etc/limopack/limopack.yaml
      The configuration.
  /etc/limopack/modules.d/
      The admin's declarations.
  /usr/share/limopack/
      The packages' declarations.
  /var/lib/limopack/state.json
      The static modules seen so far and, per kernel, the last reference counts
      and the pruned files with their packages; the pruned firmware.
  /var/lib/limopack/index/
      Each kernel's module index from before its first prune.
  /etc/limopack/modules.d/hotplug.yaml
      The modules `restore` brought back, one entry each, with the device and
      the date.
  /usr/lib/udev/rules.d/85-limopack.rules
      The udev rule of `hotplug:`.
  /var/lib/limopack/archive/
      Compressed copies of pruned files, with `archive: true`.
  /var/lib/limopack/lock
      The lock that runs wait on.
  /etc/apt/apt.conf.d/80limopack
      The apt hook.
  /etc/kernel/postinst.d/dkms-limopack
      The kernel hook. It runs after dkms and before dracut and
      initramfs-tools, so the initramfs is built from the pruned tree.
  /usr/lib/kernel/install.d/45-limopack.install
      The same for kernel-install(8): it runs before 50-dracut.install.

Examples:
  limopack-hook --dry-run
      Show what a run would do.
  limopack-hook status
      Show what is kept, pruned and missing.
  limopack-hook explain btusb
      Say why btusb stays, or why it does not.
  limopack-hook check debian/mypackage.limopack
      Check a declaration before it ships.
  limopack-hook --root /srv/image
      Prune an image before it is packed.

See also:
  limopack.yaml(5), dh_limopack(1), depmod(8), modprobe(8), dpkg-trigger(1),
  apt.conf(5), update-initramfs(8), dracut(8), kernel-install(8)
";

/// Keep each kernel's module tree down to the modules installed packages declare.
///
/// With no command, plan every kernel and carry the plan out. The keep set is the static
/// modules, the modules that declarations reference and, for the running kernel, the loaded
/// ones, closed over everything modprobe(8) would load with them. The module packages' other
/// files are pruned, kept modules whose files are missing are restored, depmod(8) runs and,
/// when configured, the initramfs is refreshed. Nothing is deleted until `prune: true` is set
/// in /etc/limopack/limopack.yaml, and never in a kernel with no static modules.
///
/// Nobody needs to run it by hand. apt runs it after every dpkg run (DPkg::Post-Invoke in
/// /etc/apt/apt.conf.d/80limopack), dpkg through file triggers on /lib/modules,
/// /usr/lib/modules and /usr/share/limopack, and a new kernel through
/// /etc/kernel/postinst.d/dkms-limopack or kernel-install's 45-limopack.install.
///
/// Packages declare what they need in /usr/share/limopack/PACKAGE.yaml, the admin in
/// /etc/limopack/modules.d/*.yaml; a file there masks the package's file of the same name. The
/// format of both, and of the configuration, is in limopack.yaml(5).
#[derive(Parser)]
#[command(name = "limopack-hook", version, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print the plan and change nothing.
    ///
    /// No lock is taken, nothing is deleted, depmod does not write the tree's index and no
    /// state is written.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Work on the system under DIR (an image) instead of the running one.
    ///
    /// dpkg's database, the configuration, the declarations and the state are read under DIR,
    /// depmod runs with -b DIR, and the host's loaded modules are not consulted.
    #[arg(long, global = true, value_name = "DIR", default_value = "/", value_hint = ValueHint::DirPath)]
    pub root: PathBuf,

    /// Only this kernel version.
    #[arg(long, global = true, value_name = "KVER", value_parser = crate::kernel_version)]
    pub kernel: Option<crate::Kver>,

    /// Wait at most SECONDS for another run to finish before giving up, saying which
    /// process holds the lock.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::DEFAULT_WAIT)]
    pub wait: u64,

    /// Print JSON (`"schema": 1`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print warnings and errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also list each file: what a run prunes, and with status why each module is kept.
    ///
    /// A run or a dry run lists every file it prunes (or would prune) with its package and
    /// size. `status` lists every pruned file instead of a count per package, and why each
    /// module and firmware file is kept; `check` names each file that passed. The other
    /// commands refuse it.
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
    /// /etc/kernel/postinst.d or kernel-install, for a newly installed kernel: initramfs-tools
    /// or dracut builds its initramfs right after, so limopack does not refresh it.
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
        #[arg(required = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
        files: Vec<PathBuf>,
    },
    /// Record this machine's vital set as the admin declaration
    /// /etc/limopack/modules.d/baseline.yaml, every entry static: the modules loaded now, the
    /// drivers of every device (each modalias under /sys/devices), the modules of every
    /// mounted filesystem, and the drivers of the block devices under /, /usr and swap. A
    /// later freeze merges with the file and drops nothing; with --dry-run, print it.
    Freeze {
        /// With --root, use this machine's /proc and /sys (its devices, mounts and loaded
        /// modules) against the image's kernel. Without it, freeze refuses an image.
        #[arg(long)]
        from_host: bool,
    },
    /// Take static entries back: they are kept for good once seen, even after the file that
    /// named them is gone. Each NAME is an entry as it was declared (a name, an alias or a
    /// glob); with --kernel, only for that kernel. Refused while a declaration still names it
    /// static; declaring it again undoes the forget. Says what the next run prunes as a result.
    Forget {
        /// Static entries, as `explain` and `status -v` show them.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Bring back a pruned module for a device, and keep it: MODULE (a name or alias), or
    /// every module whose alias matches a device's modalias in the kernel's index from before
    /// the first prune (as modprobe would resolve it on the unpruned tree), of the running kernel or
    /// --kernel.
    ///
    /// Only modules of the kernel's own packaged tree can come back. Each is declared in
    /// /etc/limopack/modules.d/hotplug.yaml (one entry per module, with the device and the
    /// date as a comment), then a run restores it with what it needs from the archive,
    /// apt's cache or `apt-get download`, and runs depmod. When it cannot be brought back,
    /// the declaration is left as it was. `hotplug: restore` runs this for each device that
    /// appears. With --dry-run, say what would come back.
    Restore {
        /// A module name or alias, as modprobe takes it.
        #[arg(required_unless_present = "modalias", conflicts_with = "modalias")]
        module: Option<String>,
        /// A device's modalias, as in /sys/devices/.../modalias: only ever a key for the lookup.
        #[arg(long, value_name = "STRING")]
        modalias: Option<String>,
        /// The device it is for, by its path under /sys (udev's DEVPATH), for the comment.
        #[arg(long, value_name = "DEVPATH", hide = true)]
        device: Option<String>,
        /// Re-trigger the device (`udevadm trigger --action=add`) once its driver is back.
        #[arg(long, requires = "device", hide = true)]
        trigger: bool,
    },
    /// The lookup the udev rule runs for a device that appears (MODALIAS and DEVPATH from its
    /// environment); see HOTPLUG.
    #[command(hide = true)]
    Udev,
    /// Turn the original limopack's modules.active (`NAME:S`, `NAME:COUNT` lines) into the
    /// admin declaration /etc/limopack/modules.d/imported-active.yaml; with --dry-run, print it.
    ///
    /// `S` entries become `static:`, counted ones `modules:`. An earlier import is never
    /// replaced.
    ImportActive {
        /// A modules.active file, such as /lib/modules/KVER/modules.active.
        #[arg(value_hint = ValueHint::FilePath)]
        file: PathBuf,
    },
}
