//! Programming `table inet cgtproxy` over nf_tables netlink.
//!
//! Every change is one batch, so the kernel applies all of it or none of it.
//! [`Nft`] (`handle.rs`) commits batches that `encode` fills; `query.rs`
//! reads back what the kernel holds and `parse.rs` reads its rule messages.

mod batch;
#[cfg(test)]
mod decode_tests;
pub mod encode;
mod error;
pub mod expr;
mod foreign;
mod handle;
mod kept;
mod parse;
mod query;
pub mod sys;

pub use batch::Batch;
pub use error::NftError;
pub use foreign::SetState;
pub use handle::{Nft, probe_table};
pub use parse::{level_rule, rule_handle};
pub use query::CountedMap;
