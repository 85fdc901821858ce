//! The media IO driver: owns the UDP media port and the ICE-TCP listener and runs them on a
//! dedicated thread (not a tokio task per packet). Each turn of its loop beats a [`Heartbeat`] that
//! readiness and the systemd watchdog read. The SFU core (`sfu/`) plugs into this loop; until then
//! datagrams are counted and dropped and ICE-TCP connections are closed.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info};

/// How long one `recv` waits before the loop turns again (beats, checks for stop). Short enough
/// that a stop request is seen within a fraction of the shutdown grace period.
const TURN: Duration = Duration::from_millis(100);

/// Time of the last loop turn, readable from any thread.
pub struct Heartbeat {
    base: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// A heartbeat whose clock started at `base` and that has not beaten since.
    pub fn started_at(base: Instant) -> Self {
        Heartbeat {
            base,
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    #[error("{}", crate::net::bind_message(what, *addr, source))]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the media thread: {0}")]
    Thread(std::io::Error),
}

/// Counters the status line and `/api/status` show.
#[derive(Default)]
pub struct MediaStats {
    pub datagrams: AtomicU64,
    pub tcp_connections: AtomicU64,
}

pub struct MediaDriver {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub heartbeat: Arc<Heartbeat>,
    pub stats: Arc<MediaStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MediaDriver {
    /// Binds both media ports and starts the media thread.
    pub fn start(bind: IpAddr, udp_port: u16, tcp_port: u16) -> Result<MediaDriver, MediaError> {
        let udp = bind_with_fallback(bind, udp_port, "media UDP port (rtc.udp_port)", |a| {
            UdpSocket::bind(a)
        })?;
        let tcp = bind_with_fallback(bind, tcp_port, "ICE-TCP port (rtc.tcp_port)", |a| {
            TcpListener::bind(a)
        })?;
        let udp_addr = udp.local_addr().map_err(MediaError::Thread)?;
        let tcp_addr = tcp.local_addr().map_err(MediaError::Thread)?;
        udp.set_read_timeout(Some(TURN))
            .map_err(MediaError::Thread)?;
        tcp.set_nonblocking(true).map_err(MediaError::Thread)?;
        let heartbeat = Arc::new(Heartbeat::default());
        heartbeat.beat();
        let stats = Arc::new(MediaStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("confab-media".into())
            .spawn({
                let (heartbeat, stats, stop) = (heartbeat.clone(), stats.clone(), stop.clone());
                move || media_loop(udp, tcp, &heartbeat, &stats, &stop)
            })
            .map_err(MediaError::Thread)?;
        info!(%udp_addr, %tcp_addr, "media ports bound");
        Ok(MediaDriver {
            udp_addr,
            tcp_addr,
            heartbeat,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the media thread to stop and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MediaDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `bind:port`; when `bind` is the IPv6 wildcard and IPv6 is unavailable, falls back to the
/// IPv4 wildcard.
pub fn bind_with_fallback<T>(
    bind: IpAddr,
    port: u16,
    what: &'static str,
    f: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> Result<T, MediaError> {
    let addr = SocketAddr::new(bind, port);
    match f(addr) {
        Ok(s) => Ok(s),
        Err(e) if bind.is_unspecified() && bind.is_ipv6() && crate::net::ipv6_missing(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            f(v4).map_err(|source| MediaError::Bind {
                what,
                addr: v4,
                source,
            })
        }
        Err(source) => Err(MediaError::Bind { what, addr, source }),
    }
}

// The poll loop: receive (with a short timeout), accept, beat, check for stop. Clearly bounded:
// every branch returns to the top within TURN.
fn media_loop(
    udp: UdpSocket,
    tcp: TcpListener,
    heartbeat: &Heartbeat,
    stats: &MediaStats,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        heartbeat.beat();
        match udp.recv_from(&mut buf) {
            Ok((_len, _from)) => {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => debug!(error = %e, "media recv failed"),
        }
        loop {
            match tcp.accept() {
                Ok((conn, _)) => {
                    stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                    drop(conn);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "ICE-TCP accept failed");
                    break;
                }
            }
        }
    }
    debug!("media loop stopped");
}
