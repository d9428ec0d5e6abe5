//! What the system holds, read and never written: the admin's config and the declarations,
//! dpkg's database, each module tree with its index and its modules' `.modinfo`, the firmware
//! the kernel's loader would find, the modules loaded now, and limopack's own state.

pub mod binary_index;
pub mod config;
pub mod deb;
pub mod declaration;
pub mod fingerprint;
pub mod firmware;
pub mod hotplug;
pub mod index;
pub mod index_cache;
pub mod loaded;
pub mod modinfo;
pub mod packages;
pub mod state;
pub mod sysfs;
pub mod tree;
pub(crate) mod trust;
pub(crate) mod yaml;
