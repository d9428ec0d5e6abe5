//! What a run prints, by how much it is asked to say: a summary per kernel and what was done,
//! each pruned file with `-v`, the firmware's line, and the warnings. Quiet under apt and
//! dpkg unless the run changed something.

use crate::apply::{Done, FirmwareDone};
use crate::plan::Plan;
use crate::read::state::State;
use crate::root::CONFIG_FILE;

use super::{changed, done_lines, firmware_lines, size, summary, warnings};

/// How much a run says.
pub struct Telling {
    pub dry_run: bool,
    /// `--quiet`: only warnings and errors.
    pub quiet: bool,
    /// `-v`: every file pruned, or that would be.
    pub verbose: bool,
    /// Run by apt, dpkg or a kernel hook: a kernel is summed up only when it changed.
    pub called: bool,
}

/// What a run prints: lines for standard output, warnings for standard error.
#[derive(Debug, Default)]
pub struct Printed {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// What a run that planned, and unless dry carried the plan out, prints.
pub fn run(plan: &Plan, done: &[Done], firmware: &FirmwareDone, state: &State, telling: &Telling) -> Printed {
    let mut printed = Printed { warnings: warnings(plan, state, done), ..Printed::default() };
    let verb = if telling.dry_run { "would prune" } else { "pruned" };
    let listed = |path: &str, package: &str, bytes: u64| format!("  {verb} {path} ({package}, {})", size(bytes));
    for k in &plan.kernels {
        let done = done.iter().find(|d| d.version == k.version);
        if !(telling.quiet || (telling.called && !changed(done))) {
            printed.lines.push(summary(k, done, telling.dry_run, CONFIG_FILE));
            printed.lines.extend(done.map(done_lines).unwrap_or_default());
        }
        if telling.verbose {
            printed.lines.extend(k.prune.iter().map(|f| listed(&f.path, &f.package, f.size)));
        }
        for skipped in done.map(|d| d.files.skipped.as_slice()).unwrap_or_default() {
            printed.warnings.push(format!("{}: {skipped} was no longer a regular file; left alone", k.version));
        }
    }
    let firmware_done = (!telling.dry_run).then_some(firmware);
    if !telling.quiet && (!telling.called || firmware.changed() || !firmware.not_restored.is_empty()) {
        printed.lines.extend(firmware_lines(&plan.firmware, firmware_done, telling.dry_run));
    }
    if telling.verbose {
        printed.lines.extend(plan.firmware.prune.iter().map(|f| listed(&f.path, &f.package, f.size)));
    }
    for skipped in &firmware.skipped {
        printed.warnings.push(format!("firmware: {skipped} was no longer a regular file; left alone"));
    }
    printed
}
