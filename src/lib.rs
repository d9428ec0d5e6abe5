//! limopack keeps a Debian system's kernel module trees down to the modules that its installed
//! packages declare, and what modprobe would load with them.

pub mod error;
pub mod shown;
pub mod fs;
pub mod kver;
pub mod binary_index;
mod mapped;
mod paths;
pub mod index;
pub mod index_cache;
pub mod name;
mod yaml;

pub use error::{Error, Result};
pub mod config;
pub mod declaration;
pub mod root;
mod trust;
pub mod loaded;
pub mod packages;
pub mod tree;
pub mod deb;
pub mod archive;
pub mod initramfs;
pub mod state;
pub mod fingerprint;
pub mod plan;
pub mod plan_firmware;
pub mod apply;
pub mod run;
pub mod report;
pub mod check;
pub mod active;
pub mod freeze;
pub mod forget;
pub mod compat;
pub mod modinfo;
pub mod firmware;

/// What a scoped thread returned; its panic, if it panicked, goes on in this one.
pub(crate) fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
