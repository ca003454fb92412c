//! The desired kernel state as a plain value.
//!
//! A [`Ruleset`] is computed from the config and the cgroups that exist; it
//! can be printed as `nft -f` text ([`Ruleset::render`]), compared, and
//! encoded into one netlink batch by [`crate::nft`]. Nothing here does I/O.
//!
//! Cgroups are classified through a *data* map (`cgroup-class`: cgroup id
//! -> class), not a verdict map with `goto` elements: every element with a
//! chain verdict makes the kernel re-validate the whole map on each commit
//! (O(elements x lookups) per event), while plain data never does. The class
//! is written into the packet mark, then dispatched by a few static rules.

mod build;
pub mod cond;
pub mod gateway;
mod model;
pub mod path_view;
pub mod publish;
mod render;
pub mod stmt;
mod stmt_text;
pub mod tails;
mod verdict;

pub use build::binds;
pub use model::Ruleset;
pub use stmt::{Chain, Hook, L4, PRIO_BRIDGE_FILTER, PRIO_DSTNAT, PRIO_MANGLE, Stmt};
pub use tails::Tails;
pub use verdict::{Element, Interval, Verdict};

#[cfg(test)]
mod tails_tests;
#[cfg(test)]
mod tests;
