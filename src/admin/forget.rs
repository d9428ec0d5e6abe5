//! `limopack-hook forget NAME…`: static entries taken back. A static entry is kept for good
//! once seen, so that removing the file that named it (a package's, or the one freeze wrote)
//! never prunes what a machine needs to boot; forget is how the admin says an entry is no
//! longer needed. Declaring the entry again undoes it.

use crate::error::{Error, Result};
use crate::plan::{Action, Plan};
use crate::report::{count, size};
use crate::run::{self, Options};
use crate::read::state::StaticRecord;

/// What a forget did, or (dry run) would do, line by line.
pub struct Outcome {
    pub lines: Vec<String>,
}

/// Forget the static entries `names` (as modprobe takes them), for every kernel or for
/// `opts.kernel` only, and say what the next run prunes as a result.
pub fn forget(opts: &Options, names: &[String]) -> Result<Outcome> {
    let root = crate::root::Root::new(&opts.root)?;
    let _lock = match opts.dry_run {
        true => None,
        false => Some(crate::apply::lock(&root, opts.lock_wait, |_| {})?),
    };
    let mut gathered = run::gather(&Options { dry_run: true, ..opts.clone() })?;
    let before = gathered.plan()?;
    let mut state = gathered.state.clone();
    let mut lines = Vec::new();
    for name in names {
        let entry = crate::name::normalize(name).into_owned();
        still_declared(&before, &gathered, &entry, opts)?;
        let forgotten = forget_entry(&mut state.statics, &entry, opts.kernel.as_ref());
        if forgotten.is_empty() {
            let recorded: Vec<&str> = state.statics.iter().map(|r| r.entry.as_str()).collect();
            return Err(Error::request(
                root.state_dir()?.join(crate::read::state::State::FILE),
                format!("`{entry}` is not a recorded static entry{}; recorded: {}", for_kernel(opts), if recorded.is_empty() { "none".into() } else { recorded.join(", ") }),
            ));
        }
        for record in forgotten {
            lines.push(format!("limopack: forgot static entry `{entry}` (recorded from {}){}", record.declaration.display(), for_kernel(opts)));
        }
    }
    gathered.state = state.clone();
    let after = gathered.plan()?;
    lines.extend(consequences(&before, &after, opts.dry_run));
    if !opts.dry_run {
        state.save(&root)?;
        crate::read::fingerprint::Saved::clear(&root)?;
    }
    Ok(Outcome { lines })
}

/// ` for KVER` when the forget is for one kernel.
fn for_kernel(opts: &Options) -> String {
    opts.kernel.as_ref().map(|k| format!(" for {k}")).unwrap_or_default()
}

/// A forget of an entry that an active declaration still names would be undone by the next
/// run, which records it again: it is refused, naming the file to edit.
fn still_declared(plan: &Plan, gathered: &crate::read::gathered::Gathered, entry: &str, opts: &Options) -> Result<()> {
    for (decl, status) in gathered.declarations.active.iter().zip(&plan.declarations) {
        let applies = opts.kernel.as_ref().is_none_or(|k| decl.applies_to(k));
        if let Some(e) = decl.statics.iter().find(|e| e.text == entry).filter(|_| status.active && applies) {
            return Err(Error::syntax(
                &decl.path,
                e.line,
                e.column,
                format!("`{entry}` is still a static entry here, and the next run would record it again; take it out of this file first"),
            ));
        }
    }
    Ok(())
}

/// Take `entry` out of `statics`, or with `kernel` mark it forgotten for that kernel; the
/// records it touched.
fn forget_entry(statics: &mut Vec<StaticRecord>, entry: &str, kernel: Option<&crate::kver::Kver>) -> Vec<StaticRecord> {
    let mut touched = Vec::new();
    match kernel {
        None => statics.retain(|r| {
            let hit = r.entry == entry;
            if hit {
                touched.push(r.clone());
            }
            !hit
        }),
        Some(k) => {
            for r in statics.iter_mut().filter(|r| r.entry == entry && r.applies_to(k)) {
                r.forgotten_for.push(k.clone());
                touched.push(r.clone());
            }
        }
    }
    touched
}

/// What the forget changes in each kernel's plan: the files the next run prunes that it
/// would not have, or why none.
fn consequences(before: &Plan, after: &Plan, dry_run: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for (was, now) in before.kernels.iter().zip(&after.kernels) {
        let head = format!("limopack: {}:", now.version);
        if now.action == Action::NoBaseline && was.action != Action::NoBaseline {
            lines.push(format!("{head} no static entry is left for it, so it has no baseline and is left whole"));
            continue;
        }
        let more: Vec<_> = now.prune.iter().filter(|f| !was.prune.iter().any(|w| w.path == f.path)).collect();
        if more.is_empty() {
            lines.push(format!("{head} nothing more to prune: what the entry kept is kept for other reasons"));
            continue;
        }
        let bytes = more.iter().map(|f| f.size).sum();
        let modules: Vec<&str> = more.iter().map(|f| &*f.module).collect();
        let when = match (now.action, dry_run) {
            (Action::Prune, false) => "the next run prunes",
            (Action::Prune, true) => "the next run would prune",
            _ => "once pruning is on, a run prunes",
        };
        lines.push(format!("{head} {when} {} ({}): {}", count(more.len(), "more file"), size(bytes), modules.join(", ")));
    }
    lines
}
