//! The TURN server on sockets: UDP listeners (one per local address, so every answer leaves
//! from the address the client reached), a TLS listener (or plain TCP when TLS ends at a load
//! balancer: `turn.external_tls`), streams handed over by the HTTPS listener (TURN over TLS on
//! the HTTPS port), one UDP relay socket per allocation, and a once-a-second tick for expiries.
//! The protocol state is one [`Server`] behind a mutex, never held across an await.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::server::{frame_len, Out, Relays, Server, Stats, Transport, Tuple};
use crate::http::conn::ConnLimits;

/// A TCP/TLS client has this long to send its first whole message, and a connection without
/// traffic this long is closed (an allocation's own lifetime is at most an hour; clients send
/// media or refreshes well within this).
const FIRST_MESSAGE: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(600);
/// The largest message a stream may hold (STUN's length field allows 64 KiB).
const MAX_FRAME: usize = 20 + 65_535;
/// Messages queued towards one TCP/TLS client before more are dropped (media; it recovers).
const CLIENT_QUEUE: usize = 512;
/// TCP/TLS connections to the TURN ports: in all, and from one address.
const MAX_STREAMS: usize = 1024;
const MAX_STREAMS_PER_ADDRESS: usize = 32;
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// A relay socket's receive buffer (a longer datagram is cut, and then fails SRTP's check).
const RELAY_BUFFER: usize = 4096;

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    close: Arc<Notify>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    task: AbortHandle,
}

pub(super) struct Shared {
    server: Mutex<Server>,
    /// UDP listeners by their local address (fixed once started).
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    clients: Mutex<HashMap<Tuple, Conn>>,
    relays: Mutex<HashMap<SocketAddr, Relay>>,
    streams: Arc<ConnLimits>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Relay sockets bound while the server is locked, started once it is not.
#[derive(Default)]
struct Opener {
    opened: Vec<(SocketAddr, std::net::UdpSocket)>,
}

impl Relays for Opener {
    fn open(&mut self, ip: IpAddr) -> std::io::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        self.opened.push((addr, socket));
        Ok(addr)
    }
}

/// Canonical addresses (no IPv4-mapped IPv6), as the server keys them.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Shared {
    pub(super) fn new(server: Server, udp: HashMap<SocketAddr, Arc<UdpSocket>>) -> Arc<Shared> {
        Arc::new(Shared {
            server: Mutex::new(server),
            udp,
            clients: Mutex::default(),
            relays: Mutex::default(),
            streams: ConnLimits::new(MAX_STREAMS, MAX_STREAMS_PER_ADDRESS),
        })
    }

    pub(super) fn stats(&self) -> Stats {
        lock(&self.server).stats()
    }

    fn from_client(self: &Arc<Self>, tuple: Tuple, data: &[u8]) {
        let mut out = Vec::new();
        let mut opener = Opener::default();
        lock(&self.server).from_client(Instant::now(), tuple, data, &mut opener, &mut out);
        self.start_relays(opener);
        self.dispatch(out);
    }

    fn start_relays(self: &Arc<Self>, opener: Opener) {
        for (addr, socket) in opener.opened {
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    warn!(error = %e, "TURN: relay socket not registered");
                    continue;
                }
            };
            let task = tokio::spawn(relay_reader(self.clone(), socket.clone(), addr));
            lock(&self.relays).insert(
                addr,
                Relay {
                    socket,
                    task: task.abort_handle(),
                },
            );
        }
    }

    fn dispatch(&self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Client(tuple, data) => self.to_client(tuple, data),
                Out::Peer { relay, peer, data } => {
                    let socket = lock(&self.relays).get(&relay).map(|r| r.socket.clone());
                    if let Some(s) = socket {
                        // A full socket buffer drops the datagram, as the network would.
                        let _ = s.try_send_to(&data, peer);
                    }
                }
                Out::CloseRelay(relay) => {
                    if let Some(r) = lock(&self.relays).remove(&relay) {
                        r.task.abort();
                    }
                }
                Out::CloseClient(tuple) => {
                    if let Some(c) = lock(&self.clients).get(&tuple) {
                        c.close.notify_one();
                    }
                }
            }
        }
    }

    fn to_client(&self, tuple: Tuple, data: Vec<u8>) {
        match tuple.transport {
            Transport::Udp => {
                if let Some(s) = self.udp.get(&tuple.server) {
                    let _ = s.try_send_to(&data, tuple.client);
                }
            }
            Transport::Tcp => {
                if let Some(c) = lock(&self.clients).get(&tuple) {
                    let _ = c.tx.try_send(data);
                }
            }
        }
    }

    fn tick(&self) {
        let mut out = Vec::new();
        lock(&self.server).tick(Instant::now(), &mut out);
        self.dispatch(out);
    }
}

/// Peer → client: every datagram a relay socket receives.
async fn relay_reader(shared: Arc<Shared>, socket: Arc<UdpSocket>, relay: SocketAddr) {
    // Peers are confab's media ports, whose datagrams fit a path MTU; one buffer per
    // allocation, so it is kept small.
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let mut out = Vec::new();
        lock(&shared.server).from_peer(Instant::now(), relay, canonical(peer), &buf[..n], &mut out);
        shared.dispatch(out);
    }
}

/// One UDP listener's clients.
pub(super) async fn udp_listener(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on Linux: not fatal.
            Err(e) => {
                debug!(error = %e, "TURN UDP receive");
                continue;
            }
        };
        let tuple = Tuple {
            transport: Transport::Udp,
            client: canonical(from),
            server: canonical(local),
        };
        shared.from_client(tuple, &buf[..n]);
    }
}

/// Expiries, once a second.
pub(super) async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        shared.tick();
    }
}

/// The TLS (or, with `external_tls`, plain TCP) listener.
pub(super) async fn stream_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "TURN accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_stream(shared, stream, peer, local, Vec::new()).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_stream(shared, s, peer, local, Vec::new()).await,
                        _ => debug!(%peer, "TURN TLS handshake failed"),
                    }
                }
            }
        });
    }
}

/// One TCP/TLS client connection: framed messages in, queued messages out, its allocation
/// ended when it closes. `first` holds bytes already read from it (the HTTPS port's sniff).
pub(super) async fn serve_stream<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    first: Vec<u8>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer_ip = peer.ip().to_canonical();
    let Ok(_slot) = shared.streams.admit(peer_ip, false) else {
        debug!(%peer, "TURN: too many connections from this address");
        return;
    };
    let tuple = Tuple {
        transport: Transport::Tcp,
        client: canonical(peer),
        server: canonical(local),
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CLIENT_QUEUE);
    let close = Arc::new(Notify::new());
    lock(&shared.clients).insert(
        tuple,
        Conn {
            tx,
            close: close.clone(),
        },
    );
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    read_frames(&shared, &mut rd, tuple, first, &close).await;
    lock(&shared.clients).remove(&tuple);
    let mut out = Vec::new();
    lock(&shared.server).client_gone(tuple, &mut out);
    shared.dispatch(out);
    // The writer ends once its queue is dropped (just now) and flushed.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

async fn read_frames<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    rd: &mut R,
    tuple: Tuple,
    mut buf: Vec<u8>,
    close: &Notify,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut seen_message = false;
    loop {
        while let Some(n) = frame_len(&buf) {
            let msg: Vec<u8> = buf.drain(..n).collect();
            shared.from_client(tuple, &msg);
            seen_message = true;
        }
        // Not STUN or ChannelData (the two top bits), or longer than any message: not TURN.
        if buf.first().is_some_and(|b| b >> 6 >= 2) || buf.len() > MAX_FRAME {
            debug!(client = %tuple.client, "TURN: not a TURN stream; closed");
            return;
        }
        let wait = if seen_message { IDLE } else { FIRST_MESSAGE };
        tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut chunk)) => match r {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            },
            () = close.notified() => return,
        }
    }
}

/// Whether the first bytes of a stream are TURN (a STUN request or indication: the two top
/// bits zero, and a method class byte no HTTP request starts with) rather than HTTP.
pub fn looks_like_turn(first: &[u8]) -> bool {
    first.first().is_some_and(|b| *b <= 0x01)
}

/// Logs what the TURN server has done, for the shutdown line.
pub(super) fn log_stats(stats: &Stats) {
    info!(
        allocations_total = stats.allocations_total,
        refused_credentials = stats.refused_credentials,
        refused_peers = stats.refused_peers,
        refused_quota = stats.refused_quota,
        relayed_bytes = stats.relayed_bytes,
        "TURN"
    );
}
