//! Carrying out a plan: the one place that deletes files, runs depmod and writes state.
//!
//! Order for each kernel: journal (what is about to go), the saved index (first prune only),
//! the deletes, the empty folders, depmod, then the state, and last the journal is cleared.
//! A run killed anywhere leaves the journal, which the next run folds into the state before it
//! plans again from scratch; its depmod check then finds any index the kill left stale.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{Action, Plan};
use crate::root::Root;
use crate::state::{self, Journal, PrunedFile, State};
use crate::tree::{self, Tree};

/// Held for the whole run: one limopack at a time per root. The kernel drops an flock when
/// its holder dies, so a killed run never leaves a lock that blocks the next one.
pub struct Lock {
    _file: File,
}

/// Take the run lock, waiting for a run that holds it. Runs queue rather than step aside:
/// each one recomputes from what is installed, so the last one to finish sees everything.
pub fn lock(root: &Root, waiting: impl FnOnce()) -> Result<Lock> {
    let dir = root.state_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock().map_err(|e| Error::io(&path, e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    Ok(Lock { _file: file })
}

/// What a real run did to one kernel.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Done {
    pub version: String,
    pub removed: usize,
    pub bytes: u64,
    pub depmod: bool,
    /// Files the plan listed that were no longer regular files inside the tree.
    pub skipped: Vec<String>,
}

/// Carry out `plan` on `trees`, updating and saving `state`.
pub fn apply(root: &Root, config: &Config, plan: &Plan, trees: &[Tree], state: &mut State) -> Result<Vec<Done>> {
    let before = state.clone();
    state.statics.extend(plan.new_statics.iter().cloned());
    forget_restored(state, trees);
    for kplan in &plan.kernels {
        state.kernels.entry(kplan.version.clone()).or_default().refcounts = kplan.refcounts.clone();
    }
    if *state != before {
        state.save(root)?;
    }

    let mut done = Vec::new();
    for kplan in plan.kernels.iter().filter(|k| k.action == Action::Prune) {
        let Some(tree) = trees.iter().find(|t| t.version == kplan.version) else { continue };
        let files: BTreeMap<String, PrunedFile> = kplan
            .prune
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    PrunedFile {
                        module: f.module.clone(),
                        package: f.package.clone(),
                        version: f.version.clone(),
                        size: f.size,
                    },
                )
            })
            .collect();
        let journal = Journal {
            kernel: tree.version.clone(),
            files: files.clone(),
        };
        journal.save(root)?;
        let kernel_state = state.kernels.entry(tree.version.clone()).or_default();
        if kernel_state.pruned.is_empty() {
            state::save_index(root, tree)?;
        }

        let mut outcome = Done {
            version: tree.version.clone(),
            ..Done::default()
        };
        let mut removed: Vec<PathBuf> = Vec::new();
        for (rel, file) in &files {
            match tree::confined(&tree.path, rel).map_err(|e| Error::io(tree.path.join(rel), e))? {
                Some(path) => {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    kernel_state.pruned.insert(rel.clone(), file.clone());
                    outcome.removed += 1;
                    outcome.bytes += file.size;
                    removed.push(path);
                }
                None => outcome.skipped.push(rel.clone()),
            }
        }
        tree::remove_empty_parents(&tree.path, &removed);
        if config.depmod && !removed.is_empty() {
            tree::depmod(root, &tree.version)?;
            outcome.depmod = true;
        }
        state.save(root)?;
        Journal::clear(root)?;
        done.push(outcome);
    }
    Ok(done)
}

/// Drop pruned records whose files are back, put there by a reinstall or an upgrade.
fn forget_restored(state: &mut State, trees: &[Tree]) {
    for tree in trees {
        if let Some(kernel) = state.kernels.get_mut(&tree.version) {
            kernel
                .pruned
                .retain(|rel, _| std::fs::symlink_metadata(tree.path.join(rel)).is_err());
        }
    }
}
