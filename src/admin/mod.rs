//! The admin's tools, on top of a run's phases: `check` for packagers, `freeze` of the vital
//! set, `forget` of static entries, `restore` of a device's pruned driver, `import-active` and the original limopack's commands.

pub mod active;
pub mod check;
pub mod compat;
pub mod forget;
pub mod freeze;
pub mod restore;
