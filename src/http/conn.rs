//! What one HTTP(S) connection may hold: a place under the connection caps (in all and per client
//! address) and time limits, so that idle or trickling clients cannot pile up (slowloris).
//!
//! - A TLS handshake must finish within [`HANDSHAKE_TIMEOUT`].
//! - The first request must start within [`FIRST_REQUEST_TIMEOUT`] of the handshake; HTTP/1
//!   request headers must arrive within [`HEADER_TIMEOUT`] (hyper's header read timeout, which
//!   also ends an idle keep-alive connection).
//! - A connection with no request in progress for [`IDLE_TIMEOUT`] is closed (HTTP/2 included).
//!   A WebSocket is not an open request: once upgraded it leaves this bookkeeping and the
//!   signalling session's own pings and write timeout govern it.
//! - Request bodies must arrive within [`BODY_TIMEOUT`] ([`read_body`]).
//! - New connections beyond `http.max_connections` in all, or `http.max_connections_per_address`
//!   from one TCP peer (trusted proxies exempt), are closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tracing::warn;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's HTTP/1 read buffer at most: request line and headers must fit (a LiveKit token with
/// 64 KB of metadata in `?access_token=` does); 431 beyond.
pub const MAX_HEADER_BYTES: usize = 128 * 1024;

/// How often a refused connection is logged at most (with the count since the last line).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Open connections, in all and per TCP peer address.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    refused: u64,
    logged: Option<Instant>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerAddress,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_address,
            open: Mutex::default(),
        })
    }

    /// A place for a new connection from `peer` (`exempt`: a trusted proxy, which carries many
    /// clients and so counts only toward the total), held until the [`Slot`] is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, exempt: bool) -> Result<Slot, Refused> {
        let peer = peer.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_address.get(&peer).copied().unwrap_or(0);
        let refused = if open.total >= self.max_total {
            Some(Refused::Total)
        } else if !exempt && mine >= self.max_per_address {
            Some(Refused::PerAddress)
        } else {
            None
        };
        if let Some(why) = refused {
            open.refused += 1;
            if open
                .logged
                .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
            {
                let (limit, setting) = match why {
                    Refused::Total => (self.max_total, "http.max_connections"),
                    Refused::PerAddress => {
                        (self.max_per_address, "http.max_connections_per_address")
                    }
                };
                warn!(
                    from = %peer,
                    limit,
                    setting,
                    refused_since_last_report = open.refused,
                    "refusing new connections: too many open"
                );
                open.refused = 0;
                open.logged = Some(Instant::now());
            }
            return Err(why);
        }
        open.total += 1;
        *open.per_address.entry(peer).or_insert(0) += 1;
        Ok(Slot {
            limits: self.clone(),
            peer,
        })
    }

    /// Open connections now (in all, from `peer`).
    pub fn open(&self, peer: IpAddr) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_address.get(&peer.to_canonical()).copied();
        (open.total, mine.unwrap_or(0))
    }
}

/// One admitted connection's place under the caps.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnLimits>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.peer);
            }
        }
    }
}

/// Requests in progress on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Idle {
    /// tokio's clock (so that tests can pause it).
    start: tokio::time::Instant,
    busy: AtomicUsize,
    /// Milliseconds after `start` when the last request ended.
    idle_since_ms: AtomicU64,
    served: AtomicBool,
}

impl Default for Idle {
    fn default() -> Idle {
        Idle {
            start: tokio::time::Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }
    }
}

/// Marks a request in progress until dropped.
pub struct Busy(Arc<Idle>);

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.start.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Idle {
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// How long until this connection has been idle too long (`None`: it has, close it).
    fn remaining(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return Some(IDLE_TIMEOUT);
        }
        let limit = if self.served.load(Ordering::Relaxed) {
            IDLE_TIMEOUT
        } else {
            FIRST_REQUEST_TIMEOUT
        };
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        let idle = self.start.elapsed().saturating_sub(since);
        limit.checked_sub(idle).filter(|d| !d.is_zero())
    }

    /// Resolves once the connection has had no request in progress for too long.
    pub async fn expired(&self) {
        while let Some(wait) = self.remaining() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body not received within {} s", BODY_TIMEOUT.as_secs())]
    TimedOut,
    #[error("reading the request body: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            BodyError::TooLarge(_) => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => hyper::StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole request body of at most `max` bytes within [`BODY_TIMEOUT`].
pub async fn read_body<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let limits = ConnLimits::new(5, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = limits.admit(a, false).unwrap();
        let _a2 = limits.admit(a, false).unwrap();
        assert_eq!(limits.admit(a, false).unwrap_err(), Refused::PerAddress);
        // The same address seen through a dual-stack socket counts as the same.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            limits.admit(mapped, false).unwrap_err(),
            Refused::PerAddress
        );
        let _b1 = limits.admit(b, false).unwrap();
        // A trusted proxy is held only to the total.
        let _p1 = limits.admit(proxy, true).unwrap();
        let _p2 = limits.admit(proxy, true).unwrap();
        assert_eq!(limits.admit(proxy, true).unwrap_err(), Refused::Total);
        assert_eq!(limits.open(a), (5, 2));
        drop(a1);
        assert_eq!(limits.open(a), (4, 1));
        let _a3 = limits.admit(a, false).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_and_busy_ones_do_not() {
        use tokio::time::Instant;
        let idle = Arc::new(Idle::default());
        // No request yet: the first-request deadline.
        let t = Instant::now();
        idle.expired().await;
        assert!(t.elapsed() >= FIRST_REQUEST_TIMEOUT);

        let idle = Arc::new(Idle::default());
        let busy = idle.busy();
        let waiting = tokio::spawn({
            let idle = idle.clone();
            async move { idle.expired().await }
        });
        tokio::time::sleep(IDLE_TIMEOUT * 3).await;
        assert!(
            !waiting.is_finished(),
            "a connection with a request in progress expired"
        );
        let ended = Instant::now();
        drop(busy);
        waiting.await.unwrap();
        assert!(ended.elapsed() >= IDLE_TIMEOUT);
    }

    /// A body whose first bytes arrive and then nothing more.
    struct Trickle(bool);

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return std::task::Poll::Pending;
            }
            let first = hyper::body::Frame::data(Bytes::from_static(b"{\"par"));
            std::task::Poll::Ready(Some(Ok(first)))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_that_trickle_or_are_too_large_are_errors() {
        let r = read_body(Trickle(false), 1024).await;
        assert!(matches!(r, Err(BodyError::TimedOut)), "{r:?}");

        let big = http_body_util::Full::new(Bytes::from(vec![b'x'; 2048]));
        let r = read_body(big, 1024).await;
        assert!(matches!(r, Err(BodyError::TooLarge(1024))), "{r:?}");
        let ok = read_body(http_body_util::Full::new(Bytes::from_static(b"{}")), 1024).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"{}"));
    }
}
