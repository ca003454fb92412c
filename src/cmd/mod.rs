//! The subcommands, one module each. Every command reads the world (the
//! config, the cgroup tree, the kernel, the daemon's state file) into a
//! value and renders that value as text or JSON; the rendering is a pure
//! function, unit-tested without root.

pub mod check;
pub mod cleanup;
pub mod exec;
pub mod explain;
pub mod explain_gateway;
pub mod print;
pub mod reload;
pub mod status;
pub mod top;
pub mod world;
