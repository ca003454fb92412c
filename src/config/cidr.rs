//! Addresses and prefixes of the `bypass` list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parse `ADDR` or `ADDR/LEN`. Host bits are cleared, as `ip` and Go's
    /// `net.ParseCIDR` do, so `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{:?} is not an IPv4/IPv6 address or CIDR", super::limits::clip(text)))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!("{:?} has an invalid prefix length (0 to {max})", super::limits::clip(text)));
                }
            },
        };
        Ok(Cidr { addr, prefix }.masked())
    }

    fn masked(self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr { addr, ..self }
    }

    /// Is `ip` inside this prefix (same family)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let x = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(a)) => u128::from(u32::from(a)),
            (IpAddr::V6(_), IpAddr::V6(a)) => u128::from(a),
            _ => return false,
        };
        let (start, end) = self.range();
        (start..=end).contains(&x)
    }

    /// First and last address as integers (IPv4 in the low 32 bits).
    pub fn range(&self) -> (u128, u128) {
        match self.addr {
            IpAddr::V4(a) => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                let start = u32::from(a);
                (u128::from(start), u128::from(start | host))
            }
            IpAddr::V6(a) => {
                let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                let start = u128::from(a);
                (start, start | host)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max { write!(f, "{}", self.addr) } else { write!(f, "{}/{}", self.addr, self.prefix) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1");
        assert_eq!(Cidr::parse("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().range(), (0, 0xffff_ffff));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("::/129").is_err());
    }
}
