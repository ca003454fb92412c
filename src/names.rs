//! The names and numbers the kernel sees: the table, its chains, sets and
//! maps, and the class values written into the packet mark.
//!
//! A leaf: nothing here imports the rest of the crate, so the config's
//! validation (which reserves these names), the desired ruleset, the
//! encoder, the daemon and the inspection commands all read one list.

/// `table inet cgtproxy` (and `table bridge cgtproxy` in gateway mode).
pub const TABLE: &str = "cgtproxy";

pub const SET_BYPASS4: &str = "bypass";
pub const SET_BYPASS6: &str = "bypass6";
/// Gateway mode: the networks directly connected to this host (its
/// addresses' prefixes): forwarding between them is never diverted.
pub const SET_LOCAL4: &str = "local-nets";
pub const SET_LOCAL6: &str = "local-nets6";
/// cgroup id -> class (a data map; see `ruleset`'s module comment).
pub const MAP_CGROUP: &str = "cgroup-class";
pub const MAP_MARK: &str = "mark-vmap";
pub const MAP_MARK_DNS: &str = "mark-dns-vmap";
/// The flow cache: conntrack-mark token of this generation -> class.
pub const MAP_FLOW_CLASS: &str = "flow-class";
/// The flow cache's fast path: token -> `return` (direct) or `drop`.
pub const MAP_FLOW_VERDICT: &str = "flow-verdict";
/// The flow cache: class -> this generation's conntrack-mark token.
pub const MAP_FLOW_TOKEN: &str = "flow-token";

pub const CHAIN_OUTPUT: &str = "output-mangle";
pub const CHAIN_CLASSIFY: &str = "classify";
pub const CHAIN_PREROUTING: &str = "prerouting";
/// Where a packet with a tproxy's mark is held to loopback.
pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_OUTPUT_NAT: &str = "output-nat";
pub const CHAIN_DNS: &str = "dns-hijack";
pub const CHAIN_GATEWAY: &str = "gateway";
pub const CHAIN_GATEWAY_CLASSIFY: &str = "gateway-classify";
pub const CHAIN_GATEWAY_NAT: &str = "gateway-nat";
/// The forward hook: what a gateway entry refuses or proxies never leaves
/// by the forward path, whatever conntrack thinks of the packet.
pub const CHAIN_GATEWAY_FORWARD: &str = "gateway-forward";
pub const CHAIN_GATEWAY_FORWARD_DROP: &str = "gateway-forward-drop";
/// Where a classified flow's class is written into its conntrack mark.
pub const CHAIN_FLOW_CACHE: &str = "flow-cache";
/// Where `flow-verdict` sends a flow cached direct (`counter return`) or
/// drop (`counter drop`): their counters are the targets' traffic with the
/// per-target rules' (`top`).
pub const CHAIN_FLOW_DIRECT: &str = "flow-direct";
pub const CHAIN_FLOW_DROP: &str = "flow-drop";

/// Conditional rules: tail class -> `jump tail-N` (only with conditions).
pub const MAP_TAILS: &str = "tails";

/// Sets and maps the table always has; named sets must not take their names.
pub const BUILTIN_SETS: [&str; 8] =
    [SET_BYPASS4, SET_BYPASS6, SET_LOCAL4, SET_LOCAL6, MAP_CGROUP, MAP_MARK, MAP_MARK_DNS, MAP_TAILS];

/// The class of tail N (a cgroup whose rules have conditions): resolved
/// inside `classify` by `meta mark vmap @tails` into a final class, never
/// cached or seen outside it. Tproxy marks may not use this range when a
/// rule has conditions.
pub const TAIL_BASE: u32 = 0x4347_5500;
/// The last tail class: at most 2,816 distinct tails.
pub const TAIL_LAST: u32 = 0x4347_5fff;

/// The chain of tail N: its rules' conditions in order, then the verdict
/// of its unconditional rule (or 0: the next shallower level decides).
pub fn tail_chain(n: u32) -> String {
    format!("tail-{n}")
}

/// The IPv4 and IPv6 sets of a dynamic named set (`sets: {NAME: {dynamic: true}}`).
pub fn dynamic_sets(name: &str) -> [String; 2] {
    [name.to_owned(), format!("{name}6")]
}

/// Chains the ruleset always has; a tproxy's chains must not collide with them.
pub const BUILTIN_CHAINS: [&str; 14] = [
    CHAIN_OUTPUT,
    CHAIN_CLASSIFY,
    CHAIN_PREROUTING,
    CHAIN_POSTROUTING,
    CHAIN_OUTPUT_NAT,
    CHAIN_DNS,
    CHAIN_GATEWAY,
    CHAIN_GATEWAY_CLASSIFY,
    CHAIN_GATEWAY_NAT,
    CHAIN_GATEWAY_FORWARD,
    CHAIN_GATEWAY_FORWARD_DROP,
    CHAIN_FLOW_CACHE,
    CHAIN_FLOW_DIRECT,
    CHAIN_FLOW_DROP,
];

/// The deepest level `socket cgroupv2 level N` accepts (the kernel refuses
/// more with ERANGE): deeper cgroups take their ancestor's verdict.
pub const MAX_SOCKET_LEVEL: u32 = 255;

/// Class of direct cgroups, held in the packet mark only inside
/// output-mangle ("CGT" 1). Tproxy marks may not use it.
pub const CLASS_DIRECT: u32 = 0x4347_5401;
/// Class of dropped cgroups ("CGT" 2).
pub const CLASS_DROP: u32 = 0x4347_5402;
/// Class of rejected cgroups ("CGT" 3).
pub const CLASS_REJECT: u32 = 0x4347_5403;
/// The classes a tproxy's mark must not take.
pub const RESERVED_CLASSES: [u32; 3] = [CLASS_DIRECT, CLASS_DROP, CLASS_REJECT];

/// The chain that sends a tproxy's packets to its port (from prerouting).
pub fn tproxy_chain(tproxy: &str) -> String {
    tproxy.to_owned()
}

/// The chain that rewrites a tproxy's DNS packets (from output-nat).
pub fn dns_chain(tproxy: &str) -> String {
    format!("{tproxy}-DNS")
}

/// The chain of a tproxy's gateway flows (inet), and of its brouted frames
/// (bridge table, named after the tproxy).
pub fn gw_chain(tproxy: &str) -> String {
    format!("{tproxy}-GW")
}

/// The forward-hook guard of a tproxy's gateway entries: what it would
/// have proxied and reaches the forward path anyway is dropped.
pub fn gw_forward_chain(tproxy: &str) -> String {
    format!("{tproxy}-GWF")
}

/// Every chain a tproxy named `tproxy` may own.
pub fn tproxy_chains(tproxy: &str) -> [String; 4] {
    [tproxy_chain(tproxy), dns_chain(tproxy), gw_chain(tproxy), gw_forward_chain(tproxy)]
}

/// The conntrack label bit set on flows the network starts (`ct label set
/// 127` in prerouting): only answers to such flows leave a proxied app
/// unproxied. The highest bit, far from the low ones other programs number
/// from.
pub const NETWORK_FLOW_LABEL: u8 = 127;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tproxy_chain_never_collides_with_a_builtin_one_of_another_shape() {
        for c in tproxy_chains("x") {
            assert!(!BUILTIN_CHAINS.contains(&c.as_str()));
        }
        assert_eq!(RESERVED_CLASSES.len(), 3);
    }
}
