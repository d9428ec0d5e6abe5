//! What the system holds, read and never written: the admin's config and the declarations,
//! dpkg's database, each module tree with its index and its modules' `.modinfo`, the firmware
//! the kernel's loader would find, the modules loaded now, and limopack's own state.

pub mod binary_index;
pub(crate) mod config;
pub(crate) mod deb;
pub mod declaration;
pub(crate) mod fingerprint;
pub mod firmware;
pub mod gathered;
pub mod hotplug;
pub mod index;
pub(crate) mod index_cache;
pub mod loaded;
pub mod modinfo;
pub mod packages;
pub(crate) mod state;
pub(crate) mod tree;
pub mod sysfs;
pub(crate) mod trust;
pub(crate) mod yaml;
