//! Small helpers shared by every listener: what to tell the user when a port cannot be bound, and
//! address ranges (`IpNet`) for settings such as `http.trusted_proxies`.

use std::net::SocketAddr;

/// True when the error means "this machine has no IPv6" (so the IPv4 wildcard should be tried).
pub fn ipv6_missing(e: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when IPv6 is compiled out or disabled; EADDRNOTAVAIL when no address.
    e.raw_os_error() == Some(97) || e.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// One clear sentence naming the port, the setting that chose it, and what to do.
pub fn bind_message(what: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {what} {port} ({addr}): the port is already in use by another \
             program (another confab?). Stop it or choose another port"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot listen on {what} {port} ({addr}): permission denied. Ports below 1024 need \
             CAP_NET_BIND_SERVICE (the systemd unit grants it); by hand, use a port above 1024"
        ),
        _ => format!("cannot listen on {what} {port} ({addr}): {e}"),
    }
}

/// An address range in CIDR notation (`10.0.0.0/8`, `fd7a:115c:a1e0::/48`), or one address
/// (`127.0.0.1`, a /32 or /128). IPv4-mapped IPv6 addresses match their IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// True if `ip` lies in this range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let bad =
            || format!("expected an IP address or a CIDR range such as 10.0.0.0/8, got {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::IpNet;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(
            !all.contains(ip("2001:db8::1")),
            "an IPv4 range holds no IPv6 address"
        );
        let v6: IpNet = "fd7a:115c:a1e0::/48".parse().unwrap();
        assert!(v6.contains(ip("fd7a:115c:a1e0:ab12::1")));
        assert!(!v6.contains(ip("fd7a:115c:a1e1::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "localhost",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            let e = bad.parse::<IpNet>().unwrap_err();
            assert!(e.contains("CIDR"), "{bad}: {e}");
        }
        assert_eq!(
            "::ffff:192.0.2.0/120".parse::<IpNet>().map(|n| n.to_string()),
            Err("expected an IP address or a CIDR range such as 10.0.0.0/8, got \"::ffff:192.0.2.0/120\"".to_string()),
            "a mapped address takes an IPv4 prefix"
        );
    }
}
