//! The HTTPS listener (HTTP/1.1 and HTTP/2 over rustls, chosen by ALPN) and the plain-HTTP
//! redirect listener, with graceful shutdown: stop accepting, let open requests finish within the
//! grace period, close. Every connection holds a place under the connection caps and is closed
//! when it idles or trickles ([`super::conn`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::App;
use crate::config::Config;
use crate::http::conn::{
    ConnLimits, Idle, Slot, HANDSHAKE_TIMEOUT, HEADER_TIMEOUT, MAX_HEADER_BYTES,
};
use crate::media::{bind_with_fallback, MediaError};

/// The HTTP/1 and HTTP/2 connection builders (one protocol each: TLS connections pick theirs by
/// ALPN, plain HTTP is HTTP/1), with their timers and buffer limits.
struct Builders {
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Builders {
        let mut h1 = Builder::new(TokioExecutor::new()).http1_only();
        h1.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(100)
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        Builders { h1, h2 }
    }
}

pub struct Listeners {
    pub https: TcpListener,
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds the HTTPS port and, if configured, the redirect port.
    pub fn bind(config: &Config) -> Result<Listeners, MediaError> {
        let bind = config.http.bind;
        let https = bind_tcp(bind, config.http.https_port, "HTTPS port (http.https_port)")?;
        let http = match config.http.http_port {
            Some(p) => Some(bind_tcp(bind, p, "HTTP redirect port (http.http_port)")?),
            None => None,
        };
        Ok(Listeners { https, http })
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.local_addr().ok()
    }
}

fn bind_tcp(
    bind: std::net::IpAddr,
    port: u16,
    what: &'static str,
) -> Result<TcpListener, MediaError> {
    let std_listener = bind_with_fallback(bind, port, what, std::net::TcpListener::bind)?;
    let to_err = |source| MediaError::Bind {
        what,
        addr: std::net::SocketAddr::new(bind, port),
        source,
    };
    std_listener.set_nonblocking(true).map_err(to_err)?;
    TcpListener::from_std(std_listener).map_err(to_err)
}

/// Serves until `shutdown` turns true, then drains for at most `grace`.
pub async fn serve(
    listeners: Listeners,
    tls: Arc<rustls::ServerConfig>,
    app: App,
    limits: Arc<ConnLimits>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    turn: Option<Arc<crate::turn::Service>>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builders = Arc::new(Builders::new());
    let Listeners { https, http } = listeners;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = https.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = admit(&limits, &app, peer) else { continue };
                    let watcher = graceful.watcher();
                    let (acceptor, builders, app) = (acceptor.clone(), builders.clone(), app.clone());
                    let turn = turn.clone();
                    tokio::spawn(async move {
                        let local = stream.local_addr().ok();
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return debug!(%peer, "TLS handshake timed out"),
                        };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        if h2 {
                            return serve_connection(tls, peer, app, &builders.h2, watcher, true, slot).await;
                        }
                        // TURN over TLS shares this port: told apart by its first bytes.
                        let Some(first) = sniff(tls).await else { return };
                        match (turn, local) {
                            (Some(turn), Some(local)) if first.is_turn() => {
                                let (stream, bytes) = first.into_parts();
                                turn.serve_stream(stream, peer, local, bytes).await;
                            }
                            _ => serve_connection(first, peer, app, &builders.h1, watcher, true, slot).await,
                        }
                    });
                }
                Err(e) => accept_error(e).await,
            },
            accepted = accept_opt(&http) => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = admit(&limits, &app, peer) else { continue };
                    let watcher = graceful.watcher();
                    let (builders, app) = (builders.clone(), app.clone());
                    tokio::spawn(async move {
                        serve_connection(stream, peer, app, &builders.h1, watcher, false, slot).await;
                    });
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
    drop(https);
    drop(http);
    let open = graceful.count();
    info!(
        open_connections = open,
        grace_ms = grace.as_millis() as u64,
        "stopped accepting; draining"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("grace period over; closing the remaining connections");
    }
}

/// A stream whose first bytes were read to tell TURN from HTTP, and are read again first.
struct Sniffed<S> {
    first: Vec<u8>,
    pos: usize,
    inner: S,
    alpn_turn: bool,
}

impl<S> Sniffed<S> {
    fn is_turn(&self) -> bool {
        self.alpn_turn || crate::turn::looks_like_turn(&self.first)
    }

    fn into_parts(self) -> (S, Vec<u8>) {
        (self.inner, self.first[self.pos..].to_vec())
    }
}

/// Reads the first bytes of a TLS connection (within the header timeout); `None` when it
/// closed or sent nothing in time.
async fn sniff(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<Sniffed<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    use tokio::io::AsyncReadExt;
    let alpn_turn = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_TURN);
    let mut first = vec![0u8; 4096];
    let n = match tokio::time::timeout(HEADER_TIMEOUT, tls.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return None,
    };
    first.truncate(n);
    Some(Sniffed {
        first,
        pos: 0,
        inner: tls,
        alpn_turn,
    })
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.first.len() {
            let n = buf.remaining().min(self.first.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.first[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A place under the connection caps for `peer`, or `None` (the stream is dropped: closed).
fn admit(limits: &Arc<ConnLimits>, app: &App, peer: SocketAddr) -> Option<Slot> {
    let ip = peer.ip().to_canonical();
    limits.admit(ip, app.0.trusted_proxies.trusted(ip)).ok()
}

/// Serves HTTP/1.1 or HTTP/2 (with upgrades, for WebSockets) on one connection until it ends,
/// idles too long, or graceful shutdown closes it. `slot` is given back when it closes.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: App,
    builder: &Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    tls: bool,
    slot: Slot,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle = Arc::new(Idle::default());
    let service = {
        let idle = idle.clone();
        service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(crate::http::peer::Peer(peer));
            let app = app.clone();
            let busy = idle.busy();
            async move {
                let response = app.handle_async(req, tls).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        ended = watcher.watch(conn.into_owned()) => {
            if let Err(e) = ended {
                debug!(%peer, tls, error = %e, "connection ended with an error");
            }
        }
        () = idle.expired() => debug!(%peer, tls, "closing an idle connection"),
    }
    drop(slot);
}

async fn accept_opt(
    listener: &Option<TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accept errors (out of file descriptors, aborted connections) must not end the server; back off
/// briefly so a persistent one does not spin.
async fn accept_error(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
