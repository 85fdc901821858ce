//! LiveKit signalling against a running `confab serve`, from a Rust client (WebSocket + protobuf,
//! and str0m as the browser's media stack where media is needed).
//!
//! Mostly hostile and broken input: forged, expired and mis-scoped tokens on `/rtc/validate` and
//! on the WebSocket upgrade, junk on a joined signalling session, an oversized message, garbage
//! UDP on the media port, a client that never answers its offer, and a second session with the
//! same identity. Each must be refused or survived, and the daemon must keep serving everyone
//! else. Also: `confab status` counts, and a media connection over ICE-TCP alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Daemon;
use confab::auth::{ApiKeys, TokenRequest, VideoGrant};
use confab::config::Secret;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

const ROOM: &str = "standup";
/// The longest any one expected answer may take.
const WAIT: Duration = Duration::from_secs(10);
/// The server's limit on one signalling message (src/signal/ws.rs).
const MAX_MESSAGE: usize = 1 << 20;
/// Malformed messages the server tolerates on one session before closing it.
const MAX_MALFORMED: usize = 20;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A small deterministic PRNG (xorshift64*): junk that is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------------------------ server

/// A daemon, its device API key and secret, and a TLS connector trusting its CA.
struct Server {
    d: Daemon,
    key: String,
    secret: String,
    tls: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(|_| {})
    }

    fn start_with(customize: impl FnOnce(&mut std::process::Command)) -> Server {
        Server::start_on(common::free_ports(), customize)
    }

    fn start_on(ports: [u16; 4], customize: impl FnOnce(&mut std::process::Command)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start_with(dir.path(), ports, customize);
        let keys: toml::Table = std::fs::read_to_string(dir.path().join("data/keys.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let (key, secret) = keys["keys"].as_table().unwrap().iter().next().unwrap();
        let tls = confab::http::client::connector_for_ca(&d.ca()).unwrap();
        Server {
            key: key.clone(),
            secret: secret.as_str().unwrap().to_string(),
            tls,
            d,
            _dir: dir,
        }
    }

    /// A good token (the crate's own minting): `identity` may join [`ROOM`].
    fn token(&self, identity: &str) -> String {
        let keys = ApiKeys::from_map(BTreeMap::from([(
            self.key.clone(),
            Secret::new(self.secret.clone()),
        )]));
        confab::auth::mint(
            &keys,
            &self.key,
            &TokenRequest {
                identity: identity.into(),
                ttl: Duration::from_secs(600),
                video: VideoGrant {
                    room_join: Some(true),
                    room: Some(ROOM.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Claims that would be accepted if signed right: to be spoiled one way at a time.
    fn claims(&self, identity: &str) -> Value {
        let t = now();
        json!({
            "iss": self.key,
            "sub": identity,
            "nbf": t,
            "exp": t + 600,
            "video": {"roomJoin": true, "room": ROOM},
        })
    }

    fn sign(&self, alg: Algorithm, secret: &str, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    /// `GET /rtc/validate?query`: (status, body).
    fn validate(&self, query: &str) -> (String, String) {
        self.d.get(&format!("/rtc/validate?{query}"))
    }

    /// Opens TLS to the daemon and asks for a WebSocket on `path_and_query`: the session, or
    /// the refusal's status and body (what arrived of it with the headers).
    async fn connect(&self, path_and_query: &str) -> Result<Session, (u16, String)> {
        self.connect_with(path_and_query, None).await
    }

    /// [`Server::connect`], with the token (if any) in `Authorization: Bearer`.
    async fn connect_with(
        &self,
        path_and_query: &str,
        bearer: Option<&str>,
    ) -> Result<Session, (u16, String)> {
        use tungstenite::client::IntoClientRequest as _;
        let url = format!("wss://localhost:{}{path_and_query}", self.d.https);
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(t) = bearer {
            let v = format!("Bearer {t}").parse().unwrap();
            req.headers_mut().insert("authorization", v);
        }
        let attempt = async {
            let tcp = TcpStream::connect(("127.0.0.1", self.d.https))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = self.tls.connect(name, tcp).await.unwrap();
            tokio_tungstenite::client_async(req, tls).await
        };
        match tokio::time::timeout(WAIT, attempt).await {
            Ok(Ok((ws, resp))) => {
                assert_eq!(resp.status(), 101);
                Ok(Session { ws })
            }
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp.body().clone().unwrap_or_default();
                Err((
                    resp.status().as_u16(),
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            }
            Ok(Err(e)) => panic!("WebSocket to {url} failed: {e}"),
            Err(_) => panic!("WebSocket to {url}: no answer within {WAIT:?}"),
        }
    }

    /// Joins [`ROOM`] as `identity` on `/rtc` (v0). The first message must be `join`, for
    /// that identity.
    async fn join(&self, identity: &str) -> (Session, lk::JoinResponse) {
        self.join_with(identity, &self.token(identity)).await
    }

    /// [`Server::join`] with a token of the test's own making.
    async fn join_with(&self, identity: &str, token: &str) -> (Session, lk::JoinResponse) {
        let q = format!("/rtc?access_token={token}&auto_subscribe=1&protocol=16");
        let mut s = match self.connect(&q).await {
            Ok(s) => s,
            Err((code, body)) => panic!("{identity} could not join: {code} {body}"),
        };
        let join = match s.recv().await {
            Some(Resp::Join(j)) => j,
            other => panic!("{identity}: the first message is not join but {other:?}"),
        };
        let who = join.participant.as_ref().map(|p| p.identity.as_str());
        assert_eq!(who, Some(identity), "{join:?}");
        assert_eq!(join.room.as_ref().map(|r| r.name.as_str()), Some(ROOM));
        (s, join)
    }

    /// `/api/health/ready` is 200 and every media loop turned within the last second (each beats
    /// every 100 ms; readiness only fails after 5 s, so this catches a stuck loop sooner).
    fn assert_ready(&self) {
        let (code, body) = self.d.get("/api/health/ready");
        assert_eq!(code, "200", "{body}\n{}", self.d.stderr());
        let ready: Value = serde_json::from_str(&body).unwrap();
        let detail = ready["checks"]["media"]["detail"].as_str().unwrap();
        let ms: u64 = detail
            .rsplit_once("last turned ")
            .and_then(|(_, s)| s.strip_suffix(" ms ago"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected media detail: {detail}"));
        assert!(ms < 1000, "media loop stalled: {detail}");
    }

    fn assert_no_panic(&self) {
        let log = self.d.stderr();
        assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    }

    fn stop(mut self) {
        self.assert_no_panic();
        self.d.stop();
    }
}

// ------------------------------------------------------------------------------------ session

/// One signalling WebSocket: `SignalRequest`s up, `SignalResponse`s down.
struct Session {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Session {
    async fn send_frame(&mut self, m: WsMessage) {
        tokio::time::timeout(WAIT, self.ws.send(m))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    async fn send(&mut self, msg: Req) {
        let bytes = lk::SignalRequest { message: Some(msg) }.encode_to_vec();
        self.send_frame(WsMessage::Binary(bytes.into())).await;
    }

    /// The next `SignalResponse` before `deadline`: `Ok(None)` once the server has ended the
    /// connection, `Err(())` if the deadline passed first.
    async fn recv_before(&mut self, deadline: Instant) -> Result<Option<Resp>, ()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(frame) = tokio::time::timeout(left, self.ws.next()).await else {
                return Err(());
            };
            match frame {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Ok(WsMessage::Binary(b))) => {
                    let resp = lk::SignalResponse::decode(b.as_ref())
                        .unwrap_or_else(|e| panic!("server sent a bad SignalResponse: {e}"));
                    if let Some(m) = resp.message {
                        return Ok(Some(m));
                    }
                }
                Some(Ok(WsMessage::Text(t))) => panic!("server sent a text frame: {t}"),
                Some(Ok(_)) => {} // WebSocket ping/pong
            }
        }
    }

    /// The next `SignalResponse`, or `None` once the server has ended the connection.
    async fn recv(&mut self) -> Option<Resp> {
        self.recv_before(Instant::now() + WAIT)
            .await
            .unwrap_or_else(|_| panic!("nothing from the server within {WAIT:?}"))
    }

    /// Skips messages until `pick` takes one; a `leave` it does not take, the end of the
    /// connection or the deadline fails the test.
    async fn recv_find<T>(&mut self, what: &str, mut pick: impl FnMut(&Resp) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.recv_before(deadline).await {
                Ok(Some(m)) => match (pick(&m), m) {
                    (Some(t), _) => return t,
                    (None, Resp::Leave(l)) => {
                        panic!("told to leave while waiting for {what}: {l:?}")
                    }
                    (None, _) => {}
                },
                Ok(None) => panic!("connection ended while waiting for {what}"),
                Err(()) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The server's (subscriber) offer.
    async fn offer(&mut self) -> lk::SessionDescription {
        self.recv_find("offer", |m| match m {
            Resp::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// Both LiveKit pings are answered: `ping` with `pong`, `ping_req` with its timestamp.
    async fn ping(&mut self) {
        let t = now() as i64 * 1000;
        self.send(Req::Ping(t)).await;
        self.recv_find("pong", |m| matches!(m, Resp::Pong(_)).then_some(()))
            .await;
        self.send(Req::PingReq(lk::Ping {
            timestamp: t + 1,
            rtt: 0,
        }))
        .await;
        self.recv_find("pong_resp", |m| {
            matches!(m, Resp::PongResp(p) if p.last_ping_timestamp == t + 1).then_some(())
        })
        .await;
    }

    /// Waits until the server ends the connection; returns what it sent before.
    async fn closed(&mut self) -> Vec<Resp> {
        let deadline = Instant::now() + WAIT;
        let mut seen = vec![];
        loop {
            match self.recv_before(deadline).await {
                Ok(Some(m)) => seen.push(m),
                Ok(None) => return seen,
                Err(()) => panic!("the server did not close within {WAIT:?}; it sent {seen:?}"),
            }
        }
    }
}

// ------------------------------------------------------------------------------------ tokens

/// A token attack: the query string to send, and a word the refusal must give as reason.
struct Attack {
    name: &'static str,
    query: String,
    reason: &'static str,
}

fn attacks(s: &Server) -> Vec<Attack> {
    let claims = s.claims("mallory");
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let good = |c: &Value| s.sign(Algorithm::HS256, &s.secret, c);
    let t = now();
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    let signed = good(&claims);
    let stripped = format!("{}.", signed.rsplit_once('.').unwrap().0);
    let token = |name, tok: String, reason| Attack {
        name,
        query: format!("access_token={tok}"),
        reason,
    };
    vec![
        token(
            "signed with another secret",
            s.sign(Algorithm::HS256, &"x".repeat(40), &claims),
            "signature",
        ),
        token("signature stripped", stripped, "invalid token"),
        token(
            "unknown API key (iss)",
            good(&with(json!({"iss": "APIunknown0000"}))),
            "unknown API key",
        ),
        token(
            "expired 2 min ago (beyond the 60 s leeway)",
            good(&with(json!({"nbf": t - 900, "exp": t - 120}))),
            "expired",
        ),
        token(
            "nbf in 5 min (beyond the 60 s leeway)",
            good(&with(json!({"nbf": t + 300, "exp": t + 900}))),
            "not valid yet",
        ),
        token("no exp", good(&with(json!({"exp": null}))), "invalid token"),
        token("alg none, no signature", alg_none, "invalid token"),
        token(
            "HS384 with the right secret",
            s.sign(Algorithm::HS384, &s.secret, &claims),
            "HS256",
        ),
        token(
            "HS512 with the right secret",
            s.sign(Algorithm::HS512, &s.secret, &claims),
            "HS256",
        ),
        token(
            "roomJoin missing",
            good(&with(json!({"video": {"room": ROOM, "canPublish": true}}))),
            "roomJoin",
        ),
        token(
            "roomJoin false",
            good(&with(json!({"video": {"room": ROOM, "roomJoin": false}}))),
            "roomJoin",
        ),
        Attack {
            name: "token for another room than `room=` asks",
            query: format!("access_token={signed}&room=other"),
            reason: "not \"other\"",
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_refuses_forged_expired_and_misscoped_tokens() {
    let s = Server::start();
    // Controls: the harness's tokens are good, and the leeway is there (so the refusals
    // below are for being *beyond* it).
    let ok = ("200".to_string(), "success".to_string());
    let token = s.token("alice");
    assert_eq!(s.validate(&format!("access_token={token}")), ok);
    assert_eq!(s.validate(&format!("access_token={token}&room={ROOM}")), ok);
    let t = now();
    let mut late = s.claims("alice");
    late["exp"] = json!(t - 20);
    late["nbf"] = json!(t - 600);
    let mut early = s.claims("alice");
    early["nbf"] = json!(t + 20);
    for c in [late, early] {
        let tok = s.sign(Algorithm::HS256, &s.secret, &c);
        assert_eq!(s.validate(&format!("access_token={tok}")), ok, "{c}");
    }

    let mut failures = vec![];
    for a in attacks(&s) {
        let (code, body) = s.validate(&a.query);
        if code != "401" || !body.contains(a.reason) {
            failures.push(format!(
                "{}: got {code} {body:?}, want 401 with {:?}",
                a.name, a.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_refuses_the_same_tokens() {
    let s = Server::start();
    let mut failures = vec![];
    for a in attacks(&s) {
        for path in ["/rtc", "/rtc/v1"] {
            match s.connect(&format!("{path}?{}", a.query)).await {
                Ok(_) => failures.push(format!("{path}, {}: upgraded (101)", a.name)),
                // The reason is checked if it came with the headers (it usually does).
                Err((code, body))
                    if code != 401 || !(body.is_empty() || body.contains(a.reason)) =>
                {
                    failures.push(format!("{path}, {}: got {code} {body:?}", a.name))
                }
                Err(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // None of the refused attempts left a participant behind.
    let (mut alice, join) = s.join("alice").await;
    assert!(join.other_participants.is_empty(), "{join:?}");
    alice.ping().await;
    drop(alice);
    s.stop();
}

// ------------------------------------------------------------------------------------ signalling

/// Binary frames that are certainly not a `SignalRequest`: crafted breakage, then random
/// bytes (re-drawn if they happen to decode).
fn malformed_frames(rng: &mut Rng, random: usize) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = vec![
        // Field 1 (offer), a length varint that never ends.
        [&[0x0a][..], &[0xff; 11]].concat(),
        // Field 1, length 100, three bytes follow.
        vec![0x0a, 100, 1, 2, 3],
        // Wire type 7 does not exist.
        vec![0x0f, 0x00],
        // Field number 0 is invalid.
        vec![0x00, 0x01],
        // An offer whose inner SessionDescription overruns its own length.
        vec![0x0a, 0x03, 0x12, 0x7f, 0x41],
    ];
    while frames.len() < 5 + random {
        let n = 1 + rng.below(512);
        let b = rng.bytes(n);
        if lk::SignalRequest::decode(b.as_slice()).is_err() {
            frames.push(b);
        }
    }
    for f in &frames {
        assert!(lk::SignalRequest::decode(f.as_slice()).is_err(), "{f:?}");
    }
    frames
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_on_a_joined_session_is_ignored_and_the_session_survives() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);

    // Malformed protobuf and a text frame: fewer than the server's limit.
    let frames = malformed_frames(&mut rng, 12);
    assert!(frames.len() < MAX_MALFORMED);
    for f in frames {
        alice.send_frame(WsMessage::Binary(f.into())).await;
    }
    alice
        .send_frame(WsMessage::Text("{\"ping\": 1}".into()))
        .await;
    // Well-formed requests that make no sense: an empty one, trickles that are not
    // candidates, tracks that do not exist, a track type that does not exist.
    alice.send_frame(WsMessage::Binary(Vec::new().into())).await;
    let trickle = |init: &str, target| {
        Req::Trickle(lk::TrickleRequest {
            candidate_init: init.into(),
            target,
            r#final: false,
        })
    };
    for req in [
        trickle("{not json", 1),
        trickle(
            &json!({"candidate": "candidate:0 1 UDP 1 999.1.1.1 -5 typ bogus"}).to_string(),
            7,
        ),
        Req::Mute(lk::MuteTrackRequest {
            sid: "TR_nope".into(),
            muted: true,
        }),
        Req::Subscription(lk::UpdateSubscription {
            track_sids: vec!["TR_nope".into()],
            subscribe: true,
            participant_tracks: vec![],
        }),
        Req::TrackSetting(lk::UpdateTrackSettings {
            track_sids: vec!["TR_nope".into()],
            quality: 99,
            ..Default::default()
        }),
        Req::AddTrack(lk::AddTrackRequest {
            cid: "x".into(),
            r#type: 99,
            ..Default::default()
        }),
    ] {
        alice.send(req).await;
    }

    // Still there: pings are answered, and the room still has alice when bob joins (which
    // also shows the media thread took the nonsense in its stride).
    alice.ping().await;
    let (mut bob, join) = s.join("bob").await;
    let others: Vec<&str> = join
        .other_participants
        .iter()
        .map(|p| p.identity.as_str())
        .collect();
    assert_eq!(others, ["alice"]);
    bob.ping().await;
    alice.ping().await;
    s.assert_ready();
    drop((alice, bob));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_malformed_messages_close_the_session() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let mut rng = Rng(0x5eed_c0ff_ee00_0002);
    for f in malformed_frames(&mut rng, MAX_MALFORMED + 1 - 5) {
        // The server may hang up before the last frames are written.
        let _ = alice.ws.send(WsMessage::Binary(f.into())).await;
    }
    alice.closed().await;
    let (mut bob, _) = s.join("bob").await;
    bob.ping().await;
    drop(bob);
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_only_that_connection() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let (mut carol, _) = s.join("carol").await;
    let big = vec![0u8; 2 * MAX_MESSAGE];
    // The server may close while the message is still being written.
    let _ = tokio::time::timeout(WAIT, alice.ws.send(WsMessage::Binary(big.into()))).await;
    alice.closed().await;

    s.assert_ready();
    carol.ping().await;
    let (mut bob, _) = s.join("bob").await;
    bob.ping().await;
    drop((alice, bob, carol));
    s.stop();
}

/// The server reads with a small buffer (8 KiB per connection); a frame many times larger but
/// within the limit still arrives whole and the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_larger_than_the_read_buffer_is_read_whole() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let init = json!({ "candidate": "x".repeat(256 * 1024) }).to_string();
    alice
        .send(Req::Trickle(lk::TrickleRequest {
            candidate_init: init,
            target: 0,
            r#final: false,
        }))
        .await;
    // A broken or truncated read would end the connection instead of answering.
    alice.ping().await;
    s.assert_ready();
    drop(alice);
    s.stop();
}

/// Behind 1:1 NAT (a cloud VM) clients must be told the public address: `rtc.node_ip` is offered
/// on the media ports next to the bound addresses.
#[tokio::test(flavor = "multi_thread")]
async fn the_configured_public_address_is_offered() {
    let s = Server::start_with(|c| {
        c.env("CONFAB_NODE_IP", "203.0.113.7");
    });
    let (mut alice, _) = s.join("alice").await;
    let offer = alice.offer().await;
    for line in [
        format!("127.0.0.1 {} typ host", s.d.udp),
        format!("203.0.113.7 {} typ host", s.d.udp),
        format!("203.0.113.7 {} typ host tcptype passive", s.d.tcp),
    ] {
        assert!(offer.sdp.contains(&line), "no {line:?} in\n{}", offer.sdp);
    }
    drop(alice);
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_subscriber_offer_does_not_block_the_room() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    // v0: the server offers the subscriber PeerConnection right after join; alice never answers.
    let offer = alice.offer().await;
    assert!(offer.sdp.starts_with("v=0"), "{}", offer.sdp);

    let (mut bob, join) = s.join("bob").await;
    let others: Vec<&str> = join
        .other_participants
        .iter()
        .map(|p| p.identity.as_str())
        .collect();
    assert_eq!(others, ["alice"]);
    bob.ping().await;
    // The room still tells alice about bob, and answers her pings.
    alice
        .recv_find("participant update naming bob", |m| match m {
            Resp::Update(u) => u
                .participants
                .iter()
                .any(|p| p.identity == "bob")
                .then_some(()),
            _ => None,
        })
        .await;
    alice.ping().await;
    s.assert_ready();
    drop((alice, bob));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_session_with_the_same_identity_replaces_the_first() {
    let s = Server::start();
    let (mut first, _) = s.join("alice").await;
    let (mut second, join) = s.join("alice").await;
    assert!(
        join.other_participants.is_empty(),
        "the old alice is still listed: {join:?}"
    );
    let leave = first
        .recv_find("leave", |m| match m {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.reason,
        lk::DisconnectReason::DuplicateIdentity as i32,
        "{leave:?}"
    );
    assert!(!leave.can_reconnect, "{leave:?}");
    let after = first.closed().await;
    assert!(after.is_empty(), "sent after leave: {after:?}");
    second.ping().await;
    drop((first, second));
    s.stop();
}

// ------------------------------------------------------------------------------------ media UDP

/// A STUN message: type, transaction id, attributes (type, value), each padded to 4 bytes;
/// `declared_len` overrides the header's length field.
fn stun(kind: u16, txid: [u8; 12], attrs: &[(u16, &[u8])], declared_len: Option<u16>) -> Vec<u8> {
    let mut body = vec![];
    for (t, v) in attrs {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut m = vec![];
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&declared_len.unwrap_or(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&txid);
    m.extend_from_slice(&body);
    m
}

/// The ICE username fragment in an SDP.
fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_else(|| panic!("no ice-ufrag in {sdp}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_udp_on_the_media_port_is_ignored() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let offer = alice.offer().await;
    let ufrag = ice_ufrag(&offer.sdp);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", s.d.udp);
    let mut rng = Rng(0x5eed_c0ff_ee00_0005);
    let mut datagrams: Vec<Vec<u8>> = vec![];
    // Random datagrams whose first byte falls in each demultiplexing range (RFC 7983):
    // STUN 0–3, DTLS 20–63, RTP/RTCP 128–191, and anything.
    for i in 0..400 {
        let n = 1 + rng.below(1200);
        let mut d = rng.bytes(n);
        d[0] = match i % 4 {
            0 => rng.below(4) as u8,
            1 => 20 + rng.below(44) as u8,
            2 => 128 + rng.below(64) as u8,
            _ => d[0],
        };
        datagrams.push(d);
    }
    let txid = |rng: &mut Rng| -> [u8; 12] { rng.bytes(12).try_into().unwrap() };
    let username = format!("{ufrag}:intruder");
    datagrams.extend([
        // A binding request cut off after its header.
        stun(0x0001, txid(&mut rng), &[], Some(24)),
        // Header claims more than is there; an attribute claims more than the message.
        stun(0x0001, txid(&mut rng), &[(0x0006, b"a:b")], Some(0x0100))
            .into_iter()
            .chain([0x00, 0x08, 0xff, 0xff])
            .collect(),
        // Bogus attributes: unknown comprehension-required types, an empty USERNAME, a
        // MESSAGE-INTEGRITY of the wrong size.
        stun(
            0x0001,
            txid(&mut rng),
            &[(0x7fff, b"????"), (0x0006, b""), (0x0008, b"short")],
            None,
        ),
        // A binding request for alice's real ICE username with a made-up MESSAGE-INTEGRITY.
        stun(
            0x0001,
            txid(&mut rng),
            &[
                (0x0006, username.as_bytes()),
                (0x0024, &[0x6e, 0x7f, 0x1e, 0xff]),
                (0x0008, &rng.bytes(20)),
            ],
            None,
        ),
        // Not a request at all: a binding success response out of the blue.
        stun(0x0101, txid(&mut rng), &[(0x0020, &[0; 8])], None),
        // RTP (version 2, PT 96) and RTCP (SR) headers from nobody.
        [
            &[
                0x80, 0x60, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef,
            ][..],
            &rng.bytes(160),
        ]
        .concat(),
        vec![0x80, 200, 0x00, 0x06, 0xde, 0xad, 0xbe, 0xef],
        // A DTLS ClientHello record header with nothing behind it.
        vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00],
        // Empty and one-byte datagrams.
        vec![],
        vec![0x00],
    ]);
    for d in &datagrams {
        sock.send_to(d, to).unwrap();
    }

    // The media loop turns, signalling answers, and a new participant can join (the join is a
    // command the media thread must process).
    s.assert_ready();
    alice.ping().await;
    let (mut bob, _) = s.join("bob").await;
    bob.ping().await;
    s.assert_ready();
    drop((alice, bob));
    s.stop();
}

/// Not bad input, but the same machinery: `confab status` counts the rooms and participants the
/// media thread holds, and the count falls when a participant leaves.
#[tokio::test(flavor = "multi_thread")]
async fn status_counts_rooms_and_participants() {
    let s = Server::start();
    let status = |s: &Server| -> Value {
        let ports = [s.d.https, s.d.http, s.d.udp, s.d.tcp];
        let out = common::run(&s.d.dir, ports, &["status", "--json"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Counters are refreshed every turn of the media loop (at most 100 ms apart).
    let wait_for = |s: &Server, rooms: u64, participants: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = status(s);
            if v["rooms"] == rooms && v["participants"] == participants {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {rooms} rooms and {participants} participants, status says {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&s, 0, 0);
    let (alice, _) = s.join("alice").await;
    let (mut bob, _) = s.join("bob").await;
    wait_for(&s, 1, 2);
    bob.send(Req::Leave(lk::LeaveRequest::default())).await;
    wait_for(&s, 1, 1);
    drop((alice, bob));
    s.stop();
}

/// A client that can only use TCP (UDP blocked) connects its media over ICE-TCP: str0m plays the
/// browser with an active TCP candidate, frames RFC 4571 over a real TCP connection to the port
/// the server's offer names, and the subscriber PeerConnection reaches DTLS-connected with the
/// server's data channels open.
#[tokio::test(flavor = "multi_thread")]
async fn media_connects_over_ice_tcp() {
    use std::io::{Read, Write};
    use str0m::change::SdpOffer;
    use str0m::net::{Protocol, Receive, TcpType};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let offer = alice.offer().await;
    let tcp_line = format!("{} typ host tcptype passive", s.d.tcp);
    assert!(
        offer.sdp.contains(&tcp_line),
        "the offer names the ICE-TCP port: {}",
        offer.sdp
    );

    // The client's only candidate is an active TCP one (port 9 by convention: it dials out).
    let local: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .unwrap(),
    );
    let answer = rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap())
        .unwrap();
    alice
        .send(Req::Answer(lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: offer.id,
            mid_to_track_id: Default::default(),
        }))
        .await;

    let result = tokio::task::spawn_blocking(move || {
        let mut stream: Option<(std::net::TcpStream, std::net::SocketAddr)> = None;
        let mut rbuf = Vec::new();
        let (mut connected, mut channels) = (false, vec![]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !(connected && channels.len() >= 2) {
            rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
            loop {
                match rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        assert_eq!(t.proto, Protocol::Tcp, "only TCP is offered by the client");
                        if stream.is_none() {
                            let c = std::net::TcpStream::connect(t.destination).unwrap();
                            c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                            stream = Some((c, t.destination));
                        }
                        let (c, _) = stream.as_mut().unwrap();
                        let len = u16::try_from(t.contents.len()).unwrap().to_be_bytes();
                        c.write_all(&len).unwrap();
                        c.write_all(&t.contents).unwrap();
                    }
                    Output::Event(Event::Connected) => connected = true,
                    Output::Event(Event::ChannelOpen(_, label)) => channels.push(label),
                    Output::Event(_) => {}
                }
            }
            let Some((c, remote)) = stream.as_mut() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk) {
                Ok(0) => panic!("the server closed the ICE-TCP connection"),
                Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("ICE-TCP read failed: {e}"),
            }
            while rbuf.len() >= 2 {
                let len = u16::from_be_bytes([rbuf[0], rbuf[1]]) as usize;
                if rbuf.len() < 2 + len {
                    break;
                }
                let frame: Vec<u8> = rbuf.drain(..2 + len).skip(2).collect();
                let r = Receive::new(Protocol::Tcp, *remote, local, &frame).unwrap();
                rtc.handle_input(Input::Receive(Instant::now(), r)).unwrap();
            }
        }
        (connected, channels)
    })
    .await
    .unwrap();
    let (connected, mut channels) = result;
    assert!(connected, "DTLS over ICE-TCP connected");
    channels.sort();
    assert_eq!(
        channels,
        ["_lossy", "_reliable"],
        "the server's data channels opened"
    );
    alice.ping().await;
    s.assert_no_panic();
    drop(alice);
    s.stop();
}

/// The web app's join: `POST /api/join` mints a token for a room and a display name that
/// `/rtc` accepts; bad names are refused with a message; `/api/rooms/<name>` tells whether the
/// room is still there.
#[tokio::test(flavor = "multi_thread")]
async fn web_join_mints_a_token_the_signalling_accepts() {
    let s = Server::start();
    let post = |body: &str| -> (String, Value) {
        let ca = s.d.ca();
        let out = common::curl(&[
            "-sS",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            "-w",
            "\n%{http_code}",
            &s.d.url("/api/join"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let (code, v) = post(r#"{"room": "standup", "name": "Ann Lee"}"#);
    assert_eq!(code, "200", "{v}");
    let identity = v["identity"].as_str().unwrap().to_string();
    assert!(identity.starts_with("annlee-"), "{identity}");
    assert_eq!(v["room"], ROOM);
    assert_eq!(v["url"], format!("wss://localhost:{}", s.d.https));
    let token = v["token"].as_str().unwrap();
    let mut ann = s
        .connect(&format!("/rtc?access_token={token}"))
        .await
        .unwrap_or_else(|e| panic!("the minted token is refused: {e:?}"));
    match ann.recv().await {
        Some(Resp::Join(j)) => {
            let p = j.participant.unwrap();
            assert_eq!(
                (p.identity.as_str(), p.name.as_str()),
                (identity.as_str(), "Ann Lee")
            );
            let perm = p.permission.unwrap();
            assert!(perm.can_publish && perm.can_subscribe && perm.can_publish_data);
        }
        other => panic!("expected join, got {other:?}"),
    }
    for (body, word) in [
        (r#"{"room": "a b", "name": "Ann"}"#, "room name"),
        (r#"{"room": "ok", "name": "   "}"#, "name"),
        (r#"{"room": "ok"}"#, "JSON"),
        ("not json", "JSON"),
    ] {
        let (code, v) = post(body);
        assert_eq!(code, "400", "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(word), "{body}: {v}");
    }
    let (code, body) = s.d.get(&format!("/api/rooms/{ROOM}"));
    assert_eq!(code, "200");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["active"].as_bool(), v["participants"].as_u64()),
        (Some(true), Some(1))
    );
    let (_, body) = s.d.get("/api/rooms/never-made");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["active"], false, "{v}");
    drop(ann);
    s.stop();
}

/// A client that leaves and closes its WebSocket gets the closing handshake back (livekit-client
/// otherwise logs "WS closed unexpectedly with code 1006" on every leave).
#[tokio::test(flavor = "multi_thread")]
async fn a_leaving_client_gets_a_clean_close() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    alice.send(Req::Leave(lk::LeaveRequest::default())).await;
    alice.ws.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, alice.ws.next()).await {
            Err(_) => panic!("no close reply within {WAIT:?}"),
            Ok(None) => break,
            Ok(Some(Ok(_))) => {} // the close reply (and anything queued before it)
            Ok(Some(Err(e))) => panic!("the server dropped the connection instead of closing: {e}"),
        }
    }
    s.assert_no_panic();
    s.stop();
}

/// The admin API: first-run setup from the device itself, a weak password refused, login with a
/// session cookie (HttpOnly, Secure, SameSite=Strict), wrong passwords limited, the live
/// overview, and ending a room (its participants get leave: ROOM_DELETED).
#[tokio::test(flavor = "multi_thread")]
async fn admin_setup_login_overview_and_ending_a_room() {
    let s = Server::start();
    let jar = s._dir.path().join("cookies");
    let call =
        |method: &str, path: &str, body: Option<&str>, cookies: bool| -> (String, Value, String) {
            let ca = s.d.ca();
            let mut args = vec![
                "-sS".to_string(),
                "-D".into(),
                "-".into(),
                "--cacert".into(),
                ca.to_str().unwrap().into(),
                "-X".into(),
                method.into(),
            ];
            if cookies {
                args.extend([
                    "-b".into(),
                    jar.to_str().unwrap().into(),
                    "-c".into(),
                    jar.to_str().unwrap().into(),
                ]);
            }
            if let Some(b) = body {
                args.extend([
                    "-H".into(),
                    "content-type: application/json".into(),
                    "--data-binary".into(),
                    b.into(),
                ]);
            }
            args.extend(["-w".into(), "\n%{http_code}".into(), s.d.url(path)]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = common::curl(&refs);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let (rest, code) = text.rsplit_once('\n').unwrap();
            let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
            (
                code.to_string(),
                serde_json::from_str(body).unwrap_or(Value::Null),
                headers.to_string(),
            )
        };
    let (code, v, _) = call("GET", "/api/admin/session", None, true);
    assert_eq!(
        (code.as_str(), v["setup_needed"].as_bool()),
        ("200", Some(true)),
        "{v}"
    );
    assert!(
        s.d.stderr().contains("setup_code="),
        "the one-time code is shown at start"
    );
    let (code, _, _) = call("GET", "/api/admin/overview", None, true);
    assert_eq!(code, "401", "nothing without a session");
    let setup_code = s.d.setup_code();
    let (code, v, _) = call(
        "POST",
        "/api/admin/setup",
        Some(r#"{"password": "correct horse battery"}"#),
        true,
    );
    assert_eq!(code, "403", "no setup code, even from localhost: {v}");
    let (code, v, _) = call(
        "POST",
        "/api/admin/setup",
        Some(&format!(
            r#"{{"password": "short", "code": "{setup_code}"}}"#
        )),
        true,
    );
    assert_eq!(code, "400", "{v}");
    let (code, v, headers) = call(
        "POST",
        "/api/admin/setup",
        Some(&format!(
            r#"{{"password": "correct horse battery", "code": "{setup_code}"}}"#
        )),
        true,
    );
    assert_eq!(code, "200", "{v}");
    let cookie = headers
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie:"))
        .unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let (code, _, _) = call(
        "POST",
        "/api/admin/setup",
        Some(r#"{"password": "another password"}"#),
        false,
    );
    assert_eq!(code, "409", "set once");

    let (_alice, _) = s.join("alice").await;
    let (code, v, _) = call("GET", "/api/admin/overview", None, true);
    assert_eq!(code, "200", "{v}");
    assert_eq!(v["room_list"][0]["name"], ROOM, "{v}");
    assert_eq!(
        v["room_list"][0]["participants"][0]["identity"], "alice",
        "{v}"
    );
    assert!(v["process"]["rss_bytes"].as_u64().unwrap() > 1 << 20, "{v}");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{v}"
    );

    // Not JSON: refused (a cross-site form cannot act for the admin).
    let (code, _, _) = call("POST", &format!("/api/admin/rooms/{ROOM}/end"), None, true);
    assert_eq!(code, "415");
    let (code, v, _) = call(
        "POST",
        &format!("/api/admin/rooms/{ROOM}/end"),
        Some("{}"),
        true,
    );
    assert_eq!(code, "200", "{v}");
    let mut alice = _alice;
    let seen = alice.closed().await;
    assert!(
        seen.iter().any(
            |m| matches!(m, Resp::Leave(l) if l.reason == lk::DisconnectReason::RoomDeleted as i32)
        ),
        "{seen:?}"
    );

    let (code, _, _) = call("POST", "/api/admin/logout", Some("{}"), true);
    assert_eq!(code, "200");
    let (code, _, _) = call("GET", "/api/admin/overview", None, true);
    assert_eq!(code, "401", "logged out");
    for _ in 0..5 {
        let (code, _, _) = call(
            "POST",
            "/api/admin/login",
            Some(r#"{"password": "guess guess guess"}"#),
            false,
        );
        assert_eq!(code, "401");
    }
    let (code, v, _) = call(
        "POST",
        "/api/admin/login",
        Some(r#"{"password": "correct horse battery"}"#),
        false,
    );
    assert_eq!(
        code, "429",
        "limited after five failures, even with the right password: {v}"
    );
    s.assert_no_panic();
    s.stop();
}

/// Two media threads (`CONFAB_MEDIA_THREADS=2`): a room created while another has a participant
/// goes to the other thread (its ICE candidates name the other thread's ports), the Twirp
/// RoomService sees the rooms and participants of both, and `rtc.max_rooms` holds for the whole
/// server, not per thread.
#[tokio::test(flavor = "multi_thread")]
async fn rooms_on_two_media_threads_are_listed_and_limited_together() {
    let s = Server::start_with(|c| {
        c.env("CONFAB_MEDIA_THREADS", "2")
            .env("CONFAB_MAX_ROOMS", "2");
    });
    let admin = {
        let keys = ApiKeys::from_map(BTreeMap::from([(
            s.key.clone(),
            Secret::new(s.secret.clone()),
        )]));
        confab::auth::mint(
            &keys,
            &s.key,
            &TokenRequest {
                identity: "ops".into(),
                ttl: Duration::from_secs(600),
                video: VideoGrant {
                    room_create: Some(true),
                    room_list: Some(true),
                    room_admin: Some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap()
    };
    let twirp = |method: &str, body: Value| -> (String, Value) {
        let ca = s.d.ca();
        let auth = format!("authorization: Bearer {admin}");
        let body = body.to_string();
        // HTTP/1.1 as the WebSocket upgrade (HTTP/2 caps the header list at 16 KiB).
        let out = common::curl(&[
            "-sS",
            "--http1.1",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            "-w",
            "\n%{http_code}",
            &s.d.url(&format!("/twirp/livekit.RoomService/{method}")),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };

    // ROOM lands on the first thread: its offer names the first thread's UDP port.
    let (mut alice, _) = s.join("alice").await;
    let offer = alice.offer().await;
    assert!(
        offer.sdp.contains(&format!(" {} typ host", s.d.udp))
            && !offer.sdp.contains(&format!(" {} typ host", s.d.udp + 1)),
        "{}",
        offer.sdp
    );
    // The other thread has fewer participants: the next room goes there.
    let (code, room) = twirp("CreateRoom", json!({"name": "second"}));
    assert_eq!(code, "200", "{room}");
    let (code, list) = twirp("ListRooms", json!({}));
    assert_eq!(code, "200", "{list}");
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["second", ROOM], "{list}");
    let (code, people) = twirp("ListParticipants", json!({"room": ROOM}));
    assert_eq!(code, "200", "{people}");
    assert_eq!(people["participants"][0]["identity"], "alice", "{people}");
    let (code, people) = twirp("ListParticipants", json!({"room": "second"}));
    assert_eq!(code, "200", "{people}");
    // Two rooms on two threads are the server's maximum of two.
    let (code, refused) = twirp("CreateRoom", json!({"name": "third"}));
    assert_eq!(code, "429", "{refused}");
    assert!(
        refused["msg"]
            .as_str()
            .unwrap_or("")
            .contains("maximum of 2 rooms"),
        "{refused}"
    );
    // Deleting a room on the second thread frees the slot.
    let (code, _) = twirp("DeleteRoom", json!({"room": "second"}));
    assert_eq!(code, "200");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = twirp("CreateRoom", json!({"name": "third"}));
        if code == "200" {
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.assert_ready();
    drop(alice);
    s.stop();
}

// ------------------------------------------------------------------------------------ limits

/// The daemon's resident memory, in MiB.
fn rss_mib(s: &Server) -> u64 {
    let pid = s.d.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

fn encoded_len(m: &Resp) -> usize {
    lk::SignalResponse {
        message: Some(m.clone()),
    }
    .encoded_len()
}

fn add_track(cid: &str, name: &str) -> Req {
    Req::AddTrack(lk::AddTrackRequest {
        cid: cid.into(),
        name: name.into(),
        r#type: lk::TrackType::Audio as i32,
        ..Default::default()
    })
}

fn limit_exceeded(m: &Resp) -> Option<String> {
    match m {
        Resp::RequestResponse(r)
            if r.reason == lk::request_response::Reason::LimitExceeded as i32 =>
        {
            Some(r.message.clone())
        }
        _ => None,
    }
}

/// Issue 24, hole 2: a guest floods `add_track` with 100 KB names. Each is refused (with
/// LiveKit's `RequestResponse`, LIMIT_EXCEEDED, and a short message), a participant publishes at
/// most 32 tracks, and the other participant hears a few small updates, not 100 growing copies
/// of everything (which took the daemon from 64 to 466 MB).
#[tokio::test(flavor = "multi_thread")]
async fn an_add_track_flood_is_refused_and_memory_stays_small() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let (mut bob, _) = s.join("bob").await;
    let before = rss_mib(&s);
    let big = "n".repeat(100 * 1024);
    let started = Instant::now();
    for i in 0..100 {
        alice.send(add_track(&format!("big{i}"), &big)).await;
    }
    for i in 0..40 {
        alice
            .send(add_track(&format!("mic{i}"), &format!("mic {i}")))
            .await;
    }
    // Alice's answers, one per request.
    let (mut published, mut refused, mut longest) = (0, vec![], 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while published + refused.len() < 140 {
        match alice.recv_before(deadline).await {
            Ok(Some(Resp::TrackPublished(_))) => published += 1,
            Ok(Some(m)) => {
                longest = longest.max(encoded_len(&m));
                refused.extend(limit_exceeded(&m));
            }
            Ok(None) => panic!("alice was disconnected"),
            Err(()) => break,
        }
    }
    // Bob's updates until things are quiet (a second without any).
    let (mut bob_bytes, mut bob_max, mut alice_tracks) = (0usize, 0usize, 0usize);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        match bob
            .recv_before(Instant::now() + Duration::from_secs(1))
            .await
        {
            Ok(Some(m)) => {
                let n = encoded_len(&m);
                bob_bytes += n;
                bob_max = bob_max.max(n);
                if let Resp::Update(u) = &m {
                    for p in u.participants.iter().filter(|p| p.identity == "alice") {
                        alice_tracks = p.tracks.len();
                    }
                }
            }
            Ok(None) => panic!("bob was disconnected"),
            Err(()) => break,
        }
    }
    let after = rss_mib(&s);
    eprintln!(
        "add_track flood: {published} published, {} refused in {:?}; bob got {bob_bytes} bytes \
         (largest message {bob_max}); RSS {before} -> {after} MiB",
        refused.len(),
        started.elapsed()
    );
    assert_eq!(published, 32, "at most 32 tracks per participant");
    assert_eq!(refused.len(), 108, "every other add_track is refused");
    assert!(refused[0].contains("name"), "{}", refused[0]);
    assert!(refused[107].contains("32"), "{}", refused[107]);
    assert!(
        longest < 2048,
        "a refusal does not echo the name: {longest} bytes"
    );
    assert_eq!(alice_tracks, 32);
    assert!(bob_max < 64 << 10, "bob's largest message: {bob_max} bytes");
    assert!(bob_bytes < 2 << 20, "bob received {bob_bytes} bytes");
    assert!(after < before + 40, "RSS {before} -> {after} MiB");
    bob.ping().await;
    alice.ping().await;
    s.stop();
}

fn unsubscribe(ids: Vec<String>, subscribe: bool) -> Req {
    Req::Subscription(lk::UpdateSubscription {
        track_sids: ids,
        subscribe,
        participant_tracks: vec![],
    })
}

/// Issue 24, hole 3: unsubscribing from 50 000 track ids that do not exist keeps nothing, and a
/// subscribe frame with 25 000 ids is refused at once: the media thread does not stall (it
/// stopped for over 11 s, and `/api/health/ready` answered 503) and the next request is
/// answered within a second.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_track_ids_cost_nothing_and_a_huge_subscribe_is_refused_at_once() {
    let s = Server::start();
    let (mut alice, _) = s.join("alice").await;
    let id = |i: usize| format!("TR_{i:012}");
    for frame in 0..50 {
        let ids = (frame * 1000..(frame + 1) * 1000).map(id).collect();
        alice.send(unsubscribe(ids, false)).await;
    }
    // Everything above has been handled once a request sent after it is answered.
    alice.send(add_track("first", "first")).await;
    alice
        .recv_find("track_published", |m| {
            matches!(m, Resp::TrackPublished(_)).then_some(())
        })
        .await;
    s.assert_ready();

    let started = Instant::now();
    alice
        .send(unsubscribe((0..25_000).map(id).collect(), true))
        .await;
    alice.send(add_track("second", "second")).await;
    let mut refused = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no answer in 3 minutes"
        );
        // Pings (answered by the session itself) keep the session from idling out meanwhile.
        match alice
            .recv_before(Instant::now() + Duration::from_secs(2))
            .await
        {
            Ok(Some(Resp::TrackPublished(_))) => break,
            Ok(Some(m)) => refused = refused.or(limit_exceeded(&m)),
            Ok(None) => panic!("alice was disconnected after {:?}", started.elapsed()),
            Err(()) => alice.send(Req::Ping(now() as i64 * 1000)).await,
        }
    }
    let took = started.elapsed();
    eprintln!("25 000-id subscribe frame, then add_track answered after {took:?}");
    s.assert_ready();
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let refused = refused.expect("the 25 000-id frame is refused with LIMIT_EXCEEDED");
    assert!(refused.contains("4096"), "{refused}");
    // A frame within the limit is taken (its unknown ids are simply not there).
    alice
        .send(unsubscribe((0..4096).map(id).collect(), true))
        .await;
    alice.ping().await;
    s.assert_ready();
    s.stop();
}

/// Issue 24: a participant whose client never reads while another one makes the room chatty is
/// removed (its outgoing queue is bounded), and the daemon's memory stays bounded; the others
/// hear that it left.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_removed_and_memory_stays_bounded() {
    let s = Server::start();
    let (carol, _) = s.join("carol").await;
    // Carol never reads, but pings every few seconds, so that only her reading is missing.
    let (mut carol_tx, mut carol_rx) = carol.ws.split();
    let pinger = tokio::spawn(async move {
        for i in 0.. {
            let ping = lk::SignalRequest {
                message: Some(Req::Ping(i)),
            };
            let frame = WsMessage::Binary(ping.encode_to_vec().into());
            if carol_tx.send(frame).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    // Alice may update her own metadata (apps grant that): with 60 KB of it and 32 tracks with
    // long (allowed) names, every update of hers is ≈ 70 KB for carol.
    let mut claims = s.claims("alice");
    claims["video"]["canUpdateOwnMetadata"] = json!(true);
    let token = s.sign(Algorithm::HS256, &s.secret, &claims);
    let (mut alice, _) = s.join_with("alice", &token).await;
    for i in 0..32 {
        alice
            .send(add_track(
                &format!("c{i}"),
                &format!("{i:03}{}", "t".repeat(253)),
            ))
            .await;
        alice
            .recv_find("track_published", |m| {
                matches!(m, Resp::TrackPublished(_)).then_some(())
            })
            .await;
    }
    let before = rss_mib(&s);
    let (mut tx, mut rx) = alice.ws.split();
    // Alice reads everything, and watches for carol's departure.
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = rx.next().await {
            let WsMessage::Binary(b) = frame else {
                continue;
            };
            let Ok(lk::SignalResponse { message: Some(m) }) = lk::SignalResponse::decode(&b[..])
            else {
                continue;
            };
            if let Resp::Update(u) = m {
                let gone = u.participants.iter().any(|p| {
                    p.identity == "carol"
                        && p.state == lk::participant_info::State::Disconnected as i32
                });
                if gone {
                    return Some(Instant::now());
                }
            }
        }
        None
    });
    let started = Instant::now();
    let mut peak = before;
    let mut sent = 0;
    // Alice stays within her signalling rate (a burst of 200, her 32 tracks included, then 50 a
    // second): the kernel's socket buffers (several MB on loopback) fill first, then carol's
    // 4 MiB, within seconds.
    let mut next = tokio::time::Instant::now();
    while !reader.is_finished() && sent < 40_000 && started.elapsed() < Duration::from_secs(120) {
        let batch = if sent == 0 { 150 } else { 45 };
        next += Duration::from_secs(1);
        for _ in 0..batch {
            let letter = if sent % 2 == 0 { "a" } else { "b" };
            let msg = Req::UpdateMetadata(lk::UpdateParticipantMetadata {
                metadata: letter.repeat(60_000),
                ..Default::default()
            });
            let bytes = lk::SignalRequest { message: Some(msg) }.encode_to_vec();
            let sending = tx.send(WsMessage::Binary(bytes.into()));
            tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
            sent += 1;
        }
        peak = peak.max(rss_mib(&s));
        tokio::time::sleep_until(next).await;
    }
    let removed = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .ok()
        .and_then(|r| r.unwrap())
        .map(|t| t - started);
    peak = peak.max(rss_mib(&s));
    eprintln!(
        "non-reader: removed after {removed:?}, {sent} updates sent in {:?}; RSS {before} -> peak \
         {peak} MiB",
        started.elapsed()
    );
    let removed = removed.expect("carol, who never reads, is removed");
    // (Well before the 15 s in which an unanswered offer would remove her anyway.)
    assert!(
        removed < Duration::from_secs(10),
        "removed only after {removed:?}"
    );
    assert!(peak < before + 80, "RSS {before} -> {peak} MiB");
    // Carol's connection ends (after what was already in the socket).
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = carol_rx.next().await {}
    })
    .await;
    assert!(drained.is_ok(), "carol's connection is closed");
    pinger.abort();
    s.assert_ready();
    let log = s.d.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        log.contains("does not read"),
        "a warning says why; the warnings:\n{}",
        warnings.join("\n")
    );
    s.stop();
}

/// Issue 24: tokens whose identity, name, room, metadata or attributes exceed the limits are
/// refused with 400 and a message naming the field; neither the answer nor the log repeats the
/// oversized value.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_token_fields_are_refused_with_400() {
    let s = Server::start();
    let good = |c: &Value| s.sign(Algorithm::HS256, &s.secret, c);
    let mut cases: Vec<(&str, Value, String)> = vec![];
    let mut c = s.claims(&"i".repeat(300));
    cases.push(("identity", c.clone(), "i".repeat(300)));
    c = s.claims("alice");
    c["name"] = json!("N".repeat(300));
    cases.push(("name", c, "N".repeat(300)));
    c = s.claims("alice");
    c["video"]["room"] = json!("r".repeat(300));
    cases.push(("room", c, "r".repeat(300)));
    c = s.claims("alice");
    c["metadata"] = json!("m".repeat(70_000));
    cases.push(("metadata", c, "m".repeat(300)));
    c = s.claims("alice");
    let attrs: serde_json::Map<String, Value> = (0..70)
        .map(|i| (format!("k{i}"), json!("a".repeat(1000))))
        .collect();
    c["attributes"] = Value::Object(attrs);
    cases.push(("attributes", c, "a".repeat(300)));

    let ca = s.d.ca();
    let mut failures = vec![];
    for (field, claims, content) in &cases {
        let token = good(claims);
        let auth = format!("authorization: Bearer {token}");
        // HTTP/1.1 as the WebSocket upgrade (HTTP/2 caps the header list at 16 KiB).
        let out = common::curl(&[
            "-sS",
            "--http1.1",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            &auth,
            "-w",
            "\n%{http_code}",
            &s.d.url("/rtc/validate"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        if code != "400" || !body.contains(field) || body.contains(content.as_str()) {
            failures.push(format!("validate, {field}: {code} {body:.300}"));
        }
        for path in ["/rtc", "/rtc/v1"] {
            match s.connect_with(path, Some(&token)).await {
                Ok(_) => failures.push(format!("{path}, {field}: upgraded (101)")),
                Err((code, body)) if code != 400 || !body.contains(field) => {
                    failures.push(format!("{path}, {field}: {code} {body:.300}"))
                }
                Err((_, body)) if body.contains(content.as_str()) => {
                    failures.push(format!("{path}, {field}: the answer repeats the value"))
                }
                Err(_) => {}
            }
        }
        // Short fields fit in the query string too.
        if content.len() == 300 && *field != "metadata" && *field != "attributes" {
            match s.connect(&format!("/rtc?access_token={token}")).await {
                Ok(_) => failures.push(format!("/rtc?access_token, {field}: upgraded")),
                Err((code, _)) if code != 400 => {
                    failures.push(format!("/rtc?access_token, {field}: {code}"))
                }
                Err(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let log = s.d.stderr();
    for (field, _, content) in &cases {
        assert!(
            !log.contains(content.as_str()),
            "the log repeats the {field}"
        );
    }
    // Nobody was let in; a good token still joins.
    let (mut alice, join) = s.join("alice").await;
    assert!(join.other_participants.is_empty(), "{join:?}");
    alice.ping().await;
    s.stop();
}

// ------------------------------------------------------------------------------- rates (§3)

/// Issue 24 §3: pings were answered at ~40k/s on one connection. A session over its rate is
/// closed with a WebSocket close frame (1008) whose reason names the limit; the room and the
/// server carry on.
#[tokio::test(flavor = "multi_thread")]
async fn a_ping_flood_closes_that_session_with_a_reason() {
    let s = Server::start();
    let (alice, _) = s.join("alice").await;
    let (mut bob, _) = s.join("bob").await;
    let (mut tx, mut rx) = alice.ws.split();
    let flood = tokio::spawn(async move {
        for i in 0..2000i64 {
            let bytes = lk::SignalRequest {
                message: Some(Req::Ping(i)),
            }
            .encode_to_vec();
            // Once the server has closed, sends fail: that is the point.
            if tx.send(WsMessage::Binary(bytes.into())).await.is_err() {
                return i;
            }
        }
        2000
    });
    let mut pongs = 0;
    let close = tokio::time::timeout(WAIT, async {
        while let Some(frame) = rx.next().await {
            match frame {
                Ok(WsMessage::Binary(b)) => {
                    if let Ok(lk::SignalResponse {
                        message: Some(Resp::Pong(_)),
                    }) = lk::SignalResponse::decode(&b[..])
                    {
                        pongs += 1;
                    }
                }
                Ok(WsMessage::Close(c)) => return c,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the flooding session was not closed");
    let sent = flood.await.unwrap();
    eprintln!("ping flood: {pongs} pongs, then closed ({close:?}); {sent} pings sent");
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(
        close
            .reason
            .contains("too many pings: at most 10 per second"),
        "{close:?}"
    );
    assert!(
        (20..=40).contains(&pongs),
        "{pongs} pongs before the close (the burst is 30)"
    );
    // Bob, in the same room, is unaffected.
    bob.ping().await;
    s.assert_ready();
    assert!(s.d.stderr().contains("signal session over its rate"));
    s.stop();
}

/// `GET path` from the loopback address `from` (the server sees another client).
fn get_from(s: &Server, from: &str, path: &str) -> (String, String) {
    let ca = s.d.ca();
    let out = common::curl(&[
        "-sS",
        "--interface",
        from,
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
        &s.d.url(path),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// Issue 24 §3: refused tokens are counted per client address; after 60 in a minute every token
/// from that address (a good one too) gets 429 on `/rtc/validate`, the WebSocket and Twirp,
/// while other addresses are served. The log has one line for the first refusal and one for the
/// block, never the token.
#[tokio::test(flavor = "multi_thread")]
async fn refused_tokens_are_rate_limited_per_address() {
    let s = Server::start();
    let forged = s.sign(Algorithm::HS256, &"x".repeat(40), &s.claims("mallory"));
    for i in 0..60 {
        let (code, body) = s.validate(&format!("access_token={forged}"));
        assert_eq!(code, "401", "refusal {i}: {body}");
    }
    let (code, body) = s.validate(&format!("access_token={forged}"));
    assert_eq!(code, "429", "{body}");
    assert!(
        body.contains("too many refused access tokens from this address"),
        "{body}"
    );
    // A good token from the blocked address waits too, on every path.
    let good = s.token("alice");
    assert_eq!(s.validate(&format!("access_token={good}")).0, "429");
    let refused = s.connect(&format!("/rtc?access_token={good}")).await;
    assert_eq!(refused.err().map(|e| e.0), Some(429));
    // Another address is not blocked.
    let (code, body) = get_from(
        &s,
        "127.0.0.2",
        &format!("/rtc/validate?access_token={good}"),
    );
    assert_eq!((code.as_str(), body.as_str()), ("200", "success"));
    let (code, _) = get_from(
        &s,
        "127.0.0.2",
        &format!("/rtc/validate?access_token={forged}"),
    );
    assert_eq!(code, "401");

    let log = s.d.stderr();
    assert_eq!(
        log.matches("token refused").count(),
        2,
        "one per address:\n{log:.3000}"
    );
    assert_eq!(log.matches("too many refused tokens").count(), 1);
    assert!(!log.contains(&forged), "the log repeats the token");
    s.stop();
}

// ------------------------------------------------------------------------------------ /agent

impl Server {
    /// A worker token: the `agent` grant only (what livekit-agents presents).
    fn agent_token(&self) -> String {
        let keys = ApiKeys::from_map(BTreeMap::from([(
            self.key.clone(),
            Secret::new(self.secret.clone()),
        )]));
        let req = TokenRequest {
            identity: String::new(),
            ttl: Duration::from_secs(600),
            video: VideoGrant {
                agent: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        confab::auth::mint(&keys, &self.key, &req).unwrap()
    }

    /// A registered worker connection (binary protobuf), and its worker id.
    async fn worker(&self) -> (Session, String) {
        let mut w = self
            .connect_with("/agent", Some(&self.agent_token()))
            .await
            .unwrap_or_else(|(code, body)| panic!("/agent refused: {code} {body}"));
        let register = lk::WorkerMessage {
            message: Some(lk::worker_message::Message::Register(
                lk::RegisterWorkerRequest {
                    agent_name: "probe".into(),
                    ..Default::default()
                },
            )),
        };
        w.send_frame(WsMessage::Binary(register.encode_to_vec().into()))
            .await;
        let id = match w.worker_recv().await {
            Some(lk::server_message::Message::Register(r)) => r.worker_id,
            other => panic!("no register answer: {other:?}"),
        };
        (w, id)
    }
}

impl Session {
    /// The next `ServerMessage` of an agent connection, `None` once it is closed.
    async fn worker_recv(&mut self) -> Option<lk::server_message::Message> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing from /agent in time");
            match frame {
                Some(Ok(WsMessage::Binary(b))) => {
                    return lk::ServerMessage::decode(b.as_ref()).unwrap().message
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                _ => return None,
            }
        }
    }

    /// Waits for the server's close frame: its reason.
    async fn close_reason(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Close(f)))) => {
                    return f.map(|f| f.reason.to_string()).unwrap_or_default()
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return String::new(),
                Err(_) => panic!("the connection was not closed within {WAIT:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_workers_with_bad_tokens_or_bad_messages_are_refused_with_reasons() {
    let s = Server::start();
    // No token, a participant's token, a forged one: refused before the upgrade.
    let refused = s.connect("/agent").await.err().unwrap();
    assert_eq!(refused.0, 401, "{refused:?}");
    let refused = s
        .connect_with("/agent", Some(&s.token("alice")))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.0, 401);
    assert!(refused.1.contains("agent"), "{refused:?}");
    let forged = s.sign(
        Algorithm::HS256,
        "not-the-secret-not-the-secret-0000",
        &s.claims(""),
    );
    assert_eq!(
        s.connect_with("/agent", Some(&forged))
            .await
            .err()
            .unwrap()
            .0,
        401
    );

    // Something else than register first.
    let mut w = s
        .connect_with("/agent", Some(&s.agent_token()))
        .await
        .ok()
        .unwrap();
    let ping = lk::WorkerMessage {
        message: Some(lk::worker_message::Message::Ping(lk::WorkerPing {
            timestamp: 1,
        })),
    };
    w.send_frame(WsMessage::Binary(ping.encode_to_vec().into()))
        .await;
    assert!(w.close_reason().await.contains("register"));

    // A registered worker gets pongs; registering twice closes it with the reason.
    let (mut w, id) = s.worker().await;
    assert!(id.starts_with("AW_"), "{id}");
    w.send_frame(WsMessage::Binary(ping.encode_to_vec().into()))
        .await;
    assert!(
        matches!(w.worker_recv().await, Some(lk::server_message::Message::Pong(p)) if p.last_timestamp == 1)
    );
    let again = lk::WorkerMessage {
        message: Some(lk::worker_message::Message::Register(Default::default())),
    };
    w.send_frame(WsMessage::Binary(again.encode_to_vec().into()))
        .await;
    assert!(w.close_reason().await.contains("already registered"));

    // Malformed frames: closed after the allowance; an oversized frame: closed.
    let (mut w, _) = s.worker().await;
    for _ in 0..=MAX_MALFORMED {
        let _ = w.ws.send(WsMessage::Binary(vec![0xff; 7].into())).await;
    }
    assert!(w.close_reason().await.contains("malformed"));
    let (mut w, _) = s.worker().await;
    let _ = tokio::time::timeout(
        WAIT,
        w.ws.send(WsMessage::Binary(vec![0u8; 2 * MAX_MESSAGE].into())),
    )
    .await;
    assert!(w.worker_recv().await.is_none(), "closed");

    // Text frames carry protobuf JSON, answered in kind.
    let mut w = s
        .connect_with("/agent", Some(&s.agent_token()))
        .await
        .ok()
        .unwrap();
    w.send_frame(WsMessage::Text(
        r#"{"register":{"agentName":"json"}}"#.into(),
    ))
    .await;
    let answer = match tokio::time::timeout(WAIT, w.ws.next()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => t.to_string(),
        other => panic!("no JSON answer: {other:?}"),
    };
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert!(
        v["register"]["workerId"]
            .as_str()
            .unwrap()
            .starts_with("AW_"),
        "{v}"
    );

    // Nothing else was disturbed: a participant still joins and pings.
    let (mut alice, _) = s.join("alice").await;
    alice.ping().await;
    s.assert_ready();
    drop((alice, w));
    s.stop();
}

impl Server {
    /// `POST /twirp/livekit.AgentDispatchService/<method>` with a JSON body from a file (bodies
    /// may be megabytes): (status, body). `method` may name another service (`livekit.X/Y`).
    fn dispatch_call(&self, token: &str, method: &str, body: &[u8]) -> (String, String) {
        let route = if method.contains('/') {
            method.to_string()
        } else {
            format!("livekit.AgentDispatchService/{method}")
        };
        let file = self._dir.path().join("twirp-body.json");
        std::fs::write(&file, body).unwrap();
        let out = common::curl(&[
            "-sS",
            "--cacert",
            self.d.ca().to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
            "-w",
            "\n%{http_code}",
            &self.d.url(&format!("/twirp/{route}")),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    }

    /// An admin token for one room (what an app server hands the dispatch API).
    fn room_admin_token(&self, room: &str) -> String {
        let keys = ApiKeys::from_map(BTreeMap::from([(
            self.key.clone(),
            Secret::new(self.secret.clone()),
        )]));
        let req = TokenRequest {
            identity: "app".into(),
            ttl: Duration::from_secs(600),
            video: VideoGrant {
                room_admin: Some(true),
                room: Some(room.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        confab::auth::mint(&keys, &self.key, &req).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_dispatch_requests_are_checked_and_a_missing_room_is_created() {
    let s = Server::start();
    let admin = s.room_admin_token("ops");
    let body = |meta: &str| {
        serde_json::to_vec(&json!({"room": "ops", "agentName": "notes", "metadata": meta})).unwrap()
    };
    // A participant's token, or an admin of another room: refused.
    let (code, text) = s.dispatch_call(&s.token("alice"), "CreateDispatch", &body(""));
    assert_eq!(code, "403", "{text}");
    let (code, _) = s.dispatch_call(
        &s.room_admin_token("elsewhere"),
        "CreateDispatch",
        &body(""),
    );
    assert_eq!(code, "403");
    // 100 KB of metadata: a clear error naming the field; 10 MB: refused at the body limit.
    let (code, text) = s.dispatch_call(&admin, "CreateDispatch", &body(&"m".repeat(100_000)));
    assert_eq!(code, "400", "{text}");
    assert!(
        text.contains("metadata") && !text.contains("mmmm"),
        "{text}"
    );
    let (code, text) = s.dispatch_call(&admin, "CreateDispatch", &body(&"m".repeat(10 << 20)));
    assert_eq!(code, "400", "{text}");
    assert!(text.contains("at most 1048576"), "{text}");
    // A room that does not exist yet is created for the dispatch, which is listed with it.
    let (code, text) = s.dispatch_call(&admin, "CreateDispatch", &body("{\"ticket\":42}"));
    assert_eq!(code, "200", "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["metadata"], "{\"ticket\":42}");
    let (code, text) = s.dispatch_call(&admin, "ListDispatch", br#"{"room":"ops"}"#);
    assert_eq!(code, "200", "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        listed["agentDispatches"][0]["id"], created["id"],
        "{listed}"
    );
    let (code, text) = s.dispatch_call(&admin, "livekit.RoomService/ListRooms", b"{}");
    assert_eq!(code, "200", "{text}");
    assert!(
        text.contains("\"name\":\"ops\""),
        "the room was created: {text}"
    );
    let (code, text) = s.dispatch_call(
        &admin,
        "DeleteDispatch",
        &serde_json::to_vec(&json!({"room": "ops", "dispatchId": "AD_nope"})).unwrap(),
    );
    assert_eq!(code, "404", "{text}");
    s.assert_ready();
    s.stop();
}

// ------------------------------------------------------------------------------------ TURN

mod turn_client {
    //! A TURN client built from `turn-types`' message writer: just enough to allocate, ask
    //! for permissions and be refused.
    use std::net::SocketAddr;

    use turn_types::attribute::{RequestedTransport, XorPeerAddress, XorRelayedAddress};
    use turn_types::message::{ALLOCATE, CREATE_PERMISSION, REFRESH};
    use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
    use turn_types::stun::message::{
        IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
        MessageIntegrityCredentials, MessageWriteExt, MessageWriteVec, Method,
    };
    use turn_types::stun::prelude::*;

    pub struct Creds {
        pub username: String,
        pub password: String,
        pub nonce: String,
    }

    pub enum Attr {
        Transport,
        Peer(SocketAddr),
        Lifetime(u32),
    }

    pub fn request(method: Method, creds: Option<&Creds>, attrs: &[Attr]) -> Vec<u8> {
        let mut b = Message::builder_request(method, MessageWriteVec::new());
        let tid = b.transaction_id();
        for a in attrs {
            match a {
                Attr::Transport => b
                    .add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap(),
                Attr::Peer(p) => b.add_attribute(&XorPeerAddress::new(*p, tid)).unwrap(),
                Attr::Lifetime(s) => b
                    .add_attribute(&turn_types::attribute::Lifetime::new(*s))
                    .unwrap(),
            }
        }
        if let Some(c) = creds {
            b.add_attribute(&Username::new(&c.username).unwrap())
                .unwrap();
            b.add_attribute(&Realm::new("confab").unwrap()).unwrap();
            b.add_attribute(&Nonce::new(&c.nonce).unwrap()).unwrap();
            let key: MessageIntegrityCredentials = LongTermKeyCredentials::new(
                c.username.clone(),
                c.password.clone(),
                "confab".into(),
            )
            .into();
            b.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
                .unwrap();
        }
        b.add_fingerprint().unwrap();
        b.finish()
    }

    pub fn allocate(creds: Option<&Creds>) -> Vec<u8> {
        request(ALLOCATE, creds, &[Attr::Transport])
    }

    pub fn permission(creds: &Creds, peer: SocketAddr) -> Vec<u8> {
        request(CREATE_PERMISSION, Some(creds), &[Attr::Peer(peer)])
    }

    pub fn delete(creds: &Creds) -> Vec<u8> {
        request(REFRESH, Some(creds), &[Attr::Lifetime(0)])
    }

    /// (error code or None for success, nonce, relayed address) of an answer.
    pub fn answer(bytes: &[u8]) -> (Option<u16>, Option<String>, Option<SocketAddr>) {
        let msg = Message::from_bytes(bytes).expect("a STUN answer");
        let code = match msg.class() {
            MessageClass::Error => Some(msg.attribute::<ErrorCode>().unwrap().code()),
            _ => None,
        };
        let nonce = msg.attribute::<Nonce>().ok().map(|n| n.nonce().to_string());
        let relayed = msg
            .attribute::<XorRelayedAddress>()
            .ok()
            .map(|r| r.addr(msg.transaction_id()));
        (code, nonce, relayed)
    }
}

/// A daemon with TURN on its own UDP and TLS ports: (server, TURN UDP port, TURN TLS port).
fn turn_server() -> (Server, u16, u16) {
    let ports = common::free_ports();
    let (udp, tls) = common::free_turn_ports(ports);
    let s = Server::start_on(ports, |c| {
        c.env("CONFAB_TURN_UDP_PORT", udp.to_string())
            .env("CONFAB_TURN_TLS_PORT", tls.to_string())
            .env("CONFAB_TURN_DOMAIN", "127.0.0.1");
    });
    (s, udp, tls)
}

/// One request, one answer over UDP.
fn turn_udp(sock: &UdpSocket, port: u16, req: &[u8]) -> Vec<u8> {
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.send_to(req, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a TURN answer");
    buf[..n].to_vec()
}

/// Credentials from a join response: (username, password), after checking its URLs.
fn turn_creds(join: &lk::JoinResponse, udp: u16, tls: u16) -> (String, String) {
    let [ice] = &join.ice_servers[..] else {
        panic!("one ICE server expected: {:?}", join.ice_servers);
    };
    assert_eq!(
        ice.urls,
        vec![
            format!("turn:127.0.0.1:{udp}?transport=udp"),
            format!("turns:127.0.0.1:{tls}?transport=tcp"),
        ]
    );
    (ice.username.clone(), ice.credential.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_allocates_with_join_credentials_only_and_relays_only_to_media_ports() {
    use turn_client::{allocate, answer, permission, Creds};
    let (s, udp, tls) = turn_server();
    let (_alice, join) = s.join("alice").await;
    let (username, password) = turn_creds(&join, udp, tls);
    assert!(username.ends_with(":alice"), "{username}");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, nonce, _) = answer(&turn_udp(&sock, udp, &allocate(None)));
    assert_eq!(
        code,
        Some(401),
        "an allocation without credentials is challenged"
    );
    let nonce = nonce.unwrap();
    // Forged: the right username with a guessed password; a later expiry with the password.
    let (expiry, _) = username.split_once(':').unwrap();
    let later = format!("{}:alice", expiry.parse::<u64>().unwrap() + 86_400);
    for (u, p) in [(&username, "guess"), (&later, password.as_str())] {
        let forged = Creds {
            username: u.clone(),
            password: p.into(),
            nonce: nonce.clone(),
        };
        let (code, _, _) = answer(&turn_udp(&sock, udp, &allocate(Some(&forged))));
        assert_eq!(code, Some(401), "forged credentials {u}:{p} refused");
    }
    let creds = Creds {
        username,
        password,
        nonce,
    };
    let (code, _, relayed) = answer(&turn_udp(&sock, udp, &allocate(Some(&creds))));
    assert_eq!(code, None, "allocated with the join's credentials");
    assert_eq!(relayed.unwrap().ip().to_string(), "127.0.0.1");
    // Relays to elsewhere are refused; to the media port, allowed.
    for foreign in ["192.0.2.1:9", "10.1.2.3:7882"] {
        let (code, _, _) = answer(&turn_udp(
            &sock,
            udp,
            &permission(&creds, foreign.parse().unwrap()),
        ));
        assert_eq!(code, Some(403), "a relay to {foreign} refused");
    }
    let media = format!("127.0.0.1:{}", s.d.udp).parse().unwrap();
    let (code, _, _) = answer(&turn_udp(&sock, udp, &permission(&creds, media)));
    assert_eq!(code, None, "a relay to confab's media port allowed");

    // TURN over TLS, on its own port and on the HTTPS port: challenged the same way.
    for port in [tls, s.d.https] {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = s.tls.connect(name, tcp).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(&allocate(None)).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let (code, nonce, _) = answer(&buf[..n]);
        assert_eq!(
            (code, nonce.is_some()),
            (Some(401), true),
            "TURN over TLS on port {port}"
        );
    }
    // The HTTPS port still serves HTTP.
    assert_eq!(s.d.get("/api/health/live").0, "200");
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_allocation_floods_are_capped_and_cost_little() {
    use turn_client::{allocate, answer, delete, Creds};
    let (s, udp, tls) = turn_server();
    let mut users = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..3 {
        let (session, join) = s.join(&format!("flood{i}")).await;
        sessions.push(session);
        users.push(turn_creds(&join, udp, tls));
    }
    // One client address (127.0.0.1), many source ports: 40 attempts per user, 32 held each.
    let rss_before = rss_kib(&s);
    let mut held = Vec::new();
    let mut refused = std::collections::BTreeMap::<u16, usize>::new();
    let start = Instant::now();
    for (username, password) in &users {
        for _ in 0..40 {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (_, nonce, _) = answer(&turn_udp(&sock, udp, &allocate(None)));
            let c = Creds {
                username: username.clone(),
                password: password.clone(),
                nonce: nonce.unwrap(),
            };
            match answer(&turn_udp(&sock, udp, &allocate(Some(&c)))) {
                (None, _, Some(_)) => held.push((sock, c)),
                (Some(code), _, _) => *refused.entry(code).or_default() += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(held.len(), 96, "the per-user cap: {refused:?}");
    assert_eq!(refused.get(&486), Some(&24), "{refused:?}");
    let rss_after = rss_kib(&s);
    let per_allocation = rss_after.saturating_sub(rss_before) as f64 / held.len() as f64;
    eprintln!(
        "turn: 120 allocation attempts (96 held, 24 refused 486) in {:.0} ms: {:.0} attempts/s; \
         RSS {} → {} KiB: {per_allocation:.1} KiB per allocation",
        elapsed.as_secs_f64() * 1000.0,
        120.0 / elapsed.as_secs_f64(),
        rss_before,
        rss_after
    );
    // Allocate and delete as fast as one client can, for two seconds.
    let (sock, c) = held.pop().unwrap();
    let (code, _, _) = answer(&turn_udp(&sock, udp, &delete(&c)));
    assert_eq!(code, None);
    let mut cycles = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let (code, _, _) = answer(&turn_udp(&sock, udp, &allocate(Some(&c))));
        assert_eq!(code, None, "allocate #{cycles}");
        let (code, _, _) = answer(&turn_udp(&sock, udp, &delete(&c)));
        assert_eq!(code, None, "delete #{cycles}");
        cycles += 1;
    }
    eprintln!(
        "turn: {:.0} allocate+delete cycles/s from one client (debug build)",
        f64::from(cycles) / start.elapsed().as_secs_f64()
    );
    // The flood left the server serving: a new participant still joins.
    let (_late, join) = s.join("late").await;
    assert_eq!(join.ice_servers.len(), 1);
    s.assert_ready();
    drop(held);
    drop(sessions);
    s.stop();
}

/// The daemon's resident memory, in KiB.
fn rss_kib(s: &Server) -> u64 {
    let pid = s.d.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
