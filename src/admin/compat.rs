//! The original limopack's commands, mapped onto declarations, for the `limopack` command.
//!
//! The original kept a count per module in `/lib/modules/KVER/modules.active`, which
//! packages' maintainer scripts raised with `--use=NAME --install` and lowered with
//! `--remove`, and pruned with `--apply`. Here the counts live in one admin declaration,
//! [`LOCAL`]: each reference is one line under `modules:` (the parser takes a name listed
//! twice, and a declaration counts once however often it names a module, so the lines are
//! the count and nothing else), and static modules go under `static:`. Pruning is a sync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::admin::check;
use crate::read::declaration::{self, Draft};
use crate::error::{Error, Result};
use crate::read::index::{Edge, ModId, ModuleIndex};
use crate::name;
use crate::report;
use crate::root::{Root, ADMIN_DIR};
use crate::run;

/// The admin declaration that holds the references, in `/etc/limopack/modules.d`.
pub const LOCAL: &str = "local.yaml";

/// The comment a new `local.yaml` starts with.
const HEADER: [&str; 5] = [
    "Modules asked for with the `limopack` command, the original limopack's flags.",
    "Each line under modules: is one reference, counted as the original counted them:",
    "`limopack --use=NAME --install` adds a line and `limopack --use=NAME --remove` takes one",
    "away; static: entries are kept for good. A package should rather ship its own",
    "/usr/share/limopack/PACKAGE.yaml, which counts while it is installed.",
];

/// `--list`: the files of the loaded modules, relative to the tree, sorted; and the loaded
/// names the tree has no module for.
pub fn list(index: &ModuleIndex, loaded: &[String]) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    let mut unknown = Vec::new();
    for module in loaded {
        match index.by_name(module) {
            Some(id) => paths.push(index.module(id).path.to_string()),
            None => unknown.push(module.clone()),
        }
    }
    paths.sort();
    paths.dedup();
    (paths, unknown)
}

/// `--tree`: each loaded module's file, and under it what modprobe loads with it (modules.dep,
/// soft and weak dependencies), indented by depth, the way it was first reached.
pub fn tree(index: &ModuleIndex, loaded: &[String]) -> Vec<String> {
    let mut roots: Vec<ModId> = loaded.iter().filter_map(|m| index.by_name(m)).collect();
    roots.sort_by(|a, b| index.module(*a).path.cmp(&index.module(*b).path));
    roots.dedup();
    let mut lines = Vec::new();
    for root in roots {
        let mut children: BTreeMap<ModId, Vec<(ModId, Edge)>> = BTreeMap::new();
        for (id, via) in index.closure(&[root]) {
            if let Some((parent, edge)) = via {
                children.entry(parent).or_default().push((id, edge));
            }
        }
        for list in children.values_mut() {
            list.sort_by(|a, b| index.module(a.0).path.cmp(&index.module(b.0).path));
        }
        let mut stack = vec![(root, None, 0)];
        while let Some((id, edge, depth)) = stack.pop() {
            let how = match edge {
                None | Some(Edge::Dependency) => "",
                Some(Edge::SoftdepPre) => " (softdep pre)",
                Some(Edge::SoftdepPost) => " (softdep post)",
                Some(Edge::Weakdep) => " (weakdep)",
            };
            lines.push(format!("{:width$}{}{how}", "", index.module(id).path, width = depth * 2));
            for &(child, edge) in children.get(&id).into_iter().flatten().rev() {
                stack.push((child, Some(edge), depth + 1));
            }
        }
    }
    lines
}

/// What a change to `local.yaml` did: lines to print, and warnings.
#[derive(Debug, Default)]
pub struct Change {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// Names as given to `--use`, normalised; one that can never be a module is an error.
fn entries(names: &[String]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| match name::invalid_entry(n) {
            Some(why) => Err(Error::request("--use", why)),
            None => Ok(name::normalize(n).into_owned()),
        })
        .collect()
}

/// `local.yaml` under the root as a draft to change; a new one when there is none.
fn local(root: &Root) -> Result<Draft> {
    Ok(match declaration::read_admin(root, LOCAL)? {
        Some((declaration, text)) => Draft::of(&declaration, &text),
        None => Draft { header: HEADER.iter().map(|s| s.to_string()).collect(), ..Draft::default() },
    })
}

fn shown() -> PathBuf {
    Path::new(ADMIN_DIR).join(LOCAL)
}

fn references(n: usize) -> String {
    format!("{n} reference{}", if n == 1 { "" } else { "s" })
}

/// `--use=NAMES --install [--static]`: one more reference to each name, or each made static.
/// Names that match nothing in the root's kernels are warned about, as a run would.
pub fn install(root: &Root, names: &[String], as_static: bool) -> Result<Change> {
    let names = entries(names)?;
    let mut draft = local(root)?;
    let mut change = Change::default();
    let file = shown();
    for name in &names {
        if as_static {
            match draft.statics.iter().any(|(e, _)| e == name) {
                true => change.lines.push(format!("limopack: {name}: already static in {}", file.display())),
                false => {
                    draft.statics.push((name.clone(), None));
                    change.lines.push(format!("limopack: {name}: static in {}: kept for good", file.display()));
                }
            }
        } else {
            draft.modules.push((name.clone(), None));
            let count = draft.modules.iter().filter(|(e, _)| e == name).count();
            change.lines.push(format!("limopack: {name}: {} in {}", references(count), file.display()));
        }
    }
    let path = crate::apply::store::write_admin(root, LOCAL, &draft.render())?;
    // Each entry against every kernel of the root, as `limopack-hook check --root` does; a
    // root with no kernel tree yet has nothing to check against.
    if let Ok(kernels) = check::kernels(root.path(), None) {
        for problem in check::check(root, &[path], &kernels) {
            if names.iter().any(|n| problem.message.starts_with(&format!("`{n}`"))) {
                change.warnings.push(format!("{}:{}:{}: {}", file.display(), problem.line, problem.column, problem.message));
            }
        }
    }
    change.lines.push(
        "limopack: the next limopack-hook run keeps them (apt runs it after every transaction); `limopack-hook explain NAME` says why a module stays"
            .into(),
    );
    Ok(change)
}

/// `--use=NAMES --remove`: one reference fewer to each name. A static name is skipped with a
/// warning, as the original did; a name with no reference here is warned about and left.
pub fn remove(root: &Root, names: &[String]) -> Result<Change> {
    let names = entries(names)?;
    let mut draft = local(root)?;
    let mut change = Change::default();
    let file = shown();
    for name in &names {
        if draft.statics.iter().any(|(e, _)| e == name) {
            change.warnings.push(format!(
                "{name}: static in {}; skipped (static modules are kept for good: take it out of that file, then `limopack-hook forget {name}`)",
                file.display()
            ));
            continue;
        }
        let Some(at) = draft.modules.iter().position(|(e, _)| e == name) else {
            change.warnings.push(format!(
                "{name}: no reference in {}; nothing taken away (other declarations that name it are left alone: `limopack-hook explain {name}`)",
                file.display()
            ));
            continue;
        };
        draft.modules.remove(at);
        let left = draft.modules.iter().filter(|(e, _)| e == name).count();
        change.lines.push(match left {
            0 => format!("limopack: {name}: last reference taken out of {}; the next limopack-hook run prunes it unless something else needs it", file.display()),
            n => format!("limopack: {name}: {} left in {}", references(n), file.display()),
        });
    }
    let path = root.resolve(ADMIN_DIR)?.join(LOCAL);
    if draft.is_empty() && path.exists() {
        // An empty file would mask a vendor declaration of the same name.
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        change.lines.push(format!("limopack: removed {}: no references left", file.display()));
    } else if !change.lines.is_empty() {
        crate::apply::store::write_admin(root, LOCAL, &draft.render())?;
    }
    Ok(change)
}

/// `--apply [--pkname=P]`: a sync, pruning only P's files when P is given. The original also
/// removed P from dpkg's database; this never edits it, and says so.
pub fn apply(root: &Path, kernel: Option<crate::kver::Kver>, package: Option<String>) -> Result<Change> {
    let mut change = Change::default();
    if let Some(p) = &package {
        change.lines.push(format!(
            "limopack: note: the original limopack removed {p} from dpkg's database; this one never edits it: {p} stays installed, \
             its pruned files show as missing in `dpkg --verify`, and `limopack-hook status` names each"
        ));
    }
    let opts = run::Options {
        root: root.to_path_buf(),
        kernel,
        dry_run: false,
        initramfs: true,
        reuse: false,
        package: package.clone(),
        lock_wait: run::LOCK_WAIT,
    };
    match run::sync(&opts, |holder| eprintln!("{}", report::waiting(holder)))? {
        run::Synced::Ran(outcome) => {
            change.warnings = report::warnings(&outcome.plan, &outcome.gathered.state, &outcome.done);
            for k in &outcome.plan.kernels {
                let done = outcome.done.iter().find(|d| d.version == k.version);
                change.lines.push(report::summary(k, done, false, crate::root::CONFIG_FILE));
                change.lines.extend(done.map(report::done_lines).unwrap_or_default());
            }
            change.lines.extend(report::firmware_lines(&outcome.plan.firmware, Some(&outcome.firmware), false));
        }
        // What the last run that found nothing to do printed still holds.
        run::Synced::Unchanged(saved) => {
            change.warnings = saved.warnings;
            change.lines.extend(saved.summaries);
        }
        run::Synced::NoTrees => change.lines.push(report::NO_TREES.into()),
    }
    change.lines.push(match &package {
        Some(p) => format!("limopack: this was `limopack-hook` pruning only the files of {p}; apt runs limopack-hook after every transaction, for every module package"),
        None => "limopack: this was `limopack-hook`, which apt runs after every transaction".into(),
    });
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::index::Sources;

    fn index() -> ModuleIndex {
        let sources = Sources {
            dep: Some((
                "modules.dep".into(),
                "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\nkernel/lib/crc16.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
                 kernel/crypto/crc32c_generic.ko:\nkernel/drivers/bluetooth/btusb.ko:\n"
                    .into(),
            )),
            alias: Some(("modules.alias".into(), "alias crypto-crc32c crc32c_generic\n".into())),
            softdep: Some(("modules.softdep".into(), "softdep ext4 pre: crypto-crc32c\n".into())),
            ..Sources::default()
        };
        ModuleIndex::parse(sources).unwrap()
    }

    #[test]
    fn loaded_modules_list_as_paths_and_tree() {
        let loaded = ["ext4", "btusb", "out_of_tree"].map(String::from);
        let (paths, unknown) = list(&index(), &loaded);
        assert_eq!(paths, ["kernel/drivers/bluetooth/btusb.ko", "kernel/fs/ext4/ext4.ko"]);
        assert_eq!(unknown, ["out_of_tree"]);
        assert_eq!(
            tree(&index(), &loaded),
            [
                "kernel/drivers/bluetooth/btusb.ko",
                "kernel/fs/ext4/ext4.ko",
                "  kernel/crypto/crc32c_generic.ko (softdep pre)",
                "  kernel/fs/jbd2/jbd2.ko",
                "  kernel/lib/crc16.ko",
            ]
        );
    }
}
