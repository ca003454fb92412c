//! What programming nf_tables can fail with, and the cause behind the
//! kernel's terser refusals.

use crate::netlink::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open an nf_tables netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("nftables: {0}")]
    Netlink(#[from] NetlinkError),
    #[error(
        "nftables: nf_tables is not available in this kernel (the nf_tables module is not built or cannot be loaded)"
    )]
    Unavailable,
}

/// What the kernel refused, with the usual cause for the errors whose
/// cause is not in the kernel's own message.
pub(super) fn explain(e: NetlinkError) -> NftError {
    match e {
        NetlinkError::Kernel { errno: libc::EOPNOTSUPP, ref what, .. } if what == BATCH => NftError::Unavailable,
        NetlinkError::Kernel { what, errno: libc::ENOENT, message }
            if what.starts_with("add rule") || what.starts_with("insert rule") =>
        {
            let modules: Vec<&str> = [
                ("socket cgroupv2", "nft_socket"),
                ("tproxy", "nft_tproxy"),
                ("dnat", "nft_nat"),
                ("ct ", "nft_ct"),
                ("@", "nft_lookup/nft_set_hash/nft_set_rbtree"),
            ]
            .iter()
            .filter(|(k, _)| what.contains(k))
            .map(|(_, m)| *m)
            .collect();
            let message = if modules.is_empty() {
                message
            } else {
                format!(
                    "{message}: an expression it uses is not available; is kernel module {} present?",
                    modules.join(", ")
                )
            };
            NftError::Netlink(NetlinkError::Kernel { what, errno: libc::ENOENT, message })
        }
        e => NftError::Netlink(e),
    }
}

/// How errors addressed to a batch's BEGIN message name it.
pub(super) const BATCH: &str = "nftables batch";
