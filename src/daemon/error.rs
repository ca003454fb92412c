//! The daemon's error type: what can stop a start, a rebuild or a cleanup.

use std::path::Path;

use crate::cgroup::CgroupError;
use crate::config::ConfigError;
use crate::nft::NftError;
use crate::route::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("watching cgroups below {root}: {source}")]
    Watch {
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot subscribe to kernel notifications: {0}")]
    Events(#[source] std::io::Error),
    #[error("cgroup root {0} is not a mounted cgroup2 file system (unmounted or gone)")]
    RootGone(String),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("cleanup failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Cleanup(Vec<DaemonError>),
}

impl DaemonError {
    /// Watching or scanning the tree below `root` failed.
    pub fn watch(root: &Path, source: std::io::Error) -> Self {
        DaemonError::Watch { root: root.display().to_string(), source }
    }
}
