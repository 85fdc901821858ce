//! Who a request came from. The TCP peer, unless that peer is one of the operator's trusted
//! proxies (`http.trusted_proxies`): then the client that proxy names in `X-Forwarded-For`.
//!
//! Per-client limits (failed admin logins, wrong room passcodes) count by this address. Behind a
//! reverse proxy that is not listed, every client shares the proxy's address, so confab says so
//! in the log once. A client that talks to confab directly cannot choose its address with a
//! forged header: the header is read only from a trusted peer, and from the right (the hop
//! nearest confab) until the first address that is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::header::HeaderMap;
use tracing::warn;

use crate::net::IpNet;

/// The TCP peer of a request (put into its extensions by the server).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The configured trusted proxies, and whether the "untrusted proxy" warning was logged.
#[derive(Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    warned: AtomicBool,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies {
            nets,
            warned: AtomicBool::new(false),
        }
    }

    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from `peer` with these headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        let mut hops = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect::<Vec<&str>>();
        if !self.trusted(peer) {
            if !hops.is_empty() && !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    proxy = %peer,
                    "requests arrive through a proxy that is not in http.trusted_proxies: every \
                     client behind it counts as {peer} (one login lockout for all); add it to \
                     http.trusted_proxies (CONFAB_TRUSTED_PROXIES)"
                );
            }
            return peer;
        }
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusted(ip) {
                        break;
                    }
                }
                // Garbage: the nearest trusted hop is all that can be believed.
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: `a.b.c.d`, `a.b.c.d:port`, `v6`, or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let p = proxies(&[]);
        let h = headers(&["198.51.100.7"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        assert_eq!(p.client_ip(ip("::ffff:192.0.2.1"), &h), ip("192.0.2.1"));
    }

    #[test]
    fn a_direct_client_cannot_forge_its_address() {
        let p = proxies(&["127.0.0.1", "::1"]);
        // Not from the proxy: whatever the header says, the TCP peer counts.
        let h = headers(&["127.0.0.1", "10.9.9.9"]);
        assert_eq!(p.client_ip(ip("203.0.113.4"), &h), ip("203.0.113.4"));
    }

    #[test]
    fn through_trusted_proxies_the_first_untrusted_hop_from_the_right_counts() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // Caddy on loopback: the client it saw.
        let h = headers(&["198.51.100.7"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // The client put a fake address first; two proxies (10.0.0.5 then loopback) appended.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(p.client_ip(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.7"));
        // Ports and brackets as some proxies write them.
        let h = headers(&["[2001:db8::7]:4711"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&["192.0.2.8:1234"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("192.0.2.8"));
        // Garbage after a trusted hop: that hop is the client as far as confab can tell.
        let h = headers(&["not-an-address, 10.0.0.5"]);
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.5"));
        // No header from a trusted peer (a health probe on the device): the peer.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &headers(&[])), ip("127.0.0.1"));
    }
}
