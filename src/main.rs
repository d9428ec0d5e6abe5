//! The one program of the package, under two names, as busybox and kmod's tools are: run
//! as `limopack-hook`, it is the command apt, dpkg and admins run; run as `limopack` (a link
//! to it), the original limopack's command line. Each parses its arguments and calls the
//! library, where the work is.

use std::path::Path;
use std::process::ExitCode;

use limopack::kver::Kver;

mod cli {
    pub mod hook;
    pub mod limopack;
}

mod cmd {
    pub mod hook;
    pub mod limopack;
}

/// `--wait`'s default, the library's.
const DEFAULT_WAIT: u64 = limopack::run::LOCK_WAIT.as_secs();

/// A kernel version given on the command line, checked as one read from disk is.
fn kernel_version(text: &str) -> Result<Kver, String> {
    Kver::new(text)
}

fn main() -> ExitCode {
    let invoked = std::env::args_os().next().unwrap_or_default();
    match Path::new(&invoked).file_name().and_then(|n| n.to_str()) {
        Some("limopack") => cmd::limopack::main(),
        _ => cmd::hook::main(),
    }
}
