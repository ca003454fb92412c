//! Which sockets exist, on which port, in which cgroup and with which mark:
//! NETLINK_SOCK_DIAG's inet_diag dumps (`ss`'s source), hand-encoded on
//! [`crate::netlink`]. The cgroup id (INET_DIAG_CGROUP_ID) needs kernel 5.7;
//! the mark (INET_DIAG_MARK) is only reported to a CAP_NET_ADMIN requester.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netlink::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, NlSocket, attrs};
use crate::ruleset::L4;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_MARK: u16 = 15;
const INET_DIAG_CGROUP_ID: u16 = 21;
/// struct inet_diag_sockopt (kernel >= 5.10), sent for every socket.
const INET_DIAG_SOCKOPT: u16 = 22;
/// `transparent:1` in the first byte of struct inet_diag_sockopt (bit 5 of
/// a C bit-field: counted from the low bit on little-endian ABIs, from the
/// high bit on big-endian ones).
#[cfg(target_endian = "little")]
const SOCKOPT_TRANSPARENT: u8 = 1 << 5;
#[cfg(target_endian = "big")]
const SOCKOPT_TRANSPARENT: u8 = 1 << 2;
/// struct inet_diag_msg: family, state, timer, retrans, inet_diag_sockid
/// (48 bytes), expires, rqueue, wqueue, uid, inode.
const DIAG_MSG_LEN: usize = 72;
/// TCP_ESTABLISHED .. TCP_NEW_SYN_RECV: every state.
pub const ALL_STATES: u32 = 0xffff_ffff;
/// A listening TCP socket.
pub const TCP_LISTEN: u32 = 1 << 10;
/// An unconnected UDP socket is in TCP_CLOSE.
pub const UDP_UNCONNECTED: u32 = 1 << 7;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("cannot open a sock_diag netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("sock_diag: {0}")]
    Netlink(#[from] NetlinkError),
}

/// One socket as inet_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockInfo {
    pub proto: L4,
    pub local: SocketAddr,
    pub state: u8,
    pub uid: u32,
    /// The cgroup the socket was created in (kernel >= 5.7).
    pub cgroup: Option<u64>,
    /// SO_MARK, when the requester has CAP_NET_ADMIN.
    pub mark: Option<u32>,
    /// IP_TRANSPARENT/IPV6_TRANSPARENT is set (kernel >= 5.10 reports it;
    /// None on older ones). Setting it needs CAP_NET_ADMIN or CAP_NET_RAW
    /// in the socket's network namespace, and only such a socket receives
    /// what TPROXY diverts.
    pub transparent: Option<bool>,
}

/// An inet_diag_req_v2 dump request for one family and protocol.
pub fn request(seq: u32, v6: bool, proto: L4, states: u32) -> Vec<u8> {
    let mut w = crate::netlink::MsgWriter::new();
    let m = w.begin(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    // sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states, then an
    // all-zero inet_diag_sockid (no filter: the caller filters by port).
    let mut req = vec![family, proto.proto(), 0, 0];
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&[0; 48]);
    w.raw(&req);
    w.end(m);
    w.buf
}

/// Decode one inet_diag_msg and its attributes.
pub fn parse(payload: &[u8], proto: L4) -> Option<SockInfo> {
    if payload.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = i32::from(payload[0]);
    let state = payload[1];
    // inet_diag_sockid: sport, dport (network order), src[16], dst[16], if, cookie.
    let sport = u16::from_be_bytes([payload[4], payload[5]]);
    let src = &payload[8..24];
    let ip = match family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
        _ => return None,
    };
    let uid = u32::from_ne_bytes(payload[64..68].try_into().ok()?);
    let mut info =
        SockInfo { proto, local: SocketAddr::new(ip, sport), state, uid, cgroup: None, mark: None, transparent: None };
    for (ty, v) in attrs(&payload[DIAG_MSG_LEN..]) {
        match ty {
            INET_DIAG_CGROUP_ID if v.len() >= 8 => info.cgroup = Some(u64::from_ne_bytes(v[..8].try_into().ok()?)),
            INET_DIAG_MARK if v.len() >= 4 => info.mark = Some(u32::from_ne_bytes(v[..4].try_into().ok()?)),
            INET_DIAG_SOCKOPT if !v.is_empty() => info.transparent = Some(v[0] & SOCKOPT_TRANSPARENT != 0),
            _ => {}
        }
    }
    Some(info)
}

#[derive(Debug)]
pub struct SockDiag {
    sock: NlSocket,
}

impl SockDiag {
    pub fn open() -> Result<Self, SockDiagError> {
        Ok(SockDiag { sock: NlSocket::open(NETLINK_SOCK_DIAG).map_err(SockDiagError::Open)? })
    }

    /// Sockets of `proto` in `states`, IPv4 and IPv6. For TCP listeners
    /// this equals `ss -Htln4 --cgroup -e; ss -Htln6 --cgroup -e`.
    pub fn sockets(&mut self, proto: L4, states: u32) -> Result<Vec<SockInfo>, SockDiagError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let req = request(self.sock.next_seq(), v6, proto, states);
            let what =
                format!("ss -{}{}a --cgroup", if v6 { '6' } else { '4' }, if proto == L4::Tcp { 't' } else { 'u' });
            self.sock.dump(&req, &what, |ty, payload| {
                if ty == SOCK_DIAG_BY_FAMILY
                    && let Some(s) = parse(payload, proto)
                {
                    out.push(s);
                }
            })?;
        }
        Ok(out)
    }

    /// Sockets that accept on `ports`: TCP listeners and unconnected UDP
    /// sockets (`ss -Hltun --cgroup 'sport = :PORT'`).
    pub fn listeners(&mut self, ports: &[u16]) -> Result<Vec<SockInfo>, SockDiagError> {
        let mut out = self.sockets(L4::Tcp, TCP_LISTEN)?;
        match self.sockets(L4::Udp, UDP_UNCONNECTED) {
            Ok(udp) => out.extend(udp),
            // No udp_diag module: TCP listeners are enough to find a proxy.
            Err(SockDiagError::Netlink(e)) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        out.retain(|s| ports.contains(&s.local.port()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(7, true, L4::Udp, UDP_UNCONNECTED);
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(&r[16..20], &[libc::AF_INET6 as u8, libc::IPPROTO_UDP as u8, 0, 0]);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 7);
    }

    #[test]
    fn parses_a_message_with_cgroup_and_mark() {
        let mut p = vec![0u8; DIAG_MSG_LEN];
        p[0] = libc::AF_INET as u8;
        p[1] = 10;
        p[4..6].copy_from_slice(&7893u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        let mut w = crate::netlink::MsgWriter::new();
        w.attr(INET_DIAG_MARK, &0xbb8u32.to_ne_bytes());
        w.attr(INET_DIAG_CGROUP_ID, &4242u64.to_ne_bytes());
        p.extend_from_slice(&w.buf);
        let s = parse(&p, L4::Tcp).unwrap();
        assert_eq!(s.local, "127.0.0.1:7893".parse().unwrap());
        assert_eq!((s.state, s.uid, s.cgroup, s.mark), (10, 1000, Some(4242), Some(0xbb8)));
        assert_eq!(s.transparent, None, "no INET_DIAG_SOCKOPT: not known");
        assert!(parse(&p[..40], L4::Tcp).is_none());
        for (byte, transparent) in [(SOCKOPT_TRANSPARENT, true), (!SOCKOPT_TRANSPARENT, false)] {
            let mut q = p.clone();
            let mut w = crate::netlink::MsgWriter::new();
            w.attr(INET_DIAG_SOCKOPT, &[byte, 0]);
            q.extend_from_slice(&w.buf);
            assert_eq!(parse(&q, L4::Tcp).unwrap().transparent, Some(transparent));
        }
    }
}
