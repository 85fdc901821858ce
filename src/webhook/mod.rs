//! LiveKit-compatible webhooks: every server event ([`crate::events`]) is POSTed to each
//! configured URL exactly as LiveKit's `webhook.URLNotifier` sends it, so an application's
//! existing `WebhookReceiver` handler works unchanged:
//!
//! - `POST <url>`, body = protojson of `livekit.WebhookEvent`,
//!   `Content-Type: application/webhook+json`;
//! - `Authorization: <jwt>` (no `Bearer`): HS256 with the signing key's secret, `iss` = the key,
//!   `sha256` = base64 of the body's SHA-256, valid 5 minutes ([`sign`]).
//!
//! Delivery never touches the media threads: [`Notifier::deliver`] only queues (per URL, bounded)
//! and each URL's task ([`lane`]) sends, in order per room, retrying with exponential backoff.
//! A slow or dead receiver fills its own queue only; what does not fit is dropped, counted in
//! [`WebhookStats`] and in the next delivered event's `num_dropped`, and logged once per
//! [`Policy::report_every`].

mod lane;
pub mod sign;
pub mod transport;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as lk;
use tracing::info;

use crate::auth::KeyRing;
use crate::config::WebhookConfig;
use crate::events::{Event, Sink};
use lane::Lane;
pub use sign::Signer;
pub use transport::{HttpTransport, Transport};

/// Debian's bundle of public CAs (package ca-certificates): what `https://` receivers are
/// checked against.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How hard delivery tries, and how much it may hold. Per URL.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; doubled for each next one, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// One attempt (connect, TLS, request, answer) takes at most this long.
    pub request_timeout: Duration,
    /// Events queued or in flight at most; more are dropped (and counted).
    pub max_queued: usize,
    /// Their estimated memory at most ([`estimated_size`]).
    pub max_queued_bytes: usize,
    /// Rooms (keys) delivered at once; each room has at most one request in flight.
    pub max_in_flight: usize,
    /// How often drops and give-ups are summed up in the log.
    pub report_every: Duration,
}

impl Default for Policy {
    /// Like LiveKit's (go-retryablehttp: 1 + 4 attempts, 1 s doubling to 30 s; 10 workers),
    /// with a timeout per attempt and a memory bound.
    fn default() -> Policy {
        Policy {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_queued: 1000,
            max_queued_bytes: 8 << 20,
            max_in_flight: 8,
            report_every: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The wait before attempt `attempt` (0-based; attempt 0 does not wait).
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.first_backoff
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

/// Counters for `/metrics`, summed over every URL. Read them with `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Gauge: events queued or in flight now (an event for two URLs counts twice).
    pub queued: AtomicU64,
    /// Gauge: their estimated memory, bytes.
    pub queued_bytes: AtomicU64,
    /// Events a receiver answered with 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (connection error, timeout, non-2xx), retried or not.
    pub failed_attempts: AtomicU64,
    /// Events given up after their last attempt (also announced in `num_dropped`).
    pub failed: AtomicU64,
    /// Events dropped because a URL's queue was full.
    pub dropped: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebhookError(String);

/// The webhook sink: one lane (queue + task) per URL.
pub struct Notifier {
    lanes: Vec<Arc<Lane>>,
    stats: Arc<WebhookStats>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notifier({} urls)", self.lanes.len())
    }
}

impl Notifier {
    /// Checks the signing key against `keys`, then starts one task per URL (on the current
    /// tokio runtime). No URLs: a notifier that ignores events.
    pub fn start(config: &WebhookConfig, keys: KeyRing) -> Result<Arc<Notifier>, WebhookError> {
        if let Some(k) = &config.api_key {
            let current = keys.current();
            if current.secret(k).is_none() {
                return Err(WebhookError(format!(
                    "webhook.api_key: {k:?} is not one of this server's API keys ({})",
                    current.names().join(", ")
                )));
            }
        }
        let signer = Arc::new(Signer::new(keys, config.api_key.clone()));
        let policy = Policy::default();
        let tls = if config.urls.iter().any(|u| u.starts_with("https://")) {
            let roots = crate::http::client::roots_from_pem_files(&[Path::new(SYSTEM_CA_BUNDLE)])
                .and_then(crate::http::client::connector)
                .map_err(|e| WebhookError(format!("webhook.urls: https:// receivers: {e}")))?;
            Some(roots)
        } else {
            None
        };
        let mut targets: Vec<(String, Box<dyn Transport>)> = Vec::new();
        for url in &config.urls {
            let t = HttpTransport::new(url, tls.as_ref(), policy.max_in_flight)
                .map_err(|e| WebhookError(format!("webhook.urls: {}: {e}", label(url))))?;
            targets.push((label(url), Box::new(t)));
        }
        if !targets.is_empty() {
            info!(
                urls = targets.len(),
                api_key = signer.key_name().as_deref().unwrap_or("-"),
                "webhooks: sending events to {} URL{}",
                targets.len(),
                if targets.len() == 1 { "" } else { "s" }
            );
        }
        Ok(Notifier::with_transports(targets, signer, policy))
    }

    /// A notifier over given transports (tests use fakes), one task each.
    pub fn with_transports(
        targets: Vec<(String, Box<dyn Transport>)>,
        signer: Arc<Signer>,
        policy: Policy,
    ) -> Arc<Notifier> {
        let stats = Arc::new(WebhookStats::default());
        let lanes: Vec<Arc<Lane>> = targets
            .into_iter()
            .map(|(label, transport)| {
                Arc::new(Lane::new(
                    label,
                    transport,
                    signer.clone(),
                    policy.clone(),
                    stats.clone(),
                ))
            })
            .collect();
        for lane in &lanes {
            tokio::spawn(lane.clone().run());
        }
        Arc::new(Notifier { lanes, stats })
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// How many URLs events go to.
    pub fn urls(&self) -> usize {
        self.lanes.len()
    }

    /// Queues a webhook event that is not a server event (egress, agent jobs, …): stamped and
    /// sent like the rest.
    pub fn notify(&self, webhook: lk::WebhookEvent) {
        let mut event = Event {
            webhook,
            agents: None,
        };
        if event.webhook.id.is_empty() {
            event.webhook.id = crate::ids::new_sid("EV_");
        }
        if event.webhook.created_at == 0 {
            event.webhook.created_at = crate::clock::unix_secs() as i64;
        }
        self.deliver(&Arc::new(event));
    }

    /// Waits until nothing is queued or `within` passed (at shutdown). True: all sent or given up.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.stats.queued.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Sink for Notifier {
    fn deliver(&self, event: &Arc<Event>) {
        if self.lanes.is_empty() {
            return;
        }
        let key = event_key(&event.webhook);
        let size = estimated_size(event);
        for lane in &self.lanes {
            lane.enqueue(key, event, size);
        }
    }
}

/// What orders events (LiveKit's `webhook.EventKey`): events of one key are delivered one at a
/// time, in order.
pub fn event_key(e: &lk::WebhookEvent) -> &str {
    if let Some(eg) = &e.egress_info {
        return &eg.egress_id;
    }
    if let Some(ing) = &e.ingress_info {
        return &ing.ingress_id;
    }
    if let Some(r) = &e.room {
        return &r.name;
    }
    if let Some(p) = &e.participant {
        return &p.identity;
    }
    if let Some(t) = &e.track {
        return &t.sid;
    }
    "default"
}

/// An event's memory, estimated: its structs plus their heap (strings, lists), which the
/// protobuf encoding's length approximates. Counted once per URL that queues it.
pub fn estimated_size(event: &Event) -> usize {
    use prost::Message as _;
    let w = &event.webhook;
    let structs = std::mem::size_of::<Event>()
        + w.room
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<lk::Room>())
        + w.participant
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<lk::ParticipantInfo>())
        + w.track
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<lk::TrackInfo>())
        + w.egress_info
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<lk::EgressInfo>())
        + w.ingress_info
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<lk::IngressInfo>());
    // The queue entry (the Arc and the size) and the key string.
    let entry = 2 * std::mem::size_of::<usize>() + event_key(w).len();
    structs + w.encoded_len() + entry
}

/// `url` without query or fragment, for logs and errors.
fn label(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(i) => format!("{}?…", &url[..i]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests;

/// The notifier's figures at each `/metrics` scrape (read from [`WebhookStats`]'s atomics).
#[derive(Debug)]
pub struct WebhookMetrics(pub Arc<WebhookStats>);

impl prometheus_client::collector::Collector for WebhookMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, gauge};
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.0;
        gauge(
            &mut enc,
            "confab_webhook_queued",
            "Webhook events queued or in flight (once per URL)",
            s.queued.load(Relaxed),
        )?;
        gauge(
            &mut enc,
            "confab_webhook_queued_bytes",
            "Estimated memory of the queued webhook events",
            s.queued_bytes.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "confab_webhook_delivered",
            "Webhook events a receiver answered with 2xx",
            s.delivered.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "confab_webhook_failed_attempts",
            "Webhook attempts that failed (retried or not)",
            s.failed_attempts.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "confab_webhook_failed",
            "Webhook events given up after their last attempt",
            s.failed.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "confab_webhook_dropped",
            "Webhook events dropped because a URL's queue was full",
            s.dropped.load(Relaxed),
        )
    }
}
