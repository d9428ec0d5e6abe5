//! What limopack says: one line per kernel the way a good apt hook speaks, `explain` for one
//! module, `status` for the whole picture, and the same as JSON (`"schema": 1`).

use std::collections::BTreeMap;

pub mod hotplug;

use serde::Serialize;
use serde_json::json;

use crate::apply::{Done, FirmwareDone, Restored, RestoredFrom};
use crate::read::index::{Edge, Lookup};
use crate::name;
use crate::plan::{Action, KernelPlan, Kept, Plan, Reason};
use crate::plan::firmware::{FirmwareAction, FirmwarePlan, Why};
use crate::read::gathered::Gathered;
use crate::read::state::{PrunedFile, State};

mod run;
pub use run::{run, Printed, Telling};

/// Version of the JSON shapes; bumped when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

/// Human size: `372 MiB`, `12 KiB`.
pub fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB {
        format!("{} MiB", (bytes + MIB / 2) / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// What stopped part of a run, each as its error says (declarations that could not be read,
/// kernels that could not be), and last what that meant; nothing when nothing did.
pub fn errors(gathered: &Gathered) -> Vec<String> {
    let broken = &gathered.declarations.broken;
    let mut lines: Vec<String> = broken.iter().map(ToString::to_string).collect();
    lines.extend(gathered.errors.iter().map(|k| format!("{}: left as it is this run: {}", k.version, k.error)));
    let mut meant = Vec::new();
    if !broken.is_empty() {
        meant.push(format!(
            "{} cannot be read: nothing is pruned until {} fixed; what the others declare is kept and restored",
            count(broken.len(), "declaration file"),
            if broken.len() == 1 { "it is" } else { "they are" }
        ));
    }
    if !gathered.errors.is_empty() {
        meant.push(match gathered.errors.len() {
            1 => "a kernel cannot be read: it is left as it is this run, and the others were served".to_string(),
            n => format!("{n} kernels cannot be read: they are left as they are this run, and the others were served"),
        });
    }
    if !meant.is_empty() {
        lines.push(meant.join("; "));
    }
    lines
}

/// What a run says of a root without module trees.
pub const NO_TREES: &str = "limopack: no module tree under /lib/modules or /usr/lib/modules; nothing to do";

/// What a run says while it waits for another's lock.
pub fn waiting(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("limopack: waiting for another run (process {pid}) to finish"),
        None => "limopack: waiting for another run to finish".to_string(),
    }
}

/// The line for one kernel after a run, or a dry run.
pub fn summary(k: &KernelPlan, done: Option<&Done>, dry_run: bool, config_path: &str) -> String {
    let head = format!("limopack: {}:", k.version);
    let restored = match done {
        Some(done) if !done.files.restored.is_empty() => format!(", restored {}", count(done.files.restored.len(), "file")),
        None if dry_run && k.restore.iter().any(|r| !r.sources.is_empty()) => {
            format!(", would restore {}", count(k.restore.iter().filter(|r| !r.sources.is_empty()).count(), "file"))
        }
        _ => String::new(),
    };
    // Kept modules still missing after this run: the warning says why and what brings them
    // back, and the summary that they are.
    let back = |path: &str| match done {
        Some(d) => d.files.restored.iter().any(|r| &*r.path == path),
        None => dry_run && k.restore.iter().any(|r| &*r.path == path && !r.sources.is_empty()),
    };
    let missing = k.missing().filter(|(_, kept)| !back(&kept.path)).count();
    let restored = match missing {
        0 => restored,
        n => format!("{restored}, {n} missing (see the warning)"),
    };
    if k.action == Action::NoBaseline {
        let why = match k.unresolved_statics {
            0 => "no static modules recorded for it".to_string(),
            1 => "its one static entry matches no module of it; see the warning".to_string(),
            n => format!("none of its {n} static entries matches a module of it; see the warnings"),
        };
        return format!("{head} no baseline ({why}); left whole ({} modules){restored}", k.modules_total);
    }
    let kept = format!("kept {} of {} modules ({})", k.kept.len(), k.modules_total, count(k.declarations, "declaration"));
    let files = |n: usize, bytes: u64| format!("{} ({})", count(n, "file"), size(bytes));
    let what = match (k.action, done) {
        (Action::UpToDate, _) => match &k.keeps_all {
            Some(entry) => format!("nothing to prune: {entry} names every module"),
            None => "nothing to prune".to_string(),
        },
        (Action::PruningOff, _) => format!(
            "would prune {}, but pruning is off (prune: false in {config_path})",
            files(k.prune.len(), k.prune_bytes())
        ),
        (Action::Prune, Some(done)) => format!("pruned {}", files(done.files.removed, done.files.bytes)),
        (Action::Prune, None) if dry_run => format!("would prune {}", files(k.prune.len(), k.prune_bytes())),
        (Action::Prune, None) => "pruning did not run".to_string(),
        (Action::Blocked, _) => format!(
            "would prune {}, but nothing is pruned while a declaration cannot be read (see the error)",
            files(k.prune.len(), k.prune_bytes())
        ),
        (Action::NoBaseline, _) => unreachable!("handled above"),
    };
    format!("{head} {kept}, {what}{restored}")
}

/// `1 file`, `3 files`.
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// True when a run changed the kernel or has something to say about it beyond its summary:
/// what the hooks print, so that an apt run with nothing to do stays quiet.
pub fn changed(done: Option<&Done>) -> bool {
    done.is_some_and(|d| d.files.changed() || !d.files.not_restored.is_empty() || d.initramfs.is_some())
}

/// What a real run did beyond its summary: each file restored and where from, and the
/// initramfs.
pub fn done_lines(done: &Done) -> Vec<String> {
    let mut lines: Vec<String> = done.files.restored.iter().map(|r| restored_line(&done.version, r)).collect();
    if let Some(note) = &done.initramfs {
        lines.push(format!("limopack: {}: {note}", done.version));
    }
    lines
}

fn restored_line(head: &str, r: &Restored) -> String {
    let from = match r.from {
        RestoredFrom::Archive => "limopack's archive",
        RestoredFrom::AptCache => "apt's cache",
        RestoredFrom::Download => "a downloaded .deb",
    };
    format!("limopack: {head}: restored {} ({}) from {from}", r.module, r.path)
}

/// The firmware line of a run or dry run, and each firmware file brought back or not; nothing
/// when no kept module needs firmware and there is nothing to do.
pub fn firmware_lines(fp: &FirmwarePlan, done: Option<&FirmwareDone>, dry_run: bool) -> Vec<String> {
    let needed = crate::plan::firmware::needed(fp).len();
    let restore = fp.restore.iter().filter(|r| !r.sources.is_empty()).count();
    if needed == 0 && fp.action == FirmwareAction::Keep && restore == 0 && done.is_none_or(|d| !d.changed()) {
        return Vec::new();
    }
    let files = |n: usize, bytes: u64| format!("{} ({})", count(n, "file"), size(bytes));
    let what = match (fp.action, done) {
        (FirmwareAction::Keep, _) => format!("{} needed by kept modules and declarations; all firmware kept", count(needed, "file")),
        (FirmwareAction::Unsure, _) => format!("{} needed by kept modules and declarations; none pruned this run (see the warning)", count(needed, "file")),
        (FirmwareAction::Prune, Some(d)) => format!("kept {}, pruned {}", files(fp.kept.len(), fp.kept_bytes), files(d.removed, d.bytes)),
        (FirmwareAction::Prune, None) => {
            let verb = if dry_run { "would prune" } else { "to prune" };
            format!("kept {}, {verb} {}", files(fp.kept.len(), fp.kept_bytes), files(fp.prune.len(), fp.prune_bytes()))
        }
    };
    let restored = match done {
        Some(d) if !d.restored.is_empty() => format!(", restored {}", count(d.restored.len(), "file")),
        None if dry_run && restore > 0 => format!(", would restore {}", count(restore, "file")),
        _ => String::new(),
    };
    let mut lines = vec![format!("limopack: firmware: {what}{restored}")];
    if let Some(d) = done {
        lines.extend(d.restored.iter().map(|r| restored_line("firmware", r)));
        for n in &d.not_restored {
            lines.push(format!("limopack: firmware: could not restore {} (needed by {}): {}", n.path, n.module, n.reason));
        }
    }
    lines
}

/// Warnings of a plan, each as it should be printed, including kept modules whose files are
/// gone and that this run did not bring back, with the reinstall that does.
pub fn warnings(plan: &Plan, state: &State, done: &[Done]) -> Vec<String> {
    let mut out = plan.warnings.clone();
    out.extend(plan.firmware.warnings.iter().cloned());
    for r in plan.firmware.restore.iter().filter(|r| r.sources.is_empty()) {
        out.push(format!(
            "firmware {} needed by {} was pruned and nothing can bring it back; `apt-get install --reinstall {}` does",
            r.path,
            r.module,
            r.package.split(':').next().unwrap_or(&r.package)
        ));
    }
    for k in &plan.kernels {
        out.extend(k.warnings.iter().map(|w| format!("{}: {w}", k.version)));
        out.extend(missing(k, state, done.iter().find(|d| d.version == k.version)));
    }
    out
}

/// The kept modules of `k` that are missing and that this run did not bring back, grouped
/// by the package that owns them: a run offline fails a hundred restores for one reason,
/// which is said once, with the reinstall that brings them all back.
fn missing(k: &KernelPlan, state: &State, done: Option<&Done>) -> Vec<String> {
    // By package (none: no installed package owns it), the modules and the first reason.
    let mut by_package: BTreeMap<Option<String>, (Vec<&str>, Option<&str>)> = BTreeMap::new();
    for (module, kept) in k.missing() {
        let restore = k.restore.iter().find(|r| r.path == kept.path);
        let failed = done.and_then(|d| d.files.not_restored.iter().find(|n| n.path == kept.path));
        let restored = done.is_some_and(|d| d.files.restored.iter().any(|r| r.path == kept.path));
        // Left to the summary: brought back now, or will be by the next real run.
        if restored || (done.is_none() && restore.is_some_and(|r| !r.sources.is_empty())) {
            continue;
        }
        let package = restore.map(|r| r.package.to_string()).or_else(|| {
            state.kernels.get(&k.version).and_then(|s| s.pruned.get(&*kept.path)).map(|p| p.package.to_string())
        });
        let package = package.map(|p| p.split(':').next().unwrap_or(&p).to_string());
        let group = by_package.entry(package).or_default();
        group.0.push(module);
        group.1 = group.1.or(failed.map(|n| n.reason.as_str()));
    }
    by_package
        .into_iter()
        .map(|(package, (modules, why))| {
            let (what, them) = match modules.len() {
                1 => (format!("kept module {} is missing", modules[0]), ["it", "it"]),
                n => (format!("{n} kept modules are missing: {}", modules.join(", ")), ["they", "them"]),
            };
            let why = why.map(|w| format!("; {} could not be restored: {w}", them[0])).unwrap_or_default();
            let hint = match package {
                Some(p) => format!("; `apt-get install --reinstall {p}` brings {} back", them[1]),
                None => format!("; no installed package owns {}", them[1]),
            };
            format!("{}: {what}{why}{hint}", k.version)
        })
        .collect()
}

/// The JSON of a sync or dry run.
pub fn sync_json(plan: &Plan, done: &[Done], firmware: &FirmwareDone, dry_run: bool) -> serde_json::Value {
    json!({ "schema": SCHEMA, "dry_run": dry_run, "plan": plan, "done": done, "firmware_done": firmware })
}

fn describe(reason: &Reason) -> String {
    match reason {
        Reason::Static { entry, declaration, recorded_only: false } => format!("static entry `{entry}` of {}", declaration.display()),
        Reason::Static { entry, declaration, recorded_only: true } => format!(
            "static entry `{entry}`, recorded from {}, which names it no more; `limopack-hook forget {entry}` takes it back",
            declaration.display()
        ),
        Reason::Declared { entry, declaration, package } => match package {
            Some(p) => format!("declared as `{entry}` in {} (package {p})", declaration.display()),
            None => format!("declared as `{entry}` in {}", declaration.display()),
        },
        Reason::Loaded => "loaded in the running kernel".to_string(),
        Reason::NotPrunable { package: None } => "no package owns its file (DKMS or hand-built); kept with what it needs".to_string(),
        Reason::NotPrunable { package: Some(p) } => format!("its file belongs to {p}, which limopack does not prune; kept with what it needs"),
        Reason::Pulled { by, edge } => {
            let how = match edge {
                Edge::Dependency => "dependency",
                Edge::SoftdepPre => "soft dependency (pre:)",
                Edge::SoftdepPost => "soft dependency (post:)",
                Edge::Weakdep => "weak dependency",
            };
            format!("{how} of {by}")
        }
    }
}

#[derive(Serialize)]
struct Link<'a> {
    module: &'a str,
    reason: &'a Reason,
}

/// What `explain` says: its lines, its JSON, and whether any kernel knows the name (as
/// modinfo fails for a name it does not know, so does explain).
pub struct Explained {
    pub lines: Vec<String>,
    pub json: serde_json::Value,
    pub known: bool,
}

/// Why a module is kept (the chain back to a declaration), or why it is not.
pub fn explain(gathered: &Gathered, plan: &Plan, module: &str) -> Explained {
    let mut text = Vec::new();
    let mut kernels = Vec::new();
    for k in &plan.kernels {
        let index = gathered.index(&k.version);
        let mut names = vec![name::normalize(module).into_owned()];
        if let Some(Lookup::Modules(ids)) = index.map(|i| i.lookup(module)) {
            names = ids.iter().map(|&id| index.unwrap().module(id).name.to_string()).collect();
        }
        for wanted in names {
            let (status, chain, line) = explain_one(k, gathered, &wanted);
            text.push(format!("{}: {wanted}: {line}", k.version));
            for link in &chain {
                text.push(format!("  {}: {}", link.module, describe(link.reason)));
            }
            let firmware = crate::plan::firmware::of_module(&plan.firmware, &k.version, &wanted);
            for w in firmware {
                let files = match (w.files.is_empty(), w.pruned.is_empty()) {
                    (true, true) => "not found (drivers list firmware that only some devices load)".to_string(),
                    (_, true) => w.files.join(", "),
                    (_, false) => format!("{} (pruned, to restore: {})", w.files.join(", "), w.pruned.join(", ")),
                };
                text.push(format!("  firmware {}: {files}", w.name));
            }
            if let Some(users) = k.refcounts.get(wanted.as_str()) {
                text.push(format!("  referenced by {} declaration(s): {}", users.len(),
                    users.iter().map(|u| u.display().to_string()).collect::<Vec<_>>().join(", ")));
            }
            kernels.push(json!({
                "version": k.version, "module": wanted, "status": status, "summary": line,
                "chain": chain, "refcount": k.refcounts.get(wanted.as_str()).map_or(0, Vec::len), "firmware": firmware,
            }));
        }
    }
    let known = kernels.iter().any(|k| k["status"] != "unknown");
    Explained { lines: text, json: json!({ "schema": SCHEMA, "module": module, "kernels": kernels }), known }
}

fn explain_one<'a>(k: &'a KernelPlan, gathered: &Gathered, wanted: &str) -> (&'static str, Vec<Link<'a>>, String) {
    if let Some(kept) = k.kept.get(wanted) {
        let mut chain = Vec::new();
        let mut at: (&str, &Kept) = (k.kept.get_key_value(wanted).unwrap().0, kept);
        while chain.len() <= k.kept.len() {
            chain.push(Link { module: at.0, reason: &at.1.reason });
            match &at.1.reason {
                Reason::Pulled { by, .. } => match k.kept.get_key_value(by.as_str()) {
                    Some((name, next)) => at = (name, next),
                    None => break,
                },
                _ => break,
            }
        }
        // Whole paths, as dpkg lists them: `dpkg -S` takes them as they are.
        let file = k.path.join(&*kept.path);
        let line = if kept.present {
            format!("kept ({})", file.display())
        } else {
            format!("kept, but its file {} is missing (pruned earlier)", file.display())
        };
        return ("kept", chain, line);
    }
    if let Some(f) = k.prune.iter().find(|f| *f.module == *wanted) {
        let line = match k.action {
            Action::Prune => "would be pruned",
            _ => "would be pruned once pruning is on",
        };
        let mut line = format!("{line}: no declaration names it and no kept module needs it ({} of {})", k.path.join(&*f.path).display(), f.package);
        if let Some(masked) = masked_naming(gathered, &k.version, wanted) {
            line.push_str(&format!("; {} names it, but is masked by {}", masked.path.display(), masked.by.display()));
        }
        return ("prune", Vec::new(), line);
    }
    if let Some((rel, p)) = gathered
        .state
        .kernels
        .get(&k.version)
        .and_then(|s| s.pruned.iter().find(|(rel, _)| name::module_name_of_path(rel).is_some_and(|m| m == wanted)))
    {
        return ("pruned", Vec::new(), format!("pruned ({} of {}); nothing needs it", k.path.join(rel).display(), p.package));
    }
    if k.builtin.iter().any(|b| b == wanted)
        || gathered.index(&k.version).is_some_and(|i| i.is_builtin(wanted))
    {
        return ("builtin", Vec::new(), "built into the kernel".into());
    }
    let known = gathered.index(&k.version).is_some_and(|i| i.by_name(wanted).is_some());
    if known && k.action == Action::NoBaseline {
        return ("whole", Vec::new(), "stays: this kernel has no baseline, so it is left whole".into());
    }
    ("unknown", Vec::new(), "no such module in this kernel".into())
}

/// A masked vendor declaration that names `module` in kernel `version`, if one does.
fn masked_naming<'a>(gathered: &'a Gathered, version: &crate::kver::Kver, module: &str) -> Option<&'a crate::read::declaration::Masked> {
    let index = gathered.index(version)?;
    gathered.declarations.masked.iter().find(|m| {
        m.declaration.as_ref().is_some_and(|d| {
            d.applies_to(version)
                && d.modules.iter().chain(&d.statics).any(|e| e.resolve(index).0.iter().any(|&id| *index.module(id).name == *module))
        })
    })
}

/// A kernel's pruned files as `status --json` shows them: each with its module, which the
/// state leaves to the path.
fn pruned_json(pruned: &BTreeMap<String, PrunedFile>) -> serde_json::Value {
    let files = pruned.iter().map(|(rel, file)| {
        let mut shown = json!(file);
        if let Some(module) = name::module_name_of_path(rel) {
            shown["module"] = json!(module);
        }
        (rel.clone(), shown)
    });
    serde_json::Value::Object(files.collect())
}

/// Per kernel: kept, pruned (with owning package), missing, warnings.
pub fn status(plan: &Plan, state: &State, verbose: bool) -> (Vec<String>, serde_json::Value) {
    let mut text = Vec::new();
    let mut kernels = Vec::new();
    for k in &plan.kernels {
        let pruned = state.kernels.get(&k.version).map(|s| &s.pruned);
        let pruned_count = pruned.map_or(0, |p| p.len());
        let pruned_bytes: u64 = pruned.map_or(0, |p| p.values().map(|f| f.size).sum());
        text.push(format!("{}{}", k.version, if k.running { " (running)" } else { "" }));
        // The paths below are of this tree, spelled as dpkg lists them.
        text.push(format!("  tree: {}", k.path.display()));
        text.push(format!("  action: {}", serde_json::to_value(k.action).unwrap().as_str().unwrap_or("")));
        text.push(match k.action {
            Action::NoBaseline => format!("  kept: all {} modules, as the kernel has no baseline and is left whole", k.modules_total),
            _ => format!("  kept: {} of {} modules, {}", k.kept.len(), k.modules_total, count(k.declarations, "declaration")),
        });
        if verbose {
            for (module, kept) in &k.kept {
                text.push(format!("    {module}: {}", describe(&kept.reason)));
            }
        }
        text.push(format!("  pruned: {}, {}", count(pruned_count, "file"), size(pruned_bytes)));
        // Each file under -v; by default, how many of each package.
        match verbose {
            true => text.extend(pruned.into_iter().flatten().map(|(rel, file)| format!("    {rel} ({} {})", file.package, file.version))),
            false => {
                let mut by_package: BTreeMap<(&str, &str), usize> = BTreeMap::new();
                for file in pruned.into_iter().flat_map(|p| p.values()) {
                    *by_package.entry((&file.package, &file.version)).or_default() += 1;
                }
                text.extend(by_package.into_iter().map(|((package, version), n)| format!("    {} of {package} {version}", count(n, "file"))));
            }
        }
        let missing: Vec<_> = k.missing().map(|(m, kept)| json!({"module": m, "path": kept.path})).collect();
        for (m, kept) in k.missing() {
            text.push(format!("  missing: {m} ({})", kept.path));
        }
        if !k.prune.is_empty() {
            text.push(format!("  to prune: {} file(s), {}", k.prune.len(), size(k.prune_bytes())));
        }
        for w in &k.warnings {
            text.push(format!("  warning: {w}"));
        }
        kernels.push(json!({
            "version": k.version, "running": k.running, "action": k.action, "baseline": k.baseline,
            "modules_total": k.modules_total, "declarations": k.declarations,
            "kept": k.kept, "pruned": pruned.map_or(json!({}), pruned_json), "missing": missing, "to_prune": k.prune, "warnings": k.warnings,
        }));
    }
    let fw = &plan.firmware;
    let pruned_bytes: u64 = state.firmware.values().map(|f| f.size).sum();
    text.push("firmware".to_string());
    text.push(format!("  action: {}", serde_json::to_value(fw.action).unwrap().as_str().unwrap_or("")));
    text.push(format!("  needed: {} file(s) by kept modules and declarations", crate::plan::firmware::needed(fw).len()));
    if verbose {
        for (path, why) in &fw.kept {
            text.push(format!("    {path}: {}", describe_firmware(why)));
        }
    }
    text.push(format!("  pruned: {} file(s), {}", state.firmware.len(), size(pruned_bytes)));
    for (path, file) in &state.firmware {
        text.push(format!("    {path} ({} {})", file.package, file.version));
    }
    for r in &fw.restore {
        text.push(format!("  missing: {} (needed by {})", r.path, r.module));
    }
    if !fw.prune.is_empty() {
        text.push(format!("  to prune: {} file(s), {}", fw.prune.len(), size(fw.prune_bytes())));
    }
    let firmware = json!({
        "action": fw.action, "kept": fw.kept, "pruned": state.firmware, "missing": fw.restore, "to_prune": fw.prune,
    });
    for d in &plan.declarations {
        text.push(format!("declaration {}: {}{}", d.path.display(),
            if d.active { "active" } else { "inactive" },
            d.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()));
    }
    let mut value = json!({ "schema": SCHEMA, "declarations": plan.declarations, "kernels": kernels, "firmware": firmware, "warnings": plan.warnings });
    if !plan.errors.is_empty() {
        value["errors"] = json!(plan.errors);
    }
    (text, value)
}

fn describe_firmware(why: &Why) -> String {
    match why {
        Why::Module { kernel, module, name } => format!("{kernel}: module {module} asks for {name}"),
        Why::Declared { declaration, glob } => format!("`{glob}` in {}", declaration.display()),
        Why::Microcode => "CPU microcode; never pruned".into(),
        Why::NotPrunable { package: None } => "no package owns it".into(),
        Why::NotPrunable { package: Some(p) } => format!("belongs to {p}, which is not a firmware package limopack prunes"),
    }
}
