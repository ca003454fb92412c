//! `cgtproxy explain --from ADDR [--iif IFACE]`: which gateway entry takes
//! a forwarded packet, what happens to it, and what the kernel holds.
//! Which entry matches is decided from the config alone; [`read`] adds the
//! kernel's view and [`render`] puts both in words.

use std::fmt::Write;
use std::net::IpAddr;

use super::status::{GatewayStatus, gateway_status};
use super::world::{InspectError, privileged};
use crate::config::{Config, Target};
use crate::nft::Nft;
use crate::ruleset::Ruleset;
use crate::ruleset::gateway::first_match;

/// The kernel's side of a gateway explanation.
#[derive(Debug)]
pub enum Kernel {
    /// No `gateway` entries: nothing was read.
    NotAsked,
    Unreadable(String),
    Absent,
    /// The entries with what the kernel holds and counted for them.
    Entries(Vec<GatewayStatus>),
}

/// Read the kernel's gateway rules and counters.
pub fn read(cfg: &Config) -> Result<Kernel, InspectError> {
    if cfg.gateway.is_empty() {
        return Ok(Kernel::NotAsked);
    }
    let mut nft = Nft::open()?;
    Ok(match privileged(nft.table_exists())? {
        Err(why) => Kernel::Unreadable(why),
        Ok(false) => Kernel::Absent,
        Ok(true) => Kernel::Entries(gateway_status(cfg, &mut nft, true, true)?),
    })
}

/// The text `explain --from` prints.
pub fn render(cfg: &Config, from: IpAddr, iif: Option<&str>, kernel: &Kernel) -> String {
    let mut s = String::new();
    let iface = iif.map_or("any interface".to_owned(), |i| format!("interface {i}"));
    let _ = writeln!(s, "forwarded packet from {from} arriving on {iface}");
    if cfg.gateway.is_empty() {
        s.push_str("no `gateway` entries: forwarded traffic is not touched (forwarded directly)\n");
        return s;
    }
    let rs = Ruleset::new(cfg);
    let matched = first_match(&cfg.gateway, from, iif);
    match matched {
        None => {
            let _ = writeln!(
                s,
                "no gateway entry matches ({} tried): forwarded directly{}",
                cfg.gateway.len(),
                if iif.is_none() { " (entries with `interface` need --iif)" } else { "" }
            );
        }
        Some(e) => {
            let _ = writeln!(s, "gateway[{}] (line {} of {}): {e}", e.index, e.line, cfg.origin);
            if e.index > 0 {
                let _ = writeln!(s, "  (gateway[0..{}] do not match)", e.index - 1);
            }
            match rs.entry_tproxy(e) {
                Some(t) => {
                    let mut what = vec![format!(
                        "new TCP and UDP flows go to TPROXY port {} (mark {:#x}, route table {})",
                        t.port, t.mark, cfg.route_table
                    )];
                    if t.no_udp {
                        what.push("UDP goes direct (no-udp)".into());
                    }
                    if t.no_ipv6 {
                        what.push("IPv6 goes direct (no-ipv6)".into());
                    }
                    if let Some(d) = &t.dns_hijack {
                        what.push(format!(
                            "DNS (UDP{}{}) is redirected to port {} of the address it arrived on",
                            if d.tcp { " and TCP" } else { "" },
                            if d.ip6.is_some() { ", IPv4 and IPv6" } else { ", IPv4 only" },
                            d.port
                        ));
                    }
                    what.push("other protocols go direct".into());
                    for w in what {
                        let _ = writeln!(s, "  {w}");
                    }
                }
                None if e.target == Target::Drop => {
                    s.push_str("  every new forwarded flow (any protocol) is dropped\n")
                }
                None => s.push_str("  forwarded directly\n"),
            }
            s.push_str(
                "  never affected: traffic to this host's own addresses, bypass destinations, replies, flows \
                 older than the rules, traffic that leaves through the interface it came in on\n",
            );
        }
    }
    let status = match kernel {
        Kernel::NotAsked => return s,
        Kernel::Unreadable(why) => {
            let _ = writeln!(s, "kernel: {why}");
            return s;
        }
        Kernel::Absent => {
            s.push_str("kernel: table inet cgtproxy is absent: forwarded traffic is not classified\n");
            return s;
        }
        Kernel::Entries(status) => status,
    };
    let present = status.iter().all(|g| g.present);
    let _ = writeln!(
        s,
        "kernel: gateway rules {}",
        if present { "in place" } else { "MISSING (the running daemon has another config?)" }
    );
    if let Some(g) = matched.and_then(|e| status.get(e.index))
        && let (Some(p), Some(b)) = (g.packets, g.bytes)
    {
        let _ = writeln!(s, "kernel: gateway[{}] counted {p} packets, {b} bytes", g.index);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxied_source_is_explained_with_the_kernel_counters() {
        let cfg = Config::parse(
            "version: 1\ntproxies:\n  p: {mark: 7, port: 7893}\ngateway:\n  - {source: [192.0.2.0/24], tproxy: p}\n",
            "t.yaml",
        )
        .unwrap();
        let counted = GatewayStatus {
            index: 0,
            line: 5,
            conditions: String::new(),
            target: "tproxy p".into(),
            present: true,
            packets: Some(3),
            bytes: Some(180),
        };
        let text = render(&cfg, "192.0.2.9".parse().unwrap(), None, &Kernel::Entries(vec![counted]));
        assert!(text.starts_with("forwarded packet from 192.0.2.9 arriving on any interface\ngateway[0] (line 5 of t.yaml): source [192.0.2.0/24] -> tproxy p\n  new TCP and UDP flows go to TPROXY port 7893"), "{text}");
        assert!(
            text.ends_with("kernel: gateway rules in place\nkernel: gateway[0] counted 3 packets, 180 bytes\n"),
            "{text}"
        );
        let other = render(&cfg, "198.51.100.1".parse().unwrap(), None, &Kernel::Absent);
        assert!(
            other.contains(
                "no gateway entry matches (1 tried): forwarded directly (entries with `interface` need --iif)\n"
            ),
            "{other}"
        );
        assert!(other.ends_with("kernel: table inet cgtproxy is absent: forwarded traffic is not classified\n"));
    }
}
