//! HTTP routes: health (`/api/health`, `/ready`, `/live`), `/api/status` for `confab status`,
//! `/metrics` for Prometheus, the local CA certificate at `/ca.crt`, and a landing page. The plain-HTTP port serves only `/ca.crt`
//! and health, and redirects everything else to HTTPS.

pub mod access;
pub mod admin;
mod dispatch;
mod egress;
mod health;
mod metrics;
mod recordings;
mod rooms;
pub mod server;
mod session;
mod twirp;
pub mod update;
mod web;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{self, ApiKeys, KeyRing};
// `super::conn` in the route modules.
use crate::http::{conn, json_response, peer, static_response, text_response, Body};

pub use health::{Check, Readiness, MEDIA_STALL};

/// Everything a request handler may read. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub readiness: Readiness,
    /// The API keys; the device key can be rotated while the server runs.
    pub keys: KeyRing,
    pub ca_pem: Option<String>,
    pub https_port: u16,
    pub started: Instant,
    /// The update agent's state file (read-only here) and whether this device has A/B slots.
    pub update_state: std::path::PathBuf,
    pub has_slots: bool,
    /// The media thread (absent in tests of the plain HTTP routes).
    pub media: Option<crate::media::MediaHandle>,
    /// Lifetime of tokens the web app gets from `/api/join`.
    pub token_ttl: std::time::Duration,
    /// Admin password sessions (absent in tests of the plain HTTP routes).
    pub admin: Option<crate::auth::admin::AdminState>,
    /// The update panel's access to the update agent (absent in tests of the plain routes).
    pub updates: Option<update::UpdateAccess>,
    /// Wrong room passcodes and invite links per address.
    pub join_failures: access::Limiter,
    /// Proxies whose `X-Forwarded-For` names the client (`http.trusted_proxies`).
    pub trusted_proxies: peer::TrustedProxies,
    /// Refused access tokens per client address ([`App::token_refused`]).
    pub token_failures: peer::Failures,
    /// The agent dispatcher (`/agent`, `AgentDispatchService`; absent in tests of the plain
    /// routes).
    pub agents: Option<crate::agent::Dispatcher>,
    /// What `GET /metrics` shows (absent in tests of the plain HTTP routes), and whether it
    /// is served without a token or session (`metrics.open`).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub metrics_open: bool,
    /// Recordings (Twirp `livekit.Egress`, the web app's Record, the admin's list; absent in
    /// tests of the plain routes).
    pub recorder: Option<crate::record::Recorder>,
    /// The embedded TURN server, whose credentials joins are given (absent when off, and in
    /// tests of the plain routes).
    pub turn: Option<Arc<crate::turn::Service>>,
}

/// The signalling upgrade's view of the server (`signal` does not depend on `api`).
impl crate::signal::Gate for App {
    fn client_ip(&self, req: &Request<hyper::body::Incoming>) -> std::net::IpAddr {
        App::client_ip(self, req)
    }
    fn token_blocked(&self, client: std::net::IpAddr) -> Option<(StatusCode, String)> {
        App::token_blocked(self, client)
    }
    fn token_refused(&self, client: std::net::IpAddr, what: &str, reason: &str) {
        App::token_refused(self, client, what, reason)
    }
    fn keys(&self) -> Arc<ApiKeys> {
        App::keys(self)
    }
    fn ice_servers(
        &self,
        identity: &str,
        req: &Request<hyper::body::Incoming>,
    ) -> Vec<livekit_protocol::IceServer> {
        let (Some(turn), Some(host)) = (&self.0.turn, crate::signal::request_host(req)) else {
            return Vec::new();
        };
        turn.ice_servers(identity, &host)
    }
}

/// Refused access tokens (bad signature, expired, malformed, missing grant) one client address
/// may present within [`TOKEN_FAILURE_WINDOW`] before every token from it is refused with 429 for
/// the rest of the window. livekit-client asks `/rtc/validate` after each failed connection, so a
/// user's failed attempt with its retries costs about ten.
pub const MAX_TOKEN_FAILURES: u32 = 60;
pub const TOKEN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The token-failure counter [`AppInner::token_failures`] starts with.
pub fn token_failures() -> peer::Failures {
    peer::Failures::new(MAX_TOKEN_FAILURES, TOKEN_FAILURE_WINDOW)
}

impl App {
    pub fn new(inner: AppInner) -> App {
        App(Arc::new(inner))
    }

    /// The address a request came from, for per-client limits: the TCP peer, or the client a
    /// trusted proxy names ([`peer::TrustedProxies`]).
    pub fn client_ip<B>(&self, req: &Request<B>) -> std::net::IpAddr {
        let peer = req
            .extensions()
            .get::<peer::Peer>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
        self.0.trusted_proxies.client_ip(peer, req.headers())
    }

    /// `429` when `client` ([`App::client_ip`]) has presented too many refused tokens lately.
    pub fn token_blocked(&self, client: std::net::IpAddr) -> Option<(StatusCode, String)> {
        self.0.token_failures.blocked(client).then(|| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many refused access tokens from this address; wait {} s",
                    TOKEN_FAILURE_WINDOW.as_secs()
                ),
            )
        })
    }

    /// Counts a refused token from `client`, and logs it: the first refusal from an address in
    /// each window, and the one that blocks it (never the token; `reason` is the refusal's own
    /// text, which does not repeat the token's fields).
    pub fn token_refused(&self, client: std::net::IpAddr, what: &str, reason: &str) {
        let n = self.0.token_failures.failed(client);
        if n == 1 {
            tracing::info!(from = %client, %reason, "{what}: token refused (more from this address in the next {} s are not logged)", TOKEN_FAILURE_WINDOW.as_secs());
        } else if n == MAX_TOKEN_FAILURES {
            tracing::warn!(from = %client, refused = n, "{what}: too many refused tokens from this address; refusing its tokens with 429 for {} s", TOKEN_FAILURE_WINDOW.as_secs());
        }
    }

    /// The API keys now (a snapshot; "Rotate" in the admin page replaces them).
    pub fn keys(&self) -> Arc<ApiKeys> {
        self.0.keys.current()
    }

    /// Answers one request, including those that need the body or an upgrade (signalling
    /// WebSockets, Twirp); the rest go to [`App::handle`].
    pub async fn handle_async(
        &self,
        req: Request<hyper::body::Incoming>,
        tls: bool,
    ) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let resp = self.route(req, tls).await;
        if head {
            // The headers of the GET, no body (over HTTP/2 a body on HEAD breaks the stream).
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::default());
        }
        resp
    }

    async fn route(&self, req: Request<hyper::body::Incoming>, tls: bool) -> Response<Body> {
        if tls && crate::signal::ws::wants(&req) {
            return match &self.0.media {
                Some(m) => crate::signal::ws::upgrade(self, m.clone(), req).await,
                None => text_response(StatusCode::SERVICE_UNAVAILABLE, "media engine not running"),
            };
        }
        if tls && crate::agent::ws::wants(&req) {
            return match &self.0.agents {
                Some(a) => crate::agent::ws::upgrade(self, a.clone(), req).await,
                None => text_response(StatusCode::SERVICE_UNAVAILABLE, "agent service not running"),
            };
        }
        if tls && req.uri().path().starts_with(admin::PREFIX) {
            return admin::handle(self, req).await;
        }
        if tls && req.uri().path() == rooms::JOIN {
            return rooms::join(self, req).await;
        }
        if tls && req.uri().path().starts_with(rooms::ROOMS) {
            let path = req.uri().path().to_string();
            return rooms::status(self, &path).await;
        }
        if tls && req.uri().path().starts_with(dispatch::PREFIX) {
            return dispatch::handle(self, req).await;
        }
        if tls && req.uri().path() == metrics::PATH {
            return self.metrics(&req).await;
        }
        if tls && req.uri().path().starts_with(egress::PREFIX) {
            return egress::handle(self, req).await;
        }
        if tls && req.uri().path() == recordings::RECORDING {
            return recordings::toggle(self, req).await;
        }
        if tls && req.uri().path().starts_with(twirp::PREFIX) {
            return twirp::handle(self, self.0.media.clone(), req).await;
        }
        self.handle(&req, tls)
    }

    pub fn readiness(&self) -> &Readiness {
        &self.0.readiness
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.0.started.elapsed().as_secs()
    }

    /// Answers one request. `tls` tells whether it came in over HTTPS.
    pub fn handle<B>(&self, req: &Request<B>, tls: bool) -> Response<Body> {
        let path = req.uri().path();
        let always = matches!(
            path,
            "/ca.crt" | "/api/health" | "/api/health/ready" | "/api/health/live"
        );
        if !tls && !always {
            return self.redirect_to_https(req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            );
        }
        match path {
            "/api/health" => json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "timestamp": crate::clock::unix_millis(),
                    "version": crate::version::VERSION,
                    "commit": crate::version::COMMIT,
                }),
            ),
            "/api/health/live" => json_response(StatusCode::OK, &json!({"status": "alive"})),
            "/api/health/ready" => self.ready(),
            "/ca.crt" => self.ca_certificate(),
            "/api/status" => self.status(req),
            "/rtc/validate" | "/rtc/v1/validate" => self.validate_join(req),
            "/" if !web::built() => landing_page(),
            "/dev" => static_response("text/html; charset=utf-8", DEV_PAGE.as_bytes()),
            "/assets/livekit-client.esm.mjs" => {
                static_response("text/javascript; charset=utf-8", LIVEKIT_CLIENT)
            }
            _ => match web::asset(path) {
                Some((content_type, body)) => web_response(path, content_type, body),
                None => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
            },
        }
    }

    fn ready(&self) -> Response<Body> {
        let checks = self.0.readiness.checks();
        let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let map: serde_json::Map<String, serde_json::Value> = checks
            .iter()
            .map(|c| (c.name.to_string(), json!({"ok": c.ok, "detail": c.detail})))
            .collect();
        if failing.is_empty() {
            json_response(StatusCode::OK, &json!({"status": "ready", "checks": map}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not ready", "failing": failing, "checks": map}),
            )
        }
    }

    fn validate_join<B>(&self, req: &Request<B>) -> Response<Body> {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let client = self.client_ip(req);
        let mut resp = if let Some((status, reason)) = self.token_blocked(client) {
            text_response(status, &reason)
        } else {
            match crate::signal::validate_join(&self.keys(), req.uri().query(), authorization) {
                Ok(_) => text_response(StatusCode::OK, "success"),
                Err(refusal) => {
                    if refusal.status == StatusCode::UNAUTHORIZED {
                        self.token_refused(client, "/rtc/validate", &refusal.reason);
                    }
                    text_response(refusal.status, &refusal.reason)
                }
            }
        };
        // livekit-client fetches this from the web app's origin; without CORS it cannot read
        // the reason (and takes the failure for an unreachable server).
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        resp
    }

    fn ca_certificate(&self) -> Response<Body> {
        match &self.0.ca_pem {
            Some(pem) => {
                let mut r = Response::new(Body::new(Bytes::from(pem.clone())));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-x509-ca-cert"),
                );
                h.insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"confab-ca.crt\""),
                );
                r
            }
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "this server uses a configured certificate, not a local CA"}),
            ),
        }
    }

    fn status<B>(&self, req: &Request<B>) -> Response<Body> {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let client = self.client_ip(req);
        if let Some((status, reason)) = self.token_blocked(client) {
            return json_response(status, &json!({ "error": reason }));
        }
        let claims = match auth::bearer(header).map(|t| auth::verify(&self.keys(), t)) {
            None => Err(auth::AuthError::Missing),
            Some(r) => r,
        };
        if let Err(e) = &claims {
            self.token_refused(client, "/api/status", &e.to_string());
        }
        match claims {
            Ok(c) if c.may_list_rooms() => {}
            Ok(_) => {
                return json_response(
                    StatusCode::FORBIDDEN,
                    &json!({"error": "token lacks the roomList or roomAdmin grant"}),
                )
            }
            Err(e) => {
                return json_response(StatusCode::UNAUTHORIZED, &json!({"error": e.to_string()}))
            }
        }
        json_response(StatusCode::OK, &self.status_json())
    }

    /// What `confab status` prints.
    pub fn status_json(&self) -> serde_json::Value {
        let totals = self
            .0
            .media
            .as_ref()
            .map(|m| m.totals())
            .unwrap_or_default();
        json!({
            "version": crate::version::VERSION,
            "commit": crate::version::COMMIT,
            "build_date": crate::version::BUILD_DATE,
            "uptime_seconds": self.uptime_seconds(),
            "rooms": totals.rooms,
            "participants": totals.participants,
            "forward_delay_us": forward_delay_json(&totals.forward_delay),
            "forward_delay_audio_us": forward_delay_json(&totals.forward_delay_audio),
            "update": crate::update::agent::state::summary(&self.0.update_state, self.0.has_slots),
            "ready": self.0.readiness.checks().iter().all(|c| c.ok),
        })
    }

    fn redirect_to_https<B>(&self, req: &Request<B>) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
            .map(|a| a.host().to_string())
            .unwrap_or_else(|| "localhost".to_string());
        let port = match self.0.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let location = format!("https://{host}{port}{path}");
        let mut r = Response::new(Body::new(Bytes::from(format!(
            "This confab server only speaks HTTPS: {location}\n"
        ))));
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}

/// The delay confab added to forwarded packets since it started (sampled, `sfu::delay`):
/// count, p50/p99 (upper bounds of their buckets) and the non-empty buckets as
/// `[upper bound µs, count]`, so a reader can take quantiles over a window by difference.
fn forward_delay_json(counts: &[u64]) -> serde_json::Value {
    use crate::sfu::delay;
    let buckets: Vec<[u64; 2]> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| [delay::bucket_upper_us(i), *c])
        .collect();
    json!({
        "count": counts.iter().sum::<u64>(),
        "p50": delay::quantile_us(counts, 0.5),
        "p99": delay::quantile_us(counts, 0.99),
        "buckets": buckets,
    })
}

/// A minimal meeting page (token in, camera and microphone out, everyone else's video in).
const DEV_PAGE: &str = include_str!("../../web/dev/index.html");
/// The official livekit-client ES module, embedded by build.rs from web/node_modules.
const LIVEKIT_CLIENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/livekit-client.esm.mjs"));

/// A file of the web app (src/api/web.rs) with its cache policy.
fn web_response(path: &str, content_type: &'static str, body: &'static [u8]) -> Response<Body> {
    let mut r = static_response(content_type, body);
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(web::cache_control(path)),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn landing_page() -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>confab</title></head><body style=\"font-family:system-ui;max-width:40rem;margin:3rem auto\">\
         <h1>confab is running</h1><p>Version {}.</p>\
         <p>LiveKit clients and SDKs can connect to this server. To try a call, make a token with \
         <code>confab token --identity NAME --room ROOM</code> and open the \
         <a href=\"/dev\">dev meeting page</a>.</p>\
         <p><a href=\"/ca.crt\">Download this device's certificate authority</a> so your \
         browser trusts it, and check <a href=\"/api/health/ready\">readiness</a>.</p></body></html>",
        crate::version::long()
    );
    let mut r = Response::new(Body::new(Bytes::from(html)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests;
