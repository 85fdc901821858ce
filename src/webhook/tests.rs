#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use super::transport::PostFuture;
use super::*;
use crate::auth::{ApiKeys, KeysOrigin};
use crate::config::Secret;
use crate::events::Bus;

const KEY: &str = "APItest";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123";

fn ring() -> KeyRing {
    let keys: BTreeMap<String, Secret> = [(KEY.to_string(), Secret::new(SECRET.to_string()))]
        .into_iter()
        .collect();
    KeyRing::new(ApiKeys::from_map(keys), &KeysOrigin::Config)
}

fn signer() -> Arc<Signer> {
    Arc::new(Signer::new(ring(), None))
}

fn decode(token: &str) -> sign::WebhookClaims {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "nbf", "iss"]);
    v.validate_nbf = true;
    v.set_issuer(&[KEY]);
    jsonwebtoken::decode::<sign::WebhookClaims>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .unwrap()
    .claims
}

fn event(name: &str, room: &str, n: u32) -> Event {
    Event {
        webhook: lk::WebhookEvent {
            event: name.into(),
            id: format!("EV_{room}_{n}"),
            created_at: 1_750_000_000,
            room: Some(lk::Room {
                name: room.into(),
                sid: format!("RM_{room}"),
                ..Default::default()
            }),
            participant: Some(lk::ParticipantInfo {
                identity: format!("user-{n}"),
                sid: format!("PA_{n}"),
                name: "A Participant".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        agents: None,
    }
}

/// What the fake receiver saw: one entry per attempt.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    event: lk::WebhookEvent,
    body: Bytes,
    auth: String,
    /// The answer given; `None`: none (the request hangs).
    status: Option<u16>,
}

type Reply = Box<dyn Fn(&lk::WebhookEvent, usize) -> (Duration, Option<u16>) + Send + Sync>;

/// A receiver in memory: `reply(event, n)` (n = how many requests came before) says how long
/// to take and what to answer.
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
}

impl Transport for Fake {
    fn post<'a>(&'a self, body: Bytes, authorization: &'a str) -> PostFuture<'a> {
        let event: lk::WebhookEvent = serde_json::from_slice(&body).unwrap();
        let mut seen = self.seen.lock().unwrap();
        let (delay, status) = (self.reply)(&event, seen.len());
        seen.push(Seen {
            at: Instant::now(),
            event,
            body,
            auth: authorization.to_string(),
            status,
        });
        drop(seen);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match status {
                Some(s) => Ok(StatusCode::from_u16(s).unwrap()),
                None => std::future::pending().await,
            }
        })
    }
}

fn fake(reply: Reply) -> (Box<dyn Transport>, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (
        Box::new(Fake {
            seen: seen.clone(),
            reply,
        }),
        seen,
    )
}

fn ok() -> Reply {
    Box::new(|_, _| (Duration::ZERO, Some(200)))
}

fn delivered(seen: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
        .cloned()
        .collect()
}

#[allow(deprecated)]
fn num_dropped(e: &lk::WebhookEvent) -> i32 {
    e.num_dropped
}

#[test]
fn the_signature_is_livekits_jwt_over_the_bodys_sha256() {
    // The SHA-256 of nothing, as `base64.StdEncoding` writes it (`openssl dgst -sha256 -binary | base64`).
    assert_eq!(
        sign::body_sha256(b""),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    let body = serde_json::to_vec(&event("room_started", "standup", 1).webhook).unwrap();
    let token = signer().sign(&body).unwrap();
    assert!(!token.starts_with("Bearer"), "LiveKit sends the bare JWT");
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::HS256
    );
    let claims = decode(&token);
    assert_eq!(claims.iss, KEY);
    assert_eq!(claims.sha256, sign::body_sha256(&body));
    assert_eq!(
        claims.exp - claims.nbf,
        300,
        "valid 5 minutes, as LiveKit's"
    );
    assert_eq!(claims.iat, claims.nbf);
    // Exactly the claims LiveKit's AccessToken writes for a webhook (no sub, no video grant).
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "iss", "nbf", "sha256"]);
}

#[test]
fn signing_follows_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config::from_layers(&[], &crate::config::Env::new()).unwrap();
    config.state_dir = dir.path().to_path_buf();
    let (keys, origin) = ApiKeys::load(&config, true).unwrap();
    let first = keys.primary().unwrap().0.to_string();
    let ring = KeyRing::new(keys, &origin);
    // Configured to sign with the device key by name; after a rotation that name is gone.
    let signer = Signer::new(ring.clone(), Some(first.clone()));
    let iss = |t: &str| {
        jsonwebtoken::dangerous::insecure_decode::<sign::WebhookClaims>(t)
            .unwrap()
            .claims
            .iss
    };
    assert_eq!(iss(&signer.sign(b"{}").unwrap()), first);
    let second = ring.rotate().unwrap();
    let token = signer.sign(b"{}").unwrap();
    assert_eq!(
        iss(&token),
        second,
        "the current key signs, not the one at start-up"
    );
    let secret = ring.current().secret(&second).unwrap().expose().to_string();
    let mut v = Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp"]);
    assert!(jsonwebtoken::decode::<sign::WebhookClaims>(
        &token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &v
    )
    .is_ok());
    assert_eq!(signer.key_name().as_deref(), Some(second.as_str()));
}

#[tokio::test]
async fn start_refuses_an_unknown_key_and_names_it() {
    let config = WebhookConfig {
        urls: vec!["http://127.0.0.1:9/hook".into()],
        api_key: Some("APInope".into()),
    };
    let err = Notifier::start(&config, ring()).unwrap_err().to_string();
    assert!(err.contains("webhook.api_key"), "{err}");
    assert!(err.contains("APInope") && err.contains(KEY), "{err}");
    assert!(!err.contains(SECRET));
    let config = WebhookConfig {
        urls: vec!["http://127.0.0.1:9/hook?token=x".into()],
        api_key: Some(KEY.into()),
    };
    assert_eq!(Notifier::start(&config, ring()).unwrap().urls(), 1);
    let off = Notifier::start(&WebhookConfig::default(), ring()).unwrap();
    off.deliver(&Arc::new(event("room_started", "r", 1)));
    assert_eq!(off.stats().queued.load(Ordering::Relaxed), 0);
}

#[test]
fn backoff_doubles_from_one_second_up_to_thirty() {
    let p = Policy::default();
    let waits: Vec<u64> = (0..8).map(|a| p.backoff(a).as_secs()).collect();
    assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(p.backoff(u32::MAX), p.max_backoff);
}

#[tokio::test(start_paused = true)]
async fn every_request_is_signed_for_its_own_body() {
    let (t, seen) = fake(ok());
    let n = Notifier::with_transports(vec![("fake".into(), t)], signer(), Policy::default());
    let bus = Bus::new(vec![n.clone()]);
    bus.publish(event("room_started", "standup", 1));
    bus.publish(event("participant_joined", "standup", 2));
    assert!(n.flush(Duration::from_secs(5)).await);
    let got = delivered(&seen);
    assert_eq!(got.len(), 2);
    for s in &got {
        assert_eq!(decode(&s.auth).sha256, sign::body_sha256(&s.body));
        assert!(s.event.id.starts_with("EV_"), "stamped by the bus");
    }
    assert_eq!(got[0].event.event, "room_started");
    assert_eq!(got[1].event.room.as_ref().unwrap().name, "standup");
    assert_eq!(n.stats().delivered.load(Ordering::Relaxed), 2);
    assert_eq!(n.stats().queued_bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rooms_events_arrive_in_order_and_a_stuck_room_holds_up_only_itself() {
    // Room "stuck": its first request never gets an answer (timeout, then a retry succeeds).
    // The others answer after varying delays, so a per-room order is not an accident.
    let hung = std::sync::atomic::AtomicBool::new(false);
    let (t, seen) = fake(Box::new(move |e, n| {
        if e.id == "EV_stuck_0" && !hung.swap(true, Ordering::Relaxed) {
            return (Duration::ZERO, None);
        }
        (Duration::from_millis((n as u64 * 37) % 11), Some(200))
    }));
    let n = Notifier::with_transports(vec![("fake".into(), t)], signer(), Policy::default());
    for i in 0..5 {
        for room in ["a", "stuck", "b", "c"] {
            n.deliver(&Arc::new(event("participant_joined", room, i)));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = delivered(&seen);
    assert_eq!(early.len(), 15, "a, b and c are not held up by stuck");
    assert!(early
        .iter()
        .all(|s| s.event.room.as_ref().unwrap().name != "stuck"));
    assert!(n.flush(Duration::from_secs(60)).await);
    let all = delivered(&seen);
    assert_eq!(all.len(), 20);
    for room in ["a", "stuck", "b", "c"] {
        let ids: Vec<String> = all
            .iter()
            .filter(|s| s.event.room.as_ref().unwrap().name == room)
            .map(|s| s.event.id.clone())
            .collect();
        let want: Vec<String> = (0..5).map(|i| format!("EV_{room}_{i}")).collect();
        assert_eq!(ids, want, "room {room} in order");
    }
    assert_eq!(n.stats().failed_attempts.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_counts_and_tells_the_receiver() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The first request waits for the gate; later ones are answered at once.
    struct Gated {
        gate: Arc<tokio::sync::Semaphore>,
        inner: Fake,
    }
    impl Transport for Gated {
        fn post<'a>(&'a self, body: Bytes, authorization: &'a str) -> PostFuture<'a> {
            let first = self.inner.seen.lock().unwrap().is_empty();
            let reply = self.inner.post(body, authorization);
            Box::pin(async move {
                if first {
                    let _ = self.gate.acquire().await;
                }
                reply.await
            })
        }
    }
    let t = Gated {
        gate: gate.clone(),
        inner: Fake {
            seen: seen.clone(),
            reply: ok(),
        },
    };
    let policy = Policy {
        max_queued: 3,
        max_in_flight: 1,
        ..Policy::default()
    };
    let n = Notifier::with_transports(vec![("fake".into(), Box::new(t))], signer(), policy);
    n.deliver(&Arc::new(event("participant_joined", "r", 0)));
    tokio::time::sleep(Duration::from_millis(1)).await; // now in flight, waiting for the gate
    for i in 1..10 {
        n.deliver(&Arc::new(event("participant_joined", "r", i)));
    }
    let stats = n.stats();
    assert_eq!(stats.queued.load(Ordering::Relaxed), 3, "bounded");
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 7);
    gate.add_permits(1);
    assert!(n.flush(Duration::from_secs(5)).await);
    let got = delivered(&seen);
    let ids: Vec<&str> = got.iter().map(|s| s.event.id.as_str()).collect();
    assert_eq!(ids, ["EV_r_0", "EV_r_1", "EV_r_2"]);
    let told: Vec<i32> = got.iter().map(|s| num_dropped(&s.event)).collect();
    assert_eq!(
        told,
        [0, 7, 0],
        "the next event sent after the drops says how many"
    );
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 3);
    assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);

    // The byte bound: room for two events of this size, not three.
    let one = estimated_size(&event("participant_joined", "r", 0));
    let (t, _) = fake(Box::new(|_, _| (Duration::ZERO, None)));
    let policy = Policy {
        max_queued_bytes: one * 5 / 2,
        ..Policy::default()
    };
    let n = Notifier::with_transports(vec![("hang".into(), t)], signer(), policy);
    for i in 0..3 {
        n.deliver(&Arc::new(event("participant_joined", "r", i)));
    }
    assert_eq!(n.stats().queued.load(Ordering::Relaxed), 2);
    assert_eq!(n.stats().dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_exponential_backoff_then_given_up() {
    // Event 0 always gets 500; event 1 gets 200.
    let (t, seen) = fake(Box::new(|e, _| {
        let status = if e.id == "EV_r_0" { 500 } else { 200 };
        (Duration::ZERO, Some(status))
    }));
    let n = Notifier::with_transports(vec![("fake".into(), t)], signer(), Policy::default());
    n.deliver(&Arc::new(event("room_started", "r", 0)));
    n.deliver(&Arc::new(event("room_finished", "r", 1)));
    assert!(n.flush(Duration::from_secs(60)).await);
    let all = seen.lock().unwrap().clone();
    assert_eq!(all.len(), 6, "5 attempts, then the next event");
    let gaps: Vec<u64> = all[..5]
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs())
        .collect();
    assert_eq!(gaps, [1, 2, 4, 8]);
    // Each attempt is signed afresh (a rotated key, a fresh expiry).
    assert!(all[..5].iter().all(|s| s.body == all[0].body));
    assert_eq!(
        all[5].event.id, "EV_r_1",
        "the room's next event waited its turn"
    );
    assert_eq!(
        num_dropped(&all[5].event),
        1,
        "the given-up event counts as dropped"
    );
    let stats = n.stats();
    assert_eq!(stats.failed_attempts.load(Ordering::Relaxed), 5);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_recovers_gets_the_event_and_client_errors_are_not_retried() {
    // 503, 503, then 200.
    let (t, seen) = fake(Box::new(|_, n| {
        (Duration::ZERO, Some(if n < 2 { 503 } else { 200 }))
    }));
    let n = Notifier::with_transports(vec![("fake".into(), t)], signer(), Policy::default());
    n.deliver(&Arc::new(event("room_started", "r", 0)));
    assert!(n.flush(Duration::from_secs(60)).await);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(n.stats().delivered.load(Ordering::Relaxed), 1);
    assert_eq!(n.stats().failed.load(Ordering::Relaxed), 0);

    // 400/401/404 will not change by asking again (LiveKit's retry policy agrees).
    let (t, seen) = fake(Box::new(|_, _| (Duration::ZERO, Some(401))));
    let n = Notifier::with_transports(vec![("fake".into(), t)], signer(), Policy::default());
    n.deliver(&Arc::new(event("room_started", "r", 0)));
    assert!(n.flush(Duration::from_secs(60)).await);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(n.stats().failed.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_url_does_not_delay_another() {
    let (hang, hung) = fake(Box::new(|_, _| (Duration::ZERO, None)));
    let (good, seen) = fake(ok());
    let n = Notifier::with_transports(
        vec![("hang".into(), hang), ("good".into(), good)],
        signer(),
        Policy::default(),
    );
    let start = Instant::now();
    for i in 0..20 {
        n.deliver(&Arc::new(event(
            "track_published",
            &format!("room{}", i % 4),
            i,
        )));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got = delivered(&seen);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|s| s.at - start < Duration::from_millis(10)));
    assert_eq!(
        hung.lock().unwrap().len(),
        4,
        "one request per room in flight"
    );
    // The hanging URL's events stay queued (bounded), each given up after its attempts.
    assert_eq!(n.stats().queued.load(Ordering::Relaxed), 20);
    assert!(!n.flush(Duration::from_secs(30)).await);
    assert!(n.flush(Duration::from_secs(600)).await);
    assert_eq!(n.stats().failed.load(Ordering::Relaxed), 20);
    assert_eq!(n.stats().delivered.load(Ordering::Relaxed), 20);
}

#[test]
fn events_are_ordered_by_room_or_by_what_they_are_about() {
    let mut e = event("room_started", "standup", 1).webhook;
    assert_eq!(event_key(&e), "standup");
    e.egress_info = Some(lk::EgressInfo {
        egress_id: "EG_1".into(),
        ..Default::default()
    });
    assert_eq!(event_key(&e), "EG_1");
    assert_eq!(event_key(&lk::WebhookEvent::default()), "default");
}

/// An event as the SFU makes one for a participant with a published camera: room, participant
/// (with its track) and track filled.
fn realistic(i: u32) -> Event {
    let track = lk::TrackInfo {
        sid: format!("TR_{i:012}"),
        r#type: lk::TrackType::Video as i32,
        name: "camera".into(),
        width: 1280,
        height: 720,
        mime_type: "video/VP8".into(),
        mid: "1".into(),
        source: lk::TrackSource::Camera as i32,
        ..Default::default()
    };
    let mut e = event("track_published", &format!("room-{}", i % 50), i);
    if let Some(p) = e.webhook.participant.as_mut() {
        p.metadata = "{\"role\":\"speaker\"}".into();
        p.joined_at = 1_750_000_000;
        p.tracks = vec![track.clone()];
    }
    if let Some(r) = e.webhook.room.as_mut() {
        r.creation_time = 1_750_000_000;
        r.empty_timeout = 300;
        r.num_participants = 3;
        r.num_publishers = 2;
    }
    e.webhook.track = Some(track);
    e.webhook.id = crate::ids::new_sid("EV_");
    e
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Queues many events to a receiver that never answers: the default bounds hold, and the memory
/// per queued webhook is measured (RSS) beside the estimate the bound uses.
/// `cargo test --lib webhook::tests::memory -- --nocapture` prints the figures.
#[tokio::test(flavor = "current_thread")]
async fn memory_per_queued_webhook_is_small_and_the_queue_is_bounded() {
    let hang = || fake(Box::new(|_, _| (Duration::ZERO, None))).0;
    let n = Notifier::with_transports(vec![("dead".into(), hang())], signer(), Policy::default());
    for i in 0..20_000 {
        n.deliver(&Arc::new(realistic(i)));
    }
    let stats = n.stats();
    let queued = stats.queued.load(Ordering::Relaxed);
    assert!(queued <= 1000, "{queued}");
    assert!(stats.queued_bytes.load(Ordering::Relaxed) <= 8 << 20);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 20_000 - queued);

    // Unbounded for the measurement: 20 000 events held for one dead URL.
    const N: u32 = 20_000;
    let policy = Policy {
        max_queued: usize::MAX,
        max_queued_bytes: usize::MAX,
        ..Policy::default()
    };
    let n = Notifier::with_transports(vec![("dead".into(), hang())], signer(), policy);
    let before = rss_bytes();
    for i in 0..N {
        n.deliver(&Arc::new(realistic(i)));
    }
    let after = rss_bytes();
    let estimate = estimated_size(&realistic(0));
    let measured = (after.saturating_sub(before)) / N as usize;
    println!(
        "webhook memory: {measured} B per queued event by RSS ({N} queued), {estimate} B estimated \
         (body {} B)",
        serde_json::to_vec(&realistic(0).webhook).unwrap().len()
    );
    assert_eq!(n.stats().queued.load(Ordering::Relaxed), N as u64);
    assert!(estimate > 500 && estimate < 8192, "{estimate}");
}

/// Real HTTP on loopback: a hyper server that checks LiveKit's headers and the signature, and
/// times each event from `deliver` to its arrival. `-- --nocapture` prints p50/p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_delivery_is_fast_and_carries_livekits_headers() {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::time::Instant, String)>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let h = req.headers().clone();
                        assert_eq!(req.uri().path_and_query().unwrap().as_str(), "/hook?t=1");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let at = std::time::Instant::now();
                        assert_eq!(h["content-type"], "application/webhook+json");
                        assert!(h["user-agent"].to_str().unwrap().starts_with("LiveKit"));
                        let auth = h["authorization"].to_str().unwrap();
                        assert_eq!(decode(auth).sha256, sign::body_sha256(&body));
                        let e: lk::WebhookEvent = serde_json::from_slice(&body).unwrap();
                        let _ = tx.send((at, e.id));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    let url = format!("http://{addr}/hook?t=1");
    let t = HttpTransport::new(&url, None, 8).unwrap();
    let n = Notifier::with_transports(vec![(url, Box::new(t))], signer(), Policy::default());
    let mut latencies = Vec::new();
    for i in 0..500 {
        let e = Arc::new(realistic(i));
        let start = std::time::Instant::now();
        n.deliver(&e);
        let (at, id) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id, e.webhook.id);
        latencies.push(at - start);
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "webhook loopback latency (deliver → receiver has the body), 500 events: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert!(p(0.5) < Duration::from_millis(50));
    assert_eq!(n.stats().failed_attempts.load(Ordering::Relaxed), 0);
}

#[test]
fn urls_are_logged_without_their_query() {
    assert_eq!(
        label("https://app.example/hook?token=hunter2#x"),
        "https://app.example/hook?…"
    );
    assert_eq!(
        label("http://10.0.0.5:3000/hook"),
        "http://10.0.0.5:3000/hook"
    );
}
