//! Gateway mode's state outside the nftables table: whether this kernel can
//! broute, and when it cannot, br_netfilter's IP hooks turned off in this
//! network namespace while the daemon runs (restored on exit).
//!
//! With `net.bridge.bridge-nf-call-iptables=1` the inet prerouting hooks run
//! while a frame is bridged and the socket TPROXY assigns is orphaned by
//! ip_rcv_core(): proxied traffic of bridged clients would time out. The
//! bridge table's broute avoids that per frame; kernels without
//! nft_meta_bridge (CONFIG_NFT_BRIDGE_META) need the sysctls at 0.

use tracing::{info, warn};

use crate::nft::Nft;
use crate::ruleset::Ruleset;

pub const SYSCTLS: [&str; 2] =
    ["/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"];

/// How bridged clients' proxied traffic escapes br_netfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeMode {
    /// No gateway tproxy entry: nothing to do.
    None,
    /// `table bridge cgtproxy` broutes matched frames.
    Broute,
    /// The kernel cannot broute: bridge-nf-call-iptables/ip6tables are 0
    /// in this namespace while the daemon runs.
    SysctlOff,
    /// br_netfilter is not loaded: bridged frames never meet the inet hooks.
    NoBrNetfilter,
    /// The kernel cannot broute and /proc/sys is hidden from the daemon (the
    /// unit's ProcSubset=pid): the sysctls can be neither read nor set.
    SysctlHidden,
}

impl std::fmt::Display for BridgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BridgeMode::None => "not needed (no gateway tproxy entry)",
            BridgeMode::Broute => "broute: table bridge cgtproxy passes matched frames up before br_netfilter",
            BridgeMode::SysctlOff => {
                "this kernel cannot broute (no nft_meta_bridge): bridge-nf-call-iptables/ip6tables set to 0 \
                 while running, restored on exit"
            }
            BridgeMode::NoBrNetfilter => "br_netfilter not loaded: nothing to do",
            BridgeMode::SysctlHidden => {
                "this kernel cannot broute and /proc/sys is hidden (the unit's ProcSubset=pid): \
                 bridge-nf-call-iptables cannot be turned off, so TPROXY of bridged clients times out \
                 if br_netfilter is loaded (docs/gateway.md: a drop-in)"
            }
        })
    }
}

#[derive(Debug, Default)]
pub struct Gateway {
    /// Probed once, on the first ruleset that needs it.
    broute: Option<bool>,
    /// Values of [`SYSCTLS`] before we changed them.
    saved: Vec<(&'static str, String)>,
    pub mode: Option<BridgeMode>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

impl Gateway {
    /// Decide how `rs` deals with bridges; sets `rs.broute`. Called before
    /// each full apply.
    pub fn prepare(&mut self, nft: &mut Nft, rs: &mut Ruleset) {
        if rs.gateway_tproxies().is_empty() {
            rs.broute = false;
            return;
        }
        let can = *self.broute.get_or_insert_with(|| {
            let can = nft.can_broute();
            if !can {
                warn!(
                    "this kernel cannot broute (nft_meta_bridge missing): bridged clients are proxied by turning \
                     br_netfilter's IP hooks off (bridge-nf-call-iptables/ip6tables = 0) in this network namespace \
                     while running"
                );
            }
            can
        });
        rs.broute = can;
    }

    /// After a successful apply: drop a bridge table the ruleset no longer
    /// has, and turn the sysctls off or back as the ruleset needs.
    pub fn sync(&mut self, nft: &mut Nft, rs: &Ruleset) {
        if !rs.has_bridge_table()
            && let Err(e) = nft.delete_bridge_table()
        {
            warn!("cannot delete table bridge cgtproxy: {e}");
        }
        let needs_off = !rs.gateway_tproxies().is_empty() && !rs.broute;
        self.mode = Some(if rs.gateway_tproxies().is_empty() {
            BridgeMode::None
        } else if rs.broute {
            BridgeMode::Broute
        } else if !std::path::Path::new("/proc/sys/net").exists() {
            BridgeMode::SysctlHidden
        } else if read(SYSCTLS[0]).is_none() {
            BridgeMode::NoBrNetfilter
        } else {
            BridgeMode::SysctlOff
        });
        if self.mode == Some(BridgeMode::SysctlHidden) {
            warn!("gateway bridges: {}", BridgeMode::SysctlHidden);
        } else if needs_off {
            self.turn_off();
        } else {
            for e in self.restore() {
                warn!("{e}");
            }
        }
    }

    /// Set the sysctls to 0, remembering the first value seen; a program
    /// that sets them back (Docker does when it creates a network) is
    /// undone at the next health check.
    pub fn turn_off(&mut self) {
        for path in SYSCTLS {
            let Some(value) = read(path) else { continue };
            if value == "0" {
                continue;
            }
            if !self.saved.iter().any(|(p, _)| *p == path) {
                self.saved.push((path, value.clone()));
            }
            match std::fs::write(path, "0") {
                Ok(()) => info!("set {path} to 0 (was {value}) so TPROXY works for bridged clients"),
                Err(e) => warn!("cannot set {path} to 0: {e}; TPROXY of bridged clients will time out"),
            }
        }
    }

    /// Whether the sysctls need turning off again (health check).
    pub fn drifted(&self) -> bool {
        self.mode == Some(BridgeMode::SysctlOff) && SYSCTLS.iter().any(|p| read(p).is_some_and(|v| v != "0"))
    }

    /// Put back what we changed; returns the errors.
    pub fn restore(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (path, value) in std::mem::take(&mut self.saved) {
            match std::fs::write(path, &value) {
                Ok(()) => info!("restored {path} to {value}"),
                Err(e) => errors.push(format!("cannot restore {path} to {value}: {e}")),
            }
        }
        errors
    }
}
