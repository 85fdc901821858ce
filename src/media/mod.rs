//! The media IO driver: owns the UDP media sockets and the ICE-TCP listener and runs the SFU core
//! (`sfu/`) on a dedicated thread with a `mio` poll loop — not a tokio task per packet. Signalling
//! and the admin API talk to it through a [`MediaHandle`] (a channel plus a `mio::Waker`). Each
//! turn of its loop beats a [`Heartbeat`] that readiness and the systemd watchdog read.
//!
//! One UDP socket per local address (same port): str0m must know the address a datagram arrived
//! on to match it to a host candidate, and a wildcard socket does not tell. ICE-TCP uses one
//! listener; RFC 4571 framing (a 16-bit length before each packet) is done here.

mod batch;
mod tcp;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::net::Protocol;
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, info, warn};

use crate::sfu::{JoinError, JoinParams, Output, Pid, Sfu, SfuConfig};
use tcp::TcpConn;

/// Longest wait of one loop turn: beats the heartbeat and sees a stop request this often.
const TURN: Duration = Duration::from_millis(100);
const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const UDP_BASE: usize = 16;
const TCP_BASE: usize = 1 << 20;

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
    pub participants: AtomicU64,
    pub rooms: AtomicU64,
}

/// What a signalling session receives from the media thread.
#[derive(Debug)]
pub enum SessionEvent {
    Signal(Box<lk::signal_response::Message>),
    /// The server ends the session: send `leave` with this reason, then close.
    Close(lk::DisconnectReason),
}

pub type SessionTx = tmpsc::UnboundedSender<SessionEvent>;

type Call = Box<dyn FnOnce(&mut Sfu, Instant) + Send>;

enum Command {
    Join {
        params: Box<JoinParams>,
        conn: u64,
        session: SessionTx,
        reply: oneshot::Sender<Result<(Pid, String), JoinError>>,
    },
    Signal {
        pid: Pid,
        msg: Box<lk::signal_request::Message>,
    },
    SessionLost {
        pid: Pid,
        conn: u64,
    },
    Call(Call),
}

/// The media thread has stopped (shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the media engine is not running")]
pub struct MediaGone;

/// Talks to the media thread from anywhere (cheap to clone).
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    next_conn: Arc<AtomicU64>,
    /// Counters the media thread keeps current (rooms, participants, datagrams).
    pub stats: Arc<MediaStats>,
}

impl MediaHandle {
    fn send(&self, cmd: Command) -> Result<(), MediaGone> {
        self.tx.send(cmd).map_err(|_| MediaGone)?;
        self.waker.wake().map_err(|_| MediaGone)
    }

    /// A fresh id for a signalling connection (tells a resumed session from the old one).
    pub fn new_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn join(
        &self,
        params: JoinParams,
        conn: u64,
        session: SessionTx,
    ) -> Result<Result<(Pid, String), JoinError>, MediaGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Join {
            params: Box::new(params),
            conn,
            session,
            reply,
        })?;
        rx.await.map_err(|_| MediaGone)
    }

    pub fn signal(&self, pid: Pid, msg: lk::signal_request::Message) -> Result<(), MediaGone> {
        self.send(Command::Signal {
            pid,
            msg: Box::new(msg),
        })
    }

    pub fn session_lost(&self, pid: Pid, conn: u64) {
        let _ = self.send(Command::SessionLost { pid, conn });
    }

    /// Runs `f` on the media thread with the SFU and the current time; returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sfu, Instant) -> R + Send + 'static,
    ) -> Result<R, MediaGone> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Call(Box::new(move |sfu, now| {
            let _ = tx.send(f(sfu, now));
        })))?;
        rx.await.map_err(|_| MediaGone)
    }
}

pub struct MediaDriver {
    /// Every UDP address media is received on (one per local address).
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addr: SocketAddr,
    pub heartbeat: Arc<Heartbeat>,
    pub stats: Arc<MediaStats>,
    pub handle: MediaHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The local addresses to receive media on: `bind` itself, or every usable interface address
/// when `bind` is a wildcard (loopback included, link-local IPv6 left out: it needs a scope).
fn local_addresses(bind: IpAddr) -> Vec<IpAddr> {
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                bind.is_ipv6() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

impl MediaDriver {
    /// Binds the media ports and starts the media thread running the SFU.
    pub fn start(
        bind: IpAddr,
        udp_port: u16,
        tcp_port: u16,
        mut sfu_config: SfuConfig,
    ) -> Result<MediaDriver, MediaError> {
        let mut udp = vec![];
        let mut port = udp_port;
        for ip in local_addresses(bind) {
            let addr = SocketAddr::new(ip, port);
            let sock = match std::net::UdpSocket::bind(addr) {
                Ok(s) => s,
                // An address that went away between listing and binding is not fatal; the first
                // one is.
                Err(e) if !udp.is_empty() && e.kind() == ErrorKind::AddrNotAvailable => continue,
                Err(source) => {
                    return Err(MediaError::Bind {
                        what: "media UDP port (rtc.udp_port)",
                        addr,
                        source,
                    })
                }
            };
            sock.set_nonblocking(true).map_err(MediaError::Thread)?;
            let local = sock.local_addr().map_err(MediaError::Thread)?;
            // With port 0, the first socket picks a port and the others follow it.
            port = local.port();
            udp.push((UdpSocket::from_std(sock), local));
        }
        let tcp = bind_with_fallback(bind, tcp_port, "ICE-TCP port (rtc.tcp_port)", |a| {
            std::net::TcpListener::bind(a)
        })?;
        tcp.set_nonblocking(true).map_err(MediaError::Thread)?;
        let tcp_addr = tcp.local_addr().map_err(MediaError::Thread)?;
        let tcp = TcpListener::from_std(tcp);
        let udp_addrs: Vec<SocketAddr> = udp.iter().map(|(_, a)| *a).collect();
        let mut ips: Vec<IpAddr> = udp_addrs.iter().map(|a| a.ip()).collect();
        // A public address (1:1 NAT) is offered like a bound one; the NAT delivers its packets to
        // a bound address, where the SFU answers them.
        if let Some(public) = sfu_config.advertised_ip {
            if !ips.contains(&public) {
                ips.push(public);
            }
        }
        for ip in ips {
            sfu_config
                .candidates
                .push((SocketAddr::new(ip, port), Protocol::Udp));
            sfu_config
                .candidates
                .push((SocketAddr::new(ip, tcp_addr.port()), Protocol::Tcp));
        }

        let poll = Poll::new().map_err(MediaError::Thread)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaError::Thread)?);
        let (tx, rx) = mpsc::channel();
        let heartbeat = Arc::new(Heartbeat::default());
        heartbeat.beat();
        let stats = Arc::new(MediaStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            poll,
            udp,
            udp_by_addr: HashMap::new(),
            listener: tcp,
            tcp: HashMap::new(),
            tcp_by_route: HashMap::new(),
            next_tcp: TCP_BASE,
            sfu: Sfu::new(sfu_config),
            sessions: HashMap::new(),
            commands: rx,
            heartbeat: heartbeat.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            outgoing: vec![],
        };
        lp.register().map_err(MediaError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("confab-media".into())
            .spawn(move || lp.run())
            .map_err(MediaError::Thread)?;
        info!(udp = ?udp_addrs, %tcp_addr, "media ports bound");
        Ok(MediaDriver {
            udp_addrs,
            tcp_addr,
            heartbeat,
            stats: stats.clone(),
            handle: MediaHandle {
                tx,
                waker,
                next_conn: Arc::new(AtomicU64::new(1)),
                stats,
            },
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the media thread to stop and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.waker.wake();
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

/// An IPv4-mapped IPv6 address (what a dual-stack socket reports) as plain IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

struct Loop {
    poll: Poll,
    udp: Vec<(UdpSocket, SocketAddr)>,
    udp_by_addr: HashMap<SocketAddr, usize>,
    listener: TcpListener,
    tcp: HashMap<Token, TcpConn>,
    tcp_by_route: HashMap<(SocketAddr, SocketAddr), Token>,
    next_tcp: usize,
    sfu: Sfu,
    sessions: HashMap<Pid, (u64, SessionTx)>,
    commands: mpsc::Receiver<Command>,
    heartbeat: Arc<Heartbeat>,
    stats: Arc<MediaStats>,
    stop: Arc<AtomicBool>,
    /// UDP datagrams to send, per socket index: sent together by `sendmmsg` at the end of a
    /// flush.
    outgoing: Vec<Vec<str0m::net::Transmit>>,
}

impl Loop {
    fn register(&mut self) -> std::io::Result<()> {
        for (i, (sock, addr)) in self.udp.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(sock, Token(UDP_BASE + i), Interest::READABLE)?;
            self.udp_by_addr.insert(*addr, i);
        }
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut batch = batch::RecvBatch::new();
        self.outgoing = self.udp.iter().map(|_| Vec::new()).collect();
        let mut next_timeout = self.sfu.poll_timeout();
        while !self.stop.load(Ordering::Relaxed) {
            self.heartbeat.beat();
            let now = Instant::now();
            let wait = next_timeout
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(TURN)
                .min(TURN);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(error = %e, "media poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(t) if (UDP_BASE..TCP_BASE).contains(&t) => {
                        self.read_udp(t - UDP_BASE, &mut batch)
                    }
                    token => self.tcp_ready(token, ev.is_readable(), ev.is_writable()),
                }
                self.flush();
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
                self.flush();
            }
            // The SFU's next deadline is asked once per turn (it scans every peer).
            let now = Instant::now();
            next_timeout = self.sfu.poll_timeout();
            if next_timeout.is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
                self.flush();
                next_timeout = self.sfu.poll_timeout();
            }
            self.stats
                .participants
                .store(self.sfu.participant_count() as u64, Ordering::Relaxed);
            self.stats
                .rooms
                .store(self.sfu.rooms().count() as u64, Ordering::Relaxed);
        }
        for (_, (_, tx)) in self.sessions.drain() {
            let _ = tx.send(SessionEvent::Close(lk::DisconnectReason::ServerShutdown));
        }
        debug!("media loop stopped");
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join {
                params,
                conn,
                session,
                reply,
            } => {
                let result = self.sfu.join(now, *params);
                if let Ok((pid, _)) = &result {
                    self.sessions.insert(*pid, (conn, session));
                }
                let _ = reply.send(result);
            }
            Command::Signal { pid, msg } => self.sfu.handle_signal(now, pid, *msg),
            Command::SessionLost { pid, conn } => {
                if self.sessions.get(&pid).is_some_and(|(c, _)| *c == conn) {
                    self.sessions.remove(&pid);
                    self.sfu.session_lost(now, pid);
                }
            }
            Command::Call(f) => f(&mut self.sfu, now),
        }
    }

    /// Reads the socket dry, a batch (`recvmmsg`) at a time; what the SFU produces for a batch
    /// goes out together (`sendmmsg`).
    fn read_udp(&mut self, i: usize, batch: &mut batch::RecvBatch) {
        loop {
            let Some((sock, local)) = self.udp.get(i) else {
                return;
            };
            let local = *local;
            match batch.recv(sock) {
                Ok(n) => {
                    self.stats.datagrams.fetch_add(n as u64, Ordering::Relaxed);
                    let now = Instant::now();
                    for k in 0..n {
                        if let Some((from, data)) = batch.get(k) {
                            self.sfu.receive(now, Protocol::Udp, from, local, data);
                        }
                    }
                    self.flush();
                    if n < batch::BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors surface here (ECONNREFUSED from a peer that left): not fatal.
                    debug!(error = %e, "media recv failed");
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                    let Ok(local) = stream.local_addr() else {
                        continue;
                    };
                    let (local, peer) = (unmap(local), unmap(peer));
                    let token = Token(self.next_tcp);
                    self.next_tcp += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        debug!(error = %e, "ICE-TCP connection not registered");
                        continue;
                    }
                    debug!(%peer, %local, "ICE-TCP connection");
                    self.tcp.insert(token, TcpConn::new(stream, local, peer));
                    self.tcp_by_route.insert((local, peer), token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(error = %e, "ICE-TCP accept failed");
                    return;
                }
            }
        }
    }

    fn tcp_ready(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(conn) = self.tcp.get_mut(&token) else {
            return;
        };
        let mut frames = vec![];
        let mut alive = true;
        if readable {
            alive = conn.read_frames(&mut frames);
        }
        if writable && alive {
            alive = conn.write_pending();
        }
        let (local, peer) = (conn.local, conn.peer);
        for f in frames {
            self.sfu
                .receive(Instant::now(), Protocol::Tcp, peer, local, &f);
            self.flush();
        }
        if !alive {
            if let Some(mut c) = self.tcp.remove(&token) {
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            self.tcp_by_route.remove(&(local, peer));
        }
    }

    /// Sends what the SFU produced: datagrams, frames, signal responses.
    fn flush(&mut self) {
        while let Some(out) = self.sfu.poll_output() {
            match out {
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp => {
                        let Some(i) = self.udp_by_addr.get(&t.source) else {
                            debug!(source = %t.source, "no socket for a transmit's source");
                            continue;
                        };
                        if let Some(q) = self.outgoing.get_mut(*i) {
                            q.push(t);
                        }
                    }
                    Protocol::Tcp => {
                        let key = (t.source, t.destination);
                        if let Some(conn) = self
                            .tcp_by_route
                            .get(&key)
                            .and_then(|tok| self.tcp.get_mut(tok))
                        {
                            conn.send_frame(&t.contents);
                        }
                    }
                    _ => {}
                },
                Output::Signal(pid, msg) => {
                    if let Some((_, tx)) = self.sessions.get(&pid) {
                        let _ = tx.send(SessionEvent::Signal(msg));
                    }
                }
                Output::Close(pid, reason) => {
                    if let Some((_, tx)) = self.sessions.remove(&pid) {
                        if reason != lk::DisconnectReason::ClientInitiated {
                            let _ = tx.send(SessionEvent::Close(reason));
                        }
                    }
                }
            }
        }
        for (q, (sock, _)) in self.outgoing.iter_mut().zip(&self.udp) {
            if q.is_empty() {
                continue;
            }
            let items: Vec<(SocketAddr, &[u8])> =
                q.iter().map(|t| (t.destination, &t.contents[..])).collect();
            // A full send buffer drops a datagram, like the network would.
            batch::send(sock, &items);
            q.clear();
        }
    }
}
