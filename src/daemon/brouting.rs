//! Whether gateway mode can broute here: the kernel (nft_meta_bridge),
//! reverse-path filtering, and this host's `nft` command, which must be
//! able to list what the daemon loads (docs/gateway.md, "Bridges and
//! br_netfilter").

use super::gateway::read;
use crate::nft::Nft;

/// Whether the daemon broutes on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brouting {
    Yes,
    /// The kernel has no nft_meta_bridge (CONFIG_NFT_BRIDGE_META).
    KernelCannot,
    /// This host's `nft` (its `--version` here) crashes listing a rule with
    /// `meta broute`: nftables before 1.0.8 (Debian 12 has 1.0.6) looks up
    /// a template it does not have. With our bridge table in the kernel,
    /// every `nft list ruleset` on the host would crash.
    NftCrashes(String),
    /// Reverse-path filtering is on (the setting named here): a brouted
    /// IPv4 packet arrives on the bridge port, which has no address, and
    /// fib_validate_source() drops it whatever the rp_filter mode.
    RpFilter(String),
}

/// Can the kernel broute, and can this host's `nft` list such a rule?
/// Without an `nft` command there is nothing to crash. The version says it
/// (1.0.6 crashes, measured; `broute` came to nft's meta templates after
/// 1.0.7); for 1.0.7 or an unknown version, `nft` lists a scratch table.
pub fn probe(nft: &mut Nft) -> Brouting {
    if !nft.can_broute() {
        return Brouting::KernelCannot;
    }
    if let Some(on) = rp_filter_on() {
        return Brouting::RpFilter(on);
    }
    let Some(version) = nft_cli_version() else { return Brouting::Yes };
    match parse_nft_version(&version) {
        Some(v) if v >= (1, 0, 8) => Brouting::Yes,
        Some(v) if v < (1, 0, 7) => Brouting::NftCrashes(version),
        _ => match nft.with_broute_probe(nft_cli_crashes) {
            Ok(true) => Brouting::NftCrashes(version),
            _ => Brouting::Yes,
        },
    }
}

/// `net.ipv4.conf.{all,default}.rp_filter=N` when one is not 0. Unreadable
/// (the unit hides /proc/sys) counts as off: brouting is still the only
/// way there, and `cgtproxy check` (not sandboxed) tells.
fn rp_filter_on() -> Option<String> {
    ["all", "default"].into_iter().find_map(|c| {
        let v = read(&format!("/proc/sys/net/ipv4/conf/{c}/rp_filter"))?;
        (v != "0").then(|| format!("net.ipv4.conf.{c}.rp_filter={v}"))
    })
}

/// `nft --version`, e.g. "nftables v1.0.6 (Lester Gooch #5)"; None without
/// an `nft` command.
fn nft_cli_version() -> Option<String> {
    let out = std::process::Command::new("nft").arg("--version").stdin(std::process::Stdio::null()).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn parse_nft_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let number = |p: &str| p.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u32>().ok();
    let mut parts = v.split('.').map(number);
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Does `nft list table bridge TABLE` die of a signal?
fn nft_cli_crashes(table: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    Command::new("nft")
        .args(["list", "table", "bridge", table])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.signal().is_some())
}

impl std::fmt::Display for Brouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Brouting::Yes => f.write_str("the kernel can broute (nft_meta_bridge)"),
            Brouting::KernelCannot => {
                f.write_str("the kernel CANNOT broute (no nft_meta_bridge / CONFIG_NFT_BRIDGE_META)")
            }
            Brouting::NftCrashes(v) => write!(
                f,
                "the kernel can broute, but this host's nft ({v}) crashes listing `meta broute` \
                 (nftables 1.0.8 or later does not), so brouting is not used"
            ),
            Brouting::RpFilter(on) => write!(
                f,
                "the kernel can broute, but reverse-path filtering is on ({on}): brouted IPv4 arrives on a \
                 bridge port, which has no address, and would be dropped, so brouting is not used"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_nft_version;

    #[test]
    fn nft_versions() {
        assert_eq!(parse_nft_version("nftables v1.0.6 (Lester Gooch #5)"), Some((1, 0, 6)));
        assert_eq!(parse_nft_version("nftables v1.1.3 (Commodore Bullmoose #4)"), Some((1, 1, 3)));
        assert_eq!(parse_nft_version("nftables v0.9"), Some((0, 9, 0)));
        assert_eq!(parse_nft_version("nftables v1.0.8rc1"), Some((1, 0, 8)));
        assert_eq!(parse_nft_version("something else"), None);
    }
}
