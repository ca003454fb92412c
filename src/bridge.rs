//! Bridges and br_netfilter: whether gateway mode can broute here (the
//! kernel's nft_meta_bridge, reverse-path filtering, and this host's `nft`
//! command, which must be able to list what the daemon loads), what
//! br_netfilter's sysctls say, and how the daemon deals with bridged
//! clients ([`BridgeMode`]). The daemon, `check` and `status` all ask here
//! (docs/gateway.md, "Bridges and br_netfilter").

use crate::config::{Config, GatewayEntry};
use crate::nft::Nft;

/// br_netfilter's IP hooks for bridged frames; absent without br_netfilter.
pub const SYSCTLS: [&str; 2] =
    ["/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"];

/// A sysctl (or any small proc file), trimmed; None when unreadable.
pub fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

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

/// How bridged clients' proxied traffic escapes br_netfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeMode {
    /// No gateway tproxy entry: nothing to do.
    None,
    /// `table bridge cgtproxy` broutes matched frames.
    Broute,
    /// The kernel cannot broute and the config opts in
    /// (`gateway-bridge-netfilter-off: true`): bridge-nf-call-iptables/
    /// ip6tables are 0 in this namespace while the daemon runs.
    SysctlOff,
    /// The kernel cannot broute, br_netfilter's IP hooks are on, and the
    /// config does not allow turning them off: left alone, so TPROXY of
    /// bridged clients times out (said loudly).
    SysctlLeftOn,
    /// The sysctls are already 0, set by someone else: nothing to do.
    AlreadyOff,
    /// br_netfilter is not loaded: bridged frames never meet the inet hooks.
    NoBrNetfilter,
    /// The kernel cannot broute and /proc/sys is hidden from the daemon (the
    /// unit's ProcSubset=pid): the sysctls can be neither read nor set.
    SysctlHidden,
}

impl BridgeMode {
    /// How the daemon deals with bridged clients, for a ruleset with or
    /// without gateway tproxy entries and brouting; `allow_off`: the
    /// config's `gateway-bridge-netfilter-off`. `ours`: the sysctls are 0
    /// because this daemon (or a killed predecessor) set them.
    pub fn decide(gateway_tproxies: bool, broute: bool, allow_off: bool, ours: bool) -> Self {
        if !gateway_tproxies {
            BridgeMode::None
        } else if broute {
            BridgeMode::Broute
        } else if !std::path::Path::new("/proc/sys/net").exists() {
            BridgeMode::SysctlHidden
        } else if read(SYSCTLS[0]).is_none() {
            BridgeMode::NoBrNetfilter
        } else if allow_off {
            BridgeMode::SysctlOff
        } else if !ours && SYSCTLS.iter().all(|p| read(p).is_none_or(|v| v == "0")) {
            BridgeMode::AlreadyOff
        } else {
            BridgeMode::SysctlLeftOn
        }
    }

    /// Does this mode leave proxied traffic of bridged clients broken?
    pub fn broken(self) -> bool {
        matches!(self, BridgeMode::SysctlLeftOn | BridgeMode::SysctlHidden)
    }

    /// What `status`, `check` and the log say: the mode, the reason
    /// brouting is not used when the kernel could, and the bridges
    /// concerned; empty when nothing is needed.
    pub fn describe(self, brouting: Option<&Brouting>, entries: &[GatewayEntry]) -> String {
        let why = match brouting {
            Some(b @ (Brouting::NftCrashes(_) | Brouting::RpFilter(_))) => b.to_string(),
            _ => "this kernel cannot broute (no nft_meta_bridge)".to_owned(),
        };
        let all = crate::links::bridges().unwrap_or_default();
        let list = |v: &[String]| if v.is_empty() { "none yet".to_owned() } else { v.join(", ") };
        let proxied: Vec<String> = all.iter().filter(|b| tproxied(entries, b)).cloned().collect();
        match self {
            BridgeMode::None => String::new(),
            BridgeMode::SysctlOff => format!(
                "{why}: gateway-bridge-netfilter-off is set, so bridge-nf-call-iptables/ip6tables are 0 in this \
                 network namespace while running (restored on exit): br_netfilter filtering is OFF for every bridge \
                 here ({}): Docker's icc=false and iptables/nftables rules on bridged traffic do not apply to them",
                list(&all)
            ),
            BridgeMode::SysctlLeftOn => format!(
                "WARNING: {why} and bridge-nf-call-iptables is on: TPROXY of clients on bridges that tproxy entries \
                 take ({}) TIMES OUT (br_netfilter runs the IP hooks while bridging, and the socket TPROXY assigns \
                 is dropped when the packet reaches the IP layer); cgtproxy leaves the sysctls alone. \
                 `gateway-bridge-netfilter-off: true` turns them off, for every bridge of this namespace ({}), \
                 which also turns off Docker's icc=false and all bridge-level filtering there (docs/gateway.md)",
                list(&proxied),
                list(&all)
            ),
            m => m.to_string(),
        }
    }
}

/// Does some tproxy entry take clients arriving on bridge `name`?
fn tproxied(entries: &[GatewayEntry], name: &str) -> bool {
    entries.iter().any(|e| {
        matches!(e.target, crate::config::Target::Tproxy(_)) && e.interface.as_ref().is_none_or(|i| i.matches(name))
    })
}

impl std::fmt::Display for BridgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BridgeMode::None => "not needed (no gateway tproxy entry)",
            BridgeMode::Broute => "broute: table bridge cgtproxy passes matched frames up before br_netfilter",
            BridgeMode::SysctlOff => {
                "this kernel cannot broute (no nft_meta_bridge): bridge-nf-call-iptables/ip6tables set to 0 \
                 while running (gateway-bridge-netfilter-off), restored on exit"
            }
            BridgeMode::SysctlLeftOn => {
                "WARNING: this kernel cannot broute and bridge-nf-call-iptables is on: TPROXY of bridged clients \
                 times out (set gateway-bridge-netfilter-off: true to turn it off)"
            }
            BridgeMode::AlreadyOff => {
                "this kernel cannot broute; bridge-nf-call-iptables/ip6tables are already 0 (set outside cgtproxy): \
                 bridged clients are proxied, and no bridge of this namespace has br_netfilter filtering"
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

impl Brouting {
    /// What gateway mode does about br_netfilter on this kernel with
    /// `cfg`, as `check` and `status` (without a daemon) say it.
    pub fn line(&self, cfg: &Config) -> String {
        let tproxies = cfg.gateway.iter().any(|e| matches!(e.target, crate::config::Target::Tproxy(_)));
        let mode = BridgeMode::decide(tproxies, *self == Brouting::Yes, cfg.gateway_bridge_netfilter_off, false);
        let brnf = match read(SYSCTLS[0]) {
            None => "br_netfilter not loaded".to_owned(),
            Some(v) => format!("bridge-nf-call-iptables={v}"),
        };
        if *self == Brouting::Yes {
            format!("gateway: {self}: bridged clients are proxied with {brnf} left as it is")
        } else if matches!(mode, BridgeMode::SysctlOff | BridgeMode::SysctlLeftOn) {
            format!("gateway: {}", mode.describe(Some(self), &cfg.gateway))
        } else {
            format!("gateway: {self}; {brnf}; {mode}")
        }
    }
}

/// What cannot work for forwarded TPROXY with this namespace's VPN-related
/// sysctls, one sentence each (tests/gateway.rs measures them).
/// `src_valid_mark=1` (wg-quick, Tailscale) makes the kernel validate a
/// forwarded packet's source with its mark, and the tproxy mark routes
/// everything to lo: the source looks local and the packet is dropped as
/// martian, unless `accept_local` is on (and rp_filter is not strict).
pub fn vpn_warnings() -> Vec<String> {
    let conf = |c: &str, k: &str| read(&format!("/proc/sys/net/ipv4/conf/{c}/{k}"));
    let mut out = Vec::new();
    if conf("all", "src_valid_mark").as_deref() == Some("1") {
        if conf("all", "accept_local").as_deref() != Some("1") {
            out.push(
                "net.ipv4.conf.all.src_valid_mark=1 (set by wg-quick and Tailscale): forwarded IPv4 that a tproxy \
                 entry takes is DROPPED (its source is checked with the tproxy mark, which routes to lo, so it \
                 looks local); set net.ipv4.conf.all.accept_local=1 as well"
                    .to_owned(),
            );
        } else if conf("all", "rp_filter").as_deref() == Some("1") {
            out.push(
                "net.ipv4.conf.all.src_valid_mark=1 with strict rp_filter=1: forwarded IPv4 that a tproxy entry \
                 takes is DROPPED; use rp_filter=2 or 0"
                    .to_owned(),
            );
        }
    }
    out
}

/// What the log, `check` and `status` say about other programs'
/// forward-path rules (`Nft::foreign_forward_rules`) when tproxy entries
/// exist; None when nothing was found.
pub fn skipped_forward_rules(found: &[String]) -> Option<String> {
    (!found.is_empty()).then(|| {
        format!(
            "flows a gateway tproxy entry takes to an outside destination are diverted to the local proxy before \
             the forward hook, so these forward-path rules never see them: {}. Forwarding between this host's own \
             networks is not diverted and stays under them; to keep such a rule for an outside destination, put it \
             in a `drop` gateway entry or in `bypass` (docs/gateway.md)",
            found.join("; ")
        )
    })
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
