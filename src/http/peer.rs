//! Who a request came from. The TCP peer, unless that peer is one of the operator's trusted
//! proxies (`http.trusted_proxies`): then the client that proxy names in `X-Forwarded-For`.
//!
//! Per-client limits (failed admin logins, wrong room passcodes) count by this address. Behind a
//! reverse proxy that is not listed, every client shares the proxy's address, so confab says so
//! in the log once. A client that talks to confab directly cannot choose its address with a
//! forged header: the header is read only from a trusted peer, and from the right (the hop
//! nearest confab) until the first address that is not a trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The key per-client limits count by: the address itself for IPv4, its /64 for IPv6 (one
/// subscriber or host gets a whole /64, so single IPv6 addresses cost an attacker nothing).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Failures counted per client ([`client_key`]), `max` within `window` of the first one, then
/// blocked until the window ends (in memory: a restart forgets them). Old entries are swept at
/// most once a second, so a flood of addresses costs one pass per second, not one per request.
#[derive(Debug)]
pub struct Failures {
    max: u32,
    window: Duration,
    inner: Mutex<FailureMap>,
}

#[derive(Debug, Default)]
struct FailureMap {
    counts: HashMap<IpAddr, (u32, Instant)>,
    swept: Option<Instant>,
}

impl Failures {
    pub fn new(max: u32, window: Duration) -> Failures {
        Failures {
            max,
            window,
            inner: Mutex::default(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailureMap> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.swept
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let window = self.window;
            m.counts.retain(|_, (_, since)| since.elapsed() < window);
            m.swept = Some(Instant::now());
        }
        m
    }

    /// Has `client` used up its failures in the window?
    pub fn blocked(&self, client: IpAddr) -> bool {
        let max = self.max;
        let window = self.window;
        self.lock()
            .counts
            .get(&client_key(client))
            .is_some_and(|(n, since)| *n >= max && since.elapsed() < window)
    }

    /// Counts one failure from `client`; returns its count in the window.
    pub fn failed(&self, client: IpAddr) -> u32 {
        let window = self.window;
        let mut m = self.lock();
        let entry = m
            .counts
            .entry(client_key(client))
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0
    }

    /// Forgets `client`'s failures (after a success).
    pub fn forget(&self, client: IpAddr) {
        self.lock().counts.remove(&client_key(client));
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

    #[test]
    fn failures_block_after_max_per_client_and_ipv6_counts_by_slash_64() {
        let f = Failures::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 1..=3 {
            assert!(!f.blocked(a));
            assert_eq!(f.failed(a), n);
        }
        assert!(f.blocked(a));
        assert!(!f.blocked("192.0.2.8".parse().unwrap()));
        f.forget(a);
        assert!(!f.blocked(a));

        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for _ in 0..3 {
            f.failed(v6);
        }
        assert!(
            f.blocked(same_64),
            "another address in the same /64 is the same client"
        );
        assert!(!f.blocked(other_64));
        // IPv4 seen through a dual-stack socket is the IPv4 address.
        assert!(!f.blocked("::ffff:192.0.2.9".parse().unwrap()));
        f.failed("::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(f.failed("192.0.2.9".parse().unwrap()), 2);
    }

    #[test]
    fn failures_end_with_their_window() {
        let f = Failures::new(1, Duration::from_millis(50));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        f.failed(a);
        assert!(f.blocked(a));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!f.blocked(a));
        assert_eq!(f.failed(a), 1, "a new window starts from zero");
    }
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
