//! limopack keeps a Debian system's kernel module trees down to the modules that its installed
//! packages declare, and what modprobe would load with them.
//!
//! A run has four phases, one folder each, and each imports only from those before it:
//!
//! - [`read`]: what the system holds (the config, the declarations, dpkg's database, the module
//!   trees and their indexes, limopack's state); readers never write;
//! - [`plan`]: a pure function from what was read to what is kept, pruned and restored;
//! - [`apply`]: the only place with effects (deletes, restores, depmod, the initramfs, the
//!   state and caches);
//! - [`report`]: what is printed, as text and as JSON.
//!
//! [`run`] puts the phases together for a run; [`admin`] holds the admin's tools (`check`,
//! `freeze`, `forget`, the original limopack's commands). Below them all are the nouns every
//! phase shares: [`root`] (paths resolved inside the root), [`fs`] (bounded reads, atomic
//! writes), [`kver`], [`name`], [`glob`], [`shown`] and [`error`].

pub mod error;
pub mod shown;
pub mod kver;
pub mod name;
pub mod glob;
pub mod fs;
mod paths;
pub mod root;

pub mod read;
pub mod plan;
pub mod apply;
pub mod report;
pub mod run;
pub mod admin;

pub use error::{Error, Result};

/// What a scoped thread returned; its panic, if it panicked, goes on in this one.
pub(crate) fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
