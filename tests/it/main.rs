//! limopack's integration tests, in one binary so that they build and link once and run
//! side by side: each module is one area, and `support` holds what they share (synthetic
//! roots, real Debian kernels and roots, the kmod oracle, QEMU).

mod support;

mod admin;
mod boot;
mod cli;
mod compat;
mod debian;
mod dpkg_db;
mod dracut;
mod firmware;
mod freeze;
mod hotplug;
mod host_safety;
mod hostile;
mod layout;
mod manual;
mod packaging;
mod real_kernel;
mod support_selftest;
