//! The embedded TURN server (RFC 8656): calls through networks that allow only outbound 443 or
//! TLS. Clients get short-lived credentials in the join response's `ice_servers` (as from
//! LiveKit), allocate a relay here over UDP (`turn.udp_port`), TLS (`turn.tls_port`) or TLS on
//! the HTTPS port itself, and the relay sends only to confab's own media ports.
//!
//! `creds` makes and checks credentials, `server` is the protocol state (sans-IO), `io` runs it
//! on sockets. No maintained crate had what a TURN server here needs (credentials checked by
//! computation with an expiry, a policy on relay destinations, per-user caps), so the state is
//! confab's own; every STUN/TURN message is parsed and built by `turn-types`.

pub mod creds;
mod io;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as lk;
use tokio::io::{AsyncRead, AsyncWrite};

pub use io::looks_like_turn;
pub use server::{Limits, Policy, Stats};

use crate::config::TurnConfig;

/// Credentials last a day (the "TURN REST API" draft's advice); a client that reconnects later
/// is given new ones with its new join.
pub const CREDENTIAL_TTL_SECS: u64 = 86_400;

/// The realm clients see in challenges.
pub const REALM: &str = "confab";

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("{0}")]
    Bind(String),
    #[error("cannot make the TURN credential key: {0}")]
    Random(getrandom::Error),
}

/// The running TURN server.
pub struct Service {
    shared: Arc<io::Shared>,
    issuer: Arc<creds::Issuer>,
    udp_port: Option<u16>,
    tls_port: Option<u16>,
    https_port: u16,
    domain: Option<String>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("udp_port", &self.udp_port)
            .field("tls_port", &self.tls_port)
            .finish_non_exhaustive()
    }
}

/// Where the TURN server listens and what it may reach.
pub struct Plan<'a> {
    pub config: &'a TurnConfig,
    /// The local addresses to listen on (UDP: one socket each).
    pub addresses: Vec<IpAddr>,
    /// Listen address for TLS (a wildcard is fine: an accepted stream knows its local address).
    pub bind: IpAddr,
    pub https_port: u16,
    /// confab's media UDP addresses: the only peers a relay may send to.
    pub media: Vec<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Service {
    /// Binds and starts the listeners (within a Tokio runtime). A port that cannot be bound
    /// is an error when it was configured, and skipped with a warning when it is a default.
    pub fn start(plan: Plan<'_>) -> Result<Service, TurnError> {
        let cfg = plan.config;
        let issuer =
            Arc::new(creds::Issuer::random(CREDENTIAL_TTL_SECS).map_err(TurnError::Random)?);
        let mut nonce_key = [0u8; 32];
        getrandom::fill(&mut nonce_key).map_err(TurnError::Random)?;
        let server = server::Server::new(
            REALM,
            issuer.clone(),
            Policy::new(plan.media.iter().copied()),
            Limits::default(),
            Instant::now(),
            crate::clock::unix_secs(),
            &nonce_key,
        );
        let skip = |what: &str, e: String| -> Result<(), TurnError> {
            if cfg.ports_configured {
                return Err(TurnError::Bind(e));
            }
            tracing::warn!(error = %e, "TURN over {what} is off: its default port could not be bound");
            Ok(())
        };
        let mut udp = HashMap::new();
        let mut udp_port = None;
        if let Some(port) = cfg.udp_port {
            match bind_udp(&plan.addresses, port) {
                Ok(sockets) => {
                    udp_port = Some(port);
                    udp = sockets;
                }
                Err(e) => skip("UDP", e)?,
            }
        }
        let mut tls_listener = None;
        if let Some(port) = cfg.tls_port.filter(|p| *p != plan.https_port) {
            match bind_tcp(plan.bind, port) {
                Ok(l) => tls_listener = Some((port, l)),
                Err(e) => skip("TLS", e)?,
            }
        }
        let shared = io::Shared::new(server, udp.clone());
        let mut tasks = vec![tokio::spawn(io::ticker(shared.clone())).abort_handle()];
        for socket in udp.into_values() {
            tasks.push(tokio::spawn(io::udp_listener(shared.clone(), socket)).abort_handle());
        }
        let mut tls_port = None;
        if let Some((port, listener)) = tls_listener {
            let acceptor = match (&plan.tls, cfg.external_tls) {
                (Some(t), false) => Some(tokio_rustls::TlsAcceptor::from(t.clone())),
                _ => None,
            };
            tasks.push(
                tokio::spawn(io::stream_listener(shared.clone(), listener, acceptor))
                    .abort_handle(),
            );
            tls_port = Some(port);
        }
        tracing::info!(udp = ?udp_port, tls = ?tls_port, https = plan.https_port, external_tls = cfg.external_tls, "TURN ready (relays only to this server's media ports)");
        Ok(Service {
            shared,
            issuer,
            udp_port,
            tls_port,
            https_port: plan.https_port,
            domain: cfg.domain.clone(),
            tasks,
        })
    }

    /// The `ice_servers` of a join response for `identity`: new credentials, and the TURN URLs
    /// on `host` (the configured `turn.domain`, else the host the client reached confab at).
    pub fn ice_servers(&self, identity: &str, host: &str) -> Vec<lk::IceServer> {
        let host = self.domain.as_deref().unwrap_or(host);
        let mut urls = Vec::new();
        if let Some(p) = self.udp_port {
            urls.push(format!("turn:{host}:{p}?transport=udp"));
        }
        if let Some(p) = self.tls_port {
            urls.push(format!("turns:{host}:{p}?transport=tcp"));
        }
        // TURN over TLS on the HTTPS port: what a network that lets only the web through
        // allows. Offered when that port is 443 (elsewhere a web-only firewall blocks it too).
        if self.https_port == 443 && self.tls_port != Some(443) {
            urls.push(format!("turns:{host}:443?transport=tcp"));
        }
        if urls.is_empty() {
            return Vec::new();
        }
        let (username, credential) = self.issuer.issue(identity, crate::clock::unix_secs());
        vec![lk::IceServer {
            urls,
            username,
            credential,
        }]
    }

    /// Serves a TLS stream the HTTPS listener found to carry TURN; `first` holds the bytes it
    /// already read.
    pub async fn serve_stream<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        local: SocketAddr,
        first: Vec<u8>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        io::serve_stream(self.shared.clone(), stream, peer, local, first).await;
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        io::log_stats(&self.shared.stats());
    }
}

/// The TURN server's figures at each `/metrics` scrape.
#[derive(Debug)]
pub struct TurnMetrics(pub Arc<Service>);

impl prometheus_client::collector::Collector for TurnMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, gauge};
        let s = self.0.stats();
        gauge(
            &mut enc,
            "confab_turn_allocations",
            "TURN relay allocations open",
            s.allocations,
        )?;
        counter(
            &mut enc,
            "confab_turn_allocations_made",
            "TURN relay allocations made",
            s.allocations_total,
        )?;
        counter(
            &mut enc,
            "confab_turn_relayed_bytes",
            "Bytes relayed by TURN, both directions",
            s.relayed_bytes,
        )?;
        counter(
            &mut enc,
            "confab_turn_dropped_bytes",
            "Bytes TURN dropped (over the cap, no permission, not a media port)",
            s.dropped_bytes,
        )?;
        counter(
            &mut enc,
            "confab_turn_refused_credentials",
            "TURN requests refused for bad or expired credentials",
            s.refused_credentials,
        )?;
        counter(
            &mut enc,
            "confab_turn_refused_peers",
            "TURN permissions refused: the peer is not one of this server's media ports",
            s.refused_peers,
        )?;
        counter(
            &mut enc,
            "confab_turn_refused_quota",
            "TURN allocations refused by a cap",
            s.refused_quota,
        )
    }
}

fn bind_udp(
    addresses: &[IpAddr],
    port: u16,
) -> Result<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>, String> {
    let mut out = HashMap::new();
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        let bound = std::net::UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(tokio::net::UdpSocket::from_std);
        match bound {
            Ok(s) => {
                let local = s.local_addr().unwrap_or(addr);
                out.insert(
                    SocketAddr::new(local.ip().to_canonical(), local.port()),
                    Arc::new(s),
                );
            }
            Err(e) => {
                return Err(crate::net::bind_message(
                    "TURN UDP port (turn.udp_port)",
                    addr,
                    &e,
                ));
            }
        }
    }
    Ok(out)
}

fn bind_tcp(bind: IpAddr, port: u16) -> Result<tokio::net::TcpListener, String> {
    let what = "TURN TLS port (turn.tls_port)";
    let listener = crate::media::bind_with_fallback(bind, port, what, std::net::TcpListener::bind)
        .map_err(|e| e.to_string())?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| crate::net::bind_message(what, SocketAddr::new(bind, port), &e))
}

#[cfg(test)]
mod tests;
