//! The media IO driver: owns the UDP media sockets and the ICE-TCP listeners and runs the SFU core
//! (`sfu/`) on dedicated threads with `mio` poll loops — not a tokio task per packet. Signalling
//! and the admin API talk to them through a [`MediaHandle`] (a channel plus a `mio::Waker` per
//! thread). Each turn of a loop beats that thread's [`Heartbeat`], which readiness and the
//! systemd watchdog read.
//!
//! **Shards.** `rtc.media_threads` media threads (default: one per core), each with its own
//! `Sfu`, its own UDP sockets on `rtc.udp_port + i` and its own ICE-TCP listener on
//! `rtc.tcp_port + i`; each offers only its own ports as ICE candidates, so a client's media
//! reaches the thread that hosts its room without any hand-off. Every room lives on exactly one
//! shard: [`MediaHandle`] keeps the room → shard map, puts a new room on the shard with the
//! fewest participants, and enforces `rtc.max_rooms` over all shards; a shard reports the rooms
//! that closed on it. With one thread this is the single media loop confab always had.
//!
//! One UDP socket per local address (same port): str0m must know the address a datagram arrived
//! on to match it to a host candidate, and a wildcard socket does not tell. RFC 4571 framing for
//! ICE-TCP (a 16-bit length before each packet) is done here.

mod batch;
mod queue;
mod tcp;

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::net::Protocol;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, info, warn};

use crate::sfu::delay::{self, DelayHistogram};
use crate::sfu::{JoinError, JoinParams, Output, Pid, Reply, Request, Sfu, SfuConfig};
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

/// Counters the status line, `/api/status` and `/metrics` show. Each is written by its media
/// thread alone: per batch of datagrams or once per loop turn, never per packet.
#[derive(Default)]
pub struct MediaStats {
    /// UDP datagrams received.
    pub datagrams: AtomicU64,
    /// UDP bytes received, and datagrams and bytes the kernel took to send (`sendmmsg`).
    /// ICE-TCP is not counted here.
    pub udp_bytes_in: AtomicU64,
    pub udp_datagrams_out: AtomicU64,
    pub udp_bytes_out: AtomicU64,
    /// The media thread's Linux thread id (for its `/proc/self/task/<tid>/stat`); 0 until it
    /// runs.
    pub tid: AtomicU64,
    /// Time the loop spent working (not waiting in `poll`), in ns: its load is the rate of this.
    pub busy_ns: AtomicU64,
    /// RTP counters from str0m's statistics (`sfu::counters`).
    pub rtp: Arc<crate::sfu::counters::RtpCounters>,
    pub tcp_connections: AtomicU64,
    pub participants: AtomicU64,
    pub rooms: AtomicU64,
    /// Arrival of a forwarded packet → its copy sent (sampled, `sfu::delay`).
    pub forward_delay: DelayHistogram,
    /// The same for audio alone (which str0m does not pace).
    pub forward_delay_audio: DelayHistogram,
}

pub use queue::{session_channel, QueueFull, SessionEvent, SessionQueue, SessionRx, SessionTx};

/// A test's own code to run on a shard (to stall it).
#[cfg(test)]
type Call = Box<dyn FnOnce(&mut Sfu, Instant) + Send>;

enum Command {
    /// A join, counted in its room's route (`Route::pending`) until this shard has run it.
    Join {
        params: Box<JoinParams>,
        conn: u64,
        session: SessionTx,
        reply: oneshot::Sender<Result<(Pid, String), JoinError>>,
    },
    Signal {
        pid: Pid,
        msg: Box<lk::signal_request::Message>,
        /// The session's allowance for what it has read and not had handled yet (released
        /// once the request is handled).
        _held: Option<OwnedSemaphorePermit>,
    },
    SessionLost {
        pid: Pid,
        conn: u64,
    },
    /// A request of the API side. With `room`, one that may create it here, counted in its
    /// route like a join.
    Request {
        room: Option<String>,
        req: Box<Request>,
        reply: oneshot::Sender<Reply>,
    },
    #[cfg(test)]
    Call(Call),
}

/// The media thread has stopped (shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the media engine is not running")]
pub struct MediaGone;

/// A participant as the signalling side knows it: the media thread (shard) its room lives on
/// and its key in that shard's SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardPid {
    pub shard: usize,
    pub pid: Pid,
}

/// Which shard a room lives on. `pending` counts joins and room-creating calls sent to that shard
/// and not yet run there: while any is in flight the route stays even if the room closed
/// meanwhile (the queued join recreates it on the same shard), so a room never splits.
#[derive(Debug, Clone, Copy)]
struct Route {
    shard: usize,
    pending: u32,
}

/// Room → shard, shared by the handle (which assigns) and the shards (which report closed rooms).
#[derive(Default)]
struct Router {
    rooms: HashMap<String, Route>,
}

type SharedRouter = Arc<Mutex<Router>>;

fn lock(router: &SharedRouter) -> MutexGuard<'_, Router> {
    router.lock().unwrap_or_else(|e| e.into_inner())
}

/// One media thread as seen from outside.
struct Shard {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    stats: Arc<MediaStats>,
    heartbeat: Arc<Heartbeat>,
}

impl Shard {
    fn send(&self, cmd: Command) -> Result<(), MediaGone> {
        self.tx.send(cmd).map_err(|_| MediaGone)?;
        self.waker.wake().map_err(|_| MediaGone)
    }
}

struct Shared {
    shards: Vec<Shard>,
    router: SharedRouter,
    next_conn: AtomicU64,
    /// Rooms the whole server hosts at once (`rtc.max_rooms`), over all shards.
    max_rooms: u32,
}

/// Talks to the media threads from anywhere (cheap to clone). Every room lives on exactly one
/// media thread (shard); a new room goes to the shard with the fewest participants.
#[derive(Clone)]
pub struct MediaHandle {
    shared: Arc<Shared>,
}

/// Counters summed over all shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaTotals {
    pub datagrams: u64,
    pub tcp_connections: u64,
    pub participants: u64,
    pub rooms: u64,
    /// Counts per bucket of the delay confab added to forwarded packets (`sfu::delay`).
    pub forward_delay: Vec<u64>,
    /// The same for audio alone.
    pub forward_delay_audio: Vec<u64>,
}

impl MediaHandle {
    fn shard(&self, i: usize) -> Result<&Shard, MediaGone> {
        self.shared.shards.get(i).ok_or(MediaGone)
    }

    /// How many media threads there are.
    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// The shard `room` lives on, if it exists (or is being created).
    pub fn shard_of(&self, room: &str) -> Option<usize> {
        lock(&self.shared.router).rooms.get(room).map(|r| r.shard)
    }

    /// Every media thread's heartbeat (health fails if any is stale).
    pub fn heartbeats(&self) -> Vec<Arc<Heartbeat>> {
        self.shared
            .shards
            .iter()
            .map(|s| s.heartbeat.clone())
            .collect()
    }

    /// One shard's counters.
    pub fn shard_stats(&self, i: usize) -> Option<Arc<MediaStats>> {
        self.shared.shards.get(i).map(|s| s.stats.clone())
    }

    /// Rooms, participants, datagrams and ICE-TCP connections over all shards.
    pub fn totals(&self) -> MediaTotals {
        let mut t = MediaTotals::default();
        for s in &self.shared.shards {
            t.datagrams += s.stats.datagrams.load(Ordering::Relaxed);
            t.tcp_connections += s.stats.tcp_connections.load(Ordering::Relaxed);
            t.participants += s.stats.participants.load(Ordering::Relaxed);
            t.rooms += s.stats.rooms.load(Ordering::Relaxed);
            s.stats.forward_delay.add_to(&mut t.forward_delay);
            s.stats
                .forward_delay_audio
                .add_to(&mut t.forward_delay_audio);
        }
        t
    }

    /// A fresh id for a signalling connection (tells a resumed session from the old one).
    pub fn new_conn_id(&self) -> u64 {
        self.shared.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The shard for `room`, counting one more operation in flight to it. A room not hosted yet
    /// goes to the shard with the fewest participants (then the fewest rooms), unless the server
    /// already hosts `rtc.max_rooms` rooms.
    fn reserve(&self, room: &str) -> Result<usize, JoinError> {
        let mut router = lock(&self.shared.router);
        if let Some(route) = router.rooms.get_mut(room) {
            route.pending += 1;
            return Ok(route.shard);
        }
        if router.rooms.len() as u32 >= self.shared.max_rooms {
            return Err(JoinError::TooManyRooms(self.shared.max_rooms));
        }
        let mut rooms_on = vec![0usize; self.shared.shards.len()];
        for r in router.rooms.values() {
            if let Some(n) = rooms_on.get_mut(r.shard) {
                *n += 1;
            }
        }
        let shard = self
            .shared
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| {
                (
                    s.stats.participants.load(Ordering::Relaxed),
                    rooms_on.get(*i).copied().unwrap_or(0),
                    *i,
                )
            })
            .map_or(0, |(i, _)| i);
        router
            .rooms
            .insert(room.to_string(), Route { shard, pending: 1 });
        info!(%room, media_thread = shard, "room placed on a media thread");
        Ok(shard)
    }

    /// Undoes a [`reserve`](Self::reserve) whose command never reached its shard.
    fn unreserve(&self, room: &str) {
        let mut router = lock(&self.shared.router);
        if let Some(route) = router.rooms.get_mut(room) {
            route.pending = route.pending.saturating_sub(1);
        }
    }

    pub async fn join(
        &self,
        params: JoinParams,
        conn: u64,
        session: SessionTx,
    ) -> Result<Result<(ShardPid, String), JoinError>, MediaGone> {
        let room = params.room.clone();
        if let Some(sid) = &params.resume_sid {
            // A resumed participant's room exists; without one there is nobody to resume.
            if self.shard_of(&room).is_none() {
                return Ok(Err(JoinError::CannotResume(sid.clone())));
            }
        }
        let shard = match self.reserve(&room) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (reply, rx) = oneshot::channel();
        let sent = self.shard(shard).and_then(|s| {
            s.send(Command::Join {
                params: Box::new(params),
                conn,
                session,
                reply,
            })
        });
        if let Err(e) = sent {
            self.unreserve(&room);
            return Err(e);
        }
        let result = rx.await.map_err(|_| MediaGone)?;
        Ok(result.map(|(pid, sid)| (ShardPid { shard, pid }, sid)))
    }

    pub fn signal(&self, p: ShardPid, msg: lk::signal_request::Message) -> Result<(), MediaGone> {
        self.signal_held(p, msg, None)
    }

    /// [`MediaHandle::signal`], holding `permit` (of the session's inbound allowance) until the
    /// media thread has handled the request.
    pub fn signal_held(
        &self,
        p: ShardPid,
        msg: lk::signal_request::Message,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), MediaGone> {
        self.shard(p.shard)?.send(Command::Signal {
            pid: p.pid,
            msg: Box::new(msg),
            _held: permit,
        })
    }

    pub fn session_lost(&self, p: ShardPid, conn: u64) {
        if let Ok(s) = self.shard(p.shard) {
            let _ = s.send(Command::SessionLost { pid: p.pid, conn });
        }
    }

    /// Runs `f` on shard `shard` with its SFU and the current time; returns its result. Only
    /// for tests (stalling a shard); the API side sends [`Request`]s.
    #[cfg(test)]
    pub async fn call_shard<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Sfu, Instant) -> R + Send + 'static,
    ) -> Result<R, MediaGone> {
        let (tx, rx) = oneshot::channel();
        self.shard(shard)?
            .send(Command::Call(Box::new(move |sfu, now| {
                let _ = tx.send(f(sfu, now));
            })))?;
        rx.await.map_err(|_| MediaGone)
    }

    /// Has shard `shard` answer `req`.
    pub async fn request_shard(&self, shard: usize, req: Request) -> Result<Reply, MediaGone> {
        let (reply, rx) = oneshot::channel();
        self.shard(shard)?.send(Command::Request {
            room: None,
            req: Box::new(req),
            reply,
        })?;
        rx.await.map_err(|_| MediaGone)
    }

    /// Has the shard that hosts `room` answer `req` (shard 0 when no shard does, where the
    /// room is not found). [`Request::CreateRoom`] goes to the shard chosen for a new room, and
    /// is refused with [`JoinError::TooManyRooms`] when that would exceed `rtc.max_rooms` over
    /// all shards.
    pub async fn request(&self, room: &str, req: Request) -> Result<Reply, MediaGone> {
        if !matches!(req, Request::CreateRoom { .. }) {
            let shard = self.shard_of(room).unwrap_or(0);
            return self.request_shard(shard, req).await;
        }
        let shard = match self.reserve(room) {
            Ok(s) => s,
            Err(e) => return Ok(Reply::Created(Err(e))),
        };
        let (reply, rx) = oneshot::channel();
        let sent = self.shard(shard).and_then(|s| {
            s.send(Command::Request {
                room: Some(room.to_string()),
                req: Box::new(req),
                reply,
            })
        });
        if let Err(e) = sent {
            self.unreserve(room);
            return Err(e);
        }
        rx.await.map_err(|_| MediaGone)
    }

    /// Has every shard answer `req`; the replies in shard order.
    pub async fn request_all(&self, req: Request) -> Result<Vec<Reply>, MediaGone> {
        let mut waits = Vec::with_capacity(self.shared.shards.len());
        for shard in &self.shared.shards {
            let (reply, rx) = oneshot::channel();
            shard.send(Command::Request {
                room: None,
                req: Box::new(req.clone()),
                reply,
            })?;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            out.push(rx.await.map_err(|_| MediaGone)?);
        }
        Ok(out)
    }

    /// `Sfu::list_rooms` over all shards, sorted by name.
    pub async fn list_rooms(&self, names: Vec<String>) -> Result<Vec<lk::Room>, MediaGone> {
        let mut rooms: Vec<lk::Room> = self
            .request_all(Request::ListRooms { names })
            .await?
            .into_iter()
            .flat_map(|r| match r {
                Reply::Rooms(rooms) => rooms,
                _ => vec![],
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }
}

/// The ports and addresses of one media thread.
#[derive(Debug, Clone)]
pub struct ShardPorts {
    /// Every UDP address it receives media on (one per local address, same port).
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addr: SocketAddr,
}

pub struct MediaDriver {
    /// Per media thread: its UDP addresses and ICE-TCP listener.
    pub shards: Vec<ShardPorts>,
    pub handle: MediaHandle,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The local addresses to receive media on: `bind` itself, or every usable interface address
/// when `bind` is a wildcard (loopback included, link-local IPv6 left out: it needs a scope).
pub fn local_addresses(bind: IpAddr) -> Vec<IpAddr> {
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

/// Media ports and threads: `rtc.media_threads` shards; shard `i` receives UDP on
/// `udp_port + i` and ICE-TCP on `tcp_port + i` and offers only its own as candidates.
#[derive(Clone)]
pub struct MediaPlan {
    pub bind: IpAddr,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub threads: usize,
    /// Where the SFUs' events go (webhooks, agents, metrics).
    pub events: crate::events::Bus,
    /// Where recorded packets go (the record service); `None`: nothing records.
    pub record: Option<std::sync::Arc<dyn crate::sfu::RecordSink>>,
}

/// The sockets of one shard, bound before any thread starts.
struct Bound {
    udp: Vec<(UdpSocket, SocketAddr)>,
    tcp: TcpListener,
    ports: ShardPorts,
}

fn offset_port(base: u16, i: usize, what: &'static str, bind: IpAddr) -> Result<u16, MediaError> {
    u16::try_from(base as usize + i).map_err(|_| MediaError::Bind {
        what,
        addr: SocketAddr::new(bind, base),
        source: std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("port {base} + {i} (media thread {i}) is beyond 65535"),
        ),
    })
}

fn bind_shard(bind: IpAddr, udp_port: u16, tcp_port: u16) -> Result<Bound, MediaError> {
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
                    what: "media UDP port (rtc.udp_port + media thread)",
                    addr,
                    source,
                })
            }
        };
        sock.set_nonblocking(true).map_err(MediaError::Thread)?;
        if let Err(e) = batch::enable_arrival_stamps(&sock) {
            // Only the forwarding delay figure loses the time datagrams wait in the socket.
            debug!(error = %e, "no arrival timestamps on the media socket");
        }
        let local = sock.local_addr().map_err(MediaError::Thread)?;
        // With port 0, the first socket picks a port and the others follow it.
        port = local.port();
        udp.push((UdpSocket::from_std(sock), local));
    }
    let tcp = bind_with_fallback(
        bind,
        tcp_port,
        "ICE-TCP port (rtc.tcp_port + media thread)",
        std::net::TcpListener::bind,
    )?;
    tcp.set_nonblocking(true).map_err(MediaError::Thread)?;
    let tcp_addr = tcp.local_addr().map_err(MediaError::Thread)?;
    let udp_addrs = udp.iter().map(|(_, a)| *a).collect();
    Ok(Bound {
        udp,
        tcp: TcpListener::from_std(tcp),
        ports: ShardPorts {
            udp_addrs,
            tcp_addr,
        },
    })
}

/// The SFU configuration of one shard: `base` with the shard's own ports as host candidates.
fn shard_config(base: &SfuConfig, ports: &ShardPorts) -> SfuConfig {
    let mut cfg = base.clone();
    let udp_port = ports.udp_addrs.first().map_or(0, |a| a.port());
    let mut ips: Vec<IpAddr> = ports.udp_addrs.iter().map(|a| a.ip()).collect();
    // A public address (1:1 NAT) is offered like a bound one; the NAT delivers its packets to
    // a bound address, where the SFU answers them.
    if let Some(public) = cfg.advertised_ip {
        if !ips.contains(&public) {
            ips.push(public);
        }
    }
    for ip in ips {
        cfg.candidates
            .push((SocketAddr::new(ip, udp_port), Protocol::Udp));
        cfg.candidates
            .push((SocketAddr::new(ip, ports.tcp_addr.port()), Protocol::Tcp));
    }
    cfg
}

impl MediaDriver {
    /// Binds every shard's media ports, then starts one media thread per shard, each running
    /// its own SFU.
    pub fn start(plan: &MediaPlan, sfu_config: SfuConfig) -> Result<MediaDriver, MediaError> {
        let threads = plan.threads.max(1);
        let mut bound = Vec::with_capacity(threads);
        for i in 0..threads {
            let udp_port = if plan.udp_port == 0 {
                0
            } else {
                offset_port(plan.udp_port, i, "media UDP port (rtc.udp_port)", plan.bind)?
            };
            let tcp_port = if plan.tcp_port == 0 {
                0
            } else {
                offset_port(plan.tcp_port, i, "ICE-TCP port (rtc.tcp_port)", plan.bind)?
            };
            bound.push(bind_shard(plan.bind, udp_port, tcp_port)?);
        }
        let router: SharedRouter = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut shards = Vec::with_capacity(threads);
        let mut loops = Vec::with_capacity(threads);
        let mut ports = Vec::with_capacity(threads);
        for (i, b) in bound.into_iter().enumerate() {
            let cfg = shard_config(&sfu_config, &b.ports);
            let poll = Poll::new().map_err(MediaError::Thread)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaError::Thread)?);
            let (tx, rx) = mpsc::channel();
            let heartbeat = Arc::new(Heartbeat::default());
            heartbeat.beat();
            let sfu = Sfu::new(cfg, Instant::now());
            let stats = Arc::new(MediaStats {
                rtp: sfu.rtp_counters(),
                ..Default::default()
            });
            let mut lp = Loop {
                shard: i,
                poll,
                udp: b.udp,
                listener: b.tcp,
                tcp: HashMap::new(),
                tcp_by_route: HashMap::new(),
                next_tcp: TCP_BASE,
                sfu,
                sessions: HashMap::new(),
                commands: rx,
                heartbeat: heartbeat.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                outgoing: vec![],
                send: batch::SendBatch::new(),
                probed: vec![],
                router: router.clone(),
                known_rooms: HashSet::new(),
                events: plan.events.clone(),
                record: plan.record.clone(),
                io: IoTotals::default(),
            };
            lp.register().map_err(MediaError::Thread)?;
            shards.push(Shard {
                tx,
                waker,
                stats,
                heartbeat,
            });
            ports.push(b.ports);
            loops.push(lp);
        }
        let handle = MediaHandle {
            shared: Arc::new(Shared {
                shards,
                router,
                next_conn: AtomicU64::new(1),
                max_rooms: sfu_config.max_rooms,
            }),
        };
        let mut driver = MediaDriver {
            shards: ports,
            handle,
            stop,
            threads: Vec::with_capacity(threads),
        };
        for (i, lp) in loops.into_iter().enumerate() {
            // Thread names are at most 15 bytes on Linux.
            let name = if threads == 1 {
                "confab-media".to_string()
            } else {
                format!("confab-media{i}")
            };
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || lp.run())
            {
                Ok(t) => driver.threads.push(t),
                // Dropping the driver stops the threads already started.
                Err(e) => return Err(MediaError::Thread(e)),
            }
        }
        // One line however many threads (a 128-core host would otherwise log 128).
        if let (Some(first), Some(last)) = (driver.shards.first(), driver.shards.last()) {
            let port = |p: &ShardPorts| p.udp_addrs.first().map_or(0, |a| a.port());
            info!(
                media_threads = threads,
                udp = ?first.udp_addrs,
                tcp = %first.tcp_addr,
                udp_last = port(last),
                tcp_last = last.tcp_addr.port(),
                "media ports bound (media thread i on UDP and TCP port + i)"
            );
        }
        Ok(driver)
    }

    /// Every media thread's heartbeat.
    pub fn heartbeats(&self) -> Vec<Arc<Heartbeat>> {
        self.handle.heartbeats()
    }

    /// Asks the media threads to stop and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.handle.shared.shards {
            let _ = s.waker.wake();
        }
        for t in self.threads.drain(..) {
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
    /// This media thread's index.
    shard: usize,
    poll: Poll,
    udp: Vec<(UdpSocket, SocketAddr)>,
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
    /// UDP datagrams to send, per socket index: sent by `sendmmsg` when [`batch::BATCH`] have
    /// gathered and at the end of a flush.
    outgoing: Vec<Vec<str0m::net::Transmit>>,
    send: Box<batch::SendBatch>,
    /// Measured packets queued in `outgoing` (`sfu::delay`), recorded at the next send (of
    /// any socket: with two sockets, a probe queued on the other one is recorded a little
    /// early). Probes on ICE-TCP are not matched; they expire in `sfu::delay`.
    probed: Vec<delay::Probe>,
    router: SharedRouter,
    /// The rooms this shard's SFU had at the last check: one that is gone is reported to the
    /// router so its name can go to any shard again.
    known_rooms: HashSet<String>,
    events: crate::events::Bus,
    record: Option<std::sync::Arc<dyn crate::sfu::RecordSink>>,
    /// This thread's running totals, published to `stats` once per turn.
    io: IoTotals,
}

/// Totals only the media thread writes; copied to [`MediaStats`] once per loop turn.
#[derive(Default)]
struct IoTotals {
    udp_bytes_in: u64,
    udp_datagrams_out: u64,
    udp_bytes_out: u64,
    busy: Duration,
}

impl IoTotals {
    fn sent(&mut self, s: batch::Sent) {
        self.udp_datagrams_out += s.datagrams as u64;
        self.udp_bytes_out += s.bytes;
    }

    fn publish(&self, stats: &MediaStats) {
        let r = Ordering::Relaxed;
        stats.udp_bytes_in.store(self.udp_bytes_in, r);
        stats.udp_datagrams_out.store(self.udp_datagrams_out, r);
        stats.udp_bytes_out.store(self.udp_bytes_out, r);
        let busy = u64::try_from(self.busy.as_nanos()).unwrap_or(u64::MAX);
        stats.busy_ns.store(busy, r);
    }
}

/// The calling thread's Linux thread id.
fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u64::try_from(tid).unwrap_or(0)
}

impl Loop {
    fn register(&mut self) -> std::io::Result<()> {
        for (i, (sock, _)) in self.udp.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(sock, Token(UDP_BASE + i), Interest::READABLE)?;
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
        self.stats.tid.store(thread_id(), Ordering::Relaxed);
        // When the last `poll` returned: the time from then to the next turn's start is work.
        let mut woke: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.heartbeat.beat();
            let now = Instant::now();
            if let Some(w) = woke {
                self.io.busy += now.saturating_duration_since(w);
                self.io.publish(&self.stats);
            }
            let wait = next_timeout
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(TURN)
                .min(TURN);
            let polled = self.poll.poll(&mut events, Some(wait));
            woke = Some(Instant::now());
            if let Err(e) = polled {
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
            let mut commanded = false;
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
                self.flush();
                commanded = true;
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
            let rooms = self.sfu.rooms().count();
            // Rooms appear only through commands; they close through commands or timeouts.
            if commanded || rooms != self.known_rooms.len() {
                self.sync_rooms();
            }
            self.stats.rooms.store(rooms as u64, Ordering::Relaxed);
        }
        debug!(shard = self.shard, "media loop stopping");
        for (_, (_, tx)) in self.sessions.drain() {
            tx.close(lk::DisconnectReason::ServerShutdown);
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
                let room = params.room.clone();
                let result = self
                    .sfu
                    .join(now, crate::clock::unix_millis() as i64, *params);
                if let Ok((pid, _)) = &result {
                    self.sessions.insert(*pid, (conn, session));
                }
                self.settle(&room, true);
                let _ = reply.send(result);
            }
            Command::Signal { pid, msg, _held } => self.sfu.handle_signal(now, pid, *msg),
            Command::SessionLost { pid, conn } => {
                if self.sessions.get(&pid).is_some_and(|(c, _)| *c == conn) {
                    self.sessions.remove(&pid);
                    self.sfu.session_lost(now, pid);
                }
            }
            Command::Request { room, req, reply } => {
                let _ = reply.send(self.sfu.handle(now, *req));
                if let Some(room) = room {
                    self.settle(&room, true);
                }
            }
            #[cfg(test)]
            Command::Call(f) => f(&mut self.sfu, now),
        }
    }

    /// After a counted operation on `room` ran here (`counted`), or after `room` closed here:
    /// forgets the route when nothing more is in flight to it and this SFU does not host it.
    fn settle(&mut self, room: &str, counted: bool) {
        let mut router = lock(&self.router);
        let Some(route) = router.rooms.get_mut(room) else {
            return;
        };
        if route.shard != self.shard {
            return;
        }
        if counted {
            route.pending = route.pending.saturating_sub(1);
        }
        if route.pending == 0 && !self.sfu.rooms().any(|r| r == room) {
            router.rooms.remove(room);
        }
    }

    /// Reports the rooms that closed since the last check to the router.
    fn sync_rooms(&mut self) {
        let now: HashSet<String> = self.sfu.rooms().map(str::to_string).collect();
        let gone: Vec<String> = self.known_rooms.difference(&now).cloned().collect();
        self.known_rooms = now;
        for room in gone {
            self.settle(&room, false);
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
                    let wall_ns = crate::clock::unix_nanos();
                    for k in 0..n {
                        if let Some((from, data)) = batch.get(k) {
                            self.io.udp_bytes_in += data.len() as u64;
                            // How long it waited in the socket (the kernel stamps wall-clock
                            // time; a clock step makes one batch's figure wrong, no more).
                            let waited = batch
                                .arrived_ns(k)
                                .map(|t| wall_ns.saturating_sub(t).min(MAX_WAIT_NS))
                                .unwrap_or(0);
                            let arrived =
                                now.checked_sub(Duration::from_nanos(waited)).unwrap_or(now);
                            self.sfu.set_arrival(arrived);
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
                        // One or two sockets: a scan, not a (SipHash) lookup per datagram.
                        let Some(i) = self.udp.iter().position(|(_, a)| *a == t.source) else {
                            debug!(source = %t.source, "no socket for a transmit's source");
                            continue;
                        };
                        let (Some(q), Some((sock, _))) =
                            (self.outgoing.get_mut(i), self.udp.get(i))
                        else {
                            continue;
                        };
                        if self.sfu.probing() {
                            if let Some(probe) = self.sfu.probe_sent(&t.contents) {
                                self.probed.push(probe);
                            }
                        }
                        q.push(t);
                        // A full batch goes out at once: what waits stays small.
                        if q.len() >= batch::BATCH {
                            self.io.sent(self.send.send(sock, q));
                            q.clear();
                            record_probes(&mut self.probed, &self.stats);
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
                    let full = match self.sessions.get(&pid) {
                        Some((_, tx)) => tx.signal(msg).err(),
                        None => None,
                    };
                    if let Some(QueueFull { queued }) = full {
                        // The session sees the overflow and closes; the room hears it left.
                        warn!(
                            identity = self.sfu.identity(pid).unwrap_or_default(),
                            queued_kib = queued >> 10,
                            "the client does not read its signal connection \
                             (its queue is full); participant removed"
                        );
                        self.sessions.remove(&pid);
                        self.sfu.remove_participant(
                            Instant::now(),
                            pid,
                            lk::DisconnectReason::SignalClose,
                        );
                    }
                }
                Output::Close(pid, reason) => {
                    if let Some((_, tx)) = self.sessions.remove(&pid) {
                        if reason != lk::DisconnectReason::ClientInitiated {
                            tx.close(reason);
                        }
                    }
                }
                Output::Event(e) => self.events.publish(*e),
                Output::Record(m) => {
                    if let Some(r) = &self.record {
                        r.deliver(*m);
                    }
                }
            }
        }
        for (q, (sock, _)) in self.outgoing.iter_mut().zip(&self.udp) {
            if q.is_empty() {
                continue;
            }
            // A full send buffer drops a datagram, like the network would.
            self.io.sent(self.send.send(sock, q));
            q.clear();
        }
        record_probes(&mut self.probed, &self.stats);
    }
}

/// Datagrams waiting longer than this in the socket are counted as this (a wall-clock step).
const MAX_WAIT_NS: u64 = 10_000_000_000;

/// The measured packets just sent (`sfu::delay`): their delay from arrival to now.
fn record_probes(probed: &mut Vec<delay::Probe>, stats: &MediaStats) {
    if probed.is_empty() {
        return;
    }
    let now = Instant::now();
    for p in probed.drain(..) {
        let d = now.saturating_duration_since(p.arrived);
        stats.forward_delay.record(d);
        if p.audio {
            stats.forward_delay_audio.record(d);
        }
    }
}

/// The age of the stalest heartbeat (zero when there are none).
pub fn oldest(heartbeats: &[Arc<Heartbeat>]) -> Duration {
    heartbeats.iter().map(|h| h.age()).max().unwrap_or_default()
}

#[cfg(test)]
mod tests;
