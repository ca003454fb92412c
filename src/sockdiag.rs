//! Which sockets exist, on which port, in which cgroup and with which mark:
//! NETLINK_SOCK_DIAG's inet_diag dumps (`ss`'s source), hand-encoded on
//! [`crate::netlink`]. The cgroup id (INET_DIAG_CGROUP_ID) needs kernel 5.7;
//! the mark (INET_DIAG_MARK) is only reported to a CAP_NET_ADMIN requester;
//! TCP byte and segment counts come from INET_DIAG_INFO (struct tcp_info),
//! which any user may read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netlink::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, NlSocket, attrs};
use crate::ruleset::L4;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
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
/// struct tcp_info offsets (linux/tcp.h): tcpi_bytes_acked,
/// tcpi_bytes_received (u64, kernel 4.1), tcpi_segs_out, tcpi_segs_in (u32, 4.2).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
const TCPI_SEGS_OUT: usize = 136;
const TCPI_SEGS_IN: usize = 140;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("cannot open a sock_diag netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("sock_diag: {0}")]
    Netlink(#[from] NetlinkError),
}

/// What tcp_info counts for one TCP socket since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Payload bytes the peer acknowledged (sent).
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
}

/// One socket as inet_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockInfo {
    pub proto: L4,
    pub local: SocketAddr,
    /// The peer (port 0 and the unspecified address when unconnected).
    pub remote: SocketAddr,
    /// The kernel's socket cookie: the same socket in the next dump.
    pub cookie: u64,
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
    /// TCP sockets, when asked for with [`SockDiag::sockets_with_info`].
    pub tcp: Option<TcpCounts>,
}

/// An inet_diag_req_v2 dump request for one family and protocol.
pub fn request(seq: u32, v6: bool, proto: L4, states: u32) -> Vec<u8> {
    request_ext(seq, v6, proto, states, false)
}

/// Like [`request`]; with `info` the replies of TCP sockets carry
/// INET_DIAG_INFO (`ss -ti`).
pub fn request_ext(seq: u32, v6: bool, proto: L4, states: u32, info: bool) -> Vec<u8> {
    let mut w = crate::netlink::MsgWriter::new();
    let m = w.begin(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    // sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states, then an
    // all-zero inet_diag_sockid (no filter: the caller filters by port).
    let ext = if info { 1u8 << (INET_DIAG_INFO - 1) } else { 0 };
    let mut req = vec![family, proto.proto(), ext, 0];
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
    let dport = u16::from_be_bytes([payload[6], payload[7]]);
    let addr = |b: &[u8]| -> Option<IpAddr> {
        Some(match family {
            libc::AF_INET => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)),
            _ => return None,
        })
    };
    let (src, dst) = (addr(&payload[8..24])?, addr(&payload[24..40])?);
    let cookie = u64::from(u32::from_ne_bytes(payload[44..48].try_into().ok()?))
        | u64::from(u32::from_ne_bytes(payload[48..52].try_into().ok()?)) << 32;
    let uid = u32::from_ne_bytes(payload[64..68].try_into().ok()?);
    let mut info = SockInfo {
        proto,
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        cookie,
        state,
        uid,
        cgroup: None,
        mark: None,
        tcp: None,
        transparent: None,
    };
    for (ty, v) in attrs(&payload[DIAG_MSG_LEN..]) {
        match ty {
            INET_DIAG_INFO if proto == L4::Tcp && v.len() >= TCPI_SEGS_IN + 4 => {
                let u64_at = |o: usize| v[o..o + 8].try_into().map(u64::from_ne_bytes).unwrap_or(0);
                let u32_at = |o: usize| v[o..o + 4].try_into().map(u32::from_ne_bytes).unwrap_or(0);
                info.tcp = Some(TcpCounts {
                    bytes_acked: u64_at(TCPI_BYTES_ACKED),
                    bytes_received: u64_at(TCPI_BYTES_RECEIVED),
                    segs_out: u32_at(TCPI_SEGS_OUT),
                    segs_in: u32_at(TCPI_SEGS_IN),
                });
            }
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
        self.dump_into(proto, states, false, &mut out)?;
        Ok(out)
    }

    /// Like [`SockDiag::sockets`], TCP sockets with their [`TcpCounts`]
    /// (`ss -Htani --cgroup`), appended to `out`.
    pub fn sockets_with_info(&mut self, proto: L4, states: u32, out: &mut Vec<SockInfo>) -> Result<(), SockDiagError> {
        self.dump_into(proto, states, true, out)
    }

    fn dump_into(&mut self, proto: L4, states: u32, info: bool, out: &mut Vec<SockInfo>) -> Result<(), SockDiagError> {
        for v6 in [false, true] {
            let req = request_ext(self.sock.next_seq(), v6, proto, states, info);
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
        Ok(())
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
        let info = request_ext(7, false, L4::Tcp, ALL_STATES, true);
        assert_eq!(info[18], 2, "idiag_ext asks for INET_DIAG_INFO");
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 7);
    }

    #[test]
    fn parses_a_message_with_cgroup_and_mark() {
        let mut p = vec![0u8; DIAG_MSG_LEN];
        p[0] = libc::AF_INET as u8;
        p[1] = 10;
        p[4..6].copy_from_slice(&7893u16.to_be_bytes());
        p[6..8].copy_from_slice(&443u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[192, 0, 2, 9]);
        p[44..48].copy_from_slice(&5u32.to_ne_bytes());
        p[48..52].copy_from_slice(&1u32.to_ne_bytes());
        p[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        let mut w = crate::netlink::MsgWriter::new();
        w.attr(INET_DIAG_MARK, &0xbb8u32.to_ne_bytes());
        w.attr(INET_DIAG_CGROUP_ID, &4242u64.to_ne_bytes());
        let mut tcpi = vec![0u8; 232];
        tcpi[TCPI_BYTES_ACKED..TCPI_BYTES_ACKED + 8].copy_from_slice(&1000u64.to_ne_bytes());
        tcpi[TCPI_BYTES_RECEIVED..TCPI_BYTES_RECEIVED + 8].copy_from_slice(&2000u64.to_ne_bytes());
        tcpi[TCPI_SEGS_OUT..TCPI_SEGS_OUT + 4].copy_from_slice(&7u32.to_ne_bytes());
        tcpi[TCPI_SEGS_IN..TCPI_SEGS_IN + 4].copy_from_slice(&9u32.to_ne_bytes());
        w.attr(INET_DIAG_INFO, &tcpi);
        p.extend_from_slice(&w.buf);
        let s = parse(&p, L4::Tcp).unwrap();
        assert_eq!(s.local, "127.0.0.1:7893".parse().unwrap());
        assert_eq!(s.remote, "192.0.2.9:443".parse().unwrap());
        assert_eq!(s.cookie, (1 << 32) | 5);
        let want = TcpCounts { bytes_acked: 1000, bytes_received: 2000, segs_out: 7, segs_in: 9 };
        assert_eq!(s.tcp, Some(want));
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
