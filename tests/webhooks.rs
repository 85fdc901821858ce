//! LiveKit-compatible webhooks from a real `confab serve` to receivers written as LiveKit
//! applications write them: Node with livekit-server-sdk's `WebhookReceiver` and Python with
//! livekit-api's `WebhookReceiver(TokenVerifier(…))` (tests/webhooks/receiver.{mjs,py}). Each
//! receiver answers 200 only to a request whose signature and body hash check out, and records
//! what it got. Activity is real: Twirp CreateRoom, a participant joining over the signalling
//! WebSocket and publishing a track, leaving, DeleteRoom.
//!
//! Also: a receiver that fails its first requests gets them again (backoff), and a URL that
//! never answers holds up neither signalling nor the other URL.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Daemon;
use confab::auth::{ApiKeys, TokenRequest, VideoGrant};
use confab::config::Secret;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const KEY: &str = "APIwebhooktest";
const SECRET: &str = "webhook-test-secret-0123456789abcdefghij";
const WAIT: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ------------------------------------------------------------------------------------ receivers

/// A receiver process (only the one we started is ever killed) and the file it records into.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn node(dir: &Path, name: &str, fail_first: u32) -> Receiver {
        let sdk = root().join("tests/browser/node_modules/livekit-server-sdk");
        assert!(
            sdk.exists(),
            "no {} (scripts/install-deps.sh runs npm ci in tests/browser)",
            sdk.display()
        );
        let mut cmd = Command::new("node");
        cmd.arg(root().join("tests/webhooks/receiver.mjs"));
        Receiver::start(cmd, dir, name, fail_first)
    }

    fn python(dir: &Path, name: &str, fail_first: u32) -> Receiver {
        let py = common::python();
        assert!(
            py.exists(),
            "no Python with livekit-api at {} (scripts/install-deps.sh, or set CONFAB_PYTHON)",
            py.display()
        );
        let mut cmd = Command::new(py);
        cmd.arg(root().join("tests/webhooks/receiver.py"));
        Receiver::start(cmd, dir, name, fail_first)
    }

    fn start(mut cmd: Command, dir: &Path, name: &str, fail_first: u32) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        std::fs::write(&out, "").unwrap();
        let mut child = cmd
            .env("WH_KEY", KEY)
            .env("WH_SECRET", SECRET)
            .env("WH_OUT", &out)
            .env("WH_FAIL_FIRST", fail_first.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} receiver: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let err = std::fs::read_to_string(dir.join(format!("{name}.stderr")));
                panic!("the {name} receiver did not start: {line:?} {err:?}")
            });
        Receiver { child, port, out }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/livekit/webhook", self.port)
    }

    /// Every request so far, as the receiver recorded it.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The events it accepted (signature and hash valid).
    fn events(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["status"] == 200)
            .collect()
    }

    /// Waits until `n` events were accepted; fails on any request the receiver refused.
    fn wait_events(&self, n: usize, what: &str) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let refused: Vec<Value> = self
                .requests()
                .into_iter()
                .filter(|r| r["status"] == 401)
                .collect();
            assert!(
                refused.is_empty(),
                "{what}: refused as invalid: {refused:?}"
            );
            let got = self.events();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} events within {WAIT:?}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL that accepts connections and never answers (nor reads): the worst receiver.
struct Hang {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Hang {
    fn start() -> Hang {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                held.push(conn);
            }
        });
        Hang { port, accepted }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hangs", self.port)
    }
}

// ------------------------------------------------------------------------------------ server

struct Server {
    d: Daemon,
    tls: tokio_rustls::TlsConnector,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(urls: &[String]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let urls = urls.join(",");
        let d = Daemon::start_with(dir.path(), common::free_ports(), |c| {
            c.env("LIVEKIT_API_KEY", KEY)
                .env("LIVEKIT_API_SECRET", SECRET)
                .env("CONFAB_WEBHOOK_URLS", &urls)
                .env("CONFAB_MEDIA_THREADS", "1");
        });
        let tls = confab::http::client::connector_for_ca(&d.ca()).unwrap();
        Server { d, tls, _dir: dir }
    }

    fn token(&self, identity: &str, video: VideoGrant) -> String {
        let keys = ApiKeys::from_map(BTreeMap::from([(
            KEY.to_string(),
            Secret::new(SECRET.to_string()),
        )]));
        confab::auth::mint(
            &keys,
            KEY,
            &TokenRequest {
                identity: identity.into(),
                ttl: Duration::from_secs(600),
                video,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// A RoomService call with curl: (HTTP status, JSON body).
    fn twirp(&self, method: &str, body: Value) -> (String, Value) {
        let token = self.token(
            "ops",
            VideoGrant {
                room_create: Some(true),
                room_list: Some(true),
                room_admin: Some(true),
                ..Default::default()
            },
        );
        let ca = self.d.ca();
        let out = common::curl(&[
            "-sS",
            "--http1.1",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            &format!("authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body.to_string(),
            "-w",
            "\n%{http_code}",
            &self.d.url(&format!("/twirp/livekit.RoomService/{method}")),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// Joins `room` as `identity` over the signalling WebSocket: the session and its join.
    async fn join(&self, room: &str, identity: &str) -> (Session, lk::JoinResponse) {
        let token = self.token(
            identity,
            VideoGrant {
                room_join: Some(true),
                room: Some(room.into()),
                ..Default::default()
            },
        );
        let url = format!(
            "wss://localhost:{}/rtc?access_token={token}&auto_subscribe=1&protocol=16",
            self.d.https
        );
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.d.https))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = self.tls.connect(name, tcp).await.unwrap();
            tokio_tungstenite::client_async(url.as_str(), tls)
                .await
                .unwrap()
        };
        let (ws, _) = tokio::time::timeout(WAIT, connect).await.unwrap();
        let mut s = Session { ws };
        let join = s
            .find("join", |m| match m {
                Resp::Join(j) => Some(j.clone()),
                _ => None,
            })
            .await;
        (s, join)
    }
}

struct Session {
    ws: tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl Session {
    async fn send(&mut self, msg: Req) {
        let bytes = lk::SignalRequest { message: Some(msg) }.encode_to_vec();
        tokio::time::timeout(WAIT, self.ws.send(WsMessage::Binary(bytes.into())))
            .await
            .unwrap()
            .unwrap();
    }

    /// Skips messages until `pick` takes one.
    async fn find<T>(&mut self, what: &str, mut pick: impl FnMut(&Resp) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"));
            match frame {
                Some(Ok(WsMessage::Binary(b))) => {
                    let resp = lk::SignalResponse::decode(b.as_ref()).unwrap();
                    if let Some(t) = resp.message.as_ref().and_then(&mut pick) {
                        return t;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended while waiting for {what}: {other:?}"),
            }
        }
    }

    /// Publishes a camera track (AddTrack); its server-side sid.
    async fn publish(&mut self) -> String {
        self.send(Req::AddTrack(lk::AddTrackRequest {
            cid: "camera-1".into(),
            name: "camera".into(),
            r#type: lk::TrackType::Video as i32,
            width: 640,
            height: 480,
            source: lk::TrackSource::Camera as i32,
            ..Default::default()
        }))
        .await;
        self.find("track_published", |m| match m {
            Resp::TrackPublished(t) => t.track.as_ref().map(|t| t.sid.clone()),
            _ => None,
        })
        .await
    }

    /// Answers the server's subscriber offer with str0m over UDP and drives the connection until
    /// ICE and DTLS are up (the participant is then active: LiveKit's `participant_joined`), and
    /// on in the background until the returned guard is dropped.
    async fn connect_media(&mut self) -> Media {
        use str0m::change::SdpOffer;
        use str0m::{Candidate, Rtc};
        let offer = self
            .find("offer", |m| match m {
                Resp::Offer(o) => Some(o.clone()),
                _ => None,
            })
            .await;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap())
            .unwrap();
        self.send(Req::Answer(lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: offer.id,
            mid_to_track_id: Default::default(),
        }))
        .await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        std::thread::spawn(move || drive(rtc, socket, local, &flag, tx));
        let connected = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT).is_ok())
            .await
            .unwrap();
        assert!(
            connected,
            "media (ICE + DTLS over UDP) did not connect within {WAIT:?}"
        );
        Media(stop)
    }

    async fn leave(mut self) {
        self.send(Req::Leave(lk::LeaveRequest::default())).await;
        let _ = self.ws.close(None).await;
    }
}

/// Stops the media thread when dropped.
struct Media(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Media {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The client's media loop: str0m's outputs to the socket, the socket's datagrams to str0m.
/// Says `connected` once, then runs until `stop`.
fn drive(
    mut rtc: str0m::Rtc,
    socket: std::net::UdpSocket,
    local: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
    connected: std::sync::mpsc::Sender<()>,
) {
    use str0m::net::{Protocol, Receive};
    use str0m::{Event, Input, Output};
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut buf = vec![0u8; 2000];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && rtc.is_alive() {
        if rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
            return;
        }
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    let _ = connected.send(());
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
            }
        }
    }
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// Events of `room`, in the order received.
fn of_room<'a>(events: &'a [Value], room: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["room"] == room).collect()
}

// ------------------------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread")]
async fn livekit_receivers_validate_and_get_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Receiver::node(dir.path(), "node", 0);
    let py = Receiver::python(dir.path(), "python", 0);
    let s = Server::start(&[node.url(), py.url()]);
    assert!(
        s.d.stderr().contains("webhooks: sending events to 2 URLs"),
        "{}",
        s.d.stderr()
    );

    let (code, room) = s.twirp("CreateRoom", json!({"name": "hooks"}));
    assert_eq!(code, "200", "{room}");
    let room_sid = room["sid"].as_str().unwrap().to_string();
    let (mut alice, _) = s.join("hooks", "alice").await;
    let media = alice.connect_media().await;
    node.wait_events(2, "node after the media connected");
    let track = alice.publish().await;
    alice.leave().await;
    drop(media);
    // Wait for the leave to land before the room goes (the events' order is the server's).
    node.wait_events(5, "node before DeleteRoom");
    let deleted_at = now_ms();
    let (code, body) = s.twirp("DeleteRoom", json!({"room": "hooks"}));
    assert_eq!(code, "200", "{body}");

    let want = [
        "room_started",
        "participant_joined",
        "track_published",
        "track_unpublished",
        "participant_left",
        "room_finished",
    ];
    for (who, r) in [("node", &node), ("python", &py)] {
        let events = r.wait_events(want.len(), who);
        assert_eq!(names(&events), want, "{who}: {events:?}");
        for e in &events {
            assert_eq!(e["room"], "hooks", "{who}: {e}");
            assert_eq!(e["roomSid"], room_sid.as_str(), "{who}: {e}");
            assert_eq!(e["contentType"], "application/webhook+json");
            assert!(e["id"].as_str().unwrap().starts_with("EV_"), "{e}");
            assert_eq!(e["numDropped"], 0, "{e}");
        }
        for e in &events[1..5] {
            assert_eq!(e["participant"], "alice", "{who}: {e}");
        }
        assert_eq!(events[2]["track"], track.as_str());
        assert_eq!(events[3]["track"], track.as_str());
        let ids: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), want.len(), "each event once, each id unique");
    }
    // Same events (same ids) to both receivers.
    let ids = |r: &Receiver| -> Vec<String> {
        r.events()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&node), ids(&py));
    let finished = node.events()[5]["at"].as_u64().unwrap();
    println!(
        "webhook end to end: DeleteRoom call → node receiver has room_finished: {} ms (curl and \
         the Twirp call included)",
        finished.saturating_sub(deleted_at)
    );
    let mut d = s;
    assert!(!d.d.stderr().contains("panicked"));
    assert!(!d.d.stderr().contains(SECRET), "the secret is never logged");
    d.d.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_receiver_gets_retries_and_a_hanging_one_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hang = Hang::start();
    let node = Receiver::node(dir.path(), "node-flaky", 2);
    let s = Server::start(&[hang.url(), node.url()]);

    let (code, room) = s.twirp("CreateRoom", json!({"name": "flaky"}));
    assert_eq!(code, "200", "{room}");
    // Signalling is not held up by a receiver that never answers.
    let started = Instant::now();
    let (mut alice, _) = s.join("flaky", "alice").await;
    let alice_media = alice.connect_media().await;
    let (mut bob, _) = s.join("flaky", "bob").await;
    let bob_media = bob.connect_media().await;
    let joins = started.elapsed();
    assert!(
        joins < Duration::from_secs(3),
        "two joins with media took {joins:?}"
    );

    // 500, 500, then the first event (after 1 s and 2 s of backoff), the rest in order.
    let events = node.wait_events(3, "flaky node");
    let requests = node.requests();
    assert_eq!(requests[0]["status"], 500);
    assert_eq!(requests[1]["status"], 500);
    assert_eq!(requests[2]["status"], 200);
    assert_eq!(requests[2]["event"], "room_started");
    let gap1 = requests[1]["at"].as_u64().unwrap() - requests[0]["at"].as_u64().unwrap();
    let gap2 = requests[2]["at"].as_u64().unwrap() - requests[1]["at"].as_u64().unwrap();
    assert!(
        (900..2500).contains(&gap1) && (1900..4000).contains(&gap2),
        "backoff 1 s, then 2 s: {gap1} ms, {gap2} ms"
    );
    let flaky = of_room(&events, "flaky");
    let got: Vec<&str> = flaky.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        ["room_started", "participant_joined", "participant_joined"]
    );
    let who: Vec<&str> = flaky[1..]
        .iter()
        .map(|e| e["participant"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["alice", "bob"]);

    // The hanging URL was tried (and still holds its connection), and did not delay the other.
    assert!(hang.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let (code, _) = s.d.get("/api/health/ready");
    assert_eq!(code, "200");
    alice.leave().await;
    bob.leave().await;
    drop((alice_media, bob_media));
    node.wait_events(5, "flaky node, leaves");
    let mut s = s;
    let log = s.d.stderr();
    assert!(log.contains("webhook delivery failed; retrying"), "{log}");
    assert!(!log.contains("panicked"));
    s.d.stop();
}
