//! Everything a plan is made from, as [`crate::run::gather`] read it: the config, the
//! declarations, dpkg's database, limopack's state, and each kernel's tree, index, files and
//! loaded modules, with what could not be read.

use crate::read::config::Config;
use crate::read::deb::AptCache;
use crate::read::declaration::Declarations;
use crate::kver::Kver;
use crate::read::index::ModuleIndex;
use crate::read::packages::Packages;
use crate::root::Root;
use crate::read::state::State;
use crate::read::tree::{Files, Tree};

/// Everything a plan is made from.
pub struct Gathered {
    pub root: Root,
    pub config: Config,
    pub declarations: Declarations,
    pub packages: Packages,
    pub state: State,
    pub trees: Vec<Tree>,
    pub(crate) kernels: Vec<(ModuleIndex, Files, Option<Vec<String>>)>,
    pub(crate) apt_cache: AptCache,
    pub(crate) can_download: bool,
    /// Kernels in the state whose trees are gone.
    pub(crate) gone: Vec<Kver>,
    /// Things noticed while gathering (stale indexes refreshed, odd kernel folders).
    pub notes: Vec<String>,
    /// Kernels that could not be read, and are left as they are this run.
    pub errors: Vec<KernelError>,
    /// Gathering changed something: it ran depmod or completed an interrupted run.
    pub changed: bool,
    /// Only some kernels are looked at (`--kernel`): firmware, shared by all, is not pruned.
    pub(crate) narrowed: bool,
    /// A real run: what it reads anew is kept in limopack's caches for the next.
    pub(crate) keeps_caches: bool,
}

impl Gathered {
    /// The index of one kernel, pruned modules included.
    pub fn index(&self, version: &str) -> Option<&ModuleIndex> {
        let at = self.trees.iter().position(|t| *t.version == *version)?;
        Some(&self.kernels[at].0)
    }
}

/// A kernel that could not be read this run, and why: it is left as it is, and the others
/// are served.
pub struct KernelError {
    pub version: Kver,
    pub error: crate::Error,
}
