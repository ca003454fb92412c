//! Reading the world for `status`, `explain` and `print --diff`: the cgroup
//! tree, the kernel's table (which needs CAP_NET_ADMIN), and where the
//! running daemon lives. Cgroup ids are resolved to paths by scanning the
//! cgroup tree (an id is its directory's inode).

use std::path::Path;

use crate::cgroup::{self, Cgroup};
use crate::nft::NftError;
use crate::route::RouteError;
use crate::state::DaemonState;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("scanning cgroups below {root}: {source}")]
    Scan {
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("{0}")]
    Target(String),
}

pub fn scan(root: &Path) -> Result<Vec<Cgroup>, InspectError> {
    cgroup::scan(root).map_err(|source| InspectError::Scan { root: root.display().to_string(), source })
}

/// The sentence for a kernel read refused for lack of privilege, or the
/// error itself for any other failure.
pub fn privileged<T>(r: Result<T, NftError>) -> Result<Result<T, String>, InspectError> {
    match r {
        Err(NftError::Netlink(e)) if matches!(e.errno(), Some(libc::EPERM | libc::EACCES)) => {
            Ok(Err(format!("reading the kernel needs CAP_NET_ADMIN: run as root (sudo) to see it ({e})")))
        }
        Err(e) => Err(e.into()),
        Ok(v) => Ok(Ok(v)),
    }
}

/// A note when the running daemon lives in another network namespace than
/// `here` (this process's).
pub fn netns_note(daemon: Option<&DaemonState>, here: Option<u64>) -> Option<String> {
    let d = daemon?;
    let here = here?;
    (d.netns != 0 && d.netns != here).then(|| {
        format!(
            "the daemon (pid {}) runs in another network namespace (net:[{}]) than this command (net:[{here}]): \
             the table and routing below are this namespace's, not the daemon's; \
             run `nsenter --net=/proc/{}/ns/net cgtproxy ...` to see its own",
            d.pid, d.netns, d.pid
        )
    })
}
