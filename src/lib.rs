//! cgtproxy: per-cgroup transparent proxy rules for nftables.
//!
//! The pipeline is pure until its last step:
//! [`config`] -> [`cgroup`] scan -> [`ruleset::Ruleset`] (printable as nft
//! text) -> [`nft`] netlink batch, plus [`route`] for policy routing.

pub mod bridge;
pub mod cgname;
pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod route;
pub mod ruleset;
pub mod sockdiag;
pub mod state;
