//! This network namespace's interfaces and addresses over rtnetlink (`ip
//! -br link`, `ip -br addr`): which bridges exist (their isolation depends
//! on br_netfilter), and which networks are directly connected (traffic
//! between them is the host's own forwarding, decided by the firewalls in
//! the forward path). /sys/class/net is not used: it shows the interfaces
//! of the namespace that mounted /sys, not this process's.

use crate::netlink::{MsgWriter, NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, NlSocket, attrs};

const RTM_GETLINK: u16 = 18;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_HOST: u8 = 254;

fn open() -> Result<NlSocket, NetlinkError> {
    NlSocket::open(libc::NETLINK_ROUTE).map_err(NetlinkError::from)
}

fn dump(ty: u16, header: &[u8], what: &str, mut each: impl FnMut(&[u8])) -> Result<(), NetlinkError> {
    let mut sock = open()?;
    let seq = sock.next_seq();
    let mut w = MsgWriter::new();
    let m = w.begin(ty, NLM_F_REQUEST | NLM_F_DUMP, seq);
    w.raw(header);
    w.end(m);
    sock.dump(&w.buf, what, |_, p| each(p))
}

/// The names of the bridges of this network namespace, sorted.
pub fn bridges() -> Result<Vec<String>, NetlinkError> {
    let mut out = Vec::new();
    // ifinfomsg: 16 bytes, family AF_UNSPEC.
    dump(RTM_GETLINK, &[0; 16], "ip link show type bridge", |p| {
        let Some(body) = p.get(16..) else { return };
        let mut name = None;
        let mut bridge = false;
        for (ty, v) in attrs(body) {
            match ty {
                IFLA_IFNAME => {
                    name = Some(String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)).into_owned())
                }
                IFLA_LINKINFO => {
                    bridge =
                        attrs(v).any(|(t, k)| t == IFLA_INFO_KIND && k.split(|b| *b == 0).next() == Some(b"bridge"))
                }
                _ => {}
            }
        }
        if let (Some(n), true) = (name, bridge) {
            out.push(n);
        }
    })?;
    out.sort();
    Ok(out)
}

/// The prefixes of this namespace's addresses (the directly connected
/// networks), without loopback and host-scope ones: (address, prefix
/// length), IPv4 and IPv6, sorted and deduplicated.
pub fn connected() -> Result<Vec<(std::net::IpAddr, u8)>, NetlinkError> {
    let mut out = Vec::new();
    // ifaddrmsg: family, prefixlen, flags, scope, index (u32).
    dump(RTM_GETADDR, &[0; 8], "ip addr show", |p| {
        if p.len() < 8 || p[3] == RT_SCOPE_HOST {
            return;
        }
        let (family, len) = (p[0], p[1]);
        let mut addr = None;
        for (ty, v) in attrs(&p[8..]) {
            // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL ours.
            if ty == IFA_LOCAL || (ty == IFA_ADDRESS && addr.is_none()) {
                addr = match (family as i32, v.len()) {
                    (libc::AF_INET, 4) => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(v).expect("4"))),
                    (libc::AF_INET6, 16) => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(v).expect("16"))),
                    _ => addr,
                };
            }
        }
        if let Some(a) = addr
            && !a.is_loopback()
        {
            out.push((mask(a, len), len));
        }
    })?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// `a` with the bits after the first `len` cleared.
fn mask(a: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    match a {
        std::net::IpAddr::V4(v) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            std::net::IpAddr::from((u32::from(v) & m).to_be_bytes())
        }
        std::net::IpAddr::V6(v) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            std::net::IpAddr::from((u128::from(v) & m).to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_are_masked() {
        assert_eq!(super::mask("192.0.2.65".parse().unwrap(), 26), "192.0.2.64".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            super::mask("2001:db8:2::1".parse().unwrap(), 64),
            "2001:db8:2::".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(super::mask("10.1.2.3".parse().unwrap(), 0), "0.0.0.0".parse::<std::net::IpAddr>().unwrap());
    }
}
