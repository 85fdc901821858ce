//! `GET /metrics` against a running `confab serve`: who may scrape (a `confab token --admin`
//! bearer token, the admin session, anyone with `metrics.open`), and that the figures move when
//! a participant joins with real media (a Rust client: LiveKit signalling over a WebSocket,
//! str0m as the browser's media stack, publishing Opus-sized audio) and leaves.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::Daemon;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use serde_json::json;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(10);

/// `GET /metrics` with extra curl arguments: (status, body).
fn scrape(d: &Daemon, extra: &[&str]) -> (u16, String) {
    let ca = d.ca();
    let url = d.url("/metrics");
    let mut args = vec![
        "-sS",
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = common::curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.parse().unwrap_or(0), body.to_string())
}

/// The samples of a Prometheus text exposition, `name{labels}` → value. Every sample line must
/// belong to a family declared by a `# TYPE` line before it (histograms: `_bucket`, `_sum`,
/// `_count`), and no series may appear twice.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families: Vec<String> = vec![];
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        let declared = families.iter().any(|f| {
            name == f
                || [
                    f.clone() + "_bucket",
                    f.clone() + "_sum",
                    f.clone() + "_count",
                ]
                .contains(&name.to_string())
        });
        assert!(declared, "a sample of an undeclared family: {line}");
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "twice: {line}"
        );
    }
    samples
}

/// A token from `confab token` with `args` (the documented way to make a scrape token).
fn token(d: &Daemon, args: &[&str]) -> String {
    let ports = [d.https, d.http, d.udp, d.tcp];
    let out = common::run(&d.dir, ports, &[&["token"], args].concat(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Scrapes with `auth` until `ok` holds for the samples (the media threads publish their
/// counters each loop turn, str0m its stream statistics once a second).
fn until(
    d: &Daemon,
    auth: &[&str],
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = scrape(d, auth);
        assert_eq!(code, 200, "{body}");
        let m = parse(&body);
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; the last scrape:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn val(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(-1.0)
}

#[test]
fn scrapes_need_a_token_or_the_admin_session_and_the_plain_port_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (code, body) = scrape(&d, &[]);
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("roomList") && body.contains("metrics.open"),
        "{body}"
    );
    let (code, body) = scrape(&d, &["-H", "Authorization: Bearer not.a.token"]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("malformed"), "{body}");
    // A join token is a valid token without the grant.
    let join = token(&d, &["--identity", "alice", "--room", "standup"]);
    let (code, body) = scrape(&d, &["-H", &format!("Authorization: Bearer {join}")]);
    assert_eq!(code, 403, "{body}");

    let admin = token(
        &d,
        &["--identity", "prometheus", "--admin", "--ttl", "365d"],
    );
    let bearer = format!("Authorization: Bearer {admin}");
    let (code, body) = scrape(&d, &["-H", &bearer, "-D", "-"]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("text/plain; version=0.0.4"),
        "the Prometheus content type: {body}"
    );
    let (_, body) = scrape(&d, &["-H", &bearer]);
    let m = parse(&body);
    assert_eq!(val(&m, "livekit_room_total"), 0.0, "{body}");
    assert_eq!(val(&m, "livekit_participant_total"), 0.0);
    assert_eq!(
        val(&m, "livekit_track_published_total{kind=\"AUDIO\"}"),
        0.0
    );
    let threads = common::media_threads();
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("confab_media_thread_busy_seconds_total"))
            .count(),
        threads,
        "one busy figure per media thread"
    );
    assert!(val(&m, "process_resident_memory_bytes") > 1e6);
    assert!(m
        .keys()
        .any(|k| k.starts_with("confab_build_info{version=")));
    dashboard_queries_name_real_metrics(&m);

    // The admin page's session.
    let jar = d.dir.join("cookies");
    let jar = jar.to_str().unwrap();
    let setup = json!({"password": "correct horse battery", "code": d.setup_code()}).to_string();
    let out = common::curl(&[
        "-sS",
        "--cacert",
        d.ca().to_str().unwrap(),
        "-c",
        jar,
        "-H",
        "content-type: application/json",
        "-d",
        &setup,
        &d.url("/api/admin/setup"),
    ]);
    assert!(out.status.success());
    let (code, body) = scrape(&d, &["-b", jar]);
    assert_eq!(code, 200, "{body}");

    // Plain HTTP never serves it.
    let out = common::curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{}/metrics", d.http),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "308");
}

/// Every metric `docs/grafana-dashboard.json` queries is in a scrape (the dashboard is JSON
/// Grafana can import: panels with Prometheus targets).
fn dashboard_queries_name_real_metrics(scraped: &BTreeMap<String, f64>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| {
                    ["livekit_", "confab_", "process_"]
                        .iter()
                        .any(|p| w.starts_with(p))
                });
            for name in names {
                assert!(
                    scraped.keys().any(|k| k.split('{').next() == Some(name)),
                    "{:?} queries {name}, which /metrics does not export",
                    p["title"]
                );
            }
        }
    }
}

#[test]
fn the_open_switch_serves_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), common::free_ports(), |c| {
        c.env("CONFAB_METRICS_OPEN", "true");
    });
    let (code, body) = scrape(&d, &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(val(&parse(&body), "livekit_participant_total"), 0.0);
}

// ------------------------------------------------------------------- a participant with media

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: Req) {
    let bytes = lk::SignalRequest { message: Some(msg) }.encode_to_vec();
    ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
}

/// The next response `pick` takes (others are skipped).
async fn recv<T>(ws: &mut Ws, what: &str, pick: impl Fn(Resp) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next()).await;
        let Ok(Some(Ok(frame))) = frame else {
            panic!("no {what}: {frame:?}");
        };
        if let WsMessage::Binary(b) = frame {
            if let Some(t) = lk::SignalResponse::decode(b.as_ref())
                .unwrap()
                .message
                .and_then(&pick)
            {
                return t;
            }
        }
    }
}

async fn join(d: &Daemon, token: &str) -> Ws {
    let tls = confab::http::client::connector_for_ca(&d.ca()).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", d.https))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls.connect(name, tcp).await.unwrap();
    let url = format!(
        "wss://localhost:{}/rtc?access_token={token}&auto_subscribe=1&protocol=16",
        d.https
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    recv(&mut ws, "join", |m| {
        matches!(m, Resp::Join(_)).then_some(())
    })
    .await;
    ws
}

/// A PeerConnection on its own UDP socket.
struct Pc {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    connected: bool,
}

impl Pc {
    fn new() -> Pc {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Pc {
            rtc,
            sock,
            addr,
            connected: false,
        }
    }

    /// Feeds what arrived, handles timers, sends what str0m wants sent.
    fn turn(&mut self) {
        let mut buf = [0u8; 2000];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, from, self.addr, &buf[..n]) {
                self.rtc
                    .handle_input(Input::Receive(Instant::now(), r))
                    .unwrap();
            }
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .unwrap();
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(_) => {}
            }
        }
    }

    /// One 20 ms Opus-sized frame on `mid`.
    fn write_audio(&mut self, mid: Mid, n: u64) {
        let Some(w) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = w.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let time = MediaTime::new(n * 960, str0m::media::Frequency::new(48_000).unwrap());
        let _ = w.write(pt, Instant::now(), time, vec![0xAB; 80]);
    }
}

/// alice joins, answers the server's subscriber offer, publishes an audio track and sends
/// `seconds` of audio; returns her signalling session (still open).
async fn join_and_publish(d: &Daemon, token: &str, seconds: u64) -> Ws {
    let mut ws = join(d, token).await;
    let offer = recv(&mut ws, "the subscriber offer", |m| match m {
        Resp::Offer(o) => Some(o),
        _ => None,
    })
    .await;
    let mut sub = Pc::new();
    let answer = sub
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap())
        .unwrap();
    let sd = |t: &str, sdp: String, id| lk::SessionDescription {
        r#type: t.into(),
        sdp,
        id,
        mid_to_track_id: Default::default(),
    };
    send(
        &mut ws,
        Req::Answer(sd("answer", answer.to_sdp_string(), offer.id)),
    )
    .await;
    let add = lk::AddTrackRequest {
        cid: "mic".into(),
        r#type: lk::TrackType::Audio as i32,
        name: "mic".into(),
        ..Default::default()
    };
    send(&mut ws, Req::AddTrack(add)).await;
    recv(&mut ws, "track_published", |m| {
        matches!(m, Resp::TrackPublished(_)).then_some(())
    })
    .await;
    let mut publisher = Pc::new();
    let mut api = publisher.rtc.sdp_api();
    let mid = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("s".into()),
        Some("mic".into()),
        None,
    );
    api.add_channel("_reliable".into());
    let (offer, pending) = api.apply().unwrap();
    send(&mut ws, Req::Offer(sd("offer", offer.to_sdp_string(), 1))).await;
    let answer = recv(&mut ws, "the answer", |m| match m {
        Resp::Answer(a) => Some(a),
        _ => None,
    })
    .await;
    let answer = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .unwrap();
    let media = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let (mut sent, mut first) = (0u64, None);
        while start.elapsed() < WAIT
            && first.is_none_or(|f: Instant| f.elapsed() < Duration::from_secs(seconds))
        {
            sub.turn();
            publisher.turn();
            if publisher.connected {
                let f = *first.get_or_insert_with(Instant::now);
                // One frame per 20 ms since the first.
                while sent * 20 <= f.elapsed().as_millis() as u64 {
                    publisher.write_audio(mid, sent);
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (sub.connected, publisher.connected, sent)
    });
    let (sub_up, pub_up, sent) = media.await.unwrap();
    assert!(sub_up && pub_up, "both PeerConnections connected");
    assert!(sent > 50, "audio was sent ({sent} frames)");
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_with_media_moves_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let admin = token(&d, &["--identity", "prometheus", "--admin"]);
    let bearer = format!("Authorization: Bearer {admin}");
    let auth = ["-H", bearer.as_str()];
    let before = parse(&scrape(&d, &auth).1);
    let datagrams_in = "confab_udp_datagrams_total{direction=\"incoming\"}";
    let joined = "confab_events_total{event=\"participant_joined\"}";

    let alice = token(&d, &["--identity", "alice", "--room", "standup"]);
    let mut ws = join_and_publish(&d, &alice, 3).await;
    let m = until(&d, &auth, "RTP from alice is counted", |m| {
        val(m, "livekit_packet_total{direction=\"incoming\"}") > 20.0
    });
    assert_eq!(val(&m, "livekit_participant_total"), 1.0);
    assert_eq!(val(&m, "livekit_room_total"), 1.0);
    assert_eq!(
        val(&m, "livekit_track_published_total{kind=\"AUDIO\"}"),
        1.0
    );
    assert_eq!(val(&m, joined), 1.0);
    assert_eq!(val(&m, "confab_events_total{event=\"room_started\"}"), 1.0);
    assert_eq!(
        val(&m, "confab_events_total{event=\"track_published\"}"),
        1.0
    );
    assert!(val(&m, datagrams_in) > val(&before, datagrams_in) + 50.0);
    assert!(val(&m, "livekit_packet_bytes_total{direction=\"incoming\"}") >= 80.0 * 20.0);
    assert!(val(&m, "confab_udp_bytes_total{direction=\"outgoing\"}") > 0.0);
    let busy: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("confab_media_thread_busy_seconds_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(busy > 0.0, "the media threads worked");

    send(&mut ws, Req::Leave(lk::LeaveRequest::default())).await;
    let m = until(&d, &auth, "alice's leaving is counted", |m| {
        val(m, "confab_events_total{event=\"participant_left\"}") == 1.0
            && val(m, "livekit_participant_total") == 0.0
    });
    assert_eq!(val(&m, joined), 1.0);
    drop(ws);
    let log = d.stderr();
    assert!(!log.contains("panicked"), "{log}");
}
